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
//! - [`etcd`]: `keel-bench etcd`, the same load against etcd's v3 JSON gateway;
//! - [`local`]: `keel-bench local`, a Keel cluster in this process, and its fail-over time;
//! - [`markdown`]: `keel-bench markdown`, `--json` reports as Markdown tables;
//! - [`alloc_count`]: the counting global allocator behind `local`'s "allocations per
//!   committed entry" (the only `unsafe` in the crate: forwarding to the system allocator).
//!
//! # Subcommands of the binary
//!
//! | subcommand | measures | limits measured in the same run |
//! |---|---|---|
//! | `limits` | the machine alone | cache-line RTT, TCP loopback RTT (busy, blocking), fdatasync of a 4 KiB overwrite, pwrite+fdatasync of 64 B/1 KiB/64 KiB, `ib_write_lat` when an RDMA device exists |
//! | `log` | keel-pmem appends per backend (file, uring, dax), single and 16 appenders | bare pwrite+fdatasync of the same size on the same file system |
//! | `ring` | keel-transport round trip and stream, shm and tcp (rdma: skipped with the reason unless built for it) | cache-line RTT, TCP RTT of the same size |
//! | `local` | a 3-replica Keel cluster in this process: commit latency/throughput per transport and durability, closed or open loop, fail-over, allocations per committed entry (whole process, counting allocator) | cache-line RTT, TCP RTT, pwrite+fdatasync alone and in 3 threads at once (the replicas share the disk) |
//! | `replica`, `client` | a multi-host cluster (one replica per host with the KV service; one host drives the load) | TCP RTT on the client host |
//! | `etcd` | etcd's v3 JSON gateway under the same load | pwrite+fdatasync, TCP RTT |
//! | `markdown` | renders `--json` reports as tables (`bench/baseline.sh` writes `docs/PERFORMANCE.md` with it) | - |
//!
//! Every measuring subcommand takes `--json FILE`, `--plot FILE.svg`, `--duration-ms`,
//! `--cores A,B` and `--quiet`, prints a progress line to stderr every second, and prints a
//! summary where each figure carries its ratio to the matching limit.
//!
//! # How it is tested
//!
//! Unit tests feed synthetic histograms and assert the exact percentiles, ratios, JSON fields,
//! Markdown rows and target verdicts; the load generator is tested for open-loop queueing
//! being counted from the intended send time; the etcd client against a scripted HTTP server;
//! the perftest parser against a captured output. `tests/smoke_limits.rs` runs `keel-bench
//! limits` briefly and `tests/smoke_local.rs` runs `keel-bench local` with one client on an
//! in-process cluster. Speed itself is never asserted by tests: the binary measures it.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod alloc_count;
pub mod etcd;
pub mod limits;
pub mod load;
pub mod local;
pub mod log_bench;
pub mod markdown;
pub mod plot;
pub mod progress;
pub mod report;
pub mod ring_bench;
pub mod stats;
