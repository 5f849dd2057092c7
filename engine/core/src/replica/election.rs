//! Leader election: pre-vote, phase 1 (prepare/promise) over all slots above the commit index,
//! leadership transfer and relinquishing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{
    Candidate, Gated, Leader, Peer, PreCandidate, PromiseInfo, Replica, RoleState, contract,
};
use crate::io::Command;
use crate::message::Message;
use crate::quorum::kth_largest_of;
use crate::types::{AcceptedEntry, Ballot, Decree, Membership, ReplicaId, Slot};

impl Replica {
    /// Election timeout expired: ask the voters whether they would elect us, without changing
    /// anyone's promise (so a replica back from a partition cannot depose a live leader).
    pub(super) fn start_pre_vote(&mut self, out: &mut Vec<Command>) {
        contract!(
            self,
            !matches!(self.role, RoleState::Leader(_)),
            "leader ran a pre-vote"
        );
        if !self.electable || !self.is_voter() {
            self.reset_election_timer();
            return;
        }
        let ballot = Ballot::new(self.promised.round.max(self.max_round_seen) + 1, self.id);
        let deadline = self.now + self.rng_timeout();
        let mut grants = BTreeSet::new();
        grants.insert(self.id);
        self.role = RoleState::PreCandidate(PreCandidate {
            ballot,
            grants,
            deadline,
        });
        let voters: Vec<ReplicaId> = self
            .governing()
            .voters
            .iter()
            .copied()
            .filter(|v| *v != self.id)
            .collect();
        for to in voters {
            out.push(Command::Send {
                to,
                msg: Message::PreVote {
                    ballot,
                    commit: self.commit,
                },
            });
        }
        self.check_pre_vote(out);
    }

    fn rng_timeout(&mut self) -> u64 {
        use rand::Rng;
        let lo = self.config.election_timeout_min_ticks;
        let hi = self.config.election_timeout_max_ticks;
        self.rng.random_range(lo..hi)
    }

    pub(super) fn on_pre_vote(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        commit: Slot,
        out: &mut Vec<Command>,
    ) {
        let leader_alive = matches!(self.role, RoleState::Leader(_))
            || self
                .last_leader_contact
                .is_some_and(|t| self.now - t < self.config.election_timeout_min_ticks);
        if ballot <= self.promised {
            // Tell the candidate how far ballots have gone so its next try can win.
            let msg = Message::Nack {
                ballot,
                promised: self.promised,
            };
            out.push(Command::Send { to: from, msg });
            return;
        }
        let granted = !leader_alive
            && self.now >= self.lease_guard_until
            && commit >= self.commit
            && self.governing().voters.contains(&from);
        out.push(Command::Send {
            to: from,
            msg: Message::PreVoteReply { ballot, granted },
        });
        // Reference: a pre-vote changes no state at the voter (no promise, no timer).
        contract!(
            self,
            self.promised < ballot,
            "pre-vote {ballot} granted at or below promise"
        );
    }

    pub(super) fn on_pre_vote_reply(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        granted: bool,
        out: &mut Vec<Command>,
    ) {
        let RoleState::PreCandidate(p) = &mut self.role else {
            return;
        };
        if p.ballot != ballot || !granted {
            return;
        }
        p.grants.insert(from);
        self.check_pre_vote(out);
    }

    fn check_pre_vote(&mut self, out: &mut Vec<Command>) {
        let RoleState::PreCandidate(p) = &self.role else {
            return;
        };
        if !self.governing().is_quorum(&p.grants) {
            return;
        }
        let ballot = p.ballot;
        if ballot <= self.promised {
            // A higher promise arrived meanwhile; try again with a fresh ballot later.
            self.role = RoleState::Follower;
            self.reset_election_timer();
            return;
        }
        self.start_candidate(ballot, None, out);
    }

