//! `keel-bench`: Keel's latency and throughput, each figure with its ratio to the machine's own
//! limit measured in the same run.
#![forbid(unsafe_code)]

/// Counts every allocation so `local` can report allocations per committed entry.
#[global_allocator]
static ALLOC: keel_bench::alloc_count::CountingAlloc = keel_bench::alloc_count::CountingAlloc;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use keel_bench::alloc_count::{self, AllocCounts};
use keel_bench::limits::{self, LimitOptions, LimitSet};
use keel_bench::report::{Report, params};

/// Keel benchmark tool.
#[derive(Parser, Debug)]
#[command(name = "keel-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Args, Debug, Clone)]
struct Common {
    /// Write every parameter, figure and limit of the run to this JSON file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the latency distribution of the run as an SVG plot.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Recorded length of each measurement, in milliseconds (a warm-up of a fifth runs first).
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
    /// The two cores pairs of threads are pinned to, as `A,B` (default: the first two).
    #[arg(long, value_name = "A,B", value_parser = parse_core_pair)]
    cores: Option<(usize, usize)>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn parse_core_pair(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once(',').ok_or("expected A,B")?;
    let a = a.trim().parse().map_err(|e| format!("{e}"))?;
    let b = b.trim().parse().map_err(|e| format!("{e}"))?;
    Ok((a, b))
}

impl Common {
    fn limit_options(&self) -> LimitOptions {
        LimitOptions {
            duration: Duration::from_millis(self.duration_ms),
            cores: self.cores,
            quiet: self.quiet,
        }
    }

    fn params(&self) -> Vec<(&'static str, serde_json::Value)> {
        vec![
            ("duration_ms", self.duration_ms.into()),
            ("warmup_ms", (self.duration_ms / 5).into()),
            (
                "cores",
                self.cores
                    .map(|(a, b)| serde_json::json!([a, b]))
                    .unwrap_or(serde_json::Value::Null),
            ),
        ]
    }

    /// Prints the report and writes the JSON and plot files asked for.
    fn finish(&self, report: &Report) -> anyhow::Result<()> {
        print!("{}", report.to_text());
        std::io::Write::flush(&mut std::io::stdout())?;
        if let Some(path) = &self.json {
            report.write_json(path)?;
            eprintln!("wrote {}", path.display());
        }
        if let Some(path) = &self.plot {
            let title = format!("keel-bench {}: latency distribution", report.command);
            keel_bench::plot::write_svg(path, &title, &report.curves())?;
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The machine's raw limits: cache-line round trip, TCP loopback round trip, fdatasync,
    /// and ib_write_lat where an RDMA device exists.
    Limits(LimitsArgs),
    /// Persistence log (keel-pmem) append latency and throughput per backend, single and group
    /// commit, against a bare pwrite+fdatasync loop on the same file system.
    Log(LogArgs),
    /// Transport round trip (write, follower sees it, ack back) and frame-stream throughput per
    /// backend, against the cache-line ping-pong (shm), raw TCP ping-pong (tcp), ib_write_lat.
    Ring(RingArgs),
    /// The same load as `local`, against an etcd cluster's v3 JSON gateway (HTTP/1.1
    /// keep-alive, one connection per client, clients spread over the endpoints).
    Etcd(EtcdArgs),
    /// A Keel cluster in this process: commit latency and throughput per transport and
    /// durability mode, closed or open loop, and the fail-over time.
    Local(LocalArgs),
    /// Runs one replica of a multi-host cluster (KV service on the member's admin_addr)
    /// until killed; `keel-bench client` drives the load.
    Replica(ReplicaArgs),
    /// Drives the load against a multi-host cluster of `keel-bench replica` processes.
    Client(ClientArgs),
    /// Renders `--json` reports as Markdown tables (for docs/PERFORMANCE.md).
    Markdown {
        /// The JSON reports.
        files: Vec<PathBuf>,
    },
}

fn run_markdown(files: &[PathBuf]) -> anyhow::Result<()> {
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
        println!("{}", keel_bench::markdown::render(&v));
    }
    Ok(())
}

#[derive(Args, Debug)]
struct LocalArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    load: LoadArgs,
    /// Transports: local (in-process channels), tcp, shm.
    #[arg(long, value_delimiter = ',', default_value = "local,tcp")]
    transports: Vec<String>,
    /// Durability modes: none, file, uring, dax.
    #[arg(long, value_delimiter = ',', default_value = "none,file")]
    durability: Vec<String>,
    /// Replicas in the cluster.
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Directory for the replicas' logs (a disk file system for durable runs).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Most commands in one decree (batch bound).
    #[arg(long, default_value_t = 256)]
    batch_entries: usize,
    /// Most decrees in flight (pipeline bound).
    #[arg(long, default_value_t = 32)]
    pipeline: usize,
    /// Election timeout range in milliseconds, as MIN,MAX.
    #[arg(long, value_parser = parse_core_pair, default_value = "60,120")]
    election_timeout_ms: (usize, usize),
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 5)]
    heartbeat_ms: u64,
    /// Protocol tick in microseconds.
    #[arg(long, default_value_t = 500)]
    tick_us: u64,
    /// Leader lease in milliseconds (0: reads use the read-index path); must stay below the
    /// smallest election timeout.
    #[arg(long, default_value_t = 30)]
    lease_ms: u64,
    /// Pin replica loops round-robin to these cores (default: not pinned).
    #[arg(long, value_delimiter = ',')]
    pin_replicas: Vec<usize>,
    /// Skip the fail-over measurement.
    #[arg(long)]
    no_failover: bool,
    /// First TCP port for the tcp transport.
    #[arg(long, default_value_t = 27100)]
    base_port: u16,
    /// Log region per replica, in MiB.
    #[arg(long, default_value_t = 256)]
    log_mib: u64,
    /// Decrees between checkpoints (the engine's default; a short run may never reach one,
    /// and until the first one nothing the log holds is recycled: smaller values show the
    /// steady state's allocations).
    #[arg(long, default_value_t = keel_engine::config::Durability::default().checkpoint_every)]
    checkpoint_every: u64,
    /// JSON report of `keel-bench etcd` from the same script run (for the 20x-etcd target).
    #[arg(long)]
    etcd_json: Option<PathBuf>,
    /// openraft's best in-memory figure on this machine, in commits/s (for the 3x target).
    #[arg(long)]
    openraft_best: Option<f64>,
}

