//! Phase 2 (streamed accepts with a bounded window), batching, commit and apply, heartbeats,
//! catch-up by log or checkpoint, checkpoints and membership changes.

use std::collections::BTreeSet;

use super::{Gated, InFlight, Leader, Queued, Replica, RoleState, contract};
use crate::config::Mutation;
use crate::io::{AbortReason, Command, PersistOp, PersistToken, ReadRefusal};
use crate::message::Message;
use crate::types::{
    AcceptedEntries, AcceptedEntry, AcceptedSlots, Ballot, Batch, Decree, Membership,
    MembershipChange, Proposal, ProposalId, ReleasedBatches, ReplicaId, Slot, SlotDecree,
    SlotDecrees, Snapshot, SnapshotMeta,
};

impl Replica {
    pub(super) fn on_propose(&mut self, id: ProposalId, payload: Vec<u8>, out: &mut Vec<Command>) {
        let hint = self.leader_hint;
        let max_payload = self.config.max_payload_bytes;
        let max_queue = self.config.max_queued_proposals;
        let RoleState::Leader(l) = &mut self.role else {
            out.push(Command::ProposalAborted {
                id,
                reason: AbortReason::NotLeader { hint },
            });
            return;
        };
        if let Some(t) = &l.transfer {
            let hint = Some(t.to);
            out.push(Command::ProposalAborted {
                id,
                reason: AbortReason::NotLeader { hint },
            });
            return;
        }
        if payload.len() > max_payload {
            let reason = AbortReason::TooLarge {
                len: payload.len(),
                max: max_payload,
            };
            out.push(Command::ProposalAborted { id, reason });
            return;
        }
        if l.queue.len() >= max_queue {
            out.push(Command::ProposalAborted {
                id,
                reason: AbortReason::Overloaded,
            });
            return;
        }
        l.queue.push_back(Queued::Request { id, payload });
        self.pump(out);
    }

    pub(super) fn on_change_membership(
        &mut self,
        id: ProposalId,
        change: MembershipChange,
        out: &mut Vec<Command>,
    ) {
        let hint = self.leader_hint;
        let base = self.latest_membership().clone();
        // A chosen membership not yet in force is still a change in progress.
        let pending_config = self.configs.range(self.commit + 2..).next().is_some();
        let RoleState::Leader(l) = &mut self.role else {
            out.push(Command::ProposalAborted {
                id,
                reason: AbortReason::NotLeader { hint },
            });
            return;
        };
        let pending = pending_config
            || l.in_flight
                .values()
                .any(|f| matches!(f.decree, Decree::Membership(_)))
            || l.queue
                .iter()
                .any(|q| matches!(q, Queued::Membership { .. }));
        if pending || l.transfer.is_some() {
            let reason = AbortReason::MembershipChangeInProgress;
            out.push(Command::ProposalAborted { id, reason });
            return;
        }
        match base.apply_change(&change) {
            Ok(membership) => {
                l.queue.push_back(Queued::Membership { id, membership });
                self.pump(out);
            }
            Err(e) => {
                out.push(Command::ProposalAborted {
                    id,
                    reason: AbortReason::Membership(e),
                });
            }
        }
    }

