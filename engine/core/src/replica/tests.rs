//! Unit tests: exact command lists for the handlers (openraft style), and a small seeded
//! cluster harness that checks agreement under loss, duplication, reordering and crashes.
//! The full simulator with linearizability checks lives in `keel-tests` (`keel-sim`).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::*;

fn id(n: u64) -> ReplicaId {
    ReplicaId(n)
}

fn three() -> Config {
    Config::new(Membership::with_voters([id(1), id(2), id(3)]))
}

fn b(round: u64, leader: u64) -> Ballot {
    Ballot::new(round, id(leader))
}

fn tok(n: u64) -> PersistToken {
    PersistToken(n)
}

fn send(to: u64, msg: Message) -> Command {
    Command::Send { to: id(to), msg }
}

fn msg(from: u64, msg: Message) -> Event {
    Event::Message {
        from: id(from),
        msg,
    }
}

/// Ticks `r` until it emits something; returns what it emitted.
fn tick_until_output(r: &mut Replica) -> Vec<Command> {
    for _ in 0..1000 {
        let out = r.step_collect(Event::Tick);
        r.validate();
        if !out.is_empty() {
            return out;
        }
    }
    panic!("replica {} stayed silent", r.id());
}

/// Drives replica 1 of three through pre-vote and phase 1 to leadership, checking each step's
/// exact commands. Returns the leader (ballot 1.1, noop at slot 1 in flight, token 2 issued).
fn elect_r1() -> Replica {
    let mut r = Replica::new(id(1), three(), 7).unwrap();
    // Reference: pre-vote asks without changing anyone's promise.
    let out = tick_until_output(&mut r);
    assert_eq!(
        out,
        vec![
            send(
                2,
                Message::PreVote {
                    ballot: b(1, 1),
                    commit: 0
                }
            ),
            send(
                3,
                Message::PreVote {
                    ballot: b(1, 1),
                    commit: 0
                }
            ),
            Command::RoleChanged {
                role: Role::Candidate,
                ballot: Ballot::ZERO,
                leader: None
            },
        ]
    );
    assert_eq!(r.promised(), Ballot::ZERO, "a pre-vote changes no promise");
    // One grant plus our own is a majority of three: phase 1 for every slot from 1 on.
    let out = r.step_collect(msg(
        2,
        Message::PreVoteReply {
            ballot: b(1, 1),
            granted: true,
        },
    ));
    let prepare = Message::Prepare {
        ballot: b(1, 1),
        from_slot: 1,
        transfer_from: None,
    };
    assert_eq!(
        out,
        vec![
            Command::Persist {
                token: tok(1),
                op: PersistOp::SavePromise { ballot: b(1, 1) }
            },
            send(2, prepare.clone()),
            send(3, prepare),
        ]
    );
    // Our own promise counts only once durable: one promise from 2 is not enough before.
    let promise = Message::Promise {
        ballot: b(1, 1),
        from_slot: 1,
        log_start: 0,
        commit: 0,
        accepted: vec![],
    };
    assert_eq!(r.step_collect(msg(2, promise)), vec![]);
    assert_eq!(r.role(), Role::Candidate);
    let out = r.step_collect(Event::Persisted { token: tok(1) });
    let noop = vec![SlotDecree {
        slot: 1,
        decree: Decree::Noop,
    }];
    let accept = Message::Accept {
        ballot: b(1, 1),
        commit: 0,
        entries: noop,
    };
    let hb = Message::Heartbeat {
        ballot: b(1, 1),
        commit: 0,
        seq: 1,
        sent_at: r.now(),
    };
    assert_eq!(
        out,
        vec![
            Command::Persist {
                token: tok(2),
                op: PersistOp::Append {
                    entries: vec![AcceptedEntry {
                        slot: 1,
                        ballot: b(1, 1),
                        decree: Decree::Noop
                    }]
                }
            },
            send(2, accept.clone()),
            send(3, accept),
            send(2, hb.clone()),
            send(3, hb),
            Command::RoleChanged {
                role: Role::Leader,
                ballot: b(1, 1),
                leader: Some(id(1))
            },
        ]
    );
    r.validate();
    r
}

