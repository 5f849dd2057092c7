//! The replica state machine: [`Replica::step`] and the whole-replica invariants.

mod election;
mod reads;
mod replication;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Config, Mutation};
use crate::error::ConfigError;
use crate::io::{Command, Event, PersistOp, PersistToken, ReadId, Role};
use crate::message::Message;
use crate::persist::PersistentState;
use crate::slot_map::SlotMap;
use crate::types::{Ballot, Decree, Membership, ProposalId, ReplicaId, Slot, Snapshot};

/// Asserts a protocol contract; the panic names the replica, its ballot, commit and applied
/// slot, the failed condition and a formatted detail.
macro_rules! contract {
    ($r:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            panic!(
                "keel-core contract violated at replica {} (promised {}, commit {}, applied {}): \
                 `{}`: {}",
                $r.id, $r.promised, $r.commit, $r.applied, stringify!($cond), format_args!($($arg)+)
            );
        }
    };
}
pub(crate) use contract;

/// A multi-Paxos replica: acceptor, learner and (when elected) leader, as a pure state machine.
///
/// Drive it with [`Replica::step`]; carry out the returned [`Command`]s in order. See the crate
/// docs for the protocol and where each invariant is checked.
///
/// Membership changes use RSL's fixed-later-decree rule: a [`Decree::Membership`] chosen at slot
/// `k` governs slots from `k + alpha` on, with alpha = `Config::max_in_flight`, so the
/// membership of every slot a leader may send depends only on chosen slots. Phase 1 starts at
/// the candidate's first unchosen slot and needs a majority of the membership governing it, of
/// every chosen membership not yet in force, and of every membership decree found in the
/// promises (so a change that may have been chosen is always respected).
#[derive(Debug)]
pub struct Replica {
    id: ReplicaId,
    config: Config,
    rng: ChaCha8Rng,
    /// Ticks seen by this incarnation.
    now: u64,

    // Acceptor state (durable through `Persist` commands).
    promised: Ballot,
    /// Token of the latest `SavePromise` (a promise is released once it is durable).
    promise_token: PersistToken,
    /// Accepted values by slot (dense above the checkpoint: a ring, see [`SlotMap`]).
    accepted: SlotMap<(Ballot, Decree)>,

    // Learner state.
    /// Slot of the latest checkpoint; no accepted values are kept at or below it.
    log_start: Slot,
    snapshot: Option<Snapshot>,
    /// Every slot in `(decided_floor, commit]` has its chosen value here; chosen values above
    /// `commit` wait here for the gap below them to fill.
    decided: SlotMap<Decree>,
    decided_floor: Slot,
    commit: Slot,
    applied: Slot,
    /// Membership by the first slot it governs (committed memberships only).
    configs: BTreeMap<Slot, Membership>,
    last_snapshot_hint: Slot,

    // Persistence gating.
    next_token: u64,
    persisted_token: u64,
    gated: VecDeque<(PersistToken, Gated)>,

    // Roles and timers.
    role: RoleState,
    reported_role: Option<Role>,
    leader_hint: Option<ReplicaId>,
    last_leader_contact: Option<u64>,
    election_deadline: u64,
    /// This replica promises no other leader before this tick (it acknowledged a lease).
    lease_guard_until: u64,
    /// The ballot whose lease the guard protects.
    lease_guard_ballot: Ballot,
    max_round_seen: u64,
    electable: bool,

    // Reads served on any replica.
    fast_reads: Vec<FastRead>,

    /// Highest promise seen at the end of a step (ballot monotonicity across steps).
    promised_high_water: Ballot,

    /// Inside [`Replica::step_batch`]: cutting and sending decrees waits for the batch's end.
    batching: bool,
    /// A handler wanted to cut or send decrees during the current step batch.
    pump_deferred: bool,
    /// Reused by the leader for the replicas each batch and heartbeat goes to.
    targets_scratch: Vec<ReplicaId>,
    /// Reused by the leader to gather the values of one phase 2a.
    entries_scratch: Vec<crate::types::SlotDecree>,
    /// Reused by a follower for the slots a commit index makes chosen.
    chosen_scratch: Vec<(Slot, Decree)>,
    /// Phase 2a value lists the leader sent earlier, reused once nothing else holds them.
    spare_entries: Vec<crate::types::SlotDecrees>,
    /// Reused by the leader to gather heartbeat acknowledgements for its lease.
    acks_scratch: Vec<u64>,
    /// Batches a checkpoint released from the decided log, reused for new ones.
    released_batches: crate::types::ReleasedBatches,
}

