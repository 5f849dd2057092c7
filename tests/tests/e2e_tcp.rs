//! End-to-end: three `keel run` processes over TCP, a client writing and reading, faults.
//!
//! After each fault: every acknowledged write is present, the history is linearizable, and a
//! write invoked after the fault commits within `FAILOVER_BOUND` (the figure is printed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_common;

use std::time::Duration;

use e2e_common::{
    Cluster, FAILOVER_BOUND, Workload, kill_9_the_leader_under_load_then_restart_it, serial,
};

const CLIENTS: u64 = 3;

#[test]
fn e2e_tcp_kill_9_the_leader_under_load_then_restart_it() {
    let _serial = serial();
    let cluster = Cluster::start("kill-leader", 3, 0, false);
    kill_9_the_leader_under_load_then_restart_it(cluster, "tcp", CLIENTS);
}

#[test]
fn e2e_tcp_kill_a_follower_and_keep_committing() {
    let _serial = serial();
    let mut cluster = Cluster::start("kill-follower", 3, 0, false);
    let leader = cluster.leader(Duration::from_secs(20));
    let follower = if leader == 1 { 2 } else { 1 };
    let load = Workload::start(cluster.services(), CLIENTS);
    load.wait_writes(100, Duration::from_secs(20));
    let fault = load.now_us();
    cluster.kill(follower);
    let after = load.first_commit_after(fault, FAILOVER_BOUND);
    eprintln!("e2e tcp: follower {follower} killed; next commit {after:?} later");
    load.wait_writes(200, Duration::from_secs(20));
    assert_eq!(
        cluster.leader(Duration::from_secs(5)),
        leader,
        "a follower's death must not depose the leader"
    );
    cluster.spawn(follower);
    load.wait_writes(100, Duration::from_secs(20));
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), CLIENTS);
}

#[test]
fn e2e_tcp_isolate_the_leader_then_heal() {
    let _serial = serial();
    let mut cluster = Cluster::start("isolate", 3, 0, true);
    let leader = cluster.leader(Duration::from_secs(20));
    let load = Workload::start(cluster.services(), CLIENTS);
    load.wait_writes(100, Duration::from_secs(20));
    let fault = load.now_us();
    cluster.partition.isolate(leader);
    let failover = load.first_commit_after(fault, FAILOVER_BOUND);
    eprintln!(
        "e2e tcp: leader {leader} isolated; the majority committed a write {failover:?} later (bound {FAILOVER_BOUND:?})"
    );
    load.wait_writes(100, Duration::from_secs(20));
    cluster.partition.heal();
    load.wait_writes(100, Duration::from_secs(20));
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), CLIENTS);
}

#[test]
fn e2e_tcp_change_membership_while_writing() {
    let _serial = serial();
    let mut cluster = Cluster::start("membership", 4, 1, false);
    cluster.leader(Duration::from_secs(20));
    let load = Workload::start(cluster.services(), CLIENTS);
    load.wait_writes(100, Duration::from_secs(20));
    // Through the operator's command, as an operator would.
    let out = cluster.keel(&["members", "add", "4"]);
    assert!(out.contains("applied at decree"), "{out}");
    load.wait_writes(100, Duration::from_secs(20));
    cluster.keel(&["members", "promote", "4"]);
    load.wait_writes(100, Duration::from_secs(20));
    let leader = cluster.leader(Duration::from_secs(10));
    let victim = if leader == 1 { 2 } else { 1 };
    cluster.keel(&["members", "remove", &victim.to_string()]);
    load.wait_writes(100, Duration::from_secs(20));
    let status = cluster
        .status(cluster.leader(Duration::from_secs(10)))
        .unwrap();
    let mut voters = status.membership.voters.clone();
    voters.sort_unstable();
    let expected: Vec<u64> = (1..=4).filter(|&i| i != victim).collect();
    assert_eq!(voters, expected);
    let table = cluster.keel(&["status"]);
    assert!(table.contains("leader"), "{table}");
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), CLIENTS);
}
