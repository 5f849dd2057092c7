//! `keel-bench log`: append latency and throughput of the persistence log (`keel-pmem`) per
//! durability backend, against the bare `pwrite` + `fdatasync` loop on the same file system,
//! measured in the same run.
//!
//! For each payload size the run measures the limit `pwrite-fdatasync-<size>` (see
//! [`crate::limits::pwrite_fdatasync`]), then for each backend:
//! - `log-<backend>-<size>-single`: one thread calling `Log::append` back to back; every call
//!   is durable when it returns;
//! - `log-<backend>-<size>-group<N>`: `N` threads appending concurrently to one log (group
//!   commit: appends that arrive during a commit share the next one); latency per append,
//!   throughput of all threads together.
//!
//! The log file is preallocated (written with zeros and synced) like the limit's file, so both
//! overwrite allocated blocks. When free space runs low the appender that notices releases the
//! whole log (`advance_head` to the tail, itself a durable commit) outside its timed append;
//! concurrent appenders may wait on that commit, which is then part of their latency, and an
//! append refused as full waits for (or runs) the release and is retried within its timing.
//!
//! Targets (issue 3): single append p50 at most 1.1x the bare loop's p50; group commit
//! throughput with 16 appenders at least 8x the single-appender rate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_pmem::{Backend, DynLog, Log, LogConfig, LogError};

use crate::limits::{self, LimitError, LimitOptions, ScratchFile, size_label};
use crate::progress::{Counter, Progress};
use crate::report::{Bound, LimitOutcome, Report, Skipped, Target, params};
use crate::stats::{Latencies, StatsError};