/// A message or internal vote released once a persist token is durable.
#[derive(Debug)]
enum Gated {
    Send {
        to: ReplicaId,
        msg: Message,
    },
    SelfPromised {
        ballot: Ballot,
    },
    SelfAccepted {
        ballot: Ballot,
        entries: crate::types::SlotDecrees,
    },
}

#[derive(Debug)]
enum RoleState {
    Follower,
    PreCandidate(PreCandidate),
    Candidate(Box<Candidate>),
    Leader(Box<Leader>),
}

#[derive(Debug)]
struct PreCandidate {
    ballot: Ballot,
    grants: BTreeSet<ReplicaId>,
    deadline: u64,
}

#[derive(Debug)]
struct PromiseInfo {
    accepted: Vec<crate::types::AcceptedEntry>,
}

#[derive(Debug)]
struct Candidate {
    ballot: Ballot,
    from_slot: Slot,
    self_promised: bool,
    promises: BTreeMap<ReplicaId, PromiseInfo>,
    contacted: BTreeSet<ReplicaId>,
    transfer_from: Option<Ballot>,
    deadline: u64,
}

#[derive(Debug)]
struct InFlight {
    decree: Decree,
    /// Voters that acknowledged (a `Vec` so a duplicate is visible to the contract check).
    acks: Vec<ReplicaId>,
    sent: bool,
    /// Tick of the first phase 2a for this slot (retransmission pacing).
    sent_at: u64,
}

#[derive(Debug, Default, Clone)]
struct Peer {
    /// Highest `sent_at` of a heartbeat this peer acknowledged in this ballot.
    hb_ack_sent_at: Option<u64>,
    /// Highest heartbeat `seq` acknowledged in this ballot.
    hb_ack_seq: u64,
    /// The peer's last reported commit index.
    commit: Slot,
    /// Tick at which a snapshot was last sent (to pace large transfers).
    snapshot_sent_at: Option<u64>,
    /// CheckQuorum: tick of the peer's latest reply in this ballot (heartbeat reply or
    /// acceptance); the election tick for the members at election, the first leader tick that
    /// needs it for a voter met later. Never ahead of `now`.
    heard_at: Option<u64>,
}

#[derive(Debug)]
enum Queued {
    Request {
        id: ProposalId,
        payload: Vec<u8>,
    },
    Membership {
        id: ProposalId,
        membership: Membership,
    },
}

#[derive(Debug)]
struct LinearRead {
    id: ReadId,
    slot: Slot,
    seq_needed: u64,
    deadline: u64,
}

#[derive(Debug)]
struct FastRead {
    id: ReadId,
    min_slot: Slot,
    deadline: u64,
}

#[derive(Debug)]
struct Transfer {
    to: ReplicaId,
    deadline: u64,
}

#[derive(Debug)]
struct Leader {
    ballot: Ballot,
    /// The next slot to give a value.
    next_slot: Slot,
    /// The lowest slot whose phase 2a has not gone out yet.
    next_send: Slot,
    /// Slots above the commit index that hold a value in this ballot.
    in_flight: BTreeMap<Slot, InFlight>,
    queue: VecDeque<Queued>,
    /// Vote lists of committed slots, reused for new ones (at most `max_in_flight`).
    spare_acks: Vec<Vec<ReplicaId>>,

    /// Where `cut_batch` gathers a decree's requests (reused: keeps its capacity).
    batch_scratch: Vec<crate::types::Proposal>,
    peers: BTreeMap<ReplicaId, Peer>,
    hb_seq: u64,
    last_heartbeat_at: u64,
    /// Lease reads are allowed strictly before this tick.
    lease_until: u64,
    /// Whether a majority acknowledged a heartbeat in this ballot (a lease ever held).
    lease_held: bool,
    reads: VecDeque<LinearRead>,
    transfer: Option<Transfer>,
    /// The host's id of each membership change in flight, by slot (reported on abort).
    change_ids: BTreeMap<Slot, ProposalId>,
}

