//! The crash checker over the `sim` region: exhaustive crash states for short traces, sampled
//! ones for long traces, and bit flips. Prints how many states it covered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use keel_pmem::check::{CheckConfig, CheckReport, Op, SplitMix, check_bit_flips, check_trace};
use keel_pmem::{Log, LogOptions, SimRegion};

/// The windows every check runs with: two fences for every commit (0), one fence with a
/// window smaller than the log area (so the first commit past it rewrites the metadata), and
/// the default (larger than these small log areas).
const WINDOWS: [u64; 3] = [0, 96, keel_pmem::layout::DEFAULT_WINDOW];

fn cfg(region_bytes: u64, seed: u64) -> CheckConfig {
    CheckConfig {
        region_bytes,
        exhaustive_max_words: 14,
        samples_per_point: 24,
        seed,
        append_after_recovery: true,
        window: keel_pmem::layout::DEFAULT_WINDOW,
    }
}

fn p(n: usize, tag: u8) -> Vec<u8> {
    (0..n).map(|i| tag.wrapping_add(i as u8)).collect()
}

#[test]
fn crash_states_of_short_traces_are_all_before_or_after_the_op_exhaustively() {
    let traces: Vec<Vec<Op>> = vec![
        vec![Op::Append(p(5, 1))],
        vec![
            Op::Append(p(0, 0)),
            Op::Append(p(8, 2)),
            Op::Append(p(13, 3)),
        ],
        vec![
            Op::Batch(vec![p(3, 4), p(9, 5)]),
            Op::Release(1),
            Op::Append(p(7, 6)),
        ],
        vec![
            Op::Append(p(16, 7)),
            Op::Release(1),
            Op::Release(0),
            Op::Append(p(1, 8)),
        ],
        // The largest exhaustive point: two records and their mark, 13 pending words.
        vec![Op::Batch(vec![p(16, 9), p(8, 10)])],
        // Wrap around a 128-byte log area with releases in between.
        (0..12)
            .flat_map(|i| [Op::Append(p(2 + i % 6, i as u8)), Op::Release(1)])
            .collect(),
    ];
    let mut total = CheckReport::default();
    for window in WINDOWS {
        for (i, t) in traces.iter().enumerate() {
            let mut c = cfg(4096 + 128, i as u64);
            c.window = window;
            let r = check_trace(t, &c).unwrap_or_else(|e| panic!("window {window}: {e}"));
            assert_eq!(r.sampled_points, 0, "trace {i} should be exhaustive: {r:?}");
            assert!(r.states > 0);
            total.add(&r);
        }
    }
    println!(
        "crash checker, exhaustive: {} ops, {} crash points, {} crash states (max {} pending words)",
        total.ops, total.crash_points, total.states, total.max_pending_words
    );
    assert_eq!(total.exhaustive_points, total.crash_points);
}

#[test]
fn crash_states_of_long_random_traces_are_sampled_and_hold_the_prefix() {
    let seed = std::env::var("KEEL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let ops_n: usize = std::env::var("KEEL_CRASH_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let mut rng = SplitMix::new(seed);
    let mut total = CheckReport::default();
    for t in 0..3u64 {
        let window = WINDOWS[t as usize];
        let ops: Vec<Op> = (0..ops_n)
            .map(|_| match rng.below(10) {
                0..=4 => Op::Append(p(rng.below(90) as usize, rng.below(256) as u8)),
                5..=6 => Op::Batch(
                    (0..1 + rng.below(4))
                        .map(|_| p(rng.below(40) as usize, rng.below(256) as u8))
                        .collect(),
                ),
                _ => Op::Release(rng.below(4) as usize),
            })
            .collect();
        let mut c = cfg(4096 + 512, seed ^ t);
        c.append_after_recovery = false;
        c.exhaustive_max_words = 8;
        c.samples_per_point = 32;
        c.window = window;
        let r = check_trace(&ops, &c).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        total.add(&r);
    }
    println!(
        "crash checker, sampled (seed {seed:#x}): {} ops, {} crash points ({} exhaustive, {} sampled x {}), {} crash states",
        total.ops,
        total.crash_points,
        total.exhaustive_points,
        total.sampled_points,
        32 + 2,
        total.states
    );
    assert!(
        total.sampled_points > 0,
        "long traces should have sampled crash points"
    );
}

fn built_image(wrap: bool, window: u64) -> Vec<u8> {
    let log = Log::create_opts(SimRegion::new(4096 + 512), 9, LogOptions { window }).unwrap();
    if wrap {
        for i in 0..10u8 {
            let pos = log.append(&p(30 + i as usize, i)).unwrap();
            if i % 2 == 1 {
                log.advance_head(pos).unwrap();
            }
        }
    }
    log.append_batch(&[&p(5, 100), &p(0, 0), &p(17, 200)])
        .unwrap();
    log.append(&p(11, 50)).unwrap();
    log.region().durable_image()
}

#[test]
fn every_single_bit_flip_in_metadata_and_records_is_detected_or_harmless() {
    let mut single = 0;
    let mut multi = 0;
    let mut dropped = 0;
    for (i, (wrap, window)) in [false, true]
        .into_iter()
        .flat_map(|w| WINDOWS.map(|n| (w, n)))
        .enumerate()
    {
        let r = check_bit_flips(&built_image(wrap, window), 64, i as u64)
            .unwrap_or_else(|e| panic!("window {window} wrap {wrap}: {e}"));
        assert!(r.detected > 0 && r.harmless > 0);
        if window == 0 {
            assert_eq!(r.discarded_last_batch, 0, "window 0 detects every flip");
        }
        single += r.single;
        multi += r.multi;
        dropped += r.discarded_last_batch;
    }
    println!(
        "bit flips: {single} single-bit flips (exhaustive), {multi} multi-bit flip sets (sampled); \
         {dropped} of them hit the last one-fence batch and ended the log before it (reported)"
    );
}
