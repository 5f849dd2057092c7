//! The `shm` backend: a ring in memory shared between processes (a file under `/dev/shm`, or
//! an anonymous shared mapping inside one process).
//!
//! # Layout of the mapping
//!
//! | offset | bytes | content |
//! |-------:|------:|---------|
//! | 0      | 8     | magic `"KEELSHMR"` |
//! | 8      | 4     | layout version |
//! | 16     | 8     | data capacity in bytes (a power of two) |
//! | 24     | 48    | the creator's (follower's) [`Hello`] |
//! | 72     | 48    | the opener's (leader's) [`Hello`], valid once `opener_state` is 1 |
//! | 120    | 4     | `opener_state` (atomic: 0 nobody, 1 hello written) |
//! | 128    | 8     | the tail (atomic; its own 128-byte block) |
//! | 256    | 8     | the head (atomic; its own 128-byte block) |
//! | 4096   | capacity | the data area |
//!
//! The tail and head live 128 bytes apart so the writer's and reader's stores do not share a
//! cache line (nor the adjacent line the prefetcher pairs with it).
//!
//! # Memory ordering
//!
//! The writer copies a frame into the data area with plain stores, then stores the tail with
//! `Release`; the reader loads the tail with `Acquire`, so every frame byte below the tail
//! happens-before its reads (ring contract rule 2). The reader stores the head with `Release`
//! after it has finished reading the frames below it; the writer loads the head with `Acquire`
//! before it reuses that space (rule 3). That this is enough for the ring core's index
//! protocol is model-checked with `loom` (the `loom` tests below, which run the real
//! [`RingWriter`](crate::RingWriter)/[`RingReader`](crate::RingReader) over a backend using
//! these same orderings; run `RUSTFLAGS="--cfg loom" cargo test -p keel-transport --release
//! --lib loom`).
//!
//! # Hot path
//!
//! A frame costs one copy into the ring (header and payload), one CRC-32C on each side and
//! one release store; no allocation, no syscall. Frames are cache-line aligned, so after each
//! publish the writer takes the next frame's lines into its cache while it waits
//! ([`RingSink::prepare`]: one byte written per line of free space), and the reader, while it
//! waits for the tail, prefetches the line where the next frame will start
//! ([`RingSource::expect_at`]); both keep a cache miss off the round trip's critical path.
//! Neither touches a byte the other side may be using (the loom model includes the writer's
//! hint writes).
//!
//! # Trust
//!
//! Shared memory cannot keep a misbehaving process out: file permissions decide who may map
//! the ring. The handshake stored in the control block refuses a misconfigured peer (another
//! cluster, not a member, another protocol version) before either side takes a ring end, and
//! every frame is validated by the reader, so a faulty writer is detected, not trusted.

use crate::handshake::{HELLO_BYTES, HandshakeConfig, HandshakeError, Hello, Peer, Role};
use crate::ring::{RingSink, RingSource};
use memmap2::{MmapOptions, MmapRaw};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Bytes before the data area.
pub const CONTROL_BYTES: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"KEELSHMR");
const LAYOUT_VERSION: u32 = 1;
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_CAPACITY: usize = 16;
const OFF_CREATOR_HELLO: usize = 24;
const OFF_OPENER_HELLO: usize = 72;
const OFF_OPENER_STATE: usize = 120;
const OFF_TAIL: usize = 128;
const OFF_HEAD: usize = 256;
const _: () = assert!(OFF_CREATOR_HELLO + HELLO_BYTES <= OFF_OPENER_HELLO);
const _: () = assert!(OFF_OPENER_HELLO + HELLO_BYTES <= OFF_OPENER_STATE);
const _: () = assert!(OFF_HEAD + 8 <= CONTROL_BYTES);

/// Ordering of the writer's tail store (contract rule 2).
pub(crate) const PUBLISH_TAIL: Ordering = Ordering::Release;
/// Ordering of the reader's tail load.
pub(crate) const LOAD_TAIL: Ordering = Ordering::Acquire;
/// Ordering of the reader's head store (contract rule 3).
pub(crate) const STORE_HEAD: Ordering = Ordering::Release;
/// Ordering of the writer's head load.
pub(crate) const LOAD_HEAD: Ordering = Ordering::Acquire;

