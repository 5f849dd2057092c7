//! Harness of the end-to-end tests: real `keel run` processes, a fault-injecting TCP proxy,
//! a client workload that records its history, and the checks run after every fault.
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
use keel_engine::{Role, Status};
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

/// One replica process.
pub struct Node {
    pub id: u64,
    pub config: PathBuf,
    pub service: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A cluster of `keel run` processes.
pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    pub partition: Partition,
    stop: Arc<AtomicBool>,
}

impl Cluster {
    /// Writes configurations for `n` replicas (the last `standby` of them standbys) and starts
    /// every replica. With `proxied`, replica-to-replica traffic goes through fault proxies.
    pub fn start(name: &str, n: u64, standby: u64, proxied: bool) -> Cluster {
        Cluster::start_with(name, n, standby, proxied, "tcp")
    }

    /// Like [`Cluster::start`] over `transport` (`tcp` or `shm`; shm ring files live in the
    /// cluster's directory).
    pub fn start_with(name: &str, n: u64, standby: u64, proxied: bool, transport: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("keel-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let partition = Partition::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut members = String::new();
        let mut services = Vec::new();
        for id in 1..=n {
            let addr = if transport == "shm" {
                format!("replica-{id}")
            } else {
                free_addr().to_string()
            };
            let service = free_addr();
            let listen = if proxied {
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
            let standby = if id > n - standby {
                "standby = true\n"
            } else {
                ""
            };
            members.push_str(&format!(
                "[[members]]\nid = {id}\naddr = \"{addr}\"\nadmin_addr = \"{service}\"\n{listen}{standby}\n"
            ));
            services.push(service);
        }
        let mut nodes = Vec::new();
        for id in 1..=n {
            let config = dir.join(format!("replica-{id}.toml"));
            let text = format!(
                "id = {id}\ndata_dir = \"{}\"\ntransport = \"{transport}\"\nshm_dir = \"{}\"\n\n\
                 [timing]\ntick_us = 1000\nheartbeat_ms = 10\nelection_timeout_min_ms = 150\n\
                 election_timeout_max_ms = 300\nlease_ms = 60\nclock_drift_us = 10000\n\n\
                 [runtime]\nspin_us = 20\n\n\
                 [durability]\nlog_backend = \"file\"\nlog_capacity_bytes = 67108864\ncheckpoint_every = 2000\n\n{members}",
                dir.join(format!("data-{id}")).display(),
                dir.display()
            );
            std::fs::write(&config, text).unwrap();
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
            stop,
        };
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Starts (or restarts) replica `id`'s process.
    pub fn spawn(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.child.is_none(), "replica {id} already running");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(keel_bin())
            .arg("run")
            .arg("--config")
            .arg(&node.config)
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

    /// Every running replica's process is alive (a replica that failed exits with status 1).
    /// Waits until replica `id` has applied everything the leader had committed when this was
    /// called (it recovered from its log and caught up); panics after `within`.
    pub fn wait_caught_up(&self, id: u64, within: Duration) {
        let commit = self
            .status(self.leader(Duration::from_secs(10)))
            .expect("the leader answers status")
            .commit_index;
        let start = Instant::now();
        while self.status(id).is_none_or(|s| s.applied_index < commit) {
            assert!(
                start.elapsed() < within,
                "restarted replica {id} did not catch up to commit index {commit} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

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
        let mut c = Connection::open(self.node(id).service, Duration::from_millis(500)).ok()?;
        match c.call(&Request::Status).ok()? {
            Reply::Status(json) => serde_json_lite(&json),
            _ => None,
        }
    }

    /// The replica that reports itself leader, waiting up to `within`.
    pub fn leader(&self, within: Duration) -> u64 {
        let start = Instant::now();
        while start.elapsed() < within {
            for n in &self.nodes {
                if n.child.is_some()
                    && let Some(s) = self.status(n.id)
                    && s.role == Role::Leader
                {
                    return n.id;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no leader within {within:?}");
    }

    pub fn services(&self) -> Vec<(u64, SocketAddr)> {
        self.nodes.iter().map(|n| (n.id, n.service)).collect()
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
}

fn serde_json_lite(json: &str) -> Option<Status> {
    // keel-tests has no serde_json dependency; the engine re-exports what it needs.
    keel_engine::stats::status_from_json(json).ok()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if !std::thread::panicking() {
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
}

pub const KEYS_PER_CLIENT: u64 = 2;

impl Workload {
    pub fn start(services: Vec<(u64, SocketAddr)>, clients: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let writes_acked = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let mut threads = Vec::new();
        for c in 0..clients {
            let (stop, history, acked, acks, writes_acked) = (
                Arc::clone(&stop),
                Arc::clone(&history),
                Arc::clone(&acked),
                Arc::clone(&acks),
                Arc::clone(&writes_acked),
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

/// The kill-the-leader scenario every transport runs: under load from `clients` clients,
/// `kill -9` the leader, require a write invoked after the kill to commit within
/// [`FAILOVER_BOUND`] (the figure is printed), restart the killed replica, require it to catch
/// up, and check every acknowledged write and the history's linearizability.
pub fn kill_9_the_leader_under_load_then_restart_it(
    mut cluster: Cluster,
    transport: &str,
    clients: u64,
) {
    let leader = cluster.leader(Duration::from_secs(20));
    let load = Workload::start(cluster.services(), clients);
    load.wait_writes(200, Duration::from_secs(20));
    let fault = load.now_us();
    cluster.kill(leader);
    let failover = load.first_commit_after(fault, FAILOVER_BOUND);
    eprintln!(
        "e2e {transport}: leader {leader} killed (-9); a new leader committed a write {failover:?} later (bound {FAILOVER_BOUND:?})"
    );
    load.wait_writes(100, Duration::from_secs(20));
    cluster.spawn(leader);
    load.wait_writes(200, Duration::from_secs(20));
    cluster.wait_caught_up(leader, Duration::from_secs(20));
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), clients);
}
