//! The conformance suite every backend passes. `conformance_suite!(name, || fixture)` expands
//! to one `#[test]` per case; a fixture that cannot run here returns `Err(reason)` and the
//! tests print `skipped: <reason>` and pass.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns
#![allow(dead_code)]

use std::sync::Arc;

use keel_pmem::{Location, Log, LogError, Region, RegionError};

/// Opens the backend's region of `len` bytes; called again to reopen the same medium.
pub type Opener = Box<dyn FnMut(u64) -> Result<Box<dyn Region>, RegionError>>;

pub fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 300) as usize;
    (0..len)
        .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8))
        .collect()
}

fn collect<R: Region>(log: &Log<R>) -> Vec<Vec<u8>> {
    log.iter().map(|r| r.unwrap().payload).collect()
}

pub fn region_contract(mut open: Opener) {
    let r = open(8192).unwrap();
    assert!(r.len() >= 8192);
    r.write(100, b"hello region").unwrap();
    let mut buf = [0u8; 12];
    r.read(100, &mut buf).unwrap();
    assert_eq!(
        &buf, b"hello region",
        "write must be visible to read at once"
    );
    r.flush(100, 12).unwrap();
    r.fence().unwrap();
    assert!(matches!(
        r.write(r.len() - 4, &[0; 8]),
        Err(RegionError::OutOfBounds { .. })
    ));
    assert!(matches!(
        r.read(u64::MAX - 2, &mut buf),
        Err(RegionError::OutOfBounds { .. })
    ));
    // Concurrent writes to disjoint ranges.
    let r: Arc<dyn Region> = Arc::from(r);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let r = Arc::clone(&r);
            s.spawn(move || {
                for i in 0..16u64 {
                    r.write(1024 + (t * 16 + i) * 64, &[t as u8 + 1; 64])
                        .unwrap();
                }
            });
        }
    });
    r.flush(1024, 4096).unwrap();
    r.fence().unwrap();
    for t in 0..4u64 {
        let mut b = [0u8; 64];
        r.read(1024 + (t * 16 + 5) * 64, &mut b).unwrap();
        assert_eq!(b, [t as u8 + 1; 64]);
    }
    drop(r);
    // Durable data survives reopening.
    let r = open(0).unwrap();
    let mut b = [0u8; 12];
    r.read(100, &mut b).unwrap();
    assert_eq!(&b, b"hello region");
}

pub fn append_read_iter_and_reopen(mut open: Opener) {
    let log = Log::create(open(1 << 16).unwrap(), 42).unwrap();
    let mut positions = Vec::new();
    for i in 0..40 {
        positions.push(log.append(&payload(i)).unwrap());
    }
    let batch: Vec<Vec<u8>> = (40..50).map(payload).collect();
    let refs: Vec<&[u8]> = batch.iter().map(|v| v.as_slice()).collect();
    positions.extend(log.append_batch(&refs).unwrap());
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions increase"
    );
    for (i, &pos) in positions.iter().enumerate() {
        assert_eq!(log.read(pos).unwrap().payload, payload(i as u64));
    }
    let all: Vec<Vec<u8>> = (0..50).map(payload).collect();
    assert_eq!(collect(&log), all);
    let tail = log.tail();
    drop(log);
    let (log, rec) = Log::open(open(0).unwrap()).unwrap();
    assert_eq!(
        (rec.head, rec.tail, rec.records, rec.log_id),
        (0, tail, 50, 42)
    );
    assert_eq!(collect(&log), all);
    assert!(matches!(
        log.read(positions[3] + 8),
        Err(LogError::BadPosition { .. })
    ));
    assert!(matches!(log.read(tail), Err(LogError::BadPosition { .. })));
}

pub fn buffered_appends_become_durable_on_sync(mut open: Opener) {
    let log = Log::create(open(1 << 16).unwrap(), 1).unwrap();
    let a = log.append_buffered(b"one").unwrap();
    let b = log.append_buffered(b"two").unwrap();
    assert_eq!(log.tail(), 0, "not durable before sync");
    assert!(log.read(a).is_err());
    let rep = log.sync().unwrap();
    assert!(rep.tail > b);
    assert_eq!(log.read(b).unwrap().payload, b"two");
    drop(log);
    let (log, rec) = Log::open(open(0).unwrap()).unwrap();
    assert_eq!(rec.records, 2);
    assert_eq!(collect(&log), [b"one".to_vec(), b"two".to_vec()]);
}

