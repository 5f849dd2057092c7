//! `uring` backend: a file written through io_uring from registered buffers.
//!
//! `write` copies into the current *staging* buffer (one of two buffers registered with the
//! ring) and remembers the target offset. `fence` swaps the staging buffer, then submits, in one
//! `io_uring_enter`, a chain of `WRITE_FIXED` operations (adjacent writes coalesced) linked
//! (`IOSQE_IO_LINK`) to an `FSYNC(DATASYNC)`, and waits for the chain. When the fence covers
//! exactly one coalesced write (a log commit that does not wrap: its records and mark are
//! adjacent) and nothing was submitted unsynced before it, the chain is that one `WRITE_FIXED`
//! with `RWF_DSYNC` instead: the same durability (the written range's data and the metadata
//! needed to read it), but the kernel runs it without handing an fsync to an io-wq worker,
//! which on the machine we measured costs about 15 us per commit (`keel-bench log`). Writes arriving while a
//! fence is in flight go to the other buffer and ride the next fence; the log's group commit
//! builds on that. `read` waits for an in-flight fence, reads the file with `pread` and overlays
//! the staged, not yet submitted writes.
//!
//! **Direct I/O.** By default ([`DirectIo::Auto`]) the file is also opened with `O_DIRECT`
//! where the file system allows it. Each coalesced write then goes out as whole 4 KiB blocks
//! (laid out by the same assembler as the `file` backend's, see the `direct` module) with one
//! io_uring `WRITE` from its aligned buffer, completed from the device's interrupt; a fence
//! links (`IOSQE_IO_LINK`) one `FSYNC(DATASYNC)` to its last write and submits both with one
//! `io_uring_enter`, so a log commit is one system call and one wait. (Measured against the
//! write, wait, then fsync it replaced, alternating runs of `keel-bench log`: single-append
//! p50 1.02-1.06x of `pwrite` + `fdatasync` either way at 64 B and 64 KiB, so the link saves
//! the system call, not device time; and with two CPU hogs running, the kill -9 test's
//! appenders made 38,649 acknowledged appends in 30 kills, against 27,000-32,000 with the
//! unlinked fsync in the runs of the session before.) The staging buffers stay registered; the
//! direct writes come from the assembler's buffer.
//!
//! The direct write does not carry `RWF_DSYNC`, although that measured as fast on an idle
//! machine (0.97-1.07x, in the session that added direct I/O): the sync of an asynchronous
//! direct `RWF_DSYNC` write runs in a kernel worker after the data write completes, and with
//! both vCPUs busy (two spinning processes) that collapsed the kill -9 test's four appenders
//! to about 2,000 acknowledged appends in 30 kills. The `file` backend's synchronous
//! `RWF_DSYNC` write runs that sync in the caller and held up under the same load.
//!
//! If the kernel (or a seccomp filter) refuses io_uring, [`UringRegion::open`] returns
//! [`RegionError::Unsupported`].

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use io_uring::{IoUring, opcode, squeue, types};

use crate::direct::{Assembler, route};
use crate::error::RegionError;
use crate::file::DirectIo;
use crate::region::{Region, check_bounds};

/// Options of the `uring` backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringOptions {
    /// Bytes in each of the two registered staging buffers.
    pub staging_bytes: usize,
    /// Submission queue entries.
    pub ring_entries: u32,
    /// Direct I/O (default: where the file system allows it).
    pub direct: DirectIo,
}

impl Default for UringOptions {
    fn default() -> Self {
        UringOptions {
            staging_bytes: 1 << 20,
            ring_entries: 64,
            direct: DirectIo::Auto,
        }
    }
}

/// A heap buffer handed to the kernel by address; freed on drop (after the ring).
struct RawBuf {
    ptr: *mut u8,
    len: usize,
}