/// The throughput of the figure whose name ends with `suffix` in a keel-bench JSON report.
fn throughput_in_report(
    path: &std::path::Path,
    suffix: &str,
) -> anyhow::Result<Option<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v["results"].as_array().and_then(|rs| {
        rs.iter()
            .find(|r| r["name"].as_str().is_some_and(|n| n.ends_with(suffix)))
            .map(|r| {
                (
                    r["summary"]["throughput_per_s"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                    r["summary"]["p99_ns"].as_f64().unwrap_or(f64::NAN),
                )
            })
    }))
}

fn run_local(a: &LocalArgs) -> anyhow::Result<()> {
    use keel_bench::local::{Cluster, ClusterOptions, cluster_params};
    use keel_bench::report::{Bound, LimitOutcome, Skipped, Target};
    let mut p = a.common.params();
    p.extend(a.load.params());
    p.push(("transports", serde_json::json!(a.transports)));
    p.push(("durability", serde_json::json!(a.durability)));
    p.push(("replicas", a.replicas.into()));
    p.push(("dir", a.dir.display().to_string().into()));
    p.push(("filesystem", limits::filesystem_of(&a.dir).into()));
    p.push(("openraft_best", a.openraft_best.into()));
    let mut report = Report::new("local", params(p));
    let lo = a.common.limit_options();
    let size = a.load.payload;
    report.add_limit(LimitOutcome::Measured(limits::cacheline_rtt(&lo)?));
    if a.transports.iter().any(|t| t == "tcp") {
        report.add_limit(LimitOutcome::Measured(limits::tcp_rtt(size, true, &lo)?));
        report.add_limit(LimitOutcome::Measured(limits::tcp_rtt(size, false, &lo)?));
    }
    let timing = keel_engine::config::Timing {
        tick_us: a.tick_us,
        heartbeat_ms: a.heartbeat_ms,
        election_timeout_min_ms: a.election_timeout_ms.0 as u64,
        election_timeout_max_ms: a.election_timeout_ms.1 as u64,
        lease_ms: a.lease_ms,
        ..Default::default()
    };
    let batching = keel_engine::config::Batching {
        max_batch_entries: a.batch_entries,
        pipeline_window: a.pipeline,
        ..Default::default()
    };
    let mut port = a.base_port;
    let mut best_memory_rate = f64::NAN;
    for transport in &a.transports {
        for durability in &a.durability {
            let co = ClusterOptions {
                replicas: a.replicas,
                transport: transport.clone(),
                durability: durability.clone(),
                dir: a.dir.clone(),
                base_port: port,
                batching: batching.clone(),
                timing: timing.clone(),
                pin_cores: a.pin_replicas.clone(),
                log_bytes: a.log_mib << 20,
                checkpoint_every: a.checkpoint_every,
            };
            port += 10;
            let prefix = format!("keel-{transport}-{durability}-{}", limits::size_label(size));
            // The disk's flush cost drifts within minutes on shared machines: measure the
            // bare loop right before each durable configuration, before its threads start.
            // The three replicas share this machine's disk: one sync while the other two
            // replicas sync too is the floor a durable commit here can reach.
            let (durable_limit, shared_disk_limit) = if durability != "none" {
                let mut add = |mut l: keel_bench::report::Limit| {
                    l.name = format!("{}@{transport}-{durability}", l.name);
                    let name = l.name.clone();
                    report.add_limit(LimitOutcome::Measured(l));
                    name
                };
                let alone = add(limits::pwrite_fdatasync(&a.dir, size, &lo)?);
                let shared = add(limits::pwrite_fdatasync_concurrent(&a.dir, size, 3, &lo)?);
                (Some(alone), Some(shared))
            } else {
                (None, None)
            };
            let mut cluster = match Cluster::start(&co) {
                Ok(c) => c,
                Err(e) => {
                    report.skipped.push(Skipped {
                        name: prefix.clone(),
                        reason: format!("{:#}: skipped", anyhow::Error::from(e)),
                    });
                    continue;
                }
            };
            if let Err(e) = cluster.leader(Duration::from_secs(10)) {
                report.skipped.push(Skipped {
                    name: prefix.clone(),
                    reason: format!("{e}: skipped"),
                });
                continue;
            }
            let limit = if let Some(l) = &durable_limit {
                l.clone()
            } else if transport == "tcp" {
                limits::tcp_rtt_name(size, false)
            } else {
                limits::CACHELINE_RTT.to_string()
            };
            for &clients in &a.load.clients {
                let name = format!("{prefix}-c{clients}");
                let o = a.load.options(&a.common, clients, name.clone());
                let committed_before = cluster.committed();
                let allocs_before = AllocCounts::now();
                let r =
                    keel_bench::load::run(&cluster, &o).with_context(|| format!("load {name}"))?;
                let allocs = AllocCounts::now().since(allocs_before);
                let committed = cluster.committed().saturating_sub(committed_before);
                let mut fp = cluster_params(&co);
                fp.insert("clients".into(), clients.into());
                if alloc_count::installed() && committed > 0 {
                    // Whole process: the three replicas' threads and the clients. Each client
                    // request allocates its own payload `Vec` (the caller's allocation that
                    // `propose` moves in), so 1.0 of the figure is the load generator's.
                    let per_entry = allocs.total() as f64 / committed as f64;
                    fp.insert("allocations_per_entry".into(), per_entry.into());
                    fp.insert("allocations".into(), allocs.total().into());
                    fp.insert("committed_entries".into(), committed.into());
                    println!(
                        "{name}: {per_entry:.3} allocations per committed entry ({} allocations \
                         for {committed} entries, whole process, including 1 per entry by the \
                         client for its payload)",
                        allocs.total()
                    );
                }
                add_load(&mut report, &name, fp, &r, Some(&limit));
                let Some(m) = report.result(&name).cloned() else {
                    continue;
                };
                let Some(l) = report.limit(&limit).cloned() else {
                    continue;
                };
                if durability == "none" {
                    best_memory_rate = best_memory_rate.max(m.summary.throughput_per_s);
                }
                if durability == "none" && transport != "tcp" && clients == 1 {
                    report.targets.push(Target::new(
                        format!("{name} p50 <= 4x {limit} p50"),
                        m.summary.p50_ns,
                        l.summary.p50_ns,
                        Bound::AtMost,
                        4.0,
                    ));
                }
                if durability == "file" && clients == 1 {
                    report.targets.push(Target::new(
                        format!("{name} p50 <= 1.3x {limit} p50"),
                        m.summary.p50_ns,
                        l.summary.p50_ns,
                        Bound::AtMost,
                        1.3,
                    ));
                    if let Some(shared) = shared_disk_limit
                        .as_ref()
                        .and_then(|n| report.limit(n).cloned())
                    {
                        report.targets.push(Target::new(
                            format!("{name} p50 <= 1.3x {} p50", shared.name),
                            m.summary.p50_ns,
                            shared.summary.p50_ns,
                            Bound::AtMost,
                            1.3,
                        ));
                    }
                }
                if durability == "file"
                    && clients == 64
                    && let Some(path) = &a.etcd_json
                    && let Some((etcd_rate, etcd_p99)) = throughput_in_report(path, "-c64")?
                {
                    report.targets.push(Target::new(
                        format!("{name} throughput >= 20x etcd at 64 clients"),
                        m.summary.throughput_per_s,
                        etcd_rate,
                        Bound::AtLeast,
                        20.0,
                    ));
                    report.targets.push(Target::new(
                        format!("{name} p99 below etcd's p99 at 64 clients"),
                        m.summary.p99_ns,
                        etcd_p99,
                        Bound::AtMost,
                        1.0,
                    ));
                }
            }
            if !a.no_failover {
                let name = format!("{prefix}-failover");
                match cluster.failover(&vec![0u8; size], Duration::from_secs(10)) {
                    Ok(d) => {
                        let mut lat = keel_bench::stats::Latencies::new()?;
                        lat.record(d);
                        let mut fp = cluster_params(&co);
                        fp.insert(
                            "note".into(),
                            "leader killed to first commit by the new leader".into(),
                        );
                        report.add_latencies(&name, fp, &lat, d, None);
                        if let Some(last) = report.results.last_mut() {
                            // One event: a rate means nothing here.
                            last.summary.throughput_per_s = f64::NAN;
                        }
                        let bound_ms = if transport == "tcp" { 10.0 } else { 1.0 };
                        report.targets.push(Target::new(
                            format!(
                                "{name} under {bound_ms} ms (election timeout {}-{} ms)",
                                cluster.election_timeout_ms.0, cluster.election_timeout_ms.1
                            ),
                            d.as_nanos() as f64,
                            bound_ms * 1e6,
                            Bound::AtMost,
                            1.0,
                        ));
                    }
                    Err(e) => report.skipped.push(Skipped {
                        name,
                        reason: format!("{e}"),
                    }),
                }
            }
            drop(cluster);
        }
    }
    if best_memory_rate.is_finite() {
        report.targets.push(Target::new(
            "best in-memory throughput >= 1,000,000 commits/s",
            best_memory_rate,
            1e6,
            Bound::AtLeast,
            1.0,
        ));
        if let Some(o) = a.openraft_best {
            report.targets.push(Target::new(
                "best in-memory throughput >= 3x openraft's best on this machine",
                best_memory_rate,
                o,
                Bound::AtLeast,
                3.0,
            ));
        }
    }
    a.common.finish(&report)
}

