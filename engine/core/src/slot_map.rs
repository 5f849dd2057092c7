//! [`SlotMap`]: values by slot, dense where the log is dense.
//!
//! The log's slots are consecutive above the checkpoint, so the replica keeps its accepted and
//! decided values (and [`crate::PersistentState`] its accepted ones) in a ring indexed by slot (a `VecDeque` that keeps its capacity): adding the
//! next slot and dropping the oldest allocate nothing once the ring has grown to the log's
//! working size, where a `BTreeMap` allocates a node every few inserts. A slot far from the
//! ring (more than [`MAX_GAP`] past either end, which only a replica that fell far behind
//! sees) goes to a sparse map instead, so a stray high slot never stretches the ring.

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Bound, RangeBounds};

use crate::types::Slot;

/// The most empty places an insert may add to the ring; a slot further away is kept sparse.
const MAX_GAP: u64 = 1024;

/// An ordered map from slot to `V` with the `BTreeMap` operations a log needs: dense slots live
/// in a ring that keeps its capacity (inserting the next slot and dropping the oldest allocate
/// nothing once it has grown), far-away slots (more than 1024 past either end of the ring) in a
/// sparse map, so a stray high slot never stretches the ring.
///
/// Invariant: a slot is in at most one of `ring` and `far`; `ring[i]`, when occupied, holds
/// slot `base + i`; no key of `far` lies in `base..base + ring.len()`; `in_ring` counts the
/// occupied places of `ring`.
#[derive(Clone)]
pub struct SlotMap<V> {
    base: Slot,
    ring: VecDeque<Option<(Slot, V)>>,
    far: BTreeMap<Slot, V>,
    in_ring: usize,
}

impl<V> Default for SlotMap<V> {
    fn default() -> Self {
        SlotMap {
            base: 0,
            ring: VecDeque::new(),
            far: BTreeMap::new(),
            in_ring: 0,
        }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for SlotMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Equal when they hold the same values at the same slots (however each is laid out).
impl<V: PartialEq> PartialEq for SlotMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<V: Eq> Eq for SlotMap<V> {}

impl<V> SlotMap<V> {
    /// An empty map (allocates nothing until the first insert).
    pub fn new() -> Self {
        SlotMap::default()
    }

    /// One past the ring's last place.
    fn end(&self) -> Slot {
        self.base + self.ring.len() as u64
    }

    fn covers(&self, slot: Slot) -> bool {
        slot >= self.base && slot < self.end()
    }

    /// The value at `slot`.
    pub fn get(&self, slot: &Slot) -> Option<&V> {
        if self.covers(*slot) {
            self.ring[(*slot - self.base) as usize]
                .as_ref()
                .map(|(_, v)| v)
        } else {
            self.far.get(slot)
        }
    }

    /// Whether `slot` holds a value.
    pub fn contains_key(&self, slot: &Slot) -> bool {
        self.get(slot).is_some()
    }

    /// Whether no slot holds a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of slots holding a value.
    pub fn len(&self) -> usize {
        self.in_ring + self.far.len()
    }

    /// Sets the value at `slot`, returning the one it replaced.
    pub fn insert(&mut self, slot: Slot, value: V) -> Option<V> {
        if self.in_ring == 0 && !self.far.contains_key(&slot) {
            // An empty ring moves to wherever the log is now.
            self.ring.clear();
            self.base = slot;
        }
        if !self.covers(slot) {
            let end = self.end();
            if slot >= end && slot - end <= MAX_GAP {
                while self.end() <= slot {
                    self.ring.push_back(None);
                }
                self.adopt(end, self.end());
            } else if slot < self.base && self.base - slot <= MAX_GAP {
                let old = self.base;
                while self.base > slot {
                    self.ring.push_front(None);
                    self.base -= 1;
                }
                self.adopt(slot, old);
            } else {
                return self.far.insert(slot, value);
            }
        }
        let i = (slot - self.base) as usize;
        let old = self.ring[i].replace((slot, value)).map(|(_, v)| v);
        if old.is_none() {
            self.in_ring += 1;
        }
        old
    }

    /// Moves the sparse values in `from..to` (now inside the ring) into it.
    fn adopt(&mut self, from: Slot, to: Slot) {
        while let Some((&slot, _)) = self.far.range(from..to).next() {
            if let Some(v) = self.far.remove(&slot) {
                let i = (slot - self.base) as usize;
                self.ring[i] = Some((slot, v));
                self.in_ring += 1;
            }
        }
    }

    /// Drops every value below `slot` (the ring keeps its capacity).
    pub fn remove_below(&mut self, slot: Slot) {
        self.remove_below_into(slot, drop);
    }

    /// Removes every value below `slot`, handing each to `sink` in slot order (the ring keeps
    /// its capacity).
    pub fn remove_below_into(&mut self, slot: Slot, mut sink: impl FnMut(V)) {
        while self.base < slot {
            match self.ring.pop_front() {
                Some(e) => {
                    if let Some((_, v)) = e {
                        self.in_ring -= 1;
                        sink(v);
                    }
                    self.base += 1;
                }
                None => {
                    self.base = slot;
                }
            }
        }
        if self.far.range(..slot).next().is_some() {
            let kept = self.far.split_off(&slot);
            for (_, v) in std::mem::replace(&mut self.far, kept) {
                sink(v);
            }
        }
    }

    /// The values at slots within `range`, in slot order.
    pub fn range(
        &self,
        range: impl RangeBounds<Slot>,
    ) -> impl DoubleEndedIterator<Item = (&Slot, &V)> {
        let lo = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        // Exclusive; `None` for "to the end".
        let hi = match range.end_bound() {
            Bound::Included(&s) => s.checked_add(1),
            Bound::Excluded(&s) => Some(s),
            Bound::Unbounded => None,
        };
        let hi_or_max = hi.unwrap_or(Slot::MAX);
        let (base, end) = (self.base, self.end());
        let below = if lo < base.min(hi_or_max) {
            Some(self.far.range(lo..base.min(hi_or_max)))
        } else {
            None
        };
        let ring_lo = lo.clamp(base, end);
        let ring_hi = hi_or_max.clamp(base, end).max(ring_lo);
        let ring = self
            .ring
            .range((ring_lo - base) as usize..(ring_hi - base) as usize)
            .filter_map(|e| e.as_ref().map(|(s, v)| (s, v)));
        let above_lo = lo.max(end);
        let above = match hi {
            Some(h) if h <= above_lo => None,
            Some(h) => Some(self.far.range(above_lo..h)),
            None => Some(self.far.range(above_lo..)),
        };
        below
            .into_iter()
            .flatten()
            .chain(ring)
            .chain(above.into_iter().flatten())
    }

    /// Every value, in slot order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Slot, &V)> {
        self.range(..)
    }

    /// Every slot holding a value, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Slot> {
        self.iter().map(|(s, _)| s)
    }

