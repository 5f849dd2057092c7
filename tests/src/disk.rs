//! The simulated disk: persist operations are buffered until synced; a crash loses the unsynced
//! ones; a restart rebuilds the replica's state from what was synced.
//!
//! Writes complete in the order they were issued (as a log device with ordered fsync does): a
//! sync makes a prefix of the pending operations durable and reports their tokens, so the
//! replica learns "persisted" only for operations that really are on the disk.

use crate::rng::SimRng;

/// State that persist operations are applied to (the replica's persistent state).
pub trait Durable: Clone + std::fmt::Debug {
    /// One persist operation.
    type Op: Clone + std::fmt::Debug;
    /// Applies one synced operation.
    fn apply(&mut self, op: &Self::Op);
}

/// The knobs of one run's disks, drawn from the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskConfig {
    /// Smallest write-to-durable latency, microseconds.
    pub sync_min_us: u64,
    /// Largest write-to-durable latency, microseconds.
    pub sync_max_us: u64,
}

impl DiskConfig {
    /// A fast, steady disk (for scenario tests).
    pub fn steady() -> Self {
        DiskConfig {
            sync_min_us: 50,
            sync_max_us: 50,
        }
    }
}

#[derive(Debug, Clone)]
struct Pending<Op> {
    token: u64,
    op: Op,
    durable_at_us: u64,
}

/// One replica's disk.
#[derive(Debug, Clone)]
pub struct Disk<S: Durable> {
    config: DiskConfig,
    durable: S,
    pending: Vec<Pending<S::Op>>,
    /// Operations made durable so far.
    pub synced: u64,
    /// Operations lost to crashes so far.
    pub lost: u64,
}

impl<S: Durable> Disk<S> {
    /// A disk holding `initial` as its durable state.
    pub fn new(config: DiskConfig, initial: S) -> Self {
        assert!(
            config.sync_min_us <= config.sync_max_us,
            "disk: latency range inverted"
        );
        Disk {
            config,
            durable: initial,
            pending: Vec::new(),
            synced: 0,
            lost: 0,
        }
    }

    /// Queues `op` (identified by `token`) at `now_us`; it becomes durable after a drawn latency,
    /// never before an operation queued earlier.
    pub fn write(&mut self, rng: &mut SimRng, now_us: u64, token: u64, op: S::Op) {
        let latency = rng.below(self.config.sync_min_us, self.config.sync_max_us + 1);
        let floor = self.pending.last().map_or(0, |p| p.durable_at_us);
        let durable_at_us = (now_us + latency).max(floor);
        self.pending.push(Pending {
            token,
            op,
            durable_at_us,
        });
    }

    /// When the next pending operation becomes durable.
    pub fn next_sync_us(&self) -> Option<u64> {
        self.pending.first().map(|p| p.durable_at_us)
    }

    /// Makes every operation due by `now_us` durable, in order; returns them with their tokens.
    pub fn sync_due(&mut self, now_us: u64) -> Vec<(u64, S::Op)> {
        let n = self
            .pending
            .iter()
            .take_while(|p| p.durable_at_us <= now_us)
            .count();
        let done: Vec<Pending<S::Op>> = self.pending.drain(..n).collect();
        let mut synced = Vec::with_capacity(done.len());
        for p in done {
            self.durable.apply(&p.op);
            self.synced += 1;
            synced.push((p.token, p.op));
        }
        synced
    }

    /// A crash: unsynced operations are gone.
    pub fn crash(&mut self) {
        self.lost += self.pending.len() as u64;
        self.pending.clear();
    }

    /// The durable state (what a restart recovers from).
    pub fn durable(&self) -> &S {
        &self.durable
    }

    /// Operations written but not yet durable.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, PartialEq)]
    struct Log(Vec<u32>);
    impl Durable for Log {
        type Op = u32;
        fn apply(&mut self, op: &u32) {
            self.0.push(*op);
        }
    }

    #[test]
    fn writes_become_durable_in_order_and_report_their_tokens() {
        let mut rng = SimRng::new(1);
        let mut d = Disk::new(
            DiskConfig {
                sync_min_us: 1,
                sync_max_us: 500,
            },
            Log::default(),
        );
        for i in 0..20 {
            d.write(&mut rng, i, 100 + i, i as u32);
        }
        let mut tokens = Vec::new();
        let mut t = 0;
        while d.pending_len() > 0 {
            t = d.next_sync_us().unwrap().max(t);
            tokens.extend(d.sync_due(t).into_iter().map(|(t, _)| t));
        }
        assert_eq!(tokens, (100..120).collect::<Vec<_>>());
        assert_eq!(d.durable().0, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn a_crash_loses_exactly_the_unsynced_writes() {
        let mut rng = SimRng::new(2);
        let mut d = Disk::new(DiskConfig::steady(), Log::default());
        d.write(&mut rng, 0, 1, 10);
        d.write(&mut rng, 0, 2, 11);
        assert_eq!(d.sync_due(50), vec![(1, 10), (2, 11)]);
        d.write(&mut rng, 60, 3, 12);
        d.crash();
        assert!(d.sync_due(1000).is_empty());
        assert_eq!(d.durable().0, vec![10, 11]);
        assert_eq!(d.lost, 1);
    }
}