    /// Phase 1a: promise `ballot` ourselves (durably) and ask the voters for every slot above
    /// our commit index at once.
    pub(super) fn start_candidate(
        &mut self,
        ballot: Ballot,
        transfer_from: Option<Ballot>,
        out: &mut Vec<Command>,
    ) {
        contract!(
            self,
            ballot > self.promised,
            "candidate ballot {ballot} not above promise"
        );
        contract!(
            self,
            ballot.leader == self.id,
            "candidate ballot {ballot} names another leader"
        );
        let token = self.raise_promise(ballot, out);
        let from_slot = self.commit + 1;
        let mut voters: BTreeSet<ReplicaId> = self.membership_at(from_slot).voters.clone();
        for m in self.configs.range(from_slot + 1..).map(|(_, m)| m) {
            voters.extend(m.voters.iter().copied());
        }
        let deadline = self.now + self.rng_timeout();
        let mut contacted = BTreeSet::new();
        for &to in voters.iter().filter(|v| **v != self.id) {
            contacted.insert(to);
            out.push(Command::Send {
                to,
                msg: Message::Prepare {
                    ballot,
                    from_slot,
                    transfer_from,
                },
            });
        }
        self.leader_hint = None;
        self.role = RoleState::Candidate(Box::new(Candidate {
            ballot,
            from_slot,
            self_promised: false,
            promises: BTreeMap::new(),
            contacted,
            transfer_from,
            deadline,
        }));
        self.after_persist(token, Gated::SelfPromised { ballot }, out);
        contract!(
            self,
            self.promised == ballot,
            "candidate did not promise its ballot"
        );
    }

