//! The TCP transport: framed messages over `TCP_NODELAY` streams, with the handshake first,
//! reconnect with exponential backoff, and buffers bounded by the largest message.
//!
//! # Wire format
//! After the handshake ([`crate::handshake`](mod@crate::handshake)), each message is an 8-byte header, the length
//! (u32, little-endian) then the CRC-32C of the payload (u32, little-endian), followed by the
//! payload. [`decode_message`] is the decoder of these bytes; it never panics and refuses a
//! length above the configured maximum before buffering anything.
//!
//! # Pieces
//! - [`TcpAcceptor`] binds, accepts, and hands out a [`TcpConnection`] only for a peer that
//!   passed the handshake.
//! - [`connect`] dials once; [`Redialer`] keeps a connection to one member, redialing with
//!   exponential backoff when it breaks, and re-sending the message whose send failed (no
//!   byte of it reached the peer's application, so this never duplicates).
//! - [`Inbox`] receives from every member that connects (a reader thread per connection,
//!   a bounded queue). A pair of members thus uses one connection per direction: each
//!   sends through its [`Redialer`] and receives in its [`Inbox`].
//!
//! # Hot path
//! A send is one `write` syscall (header and payload copied into a reused buffer; payloads
//! over 64 KiB go as two writes without a copy); a receive reads into a fixed buffer and
//! hands out a borrowed slice. Nothing is allocated per message.
#![forbid(unsafe_code)]

use crate::handshake::{HandshakeConfig, HandshakeError, Peer, Role, handshake};
use crate::message::{MessageReceiver, MessageSender};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Bytes of the per-message header.
pub const MESSAGE_HEADER_BYTES: usize = 8;
/// Payloads at most this long are sent with a single write (copied into the send buffer).
const COALESCE_BYTES: usize = 64 * 1024;

/// Limits and timers of the TCP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Largest message payload (bounds the receive buffer).
    pub max_message_bytes: usize,
    /// Limit for one connection attempt.
    pub connect_timeout: Duration,
    /// Limit for the handshake exchange.
    pub handshake_timeout: Duration,
    /// First redial delay; doubled after each failure.
    pub backoff_initial: Duration,
    /// Largest redial delay.
    pub backoff_max: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_message_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(500),
        }
    }
}

/// Why bytes are not a valid message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WireError {
    /// The announced length exceeds the limit.
    #[error("message of {length} bytes exceeds the limit of {max}")]
    TooLong {
        /// Announced length.
        length: u32,
        /// The limit.
        max: usize,
    },
    /// The payload does not match its checksum.
    #[error("message checksum mismatch: header {stored:#010x}, payload {computed:#010x}")]
    Checksum {
        /// Stored checksum.
        stored: u32,
        /// Computed checksum.
        computed: u32,
    },
}

/// Decodes the message at the start of `bytes`: `Ok(None)` if more bytes are needed,
/// otherwise the payload and the bytes consumed. Never panics.
pub fn decode_message(bytes: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some(header) = bytes.get(..MESSAGE_HEADER_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length as usize > max {
        return Err(WireError::TooLong { length, max });
    }
    let end = MESSAGE_HEADER_BYTES + length as usize;
    let Some(payload) = bytes.get(MESSAGE_HEADER_BYTES..end) else {
        return Ok(None);
    };
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Err(WireError::Checksum { stored, computed });
    }
    Ok(Some((payload, end)))
}

/// Writes the header of `payload` (length, checksum).
///
/// # Panics
/// If the payload is longer than `u32::MAX` (the configured maximum is far below).
#[must_use]
pub fn encode_header(payload: &[u8]) -> [u8; MESSAGE_HEADER_BYTES] {
    let length = u32::try_from(payload.len())
        .unwrap_or_else(|_| panic!("message of {} bytes exceeds u32", payload.len()));
    let mut header = [0u8; MESSAGE_HEADER_BYTES];
    header[..4].copy_from_slice(&length.to_le_bytes());
    header[4..].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    header
}

