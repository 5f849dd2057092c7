//! `sim` backend: an in-memory region that implements the crash model of [`crate::Region`]
//! exactly, so tests choose which unflushed 8-byte words survive a crash.
//!
//! The region keeps two images: `current` (what reads see) and `durable` (what survives for
//! sure). A write changes `current` and marks its words pending; `flush` marks pending words in
//! its range as flushed; `fence` copies flushed words into `durable`. A crash keeps `durable`
//! plus any chosen subset of the pending words (each word entirely old or entirely new).
//!
//! Simplification: a word written twice before it becomes durable can only crash to its
//! durable value or its latest value, not to the intermediate one. The log never rewrites a
//! word between its flush and its fence, so this loses nothing for the log.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::error::RegionError;
use crate::region::{Region, check_bounds};

/// Bytes per crash-atomic word.
pub const WORD: u64 = 8;

#[derive(Debug)]
struct SimState {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Words written since they were last made durable.
    pending: BTreeSet<u64>,
    /// Pending words covered by a flush since the last fence.
    flushed: BTreeSet<u64>,
    /// When set, a crash point is recorded after every region call.
    recording: Option<Vec<CrashPoint>>,
    counters: SimCounters,
}

/// Call counts, for tests that check the commit protocol's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// `write` calls.
    pub writes: u64,
    /// `flush` calls.
    pub flushes: u64,
    /// `fence` calls.
    pub fences: u64,
}

/// The medium at one instant: the durable image and the words that may or may not survive.
#[derive(Debug, Clone)]
pub struct CrashPoint {
    /// What survives for sure.
    pub durable: Vec<u8>,
    /// Pending words that differ from `durable`: (word index, new value).
    pub pending: Vec<(u64, [u8; 8])>,
}

impl CrashPoint {
    /// The image after a crash that persisted the pending words `keep(i)` selects
    /// (`i` indexes [`CrashPoint::pending`]).
    pub fn image(&self, mut keep: impl FnMut(usize) -> bool) -> Vec<u8> {
        let mut img = self.durable.clone();
        for (i, (w, val)) in self.pending.iter().enumerate() {
            if keep(i) {
                let at = (*w * WORD) as usize;
                img[at..at + 8].copy_from_slice(val);
            }
        }
        img
    }
}

/// The simulated region.
#[derive(Debug)]
pub struct SimRegion {
    state: Mutex<SimState>,
    len: u64,
}

impl SimRegion {
    /// A zero-filled region of `len_bytes` (rounded up to a multiple of 8).
    pub fn new(len_bytes: u64) -> Self {
        Self::from_image(vec![0; len_bytes.next_multiple_of(WORD) as usize])
    }

