//! The log: a circular, checksummed record log with a crash-atomic commit point.
//!
//! # Commit protocol
//!
//! Appends write records past the durable tail (`stage`). A commit closes everything staged so
//! far as one *batch*: it reserves a [`CommitMark`] right after the batch's records (the mark
//! repeats the batch's start, a checksum over the batch's record headers, the log's
//! generation and its random mark key), then
//!
//! - **one-fence commit** (the common case): writes the mark, flushes the records and the mark,
//!   fences. The append is durable when this returns. Allowed while the batch ends within
//!   [`LogMeta::window`] bytes past the tail the live metadata copy names.
//! - **metadata commit** (the first commit past the window, every head advance, every open, and
//!   every commit when the window is 0): as above, plus the *inactive* [`LogMeta`] copy with the
//!   new head and tail written and flushed before the same fence; then the selector is flipped
//!   to the new copy with one aligned 8-byte store, flushed, fenced (two fences in all).
//!
//! Recovery reads the live metadata copy, checks every record up to its tail (damage there is
//! [`LogError::Corrupt`]), then walks the window batch by batch: a batch counts only if every
//! record in it and its mark check out (position, checksums, generation, key, batch checksum),
//! so a crash in the middle of a one-fence commit leaves a batch that fails and the log ends
//! before it. A batch that fails while a valid mark of a *later* batch of the same generation
//! exists in the window is corruption, not a crash: the later commit was only written after
//! this batch's fence returned.
//!
//! What one fence cannot tell apart: damage to the *last* batch past the metadata tail after
//! its commit returned looks exactly like a crash during that commit. Recovery then ends the
//! log before that batch and says so in [`Recovered::discarded_batch_at`]. Damage to one
//! structure anywhere else is reported as before. Damage to *several* batches past the
//! metadata tail can erase every later mark that proves an earlier batch was committed;
//! recovery then ends the log at the first damaged batch, never below the metadata tail (the
//! window bounds what such damage can take). A caller that needs damage anywhere to be an error uses
//! window 0 ([`LogOptions::window`]), which is the two-fence protocol for every commit.
//!
//! # Group commit
//!
//! Appenders stage their records under a mutex (a copy into the region's write buffer, no
//! system call on the block backends), then wait until the durable tail covers them. If no
//! commit is in flight one of them runs a commit for everything staged so far; appends that
//! arrive while a commit is in flight are staged and share the next commit.
//!
//! Closed-loop appenders would otherwise split into two halves that alternate between commits
//! (those released by a commit come back while the next one runs, and miss it). So when the
//! last commit served several callers and fewer are waiting now, the committer first
//! *gathers*: it waits until as many callers wait as the last commit served, or for at most
//! one commit's duration (smoothed, capped at 1 ms), then commits them all. A lone appender
//! (the last commit served one caller) never waits; `LogStats::gathers` counts the waits.
//! Waiters sleep on a futex. A commit wakes them with one system call made after it released
//! the main mutex (woken appenders come straight back for it); those it made durable return
//! without taking any lock, and those whose records came during the commit sleep through the
//! next one without it. `head`, `tail` and `free_bytes` read atomics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Location, LogError};
use crate::layout::{
    CommitMark, DEFAULT_WINDOW, GlobalMeta, LOG_AREA_OFF, LOG_META_OFF, LogMeta, MAGIC,
    MARK_BODY_LEN, MARK_FLAG, MARK_SIZE, MIN_CAPACITY, RECORD_HEADER_LEN, RecordHeader, RegionMeta,
    SELECTOR_COPY, SELECTOR_OFF, VERSION, record_crc, record_crc_parts, record_size,
};
use crate::region::Region;

/// Bytes preallocated at a time ahead of the tail ([`Region::preallocate`]).
const PREPARE_CHUNK: u64 = 4 << 20;
/// Preallocation runs when the tail comes within this many bytes of the prepared end.
const PREPARE_AHEAD: u64 = 1 << 20;
/// Longest a commit waits for the appenders of the previous commit to come back
/// (see "Group commit" in the module docs).
const MAX_GATHER: Duration = Duration::from_millis(1);

/// Options for creating or opening a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// The one-fence window in bytes (see the module docs): commits that end within this many
    /// bytes past the metadata tail cost one fence; 0 makes every commit rewrite the metadata
    /// (two fences) so that damage anywhere in the live log is reported as corruption.
    pub window: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            window: DEFAULT_WINDOW,
        }
    }
}

/// The persistence log over a [`Region`]. All methods take `&self`; share it between threads
/// with an `Arc` to get group commit.
#[derive(Debug)]
pub struct Log<R: Region> {
    region: R,
    log_id: u64,
    capacity: u64,
    mark_key: u64,
    inner: Mutex<Inner>,
    /// Durable tail, for waiters that check it without the main mutex.
    durable: AtomicU64,
    /// Durable head and [`Log::free_bytes`], published under the main mutex whenever they
    /// change so that status queries never contend with appenders for it.
    durable_head: AtomicU64,
    free: AtomicU64,
    /// Commits finished (or failed) so far; a waiter sleeps until it changes.
    /// Waiters sleep on it with a futex (not on the main mutex), so a finished commit wakes
    /// them all at once and those it made durable leave without taking any lock.
    commit_epoch: AtomicU32,
    /// Mirrors `Inner::committing` (set and cleared under the main mutex, before the epoch
    /// changes), for waiters that check it without the mutex.
    busy: AtomicBool,
    /// Waiters about to sleep on `commit_epoch`; a commit makes the wake syscall only when
    /// some are.
    sleepers: AtomicU32,
    /// A gathering committer sleeps on this (with the main mutex) until enough waiters came.
    gathered: Condvar,
}

#[derive(Debug)]
struct Inner {
    /// Index of the live [`LogMeta`] copy.
    active: usize,
    /// Durable head.
    head: u64,
    /// Durable tail.
    tail: u64,
    /// Tail named by the live metadata copy.
    meta_tail: u64,
    /// This incarnation's generation (in the live metadata copy).
    generation: u64,
    /// One-fence window (in the live metadata copy).
    window: u64,
    /// End of the records written so far (durable or not).
    staged_tail: u64,
    /// crc32c over the headers staged since the last batch was closed.
    batch_crc: u32,
    /// Logical position up to which the area ahead of the tail was preallocated
    /// ([`Region::preallocate`]); once it is a whole lap past where this incarnation started,
    /// every block of the area is allocated and nothing more is done.
    prepared_to: u64,
    /// Where preallocation started (the tail at open).
    prepared_from: u64,
    /// A commit is running (outside the mutex), or a committer is gathering.
    committing: bool,
    /// A gathering committer sleeps on `Log::gathered` (until `last_served` callers wait: no
    /// commit ends while it gathers, so that count stays put).
    gatherer_asleep: bool,
    /// End of what the commit in flight makes durable (`tail` when none is in flight).
    planned_tail: u64,
    /// Callers waiting for records that no commit covers yet.
    open_waiters: u64,
    /// Callers the commit in flight serves.
    batch_waiters: u64,
    /// Callers the last commit that served any served; a committer waits (for at most one
    /// commit's duration, [`Log::gather`]) until as many are waiting before it starts.
    last_served: u64,
    /// Smoothed duration of a commit's I/O.
    commit_ewma: Duration,
    /// A commit failed: the on-media state is unknown.
    failed: bool,
    stats: LogStats,
    /// Reused buffer for building records.
    scratch: Vec<u8>,
}

/// Counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records staged by `append*`.
    pub records_appended: u64,
    /// Commits run.
    pub commits: u64,
    /// Of those, commits that also rewrote the metadata (two fences instead of one).
    pub metadata_commits: u64,
    /// Times a committer waited for the previous commit's appenders to come back.
    pub gathers: u64,
}

/// What recovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Logical position of the first live record.
    pub head: u64,
    /// Logical position one past the last durable record.
    pub tail: u64,
    /// Number of live records (each one's checksum verified).
    pub records: u64,
    /// The caller's log id given at creation.
    pub log_id: u64,
    /// Capacity of the log area in bytes.
    pub capacity: u64,
    /// Tail named by the live metadata copy (records below it are covered by the metadata;
    /// records from here to `tail` by their commit marks).
    pub metadata_tail: u64,
    /// Generation of the incarnation that wrote the log (the next open uses one more).
    pub generation: u64,
    /// Start of the last batch recovered through its commit mark, if any.
    pub last_batch_start: Option<u64>,
    /// An incomplete batch found at this position was dropped: a crash during its commit, or
    /// (indistinguishable with one fence) damage to the last batch after its commit returned.
    /// Set when a sign of the batch survived (a header naming its own position, or the
    /// batch's mark); damage to one structure always leaves one.
    pub discarded_batch_at: Option<u64>,
}

/// Result of [`Log::sync`]: everything below `tail` is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Durable head.
    pub head: u64,
    /// Durable tail: every record whose position is below it is durable.
    pub tail: u64,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its logical position.
    pub pos: u64,
    /// Position of the next record.
    pub next: u64,
    /// The payload, its checksum verified.
    pub payload: Vec<u8>,
}

/// What one commit does, decided under the mutex and carried out outside it.
#[derive(Debug, Clone, Copy)]
struct Plan {
    head: u64,
    old_tail: u64,
    new_tail: u64,
    /// Mark position and body, when the commit closes a batch.
    mark: Option<(u64, CommitMark)>,
    /// Metadata copy index and contents, for a metadata commit.
    meta: Option<(usize, LogMeta)>,
}

fn random_key() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    // Never zero, so an all-zero area never carries the key.
    h.finish() | 1
}

impl<R: Region> Log<R> {
    /// Formats `region` as an empty log with identifier `log_id` and default options.
    pub fn create(region: R, log_id: u64) -> Result<Self, LogError> {
        Self::create_opts(region, log_id, LogOptions::default())
    }

    /// Formats `region` as an empty log with identifier `log_id`, durably. Everything in the
    /// region is overwritten. The global magic is written last, in its own commit, so a crash
    /// during `create` leaves a region that [`Log::open`] reports as
    /// [`LogError::NotFormatted`] (or, if the crash tore the metadata, as corrupt).
    pub fn create_opts(region: R, log_id: u64, opts: LogOptions) -> Result<Self, LogError> {
        let region_len = region.len();
        let min_len = LOG_AREA_OFF + MIN_CAPACITY;
        if region_len < min_len {
            return Err(LogError::RegionTooSmall {
                region_len,
                min_len,
            });
        }
        let capacity = (region_len - LOG_AREA_OFF) / 8 * 8;
        let mark_key = random_key();
        // Clear the magic first so a crash during create is never taken for an old log.
        region.write(0, &0u64.to_le_bytes())?;
        region.flush(0, 8)?;
        region.fence()?;
        let global = GlobalMeta::new(region_len);
        let rmeta = RegionMeta::new(log_id, capacity, mark_key);
        let lmeta = LogMeta::new(0, 0, log_id, 1, opts.window);
        region.write(8, &bytemuck::bytes_of(&global)[8..])?;
        region.write(crate::layout::REGION_OFF, bytemuck::bytes_of(&rmeta))?;
        region.write(SELECTOR_OFF, &SELECTOR_COPY[0].to_le_bytes())?;
        for off in LOG_META_OFF {
            region.write(off, bytemuck::bytes_of(&lmeta))?;
        }
        region.flush(0, LOG_AREA_OFF)?;
        region.fence()?;
        region.write(0, &MAGIC.to_le_bytes())?;
        region.flush(0, 8)?;
        region.fence()?;
        Ok(Self::assemble(region, &rmeta, &lmeta, 0, 0))
    }

    /// Recovers the log in `region` (default options): checks every metadata block and every
    /// live record and returns the log positioned at its durable state. Damage anywhere in the
    /// live state is a [`LogError::Corrupt`] naming the structure and offset (except the last
    /// one-fence batch, see the module docs); damaged bytes are never returned as data.
    ///
    /// Opening writes: it starts a new generation with one metadata commit.
    pub fn open(region: R) -> Result<(Self, Recovered), LogError> {
        Self::open_opts(region, LogOptions::default())
    }

    /// [`Log::open`] with options (the window may differ from the one the log was created
    /// with; it applies from this open on).
    pub fn open_opts(region: R, opts: LogOptions) -> Result<(Self, Recovered), LogError> {
        let scan = scan_full(&region, |_| {})?;
        let rec = scan.recovered;
        let lmeta = LogMeta::new(rec.head, rec.tail, rec.log_id, rec.generation, scan.window);
        let log = Self::assemble(region, &scan.region_meta, &lmeta, scan.active, rec.tail);
        // A new generation, durably, before anything is appended: marks an earlier
        // incarnation left past the recovered tail can then never pass for this one's.
        let mut g = log.lock();
        let next = g.active ^ 1;
        let generation = rec.generation.wrapping_add(1);
        let meta = LogMeta::new(rec.head, rec.tail, rec.log_id, generation, opts.window);
        let plan = Plan {
            head: rec.head,
            old_tail: rec.tail,
            new_tail: rec.tail,
            mark: None,
            meta: Some((next, meta)),
        };
        g = log.run_plan(g, plan)?;
        drop(g);
        Ok((log, rec))
    }

    /// Alias of [`Log::open`].
    pub fn recover(region: R) -> Result<(Self, Recovered), LogError> {
        Self::open(region)
    }

    fn assemble(region: R, rmeta: &RegionMeta, lmeta: &LogMeta, active: usize, tail: u64) -> Self {
        Log {
            region,
            log_id: rmeta.log_id,
            capacity: rmeta.capacity,
            mark_key: rmeta.mark_key,
            inner: Mutex::new(Inner {
                active,
                head: lmeta.head,
                tail,
                meta_tail: lmeta.tail,
                generation: lmeta.generation,
                window: lmeta.window,
                staged_tail: tail,
                batch_crc: 0,
                prepared_to: tail,
                prepared_from: tail,
                committing: false,
                gatherer_asleep: false,
                planned_tail: tail,
                open_waiters: 0,
                batch_waiters: 0,
                last_served: 0,
                commit_ewma: Duration::ZERO,
                failed: false,
                stats: LogStats::default(),
                scratch: Vec::new(),
            }),
            durable: AtomicU64::new(tail),
            durable_head: AtomicU64::new(lmeta.head),
            free: AtomicU64::new((rmeta.capacity - (tail - lmeta.head)).saturating_sub(MARK_SIZE)),
            commit_epoch: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            busy: AtomicBool::new(false),
            gathered: Condvar::new(),
        }
    }

