//! TCP transport: one connection per direction between each pair of replicas, opened with
//! `keel-transport`'s member/cluster handshake, carrying length-prefixed encoded messages.
//!
//! The loop never blocks on the network: it writes non-blocking from a per-peer buffer at the
//! end of each pass (everything queued for a peer in one pass leaves in one `write`). A
//! connector thread per peer (re)dials and hands the connected stream to the loop; a reader
//! thread per inbound connection reads into one buffer it keeps, decodes the frames into spares
//! it reuses (`net::link`, shared with the RDMA transport) and wakes the loop. A peer that is
//! down or unreachable loses its messages, which the protocol tolerates; a peer whose unsent
//! backlog exceeds [`BACKLOG_MAX_BYTES`] is disconnected and redialed.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use keel_core::{Message, ReplicaId};
use keel_transport::{HandshakeConfig, Role as HandshakeRole, handshake};

use super::Net;
use super::link::{Handoff, Inbox, Receiver, drain, redial};
use crate::config::Config;
use crate::runtime::{Health, Signal};
use keel_core::codec::encode_message;

/// Largest frame accepted from a peer (a checkpoint travels in one frame).
pub const FRAME_MAX_BYTES: usize = 256 << 20;
/// Unsent bytes buffered for one peer before its connection is dropped and redialed.
pub const BACKLOG_MAX_BYTES: usize = 64 << 20;

const POLL: Duration = Duration::from_millis(50);

