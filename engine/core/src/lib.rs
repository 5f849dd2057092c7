//! Keel's protocol core: a sans-I/O multi-Paxos replica.
//!
//! The core does no I/O, reads no clock, spawns no thread and draws randomness only from a
//! seeded generator it owns (enforced by this crate's `clippy.toml`). A replica is driven by
//! `step(event) -> commands`; the caller performs the commands.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod io;
mod message;
mod persist;
pub mod quorum;
mod replica;
mod types;

pub use config::{Config, Mutation};
pub use error::{ConfigError, MembershipError};
pub use io::{AbortReason, Command, Event, PersistOp, PersistToken, ReadId, ReadRefusal, Role};
pub use message::Message;
pub use persist::PersistentState;
pub use replica::Replica;
pub use types::{
    AcceptedEntry, Ballot, Decree, Membership, MembershipChange, Proposal, ProposalId, ReplicaId,
    Slot, SlotDecree, Snapshot, SnapshotMeta,
};
