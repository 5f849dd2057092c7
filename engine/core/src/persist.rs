//! The durable state a replica restarts from.

use crate::io::PersistOp;
use crate::slot_map::SlotMap;
use crate::types::{AcceptedEntry, Ballot, Slot, Snapshot};

/// Everything a replica needs after a crash: the host rebuilds it from the
/// [`crate::Command::Persist`] operations that were durable, applying them in order with
/// [`PersistentState::apply`], and passes it to [`crate::Replica::recover`].
///
/// Losing a suffix of not-yet-reported operations is fine (that is a crash before
/// [`crate::Event::Persisted`]); losing or reordering reported ones breaks Paxos.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersistentState {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// Accepted values by slot (only slots above the snapshot's; dense, so a host mirroring its
    /// log appends without allocating per slot).
    pub accepted: SlotMap<AcceptedEntry>,
    /// The latest checkpoint, if any. The host restores its state machine from it.
    pub snapshot: Option<Snapshot>,
}

impl PersistentState {
    /// Applies one durable operation (the reference meaning of [`PersistOp`]).
    pub fn apply(&mut self, op: &PersistOp) {
        match op {
            PersistOp::SavePromise { ballot } => {
                self.promised = self.promised.max(*ballot);
            }
            PersistOp::Append { entries } => {
                let floor = self.snapshot_slot();
                for e in entries.iter().filter(|e| e.slot > floor) {
                    self.promised = self.promised.max(e.ballot);
                    self.accepted.insert(e.slot, e.clone());
                }
            }
            PersistOp::SaveSnapshot { snapshot } => {
                if snapshot.meta.slot > self.snapshot_slot() {
                    self.accepted.remove_below(snapshot.meta.slot + 1);
                    self.snapshot = Some(snapshot.clone());
                }
            }
        }
    }

    /// The slot of the latest checkpoint (0 without one).
    pub fn snapshot_slot(&self) -> Slot {
        self.snapshot.as_ref().map_or(0, |s| s.meta.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Decree, Membership, ReplicaId, SnapshotMeta};

    fn entry(slot: Slot, round: u64) -> AcceptedEntry {
        AcceptedEntry {
            slot,
            ballot: Ballot::new(round, ReplicaId(1)),
            decree: Decree::Noop,
        }
    }

    #[test]
    fn append_raises_promise_and_snapshot_truncates() {
        let mut s = PersistentState::default();
        s.apply(&PersistOp::Append {
            entries: smallvec::smallvec![entry(1, 2), entry(2, 2), entry(3, 3)],
        });
        assert_eq!(s.promised, Ballot::new(3, ReplicaId(1)));
        s.apply(&PersistOp::SavePromise {
            ballot: Ballot::new(1, ReplicaId(9)),
        });
        assert_eq!(
            s.promised,
            Ballot::new(3, ReplicaId(1)),
            "promise never regresses"
        );
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                slot: 2,
                membership: Membership::default(),
            },
            data: vec![7],
        };
        s.apply(&PersistOp::SaveSnapshot { snapshot });
        assert_eq!(s.accepted.keys().copied().collect::<Vec<_>>(), vec![3]);
        s.apply(&PersistOp::Append {
            entries: smallvec::smallvec![entry(1, 4)],
        });
        assert!(
            !s.accepted.contains_key(&1),
            "slots under the snapshot are not kept"
        );
        assert_eq!(s.snapshot_slot(), 2);
    }
}
