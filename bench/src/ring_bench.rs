//! `keel-bench ring`: the transports' round trip and frame-stream throughput against the
//! machine's limits, measured in the same run.
//!
//! - `ring-shm-rtt-<n>B`: the leader writes an `n`-byte frame into an anonymous shared-memory
//!   ring and publishes the tail; the follower (another thread, pinned to the other core,
//!   spinning in `RingReader::poll`) validates and consumes it and stores its head, which is the
//!   acknowledgement; the leader spins on `refresh_head` until the head covers the frame.
//!   Limit: `cacheline-rtt` (the least any acknowledged handoff between two cores costs).
//! - `ring-shm-stream-<n>B`: the leader sends frames back to back (`send`: write + publish per
//!   frame, retrying when the ring is full); frames delivered per second. Throughput ratio
//!   against `cacheline-rtt`'s rate.
//! - `ring-shm-wake-<n>B`: across processes, the wake-up of an idle receiver. A writer process
//!   (this binary re-executed, [`WAKE_WRITER_ENV`]) opens a ring file and the receiver's
//!   doorbell (`keel_transport::shm::Doorbell`), and every 500 us writes a frame carrying its
//!   send time, publishes it and rings; the receiver, with nothing to read, sleeps on its
//!   doorbell. One-way latency, send to receipt (both processes read the same clock), against
//!   `cacheline-rtt`: the ratio says what sleeping costs against spinning.
//! - `ring-tcp-rtt-<n>B-busy` / `-blocking`: `keel_transport::tcp` after its handshake: the
//!   leader sends an `n`-byte message, the follower receives it and sends `n` bytes back; busy
//!   mode puts both sockets in non-blocking mode and spins on `recv_message`. Limits: the raw
//!   TCP ping-pong of the same size in the same mode.
//! - `ring-tcp-stream-<n>B`: messages sent back to back over a blocking connection; messages
//!   received per second.
//! - `ring-rdma-rtt-<n>B`: with the `rdma` feature, on a host with an RDMA device: round
//!   trips through keel-transport's verbs ring (`keel_transport::rdma::bench`), against
//!   perftest's `ib_write_lat` on the same device; otherwise skipped with the reason.
//!
//! Targets (issue 5): shm ring p50 at most 2x the cache-line round trip p50; tcp p50 at most
//! 1.2x the raw TCP ping-pong p50 (each mode).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keel_transport::handshake::HandshakeConfig;
use keel_transport::ring::{AppendError, ReadError, RingConfig, RingReader, RingWriter};
use keel_transport::shm::{Doorbell, ShmError, ShmRing, Wake};
use keel_transport::tcp::{self, TcpAcceptor, TcpConfig, TcpConnection, TcpError};

use crate::limits::{self, LimitError, LimitOptions, core_pair, pin, size_label};
use crate::progress::{Counter, Progress};
use crate::report::{Bound, LimitOutcome, Report, Skipped, Target, params};
use crate::stats::{Latencies, StatsError, Summary};

