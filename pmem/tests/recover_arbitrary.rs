//! Recovery from arbitrary and mutated bytes: an error, never a panic, never a wrong record.
//! (The same property as the cargo-fuzz target `fuzz/fuzz_targets/recover.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use keel_pmem::check::recover_image;
use keel_pmem::layout::DEFAULT_WINDOW;
use keel_pmem::layout::{
    GlobalMeta, LOG_AREA_OFF, LOG_META_OFF, LogMeta, REGION_OFF, RegionMeta, SELECTOR_COPY,
    SELECTOR_OFF,
};
use keel_pmem::{Log, LogError, LogOptions, SimRegion};
use proptest::prelude::*;

const REGION: u64 = 4096 + 1024;

/// A clean image and its records.
fn clean_image(payloads: &[Vec<u8>], release: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (img, kept, _) = clean_image_window(payloads, release, DEFAULT_WINDOW);
    (img, kept)
}

/// A clean image with this one-fence window, its records, and how many of them the metadata
/// tail covers.
fn clean_image_window(
    payloads: &[Vec<u8>],
    release: usize,
    window: u64,
) -> (Vec<u8>, Vec<Vec<u8>>, usize) {
    let log = Log::create_opts(SimRegion::new(REGION), 1, LogOptions { window }).unwrap();
    let mut pos = Vec::new();
    let mut kept = Vec::new();
    for p in payloads {
        match log.append(p) {
            Ok(q) => {
                pos.push(q);
                kept.push(p.clone());
            }
            Err(LogError::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let release = release.min(pos.len());
    if release > 0 {
        let to = pos.get(release).copied().unwrap_or(log.tail());
        log.advance_head(to).unwrap();
    }
    let meta_tail = keel_pmem::recover_region(log.region())
        .unwrap()
        .metadata_tail;
    let floor = log
        .iter()
        .filter(|r| r.as_ref().unwrap().pos < meta_tail)
        .count();
    (
        log.region().durable_image(),
        kept[release..].to_vec(),
        floor,
    )
}

/// Whatever recovery returns must be self-consistent: each record reads back by position with
/// the same payload, and the count matches.
fn assert_consistent(image: Vec<u8>) -> Option<Vec<Vec<u8>>> {
    let (log, rec, payloads) = recover_image(image).ok()?;
    assert_eq!(payloads.len() as u64, rec.records);
    let mut n = 0;
    for r in log.iter() {
        let r = r.unwrap();
        assert_eq!(log.read(r.pos).unwrap(), r);
        n += 1;
    }
    assert_eq!(n, rec.records);
    // The recovered log keeps working (or says why not).
    match log.append(b"x") {
        Ok(_) | Err(LogError::Full { .. }) | Err(LogError::PositionsExhausted { .. }) => {}
        Err(e) => panic!("append after recovery: {e}"),
    }
    Some(payloads)
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 0..20)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..6000)) {
        assert_consistent(bytes);
    }

    #[test]
    fn mutated_images_recover_unchanged_or_report_corruption(
        ps in payloads(),
        release in 0usize..5,
        strict in any::<bool>(),
        edits in prop::collection::vec((0u64..REGION, any::<u8>()), 1..12),
    ) {
        let window = if strict { 0 } else { DEFAULT_WINDOW };
        let (mut img, expect, floor) = clean_image_window(&ps, release, window);
        for (off, v) in edits {
            // Half the edits land in the metadata blocks, where they matter most.
            let off = if off % 2 == 0 { off % 320 } else { off };
            img[off as usize] = v;
        }
        if let Some(got) = assert_consistent(img) {
            // Window 0: unchanged or an error. One-fence window: also a prefix keeping every
            // record the metadata covers (damage to the last batch cannot be told from a
            // crash; damage to several batches can erase the marks proving earlier ones).
            let prefix = !strict
                && got.len() >= floor
                && got.len() <= expect.len()
                && got[..] == expect[..got.len()];
            prop_assert!(got == expect || prefix, "undetected change altered the recovered records");
        }
    }

    #[test]
    fn sealed_but_inconsistent_metadata_is_rejected_or_consistent(
        region_len in 0u64..20_000,
        capacity in 0u64..20_000,
        head in prop_oneof![0u64..4096, Just(u64::MAX - 7), any::<u64>()],
        len in prop_oneof![0u64..2048, any::<u64>()],
        selector in 0usize..2,
        key in any::<u64>(),
        generation in any::<u64>(),
        window in prop_oneof![Just(0u64), 0u64..4096, any::<u64>()],
        area in prop::collection::vec(any::<u8>(), 0..1024),
        ps in payloads(),
    ) {
        // Start from a valid log, then reseal its metadata with arbitrary values and valid
        // CRCs, so recovery's consistency checks (not just the CRCs) are exercised.
        let (mut img, _) = clean_image(&ps, 0);
        let put = |img: &mut Vec<u8>, off: u64, b: &[u8]| img[off as usize..off as usize + b.len()].copy_from_slice(b);
        put(&mut img, 0, bytemuck::bytes_of(&GlobalMeta::new(region_len)));
        put(&mut img, REGION_OFF, bytemuck::bytes_of(&RegionMeta::new(1, capacity, key)));
        put(&mut img, SELECTOR_OFF, &SELECTOR_COPY[selector].to_le_bytes());
        let head = head / 8 * 8;
        let tail = head.saturating_add(len) / 8 * 8;
        put(&mut img, LOG_META_OFF[selector], bytemuck::bytes_of(&LogMeta::new(head, tail, 1, generation, window)));
        let at = LOG_AREA_OFF as usize;
        img[at..at + area.len()].copy_from_slice(&area);
        assert_consistent(img);
    }
}

#[test]
fn recovery_of_a_clean_image_returns_the_records() {
    let ps: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; i as usize * 3]).collect();
    let (img, expect) = clean_image(&ps, 2);
    assert_eq!(assert_consistent(img), Some(expect));
}
