//! `dax` backend: a file on a DAX file system mapped with `MAP_SYNC | MAP_SHARED_VALIDATE`, so
//! CPU stores reach persistent memory once their cache lines are written back.
//!
//! - `write` copies into the mapping (ordinary stores, or non-temporal `movnti` stores for the
//!   8-byte-aligned part with [`DaxFlush::NonTemporal`]).
//! - `flush` writes back every cache line of the range with `clwb`, else `clflushopt`, else
//!   `clflush`, chosen at open time from CPUID (or only the unaligned edge lines after
//!   non-temporal stores).
//! - `fence` is `sfence`.
//! - `preallocate` (which the log calls ahead of its tail during each incarnation's first lap)
//!   writes zeros into the file's holes through the file and syncs once, then faults the pages
//!   in writable (`MADV_POPULATE_WRITE`): appends there take no page fault, where the first
//!   store into each page of a sparse `MAP_SYNC` file faults and allocates its block, committing
//!   the journal inside the fault (in the VM: 514 faults for 2 MiB of 64 KiB appends into a
//!   sparse file, 0 after `preallocate`; `vm_dax`).
//!
//! `memmap2` has no `MAP_SYNC` option, so the `MAP_SYNC` mapping is made with `libc::mmap`;
//! the `msync` fallback (for file systems without DAX, when asked for) maps with
//! `memmap2::MmapRaw` and makes `fence` an `msync(MS_SYNC)` of the flushed ranges.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::RegionError;
use crate::region::{Region, check_bounds};

const LINE: u64 = 64;

/// How `dax` makes stores durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DaxFlush {
    /// Pick the best cache-line write-back instruction the CPU has.
    #[default]
    Auto,
    /// Force `clwb` (fails to open if the CPU lacks it).
    Clwb,
    /// Force `clflushopt`.
    Clflushopt,
    /// Force `clflush`.
    Clflush,
    /// Non-temporal stores for aligned words, write-back of the edge lines, `sfence`.
    NonTemporal,
}

/// Options of the `dax` backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DaxOptions {
    /// When the file system refuses `MAP_SYNC`, map normally and make `fence` an `msync`
    /// instead of failing with [`RegionError::MapSyncRefused`]. Correct but slow; meant for
    /// testing the backend's logic on machines without persistent memory.
    pub msync_fallback: bool,
    /// Write-back method.
    pub flush: DaxFlush,
}

/// The write-back instruction in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushInstr {
    /// `clwb`: write back, keep the line cached.
    Clwb,
    /// `clflushopt`: write back and evict, weakly ordered.
    Clflushopt,
    /// `clflush`: write back and evict, ordered.
    Clflush,
}

/// Which write-back instructions this CPU supports (CPUID leaf 7 and leaf 1).
pub fn cpu_flush_support() -> (bool, bool, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        let leaf7 = __cpuid_count(7, 0);
        let leaf1 = __cpuid_count(1, 0);
        (
            leaf7.ebx & (1 << 24) != 0,
            leaf7.ebx & (1 << 23) != 0,
            leaf1.edx & (1 << 19) != 0,
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (false, false, false)
    }
}

/// How the region reaches the medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaxMode {
    /// `MAP_SYNC` mapping, stores + cache-line write-back + `sfence`.
    MapSync(FlushInstr),
    /// `MAP_SYNC` mapping, non-temporal stores + `sfence` (edges written back with the
    /// instruction named).
    NonTemporal(FlushInstr),
    /// Ordinary shared mapping, `msync` on fence (the fallback).
    Msync,
}

enum Mapping {
    Sync { ptr: *mut u8, len: usize },
    Msync(memmap2::MmapRaw),
}

/// The DAX region.
pub struct DaxRegion {
    mapping: Mapping,
    len: u64,
    mode: DaxMode,
    /// Ranges flushed since the last fence (msync fallback only).
    msync_pending: Mutex<Vec<(u64, u64)>>,
    path: PathBuf,
    _file: File,
}

impl std::fmt::Debug for DaxRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaxRegion")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("mode", &self.mode)
            .finish()
    }
}

// SAFETY: the mapping is plain shared memory owned by this value until drop; all access goes
// through raw-pointer copies whose ranges the `Region` contract makes callers keep disjoint
// between concurrent writers and readers.
unsafe impl Send for DaxRegion {}
// SAFETY: as above; `&self` methods only copy through raw pointers and lock `msync_pending`.
unsafe impl Sync for DaxRegion {}

