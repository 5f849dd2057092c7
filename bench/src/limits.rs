//! The machine's own limits, measured in the same run as the figures compared with them.
//!
//! - `cacheline-rtt`: two threads pinned to two cores bounce one cache line (an `AtomicU64` on
//!   its own 128-byte line), both spinning. Each round trip is timed (the histogram includes
//!   one `Instant::now` pair); the untimed mean of a second pass is given in `extra`.
//! - `tcp-rtt-<n>B-busy` / `-blocking`: a TCP ping-pong of `n` bytes over loopback between two
//!   pinned threads, `TCP_NODELAY`, either spinning on non-blocking sockets or blocking in
//!   `read`.
//! - `fdatasync-4KiB-overwrite`: `pwrite` of 4 KiB at offset 0 of a preallocated (written and
//!   synced) file, then `fdatasync`.
//! - `pwrite-fdatasync-<n>B`: `pwrite` of `n` bytes at consecutive offsets that wrap within a
//!   preallocated region, each followed by `fdatasync`: the bare loop a durable log is held to.
//! - `pwrite-fdatasync-<n>B-x3-concurrent`: the same loop in three threads at once, each on its
//!   own file: one replica's sync when the three replicas of a local cluster share the disk
//!   (measured by `keel-bench local` before each durable configuration).
//! - `ib-write-rtt-<n>B`: perftest's `ib_write_lat` on the RDMA device, when one exists and
//!   perftest is installed.
//!
//! Every measurement runs a warm-up of a fifth of its duration first, which is not recorded.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::progress::{Counter, Progress};
use crate::report::{Limit, LimitOutcome, Skipped};
use crate::stats::{Latencies, StatsError, Summary};

