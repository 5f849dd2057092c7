//! `keel-bench log`: append latency and throughput of the persistence log (`keel-pmem`) per
//! durability backend, against the bare `pwrite` + `fdatasync` loop on the same file system,
//! measured in the same run.
//!
//! For each payload size the run measures, interleaved (a warm-up round in which each runs for
//! a fifth of `--duration-ms`, then
//! [`limits::INTERLEAVE_ROUNDS`] rounds in which each runs for a tenth of `--duration-ms`, in
//! rotating order, so that drift on a shared machine weighs on each alike):
//! - the limit `pwrite-fdatasync-<size>` (see [`limits::pwrite_fdatasync`]) and the floors
//!   under one log commit (the same bytes as one commit, no log): `direct-dsync-<size>-record`
//!   for `file` and `uring` (one `O_DIRECT` write with `RWF_DSYNC` of the blocks they cover;
//!   where the file system refuses `O_DIRECT` they are buffered and get the next floors),
//!   `pwrite-fdatasync-<size>-record` for `file-buffered` and `uring-fdatasync-<size>-record`
//!   for `uring-buffered`;
//! - `log-<backend>-<size>-single`: one thread calling `Log::append` back to back; every call
//!   is durable when it returns;
//! - `log-<backend>-<size>-group<N>`: `N` threads appending concurrently to one log (group
//!   commit: appends that arrive during a commit share the next one); latency per append,
//!   throughput of all threads together. Between its slices the threads park.
//!
//! The bare loop and the floors write at consecutive offsets wrapping within a region as large
//! as the log's (`--region-mib`), so both spread their writes over the same span: on the
//! virtual disk this was built on, the same log measured 1.07x the bare loop with a 4 MiB log
//! region and 1.17x with 64 MiB, against a bare loop over 1 MiB (`keel-bench limits` keeps the
//! 1 MiB loop).
//!
//! Then the device's grouped limit `pwrite-fdatasync-<size>x<N>` (N appends per sync) on its
//! own.
//!
//! Every thread of the run is pinned to one core (`--pin-core`, default `auto`: the core that
//! takes the completion interrupts of the disk under `--dir`, found by counting
//! `/proc/interrupts` around a few syncs). On the 2-vCPU VMs this was built on, a commit's
//! waiters woken on the other vCPU cost more than the second vCPU gives: 16 appenders spread by
//! the scheduler reached 7.1-8.0x the single rate, pinned 8-10x; a thread-per-core engine keeps
//! its log on one core likewise. `--pin-core none` measures the spread placement.
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
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use keel_pmem::{Backend, DynLog, Log, LogConfig, LogError};

use crate::limits::{self, LimitError, LimitOptions, ScratchFile, SyncKind, SyncSpec, size_label};
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
    /// `--pin-core` names a core this process may not run on.
    #[error("core {0} is not one this process may run on (see `taskset -p $$`)")]
    NoSuchCore(usize),
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
    /// The core every thread of the run is pinned to (bare loops, single and group appenders).
    pub pin: Pin,
}

/// Where `keel-bench log` runs its threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// On the core that takes the interrupts of the device under `--dir` (found by
    /// [`limits::sync_interrupt_core`]); unpinned when none can be told.
    Auto,
    /// On this core.
    Core(usize),
    /// Anywhere the scheduler puts them.
    Off,
}

impl std::str::FromStr for Pin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "none" | "off" => Ok(Self::Off),
            n => n
                .parse()
                .map(Self::Core)
                .map_err(|_| format!("{n:?} is not a core number, `auto` or `none`")),
        }
    }
}

/// Resolves `pin` for a run in `dir`: the core (if any) and a note saying what was done.
pub fn resolve_pin(pin: Pin, dir: &Path) -> Result<(Option<usize>, String), LogBenchError> {
    let cores = limits::all_cores();
    Ok(match pin {
        Pin::Off => (None, "threads not pinned (--pin-core none)".into()),
        Pin::Core(c) if cores.iter().any(|id| id.id == c) => (
            Some(c),
            format!("every thread pinned to core {c} (--pin-core {c})"),
        ),
        Pin::Core(c) => return Err(LogBenchError::NoSuchCore(c)),
        Pin::Auto => match limits::sync_interrupt_core(dir)? {
            Ok((c, why)) => (
                Some(c),
                format!(
                    "every thread pinned to core {c}, the one that takes the log device's \
                     completions ({why}); a thread-per-core engine keeps its log there too"
                ),
            ),
            Err(why) => (None, format!("threads not pinned: {why}")),
        },
    })
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
    let (core, note) = resolve_pin(o.pin, &o.dir)?;
    report.params.insert(
        "pinned_core".into(),
        core.map_or(serde_json::Value::Null, serde_json::Value::from),
    );
    report.notes.push(note);
    // Threads inherit the affinity of the thread that starts them: the appenders, the
    // io_uring workers and the bare loops all run where this thread is pinned.
    limits::on_own_thread("log benchmark", || {
        if let Some(c) = core {
            limits::pin(Some(c));
        }
        run_pinned(o, lo, report)
    })?
}

