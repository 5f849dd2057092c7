//! The trait a replicated service implements.

use std::io::{Read, Write};

/// A replica's role, as reported to the state machine and in [`crate::Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Leads: proposes decrees and serves linearizable reads (RSL's "primary").
    Leader,
    /// Trying to become leader (phase 1 in progress).
    Candidate,
    /// Follows a leader (RSL's "secondary").
    Follower,
    /// Receives the log but does not vote.
    Learner,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::Candidate => "candidate",
            Role::Follower => "follower",
            Role::Learner => "learner",
        })
    }
}

/// One cluster configuration as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Membership {
    /// Voting replicas.
    pub voters: Vec<u64>,
    /// Non-voting replicas that receive the log.
    pub learners: Vec<u64>,
}

/// The replicated service. Keel calls it from the replica loop thread only, one call at a time,
/// so implementations need no locking; every call should be quick (it holds up the loop).
///
/// To ensure correctness:
/// - [`apply`](StateMachine::apply) must be deterministic: the same commands in the same order
///   leave every replica in the same state and return the same outputs. No clocks, no
///   randomness, no iteration over hash maps whose order differs between processes.
/// - [`save_checkpoint`](StateMachine::save_checkpoint) writes the whole state as of the last
///   applied decree; [`load_checkpoint`](StateMachine::load_checkpoint) replaces the whole state
///   with what a checkpoint holds (it may be called on a non-empty state machine when a lagging
///   replica receives a leader's checkpoint).
/// - Callbacks other than `apply` must not change replicated state.
pub trait StateMachine: Send + 'static {
    /// What applying one command yields; handed to the proposer's completion (and dropped on
    /// the other replicas).
    type Output: Send + 'static;

    /// Applies a committed command. Called in decree order on every replica, exactly once per
    /// command for the life of the state (a restart replays from the last checkpoint).
    /// `decree` is the log position of the batch holding the command.
    fn apply(&mut self, decree: u64, command: &[u8]) -> Self::Output;

    /// Writes a checkpoint of the whole state.
    fn save_checkpoint(&self, out: &mut dyn Write) -> std::io::Result<()>;

    /// Replaces the whole state with a checkpoint that [`save_checkpoint`] wrote.
    ///
    /// [`save_checkpoint`]: StateMachine::save_checkpoint
    fn load_checkpoint(&mut self, input: &mut dyn Read) -> std::io::Result<()>;

    /// This replica's role changed (RSL: became primary / secondary).
    fn on_role_change(&mut self, role: Role) {
        let _ = role;
    }

    /// The cluster configuration changed (a membership change was applied).
    fn on_membership_change(&mut self, membership: &Membership) {
        let _ = membership;
    }

    /// Asked before this replica campaigns for leadership; returning `false` vetoes it (RSL's
    /// "may I become primary"). A vetoing replica still votes and follows.
    fn may_become_leader(&mut self) -> bool {
        true
    }
}
