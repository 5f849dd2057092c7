//! The crash checker: runs a trace of log operations on a [`SimRegion`], recovers every crash
//! state it can reach and checks the result, and injects bit flips.
//!
//! What is checked for every crash state: recovery succeeds (a crash alone is never reported
//! as corruption), and the recovered log holds exactly the records of the state before or the
//! state after the operation in flight: the same head and the same payloads in the same order.
//! Since an operation's state before includes every earlier acknowledged append, this is the
//! prefix-with-every-acknowledged-append property, plus atomicity of batches and head advances.
//! The recovered log must then accept one more append and recover it.
//!
//! Exhaustive vs sampled: at a crash point with `k` pending 8-byte words, all `2^k` subsets are
//! checked when `k <= exhaustive_max_words`; otherwise `samples_per_point` seeded random subsets
//! plus the empty and the full subset.

use std::sync::Arc;

use crate::error::{Location, LogError};
use crate::layout::{GLOBAL_OFF, LOG_AREA_OFF, LOG_META_OFF, REGION_OFF, SELECTOR_OFF};
use crate::log::{Log, LogOptions, Recovered};
use crate::sim::SimRegion;

/// One operation of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `append(payload)`.
    Append(Vec<u8>),
    /// `append_batch(payloads)`.
    Batch(Vec<Vec<u8>>),
    /// `advance_head` past this many more of the oldest live records (clamped).
    Release(usize),
}

/// Checker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckConfig {
    /// Size of the simulated region (4 KiB of it is metadata).
    pub region_bytes: u64,
    /// Crash points with at most this many pending words are enumerated exhaustively.
    pub exhaustive_max_words: usize,
    /// Random subsets checked at larger crash points.
    pub samples_per_point: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// Also append and recover once more after each recovered crash state.
    pub append_after_recovery: bool,
    /// The log's one-fence window ([`LogOptions::window`]); 0 checks the two-fence protocol.
    pub window: u64,
}

/// What a check covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Operations run.
    pub ops: u64,
    /// Crash points (one after every region call).
    pub crash_points: u64,
    /// Crash points enumerated exhaustively.
    pub exhaustive_points: u64,
    /// Crash points sampled.
    pub sampled_points: u64,
    /// Crash states recovered and checked.
    pub states: u64,
    /// Largest number of pending words seen at one crash point.
    pub max_pending_words: u64,
}

impl CheckReport {
    /// Adds another report's counts.
    pub fn add(&mut self, o: &CheckReport) {
        self.ops += o.ops;
        self.crash_points += o.crash_points;
        self.exhaustive_points += o.exhaustive_points;
        self.sampled_points += o.sampled_points;
        self.states += o.states;
        self.max_pending_words = self.max_pending_words.max(o.max_pending_words);
    }
}

/// A small seeded generator (splitmix64) so the checker needs no extra dependency.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }
}

/// The model: all payloads appended so far, their positions, and how many are released.
#[derive(Debug, Clone, Default)]
struct Model {
    payloads: Vec<Vec<u8>>,
    positions: Vec<u64>,
    released: usize,
    tail: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    head: u64,
    live: std::ops::Range<usize>,
}

impl Model {
    fn expect(&self) -> Expect {
        Expect {
            head: self
                .positions
                .get(self.released)
                .copied()
                .unwrap_or(self.tail),
            live: self.released..self.payloads.len(),
        }
    }
}

/// A recovered image: the log, what recovery reported, and every live payload in order.
pub type RecoveredImage = (Log<SimRegion>, Recovered, Vec<Vec<u8>>);

/// Recovers `image` and returns the log, the recovery report and the payloads, or the error.
pub fn recover_image(image: Vec<u8>) -> Result<RecoveredImage, LogError> {
    let (log, rec) = Log::open(SimRegion::from_image(image))?;
    let payloads = log
        .iter()
        .map(|r| r.map(|r| r.payload))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((log, rec, payloads))
}

