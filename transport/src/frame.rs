//! The ring frame: a fixed 48-byte `#[repr(C)]` header followed by the payload.
//!
//! Every frame starts at a 64-byte aligned ring position and occupies
//! [`frame_len`]`(payload)` bytes (header + payload rounded up to 64). The header is read from
//! and written to ring memory with `bytemuck` casts of its native little-endian layout.
//!
//! The checksum is CRC-32C over the header bytes after the checksum field, then the payload.
//! It therefore also covers the frame's ring position and epoch: a frame left over from an
//! earlier lap of the ring or from an earlier connection never validates at a new position.
#![forbid(unsafe_code)]

use bytemuck::{Pod, Zeroable};
use thiserror::Error;

#[cfg(not(target_endian = "little"))]
compile_error!("keel-transport lays out ring frames in little-endian byte order");

/// Magic number in every frame header (`"KFRM"` read as a little-endian u32).
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"KFRM");
/// Size of [`FrameHeader`] in bytes.
pub const HEADER_BYTES: usize = 48;
/// Alignment of every frame in the ring, in bytes: a cache line, so a frame never shares a
/// line with its neighbours (the writer can own the next frame's lines while the reader reads
/// the previous one).
pub const FRAME_ALIGN: usize = 64;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FrameKind {
    /// A payload for the reader (an entry or a message).
    Entry = 1,
    /// Filler up to the end of the data area: the next frame starts at the next lap.
    Padding = 2,
}

/// The fixed frame header, as laid out in ring memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FrameHeader {
    /// CRC-32C of the header bytes after this field, then of the payload (entries only).
    pub checksum: u32,
    /// Payload length in bytes (for padding: the bytes skipped after the header).
    pub length: u32,
    /// Absolute ring position (bytes since the ring was created) where this header starts.
    pub position: u64,
    /// Connection epoch the writer was given at connection set-up.
    pub epoch: u64,
    /// Ballot of the leader that wrote the entry (0 for plain messages).
    pub ballot: u64,
    /// Log slot of the entry (0 for plain messages).
    pub slot: u64,
    /// [`FrameKind`] as a u32.
    pub kind: u32,
    /// [`FRAME_MAGIC`].
    pub magic: u32,
}

const _: () = assert!(core::mem::size_of::<FrameHeader>() == HEADER_BYTES);
const _: () = assert!(FRAME_ALIGN.is_multiple_of(core::mem::align_of::<FrameHeader>()));
// A padding header always fits in the space left before the end of the data area.
const _: () = assert!(HEADER_BYTES <= FRAME_ALIGN);

/// Bytes a frame with `payload_len` payload bytes occupies in the ring.
#[must_use]
pub const fn frame_len(payload_len: usize) -> usize {
    (HEADER_BYTES + payload_len).next_multiple_of(FRAME_ALIGN)
}

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Fewer bytes than the header (or than the header announces) were given.
    #[error("frame truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The magic number is wrong.
    #[error("bad frame magic {found:#010x}")]
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// The kind field names no [`FrameKind`].
    #[error("unknown frame kind {found}")]
    BadKind {
        /// The value found.
        found: u32,
    },
    /// The payload is longer than the reader accepts.
    #[error("frame payload of {length} bytes exceeds the limit of {max}")]
    TooLong {
        /// Announced length.
        length: u32,
        /// Accepted maximum.
        max: usize,
    },
    /// The frame names another ring position (a stale frame from an earlier lap, or garbage).
    #[error("frame at ring position {expected} claims position {found}")]
    WrongPosition {
        /// Where the reader found it.
        expected: u64,
        /// What the header says.
        found: u64,
    },
    /// The frame belongs to another connection epoch.
    #[error("frame of epoch {found}, expected epoch {expected}")]
    WrongEpoch {
        /// The reader's epoch.
        expected: u64,
        /// The header's epoch.
        found: u64,
    },
    /// The checksum does not match: the frame is torn or corrupt.
    #[error("frame checksum mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    Checksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
    /// A padding frame that does not end exactly at the end of the data area.
    #[error("padding frame of {length} bytes does not end at the end of the ring")]
    BadPadding {
        /// Announced length.
        length: u32,
    },
}

/// What the reader expects of the frame at its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Ring position of the frame.
    pub position: u64,
    /// Connection epoch.
    pub epoch: u64,
    /// Largest payload accepted.
    pub max_payload: usize,
}

impl FrameHeader {
    /// The header of an entry frame at `position`, with its checksum over `payload`.
    ///
    /// # Panics
    /// If `payload` is longer than `u32::MAX` bytes (callers bound payloads far below that).
    #[must_use]
    pub fn entry(position: u64, epoch: u64, ballot: u64, slot: u64, payload: &[u8]) -> Self {
        let length = u32::try_from(payload.len())
            .unwrap_or_else(|_| panic!("frame payload of {} bytes exceeds u32", payload.len()));
        let mut header = FrameHeader {
            checksum: 0,
            length,
            position,
            epoch,
            ballot,
            slot,
            kind: FrameKind::Entry as u32,
            magic: FRAME_MAGIC,
        };
        header.checksum = header.compute_checksum(payload);
        header
    }

