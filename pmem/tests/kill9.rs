//! Real crash test: a child process (this test binary, re-executed) appends from several
//! threads and prints every append it was told is durable; the parent kills it with SIGKILL at
//! a random moment, recovers the log, and checks that every acknowledged append is there (unless
//! the child had durably released it with `advance_head`) and that each thread's records form
//! a gap-free run. 100 kills per backend (`file` and `uring` with direct I/O, `file-buffered`, `uring-buffered`); the child reopens the same log every
//! time, so later runs recover logs that earlier kills left, and the log wraps.
//!
//! `KEEL_KILL9_ITERS` and `KEEL_KILL9_SEED` override the kill count and the seed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code (harness = false, so no cfg(test))

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use keel_pmem::{Backend, Log, LogConfig, LogError, UringOptions};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "KEEL_KILL9_CHILD";
const THREADS: u8 = 4;
const REGION_BYTES: u64 = 4096 + 64 * 1024;

fn payload(run: u32, t: u8, i: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(run.to_le_bytes());
    p.push(t);
    p.extend(i.to_le_bytes());
    let filler = (i as usize * 13 + t as usize * 7) % 180;
    p.extend((0..filler).map(|k| (k as u8) ^ (i as u8) ^ t));
    p
}

fn parse(p: &[u8]) -> (u32, u8, u32) {
    assert!(p.len() >= 9, "short payload {p:?}");
    let run = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let t = p[4];
    let i = u32::from_le_bytes(p[5..9].try_into().unwrap());
    assert_eq!(p, payload(run, t, i), "payload content");
    (run, t, i)
}

fn config(backend: &str, path: &Path) -> LogConfig {
    LogConfig {
        backend: match backend {
            "uring" | "uring-buffered" => Backend::Uring(UringOptions {
                staging_bytes: 64 * 1024,
                ring_entries: 32,
                direct: match Backend::parse(backend) {
                    Some(Backend::Uring(o)) => o.direct,
                    _ => keel_pmem::DirectIo::Auto,
                },
            }),
            other => Backend::parse(other).expect("a backend name"),
        },
        path: path.to_path_buf(),
        region_bytes: REGION_BYTES,
        log_id: 99,
    }
}

fn child(backend: &str, path: &Path, run: u32) -> anyhow::Result<()> {
    let (log, _) = Log::open_with(&config(backend, path))?;
    let log = Arc::new(log);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let log = Arc::clone(&log);
            s.spawn(move || -> anyhow::Result<()> {
                let mut mine = std::collections::VecDeque::new();
                for i in 0u32.. {
                    let p = payload(run, t, i);
                    let pos = loop {
                        match log.append(&p) {
                            Ok(pos) => break pos,
                            Err(LogError::Full { .. }) if t == 0 => {
                                let to = mine.pop_back().unwrap_or(log.tail());
                                log.advance_head(to)?;
                                println!("H {to}");
                                mine.clear();
                            }
                            Err(LogError::Full { .. }) => {
                                std::thread::sleep(Duration::from_millis(1))
                            }
                            Err(e) => return Err(e.into()),
                        }
                    };
                    {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "A {t} {i} {pos}")?;
                        out.flush()?;
                    }
                    if t == 0 {
                        mine.push_back(pos);
                        if log.free_bytes() < log.capacity() / 3 {
                            let to = mine[mine.len() / 2];
                            log.advance_head(to)?;
                            println!("H {to}");
                            mine.retain(|&p| p >= to);
                        }
                    }
                }
                Ok(())
            });
        }
    });
    Ok(())
}

struct Summary {
    kills: u32,
    acked: u64,
    recovered_records: u64,
}

