//! Memory the NIC reads or writes: `memmap2` mappings of anonymous memory or of a device-DAX
//! region.
//!
//! A follower's ring belongs on device-DAX when the host has one (`KEEL_DEVDAX`), so remote
//! writes land where they persist. A `MAP_SYNC` mapping of a file on an fsdax file system cannot
//! be registered (the kernel refuses long-term pinning of fsdax pages: EOPNOTSUPP), so that is
//! not offered here.

use super::error::RdmaError;
use super::verbs::RegistrableMemory;
use memmap2::{MmapMut, MmapOptions};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// Device-DAX mappings must be aligned to the region's alignment (2 MiB by default).
pub const DEVDAX_ALIGN: usize = 2 << 20;

/// Where a mapping comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemorySource {
    /// Anonymous memory (private to the process, page aligned, zeroed).
    Anonymous,
    /// A device-DAX character device (`/dev/daxX.Y`), mapped shared at `offset` (a multiple of
    /// [`DEVDAX_ALIGN`]).
    DeviceDax {
        /// Path of the device.
        path: PathBuf,
        /// Byte offset into the device.
        offset: u64,
    },
}

impl MemorySource {
    /// Device-DAX at the path in `KEEL_DEVDAX` (offset 0) when set, else anonymous memory.
    pub fn from_env() -> MemorySource {
        match std::env::var_os("KEEL_DEVDAX") {
            Some(path) if !path.is_empty() => MemorySource::DeviceDax {
                path: PathBuf::from(path),
                offset: 0,
            },
            _ => MemorySource::Anonymous,
        }
    }
}

/// A page-aligned mapping that stays at one address for its whole life.
#[derive(Debug)]
pub struct Mapping {
    // The pointer is taken once from `&mut map` so writes through it have a mutable
    // provenance; `map` keeps the mapping alive.
    ptr: *mut u8,
    len: usize,
    map: MmapMut,
}

// SAFETY: the mapping is plain memory; all access goes through raw pointers with the
// synchronisation the ring protocol and the verbs layer provide.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (rounded up to the source's alignment) from `source`.
    pub fn new(source: &MemorySource, len: usize) -> Result<Mapping, RdmaError> {
        assert!(len > 0, "empty mapping");
        let mut map = match source {
            MemorySource::Anonymous => {
                MmapOptions::new()
                    .len(len)
                    .map_anon()
                    .map_err(|e| RdmaError::MapMemory {
                        what: "anonymous memory".into(),
                        len,
                        source: e,
                    })?
            }
            MemorySource::DeviceDax { path, offset } => {
                assert!(
                    offset.is_multiple_of(DEVDAX_ALIGN as u64),
                    "device-DAX offset {offset} not a multiple of {DEVDAX_ALIGN}"
                );
                Self::map_devdax(path, *offset, len.next_multiple_of(DEVDAX_ALIGN))?
            }
        };
        let ptr = map.as_mut_ptr();
        Ok(Mapping { ptr, len, map })
    }

    fn map_devdax(path: &Path, offset: u64, len: usize) -> Result<MmapMut, RdmaError> {
        let what = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| RdmaError::MapMemory {
                what: what.clone(),
                len,
                source: e,
            })?;
        // SAFETY: a device-DAX node is memory, not a file another process truncates; the
        // mapping is shared so remote writes land in the device, and it is only accessed
        // through raw pointers under the ring protocol.
        unsafe { MmapOptions::new().offset(offset).len(len).map_mut(&file) }.map_err(|e| {
            RdmaError::MapMemory {
                what,
                len,
                source: e,
            }
        })
    }

    /// Copies `bytes` to `offset` (local stores).
    ///
    /// # Panics
    /// If the range lies outside the mapping.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.len,
            "write of {} bytes at {offset} outside mapping of {}",
            bytes.len(),
            self.len
        );
        // SAFETY: in bounds; callers own the range by protocol (a slot they hold, or ring
        // bytes no one else accesses now); the source is a distinct Rust slice.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(offset), bytes.len()) };
    }

    /// The mapping's size as asked (the mapping itself may be rounded up).
    pub fn mapped_len(&self) -> usize {
        self.map.len()
    }
}

// SAFETY: `ptr..ptr+len` lies in `map`, which is alive and never moves while `self` lives.
unsafe impl RegistrableMemory for Mapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
}