impl RawBuf {
    fn new(len: usize) -> Self {
        let b: Box<[u8]> = vec![0u8; len].into_boxed_slice();
        RawBuf {
            ptr: Box::into_raw(b).cast::<u8>(),
            len,
        }
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from `Box::into_raw` of a boxed slice of exactly `len`
        // bytes in `new` and are freed only here.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr, self.len,
            )));
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    file_off: u64,
    buf_off: usize,
    len: usize,
    /// Free bytes after it ([`Region::write_parts_free`]).
    free: u64,
}

struct Staging {
    /// Which registered buffer takes new writes.
    index: usize,
    used: usize,
    writes: Vec<Pending>,
}

/// The ring and the lists one submission works in (kept, so a fence allocates nothing).
struct Ring {
    uring: IoUring,
    /// The staged writes taken for this submission (swapped with `Staging::writes`).
    writes: Vec<Pending>,
    /// Those writes coalesced.
    merged: Vec<Pending>,
    /// The result each operation of a chain must return.
    expected: Vec<i32>,
    /// Completions read back.
    cqes: Vec<(u64, i32)>,
    /// Lays direct writes out in whole blocks (`Some` when writes go direct).
    assembler: Option<Assembler>,
}

/// The io_uring region.
pub struct UringRegion {
    // Field order matters: the ring (which has the buffers registered) drops before `bufs`.
    ring: Mutex<Ring>,
    staging: Mutex<Staging>,
    bufs: [RawBuf; 2],
    file: File,
    /// The same file opened with `O_DIRECT`, when writes go direct.
    direct: Option<File>,
    len: u64,
    entries: usize,
    path: PathBuf,
    /// Writes were submitted without a sync since the last sync (the staging buffer filled
    /// up): the next fence must be a file-wide fdatasync. Only touched under the ring mutex,
    /// and only on the buffered path (a direct fence always ends with its own fsync).
    unsynced: AtomicBool,
}

impl std::fmt::Debug for UringRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringRegion")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

// SAFETY: the raw buffers are only touched under the `staging` mutex (the staging one) or the
// `ring` mutex (the one being submitted), and the ring itself is behind a mutex.
unsafe impl Send for UringRegion {}
// SAFETY: as above.
unsafe impl Sync for UringRegion {}

fn unsupported(reason: &str, source: std::io::Error) -> RegionError {
    RegionError::Unsupported {
        backend: "uring",
        reason: reason.to_string(),
        source: Some(source),
    }
}

