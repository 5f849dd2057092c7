//! The safety checks the simulator runs after every step, from outside the replicas.
//!
//! - At most one value is chosen per slot: every durable acceptance goes into a ledger (slot,
//!   ballot, value, acceptor); a value is chosen when a majority of the voters that govern the
//!   slot accepted it at one ballot, and two different chosen values at one slot fail the run.
//! - Nothing is committed that is not chosen: when a replica first commits a slot, the ledger
//!   must show its value accepted by a majority at one ballot.
//! - A chosen value never changes, and every replica applies the same sequence: each slot's
//!   value is recorded the first time any replica commits or applies it, and every later commit
//!   or apply of that slot must carry the same value; checkpoints of one slot must be equal.
//! - applied <= committed on every replica, and the host applies slots in order.
//! - Promises never regress (within an incarnation, and durably across crashes).
//! - No two replicas hold a lease at the same instant of true time, and a linearizable read
//!   is served at a slot no lower than the highest slot chosen when it was asked.
//!
//! The replica's own `validate()` runs too (in `World::step`).

use std::collections::{BTreeMap, BTreeSet};

use keel_core::{Ballot, Decree, Membership, PersistOp, ReadId, Replica, Slot};

/// A short description of a decree for failure messages: proposals by id with their decoded
/// key-value command, memberships by their voters and learners.
pub fn describe(d: &Decree) -> String {
    match d {
        Decree::Noop => "Noop".to_string(),
        Decree::Membership(m) => format!(
            "Membership(voters {:?}, learners {:?})",
            m.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
            m.learners.iter().map(|v| v.0).collect::<Vec<_>>()
        ),
        Decree::Batch(ps) => {
            let items: Vec<String> = ps
                .iter()
                .map(|p| match crate::kv::KvCommand::decode(&p.payload) {
                    Ok(c) => format!("#{} c{}/{} {:?}", p.id.0, c.client, c.seq, c.op),
                    Err(_) => format!("#{} ({} bytes)", p.id.0, p.payload.len()),
                })
                .collect();
            format!("Batch[{}]", items.join("; "))
        }
    }
}

#[derive(Debug, Default)]
struct SlotVotes {
    /// ballot -> (value, acceptors that made it durable).
    by_ballot: BTreeMap<Ballot, (Decree, BTreeSet<u64>)>,
    /// The value a majority accepted, once one did.
    chosen: Option<(Ballot, Decree)>,
}

/// Checker state across a run.
#[derive(Debug)]
pub struct Checker {
    initial: Membership,
    /// A membership decree at slot `k` governs the slots from `k + alpha` on.
    alpha: u64,
    /// Memberships by the slot of their decree (govern the slots after it).
    memberships: BTreeMap<Slot, Membership>,
    /// The value of each slot as first committed or applied anywhere.
    committed: BTreeMap<Slot, Decree>,
    /// Every slot up to this one is in `committed`.
    contiguous: Slot,
    /// Checkpoint bytes by slot.
    checkpoints: BTreeMap<Slot, Vec<u8>>,
    ledger: BTreeMap<Slot, SlotVotes>,
    /// Per replica: commit index and promise seen at its last step (this incarnation).
    last_commit: BTreeMap<u64, Slot>,
    last_promise: BTreeMap<u64, Ballot>,
    /// Per replica: highest durable promise (survives crashes).
    durable_promise: BTreeMap<u64, Ballot>,
    /// Linearizable reads in progress: (replica, read) -> highest slot chosen when asked.
    reads: BTreeMap<(u64, ReadId), Slot>,
    /// Lease holders seen at the last check.
    lease_seen: Vec<(u64, Ballot)>,
}

impl Checker {
    /// A checker for a cluster that starts with `initial`, where a membership decree at slot
    /// `k` governs every slot from `k + alpha` on (`Config::membership_alpha`).
    pub fn new(initial: Membership, alpha: u64) -> Checker {
        assert!(alpha >= 1, "checker: alpha must be at least 1");
        Checker {
            initial,
            alpha,
            memberships: BTreeMap::new(),
            committed: BTreeMap::new(),
            contiguous: 0,
            checkpoints: BTreeMap::new(),
            ledger: BTreeMap::new(),
            last_commit: BTreeMap::new(),
            last_promise: BTreeMap::new(),
            durable_promise: BTreeMap::new(),
            reads: BTreeMap::new(),
            lease_seen: Vec::new(),
        }
    }