/// Operating errors of the shared-memory backend.
#[derive(Debug, Error)]
pub enum ShmError {
    /// Creating or sizing the ring file failed.
    #[error("cannot create shared ring {path:?}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Opening the ring file failed.
    #[error("cannot open shared ring {path:?}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Mapping the memory failed.
    #[error("cannot map shared ring memory")]
    Map(#[source] std::io::Error),
    /// The file is not a Keel ring of a layout this build reads.
    #[error("{path:?} is not a Keel shared ring (magic {magic:#x}, layout {version}, {len} bytes)")]
    BadLayout {
        /// The file.
        path: PathBuf,
        /// Magic found.
        magic: u64,
        /// Layout version found.
        version: u32,
        /// File length.
        len: u64,
    },
    /// The peer's hello in the control block did not pass the handshake.
    #[error("shared ring handshake failed")]
    Handshake(#[source] HandshakeError),
    /// No peer wrote its hello in time.
    #[error("no peer opened the shared ring within {waited:?}")]
    HandshakeTimeout {
        /// How long we waited.
        waited: Duration,
    },
}

/// Shared-memory backends never fail once mapped; this is their (uninhabited) error type.
#[derive(Debug, Error)]
#[error("unreachable")]
pub enum Never {}

/// A shared mapping: anonymous, or of a file at `path` that the process which created it
/// removes when it drops the mapping.
#[derive(Debug)]
struct SharedMap {
    map: MmapRaw,
    path: Option<PathBuf>,
    unlink_on_drop: AtomicBool,
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        if let (true, Some(path)) = (self.unlink_on_drop.load(Ordering::Relaxed), &self.path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl SharedMap {
    fn anonymous(len: usize) -> Result<SharedMap, ShmError> {
        let map = MmapOptions::new()
            .len(len)
            .map_anon()
            .map_err(ShmError::Map)?;
        Ok(SharedMap {
            map: MmapRaw::from(map),
            path: None,
            unlink_on_drop: AtomicBool::new(false),
        })
    }

    /// Creates a `len`-byte file mapped shared, under a private name next to `path`; `make`
    /// turns the mapping into what it backs (and initialises it), then the file is published
    /// at `path`: linked, failing if `path` exists, or renamed over it with `replace`. So an
    /// opener never maps a half-made file. `shared` finds the mapping in what `make` built: it
    /// removes `path` when dropped.
    fn create<T>(
        path: &Path,
        len: usize,
        replace: bool,
        make: impl FnOnce(SharedMap) -> T,
        shared: impl Fn(&T) -> &SharedMap,
    ) -> Result<T, ShmError> {
        let create = |source| ShmError::Create {
            path: path.to_owned(),
            source,
        };
        let mut building = path.as_os_str().to_owned();
        building.push(format!(".building-{}", std::process::id()));
        let building = PathBuf::from(building);
        let _ = std::fs::remove_file(&building);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&building)
            .map_err(create)?;
        let built = file
            .set_len(len as u64)
            .map_err(create)
            .and_then(|()| MmapOptions::new().map_raw(&file).map_err(ShmError::Map))
            .and_then(|map| {
                let made = make(SharedMap {
                    map,
                    path: Some(path.to_owned()),
                    unlink_on_drop: AtomicBool::new(false),
                });
                if replace {
                    std::fs::rename(&building, path).map_err(create)?;
                } else {
                    std::fs::hard_link(&building, path).map_err(create)?;
                }
                shared(&made).unlink_on_drop.store(true, Ordering::Relaxed);
                Ok(made)
            });
        let _ = std::fs::remove_file(&building);
        built
    }

    /// Maps the file another process created at `path`; returns the mapping and its length
    /// after `check_len` accepted the length.
    fn open(
        path: &Path,
        check_len: impl FnOnce(u64) -> Result<(), ShmError>,
    ) -> Result<(SharedMap, u64), ShmError> {
        let open = |source| ShmError::Open {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(open)?;
        let len = file.metadata().map_err(open)?.len();
        check_len(len)?;
        let map = MmapOptions::new().map_raw(&file).map_err(ShmError::Map)?;
        Ok((
            SharedMap {
                map,
                path: Some(path.to_owned()),
                unlink_on_drop: AtomicBool::new(false),
            },
            len,
        ))
    }

    fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}

#[derive(Debug)]
struct Region {
    shared: SharedMap,
    capacity: usize,
}

impl Region {
    fn base(&self) -> *mut u8 {
        self.shared.base()
    }

    fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= CONTROL_BYTES);
        // SAFETY: the mapping is page-aligned and at least CONTROL_BYTES long, so base+offset
        // is 8-aligned and in bounds; the mapping lives as long as `self`; every process
        // accesses these words only through atomics.
        unsafe { AtomicU64::from_ptr(self.base().add(offset).cast::<u64>()) }
    }

    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= CONTROL_BYTES);
        // SAFETY: as in `atomic_u64`, with 4-byte alignment.
        unsafe { AtomicU32::from_ptr(self.base().add(offset).cast::<u32>()) }
    }

    fn read_control(&self, offset: usize, len: usize) -> Vec<u8> {
        assert!(offset + len <= CONTROL_BYTES);
        let mut out = vec![0u8; len];
        // SAFETY: in bounds of the mapping (asserted); the control fields read this way are
        // written once before the atomic that announces them (creation, `opener_state`).
        unsafe { std::ptr::copy_nonoverlapping(self.base().add(offset), out.as_mut_ptr(), len) };
        out
    }

    fn write_control(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= CONTROL_BYTES);
        // SAFETY: in bounds (asserted); written by one party before it announces them through
        // an atomic release store, and read by the other only after the acquire load.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base().add(offset), bytes.len());
        };
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the mapping is CONTROL_BYTES + capacity long.
        unsafe { self.base().add(CONTROL_BYTES) }
    }
}

/// A shared-memory ring before its ends are taken (in the follower's process only after the
/// handshake: see [`ShmRing::create`]).
#[derive(Debug)]
pub struct ShmRing {
    region: Arc<Region>,
}

fn check_capacity(capacity: usize) {
    assert!(
        capacity.is_power_of_two() && capacity >= 256,
        "shared ring capacity {capacity} must be a power of two >= 256"
    );
}

impl ShmRing {
    /// An in-process ring in an anonymous shared mapping (both ends in this process, or in
    /// children forked without exec).
    ///
    /// # Panics
    /// If `capacity` is not a power of two of at least 256 bytes.
    pub fn anonymous(capacity: usize) -> Result<ShmRing, ShmError> {
        check_capacity(capacity);
        let region = Region {
            shared: SharedMap::anonymous(CONTROL_BYTES + capacity)?,
            capacity,
        };
        let ring = ShmRing {
            region: Arc::new(region),
        };
        ring.init(&Hello::new(0, 0, 0));
        Ok(ring)
    }