    /// The header of a padding frame at `position` that skips `skip` bytes after the header.
    #[must_use]
    pub fn padding(position: u64, epoch: u64, skip: u32) -> Self {
        let mut header = FrameHeader {
            checksum: 0,
            length: skip,
            position,
            epoch,
            ballot: 0,
            slot: 0,
            kind: FrameKind::Padding as u32,
            magic: FRAME_MAGIC,
        };
        header.checksum = header.compute_checksum(&[]);
        header
    }

    /// CRC-32C of the header after the checksum field, continued over `payload`.
    #[must_use]
    pub fn compute_checksum(&self, payload: &[u8]) -> u32 {
        let head = crc32c::crc32c(&bytemuck::bytes_of(self)[4..]);
        crc32c::crc32c_append(head, payload)
    }

    /// The header's bytes as laid out in ring memory.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }

    /// The kind, if the kind field is valid.
    pub fn frame_kind(&self) -> Result<FrameKind, FrameError> {
        match self.kind {
            1 => Ok(FrameKind::Entry),
            2 => Ok(FrameKind::Padding),
            found => Err(FrameError::BadKind { found }),
        }
    }

    /// Reads a header from the first [`HEADER_BYTES`] of `bytes` and checks the fields that
    /// need no context (magic, kind). The checksum is checked by [`decode_frame`].
    pub fn read(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
        let raw = bytes.get(..HEADER_BYTES).ok_or(FrameError::Truncated {
            needed: HEADER_BYTES,
            available: bytes.len(),
        })?;
        let header: FrameHeader = bytemuck::pod_read_unaligned(raw);
        if header.magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic {
                found: header.magic,
            });
        }
        header.frame_kind()?;
        Ok(header)
    }

    /// Checks the header against what the reader expects (position, epoch, length limit).
    pub fn check(&self, expect: &Expect) -> Result<FrameKind, FrameError> {
        let kind = self.frame_kind()?;
        if self.position != expect.position {
            return Err(FrameError::WrongPosition {
                expected: expect.position,
                found: self.position,
            });
        }
        if self.epoch != expect.epoch {
            return Err(FrameError::WrongEpoch {
                expected: expect.epoch,
                found: self.epoch,
            });
        }
        if kind == FrameKind::Entry && self.length as usize > expect.max_payload {
            return Err(FrameError::TooLong {
                length: self.length,
                max: expect.max_payload,
            });
        }
        Ok(kind)
    }

    /// Bytes this frame occupies in the ring (header, payload or skipped bytes, alignment).
    #[must_use]
    pub fn ring_len(&self) -> usize {
        frame_len(self.length as usize)
    }
}

/// Decodes and fully validates the frame at the start of `bytes`: magic, kind, position,
/// epoch, length limit and checksum. Returns the header and the payload (empty for padding).
///
/// This is the decoder of ring bytes written by a remote peer; it never panics and never
/// accepts a frame whose checksum does not match.
pub fn decode_frame<'a>(
    bytes: &'a [u8],
    expect: &Expect,
) -> Result<(FrameHeader, &'a [u8]), FrameError> {
    let header = FrameHeader::read(bytes)?;
    let kind = header.check(expect)?;
    let payload = match kind {
        FrameKind::Entry => {
            let end = HEADER_BYTES + header.length as usize;
            bytes.get(HEADER_BYTES..end).ok_or(FrameError::Truncated {
                needed: end,
                available: bytes.len(),
            })?
        }
        FrameKind::Padding => &[],
    };
    let computed = header.compute_checksum(payload);
    if computed != header.checksum {
        return Err(FrameError::Checksum {
            stored: header.checksum,
            computed,
        });
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECT: Expect = Expect {
        position: 4096,
        epoch: 7,
        max_payload: 1024,
    };

    #[test]
    fn entry_round_trips() {
        let payload = b"hello ring";
        let header = FrameHeader::entry(4096, 7, 3, 42, payload);
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(payload);
        let (decoded, body) = decode_frame(&bytes, &EXPECT).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(body, payload);
        assert_eq!(header.ring_len(), 64);
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let payload = [0xA5u8; 24];
        let header = FrameHeader::entry(4096, 7, 3, 42, &payload);
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_frame(&flipped, &EXPECT).is_err(),
                "bit {bit} flipped yet accepted"
            );
        }
    }

    #[test]
    fn stale_position_and_epoch_are_refused() {
        let header = FrameHeader::entry(0, 7, 1, 1, b"x");
        let mut bytes = header.as_bytes().to_vec();
        bytes.push(b'x');
        assert_eq!(
            decode_frame(&bytes, &EXPECT),
            Err(FrameError::WrongPosition {
                expected: 4096,
                found: 0
            })
        );
        let header = FrameHeader::entry(4096, 6, 1, 1, b"x");
        let mut bytes = header.as_bytes().to_vec();
        bytes.push(b'x');
        assert_eq!(
            decode_frame(&bytes, &EXPECT),
            Err(FrameError::WrongEpoch {
                expected: 7,
                found: 6
            })
        );
    }

    #[test]
    fn frame_len_rounds_to_alignment() {
        assert_eq!(frame_len(0), 64);
        assert_eq!(frame_len(16), 64);
        assert_eq!(frame_len(17), 128);
        assert_eq!(frame_len(64), 128);
    }
}
