//! The log: a circular, checksummed record log with a crash-atomic commit point.
//!
//! # Commit protocol
//!
//! Appends write records past the durable tail (`stage`). A commit then
//! 1. flushes the new record bytes,
//! 2. writes the *inactive* [`LogMeta`] copy with the new head and tail and its CRC, flushes it,
//! 3. fences (records and the new copy are durable; the selector still names the old copy),
//! 4. flips the selector to the new copy with one aligned 8-byte store, flushes it,
//! 5. fences. The append is durable when this returns.
//!
//! A crash before step 4 reaches the medium leaves the old copy live, whose records are all
//! untouched (new records only go to free space); a crash after leaves the new copy live, whose
//! records were made durable in step 3. Both are the state just before or just after the
//! commit. The same protocol commits a head advance.
//!
//! # Group commit
//!
//! Appenders stage their records under a mutex, then wait until the durable tail covers them.
//! If no commit is in flight one of them runs a commit for everything staged so far; appends
//! that arrive while a commit is in flight are staged and share the next commit.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::{Location, LogError};
use crate::layout::{
    GlobalMeta, LOG_AREA_OFF, LOG_META_OFF, LogMeta, MAGIC, MIN_CAPACITY, RECORD_HEADER_LEN,
    RecordHeader, RegionMeta, SELECTOR_COPY, SELECTOR_OFF, VERSION, record_crc, record_size,
};
use crate::region::Region;

/// The persistence log over a [`Region`]. All methods take `&self`; share it between threads
/// with an `Arc` to get group commit.
#[derive(Debug)]
pub struct Log<R: Region> {
    region: R,
    log_id: u64,
    capacity: u64,
    inner: Mutex<Inner>,
    committed: Condvar,
}

#[derive(Debug)]
struct Inner {
    /// Index of the live [`LogMeta`] copy.
    active: usize,
    /// Durable head.
    head: u64,
    /// Durable tail.
    tail: u64,
    /// End of the records written so far (durable or not).
    staged_tail: u64,
    /// A commit is running (outside the mutex).
    committing: bool,
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
    /// Commits run (each is two fences).
    pub commits: u64,
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

impl<R: Region> Log<R> {
    /// Formats `region` as an empty log with identifier `log_id`, durably. Everything in the
    /// region is overwritten. The global magic is written last, in its own commit, so a crash
    /// during `create` leaves a region that [`Log::open`] reports as
    /// [`LogError::NotFormatted`] (or, if the crash tore the metadata, as corrupt).
    pub fn create(region: R, log_id: u64) -> Result<Self, LogError> {
        let region_len = region.len();
        let min_len = LOG_AREA_OFF + MIN_CAPACITY;
        if region_len < min_len {
            return Err(LogError::RegionTooSmall {
                region_len,
                min_len,
            });
        }
        let capacity = (region_len - LOG_AREA_OFF) / 8 * 8;
        // Clear the magic first so a crash during create is never taken for an old log.
        region.write(0, &0u64.to_le_bytes())?;
        region.flush(0, 8)?;
        region.fence()?;
        let global = GlobalMeta::new(region_len);
        let rmeta = RegionMeta::new(log_id, capacity);
        let lmeta = LogMeta::new(0, 0, log_id);
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
        Ok(Self::assemble(region, log_id, capacity, 0, 0, 0))
    }

    /// Recovers the log in `region`: checks every metadata block and every live record and
    /// returns the log positioned at its durable state. Damage anywhere in the live state is
    /// a [`LogError::Corrupt`] naming the structure and offset; damaged bytes are never
    /// returned as data.
    pub fn open(region: R) -> Result<(Self, Recovered), LogError> {
        let (rec, active) = scan_region(&region, |_| {})?;
        let log = Self::assemble(region, rec.log_id, rec.capacity, active, rec.head, rec.tail);
        Ok((log, rec))
    }

    /// Alias of [`Log::open`].
    pub fn recover(region: R) -> Result<(Self, Recovered), LogError> {
        Self::open(region)
    }

