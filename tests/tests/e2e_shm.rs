//! End-to-end: three `keel run` processes over the shared-memory transport (ring files with
//! the handshake), a client writing and reading, `kill -9` of the leader and of a follower.
//!
//! After each fault: every acknowledged write is present, the history is linearizable, and a
//! write invoked after the fault commits within `FAILOVER_BOUND` (the figure is printed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_common;

use std::time::Duration;

use e2e_common::{Cluster, FAILOVER_BOUND, Workload, serial};

const CLIENTS: u64 = 3;

#[test]
fn e2e_shm_kill_9_the_leader_under_load_then_restart_it() {
    let _serial = serial();
    let mut cluster = Cluster::start_with("shm-kill-leader", 3, 0, false, "shm");
    let leader = cluster.leader(Duration::from_secs(20));
    let load = Workload::start(cluster.services(), CLIENTS);
    load.wait_writes(200, Duration::from_secs(20));
    let fault = load.now_us();
    cluster.kill(leader);
    let failover = load.first_commit_after(fault, FAILOVER_BOUND);
    eprintln!(
        "e2e shm: leader {leader} killed (-9); a new leader committed a write {failover:?} later (bound {FAILOVER_BOUND:?})"
    );
    load.wait_writes(100, Duration::from_secs(20));
    cluster.spawn(leader);
    load.wait_writes(100, Duration::from_secs(20));
    let commit = cluster
        .status(cluster.leader(Duration::from_secs(10)))
        .unwrap()
        .commit_index;
    let start = std::time::Instant::now();
    while cluster
        .status(leader)
        .is_none_or(|s| s.applied_index < commit)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "restarted replica {leader} did not catch up over shm"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), CLIENTS);
}

#[test]
fn e2e_shm_kill_a_follower_then_restart_it() {
    let _serial = serial();
    let mut cluster = Cluster::start_with("shm-kill-follower", 3, 0, false, "shm");
    let leader = cluster.leader(Duration::from_secs(20));
    let follower = if leader == 1 { 2 } else { 1 };
    let load = Workload::start(cluster.services(), CLIENTS);
    load.wait_writes(100, Duration::from_secs(20));
    let fault = load.now_us();
    cluster.kill(follower);
    let after = load.first_commit_after(fault, FAILOVER_BOUND);
    eprintln!("e2e shm: follower {follower} killed; next commit {after:?} later");
    load.wait_writes(100, Duration::from_secs(20));
    cluster.spawn(follower);
    load.wait_writes(100, Duration::from_secs(20));
    let commit = cluster.status(leader).unwrap().commit_index;
    let start = std::time::Instant::now();
    while cluster
        .status(follower)
        .is_none_or(|s| s.applied_index < commit)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "restarted follower {follower} did not catch up over shm"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), CLIENTS);
}