    /// Gives queued requests slots and sends phase 2a for every slot the window allows: at
    /// most `max_in_flight` above the commit index, and nothing past an unchosen membership
    /// decree.
    pub(super) fn pump(&mut self, out: &mut Vec<Command>) {
        if self.batching {
            // Inside `step_batch`: cut once, at the end, for everything the batch queued.
            self.pump_deferred = true;
            return;
        }
        let commit = self.commit;
        let now = self.now;
        let window = self.config.max_in_flight;
        let max_count = self.config.max_batch_count;
        let max_bytes = self.config.max_batch_bytes;
        let id = self.id;
        let configs = &self.configs;
        let initial = &self.config.initial_membership;
        let released = &mut self.released_batches;
        // Built in a buffer the replica keeps, then shared by the log append and every peer.
        let mut batch = std::mem::take(&mut self.entries_scratch);
        batch.clear();
        let RoleState::Leader(l) = &mut self.role else {
            self.entries_scratch = batch;
            return;
        };
        loop {
            let slot = l.next_send;
            // The window is also alpha: the membership of `slot` depends on chosen slots only.
            if slot > commit + window {
                break;
            }
            let governing = configs
                .range(..=slot)
                .next_back()
                .map_or(initial, |(_, m)| m);
            if !governing.voters.contains(&id) {
                break; // a membership without us governs this slot: we stop leading here
            }
            if slot == l.next_slot {
                if l.transfer.is_some() {
                    break;
                }
                let decree = match cut_batch(l, released, max_count, max_bytes) {
                    Some(d) => d,
                    // A chosen membership takes effect further on: fill up to it with no-ops
                    // so it comes into force now rather than when traffic arrives.
                    None if configs.range(slot + 1..).next().is_some() => Decree::Noop,
                    None => break,
                };
                l.in_flight.insert(
                    slot,
                    InFlight {
                        decree,
                        acks: l.spare_acks.pop().unwrap_or_default(),
                        sent: false,
                        sent_at: now,
                    },
                );
                l.next_slot += 1;
            }
            let Some(f) = l.in_flight.get_mut(&slot) else {
                break;
            };
            f.sent = true;
            f.sent_at = now;
            batch.push(SlotDecree {
                slot,
                decree: f.decree.clone(),
            });
            l.next_send += 1;
        }
        contract!(
            self,
            l.next_send <= commit + window + 1,
            "pipeline window exceeded: next send {} with commit {commit}",
            l.next_send
        );
        // The shared list reuses one whose messages are gone (no allocation in steady state).
        let entries: Option<SlotDecrees> = (!batch.is_empty())
            .then(|| SlotDecrees::recycle(&mut self.spare_entries, &mut batch, SPARE_ENTRY_LISTS));
        self.entries_scratch = batch;
        if let Some(entries) = entries {
            self.send_entries(entries, out);
        }
    }

    /// Inside a step batch: cuts the decrees deferred so far now (an event that must be ordered
    /// after the proposals before it, such as a linearizable read, calls this first).
    pub(super) fn cut_deferred(&mut self, out: &mut Vec<Command>) {
        if self.batching && self.pump_deferred {
            self.batching = false;
            self.pump_deferred = false;
            self.pump(out);
            self.batching = true;
        }
    }

    /// Accepts `entries` ourselves (durably) and sends them to every member.
    fn send_entries(&mut self, entries: SlotDecrees, out: &mut Vec<Command>) {
        let Some(ballot) = self.leader_ballot() else {
            return;
        };
        for e in entries.iter() {
            contract!(
                self,
                e.slot > self.commit,
                "sending slot {} at or below commit",
                e.slot
            );
            if let Some((b, d)) = self.accepted.get(&e.slot) {
                contract!(
                    self,
                    *b < ballot || *d == e.decree,
                    "two values in ballot {ballot} at slot {}",
                    e.slot
                );
            }
            self.accepted.insert(e.slot, (ballot, e.decree.clone()));
        }
        let stored: AcceptedEntries = entries
            .iter()
            .map(|e| AcceptedEntry {
                slot: e.slot,
                ballot,
                decree: e.decree.clone(),
            })
            .collect();
        let token = self.persist(PersistOp::Append { entries: stored }, out);
        let mut targets = std::mem::take(&mut self.targets_scratch);
        self.leader_targets_into(&mut targets);
        for &to in &targets {
            out.push(Command::Send {
                to,
                msg: Message::Accept {
                    ballot,
                    commit: self.commit,
                    entries: entries.clone(),
                },
            });
        }
        self.targets_scratch = targets;
        self.after_persist(token, Gated::SelfAccepted { ballot, entries }, out);
    }

    /// Every member the leader replicates to: the membership governing the next slot and any
    /// membership in flight.
    pub(super) fn leader_targets(&self) -> BTreeSet<ReplicaId> {
        let mut t = Vec::new();
        self.leader_targets_into(&mut t);
        t.into_iter().collect()
    }

