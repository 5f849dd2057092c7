//! `keel demo`: a local 3-replica cluster of the example key-value service, driven by the
//! example client, with a progress line and the throughput and latency it measured.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use keel_engine::config::{Durability, Member};
use keel_engine::kv::KvStore;
use keel_engine::kv::client::Connection;
use keel_engine::kv::service::serve;
use keel_engine::kv::wire::{Reply, Request};
use keel_engine::{Builder, LocalNetwork, Replica, Role, ShmMesh, TransportKind};

/// How the demo's replicas reach each other.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DemoTransport {
    /// Shared-memory rings (the ring protocol of keel-transport) between the replicas.
    Shm,
    /// TCP over loopback, with the member/cluster handshake.
    Tcp,
    /// In-process queues (no network between replicas).
    Local,
}

/// `keel demo`
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How long to drive the cluster.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Client connections to the leader.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests each connection keeps in flight (pipelining).
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Bytes per value written.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Transport between the replicas.
    #[arg(long, value_enum, default_value_t = DemoTransport::Shm)]
    transport: DemoTransport,
    /// Log backend: file (durable; direct I/O where the file system allows it),
    /// file-buffered (pwrite + fdatasync), uring, or memory.
    #[arg(long, default_value = "file")]
    log: String,
    /// Keep the data here instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?)
}

/// Runs the demo.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.window == 0 {
        bail!("--clients and --window must be at least 1");
    }
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let peer_addrs: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect::<Result<_, _>>()?;
    let service_addrs: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect::<Result<_, _>>()?;
    let members: Vec<Member> = (0..3)
        .map(|i| {
            let mut m = Member::voter(i as u64 + 1, peer_addrs[i].to_string());
            m.admin_addr = Some(service_addrs[i].to_string());
            m
        })
        .collect();
    let network = LocalNetwork::new();
    let mesh = ShmMesh::new(&[1, 2, 3])?;
    let transport = match args.transport {
        DemoTransport::Shm => TransportKind::Shm,
        DemoTransport::Tcp => TransportKind::Tcp,
        DemoTransport::Local => TransportKind::Local,
    };
    println!(
        "keel demo: 3 replicas ({} transport, {} log in {}), {} clients x {} in flight, {}-byte values, {} s",
        transport.name(),
        args.log,
        dir.display(),
        args.clients,
        args.window,
        args.value_bytes,
        args.seconds
    );
    let mut replicas = Vec::new();
    for i in 0..3u64 {
        let config = Builder::new(i + 1, dir.join(format!("replica-{}", i + 1)))
            .members(members.clone())
            .transport(transport)
            .durability(Durability {
                log_backend: args.log.clone(),
                log_capacity_bytes: 512 << 20,
                ..Durability::default()
            })
            .build()?;
        let replica = match transport {
            TransportKind::Local => Replica::start_local(config, KvStore::new(), &network)?,
            TransportKind::Shm => Replica::start_shm(config, KvStore::new(), &mesh)?,
            _ => Replica::start(config, KvStore::new())?,
        };
        let replica = Arc::new(replica);
        serve(Arc::clone(&replica), service_addrs[i as usize])?;
        replicas.push(replica);
    }
    let start = Instant::now();
    let leader = loop {
        if let Some(r) = replicas.iter().find(|r| r.role() == Role::Leader) {
            break Arc::clone(r);
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("no leader elected within 10 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    println!(
        "leader: replica {} (elected {:.1} ms after start)",
        leader.id(),
        start.elapsed().as_secs_f64() * 1000.0
    );
    let leader_addr = service_addrs[(leader.id() - 1) as usize];

    let stop = Arc::new(AtomicBool::new(false));
    let done_ops = Arc::new(AtomicU64::new(0));
    let failed_ops = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut workers = Vec::new();
    for c in 0..args.clients {
        let stop = Arc::clone(&stop);
        let done_ops = Arc::clone(&done_ops);
        let failed_ops = Arc::clone(&failed_ops);
        let hist = Arc::clone(&hist);
        let window = args.window;
        let value = vec![b'x'; args.value_bytes];
        workers.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut conn = Connection::open(leader_addr, Duration::from_secs(15))?;
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut in_flight = std::collections::VecDeque::with_capacity(window);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || !in_flight.is_empty() {
                while !stop.load(Ordering::Relaxed) && in_flight.len() < window {
                    let key = format!("c{c}-k{}", n % 1024).into_bytes();
                    n += 1;
                    conn.send(&Request::Put {
                        key,
                        value: value.clone(),
                    })?;
                    in_flight.push_back(Instant::now());
                }
                conn.flush()?;
                if let Some(sent) = in_flight.pop_front() {
                    let (_, reply) = conn.recv()?;
                    match reply {
                        Ok(Reply::Written { .. }) => {
                            local.saturating_record(sent.elapsed().as_micros() as u64);
                            done_ops.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed_ops.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            hist.lock()
                .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?
                .add(&local)?;
            Ok(())
        }));
    }
    let load_start = Instant::now();
    let total = Duration::from_secs(args.seconds);
    let mut last = 0;
    while load_start.elapsed() < total {
        std::thread::sleep(
            Duration::from_millis(250).min(total.saturating_sub(load_start.elapsed())),
        );
        let ops = done_ops.load(Ordering::Relaxed);
        let t = load_start.elapsed().as_secs_f64();
        print!(
            "\r  {t:5.1} s  {ops:>9} puts committed  {:>9.0} puts/s (last 250 ms: {:>7.0}/s)   ",
            ops as f64 / t,
            (ops - last) as f64 / 0.25
        );
        let _ = std::io::stdout().flush();
        last = ops;
        if let Some(f) = leader.failure() {
            bail!("the leader failed: {f}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    let elapsed = load_start.elapsed().as_secs_f64();
    println!();
    let ops = done_ops.load(Ordering::Relaxed);
    let h = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
    println!(
        "throughput: {:.0} puts/s ({ops} committed in {elapsed:.2} s, {} failed)",
        ops as f64 / elapsed,
        failed_ops.load(Ordering::Relaxed)
    );
    println!(
        "latency (client-observed, us): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    let s = leader.status().wait()?;
    println!(
        "leader: commit index {}, {} flushes (p50 {} us, p99 {} us), batch size p50 {} max {}",
        s.commit_index,
        s.flushes,
        s.flush_latency_us.p50,
        s.flush_latency_us.p99,
        s.batch_size.p50,
        s.batch_size.max
    );
    for p in &s.peers {
        println!(
            "  peer {}: lag {} decrees, accept->ack p50 {} us p99 {} us",
            p.id, p.lag, p.ack_latency_us.p50, p.ack_latency_us.p99
        );
    }
    for r in &replicas {
        if let Some(f) = r.failure() {
            bail!("replica {} failed: {f}", r.id());
        }
    }
    drop(leader);
    for r in replicas {
        let _ = r.shutdown();
    }
    Ok(())
}
