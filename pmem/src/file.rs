//! `file` backend: `pwrite` + `fdatasync` on an ordinary file.
//!
//! Writes are gathered in memory and issued at the next `fence` (or `read`) as one `pwritev`
//! per contiguous run, so a log commit of several records and their commit mark costs one
//! write system call and one `fdatasync`, and an append under the log's mutex costs a copy,
//! not a system call. The fence takes the gathered bytes out under a short lock and writes
//! them without it, so appenders keep gathering during the write and the sync. Writes larger
//! than 4 MiB skip the copy: they go out at once with `pwritev` from the caller's buffers,
//! after what was gathered before them.
//!
//! **Direct I/O.** By default ([`DirectIo::Auto`]) the file is also opened with `O_DIRECT`
//! where the file system allows it, and the gathered runs go out as whole 4 KiB blocks
//! through it (the bytes around a run in its first and last block are rewritten as they are:
//! see the `direct` module). A fence whose writes are one run, with nothing issued unsynced
//! before it, is that one write with `RWF_DSYNC` and no separate `fdatasync`. Reads, and the
//! zeros `preallocate` writes into holes, go through the ordinary descriptor; the kernel keeps
//! the two coherent (a direct write drops the cached pages it covers).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::direct::{Assembler, open_direct, route, write_all_direct};
use crate::error::RegionError;
use crate::region::{Region, check_bounds};

/// Whether a block backend writes with `O_DIRECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectIo {
    /// Direct where the file system allows it, else through the page cache.
    #[default]
    Auto,
    /// Direct, or fail to open with [`RegionError::Unsupported`].
    On,
    /// Always through the page cache (`pwrite` + `fdatasync`).
    Off,
}

impl DirectIo {
    /// Opens the direct descriptor this setting asks for: `None` for `Off`, and for `Auto`
    /// where the file system refuses.
    pub(crate) fn open(
        self,
        backend: &'static str,
        path: &Path,
        len: u64,
    ) -> Result<Option<File>, RegionError> {
        if self == DirectIo::Off {
            return Ok(None);
        }
        match open_direct(path, len) {
            Ok(f) => Ok(Some(f)),
            Err(_) if self == DirectIo::Auto => Ok(None),
            Err(source) => Err(RegionError::Unsupported {
                backend,
                reason: format!(
                    "O_DIRECT with 4 KiB blocks refused for {} (use DirectIo::Auto or Off)",
                    path.display()
                ),
                source: Some(source),
            }),
        }
    }
}

/// Options of the `file` backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileOptions {
    /// Direct I/O (default: where the file system allows it).
    pub direct: DirectIo,
}

/// Writes larger than this go to the file at once with `pwritev` from the caller's buffers
/// (after what was gathered before them) rather than through the gather buffer. (Measured:
/// sending 64 KiB records out at once, then their commit mark with the fence, made a 64 KiB
/// append 5-10% slower than one `pwritev` of record and mark at the fence.)
const GATHER_MAX: usize = 4 << 20;

/// A region backed by a regular file: `write` gathers the bytes in memory, `flush` does
/// nothing, `fence` writes what was gathered (`pwritev`) and then runs `fdatasync`.
#[derive(Debug)]
pub struct FileRegion {
    file: File,
    /// The same file opened with `O_DIRECT`, when writes go direct.
    direct: Option<File>,
    len: u64,
    path: PathBuf,
    gathered: Mutex<Gathered>,
    /// What one `issue` is writing out, taken from `gathered` so appenders can keep gathering
    /// meanwhile; its mutex also keeps issues (and direct writes) in order.
    outbox: Mutex<Outbox>,
}

/// The issuing side, under the outbox mutex.
#[derive(Debug)]
struct Outbox {
    taken: Gathered,
    /// Lays direct writes out in whole blocks (`Some` when writes go direct).
    assembler: Option<Assembler>,
    /// Writes were issued without a sync since the last sync.
    unsynced: bool,
}

/// `(file offset, offset in the gathered bytes, length, free bytes after it)`.
type Seg = (u64, usize, usize, u64);

