//! Messages between replicas. Encoded for the wire by [`crate::codec`].

use crate::types::{
    AcceptedEntry, AcceptedSlots, Ballot, ReplicaId, Slot, SlotDecree, SlotDecrees, Snapshot,
};

/// A message from one replica to another. The sender is given by the transport
/// ([`crate::Event::Message::from`]); messages whose ballot names a leader other than the sender
/// where it must be the sender are dropped as malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Pre-vote: "would you promise `ballot` if I asked?" Changes no state at the receiver, so a
    /// replica returning from a partition cannot depose a healthy leader.
    PreVote {
        /// The ballot the sender would run with (`ballot.leader` is the sender).
        ballot: Ballot,
        /// The sender's commit index; a receiver with a higher one refuses.
        commit: Slot,
    },
    /// Answer to [`Message::PreVote`].
    PreVoteReply {
        /// The ballot asked about.
        ballot: Ballot,
        /// Whether the receiver would promise it.
        granted: bool,
    },
    /// Phase 1a for every slot from `from_slot` on, at once.
    Prepare {
        /// The ballot to promise (`ballot.leader` is the sender).
        ballot: Ballot,
        /// The first slot the sender does not know to be chosen.
        from_slot: Slot,
        /// Set on a leadership transfer: the ballot of the leader that handed over. A receiver
        /// whose lease guard protects exactly that ballot's lease may promise at once (that
        /// leader gave up its lease before handing over).
        transfer_from: Option<Ballot>,
    },
    /// Phase 1b, sent only after the promise is durable.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// Echo of the prepare's `from_slot`.
        from_slot: Slot,
        /// The sender's checkpoint slot: it no longer holds accepted values at or below it.
        log_start: Slot,
        /// The sender's commit index.
        commit: Slot,
        /// Every value the sender accepted at slots `>= from_slot`.
        accepted: Vec<AcceptedEntry>,
    },
    /// Refusal of a prepare, pre-vote-free accept or heartbeat.
    Nack {
        /// The ballot refused.
        ballot: Ballot,
        /// The receiver's promise. If it is below `ballot`, the refusal was a lease guard (try
        /// later), otherwise the sender is superseded.
        promised: Ballot,
    },
    /// Phase 2a: values for consecutive or scattered slots, plus the leader's commit index.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The leader's commit index (piggybacked).
        commit: Slot,
        /// The values, in slot order (shared by every peer's copy of the message).
        entries: SlotDecrees,
    },
    /// Phase 2b, sent only after the accepted values are durable.
    Accepted {
        /// The ballot in which the values were accepted.
        ballot: Ballot,
        /// The slots accepted (inline up to four: the usual acknowledgement allocates
        /// nothing).
        slots: AcceptedSlots,
    },
    /// Leader liveness, commit index and lease/read-index confirmation.
    Heartbeat {
        /// The leader's ballot.
        ballot: Ballot,
        /// The leader's commit index.
        commit: Slot,
        /// Heartbeat sequence number (read-index confirmation).
        seq: u64,
        /// The leader's tick when it sent this (echoed for the lease).
        sent_at: u64,
    },
    /// Answer to [`Message::Heartbeat`]; the sender now guards the leader's lease.
    HeartbeatReply {
        /// The heartbeat's ballot.
        ballot: Ballot,
        /// Echo of the heartbeat's `seq`.
        seq: u64,
        /// Echo of the heartbeat's `sent_at`.
        sent_at: u64,
        /// The sender's commit index.
        commit: Slot,
    },
    /// "I know everything up to `commit`; send me what was chosen after it."
    CatchUpRequest {
        /// The sender's commit index.
        commit: Slot,
    },
    /// Chosen values for a replica that is behind (answer to [`Message::CatchUpRequest`]).
    Learn {
        /// Chosen values, consecutive, starting right after the requester's commit index.
        entries: Vec<SlotDecree>,
    },
    /// A checkpoint for a replica whose commit index is below the sender's retained log.
    InstallSnapshot {
        /// The checkpoint.
        snapshot: Snapshot,
    },
    /// Leadership transfer: "start an election now"; sent by the leader of `ballot` once the
    /// receiver is caught up.
    TimeoutNow {
        /// The handing-over leader's ballot.
        ballot: Ballot,
    },
}

impl Message {
    /// The message's kind as a short static name (for traces and metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PreVote { .. } => "PreVote",
            Message::PreVoteReply { .. } => "PreVoteReply",
            Message::Prepare { .. } => "Prepare",
            Message::Promise { .. } => "Promise",
            Message::Nack { .. } => "Nack",
            Message::Accept { .. } => "Accept",
            Message::Accepted { .. } => "Accepted",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::HeartbeatReply { .. } => "HeartbeatReply",
            Message::CatchUpRequest { .. } => "CatchUpRequest",
            Message::Learn { .. } => "Learn",
            Message::InstallSnapshot { .. } => "InstallSnapshot",
            Message::TimeoutNow { .. } => "TimeoutNow",
        }
    }

    /// The replica a message's ballot says sent it, for the kinds where that must hold.
    pub(crate) fn claimed_sender(&self) -> Option<ReplicaId> {
        match self {
            Message::PreVote { ballot, .. }
            | Message::Prepare { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Heartbeat { ballot, .. }
            | Message::TimeoutNow { ballot } => Some(ballot.leader),
            _ => None,
        }
    }
}
