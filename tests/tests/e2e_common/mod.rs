//! Harness of the end-to-end tests: real replica processes (`keel run`, or the test binary
//! itself in the VM) over tcp, shm or rdma, faults (kill -9, isolation through a fault-injecting
//! TCP proxy or the replicas' test-only fault file), a client workload that records its
//! history, the checks run after every fault, and one function per scenario that every
//! transport runs.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use keel_engine::kv::client::{ClientError, Connection, KvClient};
use keel_engine::kv::wire::{Reply, Request, WireError};
use keel_engine::net::fault::{Faults, write_fault_file};
use keel_engine::{MemberChange, Role, Status};
use keel_tests::linearizability::{Operation, RegOp, Verdict, check};

/// The bound we state for fail-over: after a fault that removes the leader, a write invoked
/// after the fault is committed within this long (debug build, 2 cores, 3 processes).
pub const FAILOVER_BOUND: Duration = Duration::from_secs(5);

/// End-to-end tests share the machine's 2 cores: run them one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `keel` binary: `$KEEL_BIN`, else next to this test binary's directory, built on demand.
pub fn keel_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KEEL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let bin = profile_dir.join("keel");
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "keel-tools",
            "--bin",
            "keel",
            "--manifest-path",
        ])
        .arg(&manifest);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        cmd.env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
        let status = cmd.status().expect("run cargo build for the keel binary");
        assert!(status.success(), "building the keel binary failed");
    });
    assert!(bin.exists(), "keel binary not at {}", bin.display());
    bin
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Blocks traffic to and from the replicas in the set (shared by every proxy).
#[derive(Clone, Default)]
pub struct Partition {
    blocked: Arc<Mutex<BTreeSet<u64>>>,
}

impl Partition {
    pub fn isolate(&self, id: u64) {
        self.blocked.lock().unwrap().insert(id);
    }
    pub fn heal(&self) {
        self.blocked.lock().unwrap().clear();
    }
    fn cut(&self, a: u64, b: u64) -> bool {
        let blocked = self.blocked.lock().unwrap();
        blocked.contains(&a) || blocked.contains(&b)
    }
}

