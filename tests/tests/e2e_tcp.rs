//! End-to-end: three `keel run` processes over TCP, a client writing and reading, faults:
//! `kill -9` of the leader and of a follower, isolation of the leader through fault-injecting
//! TCP proxies, a membership change while writing.
//!
//! After each fault: every acknowledged write is present, the history is linearizable, and a
//! write invoked after the fault commits within `e2e_common::FAILOVER_BOUND` (the measured time
//! is printed). The scenarios live in `e2e_common`, shared with `e2e_shm` and the rdma tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_common;

use e2e_common::{Cluster, Spec, serial};

const CLIENTS: u64 = 3;

#[test]
fn e2e_tcp_kill_9_the_leader_under_load_then_restart_it() {
    let _serial = serial();
    let cluster = Cluster::launch(Spec::host("kill-leader", "tcp", 3));
    e2e_common::kill_9_the_leader_under_load_then_restart_it(cluster, CLIENTS);
}

#[test]
fn e2e_tcp_kill_a_follower_then_restart_it() {
    let _serial = serial();
    let cluster = Cluster::launch(Spec::host("kill-follower", "tcp", 3));
    e2e_common::kill_a_follower_then_restart_it(cluster, CLIENTS);
}

#[test]
fn e2e_tcp_isolate_the_leader_then_heal() {
    let _serial = serial();
    // Through TCP proxies that drop the leader's connections (the other transports use the
    // replicas' fault file).
    let cluster = Cluster::launch(Spec::host("isolate", "tcp", 3).proxied());
    e2e_common::isolate_the_leader_then_heal(cluster, CLIENTS);
}

#[test]
fn e2e_tcp_change_membership_while_writing() {
    let _serial = serial();
    let cluster = Cluster::launch(Spec::host("membership", "tcp", 4).standby(1));
    e2e_common::change_membership_while_writing(cluster, CLIENTS);
}
