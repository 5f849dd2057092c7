//! Operating errors of the RDMA backend: one variant per failing operation.

use crate::handshake::HandshakeError;
use std::io;
use thiserror::Error;

/// Why an RDMA operation failed.
#[derive(Debug, Error)]
pub enum RdmaError {
    /// Listing the RDMA devices failed (no libibverbs providers, no uverbs devices).
    #[error("listing RDMA devices failed")]
    DeviceList(#[source] io::Error),
    /// No device of that name.
    #[error("no RDMA device named {name:?} (available: {available:?})")]
    NoSuchDevice {
        /// Name asked for.
        name: String,
        /// Names found.
        available: Vec<String>,
    },
    /// Opening the device failed.
    #[error("opening RDMA device {name:?} failed")]
    OpenDevice {
        /// Device name.
        name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Querying port 1 failed.
    #[error("querying the RDMA port failed")]
    QueryPort(#[source] io::Error),
    /// Port 1 is not active (link down, rxe not bound to an up netdev).
    #[error("port 1 of {name:?} is not active (state {state})")]
    PortNotActive {
        /// Device name.
        name: String,
        /// `ibv_port_state` value.
        state: u32,
    },
    /// Reading a GID table entry failed.
    #[error("querying GID index {index} failed")]
    QueryGid {
        /// Index asked for.
        index: u8,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The port has no usable GID.
    #[error("device {name:?} has no usable GID on port 1")]
    NoGid {
        /// Device name.
        name: String,
    },
    /// Allocating a protection domain failed.
    #[error("allocating a protection domain failed")]
    AllocPd(#[source] io::Error),
    /// Creating a completion queue failed.
    #[error("creating a completion queue failed")]
    CreateCq(#[source] io::Error),
    /// Creating a queue pair failed.
    #[error("creating a queue pair failed")]
    CreateQp(#[source] io::Error),
    /// A queue pair state transition failed.
    #[error("moving the queue pair to {to} failed")]
    ModifyQp {
        /// Target state.
        to: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Querying a queue pair failed.
    #[error("querying the queue pair failed")]
    QueryQp(#[source] io::Error),
    /// Registering memory failed (e.g. EOPNOTSUPP for a MAP_SYNC mapping of an fsdax file).
    #[error("registering {len} bytes of memory failed")]
    RegisterMemory {
        /// Length of the range.
        len: usize,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Mapping the ring's memory failed.
    #[error("mapping {len} bytes of ring memory from {what} failed")]
    MapMemory {
        /// What was mapped (a device-DAX path or "anonymous memory").
        what: String,
        /// Length.
        len: usize,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Posting a work request failed (send queue full, bad attributes, or queue pair in error).
    #[error("posting a work request failed")]
    PostSend(#[source] io::Error),
    /// Polling the completion queue failed.
    #[error("polling the completion queue failed")]
    PollCq,
    /// A work request completed with an error: the queue pair is now in the error state and the
    /// connection must be re-established.
    #[error(
        "RDMA WRITE (work request {wr_id}) failed: {status_name} ({status}); queue pair in error state"
    )]
    WorkRequestFailed {
        /// Work-request id (slot index).
        wr_id: u64,
        /// `ibv_wc_status` value.
        status: u32,
        /// Its name.
        status_name: String,
    },
    /// No completion arrived within the time limit although work requests are posted: the
    /// peer stopped acknowledging. The queue pair was moved to the error state; reconnect.
    #[error("no completion within {waited:?} with {in_flight} work requests posted")]
    CompletionTimeout {
        /// Work requests outstanding.
        in_flight: usize,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// The connection's queue pair is in the error state (a work request failed earlier);
    /// re-establish the connection.
    #[error("the queue pair is in the error state; reconnect")]
    QueuePairInError,
    /// The out-of-band TCP channel failed.
    #[error("out-of-band {step} failed")]
    OutOfBand {
        /// What was being done.
        step: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The peer's out-of-band message is malformed.
    #[error("peer sent a malformed out-of-band message: {what}")]
    MalformedOutOfBand {
        /// What is wrong.
        what: &'static str,
    },
    /// The handshake failed: the peer was refused (or refused us) and never got the rkey.
    #[error("connection handshake failed")]
    Handshake(#[source] HandshakeError),
    /// The two ends disagree on the ring's capacity.
    #[error("ring capacity mismatch: ours {ours}, peer's {theirs}")]
    CapacityMismatch {
        /// Ours.
        ours: usize,
        /// Theirs.
        theirs: usize,
    },
    /// A reconnect was asked for while published frames are still unread.
    #[error(
        "cannot re-accept: reader head {head} is behind the published tail {tail}; drain first"
    )]
    Undrained {
        /// Reader head.
        head: u64,
        /// Published tail.
        tail: u64,
    },
}
