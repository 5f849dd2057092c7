//! Keel: a multi-Paxos replicated state machine library for latency-critical services.
//!
//! This crate is the embedding API and the thread-per-core runtime; the protocol itself lives
//! in [`keel_core`], re-exported here as [`core`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use keel_core as core;
