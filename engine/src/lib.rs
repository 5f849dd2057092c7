//! Keel: a multi-Paxos replicated state machine library for latency-critical services.
//!
//! This crate is the embedding API and the thread-per-core runtime; the protocol itself lives
//! in [`keel_core`], re-exported here as [`core`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use keel_core as core;

pub mod codec;
pub mod completion;
pub mod config;
mod error;
pub mod kv;
pub mod net;
pub mod persist;
mod replica;
pub mod runtime;
mod state_machine;
pub mod stats;

pub use completion::Completion;
pub use config::{Builder, Config, ConfigError, Member, TransportKind};
pub use error::{Error, StartError};
pub use net::local::LocalNetwork;
pub use replica::{Applied, MemberChange, Replica, StartOptions};
pub use runtime::Failure;
pub use state_machine::{Membership, Role, StateMachine};
pub use stats::{PeerStatus, Status, Summary};
