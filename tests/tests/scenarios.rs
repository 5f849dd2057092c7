//! Named scenarios on a simulated cluster. Each builds a cluster with a reliable network,
//! injects one precise fault, asserts concrete outcomes, and (as in every simulated run) has
//! every safety invariant checked after every step; each ends by checking the clients' history
//! for linearizability.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use keel_core::{Event, MembershipChange, ReplicaId, Role};
use keel_tests::world::{Scenario, TICK_US, World};

/// Unwraps a simulator result, failing the test with the failure and the trace.
macro_rules! sim {
    ($w:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(f) => panic!("{f}\n--- trace (last lines) ---\n{}", $w.trace_text()),
        }
    };
}

const SECOND: u64 = 1_000_000;

fn leader_of(w: &mut World) -> u64 {
    sim!(
        w,
        w.run_until_cond(SECOND, "a leader is elected", |w| w
            .current_leader()
            .is_some())
    );
    w.current_leader().unwrap()
}

/// Slots the leader has accepted above its commit index (its pipeline in flight).
fn in_flight(w: &World, leader: u64) -> u64 {
    let r = w.replica(leader).unwrap();
    let c = r.commit_index();
    (c + 1..)
        .take_while(|s| r.accepted_at(*s).is_some())
        .count() as u64
}

fn all_running_applied_equal(w: &World, ids: &[u64]) -> bool {
    let a = w.applied(ids[0]);
    a > 0
        && ids
            .iter()
            .all(|&i| w.replica(i).is_some() && w.applied(i) == a)
}

#[test]
fn leader_crashes_with_a_full_pipeline_in_flight() {
    let mut w = Scenario {
        clients: 12,
        delay_us: 2_000,
        config_tweak: |c| {
            c.max_in_flight = 8;
            c.max_batch_count = 1;
        },
        ..Scenario::new(11, 3)
    }
    .build();
    let old = leader_of(&mut w);
    sim!(
        w,
        w.run_until_cond(SECOND, "the pipeline fills", |w| in_flight(w, old) >= 8)
    );
    let ballot = w.replica(old).unwrap().promised();
    let chosen_before = w.max_chosen();
    w.crash_node(old);
    let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    sim!(
        w,
        w.run_until_cond(SECOND, "a new leader with a higher ballot", |w| {
            w.current_leader().is_some_and(|l| l != old)
        })
    );
    let new = w.current_leader().unwrap();
    assert!(
        w.replica(new).unwrap().promised() > ballot,
        "the new ballot is higher"
    );
    // The cluster commits well past what was in flight, and both survivors agree.
    sim!(
        w,
        w.run_until_cond(SECOND, "progress past the old pipeline", |w| {
            w.max_chosen() > chosen_before + 8
        })
    );
    sim!(w, w.restart_node(old));
    sim!(
        w,
        w.run_until_cond(SECOND, "the old leader catches up", |w| {
            let mut ids = others.clone();
            ids.push(old);
            all_running_applied_equal(w, &ids)
        })
    );
    assert_ne!(
        w.current_leader(),
        Some(old),
        "the restarted replica does not lead again at once"
    );
    sim!(w, w.check_history());
}

#[test]
fn minority_partition_holding_the_old_leader_rejoins() {
    let mut w = Scenario::new(12, 5).build();
    let old = leader_of(&mut w);
    sim!(w, w.run_for(100_000));
    let buddy = (1..=5).find(|&i| i != old).unwrap();
    w.partition_off(&[old, buddy]);
    let old_commit = w.replica(old).unwrap().commit_index();
    let majority: Vec<u64> = (1..=5).filter(|&i| i != old && i != buddy).collect();
    sim!(
        w,
        w.run_until_cond(SECOND, "the majority elects its own leader", |w| {
            w.current_leader().is_some_and(|l| majority.contains(&l))
        })
    );
    sim!(w, w.run_for(300_000));
    assert_eq!(
        w.replica(old).unwrap().commit_index(),
        old_commit,
        "the old leader commits nothing without a majority"
    );
    let new = w.current_leader().unwrap();
    assert!(
        w.max_chosen() > old_commit,
        "the majority side made progress"
    );
    w.heal_network();
    sim!(
        w,
        w.run_until_cond(
            SECOND,
            "the old leader steps down and everyone converges",
            |w| {
                w.replica(old).unwrap().role() != Role::Leader
                    && all_running_applied_equal(w, &[1, 2, 3, 4, 5])
            }
        )
    );
    assert_eq!(
        w.current_leader(),
        Some(new),
        "the majority's leader keeps leading"
    );
    sim!(w, w.check_history());
}