fn run_backend(backend: &str, iters: u32, seed: u64) -> anyhow::Result<Summary> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("log");
    drop(Log::create_with(&config(backend, &path))?);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let exe = std::env::current_exe()?;
    let mut summary = Summary {
        kills: 0,
        acked: 0,
        recovered_records: 0,
    };
    for run in 1..=iters {
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, format!("{backend} {} {run}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_micros(rng.random_range(0..200_000)));
        child.kill()?; // SIGKILL
        let status = child.wait()?;
        anyhow::ensure!(
            std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
            "run {run}: the child ended by itself ({status}), not by SIGKILL"
        );
        let lines = reader.join().expect("reader");
        summary.kills += 1;
        // What the child was told is durable.
        let mut acked: BTreeMap<u8, Vec<(u32, u64)>> = BTreeMap::new();
        let mut released_to = 0u64;
        for l in &lines {
            let f: Vec<&str> = l.split(' ').collect();
            match f.as_slice() {
                ["A", t, i, pos] => acked
                    .entry(t.parse()?)
                    .or_default()
                    .push((i.parse()?, pos.parse()?)),
                ["H", pos] => released_to = released_to.max(pos.parse()?),
                _ => {} // a line cut by the kill, or test-harness noise
            }
        }
        let (log, rec) = Log::open_with(&config(backend, &path))
            .map_err(|e| anyhow::anyhow!("run {run} (seed {seed}): recovery failed: {e}"))?;
        anyhow::ensure!(
            rec.head >= released_to,
            "run {run}: head {} below acknowledged release {released_to}",
            rec.head
        );
        // This run's records per thread, with positions.
        let mut found: BTreeMap<u8, Vec<(u32, u64)>> = BTreeMap::new();
        for r in log.iter() {
            let r = r?;
            let (r_run, t, i) = parse(&r.payload);
            anyhow::ensure!(r_run <= run, "record from the future");
            if r_run == run {
                found.entry(t).or_default().push((i, r.pos));
            }
        }
        for (t, recs) in &found {
            for w in recs.windows(2) {
                anyhow::ensure!(w[1].0 == w[0].0 + 1, "run {run} thread {t}: gap {:?}", w);
            }
        }
        for (t, acks) in &acked {
            summary.acked += acks.len() as u64;
            for &(i, pos) in acks {
                if pos < rec.head {
                    continue; // released by the child, durably
                }
                let ok = found.get(t).is_some_and(|v| v.contains(&(i, pos)));
                anyhow::ensure!(
                    ok,
                    "run {run} (seed {seed}): acknowledged append t{t} #{i} at {pos} lost (head {})",
                    rec.head
                );
            }
        }
        summary.recovered_records += rec.records;
    }
    Ok(summary)
}

fn main() -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let mut it = spec.splitn(3, ' ');
        let (backend, path, run) = (
            it.next().unwrap_or(""),
            it.next().unwrap_or(""),
            it.next().unwrap_or("0"),
        );
        return child(backend, Path::new(path), run.parse()?);
    }
    let iters: u32 = std::env::var("KEEL_KILL9_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("KEEL_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    for backend in ["file", "file-buffered", "uring", "uring-buffered"] {
        if backend.starts_with("uring") {
            let dir = tempfile::tempdir()?;
            if let Err(e) =
                keel_pmem::UringRegion::open(&dir.path().join("p"), 4096, UringOptions::default())
            {
                println!(
                    "kill9 uring: skipped: io_uring refused here ({e}); runs on Linux >= 5.6 without a seccomp filter on io_uring"
                );
                continue;
            }
        }
        let start = std::time::Instant::now();
        let s = run_backend(backend, iters, seed)?;
        println!(
            "kill9 {backend}: seed {seed}: {} SIGKILLs, {} acknowledged appends checked, {} records recovered in total, {:.1}s",
            s.kills,
            s.acked,
            s.recovered_records,
            start.elapsed().as_secs_f64()
        );
        anyhow::ensure!(s.kills >= 100 || iters < 100, "fewer kills than asked");
        anyhow::ensure!(
            s.acked > 0,
            "the child never acknowledged an append: the test checked nothing"
        );
    }
    Ok(())
}