/// Writes not yet issued to the file: their bytes, back to back, and where each goes.
#[derive(Debug, Default)]
struct Gathered {
    bytes: Vec<u8>,
    /// `(file offset, offset in bytes, length, free bytes after it)`, never overlapping in
    /// the file (see [`Region::write_parts_free`]).
    segments: Vec<Seg>,
}

impl FileRegion {
    /// Opens (creating if missing) `path` and sizes it to `len_bytes` when it is shorter.
    /// With `len_bytes == 0` the existing length is used.
    /// Writes go direct where the file system allows it ([`FileOptions::default`]).
    pub fn open(path: &Path, len_bytes: u64) -> Result<Self, RegionError> {
        Self::open_with(path, len_bytes, FileOptions::default())
    }

    /// As [`FileRegion::open`], with options.
    pub fn open_with(path: &Path, len_bytes: u64, opts: FileOptions) -> Result<Self, RegionError> {
        let (file, len) = open_sized(path, len_bytes)?;
        let direct = opts.direct.open("file", path, len)?;
        Ok(Self::new(file, direct, len, path))
    }

    fn new(file: File, direct: Option<File>, len: u64, path: &Path) -> Self {
        let assembler = direct.as_ref().map(|_| Assembler::new());
        FileRegion {
            file,
            direct,
            len,
            path: path.to_path_buf(),
            gathered: Mutex::new(Gathered::default()),
            outbox: Mutex::new(Outbox {
                taken: Gathered::default(),
                assembler,
                unsynced: false,
            }),
        }
    }

    /// Whether writes go to the file with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Blocks read back from the file so far to complete the partial first or last block of
    /// a direct write (the cache of recent blocks and declared free space spare most of them;
    /// 0 when writes go through the page cache).
    pub fn direct_block_reads(&self) -> u64 {
        let out = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        out.assembler.as_ref().map_or(0, |a| a.reads)
    }

    /// Opens an existing file read-only (for offline inspection: `keel log verify`). Writes
    /// fail with [`RegionError::Write`].
    pub fn open_read_only(path: &Path) -> Result<Self, RegionError> {
        let open_err = |source| RegionError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        Ok(Self::new(file, None, len, path))
    }

    /// The backing file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_gathered(&self) -> MutexGuard<'_, Gathered> {
        // Every critical section leaves `Gathered` consistent (a failed write keeps its
        // bytes for the fence to retry and report).
        self.gathered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues every gathered write (taken out of `gathered`, which stays open to writers
    /// meanwhile), then runs `then` before any later issue can start. With `for_fence`, a
    /// single direct run goes out with `RWF_DSYNC` when nothing unsynced precedes it; the
    /// result says whether everything issued so far is durable.
    fn issue_then<T>(
        &self,
        for_fence: bool,
        then: impl FnOnce(&mut Outbox) -> Result<T, RegionError>,
    ) -> Result<(bool, T), RegionError> {
        let mut out = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut g = self.lock_gathered();
            std::mem::swap(&mut g.bytes, &mut out.taken.bytes);
            std::mem::swap(&mut g.segments, &mut out.taken.segments);
        }
        let res = self.write_out(&mut out, for_fence);
        out.taken.bytes.clear();
        out.taken.segments.clear();
        let synced = res?;
        let t = then(&mut out)?;
        Ok((synced, t))
    }

    fn issue(&self) -> Result<(), RegionError> {
        self.issue_then(false, |_| Ok(())).map(drop)
    }

