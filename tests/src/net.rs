//! The simulated network: loss, duplication, reordering, delay, partitions (two-way and
//! one-way) and FoundationDB-style clogging of single links.
//!
//! Time is the simulation's true time in microseconds. A message sent at `now` is delivered at
//! `now + delay`, where the delay is drawn per message (so messages overtake each other: that is
//! the reordering). A partitioned link drops what is sent on it; a clogged link holds what is
//! sent on it until it is unclogged, then releases it (late, and in a burst).

use std::collections::{BTreeMap, BTreeSet};

use crate::rng::SimRng;

/// A replica's address in the simulation.
pub type NodeId = u64;

/// The knobs of one run's network, drawn from the seed (see `crate::options`).
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice (the copy with its own delay).
    pub duplicate: f64,
    /// Smallest one-way delay, microseconds.
    pub delay_min_us: u64,
    /// Largest one-way delay, microseconds (the spread is what reorders messages).
    pub delay_max_us: u64,
}

impl NetConfig {
    /// A network that loses, duplicates and reorders nothing (for scenario tests).
    pub fn reliable() -> Self {
        NetConfig {
            loss: 0.0,
            duplicate: 0.0,
            delay_min_us: 100,
            delay_max_us: 100,
        }
    }
}

/// A message on its way.
#[derive(Debug, Clone)]
pub struct InFlight<M> {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The payload.
    pub msg: M,
}

/// Counters of what the network did, for the run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to `send`.
    pub sent: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages dropped by random loss.
    pub lost: u64,
    /// Messages dropped by a partition.
    pub cut: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Messages held by a clogged link.
    pub clogged: u64,
}

/// The network between the replicas of one simulated cluster.
#[derive(Debug)]
pub struct Network<M> {
    config: NetConfig,
    /// Messages keyed by (delivery time, sequence number): a deterministic order.
    queue: BTreeMap<(u64, u64), InFlight<M>>,
    next_seq: u64,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Directed links that hold everything until the given time: (from, to) -> until_us.
    clogged: BTreeMap<(NodeId, NodeId), u64>,
    /// Messages held on clogged links, in send order.
    held: Vec<InFlight<M>>,
    /// What happened so far.
    pub stats: NetStats,
}

impl<M: Clone> Network<M> {
    /// An empty network with the given knobs.
    pub fn new(config: NetConfig) -> Self {
        assert!(
            config.delay_min_us <= config.delay_max_us,
            "net: delay range inverted"
        );
        Network {
            config,
            queue: BTreeMap::new(),
            next_seq: 0,
            cut: BTreeSet::new(),
            clogged: BTreeMap::new(),
            held: Vec::new(),
            stats: NetStats::default(),
        }
    }

    /// The knobs in force.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Replaces the knobs (the simulator turns faults off when it heals the cluster).
    pub fn set_config(&mut self, config: NetConfig) {
        assert!(
            config.delay_min_us <= config.delay_max_us,
            "net: delay range inverted"
        );
        self.config = config;
    }

    fn enqueue(&mut self, at_us: u64, m: InFlight<M>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.insert((at_us, seq), m);
    }

    fn delay(&self, rng: &mut SimRng) -> u64 {
        rng.below(self.config.delay_min_us, self.config.delay_max_us + 1)
    }

    /// Sends `msg` from `from` to `to` at true time `now_us`, applying loss, duplication,
    /// partitions and clogging.
    pub fn send(&mut self, rng: &mut SimRng, now_us: u64, from: NodeId, to: NodeId, msg: M) {
        self.stats.sent += 1;
        if self.cut.contains(&(from, to)) {
            self.stats.cut += 1;
            return;
        }
        if rng.chance(self.config.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if rng.chance(self.config.duplicate) {
            2
        } else {
            1
        };
        self.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let m = InFlight {
                from,
                to,
                msg: msg.clone(),
            };
            if self.clogged.contains_key(&(from, to)) {
                self.stats.clogged += 1;
                self.held.push(m);
            } else {
                let at = now_us + self.delay(rng);
                self.enqueue(at, m);
            }
        }
    }