fn check_state(
    image: Vec<u8>,
    model: &Model,
    before: &Expect,
    after: &Expect,
    append_after: bool,
) -> Result<(), String> {
    let (log, rec, got) = recover_image(image).map_err(|e| format!("recovery failed: {e}"))?;
    let matches = |e: &Expect| rec.head == e.head && got[..] == model.payloads[e.live.clone()];
    if !matches(before) && !matches(after) {
        return Err(format!(
            "recovered head {} with {} records; expected {:?} or {:?}",
            rec.head,
            got.len(),
            before,
            after
        ));
    }
    if append_after {
        let extra = b"after-crash".to_vec();
        match log.append(&extra) {
            Ok(_) | Err(LogError::Full { .. }) => {}
            Err(e) => return Err(format!("append after recovery failed: {e}")),
        }
        let img = log.region().durable_image();
        let (_, _, again) =
            recover_image(img).map_err(|e| format!("second recovery failed: {e}"))?;
        if again.len() < got.len() || again[..got.len()] != got[..] {
            return Err("second recovery lost records".to_string());
        }
    }
    Ok(())
}

/// Runs `ops` and checks every crash state (see the module docs). Returns the counts, or a
/// description of the first violation (with the seed, op and crash point).
pub fn check_trace(ops: &[Op], cfg: &CheckConfig) -> Result<CheckReport, String> {
    let region = Arc::new(SimRegion::new(cfg.region_bytes));
    let opts = LogOptions { window: cfg.window };
    let log = Log::create_opts(Arc::clone(&region), 1, opts).map_err(|e| format!("create: {e}"))?;
    let mut model = Model::default();
    let mut rng = SplitMix::new(cfg.seed);
    let mut report = CheckReport::default();
    for (op_index, op) in ops.iter().enumerate() {
        let before = model.expect();
        region.start_recording();
        match op {
            Op::Append(p) => match log.append(p) {
                Ok(pos) => {
                    model.payloads.push(p.clone());
                    model.positions.push(pos);
                }
                Err(LogError::Full { .. }) => {}
                Err(e) => return Err(format!("op {op_index}: append: {e}")),
            },
            Op::Batch(ps) => {
                let refs: Vec<&[u8]> = ps.iter().map(|p| p.as_slice()).collect();
                match log.append_batch(&refs) {
                    Ok(positions) => {
                        model.payloads.extend(ps.iter().cloned());
                        model.positions.extend(positions);
                    }
                    Err(LogError::Full { .. }) => {}
                    Err(e) => return Err(format!("op {op_index}: batch: {e}")),
                }
            }
            Op::Release(n) => {
                let target = (model.released + n).min(model.payloads.len());
                let pos = model.positions.get(target).copied().unwrap_or(log.tail());
                log.advance_head(pos)
                    .map_err(|e| format!("op {op_index}: advance_head: {e}"))?;
                model.released = target;
            }
        }
        model.tail = log.tail();
        let after = model.expect();
        let points = region.take_recording();
        report.ops += 1;
        for (pi, point) in points.iter().enumerate() {
            report.crash_points += 1;
            let k = point.pending.len();
            report.max_pending_words = report.max_pending_words.max(k as u64);
            let fail = |mask: &str, e: String| {
                format!(
                    "seed {:#x} op {op_index} ({op:?}) crash point {pi} pending {k} subset {mask}: {e}",
                    cfg.seed
                )
            };
            if k <= cfg.exhaustive_max_words {
                report.exhaustive_points += 1;
                for mask in 0u64..(1u64 << k) {
                    let img = point.image(|i| mask & (1 << i) != 0);
                    check_state(img, &model, &before, &after, cfg.append_after_recovery)
                        .map_err(|e| fail(&format!("{mask:#x}"), e))?;
                    report.states += 1;
                }
            } else {
                report.sampled_points += 1;
                for s in 0..cfg.samples_per_point + 2 {
                    let keep: Vec<bool> = (0..k)
                        .map(|_| match s {
                            0 => false,
                            1 => true,
                            _ => rng.next_u64() & 1 == 1,
                        })
                        .collect();
                    let img = point.image(|i| keep[i]);
                    check_state(img, &model, &before, &after, cfg.append_after_recovery)
                        .map_err(|e| fail(&format!("sample {s}"), e))?;
                    report.states += 1;
                }
            }
        }
    }
    Ok(report)
}