    /// Creates the ring file at `path` (e.g. under `/dev/shm`), owned by the follower `config`
    /// describes. The file is removed when the creator's last handle is dropped. Another
    /// process attaches with [`ShmRing::open`]; the creator gets the ring only once that
    /// process passed the handshake ([`ShmPending::accept`]).
    ///
    /// # Panics
    /// If `capacity` is not a power of two of at least 256 bytes.
    pub fn create(
        path: &Path,
        capacity: usize,
        config: &HandshakeConfig,
    ) -> Result<ShmPending, ShmError> {
        check_capacity(capacity);
        let ring = SharedMap::create(
            path,
            CONTROL_BYTES + capacity,
            false,
            |shared| {
                let ring = ShmRing {
                    region: Arc::new(Region { shared, capacity }),
                };
                ring.init(&Hello::with_version(
                    config.cluster_id,
                    config.member_id,
                    0,
                    config.version,
                ));
                ring
            },
            |ring| &ring.region.shared,
        )?;
        Ok(ShmPending { ring })
    }

    fn init(&self, hello: &Hello) {
        let r = &self.region;
        r.write_control(OFF_VERSION, &LAYOUT_VERSION.to_le_bytes());
        r.write_control(OFF_CAPACITY, &(r.capacity as u64).to_le_bytes());
        r.write_control(OFF_CREATOR_HELLO, &hello.encode());
        r.atomic_u64(OFF_TAIL).store(0, Ordering::Relaxed);
        r.atomic_u64(OFF_HEAD).store(0, Ordering::Relaxed);
        r.atomic_u32(OFF_OPENER_STATE).store(0, Ordering::Relaxed);
        // The magic goes last, with release: an opener that sees it sees the rest.
        r.atomic_u64(OFF_MAGIC).store(MAGIC, Ordering::Release);
    }

    /// Opens the ring file another process created, as the leader `config` describes, having
    /// dialed member `expected` with connection `epoch`. The creator's hello is judged first;
    /// a refused creator is an error and its ring is not handed out. On success our hello is
    /// left for the creator's [`ShmPending::accept`].
    pub fn open(
        path: &Path,
        config: &HandshakeConfig,
        expected: u64,
        epoch: u64,
    ) -> Result<(ShmRing, Peer), ShmError> {
        let (shared, len) = SharedMap::open(path, |len| {
            if len < CONTROL_BYTES as u64 {
                return Err(ShmError::BadLayout {
                    path: path.to_owned(),
                    magic: 0,
                    version: 0,
                    len,
                });
            }
            Ok(())
        })?;
        let mut region = Region {
            shared,
            capacity: 0,
        };
        let magic = region.atomic_u64(OFF_MAGIC).load(Ordering::Acquire);
        let version = u32::from_le_bytes(le4(&region.read_control(OFF_VERSION, 4)));
        let capacity = u64::from_le_bytes(le8(&region.read_control(OFF_CAPACITY, 8)));
        if magic != MAGIC
            || version != LAYOUT_VERSION
            || !capacity.is_power_of_two()
            || capacity < 256
            || capacity + CONTROL_BYTES as u64 != len
        {
            return Err(ShmError::BadLayout {
                path: path.to_owned(),
                magic,
                version,
                len,
            });
        }
        region.capacity = usize::try_from(capacity).map_err(|_| ShmError::BadLayout {
            path: path.to_owned(),
            magic,
            version,
            len,
        })?;
        let creator = Hello::decode(&region.read_control(OFF_CREATOR_HELLO, HELLO_BYTES))
            .map_err(|e| ShmError::Handshake(HandshakeError::Malformed(e)))?;
        let peer = config
            .judge(&creator, Role::Dialer { expected, epoch })
            .map_err(ShmError::Handshake)?;
        let ours = Hello::with_version(config.cluster_id, config.member_id, epoch, config.version);
        region.write_control(OFF_OPENER_HELLO, &ours.encode());
        region
            .atomic_u32(OFF_OPENER_STATE)
            .store(1, Ordering::Release);
        Ok((
            ShmRing {
                region: Arc::new(region),
            },
            peer,
        ))
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.region.capacity
    }

    /// Splits an in-process ring into its writer and reader ends.
    pub fn split(self) -> (ShmSink, ShmSource) {
        let sink = ShmSink {
            region: Arc::clone(&self.region),
        };
        (
            sink,
            ShmSource {
                region: self.region,
            },
        )
    }

    /// Takes the writer end (the leader's process).
    pub fn into_sink(self) -> ShmSink {
        ShmSink {
            region: self.region,
        }
    }

    /// Takes the reader end (the follower's process).
    pub fn into_source(self) -> ShmSource {
        ShmSource {
            region: self.region,
        }
    }
}

/// A ring file created by the follower, waiting for the leader's hello: no ring end can be
/// taken from it until [`ShmPending::accept`] judged that hello.
#[derive(Debug)]
pub struct ShmPending {
    ring: ShmRing,
}

