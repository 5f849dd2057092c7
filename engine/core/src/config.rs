//! Replica configuration: every limit and timeout, fixed at construction.

use crate::types::Membership;

/// Limits and timeouts of one replica. All durations are in logical ticks
/// ([`crate::Event::Tick`]); the host decides how long a tick is.
///
/// Every cluster member should run with the same values (timeouts may differ, but the lease
/// and drift figures must agree for lease reads to be safe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The membership at slot 0 (bootstrap). Later memberships come from the log or a snapshot.
    /// A replica joining later is created with the same bootstrap membership and learns the
    /// rest from the log.
    pub initial_membership: Membership,
    /// A leader sends a heartbeat (carrying the commit index) every this many ticks.
    pub heartbeat_ticks: u64,
    /// A follower that hears no leader for a random time in
    /// `[election_timeout_min_ticks, election_timeout_max_ticks)` runs a pre-vote.
    pub election_timeout_min_ticks: u64,
    /// Upper (exclusive) bound of the randomized election timeout.
    pub election_timeout_max_ticks: u64,
    /// Leader lease length. `0` disables leases: linearizable reads then use the read-index path
    /// (a heartbeat round confirms leadership). Must be below `election_timeout_min_ticks`.
    pub lease_ticks: u64,
    /// The most any two replicas' tick counts may drift apart over one lease period. The leader
    /// trusts its lease for `lease_ticks - clock_drift_ticks` after the heartbeat a majority
    /// acknowledged; followers refuse to promise another leader for `lease_ticks` after they
    /// acknowledged it.
    pub clock_drift_ticks: u64,
    /// At most this many slots above the commit index may be in flight (phase 2 pipeline).
    /// This is also RSL's *alpha*: a membership decree at slot `k` governs slots from
    /// `k + max_in_flight` on ([`Config::membership_alpha`]), so a leader always knows the
    /// membership of every slot it may send. All replicas must agree on it.
    pub max_in_flight: u64,
    /// At most this many client requests in one batch decree.
    pub max_batch_count: usize,
    /// At most this many payload bytes in one batch decree (a single larger request still forms
    /// a batch of its own, up to `max_payload_bytes`).
    pub max_batch_bytes: usize,
    /// Requests larger than this are refused with [`crate::AbortReason::TooLarge`].
    pub max_payload_bytes: usize,
    /// Requests queued at the leader while the pipeline is full; more are refused with
    /// [`crate::AbortReason::Overloaded`].
    pub max_queued_proposals: usize,
    /// Pending linearizable or fast reads; more are refused with
    /// [`crate::ReadRefusal::Overloaded`].
    pub max_pending_reads: usize,
    /// A fast read whose `min_slot` is more than this many slots above the replica's applied
    /// slot is refused at once with [`crate::ReadRefusal::Lagging`]; within it, the read waits.
    pub fast_read_lag_max: u64,
    /// A pending read not served within this many ticks is refused with
    /// [`crate::ReadRefusal::Timeout`].
    pub read_timeout_ticks: u64,
    /// At most this many decrees in one catch-up message to a lagging follower.
    pub max_catch_up_decrees: usize,
    /// The core asks the host for a checkpoint ([`crate::Command::TakeSnapshot`]) every this many
    /// applied slots. `0` never asks (the host may still send [`crate::Event::SnapshotTaken`]).
    pub snapshot_interval: u64,
    /// A leader keeps at least this many decided slots below its commit index after a snapshot
    /// for catch-up by log before falling back to sending the snapshot.
    pub log_retain_slots: u64,
    /// A leadership transfer not completed within this many ticks is abandoned.
    pub transfer_timeout_ticks: u64,
    /// CheckQuorum: a leader that has not heard from a majority of the voters (itself included,
    /// of every membership in play, as for its lease) for this many ticks steps down: it
    /// reports [`crate::Role::Follower`], aborts what it held and refuses reads, so clients of
    /// a leader cut off from its majority learn at once instead of by their own timeout.
    /// "Heard from" means a [`crate::Message::HeartbeatReply`] or [`crate::Message::Accepted`]
    /// in the leader's ballot. `0` disables it (the leader then leads until a higher ballot
    /// reaches it). Defaults to `election_timeout_min_ticks`; must exceed `heartbeat_ticks` and
    /// be at least `lease_ticks`, so a leader holding a valid lease never steps down.
    pub check_quorum_ticks: u64,
    /// A deliberate protocol bug for mutation testing (feature `mutations`). `None` in
    /// production.
    #[cfg(feature = "mutations")]
    pub mutation: Option<Mutation>,
}