    /// The time of the next delivery, if any message is in flight.
    pub fn next_delivery_us(&self) -> Option<u64> {
        self.queue.keys().next().map(|&(at, _)| at)
    }

    /// The earliest time a clogged link opens, if any is clogged.
    pub fn next_unclog_us(&self) -> Option<u64> {
        self.clogged.values().copied().min()
    }

    /// Removes and returns the next message due at or before `now_us`. A message whose link was
    /// cut while it was in flight is dropped (the cut is on the wire, not only at the sender).
    pub fn pop_due(&mut self, now_us: u64) -> Option<InFlight<M>> {
        loop {
            let (&key, _) = self.queue.iter().next()?;
            if key.0 > now_us {
                return None;
            }
            let m = self.queue.remove(&key)?;
            if self.cut.contains(&(m.from, m.to)) {
                self.stats.cut += 1;
                continue;
            }
            self.stats.delivered += 1;
            return Some(m);
        }
    }

    /// Opens every clogged link whose time has come and releases what it held.
    pub fn unclog_due(&mut self, rng: &mut SimRng, now_us: u64) {
        let due: Vec<(NodeId, NodeId)> = self
            .clogged
            .iter()
            .filter(|&(_, &until)| until <= now_us)
            .map(|(&k, _)| k)
            .collect();
        for link in due {
            self.unclog(rng, now_us, link.0, link.1);
        }
    }

