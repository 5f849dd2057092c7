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
//!     backend: Backend::File, // or Backend::parse("uring"), Backend::Dax(..), Backend::Sim
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
//! Backends implement [`Region`] (its docs state the contract): [`dax`] (`MAP_SYNC` mapping,
//! `clwb`/`clflushopt`/`clflush` or non-temporal stores, `sfence`; `msync` fallback on request),
//! [`uring`] (registered buffers, write chain linked to fdatasync in one submission),
//! [`file`] (`pwrite` + `fdatasync`) and [`sim`] (the crash model). [`Log`] methods take
//! `&self`; appends from several threads share commits (group commit).
//!
//! # How it is tested
//!
//! - `tests/conformance.rs`: one suite (a macro instantiated per backend) against `sim`,
//!   `file`, `uring` (skipped with the reason if the kernel refuses io_uring) and `dax` with
//!   the msync fallback on the host; plus the typed `MapSyncRefused` error on tmpfs.
//!   `tests/vm_dax.rs` runs the same suite on a real DAX mount (`KEEL_DAX_DIR`) inside the
//!   soft-RoCE/NVDIMM VM and skips with a reason elsewhere.
//! - `tests/crash_check.rs`, the crash checker ([`check`]) on the `sim` region:
//!   - **exhaustive**: for short traces, after every region call (each write, flush, fence is
//!     a crash point) every subset of the pending 8-byte words is recovered, and the result
//!     must be exactly the state before or after the operation in flight (so a prefix holding
//!     every acknowledged append), and the recovered log must accept a further append;
//!   - **sampled**: for long traces (wrapping the circular area many times) a fixed number of
//!     random subsets per crash point (seeded, the seed is printed);
//!   - **bit flips**: every single-bit flip of every byte of the metadata area and of every
//!     live record (header fields, payload, padding) is exhaustive; multi-bit flips (2 to 8
//!     bits inside one structure) are sampled. Each must give `Corrupt` or, for bytes that
//!     are not live (the inactive metadata copy, reserved space), the unchanged log; never
//!     different data.
//!
//!   The test prints how many crash states and flips it checked (`cargo test -p keel-pmem
//!   --test crash_check -- --nocapture`); the README of `docs/` records the figures.
//! - `tests/kill9.rs`: a child process appends from several threads and prints every
//!   acknowledged append; the parent kills it with SIGKILL at random moments (100 times per
//!   backend, `file` and `uring`) and checks that recovery holds every acknowledged append and
//!   only a prefix per appender.
//! - `tests/recover_arbitrary.rs`: proptest feeding arbitrary and mutated images to recovery
//!   (error, never a panic, never a wrong record); `fuzz/fuzz_targets/recover.rs` is the same
//!   property as a cargo-fuzz target (needs nightly + cargo-fuzz, not run by CI).
#![deny(missing_docs)]

pub mod backend;
pub mod check;
pub mod dax;
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
pub use file::FileRegion;
pub use log::{Log, LogIter, LogStats, Record, Recovered, SyncReport, recover_region, scan_region};
pub use region::Region;
pub use sim::SimRegion;
pub use uring::{UringOptions, UringRegion};