impl ShmPending {
    /// Waits up to `timeout` for an opener's hello and judges it; returns the ring only if
    /// the opener passed. On any error the ring file is removed (create a new one to retry).
    pub fn accept(
        self,
        config: &HandshakeConfig,
        timeout: Duration,
    ) -> Result<(ShmRing, Peer), ShmError> {
        let region = &self.ring.region;
        let start = Instant::now();
        let state = region.atomic_u32(OFF_OPENER_STATE);
        while state.load(Ordering::Acquire) != 1 {
            if start.elapsed() > timeout {
                return Err(ShmError::HandshakeTimeout {
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let hello = Hello::decode(&region.read_control(OFF_OPENER_HELLO, HELLO_BYTES))
            .map_err(|e| ShmError::Handshake(HandshakeError::Malformed(e)))?;
        let peer = config
            .judge(&hello, Role::Acceptor)
            .map_err(ShmError::Handshake)?;
        Ok((self.ring, peer))
    }

    /// The ring file.
    pub fn path(&self) -> Option<&Path> {
        self.ring.region.shared.path.as_deref()
    }
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(&b[..4]);
    out
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    out
}

/// The writer end of a shared-memory ring.
#[derive(Debug)]
pub struct ShmSink {
    region: Arc<Region>,
}

impl ShmSink {
    /// The tail last published (to resume a writer after a restart).
    pub fn published_tail(&self) -> u64 {
        self.region.atomic_u64(OFF_TAIL).load(LOAD_TAIL)
    }
}

impl RingSink for ShmSink {
    type Error = Never;

    fn capacity(&self) -> usize {
        self.region.capacity
    }

    fn write(&mut self, offset: usize, parts: &[&[u8]]) -> Result<(), Never> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert!(
            offset + total <= self.region.capacity,
            "ring write of {total} bytes at {offset} crosses the end of a {}-byte ring",
            self.region.capacity
        );
        let mut at = offset;
        for part in parts {
            // SAFETY: `at + part.len()` is within the data area (asserted above). By the ring
            // protocol these bytes lie in the free region [tail, head + capacity): the reader
            // does not read them until a later tail store (release) publishes them, and no
            // one else writes them (there is one writer end, owned by `self`).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    part.as_ptr(),
                    self.region.data().add(at),
                    part.len(),
                );
            }
            at += part.len();
        }
        Ok(())
    }

    fn publish_tail(&mut self, tail: u64) -> Result<(), Never> {
        self.region.atomic_u64(OFF_TAIL).store(tail, PUBLISH_TAIL);
        Ok(())
    }

    fn load_head(&mut self) -> Result<u64, Never> {
        Ok(self.region.atomic_u64(OFF_HEAD).load(LOAD_HEAD))
    }

    fn prepare(&mut self, offset: usize, len: usize) {
        assert!(offset + len <= self.region.capacity);
        // Write one byte per cache line: the line comes to this core in the modified state
        // while the writer waits, instead of on the next frame's critical path.
        let first = offset.next_multiple_of(64);
        for line in (first..offset + len).step_by(64) {
            // SAFETY: in bounds (asserted); by the ring protocol the range is free space that
            // only the writer touches until a later tail store publishes it.
            unsafe { std::ptr::write_volatile(self.region.data().add(line), 0) };
        }
    }
}

/// The reader end of a shared-memory ring.
#[derive(Debug)]
pub struct ShmSource {
    region: Arc<Region>,
}

impl ShmSource {
    /// The head last stored (to resume a reader after a restart).
    pub fn stored_head(&self) -> u64 {
        self.region.atomic_u64(OFF_HEAD).load(LOAD_HEAD)
    }

    /// A handle that tells, from any thread, whether the writer published frames this end
    /// has not consumed (for a [`Doorbell::sleep`]'s `ready` check).
    pub fn watch(&self) -> RingWatch {
        RingWatch {
            region: Arc::clone(&self.region),
        }
    }
}

/// See [`ShmSource::watch`].
#[derive(Debug, Clone)]
pub struct RingWatch {
    region: Arc<Region>,
}

impl RingWatch {
    /// Whether the published tail is past the head the reader last stored (the reader stores
    /// its head at the end of every poll, so after a poll that drained the ring this is false
    /// until the writer publishes more).
    pub fn has_unread(&self) -> bool {
        self.region.atomic_u64(OFF_TAIL).load(LOAD_TAIL)
            != self.region.atomic_u64(OFF_HEAD).load(Ordering::Relaxed)
    }
}

impl RingSource for ShmSource {
    type Error = Never;

    fn capacity(&self) -> usize {
        self.region.capacity
    }

    fn load_tail(&mut self) -> Result<u64, Never> {
        Ok(self.region.atomic_u64(OFF_TAIL).load(LOAD_TAIL))
    }

    fn with_published<R>(&self, offset: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(
            offset + len <= self.region.capacity,
            "ring read of {len} bytes at {offset} crosses the end of a {}-byte ring",
            self.region.capacity
        );
        // SAFETY: in bounds (asserted). The ring core asks only for bytes in [head, tail):
        // published by a release store of the tail that our acquire load observed, and not
        // written again until our release store of a head beyond them. A writer process that
        // breaks the protocol could change them meanwhile; the reader validates the checksum
        // of exactly the bytes it hands out, within this borrow.
        let bytes = unsafe { std::slice::from_raw_parts(self.region.data().add(offset), len) };
        f(bytes)
    }

    fn store_head(&mut self, head: u64) -> Result<(), Never> {
        self.region.atomic_u64(OFF_HEAD).store(head, STORE_HEAD);
        Ok(())
    }

    fn expect_at(&self, offset: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let line = self
                .region
                .data()
                .wrapping_add(offset % self.region.capacity);
            // SAFETY: SSE is part of the x86_64 baseline; a prefetch is a hint that never
            // faults and reads nothing the program observes.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.cast::<i8>()) };
        }
    }
}

/// Ordering of the sleeper's flag store and of the fences on both sides of the doorbell
/// protocol (see [`Doorbell`]).
pub(crate) const BELL: Ordering = Ordering::SeqCst;

const BELL_MAGIC: u64 = u64::from_le_bytes(*b"KEELBELL");
const BELL_BYTES: usize = 4096;
const OFF_BELL_WORD: usize = 64;
const OFF_BELL_WAKES: usize = 128;
/// The doorbell word's values.
const AWAKE: u32 = 0;
const SLEEPING: u32 = 1;