fn run_pinned(
    o: &LogBenchOptions,
    lo: &LimitOptions,
    report: &mut Report,
) -> Result<(), LogBenchError> {
    for &payload in &o.payloads {
        run_payload(o, payload, lo, report)?;
    }
    Ok(())
}

/// A backend whose log opened, with what its figures are compared with.
struct Subject {
    name: String,
    backend: Backend,
    dir: PathBuf,
    /// The bare loop its single append is compared with.
    limit_for: String,
}

/// One single appender as a step of an interleaved run: releases the log when it runs low
/// (untimed), then times one durable append.
struct SingleStep {
    log: DynLog,
    _scratch: ScratchFile,
    data: Vec<u8>,
    reserve: u64,
    head_advances: u64,
    backend: String,
    payload: usize,
}

impl SingleStep {
    fn once(&mut self) -> Result<Duration, LogBenchError> {
        let err = |op, source| LogBenchError::Log {
            backend: self.backend.clone(),
            payload: self.payload,
            op,
            source,
        };
        if self.log.free_bytes() < self.reserve {
            self.log
                .advance_head(self.log.tail())
                .map_err(|e| err("advance_head", e))?;
            self.head_advances += 1;
        }
        let t0 = Instant::now();
        self.log.append(&self.data).map_err(|e| err("append", e))?;
        Ok(t0.elapsed())
    }
}

/// Whether the `file` backend's default (direct I/O where allowed) goes direct in `dir`.
fn direct_io_works(dir: &Path) -> bool {
    let Ok(probe) = ScratchFile::preallocated(dir, "direct-probe", 1 << 16) else {
        return false;
    };
    keel_pmem::FileRegion::open(probe.path(), 1 << 16).is_ok_and(|r| r.is_direct())
}

