//! Errors the embedding API returns.

use std::sync::Arc;

use crate::runtime::Failure;

/// Why a request made through a [`crate::Replica`] handle did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// This replica is not the leader; retry at `leader` when it is known.
    #[error("this replica is not the leader (leader hint: {leader:?}); retry at the leader")]
    NotLeader {
        /// The replica believed to lead, if known.
        leader: Option<u64>,
    },
    /// The proposal could not be replicated (the leader lost its ballot before it was chosen).
    /// It may or may not have been applied: the caller must treat the outcome as unknown.
    #[error("proposal aborted: {reason}; outcome unknown, the command may still be applied")]
    Aborted {
        /// What the protocol core reported.
        reason: String,
    },
    /// A read was refused (not leader, lease not held, or the replica lags the session).
    #[error("read refused: {reason}")]
    ReadRefused {
        /// What the protocol core reported.
        reason: String,
    },
    /// A membership change or leadership transfer was refused.
    #[error("request refused: {reason}")]
    Refused {
        /// What the protocol core reported.
        reason: String,
    },
    /// The request waited longer than the configured or given bound.
    #[error("request timed out after {waited_ms} ms")]
    Timeout {
        /// How long the request waited.
        waited_ms: u64,
    },
    /// The replica's request queue is full; back off and retry.
    #[error("replica busy: {queued} requests queued (limit); back off and retry")]
    Busy {
        /// The queue depth that was hit.
        queued: usize,
    },
    /// A loop of this replica panicked; the replica stopped. The failure says where and why.
    #[error("replica failed: {0}")]
    Failed(Arc<Failure>),
    /// The replica was shut down before the request was answered.
    #[error("replica shut down")]
    ShutDown,
    /// The runtime dropped the request without answering (it stopped or lost the request).
    #[error("request dropped unanswered (the replica stopped or lost it)")]
    Dropped,
    /// The answer was already taken from this completion.
    #[error("the answer was already taken from this completion")]
    AlreadyTaken,
}

/// Why a replica could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The persistence log could not be opened or recovered.
    #[error("cannot open the persistence log in {path}: {reason}")]
    Log {
        /// The log file.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
    /// The latest checkpoint could not be loaded into the state machine.
    #[error("cannot load checkpoint {path}: {source}")]
    Checkpoint {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// The I/O or decode error.
        #[source]
        source: std::io::Error,
    },
    /// The transport could not be set up.
    #[error("cannot start the {kind} transport: {reason}")]
    Transport {
        /// The transport kind.
        kind: &'static str,
        /// What failed.
        reason: String,
    },
    /// The test-only fault file (`testing.fault_file`) is bad.
    #[error(transparent)]
    Faults(#[from] crate::net::fault::FaultFileError),
    /// A runtime thread could not be spawned.
    #[error("cannot spawn runtime thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
