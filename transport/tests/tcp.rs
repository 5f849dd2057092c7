//! TCP transport scenarios beyond the conformance suite: refusal of strangers, socket options.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use keel_transport::handshake::{HandshakeConfig, HandshakeError, PROTOCOL_VERSION, Refusal};
use keel_transport::message::{MessageReceiver, MessageSender};
use keel_transport::tcp::{Inbox, TcpAcceptor, TcpConfig, TcpError, connect};
use std::time::{Duration, Instant};

fn inbox() -> Inbox {
    let acceptor = TcpAcceptor::bind(
        "127.0.0.1:0".parse().unwrap(),
        HandshakeConfig::new(7, 2, vec![1, 2, 3]),
        TcpConfig::default(),
    )
    .unwrap();
    Inbox::new(acceptor).unwrap()
}

fn wait_refused(inbox: &Inbox, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while inbox.refused() < n {
        assert!(Instant::now() < deadline, "inbox did not count the refusal");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn strangers_are_refused_and_never_reach_the_message_stream() {
    let mut inbox = inbox();
    let addr = inbox.local_addr();
    let config = TcpConfig::default();
    // Another cluster.
    let err = connect(addr, &HandshakeConfig::new(8, 1, vec![1, 2]), 2, 1, &config).unwrap_err();
    assert!(
        matches!(
            err,
            TcpError::Handshake {
                source: HandshakeError::WrongCluster { ours: 8, theirs: 7 },
                ..
            }
        ),
        "{err:?}"
    );
    // Not a configured member: told why by the acceptor.
    let err = connect(addr, &HandshakeConfig::new(7, 9, vec![2, 9]), 2, 1, &config).unwrap_err();
    assert!(
        matches!(
            err,
            TcpError::Handshake {
                source: HandshakeError::RefusedByPeer {
                    reason: Refusal::NotAMember
                },
                ..
            }
        ),
        "{err:?}"
    );
    // Incompatible protocol version.
    let mut future = HandshakeConfig::new(7, 1, vec![1, 2]);
    future.version = PROTOCOL_VERSION + (1 << 16);
    let err = connect(addr, &future, 2, 1, &config).unwrap_err();
    assert!(
        matches!(
            err,
            TcpError::Handshake {
                source: HandshakeError::IncompatibleVersion { .. },
                ..
            }
        ),
        "{err:?}"
    );
    wait_refused(&inbox, 3);
    let got = inbox
        .recv_with(Duration::from_millis(100), <[u8]>::to_vec)
        .unwrap();
    assert_eq!(got, None, "a refused peer reached the message stream");
    // A member gets through, with the dialer's epoch.
    let mut member = connect(
        addr,
        &HandshakeConfig::new(7, 1, vec![1, 2]),
        2,
        42,
        &config,
    )
    .unwrap();
    assert_eq!((member.peer().member_id, member.peer().epoch), (2, 42));
    assert!(
        member.stream_mut().nodelay().unwrap(),
        "TCP_NODELAY not set"
    );
    member.send(b"hello", Duration::from_secs(1)).unwrap();
    let got = inbox
        .recv_with(Duration::from_secs(5), <[u8]>::to_vec)
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));
    assert_eq!(inbox.peer().map(|p| (p.member_id, p.epoch)), Some((1, 42)));
}

#[test]
fn garbage_instead_of_a_handshake_is_refused() {
    use std::io::{Read, Write};
    let mut inbox = inbox();
    let mut raw = std::net::TcpStream::connect(inbox.local_addr()).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: keel\r\n\r\n...........................")
        .unwrap();
    wait_refused(&inbox, 1);
    let mut rest = Vec::new();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = raw.read_to_end(&mut rest);
    assert!(
        rest.len() <= 48 + 16,
        "acceptor sent more than its hello and verdict"
    );
    let got = inbox
        .recv_with(Duration::from_millis(50), <[u8]>::to_vec)
        .unwrap();
    assert_eq!(got, None);
}

#[test]
fn an_inbox_receives_from_several_members_each_in_order() {
    use keel_transport::tcp::Redialer;
    let mut inbox = inbox();
    let addr = inbox.local_addr();
    let senders: Vec<_> = [1u64, 3]
        .into_iter()
        .map(|me| {
            std::thread::spawn(move || {
                let mut tx = Redialer::new(
                    addr,
                    HandshakeConfig::new(7, me, vec![1, 2, 3]),
                    2,
                    me * 1000,
                    TcpConfig::default(),
                );
                for seq in 0u32..500 {
                    tx.send(&seq.to_le_bytes(), Duration::from_secs(10))
                        .unwrap();
                }
            })
        })
        .collect();
    let mut next = std::collections::BTreeMap::from([(1u64, 0u32), (3, 0)]);
    while next.values().any(|n| *n < 500) {
        let (peer, message) = inbox.recv(Duration::from_secs(10)).unwrap().unwrap();
        let seq = u32::from_le_bytes(message.try_into().unwrap());
        let expected = next.get_mut(&peer.member_id).unwrap();
        assert_eq!(seq, *expected, "member {} out of order", peer.member_id);
        *expected += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
}
