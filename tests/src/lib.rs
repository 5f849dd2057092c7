//! Keel's test infrastructure: the deterministic cluster simulator (`keel-sim`) and the named
//! scenario tests.
//!
//! # What a run is
//! One thread, one seed. [`world::World`] runs a cluster of 3 or 5 `keel_core::Replica`s (plus
//! spare ids that join as learners) with a replicated key-value store ([`kv`], client sessions
//! deduplicate retries by client id and sequence number) and 2-5 concurrent clients that put,
//! get through the log, read linearizably (lease or read-index) and read session-consistently.
//! Every option of the run (cluster size, pipeline and batch bounds, lease on/off, snapshot
//! interval, fault rates, workload) is drawn from a ChaCha generator seeded with the seed
//! ([`rng`], [`world::Options::draw`]), so `keel-sim --seed S` reproduces a run exactly.
//!
//! # Faults ([`faults::FaultKind`])
//! Message loss, duplication, reordering and delay, two-way partitions, one-way cuts and
//! FoundationDB-style clogged links ([`net`]); crashes that lose unsynced writes and restarts
//! from the durable state ([`disk`]); clock drift within the bound the core is configured for
//! ([`clock`]); membership changes (add/promote learner, remove/replace voter), snapshots with
//! log truncation and catch-up by snapshot, and leadership transfers, all during the faults.
//! A run has a fault phase (0.3-0.9 s simulated), then heals (whole, reliable network; every
//! crashed replica restarts) and must choose a fresh decree that every voter applies within
//! [`world::LIVENESS_BOUND_US`].
//!
//! # Checks
//! After every step of every replica ([`checks`], [`world`]): the core's own `validate()`; at
//! most one value chosen per slot (a ledger of every durable acceptance, majorities counted
//! against the membership that governs the slot); nothing committed that a majority did not
//! accept at one ballot; a chosen value never changes and every replica applies the same value
//! at each slot, in order, with equal checkpoints; applied <= committed; promises never regress
//! (also across crashes); promises and acceptances leave only once durable; no two replicas hold
//! a lease at one instant of true time; a linearizable read is served at a slot no lower than
//! the highest chosen when it was asked; a session read never below the client's last-seen slot.
//! At the end the clients' history must be linearizable ([`linearizability`], a Wing-Gong /
//! Lowe checker per key, with tests that it rejects non-linearizable histories).
//!
//! # How it is tested
//! Unit tests for each module; `tests/scenarios.rs` (named scenarios with concrete outcomes);
//! `tests/seeds.rs` (a few full seeds in the debug build, and exact reproduction of a seed);
//! `keel-sim --seeds 0..2000` in CI and `keel-sim --seeds 0..20000` as the long run; and
//! `keel-sim --features mutations --mutation NAME --expect-caught`, which shows each deliberate
//! core bug is caught.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checks;
pub mod clock;
pub mod disk;
pub mod faults;
pub mod kv;
pub mod linearizability;
pub mod net;
pub mod rng;
pub mod runner;
pub mod world;
