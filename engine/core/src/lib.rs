//! Keel's protocol core: a sans-I/O multi-Paxos replica.
//!
//! The core does no I/O, reads no clock, spawns no thread and draws randomness only from a
//! seeded generator it owns (enforced by this crate's `clippy.toml`). A replica is driven by
//! `step(event) -> commands`; the caller performs the commands.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