impl DaxRegion {
    /// Opens (creating and sizing) `path` and maps it with `MAP_SYNC`.
    pub fn open(path: &Path, len_bytes: u64, opts: DaxOptions) -> Result<Self, RegionError> {
        let (file, len) = crate::file::open_sized(path, len_bytes)?;
        let map_err = |source| RegionError::Map {
            path: path.to_path_buf(),
            source,
        };
        let len_usize = usize::try_from(len)
            .map_err(|_| map_err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        let instr = pick_instr(opts.flush).ok_or_else(|| RegionError::Unsupported {
            backend: "dax",
            reason: format!("CPU lacks the write-back instruction {:?}", opts.flush),
            source: None,
        })?;
        // SAFETY: a fresh mapping (null hint) of a file we hold open, `len` bytes, which the
        // file is at least as long as; the kernel validates the flags (MAP_SHARED_VALIDATE).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
                file.as_raw_fd(),
                0,
            )
        };
        let (mapping, mode) = if ptr == libc::MAP_FAILED {
            let err = std::io::Error::last_os_error();
            let refused = matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL));
            if !refused {
                return Err(map_err(err));
            }
            if !opts.msync_fallback {
                return Err(RegionError::MapSyncRefused {
                    path: path.to_path_buf(),
                    source: err,
                });
            }
            let raw = memmap2::MmapOptions::new()
                .len(len_usize)
                .map_raw(&file)
                .map_err(map_err)?;
            (Mapping::Msync(raw), DaxMode::Msync)
        } else {
            let mode = if opts.flush == DaxFlush::NonTemporal {
                DaxMode::NonTemporal(instr)
            } else {
                DaxMode::MapSync(instr)
            };
            (
                Mapping::Sync {
                    ptr: ptr.cast::<u8>(),
                    len: len_usize,
                },
                mode,
            )
        };
        Ok(DaxRegion {
            mapping,
            len,
            mode,
            msync_pending: Mutex::new(Vec::new()),
            path: path.to_path_buf(),
            _file: file,
        })
    }

    /// How this region makes stores durable.
    pub fn mode(&self) -> DaxMode {
        self.mode
    }

    fn base(&self) -> *mut u8 {
        match &self.mapping {
            Mapping::Sync { ptr, .. } => *ptr,
            Mapping::Msync(raw) => raw.as_mut_ptr(),
        }
    }

    fn write_back(&self, instr: FlushInstr, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let base = self.base();
        let mut line = offset / LINE * LINE;
        while line < offset + len {
            // SAFETY: `line` < offset + len <= self.len (bounds checked by the caller), so the
            // address is inside the live mapping; the instructions only write back caches.
            unsafe { write_back_line(instr, base.add(line as usize)) };
            line += LINE;
        }
    }
}

fn pick_instr(want: DaxFlush) -> Option<FlushInstr> {
    let (clwb, clflushopt, clflush) = cpu_flush_support();
    match want {
        DaxFlush::Clwb => clwb.then_some(FlushInstr::Clwb),
        DaxFlush::Clflushopt => clflushopt.then_some(FlushInstr::Clflushopt),
        DaxFlush::Clflush => clflush.then_some(FlushInstr::Clflush),
        DaxFlush::Auto | DaxFlush::NonTemporal => {
            if clwb {
                Some(FlushInstr::Clwb)
            } else if clflushopt {
                Some(FlushInstr::Clflushopt)
            } else if clflush {
                Some(FlushInstr::Clflush)
            } else {
                None
            }
        }
    }
}