/// How a [`Doorbell::sleep`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// `ready()`, checked after the sleeper announced itself, said there was work: it did not
    /// sleep.
    Ready,
    /// A [`Doorbell::ring`] woke it.
    Rung,
    /// The timeout passed (or the kernel woke it spuriously) with no ring.
    TimedOut,
}

/// A doorbell in shared memory: one futex word on which a receiver that has nothing to do
/// sleeps, and which any number of writers, in any process that maps it, ring after they
/// published work. A receiver with several inbound rings sleeps on one doorbell that every
/// ring's writer rings (a thread can wait on one futex word only).
///
/// The hot path stays free of syscalls: a writer makes the `FUTEX_WAKE` call only when the
/// receiver has announced that it is about to sleep. The protocol (model-checked by the
/// `loom_doorbell_*` tests):
///
/// - sleeper: swap `SLEEPING` into the word, then check for work (`ready()`); if there is
///   some, swap `AWAKE` back and return; else `FUTEX_WAIT` while the word is `SLEEPING`.
/// - writer: publish the work (e.g. the ring's tail, release), then swap `AWAKE` into the word;
///   only if it was `SLEEPING`, `FUTEX_WAKE`.
///
/// Every change of the word is a `SeqCst` read-modify-write, never a plain store or load, so
/// the changes form one chain in which each acquires what the one before released. If the
/// writer's swap comes after the sleeper's, it reads `SLEEPING` and wakes it; if before, the
/// sleeper's swap acquires the writer's publication and `ready()` finds the work: no lost
/// wake-up, without a fence (on x86 each swap is one `xchg`, the cost of a `SeqCst` store).
/// The kernel checks the word and queues the sleeper atomically, so a ring between the check
/// and the sleep makes the wait return at once. The futex is not `FUTEX_PRIVATE_FLAG`: the word
/// is in a `MAP_SHARED` mapping that other processes map, and the kernel keys it by the file
/// page.
#[derive(Debug, Clone)]
pub struct Doorbell {
    map: Arc<SharedMap>,
}

impl Doorbell {
    /// A doorbell for this process only (an anonymous shared mapping).
    pub fn anonymous() -> Result<Doorbell, ShmError> {
        let bell = Doorbell {
            map: Arc::new(SharedMap::anonymous(BELL_BYTES)?),
        };
        bell.word_u64(0).store(BELL_MAGIC, Ordering::Release);
        Ok(bell)
    }

    /// Creates the receiver's doorbell file at `path`, replacing one an earlier incarnation
    /// left (built under a private name and renamed over it, so an opener never maps a
    /// half-made file). Removed when the creator's last handle is dropped.
    pub fn create(path: &Path) -> Result<Doorbell, ShmError> {
        SharedMap::create(
            path,
            BELL_BYTES,
            true,
            |shared| {
                let bell = Doorbell {
                    map: Arc::new(shared),
                };
                bell.word_u64(0).store(BELL_MAGIC, Ordering::Release);
                bell
            },
            |bell| &bell.map,
        )
    }

    /// Maps the doorbell file another process created (to ring it).
    pub fn open(path: &Path) -> Result<Doorbell, ShmError> {
        let bad = |magic, len| ShmError::BadLayout {
            path: path.to_owned(),
            magic,
            version: 0,
            len,
        };
        let (shared, len) = SharedMap::open(path, |len| {
            if len == BELL_BYTES as u64 {
                Ok(())
            } else {
                Err(bad(0, len))
            }
        })?;
        let bell = Doorbell {
            map: Arc::new(shared),
        };
        let magic = bell.word_u64(0).load(Ordering::Acquire);
        if magic != BELL_MAGIC {
            return Err(bad(magic, len));
        }
        Ok(bell)
    }

    fn word_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= BELL_BYTES);
        // SAFETY: the mapping is page-aligned and BELL_BYTES long, so base+offset is 8-aligned
        // and in bounds; it lives as long as `self`; every process accesses the doorbell's
        // words only through atomics.
        unsafe { AtomicU64::from_ptr(self.map.base().add(offset).cast::<u64>()) }
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: as in `word_u64`, 4-byte aligned and in bounds (OFF_BELL_WORD + 4 <=
        // BELL_BYTES).
        unsafe { AtomicU32::from_ptr(self.map.base().add(OFF_BELL_WORD).cast::<u32>()) }
    }

    /// Wakes the sleeper if it announced it is about to sleep; call after publishing work.
    /// Returns whether it made the wake syscall (otherwise it cost a fence and a swap).
    pub fn ring(&self) -> bool {
        // See the type's docs: a read-modify-write, never a plain load of the word.
        if self.word().swap(AWAKE, BELL) != SLEEPING {
            return false;
        }
        let word = self.word();
        self.word_u64(OFF_BELL_WAKES)
            .fetch_add(1, Ordering::Relaxed);
        futex_wake(word);
        true
    }

    /// Sleeps until rung or `timeout` passes, unless `ready()` (checked after announcing the
    /// sleep) finds work. One sleeper per doorbell.
    pub fn sleep(&self, timeout: Duration, ready: impl FnOnce() -> bool) -> Wake {
        let word = self.word();
        word.swap(SLEEPING, BELL);
        if ready() {
            word.swap(AWAKE, BELL);
            return Wake::Ready;
        }
        futex_wait(word, SLEEPING, timeout);
        if word.swap(AWAKE, BELL) == AWAKE {
            Wake::Rung
        } else {
            Wake::TimedOut
        }
    }

    /// How many times a writer made the wake syscall on this doorbell (all processes).
    pub fn wakes(&self) -> u64 {
        self.word_u64(OFF_BELL_WAKES).load(Ordering::Relaxed)
    }

    /// The doorbell file, if it has one.
    pub fn path(&self) -> Option<&Path> {
        self.map.path.as_deref()
    }
}