#[test]
fn election_and_first_commit_exact_commands() {
    let mut r = elect_r1();
    // A follower's acknowledgement alone is not a majority: our own append is not durable.
    let accepted = Message::Accepted {
        ballot: b(1, 1),
        slots: vec![1],
    };
    assert_eq!(r.step_collect(msg(2, accepted)), vec![]);
    assert_eq!(r.commit_index(), 0);
    // Reference: a value is chosen when a majority accepted it in one ballot.
    let out = r.step_collect(Event::Persisted { token: tok(2) });
    assert_eq!(
        out,
        vec![Command::Apply {
            slot: 1,
            decree: Decree::Noop
        }]
    );
    assert_eq!((r.commit_index(), r.applied_index()), (1, 1));
    r.validate();
}

#[test]
fn duplicate_acceptance_is_counted_once() {
    let mut r = elect_r1();
    let accepted = Message::Accepted {
        ballot: b(1, 1),
        slots: vec![1],
    };
    assert_eq!(r.step_collect(msg(2, accepted.clone())), vec![]);
    assert_eq!(r.step_collect(msg(2, accepted)), vec![]);
    assert_eq!(
        r.commit_index(),
        0,
        "one voter acknowledging twice is not a majority of three"
    );
}

#[test]
fn proposals_are_batched_when_the_window_is_full() {
    let mut config = three();
    config.max_in_flight = 1;
    config.max_batch_count = 2;
    let mut r = Replica::new(id(1), config, 7).unwrap();
    // Elect quickly (same path as elect_r1, not re-checked here).
    tick_until_output(&mut r);
    r.step_collect(msg(
        2,
        Message::PreVoteReply {
            ballot: b(1, 1),
            granted: true,
        },
    ));
    r.step_collect(Event::Persisted { token: tok(1) });
    let promise = Message::Promise {
        ballot: b(1, 1),
        from_slot: 1,
        log_start: 0,
        commit: 0,
        accepted: vec![],
    };
    r.step_collect(msg(2, promise));
    assert_eq!(r.role(), Role::Leader);
    // Slot 1 (the noop) fills the window of one: three proposals wait in the queue.
    for n in 1..=3 {
        assert_eq!(
            r.step_collect(Event::Propose {
                id: ProposalId(n),
                payload: vec![n as u8]
            }),
            vec![]
        );
    }
    r.step_collect(Event::Persisted { token: tok(2) });
    let out = r.step_collect(msg(
        3,
        Message::Accepted {
            ballot: b(1, 1),
            slots: vec![1],
        },
    ));
    let batch = Decree::Batch(vec![
        Proposal {
            id: ProposalId(1),
            payload: vec![1],
        },
        Proposal {
            id: ProposalId(2),
            payload: vec![2],
        },
    ]);
    let accept = Message::Accept {
        ballot: b(1, 1),
        commit: 1,
        entries: vec![SlotDecree {
            slot: 2,
            decree: batch.clone(),
        }],
    };
    assert_eq!(
        out,
        vec![
            Command::Apply {
                slot: 1,
                decree: Decree::Noop
            },
            Command::Persist {
                token: tok(3),
                op: PersistOp::Append {
                    entries: vec![AcceptedEntry {
                        slot: 2,
                        ballot: b(1, 1),
                        decree: batch
                    }]
                }
            },
            send(2, accept.clone()),
            send(3, accept),
        ]
    );
}