#[test]
fn learner_promoted_while_leader_fails_over() {
    let mut w = Scenario {
        spares: 1,
        ..Scenario::new(13, 3)
    }
    .build();
    let old = leader_of(&mut w);
    sim!(w, w.run_for(100_000));
    w.start_spare_node(4);
    let id = w.proposal_id();
    sim!(
        w,
        w.inject(
            old,
            Event::ChangeMembership {
                id,
                change: MembershipChange::AddLearner(ReplicaId(4))
            }
        )
    );
    sim!(
        w,
        w.run_until_cond(SECOND, "the learner is added and catches up", |w| {
            w.chosen_membership().learners.contains(&ReplicaId(4))
                && w.applied(4) + 2 >= w.max_chosen()
        })
    );
    assert_eq!(w.replica(4).unwrap().role(), Role::Learner);
    // Promote, and lose the leader in the same instant.
    let id = w.proposal_id();
    sim!(
        w,
        w.inject(
            old,
            Event::ChangeMembership {
                id,
                change: MembershipChange::PromoteLearner(ReplicaId(4))
            }
        )
    );
    w.crash_node(old);
    sim!(
        w,
        w.run_until_cond(SECOND, "a new leader", |w| {
            w.current_leader().is_some_and(|l| l != old)
        })
    );
    let new = w.current_leader().unwrap();
    if !w.chosen_membership().voters.contains(&ReplicaId(4)) {
        // The promotion was lost with the leader: the new leader can do it.
        let id = w.proposal_id();
        sim!(
            w,
            w.inject(
                new,
                Event::ChangeMembership {
                    id,
                    change: MembershipChange::PromoteLearner(ReplicaId(4))
                }
            )
        );
    }
    sim!(
        w,
        w.run_until_cond(SECOND, "replica 4 is a voter", |w| {
            w.chosen_membership().voters.contains(&ReplicaId(4))
        })
    );
    let voters: Vec<u64> = w.chosen_membership().voters.iter().map(|v| v.0).collect();
    assert_eq!(voters, vec![1, 2, 3, 4]);
    // With 4 voters and 1 down, the remaining 3 are a majority: the cluster still commits, and
    // replica 4 votes now (it is no longer a learner).
    let before = w.max_chosen();
    sim!(
        w,
        w.run_until_cond(SECOND, "commits with the promoted voter", |w| w
            .max_chosen()
            > before + 5)
    );
    assert_ne!(w.replica(4).unwrap().role(), Role::Learner);
    sim!(w, w.restart_node(old));
    sim!(
        w,
        w.run_until_cond(SECOND, "everyone converges", |w| all_running_applied_equal(
            w,
            &[1, 2, 3, 4]
        ))
    );
    sim!(w, w.check_history());
}

#[test]
fn lagging_replica_catches_up_from_a_snapshot() {
    let mut w = Scenario {
        config_tweak: |c| {
            c.snapshot_interval = 10;
            c.log_retain_slots = 4;
        },
        ..Scenario::new(14, 3)
    }
    .build();
    let leader = leader_of(&mut w);
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    sim!(w, w.run_for(50_000));
    w.crash_node(lagging);
    let behind = w.applied(lagging);
    sim!(
        w,
        w.run_until_cond(5 * SECOND, "the log moves 100 slots on", |w| w.max_chosen()
            > behind + 100)
    );
    assert!(
        w.replica(leader).unwrap().snapshot_slot() > behind + 10,
        "the leader released its log"
    );
    sim!(w, w.restart_node(lagging));
    sim!(
        w,
        w.run_until_cond(SECOND, "the lagging replica catches up", |w| {
            all_running_applied_equal(w, &[1, 2, 3])
        })
    );
    assert!(
        w.installs(lagging) >= 1,
        "it caught up through a checkpoint, not the log alone"
    );
    let (a, b) = (w.store(lagging).unwrap(), w.store(leader).unwrap());
    assert_eq!(a, b, "same state machine after catch-up");
    sim!(w, w.check_history());
}

#[test]
fn a_partitioned_replica_returning_does_not_depose_the_healthy_leader() {
    let mut w = Scenario::new(15, 3).build();
    let leader = leader_of(&mut w);
    sim!(w, w.run_for(50_000));
    let ballot = w.replica(leader).unwrap().promised();
    let loner = (1..=3).find(|&i| i != leader).unwrap();
    w.partition_off(&[loner]);
    // Many election timeouts pass on the loner's side.
    sim!(w, w.run_for(500_000));
    assert_eq!(w.current_leader(), Some(leader));
    w.heal_network();
    sim!(w, w.run_for(500_000));
    assert_eq!(
        w.current_leader(),
        Some(leader),
        "the healthy leader keeps leading"
    );
    assert_eq!(
        w.replica(leader).unwrap().promised(),
        ballot,
        "no election happened at all"
    );
    assert!(
        w.replica(loner).unwrap().promised() <= ballot,
        "the loner's pre-votes raised no ballot"
    );
    sim!(
        w,
        w.run_until_cond(SECOND, "the loner catches up", |w| {
            all_running_applied_equal(w, &[1, 2, 3])
        })
    );
    sim!(w, w.check_history());
}