/// Errors from the ring benchmark.
#[derive(Debug, thiserror::Error)]
pub enum RingBenchError {
    /// Measuring a limit failed.
    #[error("measuring a limit")]
    Limit(#[from] LimitError),
    /// A histogram failed.
    #[error("latency histogram")]
    Stats(#[from] StatsError),
    /// Creating the shared-memory ring failed.
    #[error("creating the shared-memory ring")]
    Shm(#[source] ShmError),
    /// The ring writer failed.
    #[error("ring write")]
    Append(#[source] AppendError),
    /// The ring reader failed.
    #[error("ring read")]
    Read(#[source] ReadError),
    /// The TCP transport failed.
    #[error("tcp transport: {0}")]
    Tcp(&'static str, #[source] TcpError),
    /// Setting a socket mode failed.
    #[error("configuring a socket")]
    Socket(#[source] std::io::Error),
    /// A thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The peer stopped answering.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The `ring-shm-wake` writer process could not be started or failed.
    #[error("the shm wake-up writer process: {0}")]
    WakeWriter(String),
}

/// Parameters of `keel-bench ring`.
#[derive(Clone, Debug)]
pub struct RingBenchOptions {
    /// Backends: any of `shm`, `tcp`, `rdma`.
    pub backends: Vec<String>,
    /// Frame payload in bytes.
    pub payload: usize,
    /// Shared-memory ring capacity in bytes (a power of two).
    pub ring_bytes: usize,
    /// RDMA device name (`None`: the first one).
    pub rdma_device: Option<String>,
}

/// Figure name: `ring-<backend>-<kind>-<size>[-<mode>]`.
pub fn figure_name(backend: &str, kind: &str, payload: usize, mode: Option<&str>) -> String {
    match mode {
        Some(m) => format!("ring-{backend}-{kind}-{}-{m}", size_label(payload)),
        None => format!("ring-{backend}-{kind}-{}", size_label(payload)),
    }
}

/// Longest a round trip may take before the run is declared stuck.
const STUCK: Duration = Duration::from_secs(10);

/// Runs the ring benchmark into `report`.
pub fn run(
    o: &RingBenchOptions,
    lo: &LimitOptions,
    report: &mut Report,
) -> Result<(), RingBenchError> {
    assert!(o.payload > 0, "frames carry at least one byte");
    let want = |b: &str| o.backends.iter().any(|x| x == b);
    let payload_params = || {
        params([
            ("payload_bytes", serde_json::Value::from(o.payload)),
            ("ring_bytes", o.ring_bytes.into()),
        ])
    };
    if want("shm") {
        let limit = limits::cacheline_rtt(lo)?;
        let limit_p50 = limit.summary.p50_ns;
        report.add_limit(LimitOutcome::Measured(limit));
        let (lat, elapsed) = limits::on_own_thread("shm ring", || shm_rtt(o, lo))??;
        let name = figure_name("shm", "rtt", o.payload, None);
        let p50 = report
            .add_latencies(
                &name,
                payload_params(),
                &lat,
                elapsed,
                Some(limits::CACHELINE_RTT),
            )
            .summary
            .p50_ns;
        report.targets.push(Target::new(
            format!("{name} p50 <= 2x cacheline-rtt p50"),
            p50,
            limit_p50,
            Bound::AtMost,
            2.0,
        ));
        let s = limits::on_own_thread("shm stream", || shm_stream(o, lo))??;
        report.add_result(
            figure_name("shm", "stream", o.payload, None),
            payload_params(),
            s,
            Some(limits::CACHELINE_RTT),
        );
        let (lat, elapsed) = shm_wake(o, lo)?;
        report.add_latencies(
            figure_name("shm", "wake", o.payload, None),
            payload_params(),
            &lat,
            elapsed,
            Some(limits::CACHELINE_RTT),
        );
    }
    if want("tcp") {
        for busy in [true, false] {
            let limit = limits::tcp_rtt(o.payload, busy, lo)?;
            let (limit_name, limit_p50) = (limit.name.clone(), limit.summary.p50_ns);
            report.add_limit(LimitOutcome::Measured(limit));
            let mode = if busy { "busy" } else { "blocking" };
            let (lat, elapsed) = limits::on_own_thread("tcp ring", || tcp_rtt(o, busy, lo))??;
            let name = figure_name("tcp", "rtt", o.payload, Some(mode));
            let mut p = payload_params();
            p.insert("mode".into(), mode.into());
            let p50 = report
                .add_latencies(&name, p, &lat, elapsed, Some(&limit_name))
                .summary
                .p50_ns;
            report.targets.push(Target::new(
                format!("{name} p50 <= 1.2x {limit_name} p50"),
                p50,
                limit_p50,
                Bound::AtMost,
                1.2,
            ));
        }
        let s = limits::on_own_thread("tcp stream", || tcp_stream(o, lo))??;
        report.add_result(
            figure_name("tcp", "stream", o.payload, None),
            payload_params(),
            s,
            Some(&limits::tcp_rtt_name(o.payload, false)),
        );
    }
    if want("rdma") {
        report.add_limit(limits::ib_write_lat(
            o.rdma_device.as_deref(),
            o.payload,
            None,
        ));
        let devices = limits::rdma_devices();
        let name = figure_name("rdma", "rtt", o.payload, None);
        let device = o.rdma_device.clone().or_else(|| devices.first().cloned());
        match device {
            None => report.skipped.push(Skipped {
                name,
                reason: "no RDMA device: skipped".into(),
            }),
            Some(device) => {
                #[cfg(feature = "rdma")]
                {
                    match rdma_rtt(&device, o.payload, lo) {
                        Ok((lat, elapsed)) => {
                            let mut p = payload_params();
                            p.insert("device".into(), device.into());
                            report.add_latencies(
                                &name,
                                p,
                                &lat,
                                elapsed,
                                Some(&limits::ib_write_rtt_name(o.payload)),
                            );
                        }
                        Err(e) => report.skipped.push(Skipped {
                            name,
                            reason: format!("rdma ring on {device} failed: {e}: skipped"),
                        }),
                    }
                }
                #[cfg(not(feature = "rdma"))]
                report.skipped.push(Skipped {
                    name,
                    reason: format!(
                        "RDMA device {device} present but keel-bench was built without the \
                         `rdma` feature (cargo build --release -p keel-bench --features rdma): \
                         skipped"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// RDMA ring round trips through keel-transport's verbs ring (leader and follower threads in
/// this process, connected through the device): as many as fit the duration at 20 us each,
/// at least 1000. The elapsed time is the sum of the round trips.
#[cfg(feature = "rdma")]
fn rdma_rtt(
    device: &str,
    payload: usize,
    lo: &LimitOptions,
) -> Result<(Latencies, Duration), Box<dyn std::error::Error + Send + Sync>> {
    use keel_transport::rdma::bench::{RoundTripOptions, ring_round_trips};
    let ops = ((lo.duration.as_micros() / 20) as usize).max(1000);
    let mut options = RoundTripOptions::new(device, ops);
    options.payload_bytes = payload;
    let trips = ring_round_trips(&options)?;
    let mut lat = Latencies::new()?;
    // The first fifth is the warm-up.
    let warm = trips.len() / 5;
    let mut elapsed = Duration::ZERO;
    for d in &trips[warm..] {
        lat.record(*d);
        elapsed += *d;
    }
    Ok((lat, elapsed))
}

fn ring_config(o: &RingBenchOptions) -> RingConfig {
    RingConfig {
        epoch: 1,
        max_payload: RingConfig::max_payload_for(o.ring_bytes).min(o.payload.max(64)),
    }
}

/// Shared-memory ring round trips; returns the latencies and the recorded time.
fn shm_rtt(
    o: &RingBenchOptions,
    lo: &LimitOptions,
) -> Result<(Latencies, Duration), RingBenchError> {
    let (pair, _) = core_pair(lo.cores);
    let config = ring_config(o);
    let (sink, source) = ShmRing::anonymous(o.ring_bytes)
        .map_err(RingBenchError::Shm)?
        .split();
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || -> Result<u64, ReadError> {
            pin(pair.map(|p| p.1));
            let mut reader = RingReader::new(source, config);
            let mut frames = 0u64;
            let mut idle: u32 = 0;
            while !stop.load(Ordering::Relaxed) {
                let n = reader.poll(64, |f| {
                    std::hint::black_box(f.payload);
                })?;
                frames += n as u64;
                if n == 0 {
                    idle = idle.wrapping_add(1);
                    if idle.is_multiple_of(1 << 16) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
            Ok(frames)
        })
    };
    pin(pair.map(|p| p.0));
    let mut writer = RingWriter::new(sink, config);
    let data = vec![0x42u8; o.payload];
    let counter: Counter = Arc::new(AtomicU64::new(0));
    let name = figure_name("shm", "rtt", o.payload, None);
    let mut lat = Latencies::new()?;
    let mut slot = 0u64;
    let result = (|| -> Result<Duration, RingBenchError> {
        let mut one = |lat: Option<&mut Latencies>| -> Result<(), RingBenchError> {
            let t0 = Instant::now();
            slot += 1;
            writer
                .send(1, slot, &data)
                .map_err(RingBenchError::Append)?;
            let tail = writer.tail();
            let mut spins: u32 = 0;
            loop {
                writer.refresh_head().map_err(RingBenchError::Append)?;
                if writer.head() == tail {
                    break;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1 << 16) {
                    if t0.elapsed() > STUCK {
                        return Err(RingBenchError::Timeout(STUCK));
                    }
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            if let Some(lat) = lat {
                lat.record(t0.elapsed());
            }
            Ok(())
        };
        let warm_end = Instant::now() + lo.duration / 5;
        while Instant::now() < warm_end {
            one(None)?;
        }
        let progress = Progress::start(&name, Arc::clone(&counter), lo.quiet);
        let start = Instant::now();
        let end = start + lo.duration;
        let mut n = 0u64;
        while Instant::now() < end {
            one(Some(&mut lat))?;
            n += 1;
            if n.is_multiple_of(1024) {
                counter.store(n, Ordering::Relaxed);
            }
        }
        let elapsed = start.elapsed();
        drop(progress);
        Ok(elapsed)
    })();
    stop.store(true, Ordering::Relaxed);
    let frames = follower
        .join()
        .map_err(|_| RingBenchError::Panicked("shm follower"))?
        .map_err(RingBenchError::Read)?;
    let elapsed = result?;
    assert_eq!(
        frames, slot,
        "the follower consumed every frame exactly once"
    );
    Ok((lat, elapsed))
}

/// Environment variable that makes `keel-bench` the writer process of `ring-shm-wake`; its
/// value is `<ring file>\t<doorbell file>\t<payload bytes>\t<milliseconds to run>`.
pub const WAKE_WRITER_ENV: &str = "KEEL_BENCH_SHM_WAKE_WRITER";
const WAKE_CLUSTER: u64 = 0xB7;
const WAKE_GAP: Duration = Duration::from_micros(500);
/// Slot of the frame that ends the run.
const WAKE_STOP: u64 = u64::MAX;

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// If this process was started as the `ring-shm-wake` writer, runs it and returns its exit
/// status (call first thing in `main`).
pub fn wake_writer_if_asked() -> Option<i32> {
    let spec = std::env::var(WAKE_WRITER_ENV).ok()?;
    Some(match wake_writer(&spec) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("keel-bench shm wake-up writer: {e}");
            1
        }
    })
}

fn wake_writer(spec: &str) -> Result<(), String> {
    let parts: Vec<&str> = spec.split('\t').collect();
    let [ring, bell, payload, run_ms] = parts.as_slice() else {
        return Err(format!(
            "{WAKE_WRITER_ENV} is not ring, bell, payload, ms: {spec:?}"
        ));
    };
    let payload: usize = payload.parse().map_err(|e| format!("payload: {e}"))?;
    let run = Duration::from_millis(run_ms.parse().map_err(|e| format!("ms: {e}"))?);
    let me = HandshakeConfig::new(WAKE_CLUSTER, 1, vec![1, 2]);
    let (ring, _) = ShmRing::open(std::path::Path::new(ring), &me, 2, 1)
        .map_err(|e| format!("open ring: {e}"))?;
    let bell = Doorbell::open(std::path::Path::new(bell)).map_err(|e| format!("open bell: {e}"))?;
    let config = RingConfig {
        epoch: 1,
        max_payload: payload,
    };
    let mut writer = RingWriter::new(ring.into_sink(), config);
    let mut body = vec![0x42u8; payload];
    let end = Instant::now() + run;
    let mut slot = 0u64;
    while Instant::now() < end {
        std::thread::sleep(WAKE_GAP);
        body[..8].copy_from_slice(&wall_ns().to_le_bytes());
        writer
            .send(1, slot, &body)
            .map_err(|e| format!("send: {e}"))?;
        bell.ring();
        slot += 1;
    }
    writer
        .send(1, WAKE_STOP, &body)
        .map_err(|e| format!("send: {e}"))?;
    bell.ring();
    Ok(())
}

/// `ring-shm-wake`: see the module docs.
fn shm_wake(
    o: &RingBenchOptions,
    lo: &LimitOptions,
) -> Result<(Latencies, Duration), RingBenchError> {
    let payload = o.payload.max(8);
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let base = dir.join(format!("keel-bench-wake-{}", std::process::id()));
    let (ring_path, bell_path) = (base.with_extension("ring"), base.with_extension("bell"));
    let me = HandshakeConfig::new(WAKE_CLUSTER, 2, vec![1, 2]);
    let bell = Doorbell::create(&bell_path).map_err(RingBenchError::Shm)?;
    let pending = ShmRing::create(&ring_path, o.ring_bytes, &me).map_err(RingBenchError::Shm)?;
    let warm = lo.duration / 5;
    let exe = std::env::current_exe().map_err(|e| RingBenchError::WakeWriter(e.to_string()))?;
    let mut child = std::process::Command::new(exe)
        .env(
            WAKE_WRITER_ENV,
            format!(
                "{}\t{}\t{payload}\t{}",
                ring_path.display(),
                bell_path.display(),
                (warm + lo.duration).as_millis()
            ),
        )
        .spawn()
        .map_err(|e| RingBenchError::WakeWriter(e.to_string()))?;
    let result = (|| -> Result<(Latencies, Duration), RingBenchError> {
        let (ring, peer) = pending.accept(&me, STUCK).map_err(RingBenchError::Shm)?;
        let source = ring.into_source();
        let watch = source.watch();
        let mut reader = RingReader::new(
            source,
            RingConfig {
                epoch: peer.epoch,
                max_payload: payload,
            },
        );
        let name = figure_name("shm", "wake", o.payload, None);
        let counter: Counter = Arc::new(AtomicU64::new(0));
        let mut lat = Latencies::new()?;
        let start = Instant::now();
        let recorded_from = start + warm;
        let mut progress = None;
        let mut stopped = false;
        let mut n = 0u64;
        while !stopped {
            let got = reader
                .poll(usize::MAX, |f| {
                    if f.slot == WAKE_STOP {
                        stopped = true;
                        return;
                    }
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&f.payload[..8]);
                    let took = wall_ns().saturating_sub(u64::from_le_bytes(sent));
                    if Instant::now() >= recorded_from {
                        lat.record_ns(took);
                        n += 1;
                    }
                })
                .map_err(RingBenchError::Read)?;
            if progress.is_none() && Instant::now() >= recorded_from {
                progress = Some(Progress::start(&name, Arc::clone(&counter), lo.quiet));
            }
            counter.store(n, Ordering::Relaxed);
            if got == 0 && !stopped && bell.sleep(STUCK, || watch.has_unread()) == Wake::TimedOut {
                return Err(RingBenchError::Timeout(STUCK));
            }
        }
        drop(progress);
        Ok((lat, start.elapsed().saturating_sub(warm)))
    })();
    let status = child
        .wait()
        .map_err(|e| RingBenchError::WakeWriter(e.to_string()))?;
    if !status.success() {
        return Err(RingBenchError::WakeWriter(format!("exited with {status}")));
    }
    result
}

/// Shared-memory ring stream: frames per second delivered to the follower.
fn shm_stream(o: &RingBenchOptions, lo: &LimitOptions) -> Result<Summary, RingBenchError> {
    let (pair, _) = core_pair(lo.cores);
    let config = ring_config(o);
    let (sink, source) = ShmRing::anonymous(o.ring_bytes)
        .map_err(RingBenchError::Shm)?
        .split();
    let stop = Arc::new(AtomicBool::new(false));
    let delivered: Counter = Arc::new(AtomicU64::new(0));
    let follower = {
        let stop = Arc::clone(&stop);
        let delivered = Arc::clone(&delivered);
        std::thread::spawn(move || -> Result<u64, ReadError> {
            pin(pair.map(|p| p.1));
            let mut reader = RingReader::new(source, config);
            let mut frames = 0u64;
            loop {
                let n = reader.poll(256, |f| {
                    std::hint::black_box(f.payload);
                })?;
                frames += n as u64;
                delivered.store(frames, Ordering::Relaxed);
                if n == 0 {
                    if stop.load(Ordering::Acquire) {
                        // One more poll after the stop: the writer published everything first.
                        let n = reader.poll(usize::MAX, |_| {})?;
                        return Ok(frames + n as u64);
                    }
                    std::hint::spin_loop();
                }
            }
        })
    };
    pin(pair.map(|p| p.0));
    let mut writer = RingWriter::new(sink, config);
    let data = vec![0x42u8; o.payload];
    let name = figure_name("shm", "stream", o.payload, None);
    let mut slot = 0u64;
    let result = (|| -> Result<(Duration, u64, u64), RingBenchError> {
        let mut send = |slot: u64| -> Result<(), RingBenchError> {
            loop {
                match writer.send(1, slot, &data) {
                    Ok(_) => return Ok(()),
                    Err(AppendError::Full { .. }) => std::hint::spin_loop(),
                    Err(e) => return Err(RingBenchError::Append(e)),
                }
            }
        };
        let warm_end = Instant::now() + lo.duration / 5;
        while Instant::now() < warm_end {
            slot += 1;
            send(slot)?;
        }
        let progress = Progress::start(&name, Arc::clone(&delivered), lo.quiet);
        let before = delivered.load(Ordering::Relaxed);
        let start = Instant::now();
        let end = start + lo.duration;
        loop {
            for _ in 0..256 {
                slot += 1;
                send(slot)?;
            }
            if Instant::now() >= end {
                break;
            }
        }
        // Count what the follower has delivered by the time the writer stops.
        let after = delivered.load(Ordering::Relaxed);
        let elapsed = start.elapsed();
        drop(progress);
        Ok((elapsed, before, after))
    })();
    stop.store(true, Ordering::Release);
    let frames = follower
        .join()
        .map_err(|_| RingBenchError::Panicked("shm follower"))?
        .map_err(RingBenchError::Read)?;
    let (elapsed, before, after) = result?;
    assert_eq!(
        frames, slot,
        "the follower consumed every frame exactly once"
    );
    Ok(Summary::throughput_only(after - before, elapsed))
}

/// A connected pair of handshaken TCP connections (leader dials follower).
fn tcp_pair() -> Result<(TcpConnection, TcpConnection), RingBenchError> {
    let members = vec![1, 2];
    let acceptor = TcpAcceptor::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        HandshakeConfig::new(0xbe4c, 2, members.clone()),
        TcpConfig::default(),
    )
    .map_err(|e| RingBenchError::Tcp("bind", e))?;
    let addr = acceptor
        .local_addr()
        .map_err(|e| RingBenchError::Tcp("local_addr", e))?;
    let accepting = std::thread::spawn(move || acceptor.accept());
    let leader = tcp::connect(
        addr,
        &HandshakeConfig::new(0xbe4c, 1, members),
        2,
        1,
        &TcpConfig::default(),
    )
    .map_err(|e| RingBenchError::Tcp("connect", e))?;
    let follower = accepting
        .join()
        .map_err(|_| RingBenchError::Panicked("tcp accept"))?
        .map_err(|e| RingBenchError::Tcp("accept", e))?;
    Ok((leader, follower))
}

/// Receives one message: blocking, or spinning on a non-blocking socket.
fn recv(conn: &mut TcpConnection, busy: bool) -> Result<Option<usize>, RingBenchError> {
    let deadline = Instant::now() + STUCK;
    loop {
        let wait = if busy {
            Duration::from_micros(1)
        } else {
            STUCK
        };
        match conn.recv_message(wait, |m| m.len()) {
            Ok(Some(n)) => return Ok(Some(n)),
            Ok(None) if Instant::now() < deadline => {}
            Ok(None) => return Err(RingBenchError::Timeout(STUCK)),
            Err(TcpError::Closed) => return Ok(None),
            Err(e) => return Err(RingBenchError::Tcp("recv", e)),
        }
    }
}

fn tcp_rtt(
    o: &RingBenchOptions,
    busy: bool,
    lo: &LimitOptions,
) -> Result<(Latencies, Duration), RingBenchError> {
    let (pair, _) = core_pair(lo.cores);
    let (mut leader, mut follower) = tcp_pair()?;
    for c in [&mut leader, &mut follower] {
        c.stream_mut()
            .set_nonblocking(busy)
            .map_err(RingBenchError::Socket)?;
    }
    let payload = o.payload;
    let echo = std::thread::spawn(move || -> Result<(), RingBenchError> {
        pin(pair.map(|p| p.1));
        let ack = vec![0x17u8; payload];
        while recv(&mut follower, busy)?.is_some() {
            follower
                .send_message(&ack, STUCK)
                .map_err(|e| RingBenchError::Tcp("send ack", e))?;
        }
        Ok(())
    });
    pin(pair.map(|p| p.0));
    let data = vec![0x42u8; o.payload];
    let mode = if busy { "busy" } else { "blocking" };
    let name = figure_name("tcp", "rtt", o.payload, Some(mode));
    let counter: Counter = Arc::new(AtomicU64::new(0));
    let mut lat = Latencies::new()?;
    let result = (|| -> Result<Duration, RingBenchError> {
        let mut one = |lat: Option<&mut Latencies>| -> Result<(), RingBenchError> {
            let t0 = Instant::now();
            leader
                .send_message(&data, STUCK)
                .map_err(|e| RingBenchError::Tcp("send", e))?;
            if recv(&mut leader, busy)?.is_none() {
                return Err(RingBenchError::Tcp("recv ack", TcpError::Closed));
            }
            if let Some(lat) = lat {
                lat.record(t0.elapsed());
            }
            Ok(())
        };
        let warm_end = Instant::now() + lo.duration / 5;
        while Instant::now() < warm_end {
            one(None)?;
        }
        let progress = Progress::start(&name, Arc::clone(&counter), lo.quiet);
        let start = Instant::now();
        let end = start + lo.duration;
        let mut n = 0u64;
        while Instant::now() < end {
            one(Some(&mut lat))?;
            n += 1;
            counter.store(n, Ordering::Relaxed);
        }
        let elapsed = start.elapsed();
        drop(progress);
        Ok(elapsed)
    })();
    leader.shutdown();
    echo.join()
        .map_err(|_| RingBenchError::Panicked("tcp echo"))??;
    Ok((lat, result?))
}

fn tcp_stream(o: &RingBenchOptions, lo: &LimitOptions) -> Result<Summary, RingBenchError> {
    let (pair, _) = core_pair(lo.cores);
    let (mut leader, mut follower) = tcp_pair()?;
    let delivered: Counter = Arc::new(AtomicU64::new(0));
    let sink = {
        let delivered = Arc::clone(&delivered);
        std::thread::spawn(move || -> Result<u64, RingBenchError> {
            pin(pair.map(|p| p.1));
            let mut n = 0u64;
            while recv(&mut follower, false)?.is_some() {
                n += 1;
                if n.is_multiple_of(64) {
                    delivered.store(n, Ordering::Relaxed);
                }
            }
            Ok(n)
        })
    };
    pin(pair.map(|p| p.0));
    let data = vec![0x42u8; o.payload];
    let name = figure_name("tcp", "stream", o.payload, None);
    let mut sent = 0u64;
    let result = (|| -> Result<(Duration, u64, u64), RingBenchError> {
        let warm_end = Instant::now() + lo.duration / 5;
        while Instant::now() < warm_end {
            leader
                .send_message(&data, STUCK)
                .map_err(|e| RingBenchError::Tcp("send", e))?;
            sent += 1;
        }
        let progress = Progress::start(&name, Arc::clone(&delivered), lo.quiet);
        let before = delivered.load(Ordering::Relaxed);
        let start = Instant::now();
        let end = start + lo.duration;
        loop {
            for _ in 0..64 {
                leader
                    .send_message(&data, STUCK)
                    .map_err(|e| RingBenchError::Tcp("send", e))?;
                sent += 1;
            }
            if Instant::now() >= end {
                break;
            }
        }
        let after = delivered.load(Ordering::Relaxed);
        let elapsed = start.elapsed();
        drop(progress);
        Ok((elapsed, before, after.max(before)))
    })();
    leader.shutdown();
    let received = sink
        .join()
        .map_err(|_| RingBenchError::Panicked("tcp sink"))??;
    let (elapsed, before, after) = result?;
    assert_eq!(received, sent, "every message sent was received once");
    Ok(Summary::throughput_only(after - before, elapsed))
}