    fn publish_free(&self, g: &Inner) {
        let free = (self.capacity - (g.staged_tail - g.head)).saturating_sub(MARK_SIZE);
        self.free.store(free, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug that already reported itself; the fields
        // are updated together at the end of each critical section.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The region under the log.
    pub fn region(&self) -> &R {
        &self.region
    }

    /// Gives the region back.
    pub fn into_region(self) -> R {
        self.region
    }

    /// The log identifier given at creation.
    pub fn log_id(&self) -> u64 {
        self.log_id
    }

    /// Capacity of the circular log area in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Largest payload one record can carry (room for one commit mark stays reserved).
    pub fn max_payload(&self) -> u64 {
        (self.capacity - RECORD_HEADER_LEN - MARK_SIZE).min(u64::from(MARK_FLAG - 1))
    }

    /// Durable head.
    pub fn head(&self) -> u64 {
        self.durable_head.load(Ordering::Acquire)
    }

    /// Durable tail.
    pub fn tail(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Bytes free for new records (capacity minus live and staged bytes, minus the room
    /// reserved for the next commit mark).
    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Acquire)
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.lock().stats
    }

    /// Appends one record and returns its position once it is durable.
    pub fn append(&self, payload: &[u8]) -> Result<u64, LogError> {
        let mut g = self.lock();
        let (pos, end) = self.stage(&mut g, std::slice::from_ref(&payload), None)?;
        self.make_durable(g, end)?;
        Ok(pos)
    }

    /// Appends several records atomically (one commit: after a crash all or none are there)
    /// and returns their positions once durable.
    pub fn append_batch(&self, payloads: &[&[u8]]) -> Result<Vec<u64>, LogError> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let mut positions = Vec::with_capacity(payloads.len());
        let mut g = self.lock();
        let (_, end) = self.stage(&mut g, payloads, Some(&mut positions))?;
        self.make_durable(g, end)?;
        Ok(positions)
    }

    /// Appends one record without waiting for durability; [`Log::sync`] makes it durable.
    /// Until then it is not visible to `read`/`iter` and a crash may drop it.
    pub fn append_buffered(&self, payload: &[u8]) -> Result<u64, LogError> {
        let mut g = self.lock();
        let (pos, _) = self.stage(&mut g, std::slice::from_ref(&payload), None)?;
        Ok(pos)
    }

    /// Makes every staged record durable (sharing an in-flight commit when there is one).
    pub fn sync(&self) -> Result<SyncReport, LogError> {
        let g = self.lock();
        let end = g.staged_tail;
        self.make_durable(g, end)?;
        let g = self.lock();
        Ok(SyncReport {
            head: g.head,
            tail: g.tail,
        })
    }

    /// Releases every record below `pos` (a live record's position, or the tail), durably.
    /// Released space is reused by later appends.
    pub fn advance_head(&self, pos: u64) -> Result<(), LogError> {
        let mut g = self.lock();
        loop {
            if g.failed {
                return Err(LogError::Failed);
            }
            if pos <= g.head {
                return Ok(());
            }
            if pos > g.tail {
                return Err(LogError::BadPosition {
                    pos,
                    head: g.head,
                    tail: g.tail,
                });
            }
            if !g.committing {
                break;
            }
            self.wait_commit(g, false);
            g = self.lock();
        }
        if pos < g.tail {
            // Must be a record boundary.
            self.read_entry(pos, (g.head, g.tail), false)?;
        }
        let g = self.run_commit(g, pos, true)?;
        assert!(
            g.head >= pos,
            "head {} below requested {pos} after commit",
            g.head
        );
        Ok(())
    }

    /// Reads the durable record at `pos`.
    pub fn read(&self, pos: u64) -> Result<Record, LogError> {
        let g = self.lock();
        let bad = LogError::BadPosition {
            pos,
            head: g.head,
            tail: g.tail,
        };
        if pos < g.head || pos >= g.tail {
            return Err(bad);
        }
        match self.read_entry(pos, (g.head, g.tail), false)? {
            Entry::Record(r) => Ok(r),
            Entry::Mark { .. } => Err(bad),
        }
    }

    /// Iterates the durable records from the head.
    pub fn iter(&self) -> LogIter<'_, R> {
        let pos = self.head();
        LogIter {
            log: self,
            pos,
            done: false,
        }
    }