/// Writes back the cache line holding `p`.
///
/// # Safety
/// `p` must point into mapped memory.
#[cfg(target_arch = "x86_64")]
unsafe fn write_back_line(instr: FlushInstr, p: *mut u8) {
    // SAFETY: the caller guarantees `p` is mapped; these instructions read no registers but
    // the address and change no architectural state besides the cache.
    unsafe {
        match instr {
            FlushInstr::Clwb => {
                std::arch::asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags))
            }
            FlushInstr::Clflushopt => {
                std::arch::asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags))
            }
            FlushInstr::Clflush => {
                std::arch::asm!("clflush [{0}]", in(reg) p, options(nostack, preserves_flags))
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn write_back_line(_instr: FlushInstr, _p: *mut u8) {
    unreachable!("pick_instr returns None off x86_64, so no DaxRegion exists here");
}

fn sfence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` only orders stores.
    unsafe {
        std::arch::asm!("sfence", options(nostack, preserves_flags))
    }
}

/// Copies `data` to `dst` with non-temporal stores for the 8-byte-aligned middle.
///
/// # Safety
/// `dst..dst + data.len()` must be mapped, writable and not accessed concurrently.
unsafe fn copy_nontemporal(dst: *mut u8, data: &[u8]) {
    let addr = dst as usize;
    let head = (addr.next_multiple_of(8) - addr).min(data.len());
    let words = (data.len() - head) / 8;
    // SAFETY: every access below stays within `dst..dst + data.len()`, which the caller
    // guarantees is mapped and exclusively ours; `movnti` needs an 8-byte-aligned address,
    // which `dst + head` is.
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), dst, head);
        for i in 0..words {
            let at = head + i * 8;
            let mut w = [0u8; 8];
            w.copy_from_slice(&data[at..at + 8]);
            let v = u64::from_ne_bytes(w);
            let p = dst.add(at);
            #[cfg(target_arch = "x86_64")]
            std::arch::asm!("movnti [{0}], {1}", in(reg) p, in(reg) v, options(nostack, preserves_flags));
            #[cfg(not(target_arch = "x86_64"))]
            std::ptr::write_volatile(p.cast::<u64>(), v);
        }
        let done = head + words * 8;
        std::ptr::copy_nonoverlapping(data.as_ptr().add(done), dst.add(done), data.len() - done);
    }
}

impl Region for DaxRegion {
    fn backend(&self) -> &'static str {
        "dax"
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        check_bounds(offset, buf.len() as u64, self.len)?;
        // SAFETY: bounds checked; the range is inside the mapping and, per the Region
        // contract, not written concurrently.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base().add(offset as usize),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), RegionError> {
        check_bounds(offset, data.len() as u64, self.len)?;
        // SAFETY: bounds checked; the range is inside the writable mapping and, per the
        // Region contract, not accessed concurrently by anyone else.
        unsafe {
            let dst = self.base().add(offset as usize);
            if matches!(self.mode, DaxMode::NonTemporal(_)) {
                copy_nontemporal(dst, data);
            } else if offset.is_multiple_of(8) && data.len().is_multiple_of(8) {
                // Whole aligned words: one 8-byte store each, so every word is crash-atomic
                // (the selector flip relies on it), whatever the compiler does with memcpy.
                for (i, w) in data.chunks_exact(8).enumerate() {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(w);
                    std::ptr::write_volatile(dst.add(i * 8).cast::<u64>(), u64::from_ne_bytes(b));
                }
            } else {
                std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
            }
        }
        Ok(())
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        check_bounds(offset, len, self.len)?;
        match self.mode {
            DaxMode::MapSync(instr) => self.write_back(instr, offset, len),
            DaxMode::NonTemporal(instr) => {
                // Only the unaligned edges went through the cache.
                if len > 0 {
                    self.write_back(instr, offset, 1);
                    self.write_back(instr, offset + len - 1, 1);
                }
            }
            DaxMode::Msync => self
                .msync_pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((offset, len)),
        }
        Ok(())
    }
    fn fence(&self) -> Result<(), RegionError> {
        match &self.mapping {
            Mapping::Sync { .. } => sfence(),
            Mapping::Msync(raw) => {
                let ranges = std::mem::take(
                    &mut *self.msync_pending.lock().unwrap_or_else(|e| e.into_inner()),
                );
                for (off, len) in ranges {
                    if len > 0 {
                        raw.flush_range(off as usize, len as usize)
                            .map_err(|source| RegionError::Sync { source })?;
                    }
                }
            }
        }
        Ok(())
    }
    /// Allocates the file's holes in the range (zeros written through the file, then one
    /// sync), then faults the range's pages into the mapping writable. Without it, the first
    /// store to each page of a sparse file faults on the hot path, and under `MAP_SYNC` that
    /// fault allocates the block and commits the file system's journal before it returns.
    fn preallocate(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        check_bounds(offset, len, self.len)?;
        crate::file::fill_holes(&self._file, offset, len).map_err(|source| RegionError::Write {
            offset,
            len,
            source,
        })?;
        if let Mapping::Sync { ptr, .. } = self.mapping {
            populate_writable(ptr, self.len, offset, len);
        }
        Ok(())
    }
}

/// Page size for `madvise` alignment (the smallest x86-64 page; advice on a larger range than
/// asked is harmless here, since the range is clamped to the mapping).
const PAGE: u64 = 4096;

/// Faults `[offset, offset + len)` of the mapping at `base` (`map_len` bytes) in writable
/// (`MADV_POPULATE_WRITE`, Linux 5.14 and later), as a first store to each page would. Advice
/// only: on an older kernel, or if the kernel declines, the stores fault as before.
fn populate_writable(base: *mut u8, map_len: u64, offset: u64, len: u64) {
    let start = offset / PAGE * PAGE;
    let end = (offset + len)
        .div_ceil(PAGE)
        .saturating_mul(PAGE)
        .min(map_len);
    if end <= start {
        return;
    }
    // SAFETY: `[start, end)` lies inside the live mapping (`end <= map_len`, `start` page
    // aligned like the mapping's base); populating pages changes no byte of their contents.
    unsafe {
        libc::madvise(
            base.add(start as usize).cast(),
            (end - start) as usize,
            libc::MADV_POPULATE_WRITE,
        );
    }
}

impl Drop for DaxRegion {
    fn drop(&mut self) {
        if let Mapping::Sync { ptr, len } = self.mapping {
            // SAFETY: `ptr`/`len` are exactly the mapping made in `open`, unmapped once here;
            // no borrow of it outlives `self`.
            unsafe {
                libc::munmap(ptr.cast(), len);
            }
        }
    }
}