fn run_payload(
    o: &LogBenchOptions,
    payload: usize,
    lo: &LimitOptions,
    report: &mut Report,
) -> Result<(), LogBenchError> {
    // The bare loop, the floors under one log commit (the same bytes, no log) for the file and
    // uring backends, and each backend's single appender are measured interleaved (slices in
    // turn), so that drift on the machine weighs on each alike.
    // The bare loop and the floors write over the same span as the log's region.
    let bare = SyncSpec::pwrite_fdatasync(&o.dir, payload).spanning(o.region_bytes);
    let limit_name = bare.name.clone();
    let mut specs = vec![bare];
    let mut floors = Vec::new();
    // `file` and `uring` write with O_DIRECT where the file system allows it; their floor
    // does the same (one direct RWF_DSYNC write of the commit's blocks).
    let direct = direct_io_works(&o.dir);
    let (file_kind, uring_kind) = if direct {
        (SyncKind::DirectDsync, SyncKind::DirectDsync)
    } else {
        (SyncKind::Pwrite, SyncKind::UringLinked)
    };
    for (backend, kind) in [
        ("file", file_kind),
        ("file-buffered", SyncKind::Pwrite),
        ("uring", uring_kind),
        ("uring-buffered", SyncKind::UringLinked),
    ] {
        if o.backends.iter().any(|b| b == backend) {
            let f = SyncSpec::log_commit_floor(&o.dir, payload, kind).spanning(o.region_bytes);
            floors.push((backend, f.name.clone()));
            if !specs.iter().any(|s| s.name == f.name) {
                specs.push(f);
            }
        }
    }
    let mut subjects = Vec::new();
    let mut singles = Vec::new();
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
            let mut l = SyncSpec::pwrite_fdatasync(d, payload);
            l.name = dax_limit_name(payload);
            let n = l.name.clone();
            specs.push(l);
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
        let name = figure_name(backend_name, payload, 1);
        match open_log(&dir, backend, payload, o.region_bytes, &name)? {
            Ok((log, scratch)) => {
                singles.push(SingleStep {
                    log,
                    _scratch: scratch,
                    data: vec![1; payload],
                    reserve: (payload as u64 + 64) * 8,
                    head_advances: 0,
                    backend: backend_name.clone(),
                    payload,
                });
                subjects.push(Subject {
                    name: backend_name.clone(),
                    backend,
                    dir,
                    limit_for,
                });
            }
            Err(reason) => report.skipped.push(Skipped { name, reason }),
        }
    }
    let mut sync_steps = specs
        .iter()
        .map(SyncSpec::step)
        .collect::<Result<Vec<_>, _>>()?;
    // The group appenders are measured in the same interleaved run: their ratio to the single
    // appender compares slices taken side by side.
    let mut groups = Vec::new();
    if o.appenders > 1 {
        for subject in &subjects {
            let name = figure_name(&subject.name, payload, o.appenders);
            match open_log(
                &subject.dir,
                subject.backend,
                payload,
                o.region_bytes,
                &name,
            )? {
                Ok((log, scratch)) => groups.push(Some(GroupStep::start(
                    log,
                    scratch,
                    &subject.name,
                    payload,
                    o.appenders,
                )?)),
                Err(reason) => {
                    report.skipped.push(Skipped { name, reason });
                    groups.push(None);
                }
            }
        }
    }
    let measured = {
        let mut steps: Vec<limits::SliceStep<'_, LogBenchError>> = Vec::new();
        let mut names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        for st in sync_steps.iter_mut() {
            steps.push(limits::one_at_a_time(move || {
                let t0 = Instant::now();
                st.once().map_err(|e| st.error(e))?;
                Ok(t0.elapsed())
            }));
        }
        for (single, subject) in singles.iter_mut().zip(&subjects) {
            names.push(figure_name(&subject.name, payload, 1));
            steps.push(limits::one_at_a_time(move || single.once()));
        }
        for (group, subject) in groups.iter_mut().zip(&subjects) {
            if let Some(g) = group {
                names.push(figure_name(&subject.name, payload, o.appenders));
                steps.push(Box::new(move |end, lat| g.run_until(end, lat)));
            }
        }
        limits::interleaved(&format!("interleaved {}", names.join(", ")), &mut steps, lo)?
    };
    drop(sync_steps);
    let (limit_results, rest) = measured.split_at(specs.len());
    let (single_results, group_results) = rest.split_at(singles.len());
    for (spec, (lat, elapsed)) in specs.iter().zip(limit_results) {
        let mut l = spec.limit(lat.summary(*elapsed), lat.percentile_curve());
        l.notes.push(format!(
            "measured interleaved with the single appenders ({} rounds)",
            limits::INTERLEAVE_ROUNDS
        ));
        report.add_limit(LimitOutcome::Measured(l));
    }
    let mut single_rates = Vec::new();
    for ((subject, single), (lat, elapsed)) in subjects.iter().zip(&singles).zip(single_results) {
        let name = figure_name(&subject.name, payload, 1);
        let fig = report
            .add_latencies(
                &name,
                figure_params(
                    subject,
                    payload,
                    1,
                    single.head_advances,
                    single.log.stats().commits,
                ),
                lat,
                *elapsed,
                Some(&subject.limit_for),
            )
            .summary
            .clone();
        single_rates.push(fig.throughput_per_s);
        if let Some(l) = report.limit(&subject.limit_for) {
            let t = Target::new(
                format!("{name} p50 <= 1.1x {} p50", subject.limit_for),
                fig.p50_ns,
                l.summary.p50_ns,
                Bound::AtMost,
                1.1,
            );
            report.targets.push(t);
        }
        let floor = floors
            .iter()
            .find(|(b, _)| *b == subject.name)
            .and_then(|(_, f)| report.limit(f));
        if let Some(f) = floor {
            // Not an issue target: the log's own cost over the bare write and sync of the
            // same bytes.
            report.targets.push(Target::new(
                format!("{name} p50 vs {} p50 (floor)", f.name),
                fig.p50_ns,
                f.summary.p50_ns,
                Bound::AtMost,
                1.1,
            ));
        }
    }
    drop(singles);
    if o.appenders <= 1 {
        return Ok(());
    }
    // What the device allows a group of `appenders` appends per sync (bandwidth bound for
    // large payloads): the group figures are also given as a ratio to it.
    let group_limit = SyncSpec::group(&o.dir, payload, o.appenders).measure(lo)?;
    let group_name = group_limit.name.clone();
    report.add_limit(LimitOutcome::Measured(group_limit));
    let mut group_results = group_results.iter();
    for ((subject, rate), group) in subjects.iter().zip(single_rates).zip(groups) {
        let Some(group) = group else { continue };
        let Some((lat, elapsed)) = group_results.next() else {
            break;
        };
        let (head_advances, commits) = group.finish()?;
        let name = figure_name(&subject.name, payload, o.appenders);
        let fig = report
            .add_latencies(
                &name,
                figure_params(subject, payload, o.appenders, head_advances, commits),
                lat,
                *elapsed,
                Some(&subject.limit_for),
            )
            .summary
            .clone();
        report.targets.push(Target::new(
            format!(
                "{name} throughput >= 8x {} throughput",
                figure_name(&subject.name, payload, 1)
            ),
            fig.throughput_per_s,
            rate,
            Bound::AtLeast,
            8.0,
        ));
        if let (Some(g), false) = (report.limit(&group_name), subject.name == "dax") {
            // Not an issue target: where the group stands against the device's own grouped
            // limit (same appends per sync).
            report.targets.push(Target::new(
                format!("{name} throughput vs {} (device limit)", g.name),
                fig.throughput_per_s,
                g.summary.throughput_per_s,
                Bound::AtLeast,
                0.5,
            ));
        }
    }
    Ok(())
}