#[derive(Args, Debug)]
struct ReplicaArgs {
    /// The replica's configuration (TOML; see keel-engine's Config). Its member's admin_addr
    /// is where the KV service listens for `keel-bench client`.
    #[arg(long)]
    config: PathBuf,
}

fn run_replica(a: &ReplicaArgs) -> anyhow::Result<()> {
    let config = keel_engine::Config::from_toml_file(&a.config)?;
    let admin = config
        .me()
        .and_then(|m| m.admin_addr.clone())
        .context("the member's admin_addr (the KV service address) is not set")?;
    let addr: std::net::SocketAddr = admin
        .parse()
        .with_context(|| format!("admin_addr {admin}"))?;
    let replica = std::sync::Arc::new(keel_engine::Replica::start(
        config,
        keel_engine::kv::KvStore::new(),
    )?);
    let bound = keel_engine::kv::service::serve(std::sync::Arc::clone(&replica), addr)?;
    eprintln!("replica {} serving on {bound}", replica.id());
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Err(e) = replica.health() {
            anyhow::bail!("replica failed: {e}");
        }
        eprintln!(
            "  replica {}: {:?}, commit index {}",
            replica.id(),
            replica.role(),
            replica.commit_index()
        );
    }
}

#[derive(Args, Debug)]
struct ClientArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    load: LoadArgs,
    /// The replicas' KV service addresses, as ID=HOST:PORT, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    replicas: Vec<String>,
}

