//! Keel's test infrastructure: the deterministic cluster simulator and end-to-end harnesses.
//!
//! The simulator runs a whole Keel cluster on one thread from one seed: every option of a run
//! (cluster size, fault rates, workload) is drawn from a ChaCha generator seeded with it
//! ([`rng`]). Around the protocol core it puts a simulated network ([`net`]: loss, duplication,
//! reordering, delay, one- and two-way partitions, clogged links), simulated disks ([`disk`]:
//! writes durable only once synced, crashes lose the rest), drifting clocks ([`clock`]), a
//! replicated key-value store with client sessions ([`kv`]) and a linearizability checker for
//! the clients' history ([`linearizability`]).
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
