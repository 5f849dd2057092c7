//! The RDMA backend of the ring protocol (cargo feature `rdma`).
//!
//! The same [`crate::RingWriter`]/[`crate::RingReader`] that run over shared memory run here
//! over verbs: the leader's [`RdmaRingSink`] writes frames and the tail into the follower's
//! ring with one-sided RDMA WRITEs, and the follower's [`RdmaRingSource`] reads them from its
//! own memory and writes its head back, one-sided, into the leader's [`AckArray`].
//!
//! Layers, bottom up:
//! - [`verbs`]: device context, protection domain, completion queue, registered memory region,
//!   RC queue pair. Each resource holds its raw pointer and an `Arc` of its parent.
//! - [`memory`]: the ring's memory, a `memmap2` mapping of a device-DAX region
//!   (`KEEL_DEVDAX`) or of anonymous memory.
//! - [`pool`]: a registered pool of fixed send slots; work-request id = slot index; posting
//!   consumes the [`pool::Slot`] and only polling its completion gives it back, so a buffer the
//!   NIC may read is never touched by the CPU.
//! - [`oob`]: the out-of-band offers exchanged over TCP after the ring handshake (queue pair
//!   number, PSN, LID, GID, address, length and rkey).
//! - [`published`]: tail and head published as a value and a check word, so a read that races
//!   the NIC's write is refused rather than taken for a position never published.
//! - [`ring`]: the seam implementation, connection set-up, error reporting and reconnect.
//! - [`bench`](mod@bench): round trips and streams for `keel-bench ring --transport rdma`.
//!
//! Building the feature needs Debian's `cmake libclang-dev pkg-config libnl-3-dev
//! libnl-route-3-dev libibverbs-dev` (the `ibverbs-sys` crate runs cmake and bindgen over its
//! vendored rdma-core headers; binaries link the system `libibverbs.so.1`); running needs
//! `ibverbs-providers` and a device. The `ibverbs` crate's safe API could not register an
//! external mapping nor post RDMA WRITE with a remote address and rkey, so this module uses its
//! raw bindings (`ibverbs-sys`) under its own safe face.
//!
//! Failure handling: a work request that completes with an error, a post refused by a queue
//! pair in the error state, and a queue pair whose peer stopped acknowledging (no completion
//! within [`pool::COMPLETION_TIMEOUT`]; soft-RoCE gives no retry-exceeded error when the peer's
//! queue pair is in the error state) are all reported as typed [`RdmaError`]s and leave the
//! connection broken; [`RdmaRingSink::redial`] and [`RdmaRingSource::reaccept`] re-establish
//! it (handshake included) and the writer resumes at the follower's consumed position.
//!
//! Tested by `transport/tests/vm_rdma.rs` on soft-RoCE (`rxe0`) in the VM harness
//! (`tests/vm/run`), with rings on the VM's device-DAX region: the shared conformance suite
//! ([`crate::conformance::rings`]) over real connections; a leader and a follower process
//! streaming 1500 frames of 1 to 1500 bytes through a 16 KiB ring (order, no loss, no
//! duplicates, the writer waiting for a slow reader); a corrupt frame reported and not
//! delivered; a non-member and a peer of another cluster refused before any offer; the
//! leader's and then the follower's queue pair put in the error state, each reported and
//! reconnected with every entry delivered exactly once; and the bench functions. Outside the
//! VM those tests print why they are skipped. `oob` has host unit and property tests.

pub mod bench;
pub mod error;
pub mod memory;
pub mod oob;
pub mod pool;
pub mod published;
pub mod ring;
pub mod verbs;

pub use error::RdmaError;
pub use memory::MemorySource;
pub use ring::{AckArray, RdmaConfig, RdmaDevice, RdmaRingSink, RdmaRingSource, RingListener};