/// Errors from measuring a limit.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Creating a histogram failed.
    #[error("latency histogram")]
    Stats(#[from] StatsError),
    /// A measuring thread panicked.
    #[error("the {0} measuring thread panicked")]
    ThreadPanicked(&'static str),
    /// The TCP ping-pong failed.
    #[error("TCP ping-pong on loopback")]
    Tcp(#[source] std::io::Error),
    /// Preparing or writing the file for the fdatasync limit failed.
    #[error("pwrite/fdatasync on {path}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// How long and where the limits run.
#[derive(Clone, Debug)]
pub struct LimitOptions {
    /// Recorded length of each measurement (a warm-up of a fifth of it runs first).
    pub duration: Duration,
    /// The two cores the pairs of threads are pinned to (`None`: the first two available).
    pub cores: Option<(usize, usize)>,
    /// No progress lines.
    pub quiet: bool,
}

/// Name of the cache-line round-trip limit.
pub const CACHELINE_RTT: &str = "cacheline-rtt";
/// Name of the 4 KiB overwrite + fdatasync limit.
pub const FDATASYNC_4K_OVERWRITE: &str = "fdatasync-4KiB-overwrite";

/// Name of the TCP ping-pong limit for `size` bytes.
pub fn tcp_rtt_name(size: usize, busy_poll: bool) -> String {
    format!(
        "tcp-rtt-{}-{}",
        size_label(size),
        if busy_poll { "busy" } else { "blocking" }
    )
}

/// Name of the bare pwrite + fdatasync limit for `size` bytes.
pub fn pwrite_fdatasync_name(size: usize) -> String {
    format!("pwrite-fdatasync-{}", size_label(size))
}

/// Name of the `ib_write_lat` round-trip limit for `size` bytes.
pub fn ib_write_rtt_name(size: usize) -> String {
    format!("ib-write-rtt-{}", size_label(size))
}

/// `64B`, `1KiB`, `64KiB`, ...
pub fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

/// The cores this process may run on, read once (before any thread pins itself, since the
/// list is read from the calling thread's affinity mask).
pub fn all_cores() -> &'static [core_affinity::CoreId] {
    static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

/// Runs `f` on a fresh thread (so pinning it never pins the caller) and returns its result.
pub fn on_own_thread<T: Send>(
    what: &'static str,
    f: impl FnOnce() -> T + Send,
) -> Result<T, LimitError> {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .map_err(|_| LimitError::ThreadPanicked(what))
    })
}

/// The pair of cores to pin two threads to, and a note saying what was done.
pub fn core_pair(cores: Option<(usize, usize)>) -> (Option<(usize, usize)>, String) {
    let ids = all_cores();
    match cores {
        Some((a, b)) => (Some((a, b)), format!("threads pinned to cores {a} and {b}")),
        None if ids.len() >= 2 => (
            Some((ids[0].id, ids[1].id)),
            format!("threads pinned to cores {} and {}", ids[0].id, ids[1].id),
        ),
        None => (
            None,
            format!(
                "only {} core(s) visible: threads not pinned, figures are scheduler-bound",
                ids.len()
            ),
        ),
    }
}

/// Pins the calling thread to `core` (best effort; returns whether it worked).
pub fn pin(core: Option<usize>) -> bool {
    match core {
        Some(id) => core_affinity::set_for_current(core_affinity::CoreId { id }),
        None => false,
    }
}

/// Spins until `done()` holds; after many fruitless spins yields the CPU, so that a peer sharing
/// the core (one-CPU machines, oversubscribed hosts) gets to run.
#[inline]
pub fn spin_until(mut done: impl FnMut() -> bool) {
    let mut spins: u32 = 0;
    while !done() {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1 << 16) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[repr(align(128))]
struct Line(AtomicU64);

const STOP: u64 = u64::MAX;

/// Measures the cache-line round trip between two pinned spinning threads.
pub fn cacheline_rtt(opts: &LimitOptions) -> Result<Limit, LimitError> {
    all_cores();
    on_own_thread("cache-line ping", || cacheline_rtt_pinned(opts))?
}

fn cacheline_rtt_pinned(opts: &LimitOptions) -> Result<Limit, LimitError> {
    let (pair, pin_note) = core_pair(opts.cores);
    let line = Arc::new(Line(AtomicU64::new(0)));
    let ponger = {
        let line = Arc::clone(&line);
        std::thread::spawn(move || {
            pin(pair.map(|p| p.1));
            let mut expect = 1u64;
            loop {
                let mut seen = 0;
                spin_until(|| {
                    seen = line.0.load(Ordering::Acquire);
                    seen == expect || seen == STOP
                });
                if seen == STOP {
                    break;
                }
                line.0.store(seen + 1, Ordering::Release);
                expect += 2;
            }
        })
    };
    pin(pair.map(|p| p.0));
    let counter: Counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(CACHELINE_RTT, Arc::clone(&counter), opts.quiet);
    let mut lat = Latencies::new()?;
    let mut next = 1u64;
    let mut round_trip = |timed: bool, lat: &mut Latencies| {
        let t0 = timed.then(Instant::now);
        line.0.store(next, Ordering::Release);
        let want = next + 1;
        spin_until(|| line.0.load(Ordering::Acquire) == want);
        next += 2;
        if let Some(t0) = t0 {
            lat.record(t0.elapsed());
        }
    };
    // Warm-up, then the timed pass.
    let warm_end = Instant::now() + opts.duration / 5;
    while Instant::now() < warm_end {
        round_trip(false, &mut lat);
    }
    let start = Instant::now();
    let end = start + opts.duration;
    let mut n = 0u64;
    loop {
        round_trip(true, &mut lat);
        n += 1;
        if n.is_multiple_of(1024) {
            counter.store(n, Ordering::Relaxed);
            if Instant::now() >= end {
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    // Untimed pass: as many round trips, timed as a whole.
    let untimed_start = Instant::now();
    for _ in 0..n {
        round_trip(false, &mut lat);
    }
    let untimed = untimed_start.elapsed();
    line.0.store(STOP, Ordering::Release);
    drop(progress);
    ponger
        .join()
        .map_err(|_| LimitError::ThreadPanicked("cache-line pong"))?;
    let clock_ns = clock_overhead_ns();
    let mut extra = BTreeMap::new();
    extra.insert(
        "untimed_mean_ns".to_string(),
        untimed.as_nanos() as f64 / n as f64,
    );
    extra.insert("clock_read_pair_ns".to_string(), clock_ns);
    Ok(Limit {
        name: CACHELINE_RTT.into(),
        description: "cache-line round trip between two threads, both spinning".into(),
        summary: lat.summary(elapsed),
        curve: lat.percentile_curve(),
        extra,
        notes: vec![
            pin_note,
            "per-op figures include one Instant::now pair (clock_read_pair_ns); \
             untimed_mean_ns does not"
                .into(),
        ],
    })
}

/// Cost of two back-to-back `Instant::now` calls, in nanoseconds (mean of 100k).
pub fn clock_overhead_ns() -> f64 {
    let n = 100_000u32;
    let start = Instant::now();
    let mut sink = start;
    for _ in 0..n {
        sink = std::hint::black_box(Instant::now());
    }
    let _ = std::hint::black_box(sink);
    start.elapsed().as_nanos() as f64 / f64::from(n) * 2.0
}

/// Reads exactly `buf.len()` bytes; on a non-blocking socket spins on `WouldBlock`. Returns
/// `false` on end of stream before the first byte.
pub fn read_exact_spin(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes all of `buf`; on a non-blocking socket spins on `WouldBlock`.
pub fn write_all_spin(stream: &mut TcpStream, buf: &[u8]) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < buf.len() {
        match stream.write(&buf[sent..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Measures a TCP ping-pong of `size` bytes over loopback.
pub fn tcp_rtt(size: usize, busy_poll: bool, opts: &LimitOptions) -> Result<Limit, LimitError> {
    assert!(size > 0, "a ping-pong needs at least one byte");
    all_cores();
    on_own_thread("TCP ping", || tcp_rtt_pinned(size, busy_poll, opts))?
}

fn tcp_rtt_pinned(size: usize, busy_poll: bool, opts: &LimitOptions) -> Result<Limit, LimitError> {
    let name = tcp_rtt_name(size, busy_poll);
    let (pair, pin_note) = core_pair(opts.cores);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(LimitError::Tcp)?;
    let addr = listener.local_addr().map_err(LimitError::Tcp)?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        pin(pair.map(|p| p.1));
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_nonblocking(busy_poll)?;
        let mut buf = vec![0u8; size];
        while read_exact_spin(&mut s, &mut buf)? {
            write_all_spin(&mut s, &buf)?;
        }
        Ok(())
    });
    pin(pair.map(|p| p.0));
    let mut c = TcpStream::connect(addr).map_err(LimitError::Tcp)?;
    c.set_nodelay(true).map_err(LimitError::Tcp)?;
    c.set_nonblocking(busy_poll).map_err(LimitError::Tcp)?;
    let mut buf = vec![0xA5u8; size];
    let counter: Counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(&name, Arc::clone(&counter), opts.quiet);
    let mut lat = Latencies::new()?;
    let ping = |c: &mut TcpStream, buf: &mut Vec<u8>| -> std::io::Result<()> {
        write_all_spin(c, buf)?;
        if !read_exact_spin(c, buf)? {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    };
    let warm_end = Instant::now() + opts.duration / 5;
    while Instant::now() < warm_end {
        ping(&mut c, &mut buf).map_err(LimitError::Tcp)?;
    }
    let start = Instant::now();
    let end = start + opts.duration;
    let mut n = 0u64;
    while Instant::now() < end {
        let t0 = Instant::now();
        ping(&mut c, &mut buf).map_err(LimitError::Tcp)?;
        lat.record(t0.elapsed());
        n += 1;
        if n.is_multiple_of(256) {
            counter.store(n, Ordering::Relaxed);
        }
    }
    let elapsed = start.elapsed();
    drop(progress);
    drop(c);
    server
        .join()
        .map_err(|_| LimitError::ThreadPanicked("TCP echo"))?
        .map_err(LimitError::Tcp)?;
    Ok(Limit {
        name,
        description: format!(
            "TCP loopback ping-pong of {size} bytes, TCP_NODELAY, {}",
            if busy_poll {
                "both sides spinning on non-blocking sockets"
            } else {
                "both sides blocking in read"
            }
        ),
        summary: lat.summary(elapsed),
        curve: lat.percentile_curve(),
        extra: BTreeMap::new(),
        notes: vec![pin_note],
    })
}

/// The file system type of the mount holding `path` (from /proc/mounts; `unknown` if unread).
pub fn filesystem_of(path: &Path) -> String {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(mnt), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if canonical.starts_with(mnt) && best.as_ref().is_none_or(|(len, _)| mnt.len() > *len) {
            best = Some((mnt.len(), fstype.to_string()));
        }
    }
    best.map(|b| b.1).unwrap_or_else(|| "unknown".into())
}

/// A scratch file in a directory, removed on drop.
pub struct ScratchFile {
    path: PathBuf,
    file: File,
}

impl ScratchFile {
    /// Creates `dir/.keel-bench-<pid>-<tag>` and fills `len` bytes of it with zeros, synced, so
    /// that later writes overwrite allocated, written blocks (no metadata journal commits).
    pub fn preallocated(dir: &Path, tag: &str, len: u64) -> Result<Self, LimitError> {
        let path = dir.join(format!(".keel-bench-{}-{tag}", std::process::id()));
        let err = |source| LimitError::File {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(err)?;
        let chunk = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(chunk.len() as u64) as usize;
            file.write_all_at(&chunk[..n], off).map_err(err)?;
            off += n as u64;
        }
        file.sync_all().map_err(err)?;
        Ok(Self { path, file })
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        // Best effort: a leftover scratch file is only litter.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn sync_loop(
    name: &str,
    scratch: ScratchFile,
    size: usize,
    region: u64,
    sequential: bool,
    opts: &LimitOptions,
) -> Result<(Summary, Vec<(f64, f64)>), LimitError> {
    sync_loop_with(
        name,
        scratch,
        size,
        region,
        sequential,
        SyncKind::Pwrite,
        opts,
    )
}

/// How one iteration of a sync loop writes and syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// `pwrite` then `fdatasync`.
    Pwrite,
    /// One io_uring submission: `WRITE` linked to `FSYNC(DATASYNC)`, then wait for both.
    UringLinked,
    /// One `pwritev2` with `RWF_DSYNC` through an `O_DIRECT` descriptor, of the whole 4 KiB
    /// blocks the bytes cover (the `file` backend's direct commit, without the log).
    DirectDsync,
}

/// One 4 KiB block of memory aligned for direct I/O.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct DirectBlock([u8; 4096]);

/// One bare write-then-sync operation at a time, on its own preallocated scratch file: the
/// body of the `pwrite`+`fdatasync` limits, and a step of [`interleaved`] runs.
pub struct SyncStep {
    scratch: ScratchFile,
    buf: Vec<u8>,
    slots: u64,
    sequential: bool,
    ring: Option<io_uring::IoUring>,
    /// For [`SyncKind::DirectDsync`]: the file opened with `O_DIRECT` and aligned blocks.
    direct: Option<(File, Vec<DirectBlock>)>,
    i: u64,
}

impl SyncStep {
    /// Writes of `size` bytes at consecutive offsets wrapping within `region` bytes of
    /// `scratch` (`sequential`), or at offset 0, each made durable as `kind` says.
    pub fn new(
        scratch: ScratchFile,
        size: usize,
        region: u64,
        sequential: bool,
        kind: SyncKind,
    ) -> Result<Self, LimitError> {
        assert!(size > 0, "a write needs at least one byte");
        if u32::try_from(size).is_err() {
            return Err(LimitError::File {
                path: scratch.path().display().to_string(),
                source: ErrorKind::InvalidInput.into(),
            });
        }
        let direct = match kind {
            SyncKind::DirectDsync => {
                use std::os::unix::fs::OpenOptionsExt;
                let file = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(scratch.path())
                    .map_err(|source| LimitError::File {
                        path: scratch.path().display().to_string(),
                        source,
                    })?;
                // Room for the blocks of a write that starts anywhere in a block.
                let blocks = size.div_ceil(4096) + 1;
                Some((file, vec![DirectBlock([0x5A; 4096]); blocks]))
            }
            _ => None,
        };
        let ring = match kind {
            SyncKind::Pwrite | SyncKind::DirectDsync => None,
            SyncKind::UringLinked => {
                Some(
                    io_uring::IoUring::new(8).map_err(|source| LimitError::File {
                        path: scratch.path().display().to_string(),
                        source,
                    })?,
                )
            }
        };
        Ok(Self {
            scratch,
            buf: vec![0x5Au8; size],
            slots: (region / size as u64).max(1),
            sequential,
            ring,
            direct,
            i: 0,
        })
    }

    /// The error of an operation on this step's file.
    pub fn error(&self, source: std::io::Error) -> LimitError {
        LimitError::File {
            path: self.scratch.path().display().to_string(),
            source,
        }
    }

    /// One write and its sync.
    pub fn once(&mut self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let size = self.buf.len();
        let off = if self.sequential {
            (self.i % self.slots) * size as u64
        } else {
            0
        };
        self.i += 1;
        if let Some((file, blocks)) = self.direct.as_ref() {
            let start = off / 4096 * 4096;
            let end = (off + size as u64).div_ceil(4096) * 4096;
            let n = ((end - start) / 4096) as usize;
            let bytes: &[u8] = bytemuck::cast_slice(&blocks[..n]);
            let iov = libc::iovec {
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            };
            let at = libc::off_t::try_from(start).map_err(|_| ErrorKind::InvalidInput)?;
            // SAFETY: one iovec pointing into `bytes`, which outlives the call; the kernel
            // only reads it.
            #[allow(unsafe_code)]
            let r = unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, at, libc::RWF_DSYNC) };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if r as usize != bytes.len() {
                return Err(std::io::Error::other(format!(
                    "short direct write {r} of {}",
                    bytes.len()
                )));
            }
            return Ok(());
        }
        let Some(ring) = self.ring.as_mut() else {
            self.scratch.file().write_all_at(&self.buf, off)?;
            return self.scratch.file().sync_data();
        };
        use io_uring::{opcode, squeue, types};
        let fd = types::Fd(self.scratch.file().as_raw_fd());
        let len = size as u32;
        let w = opcode::Write::new(fd, self.buf.as_ptr(), len)
            .offset(off)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(0);
        let f = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(1);
        // SAFETY: `buf` and the file outlive both operations: we wait for both completions
        // below before returning. (The kernel interface needs it: the ring reads `buf`.)
        #[allow(unsafe_code)]
        unsafe {
            let mut sq = ring.submission();
            sq.push(&w)
                .map_err(|_| std::io::Error::other("submission queue full"))?;
            sq.push(&f)
                .map_err(|_| std::io::Error::other("submission queue full"))?;
        }
        let mut done = 0;
        while done < 2 {
            ring.submit_and_wait(2 - done)?;
            for c in ring.completion() {
                done += 1;
                let want = if c.user_data() == 0 { len as i32 } else { 0 };
                if c.result() < 0 {
                    return Err(std::io::Error::from_raw_os_error(-c.result()));
                }
                if c.result() != want {
                    return Err(std::io::Error::other(format!(
                        "short write {} of {len}",
                        c.result()
                    )));
                }
            }
        }
        Ok(())
    }
}

fn sync_loop_with(
    name: &str,
    scratch: ScratchFile,
    size: usize,
    region: u64,
    sequential: bool,
    kind: SyncKind,
    opts: &LimitOptions,
) -> Result<(Summary, Vec<(f64, f64)>), LimitError> {
    let mut step = SyncStep::new(scratch, size, region, sequential, kind)?;
    let counter: Counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(name, Arc::clone(&counter), opts.quiet);
    let warm_end = Instant::now() + opts.duration / 5;
    let lat = step.timed(warm_end, warm_end + opts.duration, &counter)?;
    let elapsed = warm_end.elapsed();
    drop(progress);
    Ok((lat.summary(elapsed), lat.percentile_curve()))
}

impl SyncStep {
    /// Runs the step unrecorded until `warm_end`, then records each operation's latency until
    /// `end`, counting them in `counter`.
    fn timed(
        &mut self,
        warm_end: Instant,
        end: Instant,
        counter: &Counter,
    ) -> Result<Latencies, LimitError> {
        let mut lat = Latencies::new()?;
        while Instant::now() < warm_end {
            self.once().map_err(|e| self.error(e))?;
        }
        while Instant::now() < end {
            let t0 = Instant::now();
            self.once().map_err(|e| self.error(e))?;
            lat.record(t0.elapsed());
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok(lat)
    }
}

/// Rounds of an [`interleaved`] run.
pub const INTERLEAVE_ROUNDS: u32 = 10;

/// A step of an [`interleaved`] run: runs its operation until the deadline, recording each
/// latency into the histogram it is given, and returns how many it finished.
pub type SliceStep<'a, E> = Box<dyn FnMut(Instant, &mut Latencies) -> Result<u64, E> + 'a>;

/// A [`SliceStep`] of one operation at a time; `op` returns the time of its measured part
/// (work it does around it, such as releasing log space, is not timed).
pub fn one_at_a_time<'a, E: 'a>(
    mut op: impl FnMut() -> Result<Duration, E> + 'a,
) -> SliceStep<'a, E> {
    Box::new(move |end, lat| {
        let mut n = 0;
        while Instant::now() < end {
            lat.record(op()?);
            n += 1;
        }
        Ok(n)
    })
}

/// Measures several steps in alternating slices, so that whatever drifts on a shared machine
/// during the run (the disk, a neighbour) weighs on each alike: a warm-up round (each step for
/// a fifth of `duration`), then
/// [`INTERLEAVE_ROUNDS`] rounds in which each step runs for `duration / INTERLEAVE_ROUNDS`,
/// the order rotating from round to round. Returns each step's latencies and the wall-clock
/// time of its recorded slices.
pub fn interleaved<E: From<StatsError>>(
    label: &str,
    steps: &mut [SliceStep<'_, E>],
    opts: &LimitOptions,
) -> Result<Vec<(Latencies, Duration)>, E> {
    let n = steps.len();
    let slice = opts.duration / INTERLEAVE_ROUNDS;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((Latencies::new()?, Duration::ZERO));
    }
    let counter: Counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, Arc::clone(&counter), opts.quiet);
    let mut warm = Latencies::new()?;
    for step in steps.iter_mut() {
        step(Instant::now() + opts.duration / 5, &mut warm)?;
    }
    for round in 0..INTERLEAVE_ROUNDS as usize {
        for k in 0..n {
            let j = (round + k) % n;
            let (lat, elapsed) = &mut out[j];
            let start = Instant::now();
            let ops = steps[j](start + slice, lat)?;
            *elapsed += start.elapsed();
            counter.fetch_add(ops, Ordering::Relaxed);
        }
    }
    drop(progress);
    Ok(out)
}

/// Measures `pwrite` of 4 KiB at offset 0 of a preallocated file + `fdatasync`.
pub fn fdatasync_overwrite_4k(dir: &Path, opts: &LimitOptions) -> Result<Limit, LimitError> {
    let scratch = ScratchFile::preallocated(dir, "fdatasync-4k", 1 << 20)?;
    let (summary, curve) = sync_loop(FDATASYNC_4K_OVERWRITE, scratch, 4096, 4096, false, opts)?;
    Ok(Limit {
        name: FDATASYNC_4K_OVERWRITE.into(),
        description: "pwrite 4 KiB at offset 0 of a preallocated file, then fdatasync".into(),
        summary,
        curve,
        extra: BTreeMap::new(),
        notes: vec![format!(
            "directory {} ({})",
            dir.display(),
            filesystem_of(dir)
        )],
    })
}

/// Region a sequential pwrite+fdatasync loop of `size` bytes wraps within.
pub fn pwrite_region(size: usize) -> u64 {
    (16 * size as u64).max(1 << 20)
}

/// A bare write-then-sync loop measured as a limit: what each iteration writes, how it syncs,
/// and how the limit is named and described.
#[derive(Clone, Debug)]
pub struct SyncSpec {
    /// The limit's name.
    pub name: String,
    /// The directory its scratch file goes in.
    pub dir: PathBuf,
    /// Bytes each iteration writes.
    pub write: usize,
    /// Appends one iteration stands for (its throughput counts that many).
    pub per_sync: usize,
    /// What the limit is.
    pub description: String,
    /// Bytes of the preallocated scratch region its writes wrap within.
    pub region: u64,
    kind: SyncKind,
}

impl SyncSpec {
    /// The bare loop: `pwrite` of `size` bytes at consecutive offsets (wrapping within a
    /// preallocated region) each followed by `fdatasync`.
    pub fn pwrite_fdatasync(dir: &Path, size: usize) -> Self {
        assert!(size > 0, "a write needs at least one byte");
        Self {
            name: pwrite_fdatasync_name(size),
            dir: dir.to_path_buf(),
            write: size,
            per_sync: 1,
            description: format!(
                "pwrite {size} bytes at consecutive offsets in a preallocated {} KiB region, \
                 then fdatasync",
                pwrite_region(size) / 1024
            ),
            region: pwrite_region(size),
            kind: SyncKind::Pwrite,
        }
    }

    /// The bare floor under a log commit of one `payload`-byte record: the loop of
    /// [`SyncSpec::pwrite_fdatasync`], but writing the bytes such a commit writes
    /// ([`log_commit_bytes`], so unaligned and one page more at 64 KiB), with `pwrite` +
    /// `fdatasync` (`uring == false`) or as one io_uring submission of a `WRITE` linked to an
    /// `FSYNC(DATASYNC)` (`uring == true`).
    pub fn log_commit_floor(dir: &Path, payload: usize, kind: SyncKind) -> Self {
        let write = log_commit_bytes(payload);
        let (name, how) = match kind {
            SyncKind::UringLinked => (
                "uring-fdatasync",
                "one io_uring submission of WRITE linked to FSYNC(DATASYNC)",
            ),
            SyncKind::DirectDsync => (
                "direct-dsync",
                "one O_DIRECT pwritev2 with RWF_DSYNC of the 4 KiB blocks covering",
            ),
            SyncKind::Pwrite => ("pwrite-fdatasync", "pwrite, then fdatasync"),
        };
        Self {
            name: log_floor_name(name, payload),
            dir: dir.to_path_buf(),
            write,
            per_sync: 1,
            description: format!(
                "{how}: {write} bytes (a {payload}-byte record with its header, padding and \
                 commit mark) at consecutive offsets in a preallocated {} KiB region",
                pwrite_region(write) / 1024
            ),
            region: pwrite_region(write),
            kind,
        }
    }

    /// The best a group commit of `n` appends of `size` bytes can do on this device: one
    /// `pwrite` of `n * size` bytes at consecutive offsets, then `fdatasync`. Its
    /// `throughput_per_s` counts the `n` appends of each sync.
    pub fn group(dir: &Path, size: usize, n: usize) -> Self {
        assert!(
            size > 0 && n > 0,
            "a group needs at least one byte and one write"
        );
        Self {
            name: pwrite_fdatasync_group_name(size, n),
            dir: dir.to_path_buf(),
            write: size * n,
            per_sync: n,
            description: format!(
                "pwrite {n} x {size} bytes as one write at consecutive offsets in a \
                 preallocated {} KiB region, then fdatasync; throughput counts {n} appends per \
                 sync",
                pwrite_region(size * n) / 1024
            ),
            region: pwrite_region(size * n),
            kind: SyncKind::Pwrite,
        }
    }

    /// The same loop with its writes wrapping within `bytes` (at least one write) instead:
    /// a log benchmark gives its bare loops the span of the log's own region, since on a
    /// virtual disk writes spread over a larger span cost more (measured: the same log was
    /// 1.07x the bare loop with a 4 MiB region, 1.17x with 64 MiB, against a 1 MiB loop).
    pub fn spanning(mut self, bytes: u64) -> Self {
        let bytes = bytes.max(self.write as u64);
        let old = format!("{} KiB region", self.region / 1024);
        self.description = self
            .description
            .replace(&old, &format!("{} KiB region", bytes / 1024));
        self.region = bytes;
        self
    }

    /// A stepper over a fresh preallocated scratch file.
    pub fn step(&self) -> Result<SyncStep, LimitError> {
        let region = self.region;
        let scratch = ScratchFile::preallocated(&self.dir, &self.name, region)?;
        SyncStep::new(scratch, self.write, region, true, self.kind)
    }

    /// The limit from a measured summary and curve.
    pub fn limit(&self, mut summary: Summary, curve: Vec<(f64, f64)>) -> Limit {
        summary.throughput_per_s *= self.per_sync as f64;
        Limit {
            name: self.name.clone(),
            description: self.description.clone(),
            summary,
            curve,
            extra: BTreeMap::new(),
            notes: vec![format!(
                "directory {} ({})",
                self.dir.display(),
                filesystem_of(&self.dir)
            )],
        }
    }

    /// Measures the loop on its own for `opts.duration` (after a warm-up of a fifth).
    pub fn measure(&self, opts: &LimitOptions) -> Result<Limit, LimitError> {
        let region = self.region;
        let scratch = ScratchFile::preallocated(&self.dir, &self.name, region)?;
        let (summary, curve) = sync_loop_with(
            &self.name, scratch, self.write, region, true, self.kind, opts,
        )?;
        Ok(self.limit(summary, curve))
    }
}

/// Measures the bare loop of [`SyncSpec::pwrite_fdatasync`].
pub fn pwrite_fdatasync(dir: &Path, size: usize, opts: &LimitOptions) -> Result<Limit, LimitError> {
    SyncSpec::pwrite_fdatasync(dir, size).measure(opts)
}

/// Name of the limit of one `pwrite`+`fdatasync` of `size` bytes while `threads - 1` other
/// threads do the same on their own files.
pub fn pwrite_fdatasync_concurrent_name(size: usize, threads: usize) -> String {
    format!(
        "pwrite-fdatasync-{}-x{threads}-concurrent",
        size_label(size)
    )
}

/// One `pwrite`+`fdatasync` of `size` bytes (the loop of [`SyncSpec::pwrite_fdatasync`]) while
/// `threads - 1` other threads run the same loop on their own preallocated files in the same
/// directory: what one replica's log write costs when every replica of a cluster on this
/// machine shares its disk. A durable commit of a local 3-replica cluster waits for the
/// leader's sync and a follower's, issued at about the same time, so with `threads == 3` the
/// p50 of this limit is a floor of its p50 (one contended sync, not the faster of two).
/// Every thread's latencies are recorded; the throughput is that of all threads together.
pub fn pwrite_fdatasync_concurrent(
    dir: &Path,
    size: usize,
    threads: usize,
    opts: &LimitOptions,
) -> Result<Limit, LimitError> {
    assert!(threads > 0, "at least one thread");
    let name = pwrite_fdatasync_concurrent_name(size, threads);
    let spec = SyncSpec::pwrite_fdatasync(dir, size);
    let mut steps = Vec::with_capacity(threads);
    for t in 0..threads {
        let scratch = ScratchFile::preallocated(dir, &format!("{name}-{t}"), spec.region)?;
        steps.push(SyncStep::new(
            scratch,
            size,
            spec.region,
            true,
            SyncKind::Pwrite,
        )?);
    }
    let counter: Counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(&name, Arc::clone(&counter), opts.quiet);
    let warm_end = Instant::now() + opts.duration / 5;
    let end = warm_end + opts.duration;
    let results: Vec<Result<Latencies, LimitError>> = std::thread::scope(|s| {
        let handles: Vec<_> = steps
            .into_iter()
            .map(|mut step| {
                let counter = &counter;
                s.spawn(move || step.timed(warm_end, end, counter))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or(Err(LimitError::ThreadPanicked("concurrent fdatasync")))
            })
            .collect()
    });
    let elapsed = warm_end.elapsed();
    drop(progress);
    let mut all = Latencies::new()?;
    for r in results {
        all.merge(&r?)?;
    }
    let mut limit = spec.limit(all.summary(elapsed), all.percentile_curve());
    limit.name = name;
    limit.description = format!(
        "pwrite {size} bytes at consecutive offsets in a preallocated {} KiB region, then \
         fdatasync, in each of {threads} threads at once, each on its own file (one replica's \
         log write when {threads} replicas share this disk); latency of one, throughput of all",
        spec.region / 1024
    );
    Ok(limit)
}

/// Bytes one single-record log commit writes for a `payload`-byte record: the record (16 B
/// header, payload, padding to 8 bytes) and its 48 B commit mark.
pub fn log_commit_bytes(payload: usize) -> usize {
    (keel_pmem::layout::record_size(payload as u64) + keel_pmem::layout::MARK_SIZE) as usize
}

/// Name of the bare floor of one log commit of a `payload`-byte record (`kind`
/// `pwrite-fdatasync`, `uring-fdatasync` or `direct-dsync`).
pub fn log_floor_name(kind: &str, payload: usize) -> String {
    format!("{kind}-{}-record", size_label(payload))
}

/// Name of the grouped pwrite+fdatasync limit for `n` writes of `size` bytes per sync.
pub fn pwrite_fdatasync_group_name(size: usize, n: usize) -> String {
    format!("pwrite-fdatasync-{}x{n}", size_label(size))
}

/// Measures the grouped limit of [`SyncSpec::group`].
pub fn pwrite_fdatasync_group(
    dir: &Path,
    size: usize,
    n: usize,
    opts: &LimitOptions,
) -> Result<Limit, LimitError> {
    SyncSpec::group(dir, size, n).measure(opts)
}

/// RDMA devices listed under /sys/class/infiniband.
pub fn rdma_devices() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/infiniband")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Figures parsed from one `ib_write_lat` result line (microseconds, one way: perftest reports
/// half the round trip).
#[derive(Clone, Debug, PartialEq)]
pub struct PerftestLat {
    /// Message size.
    pub bytes: u64,
    /// Iterations.
    pub iterations: u64,
    /// t_min.
    pub min_us: f64,
    /// t_max.
    pub max_us: f64,
    /// t_typical (the median).
    pub typical_us: f64,
    /// t_avg.
    pub avg_us: f64,
    /// 99% percentile, when printed.
    pub p99_us: Option<f64>,
    /// 99.9% percentile, when printed.
    pub p999_us: Option<f64>,
}

/// Parses the result line of perftest's latency output (the first line after the header that
/// names `t_typical` whose fields are all numbers).
pub fn parse_perftest_lat(output: &str) -> Option<PerftestLat> {
    let mut lines = output.lines().skip_while(|l| !l.contains("t_typical"));
    lines.next()?;
    for line in lines {
        let nums: Option<Vec<f64>> = line
            .split_whitespace()
            .map(|t| t.parse::<f64>().ok())
            .collect();
        let Some(nums) = nums else { continue };
        if nums.len() < 7 {
            continue;
        }
        return Some(PerftestLat {
            bytes: nums[0] as u64,
            iterations: nums[1] as u64,
            min_us: nums[2],
            max_us: nums[3],
            typical_us: nums[4],
            avg_us: nums[5],
            p99_us: nums.get(7).copied(),
            p999_us: nums.get(8).copied(),
        });
    }
    None
}

impl PerftestLat {
    /// The round-trip summary (every one-way figure doubled; p90 is not reported: NaN).
    pub fn rtt_summary(&self) -> Summary {
        let rtt = |us: f64| us * 2.0 * 1000.0;
        let elapsed_s = self.iterations as f64 * rtt(self.avg_us) / 1e9;
        Summary {
            count: self.iterations,
            elapsed_s,
            throughput_per_s: if elapsed_s > 0.0 {
                self.iterations as f64 / elapsed_s
            } else {
                f64::NAN
            },
            mean_ns: rtt(self.avg_us),
            min_ns: rtt(self.min_us),
            p50_ns: rtt(self.typical_us),
            p90_ns: f64::NAN,
            p99_ns: self.p99_us.map(rtt).unwrap_or(f64::NAN),
            p999_ns: self.p999_us.map(rtt).unwrap_or(f64::NAN),
            max_ns: rtt(self.max_us),
        }
    }
}

/// Runs perftest's `ib_write_lat` (server and client on this host, loopback through the
/// device) for `size` bytes; skipped, with the reason, when there is no device or no perftest.
pub fn ib_write_lat(device: Option<&str>, size: usize, gid_index: Option<u32>) -> LimitOutcome {
    let name = ib_write_rtt_name(size);
    let skip = |reason: String| {
        LimitOutcome::Skipped(Skipped {
            name: name.clone(),
            reason,
        })
    };
    let devices = rdma_devices();
    let dev = match device {
        Some(d) => d.to_string(),
        None => match devices.first() {
            Some(d) => d.clone(),
            None => return skip("no RDMA device: skipped".into()),
        },
    };
    if !devices.contains(&dev) {
        return skip(format!("RDMA device {dev} not found: skipped"));
    }
    let port = 18515 + (std::process::id() % 1000) as u16;
    let mut args = vec![
        "-d".to_string(),
        dev.clone(),
        "-s".into(),
        size.to_string(),
        "-n".into(),
        "10000".into(),
        "-p".into(),
        port.to_string(),
    ];
    if let Some(g) = gid_index {
        args.push("-x".into());
        args.push(g.to_string());
    }
    let server = Command::new("ib_write_lat")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut server = match server {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return skip(format!(
                "RDMA device {dev} present but perftest's ib_write_lat is not installed \
                 (apt-get install perftest): skipped"
            ));
        }
        Err(e) => return skip(format!("starting ib_write_lat failed: {e}: skipped")),
    };
    std::thread::sleep(Duration::from_millis(500));
    let client = Command::new("ib_write_lat")
        .args(&args)
        .arg("127.0.0.1")
        .output();
    let _ = server.kill();
    let _ = server.wait();
    let out = match client {
        Ok(o) => o,
        Err(e) => return skip(format!("running ib_write_lat failed: {e}: skipped")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    match parse_perftest_lat(&stdout) {
        Some(p) => LimitOutcome::Measured(Limit {
            name,
            description: format!(
                "perftest ib_write_lat on {dev}, {size} bytes, client and server on this host"
            ),
            summary: p.rtt_summary(),
            curve: Vec::new(),
            extra: BTreeMap::from([("one_way_typical_us".to_string(), p.typical_us)]),
            notes: vec![format!(
                "ib_write_lat prints half the round trip; figures here are doubled; args {}",
                args.join(" ")
            )],
        }),
        None => skip(format!(
            "ib_write_lat on {dev} printed no result (exit {:?}): skipped; stderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
    }
}

/// Which limits `measure` runs.
#[derive(Clone, Debug)]
pub struct LimitSet {
    /// The cache-line round trip.
    pub cacheline: bool,
    /// TCP ping-pong sizes, each busy-polling and blocking.
    pub tcp_sizes: Vec<usize>,
    /// Whether TCP is also measured blocking (busy-polling always is).
    pub tcp_blocking: bool,
    /// The directory for the fdatasync limits (`None`: none of them).
    pub sync_dir: Option<PathBuf>,
    /// The 4 KiB overwrite + fdatasync.
    pub fdatasync_4k: bool,
    /// Sizes of the bare pwrite + fdatasync loop.
    pub pwrite_sizes: Vec<usize>,
    /// `ib_write_lat` sizes (when a device exists).
    pub ib_sizes: Vec<usize>,
    /// The RDMA device (`None`: the first one).
    pub ib_device: Option<String>,
    /// GID index for `ib_write_lat -x` (RoCE).
    pub ib_gid_index: Option<u32>,
}

/// Measures every limit of `set`, in order.
pub fn measure(set: &LimitSet, opts: &LimitOptions) -> Result<Vec<LimitOutcome>, LimitError> {
    let mut out = Vec::new();
    if set.cacheline {
        out.push(LimitOutcome::Measured(cacheline_rtt(opts)?));
    }
    for &size in &set.tcp_sizes {
        out.push(LimitOutcome::Measured(tcp_rtt(size, true, opts)?));
        if set.tcp_blocking {
            out.push(LimitOutcome::Measured(tcp_rtt(size, false, opts)?));
        }
    }
    if let Some(dir) = &set.sync_dir {
        if set.fdatasync_4k {
            out.push(LimitOutcome::Measured(fdatasync_overwrite_4k(dir, opts)?));
        }
        for &size in &set.pwrite_sizes {
            out.push(LimitOutcome::Measured(pwrite_fdatasync(dir, size, opts)?));
        }
    }
    for &size in &set.ib_sizes {
        out.push(ib_write_lat(
            set.ib_device.as_deref(),
            size,
            set.ib_gid_index,
        ));
    }
    Ok(out)
}

/// `pwrite`+`fdatasync` calls [`sync_interrupt_core`] makes to find the device's interrupt.
pub const IRQ_PROBE_SYNCS: u64 = 64;

/// Device interrupt counts per CPU, from `/proc/interrupts`: `(irq line, [(cpu, count)])` for
/// every numbered line (device interrupts; the named ones such as `LOC` or `RES` are not).
pub fn device_interrupts(text: &str) -> Vec<(String, Vec<(usize, u64)>)> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cpus: Vec<usize> = header
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect();
    let mut out = Vec::new();
    for line in lines {
        let mut tok = line.split_whitespace();
        let Some(label) = tok.next().and_then(|l| l.strip_suffix(':')) else {
            continue;
        };
        if label.parse::<u64>().is_err() {
            continue;
        }
        let counts: Vec<(usize, u64)> = cpus
            .iter()
            .zip(tok.by_ref())
            .map_while(|(&cpu, n)| Some((cpu, n.parse().ok()?)))
            .collect();
        if counts.len() != cpus.len() {
            continue;
        }
        let name = tok.last().unwrap_or("");
        out.push((format!("{label} {name}"), counts));
    }
    out
}

/// The core that takes the completion interrupts of the block device under `dir`: counts
/// `/proc/interrupts` around [`IRQ_PROBE_SYNCS`] `pwrite`+`fdatasync` calls there and returns
/// the core of the device interrupt line that grew most (by at least one per two syncs), with
/// a note naming the line. The inner `Err` says why no core could be told (no
/// `/proc/interrupts`, no line that grew with the syncs, a core this process may not use).
pub fn sync_interrupt_core(dir: &Path) -> Result<Result<(usize, String), String>, LimitError> {
    let read = || std::fs::read_to_string("/proc/interrupts");
    let Ok(before) = read() else {
        return Ok(Err("/proc/interrupts is not readable".into()));
    };
    let scratch = ScratchFile::preallocated(dir, "irq-probe", 1 << 16)?;
    let err = |source| LimitError::File {
        path: scratch.path().display().to_string(),
        source,
    };
    let block = [0x5au8; 512];
    for i in 0..IRQ_PROBE_SYNCS {
        scratch
            .file()
            .write_all_at(&block, (i % 128) * 512)
            .map_err(err)?;
        scratch.file().sync_data().map_err(err)?;
    }
    let Ok(after) = read() else {
        return Ok(Err("/proc/interrupts is not readable".into()));
    };
    let before = device_interrupts(&before);
    let mut best: Option<(u64, usize, String)> = None;
    for (line, counts) in device_interrupts(&after) {
        let Some((_, old)) = before.iter().find(|(l, _)| *l == line) else {
            continue;
        };
        for (&(cpu, n), &(_, o)) in counts.iter().zip(old) {
            let grew = n.saturating_sub(o);
            if best.as_ref().is_none_or(|b| grew > b.0) {
                best = Some((grew, cpu, line.clone()));
            }
        }
    }
    match best {
        Some((grew, cpu, line)) if grew >= IRQ_PROBE_SYNCS / 2 => {
            if all_cores().iter().any(|c| c.id == cpu) {
                Ok(Ok((
                    cpu,
                    format!(
                        "core {cpu} takes interrupt {line} ({grew} in {IRQ_PROBE_SYNCS} syncs)"
                    ),
                )))
            } else {
                Ok(Err(format!(
                    "interrupt {line} lands on core {cpu}, which this process may not use"
                )))
            }
        }
        _ => Ok(Err(format!(
            "no device interrupt grew with {IRQ_PROBE_SYNCS} syncs in {}",
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERFTEST: &str = "\
---------------------------------------------------------------------------------------
                    RDMA_Write Latency Test
 Dual-port       : OFF\t\tDevice         : rxe0
---------------------------------------------------------------------------------------
 #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] 
 64      10000          3.08           12.29        3.25                3.30             0.31            4.80                    12.29  
---------------------------------------------------------------------------------------
";

    #[test]
    fn parses_perftest_latency_output_and_doubles_to_a_round_trip() {
        let p = parse_perftest_lat(PERFTEST).unwrap();
        assert_eq!(p.bytes, 64);
        assert_eq!(p.iterations, 10000);
        assert_eq!(p.typical_us, 3.25);
        assert_eq!(p.p999_us, Some(12.29));
        let s = p.rtt_summary();
        assert_eq!(s.p50_ns, 6500.0);
        assert_eq!(s.mean_ns, 6600.0);
        assert_eq!(s.p99_ns, 9600.0);
        assert!(s.p90_ns.is_nan());
        assert!((s.throughput_per_s - 1e9 / 6600.0).abs() < 1e-6);
    }

    #[test]
    fn perftest_output_without_a_result_is_none() {
        assert_eq!(
            parse_perftest_lat("Couldn't connect to 127.0.0.1:18515\n"),
            None
        );
    }

    #[test]
    fn limit_names_carry_sizes() {
        assert_eq!(tcp_rtt_name(64, true), "tcp-rtt-64B-busy");
        assert_eq!(pwrite_fdatasync_name(1024), "pwrite-fdatasync-1KiB");
        assert_eq!(pwrite_fdatasync_name(65536), "pwrite-fdatasync-64KiB");
        assert_eq!(size_label(100), "100B");
        assert_eq!(pwrite_region(64), 1 << 20);
        assert_eq!(pwrite_region(1 << 20), 16 << 20);
    }

    #[test]
    fn scratch_files_are_preallocated_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let s = ScratchFile::preallocated(dir.path(), "t", 3 << 20).unwrap();
            path = s.path().to_path_buf();
            assert_eq!(s.file().metadata().unwrap().len(), 3 << 20);
        }
        assert!(!path.exists());
    }

    const INTERRUPTS: &str = "\
           CPU0       CPU1       
 28:          0          0 PCI-MSIX-0000:00:01.0   0-edge      virtio0-config
 36:          5   43255614 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
NMI:          0          0   Non-maskable interrupts
LOC:   12345678   23456789   Local timer interrupts
ERR:          0
";

    #[test]
    fn device_interrupts_are_the_numbered_lines_per_cpu() {
        let d = device_interrupts(INTERRUPTS);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[1].0, "36 virtio1-req.0");
        assert_eq!(d[1].1, vec![(0, 5), (1, 43255614)]);
        assert!(device_interrupts("").is_empty());
    }
}