    /// Phase 1b at an acceptor.
    pub(super) fn on_prepare(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        from_slot: Slot,
        transfer_from: Option<Ballot>,
        out: &mut Vec<Command>,
    ) {
        let promised_before = self.promised;
        if ballot < self.promised {
            self.send_nack(from, ballot, out);
            return;
        }
        if ballot > self.promised {
            let guard_bypassed =
                transfer_from.is_some() && transfer_from == Some(self.lease_guard_ballot);
            if self.now < self.lease_guard_until && !guard_bypassed {
                // We acknowledged a lease that may still be in force: a new leader must wait.
                self.send_nack(from, ballot, out);
                return;
            }
            self.raise_promise(ballot, out);
            self.last_leader_contact = None;
            self.reset_election_timer();
        }
        contract!(
            self,
            self.promised == ballot,
            "promising {ballot} without holding it"
        );
        let accepted: Vec<AcceptedEntry> = self
            .accepted
            .range(from_slot.max(1)..)
            .map(|(&slot, (b, d))| AcceptedEntry {
                slot,
                ballot: *b,
                decree: d.clone(),
            })
            .collect();
        let msg = Message::Promise {
            ballot,
            from_slot,
            log_start: self.log_start,
            commit: self.commit,
            accepted,
        };
        self.after_persist(self.promise_token, Gated::Send { to: from, msg }, out);
        contract!(
            self,
            self.promised >= promised_before,
            "prepare lowered the promise"
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_promise(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        from_slot: Slot,
        log_start: Slot,
        _commit: Slot,
        accepted: Vec<AcceptedEntry>,
        out: &mut Vec<Command>,
    ) {
        let RoleState::Candidate(c) = &mut self.role else {
            return;
        };
        if c.ballot != ballot || c.from_slot != from_slot {
            return; // a stale promise
        }
        if log_start >= from_slot {
            // The promiser checkpointed slots we do not know: catch up from it, then run again.
            let hint = self.leader_hint;
            self.step_down(hint, out);
            out.push(Command::Send {
                to: from,
                msg: Message::CatchUpRequest {
                    commit: self.commit,
                },
            });
            return;
        }
        // Drop entries that cannot come from a correct acceptor (below the range, or at a
        // ballot not below ours: nobody accepted in our ballot before we lead).
        let accepted: Vec<AcceptedEntry> = accepted
            .into_iter()
            .filter(|e| e.slot >= from_slot && e.ballot < ballot)
            .collect();
        let mut newly: Vec<ReplicaId> = Vec::new();
        for e in &accepted {
            if let Decree::Membership(m) = &e.decree {
                for v in m
                    .voters
                    .iter()
                    .filter(|v| **v != self.id && !c.contacted.contains(v))
                {
                    newly.push(*v);
                }
            }
        }
        for to in newly {
            if c.contacted.insert(to) {
                out.push(Command::Send {
                    to,
                    msg: Message::Prepare {
                        ballot,
                        from_slot,
                        transfer_from: c.transfer_from,
                    },
                });
            }
        }
        c.promises.insert(from, PromiseInfo { accepted });
        self.try_become_leader(out);
    }

    pub(super) fn on_self_promised(&mut self, ballot: Ballot, out: &mut Vec<Command>) {
        let RoleState::Candidate(c) = &mut self.role else {
            return;
        };
        if c.ballot != ballot {
            return;
        }
        c.self_promised = true;
        self.try_become_leader(out);
    }

    /// Becomes leader once promises cover a majority of the membership governing the first
    /// unknown slot and of every membership any promise carries.
    fn try_become_leader(&mut self, out: &mut Vec<Command>) {
        let RoleState::Candidate(c) = &self.role else {
            return;
        };
        let mut promisers: Vec<ReplicaId> = c.promises.keys().copied().collect();
        if c.self_promised {
            promisers.push(self.id);
        }
        let own: Vec<AcceptedEntry> = self
            .accepted
            .range(c.from_slot..)
            .map(|(&slot, (b, d))| AcceptedEntry {
                slot,
                ballot: *b,
                decree: d.clone(),
            })
            .collect();
        // The membership decrees that may be chosen: per slot, the value of the highest ballot
        // among the promises so far (what this candidate would re-propose).
        let mut highest: BTreeMap<Slot, (Ballot, &Decree)> = BTreeMap::new();
        for e in c
            .promises
            .values()
            .flat_map(|p| p.accepted.iter())
            .chain(own.iter())
        {
            if highest.get(&e.slot).is_none_or(|(b, _)| *b < e.ballot) {
                highest.insert(e.slot, (e.ballot, &e.decree));
            }
        }
        let mut required: Vec<&Membership> = vec![self.membership_at(c.from_slot)];
        // Chosen memberships not yet in force govern slots this phase 1 covers.
        required.extend(self.configs.range(c.from_slot + 1..).map(|(_, m)| m));
        for (_, d) in highest.values() {
            if let Decree::Membership(m) = d {
                required.push(m);
            }
        }
        if !required.iter().all(|m| m.is_quorum(&promisers)) {
            return;
        }
        if !self.is_voter() {
            // Catch-up during the campaign showed we are no longer a voter: do not lead.
            let hint = self.leader_hint;
            self.step_down(hint, out);
            return;
        }
        self.become_leader(own, out);
    }

    fn become_leader(&mut self, own: Vec<AcceptedEntry>, out: &mut Vec<Command>) {
        let RoleState::Candidate(c) = std::mem::replace(&mut self.role, RoleState::Follower) else {
            return;
        };
        let c = *c;
        contract!(
            self,
            c.ballot == self.promised,
            "elected with ballot {} not the promise",
            c.ballot
        );
        contract!(
            self,
            c.from_slot <= self.commit + 1,
            "elected from slot {} stale",
            c.from_slot
        );
        // For each slot, the value accepted in the highest ballot among the promises.
        let mut merged: BTreeMap<Slot, (Ballot, Decree)> = BTreeMap::new();
        for e in c.promises.into_values().flat_map(|p| p.accepted).chain(own) {
            match merged.get(&e.slot) {
                Some((b, d)) if *b == e.ballot => {
                    contract!(
                        self,
                        *d == e.decree,
                        "two values accepted in ballot {b} at slot {}",
                        e.slot
                    );
                }
                Some((b, _)) if *b > e.ballot => {}
                _ => {
                    merged.insert(e.slot, (e.ballot, e.decree));
                }
            }
        }
        // Values this replica already knows chosen must be what phase 1 found.
        for (slot, d) in self.decided.range(c.from_slot..) {
            let found = merged.get(slot).map(|(_, v)| v);
            contract!(
                self,
                found == Some(d),
                "slot {slot} chosen as {d:?} but phase 1 found {found:?}"
            );
        }
        let last = merged
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.commit)
            .max(self.commit);
        let mut in_flight = BTreeMap::new();
        // Slots learned chosen while we campaigned (catch-up) need no second round.
        let first = self.commit + 1;
        for slot in first..=last {
            let decree = merged.remove(&slot).map_or(Decree::Noop, |(_, d)| d);
            in_flight.insert(
                slot,
                super::InFlight {
                    decree,
                    acks: Vec::new(),
                    sent: false,
                    sent_at: 0,
                },
            );
        }
        if in_flight.is_empty() {
            // Commit something in our own ballot so reads and the commit index move.
            in_flight.insert(
                first,
                super::InFlight {
                    decree: Decree::Noop,
                    acks: Vec::new(),
                    sent: false,
                    sent_at: 0,
                },
            );
        }
        let next_slot = in_flight.keys().next_back().map_or(first, |s| s + 1);
        let leader = Leader {
            ballot: c.ballot,
            next_slot,
            next_send: first,
            in_flight,
            queue: VecDeque::new(),
            batch_scratch: Vec::new(),
            spare_acks: Vec::new(),
            peers: BTreeMap::new(),
            hb_seq: 0,
            last_heartbeat_at: self.now,
            lease_until: 0,
            lease_held: false,
            reads: VecDeque::new(),
            transfer: None,
            change_ids: BTreeMap::new(),
        };
        self.leader_hint = Some(self.id);
        self.role = RoleState::Leader(Box::new(leader));
        let targets = self.leader_targets();
        let now = self.now;
        if let RoleState::Leader(l) = &mut self.role {
            for id in targets {
                // CheckQuorum counts from the election (the promises were the last contact).
                let heard_at = Some(now);
                l.peers.insert(
                    id,
                    Peer {
                        heard_at,
                        ..Peer::default()
                    },
                );
            }
        }
        self.pump(out);
        self.broadcast_heartbeat(out);
        contract!(
            self,
            self.leader_ballot() == Some(self.promised),
            "leader without its ballot"
        );
    }

    pub(super) fn on_nack(&mut self, ballot: Ballot, promised: Ballot, out: &mut Vec<Command>) {
        let promised_before = self.promised;
        self.on_nack_inner(ballot, promised, out);
        contract!(
            self,
            self.promised == promised_before,
            "a refusal changed our promise"
        );
        contract!(
            self,
            self.max_round_seen >= promised.round,
            "refusal round {} not remembered",
            promised.round
        );
    }

    fn on_nack_inner(&mut self, ballot: Ballot, promised: Ballot, out: &mut Vec<Command>) {
        self.max_round_seen = self.max_round_seen.max(promised.round);
        if promised <= ballot {
            return; // a lease guard, not a newer ballot: the candidate retries after its timeout
        }
        let mine = match &self.role {
            RoleState::Candidate(c) => c.ballot,
            RoleState::Leader(l) => l.ballot,
            RoleState::PreCandidate(p) => p.ballot,
            RoleState::Follower => return,
        };
        if mine == ballot {
            self.step_down(None, out);
        }
    }

    /// Leadership transfer, target side: the leader of `ballot` handed over.
    pub(super) fn on_timeout_now(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        out: &mut Vec<Command>,
    ) {
        if ballot != self.promised || ballot.leader != from || !self.electable || !self.is_voter() {
            return;
        }
        if matches!(self.role, RoleState::Leader(_)) {
            return;
        }
        if self.now < self.lease_guard_until && self.lease_guard_ballot != ballot {
            return; // we guard someone else's lease
        }
        if !matches!(self.role, RoleState::Follower) {
            self.role = RoleState::Follower;
        }
        let next = Ballot::new(self.promised.round.max(self.max_round_seen) + 1, self.id);
        self.start_candidate(next, Some(ballot), out);
    }

    pub(super) fn on_transfer_leadership(&mut self, to: ReplicaId, out: &mut Vec<Command>) {
        // Proposals that arrived before the transfer request get their slots first.
        self.cut_deferred(out);
        let now = self.now;
        let timeout = self.config.transfer_timeout_ticks;
        let is_voter = self.governing().voters.contains(&to);
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if to == self.id || !is_voter || l.transfer.is_some() {
            return;
        }
        l.transfer = Some(super::Transfer {
            to,
            deadline: now + timeout,
        });
        self.try_finish_transfer(out);
    }

    /// Hands over once the target has everything we committed and nothing is in flight.
    pub(super) fn try_finish_transfer(&mut self, out: &mut Vec<Command>) {
        let commit = self.commit;
        let RoleState::Leader(l) = &self.role else {
            return;
        };
        let Some(t) = &l.transfer else { return };
        let to = t.to;
        let ready = l.in_flight.is_empty() && l.peers.get(&to).is_some_and(|p| p.commit >= commit);
        if !ready {
            return;
        }
        let ballot = l.ballot;
        // Give up the lease before handing over: the target's prepare may bypass lease guards
        // that protect exactly this ballot.
        self.lease_guard_until = self.now;
        self.step_down(Some(to), out);
        out.push(Command::Send {
            to,
            msg: Message::TimeoutNow { ballot },
        });
    }

    pub(super) fn on_relinquish(&mut self, out: &mut Vec<Command>) {
        if !matches!(self.role, RoleState::Leader(_)) {
            return;
        }
        self.step_down(None, out);
        self.election_deadline = self.now + 2 * self.config.election_timeout_max_ticks;
        contract!(
            self,
            self.leader_ballot().is_none(),
            "still leading after relinquishing"
        );
    }

    /// CheckQuorum bookkeeping: a reply in the leader's own ballot shows `from` still follows.
    pub(super) fn note_heard(&mut self, from: ReplicaId, msg: &Message) {
        let ballot = match msg {
            Message::HeartbeatReply { ballot, .. } | Message::Accepted { ballot, .. } => *ballot,
            _ => return,
        };
        let now = self.now;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        let p = l.peers.entry(from).or_default();
        contract!(
            self,
            p.heard_at.is_none_or(|t| t <= now),
            "peer {from} heard at {:?}, after now",
            p.heard_at
        );
        p.heard_at = Some(now);
    }

    /// CheckQuorum (etcd/raft's name; RSL's primary gives up when it cannot renew its lease),
    /// on every leader tick: a leader that has not heard from a majority of the voters, itself
    /// included, of every membership in play (the ones its lease and read-index count) for
    /// `Config::check_quorum_ticks` steps down as if deposed: proposals and reads it held are
    /// aborted and it reports follower. It cannot commit without them, and clients that wait
    /// on it learn at once instead of by their own timeout. A leader whose lease is still valid
    /// keeps leading (with the window at least the lease, that only happens while a membership
    /// change brings in voters); a single voter always hears a majority (itself).
    ///
    /// Allocates nothing unless a voter is met for the first time (it runs every tick).
    /// Returns whether it stepped down.
    pub(super) fn check_quorum(&mut self, out: &mut Vec<Command>) -> bool {
        contract!(
            self,
            matches!(self.role, RoleState::Leader(_)),
            "check_quorum off a leader"
        );
        let window = self.config.check_quorum_ticks;
        if window == 0 {
            return false;
        }
        let (id, now) = (self.id, self.now);
        // A voter first needed now (its membership just went in flight) gets a full window.
        let RoleState::Leader(l) = &self.role else {
            return false;
        };
        let unheard =
            |v: &&ReplicaId| **v != id && l.peers.get(*v).and_then(|p| p.heard_at).is_none();
        if self
            .leader_memberships_iter(l)
            .any(|m| m.voters.iter().any(|v| unheard(&v)))
        {
            let newcomers: Vec<ReplicaId> = self
                .leader_memberships_iter(l)
                .flat_map(|m| m.voters.iter().filter(unheard).copied())
                .collect();
            if let RoleState::Leader(l) = &mut self.role {
                for v in newcomers {
                    l.peers.entry(v).or_default().heard_at = Some(now);
                }
            }
        }
        let RoleState::Leader(l) = &self.role else {
            return false;
        };
        let heard = self
            .leader_memberships_iter(l)
            .map(|m| quorum_heard_at(m, id, now, &l.peers))
            .min()
            .unwrap_or(now);
        contract!(self, heard <= now, "a majority heard at {heard}, after now");
        if now < heard + window || self.lease_valid(l) {
            return false;
        }
        let ballot = l.ballot;
        self.step_down(None, out);
        contract!(
            self,
            self.leader_ballot().is_none() && self.promised == ballot,
            "check-quorum step-down of {ballot} left a leader or moved the promise"
        );
        true
    }

    /// The memberships whose majorities a leader needs, as `leader_memberships` lists them,
    /// without cloning them.
    fn leader_memberships_iter<'a>(
        &'a self,
        l: &'a Leader,
    ) -> impl Iterator<Item = &'a Membership> + 'a {
        std::iter::once(self.membership_at(self.commit + 1))
            .chain(self.configs.range(self.commit + 2..).map(|(_, m)| m))
            .chain(l.in_flight.values().filter_map(|f| match &f.decree {
                Decree::Membership(m) => Some(m),
                _ => None,
            }))
    }
}

/// The latest tick by which a majority of `m`'s voters had been heard: the quorum-th most
/// recent contact (`leader` counts at `now`, a peer never heard counts as never; 0 when no
/// majority was ever heard).
fn quorum_heard_at(
    m: &Membership,
    leader: ReplicaId,
    now: u64,
    peers: &BTreeMap<ReplicaId, Peer>,
) -> u64 {
    let heard = m.voters.iter().filter_map(|v| {
        if *v == leader {
            Some(now)
        } else {
            peers.get(v).and_then(|p| p.heard_at)
        }
    });
    kth_largest_of(heard, m.quorum()).unwrap_or(0)
}