/// Why the TCP transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// This replica's address does not parse.
    #[error("address `{addr}` of replica {id} is not host:port")]
    BadAddress {
        /// The replica.
        id: u64,
        /// The address.
        addr: String,
    },
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source} (is another replica or keel process using it?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A thread could not be spawned.
    #[error("cannot spawn a transport thread: {0}")]
    Spawn(#[source] std::io::Error),
}

struct Peer {
    slot: Arc<Handoff<TcpStream>>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    written: usize,
}

/// The loop's end of the TCP transport.
pub struct TcpNet {
    peers: BTreeMap<u64, Peer>,
    inbox: Inbox,
    scratch: Vec<u8>,
}

fn handshake_config(config: &Config) -> HandshakeConfig {
    HandshakeConfig::new(
        config.cluster_id,
        config.id,
        config.members.iter().map(|m| m.id).collect(),
    )
}

impl TcpNet {
    /// Binds this replica's listening address and starts dialing every other member.
    pub fn start(
        config: &Config,
        signal: Arc<Signal>,
        health: Arc<Health>,
    ) -> Result<TcpNet, TcpError> {
        let me = config
            .me()
            .unwrap_or_else(|| panic!("validated config lists replica {}", config.id));
        let listen = me.listen_addr.as_deref().unwrap_or(&me.addr);
        let listen: SocketAddr = listen.parse().map_err(|_| TcpError::BadAddress {
            id: me.id,
            addr: listen.to_string(),
        })?;
        let listener = TcpListener::bind(listen).map_err(|source| TcpError::Bind {
            addr: listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| TcpError::Bind {
                addr: listen,
                source,
            })?;
        let hs = handshake_config(config);
        let inbox = Inbox::default();
        {
            let hs = hs.clone();
            let inbox = Arc::clone(&inbox);
            let signal = Arc::clone(&signal);
            let health = Arc::clone(&health);
            std::thread::Builder::new()
                .name(format!("keel-accept-{}", config.id))
                .spawn(move || accept_loop(listener, hs, inbox, signal, health))
                .map_err(TcpError::Spawn)?;
        }
        let mut peers = BTreeMap::new();
        for m in config.members.iter().filter(|m| m.id != config.id) {
            let addr: SocketAddr = m.addr.parse().map_err(|_| TcpError::BadAddress {
                id: m.id,
                addr: m.addr.clone(),
            })?;
            let slot = Arc::new(Handoff::default());
            let s = Arc::clone(&slot);
            let hs = hs.clone();
            let health = Arc::clone(&health);
            let signal = Arc::clone(&signal);
            let peer_id = m.id;
            std::thread::Builder::new()
                .name(format!("keel-dial-{}-{}", config.id, m.id))
                .spawn(move || {
                    let mut epoch = 0u64;
                    redial(&s, &signal, &health, || {
                        epoch += 1;
                        dial(addr, &hs, peer_id, epoch)
                    });
                })
                .map_err(TcpError::Spawn)?;
            peers.insert(
                m.id,
                Peer {
                    slot,
                    stream: None,
                    buf: Vec::with_capacity(64 * 1024),
                    written: 0,
                },
            );
        }
        Ok(TcpNet {
            peers,
            inbox,
            scratch: Vec::with_capacity(64 * 1024),
        })
    }
}

impl Peer {
    fn disconnect(&mut self) {
        self.stream = None;
        self.buf.clear();
        self.written = 0;
        self.slot.disconnected();
    }
}

impl Net for TcpNet {
    fn send(&mut self, to: ReplicaId, msg: Message) {
        let Some(peer) = self.peers.get_mut(&to.0) else {
            return;
        };
        if peer.stream.is_none() {
            peer.stream = peer.slot.take();
            if peer.stream.is_none() {
                return;
            }
        }
        self.scratch.clear();
        encode_message(&msg, &mut self.scratch);
        let len = u32::try_from(self.scratch.len())
            .unwrap_or_else(|_| panic!("message of {} bytes exceeds 4 GiB", self.scratch.len()));
        peer.buf.extend_from_slice(&len.to_le_bytes());
        peer.buf.extend_from_slice(&self.scratch);
        if peer.buf.len() - peer.written > BACKLOG_MAX_BYTES {
            peer.disconnect();
        }
    }

    fn flush(&mut self) {
        for peer in self.peers.values_mut() {
            let Some(stream) = peer.stream.as_mut() else {
                continue;
            };
            while peer.written < peer.buf.len() {
                match stream.write(&peer.buf[peer.written..]) {
                    Ok(0) => {
                        peer.disconnect();
                        break;
                    }
                    Ok(n) => peer.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        peer.disconnect();
                        break;
                    }
                }
            }
            if peer.written == peer.buf.len() {
                peer.buf.clear();
                peer.written = 0;
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<(ReplicaId, Message)>) {
        drain(&self.inbox, out);
    }

    fn close(&mut self) {
        for peer in self.peers.values_mut() {
            peer.disconnect();
        }
    }
}

fn dial(
    addr: SocketAddr,
    hs: &HandshakeConfig,
    peer: u64,
    epoch: u64,
) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    handshake(
        &mut stream,
        hs,
        HandshakeRole::Dialer {
            expected: peer,
            epoch,
        },
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

fn accept_loop(
    listener: TcpListener,
    hs: HandshakeConfig,
    inbox: Inbox,
    signal: Arc<Signal>,
    health: Arc<Health>,
) {
    while !health.stopping() {
        match listener.accept() {
            Ok((stream, _)) => {
                let hs = hs.clone();
                let inbox = Arc::clone(&inbox);
                let signal = Arc::clone(&signal);
                let health = Arc::clone(&health);
                let spawned = std::thread::Builder::new()
                    .name(format!("keel-read-{}", hs.member_id))
                    .spawn(move || {
                        let _ = read_loop(stream, &hs, &inbox, &signal, &health);
                    });
                if spawned.is_err() {
                    std::thread::sleep(POLL);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn read_loop(
    mut stream: TcpStream,
    hs: &HandshakeConfig,
    inbox: &Inbox,
    signal: &Signal,
    health: &Health,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let peer = handshake(&mut stream, hs, HandshakeRole::Acceptor)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let from = ReplicaId(peer.member_id);
    stream.set_read_timeout(Some(POLL))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut filled = 0usize;
    let mut receiver = Receiver::new(inbox, signal);
    while !health.stopping() {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(()),
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
        // Decode every whole frame in the buffer.
        let mut at = 0;
        while filled - at >= 4 {
            let mut len = [0u8; 4];
            len.copy_from_slice(&buf[at..at + 4]);
            let len = u32::from_le_bytes(len) as usize;
            if len > FRAME_MAX_BYTES {
                return Err(std::io::Error::other(format!(
                    "frame of {len} bytes from replica {} exceeds the limit",
                    from.0
                )));
            }
            if filled - at - 4 < len {
                if 4 + len > buf.len() {
                    buf.resize((4 + len).next_power_of_two(), 0);
                }
                break;
            }
            receiver
                .decode(from, &buf[at + 4..at + 4 + len])
                .map_err(|e| {
                    std::io::Error::other(format!("bad frame from replica {}: {e}", from.0))
                })?;
            at += 4 + len;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        receiver.deliver();
    }
    Ok(())
}
