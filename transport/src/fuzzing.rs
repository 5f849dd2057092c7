//! Entry points of the fuzz targets (`transport/fuzz/`, run with `cargo fuzz`): each feeds
//! arbitrary bytes to one decoder of bytes from the network and asserts its contract: no
//! panic, and nothing accepted that is not self-consistent. The property tests
//! (`tests/decoders.rs`) and the unit tests below call the same functions, so the contracts
//! the fuzzers check are also checked by every test run.
#![forbid(unsafe_code)]

use crate::frame::{Expect, HEADER_BYTES, decode_frame};
use crate::handshake::{
    HELLO_BYTES, HandshakeConfig, Hello, Role, VERDICT_BYTES, Verdict, handshake,
};
use crate::ring::{RingConfig, RingReader, RingSink};
use crate::shm::ShmRing;
use crate::tcp::{MESSAGE_HEADER_BYTES, decode_message, encode_header};
use std::io::{Read, Write};

fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b)
}

/// Ring frames: the frame decoder, then the ring reader over ring memory holding `data`
/// with a tail taken from its first 8 bytes. Nothing garbage is delivered.
///
/// # Panics
/// If a decoder breaks its contract (that is the finding).
pub fn ring_frame(data: &[u8]) {
    let expect = Expect {
        position: le_u64(data.get(8..16).unwrap_or(&[])) & !7,
        epoch: 1,
        max_payload: 1024,
    };
    if let Ok((header, payload)) = decode_frame(data, &expect) {
        assert_eq!(header.checksum, header.compute_checksum(payload));
        assert_eq!(header.length as usize, payload.len());
        assert_eq!(&data[HEADER_BYTES..HEADER_BYTES + payload.len()], payload);
    }
    let Ok(ring) = ShmRing::anonymous(4096) else {
        return;
    };
    let (mut sink, source) = ring.split();
    let body = data.get(8..).unwrap_or(&[]);
    let body = &body[..body.len().min(4096)];
    if sink.write(0, &[body]).is_err() || sink.publish_tail(le_u64(data) % 8192).is_err() {
        return;
    }
    let mut reader = RingReader::new(
        source,
        RingConfig {
            epoch: 1,
            max_payload: 512,
        },
    );
    let mut delivered = 0usize;
    let _ = reader.poll(usize::MAX, |frame| {
        // Only a frame that decodes and checks at its position may be delivered.
        let start = (frame.position % 4096) as usize;
        let bytes = &body[start..];
        let expect = Expect {
            position: frame.position,
            epoch: 1,
            max_payload: 512,
        };
        assert!(decode_frame(bytes, &expect).is_ok());
        delivered += 1;
    });
    assert!(delivered <= body.len() / HEADER_BYTES);
}

/// A stream that reads from fixed bytes and swallows writes.
struct Scripted<'a>(&'a [u8]);

impl Read for Scripted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Scripted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Handshake: the hello and verdict decoders, and the whole handshake (both roles) reading
/// `data` as the peer's bytes.
///
/// # Panics
/// If a decoder breaks its contract.
pub fn handshake_bytes(data: &[u8]) {
    if let Ok(hello) = Hello::decode(data) {
        assert_eq!(&hello.encode()[..], &data[..HELLO_BYTES]);
    }
    if let Ok((verdict, _)) = Verdict::decode(data) {
        assert_eq!(&verdict.encode()[..], &data[..VERDICT_BYTES]);
    }
    let config = HandshakeConfig::new(7, 1, vec![1, 2]);
    for role in [
        Role::Acceptor,
        Role::Dialer {
            expected: 2,
            epoch: 1,
        },
    ] {
        if let Ok(peer) = handshake(&mut Scripted(data), &config, role) {
            // Only a well-formed hello from a configured member of our cluster, followed
            // by an accepting verdict, passes.
            let hello = Hello::decode(data).unwrap_or_else(|e| panic!("accepted {e}"));
            assert_eq!(hello.cluster_id, 7);
            assert_eq!(peer.member_id, 2);
            assert!(data.len() >= HELLO_BYTES + VERDICT_BYTES);
        }
    }
}

/// TCP framing: decodes `data` as a stream of messages, as the receiver does.
///
/// # Panics
/// If the decoder breaks its contract.
pub fn tcp_messages(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((payload, used))) = decode_message(rest, 1024) {
        assert_eq!(used, MESSAGE_HEADER_BYTES + payload.len());
        assert!(payload.len() <= 1024);
        assert_eq!(&encode_header(payload)[..], &rest[..MESSAGE_HEADER_BYTES]);
        rest = &rest[used..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameHeader;

    #[test]
    fn targets_accept_valid_inputs_and_survive_garbage() {
        let mut frame = vec![0u8; 8];
        frame[..8].copy_from_slice(&56u64.to_le_bytes());
        frame.extend_from_slice(FrameHeader::entry(0, 1, 1, 1, b"12345678").as_bytes());
        frame.extend_from_slice(b"12345678");
        ring_frame(&frame);
        let mut hs = Hello::new(7, 2, 1).encode().to_vec();
        hs.extend_from_slice(&Verdict::new(None).encode());
        handshake_bytes(&hs);
        let mut msg = encode_header(b"abc").to_vec();
        msg.extend_from_slice(b"abc");
        tcp_messages(&msg);
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            ring_frame(&bytes);
            handshake_bytes(&bytes);
            tcp_messages(&bytes);
        }
    }
}
