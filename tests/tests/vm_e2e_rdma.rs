//! End-to-end over RDMA, part 1 (`kill -9`): three replica processes on the one soft-RoCE device
//! (`rxe0`) in the VM harness (`tests/vm/run`), `transport = "rdma"`, a client writing and
//! reading through the example key-value service. Scenarios (shared with `e2e_tcp`/`e2e_shm`
//! through `e2e_common`, with the VM's timing profile `e2e_common::VM`):
//! - `kill -9` the leader under load, a new leader must commit within the VM's fail-over bound
//!   (20 s under TCG), restart it, it must catch up over fresh RDMA connections;
//! - `kill -9` a follower, the leader keeps committing, restart it, it catches up.
//!
//! After each: every acknowledged write is present and the history is linearizable. Part 2
//! (isolation, membership change) is `vm_e2e_rdma_faults`; two binaries keep each under the
//! harness's per-binary timeout.
//!
//! The replica processes are this test binary itself, re-executed with `KEEL_E2E_REPLICA=FILE`
//! (`e2e_common::run_replica_if_asked`): the VM has no cargo to build the `keel` binary with.
//! Outside the VM this prints why it is skipped and passes. Built with `harness = false` so the
//! same `main` can be a replica.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_common;

fn main() {
    e2e_common::vm_rdma_main(
        &[
            (
                "rdma-kill-leader",
                "kill -9 the leader",
                3,
                0,
                e2e_common::kill_9_the_leader_under_load_then_restart_it,
            ),
            (
                "rdma-kill-follower",
                "kill -9 a follower",
                3,
                0,
                e2e_common::kill_a_follower_then_restart_it,
            ),
        ],
        3,
    );
}