#[test]
fn acceptor_releases_acknowledgement_only_after_persist() {
    let mut r = Replica::new(id(2), three(), 1).unwrap();
    let entries = vec![SlotDecree {
        slot: 1,
        decree: Decree::Noop,
    }];
    let out = r.step_collect(msg(
        1,
        Message::Accept {
            ballot: b(1, 1),
            commit: 0,
            entries,
        },
    ));
    assert_eq!(
        out,
        vec![
            Command::Persist {
                token: tok(1),
                op: PersistOp::SavePromise { ballot: b(1, 1) }
            },
            Command::Persist {
                token: tok(2),
                op: PersistOp::Append {
                    entries: vec![AcceptedEntry {
                        slot: 1,
                        ballot: b(1, 1),
                        decree: Decree::Noop
                    }]
                }
            },
        ]
    );
    assert_eq!(
        r.step_collect(Event::Persisted { token: tok(1) }),
        vec![],
        "append not yet durable"
    );
    assert_eq!(
        r.step_collect(Event::Persisted { token: tok(2) }),
        vec![send(
            1,
            Message::Accepted {
                ballot: b(1, 1),
                slots: vec![1]
            }
        )]
    );
    // A lower ballot is refused with our promise.
    let entries = vec![SlotDecree {
        slot: 1,
        decree: Decree::Noop,
    }];
    assert_eq!(
        r.step_collect(msg(
            3,
            Message::Accept {
                ballot: b(0, 3),
                commit: 0,
                entries
            }
        )),
        vec![send(
            3,
            Message::Nack {
                ballot: b(0, 3),
                promised: b(1, 1)
            }
        )]
    );
    // The next message's commit index makes slot 1 chosen here.
    let hb = Message::Heartbeat {
        ballot: b(1, 1),
        commit: 1,
        seq: 1,
        sent_at: 0,
    };
    assert_eq!(
        r.step_collect(msg(1, hb)),
        vec![
            Command::Apply {
                slot: 1,
                decree: Decree::Noop
            },
            send(
                1,
                Message::HeartbeatReply {
                    ballot: b(1, 1),
                    seq: 1,
                    sent_at: 0,
                    commit: 1
                }
            ),
        ]
    );
    r.validate();
}

#[test]
fn prepare_is_refused_during_a_lease_guard_and_promise_waits_for_persist() {
    let mut r = Replica::new(id(2), three(), 1).unwrap();
    // Recovery guards a lease we may have acknowledged before the crash.
    let prepare = Message::Prepare {
        ballot: b(1, 3),
        from_slot: 1,
        transfer_from: None,
    };
    assert_eq!(
        r.step_collect(msg(3, prepare.clone())),
        vec![send(
            3,
            Message::Nack {
                ballot: b(1, 3),
                promised: Ballot::ZERO
            }
        )]
    );
    for _ in 0..r.config().lease_ticks {
        r.step_collect(Event::Tick);
    }
    let out = r.step_collect(msg(3, prepare));
    assert_eq!(
        out,
        vec![Command::Persist {
            token: tok(1),
            op: PersistOp::SavePromise { ballot: b(1, 3) }
        }]
    );
    let promise = Message::Promise {
        ballot: b(1, 3),
        from_slot: 1,
        log_start: 0,
        commit: 0,
        accepted: vec![],
    };
    assert_eq!(
        r.step_collect(Event::Persisted { token: tok(1) }),
        vec![send(3, promise)]
    );
}

#[test]
fn pre_vote_is_refused_while_a_leader_is_alive() {
    let mut r = Replica::new(id(2), three(), 1).unwrap();
    let hb = Message::Heartbeat {
        ballot: b(1, 1),
        commit: 0,
        seq: 1,
        sent_at: 0,
    };
    r.step_collect(msg(1, hb));
    assert_eq!(
        r.step_collect(msg(
            3,
            Message::PreVote {
                ballot: b(2, 3),
                commit: 0
            }
        )),
        vec![send(
            3,
            Message::PreVoteReply {
                ballot: b(2, 3),
                granted: false
            }
        )]
    );
    assert_eq!(r.promised(), Ballot::ZERO);
}