    /// Every value, in slot order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Every value, in slot order, consuming the map.
    pub fn into_values(mut self) -> impl Iterator<Item = V> {
        let above = self.far.split_off(&self.end());
        let below = self.far;
        below
            .into_values()
            .chain(self.ring.into_iter().flatten().map(|(_, v)| v))
            .chain(above.into_values())
    }
}

impl<V> FromIterator<(Slot, V)> for SlotMap<V> {
    fn from_iter<I: IntoIterator<Item = (Slot, V)>>(iter: I) -> Self {
        let mut m = SlotMap::new();
        for (s, v) in iter {
            m.insert(s, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Slot, u32),
        RemoveBelow(Slot),
        Range(Slot, Slot, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Mostly near slots (dense use), sometimes far ones (sparse use).
        let slot = prop_oneof![4 => 0u64..3000, 1 => any::<u64>().prop_map(|s| s % 1_000_000)];
        prop_oneof![
            5 => (slot.clone(), any::<u32>()).prop_map(|(s, v)| Op::Insert(s, v)),
            1 => slot.clone().prop_map(Op::RemoveBelow),
            2 => (slot.clone(), slot, any::<bool>()).prop_map(|(a, b, i)| Op::Range(a, b, i)),
        ]
    }

    proptest! {
        /// Behaves as a `BTreeMap` for every sequence of the operations the replica uses.
        #[test]
        fn matches_a_btree_map(ops in proptest::collection::vec(op(), 1..200)) {
            let mut m = SlotMap::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(s, v) => prop_assert_eq!(m.insert(s, v), model.insert(s, v)),
                    Op::RemoveBelow(s) => {
                        m.remove_below(s);
                        model = model.split_off(&s);
                    }
                    Op::Range(a, b, inclusive) => {
                        let (lo, hi) = (a.min(b), a.max(b));
                        let got: Vec<_> = if inclusive {
                            m.range(lo..=hi).collect()
                        } else {
                            m.range(lo..hi).collect()
                        };
                        let want: Vec<_> = if inclusive {
                            model.range(lo..=hi).collect()
                        } else {
                            model.range(lo..hi).collect()
                        };
                        prop_assert_eq!(got, want);
                        let got: Vec<_> = m.range(lo..).rev().collect();
                        let want: Vec<_> = model.range(lo..).rev().collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(m.len(), model.len());
                prop_assert!(m.iter().eq(model.iter()));
                prop_assert!(m.clone().into_values().eq(model.values().copied()));
                let rebuilt: SlotMap<u32> = model.iter().rev().map(|(s, v)| (*s, *v)).collect();
                prop_assert_eq!(&rebuilt, &m);
                for s in model.keys() {
                    prop_assert_eq!(m.get(s), model.get(s));
                }
                prop_assert!(m.ring.len() as u64 <= 1_000_000 + MAX_GAP + 1);
            }
        }
    }

    #[test]
    fn a_sliding_dense_log_stops_allocating() {
        let mut m = SlotMap::new();
        for s in 1..=100u64 {
            m.insert(s, s);
            m.remove_below(s.saturating_sub(10));
        }
        let cap = m.ring.capacity();
        for s in 101..=10_000u64 {
            m.insert(s, s);
            m.remove_below(s - 10);
        }
        assert_eq!(
            m.ring.capacity(),
            cap,
            "the ring grew while the window stayed put"
        );
        assert!(m.far.is_empty());
        assert_eq!(m.len(), 11);
    }

    #[test]
    fn a_far_slot_stays_sparse_and_joins_the_ring_when_reached() {
        let mut m = SlotMap::new();
        m.insert(10, 'a');
        m.insert(10 + 5 * MAX_GAP, 'z');
        assert!(
            m.ring.len() < 2 * MAX_GAP as usize,
            "ring stretched to a far slot"
        );
        assert_eq!(m.far.len(), 1);
        for s in 11..=11 + 5 * MAX_GAP {
            if s != 10 + 5 * MAX_GAP {
                m.insert(s, 'b');
            }
        }
        assert!(m.far.is_empty(), "the far slot was not adopted");
        assert_eq!(m.get(&(10 + 5 * MAX_GAP)), Some(&'z'));
        assert_eq!(m.len() as u64, 5 * MAX_GAP + 2);
        assert!(m.iter().map(|(s, _)| *s).eq(10..=11 + 5 * MAX_GAP));
    }
}
