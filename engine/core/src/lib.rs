//! Keel's protocol core: a sans-I/O multi-Paxos replica.
//!
//! The core does no I/O, reads no clock, spawns no thread and draws randomness only from a
//! seeded generator it owns (ChaCha8, seeded at construction); iteration order is
//! deterministic (`BTreeMap`/`BTreeSet` only). This crate's `clippy.toml` enforces all of it.
//!
//! # The event/command loop
//!
//! A [`Replica`] is a pure state machine. The host feeds it one [`Event`] at a time with
//! [`Replica::step`], or everything one pass of its loop collected with
//! [`Replica::step_batch`] (then the proposals of the pass join one decree: group commit), and
//! carries out the [`Command`]s it appends, in order:
//!
//! | event | what the host means |
//! |---|---|
//! | [`Event::Tick`] | one unit of logical time passed (all timeouts are in ticks) |
//! | [`Event::Propose`] | a client request to replicate |
//! | [`Event::Message`] | a peer's [`Message`] arrived (decode with [`codec`]) |
//! | [`Event::Persisted`] | every [`Command::Persist`] up to a token is durable |
//! | [`Event::SnapshotTaken`] | the state machine checkpointed at a slot |
//! | [`Event::Read`] / [`Event::FastRead`] | a linearizable / RSL session-consistent read |
//! | [`Event::ChangeMembership`], [`Event::TransferLeadership`], [`Event::Relinquish`], [`Event::SetElectable`] | administration and the may-I-become-primary veto |
//!
//! Commands: [`Command::Persist`] (then report it), [`Command::Send`], [`Command::Apply`]
//! (chosen decrees, in slot order), [`Command::TakeSnapshot`] / [`Command::InstallSnapshot`],
//! [`Command::ProposalAborted`], [`Command::ReadReady`] / [`Command::ReadRefused`],
//! [`Command::RoleChanged`], [`Command::MembershipChanged`]. All are plain data (`Debug`,
//! `Clone`, `PartialEq`, `Eq`) so tests compare exact lists.
//!
//! After a crash the host rebuilds a [`PersistentState`] by applying, in order, the persist
//! operations that were reported durable ([`PersistentState::apply`] is their reference
//! meaning), restores its state machine from the snapshot in it, and calls
//! [`Replica::recover`].
//!
//! ```
//! use keel_core::{Command, Config, Event, Membership, PersistentState, Replica, ReplicaId, Role};
//!
//! // A one-voter cluster elects itself and commits a request.
//! let config = Config::new(Membership::with_voters([ReplicaId(1)]));
//! let mut replica = Replica::new(ReplicaId(1), config, 42).unwrap();
//! let mut durable = PersistentState::default();
//! let mut applied = Vec::new();
//! let mut pending = vec![];
//! for tick in 0..100 {
//!     let mut out = Vec::new();
//!     if tick == 50 {
//!         replica.step(Event::Propose { id: keel_core::ProposalId(1), payload: b"x".to_vec() }, &mut out);
//!     } else {
//!         replica.step(Event::Tick, &mut out);
//!     }
//!     // Persist everything, then report it durable (a real host batches and fsyncs here).
//!     while !out.is_empty() {
//!         let mut last = None;
//!         for cmd in out.drain(..) {
//!             match cmd {
//!                 Command::Persist { token, op } => { durable.apply(&op); last = Some(token); }
//!                 Command::Apply { slot, decree } => applied.push((slot, decree)),
//!                 other => pending.push(other),
//!             }
//!         }
//!         if let Some(token) = last {
//!             replica.step(Event::Persisted { token }, &mut out);
//!         }
//!     }
//! }
//! assert_eq!(replica.role(), Role::Leader);
//! assert!(applied.iter().any(|(_, d)| matches!(d, keel_core::Decree::Batch(_))));
//! ```
//!
//! # The protocol
//!
//! * **Ballots** `(round, leader)` only grow: the promise never decreases (checked at the end
//!   of every step and by [`Replica::validate`]).
//! * **Election**: a follower that hears no leader for a seeded random timeout runs a
//!   *pre-vote* ([`Message::PreVote`]) that changes no state; voters refuse it while they hear
//!   a leader or know more chosen slots, so a replica back from a partition cannot depose a
//!   healthy leader. With a majority of grants it runs **phase 1 once for every slot above its
//!   commit index** ([`Message::Prepare`]), needing a majority of the membership governing the
//!   first unknown slot and of every membership decree the promises carry. Per slot it
//!   re-proposes the value of the highest ballot and fills gaps with no-ops.
//! * **Phase 2** is streamed: at most `Config::max_in_flight` slots above the commit index;
//!   requests that arrive while the window is full, or together in one
//!   [`Replica::step_batch`], are **batched** into one decree (up to `max_batch_count`
//!   requests / `max_batch_bytes`). A decree's requests are one shared [`Batch`] and each
//!   request's bytes a [`Payload`] (moved in from the host, or a range of the decoded
//!   message), so replicating, logging and applying a decree copies no request. The short
//!   lists each decree needs are inline ([`AcceptedEntries`] of a log append, [`AcceptedSlots`]
//!   of an acknowledgement), the leader reuses a phase 2a list ([`SlotDecrees`]) once its
//!   messages are gone, a receiver can decode accepts into spare lists
//!   ([`codec::decode_message_reusing`]), and the accepted and decided logs (and
//!   [`PersistentState`]'s) are [`SlotMap`]s, a ring indexed by slot; the leader refills the
//!   batches a checkpoint released from its decided log once nothing else holds them (and a
//!   receiver those it decoded, and the buffers it copied messages into): in steady state a
//!   replica allocates nothing per decree. A slot is chosen when a majority of its
//!   membership accepted it in the leader's ballot; the **commit index rides on every later
//!   accept and heartbeat**; followers learn slots they accepted in that ballot and fetch the
//!   rest ([`Message::CatchUpRequest`] → [`Message::Learn`] or [`Message::InstallSnapshot`]).
//! * **Durability gating**: a promise and an acceptance acknowledgement are held until the
//!   [`Event::Persisted`] covering their write; the leader counts its own vote the same way.
//! * **Reads**: a leader holds a **lease** from the oldest heartbeat a majority acknowledged,
//!   for `lease_ticks - clock_drift_ticks`; a follower that acknowledged refuses to promise
//!   any other ballot for `lease_ticks` (and a restarted replica for `lease_ticks` after
//!   start), so a new leader waits the old lease out. With leases off (or lapsed) reads use the
//!   **read-index** path: served once a majority acknowledged a heartbeat sent after the read
//!   arrived. Either way the read waits until the leader applied every slot it had assigned.
//!   **Fast reads** (RSL) run on any replica once it applied the client's `min_slot`, and are
//!   refused with [`ReadRefusal::Lagging`] beyond `fast_read_lag_max`.
//! * **CheckQuorum**: a leader that has heard (a heartbeat reply or an acceptance in its
//!   ballot) from no majority of every membership in play for `check_quorum_ticks` (default
//!   `election_timeout_min_ticks`; `0` off) steps down at that tick as if deposed: what it held
//!   is aborted, reads are refused, it reports follower. The window is at least the lease, so a
//!   leader with a valid lease is never deposed; a single voter never is.
//! * **Leadership transfer** waits until the target has the leader's commit index and nothing
//!   is in flight, gives up the lease and sends [`Message::TimeoutNow`]; the target's prepare
//!   names the old ballot so lease guards protecting exactly that ballot let it through.
//! * **Snapshots**: [`Command::TakeSnapshot`] every `snapshot_interval` slots; on
//!   [`Event::SnapshotTaken`] the accepted log at and below it is released (a leader keeps
//!   `log_retain_slots` chosen decrees for catch-up by log). A replica behind the retained log
//!   gets the checkpoint, then the log after it.
//! * **Membership** ([`MembershipChange`]: add/remove/replace a voter, add/promote a learner)
//!   is a replicated [`Decree::Membership`]; chosen at slot `k` it governs slots from
//!   `k + alpha` on (RSL's fixed-later-decree rule, alpha = `max_in_flight` =
//!   [`Config::membership_alpha`]), so every slot a leader may send has a membership fixed by
//!   chosen slots, and pipelining needs no barrier. One change at a time; the leader fills the
//!   gap with no-ops so it comes into force at once; a leader not in the membership of its next
//!   slot steps down. No checkpoint is taken while a chosen change is not yet in force, so a
//!   checkpoint's single membership describes every slot after it.
//!
//! # Where each invariant is checked
//!
//! * Every handler asserts its preconditions and postconditions with `contract!` (panics name
//!   the replica, its promise, commit and applied slot): ballot monotonicity (prepare, accept,
//!   raise), one value per slot per ballot (accept, leader send, phase-1 merge), a chosen value
//!   never changes (`learn_chosen`: a second, different value for a slot panics; a new leader
//!   checks phase 1 found every value it already knew chosen), votes counted once (commit),
//!   applied == commit after applying, durable tokens never regress (persisted).
//! * [`Replica::validate`] checks the whole replica: applied <= commit, checkpoint <= applied,
//!   no accepted value at or below the checkpoint, the leader's ballot is its promise and its
//!   in-flight slots lie in (commit, next slot), a membership governs every slot. With the
//!   `verify` feature it also sweeps the log (every accepted ballot <= promise, every slot up to
//!   commit decided, the leader's values match its own acceptances and what is chosen).
//!   The simulator (`keel-sim`) calls it after every step and checks cross-replica safety.
//!
//! # How it is tested
//!
//! `cargo test -p keel-core` runs: exact-command-list unit tests for each handler (and for
//! group commit: N proposals in one step batch become one decree, cut by `max_batch_count`), table
//! tests for quorum arithmetic, lockstep scenarios (lease reads, read-index, an isolated leader
//! and its successor waiting out the lease, CheckQuorum stepping down at the exact tick with 3
//! and 5 voters, transfer, membership changes including removing the
//! leader, snapshot catch-up, crash/restart), seeded random clusters of 3 and 5 replicas with
//! loss, duplication, reordering, held partitions, crashes losing unsynced writes, snapshots,
//! transfers and membership changes (`KEEL_CORE_SEEDS=N` runs more), and proptests of the
//! codec (round trip, truncation, arbitrary and corrupted bytes, decoding into spare lists equal
//! to a fresh decode) and of [`SlotMap`] against a `BTreeMap` (any mix of near and far slots).
//! Feature `mutations` adds
//! `Config::mutation` (deliberate bugs, see [`Mutation`]) and tests showing each one breaks safety; feature
//! `verify` turns on the O(n) sweeps. `engine/core/fuzz` holds cargo-fuzz targets for both
//! decoders.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
mod config;
mod error;
mod io;
mod message;
mod persist;
pub mod quorum;
mod replica;
mod slot_map;
mod types;

pub use codec::DecodeError;
pub use config::{Config, Mutation};
pub use error::{ConfigError, MembershipError};
pub use io::{AbortReason, Command, Event, PersistOp, PersistToken, ReadId, ReadRefusal, Role};
pub use message::Message;
pub use persist::PersistentState;
pub use replica::Replica;
pub use slot_map::SlotMap;
/// The inline-list crate behind [`AcceptedEntries`] and [`AcceptedSlots`] (re-exported so a
/// host can build them: `keel_core::smallvec::smallvec![..]`, or `.into()` from a `Vec`).
pub use smallvec;
pub use types::{
    AcceptedEntries, AcceptedEntry, AcceptedSlots, Ballot, Batch, Decree, Membership,
    MembershipChange, Payload, Proposal, ProposalId, ReplicaId, Slot, SlotDecree, SlotDecrees,
    Snapshot, SnapshotMeta,
};
