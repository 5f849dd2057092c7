//! End-to-end over RDMA: three replica processes on the one soft-RoCE device (`rxe0`) in the VM
//! harness (`tests/vm/run`), `transport = "rdma"`, a client writing and reading through the
//! example key-value service; the leader is killed with SIGKILL under load, a new leader must
//! commit within [`FAILOVER_BOUND`], the killed replica is restarted and must catch up over
//! fresh RDMA connections, and at the end every acknowledged write is present and the history is
//! linearizable.
//!
//! The replica processes are this test binary itself, re-executed with
//! `KEEL_E2E_RDMA_REPLICA=<config file>`: each starts a replica with the `keel-engine` API and
//! serves the key-value protocol at its `admin_addr`, as `keel run` does.
//!
//! Outside the VM this prints why it is skipped and passes. Built with `harness = false` so the
//! same `main` can be a replica.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_common::Workload;
use keel_engine::kv::KvStore;
use keel_engine::kv::client::Connection;
use keel_engine::kv::service::serve;
use keel_engine::kv::wire::{Reply, Request};
use keel_engine::{Config, Replica, Role, Status};

/// Environment variable that makes this binary run one replica (value: its config file).
const ROLE_ENV: &str = "KEEL_E2E_RDMA_REPLICA";
/// Fail-over bound in the VM: QEMU's TCG emulation (no KVM) runs the guest many times slower
/// than the host, and three replicas plus the client share its 2 vCPUs.
const FAILOVER_BOUND: Duration = Duration::from_secs(20);
const CLIENTS: u64 = 3;
const REPLICAS: u64 = 3;

fn main() {
    if let Ok(config) = std::env::var(ROLE_ENV) {
        run_replica(Path::new(&config));
    }
    let device = match (
        std::env::var("KEEL_IN_VM"),
        std::env::var("KEEL_RDMA_DEVICE"),
    ) {
        (Ok(_), Ok(device)) if !device.is_empty() => device,
        _ => {
            eprintln!("skipped: needs rxe0; runs in the soft-RoCE VM via tests/vm/run");
            return;
        }
    };
    if !cfg!(feature = "rdma") {
        eprintln!(
            "skipped: built without keel-tests' `rdma` feature; tests/vm/run builds it with the \
             feature"
        );
        return;
    }
    e2e_rdma_kill_9_the_leader_under_load_then_restart_it(&device);
    println!("test result: ok. 1 passed");
}

/// One replica process: what `keel run --config FILE` does.
fn run_replica(path: &Path) -> ! {
    let config = Config::from_toml_file(path).unwrap();
    let id = config.id;
    let admin: SocketAddr = config
        .me()
        .unwrap()
        .admin_addr
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let replica = match Replica::start(config, KvStore::new()) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("replica {id}: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let bound = serve(Arc::clone(&replica), admin).unwrap();
    println!("replica {id}: running over rdma, service at {bound}");
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(f) = replica.failure() {
            eprintln!("replica {id} failed: {f}");
            std::process::exit(1);
        }
    }
}

/// `n` consecutive free TCP ports on 127.0.0.1 at or above `from` (a replica's out-of-band
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

