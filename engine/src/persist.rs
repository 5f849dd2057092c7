//! Persistence: the core's `Persist` commands become records of the persistence log
//! ([`keel_pmem::Log`]); one batch of commands is one flush (group commit); the core hears
//! `Persisted` only after that flush returned.
//!
//! The log holds one record per [`PersistOp`]. Recovery replays them in order into a
//! [`PersistentState`] (the core's reference meaning of each op). When a checkpoint is saved the
//! writer re-appends, right after the checkpoint record, the promise and every accepted value
//! above the checkpoint, and once that is durable releases the log below the checkpoint record:
//! the live log always replays to the full state and never grows without bound.
//!
//! With a file, io_uring or DAX backend a persistence thread does the writing, so the replica
//! loop never waits for a flush; with the `memory` backend (nothing survives the process) the
//! loop writes inline.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keel_core::{PersistOp, PersistToken, PersistentState};
use keel_pmem::{Log, LogError, Region, RegionError};

use crate::error::StartError;
use crate::runtime::{Health, Idle, Signal, doing};
use crate::stats::{latency_histogram, record_us};
use keel_core::codec::{decode_persist_op, encode_persist_op};

/// The `memory` backend ("durability none"): the log in a plain buffer, gone with the process.
/// Writes are visible at once and `flush`/`fence` do nothing, so nothing is allocated per
/// record (keel-pmem's `SimRegion` tracks every pending word to simulate crashes: a test tool,
/// too costly for a running replica).
#[derive(Debug)]
pub struct MemRegion {
    bytes: Mutex<Vec<u8>>,
    len: u64,
}

impl MemRegion {
    /// A zero-filled region of `len` bytes.
    pub fn new(len: u64) -> MemRegion {
        let len = len.next_multiple_of(8);
        MemRegion {
            bytes: Mutex::new(vec![0; usize::try_from(len).unwrap_or(usize::MAX)]),
            len,
        }
    }

    fn range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, RegionError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(offset as usize..end as usize),
            _ => Err(RegionError::OutOfBounds {
                offset,
                len,
                region_len: self.len,
            }),
        }
    }
}

impl Region for MemRegion {
    fn backend(&self) -> &'static str {
        "memory"
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        let r = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.bytes.lock().unwrap_or_else(PoisonError::into_inner)[r]);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), RegionError> {
        let r = self.range(offset, data.len() as u64)?;
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        self.range(offset, len).map(|_| ())
    }
    fn fence(&self) -> Result<(), RegionError> {
        Ok(())
    }
}

/// The log as the runtime holds it: any backend.
pub type DynLog = Log<Box<dyn Region>>;

/// Path of the log file in a data directory.
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keel.log")
}

