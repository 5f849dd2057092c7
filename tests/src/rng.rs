//! The one random source of a simulation run: a ChaCha generator seeded from the run's seed.
//!
//! Every choice a run makes (cluster size, fault rates, which message is lost, which replica
//! crashes) is drawn from one `SimRng`, so a seed reproduces a run exactly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded generator with the few helpers the simulator needs.
#[derive(Debug, Clone)]
pub struct SimRng {
    inner: ChaCha8Rng,
}

impl SimRng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A child generator with its own stream, derived from this one (for a replica's own RNG
    /// seed, say), so that adding draws in one place does not shift another's stream.
    pub fn fork(&mut self) -> SimRng {
        SimRng::new(self.next_u64())
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.random()
    }

    /// True with probability `p` (clamped to 0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        self.inner.random::<f64>() < p
    }

    /// A uniform integer in `lo..hi` (`lo` when the range is empty).
    pub fn below(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            self.inner.random_range(lo..hi)
        }
    }

    /// A uniform index into a collection of `len` items. Panics on `len == 0`.
    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "SimRng::index on an empty collection");
        self.inner.random_range(0..len)
    }

    /// A uniform float in `lo..hi`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        if hi <= lo {
            lo
        } else {
            self.inner.random_range(lo..hi)
        }
    }

    /// One item of a non-empty slice, chosen uniformly.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_the_same_stream_and_different_seeds_differ() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        let mut c = SimRng::new(8);
        let xa: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..16).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
    }

    #[test]
    fn helpers_stay_in_their_ranges() {
        let mut r = SimRng::new(1);
        for _ in 0..1000 {
            let x = r.below(5, 9);
            assert!((5..9).contains(&x));
            assert!(r.index(3) < 3);
            let f = r.uniform(-1.0, 1.0);
            assert!((-1.0..1.0).contains(&f));
        }
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
        assert_eq!(r.below(4, 4), 4);
    }
}