    /// Writes what `out` took to the file: one write per contiguous run, in file order.
    /// Returns whether everything issued so far is durable (a lone direct run of a fence
    /// written with `RWF_DSYNC`, nothing unsynced before it).
    fn write_out(&self, out: &mut Outbox, for_fence: bool) -> Result<bool, RegionError> {
        let Outbox {
            taken,
            assembler,
            unsynced,
        } = out;
        if taken.segments.is_empty() {
            return Ok(for_fence && !*unsynced);
        }
        let Gathered { bytes, segments } = taken;
        // Only `write_out` reads the segments, and it clears them: sort them in place.
        segments.sort_unstable_by_key(|s| s.0);
        let order = &*segments;
        // Runs: maximal groups of segments back to back in the file.
        let mut runs = 0usize;
        let mut synced = false;
        let mut i = 0;
        while i < order.len() {
            let start = order[i].0;
            let mut end = i + 1;
            let mut run_end = start + order[i].2 as u64;
            while end < order.len() && order[end].0 == run_end {
                run_end += order[end].2 as u64;
                end += 1;
            }
            runs += 1;
            let err = |source| RegionError::Write {
                offset: start,
                len: run_end - start,
                source,
            };
            let run_len = run_end - start;
            match route(
                self.direct.as_ref(),
                assembler.as_mut(),
                start,
                run_len,
                self.len,
            ) {
                Some((file, asm)) => {
                    let dsync = for_fence && !*unsynced && runs == 1 && end == order.len();
                    let segs = &order[i..end];
                    let free = segs[segs.len() - 1].3;
                    let mut fill = |at: u64, dst: &mut [u8]| fill_from(bytes, segs, at, dst);
                    let mut write = |b: &[u8], at: u64| write_all_direct(file, b, at, dsync);
                    asm.write_run_with(file, start, run_len, &mut fill, free, &mut write)
                        .map_err(err)?;
                    synced = dsync;
                }
                None => write_run(&self.file, start, bytes, &order[i..end]).map_err(err)?,
            }
            if !synced {
                *unsynced = true;
            }
            i = end;
        }
        segments.clear();
        bytes.clear();
        Ok(synced)
    }
}

/// Copies the bytes of the run `segs` (back to back in the file) from `at` (relative to the
/// run's start) into `dst`.
fn fill_from(bytes: &[u8], segs: &[Seg], at: u64, dst: &mut [u8]) {
    let run_start = segs[0].0;
    let mut done = 0usize;
    for &(off, from, len, _) in segs {
        let rel = off - run_start;
        let want = at + done as u64;
        if done == dst.len() {
            break;
        }
        if rel + len as u64 <= want {
            continue;
        }
        let skip = (want - rel) as usize;
        let n = (len - skip).min(dst.len() - done);
        dst[done..done + n].copy_from_slice(&bytes[from + skip..from + skip + n]);
        done += n;
    }
    debug_assert_eq!(done, dst.len(), "run bytes missing");
}

/// Copies the bytes of `parts` (back to back) from `at` into `dst`.
fn fill_parts(parts: &[&[u8]], at: u64, dst: &mut [u8]) {
    let mut skip = at as usize;
    let mut done = 0usize;
    for p in parts {
        if done == dst.len() {
            break;
        }
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        let n = (p.len() - skip).min(dst.len() - done);
        dst[done..done + n].copy_from_slice(&p[skip..skip + n]);
        done += n;
        skip = 0;
    }
    debug_assert_eq!(done, dst.len(), "parts too short");
}

/// Writes the contiguous run `segs` (file offsets ascending, back to back from `start`) with
/// `pwritev`.
fn write_run(file: &File, start: u64, bytes: &[u8], segs: &[Seg]) -> std::io::Result<()> {
    let mut parts: [&[u8]; 16] = [&[]; 16];
    let mut pos = start;
    for chunk in segs.chunks(parts.len()) {
        for (k, &(_, at, len, _)) in chunk.iter().enumerate() {
            parts[k] = &bytes[at..at + len];
        }
        write_parts_at(file, pos, &parts[..chunk.len()])?;
        pos += chunk.iter().map(|s| s.2 as u64).sum::<u64>();
    }
    Ok(())
}

/// Writes `parts` back to back from `start` with `pwritev` (up to 16 per call), finishing
/// short writes with plain writes.
fn write_parts_at(file: &File, start: u64, all: &[&[u8]]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut iov: [libc::iovec; 16] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 16];
    let mut pos = start;
    for parts in all.chunks(iov.len()) {
        let mut total = 0usize;
        for (k, part) in parts.iter().enumerate() {
            iov[k] = libc::iovec {
                iov_base: part.as_ptr().cast_mut().cast(),
                iov_len: part.len(),
            };
            total += part.len();
        }
        let off = libc::off_t::try_from(pos).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let written = loop {
            // SAFETY: the first `parts.len()` (<= 16, below IOV_MAX) iovecs point into the
            // borrowed `parts`, which outlive the call; pwritev only reads them.
            let r = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    iov.as_ptr(),
                    parts.len() as libc::c_int,
                    off,
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        if written < total {
            // Short write: finish with plain writes.
            let mut seen = 0usize;
            for part in parts {
                if written < seen + part.len() {
                    let from = written.saturating_sub(seen);
                    file.write_all_at(&part[from..], pos + (seen + from) as u64)?;
                }
                seen += part.len();
            }
        }
        pos += total as u64;
    }
    Ok(())
}