struct KvTarget {
    replicas: Vec<(u64, std::net::SocketAddr)>,
}

struct KvSession {
    client: keel_engine::kv::client::KvClient,
    id: usize,
}

impl keel_bench::load::Target for KvTarget {
    type Session = KvSession;
    fn session(&self, client: usize) -> Result<KvSession, keel_bench::load::RequestError> {
        Ok(KvSession {
            client: keel_engine::kv::client::KvClient::new(self.replicas.clone()),
            id: client,
        })
    }
}

impl keel_bench::load::Session for KvSession {
    fn request(&mut self, seq: u64, payload: &[u8]) -> Result<(), keel_bench::load::RequestError> {
        let key = format!("c{}-{}", self.id, seq % 1000);
        self.client.put(key.as_bytes(), payload)?;
        Ok(())
    }
}

fn run_client(a: &ClientArgs) -> anyhow::Result<()> {
    let mut replicas = Vec::new();
    for r in &a.replicas {
        let (id, addr) = r.split_once('=').context("expected ID=HOST:PORT")?;
        replicas.push((id.parse()?, addr.parse()?));
    }
    let mut p = a.common.params();
    p.extend(a.load.params());
    p.push(("replicas", serde_json::json!(a.replicas)));
    let mut report = Report::new("client", params(p));
    let lo = a.common.limit_options();
    report.add_limit(keel_bench::report::LimitOutcome::Measured(limits::tcp_rtt(
        a.load.payload,
        false,
        &lo,
    )?));
    let target = KvTarget { replicas };
    for &clients in &a.load.clients {
        let name = format!(
            "keel-kv-put-{}-c{clients}",
            limits::size_label(a.load.payload)
        );
        let o = a.load.options(&a.common, clients, name.clone());
        let r = keel_bench::load::run(&target, &o)?;
        add_load(
            &mut report,
            &name,
            params([("clients", clients)]),
            &r,
            Some(&limits::tcp_rtt_name(a.load.payload, false)),
        );
    }
    report.notes.push(
        "the TCP limit is loopback on the client host; across hosts the network round trip \
         is the floor"
            .into(),
    );
    a.common.finish(&report)
}

