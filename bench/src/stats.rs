//! Latency recording and the summary every figure is reported with.
//!
//! Latencies are recorded in nanoseconds into an [`hdrhistogram::Histogram`] with 3 significant
//! digits (values below 2048 ns are exact; above, the error is under 0.1%) and a bound of one
//! hour; larger values saturate at the bound rather than being lost.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram records (one hour, in nanoseconds); larger values saturate.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// Significant decimal digits the histograms keep.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Errors from building latency histograms.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The histogram could not be created with the fixed bounds.
    #[error("creating a latency histogram")]
    Create(#[source] hdrhistogram::CreationError),
    /// Merging two histograms failed.
    #[error("merging latency histograms")]
    Merge(#[source] hdrhistogram::AdditionError),
}

/// A latency recorder: a histogram of nanoseconds.
#[derive(Clone, Debug)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Latencies {
    /// An empty recorder.
    pub fn new() -> Result<Self, StatsError> {
        let histogram = Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS)
            .map_err(StatsError::Create)?;
        Ok(Self { histogram })
    }

    /// Records one latency in nanoseconds (0 is recorded as 1, values above the bound saturate).
    pub fn record_ns(&mut self, latency_ns: u64) {
        self.histogram.saturating_record(latency_ns.max(1));
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.record_ns(ns);
    }

    /// Adds every value of `other` into `self`.
    pub fn merge(&mut self, other: &Latencies) -> Result<(), StatsError> {
        self.histogram
            .add(&other.histogram)
            .map_err(StatsError::Merge)
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The underlying histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// Forgets every recorded value (used after a warm-up).
    pub fn reset(&mut self) {
        self.histogram.reset();
    }

    /// The summary of what was recorded, with throughput over `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        Summary::from_histogram(&self.histogram, elapsed)
    }

    /// Points of the latency distribution for plots: `(percentile, latency_ns)` pairs from the
    /// 0th up to the highest recorded percentile, two points per halving of the tail.
    pub fn percentile_curve(&self) -> Vec<(f64, f64)> {
        let mut points = Vec::new();
        if self.histogram.is_empty() {
            return points;
        }
        for v in self.histogram.iter_quantiles(2) {
            points.push((
                v.quantile_iterated_to() * 100.0,
                v.value_iterated_to() as f64,
            ));
        }
        points
    }
}

/// Throughput and latency percentiles of one measurement. Latencies are in nanoseconds; they
/// are `f64` so that figures parsed from external tools (which print microseconds with two
/// decimals) fit; a figure a tool does not report is `NaN` (`null` in JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Number of operations measured.
    pub count: u64,
    /// Wall-clock length of the measurement in seconds.
    pub elapsed_s: f64,
    /// Operations per second over the measurement (`count / elapsed_s`).
    pub throughput_per_s: f64,
    /// Mean latency.
    pub mean_ns: f64,
    /// Minimum latency.
    pub min_ns: f64,
    /// Median latency.
    pub p50_ns: f64,
    /// 90th percentile.
    pub p90_ns: f64,
    /// 99th percentile.
    pub p99_ns: f64,
    /// 99.9th percentile.
    pub p999_ns: f64,
    /// Maximum latency.
    pub max_ns: f64,
}

impl Summary {
    /// The summary of a histogram of nanoseconds, with throughput over `elapsed`. Percentiles
    /// are hdrhistogram's `value_at_quantile` (the highest value equivalent to the quantile's
    /// bucket).
    pub fn from_histogram(histogram: &Histogram<u64>, elapsed: Duration) -> Self {
        let elapsed_s = elapsed.as_secs_f64();
        let count = histogram.len();
        let throughput_per_s = if elapsed_s > 0.0 {
            count as f64 / elapsed_s
        } else {
            f64::NAN
        };
        if count == 0 {
            return Self {
                count,
                elapsed_s,
                throughput_per_s,
                mean_ns: f64::NAN,
                min_ns: f64::NAN,
                p50_ns: f64::NAN,
                p90_ns: f64::NAN,
                p99_ns: f64::NAN,
                p999_ns: f64::NAN,
                max_ns: f64::NAN,
            };
        }
        let q = |quantile: f64| histogram.value_at_quantile(quantile) as f64;
        Self {
            count,
            elapsed_s,
            throughput_per_s,
            mean_ns: histogram.mean(),
            min_ns: histogram.min() as f64,
            p50_ns: q(0.50),
            p90_ns: q(0.90),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: histogram.max() as f64,
        }
    }