/// What a bit-flip run covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlipReport {
    /// Single-bit flips tried.
    pub single: u64,
    /// Multi-bit flip sets tried.
    pub multi: u64,
    /// Flips reported as corruption at the right structure.
    pub detected: u64,
    /// Flips in bytes that are not live (inactive copy, unused space): log unchanged.
    pub harmless: u64,
    /// Flips in the last one-fence batch that ended the log before that batch, reported in
    /// [`Recovered::discarded_batch_at`] (the one case one fence cannot tell from a crash).
    pub discarded_last_batch: u64,
}

/// A live structure of a log image and where corruption in it must be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Structure {
    /// First byte in the region.
    pub offset: u64,
    /// Length in bytes (a record is one structure; physical bytes may wrap, see `wrap`).
    pub len: u64,
    /// The location recovery must report.
    pub location: Location,
    /// Part of the last batch past the metadata tail: damage there may instead end the log
    /// before that batch, reported in [`Recovered::discarded_batch_at`] (see [`crate::log`]).
    pub last_batch: bool,
}

/// Lists every structure of `image` that a flip must be detected in: global and region
/// metadata, selector, live metadata copy, and every live record and commit mark (header,
/// payload, padding). Also returns the non-live metadata bytes (where flips must be harmless).
pub fn live_structures(
    image: &[u8],
) -> Result<(Vec<Structure>, Vec<std::ops::Range<u64>>), LogError> {
    let region = SimRegion::from_image(image.to_vec());
    let (rec, active, entries) = crate::log::scan_layout(&region)?;
    let meta = |offset, len, location| Structure {
        offset,
        len,
        location,
        last_batch: false,
    };
    let mut out = vec![
        meta(GLOBAL_OFF, 64, Location::GlobalMetadata),
        meta(REGION_OFF, 64, Location::RegionMetadata),
        meta(SELECTOR_OFF, 8, Location::Selector),
        meta(
            LOG_META_OFF[active],
            META_LEN,
            Location::LogMetadata { copy: active as u8 },
        ),
    ];
    for e in entries {
        let in_last = rec.last_batch_start.is_some_and(|b| e.pos >= b);
        out.push(Structure {
            offset: LOG_AREA_OFF + e.pos % rec.capacity,
            len: e.next - e.pos,
            location: if e.mark {
                Location::CommitMark { pos: e.pos }
            } else {
                Location::RecordHeader { pos: e.pos }
            },
            last_batch: in_last,
        });
    }
    let inactive = LOG_META_OFF[active ^ 1];
    let harmless = vec![
        SELECTOR_OFF + 8..LOG_META_OFF[0],
        inactive..inactive + META_LEN,
    ];
    Ok((out, harmless))
}

const META_LEN: u64 = size_of::<crate::layout::LogMeta>() as u64;

fn entry_pos(l: Location) -> Option<u64> {
    match l {
        Location::RecordHeader { pos }
        | Location::RecordPayload { pos }
        | Location::CommitMark { pos } => Some(pos),
        _ => None,
    }
}

/// A record or mark may be reported through any of its parts (header, payload, mark).
fn same_location(expected: Location, got: Location) -> bool {
    match (entry_pos(expected), entry_pos(got)) {
        (Some(a), Some(b)) => a == b,
        _ => expected == got,
    }
}