fn log_err(path: &Path, what: &str, e: impl std::fmt::Display) -> StartError {
    StartError::Log {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

/// Opens (or creates) the log of `data_dir` with `backend` and replays it.
pub fn open_log(
    data_dir: &Path,
    backend: &str,
    capacity_bytes: u64,
    log_id: u64,
) -> Result<(DynLog, PersistentState), StartError> {
    let path = log_path(data_dir);
    // The region for `backend`, opened fresh each call: `memory` is the engine's own, the
    // others are keel-pmem's backends of the same names (with their default options).
    let open_region = || -> Result<Box<dyn Region>, StartError> {
        if backend == "memory" {
            return Ok(Box::new(MemRegion::new(capacity_bytes)));
        }
        let parsed = ["file", "file-buffered", "uring", "dax"]
            .contains(&backend)
            .then(|| keel_pmem::Backend::parse(backend))
            .flatten()
            .ok_or_else(|| {
                log_err(
                    &path,
                    "unknown backend",
                    format!("`{backend}` (use file, file-buffered, uring, dax or memory)"),
                )
            })?;
        let cfg = keel_pmem::LogConfig {
            backend: parsed,
            path: path.clone(),
            region_bytes: capacity_bytes,
            log_id,
        };
        cfg.open_region()
            .map_err(|e| log_err(&path, &format!("open {} region", parsed.name()), e))
    };
    let log = match Log::open(open_region()?) {
        Ok((log, _recovered)) => log,
        Err(LogError::NotFormatted) => {
            // A fresh region: format it. `open` consumed the region, so reopen it.
            Log::create(open_region()?, log_id).map_err(|e| log_err(&path, "format", e))?
        }
        Err(e) => return Err(log_err(&path, "recover (run `keel log verify`)", e)),
    };
    let mut state = PersistentState::default();
    for record in log.iter() {
        let record = record.map_err(|e| log_err(&path, "read record", e))?;
        let op = decode_persist_op(&record.payload)
            .map_err(|e| log_err(&path, &format!("decode record at {}", record.pos), e))?;
        state.apply(&op);
    }
    Ok((log, state))
}

/// Flush statistics shared with the loop.
#[derive(Debug)]
pub struct FlushStats {
    /// Flush durations.
    pub latency: Histogram<u64>,
    /// Flushes done.
    pub flushes: u64,
}

/// Writes batches of persist ops to the log: append each, one sync, compaction after a
/// checkpoint.
pub struct LogWriter {
    log: DynLog,
    /// What the live log replays to (kept to rewrite it after a checkpoint).
    mirror: PersistentState,
    buf: Vec<u8>,
}

impl LogWriter {
    /// A writer over `log` whose records replay to `state`.
    pub fn new(log: DynLog, state: PersistentState) -> LogWriter {
        LogWriter {
            log,
            mirror: state,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    fn append(&mut self, op: &PersistOp) -> u64 {
        self.buf.clear();
        encode_persist_op(op, &mut self.buf);
        match self.log.append_buffered(&self.buf) {
            Ok(pos) => pos,
            Err(e) => panic!(
                "persistence log append of {} bytes failed: {e}; if the log is full raise \
                 durability.log_capacity_bytes or lower durability.checkpoint_every",
                self.buf.len()
            ),
        }
    }

    /// Makes `ops` durable in order with one flush; returns the highest token written.
    pub fn write_batch(
        &mut self,
        ops: &mut Vec<(PersistToken, PersistOp)>,
    ) -> Option<PersistToken> {
        let mut high = None;
        let mut release_below = None;
        for (token, op) in ops.drain(..) {
            assert!(
                high.is_none_or(|h| token > h),
                "persist tokens must increase: {token:?} after {high:?}"
            );
            high = Some(token);
            let pos = self.append(&op);
            self.mirror.apply(&op);
            if let PersistOp::SaveSnapshot { .. } = op {
                // Re-append what the records below the checkpoint held and the checkpoint
                // does not: the promise and the accepted values above it.
                let promise = PersistOp::SavePromise {
                    ballot: self.mirror.promised,
                };
                self.append(&promise);
                if !self.mirror.accepted.is_empty() {
                    let entries = self.mirror.accepted.values().cloned().collect();
                    self.append(&PersistOp::Append { entries });
                }
                release_below = Some(pos);
            }
        }
        if high.is_some()
            && let Err(e) = self.log.sync()
        {
            panic!("persistence log flush failed: {e}; the log must be reopened and recovered");
        }
        if let Some(pos) = release_below
            && let Err(e) = self.log.advance_head(pos)
        {
            panic!("persistence log release below {pos} failed: {e}");
        }
        high
    }
}

/// The loop's handle on the persistence thread.
pub struct PersistQueue {
    ops: Mutex<Vec<(PersistToken, PersistOp)>>,
    /// Wakes the persistence thread.
    pub signal: Arc<Signal>,
    durable: AtomicU64,
    /// Flush statistics.
    pub stats: Mutex<FlushStats>,
}

impl PersistQueue {
    /// An empty queue.
    pub fn new() -> Arc<PersistQueue> {
        Arc::new(PersistQueue {
            ops: Mutex::new(Vec::new()),
            signal: Signal::new(),
            durable: AtomicU64::new(0),
            stats: Mutex::new(FlushStats {
                latency: latency_histogram(),
                flushes: 0,
            }),
        })
    }

    /// Hands `ops` (emptied) to the persistence thread.
    pub fn submit(&self, ops: &mut Vec<(PersistToken, PersistOp)>) {
        if ops.is_empty() {
            return;
        }
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(ops);
        self.signal.notify();
    }

    /// The highest token known durable.
    pub fn durable(&self) -> PersistToken {
        PersistToken(self.durable.load(Ordering::Acquire))
    }

    /// Records one flush of `took`.
    pub fn record_flush(&self, took: Duration) {
        let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        s.flushes += 1;
        record_us(&mut s.latency, took);
    }

    /// Publishes `token` as durable.
    pub fn set_durable(&self, token: PersistToken) {
        self.durable.store(token.0, Ordering::Release);
    }
}

/// Body of the persistence thread: take every queued op, write them as one batch with one
/// flush, publish the highest token, wake the loop; park when idle.
pub fn persist_thread(
    mut writer: LogWriter,
    queue: Arc<PersistQueue>,
    loop_signal: Arc<Signal>,
    health: Arc<Health>,
    spin: Duration,
) {
    queue.signal.bind_current();
    let mut idle = Idle::new(spin);
    let mut batch = Vec::new();
    loop {
        doing("taking persist ops");
        std::mem::swap(
            &mut batch,
            &mut *queue.ops.lock().unwrap_or_else(PoisonError::into_inner),
        );
        if batch.is_empty() {
            if health.stopping() {
                return;
            }
            idle.idle(&queue.signal, Instant::now() + Duration::from_millis(100));
            continue;
        }
        idle.busy();
        doing("writing and flushing the persistence log");
        let started = Instant::now();
        if let Some(token) = writer.write_batch(&mut batch) {
            queue.record_flush(started.elapsed());
            queue.set_durable(token);
            loop_signal.notify();
        }
    }
}