    fn assemble(
        region: R,
        log_id: u64,
        capacity: u64,
        active: usize,
        head: u64,
        tail: u64,
    ) -> Self {
        Log {
            region,
            log_id,
            capacity,
            inner: Mutex::new(Inner {
                active,
                head,
                tail,
                staged_tail: tail,
                committing: false,
                failed: false,
                stats: LogStats::default(),
                scratch: Vec::new(),
            }),
            committed: Condvar::new(),
        }
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

    /// Largest payload one record can carry.
    pub fn max_payload(&self) -> u64 {
        (self.capacity - RECORD_HEADER_LEN).min(u64::from(u32::MAX))
    }

    /// Durable head.
    pub fn head(&self) -> u64 {
        self.lock().head
    }

    /// Durable tail.
    pub fn tail(&self) -> u64 {
        self.lock().tail
    }

    /// Bytes free for new records (capacity minus live and staged bytes).
    pub fn free_bytes(&self) -> u64 {
        let g = self.lock();
        self.capacity - (g.staged_tail - g.head)
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.lock().stats
    }

    /// Appends one record and returns its position once it is durable.
    pub fn append(&self, payload: &[u8]) -> Result<u64, LogError> {
        let mut g = self.lock();
        let (pos, end) = self.stage(&mut g, std::slice::from_ref(&payload), None)?;
        drop(self.make_durable(g, end)?);
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
        drop(self.make_durable(g, end)?);
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
        let g = self.make_durable(g, end)?;
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
            g = self.wait(g);
        }
        if pos < g.tail {
            // Must be a record boundary.
            self.read_record(pos, (g.head, g.tail), false)?;
        }
        let target = g.staged_tail;
        let g = self.run_commit(g, pos, target)?;
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
        if pos < g.head || pos >= g.tail {
            return Err(LogError::BadPosition {
                pos,
                head: g.head,
                tail: g.tail,
            });
        }
        self.read_record(pos, (g.head, g.tail), false)
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
        let used = g.staged_tail - g.head;
        if total > self.capacity - used {
            return Err(LogError::Full {
                needed_bytes: total,
                free_bytes: self.capacity - used,
                capacity_bytes: self.capacity,
            });
        }
        let start = g.staged_tail;
        if start.checked_add(total).is_none() {
            return Err(LogError::PositionsExhausted { tail: start });
        }
        let mut buf = std::mem::take(&mut g.scratch);
        buf.clear();
        let mut pos = start;
        for p in payloads {
            let len = p.len() as u64;
            let size = record_size(len);
            let at = buf.len();
            buf.resize(at + size as usize, 0);
            let body = &mut buf[at + RECORD_HEADER_LEN as usize..];
            body[..p.len()].copy_from_slice(p);
            // `len <= max <= u32::MAX` was checked above.
            let len32 = len as u32;
            let crc = record_crc(len32, pos, body);
            let hdr = RecordHeader {
                len: len32,
                crc,
                pos,
            };
            buf[at..at + RECORD_HEADER_LEN as usize].copy_from_slice(bytemuck::bytes_of(&hdr));
            if let Some(v) = positions.as_deref_mut() {
                v.push(pos);
            }
            pos += size;
        }
        let res = self.write_circ(start, &buf);
        g.scratch = buf;
        res?;
        g.staged_tail = pos;
        g.stats.records_appended += payloads.len() as u64;
        assert!(
            g.staged_tail - g.head <= self.capacity,
            "staged beyond capacity"
        );
        Ok((start, pos))
    }