pub fn full_log_errors_and_released_space_is_reused(mut open: Opener) {
    let log = Log::create(open(4096 + 1024).unwrap(), 3).unwrap();
    assert_eq!(log.capacity(), 1024);
    let mut live = std::collections::VecDeque::new();
    let mut next = 0u64;
    let mut fulls = 0;
    // Many laps around the 1 KiB circle.
    for round in 0..200u64 {
        let p = payload(next % 7 + round % 3);
        match log.append(&p) {
            Ok(pos) => {
                live.push_back((pos, p));
                next += 1;
            }
            Err(LogError::Full {
                needed_bytes,
                free_bytes,
                capacity_bytes,
            }) => {
                assert!(needed_bytes > free_bytes && capacity_bytes == 1024);
                fulls += 1;
                // Release the oldest half.
                let keep = live.len() / 2;
                while live.len() > keep {
                    live.pop_front();
                }
                let head = live.front().map(|(pos, _)| *pos).unwrap_or(log.tail());
                log.advance_head(head).unwrap();
                assert_eq!(log.head(), head);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(
        fulls >= 5,
        "the test must fill the log repeatedly ({fulls})"
    );
    assert!(log.tail() > 4 * 1024, "the log must wrap several times");
    let expect: Vec<Vec<u8>> = live.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(collect(&log), expect);
    drop(log);
    let (log, _) = Log::open(open(0).unwrap()).unwrap();
    assert_eq!(collect(&log), expect);
    assert!(matches!(
        log.append(&vec![0u8; 2000]),
        Err(LogError::PayloadTooLarge { .. })
    ));
}

pub fn advance_head_checks_its_position(mut open: Opener) {
    let log = Log::create(open(1 << 14).unwrap(), 3).unwrap();
    let a = log.append(b"aaaaaaaaaaaaaaaaaaaa").unwrap();
    let b = log.append(b"bb").unwrap();
    assert!(matches!(
        log.advance_head(a + 8),
        Err(LogError::BadPosition { .. })
    ));
    assert!(matches!(
        log.advance_head(log.tail() + 8),
        Err(LogError::BadPosition { .. })
    ));
    log.advance_head(b).unwrap();
    assert!(matches!(log.read(a), Err(LogError::BadPosition { .. })));
    log.advance_head(a).unwrap(); // already released: no-op
    assert_eq!(log.head(), b);
    log.advance_head(log.tail()).unwrap();
    assert_eq!(log.iter().count(), 0);
    drop(log);
    let (_, rec) = Log::open(open(0).unwrap()).unwrap();
    assert_eq!((rec.records, rec.head), (0, rec.tail));
}

pub fn concurrent_appenders_share_commits(mut open: Opener) {
    let log = Arc::new(Log::create(open(1 << 20).unwrap(), 5).unwrap());
    let threads = 8u64;
    let per = 40u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = Arc::clone(&log);
            s.spawn(move || {
                for i in 0..per {
                    let mut p = vec![t as u8, i as u8];
                    p.extend(payload(t * 1000 + i));
                    let pos = log.append(&p).unwrap();
                    assert_eq!(log.read(pos).unwrap().payload, p, "durable on return");
                }
            });
        }
    });
    let stats = log.stats();
    assert_eq!(stats.records_appended, threads * per);
    assert!(stats.commits <= threads * per);
    println!(
        "{} appends from {threads} threads took {} commits",
        threads * per,
        stats.commits
    );
    let log = Arc::into_inner(log).unwrap();
    drop(log);
    let (log, rec) = Log::open(open(0).unwrap()).unwrap();
    assert_eq!(rec.records, threads * per);
    let mut next = vec![0u8; threads as usize];
    for r in log.iter() {
        let p = r.unwrap().payload;
        let (t, i) = (p[0] as usize, p[1]);
        assert_eq!(i, next[t], "per-thread order");
        next[t] += 1;
    }
}

/// Flips one payload bit of the record at `pos` on the medium.
fn damage(region: &dyn Region, pos: u64) {
    let off = keel_pmem::layout::LOG_AREA_OFF + pos + 16 + 3;
    let mut b = [0u8; 1];
    region.read(off, &mut b).unwrap();
    region.write(off, &[b[0] ^ 0x40]).unwrap();
    region.flush(off, 1).unwrap();
    region.fence().unwrap();
}

pub fn damaged_record_is_reported_where(mut open: Opener) {
    for window in [keel_pmem::layout::DEFAULT_WINDOW, 0] {
        for victim in 0..3 {
            let opts = keel_pmem::LogOptions { window };
            let log = Log::create_opts(open(1 << 14).unwrap(), 8, opts).unwrap();
            let pos: Vec<u64> = (0..3)
                .map(|i| log.append(format!("record number {i}").as_bytes()).unwrap())
                .collect();
            let region = log.into_region();
            damage(&region, pos[victim]);
            drop(region);
            match Log::open(open(0).unwrap()) {
                Err(LogError::Corrupt {
                    location, offset, ..
                }) => {
                    assert_eq!(location, Location::RecordPayload { pos: pos[victim] });
                    assert_eq!(offset, keel_pmem::layout::LOG_AREA_OFF + pos[victim]);
                }
                // The one case one fence cannot tell from a crash in its commit: the last
                // one-fence batch. It is dropped and the drop is reported.
                Ok((log, rec)) if window > 0 && victim == 2 => {
                    assert_eq!(rec.discarded_batch_at, Some(pos[2]));
                    assert_eq!(log.iter().count(), 2);
                }
                other => panic!(
                    "window {window} victim {victim}: expected corruption, got {:?}",
                    other.map(|(_, r)| r)
                ),
            }
        }
    }
}

pub fn unformatted_region_is_not_a_log(mut open: Opener) {
    let r = open(1 << 14).unwrap();
    assert!(matches!(Log::open(r), Err(LogError::NotFormatted)));
}

#[macro_export]
macro_rules! conformance_suite {
    ($fixture:expr) => {
        $crate::conformance_suite!(@cases $fixture;
            region_contract,
            append_read_iter_and_reopen,
            buffered_appends_become_durable_on_sync,
            full_log_errors_and_released_space_is_reused,
            advance_head_checks_its_position,
            concurrent_appenders_share_commits,
            damaged_record_is_reported_where,
            unformatted_region_is_not_a_log);
    };
    (@cases $fixture:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let fixture: Result<$crate::common::Opener, String> = $fixture;
                match fixture {
                    Ok(open) => $crate::common::$case(open),
                    Err(reason) => eprintln!("{}", if reason.starts_with("skipped") { reason } else { format!("skipped: {reason}") }),
                }
            }
        )*
    };
}
