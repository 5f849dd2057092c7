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
}