impl Config {
    /// Defaults for a cluster of `initial_membership`: heartbeat every tick, election after
    /// 10-20 ticks, an 8-tick lease with 1 tick of drift, 32 slots in flight, 64 requests or
    /// 64 KiB per batch, a leader steps down after 10 ticks without hearing from a majority.
    pub fn new(initial_membership: Membership) -> Config {
        Config {
            initial_membership,
            heartbeat_ticks: 1,
            election_timeout_min_ticks: 10,
            election_timeout_max_ticks: 20,
            lease_ticks: 8,
            clock_drift_ticks: 1,
            max_in_flight: 32,
            max_batch_count: 64,
            max_batch_bytes: 64 * 1024,
            max_payload_bytes: 1 << 20,
            max_queued_proposals: 4096,
            max_pending_reads: 4096,
            fast_read_lag_max: 64,
            read_timeout_ticks: 40,
            max_catch_up_decrees: 64,
            snapshot_interval: 0,
            log_retain_slots: 64,
            transfer_timeout_ticks: 20,
            check_quorum_ticks: 10,
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }

    /// Checks the relations between the figures that safety and liveness depend on.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError as E;
        if self.initial_membership.voters.is_empty() {
            return Err(E::NoVoters);
        }
        if let Some(id) = self
            .initial_membership
            .learners
            .iter()
            .find(|id| self.initial_membership.voters.contains(id))
        {
            return Err(E::VoterAndLearner(*id));
        }
        if self.heartbeat_ticks == 0 {
            return Err(E::Zero("heartbeat_ticks"));
        }
        if self.max_in_flight == 0 {
            return Err(E::Zero("max_in_flight"));
        }
        if self.max_batch_count == 0 {
            return Err(E::Zero("max_batch_count"));
        }
        if self.max_catch_up_decrees == 0 {
            return Err(E::Zero("max_catch_up_decrees"));
        }
        if self.election_timeout_min_ticks <= self.heartbeat_ticks {
            return Err(E::ElectionTimeoutTooShort {
                election_timeout_min_ticks: self.election_timeout_min_ticks,
                floor: self.heartbeat_ticks,
            });
        }
        if self.election_timeout_max_ticks <= self.election_timeout_min_ticks {
            return Err(E::EmptyElectionRange {
                min: self.election_timeout_min_ticks,
                max: self.election_timeout_max_ticks,
            });
        }
        if self.lease_ticks > 0 {
            if self.lease_ticks >= self.election_timeout_min_ticks {
                return Err(E::ElectionTimeoutTooShort {
                    election_timeout_min_ticks: self.election_timeout_min_ticks,
                    floor: self.lease_ticks,
                });
            }
            if self.clock_drift_ticks >= self.lease_ticks {
                return Err(E::DriftExceedsLease {
                    clock_drift_ticks: self.clock_drift_ticks,
                    lease_ticks: self.lease_ticks,
                });
            }
        }
        if self.check_quorum_ticks > 0 {
            // A heartbeat round trip takes at least one heartbeat period; a lease is a window
            // in which a majority was heard, so it must fit in the check-quorum window.
            let floor = self.lease_ticks.max(self.heartbeat_ticks + 1);
            if self.check_quorum_ticks < floor {
                return Err(E::CheckQuorumTooShort {
                    check_quorum_ticks: self.check_quorum_ticks,
                    floor,
                });
            }
        }
        Ok(())
    }

    /// RSL's alpha: a membership decree chosen at slot `k` governs every slot `>= k + alpha`
    /// (slots below stay with the previous membership). Equal to `max_in_flight`, so the
    /// membership of any slot a leader may send depends only on slots already chosen.
    pub fn membership_alpha(&self) -> u64 {
        self.max_in_flight
    }