fn figure_params(
    subject: &Subject,
    payload: usize,
    appenders: usize,
    head_advances: u64,
    commits: u64,
) -> BTreeMap<String, serde_json::Value> {
    params([
        ("backend", serde_json::Value::from(subject.name.as_str())),
        ("payload_bytes", payload.into()),
        ("appenders", appenders.into()),
        ("head_advances", head_advances.into()),
        ("commits", commits.into()),
        ("dir", subject.dir.display().to_string().into()),
        ("filesystem", limits::filesystem_of(&subject.dir).into()),
    ])
}

/// Creates a log named for `name` on `backend` in `dir`. The inner `Err` is a reason to skip
/// (the backend cannot open here, for example io_uring refused by the kernel or a file system
/// without `MAP_SYNC`, or a payload over the log's largest record).
fn open_log(
    dir: &Path,
    backend: Backend,
    payload: usize,
    region_bytes: u64,
    name: &str,
) -> Result<Result<(DynLog, ScratchFile), String>, LogBenchError> {
    let scratch = ScratchFile::preallocated(dir, name, region_bytes)?;
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
    let max = log.max_payload();
    if payload as u64 > max {
        return Ok(Err(format!(
            "payload {payload} B exceeds the log's maximum record ({max} B): skipped"
        )));
    }
    Ok(Ok((log, scratch)))
}

/// Where the group's appenders are: running a slice, parked between slices, or leaving.
#[derive(Default)]
struct Gate {
    /// Slices opened so far.
    slice: u64,
    open: bool,
    stop: bool,
    /// Appenders not running a slice (parked, or gone).
    parked: usize,
    /// Latencies and appends of the slice being closed, merged in by each appender as it parks.
    lat: Option<Latencies>,
    ops: u64,
    failed: Option<LogBenchError>,
}

struct GroupShared {
    gate: Mutex<Gate>,
    changed: Condvar,
    /// Mirrors `Gate::open` for the appenders' loop test.
    open: AtomicBool,
    head_advances: AtomicU64,
}

impl GroupShared {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `appenders` threads appending to one log, run in slices of an interleaved run: between
/// slices they park, so that each slice times the group alone.
struct GroupStep {
    log: Arc<DynLog>,
    _scratch: ScratchFile,
    shared: Arc<GroupShared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    appenders: usize,
}

/// Counts an appender as parked when it leaves for good (an error or a panic included), so
/// that closing a slice never waits for it.
struct Leaving<'a> {
    shared: &'a GroupShared,
    running: bool,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if self.running {
            self.shared.gate().parked += 1;
            self.shared.changed.notify_all();
        }
    }
}

