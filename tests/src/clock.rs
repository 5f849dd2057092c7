//! Simulated clocks: each replica's clock runs at its own rate, off true time by at most the
//! configured drift bound, and the replica learns time only through `Tick` events.

use crate::rng::SimRng;

/// One replica's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Clock {
    /// Nominal tick length, microseconds of local time.
    pub tick_us: u64,
    /// This clock's rate error: +0.01 runs 1% fast. Within `[-bound, +bound]`.
    pub drift: f64,
    /// True time of the next tick, microseconds.
    next_tick_true_us: f64,
    /// Ticks delivered so far.
    pub ticks: u64,
}

impl Clock {
    /// A clock with a drift drawn within `±drift_bound`, first ticking within one period of
    /// `now_us` (a random phase, so replicas do not tick in lock step).
    pub fn new(rng: &mut SimRng, now_us: u64, tick_us: u64, drift_bound: f64) -> Self {
        assert!(tick_us > 0, "clock: zero tick");
        assert!(
            (0.0..0.5).contains(&drift_bound),
            "clock: drift bound {drift_bound} out of range"
        );
        let drift = rng.uniform(-drift_bound, drift_bound);
        let period = tick_us as f64 / (1.0 + drift);
        let phase = rng.uniform(0.0, period);
        Clock {
            tick_us,
            drift,
            next_tick_true_us: now_us as f64 + phase,
            ticks: 0,
        }
    }

    /// True time length of one tick of this clock, microseconds.
    pub fn period_true_us(&self) -> f64 {
        self.tick_us as f64 / (1.0 + self.drift)
    }

    /// True time (rounded up) of the next tick.
    pub fn next_tick_us(&self) -> u64 {
        self.next_tick_true_us.ceil() as u64
    }

    /// Consumes one tick that is due at `now_us`; returns false when none is due.
    pub fn take_tick(&mut self, now_us: u64) -> bool {
        if self.next_tick_us() > now_us {
            return false;
        }
        self.next_tick_true_us += self.period_true_us();
        self.ticks += 1;
        true
    }

    /// Restarts the clock's phase after a crash (the drift stays: it is the hardware's).
    pub fn restart(&mut self, now_us: u64) {
        self.next_tick_true_us = now_us as f64 + self.period_true_us();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drifting_clock_ticks_within_its_bound() {
        let mut rng = SimRng::new(3);
        for _ in 0..50 {
            let mut c = Clock::new(&mut rng, 0, 1000, 0.05);
            assert!(c.drift.abs() <= 0.05);
            let mut t = 0;
            while c.ticks < 1000 {
                t = c.next_tick_us();
                assert!(c.take_tick(t));
            }
            // 1000 ticks of 1000 us local time take 1e6 / (1 + drift) true us, plus the phase.
            let ideal = 1_000_000.0 / (1.0 + c.drift);
            assert!(
                (t as f64) <= ideal + 1001.0 && (t as f64) >= ideal - 1001.0,
                "t={t}"
            );
            assert!(!c.take_tick(t), "no second tick at the same instant");
        }
    }
}