    /// Cuts the directed link `from -> to` (a one-way partition).
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        assert_ne!(from, to, "net: a node is never partitioned from itself");
        self.cut.insert((from, to));
    }

    /// Cuts both directions between every node of `side` and every node not in it.
    pub fn partition(&mut self, side: &[NodeId], all: &[NodeId]) {
        for &a in side {
            for &b in all {
                if !side.contains(&b) {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
            }
        }
    }

    /// Restores a cut directed link.
    pub fn restore_link(&mut self, from: NodeId, to: NodeId) {
        self.cut.remove(&(from, to));
    }

    /// Clogs the directed link `from -> to` until `until_us`.
    pub fn clog(&mut self, from: NodeId, to: NodeId, until_us: u64) {
        assert_ne!(from, to, "net: a node never clogs its own link");
        let e = self.clogged.entry((from, to)).or_insert(until_us);
        *e = (*e).max(until_us);
    }

    /// Opens a clogged link now and releases its held messages with fresh delays.
    pub fn unclog(&mut self, rng: &mut SimRng, now_us: u64, from: NodeId, to: NodeId) {
        self.clogged.remove(&(from, to));
        let held = std::mem::take(&mut self.held);
        for m in held {
            if m.from == from && m.to == to {
                let at = now_us + self.delay(rng);
                self.enqueue(at, m);
            } else {
                self.held.push(m);
            }
        }
    }

    /// Removes every partition and clog (clogged messages are released).
    pub fn heal(&mut self, rng: &mut SimRng, now_us: u64) {
        self.cut.clear();
        let links: Vec<(NodeId, NodeId)> = self.clogged.keys().copied().collect();
        for (a, b) in links {
            self.unclog(rng, now_us, a, b);
        }
        assert!(self.held.is_empty(), "net: heal left messages held");
    }

    /// Drops every message in flight to or held for `node` (it crashed: its sockets are gone).
    pub fn drop_to(&mut self, node: NodeId) {
        self.queue.retain(|_, m| m.to != node);
        self.held.retain(|m| m.to != node);
    }

    /// True when the directed link is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Number of cut directed links (for traces).
    pub fn cut_count(&self) -> usize {
        self.cut.len()
    }

    /// Number of messages in flight or held.
    pub fn in_flight(&self) -> usize {
        self.queue.len() + self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(net: &mut Network<u32>, now: u64) -> Vec<(NodeId, NodeId, u32)> {
        let mut out = Vec::new();
        while let Some(m) = net.pop_due(now) {
            out.push((m.from, m.to, m.msg));
        }
        out
    }

    #[test]
    fn a_reliable_network_delivers_everything_once_after_the_delay() {
        let mut rng = SimRng::new(1);
        let mut net = Network::new(NetConfig::reliable());
        for i in 0..10 {
            net.send(&mut rng, 0, 1, 2, i);
        }
        assert!(drain(&mut net, 99).is_empty());
        let got = drain(&mut net, 100);
        assert_eq!(
            got.iter().map(|m| m.2).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(net.stats.delivered, 10);
    }

    #[test]
    fn random_delays_reorder_and_duplication_makes_copies() {
        let mut rng = SimRng::new(2);
        let cfg = NetConfig {
            loss: 0.0,
            duplicate: 0.5,
            delay_min_us: 1,
            delay_max_us: 1000,
        };
        let mut net = Network::new(cfg);
        for i in 0..200 {
            net.send(&mut rng, 0, 1, 2, i);
        }
        let got: Vec<u32> = drain(&mut net, 10_000).into_iter().map(|m| m.2).collect();
        assert!(got.len() > 200, "some copies expected, got {}", got.len());
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "some reordering expected"
        );
        assert_eq!(net.stats.duplicated as usize, got.len() - 200);
    }

    #[test]
    fn loss_drops_about_the_configured_share() {
        let mut rng = SimRng::new(3);
        let cfg = NetConfig {
            loss: 0.3,
            duplicate: 0.0,
            delay_min_us: 1,
            delay_max_us: 1,
        };
        let mut net = Network::new(cfg);
        for i in 0..10_000 {
            net.send(&mut rng, 0, 1, 2, i);
        }
        let n = drain(&mut net, 10).len();
        assert!((6500..7500).contains(&n), "delivered {n}");
    }

    #[test]
    fn a_one_way_partition_drops_only_its_direction_even_in_flight() {
        let mut rng = SimRng::new(4);
        let mut net = Network::new(NetConfig::reliable());
        net.send(&mut rng, 0, 1, 2, 1);
        net.cut_link(1, 2);
        net.send(&mut rng, 0, 1, 2, 2);
        net.send(&mut rng, 0, 2, 1, 3);
        assert_eq!(drain(&mut net, 1000), vec![(2, 1, 3)]);
        net.heal(&mut rng, 1000);
        net.send(&mut rng, 1000, 1, 2, 4);
        assert_eq!(drain(&mut net, 2000), vec![(1, 2, 4)]);
    }

    #[test]
    fn a_two_way_partition_isolates_a_side() {
        let mut rng = SimRng::new(5);
        let mut net = Network::new(NetConfig::reliable());
        net.partition(&[1], &[1, 2, 3]);
        assert!(net.is_cut(1, 2) && net.is_cut(2, 1) && net.is_cut(3, 1));
        assert!(!net.is_cut(2, 3));
        net.send(&mut rng, 0, 2, 3, 9);
        net.send(&mut rng, 0, 3, 1, 8);
        assert_eq!(drain(&mut net, 1000), vec![(2, 3, 9)]);
    }

    #[test]
    fn a_clogged_link_holds_messages_until_it_opens() {
        let mut rng = SimRng::new(6);
        let mut net = Network::new(NetConfig::reliable());
        net.clog(1, 2, 5000);
        net.send(&mut rng, 0, 1, 2, 7);
        net.send(&mut rng, 0, 2, 1, 8);
        assert_eq!(drain(&mut net, 4000), vec![(2, 1, 8)]);
        assert_eq!(net.next_unclog_us(), Some(5000));
        net.unclog_due(&mut rng, 5000);
        assert_eq!(drain(&mut net, 5100), vec![(1, 2, 7)]);
        assert_eq!(net.in_flight(), 0);
    }

    #[test]
    fn a_crashed_node_loses_what_was_on_its_way_to_it() {
        let mut rng = SimRng::new(7);
        let mut net = Network::new(NetConfig::reliable());
        net.send(&mut rng, 0, 1, 2, 1);
        net.send(&mut rng, 0, 2, 1, 2);
        net.drop_to(2);
        assert_eq!(drain(&mut net, 1000), vec![(2, 1, 2)]);
    }
}
