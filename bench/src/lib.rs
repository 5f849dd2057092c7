//! `keel-bench`: Keel's latency and throughput, each figure with its ratio to the machine's own
//! limit measured in the same run.
//!
//! The library holds the measurement framework the binary's subcommands share:
//! - [`stats`]: hdrhistogram recording and the [`stats::Summary`] (throughput, mean,
//!   p50/p90/p99/p99.9/max);
//! - [`report`]: limits, figures with their ratios to a limit, targets, the text summary and
//!   the `--json` file;
//! - [`limits`]: the machine's limits (cache-line round trip, TCP loopback round trip,
//!   fdatasync, `ib_write_lat`), measured by every subcommand in its own run;
//! - [`progress`]: the once-a-second progress line on stderr;
//! - [`plot`]: the `--plot FILE.svg` latency distribution;
//! - [`log_bench`]: `keel-bench log`, the persistence log against bare pwrite + fdatasync;
//! - [`ring_bench`]: `keel-bench ring`, the transports against cache-line and TCP ping-pongs;
//! - [`load`]: the closed/open-loop load generator shared by `local`, `client` and `etcd`;
//! - [`etcd`]: `keel-bench etcd`, the same load against etcd's v3 JSON gateway.
//!
//! Tested by unit tests that feed synthetic histograms and assert the exact percentiles,
//! ratios, JSON fields and targets, and by a smoke test that runs `keel-bench limits` briefly.
//! Speed itself is never asserted by tests: the binary measures it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod etcd;
pub mod limits;
pub mod load;
pub mod log_bench;
pub mod plot;
pub mod progress;
pub mod report;
pub mod ring_bench;
pub mod stats;