/// Flips bits in `image` (a recovered-clean log) and checks each result: a flip inside a live
/// structure must be reported as corruption of that structure; a flip in non-live metadata
/// bytes must leave the recovered log unchanged. Every single-bit flip is tried; for each
/// structure `multi_per_structure` random sets of 2 to 8 flips inside it are sampled.
pub fn check_bit_flips(
    image: &[u8],
    multi_per_structure: usize,
    seed: u64,
) -> Result<FlipReport, String> {
    let (_, clean_rec, clean) =
        recover_image(image.to_vec()).map_err(|e| format!("clean image does not recover: {e}"))?;
    let (structures, harmless) = live_structures(image).map_err(|e| e.to_string())?;
    let capacity = clean_rec.capacity;
    let mut report = FlipReport::default();
    let mut rng = SplitMix::new(seed);
    // Physical byte of structure byte `i` (records may wrap around the log area).
    let phys = |s: &Structure, i: u64| -> u64 {
        if s.offset >= LOG_AREA_OFF {
            LOG_AREA_OFF + (s.offset - LOG_AREA_OFF + i) % capacity
        } else {
            s.offset + i
        }
    };
    // Damage in the last one-fence batch may end the log before it, said out loud.
    let without_last: Option<(u64, usize)> = match clean_rec.last_batch_start {
        Some(b) => {
            let region = SimRegion::from_image(image.to_vec());
            let (_, _, entries) = crate::log::scan_layout(&region).map_err(|e| e.to_string())?;
            Some((b, entries.iter().filter(|e| !e.mark && e.pos < b).count()))
        }
        None => None,
    };
    let expect_detected = |img: Vec<u8>, s: &Structure, what: &str| -> Result<bool, String> {
        match recover_image(img) {
            Err(LogError::Corrupt { location, .. }) if same_location(s.location, location) => {
                Ok(false)
            }
            Ok((_, rec, got))
                if s.last_batch
                    && without_last.is_some_and(|(b, n)| {
                        rec.discarded_batch_at == Some(b) && rec.tail == b && got[..] == clean[..n]
                    }) =>
            {
                Ok(true)
            }
            Err(e) => Err(format!("{what} in {:?}: wrong error {e}", s.location)),
            Ok((_, _, got)) => Err(format!(
                "{what} in {:?} went undetected ({} records recovered)",
                s.location,
                got.len()
            )),
        }
    };
    for s in &structures {
        for i in 0..s.len {
            for bit in 0..8 {
                let mut img = image.to_vec();
                img[phys(s, i) as usize] ^= 1 << bit;
                let dropped = expect_detected(img, s, &format!("flip of byte {i} bit {bit}"))?;
                report.single += 1;
                report.detected += u64::from(!dropped);
                report.discarded_last_batch += u64::from(dropped);
            }
        }
        for m in 0..multi_per_structure {
            let n = 2 + rng.below(7);
            let mut img = image.to_vec();
            let mut flipped = std::collections::BTreeSet::new();
            while (flipped.len() as u64) < n {
                flipped.insert((rng.below(s.len), rng.below(8) as u8));
            }
            for &(i, bit) in &flipped {
                img[phys(s, i) as usize] ^= 1 << bit;
            }
            let dropped = expect_detected(img, s, &format!("multi-flip {m} {flipped:?}"))?;
            report.multi += 1;
            report.detected += u64::from(!dropped);
            report.discarded_last_batch += u64::from(dropped);
        }
    }
    for r in harmless {
        for off in r {
            for bit in 0..8 {
                let mut img = image.to_vec();
                img[off as usize] ^= 1 << bit;
                match recover_image(img) {
                    Ok((_, rec, got)) if rec == clean_rec && got == clean => {}
                    Ok(_) => return Err(format!("flip at {off} bit {bit} changed the log")),
                    Err(e) => return Err(format!("flip at {off} bit {bit} (not live): {e}")),
                }
                report.single += 1;
                report.harmless += 1;
            }
        }
    }
    Ok(report)
}