    /// Iterates the durable records from `pos` (a record boundary).
    pub fn iter_from(&self, pos: u64) -> LogIter<'_, R> {
        LogIter {
            log: self,
            pos,
            done: false,
        }
    }

    /// Writes records for `payloads` past the staged tail; returns the first position and the
    /// new staged tail.
    fn stage(
        &self,
        g: &mut Inner,
        payloads: &[&[u8]],
        mut positions: Option<&mut Vec<u64>>,
    ) -> Result<(u64, u64), LogError> {
        if g.failed {
            return Err(LogError::Failed);
        }
        let max = self.max_payload();
        let mut total = 0u64;
        for p in payloads {
            let len = p.len() as u64;
            if len > max {
                return Err(LogError::PayloadTooLarge { len, max });
            }
            total += record_size(len);
        }
        // Room for the records and for the mark that will close their batch.
        let free = self.capacity - (g.staged_tail - g.head);
        if total + MARK_SIZE > free {
            return Err(LogError::Full {
                needed_bytes: total,
                free_bytes: free.saturating_sub(MARK_SIZE),
                capacity_bytes: self.capacity,
            });
        }
        let start = g.staged_tail;
        if start
            .checked_add(total + MARK_SIZE + PREPARE_CHUNK)
            .is_none()
        {
            return Err(LogError::PositionsExhausted { tail: start });
        }
        self.prepare_ahead(g, start + total + MARK_SIZE)?;
        let mut pos = start;
        let mut batch_crc = g.batch_crc;
        for p in payloads {
            let len = p.len() as u64;
            let size = record_size(len);
            let padding = &[0u8; 8][..(size - RECORD_HEADER_LEN - len) as usize];
            // `len <= max < MARK_FLAG` was checked above.
            let len32 = len as u32;
            let hdr = RecordHeader {
                len: len32,
                crc: record_crc_parts(len32, pos, p, padding),
                pos,
            };
            let hdr = bytemuck::bytes_of(&hdr);
            let off = pos % self.capacity;
            if off + size <= self.capacity {
                // The payload goes to the region as it is, without a copy here.
                let free = self.free_after(g.head, pos + size);
                self.region
                    .write_parts_free(LOG_AREA_OFF + off, &[hdr, p, padding], free)?;
            } else {
                // The record wraps around the end of the area: assemble it, write in two.
                let mut buf = std::mem::take(&mut g.scratch);
                buf.clear();
                buf.extend_from_slice(hdr);
                buf.extend_from_slice(p);
                buf.extend_from_slice(padding);
                let res = self.write_circ(pos, &buf, g.head);
                g.scratch = buf;
                res?;
            }
            batch_crc = crc32c::crc32c_append(batch_crc, hdr);
            if let Some(v) = positions.as_deref_mut() {
                v.push(pos);
            }
            pos += size;
        }
        g.staged_tail = pos;
        self.publish_free(g);
        g.batch_crc = batch_crc;
        g.stats.records_appended += payloads.len() as u64;
        assert!(
            g.staged_tail - g.head + MARK_SIZE <= self.capacity,
            "staged beyond capacity"
        );
        Ok((start, pos))
    }

    /// Keeps the area ahead of `claimed` (the first byte no record or reserved mark covers)
    /// preallocated, a chunk at a time, during the first lap of this incarnation. Runs under
    /// the mutex, before anything is staged past `claimed`, so nobody writes the range.
    fn prepare_ahead(&self, g: &mut Inner, claimed: u64) -> Result<(), LogError> {
        let lap_end = g.prepared_from + self.capacity;
        if g.prepared_to >= lap_end || claimed + PREPARE_AHEAD <= g.prepared_to {
            return Ok(());
        }
        let from = g.prepared_to.max(claimed);
        // Never past the head's lap: those bytes are live (and allocated already).
        let to = (from + PREPARE_CHUNK)
            .min(lap_end)
            .min(g.head + self.capacity);
        if to > from {
            let off = from % self.capacity;
            let first = (to - from).min(self.capacity - off);
            self.region.preallocate(LOG_AREA_OFF + off, first)?;
            if first < to - from {
                self.region.preallocate(LOG_AREA_OFF, to - from - first)?;
            }
        }
        g.prepared_to = to.max(g.prepared_to);
        Ok(())
    }

    /// Waits (without holding the main mutex) until the commit in flight finishes; returns
    /// with the main mutex released.
    /// `wake_gatherer`: this caller completed a gathering committer's group; it is woken
    /// once the main mutex is released (so it does not wake only to block on it).
    fn wait_commit(&self, g: MutexGuard<'_, Inner>, wake_gatherer: bool) {
        assert!(g.committing, "waiting for a commit that is not running");
        // Read under the main mutex: the commit bumps it under the main mutex too.
        let epoch = self.commit_epoch.load(Ordering::Acquire);
        drop(g);
        if wake_gatherer {
            self.gathered.notify_one();
        }
        // Announce the sleep before checking the epoch, and the commit bumps the epoch before
        // checking for sleepers (both SeqCst): either the commit sees this sleeper and wakes
        // it, or this waiter sees the new epoch and does not sleep.
        self.sleep_past(epoch);
    }

    /// Sleeps until the commit epoch is no longer `epoch`.
    fn sleep_past(&self, epoch: u32) {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while self.commit_epoch.load(Ordering::SeqCst) == epoch {
            atomic_wait::wait(&self.commit_epoch, epoch);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// After a wake-up: waits without the main mutex while commits run that have not yet
    /// made `end` durable (a waiter whose records were staged during a commit sleeps through
    /// it without touching the mutex). Returns whether `end` is durable; `false` means no
    /// commit is in flight and the caller must take the mutex (to commit, or see a failure).
    fn wait_durable(&self, end: u64) -> bool {
        loop {
            if self.durable.load(Ordering::Acquire) >= end {
                return true;
            }
            // The epoch before the flag: a commit that ends in between changes the epoch, so
            // the sleep returns at once.
            let epoch = self.commit_epoch.load(Ordering::SeqCst);
            if !self.busy.load(Ordering::SeqCst) {
                return false;
            }
            self.sleep_past(epoch);
        }
    }

    /// Returns once the durable tail reaches `end`, running commits as needed.
    fn make_durable<'a>(&'a self, mut g: MutexGuard<'a, Inner>, end: u64) -> Result<(), LogError> {
        let mut counted = false;
        let mut wake_gatherer = false;
        loop {
            if g.failed {
                return Err(LogError::Failed);
            }
            if g.tail >= end {
                return Ok(());
            }
            if !counted && end > g.planned_tail {
                // This caller waits for the next commit: count it for a gathering committer.
                counted = true;
                g.open_waiters += 1;
                wake_gatherer = g.gatherer_asleep && g.open_waiters >= g.last_served;
            }
            if g.committing {
                self.wait_commit(g, std::mem::take(&mut wake_gatherer));
                // Most waiters find their records durable and leave without the main mutex.
                if self.wait_durable(end) {
                    return Ok(());
                }
                g = self.lock();
            } else {
                g = self.gather(g);
                let head = g.head;
                g = self.run_commit(g, head, false)?;
            }
        }
    }

    /// Before a commit: when the last commit served several callers, waits until as many
    /// wait for this one, or for at most one commit's duration (capped at [`MAX_GATHER`]).
    /// Closed-loop appenders then share one commit each round instead of half of them
    /// missing it; a lone appender (the last commit served one) never waits.
    fn gather<'a>(&'a self, mut g: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        assert!(!g.committing, "gathering while a commit runs");
        let target = g.last_served;
        if target <= 1 || g.open_waiters >= target {
            return g;
        }
        let limit = g.commit_ewma.min(MAX_GATHER);
        // Others wait as for a commit in flight (and count themselves) meanwhile.
        g.committing = true;
        self.busy.store(true, Ordering::SeqCst);
        g.gatherer_asleep = true;
        let (mut g, _) = self
            .gathered
            .wait_timeout_while(g, limit, |g| g.open_waiters < target && !g.failed)
            .unwrap_or_else(|e| e.into_inner());
        g.gatherer_asleep = false;
        g.committing = false;
        self.busy.store(false, Ordering::SeqCst);
        g.stats.gathers += 1;
        g
    }

    /// Plans one commit of everything staged (closing it with a mark) and of `head`, and runs
    /// it with the mutex released during the I/O. `force_meta` asks for a metadata commit.
    fn run_commit<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        head: u64,
        force_meta: bool,
    ) -> Result<MutexGuard<'a, Inner>, LogError> {
        assert!(!g.committing, "two commits at once");
        assert!(
            head >= g.head && head <= g.tail,
            "commit moves the head backwards"
        );
        let old_tail = g.tail;
        let mut new_tail = old_tail;
        let mut mark = None;
        if g.staged_tail > old_tail {
            // Close the batch: its mark goes right after its records (stage kept room for it).
            let at = g.staged_tail;
            let body = CommitMark {
                generation: g.generation,
                start: old_tail,
                batch_crc: u64::from(g.batch_crc),
                key: self.mark_key,
            };
            mark = Some((at, body));
            new_tail = at + MARK_SIZE;
            g.staged_tail = new_tail;
            self.publish_free(&g);
            g.batch_crc = 0;
            assert!(
                new_tail - g.head <= self.capacity,
                "the mark must fit in the room stage reserved"
            );
        }
        g.planned_tail = new_tail;
        if g.open_waiters > 0 {
            g.batch_waiters = g.open_waiters;
            g.open_waiters = 0;
        }
        let one_fence =
            !force_meta && head == g.head && g.window > 0 && new_tail - g.meta_tail <= g.window;
        let meta = (!one_fence).then(|| {
            (
                g.active ^ 1,
                LogMeta::new(head, new_tail, self.log_id, g.generation, g.window),
            )
        });
        let plan = Plan {
            head,
            old_tail,
            new_tail,
            mark,
            meta,
        };
        self.run_plan(g, plan)
    }

    fn run_plan<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        plan: Plan,
    ) -> Result<MutexGuard<'a, Inner>, LogError> {
        assert!(!g.committing, "two commits at once");
        assert!(
            plan.new_tail >= plan.old_tail && plan.head <= plan.new_tail,
            "commit moves backwards"
        );
        // The mark goes to the region under the mutex, before records staged after it.
        let marked = match plan.mark {
            Some((at, body)) => self.write_mark(at, &body, g.head),
            None => Ok(()),
        };
        g.committing = true;
        self.busy.store(true, Ordering::SeqCst);
        g.planned_tail = g.planned_tail.max(plan.new_tail);
        drop(g);
        let started = Instant::now();
        let res = marked.and_then(|()| self.commit_io(&plan));
        let took = started.elapsed();
        let mut g = self.lock();
        g.committing = false;
        self.busy.store(false, Ordering::SeqCst);
        g.commit_ewma = (g.commit_ewma * 7 + took) / 8;
        if g.batch_waiters > 0 {
            g.last_served = g.batch_waiters;
            g.batch_waiters = 0;
        }
        match res {
            Ok(()) => {
                g.head = plan.head;
                self.durable_head.store(plan.head, Ordering::Release);
                self.publish_free(&g);
                g.tail = plan.new_tail;
                if let Some((next, meta)) = plan.meta {
                    g.active = next;
                    g.meta_tail = meta.tail;
                    g.generation = meta.generation;
                    g.window = meta.window;
                    g.stats.metadata_commits += 1;
                }
                g.stats.commits += 1;
            }
            Err(_) => g.failed = true,
        }
        self.durable.store(g.tail, Ordering::Release);
        self.commit_epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            // Wake outside the main mutex: the woken appenders come back for it at once.
            drop(g);
            atomic_wait::wake_all(&self.commit_epoch);
            g = self.lock();
        }
        res.map(|()| g)
    }

    /// Writes the commit mark `body` at `at`. Runs under the mutex, like every write into the
    /// log area, so the free space it declares after itself is exact.
    fn write_mark(&self, at: u64, body: &CommitMark, head: u64) -> Result<(), LogError> {
        let mut bytes = [0u8; MARK_SIZE as usize];
        let len = MARK_FLAG | MARK_BODY_LEN;
        let crc = record_crc(len, at, bytemuck::bytes_of(body));
        let hdr = RecordHeader { len, crc, pos: at };
        bytes[..RECORD_HEADER_LEN as usize].copy_from_slice(bytemuck::bytes_of(&hdr));
        bytes[RECORD_HEADER_LEN as usize..].copy_from_slice(bytemuck::bytes_of(body));
        self.write_circ(at, &bytes, head)
    }

    /// The free bytes of the area right after logical position `end` (the last staged byte),
    /// up to the head's lap and not past the end of the area: nothing there is read until it
    /// is written again ([`Region::write_parts_free`]).
    fn free_after(&self, head: u64, end: u64) -> u64 {
        let phys_end = (end - 1) % self.capacity + 1;
        (head + self.capacity - end).min(self.capacity - phys_end)
    }

    fn commit_io(&self, plan: &Plan) -> Result<(), LogError> {
        if plan.new_tail > plan.old_tail {
            self.flush_circ(plan.old_tail, plan.new_tail - plan.old_tail)?;
        }
        let Some((next, meta)) = plan.meta else {
            return self.region.fence().map_err(LogError::from);
        };
        self.region
            .write(LOG_META_OFF[next], bytemuck::bytes_of(&meta))?;
        self.region
            .flush(LOG_META_OFF[next], size_of::<LogMeta>() as u64)?;
        self.region.fence()?;
        // The commit point: one aligned 8-byte store.
        self.region
            .write(SELECTOR_OFF, &SELECTOR_COPY[next].to_le_bytes())?;
        self.region.flush(SELECTOR_OFF, 8)?;
        self.region.fence()?;
        Ok(())
    }

    /// Writes `data` at logical position `pos`, wrapping at the end of the area; it ends at
    /// the last staged byte, so what follows it (to `head`'s lap) is declared free.
    fn write_circ(&self, pos: u64, data: &[u8], head: u64) -> Result<(), LogError> {
        let off = pos % self.capacity;
        let first = (data.len() as u64).min(self.capacity - off) as usize;
        let free = self.free_after(head, pos + data.len() as u64);
        if first < data.len() {
            self.region.write(LOG_AREA_OFF + off, &data[..first])?;
            self.region
                .write_parts_free(LOG_AREA_OFF, &[&data[first..]], free)?;
        } else {
            self.region
                .write_parts_free(LOG_AREA_OFF + off, &[data], free)?;
        }
        Ok(())
    }

    fn flush_circ(&self, pos: u64, len: u64) -> Result<(), LogError> {
        let off = pos % self.capacity;
        let first = len.min(self.capacity - off);
        self.region.flush(LOG_AREA_OFF + off, first)?;
        if first < len {
            self.region.flush(LOG_AREA_OFF, len - first)?;
        }
        Ok(())
    }

    /// Reads and verifies the entry at `pos`; `trusted` says `pos` is known to be a record
    /// boundary (so a position mismatch is corruption, not a bad argument).
    fn read_entry(
        &self,
        pos: u64,
        (head, tail): (u64, u64),
        trusted: bool,
    ) -> Result<Entry, LogError> {
        read_entry(&self.region, self.capacity, pos, (head, tail), trusted)
    }
}