/// `FUTEX_WAIT` (shared, not private) on `word` while it holds `expected`, for at most
/// `timeout`. Returns on a wake, a timeout, a signal, or at once if the word differs.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(i32::try_from(timeout.subsec_nanos()).unwrap_or(0)),
    };
    // SAFETY: `word` is a valid, aligned u32 in a mapping that outlives the call; the kernel
    // only reads it (and the timespec, which lives on our stack for the call). Errors
    // (EAGAIN: the word changed, ETIMEDOUT, EINTR) all mean "return and let the caller look".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &raw const ts,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// `FUTEX_WAKE` (shared) of every waiter on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32 in a live mapping; FUTEX_WAKE reads nothing else
    // (the remaining arguments are ignored).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{RingConfig, RingReader, RingWriter};

    #[test]
    fn frames_cross_an_anonymous_ring_in_order() {
        let (sink, source) = ShmRing::anonymous(1024).unwrap().split();
        let config = RingConfig {
            epoch: 1,
            max_payload: 100,
        };
        let mut w = RingWriter::new(sink, config);
        let mut r = RingReader::new(source, config);
        let mut got = Vec::new();
        for i in 0..200u64 {
            w.send(1, i, &i.to_le_bytes()).unwrap();
            r.poll(8, |f| got.push((f.slot, f.payload.to_vec())))
                .unwrap();
        }
        assert_eq!(got.len(), 200);
        for (i, (slot, payload)) in got.iter().enumerate() {
            assert_eq!(*slot, i as u64);
            assert_eq!(payload, &(i as u64).to_le_bytes());
        }
    }

    #[test]
    fn opener_of_another_cluster_never_gets_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let follower = HandshakeConfig::new(7, 2, vec![1, 2, 3]);
        let pending = ShmRing::create(&path, 4096, &follower).unwrap();
        let stranger = HandshakeConfig::new(8, 1, vec![1, 2, 3]);
        let err = ShmRing::open(&path, &stranger, 2, 1).unwrap_err();
        assert!(matches!(
            err,
            ShmError::Handshake(HandshakeError::WrongCluster { ours: 8, theirs: 7 })
        ));
        let err = pending
            .accept(&follower, Duration::from_millis(5))
            .unwrap_err();
        assert!(matches!(err, ShmError::HandshakeTimeout { .. }));
        assert!(
            !path.exists(),
            "a failed accept leaves the ring file behind"
        );

        let pending = ShmRing::create(&path, 4096, &follower).unwrap();
        let leader = HandshakeConfig::new(7, 1, vec![1, 2, 3]);
        let (_, peer) = ShmRing::open(&path, &leader, 2, 11).unwrap();
        assert_eq!(peer.member_id, 2);
        let (_, peer) = pending.accept(&follower, Duration::from_secs(1)).unwrap();
        assert_eq!((peer.member_id, peer.epoch), (1, 11));

        // A member the follower does not know is refused by the follower.
        let pending = ShmRing::create(&dir.path().join("ring2"), 4096, &follower).unwrap();
        let outsider = HandshakeConfig::new(7, 9, vec![2, 9]);
        ShmRing::open(pending.path().unwrap(), &outsider, 2, 12).unwrap();
        let err = pending
            .accept(&follower, Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(
            err,
            ShmError::Handshake(HandshakeError::NotAMember { member: 9 })
        ));
    }

    #[test]
    fn creating_over_an_existing_file_fails_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        std::fs::write(&path, b"someone else's").unwrap();
        let cfg = HandshakeConfig::new(7, 2, vec![1, 2]);
        assert!(matches!(
            ShmRing::create(&path, 4096, &cfg),
            Err(ShmError::Create { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left"
        );
    }

    #[test]
    fn the_doorbell_wakes_a_sleeper_and_costs_no_syscall_when_nobody_sleeps() {
        let bell = Doorbell::anonymous().unwrap();
        assert!(!bell.ring(), "nobody sleeps: no wake syscall");
        assert_eq!(bell.sleep(Duration::from_secs(10), || true), Wake::Ready);
        assert!(!bell.ring(), "a sleeper that found work left the flag down");
        let start = Instant::now();
        assert_eq!(
            bell.sleep(Duration::from_millis(20), || false),
            Wake::TimedOut
        );
        assert!(start.elapsed() >= Duration::from_millis(15));

        let ringer = bell.clone();
        let t = std::thread::spawn(move || {
            // Ring until a sleeper was there to wake.
            while !ringer.ring() {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let start = Instant::now();
        let woke = bell.sleep(Duration::from_secs(30), || false);
        t.join().unwrap();
        assert_eq!(woke, Wake::Rung);
        assert!(start.elapsed() < Duration::from_secs(20), "woke by timeout");
        assert_eq!(bell.wakes(), 1);
    }

    #[test]
    fn a_doorbell_file_is_opened_by_path_and_a_bad_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bell");
        let bell = Doorbell::create(&path).unwrap();
        let other = Doorbell::open(&path).unwrap();
        let t = std::thread::spawn(move || bell.sleep(Duration::from_secs(30), || false));
        while !other.ring() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(t.join().unwrap(), Wake::Rung);
        assert!(!path.exists(), "the creator's drop removes the file");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        assert!(matches!(
            Doorbell::open(&path),
            Err(ShmError::BadLayout { .. })
        ));
        // A new incarnation replaces a file left behind.
        let again = Doorbell::create(&path).unwrap();
        Doorbell::open(&path).unwrap();
        drop(again);
    }

    #[test]
    fn a_ring_watch_sees_unread_frames() {
        let (sink, source) = ShmRing::anonymous(1024).unwrap().split();
        let config = RingConfig {
            epoch: 1,
            max_payload: 100,
        };
        let watch = source.watch();
        let mut w = RingWriter::new(sink, config);
        let mut r = RingReader::new(source, config);
        assert!(!watch.has_unread());
        w.send(1, 1, b"x").unwrap();
        assert!(watch.has_unread());
        r.poll(usize::MAX, |_| {}).unwrap();
        assert!(!watch.has_unread());
    }

    #[test]
    fn a_file_that_is_not_a_ring_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        std::fs::write(&path, vec![7u8; CONTROL_BYTES + 4096]).unwrap();
        let cfg = HandshakeConfig::new(7, 1, vec![1, 2]);
        assert!(matches!(
            ShmRing::open(&path, &cfg, 2, 1),
            Err(ShmError::BadLayout { .. })
        ));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Model checks of the ring index protocol: the real `RingWriter`/`RingReader` over a
    //! backend whose tail/head use the same orderings as the shared-memory backend, and whose
    //! data bytes are loom cells, so loom reports any read of a byte not ordered after its
    //! write (and any write not ordered after the read of the previous lap).
    use super::{LOAD_HEAD, LOAD_TAIL, Never, PUBLISH_TAIL, STORE_HEAD};
    use crate::ring::{AppendError, RingConfig, RingReader, RingSink, RingSource, RingWriter};
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU64, Ordering};

    const CAPACITY: usize = 256;

    struct Shared {
        data: Vec<UnsafeCell<u8>>,
        tail: AtomicU64,
        head: AtomicU64,
    }

    struct Orderings {
        publish: Ordering,
        load_tail: Ordering,
        store_head: Ordering,
        load_head: Ordering,
    }

    const SHM: Orderings = Orderings {
        publish: PUBLISH_TAIL,
        load_tail: LOAD_TAIL,
        store_head: STORE_HEAD,
        load_head: LOAD_HEAD,
    };

    struct Sink(Arc<Shared>, &'static Orderings);
    struct Source(Arc<Shared>, &'static Orderings);

    impl RingSink for Sink {
        type Error = Never;
        fn capacity(&self) -> usize {
            CAPACITY
        }
        fn write(&mut self, offset: usize, parts: &[&[u8]]) -> Result<(), Never> {
            let mut at = offset;
            for byte in parts.iter().flat_map(|p| p.iter()) {
                // SAFETY: loom tracks the access; a race is reported as a failure.
                self.0.data[at].with_mut(|p| unsafe { *p = *byte });
                at += 1;
            }
            Ok(())
        }
        fn publish_tail(&mut self, tail: u64) -> Result<(), Never> {
            self.0.tail.store(tail, self.1.publish);
            Ok(())
        }
        fn load_head(&mut self) -> Result<u64, Never> {
            Ok(self.0.head.load(self.1.load_head))
        }
        fn prepare(&mut self, offset: usize, len: usize) {
            // Like the shared-memory sink's hint, one write per cache line of the range: loom
            // reports it if the range were not the writer's to touch.
            for line in (offset.next_multiple_of(64)..offset + len).step_by(64) {
                // SAFETY: loom tracks the access; a race is reported as a failure.
                self.0.data[line].with_mut(|p| unsafe { *p = 0 });
            }
        }
    }

    impl RingSource for Source {
        type Error = Never;
        fn capacity(&self) -> usize {
            CAPACITY
        }
        fn load_tail(&mut self) -> Result<u64, Never> {
            Ok(self.0.tail.load(self.1.load_tail))
        }
        fn with_published<R>(&self, offset: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
            let bytes: Vec<u8> = (offset..offset + len)
                // SAFETY: loom tracks the access; a race is reported as a failure.
                .map(|i| self.0.data[i].with(|p| unsafe { *p }))
                .collect();
            f(&bytes)
        }
        fn store_head(&mut self, head: u64) -> Result<(), Never> {
            self.0.head.store(head, self.1.store_head);
            Ok(())
        }
    }

    /// The writer sends one frame per entry of `sizes` (payload bytes) through the 256-byte
    /// ring, the reader receives them; both spin with yields.
    fn model(orderings: &'static Orderings, sizes: &'static [usize]) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(move || {
            let shared = Arc::new(Shared {
                data: (0..CAPACITY).map(|_| UnsafeCell::new(0)).collect(),
                tail: AtomicU64::new(0),
                head: AtomicU64::new(0),
            });
            let config = RingConfig {
                epoch: 3,
                max_payload: RingConfig::max_payload_for(CAPACITY),
            };
            let mut writer = RingWriter::new(Sink(Arc::clone(&shared), orderings), config);
            let mut reader = RingReader::new(Source(shared, orderings), config);
            let producer = loom::thread::spawn(move || {
                for (slot, size) in sizes.iter().enumerate() {
                    let body = vec![slot as u8 + 1; *size];
                    loop {
                        match writer.send(1, slot as u64, &body) {
                            Ok(_) => break,
                            Err(AppendError::Full { .. }) => loom::thread::yield_now(),
                            Err(e) => panic!("append failed: {e}"),
                        }
                    }
                }
            });
            let mut next = 0usize;
            while next < sizes.len() {
                let n = reader
                    .poll(usize::MAX, |f| {
                        assert_eq!(f.slot, next as u64, "out of order or lost");
                        assert_eq!(f.payload.len(), sizes[next]);
                        assert!(f.payload.iter().all(|b| *b == next as u8 + 1));
                        next += 1;
                    })
                    .unwrap_or_else(|e| panic!("reader failed: {e}"));
                if n == 0 {
                    loom::thread::yield_now();
                }
            }
            producer.join().unwrap();
        });
    }

    #[test]
    fn loom_ring_full_ring_makes_the_writer_wait() {
        // Five 64-byte frames through 256 bytes: the fifth waits for the reader's head.
        model(&SHM, &[16; 5]);
    }

    #[test]
    fn loom_ring_wraps_over_a_padding_frame() {
        // 64 + 128 bytes leave 64: the second 128-byte frame needs a padding frame, and then
        // the reader's head to move past the first frames.
        model(&SHM, &[16, 80, 80]);
    }

    /// The doorbell protocol of [`super::Doorbell`] (same orderings, same steps), with the
    /// futex modelled by a loom `Notify`: `FUTEX_WAIT` waits only if the word still holds the
    /// expected value, and a wake that comes between that check and the wait is kept (the
    /// kernel does the check and the queueing under one lock, to the same effect). A lost
    /// wake-up leaves the sleeper blocked for ever, which loom reports as a deadlock.
    fn doorbell_model(recheck: bool, order: Ordering) {
        use loom::sync::Notify;
        use loom::sync::atomic::AtomicU32;
        const AWAKE: u32 = 0;
        const SLEEPING: u32 = 1;
        struct Bell {
            tail: AtomicU64,
            word: AtomicU32,
            futex: Notify,
        }
        impl Bell {
            fn futex_wait(&self, expected: u32) {
                if self.word.load(Ordering::Relaxed) == expected {
                    self.futex.wait();
                }
            }
            fn futex_wake(&self) {
                self.futex.notify();
            }
        }
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(move || {
            let bell = Arc::new(Bell {
                tail: AtomicU64::new(0),
                word: AtomicU32::new(AWAKE),
                futex: Notify::new(),
            });
            let writer = Arc::clone(&bell);
            let producer = loom::thread::spawn(move || {
                for tail in 1..=2u64 {
                    writer.tail.store(tail, PUBLISH_TAIL);
                    // ring()
                    if writer.word.swap(AWAKE, order) == SLEEPING {
                        writer.futex_wake();
                    }
                }
            });
            let mut seen = 0u64;
            while seen < 2 {
                let tail = bell.tail.load(LOAD_TAIL);
                if tail != seen {
                    seen = tail;
                    continue;
                }
                // sleep(ready = "the tail moved")
                bell.word.swap(SLEEPING, order);
                if recheck && bell.tail.load(LOAD_TAIL) != seen {
                    bell.word.swap(AWAKE, order);
                    continue;
                }
                bell.futex_wait(SLEEPING);
                bell.word.swap(AWAKE, order);
            }
            producer.join().unwrap();
        });
    }

    #[test]
    fn loom_doorbell_never_loses_a_wake_up() {
        doorbell_model(true, super::BELL);
    }

    /// One round of the doorbell handshake without blocking, so a broken protocol shows as a
    /// failed assertion rather than a deadlock: the sleeper reads the tail, raises its flag,
    /// re-checks (if `recheck`) and then either finds the frame or would sleep; the writer
    /// publishes the frame and swaps the flag down. Whenever the sleeper would sleep without
    /// the frame, the writer must have seen the flag (and so made the wake call).
    fn doorbell_round(recheck: bool, order: Ordering) {
        use loom::sync::atomic::AtomicU32;
        const AWAKE: u32 = 0;
        const SLEEPING: u32 = 1;
        loom::model(move || {
            let tail = Arc::new(AtomicU64::new(0));
            let word = Arc::new(AtomicU32::new(AWAKE));
            let (t2, w2) = (Arc::clone(&tail), Arc::clone(&word));
            let writer = loom::thread::spawn(move || {
                t2.store(1, PUBLISH_TAIL);
                w2.swap(AWAKE, order) == SLEEPING
            });
            let mut seen = tail.load(LOAD_TAIL);
            let mut sleeps = false;
            if seen == 0 {
                word.swap(SLEEPING, order);
                seen = if recheck { tail.load(LOAD_TAIL) } else { 0 };
                sleeps = seen == 0;
            }
            let woken = writer.join().unwrap();
            assert!(
                !sleeps || woken,
                "lost wake-up: the sleeper sleeps without the frame and the writer did not wake it"
            );
        });
    }

    #[test]
    fn loom_doorbell_round_never_loses_a_wake_up() {
        doorbell_round(true, super::BELL);
    }

    #[test]
    #[should_panic(expected = "lost wake-up")]
    fn loom_doorbell_round_loses_a_wake_up_without_the_recheck() {
        // The checker is only worth something if it catches a broken protocol: a sleeper that
        // does not look for work after raising its flag misses a frame published just before.
        doorbell_round(false, super::BELL);
    }

    #[test]
    #[should_panic(expected = "lost wake-up")]
    fn loom_doorbell_round_loses_a_wake_up_with_relaxed_swaps() {
        // Without acquire/release on the word, the re-check may read a stale tail.
        doorbell_round(true, Ordering::Relaxed);
    }

    static RELAXED: Orderings = Orderings {
        publish: Ordering::Relaxed,
        load_tail: Ordering::Relaxed,
        store_head: Ordering::Relaxed,
        load_head: Ordering::Relaxed,
    };

    #[test]
    #[should_panic]
    fn loom_finds_the_race_when_the_tail_is_relaxed() {
        // The checker is only worth something if it catches a broken ordering.
        model(&RELAXED, &[16; 5]);
    }
}