    /// A region whose current and durable contents are `image` (padded with zeros to a
    /// multiple of 8 bytes): what a machine sees after a crash.
    pub fn from_image(mut image: Vec<u8>) -> Self {
        image.resize((image.len() as u64).next_multiple_of(WORD) as usize, 0);
        let len = image.len() as u64;
        SimRegion {
            state: Mutex::new(SimState {
                current: image.clone(),
                durable: image,
                pending: BTreeSet::new(),
                flushed: BTreeSet::new(),
                recording: None,
                counters: SimCounters::default(),
            }),
            len,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A panic while holding the lock is a bug elsewhere; the state is still consistent
        // word by word, so keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current contents (what reads see).
    pub fn current_image(&self) -> Vec<u8> {
        self.lock().current.clone()
    }

    /// The durable contents (what a crash that persists nothing pending leaves).
    pub fn durable_image(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }

    /// The medium now, as a crash point.
    pub fn crash_point(&self) -> CrashPoint {
        self.lock().crash_point()
    }

    /// Simulates a crash: a new region holding the durable image plus the pending words that
    /// `keep(i)` selects (in [`CrashPoint::pending`] order).
    pub fn crash(&self, keep: impl FnMut(usize) -> bool) -> SimRegion {
        SimRegion::from_image(self.crash_point().image(keep))
    }

    /// Starts recording a [`CrashPoint`] after every `write`, `flush` and `fence`.
    pub fn start_recording(&self) {
        self.lock().recording = Some(Vec::new());
    }

    /// Stops recording and returns the crash points recorded since the last call.
    pub fn take_recording(&self) -> Vec<CrashPoint> {
        self.lock().recording.take().unwrap_or_default()
    }

    /// Call counts so far.
    pub fn counters(&self) -> SimCounters {
        self.lock().counters
    }

    /// Flips bit `bit` (0..8) of byte `offset` in both images, as media corruption would.
    pub fn flip_bit(&self, offset: u64, bit: u8) {
        assert!(
            offset < self.len && bit < 8,
            "flip outside region: {offset}/{bit}"
        );
        let mut s = self.lock();
        s.current[offset as usize] ^= 1 << bit;
        s.durable[offset as usize] ^= 1 << bit;
    }
}

impl SimState {
    fn crash_point(&self) -> CrashPoint {
        let pending = self
            .pending
            .iter()
            .filter_map(|&w| {
                let at = (w * WORD) as usize;
                let new = &self.current[at..at + 8];
                (new != &self.durable[at..at + 8]).then(|| {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(new);
                    (w, v)
                })
            })
            .collect();
        CrashPoint {
            durable: self.durable.clone(),
            pending,
        }
    }

    fn record(&mut self) {
        if self.recording.is_some() {
            let p = self.crash_point();
            if let Some(r) = self.recording.as_mut() {
                r.push(p);
            }
        }
    }
}

fn words(offset: u64, len: u64) -> std::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    offset / WORD..(offset + len).div_ceil(WORD)
}

impl Region for SimRegion {
    fn backend(&self) -> &'static str {
        "sim"
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        check_bounds(offset, buf.len() as u64, self.len)?;
        let s = self.lock();
        buf.copy_from_slice(&s.current[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), RegionError> {
        check_bounds(offset, data.len() as u64, self.len)?;
        let mut s = self.lock();
        s.counters.writes += 1;
        s.current[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        for w in words(offset, data.len() as u64) {
            s.pending.insert(w);
        }
        s.record();
        Ok(())
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        check_bounds(offset, len, self.len)?;
        let mut s = self.lock();
        s.counters.flushes += 1;
        let range = words(offset, len);
        let hit: Vec<u64> = s.pending.range(range).copied().collect();
        s.flushed.extend(hit);
        s.record();
        Ok(())
    }
    fn fence(&self) -> Result<(), RegionError> {
        let mut s = self.lock();
        s.counters.fences += 1;
        let flushed = std::mem::take(&mut s.flushed);
        for w in flushed {
            let at = (w * WORD) as usize;
            let (cur, dur) = (&s.current[at..at + 8].to_vec(), at);
            s.durable[dur..dur + 8].copy_from_slice(cur);
            s.pending.remove(&w);
        }
        s.record();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flushed_and_fenced_words_are_durable() {
        let r = SimRegion::new(64);
        r.write(0, &[1; 16]).unwrap();
        r.write(16, &[2; 8]).unwrap();
        r.flush(0, 8).unwrap();
        r.fence().unwrap();
        let d = r.durable_image();
        assert_eq!(&d[0..8], &[1; 8]);
        assert_eq!(&d[8..24], &[0; 16], "unflushed words are not durable");
        let p = r.crash_point();
        assert_eq!(
            p.pending.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
            [1, 2]
        );
        // A crash may keep any subset, word by word.
        let img = p.image(|i| i == 1);
        assert_eq!(&img[8..16], &[0; 8]);
        assert_eq!(&img[16..24], &[2; 8]);
        let c = r.crash(|_| true);
        assert_eq!(c.durable_image(), r.current_image());
    }

    #[test]
    fn fence_without_flush_persists_nothing() {
        let r = SimRegion::new(64);
        r.write(8, &[7; 8]).unwrap();
        r.fence().unwrap();
        assert_eq!(r.durable_image(), vec![0; 64]);
        assert_eq!(
            r.counters(),
            SimCounters {
                writes: 1,
                flushes: 0,
                fences: 1
            }
        );
    }

    #[test]
    fn unaligned_write_marks_every_word_it_touches() {
        let r = SimRegion::new(64);
        r.write(6, &[9; 4]).unwrap();
        let words: Vec<u64> = r.crash_point().pending.iter().map(|(w, _)| *w).collect();
        assert_eq!(words, [0, 1]);
    }
}
