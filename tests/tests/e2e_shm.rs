//! End-to-end: three `keel run` processes over the shared-memory transport (ring files with
//! the handshake), a client writing and reading, `kill -9` of the leader and of a follower.
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
fn e2e_shm_kill_9_the_leader_under_load_then_restart_it() {
    let _serial = serial();
    let cluster = Cluster::start_with("shm-kill-leader", 3, 0, false, "shm");
    kill_9_the_leader_under_load_then_restart_it(cluster, "shm", CLIENTS);
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
    cluster.wait_caught_up(follower, Duration::from_secs(20));
    cluster.assert_alive();
    load.stop_and_check(cluster.services(), CLIENTS);
}