#[test]
fn leadership_transfer_under_load() {
    let mut w = Scenario {
        clients: 6,
        ..Scenario::new(16, 5)
    }
    .build();
    let old = leader_of(&mut w);
    sim!(w, w.run_for(100_000));
    let target = (1..=5).rev().find(|&i| i != old).unwrap();
    let done_before = w.ops_completed();
    sim!(
        w,
        w.inject(
            old,
            Event::TransferLeadership {
                to: ReplicaId(target)
            }
        )
    );
    sim!(
        w,
        w.run_until_cond(SECOND / 2, "the target leads", |w| w.current_leader()
            == Some(target))
    );
    assert_ne!(
        w.replica(old).unwrap().role(),
        Role::Leader,
        "the old leader stepped down"
    );
    sim!(w, w.run_for(200_000));
    assert!(
        w.ops_completed() > done_before + 20,
        "clients kept completing operations"
    );
    assert_eq!(w.current_leader(), Some(target));
    sim!(w, w.check_history());
}

#[test]
fn membership_change_racing_a_leader_change() {
    let mut w = Scenario::new(17, 5).build();
    let old = leader_of(&mut w);
    sim!(w, w.run_for(100_000));
    let removed = (1..=5).find(|&i| i != old).unwrap();
    let id = w.proposal_id();
    sim!(
        w,
        w.inject(
            old,
            Event::ChangeMembership {
                id,
                change: MembershipChange::Remove(ReplicaId(removed))
            }
        )
    );
    // The leader is cut off right after proposing the change: it may or may not be chosen.
    sim!(w, w.run_for(300));
    w.partition_off(&[old]);
    sim!(
        w,
        w.run_until_cond(SECOND, "a new leader", |w| w
            .current_leader()
            .is_some_and(|l| l != old))
    );
    w.heal_network();
    let expected_if_removed: Vec<u64> = (1..=5).filter(|&i| i != removed).collect();
    sim!(
        w,
        w.run_until_cond(SECOND, "every member agrees on the membership", |w| {
            let m = w.chosen_membership();
            let members: Vec<u64> = m.voters.iter().map(|v| v.0).collect();
            members
                .iter()
                .all(|&i| w.replica(i).unwrap().membership() == &m)
                && all_running_applied_equal(w, &members)
        })
    );
    let voters: Vec<u64> = w.chosen_membership().voters.iter().map(|v| v.0).collect();
    assert!(
        voters == expected_if_removed || voters == vec![1, 2, 3, 4, 5],
        "the change took effect whole or not at all: {voters:?}"
    );
    let before = w.max_chosen();
    sim!(
        w,
        w.run_until_cond(SECOND, "the cluster commits after the race", |w| w
            .max_chosen()
            > before + 5)
    );
    sim!(w, w.check_history());
}

#[test]
fn leader_cut_off_from_its_majority_steps_down_and_aborts_what_it_held() {
    let mut w = Scenario {
        clients: 6,
        ..Scenario::new(18, 3)
    }
    .build();
    let old = leader_of(&mut w);
    sim!(w, w.run_for(100_000));
    let window_us = w.replica(old).unwrap().config().check_quorum_ticks * TICK_US;
    let ballot = w.replica(old).unwrap().promised();
    sim!(
        w,
        w.run_until_cond(SECOND, "clients wait on the leader", |w| w
            .pending_proposals(old)
            > 0)
    );
    let cut = w.now();
    w.partition_off(&[old]);
    // Reference: etcd/raft CheckQuorum. It heard from its followers up to the cut; it steps
    // down one check-quorum window later (within a tick), well before the clients' 50 ms
    // timeout would have sent them elsewhere.
    sim!(
        w,
        w.run_until_cond(2 * window_us, "the cut-off leader steps down", |w| {
            w.replica(old).unwrap().role() != Role::Leader
        })
    );
    let stepped_after = w.now() - cut;
    assert!(
        (window_us - TICK_US..=window_us + TICK_US).contains(&stepped_after),
        "stepped down {stepped_after} us after the cut, window {window_us} us"
    );
    assert_eq!(
        w.replica(old).unwrap().promised(),
        ballot,
        "it stepped down on its own, not for a higher ballot"
    );
    assert_eq!(
        w.pending_proposals(old),
        0,
        "every proposal it held was aborted (the clients retry elsewhere)"
    );
    let majority: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    sim!(
        w,
        w.run_until_cond(SECOND, "the majority elects its own leader", |w| w
            .current_leader()
            .is_some_and(|l| majority.contains(&l)))
    );
    let done = w.ops_completed();
    sim!(w, w.run_for(200_000));
    assert!(
        w.ops_completed() > done + 20,
        "clients complete operations on the new leader"
    );
    assert_ne!(w.replica(old).unwrap().role(), Role::Leader);
    assert_eq!(w.pending_proposals(old), 0, "a follower holds no proposal");
    w.heal_network();
    sim!(
        w,
        w.run_until_cond(SECOND, "everyone converges on the new leader", |w| {
            w.current_leader().is_some_and(|l| majority.contains(&l))
                && all_running_applied_equal(w, &[1, 2, 3])
        })
    );
    sim!(w, w.check_history());
}
