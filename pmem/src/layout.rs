//! On-media layout. Every structure is `#[repr(C)]`, little-endian, 8-byte aligned, with its
//! size checked at compile time; casts go through `bytemuck`.
//!
//! ```text
//! offset 0     GlobalMeta   (64 B)  magic, version, region length, CRC
//! offset 64    RegionMeta   (64 B)  log id, log area offset and capacity, CRC
//! offset 128   selector     (8 B)   SELECTOR_COPY0 or SELECTOR_COPY1: which LogMeta is live
//! offset 192   LogMeta 0    (32 B)  head, tail, log id, CRC
//! offset 256   LogMeta 1    (32 B)
//! offset 4096  log area     circular; records at logical position p live at 4096 + p % capacity
//! ```
//!
//! A record is a [`RecordHeader`] (16 B) followed by the payload padded with zeros to a multiple
//! of 8 bytes. The record checksum covers the header's `len` and `pos` and the padded payload.

use bytemuck::{Pod, Zeroable};

/// "KEELLOG1" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"KEELLOG1");
/// Layout version.
pub const VERSION: u64 = 1;
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
    /// Reserved, zero.
    pub reserved: [u64; 4],
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
    /// crc32c of the bytes before this field.
    pub crc: u64,
}
const _: () = assert!(size_of::<LogMeta>() == 32);

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
    pub fn new(log_id: u64, capacity: u64) -> Self {
        let mut m = RegionMeta {
            log_id,
            log_area_off: LOG_AREA_OFF,
            capacity,
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

impl LogMeta {
    /// Builds a sealed copy.
    pub fn new(head: u64, tail: u64, log_id: u64) -> Self {
        let mut m = LogMeta {
            head,
            tail,
            log_id,
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
    let mut c = crc32c::crc32c(&len.to_le_bytes());
    c = crc32c::crc32c_append(c, &pos.to_le_bytes());
    crc32c::crc32c_append(c, padded_payload)
}
