//! Property tests: every decoder of bytes from the network (ring frames, the ring reader over
//! arbitrary ring memory, handshake hello and verdict, the handshake over an arbitrary stream,
//! TCP message framing) never panics and never accepts garbage as valid.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use keel_transport::frame::{Expect, FrameHeader, HEADER_BYTES, decode_frame};
use keel_transport::handshake::{
    HELLO_BYTES, HandshakeConfig, Hello, Role, VERDICT_BYTES, Verdict, handshake,
};
use keel_transport::ring::{RingConfig, RingReader, RingSink};
use keel_transport::shm::ShmRing;
use keel_transport::tcp::{MESSAGE_HEADER_BYTES, decode_message, encode_header};
use proptest::prelude::*;
use std::io::{Read, Write};

fn expect() -> Expect {
    Expect {
        position: 0,
        epoch: 1,
        max_payload: 4096,
    }
}

fn valid_frame(ballot: u64, slot: u64, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader::entry(0, 1, ballot, slot, payload);
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// A stream that reads from fixed bytes and swallows writes.
struct Scripted(std::io::Cursor<Vec<u8>>);
impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}
impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frame_decoder_accepts_only_self_consistent_frames(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok((header, payload)) = decode_frame(&bytes, &expect()) {
            prop_assert_eq!(header.checksum, header.compute_checksum(payload));
            prop_assert_eq!(&bytes[HEADER_BYTES..HEADER_BYTES + payload.len()], payload);
        }
    }

    #[test]
    fn frame_decoder_refuses_any_mutation(
        payload in proptest::collection::vec(any::<u8>(), 1..200),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut bytes = valid_frame(3, 4, &payload);
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        prop_assert!(decode_frame(&bytes, &expect()).is_err(), "mutated byte {} accepted", i);
    }

    #[test]
    fn ring_reader_over_garbage_memory_delivers_nothing(
        garbage in proptest::collection::vec(any::<u8>(), 4096),
        tail in 0u64..6000,
    ) {
        let (mut sink, source) = ShmRing::anonymous(4096).unwrap().split();
        sink.write(0, &[&garbage]).unwrap();
        sink.publish_tail(tail).unwrap();
        let config = RingConfig { epoch: 1, max_payload: 512 };
        let mut reader = RingReader::new(source, config);
        let mut delivered = 0;
        let _ = reader.poll(usize::MAX, |_| delivered += 1);
        prop_assert_eq!(delivered, 0);
    }

    #[test]
    fn hello_decoder_accepts_only_what_encodes_back(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        if let Ok(hello) = Hello::decode(&bytes) {
            prop_assert_eq!(&hello.encode()[..], &bytes[..HELLO_BYTES]);
        }
    }

    #[test]
    fn hello_decoder_refuses_any_mutation(cluster in any::<u64>(), member in any::<u64>(), at in 0..HELLO_BYTES, xor in 1u8..) {
        let mut bytes = Hello::new(cluster, member, 5).encode();
        bytes[at] ^= xor;
        prop_assert!(Hello::decode(&bytes).is_err());
    }

    #[test]
    fn verdict_decoder_accepts_only_what_encodes_back(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok((verdict, _)) = Verdict::decode(&bytes) {
            prop_assert_eq!(&verdict.encode()[..], &bytes[..VERDICT_BYTES]);
        }
    }

    #[test]
    fn handshake_over_garbage_never_accepts(bytes in proptest::collection::vec(any::<u8>(), 0..200), dial in any::<bool>()) {
        let config = HandshakeConfig::new(7, 1, vec![1, 2]);
        let role = if dial { Role::Dialer { expected: 2, epoch: 1 } } else { Role::Acceptor };
        let mut stream = Scripted(std::io::Cursor::new(bytes));
        prop_assert!(handshake(&mut stream, &config, role).is_err());
    }

    #[test]
    fn message_decoder_accepts_only_self_consistent_messages(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Some((payload, used))) = decode_message(&bytes, 256) {
            prop_assert_eq!(used, MESSAGE_HEADER_BYTES + payload.len());
            prop_assert_eq!(&encode_header(payload)[..], &bytes[..MESSAGE_HEADER_BYTES]);
        }
    }

    #[test]
    fn message_decoder_never_accepts_a_mutated_message(
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut bytes = encode_header(&payload).to_vec();
        bytes.extend_from_slice(&payload);
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        // Refused, or waiting for more bytes (a longer length), never delivered.
        prop_assert!(!matches!(decode_message(&bytes, 4096), Ok(Some(_))));
    }
}
