//! Keel transports: one ring protocol over RDMA verbs and shared memory, and a TCP transport.
#![deny(missing_docs)]

pub mod frame;
pub mod handshake;
pub mod ring;

pub use frame::{FrameError, FrameHeader};
pub use handshake::{HandshakeConfig, HandshakeError, Peer, Role, handshake};
pub use ring::{
    AppendError, Frame, ReadError, RingConfig, RingReader, RingSink, RingSource, RingWriter,
};
