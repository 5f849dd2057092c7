//! Typed errors of the operations that can fail in normal operation.

use crate::types::ReplicaId;

/// A [`crate::Config`] whose figures cannot work together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The bootstrap membership has no voter.
    #[error("the initial membership has no voter")]
    NoVoters,
    /// A replica is both voter and learner.
    #[error("replica {0} is both a voter and a learner")]
    VoterAndLearner(ReplicaId),
    /// A figure that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// The election timeout must exceed the heartbeat interval and the lease.
    #[error("election_timeout_min_ticks ({election_timeout_min_ticks}) must exceed {floor}")]
    ElectionTimeoutTooShort {
        /// The configured minimum election timeout.
        election_timeout_min_ticks: u64,
        /// What it must exceed (heartbeat interval or lease).
        floor: u64,
    },
    /// The election timeout range is empty.
    #[error("election timeout range [{min}, {max}) is empty")]
    EmptyElectionRange {
        /// Lower bound.
        min: u64,
        /// Upper bound (exclusive).
        max: u64,
    },
    /// The drift bound swallows the whole lease.
    #[error("clock_drift_ticks ({clock_drift_ticks}) must be below lease_ticks ({lease_ticks})")]
    DriftExceedsLease {
        /// Configured drift bound.
        clock_drift_ticks: u64,
        /// Configured lease.
        lease_ticks: u64,
    },
    /// The check-quorum window is shorter than a heartbeat round or the lease.
    #[error(
        "check_quorum_ticks ({check_quorum_ticks}) must be at least {floor} (above heartbeat_ticks \
         and not below lease_ticks), or 0 to disable it"
    )]
    CheckQuorumTooShort {
        /// The configured window.
        check_quorum_ticks: u64,
        /// The smallest window accepted.
        floor: u64,
    },
}

/// A membership change that cannot apply to the current membership.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The replica to add is already a member (in the role asked for).
    #[error("replica {0} is already a member")]
    AlreadyMember(ReplicaId),
    /// The replica to remove or replace is not a member.
    #[error("replica {0} is not a member")]
    NotAMember(ReplicaId),
    /// Only learners can be promoted.
    #[error("replica {0} is not a learner")]
    NotALearner(ReplicaId),
    /// The change would leave no voter.
    #[error("the change would leave no voter")]
    NoVotersLeft,
}