/// The load every Keel and peer run takes.
#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Client counts to run, one measurement each (closed loop unless --rate is given).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    clients: Vec<usize>,
    /// Open loop: total requests per second (latency from the intended send time).
    #[arg(long)]
    rate: Option<f64>,
    /// Request payload in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Unrecorded warm-up before each measurement, in milliseconds.
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Pin client threads round-robin to these cores (default: no pinning).
    #[arg(long, value_delimiter = ',')]
    pin_clients: Vec<usize>,
}

impl LoadArgs {
    fn options(
        &self,
        common: &Common,
        clients: usize,
        label: String,
    ) -> keel_bench::load::LoadOptions {
        keel_bench::load::LoadOptions {
            clients,
            mode: match self.rate {
                Some(rate_per_s) => keel_bench::load::Mode::Open { rate_per_s },
                None => keel_bench::load::Mode::Closed,
            },
            payload: self.payload,
            duration: Duration::from_millis(common.duration_ms),
            warmup: Duration::from_millis(self.warmup_ms),
            pin_cores: self.pin_clients.clone(),
            quiet: common.quiet,
            label,
        }
    }

    fn params(&self) -> Vec<(&'static str, serde_json::Value)> {
        vec![
            ("clients", serde_json::json!(self.clients)),
            (
                "loop",
                if self.rate.is_some() {
                    "open"
                } else {
                    "closed"
                }
                .into(),
            ),
            (
                "rate_per_s",
                self.rate
                    .map(serde_json::Value::from)
                    .unwrap_or(serde_json::Value::Null),
            ),
            ("payload_bytes", self.payload.into()),
            ("load_warmup_ms", self.warmup_ms.into()),
            ("pin_clients", serde_json::json!(self.pin_clients)),
        ]
    }
}