    /// A summary with only a throughput (a stream measured as a whole): every latency is NaN.
    pub fn throughput_only(count: u64, elapsed: Duration) -> Self {
        let elapsed_s = elapsed.as_secs_f64();
        Self {
            count,
            elapsed_s,
            throughput_per_s: if elapsed_s > 0.0 {
                count as f64 / elapsed_s
            } else {
                f64::NAN
            },
            mean_ns: f64::NAN,
            min_ns: f64::NAN,
            p50_ns: f64::NAN,
            p90_ns: f64::NAN,
            p99_ns: f64::NAN,
            p999_ns: f64::NAN,
            max_ns: f64::NAN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_synthetic_histogram_has_exact_percentiles() {
        let mut l = Latencies::new().unwrap();
        // 1000 values: 1..=1000 ns, each once. Values below 2048 are exact at 3 digits.
        for v in 1..=1000 {
            l.record_ns(v);
        }
        let s = l.summary(Duration::from_millis(500));
        assert_eq!(s.count, 1000);
        assert_eq!(s.elapsed_s, 0.5);
        assert_eq!(s.throughput_per_s, 2000.0);
        assert_eq!(s.min_ns, 1.0);
        assert_eq!(s.p50_ns, 500.0);
        assert_eq!(s.p90_ns, 900.0);
        assert_eq!(s.p99_ns, 990.0);
        assert_eq!(s.p999_ns, 999.0);
        assert_eq!(s.max_ns, 1000.0);
        assert_eq!(s.mean_ns, 500.5);
    }

    #[test]
    fn a_tail_value_moves_only_the_high_percentiles() {
        let mut l = Latencies::new().unwrap();
        for _ in 0..999 {
            l.record_ns(100);
        }
        l.record_ns(1_000_000);
        let s = l.summary(Duration::from_secs(1));
        assert_eq!(s.p50_ns, 100.0);
        assert_eq!(s.p99_ns, 100.0);
        assert_eq!(s.p999_ns, 100.0);
        // 1 ms is stored with 3 significant digits: the bucket's highest equivalent value.
        assert!(
            (1_000_000.0..=1_001_000.0).contains(&s.max_ns),
            "{}",
            s.max_ns
        );
    }

    #[test]
    fn zero_and_huge_values_are_kept_not_dropped() {
        let mut l = Latencies::new().unwrap();
        l.record_ns(0);
        l.record_ns(u64::MAX);
        assert_eq!(l.count(), 2);
        let s = l.summary(Duration::from_secs(2));
        assert_eq!(s.min_ns, 1.0);
        assert_eq!(s.throughput_per_s, 1.0);
        assert!(s.max_ns >= LATENCY_NS_MAX as f64);
    }

    #[test]
    fn an_empty_histogram_reports_nan_latencies() {
        let l = Latencies::new().unwrap();
        let s = l.summary(Duration::from_secs(1));
        assert_eq!(s.count, 0);
        assert_eq!(s.throughput_per_s, 0.0);
        assert!(s.p50_ns.is_nan());
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Latencies::new().unwrap();
        let mut b = Latencies::new().unwrap();
        a.record_ns(10);
        b.record_ns(20);
        b.record_ns(30);
        a.merge(&b).unwrap();
        let s = a.summary(Duration::from_secs(1));
        assert_eq!(s.count, 3);
        assert_eq!(s.p50_ns, 20.0);
        assert_eq!(s.max_ns, 30.0);
    }
}
