//! On-media layout. Every structure is `#[repr(C)]`, little-endian, 8-byte aligned, with its
//! size checked at compile time; casts go through `bytemuck`.
//!
//! ```text
//! offset 0     GlobalMeta   (64 B)  magic, version, region length, CRC
//! offset 64    RegionMeta   (64 B)  log id, log area offset and capacity, CRC
//! offset 128   selector     (8 B)   SELECTOR_COPY0 or SELECTOR_COPY1: which LogMeta is live
//! offset 192   LogMeta 0    (64 B)  head, tail, log id, generation, window, CRC
//! offset 256   LogMeta 1    (64 B)
//! offset 4096  log area     circular; records at logical position p live at 4096 + p % capacity
//! ```
//!
//! A record is a [`RecordHeader`] (16 B) followed by the payload padded with zeros to a multiple
//! of 8 bytes. The record checksum covers the header's `len` and `pos` and the padded payload.
//!
//! A *commit mark* is a record whose `len` has [`MARK_FLAG`] set and whose body is a
//! [`CommitMark`] (32 B): it ends every commit batch and makes the batch self-validating, so a
//! commit past the metadata tail needs one fence (see [`crate::log`]).

use bytemuck::{Pod, Zeroable};

/// "KEELLOG1" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"KEELLOG1");
/// Layout version.
pub const VERSION: u64 = 2;
/// Offset of [`GlobalMeta`].
pub const GLOBAL_OFF: u64 = 0;
/// Offset of [`RegionMeta`].
pub const REGION_OFF: u64 = 64;
/// Offset of the selector word.
pub const SELECTOR_OFF: u64 = 128;
/// Offsets of the two [`LogMeta`] copies.
pub const LOG_META_OFF: [u64; 2] = [192, 256];
/// Offset of the log area.
pub const LOG_AREA_OFF: u64 = 4096;
/// Smallest log area.
pub const MIN_CAPACITY: u64 = 64;
/// Selector value meaning copy 0 is live. The two values differ in 32 bits, and any other
/// value is corruption, so no flip of fewer than 32 bits turns one into the other.
pub const SELECTOR_COPY: [u64; 2] = [0x5a3c_96e1_0f87_d24b, 0xa5c3_691e_f078_2db4];
/// Record header size.
pub const RECORD_HEADER_LEN: u64 = 16;
/// Set in [`RecordHeader::len`] of a commit mark; payload lengths stay below it.
pub const MARK_FLAG: u32 = 1 << 31;
/// Body length of a commit mark.
pub const MARK_BODY_LEN: u32 = 32;
/// Bytes a commit mark occupies in the log area (header and body).
pub const MARK_SIZE: u64 = RECORD_HEADER_LEN + MARK_BODY_LEN as u64;
/// Default one-fence window: commits whose end lies within this many bytes past the metadata
/// tail are committed with one fence; the first commit past it also rewrites the metadata.
pub const DEFAULT_WINDOW: u64 = 1 << 20;

/// Global metadata: identifies the region as a Keel log of this version.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct GlobalMeta {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`VERSION`].
    pub version: u64,
    /// Length of the whole region in bytes.
    pub region_len: u64,
    /// Reserved, zero.
    pub reserved: [u64; 4],
    /// crc32c of the bytes before this field.
    pub crc: u64,
}
const _: () = assert!(size_of::<GlobalMeta>() == 64);

/// Region metadata: where the log area is and how large.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RegionMeta {
    /// Caller-chosen log identifier, repeated in every [`LogMeta`].
    pub log_id: u64,
    /// Offset of the log area ([`LOG_AREA_OFF`]).
    pub log_area_off: u64,
    /// Capacity of the circular log area in bytes (multiple of 8).
    pub capacity: u64,
    /// Random per-log value every commit mark repeats, so bytes inside a payload can never pass
    /// for a mark (they would have to guess it).
    pub mark_key: u64,
    /// Reserved, zero.
    pub reserved: [u64; 3],
    /// crc32c of the bytes before this field.
    pub crc: u64,
}
const _: () = assert!(size_of::<RegionMeta>() == 64);