    /// The highest slot any replica committed.
    pub fn max_chosen(&self) -> Slot {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// The membership of the latest chosen membership decree (or the initial one).
    pub fn latest_membership(&self) -> &Membership {
        self.memberships
            .values()
            .next_back()
            .unwrap_or(&self.initial)
    }

    /// Membership decrees chosen so far.
    pub fn membership_changes(&self) -> u64 {
        self.memberships.len() as u64
    }

    /// The slot of the membership decree that governs `slot` (0: the initial membership), if
    /// every slot that could hold it is known.
    fn governing_slot(&self, slot: Slot) -> Option<Slot> {
        let last_possible = slot.checked_sub(self.alpha)?;
        if last_possible > self.contiguous {
            return None;
        }
        Some(
            self.memberships
                .range(..=last_possible)
                .next_back()
                .map_or(0, |(&m, _)| m),
        )
    }

    /// The membership that governs `slot`, if every slot that could hold it is known.
    fn governing(&self, slot: Slot) -> Option<&Membership> {
        if slot < self.alpha {
            return Some(&self.initial);
        }
        match self.governing_slot(slot)? {
            0 => Some(&self.initial),
            m => self.memberships.get(&m),
        }
    }

    /// Records that `slot` holds `decree` as committed or applied by `by`.
    fn commit(&mut self, by: u64, slot: Slot, decree: &Decree) -> Result<(), String> {
        match self.committed.get(&slot) {
            Some(d) if d == decree => return Ok(()),
            Some(d) => {
                return Err(format!(
                    "slot {slot}: r{by} has {} but {} was chosen there before \
                     (a chosen value changed / two values chosen)",
                    describe(decree),
                    describe(d)
                ));
            }
            None => {}
        }
        self.committed.insert(slot, decree.clone());
        if let Decree::Membership(m) = decree {
            self.memberships.insert(slot, m.clone());
        }
        while self.committed.contains_key(&(self.contiguous + 1)) {
            self.contiguous += 1;
            let s = self.contiguous;
            self.evaluate(s, true)?;
        }
        Ok(())
    }

    /// Which ballots counted votes for `slot` under the membership that governs it in the final
    /// log. With pipelining, a ballot may have accepted a value at `slot` while a different,
    /// not yet chosen value sat below it; if a later ballot then chose a membership decree
    /// there, the earlier ballot's acceptances were counted (by its leader) against the old
    /// membership and may look like a majority of the new one without being chosen. A ballot
    /// counts when it held the governing membership decree itself, or is at least the ballot
    /// that decree was chosen in.
    fn eligible_ballots(&self, slot: Slot) -> impl Fn(&Ballot) -> bool + use<> {
        let governing = if slot < self.alpha {
            Some(0)
        } else {
            self.governing_slot(slot)
        };
        let (held, chosen_in): (BTreeSet<Ballot>, Option<Ballot>) = match governing {
            None | Some(0) => (BTreeSet::new(), Some(Ballot::ZERO)),
            Some(m) => {
                let decree = self.committed.get(&m);
                match self.ledger.get(&m) {
                    // No ledger for the decree's slot (it came in a checkpoint): trust the log.
                    None => (BTreeSet::new(), Some(Ballot::ZERO)),
                    Some(v) => (
                        v.by_ballot
                            .iter()
                            .filter(|(_, (d, _))| Some(d) == decree)
                            .map(|(b, _)| *b)
                            .collect(),
                        v.chosen.as_ref().map(|(b, _)| *b),
                    ),
                }
            }
        };
        move |b: &Ballot| held.contains(b) || chosen_in.is_some_and(|c| *b >= c)
    }

    /// Evaluates the ledger of `slot` (its governing membership must be known). With
    /// `must_be_chosen`, the committed value must be accepted by a majority at one ballot.
    fn evaluate(&mut self, slot: Slot, must_be_chosen: bool) -> Result<(), String> {
        let Some(m) = self.governing(slot).cloned() else {
            return Ok(());
        };
        let eligible = self.eligible_ballots(slot);
        let committed = self.committed.get(&slot).cloned();
        let votes = self.ledger.entry(slot).or_default();
        for (ballot, (decree, acceptors)) in &votes.by_ballot {
            if !eligible(ballot) {
                continue;
            }
            if !m.is_quorum(
                acceptors
                    .iter()
                    .map(|a| keel_core::ReplicaId(*a))
                    .collect::<Vec<_>>()
                    .iter(),
            ) {
                continue;
            }
            match &votes.chosen {
                Some((b, d)) if d != decree => {
                    return Err(format!(
                        "slot {slot}: two values chosen: {} at ballot {b} and {} at ballot \
                         {ballot} (acceptors {acceptors:?})",
                        describe(d),
                        describe(decree)
                    ));
                }
                Some(_) => {}
                None => votes.chosen = Some((*ballot, decree.clone())),
            }
        }
        if let (Some((b, d)), Some(c)) = (&votes.chosen, &committed)
            && d != c
        {
            return Err(format!(
                "slot {slot}: {} was committed but a majority accepted {} at ballot {b}",
                describe(c),
                describe(d)
            ));
        }
        if must_be_chosen
            && votes.chosen.is_none()
            && let Some(c) = &committed
        {
            // A slot below a checkpoint every acceptor truncated is committed from a
            // snapshot; only slots with ledger entries can be judged.
            if !votes.by_ballot.is_empty() {
                return Err(format!(
                    "slot {slot}: {} was committed but no majority of {:?} accepted it at \
                     one ballot (acceptances: {:?})",
                    describe(c),
                    m.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
                    votes
                        .by_ballot
                        .iter()
                        .map(|(b, (d, a))| (b.to_string(), d == c, a.clone()))
                        .collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }

    /// A persist operation of replica `id` became durable (`floor`: its checkpoint slot before).
    pub fn on_durable(&mut self, id: u64, floor: Slot, op: &PersistOp) -> Result<(), String> {
        match op {
            PersistOp::SavePromise { ballot } => {
                let p = self.durable_promise.entry(id).or_default();
                *p = (*p).max(*ballot);
            }
            PersistOp::Append { entries } => {
                for e in entries.iter().filter(|e| e.slot > floor) {
                    let p = self.durable_promise.entry(id).or_default();
                    *p = (*p).max(e.ballot);
                    let votes = self.ledger.entry(e.slot).or_default();
                    let (decree, acceptors) = votes
                        .by_ballot
                        .entry(e.ballot)
                        .or_insert_with(|| (e.decree.clone(), BTreeSet::new()));
                    if *decree != e.decree {
                        return Err(format!(
                            "slot {}: two values proposed in ballot {}: {} and {} (r{id})",
                            e.slot,
                            e.ballot,
                            describe(decree),
                            describe(&e.decree)
                        ));
                    }
                    acceptors.insert(id);
                    if e.slot <= self.contiguous + 1 {
                        self.evaluate(e.slot, false)?;
                    }
                }
            }
            PersistOp::SaveSnapshot { .. } => {}
        }
        Ok(())
    }

    /// After every step of replica `id`.
    pub fn after_step(&mut self, id: u64, r: &Replica, _now_us: u64) -> Result<(), String> {
        let (applied, commit, promised) = (r.applied_index(), r.commit_index(), r.promised());
        if applied > commit {
            return Err(format!("r{id}: applied {applied} above commit {commit}"));
        }
        if let Some(&p) = self.last_promise.get(&id)
            && promised < p
        {
            return Err(format!("r{id}: promise regressed from {p} to {promised}"));
        }
        self.last_promise.insert(id, promised);
        let from = self
            .last_commit
            .get(&id)
            .copied()
            .unwrap_or(r.snapshot_slot());
        if commit < from {
            return Err(format!("r{id}: commit regressed from {from} to {commit}"));
        }
        for slot in from + 1..=commit {
            if let Some(d) = r.chosen_at(slot) {
                let d = d.clone();
                self.commit(id, slot, &d)?;
            }
        }
        self.last_commit.insert(id, commit);
        Ok(())
    }

    /// Replica `id` applied `decree` at `slot`.
    pub fn on_apply(&mut self, id: u64, slot: Slot, decree: &Decree) -> Result<(), String> {
        self.commit(id, slot, decree)
    }

    /// Replica `id` installed a checkpoint of `slot`.
    pub fn on_install(&mut self, id: u64, slot: Slot, data: &[u8]) -> Result<(), String> {
        match self.checkpoints.get(&slot) {
            Some(d) if d.as_slice() != data => Err(format!(
                "r{id}: checkpoint at slot {slot} differs from another replica's at that slot"
            )),
            Some(_) => Ok(()),
            None => {
                self.checkpoints.insert(slot, data.to_vec());
                Ok(())
            }
        }
    }

    /// A membership decree at `slot` was applied somewhere.
    pub fn on_membership(&mut self, slot: Slot, membership: Membership) {
        self.memberships.entry(slot).or_insert(membership);
    }

    /// Replica `id` crashed: its volatile state is gone.
    pub fn on_crash(&mut self, id: u64) {
        self.last_commit.remove(&id);
        self.last_promise.remove(&id);
        self.reads.retain(|(r, _), _| *r != id);
    }

    /// Replica `id` (re)started from its durable state.
    pub fn on_restart(&mut self, id: u64) {
        self.last_commit.remove(&id);
        self.last_promise.insert(
            id,
            self.durable_promise.get(&id).copied().unwrap_or_default(),
        );
    }

    /// A linearizable read was asked of replica `id`.
    pub fn on_linear_read_start(&mut self, id: u64, rid: ReadId) {
        let chosen = self.max_chosen();
        self.reads.insert((id, rid), chosen);
    }

    /// Replica `id` served linearizable read `rid` at `slot`.
    pub fn on_linear_read(&mut self, id: u64, rid: ReadId, slot: Slot) -> Result<(), String> {
        if let Some(needed) = self.reads.remove(&(id, rid))
            && slot < needed
        {
            return Err(format!(
                "r{id}: linearizable read {rid:?} served at slot {slot}, but slot {needed} \
                 was already chosen when it was asked (stale read)"
            ));
        }
        Ok(())
    }

    /// The replicas that hold a lease now: (replica, ballot, lease end in true time).
    pub fn on_leases(&mut self, holders: &[(u64, Ballot, u64)], now_us: u64) -> Result<(), String> {
        if holders.len() > 1 {
            return Err(format!(
                "two replicas hold a lease at t={now_us}: {:?}",
                holders
                    .iter()
                    .map(|(id, b, end)| format!("r{id} ballot {b} until ~{end}"))
                    .collect::<Vec<_>>()
            ));
        }
        self.lease_seen = holders.iter().map(|(id, b, _)| (*id, *b)).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::{AcceptedEntry, ReplicaId};

    fn three() -> Checker {
        Checker::new(
            Membership::with_voters([ReplicaId(1), ReplicaId(2), ReplicaId(3)]),
            1,
        )
    }
    fn batch(id: u64) -> Decree {
        Decree::Batch(
            vec![keel_core::Proposal {
                id: keel_core::ProposalId(id),
                payload: Vec::new().into(),
            }]
            .into(),
        )
    }
    fn accept(
        c: &mut Checker,
        by: u64,
        slot: Slot,
        round: u64,
        leader: u64,
        d: &Decree,
    ) -> Result<(), String> {
        let entries = keel_core::smallvec::smallvec![AcceptedEntry {
            slot,
            ballot: Ballot::new(round, ReplicaId(leader)),
            decree: d.clone(),
        }];
        c.on_durable(by, 0, &PersistOp::Append { entries })
    }

    #[test]
    fn two_values_chosen_at_one_slot_are_caught() {
        let mut c = three();
        let (a, b) = (batch(1), batch(2));
        accept(&mut c, 1, 1, 1, 1, &a).unwrap();
        accept(&mut c, 2, 1, 1, 1, &a).unwrap();
        accept(&mut c, 2, 1, 2, 3, &b).unwrap();
        let e = accept(&mut c, 3, 1, 2, 3, &b).unwrap_err();
        assert!(e.contains("two values chosen"), "{e}");
    }

    #[test]
    fn the_same_value_chosen_again_at_a_higher_ballot_is_fine() {
        let mut c = three();
        let a = batch(1);
        for (by, round) in [(1, 1), (2, 1), (2, 2), (3, 2)] {
            accept(&mut c, by, 1, round, 1, &a).unwrap();
        }
        c.on_apply(1, 1, &a).unwrap();
        assert_eq!(c.max_chosen(), 1);
    }

    #[test]
    fn a_commit_without_a_majority_is_caught() {
        let mut c = three();
        let a = batch(1);
        accept(&mut c, 1, 1, 1, 1, &a).unwrap();
        let e = c.on_apply(1, 1, &a).unwrap_err();
        assert!(e.contains("no majority"), "{e}");
    }

    #[test]
    fn a_changed_chosen_value_is_caught() {
        let mut c = three();
        let (a, b) = (batch(1), batch(2));
        accept(&mut c, 1, 1, 1, 1, &a).unwrap();
        accept(&mut c, 2, 1, 1, 1, &a).unwrap();
        c.on_apply(1, 1, &a).unwrap();
        let e = c.on_apply(2, 1, &b).unwrap_err();
        assert!(e.contains("chosen there before"), "{e}");
    }

    #[test]
    fn one_ballot_proposing_two_values_is_caught() {
        let mut c = three();
        accept(&mut c, 1, 1, 1, 1, &batch(1)).unwrap();
        let e = accept(&mut c, 2, 1, 1, 1, &batch(2)).unwrap_err();
        assert!(e.contains("two values proposed"), "{e}");
    }

    #[test]
    fn overlapping_leases_and_stale_linear_reads_are_caught() {
        let mut c = three();
        let b1 = Ballot::new(1, ReplicaId(1));
        let b2 = Ballot::new(2, ReplicaId(2));
        c.on_leases(&[(1, b1, 100)], 0).unwrap();
        assert!(c.on_leases(&[(1, b1, 100), (2, b2, 200)], 50).is_err());
        let a = batch(1);
        accept(&mut c, 1, 1, 1, 1, &a).unwrap();
        accept(&mut c, 2, 1, 1, 1, &a).unwrap();
        c.on_apply(1, 1, &a).unwrap();
        c.on_linear_read_start(3, ReadId(7));
        let e = c.on_linear_read(3, ReadId(7), 0).unwrap_err();
        assert!(e.contains("stale read"), "{e}");
        c.on_linear_read_start(1, ReadId(8));
        c.on_linear_read(1, ReadId(8), 1).unwrap();
    }

    #[test]
    fn differing_checkpoints_of_one_slot_are_caught() {
        let mut c = three();
        c.on_install(1, 10, b"abc").unwrap();
        c.on_install(2, 10, b"abc").unwrap();
        assert!(c.on_install(3, 10, b"abd").is_err());
    }

    #[test]
    fn a_membership_decree_governs_only_from_alpha_slots_on() {
        let mut c = Checker::new(
            Membership::with_voters([ReplicaId(1), ReplicaId(2), ReplicaId(3)]),
            2,
        );
        let five = Membership::with_voters((1..=5).map(ReplicaId));
        let m = Decree::Membership(five);
        accept(&mut c, 1, 1, 1, 1, &m).unwrap();
        accept(&mut c, 2, 1, 1, 1, &m).unwrap();
        c.on_apply(1, 1, &m).unwrap();
        // Slot 2 is still governed by the initial three: two acceptances are a majority.
        accept(&mut c, 1, 2, 1, 1, &batch(2)).unwrap();
        accept(&mut c, 2, 2, 1, 1, &batch(2)).unwrap();
        c.on_apply(1, 2, &batch(2)).unwrap();
        // Slot 3 is governed by the five: two acceptances are not enough.
        accept(&mut c, 1, 3, 1, 1, &batch(3)).unwrap();
        accept(&mut c, 2, 3, 1, 1, &batch(3)).unwrap();
        let e = c.on_apply(1, 3, &batch(3)).unwrap_err();
        assert!(e.contains("no majority"), "{e}");
    }
}