/// A TCP proxy in front of replica `target`: it learns the dialing replica from the handshake's
/// first bytes and drops the connection while either end is isolated.
fn start_proxy(
    listen: SocketAddr,
    upstream: SocketAddr,
    target: u64,
    partition: Partition,
    stop: Arc<AtomicBool>,
) {
    let listener = TcpListener::bind(listen).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((client, _)) => {
                    let partition = partition.clone();
                    let stop = Arc::clone(&stop);
                    std::thread::spawn(move || {
                        proxy_conn(client, upstream, target, partition, stop)
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

fn proxy_conn(
    mut client: TcpStream,
    upstream: SocketAddr,
    target: u64,
    partition: Partition,
    stop: Arc<AtomicBool>,
) {
    client.set_nonblocking(false).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // The dialer's hello: member id at bytes 24..32.
    let mut hello = [0u8; 48];
    if client.read_exact(&mut hello).is_err() {
        return;
    }
    let dialer = u64::from_le_bytes(hello[24..32].try_into().unwrap());
    if partition.cut(dialer, target) {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    if server.write_all(&hello).is_err() {
        return;
    }
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let pump = move |mut from: TcpStream,
                     mut to: TcpStream,
                     partition: Partition,
                     stop: Arc<AtomicBool>| {
        from.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if stop.load(Ordering::Relaxed) || partition.cut(dialer, target) {
                let _ = from.shutdown(std::net::Shutdown::Both);
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
            match from.read(&mut buf) {
                Ok(0) => {
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        }
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (p1, st1) = (partition.clone(), Arc::clone(&stop));
    let t = std::thread::spawn(move || pump(c2, s2, p1, st1));
    pump(server, client, partition, stop);
    let _ = t.join();
}

/// How the replica processes are started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// `keel run --config FILE` (the `keel` binary; see [`keel_bin`]).
    KeelRun,
    /// This test binary re-executed with [`REPLICA_ENV`]`=FILE`; its `main` calls
    /// [`run_replica_if_asked`] first (for `harness = false` targets in the VM, which has no
    /// cargo to build `keel` with).
    SelfExec,
}

/// Environment variable that makes a [`Launch::SelfExec`] test binary run one replica.
pub const REPLICA_ENV: &str = "KEEL_E2E_REPLICA";

/// Timing of a cluster and the bounds its scenarios assert.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// `[timing]` section of every replica's configuration.
    pub timing_toml: &'static str,
    /// The bound we state: after a fault, a write invoked after it commits within this long.
    pub failover_bound: Duration,
    /// How long any other step may take (an election at start, a phase of writes, catch-up).
    pub step_timeout: Duration,
    /// Writes each phase of a scenario waits for.
    pub writes_per_phase: u64,
    /// How long after [`Cluster::isolate`] every replica surely applies the fault: the fault
    /// file is re-read every `keel_engine::net::fault::RELOAD_EVERY` (5 ms) at the start of a
    /// loop pass (at least one per tick); a proxy notices within its 20 ms read timeout.
    pub fault_settle: Duration,
    /// Isolating the leader: the cut-off leader reports itself follower within this long
    /// (CheckQuorum: `timing.check_quorum_ms`, by default the smallest election timeout, plus
    /// the fault's settling and status polling).
    pub step_down_bound: Duration,
    /// Isolating the leader: a write invoked after the cut commits within this long. The
    /// deposed leader answers its clients at once, so they retry elsewhere instead of waiting
    /// out their 2 s I/O timeout.
    pub isolated_failover_bound: Duration,
}

/// On the host (debug build, 2 cores shared by 3 processes and the client): election timeout
/// 150-300 ms, fail-over bound [`FAILOVER_BOUND`].
pub const HOST: Profile = Profile {
    timing_toml: "tick_us = 1000\nheartbeat_ms = 10\nelection_timeout_min_ms = 150\n\
                  election_timeout_max_ms = 300\nlease_ms = 60\nclock_drift_us = 10000\n",
    failover_bound: FAILOVER_BOUND,
    step_timeout: Duration::from_secs(20),
    writes_per_phase: 100,
    fault_settle: Duration::from_millis(50),
    step_down_bound: Duration::from_millis(500),
    isolated_failover_bound: Duration::from_secs(1),
};

/// In the soft-RoCE VM (QEMU TCG, no KVM: the guest runs many times slower than the host, and
/// three replicas plus the client share its 2 vCPUs; about 10 writes/s): election timeout
/// 1.5-3 s, fail-over bound 20 s.
pub const VM: Profile = Profile {
    timing_toml: "tick_us = 5000\nheartbeat_ms = 50\nelection_timeout_min_ms = 1500\n\
                  election_timeout_max_ms = 3000\nlease_ms = 300\nclock_drift_us = 50000\n",
    failover_bound: Duration::from_secs(20),
    step_timeout: Duration::from_secs(90),
    writes_per_phase: 30,
    fault_settle: Duration::from_millis(500),
    // Check-quorum window 1.5 s in the slow guest; its elections (1.5-3 s) are as slow as the
    // clients' I/O timeout, so only the general fail-over bound is claimed there.
    step_down_bound: Duration::from_secs(6),
    isolated_failover_bound: Duration::from_secs(20),
};

/// What cluster to start.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Names the cluster's directory.
    pub name: String,
    /// `tcp`, `shm` or `rdma`.
    pub transport: &'static str,
    /// Replicas; the last `standby` of them are standbys (for membership changes).
    pub replicas: u64,
    pub standby: u64,
    /// TCP only: replica-to-replica traffic goes through fault proxies, and
    /// [`Cluster::isolate`] uses them; otherwise it uses the replicas' fault file.
    pub proxied: bool,
    pub profile: Profile,
    pub launch: Launch,
    /// With `rdma`: the verbs device.
    pub rdma_device: Option<String>,
}

impl Spec {
    /// `replicas` `keel run` processes over `transport` on the host.
    pub fn host(name: &str, transport: &'static str, replicas: u64) -> Spec {
        Spec {
            name: name.to_string(),
            transport,
            replicas,
            standby: 0,
            proxied: false,
            profile: HOST,
            launch: Launch::KeelRun,
            rdma_device: None,
        }
    }

    /// `replicas` processes over rdma on `device` in the VM (this binary re-executed).
    pub fn vm_rdma(name: &str, device: &str, replicas: u64) -> Spec {
        Spec {
            name: name.to_string(),
            transport: "rdma",
            replicas,
            standby: 0,
            proxied: false,
            profile: VM,
            launch: Launch::SelfExec,
            rdma_device: Some(device.to_string()),
        }
    }

    pub fn standby(mut self, n: u64) -> Spec {
        self.standby = n;
        self
    }

    pub fn proxied(mut self) -> Spec {
        assert_eq!(self.transport, "tcp", "fault proxies are TCP proxies");
        self.proxied = true;
        self
    }
}

/// One replica process.
pub struct Node {
    pub id: u64,
    pub config: PathBuf,
    pub service: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A cluster of replica processes.
pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    pub partition: Partition,
    pub spec: Spec,
    /// Every replica's `testing.fault_file`.
    pub fault_file: PathBuf,
    stop: Arc<AtomicBool>,
}

/// `n` consecutive free TCP ports on 127.0.0.1 at or above `from` (an rdma replica's out-of-band
/// ports are consecutive).
fn free_ports(n: u16, from: u16) -> u16 {
    let mut base = from;
    loop {
        let held: Vec<_> = (0..n)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
        base = if base > 60_000 { 20_000 } else { base + n + 7 };
    }
}

impl Cluster {
    /// Writes every replica's configuration and starts them.
    pub fn launch(spec: Spec) -> Cluster {
        let n = spec.replicas;
        let transport = spec.transport;
        let dir =
            std::env::temp_dir().join(format!("keel-e2e-{}-{}", spec.name, std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fault_file = dir.join("faults");
        let partition = Partition::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut members = String::new();
        let mut services = Vec::new();
        let mut next_port = 20_000 + u16::try_from(std::process::id() % 1000).unwrap() * 20;
        for id in 1..=n {
            let (addr, service) = match transport {
                "shm" => (format!("replica-{id}"), free_addr()),
                "tcp" => (free_addr().to_string(), free_addr()),
                "rdma" => {
                    // Per replica: n - 1 out-of-band ports (one per inbound ring), then the
                    // service port.
                    let n16 = u16::try_from(n).unwrap();
                    let base = free_ports(n16, next_port);
                    next_port = base + n16;
                    (
                        format!("127.0.0.1:{base}"),
                        SocketAddr::from(([127, 0, 0, 1], base + n16 - 1)),
                    )
                }
                other => panic!("unknown transport {other}"),
            };
            let listen = if spec.proxied {
                let listen = free_addr();
                start_proxy(
                    addr.parse().unwrap(),
                    listen,
                    id,
                    partition.clone(),
                    Arc::clone(&stop),
                );
                format!("listen_addr = \"{listen}\"\n")
            } else {
                String::new()
            };
            let standby = if id > n - spec.standby {
                "standby = true\n"
            } else {
                ""
            };
            members.push_str(&format!(
                "[[members]]\nid = {id}\naddr = \"{addr}\"\nadmin_addr = \"{service}\"\n{listen}{standby}\n"
            ));
            services.push(service);
        }
        let device = spec
            .rdma_device
            .as_ref()
            .map(|d| format!("rdma_device = \"{d}\"\n"))
            .unwrap_or_default();
        let mut nodes = Vec::new();
        for id in 1..=n {
            let config = dir.join(format!("replica-{id}.toml"));
            let text = format!(
                "id = {id}\ndata_dir = \"{}\"\ntransport = \"{transport}\"\nshm_dir = \"{}\"\n{device}\n\
                 [timing]\n{}\n\
                 [runtime]\nspin_us = 20\n\n\
                 [durability]\nlog_backend = \"file\"\nlog_capacity_bytes = 67108864\ncheckpoint_every = 2000\n\n\
                 [testing]\nfault_file = \"{}\"\n\n{members}",
                dir.join(format!("data-{id}")).display(),
                dir.display(),
                spec.profile.timing_toml,
                fault_file.display(),
            );
            std::fs::write(&config, text).unwrap();
            if spec.launch == Launch::SelfExec {
                // Fail here, with the field named, rather than in every child process.
                keel_engine::Config::from_toml_file(&config).unwrap();
            }
            nodes.push(Node {
                id,
                config,
                service: services[(id - 1) as usize],
                log: dir.join(format!("replica-{id}.out")),
                child: None,
            });
        }
        let mut cluster = Cluster {
            dir,
            nodes,
            partition,
            spec,
            fault_file,
            stop,
        };
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster
    }

    pub fn profile(&self) -> Profile {
        self.spec.profile
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Starts (or restarts) replica `id`'s process.
    pub fn spawn(&mut self, id: u64) {
        let launch = self.spec.launch;
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.child.is_none(), "replica {id} already running");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut cmd = match launch {
            Launch::KeelRun => {
                let mut cmd = Command::new(keel_bin());
                cmd.arg("run").arg("--config").arg(&node.config);
                cmd
            }
            Launch::SelfExec => {
                let mut cmd = Command::new(std::env::current_exe().unwrap());
                cmd.env(REPLICA_ENV, &node.config);
                cmd
            }
        };
        let child = cmd
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// `kill -9` replica `id`.
    pub fn kill(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        let mut child = node.child.take().expect("replica running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Cuts replica `id` off from every other replica (clients still reach it): through the
    /// fault proxies for a proxied TCP cluster, else through the replicas' fault file. Returns
    /// once every replica has surely seen the fault (the profile's `fault_settle`).
    pub fn isolate(&self, id: u64) {
        if self.spec.proxied {
            self.partition.isolate(id);
        } else {
            write_fault_file(&self.fault_file, &Faults::none().isolate(id)).unwrap();
        }
        std::thread::sleep(self.profile().fault_settle);
    }

    /// Ends every isolation.
    pub fn heal(&self) {
        if self.spec.proxied {
            self.partition.heal();
        } else {
            write_fault_file(&self.fault_file, &Faults::none()).unwrap();
        }
    }

    /// Waits until replica `id` has applied everything the leader had committed when this was
    /// called (it recovered from its log and caught up); panics after the profile's step
    /// timeout. Returns how long it took.
    pub fn wait_caught_up(&self, id: u64) -> Duration {
        let within = self.profile().step_timeout;
        let commit = self
            .status(self.leader(within))
            .expect("the leader answers status")
            .commit_index;
        let start = Instant::now();
        while self.status(id).is_none_or(|s| s.applied_index < commit) {
            if start.elapsed() > within {
                self.print_statuses();
                panic!("replica {id} did not catch up to commit index {commit} within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
    }

    /// Every running replica's process is alive (a replica that failed exits with status 1).
    pub fn assert_alive(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut()
                && let Some(status) = child.try_wait().unwrap()
            {
                panic!(
                    "replica {} exited with {status}; its output:\n{}",
                    node.id,
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                );
            }
        }
    }

    pub fn status(&self, id: u64) -> Option<Status> {
        let timeout = if self.spec.launch == Launch::SelfExec {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(500)
        };
        let mut c = Connection::open(self.node(id).service, timeout).ok()?;
        match c.call(&Request::Status).ok()? {
            Reply::Status(json) => serde_json_lite(&json),
            _ => None,
        }
    }

    /// Waits until replica `id` no longer reports itself leader; returns how long that took.
    pub fn wait_not_leader(&self, id: u64, within: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.status(id).is_some_and(|s| s.role != Role::Leader) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.print_statuses();
        panic!("replica {id} still reports itself leader after {within:?}");
    }

    /// The running replica that reports itself leader, waiting up to `within`.
    pub fn leader(&self, within: Duration) -> u64 {
        let all: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        self.leader_among(&all, within)
    }

    /// The running replica of `ids` that reports itself leader, waiting up to `within`.
    pub fn leader_among(&self, ids: &[u64], within: Duration) -> u64 {
        let start = Instant::now();
        while start.elapsed() < within {
            for &id in ids {
                if self.node(id).child.is_some()
                    && let Some(s) = self.status(id)
                    && s.role == Role::Leader
                {
                    return id;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.print_statuses();
        panic!("no leader among {ids:?} within {within:?}");
    }

    pub fn services(&self) -> Vec<(u64, SocketAddr)> {
        self.nodes.iter().map(|n| (n.id, n.service)).collect()
    }

    /// Waits until `n` more writes are acknowledged, printing progress and every replica's
    /// status every 10 s and when it gives up (after the profile's step timeout).
    pub fn wait_writes(&self, load: &Workload, n: u64) {
        let within = self.profile().step_timeout;
        let acked = || load.writes_acked.load(Ordering::Relaxed);
        let target = acked() + n;
        let start = Instant::now();
        let mut report = Instant::now();
        while acked() < target {
            let late = start.elapsed() >= within;
            if report.elapsed() >= Duration::from_secs(10) || late {
                report = Instant::now();
                eprintln!(
                    "e2e {}: {} writes acknowledged, want {target}",
                    self.spec.transport,
                    acked()
                );
                self.print_statuses();
            }
            assert!(
                !late,
                "fewer than {n} writes acknowledged within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn print_statuses(&self) {
        for node in &self.nodes {
            match self.status(node.id) {
                Some(s) => eprintln!(
                    "  replica {}: {:?} ballot {:?} commit {} applied {} voters {:?} peers {:?}",
                    node.id,
                    s.role,
                    s.ballot,
                    s.commit_index,
                    s.applied_index,
                    s.membership.voters,
                    s.peers
                        .iter()
                        .map(|p| (p.id, p.acked_slot, p.last_heard_us))
                        .collect::<Vec<_>>()
                ),
                None => eprintln!("  replica {}: no status", node.id),
            }
        }
    }

    /// Changes the membership as an operator would: `keel members ...` where the `keel` binary
    /// is at hand, else the request that command sends, through the client.
    pub fn change_members(&self, change: MemberChange) {
        match self.spec.launch {
            Launch::KeelRun => {
                let (verb, id) = match change {
                    MemberChange::AddLearner(id) => ("add", id),
                    MemberChange::Promote(id) => ("promote", id),
                    MemberChange::Remove(id) => ("remove", id),
                    other => panic!("no keel members command for {other:?}"),
                };
                let out = self.keel(&["members", verb, &id.to_string()]);
                assert!(out.contains("applied at decree"), "{out}");
            }
            Launch::SelfExec => {
                let mut client = KvClient::new(self.services());
                client.deadline = self.profile().step_timeout;
                match client.call(&Request::Members(change)) {
                    Ok(Reply::Done { .. }) => {}
                    other => panic!("membership change {change:?}: {other:?}"),
                }
            }
        }
    }

    /// Runs `keel ARGS --config <replica 1's config>` and returns its stdout.
    pub fn keel(&self, args: &[&str]) -> String {
        let out = Command::new(keel_bin())
            .args(args)
            .arg("--config")
            .arg(&self.node(1).config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keel {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!(
                "--- replica {} output:\n{}",
                n.id,
                std::fs::read_to_string(&n.log).unwrap_or_default()
            );
        }
    }
}

/// For the rdma tests: the soft-RoCE device inside the VM harness, or `None` (with the reason
/// printed) where they cannot run.
pub fn vm_rdma_device() -> Option<String> {
    match (
        std::env::var("KEEL_IN_VM"),
        std::env::var("KEEL_RDMA_DEVICE"),
    ) {
        (Ok(_), Ok(device)) if !device.is_empty() => {
            if cfg!(feature = "rdma") {
                Some(device)
            } else {
                eprintln!(
                    "skipped: built without keel-tests' `rdma` feature; tests/vm/run builds it \
                     with the feature"
                );
                None
            }
        }
        _ => {
            eprintln!("skipped: needs rxe0; runs in the soft-RoCE VM via tests/vm/run");
            None
        }
    }
}

/// One scenario of an rdma end-to-end binary: cluster name, what it checks (for the log
/// line), replicas, standbys, and the scenario function.
pub type VmScenario = (&'static str, &'static str, u64, u64, fn(Cluster, u64));

/// `main` of an rdma end-to-end binary (`harness = false`): runs as a replica when asked,
/// skips with the reason outside the VM, else launches a cluster on the VM's soft-RoCE device
/// for each scenario in turn and runs it with `clients` clients.
pub fn vm_rdma_main(scenarios: &[VmScenario], clients: u64) {
    run_replica_if_asked();
    let Some(device) = vm_rdma_device() else {
        return;
    };
    for &(name, what, replicas, standby, scenario) in scenarios {
        let t0 = std::time::Instant::now();
        let cluster = Cluster::launch(Spec::vm_rdma(name, &device, replicas).standby(standby));
        scenario(cluster, clients);
        eprintln!("e2e rdma: {what}: passed after {:?}", t0.elapsed());
    }
    println!("test result: ok. {} passed", scenarios.len());
}

/// For [`Launch::SelfExec`] binaries: if this process was started as a replica, runs it (what
/// `keel run --config FILE` does) and never returns.
pub fn run_replica_if_asked() {
    let Ok(path) = std::env::var(REPLICA_ENV) else {
        return;
    };
    let config = keel_engine::Config::from_toml_file(&path).unwrap();
    let id = config.id;
    let admin: SocketAddr = config
        .me()
        .unwrap()
        .admin_addr
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let transport = config.transport.name();
    let replica = match keel_engine::Replica::start(config, keel_engine::kv::KvStore::new()) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("replica {id}: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let bound = keel_engine::kv::service::serve(Arc::clone(&replica), admin).unwrap();
    println!("replica {id}: running over {transport}, service at {bound}");
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(f) = replica.failure() {
            eprintln!("replica {id} failed: {f}");
            std::process::exit(1);
        }
    }
}

fn serde_json_lite(json: &str) -> Option<Status> {
    // keel-tests has no serde_json dependency; the engine re-exports what it needs.
    keel_engine::stats::status_from_json(json).ok()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let panicking = std::thread::panicking();
        if panicking && self.spec.launch == Launch::SelfExec {
            // In the VM the files die with the guest: show them now.
            self.dump_logs();
        }
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if !panicking || self.spec.launch == Launch::SelfExec {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("e2e: cluster files kept in {}", self.dir.display());
        }
    }
}

/// The client workload: `clients` threads, each the only writer of its own keys (values
/// increase per key), reading other clients' keys linearizably now and then. Every operation
/// is recorded for the checker.
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    history: Arc<Mutex<Vec<Operation>>>,
    /// Per key: the highest acknowledged value.
    acked: Arc<Mutex<BTreeMap<u64, u64>>>,
    pub epoch: Instant,
    /// Microseconds since `epoch` of each acknowledged write's return.
    acks: Arc<Mutex<Vec<(u64, u64)>>>,
    pub writes_acked: Arc<AtomicU64>,
    /// Microseconds since `epoch` of each write that returned without an acknowledgement
    /// (refused, outcome unknown, unreachable).
    failures: Arc<Mutex<Vec<u64>>>,
}

pub const KEYS_PER_CLIENT: u64 = 2;

impl Workload {
    pub fn start(services: Vec<(u64, SocketAddr)>, clients: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let writes_acked = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let epoch = Instant::now();
        let mut threads = Vec::new();
        for c in 0..clients {
            let (stop, history, acked, acks, writes_acked, failures) = (
                Arc::clone(&stop),
                Arc::clone(&history),
                Arc::clone(&acked),
                Arc::clone(&acks),
                Arc::clone(&writes_acked),
                Arc::clone(&failures),
            );
            let services = services.clone();
            threads.push(std::thread::spawn(move || {
                let mut client = KvClient::new(services);
                client.deadline = Duration::from_secs(8);
                client.io_timeout = Duration::from_secs(2);
                let mut seq = 0u64;
                let mut n = 0u64;
                let now = || u64::try_from(epoch.elapsed().as_micros()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    if n.is_multiple_of(4) {
                        // Read some client's key.
                        let key = (n * 7 + c) % (clients * KEYS_PER_CLIENT);
                        let invoke = now();
                        let r = client.call(&Request::Get {
                            key: key_bytes(key),
                        });
                        let ret = now();
                        let op = match r {
                            Ok(Reply::Value { value, .. }) => RegOp::Read(Some(
                                value.map(|v| u64::from_le_bytes(v.try_into().unwrap())),
                            )),
                            _ => continue,
                        };
                        history.lock().unwrap().push(Operation {
                            client: c,
                            key,
                            op,
                            invoke_us: invoke,
                            return_us: Some(ret),
                        });
                        continue;
                    }
                    let key = c * KEYS_PER_CLIENT + n % KEYS_PER_CLIENT;
                    seq += 1;
                    let value = seq;
                    let invoke = now();
                    let r = client.call(&Request::Put {
                        key: key_bytes(key),
                        value: value.to_le_bytes().to_vec(),
                    });
                    let ret = now();
                    if !matches!(r, Ok(Reply::Written { .. })) {
                        failures.lock().unwrap().push(ret);
                    }
                    let return_us = match r {
                        Ok(Reply::Written { .. }) => {
                            let mut a = acked.lock().unwrap();
                            let e = a.entry(key).or_insert(0);
                            *e = (*e).max(value);
                            acks.lock().unwrap().push((invoke, ret));
                            writes_acked.fetch_add(1, Ordering::Relaxed);
                            Some(ret)
                        }
                        // Outcome unknown: may or may not have been applied.
                        Err(e) if e.outcome_unknown() => None,
                        Err(ClientError::Unreachable { .. }) => None,
                        Err(ClientError::Service(WireError::Unknown(_))) => None,
                        // Definitely not applied (refused before replication).
                        Ok(_) | Err(_) => {
                            seq -= 1;
                            continue;
                        }
                    };
                    history.lock().unwrap().push(Operation {
                        client: c,
                        key,
                        op: RegOp::Write(value),
                        invoke_us: invoke,
                        return_us,
                    });
                }
            }));
        }
        Workload {
            stop,
            threads,
            history,
            acked,
            epoch,
            acks,
            writes_acked,
            failures,
        }
    }

    pub fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap()
    }

    /// The first acknowledged write invoked at or after `t_us`: time from `t_us` to its return.
    pub fn first_commit_after(&self, t_us: u64, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(&(_, ret)) = self
                .acks
                .lock()
                .unwrap()
                .iter()
                .filter(|(invoke, _)| *invoke >= t_us)
                .min_by_key(|(_, ret)| *ret)
            {
                return Duration::from_micros(ret - t_us);
            }
            assert!(
                start.elapsed() < within,
                "no write committed within {within:?} of the fault"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How long after `t_us` the first write returned unacknowledged (a refusal, or outcome
    /// unknown because the replica it waited on stopped leading), if one did.
    pub fn first_failure_after(&self, t_us: u64) -> Option<Duration> {
        let failures = self.failures.lock().unwrap();
        let first = failures.iter().filter(|&&ret| ret >= t_us).min()?;
        Some(Duration::from_micros(first - t_us))
    }

    /// Waits until `n` more writes are acknowledged.
    pub fn wait_writes(&self, n: u64, within: Duration) {
        let target = self.writes_acked.load(Ordering::Relaxed) + n;
        let start = Instant::now();
        while self.writes_acked.load(Ordering::Relaxed) < target {
            assert!(
                start.elapsed() < within,
                "fewer than {n} writes acknowledged within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the clients, reads every key through the leader, and checks: every acknowledged
    /// write is present (the final value is at least the last acknowledged one) and the whole
    /// history, final reads included, is linearizable.
    pub fn stop_and_check(self, services: Vec<(u64, SocketAddr)>, clients: u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let mut history = self.history.lock().unwrap().clone();
        let acked = self.acked.lock().unwrap().clone();
        let mut client = KvClient::new(services);
        client.deadline = Duration::from_secs(10);
        for key in 0..clients * KEYS_PER_CLIENT {
            let invoke = u64::try_from(self.epoch.elapsed().as_micros()).unwrap();
            let value = client
                .get(&key_bytes(key))
                .unwrap_or_else(|e| panic!("final read of key {key}: {e}"))
                .map(|v| u64::from_le_bytes(v.try_into().unwrap()));
            let ret = u64::try_from(self.epoch.elapsed().as_micros()).unwrap();
            let want = acked.get(&key).copied().unwrap_or(0);
            assert!(
                value.unwrap_or(0) >= want,
                "acknowledged write lost: key {key} reads {value:?}, last acknowledged value {want}"
            );
            history.push(Operation {
                client: 999,
                key,
                op: RegOp::Read(Some(value)),
                invoke_us: invoke,
                return_us: Some(ret),
            });
        }
        let ops = history.len();
        match check(&history, 2_000_000) {
            Verdict::Linearizable => eprintln!(
                "e2e: {ops} operations ({} writes acknowledged) linearizable, no acknowledged write lost",
                self.writes_acked.load(Ordering::Relaxed)
            ),
            Verdict::NotLinearizable(v) => panic!("{v}"),
            Verdict::Undecided { key } => {
                panic!("linearizability of key {key} undecided within the budget")
            }
        }
    }
}

pub fn key_bytes(key: u64) -> Vec<u8> {
    format!("key-{key}").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The scenarios. Each takes a started cluster (its spec says the transport and the profile:
// timing, the fail-over bound, how many writes a phase waits for), runs `clients` clients
// against it, injects its fault, prints the measured times, and ends with the checks: every
// replica alive, every acknowledged write present, the history linearizable.

fn describe(cluster: &Cluster) -> String {
    format!("e2e {}", cluster.spec.transport)
}

/// Under load, `kill -9` the leader; a write invoked after the kill must commit within the
/// profile's fail-over bound (printed); restart the killed replica and require it to catch up.
pub fn kill_9_the_leader_under_load_then_restart_it(mut cluster: Cluster, clients: u64) {
    let (p, what) = (cluster.profile(), describe(&cluster));
    let leader = cluster.leader(p.step_timeout);
    let load = Workload::start(cluster.services(), clients);
    cluster.wait_writes(&load, 2 * p.writes_per_phase);
    let fault = load.now_us();
    cluster.kill(leader);
    let others: Vec<u64> = (1..=cluster.spec.replicas)
        .filter(|&i| i != leader)
        .collect();
    let new_leader = cluster.leader_among(&others, p.step_timeout);
    let elected = Duration::from_micros(load.now_us() - fault);
    let failover = load.first_commit_after(fault, p.failover_bound);
    eprintln!(
        "{what}: leader {leader} killed (-9); replica {new_leader} leads {elected:?} later (seen by polling status), a write invoked after the kill committed {failover:?} later (bound {:?})",
        p.failover_bound
    );
    cluster.wait_writes(&load, p.writes_per_phase);
    cluster.spawn(leader);
    cluster.wait_writes(&load, p.writes_per_phase);
    let caught_up = cluster.wait_caught_up(leader);
    eprintln!("{what}: restarted replica {leader} caught up in {caught_up:?}");
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), clients);
}

/// Under load, `kill -9` a follower; the leader keeps committing (the next commit's delay is
/// printed and bounded by the fail-over bound) and stays leader; restart the follower and
/// require it to catch up.
pub fn kill_a_follower_then_restart_it(mut cluster: Cluster, clients: u64) {
    let (p, what) = (cluster.profile(), describe(&cluster));
    let leader = cluster.leader(p.step_timeout);
    let follower = if leader == 1 { 2 } else { 1 };
    let load = Workload::start(cluster.services(), clients);
    cluster.wait_writes(&load, p.writes_per_phase);
    let fault = load.now_us();
    cluster.kill(follower);
    let after = load.first_commit_after(fault, p.failover_bound);
    eprintln!(
        "{what}: follower {follower} killed (-9); the leader committed a write {after:?} later (bound {:?})",
        p.failover_bound
    );
    cluster.wait_writes(&load, p.writes_per_phase);
    assert_eq!(
        cluster.leader(p.step_timeout),
        leader,
        "a follower's death must not depose the leader"
    );
    cluster.spawn(follower);
    cluster.wait_writes(&load, p.writes_per_phase);
    let caught_up = cluster.wait_caught_up(follower);
    eprintln!("{what}: restarted follower {follower} caught up in {caught_up:?}");
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), clients);
}

/// Under load, cut the leader off from the other replicas (clients still reach it). The cut-off
/// leader must step down by itself (CheckQuorum) within the profile's `step_down_bound`, the
/// majority must elect a leader, and a write invoked after the cut must commit within
/// `isolated_failover_bound` (all printed, with when a client waiting on the old leader got its
/// answer); heal, and require the old leader to catch up.
pub fn isolate_the_leader_then_heal(mut cluster: Cluster, clients: u64) {
    let (p, what) = (cluster.profile(), describe(&cluster));
    let leader = cluster.leader(p.step_timeout);
    let load = Workload::start(cluster.services(), clients);
    cluster.wait_writes(&load, p.writes_per_phase);
    cluster.isolate(leader);
    // The fault counts from when every replica has surely seen it (a write invoked before that
    // may still commit through the old leader).
    let fault = load.now_us();
    let majority: Vec<u64> = (1..=cluster.spec.replicas)
        .filter(|&i| i != leader)
        .collect();
    // CheckQuorum: the cut-off leader hears from no majority and steps down by itself.
    let stepped_down = cluster.wait_not_leader(leader, p.step_timeout);
    let new_leader = cluster.leader_among(&majority, p.step_timeout);
    let elected = Duration::from_micros(load.now_us() - fault);
    let failover = load.first_commit_after(fault, p.failover_bound);
    let refused = load.first_failure_after(fault);
    eprintln!(
        "{what}: leader {leader} isolated; it reports follower {stepped_down:?} later (bound {:?}), a client waiting on it is answered (outcome unknown/refused) {refused:?} later; replica {new_leader} leads the majority {elected:?} later (seen by polling status); a client's write invoked after the cut committed {failover:?} later (bound {:?})",
        p.step_down_bound, p.isolated_failover_bound
    );
    assert!(
        stepped_down <= p.step_down_bound,
        "the isolated leader {leader} reported follower only {stepped_down:?} after the cut (bound {:?})",
        p.step_down_bound
    );
    assert!(
        failover <= p.isolated_failover_bound,
        "a write invoked after the cut committed {failover:?} later (bound {:?})",
        p.isolated_failover_bound
    );
    let stuck = cluster.status(leader).map(|s| s.commit_index);
    cluster.wait_writes(&load, p.writes_per_phase);
    let (now_stuck, majority_commit) = (
        cluster.status(leader).map(|s| s.commit_index),
        cluster.status(new_leader).map_or(0, |s| s.commit_index),
    );
    assert_eq!(
        stuck, now_stuck,
        "the isolated replica {leader} learned of commits while cut off"
    );
    assert!(
        stuck.is_none_or(|c| c < majority_commit),
        "the majority did not commit past the isolated replica ({stuck:?} vs {majority_commit})"
    );
    cluster.heal();
    cluster.wait_writes(&load, p.writes_per_phase);
    let caught_up = cluster.wait_caught_up(leader);
    eprintln!("{what}: healed; old leader {leader} caught up in {caught_up:?}");
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), clients);
}

/// Four replicas, the fourth a standby. Under load: add it as a learner, promote it, remove a
/// voter that is not the leader; after each change a write invoked after it must commit within
/// the fail-over bound (printed), and at the end the leader's voters are the expected three.
pub fn change_membership_while_writing(mut cluster: Cluster, clients: u64) {
    assert_eq!(
        (cluster.spec.replicas, cluster.spec.standby),
        (4, 1),
        "the membership scenario needs 4 replicas, the last a standby"
    );
    let (p, what) = (cluster.profile(), describe(&cluster));
    cluster.leader(p.step_timeout);
    let load = Workload::start(cluster.services(), clients);
    cluster.wait_writes(&load, p.writes_per_phase);
    let leader = cluster.leader(p.step_timeout);
    let victim = if leader == 1 { 2 } else { 1 };
    for change in [
        MemberChange::AddLearner(4),
        MemberChange::Promote(4),
        MemberChange::Remove(victim),
    ] {
        let t = load.now_us();
        let started = Instant::now();
        cluster.change_members(change);
        let applied = started.elapsed();
        let next = load.first_commit_after(t, p.failover_bound);
        eprintln!(
            "{what}: {change:?} applied after {applied:?}; a write invoked with it committed {next:?} later (bound {:?})",
            p.failover_bound
        );
        cluster.wait_writes(&load, p.writes_per_phase);
    }
    let status = cluster
        .status(cluster.leader(p.step_timeout))
        .expect("the leader answers status");
    let mut voters = status.membership.voters.clone();
    voters.sort_unstable();
    let expected: Vec<u64> = (1..=4).filter(|&i| i != victim).collect();
    assert_eq!(voters, expected, "voters after the changes");
    if cluster.spec.launch == Launch::KeelRun {
        let table = cluster.keel(&["status"]);
        assert!(table.contains("leader"), "{table}");
    }
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), clients);
}