    /// [`Replica::leader_targets`] into a buffer the caller reuses (in id order, no
    /// duplicates): the hot path sends every batch and heartbeat to these without allocating.
    pub(super) fn leader_targets_into(&self, t: &mut Vec<ReplicaId>) {
        t.clear();
        t.extend(self.membership_at(self.commit + 1).members());
        for m in self.configs.range(self.commit + 2..).map(|(_, m)| m) {
            t.extend(m.members());
        }
        if let RoleState::Leader(l) = &self.role {
            for f in l.in_flight.values() {
                if let Decree::Membership(m) = &f.decree {
                    t.extend(m.members());
                }
            }
        }
        let me = self.id;
        t.retain(|r| *r != me);
        t.sort_unstable();
        t.dedup();
    }

    /// [`Replica::leader_memberships`] by reference, for leader state `l` (allocates nothing).
    pub(super) fn leader_memberships_of<'a>(
        &'a self,
        l: &'a Leader,
    ) -> impl Iterator<Item = &'a Membership> {
        std::iter::once(self.membership_at(self.commit + 1))
            .chain(self.configs.range(self.commit + 2..).map(|(_, m)| m))
            .chain(l.in_flight.values().filter_map(|f| match &f.decree {
                Decree::Membership(m) => Some(m),
                _ => None,
            }))
    }

    /// Memberships whose majorities a leader needs (for its lease and read-index): the one
    /// governing the next slot and any in flight.
    pub(super) fn leader_memberships(&self) -> Vec<Membership> {
        let mut v = vec![self.membership_at(self.commit + 1).clone()];
        v.extend(
            self.configs
                .range(self.commit + 2..)
                .map(|(_, m)| m.clone()),
        );
        if let RoleState::Leader(l) = &self.role {
            for f in l.in_flight.values() {
                if let Decree::Membership(m) = &f.decree {
                    v.push(m.clone());
                }
            }
        }
        v
    }

    /// Phase 2b at an acceptor.
    pub(super) fn on_accept(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        commit: Slot,
        entries: SlotDecrees,
        out: &mut Vec<Command>,
    ) {
        let promised_before = self.promised;
        if ballot < self.promised && !self.mutation_on(Mutation::AcceptLowerBallot) {
            self.send_nack(from, ballot, out);
            return;
        }
        if ballot > self.promised {
            self.raise_promise(ballot, out);
        }
        if ballot == self.promised {
            self.note_leader(from);
        }
        // Inline lists: the usual accept of one or two decrees allocates nothing here.
        let mut stored = AcceptedEntries::new();
        let mut slots = AcceptedSlots::new();
        for e in entries.iter() {
            if e.slot == 0 {
                continue; // malformed
            }
            slots.push(e.slot);
            if e.slot <= self.log_start {
                continue; // checkpointed: chosen already, nothing to keep
            }
            if let Some((b, d)) = self.accepted.get(&e.slot) {
                if *b == ballot {
                    contract!(
                        self,
                        *d == e.decree,
                        "two values in ballot {ballot} at slot {}",
                        e.slot
                    );
                    continue;
                }
                if !self.mutation_on(Mutation::AcceptLowerBallot) {
                    contract!(
                        self,
                        *b < ballot,
                        "accepted ballot {b} above {ballot} at slot {}",
                        e.slot
                    );
                }
            }
            self.accepted.insert(e.slot, (ballot, e.decree.clone()));
            stored.push(AcceptedEntry {
                slot: e.slot,
                ballot,
                decree: e.decree.clone(),
            });
        }
        if !stored.is_empty() {
            self.persist(PersistOp::Append { entries: stored }, out);
        }
        // The acknowledgement waits for everything persisted so far (promise and values).
        let token = PersistToken(self.next_token - 1);
        if !slots.is_empty() {
            let msg = Message::Accepted { ballot, slots };
            self.after_persist(token, Gated::Send { to: from, msg }, out);
        }
        if ballot == self.promised {
            self.learn_commit(ballot, commit, out);
        }
        contract!(
            self,
            self.promised >= promised_before,
            "accept lowered the promise"
        );
        contract!(
            self,
            self.promised >= ballot || self.mutation_on(Mutation::AcceptLowerBallot),
            "accepted above the promise"
        );
    }

    /// A message from the leader of our promised ballot: it is alive.
    fn note_leader(&mut self, from: ReplicaId) {
        self.leader_hint = Some(from);
        self.last_leader_contact = Some(self.now);
        self.reset_election_timer();
        if matches!(self.role, RoleState::PreCandidate(_)) {
            self.role = RoleState::Follower;
        }
    }

    pub(super) fn on_accepted(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        slots: &[Slot],
        out: &mut Vec<Command>,
    ) {
        let double = self.mutation_on(Mutation::DoubleCountVote);
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        for slot in slots {
            if let Some(f) = l.in_flight.get_mut(slot)
                && (double || !f.acks.contains(&from))
            {
                f.acks.push(from);
            }
        }
        self.advance_leader_commit(out);
        self.try_finish_transfer(out);
    }

    pub(super) fn on_self_accepted(
        &mut self,
        ballot: Ballot,
        entries: &[SlotDecree],
        out: &mut Vec<Command>,
    ) {
        let id = self.id;
        let double = self.mutation_on(Mutation::DoubleCountVote);
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        for slot in entries.iter().map(|e| &e.slot) {
            if let Some(f) = l.in_flight.get_mut(slot)
                && !f.acks.contains(&id)
            {
                f.acks.push(id);
                if double {
                    f.acks.push(id); // the bug: our own vote counts twice
                }
            }
        }
        self.advance_leader_commit(out);
        self.try_finish_transfer(out);
    }

    /// A slot is chosen when a majority of the membership governing it accepted it in our
    /// ballot; the commit index moves over consecutive chosen slots.
    fn advance_leader_commit(&mut self, out: &mut Vec<Command>) {
        let window = self.config.max_in_flight;
        let double = self.mutation_on(Mutation::DoubleCountVote);
        let short = self.mutation_on(Mutation::CommitWithoutMajority);
        loop {
            let slot = self.commit + 1;
            let membership = membership_in(&self.configs, &self.config.initial_membership, slot);
            let RoleState::Leader(l) = &mut self.role else {
                return;
            };
            let Some(f) = l.in_flight.get(&slot) else {
                break;
            };
            if !f.sent {
                break;
            }
            let votes = f
                .acks
                .iter()
                .filter(|a| membership.voters.contains(a))
                .count();
            if !double {
                // A handful of voters: a quadratic check allocates nothing.
                let distinct = f
                    .acks
                    .iter()
                    .enumerate()
                    .all(|(i, a)| !f.acks[..i].contains(a));
                contract!(self, distinct, "a vote counted twice at slot {slot}");
            }
            let needed = if short {
                membership.quorum().saturating_sub(1).max(1)
            } else {
                membership.quorum()
            };
            if votes < needed {
                break;
            }
            let Some(InFlight {
                decree, mut acks, ..
            }) = l.in_flight.remove(&slot)
            else {
                break;
            };
            // The vote list goes back for the next slot (bounded by the window).
            if (l.spare_acks.len() as u64) < window {
                acks.clear();
                l.spare_acks.push(acks);
            }
            self.learn_chosen(slot, decree);
            contract!(
                self,
                self.commit >= slot,
                "chosen slot {slot} did not commit"
            );
        }
        self.apply_committed(out);
        self.pump(out);
    }

    /// Records that `decree` is chosen at `slot` and moves the commit index over any run of
    /// consecutive chosen slots. Panics if another value was seen chosen there.
    pub(super) fn learn_chosen(&mut self, slot: Slot, decree: Decree) {
        contract!(self, slot > 0, "slot 0 holds no value");
        if slot <= self.decided_floor {
            return;
        }
        match self.decided.get(&slot) {
            Some(d) => {
                contract!(
                    self,
                    *d == decree,
                    "two values chosen at slot {slot}: {d:?} and {decree:?}"
                );
            }
            None => {
                contract!(
                    self,
                    slot > self.commit,
                    "slot {slot} at or below commit has no value"
                );
                self.decided.insert(slot, decree);
            }
        }
        while self.decided.contains_key(&(self.commit + 1)) {
            self.commit += 1;
        }
    }

    /// Follower side of the piggybacked commit index: every slot up to `commit` whose value we
    /// accepted in the leader's ballot is that ballot's, hence the chosen, value.
    pub(super) fn learn_commit(&mut self, ballot: Ballot, commit: Slot, out: &mut Vec<Command>) {
        if commit <= self.commit {
            return;
        }
        // A buffer the replica keeps: learning commits on every accept allocates nothing.
        let mut found = std::mem::take(&mut self.chosen_scratch);
        found.clear();
        found.extend(
            self.accepted
                .range(self.commit + 1..=commit)
                .filter(|(_, (b, _))| *b == ballot)
                .map(|(s, (_, d))| (*s, d.clone())),
        );
        for (slot, decree) in found.drain(..) {
            self.learn_chosen(slot, decree);
        }
        self.chosen_scratch = found;
        self.apply_committed(out);
    }

    /// Hands every committed, unapplied decree to the host in order, then serves what waited.
    pub(super) fn apply_committed(&mut self, out: &mut Vec<Command>) {
        let applied_before = self.applied;
        let alpha = self.config.membership_alpha();
        while self.applied < self.commit {
            let slot = self.applied + 1;
            let Some(decree) = self.decided.get(&slot).cloned() else {
                contract!(self, false, "committed slot {slot} has no decided value");
                return;
            };
            self.applied = slot;
            let membership = if let Decree::Membership(m) = &decree {
                Some(m.clone())
            } else {
                None
            };
            out.push(Command::Apply { slot, decree });
            if let Some(m) = membership {
                self.configs.insert(slot + alpha, m.clone());
                if let RoleState::Leader(l) = &mut self.role {
                    for id in m.members().filter(|x| *x != self.id) {
                        l.peers.entry(id).or_default();
                    }
                }
                out.push(Command::MembershipChanged {
                    slot,
                    membership: m,
                });
            }
        }
        if let RoleState::Leader(l) = &mut self.role {
            let commit = self.commit;
            l.in_flight.retain(|s, _| *s > commit);
            l.change_ids.retain(|s, _| *s > commit);
            l.next_send = l.next_send.max(commit + 1);
        }
        let interval = self.config.snapshot_interval;
        // A checkpoint records one membership, so none is taken while a change is pending.
        let change_pending = self.configs.range(self.applied + 2..).next().is_some();
        if interval > 0 && self.applied >= self.last_snapshot_hint + interval && !change_pending {
            self.last_snapshot_hint = self.applied;
            out.push(Command::TakeSnapshot { slot: self.applied });
        }
        if self.applied > applied_before {
            self.serve_reads(out);
        }
        // A leader whose membership no longer includes it for the next slot steps down.
        if matches!(self.role, RoleState::Leader(_)) && !self.is_voter() {
            self.step_down(None, out);
        }
        contract!(
            self,
            self.applied == self.commit,
            "apply stopped at {} below commit",
            self.applied
        );
    }

    pub(super) fn leader_tick(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        let hb = self.config.heartbeat_ticks;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if l.transfer.as_ref().is_some_and(|t| now >= t.deadline) {
            l.transfer = None;
        }
        if now >= l.last_heartbeat_at + hb {
            self.broadcast_heartbeat(out);
            self.retransmit(out);
        }
        self.pump(out);
        self.try_finish_transfer(out);
    }

    pub(super) fn broadcast_heartbeat(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        let commit = self.commit;
        let mut targets = std::mem::take(&mut self.targets_scratch);
        self.leader_targets_into(&mut targets);
        let RoleState::Leader(l) = &mut self.role else {
            self.targets_scratch = targets;
            return;
        };
        l.hb_seq += 1;
        l.last_heartbeat_at = now;
        let (ballot, seq) = (l.ballot, l.hb_seq);
        for &to in &targets {
            out.push(Command::Send {
                to,
                msg: Message::Heartbeat {
                    ballot,
                    commit,
                    seq,
                    sent_at: now,
                },
            });
        }
        self.targets_scratch = targets;
        self.update_lease();
        self.serve_reads(out);
    }

    /// Re-sends phase 2a for slots a member has not acknowledged after a heartbeat period.
    fn retransmit(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        let hb = self.config.heartbeat_ticks;
        let commit = self.commit;
        // Runs every heartbeat: the targets go in the replica's buffer, and a list is built
        // only for a member that misses something.
        let mut targets = std::mem::take(&mut self.targets_scratch);
        self.leader_targets_into(&mut targets);
        if let RoleState::Leader(l) = &self.role {
            let due = |f: &InFlight, to: &ReplicaId| {
                f.sent && f.sent_at + hb <= now && !f.acks.contains(to)
            };
            for &to in &targets {
                if !l.in_flight.values().any(|f| due(f, &to)) {
                    continue;
                }
                let entries: SlotDecrees = l
                    .in_flight
                    .iter()
                    .filter(|(_, f)| due(f, &to))
                    .map(|(s, f)| SlotDecree {
                        slot: *s,
                        decree: f.decree.clone(),
                    })
                    .collect();
                out.push(Command::Send {
                    to,
                    msg: Message::Accept {
                        ballot: l.ballot,
                        commit,
                        entries,
                    },
                });
            }
        }
        self.targets_scratch = targets;
    }

    pub(super) fn on_heartbeat(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        commit: Slot,
        seq: u64,
        sent_at: u64,
        out: &mut Vec<Command>,
    ) {
        if ballot < self.promised {
            self.send_nack(from, ballot, out);
            return;
        }
        if !matches!(self.role, RoleState::Follower | RoleState::PreCandidate(_)) {
            // A candidate (ballot <= promise) hearing a leader at least as new yields.
            self.step_down(Some(from), out);
        }
        self.note_leader(from);
        if self.config.lease_ticks > 0 {
            self.lease_guard_until = self
                .lease_guard_until
                .max(self.now + self.config.lease_ticks);
            self.lease_guard_ballot = ballot;
        }
        self.learn_commit(ballot, commit, out);
        out.push(Command::Send {
            to: from,
            msg: Message::HeartbeatReply {
                ballot,
                seq,
                sent_at,
                commit: self.commit,
            },
        });
        contract!(
            self,
            self.config.lease_ticks == 0
                || self.lease_guard_until >= self.now + self.config.lease_ticks,
            "acknowledged a heartbeat of {ballot} without guarding its lease"
        );
        if self.commit < commit {
            out.push(Command::Send {
                to: from,
                msg: Message::CatchUpRequest {
                    commit: self.commit,
                },
            });
        }
    }

    pub(super) fn on_heartbeat_reply(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        seq: u64,
        sent_at: u64,
        commit: Slot,
        out: &mut Vec<Command>,
    ) {
        let now = self.now;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if l.ballot != ballot || sent_at > now {
            return;
        }
        let p = l.peers.entry(from).or_default();
        p.hb_ack_sent_at = Some(p.hb_ack_sent_at.map_or(sent_at, |t| t.max(sent_at)));
        p.hb_ack_seq = p.hb_ack_seq.max(seq);
        p.commit = commit;
        self.update_lease();
        self.serve_reads(out);
        self.try_finish_transfer(out);
    }

    /// Sends a lagging replica what it misses: chosen values, or our checkpoint when the values
    /// it needs are released.
    pub(super) fn on_catch_up_request(
        &mut self,
        from: ReplicaId,
        their_commit: Slot,
        out: &mut Vec<Command>,
    ) {
        if their_commit >= self.commit {
            return;
        }
        if their_commit < self.decided_floor {
            let Some(snapshot) = self.snapshot.clone() else {
                return;
            };
            let now = self.now;
            let pace = self.config.election_timeout_min_ticks;
            if let RoleState::Leader(l) = &mut self.role {
                let p = l.peers.entry(from).or_default();
                if p.snapshot_sent_at.is_some_and(|t| now < t + pace) {
                    return;
                }
                p.snapshot_sent_at = Some(now);
            }
            out.push(Command::Send {
                to: from,
                msg: Message::InstallSnapshot { snapshot },
            });
            return;
        }
        let entries: Vec<SlotDecree> = self
            .decided
            .range(their_commit + 1..=self.commit)
            .take(self.config.max_catch_up_decrees)
            .map(|(s, d)| SlotDecree {
                slot: *s,
                decree: d.clone(),
            })
            .collect();
        contract!(
            self,
            entries.first().is_some_and(|e| e.slot == their_commit + 1),
            "catch-up from {their_commit} has a gap"
        );
        out.push(Command::Send {
            to: from,
            msg: Message::Learn { entries },
        });
    }

    pub(super) fn on_learn(
        &mut self,
        from: ReplicaId,
        entries: Vec<SlotDecree>,
        out: &mut Vec<Command>,
    ) {
        if matches!(self.role, RoleState::Leader(_)) {
            return; // a leader knows every chosen value up to its commit index already
        }
        let full = entries.len() >= self.config.max_catch_up_decrees;
        for e in entries {
            if e.slot > self.commit {
                self.learn_chosen(e.slot, e.decree);
            }
        }
        self.apply_committed(out);
        if full {
            out.push(Command::Send {
                to: from,
                msg: Message::CatchUpRequest {
                    commit: self.commit,
                },
            });
        }
        contract!(
            self,
            self.applied == self.commit,
            "learned values left unapplied"
        );
    }

    pub(super) fn on_install_snapshot(
        &mut self,
        from: ReplicaId,
        snapshot: Snapshot,
        out: &mut Vec<Command>,
    ) {
        let slot = snapshot.meta.slot;
        if matches!(self.role, RoleState::Leader(_)) || slot <= self.commit {
            return;
        }
        if !matches!(self.role, RoleState::Follower) {
            let hint = self.leader_hint;
            self.step_down(hint, out);
        }
        self.persist(
            PersistOp::SaveSnapshot {
                snapshot: snapshot.clone(),
            },
            out,
        );
        self.log_start = slot;
        self.commit = slot;
        self.applied = slot;
        self.decided_floor = slot;
        self.decided.remove_below(slot + 1);
        self.accepted.remove_below(slot + 1);
        self.configs.clear();
        self.configs
            .insert(slot + 1, snapshot.meta.membership.clone());
        self.last_snapshot_hint = slot;
        self.snapshot = Some(snapshot.clone());
        out.push(Command::InstallSnapshot { snapshot });
        while self.decided.contains_key(&(self.commit + 1)) {
            self.commit += 1;
        }
        self.apply_committed(out);
        self.serve_reads(out);
        out.push(Command::Send {
            to: from,
            msg: Message::CatchUpRequest {
                commit: self.commit,
            },
        });
        contract!(
            self,
            self.applied >= slot,
            "snapshot install left applied below {slot}"
        );
    }

    pub(super) fn on_snapshot_taken(&mut self, slot: Slot, data: Vec<u8>, out: &mut Vec<Command>) {
        contract!(
            self,
            slot <= self.applied,
            "checkpoint at {slot} above applied"
        );
        if slot <= self.log_start {
            return; // an older checkpoint than the one we hold
        }
        if self.configs.range(slot + 2..).next().is_some() {
            // A chosen membership is not yet in force at `slot`: a checkpoint there could not
            // record it. Skip this one (the log stays; a later checkpoint will do).
            return;
        }
        let meta = SnapshotMeta {
            slot,
            membership: self.membership_at(slot + 1).clone(),
        };
        let snapshot = Snapshot { meta, data };
        self.persist(
            PersistOp::SaveSnapshot {
                snapshot: snapshot.clone(),
            },
            out,
        );
        self.log_start = slot;
        self.accepted.remove_below(slot + 1);
        let floor = slot
            .saturating_sub(self.config.log_retain_slots)
            .max(self.decided_floor);
        // The leader keeps the batches it cut for reuse (shared with followers over the local
        // net until they checkpoint too); any replica keeps the ones only it holds (decoded
        // from its own messages).
        let leading = matches!(self.role, RoleState::Leader(_));
        let released = &mut self.released_batches;
        self.decided.remove_below_into(floor + 1, |d| {
            if let Decree::Batch(b) = d {
                released.release(b, leading);
            }
        });
        self.decided_floor = floor;
        let governing = self
            .configs
            .range(..=floor + 1)
            .next_back()
            .map(|(k, _)| *k);
        if let Some(k) = governing {
            self.configs = self.configs.split_off(&k);
        }
        self.snapshot = Some(snapshot);
        contract!(
            self,
            self.accepted.keys().next().is_none_or(|s| *s > slot),
            "kept a value under the checkpoint"
        );
    }

    /// Everything a leader held goes back to the host when it stops leading.
    pub(super) fn abort_leader_work(
        &mut self,
        l: Leader,
        hint: Option<ReplicaId>,
        out: &mut Vec<Command>,
    ) {
        for q in l.queue {
            let id = match q {
                Queued::Request { id, .. } | Queued::Membership { id, .. } => id,
            };
            out.push(Command::ProposalAborted {
                id,
                reason: AbortReason::NotLeader { hint },
            });
        }
        for (slot, f) in l.in_flight {
            if let (Decree::Membership(_), Some(id)) = (&f.decree, l.change_ids.get(&slot)) {
                let reason = AbortReason::LeadershipLost { hint };
                out.push(Command::ProposalAborted { id: *id, reason });
            }
            if let Decree::Batch(props) = f.decree {
                for p in props.iter() {
                    out.push(Command::ProposalAborted {
                        id: p.id,
                        reason: AbortReason::LeadershipLost { hint },
                    });
                }
            }
        }
        for r in l.reads {
            out.push(Command::ReadRefused {
                id: r.id,
                reason: ReadRefusal::NotLeader { hint },
            });
        }
    }
}