impl GroupStep {
    fn start(
        log: DynLog,
        scratch: ScratchFile,
        backend: &str,
        payload: usize,
        appenders: usize,
    ) -> Result<Self, LogBenchError> {
        // Keep room for every appender's next few records.
        let reserve = (appenders as u64) * (payload as u64 + 64) * 8;
        let log = Arc::new(log);
        let advancing = Arc::new(Mutex::new(()));
        let shared = Arc::new(GroupShared {
            gate: Mutex::new(Gate::default()),
            changed: Condvar::new(),
            open: AtomicBool::new(false),
            head_advances: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        for t in 0..appenders {
            let log = Arc::clone(&log);
            let advancing = Arc::clone(&advancing);
            let shared = Arc::clone(&shared);
            let data = vec![t as u8; payload];
            let backend = backend.to_string();
            let mut lat = Latencies::new()?;
            threads.push(std::thread::spawn(move || {
                let mut leaving = Leaving {
                    shared: &shared,
                    running: true,
                };
                let err = |op, source| LogBenchError::Log {
                    backend: backend.clone(),
                    payload,
                    op,
                    source,
                };
                let mut seen = 0;
                let mut ops = 0u64;
                loop {
                    {
                        let mut g = shared.gate();
                        if let Some(all) = g.lat.as_mut()
                            && let Err(e) = all.merge(&lat)
                        {
                            g.failed.get_or_insert(e.into());
                        }
                        g.ops += ops;
                        lat.reset();
                        ops = 0;
                        g.parked += 1;
                        leaving.running = false;
                        shared.changed.notify_all();
                        while !(g.stop || (g.open && g.slice != seen)) {
                            g = shared
                                .changed
                                .wait(g)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                        }
                        if g.stop {
                            return;
                        }
                        seen = g.slice;
                        g.parked -= 1;
                        leaving.running = true;
                    }
                    while shared.open.load(Ordering::Acquire) {
                        match append_one(&log, &data, reserve, &advancing, &shared, &err) {
                            Ok(d) => {
                                lat.record(d);
                                ops += 1;
                            }
                            Err(e) => {
                                shared.gate().failed.get_or_insert(e);
                                return;
                            }
                        }
                    }
                }
            }));
        }
        Ok(Self {
            log,
            _scratch: scratch,
            shared,
            threads,
            appenders,
        })
    }

    /// Opens a slice until `end`, then closes it and waits for every appender to park; their
    /// latencies go into `lat`. Returns the appends finished.
    fn run_until(&mut self, end: Instant, lat: &mut Latencies) -> Result<u64, LogBenchError> {
        {
            let mut g = self.shared.gate();
            g.slice += 1;
            g.open = true;
            g.lat = Some(Latencies::new()?);
            g.ops = 0;
            self.shared.open.store(true, Ordering::Release);
            self.shared.changed.notify_all();
        }
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        self.shared.open.store(false, Ordering::Release);
        let mut g = self.shared.gate();
        g.open = false;
        while g.parked < self.appenders {
            g = self
                .shared
                .changed
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if let Some(e) = g.failed.take() {
            return Err(e);
        }
        if let Some(all) = g.lat.take() {
            lat.merge(&all)?;
        }
        Ok(g.ops)
    }

    /// Stops the appenders; returns the head releases and the log's commits.
    fn finish(mut self) -> Result<(u64, u64), LogBenchError> {
        self.stop();
        if let Some(e) = self.shared.gate().failed.take() {
            return Err(e);
        }
        Ok((
            self.shared.head_advances.load(Ordering::Relaxed),
            self.log.stats().commits,
        ))
    }

    fn stop(&mut self) {
        self.shared.gate().stop = true;
        self.shared.changed.notify_all();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                self.shared
                    .gate()
                    .failed
                    .get_or_insert(LogBenchError::Panicked);
            }
        }
    }
}

impl Drop for GroupStep {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One timed append of a group appender: releases the log first when it runs low (untimed);
/// an append refused as full waits for (or runs) the release and is retried within its timing.
fn append_one(
    log: &DynLog,
    data: &[u8],
    reserve: u64,
    advancing: &Mutex<()>,
    shared: &GroupShared,
    err: &dyn Fn(&'static str, LogError) -> LogBenchError,
) -> Result<Duration, LogBenchError> {
    let release = || -> Result<(), LogBenchError> {
        log.advance_head(log.tail())
            .map_err(|e| err("advance_head", e))?;
        shared.head_advances.fetch_add(1, Ordering::Relaxed);
        Ok(())
    };
    if log.free_bytes() < reserve
        && let Ok(_guard) = advancing.try_lock()
        && log.free_bytes() < reserve
    {
        release()?;
    }
    let t0 = Instant::now();
    loop {
        match log.append(data) {
            Ok(_) => return Ok(t0.elapsed()),
            // Concurrent appenders outran the release: wait for it (or run it) and retry; the
            // wait is part of this append's latency.
            Err(LogError::Full { .. }) => {
                let _guard = advancing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if log.free_bytes() < reserve {
                    release()?;
                }
            }
            Err(e) => return Err(err("append", e)),
        }
    }
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
        ("pin", format!("{:?}", o.pin).into()),
    ])
}