impl UringRegion {
    /// Opens (creating and sizing) `path`, sets up the ring and registers the buffers.
    pub fn open(path: &Path, len_bytes: u64, opts: UringOptions) -> Result<Self, RegionError> {
        assert!(opts.staging_bytes >= 4096, "staging buffer too small");
        assert!(opts.ring_entries >= 4, "ring too small");
        let (file, len) = crate::file::open_sized(path, len_bytes)?;
        let direct = opts.direct.open("uring", path, len)?;
        let ring = IoUring::new(opts.ring_entries)
            .map_err(|e| unsupported("io_uring_setup refused", e))?;
        let bufs = [
            RawBuf::new(opts.staging_bytes),
            RawBuf::new(opts.staging_bytes),
        ];
        let iovecs: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.ptr.cast(),
                iov_len: b.len,
            })
            .collect();
        // SAFETY: the buffers stay allocated and at a fixed address until `bufs` drops, which
        // happens after the ring (field order) and so after they are unregistered.
        unsafe { ring.submitter().register_buffers(&iovecs) }
            .map_err(|e| unsupported("registering buffers refused", e))?;
        let region = UringRegion {
            ring: Mutex::new(Ring {
                uring: ring,
                writes: Vec::new(),
                merged: Vec::new(),
                expected: Vec::new(),
                cqes: Vec::new(),
                assembler: direct.as_ref().map(|_| Assembler::new()),
            }),
            staging: Mutex::new(Staging {
                index: 0,
                used: 0,
                writes: Vec::new(),
            }),
            bufs,
            file,
            direct,
            len,
            entries: opts.ring_entries as usize,
            path: path.to_path_buf(),
            unsynced: AtomicBool::new(false),
        };
        // Probe: a bare fsync through the ring (seccomp filters may allow setup but not
        // io_uring_enter).
        region.submit(true).map_err(|e| match e {
            RegionError::Sync { source } => unsupported("io_uring_enter refused", source),
            other => other,
        })?;
        Ok(region)
    }

    /// Whether writes go to the file with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Blocks read back from the file so far to complete the partial first or last block of
    /// a direct write (0 when writes go through the page cache).
    pub fn direct_block_reads(&self) -> u64 {
        self.lock_ring().assembler.as_ref().map_or(0, |a| a.reads)
    }

    fn lock_ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_staging(&self) -> MutexGuard<'_, Staging> {
        self.staging.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits every staged write, then (with `sync`) an fdatasync linked after them.
    fn submit(&self, sync: bool) -> Result<(), RegionError> {
        let mut guard = self.lock_ring();
        let Ring {
            uring: ring,
            writes,
            merged,
            expected,
            cqes,
            assembler,
        } = &mut *guard;
        let index = {
            let mut st = self.lock_staging();
            let index = st.index;
            st.index ^= 1;
            st.used = 0;
            // Swap lists (both keep their capacity): `writes` was left empty last time.
            std::mem::swap(&mut st.writes, writes);
            index
        };
        // Coalesce writes adjacent both in the file and in the buffer.
        merged.clear();
        for w in writes.drain(..) {
            match merged.last_mut() {
                Some(m)
                    if m.file_off + m.len as u64 == w.file_off
                        && m.buf_off + m.len == w.buf_off =>
                {
                    m.len += w.len;
                    m.free = w.free;
                }
                _ => merged.push(w),
            }
        }
        if let (Some(direct), Some(asm)) = (self.direct.as_ref(), assembler.as_mut()) {
            return self.submit_direct(ring, direct, asm, merged, index, sync);
        }
        // A fence of one write, with nothing written since the last sync outside it, is one
        // `WRITE_FIXED` with `RWF_DSYNC` (durable on completion, like the write followed by
        // fdatasync, without the fsync's hand-off to an io-wq worker).
        let dsync = sync && merged.len() == 1 && !self.unsynced.load(Ordering::Relaxed);
        if !sync && !merged.is_empty() {
            self.unsynced.store(true, Ordering::Relaxed);
        }
        let fd = types::Fd(self.file.as_raw_fd());
        let buf = &self.bufs[index];
        let per_chain = self.entries - 1;
        // One chain per `per_chain` writes; a bare fsync is one empty chain.
        let chains = merged.len().div_ceil(per_chain).max(1);
        for ci in 0..chains {
            let chunk = &merged
                [(ci * per_chain).min(merged.len())..((ci + 1) * per_chain).min(merged.len())];
            let with_sync = sync && ci + 1 == chains && !dsync;
            expected.clear();
            {
                let mut sq = ring.submission();
                for (i, w) in chunk.iter().enumerate() {
                    assert!(w.buf_off + w.len <= buf.len, "staged write outside buffer");
                    // SAFETY: `buf_off + len` is inside registered buffer `index`, which
                    // nobody writes until this function returns (writers use the other one).
                    let ptr = unsafe { buf.ptr.add(w.buf_off) };
                    let len = u32::try_from(w.len).map_err(|_| RegionError::Write {
                        offset: w.file_off,
                        len: w.len as u64,
                        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                    })?;
                    let rw_flags = if dsync { libc::RWF_DSYNC } else { 0 };
                    let mut e = opcode::WriteFixed::new(fd, ptr, len, index as u16)
                        .offset(w.file_off)
                        .rw_flags(rw_flags)
                        .build()
                        .user_data(i as u64);
                    if with_sync || i + 1 < chunk.len() {
                        e = e.flags(squeue::Flags::IO_LINK);
                    }
                    // SAFETY: the entry's buffer and fd outlive the operation: we wait for
                    // every completion below before returning.
                    unsafe { sq.push(&e) }.map_err(|_| RegionError::Sync {
                        source: std::io::Error::other("submission queue full"),
                    })?;
                    expected.push(w.len as i32);
                }
                if with_sync {
                    let e = opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                        .user_data(chunk.len() as u64);
                    // SAFETY: fsync references only the fd, which outlives the operation.
                    unsafe { sq.push(&e) }.map_err(|_| RegionError::Sync {
                        source: std::io::Error::other("submission queue full"),
                    })?;
                    expected.push(0);
                }
            }
            if expected.is_empty() {
                continue;
            }
            submit_and_wait(ring, expected.len()).map_err(|source| RegionError::Sync { source })?;
            let mut seen = 0;
            let mut first_err: Option<RegionError> = None;
            while seen < expected.len() {
                cqes.clear();
                cqes.extend(ring.completion().map(|c| (c.user_data(), c.result())));
                if cqes.is_empty() {
                    submit_and_wait(ring, expected.len() - seen)
                        .map_err(|source| RegionError::Sync { source })?;
                    continue;
                }
                for &(ud, res) in cqes.iter() {
                    seen += 1;
                    let i = ud as usize;
                    if first_err.is_none() && res != expected[i] {
                        let source = if res < 0 {
                            std::io::Error::from_raw_os_error(-res)
                        } else {
                            std::io::Error::other(format!("short write {res} of {}", expected[i]))
                        };
                        first_err = Some(if i < chunk.len() {
                            RegionError::Write {
                                offset: chunk[i].file_off,
                                len: chunk[i].len as u64,
                                source,
                            }
                        } else {
                            RegionError::Sync { source }
                        });
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        if sync {
            self.unsynced.store(false, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl UringRegion {
    /// Copies `data` into the staging buffer for `offset` (submitting the other buffer's
    /// writes when this one is full); `free` bytes after it are free space.
    fn stage(&self, offset: u64, data: &[u8], free: u64) -> Result<(), RegionError> {
        check_bounds(offset, data.len() as u64, self.len)?;
        let mut done = 0usize;
        while done < data.len() {
            let mut st = self.lock_staging();
            let cap = self.bufs[st.index].len;
            let room = cap - st.used;
            if room == 0 {
                drop(st);
                self.submit(false)?;
                continue;
            }
            let n = room.min(data.len() - done);
            let at = st.used;
            // SAFETY: `at + n <= cap`: inside the staging buffer, which only this lock's
            // holder writes and the kernel does not read until a submit swaps it out.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr().add(done),
                    self.bufs[st.index].ptr.add(at),
                    n,
                );
            }
            st.writes.push(Pending {
                file_off: offset + done as u64,
                buf_off: at,
                len: n,
                free: if done + n == data.len() { free } else { 0 },
            });
            st.used += n;
            done += n;
        }
        Ok(())
    }

    /// The direct-I/O form of a submission: each coalesced write goes out as whole blocks (one
    /// `WRITE` from the assembler's aligned buffer, waited for); for a fence, the last of them
    /// is linked (`IOSQE_IO_LINK`) to one `FSYNC(DATASYNC)` in the same submission, and a
    /// fence with nothing to write is that fsync alone. Never `RWF_DSYNC` here: see the module
    /// docs.
    fn submit_direct(
        &self,
        ring: &mut IoUring,
        direct: &File,
        asm: &mut Assembler,
        merged: &[Pending],
        index: usize,
        sync: bool,
    ) -> Result<(), RegionError> {
        let buf = &self.bufs[index];
        // Whether the fsync went out linked to the last write, and how it failed.
        let mut synced = false;
        let mut sync_err = None;
        let last = merged.len().wrapping_sub(1);
        for (k, w) in merged.iter().enumerate() {
            assert!(w.buf_off + w.len <= buf.len, "staged write outside buffer");
            // SAFETY: `buf_off + len` is inside registered buffer `index`, which nobody
            // writes until this submission returns (writers use the other one).
            let src = unsafe { std::slice::from_raw_parts(buf.ptr.add(w.buf_off), w.len) };
            let err = |source| RegionError::Write {
                offset: w.file_off,
                len: w.len as u64,
                source,
            };
            let len = w.len as u64;
            let Some((direct, asm)) =
                route(Some(direct), Some(&mut *asm), w.file_off, len, self.len)
            else {
                // The file's last, partial block: through the page cache.
                self.file.write_all_at(src, w.file_off).map_err(err)?;
                continue;
            };
            let aligned_end = Assembler::aligned(w.file_off, len).1;
            let mut fill = |at: u64, dst: &mut [u8]| {
                dst.copy_from_slice(&src[at as usize..at as usize + dst.len()]);
            };
            let mut write = |blocks: &[u8], at: u64| {
                // The fence's last blocks carry the fsync with them.
                let link = sync && k == last && at + blocks.len() as u64 == aligned_end;
                let fsync_on = link.then_some(&self.file);
                match uring_write(ring, direct, blocks, at, fsync_on)? {
                    Ok(()) => {
                        synced |= link;
                        Ok(())
                    }
                    Err(e) => {
                        sync_err = Some(e);
                        Err(std::io::Error::other("the linked fdatasync failed"))
                    }
                }
            };
            let res = asm.write_run_with(direct, w.file_off, len, &mut fill, w.free, &mut write);
            if let Some(source) = sync_err.take() {
                return Err(RegionError::Sync { source });
            }
            res.map_err(err)?;
        }
        if sync && !synced {
            let [res] = submit_chain(ring, [fsync_entry(&self.file)])
                .map_err(|source| RegionError::Sync { source })?;
            if res < 0 {
                return Err(RegionError::Sync {
                    source: std::io::Error::from_raw_os_error(-res),
                });
            }
        }
        Ok(())
    }
}

/// Submits what is queued and waits for `want` completions, again when a signal interrupted
/// the wait (entries the kernel already took are not submitted twice): an error return must
/// mean the operations failed, never that buffers they still use are handed back early.
fn submit_and_wait(ring: &mut IoUring, want: usize) -> std::io::Result<usize> {
    loop {
        match ring.submit_and_wait(want) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Submits `entries` with one `io_uring_enter` and waits for all their completions; returns
/// their results in the entries' order. The caller keeps what the entries reference alive
/// until this returns (it returns only once every entry completed, or on a submission error
/// before any was taken).
fn submit_chain<const N: usize>(
    ring: &mut IoUring,
    entries: [squeue::Entry; N],
) -> std::io::Result<[i32; N]> {
    {
        let mut sq = ring.submission();
        for (i, e) in entries.into_iter().enumerate() {
            // SAFETY: as the caller guarantees above; every entry is waited for below.
            unsafe { sq.push(&e.user_data(i as u64)) }
                .map_err(|_| std::io::Error::other("submission queue full"))?;
        }
    }
    let mut results = [None; N];
    while results.iter().any(Option::is_none) {
        submit_and_wait(ring, 1)?;
        for c in ring.completion() {
            if let Some(r) = results.get_mut(c.user_data() as usize) {
                *r = Some(c.result());
            }
        }
    }
    Ok(results.map(|r| r.unwrap_or(0)))
}

/// An `FSYNC(DATASYNC)` of `file`.
fn fsync_entry(file: &File) -> squeue::Entry {
    opcode::Fsync::new(types::Fd(file.as_raw_fd()))
        .flags(types::FsyncFlags::DATASYNC)
        .build()
}

/// Writes `blocks` (aligned memory, whole blocks) at `at` through the `O_DIRECT` descriptor
/// with one io_uring `WRITE` and waits for it. With `fsync_on`, an `FSYNC(DATASYNC)` of that
/// file is linked after the write in the same submission (the kernel starts it when the write
/// completed, and cancels it if the write failed or was short), and both are waited for.
/// The outer result is the write's, the inner one the fsync's.
fn uring_write(
    ring: &mut IoUring,
    direct: &File,
    blocks: &[u8],
    at: u64,
    fsync_on: Option<&File>,
) -> std::io::Result<std::io::Result<()>> {
    let len = u32::try_from(blocks.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let write = opcode::Write::new(types::Fd(direct.as_raw_fd()), blocks.as_ptr(), len)
        .offset(at)
        .build();
    // `blocks` is borrowed for the whole call, and `submit_chain` waits for every completion.
    let Some(file) = fsync_on else {
        let [res] = submit_chain(ring, [write])?;
        return check_write(res, len).map(Ok);
    };
    let [res, sync] = submit_chain(
        ring,
        [write.flags(squeue::Flags::IO_LINK), fsync_entry(file)],
    )?;
    check_write(res, len)?;
    Ok(match sync {
        0 => Ok(()),
        r => Err(std::io::Error::from_raw_os_error(-r)),
    })
}

/// The result of a direct write of `len` bytes as a `Result`.
fn check_write(res: i32, len: u32) -> std::io::Result<()> {
    if res < 0 {
        return Err(std::io::Error::from_raw_os_error(-res));
    }
    if res as u32 != len {
        return Err(std::io::Error::other(format!(
            "short direct write {res} of {len}"
        )));
    }
    Ok(())
}

impl Region for UringRegion {
    fn backend(&self) -> &'static str {
        "uring"
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        check_bounds(offset, buf.len() as u64, self.len)?;
        let _ring = self.lock_ring();
        let st = self.lock_staging();
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| RegionError::Read {
                offset,
                len: buf.len() as u64,
                source,
            })?;
        let sbuf = &self.bufs[st.index];
        let end = offset + buf.len() as u64;
        for w in &st.writes {
            let (ws, we) = (w.file_off, w.file_off + w.len as u64);
            let (s, e) = (ws.max(offset), we.min(end));
            if s < e {
                let n = (e - s) as usize;
                let src_off = w.buf_off + (s - ws) as usize;
                // SAFETY: `src_off + n <= buf_off + len`, inside the staging buffer, which is
                // only written under the staging lock we hold.
                let src = unsafe { std::slice::from_raw_parts(sbuf.ptr.add(src_off), n) };
                let d = (s - offset) as usize;
                buf[d..d + n].copy_from_slice(src);
            }
        }
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), RegionError> {
        self.stage(offset, data, 0)
    }
    fn write_parts_free(
        &self,
        offset: u64,
        parts: &[&[u8]],
        free_after: u64,
    ) -> Result<(), RegionError> {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        check_bounds(offset, total, self.len)?;
        let mut at = offset;
        for (i, p) in parts.iter().enumerate() {
            let free = if i + 1 == parts.len() { free_after } else { 0 };
            self.stage(at, p, free)?;
            at += p.len() as u64;
        }
        Ok(())
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        check_bounds(offset, len, self.len)
    }
    fn fence(&self) -> Result<(), RegionError> {
        self.submit(true)
    }
    fn preallocate(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        check_bounds(offset, len, self.len)?;
        // Staged writes into the range land after these zeros (they are submitted later), and
        // holes read as zeros, so reads never see a difference.
        let filled = crate::file::fill_holes(&self.file, offset, len).map_err(|source| {
            RegionError::Write {
                offset,
                len,
                source,
            }
        })?;
        if filled > 0 && self.direct.is_some() {
            crate::file::drop_cached(&self.file, offset, len);
        }
        Ok(())
    }
}
