//! Keel's persistence log: crash-consistent and corruption-detecting, over DAX, io_uring,
//! plain files, and a simulated region that models crashes.
//!
//! # Quick start
//!
//! ```
//! use keel_pmem::{Backend, Log, LogConfig};
//!
//! # fn main() -> Result<(), keel_pmem::LogError> {
//! let dir = std::env::temp_dir().join(format!("keel-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let cfg = LogConfig {
//!     backend: Backend::File(Default::default()), // or Backend::parse("uring"), Backend::Dax(..), Backend::Sim
//!     path: dir.join("log"),
//!     region_bytes: 1 << 20,
//!     log_id: 7,
//! };
//! let log = Log::create_with(&cfg)?;
//! let a = log.append(b"promise ballot=3")?;            // durable when it returns
//! let b = log.append_batch(&[b"accept 1", b"accept 2"])?; // one commit for both
//! assert_eq!(log.read(a)?.payload, b"promise ballot=3");
//! log.advance_head(b[0])?;                                // release everything before b[0]
//! drop(log);
//!
//! let (log, recovered) = Log::open_with(&cfg)?;          // recovery after a restart or crash
//! assert_eq!(recovered.records, 2);
//! let payloads: Vec<Vec<u8>> = log.iter().map(|r| r.map(|r| r.payload)).collect::<Result<_, _>>()?;
//! assert_eq!(payloads, [b"accept 1".to_vec(), b"accept 2".to_vec()]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! The layout follows the verified persistent-memory log of "PoWER Never Corrupts" (OSDI'25,
//! microsoft/verified-storage `pmemlog`): global and region metadata with CRCs, two copies of
//! the log metadata (head, tail) with CRCs, and an 8-byte corruption-detecting selector whose
//! one aligned store is the commit point ([`layout`] has the map, [`log`] the protocol). Every
//! record carries a crc32c over its length, its own position and its padded payload. Recovery
//! ([`Log::open`]) checks all of it and returns the durable prefix or a
//! [`LogError::Corrupt`] naming the structure and region offset.
//!
//! Where we depart from pmemlog: flipping the selector on every commit costs two fences (two
//! `fdatasync`s on a block device). Instead each commit ends its batch with a *commit mark*
//! (batch start, checksum of the batch's record headers, generation, a random per-log key) and
//! costs one fence while it lies within a window (default 1 MiB) past the tail the metadata
//! names; the first commit past the window, every head advance and every open rewrite the
//! metadata and flip the selector as before. The price, stated in [`log`]: damage to the *last*
//! batch after its commit returned cannot be told from a crash during that commit, so
//! recovery drops that batch and reports it ([`Recovered::discarded_batch_at`]). Window 0
//! ([`LogOptions`]) restores the two-fence commit where that matters more than latency.
//!
//! Backends implement [`Region`] (its docs state the contract): [`dax`] (`MAP_SYNC` mapping,
//! `clwb`/`clflushopt`/`clflush` or non-temporal stores, `sfence`; the range ahead of the log's
//! tail allocated and faulted in writable, so appends take no page fault; `msync` fallback on
//! request), [`uring`] (by default direct blocks written, the last write linked to an
//! fdatasync in one submission; buffered:
//! registered buffers, write chain linked to fdatasync in one submission),
//! [`file`](mod@file) (writes gathered per commit; by default written with `O_DIRECT` as whole
//! 4 KiB blocks, one `RWF_DSYNC` write per commit, else `pwritev` + `fdatasync`) and [`sim`]
//! (the crash model). [`Log`] methods take
//! `&self`; appends from several threads share commits (group commit).
//!
//! # How it is tested
//!
//! Run `cargo test -p keel-pmem -- --nocapture` to see the figures below printed.
//!
//! - `tests/conformance.rs`: one suite (the `conformance_suite!` macro in `tests/common`,
//!   one `#[test]` per case) against `sim`, `file` (direct I/O), `file_buffered`, `uring` (skipped with the reason if the
//!   kernel refuses io_uring) and `dax` with the msync fallback on the host; plus the typed
//!   [`RegionError::MapSyncRefused`] on tmpfs. `tests/vm_dax.rs` runs the same suite on a
//!   real DAX mount (`KEEL_DAX_DIR`, `MAP_SYNC`, once per write-back method: auto, clflushopt,
//!   clflush, non-temporal) inside the soft-RoCE/NVDIMM VM, and skips with a reason elsewhere
//!   (`tests/vm/run -- target/debug/deps/vm_dax-<hash> --nocapture`: 33 passed in the guest,
//!   among them a count of page faults: 514 for 2 MiB of 64 KiB appends into a sparse file,
//!   0 after `preallocate`).
//! - `tests/crash_check.rs`, the crash checker ([`check`]) on the `sim` region. Every region
//!   call (each write, flush and fence) is a crash point; the model is "any subset of the
//!   pending 8-byte words persists". Each crash state is recovered, and the recovered log must
//!   be exactly the state before or after the operation in flight (head and payloads), which is
//!   a prefix holding every acknowledged append, with batches and head advances atomic.
//!   Every check runs with three windows: 0 (two fences per commit), 96 bytes (smaller than
//!   the log area, so one-fence and metadata commits mix) and the default.
//!   - **Exhaustive**: six short traces (single appends, empty payloads, batches, releases,
//!     and 12 append+release pairs wrapping a 128-byte circular area): every subset at every
//!     crash point, each recovered log then appended to and recovered again. A run checks
//!     727 crash points and 248,624 crash states (largest point: 13 pending words; a
//!     record is three writes, header, payload and padding, each its own crash point).
//!   - **Sampled**: three seeded random traces of 120 operations (appends up to 90 bytes,
//!     batches of 1-4, releases) in a 512-byte area that wraps many times, one per window;
//!     points with at most 8 pending words are enumerated, larger ones get 32 random subsets
//!     plus none and all. A run checks 1,763 crash points (603 sampled) and 41,176 crash
//!     states; `KEEL_CRASH_SEED` and `KEEL_CRASH_OPS` change the seed and length.
//!   - **Bit flips**: every single-bit flip in the global and region metadata, the selector,
//!     both metadata copies, the unused metadata bytes, and every byte of every live record
//!     and commit mark (header fields, payload, padding), for a plain and a wrapped log, per
//!     window: 27,840 flips, all exhaustive. Flips in live structures must be reported as
//!     [`LogError::Corrupt`] naming that structure, except in the last one-fence batch, where
//!     the log may instead end before that batch with the drop reported (3,072 of the flips;
//!     never with window 0); flips elsewhere must leave the log unchanged; never different
//!     data. Multi-bit flips (2 to 8 bits inside one structure) are sampled: 4,224 sets.
//!
//!   The checker was itself checked by removing the fence of the one-fence commit (it fails
//!   at the first commit) and by accepting marks of an earlier generation (the unit test
//!   `marks_of_an_earlier_incarnation_never_resurrect_dropped_records` fails).
//! - `tests/kill9.rs`: a child process (the test binary re-executed) appends from 4 threads
//!   and prints every append it was told is durable, and releases space with `advance_head`
//!   so the 64 KiB log wraps; the parent kills it with SIGKILL after a random 0-200 ms,
//!   100 times per backend (`file` and `uring` with direct I/O, `file-buffered`,
//!   `uring-buffered`), recovers the same file each time and checks that every acknowledged,
//!   unreleased append is there and each thread's records are gap-free. About 10 s per backend
//!   in a debug build.
//! - `tests/recover_arbitrary.rs`: proptest feeding arbitrary bytes, mutated valid images, and
//!   images whose metadata is resealed with arbitrary head/tail/capacity to recovery: an error,
//!   never a panic, and any recovered log reads back consistently (mutated images recover
//!   unchanged or fail with window 0; with a one-fence window they may also recover a prefix
//!   that keeps every record the metadata covers, see [`log`]). `fuzz/fuzz_targets/recover.rs` is the same property as a cargo-fuzz
//!   target (`cd pmem && cargo +nightly fuzz run recover`); it is not part of the workspace
//!   or of CI.
//!
//! # Speed
//!
//! A durable append is one fence (on `file` with direct I/O one `RWF_DSYNC` write, on `uring`
//! with direct I/O a direct `WRITE` linked to an `FSYNC(DATASYNC)`, buffered one `fdatasync`) within the window, two for the commit that crosses it
//! (once per 1 MiB appended by default); group commit amortises the fence over every append
//! staged meanwhile (see "Group commit" in [`log`]). `keel-bench log` measures it against a
//! bare `pwrite` + `fdatasync` loop of the payload over the same span as the log's region,
//! against floors writing exactly the bytes one commit writes (record header, payload,
//! padding, commit mark; one direct `RWF_DSYNC` write of their blocks, `pwrite` +
//! `fdatasync`, and an io_uring write linked to an fsync), and, for group commit, against one
//! `pwrite` of the whole group + `fdatasync` (the device's limit). It pins its threads to the core that takes the disk's interrupts and measures the
//! loops and the appenders interleaved, in rotating slices. `docs/PERFORMANCE.md` has the
//! figures.
//!
//! With direct I/O a commit must write whole blocks, so the bytes around it in its first and
//! last block have to be known. The first block is the one the previous commit ended in, which
//! the `file` region remembers; for the last one the log declares the space after its tail
//! free ([`Region::write_parts_free`]), so the region writes zeros there instead of reading
//! the block back. (Reading it cost a device read per commit: a 64 KiB append took 1.6x the
//! bare loop instead of 1.1x.) The module tests `the_file_holds_exactly_the_writes_after_each_fence`
//! (proptest against a byte array, direct and buffered) and
//! `log_appends_on_a_direct_region_read_nothing_back` hold both to that.
//!
//! On `file` and `uring` the log keeps 1-4 MiB ahead of its tail allocated during its first
//! lap through a sparse file ([`Region::preallocate`]: zeros written into holes only, then one
//! sync per 4 MiB). Without it every `fdatasync` of a fresh block is also a file-system journal
//! commit (on this machine's ext4 that made a single append cost 4 ms instead of 0.1 ms).
#![deny(missing_docs)]

pub mod backend;
pub mod check;
pub mod dax;
mod direct;
pub mod error;
pub mod file;
pub mod layout;
pub mod log;
pub mod region;
pub mod sim;
pub mod uring;

pub use backend::{Backend, DynLog, LogConfig};
pub use dax::{DaxFlush, DaxOptions, DaxRegion};
pub use error::{Location, LogError, RegionError};
pub use file::{DirectIo, FileOptions, FileRegion};
pub use log::{
    LayoutEntry, Log, LogIter, LogOptions, LogStats, Record, Recovered, SyncReport, recover_region,
    scan_layout, scan_region,
};
pub use region::Region;
pub use sim::SimRegion;
pub use uring::{UringOptions, UringRegion};