/// Adds a load result to the report, with its error and lateness counts.
fn add_load(
    report: &mut Report,
    name: &str,
    mut fig_params: std::collections::BTreeMap<String, serde_json::Value>,
    r: &keel_bench::load::LoadResult,
    limit: Option<&str>,
) {
    fig_params.insert("errors".into(), r.errors.into());
    fig_params.insert("late_sends".into(), r.late.into());
    if let Some(e) = &r.first_error {
        fig_params.insert("first_error".into(), e.clone().into());
        report
            .notes
            .push(format!("{name}: {} failed requests, first: {e}", r.errors));
    }
    report.add_latencies(name, fig_params, &r.latencies, r.elapsed, limit);
}

#[derive(Args, Debug)]
struct EtcdArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    load: LoadArgs,
    /// etcd client endpoints (host:port), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379"
    )]
    endpoints: Vec<std::net::SocketAddr>,
    /// Directory on the file system holding etcd's data, for the fdatasync limit.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Distinct keys each client cycles through.
    #[arg(long, default_value_t = 1000)]
    keys_per_client: u64,
}

fn run_etcd(a: &EtcdArgs) -> anyhow::Result<()> {
    let mut p = a.common.params();
    p.extend(a.load.params());
    p.push((
        "endpoints",
        serde_json::json!(
            a.endpoints
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        ),
    ));
    p.push(("dir", a.dir.display().to_string().into()));
    p.push(("filesystem", limits::filesystem_of(&a.dir).into()));
    let mut report = Report::new("etcd", params(p));
    let lo = a.common.limit_options();
    let sync_limit = limits::pwrite_fdatasync(&a.dir, a.load.payload, &lo)?;
    let sync_name = sync_limit.name.clone();
    report.add_limit(keel_bench::report::LimitOutcome::Measured(sync_limit));
    report.add_limit(keel_bench::report::LimitOutcome::Measured(limits::tcp_rtt(
        a.load.payload,
        false,
        &lo,
    )?));
    let etcd = keel_bench::etcd::Etcd {
        endpoints: a.endpoints.clone(),
        keys_per_client: a.keys_per_client,
    };
    for &clients in &a.load.clients {
        let name = format!("etcd-put-{}-c{clients}", limits::size_label(a.load.payload));
        let o = a.load.options(&a.common, clients, name.clone());
        let r = keel_bench::load::run(&etcd, &o).with_context(|| format!("etcd load {name}"))?;
        add_load(
            &mut report,
            &name,
            params([("clients", clients)]),
            &r,
            Some(&sync_name),
        );
    }
    report.notes.push(
        "etcd puts are durable (WAL fdatasync on the leader and a majority) and go through the \
         v3 JSON gateway; ratios are against one bare pwrite+fdatasync of the same size"
            .into(),
    );
    a.common.finish(&report)
}

#[derive(Args, Debug)]
struct RingArgs {
    #[command(flatten)]
    common: Common,
    /// Backends to measure (shm, tcp, rdma).
    #[arg(long, value_delimiter = ',', default_value = "shm,tcp,rdma")]
    backends: Vec<String>,
    /// Frame payload in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Shared-memory ring capacity in bytes (a power of two).
    #[arg(long, default_value_t = 1 << 20)]
    ring_bytes: usize,
    /// RDMA device (default: the first one).
    #[arg(long)]
    rdma_device: Option<String>,
}

fn run_ring(a: &RingArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.ring_bytes.is_power_of_two() && a.ring_bytes >= 4096,
        "--ring-bytes must be a power of two >= 4096"
    );
    let o = keel_bench::ring_bench::RingBenchOptions {
        backends: a.backends.clone(),
        payload: a.payload,
        ring_bytes: a.ring_bytes,
        rdma_device: a.rdma_device.clone(),
    };
    let mut p = a.common.params();
    p.push(("backends", serde_json::json!(a.backends)));
    p.push(("payload_bytes", a.payload.into()));
    p.push(("ring_bytes", a.ring_bytes.into()));
    let mut report = Report::new("ring", params(p));
    keel_bench::ring_bench::run(&o, &a.common.limit_options(), &mut report)
        .context("keel-bench ring")?;
    a.common.finish(&report)
}