/// Errors from the log benchmark.
#[derive(Debug, thiserror::Error)]
pub enum LogBenchError {
    /// Measuring a limit failed.
    #[error("measuring the limit")]
    Limit(#[from] LimitError),
    /// A histogram failed.
    #[error("latency histogram")]
    Stats(#[from] StatsError),
    /// The log failed.
    #[error("log {backend} with {payload} B payloads: {op}")]
    Log {
        /// Backend.
        backend: String,
        /// Payload size.
        payload: usize,
        /// Operation.
        op: &'static str,
        /// The log's error.
        #[source]
        source: LogError,
    },
    /// An appender thread panicked.
    #[error("an appender thread panicked")]
    Panicked,
}

/// Parameters of `keel-bench log`.
#[derive(Clone, Debug)]
pub struct LogBenchOptions {
    /// Directory for the `file` and `uring` logs and their limit.
    pub dir: PathBuf,
    /// A DAX-mounted directory for the `dax` backend (skipped without one).
    pub dax_dir: Option<PathBuf>,
    /// Backends: any of `file`, `uring`, `dax`.
    pub backends: Vec<String>,
    /// Payload sizes in bytes.
    pub payloads: Vec<usize>,
    /// Concurrent appenders in the group-commit figure.
    pub appenders: usize,
    /// Size of each log region in bytes.
    pub region_bytes: u64,
}

/// Name of a log figure.
pub fn figure_name(backend: &str, payload: usize, appenders: usize) -> String {
    if appenders == 1 {
        format!("log-{backend}-{}-single", size_label(payload))
    } else {
        format!("log-{backend}-{}-group{appenders}", size_label(payload))
    }
}

fn dax_limit_name(payload: usize) -> String {
    format!("{}-daxdir", limits::pwrite_fdatasync_name(payload))
}

/// Runs the whole log benchmark into `report`.
pub fn run(
    o: &LogBenchOptions,
    lo: &LimitOptions,
    report: &mut Report,
) -> Result<(), LogBenchError> {
    assert!(o.appenders >= 1, "at least one appender");
    for &payload in &o.payloads {
        let limit = limits::pwrite_fdatasync(&o.dir, payload, lo)?;
        let limit_name = limit.name.clone();
        report.add_limit(LimitOutcome::Measured(limit));
        // What the device allows a group of `appenders` appends per sync (bandwidth bound for
        // large payloads): the group figures are also given as a ratio to it.
        // The bare floors under one log commit (the same bytes, no log), for the file and
        // uring backends: where the log's own cost starts.
        let mut floors = Vec::new();
        for (backend, uring) in [("file", false), ("uring", true)] {
            if o.backends.iter().any(|b| b == backend) {
                let l = limits::log_commit_floor(&o.dir, payload, uring, lo)?;
                floors.push((backend, l.name.clone()));
                report.add_limit(LimitOutcome::Measured(l));
            }
        }
        let group_limit = if o.appenders > 1 {
            let l = limits::pwrite_fdatasync_group(&o.dir, payload, o.appenders, lo)?;
            let n = l.name.clone();
            report.add_limit(LimitOutcome::Measured(l));
            Some(n)
        } else {
            None
        };
        for backend_name in &o.backends {
            let (dir, limit_for) = if backend_name == "dax" {
                let Some(d) = &o.dax_dir else {
                    report.skipped.push(Skipped {
                        name: figure_name("dax", payload, 1),
                        reason: "no DAX directory given (--dax-dir): skipped; runs in the \
                                 soft-RoCE/NVDIMM VM with KEEL_DAX_DIR"
                            .into(),
                    });
                    continue;
                };
                let l = limits::pwrite_fdatasync(d, payload, lo)?;
                let mut l = l;
                l.name = dax_limit_name(payload);
                let n = l.name.clone();
                report.add_limit(LimitOutcome::Measured(l));
                (d.clone(), n)
            } else {
                (o.dir.clone(), limit_name.clone())
            };
            let Some(backend) = Backend::parse(backend_name) else {
                report.skipped.push(Skipped {
                    name: backend_name.clone(),
                    reason: format!("unknown backend {backend_name:?}: skipped"),
                });
                continue;
            };
            let mut single_rate = None;
            for appenders in [1, o.appenders] {
                if appenders == 1 && single_rate.is_some() {
                    continue;
                }
                let name = figure_name(backend_name, payload, appenders);
                match measure(&dir, backend, payload, appenders, o.region_bytes, lo)? {
                    Ok(m) => {
                        let fig_params = params([
                            ("backend", serde_json::Value::from(backend_name.as_str())),
                            ("payload_bytes", payload.into()),
                            ("appenders", appenders.into()),
                            ("head_advances", m.head_advances.into()),
                            ("commits", m.commits.into()),
                            ("dir", dir.display().to_string().into()),
                            ("filesystem", limits::filesystem_of(&dir).into()),
                        ]);
                        let fig = report
                            .add_latencies(
                                &name,
                                fig_params,
                                &m.latencies,
                                m.elapsed,
                                Some(&limit_for),
                            )
                            .summary
                            .clone();
                        if appenders == 1 {
                            single_rate = Some(fig.throughput_per_s);
                            if let Some(l) = report.limit(&limit_for) {
                                let t = Target::new(
                                    format!("{name} p50 <= 1.1x {limit_for} p50",),
                                    fig.p50_ns,
                                    l.summary.p50_ns,
                                    Bound::AtMost,
                                    1.1,
                                );
                                report.targets.push(t);
                            }
                            let floor = floors
                                .iter()
                                .find(|(b, _)| b == backend_name)
                                .and_then(|(_, f)| report.limit(f));
                            if let Some(f) = floor {
                                // Not an issue target: the log's own cost over the bare
                                // write and sync of the same bytes.
                                report.targets.push(Target::new(
                                    format!("{name} p50 vs {} p50 (floor)", f.name),
                                    fig.p50_ns,
                                    f.summary.p50_ns,
                                    Bound::AtMost,
                                    1.1,
                                ));
                            }
                        } else if let Some(rate) = single_rate {
                            report.targets.push(Target::new(
                                format!(
                                    "{name} throughput >= 8x {} throughput",
                                    figure_name(backend_name, payload, 1)
                                ),
                                fig.throughput_per_s,
                                rate,
                                Bound::AtLeast,
                                8.0,
                            ));
                            let grouped = group_limit.as_deref().and_then(|g| report.limit(g));
                            if let (Some(g), false) = (grouped, backend_name == "dax") {
                                // Not an issue target: where the group stands against the
                                // device's own grouped limit (same appends per sync).
                                report.targets.push(Target::new(
                                    format!("{name} throughput vs {} (device limit)", g.name),
                                    fig.throughput_per_s,
                                    g.summary.throughput_per_s,
                                    Bound::AtLeast,
                                    0.5,
                                ));
                            }
                        }
                    }
                    Err(reason) => {
                        report.skipped.push(Skipped { name, reason });
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// One measured configuration.
pub struct LogMeasurement {
    /// Per-append latencies of every appender.
    pub latencies: Latencies,
    /// Recorded wall-clock time.
    pub elapsed: Duration,
    /// Times the log was released to make room.
    pub head_advances: u64,
    /// Commits the log ran during the whole measurement (warm-up included).
    pub commits: u64,
}

/// Measures `appenders` threads appending `payload` bytes to one log on `backend` in `dir`.
/// The inner `Err` is a reason to skip (the backend cannot open here, for example io_uring
/// refused by the kernel or a file system without `MAP_SYNC`).
pub fn measure(
    dir: &Path,
    backend: Backend,
    payload: usize,
    appenders: usize,
    region_bytes: u64,
    lo: &LimitOptions,
) -> Result<Result<LogMeasurement, String>, LogBenchError> {
    let name = figure_name(backend.name(), payload, appenders);
    let scratch = ScratchFile::preallocated(dir, &name, region_bytes)?;
    let cfg = LogConfig {
        backend,
        path: scratch.path().to_path_buf(),
        region_bytes,
        log_id: 1,
    };
    let log: DynLog = match Log::create_with(&cfg) {
        Ok(l) => l,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            return Ok(Err(format!(
                "{} backend cannot run in {}: {msg}: skipped",
                backend.name(),
                dir.display()
            )));
        }
    };
    let err = |op: &'static str| {
        let backend = backend.name();
        move |source| LogBenchError::Log {
            backend: backend.to_string(),
            payload,
            op,
            source,
        }
    };
    let max = log.max_payload();
    if payload as u64 > max {
        return Ok(Err(format!(
            "payload {payload} B exceeds the log's maximum record ({max} B): skipped"
        )));
    }
    // Keep room for every appender's next few records.
    let reserve = (appenders as u64) * (payload as u64 + 64) * 8;
    let log = Arc::new(log);
    let advancing = Arc::new(Mutex::new(()));
    let head_advances = Arc::new(AtomicU64::new(0));
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counter: Counter = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..appenders {
        let log = Arc::clone(&log);
        let advancing = Arc::clone(&advancing);
        let head_advances = Arc::clone(&head_advances);
        let recording = Arc::clone(&recording);
        let stop = Arc::clone(&stop);
        let counter = Arc::clone(&counter);
        let data = vec![t as u8; payload];
        let err_append = err("append");
        let err_advance = err("advance_head");
        threads.push(std::thread::spawn(
            move || -> Result<Latencies, LogBenchError> {
                let mut lat = Latencies::new()?;
                let mut was_recording = false;
                while !stop.load(Ordering::Relaxed) {
                    if log.free_bytes() < reserve
                        && let Ok(_guard) = advancing.try_lock()
                        && log.free_bytes() < reserve
                    {
                        log.advance_head(log.tail()).map_err(&err_advance)?;
                        head_advances.fetch_add(1, Ordering::Relaxed);
                    }
                    let rec = recording.load(Ordering::Relaxed);
                    if rec && !was_recording {
                        lat.reset();
                        was_recording = true;
                    }
                    let t0 = Instant::now();
                    loop {
                        match log.append(&data) {
                            Ok(_) => break,
                            // Concurrent appenders outran the release: wait for it (or run
                            // it) and retry; the wait is part of this append's latency.
                            Err(LogError::Full { .. }) => {
                                let _guard = advancing
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                                if log.free_bytes() < reserve {
                                    log.advance_head(log.tail()).map_err(&err_advance)?;
                                    head_advances.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(e) => return Err(err_append(e)),
                        }
                    }
                    lat.record(t0.elapsed());
                    if rec {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(lat)
            },
        ));
    }
    std::thread::sleep(lo.duration / 5);
    let progress = Progress::start(&name, Arc::clone(&counter), lo.quiet);
    recording.store(true, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(lo.duration);
    stop.store(true, Ordering::Relaxed);
    let mut all = Latencies::new()?;
    let mut first_err = None;
    for t in threads {
        match t.join() {
            Ok(Ok(l)) => all.merge(&l)?,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(LogBenchError::Panicked);
            }
        }
    }
    // Appends that finished after the stop flag are counted; the elapsed time runs until the
    // last appender has returned.
    let elapsed = start.elapsed();
    drop(progress);
    if let Some(e) = first_err {
        return Err(e);
    }
    let commits = log.stats().commits;
    drop(scratch);
    Ok(Ok(LogMeasurement {
        latencies: all,
        elapsed,
        head_advances: head_advances.load(Ordering::Relaxed),
        commits,
    }))
}

/// The run's parameters for the JSON file.
pub fn option_params(o: &LogBenchOptions) -> BTreeMap<String, serde_json::Value> {
    params([
        ("dir", serde_json::Value::from(o.dir.display().to_string())),
        ("filesystem", limits::filesystem_of(&o.dir).into()),
        (
            "dax_dir",
            o.dax_dir
                .as_ref()
                .map(|d| serde_json::Value::from(d.display().to_string()))
                .unwrap_or(serde_json::Value::Null),
        ),
        ("backends", serde_json::json!(o.backends)),
        ("payloads", serde_json::json!(o.payloads)),
        ("appenders", o.appenders.into()),
        ("region_bytes", o.region_bytes.into()),
    ])
}
