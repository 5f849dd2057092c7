//! The conformance suite (`keel_transport::conformance`) against the shared-memory ring, the
//! shared-memory ring as a message link, and the TCP transport.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use keel_transport::conformance::{self, LinkFactory, RingFactory};
use keel_transport::handshake::HandshakeConfig;
use keel_transport::ring::{RingConfig, RingReader, RingWriter};
use keel_transport::shm::{ShmRing, ShmSink, ShmSource};
use keel_transport::tcp::{Inbox, Redialer, TcpAcceptor, TcpConfig, encode_header};
use std::io::Write;
use std::time::{Duration, Instant};

struct Shm;

impl RingFactory for Shm {
    type Sink = ShmSink;
    type Source = ShmSource;
    fn ring(&mut self, capacity: usize) -> (ShmSink, ShmSource) {
        ShmRing::anonymous(capacity).unwrap().split()
    }
}

/// Shared-memory rings in files under a temporary directory, as two processes would map
/// them (the same file mapped twice).
struct ShmFile(tempfile::TempDir, u32);

impl RingFactory for ShmFile {
    type Sink = ShmSink;
    type Source = ShmSource;
    fn ring(&mut self, capacity: usize) -> (ShmSink, ShmSource) {
        self.1 += 1;
        let path = self.0.path().join(format!("ring{}", self.1));
        let follower = HandshakeConfig::new(1, 2, vec![1, 2]);
        let leader = HandshakeConfig::new(1, 1, vec![1, 2]);
        let pending = ShmRing::create(&path, capacity, &follower).unwrap();
        let (opened, _) = ShmRing::open(&path, &leader, 2, 1).unwrap();
        let (created, _) = pending.accept(&follower, Duration::from_secs(1)).unwrap();
        (opened.into_sink(), created.into_source())
    }
}

#[test]
fn shm_anonymous_ring_passes_the_ring_suite() {
    conformance::rings(&mut Shm);
}

#[test]
fn shm_file_ring_passes_the_ring_suite() {
    conformance::rings(&mut ShmFile(tempfile::tempdir().unwrap(), 0));
}

struct ShmLink;

impl LinkFactory for ShmLink {
    type Tx = RingWriter<ShmSink>;
    type Rx = RingReader<ShmSource>;
    fn link(&mut self) -> (Self::Tx, Self::Rx) {
        let capacity = 1 << 16;
        let (sink, source) = ShmRing::anonymous(capacity).unwrap().split();
        let config = RingConfig {
            epoch: 1,
            max_payload: RingConfig::max_payload_for(capacity),
        };
        (
            RingWriter::new(sink, config),
            RingReader::new(source, config),
        )
    }
    fn sever(&mut self, _rx: &mut Self::Rx) -> bool {
        false
    }
    fn send_corrupt(&mut self, tx: &mut Self::Tx, message: &[u8]) {
        conformance::write_corrupt_frame(tx, 0, message);
    }
}

#[test]
fn shm_ring_passes_the_message_suite() {
    conformance::messages(&mut ShmLink);
}

struct Tcp(u64);

impl LinkFactory for Tcp {
    type Tx = Redialer;
    type Rx = Inbox;
    fn link(&mut self) -> (Redialer, Inbox) {
        let members = vec![1, 2];
        let acceptor = TcpAcceptor::bind(
            "127.0.0.1:0".parse().unwrap(),
            HandshakeConfig::new(7, 2, members.clone()),
            TcpConfig::default(),
        )
        .unwrap();
        let addr = acceptor.local_addr().unwrap();
        self.0 += 100;
        let tx = Redialer::new(
            addr,
            HandshakeConfig::new(7, 1, members),
            2,
            self.0,
            TcpConfig::default(),
        );
        (tx, Inbox::new(acceptor).unwrap())
    }
    fn sever(&mut self, rx: &mut Inbox) -> bool {
        rx.sever();
        true
    }
    fn send_corrupt(&mut self, tx: &mut Redialer, message: &[u8]) {
        let header = encode_header(message);
        let mut flipped = message.to_vec();
        flipped[message.len() / 2] ^= 0x10;
        let conn = tx
            .connection(Instant::now() + Duration::from_secs(5))
            .unwrap();
        let stream = conn.stream_mut();
        stream.write_all(&header).unwrap();
        stream.write_all(&flipped).unwrap();
    }
}

#[test]
fn tcp_passes_the_message_suite() {
    conformance::messages(&mut Tcp(0));
}
