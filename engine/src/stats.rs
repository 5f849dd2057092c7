//! Status and statistics of a running replica.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::state_machine::{Membership, Role};

/// A latency histogram in microseconds (1 us .. 60 s, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure here is a bug.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|e| panic!("histogram bounds are valid: {e}"))
}

/// A histogram of counts (batch sizes), 1 .. 1,000,000.
pub fn count_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000, 2)
        .unwrap_or_else(|e| panic!("histogram bounds are valid: {e}"))
}

/// Records `d` in microseconds into a latency histogram (saturating at its top).
pub fn record_us(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// A few percentiles of a histogram, for printing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Summary {
    /// Summarizes `h`.
    pub fn of(h: &Histogram<u64>) -> Summary {
        Summary {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50={} p90={} p99={} p99.9={} max={}",
            self.count, self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// What this replica knows about one peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// The peer's id.
    pub id: u64,
    /// Highest slot the peer acknowledged accepting (as seen by this replica).
    pub acked_slot: u64,
    /// The peer's commit index, as last reported to this replica.
    pub commit_index: u64,
    /// This replica's commit index minus the peer's (0 if the peer is ahead).
    pub lag: u64,
    /// Microseconds since this replica last received anything from the peer (`None`: never).
    pub last_heard_us: Option<u64>,
    /// Accept-to-acknowledgement round trips to this peer, in microseconds (leader only).
    pub ack_latency_us: Summary,
}

/// A snapshot of a replica's state and statistics ([`crate::Replica::status`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// This replica's id.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// Its promised ballot as `(round, leader)`.
    pub ballot: (u64, u64),
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Highest slot known chosen.
    pub commit_index: u64,
    /// Highest slot applied to the state machine.
    pub applied_index: u64,
    /// Slot of the latest checkpoint.
    pub snapshot_slot: u64,
    /// The membership in force.
    pub membership: Membership,
    /// Per-peer progress.
    pub peers: Vec<PeerStatus>,
    /// Proposals committed and applied through this replica.
    pub proposals_committed: u64,
    /// Propose-to-applied latency of proposals made on this replica, in microseconds.
    pub commit_latency_us: Summary,
    /// Duration of each log flush (one group commit), in microseconds.
    pub flush_latency_us: Summary,
    /// Commands per applied batch decree.
    pub batch_size: Summary,
    /// Log flushes.
    pub flushes: u64,
    /// Times the replica loop parked (idle after its bounded spin).
    pub loop_parks: u64,
    /// Microseconds since the replica started.
    pub uptime_us: u64,
}

/// Parses a [`Status`] from the JSON the example service's status request returns.
pub fn status_from_json(json: &str) -> Result<Status, serde_json::Error> {
    serde_json::from_str(json)
}