    fn wait<'a>(&self, g: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        self.committed.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once the durable tail reaches `end`, running commits as needed.
    fn make_durable<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        end: u64,
    ) -> Result<MutexGuard<'a, Inner>, LogError> {
        loop {
            if g.failed {
                return Err(LogError::Failed);
            }
            if g.tail >= end {
                return Ok(g);
            }
            if g.committing {
                g = self.wait(g);
            } else {
                let (head, target) = (g.head, g.staged_tail);
                g = self.run_commit(g, head, target)?;
            }
        }
    }

    /// Runs one commit of (`head`, `tail`) with the mutex released during the I/O.
    fn run_commit<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        head: u64,
        tail: u64,
    ) -> Result<MutexGuard<'a, Inner>, LogError> {
        assert!(!g.committing, "two commits at once");
        assert!(
            head >= g.head && tail >= g.tail && head <= tail,
            "commit moves backwards"
        );
        assert!(tail <= g.staged_tail, "commit past the staged tail");
        g.committing = true;
        let (old_tail, next) = (g.tail, g.active ^ 1);
        drop(g);
        let res = self.commit_io(next, head, old_tail, tail);
        let mut g = self.lock();
        g.committing = false;
        match res {
            Ok(()) => {
                g.active = next;
                g.head = head;
                g.tail = tail;
                g.stats.commits += 1;
            }
            Err(_) => g.failed = true,
        }
        self.committed.notify_all();
        res.map(|()| g)
    }

    fn commit_io(&self, next: usize, head: u64, old_tail: u64, tail: u64) -> Result<(), LogError> {
        if tail > old_tail {
            self.flush_circ(old_tail, tail - old_tail)?;
        }
        let meta = LogMeta::new(head, tail, self.log_id);
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

    fn write_circ(&self, pos: u64, data: &[u8]) -> Result<(), LogError> {
        let off = pos % self.capacity;
        let first = (data.len() as u64).min(self.capacity - off) as usize;
        self.region.write(LOG_AREA_OFF + off, &data[..first])?;
        if first < data.len() {
            self.region.write(LOG_AREA_OFF, &data[first..])?;
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

    /// Reads and verifies the record at `pos`; `trusted` says `pos` is known to be a record
    /// boundary (so a position mismatch is corruption, not a bad argument).
    fn read_record(
        &self,
        pos: u64,
        (head, tail): (u64, u64),
        trusted: bool,
    ) -> Result<Record, LogError> {
        read_record(&self.region, self.capacity, pos, (head, tail), trusted)
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
        let res = self.log.read_record(self.pos, (g.head, g.tail), true);
        drop(g);
        match res {
            Ok(r) => {
                self.pos = r.next;
                Some(Ok(r))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
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

fn read_record<R: Region + ?Sized>(
    region: &R,
    capacity: u64,
    pos: u64,
    (head, tail): (u64, u64),
    trusted: bool,
) -> Result<Record, LogError> {
    let hdr_off = LOG_AREA_OFF + pos % capacity;
    if tail - pos < RECORD_HEADER_LEN {
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
    Ok(Record {
        pos,
        next: pos + size,
        payload: body,
    })
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

/// Verifies a log region without building a [`Log`]: every metadata block and every live
/// record. Used by [`Log::open`] and by `keel log verify`.
pub fn recover_region<R: Region + ?Sized>(region: &R) -> Result<Recovered, LogError> {
    let (rec, _) = scan_region(region, |_| {})?;
    Ok(rec)
}

/// Like [`recover_region`], calling `each` for every live record in order; also returns the
/// index of the live metadata copy.
pub fn scan_region<R: Region + ?Sized>(
    region: &R,
    mut each: impl FnMut(&Record),
) -> Result<(Recovered, usize), LogError> {
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
    {
        return Err(corrupt(
            loc,
            moff,
            format!("head {} / tail {} inconsistent", m.head, m.tail),
        ));
    }
    let mut pos = m.head;
    let mut records = 0u64;
    while pos < m.tail {
        let rec = read_record(region, r.capacity, pos, (m.head, m.tail), true)?;
        assert!(
            rec.next > pos && rec.next <= m.tail,
            "record walk must advance within tail"
        );
        each(&rec);
        pos = rec.next;
        records += 1;
    }
    Ok((
        Recovered {
            head: m.head,
            tail: m.tail,
            records,
            log_id: r.log_id,
            capacity: r.capacity,
        },
        active,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimRegion;

    #[test]
    fn an_append_is_two_fences_and_the_selector_store_is_last() {
        let log = Log::create(SimRegion::new(8192), 1).unwrap();
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
    fn group_commit_merges_buffered_appends_into_one_commit() {
        let log = Log::create(SimRegion::new(8192), 1).unwrap();
        for i in 0..10u8 {
            log.append_buffered(&[i; 9]).unwrap();
        }
        let rep = log.sync().unwrap();
        assert_eq!(log.stats().commits, 1);
        assert_eq!(rep.tail, 10 * record_size(9));
        assert_eq!(log.iter().count(), 10);
    }
}
