//! The shared-memory ring across real processes: this binary re-runs itself as the leader
//! (writer) child while the parent is the follower (reader).
//!
//! `harness = false`: `main` runs the scenarios, or the child role when called with
//! `--child <role> <ring path>`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use keel_transport::handshake::HandshakeConfig;
use keel_transport::ring::{AppendError, RingConfig, RingReader, RingWriter};
use keel_transport::shm::{Doorbell, ShmError, ShmRing, Wake};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

const CLUSTER: u64 = 0xC1;
const FOLLOWER: u64 = 2;
const LEADER: u64 = 1;
const FRAMES: u64 = 20_000;
const CAPACITY: usize = 1 << 16;
const EXIT_REFUSED: i32 = 3;

fn members() -> Vec<u64> {
    vec![1, 2, 3]
}

fn payload(slot: u64) -> Vec<u8> {
    let len = (slot % 300) as usize;
    (0..len).map(|i| (slot as usize * 13 + i) as u8).collect()
}

fn ring_config(epoch: u64) -> RingConfig {
    RingConfig {
        epoch,
        max_payload: 1024,
    }
}

/// Frames the doorbell scenario sends, one every [`BELL_GAP`] (so the receiver is asleep for
/// each); then as many again to a receiver that spins (the machine's limit for comparison).
const BELL_ROUNDS: u64 = 200;
const BELL_GAP: Duration = Duration::from_millis(5);
/// The receiver's sleep timeout in the doorbell scenario: far longer than any wake-up.
const BELL_TIMEOUT: Duration = Duration::from_secs(10);

fn now_ns() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_nanos()).unwrap()
}

/// The doorbell scenario's writer: every BELL_GAP, one frame carrying its send time, published,
/// then the receiver's doorbell rung.
fn bell_child(ring_path: &Path, bell_path: &Path) -> i32 {
    let me = HandshakeConfig::new(CLUSTER, LEADER, members());
    let (ring, _) = ShmRing::open(ring_path, &me, FOLLOWER, 79).unwrap();
    let bell = Doorbell::open(bell_path).unwrap();
    let mut writer = RingWriter::new(ring.into_sink(), ring_config(79));
    let mut syscalls = 0;
    for slot in 0..2 * BELL_ROUNDS {
        std::thread::sleep(BELL_GAP);
        writer.send(5, slot, &now_ns().to_le_bytes()).unwrap();
        syscalls += u32::from(bell.ring());
    }
    eprintln!(
        "bell child: rang with a wake syscall {syscalls} times of {}",
        2 * BELL_ROUNDS
    );
    0
}

fn child(role: &str, path: &Path) -> i32 {
    let (cluster, epoch) = match role {
        "leader" => (CLUSTER, 77),
        "stranger" => (CLUSTER + 1, 78),
        other => panic!("unknown child role {other}"),
    };
    let me = HandshakeConfig::new(cluster, LEADER, members());
    let (ring, peer) = match ShmRing::open(path, &me, FOLLOWER, epoch) {
        Ok(opened) => opened,
        Err(ShmError::Handshake(e)) => {
            eprintln!("child {role}: refused: {e}");
            return EXIT_REFUSED;
        }
        Err(e) => panic!("child {role}: open failed: {e}"),
    };
    assert_eq!(peer.member_id, FOLLOWER);
    let mut writer = RingWriter::new(ring.into_sink(), ring_config(epoch));
    let deadline = Instant::now() + Duration::from_secs(60);
    for slot in 0..FRAMES {
        let body = payload(slot);
        loop {
            match writer.send(5, slot, &body) {
                Ok(_) => break,
                Err(AppendError::Full { .. }) => {
                    assert!(Instant::now() < deadline, "follower stopped reading");
                    std::hint::spin_loop();
                }
                Err(e) => panic!("append {slot}: {e}"),
            }
        }
    }
    // The follower's head, mirrored back, is the acknowledgement: wait until all consumed.
    while writer.refresh_head().unwrap() != CAPACITY {
        assert!(
            Instant::now() < deadline,
            "follower never consumed everything"
        );
        std::thread::yield_now();
    }
    0
}

fn spawn(role: &str, path: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--child", role])
        .arg(path)
        .spawn()
        .unwrap()
}

