//! What goes into a replica ([`Event`]) and what comes out ([`Command`]).

use crate::error::MembershipError;
use crate::message::Message;
use crate::types::{
    AcceptedEntries, Ballot, Decree, Membership, MembershipChange, ProposalId, ReplicaId, Slot,
    Snapshot,
};

/// Names one persist command; the host reports it durable with [`Event::Persisted`].
///
/// Tokens increase by one per [`Command::Persist`] within one incarnation of a replica (they
/// restart at 1 after [`crate::Replica::recover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PersistToken(pub u64);

/// The host's name for a read request, echoed in the read's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReadId(pub u64);

/// An input to [`crate::Replica::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One unit of logical time passed on this replica's clock.
    Tick,
    /// A client request to replicate. Outcome: it appears inside a [`Decree::Batch`] in a
    /// [`Command::Apply`], or a [`Command::ProposalAborted`] names it.
    Propose {
        /// The host's id for the request.
        id: ProposalId,
        /// The request.
        payload: Vec<u8>,
    },
    /// A message from a peer (delivered at most once per call; duplicates are tolerated).
    Message {
        /// The sender, as authenticated by the transport.
        from: ReplicaId,
        /// The message.
        msg: Message,
    },
    /// Every persist command with a token up to and including `token` is durable.
    Persisted {
        /// The highest durable token.
        token: PersistToken,
    },
    /// The host's state machine checkpointed every decree up to and including `slot`
    /// (`slot` must not exceed the highest slot applied).
    SnapshotTaken {
        /// The last slot in the checkpoint.
        slot: Slot,
        /// The serialized state machine.
        data: Vec<u8>,
    },
    /// A linearizable read (leader only). Outcome: [`Command::ReadReady`] or
    /// [`Command::ReadRefused`].
    Read {
        /// The host's id for the read.
        id: ReadId,
    },
    /// An RSL session-consistent read on any replica: serve once the state machine has applied
    /// `min_slot` (the highest slot the client has seen). Refused with
    /// [`ReadRefusal::Lagging`] if this replica is more than `Config::fast_read_lag_max` behind.
    FastRead {
        /// The host's id for the read.
        id: ReadId,
        /// The highest slot the client has observed.
        min_slot: Slot,
    },
    /// Replicate a membership change (leader only).
    ChangeMembership {
        /// The host's id for the change (reported in an abort).
        id: ProposalId,
        /// The change.
        change: MembershipChange,
    },
    /// Hand leadership to voter `to` once it is caught up (leader only; ignored elsewhere).
    TransferLeadership {
        /// The next leader.
        to: ReplicaId,
    },
    /// Step down from leadership now and do not run again for one election timeout.
    Relinquish,
    /// The may-I-become-primary veto: while `false`, this replica never runs for leader (it
    /// still votes and accepts).
    SetElectable(bool),
}

/// Something durable to record, in order. [`crate::PersistentState::apply`] is the reference
/// meaning of each operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistOp {
    /// Record the promised ballot (it only grows).
    SavePromise {
        /// The new promise.
        ballot: Ballot,
    },
    /// Record accepted values, each replacing any earlier value at its slot.
    Append {
        /// The values (inline up to two: the usual append allocates nothing).
        entries: AcceptedEntries,
    },
    /// Record a checkpoint; accepted values at or below its slot may then be discarded.
    SaveSnapshot {
        /// The checkpoint.
        snapshot: Snapshot,
    },
}

/// Why a proposal did not (or may not) make it into the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortReason {
    /// This replica is not the leader; `hint` is the leader it last heard from.
    NotLeader {
        /// Where to retry.
        hint: Option<ReplicaId>,
    },
    /// Leadership was lost after the proposal got a slot: the outcome is unknown, the proposal
    /// may still be chosen and applied.
    LeadershipLost {
        /// Where to ask.
        hint: Option<ReplicaId>,
    },
    /// The payload exceeds `Config::max_payload_bytes`.
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The leader's proposal queue is full.
    Overloaded,
    /// Another membership change is not yet chosen.
    MembershipChangeInProgress,
    /// The membership change does not apply to the current membership.
    Membership(MembershipError),
}

/// Why a read was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRefusal {
    /// Linearizable reads are served by the leader; `hint` is the leader last heard from.
    NotLeader {
        /// Where to retry.
        hint: Option<ReplicaId>,
    },
    /// The replica's applied slot is more than `lag_max` below the client's `min_slot`.
    Lagging {
        /// This replica's applied slot.
        applied: Slot,
        /// The slot the client has seen.
        min_slot: Slot,
        /// The configured bound.
        lag_max: Slot,
    },
    /// Too many reads pending.
    Overloaded,
    /// Not served within `Config::read_timeout_ticks`.
    Timeout,
}

/// A replica's role as reported by [`Command::RoleChanged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A voter following a leader (or waiting for one).
    Follower,
    /// A voter running phase 1 (or a pre-vote).
    Candidate,
    /// The replica that proposes; "primary" in RSL.
    Leader,
    /// A non-voter (a learner, or a replica not in the membership).
    Learner,
}

/// An output of [`crate::Replica::step`], for the host to carry out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Make `op` durable, after every earlier persist, then report [`Event::Persisted`].
    Persist {
        /// Names this operation.
        token: PersistToken,
        /// What to record.
        op: PersistOp,
    },
    /// Send `msg` to `to` (best effort: it may be lost, duplicated or reordered).
    Send {
        /// The destination.
        to: ReplicaId,
        /// The message.
        msg: Message,
    },
    /// `decree` is chosen at `slot`: execute it. Emitted exactly once per slot per incarnation,
    /// in slot order, with no gaps after the last checkpoint.
    Apply {
        /// The slot.
        slot: Slot,
        /// The chosen value.
        decree: Decree,
    },
    /// The log has grown `Config::snapshot_interval` past the last checkpoint: checkpoint the
    /// state machine (it has applied exactly `slot`) and report [`Event::SnapshotTaken`].
    TakeSnapshot {
        /// The slot the state machine is at.
        slot: Slot,
    },
    /// Replace the state machine with this checkpoint (catch-up from a peer). The next
    /// [`Command::Apply`] is for `snapshot.meta.slot + 1`.
    InstallSnapshot {
        /// The checkpoint.
        snapshot: Snapshot,
    },
    /// A proposal will not be (or may not have been) applied.
    ProposalAborted {
        /// The proposal.
        id: ProposalId,
        /// Why.
        reason: AbortReason,
    },
    /// Serve read `id` now from the state machine: it has applied `slot`, which covers
    /// everything the read must see.
    ReadReady {
        /// The read.
        id: ReadId,
        /// The slot the state machine has applied.
        slot: Slot,
    },
    /// Read `id` is refused.
    ReadRefused {
        /// The read.
        id: ReadId,
        /// Why.
        reason: ReadRefusal,
    },
    /// This replica's role changed (emitted at the end of the step that changed it).
    RoleChanged {
        /// The new role.
        role: Role,
        /// The replica's promised ballot.
        ballot: Ballot,
        /// The leader it knows of, if any.
        leader: Option<ReplicaId>,
    },
    /// The membership decree at `slot` was applied. It governs every slot from
    /// `slot + Config::membership_alpha()` on (RSL's alpha; slots before that keep the previous
    /// membership). The leader fills the gap with no-ops so the change comes into force at once.
    MembershipChanged {
        /// The slot of the membership decree.
        slot: Slot,
        /// The new membership.
        membership: Membership,
    },
}