/// Writes zeros into every hole of `file` within `[offset, offset + len)` (found with
/// `lseek(SEEK_HOLE/SEEK_DATA)`) and syncs if it wrote anything; returns the bytes written.
/// Holes read as zeros, so this never changes what a read returns; it allocates the blocks,
/// so a later `fdatasync` of data written there is a pure data sync (no journal commit for
/// the allocation). A file system without hole reporting shows no holes: nothing is written.
/// Callers make sure nobody writes the range concurrently.
pub(crate) fn fill_holes(file: &File, offset: u64, len: u64) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let fd = file.as_raw_fd();
    let end = offset + len;
    let seek = |pos: u64, whence: libc::c_int| -> std::io::Result<Option<u64>> {
        let pos = libc::off_t::try_from(pos).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: lseek on a descriptor we own; it only moves the file offset, which no other
        // code of this crate relies on (all I/O is positional).
        let r = unsafe { libc::lseek(fd, pos, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = std::io::Error::last_os_error();
        // ENXIO: no data (or hole) at or after `pos`.
        if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        }
    };
    let mut pos = offset;
    let mut written = 0u64;
    while pos < end {
        let Some(hole) = seek(pos, libc::SEEK_HOLE)? else {
            break;
        };
        if hole >= end {
            break;
        }
        let stop = seek(hole, libc::SEEK_DATA)?.unwrap_or(end).min(end);
        let mut at = hole;
        while at < stop {
            let n = (stop - at).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        written += stop - hole;
        pos = stop;
    }
    if written > 0 {
        file.sync_data()?;
    }
    Ok(written)
}

/// Opens `path` read-write (creating it) and makes it at least `len_bytes` long.
pub(crate) fn open_sized(path: &Path, len_bytes: u64) -> Result<(File, u64), RegionError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| RegionError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let resize = |source| RegionError::Resize {
        path: path.to_path_buf(),
        len_bytes,
        source,
    };
    let current = file.metadata().map_err(resize)?.len();
    if current < len_bytes {
        file.set_len(len_bytes).map_err(resize)?;
        file.sync_all().map_err(resize)?;
    }
    Ok((file, current.max(len_bytes)))
}

impl Region for FileRegion {
    fn backend(&self) -> &'static str {
        "file"
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        check_bounds(offset, buf.len() as u64, self.len)?;
        // Issue gathered writes first so the file has them (a write, not a sync).
        self.issue()?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| RegionError::Read {
                offset,
                len: buf.len() as u64,
                source,
            })
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), RegionError> {
        self.write_parts(offset, &[data])
    }
    fn write_parts(&self, offset: u64, parts: &[&[u8]]) -> Result<(), RegionError> {
        self.write_parts_free(offset, parts, 0)
    }
    fn write_parts_free(
        &self,
        offset: u64,
        parts: &[&[u8]],
        free_after: u64,
    ) -> Result<(), RegionError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        check_bounds(offset, total as u64, self.len)?;
        let end = offset + total as u64;
        if total > GATHER_MAX {
            return self
                .issue_then(false, |out| {
                    let err = |source| RegionError::Write {
                        offset,
                        len: total as u64,
                        source,
                    };
                    out.unsynced = true;
                    let len = total as u64;
                    match route(
                        self.direct.as_ref(),
                        out.assembler.as_mut(),
                        offset,
                        len,
                        self.len,
                    ) {
                        Some((file, asm)) => {
                            let mut fill = |at: u64, dst: &mut [u8]| fill_parts(parts, at, dst);
                            let mut write =
                                |b: &[u8], at: u64| write_all_direct(file, b, at, false);
                            asm.write_run_with(file, offset, len, &mut fill, free_after, &mut write)
                                .map_err(err)
                        }
                        None => write_parts_at(&self.file, offset, parts).map_err(err),
                    }
                })
                .map(drop);
        }
        let mut g = self.lock_gathered();
        // A write over gathered bytes: issue those first, so the file sees writes in order.
        if g.segments
            .iter()
            .any(|&(o, _, l, _)| o < end && offset < o + l as u64)
            || g.bytes.len() + total > GATHER_MAX
        {
            drop(g);
            self.issue()?;
            g = self.lock_gathered();
        }
        let at = g.bytes.len();
        for p in parts {
            g.bytes.extend_from_slice(p);
        }
        match g.segments.last_mut() {
            Some(last) if last.0 + last.2 as u64 == offset && last.1 + last.2 == at => {
                last.2 += total;
                last.3 = free_after;
            }
            _ => g.segments.push((offset, at, total, free_after)),
        }
        Ok(())
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        check_bounds(offset, len, self.len)
    }
    fn fence(&self) -> Result<(), RegionError> {
        // Writes gathered after `issue` took them out are not covered: the caller fences
        // what it wrote before calling. The sync runs under the outbox lock, so no issue
        // slips between it and clearing `unsynced`.
        self.issue_then(true, |out| {
            if out.unsynced {
                self.file
                    .sync_data()
                    .map_err(|source| RegionError::Sync { source })?;
                out.unsynced = false;
            }
            Ok(())
        })
        .map(drop)
    }
    fn preallocate(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        check_bounds(offset, len, self.len)?;
        let filled = fill_holes(&self.file, offset, len).map_err(|source| RegionError::Write {
            offset,
            len,
            source,
        })?;
        if filled > 0 && self.direct.is_some() {
            // The zeros are durable: drop their pages, which direct writes would otherwise
            // have to invalidate one by one. Advice only; its failure changes nothing.
            drop_cached(&self.file, offset, len);
        }
        Ok(())
    }
}