fn wait(mut child: std::process::Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("child did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ring_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// A leader process streams 20 000 frames through a follower's ring; the follower receives
/// every one, in order, unchanged; the leader sees them acknowledged through the head.
fn frames_cross_processes_in_order() {
    let dir = ring_dir();
    let path: PathBuf = dir.path().join("ring");
    let me = HandshakeConfig::new(CLUSTER, FOLLOWER, members());
    let pending = ShmRing::create(&path, CAPACITY, &me).unwrap();
    let child = spawn("leader", &path);
    let (ring, peer) = pending.accept(&me, Duration::from_secs(30)).unwrap();
    assert_eq!((peer.member_id, peer.epoch), (LEADER, 77));
    let mut reader = RingReader::new(ring.into_source(), ring_config(peer.epoch));
    let mut next = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < FRAMES {
        assert!(Instant::now() < deadline, "leader stopped at {next}");
        reader
            .poll(64, |f| {
                assert_eq!(f.slot, next, "lost, duplicated or reordered");
                assert_eq!(f.ballot, 5);
                assert_eq!(f.payload, payload(next).as_slice());
                next += 1;
            })
            .unwrap();
    }
    let status = wait(child);
    assert!(status.success(), "leader child failed: {status}");
    println!("ok: {FRAMES} frames crossed from a child process in order");
}

/// A process of another cluster is refused at open and never gets a ring end; the
/// follower never sees a hello.
fn stranger_process_is_refused() {
    let dir = ring_dir();
    let path = dir.path().join("ring");
    let me = HandshakeConfig::new(CLUSTER, FOLLOWER, members());
    let pending = ShmRing::create(&path, 4096, &me).unwrap();
    let status = wait(spawn("stranger", &path));
    assert_eq!(status.code(), Some(EXIT_REFUSED), "stranger not refused");
    assert!(matches!(
        pending.accept(&me, Duration::from_millis(20)),
        Err(ShmError::HandshakeTimeout { .. })
    ));
    println!("ok: a process of another cluster was refused");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        if args[2] == "bell" {
            std::process::exit(bell_child(Path::new(&args[3]), Path::new(&args[4])));
        }
        std::process::exit(child(&args[2], Path::new(&args[3])));
    }
    // `cargo test -- <filter>` passes filters; run everything unless only listing.
    if args.iter().any(|a| a == "--list") {
        return;
    }
    frames_cross_processes_in_order();
    stranger_process_is_refused();
    an_idle_receiver_wakes_on_the_doorbell_not_its_timeout();
}

/// A receiver with nothing to read sleeps on its doorbell with a 10 s timeout; a writer in
/// another process sends a frame every 5 ms and rings. Every sleep must end by the ring (or by
/// finding the frame already there), never by the timeout, so 200 frames take about 1 s, not
/// 200 timeouts. Prints the wake-up latency (send to receipt, across processes).
fn an_idle_receiver_wakes_on_the_doorbell_not_its_timeout() {
    let dir = ring_dir();
    let (ring_path, bell_path) = (dir.path().join("ring"), dir.path().join("bell"));
    let me = HandshakeConfig::new(CLUSTER, FOLLOWER, members());
    let bell = Doorbell::create(&bell_path).unwrap();
    let pending = ShmRing::create(&ring_path, CAPACITY, &me).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--child", "bell"])
        .arg(&ring_path)
        .arg(&bell_path)
        .spawn()
        .unwrap();
    let (ring, peer) = pending.accept(&me, Duration::from_secs(30)).unwrap();
    let source = ring.into_source();
    let watch = source.watch();
    let mut reader = RingReader::new(source, ring_config(peer.epoch));
    let (mut rung, mut ready, mut latencies_us) = (0u32, 0u32, Vec::new());
    let start = Instant::now();
    while (latencies_us.len() as u64) < BELL_ROUNDS {
        let got = reader
            .poll(usize::MAX, |f| {
                let sent = u64::from_le_bytes(f.payload.try_into().unwrap());
                latencies_us.push(now_ns().saturating_sub(sent) / 1000);
            })
            .unwrap();
        if got > 0 {
            continue;
        }
        match bell.sleep(BELL_TIMEOUT, || watch.has_unread()) {
            Wake::Rung => rung += 1,
            Wake::Ready => ready += 1,
            Wake::TimedOut => panic!(
                "the receiver slept its whole {BELL_TIMEOUT:?} timeout after {} frames: the doorbell did not wake it",
                latencies_us.len()
            ),
        }
    }
    let took = start.elapsed();
    // The same frames to a receiver that spins: no wake-up at all, the limit to compare with.
    let mut spinning_us = Vec::new();
    while (spinning_us.len() as u64) < BELL_ROUNDS {
        reader
            .poll(usize::MAX, |f| {
                let sent = u64::from_le_bytes(f.payload.try_into().unwrap());
                spinning_us.push(now_ns().saturating_sub(sent) / 1000);
            })
            .unwrap();
        std::hint::spin_loop();
    }
    assert!(wait(child).success(), "doorbell writer child failed");
    assert!(rung > 0, "never woken by the doorbell");
    assert!(
        took < BELL_TIMEOUT,
        "{BELL_ROUNDS} frames took {took:?}: wake-ups waited for timeouts"
    );
    spinning_us.sort_unstable();
    latencies_us.sort_unstable();
    let pct = |v: &[u64], p: usize| v[(v.len() - 1) * p / 100];
    println!(
        "ok: an idle receiver woke on the doorbell {rung} times ({ready} times the frame was already there) in {took:?} \
         (sleep timeout {BELL_TIMEOUT:?}); send-to-receipt across processes, sleeping on the doorbell: \
         p50 {} us, p90 {} us, p99 {} us, max {} us; spinning (the limit): p50 {} us, p99 {} us; \
         p50 ratio {:.1}x",
        pct(&latencies_us, 50),
        pct(&latencies_us, 90),
        pct(&latencies_us, 99),
        pct(&latencies_us, 100),
        pct(&spinning_us, 50),
        pct(&spinning_us, 99),
        pct(&latencies_us, 50) as f64 / pct(&spinning_us, 50).max(1) as f64
    );
}