impl Replica {
    /// A fresh replica with nothing durable yet (first start of a cluster member, or a new
    /// replica about to join as a learner). `seed` drives its election jitter.
    pub fn new(id: ReplicaId, config: Config, seed: u64) -> Result<Replica, ConfigError> {
        Replica::recover(id, config, PersistentState::default(), seed)
    }

    /// A replica restarting from what it had made durable. The host restores its state
    /// machine from `state.snapshot` (if any) before carrying out any command; the replica then
    /// re-learns and re-applies the chosen decrees after it.
    pub fn recover(
        id: ReplicaId,
        config: Config,
        state: PersistentState,
        seed: u64,
    ) -> Result<Replica, ConfigError> {
        config.validate()?;
        let log_start = state.snapshot_slot();
        let mut configs = BTreeMap::new();
        match &state.snapshot {
            Some(s) => {
                configs.insert(s.meta.slot + 1, s.meta.membership.clone());
            }
            None => {
                configs.insert(0, config.initial_membership.clone());
            }
        }
        let promised = state
            .accepted
            .values()
            .map(|e| e.ballot)
            .fold(state.promised, Ballot::max);
        let accepted = state
            .accepted
            .into_values()
            .filter(|e| e.slot > log_start)
            .map(|e| (e.slot, (e.ballot, e.decree)))
            .collect();
        let mut r = Replica {
            id,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            promised,
            promise_token: PersistToken(0),
            accepted,
            log_start,
            snapshot: state.snapshot,
            decided: SlotMap::new(),
            decided_floor: log_start,
            commit: log_start,
            applied: log_start,
            configs,
            last_snapshot_hint: log_start,
            next_token: 1,
            persisted_token: 0,
            gated: VecDeque::new(),
            role: RoleState::Follower,
            reported_role: None,
            leader_hint: None,
            last_leader_contact: None,
            election_deadline: 0,
            // We may have acknowledged a lease just before the crash: guard it.
            lease_guard_until: config.lease_ticks,
            lease_guard_ballot: promised,
            max_round_seen: promised.round,
            electable: true,
            fast_reads: Vec::new(),
            promised_high_water: promised,
            batching: false,
            pump_deferred: false,
            targets_scratch: Vec::new(),
            chosen_scratch: Vec::new(),
            entries_scratch: Vec::new(),
            spare_entries: Vec::new(),
            acks_scratch: Vec::new(),
            released_batches: crate::types::ReleasedBatches::default(),
            config,
        };
        r.reset_election_timer();
        r.reported_role = Some(r.role_now());
        r.validate();
        Ok(r)
    }

    /// Feeds one event and appends the resulting commands to `out`.
    ///
    /// Every handler checks its pre- and postconditions; [`Replica::validate`] holds before and
    /// after (the simulator calls it after every step).
    pub fn step(&mut self, event: Event, out: &mut Vec<Command>) {
        let promised_before = self.promised;
        let commit_before = self.commit;
        match event {
            Event::Tick => self.on_tick(out),
            Event::Propose { id, payload } => self.on_propose(id, payload, out),
            Event::Message { from, msg } => self.on_message(from, msg, out),
            Event::Persisted { token } => self.on_persisted(token, out),
            Event::SnapshotTaken { slot, data } => self.on_snapshot_taken(slot, data, out),
            Event::Read { id } => self.on_read(id, out),
            Event::FastRead { id, min_slot } => self.on_fast_read(id, min_slot, out),
            Event::ChangeMembership { id, change } => self.on_change_membership(id, change, out),
            Event::TransferLeadership { to } => self.on_transfer_leadership(to, out),
            Event::Relinquish => self.on_relinquish(out),
            Event::SetElectable(on) => {
                self.electable = on;
                if !on && matches!(self.role, RoleState::PreCandidate(_)) {
                    self.role = RoleState::Follower;
                }
            }
        }
        self.report_role(out);
        // Postconditions of every step.
        contract!(
            self,
            self.promised >= promised_before,
            "promise regressed from {promised_before}"
        );
        contract!(
            self,
            self.commit >= commit_before,
            "commit regressed from {commit_before}"
        );
        self.promised_high_water = self.promised;
    }

