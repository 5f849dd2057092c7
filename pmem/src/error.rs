//! Typed errors of the regions and the log.

use std::path::PathBuf;

/// An error from a [`crate::Region`] backend.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// Opening or creating the backing file failed.
    #[error("cannot open region file {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Setting the backing file's length failed.
    #[error("cannot size region file {path} to {len_bytes} bytes")]
    Resize {
        /// The file.
        path: PathBuf,
        /// The requested length.
        len_bytes: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `mmap` failed.
    #[error("cannot map region file {path}")]
    Map {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file system refused `MAP_SYNC` (it is not a DAX file system) and the caller did not
    /// ask for the `msync` fallback.
    #[error(
        "{path}: the file system refused MAP_SYNC (not a DAX mount); \
         use a DAX file system or enable the msync fallback"
    )]
    MapSyncRefused {
        /// The file.
        path: PathBuf,
        /// The OS error (`EOPNOTSUPP` or `EINVAL`).
        #[source]
        source: std::io::Error,
    },
    /// The backend cannot run on this machine (for example io_uring refused by the kernel or a
    /// seccomp filter).
    #[error("backend {backend} unsupported here: {reason}")]
    Unsupported {
        /// The backend name.
        backend: &'static str,
        /// Why.
        reason: String,
        /// The OS error, when there is one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A read failed.
    #[error("read of {len} bytes at offset {offset} failed")]
    Read {
        /// Offset in the region.
        offset: u64,
        /// Length of the read.
        len: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A write failed.
    #[error("write of {len} bytes at offset {offset} failed")]
    Write {
        /// Offset in the region.
        offset: u64,
        /// Length of the write.
        len: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Making writes durable (`fdatasync`, `msync`, io_uring fsync) failed.
    #[error("sync failed")]
    Sync {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An access fell outside the region.
    #[error("access [{offset}, {offset}+{len}) outside region of {region_len} bytes")]
    OutOfBounds {
        /// Offset of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Length of the region.
        region_len: u64,
    },
}

/// Where in a log region corruption was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The global metadata block (offset 0).
    GlobalMetadata,
    /// The region metadata block.
    RegionMetadata,
    /// The 8-byte copy selector.
    Selector,
    /// One of the two log metadata copies (head, tail).
    LogMetadata {
        /// Which copy (0 or 1).
        copy: u8,
    },
    /// A record header (length, checksum, position).
    RecordHeader {
        /// The record's log position.
        pos: u64,
    },
    /// A record's payload (checksum mismatch).
    RecordPayload {
        /// The record's log position.
        pos: u64,
    },
    /// A commit mark (the record that closes a commit batch past the metadata tail).
    CommitMark {
        /// The mark's log position.
        pos: u64,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::GlobalMetadata => write!(f, "global metadata"),
            Location::RegionMetadata => write!(f, "region metadata"),
            Location::Selector => write!(f, "metadata selector"),
            Location::LogMetadata { copy } => write!(f, "log metadata copy {copy}"),
            Location::RecordHeader { pos } => write!(f, "record header at log position {pos}"),
            Location::RecordPayload { pos } => write!(f, "record payload at log position {pos}"),
            Location::CommitMark { pos } => write!(f, "commit mark at log position {pos}"),
        }
    }
}

/// An error from the [`crate::Log`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The region backend failed.
    #[error("region I/O failed")]
    Region(#[from] RegionError),
    /// The region does not hold a Keel log (no magic number): never formatted, or a crash
    /// during [`crate::Log::create`].
    #[error("region holds no Keel log (bad magic)")]
    NotFormatted,
    /// The region is too small for the requested log.
    #[error("region of {region_len} bytes too small: need at least {min_len} bytes")]
    RegionTooSmall {
        /// The region's length.
        region_len: u64,
        /// The minimum length.
        min_len: u64,
    },
    /// Corruption detected; `offset` is the byte offset in the region.
    #[error("corruption in {location} at region offset {offset}: {detail}")]
    Corrupt {
        /// Which structure is damaged.
        location: Location,
        /// Byte offset in the region where the damaged structure starts.
        offset: u64,
        /// What check failed.
        detail: String,
    },
    /// An append does not fit in the free space (release space with `advance_head`).
    #[error("log full: need {needed_bytes} bytes, {free_bytes} free of {capacity_bytes}")]
    Full {
        /// Bytes the append needs (headers and padding included).
        needed_bytes: u64,
        /// Bytes free.
        free_bytes: u64,
        /// Log area capacity.
        capacity_bytes: u64,
    },
    /// A payload longer than a record can hold.
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Payload length.
        len: u64,
        /// Largest payload this log accepts.
        max: u64,
    },
    /// `read`/`advance_head` at a position that is not a live record boundary.
    #[error("position {pos} is not a live record (live range [{head}, {tail}))")]
    BadPosition {
        /// The position asked for.
        pos: u64,
        /// Current head.
        head: u64,
        /// Current durable tail.
        tail: u64,
    },
    /// Logical positions (64-bit byte counts) are used up; only reachable with a crafted tail.
    #[error("log positions exhausted at tail {tail}")]
    PositionsExhausted {
        /// The tail.
        tail: u64,
    },
    /// An earlier commit failed; the on-media state is unknown until the log is reopened
    /// (recovered).
    #[error("log failed after an earlier I/O error; reopen to recover")]
    Failed,
}
