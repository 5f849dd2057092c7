//! `keel-bench`: Keel's latency and throughput, each figure with its ratio to the machine's own
//! limit measured in the same run.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
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
    /// Backends to measure (file, uring, dax; sim is not a durability backend).
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
    let cli = Cli::parse();
    match &cli.command {
        Command::Limits(a) => run_limits(a),
        Command::Log(a) => run_log(a),
        Command::Ring(a) => run_ring(a),
        Command::Etcd(a) => run_etcd(a),
    }
}
