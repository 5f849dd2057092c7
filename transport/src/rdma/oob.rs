//! The out-of-band messages exchanged over TCP after the handshake: each end's queue pair
//! endpoint and the region the other may write (the follower's ring, the leader's
//! acknowledgement entry). Fixed-size, little-endian, checked on decode.

use super::error::RdmaError;
use super::pool::RemoteRegion;
use super::verbs::QpEndpoint;
use std::io::{Read, Write};

/// Magic of an [`Offer`] (`"KRDO"`).
pub const OFFER_MAGIC: u32 = u32::from_le_bytes(*b"KRDO");
/// Size of an encoded [`Offer`].
pub const OFFER_BYTES: usize = 80;
/// The byte each end sends once its queue pair is ready to receive and send.
pub const READY: u8 = 0x52;

/// One end's half of the connection set-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The sender's queue pair.
    pub endpoint: QpEndpoint,
    /// The region of the sender's memory the receiver may write (the ring including its tail
    /// word, or one acknowledgement entry).
    pub region: RemoteRegion,
    /// Ring data capacity in bytes (0 in the leader's offer).
    pub capacity: u64,
    /// Ring position the writer resumes at (the follower's consumed head, equal to its
    /// published tail; 0 in the leader's offer).
    pub resume_at: u64,
}

impl Offer {
    /// The wire bytes.
    pub fn encode(&self) -> [u8; OFFER_BYTES] {
        let mut out = [0u8; OFFER_BYTES];
        out[0..4].copy_from_slice(&OFFER_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&self.endpoint.qpn.to_le_bytes());
        out[8..12].copy_from_slice(&self.endpoint.psn.to_le_bytes());
        out[12..14].copy_from_slice(&self.endpoint.lid.to_le_bytes());
        // 14..16 reserved
        out[16..32].copy_from_slice(&self.endpoint.gid);
        out[32..40].copy_from_slice(&self.region.addr.to_le_bytes());
        out[40..48].copy_from_slice(&self.region.len.to_le_bytes());
        out[48..52].copy_from_slice(&self.region.rkey.to_le_bytes());
        // 52..56 reserved
        out[56..64].copy_from_slice(&self.capacity.to_le_bytes());
        out[64..72].copy_from_slice(&self.resume_at.to_le_bytes());
        let crc = crc32c::crc32c(&out[..72]);
        out[72..76].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks an offer. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Offer, RdmaError> {
        let malformed = |what| RdmaError::MalformedOutOfBand { what };
        if bytes.len() < OFFER_BYTES {
            return Err(malformed("short offer"));
        }
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if u32_at(0) != OFFER_MAGIC {
            return Err(malformed("bad offer magic"));
        }
        if u32_at(72) != crc32c::crc32c(&bytes[..72]) {
            return Err(malformed("offer checksum mismatch"));
        }
        if bytes[14..16] != [0, 0] || bytes[52..56] != [0; 4] || bytes[76..80] != [0; 4] {
            return Err(malformed("reserved offer bytes not zero"));
        }
        let psn = u32_at(8);
        if psn > 0x00ff_ffff {
            return Err(malformed("packet sequence number wider than 24 bits"));
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&bytes[16..32]);
        let region = RemoteRegion {
            addr: u64_at(32),
            len: u64_at(40),
            rkey: u32_at(48),
        };
        if region.addr.checked_add(region.len).is_none() {
            return Err(malformed("remote region wraps the address space"));
        }
        Ok(Offer {
            endpoint: QpEndpoint {
                qpn: u32_at(4),
                psn,
                lid: u16::from_le_bytes([bytes[12], bytes[13]]),
                gid,
            },
            region,
            capacity: u64_at(56),
            resume_at: u64_at(64),
        })
    }
}

/// Sends our offer and reads the peer's.
pub fn exchange<S: Read + Write>(stream: &mut S, ours: &Offer) -> Result<Offer, RdmaError> {
    let io = |step| move |source| RdmaError::OutOfBand { step, source };
    stream
        .write_all(&ours.encode())
        .map_err(io("sending offer"))?;
    let mut buf = [0u8; OFFER_BYTES];
    stream.read_exact(&mut buf).map_err(io("reading offer"))?;
    Offer::decode(&buf)
}

/// Tells the peer our queue pair is connected and waits until the peer says the same, so
/// neither end writes before the other can receive.
pub fn sync_ready<S: Read + Write>(stream: &mut S) -> Result<(), RdmaError> {
    let io = |step| move |source| RdmaError::OutOfBand { step, source };
    stream.write_all(&[READY]).map_err(io("sending ready"))?;
    let mut b = [0u8; 1];
    stream.read_exact(&mut b).map_err(io("reading ready"))?;
    if b[0] != READY {
        return Err(RdmaError::MalformedOutOfBand {
            what: "bad ready byte",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Offer {
        Offer {
            endpoint: QpEndpoint {
                qpn: 17,
                psn: 0x12_3456,
                lid: 0,
                gid: [7; 16],
            },
            region: RemoteRegion {
                addr: 0x7f00_0000_1000,
                len: 4096 + 65536,
                rkey: 0xabcd,
            },
            capacity: 65536,
            resume_at: 4096,
        }
    }

    #[test]
    fn offer_round_trips() {
        let o = sample();
        assert_eq!(Offer::decode(&o.encode()).unwrap(), o);
    }

    #[test]
    fn offer_with_flipped_bit_is_refused() {
        let mut bytes = sample().encode();
        bytes[33] ^= 1;
        assert!(matches!(
            Offer::decode(&bytes),
            Err(RdmaError::MalformedOutOfBand { .. })
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Offer::decode(&bytes);
        }
    }
}