/// Asks the kernel to drop the (clean) cached pages of `[offset, offset + len)`.
pub(crate) fn drop_cached(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: advice on a descriptor we own; no memory is passed.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED) };
}

impl Drop for FileRegion {
    fn drop(&mut self) {
        // Unfenced writes promise nothing, but issuing them keeps a dropped region's file
        // equal to what `read` showed. An error here has no one to report to.
        let _ = self.issue();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Log;
    use crate::layout::LOG_AREA_OFF;
    use std::os::fd::AsRawFd;

    /// The first hole at or after `pos`, or `None` where the file system reports none.
    fn next_hole(file: &File, pos: u64) -> Option<u64> {
        // SAFETY: lseek on a descriptor owned by `file`; only the file offset moves.
        let r = unsafe { libc::lseek(file.as_raw_fd(), pos as libc::off_t, libc::SEEK_HOLE) };
        (r >= 0).then_some(r as u64)
    }

    #[test]
    fn appends_keep_the_area_ahead_of_the_tail_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let len = LOG_AREA_OFF + (32 << 20);
        let log = Log::create(FileRegion::open(&path, len).unwrap(), 1).unwrap();
        let probe = File::open(&path).unwrap();
        if next_hole(&probe, LOG_AREA_OFF) == Some(len) {
            eprintln!(
                "skipped: the file system under {} reports no holes",
                dir.path().display()
            );
            return;
        }
        // A fresh sparse file: the log area is one hole.
        assert_eq!(next_hole(&probe, LOG_AREA_OFF), Some(LOG_AREA_OFF));
        log.append(&[1; 100]).unwrap();
        let first = next_hole(&probe, LOG_AREA_OFF).unwrap();
        assert!(
            first >= LOG_AREA_OFF + (4 << 20),
            "the first 4 MiB ahead of the tail are allocated (first hole at {first})"
        );
        // Appending 3.5 MiB more keeps at least 1 MiB ahead allocated.
        for _ in 0..56 {
            log.append(&[2; 64 * 1024]).unwrap();
        }
        let tail = log.tail();
        let hole = next_hole(&probe, LOG_AREA_OFF).unwrap();
        assert!(
            hole >= LOG_AREA_OFF + tail + (1 << 20),
            "hole {hole} tail {tail}"
        );
        // Allocation never changes what the log reads back.
        let payloads: Vec<Vec<u8>> = log.iter().map(|r| r.unwrap().payload).collect();
        assert_eq!(payloads.len(), 57);
        assert_eq!(payloads[0], vec![1; 100]);
    }

