//! The region trait every backend implements.

use crate::error::RegionError;

/// A byte-addressable persistent region: the medium under the [`crate::Log`].
///
/// # Contract (what the log relies on; the conformance suite checks it)
///
/// - **Visibility.** After [`Region::write`] returns, [`Region::read`] of the same bytes returns
///   the written bytes, from any thread.
/// - **Durability.** A written byte is *durable* (survives a crash or power loss) once a
///   [`Region::flush`] whose range covers it and then a [`Region::fence`] have both returned
///   successfully. Nothing else promises durability.
/// - **Crash model.** Until then, any subset of the written-but-not-durable 8-byte-aligned words
///   may have reached the medium, in any order; each such word holds either its old or its new
///   value, never a mix. An aligned 8-byte write therefore is atomic with respect to crashes,
///   which is what the log's selector flip needs. (Block backends write whole sectors, which is
///   stronger.) The `sim` backend implements exactly this model and lets tests choose the subset.
/// - **Ordering.** Writes flushed before a fence are durable before any write issued after the
///   fence returns can become durable.
/// - **Concurrency.** `write` and `read` of disjoint ranges may run concurrently from several
///   threads, also while another thread runs `flush`/`fence`. Callers serialise overlapping
///   accesses themselves (the log does).
/// - **Errors.** An error from `flush` or `fence` leaves it unknown which writes are durable;
///   the log then refuses further work until it is reopened and recovered.
#[allow(clippy::len_without_is_empty)] // a region is never empty; `len` is its size
pub trait Region: Send + Sync + std::fmt::Debug {
    /// Short backend name (`"dax"`, `"uring"`, `"file"`, `"sim"`).
    fn backend(&self) -> &'static str;
    /// Length of the region in bytes.
    fn len(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), RegionError>;
    /// Writes `data` at `offset` (visible at once, durable after `flush` + `fence`).
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), RegionError>;
    /// Writes `parts` one after another starting at `offset`, as `write` of their
    /// concatenation would (lets a caller write a header and a payload without copying them
    /// together first).
    fn write_parts(&self, offset: u64, parts: &[&[u8]]) -> Result<(), RegionError> {
        let mut at = offset;
        for p in parts {
            self.write(at, p)?;
            at += p.len() as u64;
        }
        Ok(())
    }
    /// As [`Region::write_parts`], and tells the region that the `free_after` bytes after
    /// the written ones are free space: nobody reads them until they are written again, so
    /// the region may store anything there until then. A direct-I/O backend uses it to fill
    /// the rest of the last block with zeros instead of reading what the file held there.
    /// The log calls it for every write into its area, with the free space between the write
    /// and the head. Default: `write_parts` (the bytes keep their values).
    fn write_parts_free(
        &self,
        offset: u64,
        parts: &[&[u8]],
        free_after: u64,
    ) -> Result<(), RegionError> {
        let _ = free_after;
        self.write_parts(offset, parts)
    }
    /// Starts write-back of `[offset, offset + len)` (cache-line write-back on DAX; a no-op on
    /// block backends, whose `fence` syncs everything written).
    fn flush(&self, offset: u64, len: u64) -> Result<(), RegionError>;
    /// Waits until every flushed range is durable (`sfence`, `fdatasync`, io_uring fsync).
    fn fence(&self) -> Result<(), RegionError>;
    /// Prepares `[offset, offset + len)` for writes that are coming: block backends allocate
    /// the file's holes there (zeros, then a sync), so a later `fence` of data written there is
    /// a pure data sync rather than a file-system journal commit. Never changes what `read`
    /// returns. The caller guarantees nobody writes the range meanwhile. Default: nothing.
    fn preallocate(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        let _ = (offset, len);
        Ok(())
    }
}

impl<R: Region + ?Sized> Region for Box<R> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        (**self).read(offset, buf)
    }
    fn write_parts(&self, offset: u64, parts: &[&[u8]]) -> Result<(), RegionError> {
        (**self).write_parts(offset, parts)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), RegionError> {
        (**self).write(offset, data)
    }
    fn write_parts_free(
        &self,
        offset: u64,
        parts: &[&[u8]],
        free_after: u64,
    ) -> Result<(), RegionError> {
        (**self).write_parts_free(offset, parts, free_after)
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        (**self).flush(offset, len)
    }
    fn fence(&self) -> Result<(), RegionError> {
        (**self).fence()
    }
    fn preallocate(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        (**self).preallocate(offset, len)
    }
}

impl<R: Region + ?Sized> Region for std::sync::Arc<R> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        (**self).read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), RegionError> {
        (**self).write(offset, data)
    }
    fn write_parts(&self, offset: u64, parts: &[&[u8]]) -> Result<(), RegionError> {
        (**self).write_parts(offset, parts)
    }
    fn write_parts_free(
        &self,
        offset: u64,
        parts: &[&[u8]],
        free_after: u64,
    ) -> Result<(), RegionError> {
        (**self).write_parts_free(offset, parts, free_after)
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        (**self).flush(offset, len)
    }
    fn fence(&self) -> Result<(), RegionError> {
        (**self).fence()
    }
    fn preallocate(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        (**self).preallocate(offset, len)
    }
}

/// Checks `[offset, offset + len)` lies within a region of `region_len` bytes.
pub(crate) fn check_bounds(offset: u64, len: u64, region_len: u64) -> Result<(), RegionError> {
    match offset.checked_add(len) {
        Some(end) if end <= region_len => Ok(()),
        _ => Err(RegionError::OutOfBounds {
            offset,
            len,
            region_len,
        }),
    }
}