/// Iterator over durable records; yields an error (then stops) on corruption or when the
/// records it was about to read were released by `advance_head`.
#[derive(Debug)]
pub struct LogIter<'a, R: Region> {
    log: &'a Log<R>,
    pos: u64,
    done: bool,
}

impl<R: Region> Iterator for LogIter<'_, R> {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let g = self.log.lock();
            if self.pos >= g.tail && self.pos >= g.head {
                return None;
            }
            if self.pos < g.head {
                self.done = true;
                return Some(Err(LogError::BadPosition {
                    pos: self.pos,
                    head: g.head,
                    tail: g.tail,
                }));
            }
            let res = self.log.read_entry(self.pos, (g.head, g.tail), true);
            drop(g);
            match res {
                Ok(Entry::Record(r)) => {
                    self.pos = r.next;
                    return Some(Ok(r));
                }
                Ok(Entry::Mark { next, .. }) => self.pos = next,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

fn corrupt(location: Location, offset: u64, detail: impl Into<String>) -> LogError {
    LogError::Corrupt {
        location,
        offset,
        detail: detail.into(),
    }
}

fn read_circ<R: Region + ?Sized>(
    region: &R,
    capacity: u64,
    pos: u64,
    buf: &mut [u8],
) -> Result<(), LogError> {
    let off = pos % capacity;
    let first = (buf.len() as u64).min(capacity - off) as usize;
    let (a, b) = buf.split_at_mut(first);
    region.read(LOG_AREA_OFF + off, a)?;
    if !b.is_empty() {
        region.read(LOG_AREA_OFF, b)?;
    }
    Ok(())
}

/// A verified entry of the log area.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Record(Record),
    Mark {
        pos: u64,
        next: u64,
        header: RecordHeader,
        mark: CommitMark,
    },
}