#[test]
fn fast_read_refused_when_lagging() {
    let mut r = Replica::new(id(2), three(), 1).unwrap();
    let lag = r.config().fast_read_lag_max;
    assert_eq!(
        r.step_collect(Event::FastRead {
            id: ReadId(1),
            min_slot: lag + 1
        }),
        vec![Command::ReadRefused {
            id: ReadId(1),
            reason: ReadRefusal::Lagging {
                applied: 0,
                min_slot: lag + 1,
                lag_max: lag
            }
        }]
    );
    assert_eq!(
        r.step_collect(Event::FastRead {
            id: ReadId(2),
            min_slot: 0
        }),
        vec![Command::ReadReady {
            id: ReadId(2),
            slot: 0
        }]
    );
    // Within the bound the read waits, and times out if nothing arrives.
    assert_eq!(
        r.step_collect(Event::FastRead {
            id: ReadId(3),
            min_slot: 1
        }),
        vec![]
    );
    let mut refused = false;
    for _ in 0..r.config().read_timeout_ticks {
        let out = r.step_collect(Event::Tick);
        refused |= out.contains(&Command::ReadRefused {
            id: ReadId(3),
            reason: ReadRefusal::Timeout,
        });
    }
    assert!(refused);
}

#[test]
fn proposal_on_a_follower_is_aborted_with_a_hint() {
    let mut r = Replica::new(id(2), three(), 1).unwrap();
    let hb = Message::Heartbeat {
        ballot: b(1, 1),
        commit: 0,
        seq: 1,
        sent_at: 0,
    };
    r.step_collect(msg(1, hb));
    assert_eq!(
        r.step_collect(Event::Propose {
            id: ProposalId(9),
            payload: vec![]
        }),
        vec![Command::ProposalAborted {
            id: ProposalId(9),
            reason: AbortReason::NotLeader { hint: Some(id(1)) }
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// A small seeded cluster: enough to exercise every path together and check agreement.

struct Node {
    replica: Replica,
    /// Persist ops issued but not yet reported durable.
    unsynced: Vec<(PersistToken, PersistOp)>,
    durable: PersistentState,
    up: bool,
    applied: Vec<(Slot, Decree)>,
    last_applied: Slot,
    seed: u64,
}

struct Cluster {
    rng: ChaCha8Rng,
    config: Config,
    nodes: BTreeMap<ReplicaId, Node>,
    net: Vec<(ReplicaId, ReplicaId, Message)>,
    /// slot -> the value any replica applied there.
    chosen: BTreeMap<Slot, Decree>,
    next_proposal: u64,
    snapshots: bool,
}

impl Cluster {
    fn new(seed: u64, n: u64, config_fn: impl Fn(&mut Config)) -> Cluster {
        let mut config = Config::new(Membership::with_voters((1..=n).map(id)));
        config_fn(&mut config);
        let mut nodes = BTreeMap::new();
        for i in 1..=n {
            let replica = Replica::new(id(i), config.clone(), seed * 100 + i).unwrap();
            nodes.insert(
                id(i),
                Node {
                    replica,
                    unsynced: vec![],
                    durable: PersistentState::default(),
                    up: true,
                    applied: vec![],
                    last_applied: 0,
                    seed: seed * 100 + i,
                },
            );
        }
        Cluster {
            rng: ChaCha8Rng::seed_from_u64(seed),
            config,
            nodes,
            net: vec![],
            chosen: BTreeMap::new(),
            next_proposal: 1,
            snapshots: false,
        }
    }

    fn step(&mut self, who: ReplicaId, event: Event) {
        let node = self.nodes.get_mut(&who).unwrap();
        if !node.up {
            return;
        }
        let out = node.replica.step_collect(event);
        node.replica.validate();
        let mut follow_up = vec![];
        for c in out {
            match c {
                Command::Persist { token, op } => node.unsynced.push((token, op)),
                Command::Send { to, msg } => self.net.push((who, to, msg)),
                Command::Apply { slot, decree } => {
                    assert_eq!(slot, node.last_applied + 1, "{who} applied out of order");
                    node.last_applied = slot;
                    if let Some(d) = self.chosen.get(&slot) {
                        assert_eq!(d, &decree, "two values applied at slot {slot}");
                    } else {
                        self.chosen.insert(slot, decree.clone());
                    }
                    node.applied.push((slot, decree));
                }
                Command::InstallSnapshot { snapshot } => {
                    assert!(snapshot.meta.slot > node.last_applied);
                    node.last_applied = snapshot.meta.slot;
                }
                Command::TakeSnapshot { slot } => {
                    assert_eq!(slot, node.last_applied);
                    follow_up.push(Event::SnapshotTaken {
                        slot,
                        data: slot.to_le_bytes().to_vec(),
                    });
                }
                _ => {}
            }
        }
        for e in follow_up {
            self.step(who, e);
        }
    }

    fn random_step(&mut self, faults: bool) {
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        let who = ids[self.rng.random_range(0..ids.len())];
        match self.rng.random_range(0..100) {
            0..=44 if !self.net.is_empty() => {
                let i = self.rng.random_range(0..self.net.len());
                let (from, to, m) = self.net.swap_remove(i);
                if faults && self.rng.random_bool(0.05) {
                    return; // lost
                }
                if faults && self.rng.random_bool(0.05) {
                    self.net.push((from, to, m.clone())); // duplicated
                }
                self.step(to, Event::Message { from, msg: m });
            }
            0..=59 => {
                let node = self.nodes.get_mut(&who).unwrap();
                if let Some((last, _)) = node.unsynced.last().cloned() {
                    for (_, op) in node.unsynced.drain(..) {
                        node.durable.apply(&op);
                    }
                    self.step(who, Event::Persisted { token: last });
                }
            }
            60..=84 => self.step(who, Event::Tick),
            85..=94 => {
                let p = self.next_proposal;
                self.next_proposal += 1;
                self.step(
                    who,
                    Event::Propose {
                        id: ProposalId(p),
                        payload: p.to_le_bytes().to_vec(),
                    },
                );
            }
            95..=96 if faults && self.snapshots => {
                let node = self.nodes.get(&who).unwrap();
                let slot = node.last_applied;
                if slot > node.replica.snapshot_slot() && slot == node.replica.applied_index() {
                    self.step(
                        who,
                        Event::SnapshotTaken {
                            slot,
                            data: vec![1],
                        },
                    );
                }
            }
            _ if faults && self.rng.random_bool(0.2) => {
                // Crash and restart from the durable state: unsynced writes are lost.
                let node = self.nodes.get_mut(&who).unwrap();
                node.unsynced.clear();
                node.seed += 1000;
                node.replica =
                    Replica::recover(who, self.config.clone(), node.durable.clone(), node.seed)
                        .unwrap();
                node.last_applied = node.durable.snapshot_slot();
                self.net.retain(|(_, to, _)| *to != who);
            }
            _ => {}
        }
    }

    fn max_commit(&self) -> Slot {
        self.nodes
            .values()
            .map(|n| n.replica.commit_index())
            .max()
            .unwrap_or(0)
    }
}

fn run_cluster(seed: u64, n: u64, steps: usize, snapshots: bool) {
    let mut c = Cluster::new(seed, n, |cfg| {
        cfg.max_in_flight = 4;
        cfg.max_catch_up_decrees = 8;
        cfg.log_retain_slots = 4;
    });
    c.snapshots = snapshots;
    for _ in 0..steps {
        c.random_step(true);
    }
    // Heal: no faults; the cluster must commit again.
    let before = c.max_commit();
    for n in c.nodes.values_mut() {
        n.up = true;
    }
    let mut progressed = false;
    for _ in 0..20_000 {
        c.random_step(false);
        if c.max_commit() > before + 2 {
            progressed = true;
            break;
        }
    }
    assert!(
        progressed,
        "seed {seed}: no progress after healing (commit {before})"
    );
}

#[test]
fn seeded_three_replica_clusters_agree() {
    for seed in 0..30 {
        run_cluster(seed, 3, 3000, false);
    }
}

#[test]
fn seeded_five_replica_clusters_agree_with_snapshots() {
    for seed in 100..115 {
        run_cluster(seed, 5, 3000, true);
    }
}