    /// Whether the deliberate bug `m` is switched on. Always `false` (and free) without the
    /// `mutations` feature.
    #[inline(always)]
    pub fn mutation_on(&self, m: Mutation) -> bool {
        #[cfg(feature = "mutations")]
        {
            self.mutation == Some(m)
        }
        #[cfg(not(feature = "mutations"))]
        {
            let _ = m;
            false
        }
    }
}

/// Deliberate protocol bugs the simulator must catch (compiled in only with the `mutations`
/// feature; the enum itself always exists so code naming it compiles either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// An acceptor accepts a phase 2 message whose ballot is below its promise.
    AcceptLowerBallot,
    /// The leader counts a vote twice toward a majority: its own acceptance, and any
    /// acceptance a peer sends again (duplicate or answer to a retransmission).
    DoubleCountVote,
    /// The leader marks a slot chosen one acceptance short of a majority.
    CommitWithoutMajority,
    /// The leader serves lease reads after its lease expired.
    LeaseReadAfterExpiry,
}

impl Mutation {
    /// Every mutation, for harnesses that loop over them.
    pub const ALL: [Mutation; 4] = [
        Mutation::AcceptLowerBallot,
        Mutation::DoubleCountVote,
        Mutation::CommitWithoutMajority,
        Mutation::LeaseReadAfterExpiry,
    ];

    /// The mutation's name as written in the source (for command lines).
    pub fn name(self) -> &'static str {
        match self {
            Mutation::AcceptLowerBallot => "AcceptLowerBallot",
            Mutation::DoubleCountVote => "DoubleCountVote",
            Mutation::CommitWithoutMajority => "CommitWithoutMajority",
            Mutation::LeaseReadAfterExpiry => "LeaseReadAfterExpiry",
        }
    }

    /// The mutation called `name` (as [`Mutation::name`] spells it).
    pub fn from_name(name: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|m| m.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Membership, ReplicaId};

    fn three() -> Config {
        Config::new(Membership::with_voters([
            ReplicaId(1),
            ReplicaId(2),
            ReplicaId(3),
        ]))
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(three().validate(), Ok(()));
    }

    #[test]
    fn lease_must_end_before_election() {
        let mut c = three();
        c.lease_ticks = c.election_timeout_min_ticks;
        assert!(matches!(
            c.validate(),
            Err(crate::ConfigError::ElectionTimeoutTooShort { .. })
        ));
    }

    #[test]
    fn drift_must_be_below_lease() {
        let mut c = three();
        c.clock_drift_ticks = c.lease_ticks;
        assert!(matches!(
            c.validate(),
            Err(crate::ConfigError::DriftExceedsLease { .. })
        ));
        c.lease_ticks = 0; // leases off: drift is irrelevant
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn check_quorum_window_must_cover_a_heartbeat_and_the_lease() {
        let mut c = three();
        assert_eq!(c.check_quorum_ticks, c.election_timeout_min_ticks);
        c.check_quorum_ticks = c.lease_ticks - 1;
        assert_eq!(
            c.validate(),
            Err(crate::ConfigError::CheckQuorumTooShort {
                check_quorum_ticks: c.lease_ticks - 1,
                floor: c.lease_ticks
            })
        );
        c.check_quorum_ticks = c.lease_ticks;
        assert_eq!(c.validate(), Ok(()));
        c.lease_ticks = 0;
        c.heartbeat_ticks = 3;
        c.check_quorum_ticks = 3;
        assert_eq!(
            c.validate(),
            Err(crate::ConfigError::CheckQuorumTooShort {
                check_quorum_ticks: 3,
                floor: 4
            })
        );
        c.check_quorum_ticks = 4;
        assert_eq!(c.validate(), Ok(()));
        c.check_quorum_ticks = 0; // disabled: no floor
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn mutation_names_round_trip() {
        for m in Mutation::ALL {
            assert_eq!(Mutation::from_name(m.name()), Some(m));
        }
        assert_eq!(Mutation::from_name("nope"), None);
    }
}