fn read_entry<R: Region + ?Sized>(
    region: &R,
    capacity: u64,
    pos: u64,
    (head, tail): (u64, u64),
    trusted: bool,
) -> Result<Entry, LogError> {
    let hdr_off = LOG_AREA_OFF + pos % capacity;
    if tail < pos || tail - pos < RECORD_HEADER_LEN {
        return Err(corrupt(
            Location::RecordHeader { pos },
            hdr_off,
            format!("record header would cross the tail at {tail}"),
        ));
    }
    let mut hb = [0u8; RECORD_HEADER_LEN as usize];
    read_circ(region, capacity, pos, &mut hb)?;
    let hdr: RecordHeader = bytemuck::pod_read_unaligned(&hb);
    if hdr.pos != pos {
        if !trusted {
            // Not a record boundary, or a damaged header: the caller asked for this position.
            return Err(LogError::BadPosition { pos, head, tail });
        }
        return Err(corrupt(
            Location::RecordHeader { pos },
            hdr_off,
            format!("header names position {} instead of {pos}", hdr.pos),
        ));
    }
    if hdr.len & MARK_FLAG != 0 {
        if hdr.len != MARK_FLAG | MARK_BODY_LEN {
            return Err(corrupt(
                Location::CommitMark { pos },
                hdr_off,
                format!(
                    "mark length {:#x} is not {MARK_BODY_LEN}",
                    hdr.len & !MARK_FLAG
                ),
            ));
        }
        if MARK_SIZE > tail - pos {
            return Err(corrupt(
                Location::CommitMark { pos },
                hdr_off,
                format!("mark runs past the tail at {tail}"),
            ));
        }
        let mut body = [0u8; MARK_BODY_LEN as usize];
        read_circ(region, capacity, pos + RECORD_HEADER_LEN, &mut body)?;
        let crc = record_crc(hdr.len, pos, &body);
        if crc != hdr.crc {
            return Err(corrupt(
                Location::CommitMark { pos },
                hdr_off,
                format!("checksum {crc:#010x} != stored {:#010x}", hdr.crc),
            ));
        }
        return Ok(Entry::Mark {
            pos,
            next: pos + MARK_SIZE,
            header: hdr,
            mark: bytemuck::pod_read_unaligned(&body),
        });
    }
    let size = record_size(u64::from(hdr.len));
    if size > tail - pos {
        return Err(corrupt(
            Location::RecordHeader { pos },
            hdr_off,
            format!("length {} runs past the tail at {tail}", hdr.len),
        ));
    }
    let mut body = vec![0u8; (size - RECORD_HEADER_LEN) as usize];
    read_circ(region, capacity, pos + RECORD_HEADER_LEN, &mut body)?;
    let crc = record_crc(hdr.len, pos, &body);
    if crc != hdr.crc {
        return Err(corrupt(
            Location::RecordPayload { pos },
            hdr_off,
            format!("checksum {crc:#010x} != stored {:#010x}", hdr.crc),
        ));
    }
    body.truncate(hdr.len as usize);
    Ok(Entry::Record(Record {
        pos,
        next: pos + size,
        payload: body,
    }))
}

fn read_pod<T: bytemuck::Pod, R: Region + ?Sized>(region: &R, off: u64) -> Result<T, LogError> {
    let mut v = T::zeroed();
    region.read(off, bytemuck::bytes_of_mut(&mut v))?;
    Ok(v)
}

