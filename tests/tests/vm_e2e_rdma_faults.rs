//! End-to-end over RDMA, part 2 (isolation, membership): replica processes on the one soft-RoCE
//! device (`rxe0`) in the VM harness (`tests/vm/run`), `transport = "rdma"`, a client writing and
//! reading. Scenarios (shared with `e2e_tcp`/`e2e_shm` through `e2e_common`, VM timing profile):
//! - isolate the leader from the other two (the replicas' test-only fault file,
//!   `keel_engine::net::fault`, drops its messages on the rdma rings both ways); the majority
//!   must commit within the VM's fail-over bound (20 s under TCG); heal; it catches up;
//! - four replicas, the fourth a standby: add it as a learner, promote it, remove a voter, all
//!   while writing.
//!
//! After each: every acknowledged write is present and the history is linearizable. Part 1
//! (`kill -9`) is `vm_e2e_rdma`. Outside the VM this prints why it is skipped and passes;
//! `harness = false` so the same `main` can be a replica (`KEEL_E2E_REPLICA=FILE`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_common;

fn main() {
    e2e_common::vm_rdma_main(
        &[
            (
                "rdma-isolate",
                "isolate the leader",
                3,
                0,
                e2e_common::isolate_the_leader_then_heal,
            ),
            (
                "rdma-membership",
                "change membership while writing",
                4,
                1,
                e2e_common::change_membership_while_writing,
            ),
        ],
        3,
    );
}