    /// Reads the file behind `region` with a separate descriptor (what reached the file).
    fn on_file(path: &Path, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        File::open(path)
            .unwrap()
            .read_exact_at(&mut buf, offset)
            .unwrap();
        buf
    }

    #[test]
    fn gathered_writes_reach_the_file_in_order_at_the_fence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let r = FileRegion::open(&path, 1 << 20).unwrap();
        // Two adjacent writes, given in reverse order, and parts that concatenate.
        r.write(100, &[2; 50]).unwrap();
        r.write_parts(0, &[&[1; 60], &[3; 40]]).unwrap();
        // Nothing is issued yet: the file still reads zeros.
        assert_eq!(on_file(&path, 0, 150), vec![0; 150]);
        // An overlapping write issues the gathered ones first, so it wins where it overlaps.
        r.write(140, &[4; 20]).unwrap();
        assert_eq!(on_file(&path, 0, 60), vec![1; 60]);
        r.fence().unwrap();
        let mut want = vec![1u8; 60];
        want.extend([3; 40]);
        want.extend([2; 40]);
        want.extend([4; 20]);
        assert_eq!(on_file(&path, 0, 160), want);
        // `read` sees gathered writes (it issues them first).
        r.write(500, &[5; 8]).unwrap();
        let mut got = [0u8; 8];
        r.read(500, &mut got).unwrap();
        assert_eq!(got, [5; 8]);
    }

    #[test]
    fn a_large_write_goes_out_directly_after_the_gathered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let r = FileRegion::open(&path, 8 << 20).unwrap();
        r.write(0, &[1; 100]).unwrap();
        // Overlaps the gathered write and is large: it must land after it.
        let big = vec![7u8; GATHER_MAX + 5];
        r.write_parts(50, &[&[6; 10], &big]).unwrap();
        assert_eq!(on_file(&path, 0, 50), vec![1; 50]);
        assert_eq!(on_file(&path, 50, 10), vec![6; 10]);
        assert_eq!(on_file(&path, 60, big.len()), big);
        r.fence().unwrap();
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A write; with `free > 0` it declares that many bytes after it free.
        Write(u64, Vec<u8>, u64),
        Fence,
        Read(u64, usize),
    }

    fn op(len: u64) -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0..len, 1usize..9000, any::<u8>(), prop_oneof![3 => Just(0u64), 1 => 1u64..10_000])
                .prop_map(move |(o, n, b, free)| {
                    let n = n.min((len - o) as usize).max(1);
                    let o = o.min(len - n as u64);
                    Op::Write(o, vec![b; n], free.min(len - o - n as u64))
                }),
            2 => Just(Op::Fence),
            1 => (0..len - 64, 1usize..64).prop_map(|(o, n)| Op::Read(o, n)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any sequence of writes, fences and reads, on `file` or `uring`, direct or buffered,
        /// leaves the file equal
        /// to a byte array that took the same writes, except in bytes a write declared free
        /// (`write_parts_free`) and nothing wrote since; reads see every write. The region's
        /// length is not a multiple of the direct block, so its last block goes buffered.
        #[test]
        fn the_file_holds_exactly_the_writes_after_each_fence(
            kind in 0u8..4,
            ops in proptest::collection::vec(op(40_000), 1..40),
        ) {
            let len = 40_000u64;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            let direct = if kind % 2 == 0 { DirectIo::Auto } else { DirectIo::Off };
            // `file` and `uring` (small staging buffers: writes also go out between fences),
            // each direct and buffered.
            let r: Box<dyn Region> = if kind < 2 {
                Box::new(FileRegion::open_with(&path, len, FileOptions { direct }).unwrap())
            } else {
                let opts = crate::UringOptions { staging_bytes: 8192, ring_entries: 8, direct };
                match crate::UringRegion::open(&path, len, opts) {
                    Ok(r) => Box::new(r),
                    Err(RegionError::Unsupported { .. }) => return Ok(()),
                    Err(e) => panic!("{e}"),
                }
            };
            // `None`: declared free, so any value is right.
            let mut model = vec![Some(0u8); len as usize];
            let agrees = |got: &[u8], want: &[Option<u8>]| {
                got.iter().zip(want).all(|(g, w)| w.is_none_or(|w| w == *g))
            };
            for op in ops {
                match op {
                    Op::Write(o, data, free) => {
                        r.write_parts_free(o, &[&data], free).unwrap();
                        let end = o as usize + data.len();
                        for (m, d) in model[o as usize..end].iter_mut().zip(&data) {
                            *m = Some(*d);
                        }
                        model[end..end + free as usize].fill(None);
                    }
                    Op::Fence => {
                        r.fence().unwrap();
                        proptest::prop_assert!(agrees(&on_file(&path, 0, len as usize), &model));
                    }
                    Op::Read(o, n) => {
                        let mut got = vec![0u8; n];
                        r.read(o, &mut got).unwrap();
                        proptest::prop_assert!(agrees(&got, &model[o as usize..o as usize + n]));
                    }
                }
            }
            r.fence().unwrap();
            proptest::prop_assert!(agrees(&on_file(&path, 0, len as usize), &model));
        }
    }

    #[test]
    fn writes_go_direct_on_this_file_system_unless_told_not_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let auto = FileRegion::open(&path, 1 << 20).unwrap();
        let off = FileOptions {
            direct: DirectIo::Off,
        };
        assert!(
            !FileRegion::open_with(&path, 1 << 20, off)
                .unwrap()
                .is_direct()
        );
        match FileRegion::open_with(
            &path,
            1 << 20,
            FileOptions {
                direct: DirectIo::On,
            },
        ) {
            Ok(r) => assert!(r.is_direct() && auto.is_direct()),
            Err(RegionError::Unsupported { .. }) => {
                assert!(!auto.is_direct(), "Auto fell back where On failed");
                eprintln!(
                    "O_DIRECT refused under {}: buffered only",
                    dir.path().display()
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    /// Appends a mix of sizes to a log on `region` (direct) and returns the blocks read back.
    fn block_reads_during_appends<R: Region>(region: R, reads: impl Fn(&R) -> u64) -> u64 {
        let log = Log::create(region, 1).unwrap();
        let before = reads(log.region());
        for i in 0..300u32 {
            let len = [64usize, 1000, 5000, 65536][i as usize % 4];
            log.append(&vec![i as u8; len]).unwrap();
            if log.free_bytes() < 1 << 20 {
                log.advance_head(log.tail()).unwrap();
            }
        }
        // What is still in the log reads back intact.
        let mut n = 0;
        for r in log.iter() {
            let p = r.unwrap().payload;
            assert!(p.iter().all(|&b| b == p[0]), "a damaged record");
            n += 1;
        }
        assert!(n > 0);
        reads(log.region()) - before
    }

    #[test]
    fn log_appends_on_a_direct_region_read_nothing_back() {
        // The log declares the space after its tail free, and the block the next commit
        // starts in is the one the last commit ended in (remembered): a direct append reads
        // no block back from the file, however its records fall across blocks.
        let dir = tempfile::tempdir().unwrap();
        let len = LOG_AREA_OFF + (8 << 20);
        let file = FileRegion::open(&dir.path().join("f"), len).unwrap();
        if !file.is_direct() {
            eprintln!("skipped: O_DIRECT refused under {}", dir.path().display());
            return;
        }
        let reads = block_reads_during_appends(file, FileRegion::direct_block_reads);
        eprintln!("file: {reads} blocks read back during 300 appends");
        assert!(reads <= 2, "file: {reads} blocks read back during appends");
        match crate::UringRegion::open(&dir.path().join("u"), len, Default::default()) {
            Ok(uring) => {
                assert!(uring.is_direct());
                let reads =
                    block_reads_during_appends(uring, crate::UringRegion::direct_block_reads);
                eprintln!("uring: {reads} blocks read back during 300 appends");
                assert!(reads <= 2, "uring: {reads} blocks read back during appends");
            }
            Err(RegionError::Unsupported { .. }) => eprintln!("uring: skipped (io_uring refused)"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn dropping_the_region_issues_what_was_gathered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let r = FileRegion::open(&path, 1 << 20).unwrap();
        r.write(8, &[9; 16]).unwrap();
        drop(r);
        assert_eq!(on_file(&path, 8, 16), vec![9; 16]);
    }
}
