//! Keel: a multi-Paxos replicated state machine library for latency-critical services.
//!
//! This crate is the embedding API and the runtime; the protocol itself lives in [`keel_core`]
//! (re-exported as [`core`]), the persistence log in `keel_pmem`, the transports in
//! `keel_transport`. A service implements [`StateMachine`], starts a [`Replica`] per process
//! from a validated [`Config`] (built with [`Builder`] or read from TOML), and proposes
//! commands through the handle. `docs/EMBEDDING.md` walks through every piece.
//!
//! # Quick start
//!
//! A counter replicated over three replicas living in one process (the `local` transport and
//! the `memory` log; a real deployment runs one replica per process over `tcp` with the
//! `file` log, as `keel run` does):
//!
//! ```
//! use keel_engine::config::{Durability, Member};
//! use keel_engine::{Builder, LocalNetwork, Replica, Role, StateMachine, TransportKind};
//!
//! /// The replicated service: a counter.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     type Output = u64;
//!     fn apply(&mut self, _decree: u64, command: &[u8]) -> u64 {
//!         self.0 += u64::from(command[0]);
//!         self.0
//!     }
//!     fn save_checkpoint(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
//!         out.write_all(&self.0.to_le_bytes())
//!     }
//!     fn load_checkpoint(&mut self, input: &mut dyn std::io::Read) -> std::io::Result<()> {
//!         let mut b = [0u8; 8];
//!         input.read_exact(&mut b)?;
//!         self.0 = u64::from_le_bytes(b);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let network = LocalNetwork::new();
//! let members: Vec<Member> = (1..=3).map(|id| Member::voter(id, format!("r{id}"))).collect();
//! let mut replicas = Vec::new();
//! for id in 1..=3 {
//!     let config = Builder::new(id, dir.path().join(format!("r{id}")))
//!         .members(members.clone())
//!         .transport(TransportKind::Local)
//!         .durability(Durability { log_backend: "memory".into(), ..Durability::default() })
//!         .build()?; // a bad field is a typed error naming it
//!     replicas.push(Replica::start_local(config, Counter::default(), &network)?);
//! }
//! // Wait for an election, then propose through the leader.
//! let leader = loop {
//!     if let Some(r) = replicas.iter().find(|r| r.role() == Role::Leader) {
//!         break r;
//!     }
//!     std::thread::sleep(std::time::Duration::from_millis(1));
//! };
//! let applied = leader.propose(vec![5]).wait()?; // block on the completion...
//! assert_eq!(applied.value, 5);
//! leader.propose(vec![2]).on_complete(|r| assert_eq!(r.unwrap().value, 7)); // ...or a callback
//! let read = leader.read(|c: &Counter| c.0).wait()?; // linearizable read
//! assert_eq!(read.value, 7);
//! // A session-consistent read on a follower, at or after the decree we saw.
//! let follower = replicas.iter().find(|r| r.role() != Role::Leader).unwrap();
//! assert_eq!(follower.fast_read(read.slot, |c: &Counter| c.0).wait()?.value, 7);
//! let status = leader.status().wait()?;
//! assert_eq!(status.peers.len(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # What is here and how it is tested
//!
//! - [`Replica`]: the handle (propose, read, fast read, membership change, leadership transfer,
//!   relinquish, status) and the replica loop: each pass takes completions (durable log
//!   tokens, peer messages), the ticks that elapsed, and queued requests, feeds them to the
//!   core as one step batch ([`keel_core::Replica::step_batch`]: the proposals of a pass join
//!   one decree, cut at the end of the batch within the batch bounds and the pipeline window),
//!   carries out the commands, then flushes the network once. An idle loop
//!   spins for `runtime.spin_us`, yielding, then parks until woken or its next tick
//!   ([`runtime`]). Threads are pinned per `runtime.loop_core` / `runtime.persist_core`.
//! - [`persist`]: `Persist` commands become log records; one batch is one flush on the
//!   persistence thread (group commit); `Persisted` is fed back only after the flush; restart
//!   replays the log. Durability `none` (the `memory` backend) keeps the log in a plain buffer
//!   ([`persist::MemRegion`]).
//! - [`completion`]: one-shot answers (block, poll, callback, or `.await`); a dropped answerer
//!   answers with an error; proposals take theirs from a recycling [`completion::Pool`].
//!
//! # The hot path allocates nothing per entry, nor per decree beyond checkpoints
//!
//! Once warm, committing a proposal allocates nothing per proposal in Keel, on the leader or on
//! a follower, over the `local` and `shm` transports, with the file log or durability `none`:
//! the proposal's completion state is recycled (the end that lets go last returns it); its
//! payload `Vec` (the caller's allocation) is moved into the log, not copied; the requests of a
//! decree are one shared [`keel_core::Batch`] that the log append, every peer's accept message,
//! the leader's window and the apply command share by reference count; a follower decoding a
//! message copies it once and its requests' [`keel_core::Payload`]s are ranges of that copy;
//! the loop's event, command, message and persist buffers are reused.
//!
//! Per *decree*, the leader's phase 2a list ([`keel_core::SlotDecrees`], one for every peer) is
//! reused once its messages are gone, an `shm` receiver decodes accepts into spare lists, the
//! log append's and the acknowledgement's lists are inline (`smallvec`), the logs (the core's
//! accepted and decided values, the persistence thread's mirror) are rings indexed by slot
//! ([`keel_core::SlotMap`]) rather than maps that allocate a node every few slots, and the
//! leader's heartbeat and lease upkeep reuse their buffers (an idle cluster allocates
//! nothing). A decree's request list is recycled: the leader keeps the [`keel_core::Batch`]es a
//! checkpoint releases from its decided log and refills one once nothing else holds it (the
//! followers over `local` share it until they checkpoint too), and an `shm`, `tcp` or `rdma`
//! receiver does the same with the batches it decodes (bounded: 262,144 request places each;
//! one `DecodeSpares` per inbound connection), and with the
//! buffer each follower copies a message's bytes into (the requests' payloads share it):
//! refilled in place once the log let go of those requests (bounded: 32 MiB of buffers). What
//! remains per decree is a checkpoint's own work (about 27 allocations per checkpoint). With
//! one request per decree (a single closed-loop client) and a checkpoint every 256 decrees,
//! steady state costs 0.10 to 0.15 (`local`, most of it checkpoints), 0.17 to 0.36 (`shm`) and
//! 0.14 to 0.31 (`tcp`) allocations per decree, up to about 1 while other work loads the
//! machine (a follower the machine does not schedule lags behind the leader's checkpoints, so
//! what it released is still held); it was 10.1 to 11.1 over `tcp` before its receivers
//! decoded into spares, 2.2 to 3.0 over `shm` before the message buffers were recycled, 1.05
//! and 5.1 before the batches were, 9 to 10 and 16 to 17 before that. With full decrees a
//! committed entry costs 0.01 to 0.08.
//! Recycling needs the released batches and buffers to fit the bounds: one default
//! `checkpoint_every` (100,000) of one-request decrees of small requests does; a checkpoint
//! interval of large batches or large requests recycles only part of them (each of those
//! decrees then carries many entries or many bytes).
//! - [`runtime`]: a panic in any runtime thread is recorded with context ([`Failure`]) and
//!   surfaced by every later call on the handle; the replica stops and answers what is queued.
//! - [`net`]: the `tcp` transport, `shm` rings (between processes of one host, where an idle
//!   replica sleeps on a doorbell its senders ring; or replicas of one process), and the
//!   `local` in-process queues; [`net::fault`] drops messages a test's fault file names, over
//!   any transport (test-only, `[testing] fault_file`; not installed otherwise).
//! - [`kv`]: the example replicated key-value service used by `keel run`, `keel demo` and the
//!   end-to-end tests.
//!
//! Tests: unit tests per module; `tests/cluster.rs` runs in-process 3-replica clusters (fail-over,
//! restart from the file log, learner join and promotion, a panicking state machine);
//! `tests/hot_path_allocations.rs` counts allocations with a counting global allocator while a
//! warm 3-replica cluster commits 20,000 proposals (local, shm and tcp on loopback, file log and
//! none) and fails above 16 per decree plus 1,000, or above 0.25 per entry, then 2,000
//! proposals one at a time (one per decree) and fails above 2 per entry over `local` and 7 over
//! `shm` and `tcp` (plus 1,000), then 2,000 more in steady state (a checkpoint every 256
//! decrees) and fails above 0.5 per decree over `local` (checkpoints included) and 1 over `shm`
//! and `tcp` (each plus 1,000; the best of up to three windows counts, as machine load can make
//! a follower lag); the
//! end-to-end tests in the workspace's `tests/tests/e2e_tcp.rs` and `e2e_shm.rs` run `keel run`
//! processes (kill -9 of the leader and of a follower, isolation of the leader through a fault
//! proxy or the fault file, membership change) and check linearizability and the fail-over
//! bound; `vm_e2e_rdma*.rs` run the same scenarios over rdma in the soft-RoCE VM.
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
pub use net::shm::ShmMesh;
pub use replica::{Applied, MemberChange, Replica, StartOptions};
pub use runtime::Failure;
pub use state_machine::{Membership, Role, StateMachine};
pub use stats::{PeerStatus, Status, Summary};