fn read_selector<R: Region + ?Sized>(region: &R) -> Result<u64, LogError> {
    let mut b = [0u8; 8];
    region.read(SELECTOR_OFF, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Verifies a log region without building a [`Log`] (and without writing to it): every
/// metadata block and every live record. Used by `keel log verify`.
pub fn recover_region<R: Region + ?Sized>(region: &R) -> Result<Recovered, LogError> {
    Ok(scan_full(region, |_| {})?.recovered)
}

/// One live entry as [`scan_layout`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutEntry {
    /// Logical position.
    pub pos: u64,
    /// Position of the next entry.
    pub next: u64,
    /// A commit mark (else a record).
    pub mark: bool,
}

/// Every live entry (records and commit marks) of a log region in order, with what recovery
/// found and the index of the live metadata copy. For the crash checker and `keel log dump`.
pub fn scan_layout<R: Region + ?Sized>(
    region: &R,
) -> Result<(Recovered, usize, Vec<LayoutEntry>), LogError> {
    let mut out = Vec::new();
    let s = scan_full(region, |v| {
        out.push(match v {
            Visit::Record(r) => LayoutEntry {
                pos: r.pos,
                next: r.next,
                mark: false,
            },
            Visit::Mark(pos, next) => LayoutEntry {
                pos,
                next,
                mark: true,
            },
        })
    })?;
    Ok((s.recovered, s.active, out))
}

/// What the scan visits.
enum Visit<'a> {
    Record(&'a Record),
    Mark(u64, u64),
}

/// Like [`recover_region`], calling `each` for every live record in order; also returns the
/// index of the live metadata copy.
pub fn scan_region<R: Region + ?Sized>(
    region: &R,
    mut each: impl FnMut(&Record),
) -> Result<(Recovered, usize), LogError> {
    let s = scan_full(region, |v| {
        if let Visit::Record(r) = v {
            each(r)
        }
    })?;
    Ok((s.recovered, s.active))
}

/// Everything recovery learns.
struct Scan {
    recovered: Recovered,
    active: usize,
    region_meta: RegionMeta,
    window: u64,
}

/// How one batch past the metadata tail failed.
struct BatchFailure {
    error: LogError,
    /// Something of this batch was written (a header naming its position).
    started: bool,
}

fn scan_full<R: Region + ?Sized>(
    region: &R,
    mut each: impl FnMut(Visit<'_>),
) -> Result<Scan, LogError> {
    let region_len = region.len();
    let min_len = LOG_AREA_OFF + MIN_CAPACITY;
    if region_len < min_len {
        return Err(LogError::RegionTooSmall {
            region_len,
            min_len,
        });
    }
    let g: GlobalMeta = read_pod(region, crate::layout::GLOBAL_OFF)?;
    let goff = crate::layout::GLOBAL_OFF;
    if g.magic == 0 {
        return Err(LogError::NotFormatted);
    }
    if g.magic != MAGIC {
        return Err(corrupt(
            Location::GlobalMetadata,
            goff,
            format!("bad magic {:#018x}", g.magic),
        ));
    }
    if g.crc != g.compute_crc() {
        return Err(corrupt(Location::GlobalMetadata, goff, "checksum mismatch"));
    }
    if g.version != VERSION {
        return Err(corrupt(
            Location::GlobalMetadata,
            goff,
            format!("unsupported layout version {}", g.version),
        ));
    }
    if g.region_len > region_len {
        return Err(corrupt(
            Location::GlobalMetadata,
            goff,
            format!(
                "metadata says {} bytes, region has {region_len}",
                g.region_len
            ),
        ));
    }
    let roff = crate::layout::REGION_OFF;
    let r: RegionMeta = read_pod(region, roff)?;
    if r.crc != r.compute_crc() {
        return Err(corrupt(Location::RegionMetadata, roff, "checksum mismatch"));
    }
    let cap_ok = r.capacity >= MIN_CAPACITY
        && r.capacity.is_multiple_of(8)
        && r.capacity <= g.region_len.saturating_sub(LOG_AREA_OFF);
    if r.log_area_off != LOG_AREA_OFF || !cap_ok {
        return Err(corrupt(
            Location::RegionMetadata,
            roff,
            format!(
                "log area offset {} / capacity {} do not fit a region of {}",
                r.log_area_off, r.capacity, g.region_len
            ),
        ));
    }
    let sel = read_selector(region)?;
    let active = match SELECTOR_COPY.iter().position(|&s| s == sel) {
        Some(i) => i,
        None => {
            return Err(corrupt(
                Location::Selector,
                SELECTOR_OFF,
                format!("selector {sel:#018x} is neither copy value"),
            ));
        }
    };
    let moff = LOG_META_OFF[active];
    let loc = Location::LogMetadata { copy: active as u8 };
    let m: LogMeta = read_pod(region, moff)?;
    if m.crc != m.compute_crc() {
        return Err(corrupt(loc, moff, "checksum mismatch"));
    }
    if m.log_id != r.log_id {
        return Err(corrupt(
            loc,
            moff,
            format!("log id {} != region's {}", m.log_id, r.log_id),
        ));
    }
    if m.head > m.tail
        || m.tail - m.head > r.capacity
        || !m.head.is_multiple_of(8)
        || !m.tail.is_multiple_of(8)
        || m.head.checked_add(r.capacity).is_none()
    {
        return Err(corrupt(
            loc,
            moff,
            format!("head {} / tail {} inconsistent", m.head, m.tail),
        ));
    }
    let capacity = r.capacity;
    // Records the metadata covers: any damage is corruption.
    let mut pos = m.head;
    let mut records = 0u64;
    while pos < m.tail {
        match read_entry(region, capacity, pos, (m.head, m.tail), true)? {
            Entry::Record(rec) => {
                assert!(
                    rec.next > pos && rec.next <= m.tail,
                    "record walk must advance within tail"
                );
                each(Visit::Record(&rec));
                records += 1;
                pos = rec.next;
            }
            Entry::Mark { next, .. } => {
                each(Visit::Mark(pos, next));
                pos = next;
            }
        }
    }
    // Batches past it, each closed by a commit mark of this generation.
    let limit = m.tail.saturating_add(m.window).min(m.head + capacity);
    let mut last_batch_start = None;
    let mut discarded_batch_at = None;
    while pos < limit {
        match read_batch(region, &r, &m, pos, limit) {
            Ok((next, batch)) => {
                for rec in &batch {
                    each(Visit::Record(rec));
                }
                each(Visit::Mark(next - MARK_SIZE, next));
                records += batch.len() as u64;
                last_batch_start = Some(pos);
                pos = next;
            }
            Err(fail) => {
                let own_mark = find_mark(region, &r, &m, pos, limit, |start| start == pos)?;
                if find_mark(region, &r, &m, pos, limit, |start| start > pos)?.is_some() {
                    // A later batch was committed after this one's fence: this is damage.
                    return Err(fail.error);
                }
                if fail.started || own_mark.is_some() {
                    discarded_batch_at = Some(pos);
                }
                break;
            }
        }
    }
    Ok(Scan {
        recovered: Recovered {
            head: m.head,
            tail: pos,
            records,
            log_id: r.log_id,
            capacity,
            metadata_tail: m.tail,
            generation: m.generation,
            last_batch_start,
            discarded_batch_at,
        },
        active,
        region_meta: r,
        window: m.window,
    })
}

/// Reads the batch starting at `start` (below `limit`): its records, each verified, up to a
/// valid mark of this generation that closes exactly this batch.
fn read_batch<R: Region + ?Sized>(
    region: &R,
    r: &RegionMeta,
    m: &LogMeta,
    start: u64,
    limit: u64,
) -> Result<(u64, Vec<Record>), BatchFailure> {
    let mut pos = start;
    let mut out = Vec::new();
    let mut crc = 0u32;
    let mut started = false;
    loop {
        let entry =
            read_entry(region, r.capacity, pos, (m.head, limit), true).map_err(|error| {
                // A header naming its own position is a sign the batch was being written.
                let mut hb = [0u8; RECORD_HEADER_LEN as usize];
                let named = pos + RECORD_HEADER_LEN <= limit
                    && read_circ(region, r.capacity, pos, &mut hb).is_ok()
                    && bytemuck::pod_read_unaligned::<RecordHeader>(&hb).pos == pos;
                BatchFailure {
                    error,
                    started: started || named,
                }
            })?;
        started = true;
        match entry {
            Entry::Record(rec) => {
                let mut hb = [0u8; RECORD_HEADER_LEN as usize];
                read_circ(region, r.capacity, pos, &mut hb)
                    .map_err(|error| BatchFailure { error, started })?;
                crc = crc32c::crc32c_append(crc, &hb);
                pos = rec.next;
                out.push(rec);
            }
            Entry::Mark {
                pos: at,
                next,
                mark,
                ..
            } => {
                let problem = if mark.key != r.mark_key {
                    Some("mark key differs from the log's".to_string())
                } else if mark.generation != m.generation {
                    Some(format!(
                        "mark of generation {} in generation {}",
                        mark.generation, m.generation
                    ))
                } else if mark.start != start {
                    Some(format!("mark closes a batch at {} not {start}", mark.start))
                } else if mark.batch_crc != u64::from(crc) {
                    Some(format!(
                        "batch checksum {crc:#010x} != mark's {:#010x}",
                        mark.batch_crc
                    ))
                } else {
                    None
                };
                return match problem {
                    None => Ok((next, out)),
                    Some(detail) => Err(BatchFailure {
                        error: corrupt(
                            Location::CommitMark { pos: at },
                            LOG_AREA_OFF + at % r.capacity,
                            detail,
                        ),
                        started,
                    }),
                };
            }
        }
    }
}

/// Finds a valid mark of this generation in `(after, limit)` whose batch start satisfies
/// `want`; returns its position.
fn find_mark<R: Region + ?Sized>(
    region: &R,
    r: &RegionMeta,
    m: &LogMeta,
    after: u64,
    limit: u64,
    want: impl Fn(u64) -> bool,
) -> Result<Option<u64>, LogError> {
    const CHUNK: u64 = 64 * 1024;
    let hdr = RECORD_HEADER_LEN as usize;
    let mut buf = vec![0u8; CHUNK as usize + hdr];
    let mut at = after + 8;
    while at + MARK_SIZE <= limit {
        let n = (limit - at).min(CHUNK + RECORD_HEADER_LEN);
        let chunk = &mut buf[..n as usize];
        read_circ(region, r.capacity, at, chunk)?;
        let mut i = 0usize;
        while i + hdr <= chunk.len() {
            let h: RecordHeader = bytemuck::pod_read_unaligned(&chunk[i..i + hdr]);
            let q = at + i as u64;
            let candidate =
                h.pos == q && h.len == MARK_FLAG | MARK_BODY_LEN && q + MARK_SIZE <= limit;
            if candidate
                && let Ok(Entry::Mark { mark, .. }) =
                    read_entry(region, r.capacity, q, (m.head, limit), true)
                && mark.key == r.mark_key
                && mark.generation == m.generation
                && want(mark.start)
            {
                return Ok(Some(q));
            }
            i += 8;
        }
        at += CHUNK;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimRegion;

    #[test]
    fn an_append_is_one_fence() {
        let log = Log::create(SimRegion::new(8192), 1).unwrap();
        let before = log.region().counters();
        log.append(b"abc").unwrap();
        let after = log.region().counters();
        assert_eq!(after.fences - before.fences, 1);
        assert_eq!(log.stats().metadata_commits, 0);
    }

    #[test]
    fn window_zero_appends_are_two_fences_and_the_selector_store_is_last() {
        let log = Log::create_opts(SimRegion::new(8192), 1, LogOptions { window: 0 }).unwrap();
        let before = log.region().counters();
        log.region().start_recording();
        log.append(b"abc").unwrap();
        let points = log.region().take_recording();
        let after = log.region().counters();
        assert_eq!(after.fences - before.fences, 2);
        // Before the last write (the selector), the new metadata copy must already be durable.
        let n = points.len();
        assert!(n >= 3);
        let last_write = &points[n - 3];
        assert_eq!(
            last_write.pending.len(),
            1,
            "only the selector word is pending"
        );
        assert_eq!(last_write.pending[0].0, SELECTOR_OFF / 8);
    }

    #[test]
    fn the_first_commit_past_the_window_rewrites_the_metadata() {
        let log = Log::create_opts(SimRegion::new(8192), 1, LogOptions { window: 200 }).unwrap();
        for _ in 0..3 {
            log.append(&[7; 40]).unwrap(); // 56 B record + 48 B mark per commit
        }
        let s = log.stats();
        assert_eq!((s.commits, s.metadata_commits), (3, 1));
        let (_, rec) = Log::open(log.into_region()).unwrap();
        assert_eq!(rec.records, 3);
        assert_eq!(rec.metadata_tail, 2 * 104);
        assert_eq!(rec.last_batch_start, Some(2 * 104));
    }

    #[test]
    fn a_torn_last_batch_is_dropped_and_reported_but_damage_before_a_later_batch_is_an_error() {
        let log = Log::create(SimRegion::new(8192), 1).unwrap();
        let a = log.append(b"first").unwrap();
        let b = log.append(b"second").unwrap();
        let img = log.region().durable_image();
        // Damage the last batch's payload: indistinguishable from a torn write.
        let mut last = img.clone();
        last[(LOG_AREA_OFF + b + RECORD_HEADER_LEN) as usize] ^= 1;
        let (log2, rec) = Log::open(SimRegion::from_image(last)).unwrap();
        assert_eq!(rec.records, 1);
        assert_eq!(rec.discarded_batch_at, Some(b));
        assert_eq!(log2.iter().count(), 1);
        // Damage the first batch: the second batch's mark proves it was committed.
        let mut first = img;
        first[(LOG_AREA_OFF + a + RECORD_HEADER_LEN) as usize] ^= 1;
        match Log::open(SimRegion::from_image(first)) {
            Err(LogError::Corrupt { location, .. }) => {
                assert_eq!(location, Location::RecordPayload { pos: a })
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn marks_of_an_earlier_incarnation_never_resurrect_dropped_records() {
        // Incarnation 1 leaves a torn batch [x, y] whose mark reached the medium but whose
        // second record did not; incarnation 2 rewrites x alone and crashes before its mark.
        let log = Log::create(SimRegion::new(8192), 1).unwrap();
        log.append(b"base").unwrap();
        let region = log.into_region();
        let image = region.durable_image();
        let (log, rec) = Log::open(SimRegion::from_image(image)).unwrap();
        assert_eq!(rec.generation, 1);
        let x = log.append_batch(&[b"xxxxxxxx", b"yyyyyyyy"]).unwrap();
        let mut img = log.region().durable_image();
        // Tear: y's payload never reached the medium.
        let y_body = (LOG_AREA_OFF + x[1] + RECORD_HEADER_LEN) as usize;
        img[y_body..y_body + 8].copy_from_slice(&[0; 8]);
        let (log, rec) = Log::open(SimRegion::from_image(img)).unwrap();
        assert_eq!(rec.records, 1);
        assert_eq!(rec.discarded_batch_at, Some(x[0]));
        // Incarnation 3 stages x again (same bytes, same position) and crashes before its mark;
        // then the old y is restored by a lucky tear: generation 2's mark must not count.
        log.append_buffered(b"xxxxxxxx").unwrap();
        let mut img = log.region().current_image();
        img[y_body..y_body + 8].copy_from_slice(b"yyyyyyyy");
        let (_, rec) = Log::open(SimRegion::from_image(img)).unwrap();
        assert_eq!(rec.records, 1, "{rec:?}");
    }

    #[test]
    fn group_commit_merges_buffered_appends_into_one_commit() {
        let log = Log::create(SimRegion::new(8192), 1).unwrap();
        for i in 0..10u8 {
            log.append_buffered(&[i; 9]).unwrap();
        }
        let rep = log.sync().unwrap();
        assert_eq!(log.stats().commits, 1);
        assert_eq!(rep.tail, 10 * record_size(9) + MARK_SIZE);
        assert_eq!(log.iter().count(), 10);
    }

    #[test]
    fn a_lone_appender_after_concurrent_ones_stops_gathering_at_once() {
        let log = std::sync::Arc::new(Log::create(SimRegion::new(1 << 20), 1).unwrap());
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let log = &log;
                s.spawn(move || {
                    for _ in 0..50 {
                        log.append(&[t; 16]).unwrap();
                    }
                });
            }
        });
        let before = log.stats();
        for _ in 0..100 {
            log.append(&[9; 16]).unwrap();
        }
        let after = log.stats();
        // The first lone append may wait for the others (the last commit served several);
        // its commit serves one, so no later append waits.
        assert!(
            after.gathers - before.gathers <= 1,
            "{before:?} -> {after:?}"
        );
        assert_eq!(after.commits - before.commits, 100);
        assert_eq!(log.iter().count(), 500);
    }
}