/// One copy of the log metadata. The live copy is named by the selector.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct LogMeta {
    /// Logical position of the first live record.
    pub head: u64,
    /// Logical position one past the last durable record.
    pub tail: u64,
    /// Same as [`RegionMeta::log_id`].
    pub log_id: u64,
    /// Incremented, durably, every time the log is opened; commit marks carry it, so marks
    /// left by an earlier incarnation are never taken for this one's.
    pub generation: u64,
    /// One-fence window in bytes: every commit mark of this generation that is not covered by
    /// `tail` lies below `tail + window`. Zero: every commit rewrites the metadata.
    pub window: u64,
    /// Reserved, zero.
    pub reserved: [u64; 2],
    /// crc32c of the bytes before this field.
    pub crc: u64,
}
const _: () = assert!(size_of::<LogMeta>() == 64);

/// Body of a commit mark: closes the batch of records in `[start, mark position)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CommitMark {
    /// [`LogMeta::generation`] of the incarnation that wrote it.
    pub generation: u64,
    /// Logical position of the batch's first record.
    pub start: u64,
    /// crc32c over the batch's record headers in order (each header's crc covers its payload).
    pub batch_crc: u64,
    /// [`RegionMeta::mark_key`].
    pub key: u64,
}
const _: () = assert!(size_of::<CommitMark>() == MARK_BODY_LEN as usize);

/// Header in front of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RecordHeader {
    /// Payload length in bytes (before padding).
    pub len: u32,
    /// crc32c of `len`, `pos` and the padded payload.
    pub crc: u32,
    /// The record's own logical position, so stale bytes from an earlier lap never pass.
    pub pos: u64,
}
const _: () = assert!(size_of::<RecordHeader>() as u64 == RECORD_HEADER_LEN);

fn crc_prefix(bytes: &[u8]) -> u64 {
    u64::from(crc32c::crc32c(&bytes[..bytes.len() - 8]))
}

impl GlobalMeta {
    /// Builds a sealed (checksummed) block.
    pub fn new(region_len: u64) -> Self {
        let mut m = GlobalMeta {
            magic: MAGIC,
            version: VERSION,
            region_len,
            reserved: [0; 4],
            crc: 0,
        };
        m.crc = m.compute_crc();
        m
    }
    /// The checksum this block should carry.
    pub fn compute_crc(&self) -> u64 {
        crc_prefix(bytemuck::bytes_of(self))
    }
}

impl RegionMeta {
    /// Builds a sealed block.
    pub fn new(log_id: u64, capacity: u64, mark_key: u64) -> Self {
        let mut m = RegionMeta {
            log_id,
            log_area_off: LOG_AREA_OFF,
            capacity,
            mark_key,
            reserved: [0; 3],
            crc: 0,
        };
        m.crc = m.compute_crc();
        m
    }
    /// The checksum this block should carry.
    pub fn compute_crc(&self) -> u64 {
        crc_prefix(bytemuck::bytes_of(self))
    }
}

impl LogMeta {
    /// Builds a sealed copy.
    pub fn new(head: u64, tail: u64, log_id: u64, generation: u64, window: u64) -> Self {
        let mut m = LogMeta {
            head,
            tail,
            log_id,
            generation,
            window,
            reserved: [0; 2],
            crc: 0,
        };
        m.crc = m.compute_crc();
        m
    }
    /// The checksum this copy should carry.
    pub fn compute_crc(&self) -> u64 {
        crc_prefix(bytemuck::bytes_of(self))
    }
}

/// Bytes a record with a payload of `len` bytes occupies (header and padding included).
pub fn record_size(len: u64) -> u64 {
    RECORD_HEADER_LEN + len.next_multiple_of(8)
}

/// The checksum of a record: over `len`, `pos` and the padded payload.
pub fn record_crc(len: u32, pos: u64, padded_payload: &[u8]) -> u32 {
    record_crc_parts(len, pos, padded_payload, &[])
}

/// [`record_crc`] of a payload and its padding given apart.
pub fn record_crc_parts(len: u32, pos: u64, payload: &[u8], padding: &[u8]) -> u32 {
    let mut c = crc32c::crc32c(&len.to_le_bytes());
    c = crc32c::crc32c_append(c, &pos.to_le_bytes());
    c = crc32c::crc32c_append(c, payload);
    crc32c::crc32c_append(c, padding)
}
