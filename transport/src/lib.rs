//! Keel transports: one ring protocol over shared memory and RDMA verbs, and a TCP transport.
//!
//! The leader streams log entries into each follower's receive ring; the follower validates
//! each frame, consumes it, and mirrors its consumed position (the head) back, which is both
//! the flow control and the acknowledgement. Control messages travel as opaque byte messages
//! over TCP (or over a ring).
//!
//! | module | what |
//! |--------|------|
//! | [`frame`] | the fixed 48-byte `#[repr(C)]` frame header (ballot, slot, length, position, epoch, CRC-32C) |
//! | [`ring`] | the ring protocol, generic over the backend seam [`RingSink`]/[`RingSource`]; layout and ordering contract |
//! | [`shm`] | rings in memory shared between processes (`/dev/shm` file or anonymous mapping); the memory-ordering argument and its `loom` model check |
//! | `rdma` | (feature `rdma`) the same ring over RDMA verbs: see the `rdma` module docs |
//! | [`tcp`] | framed messages over `TCP_NODELAY` sockets, reconnect with backoff, bounded buffers |
//! | [`handshake`](mod@handshake) | cluster id, member id and protocol version checked before anything else flows |
//! | [`message`] | the [`MessageSender`]/[`MessageReceiver`] traits (TCP and every ring implement them) |
//! | [`conformance`] | the suite every backend passes (public: the RDMA backend runs it in the VM) |
//! | [`fuzzing`] | the checks behind the fuzz targets in `transport/fuzz/` |
//!
//! # Quick start
//!
//! A ring in shared memory, written by a leader and read by a follower (here both in one
//! process; [`shm::ShmRing::create`] and [`shm::ShmRing::open`] put them in two):
//!
//! ```
//! use keel_transport::ring::{RingConfig, RingReader, RingWriter};
//! use keel_transport::shm::ShmRing;
//!
//! let (sink, source) = ShmRing::anonymous(1 << 16)?.split();
//! let config = RingConfig { epoch: 1, max_payload: 4096 };
//! let mut leader = RingWriter::new(sink, config);
//! let mut follower = RingReader::new(source, config);
//!
//! leader.write(3, 100, b"first entry")?; // ballot 3, slot 100
//! leader.write(3, 101, b"second entry")?;
//! leader.publish()?; // one tail store makes both visible
//!
//! let mut slots = Vec::new();
//! follower.poll(16, |frame| slots.push((frame.slot, frame.payload.to_vec())))?;
//! assert_eq!(slots, [(100, b"first entry".to_vec()), (101, b"second entry".to_vec())]);
//! // The follower's head is mirrored back: the leader sees both consumed.
//! assert_eq!(leader.refresh_head()?, 1 << 16);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Messages over TCP, after the handshake:
//!
//! ```
//! use keel_transport::handshake::HandshakeConfig;
//! use keel_transport::message::{MessageReceiver, MessageSender};
//! use keel_transport::tcp::{Inbox, Redialer, TcpAcceptor, TcpConfig};
//! use std::time::Duration;
//!
//! let members = vec![1, 2];
//! let acceptor = TcpAcceptor::bind(
//!     "127.0.0.1:0".parse()?,
//!     HandshakeConfig::new(7, 2, members.clone()), // cluster 7, member 2
//!     TcpConfig::default(),
//! )?;
//! let mut inbox = Inbox::new(acceptor)?;
//! // Member 1 dials member 2 (connection epoch 1), redialing with backoff if the link breaks.
//! let mut to_2 = Redialer::new(
//!     inbox.local_addr(),
//!     HandshakeConfig::new(7, 1, members),
//!     2,
//!     1,
//!     TcpConfig::default(),
//! );
//! to_2.send(b"prepare", Duration::from_secs(5))?;
//! let got = inbox.recv_with(Duration::from_secs(5), |m| m.to_vec())?;
//! assert_eq!(got.as_deref(), Some(&b"prepare"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it is tested
//!
//! - `tests/conformance.rs`: [`conformance::rings`] on shared-memory rings (anonymous and
//!   file-backed), [`conformance::messages`] on the shared-memory ring and on TCP: order, no
//!   loss, no duplicates, wrap-around, flow control under a slow reader, oversized entries,
//!   corrupt/torn/stale frames, restarts and TCP reconnect.
//! - `tests/shm_processes.rs`: a child process streams 20 000 frames through a follower's
//!   ring; a process of another cluster is refused.
//! - `tests/tcp.rs`: strangers (other cluster, unconfigured member, other protocol version,
//!   garbage) are refused and never reach the message stream.
//! - `tests/decoders.rs`: property tests feeding arbitrary and mutated bytes to every decoder.
//! - `loom`: `RUSTFLAGS="--cfg loom" cargo test -p keel-transport --release --lib loom`
//!   model-checks the ring index protocol with the shared-memory orderings (and checks that
//!   relaxed orderings are caught).
//! - Fuzzing: `cd transport && cargo +nightly fuzz run ring_frame` (also `handshake`,
//!   `tcp_message`).
//!
//! Speed (round trip and throughput against the machine's own limits) is measured by
//! `keel-bench ring`, not by tests.
#![deny(missing_docs)]

pub mod conformance;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod message;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod ring;
pub mod shm;
pub mod tcp;

pub use frame::{FrameError, FrameHeader};
pub use handshake::{HandshakeConfig, HandshakeError, Peer, Role, handshake};
pub use message::{MessageReceiver, MessageSender};
pub use ring::{
    AppendError, Frame, ReadError, RingConfig, RingReader, RingSink, RingSource, RingWriter,
};