    /// Feeds a batch of events (everything the host collected in one pass of its loop), then
    /// cuts decrees **once** for every request queued by the batch: proposals that arrived
    /// together join one decree (group commit), still bounded by `Config::max_batch_count`,
    /// `Config::max_batch_bytes` and the `Config::max_in_flight` window.
    ///
    /// The same as calling [`Replica::step`] for each event, except that while the batch runs
    /// the leader only queues: it cuts and sends phase 2a at the end. With `step` one at a time
    /// every proposal that finds the window open becomes its own decree.
    pub fn step_batch(&mut self, events: impl IntoIterator<Item = Event>, out: &mut Vec<Command>) {
        contract!(self, !self.batching, "step_batch entered twice");
        self.batching = true;
        for event in events {
            self.step(event, out);
        }
        self.batching = false;
        if std::mem::take(&mut self.pump_deferred) {
            let commit_before = self.commit;
            self.pump(out);
            self.report_role(out);
            contract!(
                self,
                self.commit == commit_before,
                "cutting decrees moved the commit index"
            );
        }
        contract!(self, !self.pump_deferred, "a deferred send was left behind");
    }

    /// Convenience wrapper around [`Replica::step`] returning a fresh command list.
    pub fn step_collect(&mut self, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        self.step(event, &mut out);
        out
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The role as last reported.
    pub fn role(&self) -> Role {
        self.role_now()
    }

    /// The highest ballot promised.
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// The leader's ballot if this replica leads.
    pub fn leader_ballot(&self) -> Option<Ballot> {
        match &self.role {
            RoleState::Leader(l) => Some(l.ballot),
            _ => None,
        }
    }

    /// The leader this replica last heard from (itself when it leads).
    pub fn leader_hint(&self) -> Option<ReplicaId> {
        self.leader_hint
    }

    /// Every slot up to this one is known chosen.
    pub fn commit_index(&self) -> Slot {
        self.commit
    }

    /// Every slot up to this one has been handed to the host with [`Command::Apply`].
    pub fn applied_index(&self) -> Slot {
        self.applied
    }

    /// The slot of the latest checkpoint (0 without one).
    pub fn snapshot_slot(&self) -> Slot {
        self.log_start
    }

    /// The newest membership this replica knows chosen: the one the next membership change
    /// applies to. It governs slots from `decree slot + Config::membership_alpha()` on, which
    /// may still be ahead of the commit index (see [`Replica::governing_membership`]).
    pub fn membership(&self) -> &Membership {
        self.latest_membership()
    }

    /// The membership governing the slot after the commit index: who votes now.
    pub fn governing_membership(&self) -> &Membership {
        self.membership_at(self.commit + 1)
    }

    /// The membership governing `slot`, as far as this replica knows (exact for every slot up
    /// to `commit_index() + Config::membership_alpha()`).
    pub fn membership_for_slot(&self, slot: Slot) -> &Membership {
        self.membership_at(slot)
    }

    /// The ticks seen by this incarnation.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The value this replica accepted at `slot`, and in which ballot.
    pub fn accepted_at(&self, slot: Slot) -> Option<(Ballot, &Decree)> {
        self.accepted.get(&slot).map(|(b, d)| (*b, d))
    }

    /// The chosen value at `slot`, if this replica knows it and still holds it.
    pub fn chosen_at(&self, slot: Slot) -> Option<&Decree> {
        self.decided.get(&slot)
    }

    /// If this replica leads and may serve lease reads now, the tick the lease ends (exclusive).
    pub fn lease_until(&self) -> Option<u64> {
        match &self.role {
            RoleState::Leader(l) if self.lease_valid(l) => Some(l.lease_until),
            _ => None,
        }
    }

    /// The configuration this replica runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Checks the whole-replica invariants; panics with context when one fails.
    ///
    /// Always on: applied <= commit, checkpoint <= applied, every accepted ballot <= promise,
    /// no accepted value at or below the checkpoint, every decided slot present up to commit,
    /// the leader's ballot equals its promise and its in-flight slots lie above the commit
    /// index and below its next slot, its values match what it accepted itself, the persisted
    /// token never passes the issued one. With the `verify` feature also O(n) sweeps of the log.
    pub fn validate(&self) {
        contract!(self, self.applied <= self.commit, "applied above commit");
        contract!(
            self,
            self.log_start <= self.applied,
            "checkpoint above applied"
        );
        contract!(
            self,
            self.decided_floor <= self.log_start,
            "decided floor above checkpoint"
        );
        contract!(
            self,
            self.decided_floor <= self.commit,
            "decided floor above commit"
        );
        contract!(
            self,
            self.persisted_token < self.next_token,
            "persisted an unissued token"
        );
        contract!(
            self,
            self.promised >= self.promised_high_water,
            "promise regressed"
        );
        contract!(
            self,
            self.configs
                .range(..=self.log_start + 1)
                .next_back()
                .is_some(),
            "no membership governs slot {}",
            self.log_start + 1
        );
        if let Some((&first, _)) = self.accepted.iter().next() {
            contract!(
                self,
                first > self.log_start,
                "accepted slot {first} under checkpoint"
            );
        }
        if self.commit > self.decided_floor {
            contract!(
                self,
                self.decided.contains_key(&self.commit),
                "commit {} has no decided value",
                self.commit
            );
        }
        if let Some((&first, _)) = self.decided.iter().next() {
            contract!(
                self,
                first > self.decided_floor,
                "decided slot {first} at or below floor"
            );
        }
        match &self.role {
            RoleState::Follower => {}
            RoleState::PreCandidate(p) => {
                contract!(
                    self,
                    p.ballot > self.promised,
                    "pre-vote ballot {} not above promise",
                    p.ballot
                );
            }
            RoleState::Candidate(c) => {
                contract!(
                    self,
                    c.ballot == self.promised,
                    "candidate ballot {} is not the promise",
                    c.ballot
                );
                contract!(
                    self,
                    c.from_slot <= self.commit + 1,
                    "candidate from_slot {}",
                    c.from_slot
                );
            }
            RoleState::Leader(l) => {
                contract!(
                    self,
                    l.ballot == self.promised,
                    "leader ballot {} is not the promise",
                    l.ballot
                );
                contract!(
                    self,
                    l.next_send <= l.next_slot,
                    "sent past the assigned slots"
                );
                contract!(
                    self,
                    l.next_slot > self.commit,
                    "next slot {} not above commit",
                    l.next_slot
                );
                if let Some((&lo, _)) = l.in_flight.iter().next() {
                    contract!(
                        self,
                        lo > self.commit,
                        "in-flight slot {lo} at or below commit"
                    );
                }
                if let Some((&hi, _)) = l.in_flight.iter().next_back() {
                    contract!(
                        self,
                        hi < l.next_slot,
                        "in-flight slot {hi} not below next slot"
                    );
                }
                contract!(
                    self,
                    (l.in_flight.len() as u64) < l.next_slot - self.commit,
                    "more in flight than assigned"
                );
                contract!(
                    self,
                    self.leader_hint == Some(self.id),
                    "leader's hint is not itself"
                );
                if let Some((peer, t)) = l
                    .peers
                    .iter()
                    .find_map(|(id, p)| p.heard_at.filter(|t| *t > self.now).map(|t| (id, t)))
                {
                    contract!(self, false, "peer {peer} heard at {t}, in the future");
                }
            }
        }
        #[cfg(feature = "verify")]
        self.validate_sweep();
    }

    #[cfg(feature = "verify")]
    fn validate_sweep(&self) {
        for (slot, (ballot, _)) in self.accepted.iter() {
            contract!(
                self,
                *ballot <= self.promised,
                "accepted ballot {ballot} at slot {slot} above promise"
            );
        }
        for slot in (self.decided_floor + 1)..=self.commit {
            contract!(
                self,
                self.decided.contains_key(&slot),
                "decided value missing at slot {slot}"
            );
        }
        if let RoleState::Leader(l) = &self.role {
            for (slot, f) in &l.in_flight {
                if let Some((b, d)) = self.accepted.get(slot)
                    && f.sent
                    && *b == l.ballot
                {
                    contract!(
                        self,
                        *d == f.decree,
                        "leader's own accepted value differs at slot {slot}"
                    );
                }
                if let Some(d) = self.decided.get(slot) {
                    contract!(
                        self,
                        *d == f.decree,
                        "in-flight value at slot {slot} differs from chosen"
                    );
                }
            }
        }
    }

    // ---- helpers shared by the handler modules ----

    /// Refuses a phase-1 or phase-2 message from `from` at `ballot`, below our promise: the
    /// Nack names the promise so the sender can step down or raise its ballot.
    fn send_nack(&self, from: ReplicaId, ballot: Ballot, out: &mut Vec<Command>) {
        out.push(Command::Send {
            to: from,
            msg: Message::Nack {
                ballot,
                promised: self.promised,
            },
        });
    }

    fn membership_at(&self, slot: Slot) -> &Membership {
        match self.configs.range(..=slot).next_back() {
            Some((_, m)) => m,
            None => &self.config.initial_membership,
        }
    }

    /// The newest membership this replica knows to be in force.
    fn latest_membership(&self) -> &Membership {
        match self.configs.iter().next_back() {
            Some((_, m)) => m,
            None => &self.config.initial_membership,
        }
    }

    /// The membership that votes now (governs the slot after the commit index).
    fn governing(&self) -> &Membership {
        self.membership_at(self.commit + 1)
    }

    fn is_voter(&self) -> bool {
        self.governing().voters.contains(&self.id)
    }

    fn mutation_on(&self, m: Mutation) -> bool {
        self.config.mutation_on(m)
    }

    fn role_now(&self) -> Role {
        match &self.role {
            RoleState::Leader(_) => Role::Leader,
            RoleState::Candidate(_) | RoleState::PreCandidate(_) => Role::Candidate,
            RoleState::Follower if self.is_voter() => Role::Follower,
            RoleState::Follower => Role::Learner,
        }
    }

    fn report_role(&mut self, out: &mut Vec<Command>) {
        let role = self.role_now();
        if self.reported_role != Some(role) {
            self.reported_role = Some(role);
            out.push(Command::RoleChanged {
                role,
                ballot: self.promised,
                leader: self.leader_hint,
            });
        }
    }

    fn reset_election_timer(&mut self) {
        let lo = self.config.election_timeout_min_ticks;
        let hi = self.config.election_timeout_max_ticks;
        self.election_deadline = self.now + self.rng.random_range(lo..hi);
    }

    fn persist(&mut self, op: PersistOp, out: &mut Vec<Command>) -> PersistToken {
        let token = PersistToken(self.next_token);
        self.next_token += 1;
        out.push(Command::Persist { token, op });
        token
    }

    /// Releases `gated` once `token` is durable (at once if it already is).
    fn after_persist(&mut self, token: PersistToken, gated: Gated, out: &mut Vec<Command>) {
        if token.0 <= self.persisted_token {
            self.release(gated, out);
        } else {
            self.gated.push_back((token, gated));
        }
    }

    fn release(&mut self, gated: Gated, out: &mut Vec<Command>) {
        match gated {
            Gated::Send { to, msg } => out.push(Command::Send { to, msg }),
            Gated::SelfPromised { ballot } => self.on_self_promised(ballot, out),
            Gated::SelfAccepted { ballot, entries } => self.on_self_accepted(ballot, &entries, out),
        }
    }

    fn on_persisted(&mut self, token: PersistToken, out: &mut Vec<Command>) {
        contract!(
            self,
            token.0 < self.next_token,
            "persisted token {} was never issued",
            token.0
        );
        contract!(
            self,
            token.0 >= self.persisted_token,
            "persisted token {} below earlier report {}",
            token.0,
            self.persisted_token
        );
        self.persisted_token = token.0;
        while let Some((t, _)) = self.gated.front() {
            if t.0 > self.persisted_token {
                break;
            }
            if let Some((_, g)) = self.gated.pop_front() {
                self.release(g, out);
            }
        }
        contract!(
            self,
            self.gated
                .front()
                .is_none_or(|(t, _)| t.0 > self.persisted_token),
            "a durable message is still held"
        );
    }

    fn on_tick(&mut self, out: &mut Vec<Command>) {
        self.now += 1;
        match &self.role {
            RoleState::Leader(_) => {
                if !self.check_quorum(out) {
                    self.leader_tick(out);
                }
            }
            RoleState::Follower => {
                if self.now >= self.election_deadline {
                    self.start_pre_vote(out);
                }
            }
            RoleState::PreCandidate(p) => {
                if self.now >= p.deadline {
                    self.role = RoleState::Follower;
                    self.start_pre_vote(out);
                }
            }
            RoleState::Candidate(c) => {
                if self.now >= c.deadline {
                    self.role = RoleState::Follower;
                    self.start_pre_vote(out);
                }
            }
        }
        self.expire_reads(out);
    }

    fn on_message(&mut self, from: ReplicaId, msg: Message, out: &mut Vec<Command>) {
        if from == self.id {
            return; // a transport echo; nothing to learn from ourselves
        }
        if msg.claimed_sender().is_some_and(|s| s != from) {
            return; // malformed: the ballot names another leader
        }
        self.note_heard(from, &msg);
        match msg {
            Message::PreVote { ballot, commit } => self.on_pre_vote(from, ballot, commit, out),
            Message::PreVoteReply { ballot, granted } => {
                self.on_pre_vote_reply(from, ballot, granted, out)
            }
            Message::Prepare {
                ballot,
                from_slot,
                transfer_from,
            } => self.on_prepare(from, ballot, from_slot, transfer_from, out),
            Message::Promise {
                ballot,
                from_slot,
                log_start,
                commit,
                accepted,
            } => self.on_promise(from, ballot, from_slot, log_start, commit, accepted, out),
            Message::Nack { ballot, promised } => self.on_nack(ballot, promised, out),
            Message::Accept {
                ballot,
                commit,
                entries,
            } => self.on_accept(from, ballot, commit, entries, out),
            Message::Accepted { ballot, slots } => self.on_accepted(from, ballot, &slots, out),
            Message::Heartbeat {
                ballot,
                commit,
                seq,
                sent_at,
            } => self.on_heartbeat(from, ballot, commit, seq, sent_at, out),
            Message::HeartbeatReply {
                ballot,
                seq,
                sent_at,
                commit,
            } => self.on_heartbeat_reply(from, ballot, seq, sent_at, commit, out),
            Message::CatchUpRequest { commit } => self.on_catch_up_request(from, commit, out),
            Message::Learn { entries } => self.on_learn(from, entries, out),
            Message::InstallSnapshot { snapshot } => self.on_install_snapshot(from, snapshot, out),
            Message::TimeoutNow { ballot } => self.on_timeout_now(from, ballot, out),
        }
    }

    /// Raises the promise to `ballot` (durably) and steps down from any role of a lower ballot.
    /// Returns the token of the `SavePromise`.
    fn raise_promise(&mut self, ballot: Ballot, out: &mut Vec<Command>) -> PersistToken {
        contract!(
            self,
            ballot > self.promised,
            "raise_promise({ballot}) is not a raise"
        );
        self.promised = ballot;
        self.max_round_seen = self.max_round_seen.max(ballot.round);
        if !matches!(self.role, RoleState::Follower) {
            self.step_down(
                if ballot.leader == self.id {
                    None
                } else {
                    Some(ballot.leader)
                },
                out,
            );
        }
        self.promise_token = self.persist(PersistOp::SavePromise { ballot }, out);
        contract!(self, self.promised == ballot, "promise not recorded");
        self.promise_token
    }

    /// Leaves any leader or candidate role for follower, aborting what the leader held.
    fn step_down(&mut self, hint: Option<ReplicaId>, out: &mut Vec<Command>) {
        let old = std::mem::replace(&mut self.role, RoleState::Follower);
        self.leader_hint = hint;
        if let RoleState::Leader(l) = old {
            self.abort_leader_work(*l, hint, out);
        }
        self.reset_election_timer();
        contract!(
            self,
            matches!(self.role, RoleState::Follower),
            "step_down left a role"
        );
    }

    /// The highest slot a leader has given a value (tests only).
    #[cfg(all(test, feature = "mutations"))]
    fn in_flight_max(&self) -> Slot {
        match &self.role {
            RoleState::Leader(l) => l.next_slot - 1,
            _ => self.commit,
        }
    }
}

#[cfg(test)]
mod tests;