#[derive(Args, Debug)]
struct LogArgs {
    #[command(flatten)]
    common: Common,
    /// Directory for the file and uring logs (and the bare-loop limit).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// A DAX-mounted directory for the dax backend (default: $KEEL_DAX_DIR; skipped without).
    #[arg(long, env = "KEEL_DAX_DIR")]
    dax_dir: Option<PathBuf>,
    /// Backends to measure (file and uring: direct I/O where the file system allows it;
    /// file-buffered: pwrite + fdatasync; uring-buffered; dax; sim is not a durability
    /// backend).
    #[arg(long, value_delimiter = ',', default_value = "file,uring,dax")]
    backends: Vec<String>,
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,1024,65536")]
    payloads: Vec<usize>,
    /// Concurrent appenders for the group-commit figure.
    #[arg(long, default_value_t = 16)]
    appenders: usize,
    /// Size of each log region in MiB.
    #[arg(long, default_value_t = 64)]
    region_mib: u64,
    /// The core every thread of the run is pinned to: a core number, `auto` (the core that
    /// takes the log device's interrupts, found by a short probe) or `none`.
    #[arg(long, default_value = "auto")]
    pin_core: keel_bench::log_bench::Pin,
}

fn run_log(a: &LogArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !a.backends.iter().any(|b| b == "sim"),
        "sim is not a durability backend; choose from file, uring, dax"
    );
    let o = keel_bench::log_bench::LogBenchOptions {
        dir: a.dir.clone(),
        dax_dir: a.dax_dir.clone(),
        backends: a.backends.clone(),
        payloads: a.payloads.clone(),
        appenders: a.appenders,
        region_bytes: a.region_mib << 20,
        pin: a.pin_core,
    };
    let mut p = keel_bench::log_bench::option_params(&o);
    p.extend(params(a.common.params()));
    let mut report = Report::new("log", p);
    keel_bench::log_bench::run(&o, &a.common.limit_options(), &mut report)
        .context("keel-bench log")?;
    a.common.finish(&report)
}

#[derive(Args, Debug)]
struct LimitsArgs {
    #[command(flatten)]
    common: Common,
    /// Directory (file system) for the fdatasync limits.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Skip the fdatasync limits.
    #[arg(long)]
    no_sync: bool,
    /// Sizes of the bare pwrite+fdatasync loop, in bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,1024,65536")]
    pwrite_sizes: Vec<usize>,
    /// Size of the TCP ping-pong, in bytes.
    #[arg(long, default_value_t = 64)]
    tcp_size: usize,
    /// RDMA device for ib_write_lat (default: the first one).
    #[arg(long)]
    ib_device: Option<String>,
    /// GID index for ib_write_lat (`-x`, RoCE).
    #[arg(long)]
    ib_gid_index: Option<u32>,
}

fn run_limits(a: &LimitsArgs) -> anyhow::Result<()> {
    let mut p = a.common.params();
    p.push(("dir", a.dir.display().to_string().into()));
    p.push(("filesystem", limits::filesystem_of(&a.dir).into()));
    p.push(("sync", (!a.no_sync).into()));
    p.push(("pwrite_sizes", serde_json::json!(a.pwrite_sizes)));
    p.push(("tcp_size", a.tcp_size.into()));
    let mut report = Report::new("limits", params(p));
    let set = LimitSet {
        cacheline: true,
        tcp_sizes: vec![a.tcp_size],
        tcp_blocking: true,
        sync_dir: (!a.no_sync).then(|| a.dir.clone()),
        fdatasync_4k: true,
        pwrite_sizes: a.pwrite_sizes.clone(),
        ib_sizes: vec![64],
        ib_device: a.ib_device.clone(),
        ib_gid_index: a.ib_gid_index,
    };
    for outcome in limits::measure(&set, &a.common.limit_options()).context("measuring limits")? {
        report.add_limit(outcome);
    }
    a.common.finish(&report)
}

fn main() -> anyhow::Result<()> {
    // `keel-bench ring` runs a copy of itself as the writer of `ring-shm-wake`.
    if let Some(status) = keel_bench::ring_bench::wake_writer_if_asked() {
        std::process::exit(status);
    }
    let cli = Cli::parse();
    match &cli.command {
        Command::Limits(a) => run_limits(a),
        Command::Log(a) => run_log(a),
        Command::Ring(a) => run_ring(a),
        Command::Etcd(a) => run_etcd(a),
        Command::Local(a) => run_local(a),
        Command::Replica(a) => run_replica(a),
        Command::Client(a) => run_client(a),
        Command::Markdown { files } => run_markdown(files),
    }
}
