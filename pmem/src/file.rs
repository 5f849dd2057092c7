//! `file` backend: `pwrite` + `fdatasync` on an ordinary file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::RegionError;
use crate::region::{Region, check_bounds};

/// A region backed by a regular file: `write` is `pwrite`, `flush` does nothing, `fence` is
/// `fdatasync`.
#[derive(Debug)]
pub struct FileRegion {
    file: File,
    len: u64,
    path: PathBuf,
}

impl FileRegion {
    /// Opens (creating if missing) `path` and sizes it to `len_bytes` when it is shorter.
    /// With `len_bytes == 0` the existing length is used.
    pub fn open(path: &Path, len_bytes: u64) -> Result<Self, RegionError> {
        let (file, len) = open_sized(path, len_bytes)?;
        Ok(FileRegion {
            file,
            len,
            path: path.to_path_buf(),
        })
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
        Ok(FileRegion {
            file,
            len,
            path: path.to_path_buf(),
        })
    }

    /// The backing file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
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
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| RegionError::Read {
                offset,
                len: buf.len() as u64,
                source,
            })
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), RegionError> {
        check_bounds(offset, data.len() as u64, self.len)?;
        self.file
            .write_all_at(data, offset)
            .map_err(|source| RegionError::Write {
                offset,
                len: data.len() as u64,
                source,
            })
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        check_bounds(offset, len, self.len)
    }
    fn fence(&self) -> Result<(), RegionError> {
        self.file
            .sync_data()
            .map_err(|source| RegionError::Sync { source })
    }
    fn preallocate(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        check_bounds(offset, len, self.len)?;
        fill_holes(&self.file, offset, len)
            .map(drop)
            .map_err(|source| RegionError::Write {
                offset,
                len,
                source,
            })
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
}