/// Operating errors of the TCP transport, one variant per failing operation.
#[derive(Debug, Error)]
pub enum TcpError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Accepting a connection failed.
    #[error("accept failed")]
    Accept(#[source] std::io::Error),
    /// Connecting failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Setting a socket option failed.
    #[error("cannot configure socket")]
    Configure(#[source] std::io::Error),
    /// The handshake failed or refused the peer.
    #[error("handshake with {addr} failed")]
    Handshake {
        /// The peer's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: HandshakeError,
    },
    /// The message is longer than the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Sending failed (the connection is closed).
    #[error("send failed")]
    Send(#[source] std::io::Error),
    /// Receiving failed (the connection is closed).
    #[error("receive failed")]
    Recv(#[source] std::io::Error),
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
    /// The peer sent bytes that are not a message (the connection is closed).
    #[error("peer sent a malformed message")]
    Malformed(#[source] WireError),
    /// Redialing did not succeed before the deadline.
    #[error("could not reach {addr} after {attempts} attempts")]
    Unreachable {
        /// Address.
        addr: SocketAddr,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<TcpError>,
    },
}

fn configure(stream: &TcpStream) -> Result<(), TcpError> {
    stream.set_nodelay(true).map_err(TcpError::Configure)
}

/// A handshaken TCP connection: send and receive framed messages.
#[derive(Debug)]
pub struct TcpConnection {
    stream: TcpStream,
    peer: Peer,
    max: usize,
    send_buf: Vec<u8>,
    recv_buf: Box<[u8]>,
    /// Decoded bytes before this are consumed.
    start: usize,
    /// Bytes read up to here.
    end: usize,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    broken: bool,
}

impl TcpConnection {
    fn new(stream: TcpStream, peer: Peer, config: &TcpConfig) -> Result<Self, TcpError> {
        stream
            .set_read_timeout(None)
            .and_then(|()| stream.set_write_timeout(None))
            .map_err(TcpError::Configure)?;
        let cap = MESSAGE_HEADER_BYTES + config.max_message_bytes;
        Ok(TcpConnection {
            stream,
            peer,
            max: config.max_message_bytes,
            send_buf: Vec::with_capacity(MESSAGE_HEADER_BYTES + COALESCE_BYTES),
            recv_buf: vec![0u8; cap.max(64 * 1024)].into_boxed_slice(),
            start: 0,
            end: 0,
            read_timeout: None,
            write_timeout: None,
            broken: false,
        })
    }

    /// The peer that passed the handshake.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The socket, for tuning and fault injection. Bytes written through it bypass the
    /// framing: a test uses it to send a corrupt message.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Whether a send or receive failed (the connection must be replaced).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Closes both directions now (the peer sees end of stream).
    pub fn shutdown(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.broken = true;
    }

    fn set_write_timeout(&mut self, timeout: Duration) -> Result<(), TcpError> {
        let want = Some(timeout.max(Duration::from_micros(1)));
        if self.write_timeout != want {
            self.stream
                .set_write_timeout(want)
                .map_err(TcpError::Configure)?;
            self.write_timeout = want;
        }
        Ok(())
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> Result<(), TcpError> {
        let want = Some(timeout.max(Duration::from_micros(1)));
        if self.read_timeout != want {
            self.stream
                .set_read_timeout(want)
                .map_err(TcpError::Configure)?;
            self.read_timeout = want;
        }
        Ok(())
    }

    /// Sends one message. A failure breaks the connection. If the first write of a message
    /// fails, no byte of it was sent.
    pub fn send_message(&mut self, message: &[u8], timeout: Duration) -> Result<(), TcpError> {
        if message.len() > self.max {
            return Err(TcpError::TooLarge {
                len: message.len(),
                max: self.max,
            });
        }
        if self.broken {
            return Err(TcpError::Closed);
        }
        self.set_write_timeout(timeout)?;
        let header = encode_header(message);
        let result = if message.len() <= COALESCE_BYTES {
            self.send_buf.clear();
            self.send_buf.extend_from_slice(&header);
            self.send_buf.extend_from_slice(message);
            self.stream.write_all(&self.send_buf)
        } else {
            self.stream
                .write_all(&header)
                .and_then(|()| self.stream.write_all(message))
        };
        result.map_err(|e| {
            self.broken = true;
            TcpError::Send(e)
        })
    }

    /// Receives the next message, waiting at most `timeout`; `Ok(None)` on timeout.
    /// End of stream, an I/O error or a malformed message break the connection.
    pub fn recv_message<T>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, TcpError> {
        Ok(self
            .next_message(timeout)?
            .map(|(from, to)| f(&self.recv_buf[from..to])))
    }

    /// Decodes the next message; returns its payload's range in the receive buffer, valid
    /// until the next call.
    fn next_message(&mut self, timeout: Duration) -> Result<Option<(usize, usize)>, TcpError> {
        if self.broken {
            return Err(TcpError::Closed);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match decode_message(&self.recv_buf[self.start..self.end], self.max) {
                Ok(Some((payload, used))) => {
                    let from = self.start + MESSAGE_HEADER_BYTES;
                    let to = from + payload.len();
                    self.start += used;
                    return Ok(Some((from, to)));
                }
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(TcpError::Malformed(e));
                }
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.end == self.recv_buf.len() {
                // Make room: move the partial message to the front (it fits: the buffer
                // holds the largest message).
                self.recv_buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            // The socket timeout is the caller's whole timeout, set only when it changes (no
            // syscall per message); a read that returns part of a message may thus wait up to
            // one more timeout for the rest.
            self.set_read_timeout(timeout)?;
            match self.stream.read(&mut self.recv_buf[self.end..]) {
                Ok(0) => {
                    self.broken = true;
                    return Err(TcpError::Closed);
                }
                Ok(n) => self.end += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.broken = true;
                    return Err(TcpError::Recv(e));
                }
            }
        }
    }
}

impl MessageSender for TcpConnection {
    type Error = TcpError;
    fn max_message(&self) -> usize {
        self.max
    }
    fn send(&mut self, message: &[u8], timeout: Duration) -> Result<(), TcpError> {
        self.send_message(message, timeout)
    }
}

impl MessageReceiver for TcpConnection {
    type Error = TcpError;
    fn recv_with<T>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, TcpError> {
        self.recv_message(timeout, f)
    }
}

/// Dials `addr` once, expecting member `expected`, proposing connection `epoch`, and runs the
/// handshake. The connection is returned only if both sides accepted.
pub fn connect(
    addr: SocketAddr,
    handshake_config: &HandshakeConfig,
    expected: u64,
    epoch: u64,
    config: &TcpConfig,
) -> Result<TcpConnection, TcpError> {
    let mut stream = TcpStream::connect_timeout(&addr, config.connect_timeout)
        .map_err(|source| TcpError::Connect { addr, source })?;
    configure(&stream)?;
    stream
        .set_read_timeout(Some(config.handshake_timeout))
        .and_then(|()| stream.set_write_timeout(Some(config.handshake_timeout)))
        .map_err(TcpError::Configure)?;
    let peer = handshake(
        &mut stream,
        handshake_config,
        Role::Dialer { expected, epoch },
    )
    .map_err(|source| TcpError::Handshake { addr, source })?;
    TcpConnection::new(stream, peer, config)
}

/// A listening socket that hands out handshaken connections.
#[derive(Debug)]
pub struct TcpAcceptor {
    listener: TcpListener,
    handshake: HandshakeConfig,
    config: TcpConfig,
}

impl TcpAcceptor {
    /// Listens on `addr` (port 0 picks a free port; see [`Self::local_addr`]).
    pub fn bind(
        addr: SocketAddr,
        handshake: HandshakeConfig,
        config: TcpConfig,
    ) -> Result<Self, TcpError> {
        let listener = TcpListener::bind(addr).map_err(|source| TcpError::Bind { addr, source })?;
        Ok(TcpAcceptor {
            listener,
            handshake,
            config,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TcpError> {
        self.listener.local_addr().map_err(TcpError::Accept)
    }

    /// Accepts one connection and runs the handshake; a refused peer is an error (the caller
    /// accepts again) and its connection is closed.
    pub fn accept(&self) -> Result<TcpConnection, TcpError> {
        let (stream, _) = self.listener.accept().map_err(TcpError::Accept)?;
        self.finish_accept(stream)
    }

    /// Accepts one connection within `timeout` (`Ok(None)` if none came) and runs the
    /// handshake; a refused peer is an error, as in [`Self::accept`].
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Option<TcpConnection>, TcpError> {
        let deadline = Instant::now() + timeout;
        self.listener
            .set_nonblocking(true)
            .map_err(TcpError::Configure)?;
        let result = loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).map_err(TcpError::Configure)?;
                    break self.finish_accept(stream).map(Some);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        break Ok(None);
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => break Err(TcpError::Accept(e)),
            }
        };
        self.listener
            .set_nonblocking(false)
            .map_err(TcpError::Configure)?;
        result
    }

    fn finish_accept(&self, mut stream: TcpStream) -> Result<TcpConnection, TcpError> {
        let addr = stream.peer_addr().map_err(TcpError::Accept)?;
        configure(&stream)?;
        stream
            .set_read_timeout(Some(self.config.handshake_timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.config.handshake_timeout)))
            .map_err(TcpError::Configure)?;
        let peer = handshake(&mut stream, &self.handshake, Role::Acceptor)
            .map_err(|source| TcpError::Handshake { addr, source })?;
        TcpConnection::new(stream, peer, &self.config)
    }
}

/// One item an [`Inbox`] hands out: a message from a peer, or the reason a peer's
/// connection failed (a malformed message; the connection is closed).
type InboxItem = Result<(Peer, Vec<u8>), TcpError>;

/// Receives messages from every member that connects: a thread accepts connections and runs
/// the handshake (a slow or refused peer never blocks receiving), and one thread per
/// handshaken connection reads its messages into a bounded queue (when the queue is full the
/// connection stops being read, so TCP flow control reaches the sender). Messages of one
/// peer arrive in order; messages of different peers interleave.
///
/// Each message is copied once out of the socket buffer into its own `Vec`: this is for
/// control messages. The replication hot path uses a ring, or a [`TcpConnection`] directly
/// (no allocation per message).
#[derive(Debug)]
pub struct Inbox {
    addr: SocketAddr,
    incoming: std::sync::mpsc::Receiver<InboxItem>,
    shared: std::sync::Arc<InboxShared>,
    acceptor_thread: Option<std::thread::JoinHandle<()>>,
    peer: Option<Peer>,
}

#[derive(Debug, Default)]
struct InboxShared {
    stop: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicU64,
    /// Clones of the live connections' sockets, to sever them.
    live: std::sync::Mutex<Vec<TcpStream>>,
}

/// Messages an [`Inbox`] queues before it stops reading its connections.
pub const INBOX_QUEUE: usize = 1024;

impl Inbox {
    /// An inbox accepting on `acceptor` (starts the accepting thread).
    pub fn new(acceptor: TcpAcceptor) -> Result<Self, TcpError> {
        let addr = acceptor.local_addr()?;
        let (send, incoming) = std::sync::mpsc::sync_channel(INBOX_QUEUE);
        let shared = std::sync::Arc::new(InboxShared::default());
        let shared2 = std::sync::Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("keel-tcp-accept".into())
            .spawn(move || accept_loop(&acceptor, &send, &shared2))
            .map_err(TcpError::Accept)?;
        Ok(Inbox {
            addr,
            incoming,
            shared,
            acceptor_thread: Some(thread),
            peer: None,
        })
    }

    /// The acceptor's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Peers refused by the handshake (or whose accept failed) so far.
    pub fn refused(&self) -> u64 {
        self.shared
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The peer of the last message received.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// Receives the next message from any peer, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<(Peer, Vec<u8>)>, TcpError> {
        match self.incoming.recv_timeout(timeout) {
            Ok(Ok((peer, message))) => {
                self.peer = Some(peer);
                Ok(Some((peer, message)))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Closes every live connection (their senders see them break and redial).
    pub fn sever(&mut self) {
        let live = std::mem::take(&mut *lock(&self.shared.live));
        for stream in live {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking reader thread cannot leave the list inconsistent (push/take only).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(
    acceptor: &TcpAcceptor,
    send: &std::sync::mpsc::SyncSender<InboxItem>,
    shared: &std::sync::Arc<InboxShared>,
) {
    use std::sync::atomic::Ordering;
    let mut readers = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match acceptor.accept_timeout(Duration::from_millis(50)) {
            Ok(Some(conn)) => {
                let Ok(clone) = conn.stream.try_clone() else {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                lock(&shared.live).push(clone);
                let (to_inbox, for_reader) = (send.clone(), std::sync::Arc::clone(shared));
                let reader = std::thread::Builder::new()
                    .name("keel-tcp-read".into())
                    .spawn(move || read_loop(conn, &to_inbox, &for_reader));
                match reader {
                    Ok(handle) => readers.push(handle),
                    // No thread for it: the connection is dropped, its sender redials.
                    Err(_) => {
                        shared.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(None) => {}
            Err(_) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        readers.retain(|r: &std::thread::JoinHandle<()>| !r.is_finished());
    }
    for reader in readers {
        let _ = reader.join();
    }
}

fn read_loop(
    mut conn: TcpConnection,
    send: &std::sync::mpsc::SyncSender<InboxItem>,
    shared: &InboxShared,
) {
    use std::sync::atomic::Ordering;
    let peer = conn.peer;
    while !shared.stop.load(Ordering::Relaxed) {
        match conn.next_message(Duration::from_millis(50)) {
            Ok(Some((from, to))) => {
                if send
                    .send(Ok((peer, conn.recv_buf[from..to].to_vec())))
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => {}
            Err(TcpError::Closed | TcpError::Recv(_)) => return,
            Err(e) => {
                let _ = send.send(Err(e));
                return;
            }
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.sever();
        // Unblock readers waiting on a full queue.
        while self.incoming.try_recv().is_ok() {}
        if let Some(thread) = self.acceptor_thread.take() {
            let _ = thread.join();
        }
    }
}

impl MessageReceiver for Inbox {
    type Error = TcpError;

    fn recv_with<T>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, TcpError> {
        Ok(self.recv(timeout)?.map(|(_, message)| f(&message)))
    }
}

/// Keeps a connection to one member, redialing with exponential backoff.
#[derive(Debug)]
pub struct Redialer {
    addr: SocketAddr,
    handshake: HandshakeConfig,
    expected: u64,
    next_epoch: u64,
    config: TcpConfig,
    current: Option<TcpConnection>,
    connects: u64,
}

impl Redialer {
    /// A redialer to member `expected` at `addr`; connection epochs start at `first_epoch`
    /// and increase by one per connection.
    pub fn new(
        addr: SocketAddr,
        handshake: HandshakeConfig,
        expected: u64,
        first_epoch: u64,
        config: TcpConfig,
    ) -> Self {
        Redialer {
            addr,
            handshake,
            expected,
            next_epoch: first_epoch,
            config,
            current: None,
            connects: 0,
        }
    }

    /// How many connections were established so far.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// The current connection, dialing (with backoff, until `deadline`) if there is none.
    pub fn connection(&mut self, deadline: Instant) -> Result<&mut TcpConnection, TcpError> {
        if self.current.as_ref().is_some_and(TcpConnection::is_broken) {
            self.current = None;
        }
        if self.current.is_none() {
            let conn = self.dial(deadline)?;
            self.current = Some(conn);
        }
        match self.current.as_mut() {
            Some(conn) => Ok(conn),
            None => Err(TcpError::Closed),
        }
    }

    fn dial(&mut self, deadline: Instant) -> Result<TcpConnection, TcpError> {
        let mut delay = self.config.backoff_initial;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            match connect(
                self.addr,
                &self.handshake,
                self.expected,
                epoch,
                &self.config,
            ) {
                Ok(conn) => {
                    self.connects += 1;
                    return Ok(conn);
                }
                // A refusal is a configuration error; redialing will not fix it.
                Err(e @ TcpError::Handshake { .. }) if is_refusal(&e) => return Err(e),
                Err(e) => {
                    if Instant::now() + delay >= deadline {
                        return Err(TcpError::Unreachable {
                            addr: self.addr,
                            attempts,
                            last: Box::new(e),
                        });
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.config.backoff_max);
                }
            }
        }
    }
}

fn is_refusal(e: &TcpError) -> bool {
    matches!(
        e,
        TcpError::Handshake {
            source: HandshakeError::WrongCluster { .. }
                | HandshakeError::NotAMember { .. }
                | HandshakeError::IncompatibleVersion { .. }
                | HandshakeError::UnexpectedMember { .. }
                | HandshakeError::RefusedByPeer { .. },
            ..
        }
    )
}

impl MessageSender for Redialer {
    type Error = TcpError;

    fn max_message(&self) -> usize {
        self.config.max_message_bytes
    }

    /// Sends on the current connection; if it is broken, redials (with backoff, within
    /// `timeout`) and sends again on the new one.
    fn send(&mut self, message: &[u8], timeout: Duration) -> Result<(), TcpError> {
        if message.len() > self.config.max_message_bytes {
            return Err(TcpError::TooLarge {
                len: message.len(),
                max: self.config.max_message_bytes,
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            let conn = self.connection(deadline)?;
            match conn.send_message(message, timeout) {
                Ok(()) => return Ok(()),
                Err(TcpError::Send(e))
                    if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    self.current = None;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