struct Node {
    id: u64,
    config: PathBuf,
    service: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

struct RdmaCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl RdmaCluster {
    fn start(device: &str) -> RdmaCluster {
        let dir = std::env::temp_dir().join(format!("keel-e2e-rdma-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Per replica: REPLICAS - 1 out-of-band ports (one per inbound ring) and a service port.
        let mut members = String::new();
        let mut services = Vec::new();
        let mut from = 20_000 + u16::try_from(std::process::id() % 1000).unwrap() * 20;
        for id in 1..=REPLICAS {
            let base = free_ports(u16::try_from(REPLICAS).unwrap(), from);
            from = base + u16::try_from(REPLICAS).unwrap();
            let service =
                SocketAddr::from(([127, 0, 0, 1], base + u16::try_from(REPLICAS).unwrap() - 1));
            members.push_str(&format!(
                "[[members]]\nid = {id}\naddr = \"127.0.0.1:{base}\"\nadmin_addr = \"{service}\"\n\n"
            ));
            services.push(service);
        }
        let mut nodes = Vec::new();
        for id in 1..=REPLICAS {
            let config = dir.join(format!("replica-{id}.toml"));
            let text = format!(
                "id = {id}\ndata_dir = \"{}\"\ntransport = \"rdma\"\nrdma_device = \"{device}\"\n\n\
                 [timing]\ntick_us = 5000\nheartbeat_ms = 50\nelection_timeout_min_ms = 1500\n\
                 election_timeout_max_ms = 3000\nlease_ms = 300\nclock_drift_us = 50000\n\n\
                 [runtime]\nspin_us = 20\n\n\
                 [durability]\nlog_backend = \"file\"\nlog_capacity_bytes = 67108864\ncheckpoint_every = 2000\n\n{members}",
                dir.join(format!("data-{id}")).display()
            );
            std::fs::write(&config, text).unwrap();
            // Fail here, with the field named, rather than in three child processes.
            Config::from_toml_file(&config).unwrap();
            nodes.push(Node {
                id,
                config,
                service: services[usize::try_from(id - 1).unwrap()],
                log: dir.join(format!("replica-{id}.out")),
                child: None,
            });
        }
        let mut cluster = RdmaCluster { dir, nodes };
        for id in 1..=REPLICAS {
            cluster.spawn(id);
        }
        cluster
    }

    fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[usize::try_from(id - 1).unwrap()]
    }

    fn spawn(&mut self, id: u64) {
        let node = self.node(id);
        assert!(node.child.is_none(), "replica {id} already running");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, &node.config)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// SIGKILL (`kill -9`) replica `id`.
    fn kill(&mut self, id: u64) {
        let mut child = self.node(id).child.take().expect("replica running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn assert_alive(&mut self) {
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

    fn status(&self, id: u64) -> Option<Status> {
        let node = &self.nodes[usize::try_from(id - 1).unwrap()];
        let mut c = Connection::open(node.service, Duration::from_secs(3)).ok()?;
        match c.call(&Request::Status).ok()? {
            Reply::Status(json) => keel_engine::stats::status_from_json(&json).ok(),
            _ => None,
        }
    }

    fn leader(&mut self, within: Duration) -> u64 {
        let start = Instant::now();
        while start.elapsed() < within {
            self.assert_alive();
            for n in 1..=REPLICAS {
                if self.nodes[usize::try_from(n - 1).unwrap()].child.is_some()
                    && self.status(n).is_some_and(|s| s.role == Role::Leader)
                {
                    return n;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.dump_logs();
        panic!("no leader within {within:?}");
    }

    /// Waits until `n` more writes are acknowledged, printing progress and every replica's
    /// status every 10 s.
    fn wait_writes(&self, load: &Workload, n: u64, within: Duration) {
        let acked = || load.writes_acked.load(std::sync::atomic::Ordering::Relaxed);
        let target = acked() + n;
        let start = Instant::now();
        let mut report = Instant::now();
        while acked() < target {
            if report.elapsed() >= Duration::from_secs(10) || start.elapsed() >= within {
                report = Instant::now();
                eprintln!("e2e rdma: {} writes acknowledged, want {target}", acked());
                for id in 1..=REPLICAS {
                    match self.status(id) {
                        Some(s) => eprintln!(
                            "  replica {id}: {:?} ballot {:?} commit {} applied {} peers {:?}",
                            s.role,
                            s.ballot,
                            s.commit_index,
                            s.applied_index,
                            s.peers
                                .iter()
                                .map(|p| (p.id, p.acked_slot, p.last_heard_us))
                                .collect::<Vec<_>>()
                        ),
                        None => eprintln!("  replica {id}: no status"),
                    }
                }
            }
            assert!(
                start.elapsed() < within,
                "fewer than {n} writes acknowledged within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn services(&self) -> Vec<(u64, SocketAddr)> {
        self.nodes.iter().map(|n| (n.id, n.service)).collect()
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

impl Drop for RdmaCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn e2e_rdma_kill_9_the_leader_under_load_then_restart_it(device: &str) {
    let t0 = Instant::now();
    let mut cluster = RdmaCluster::start(device);
    let leader = cluster.leader(Duration::from_secs(90));
    eprintln!(
        "e2e rdma: 3 replicas on {device}, replica {leader} leads after {:?}",
        t0.elapsed()
    );
    let load = Workload::start(cluster.services(), CLIENTS);
    let phase = Instant::now();
    cluster.wait_writes(&load, 200, Duration::from_secs(90));
    let before = load.writes_acked.load(std::sync::atomic::Ordering::Relaxed);
    let rate = before as f64 / phase.elapsed().as_secs_f64();
    eprintln!(
        "e2e rdma: {before} writes acknowledged before the fault ({rate:.0}/s, {CLIENTS} clients, TCG-emulated VM)"
    );

    let fault = load.now_us();
    cluster.kill(leader);
    let failover = load.first_commit_after(fault, FAILOVER_BOUND);
    let new_leader = cluster.leader(Duration::from_secs(30));
    assert_ne!(new_leader, leader, "the killed replica cannot lead");
    eprintln!(
        "e2e rdma: leader {leader} killed (-9); replica {new_leader} leads and committed a write {failover:?} later (bound {FAILOVER_BOUND:?})"
    );
    cluster.wait_writes(&load, 200, Duration::from_secs(90));

    // The killed replica comes back: it recovers its log and the others' rings to it are
    // re-established (their queue pairs to the dead process failed; they dial the new one).
    cluster.spawn(leader);
    cluster.wait_writes(&load, 100, Duration::from_secs(90));
    let current = cluster.leader(Duration::from_secs(30));
    let commit = cluster.status(current).unwrap().commit_index;
    let start = Instant::now();
    while cluster
        .status(leader)
        .is_none_or(|s| s.applied_index < commit)
    {
        cluster.assert_alive();
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "restarted replica {leader} did not catch up to {commit}: {:?}",
            cluster.status(leader)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "e2e rdma: restarted replica {leader} caught up to commit index {commit} in {:?}",
        start.elapsed()
    );
    cluster.assert_alive();
    let total = load.writes_acked.load(std::sync::atomic::Ordering::Relaxed);
    load.stop_and_check(cluster.services(), CLIENTS);
    eprintln!(
        "e2e rdma: passed in {:?}: {total} writes acknowledged, none lost, history linearizable",
        t0.elapsed()
    );
}