/// Shared phase 2a lists the leader keeps for reuse (lists still held by messages in flight or
/// by an acceptance waiting for its flush are skipped until they come back).
const SPARE_ENTRY_LISTS: usize = 16;

/// Takes the next decree off the queue: one membership change alone, or as many requests as
/// fit the count and byte bounds (at least one).
fn cut_batch(
    l: &mut Leader,
    released: &mut ReleasedBatches,
    max_count: usize,
    max_bytes: usize,
) -> Option<Decree> {
    if let Some(Queued::Membership { .. }) = l.queue.front() {
        if let Some(Queued::Membership { id, membership }) = l.queue.pop_front() {
            l.change_ids.insert(l.next_slot, id);
            return Some(Decree::Membership(membership));
        }
        return None;
    }
    // Requests gather in a buffer the leader keeps, then move into a released batch nothing
    // holds any more, or a new one (the buffer is left empty; it regrows only on a new batch).
    let batch = &mut l.batch_scratch;
    batch.clear();
    let mut bytes = 0usize;
    while let Some(Queued::Request { payload, .. }) = l.queue.front() {
        let len = payload.len();
        if batch.len() >= max_count || (!batch.is_empty() && bytes + len > max_bytes) {
            break;
        }
        if let Some(Queued::Request { id, payload }) = l.queue.pop_front() {
            bytes += len;
            batch.push(Proposal {
                id,
                payload: payload.into(),
            });
        }
    }
    if batch.is_empty() {
        None
    } else {
        Some(Decree::Batch(Batch::recycle(released, batch)))
    }
}

/// The membership governing `slot` given the committed memberships by first slot (a free
/// function so a caller holding the leader state mutably can still read it).
fn membership_in<'a>(
    configs: &'a std::collections::BTreeMap<Slot, Membership>,
    initial: &'a Membership,
    slot: Slot,
) -> &'a Membership {
    configs
        .range(..=slot)
        .next_back()
        .map_or(initial, |(_, m)| m)
}
