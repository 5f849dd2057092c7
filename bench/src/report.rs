//! Reports: the machine's limits measured in the run, the measured figures each with its ratio
//! to the matching limit, the targets, the text summary and the JSON file.
//!
//! Ratio rule: a latency percentile is divided by the same percentile of its limit (p50 by p50,
//! p99 by p99, ...), so "1.30x" reads "1.3 times what the machine's own primitive costs at that
//! percentile". Throughput is divided by the limit's throughput (for a serial round-trip limit,
//! one over its mean latency), so "0.50x" reads "half the rate of the bare primitive run back
//! to back". A limit that was not measured gives no ratio (`null` in JSON, `-` in text).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::stats::{Latencies, Summary};

/// Errors from writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Serialising the report to JSON failed.
    #[error("serialising the report to JSON")]
    Serialize(#[source] serde_json::Error),
    /// Writing the JSON file failed.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A limit of the machine measured in this run (for example the cache-line round trip).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Limit {
    /// Short name figures refer to (for example `cacheline-rtt`).
    pub name: String,
    /// What was measured and how.
    pub description: String,
    /// The measured distribution.
    pub summary: Summary,
    /// Further figures of the limit measurement (for example the untimed mean).
    pub extra: BTreeMap<String, f64>,
    /// Anything the reader should know (pinning, file system, how a tool reports).
    pub notes: Vec<String>,
    /// `(percentile, latency_ns)` points for `--plot` (not in JSON).
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
}

/// A limit that could not be measured here, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skipped {
    /// The limit's name.
    pub name: String,
    /// Why it was skipped (for example "no RDMA device: skipped").
    pub reason: String,
}

/// The result of trying to measure a limit.
#[derive(Clone, Debug, PartialEq)]
pub enum LimitOutcome {
    /// It was measured.
    Measured(Limit),
    /// It could not be measured here.
    Skipped(Skipped),
}

/// A figure's ratios to its limit (figure / limit, percentile by percentile).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratios {
    /// Name of the limit the ratios are against.
    pub limit: String,
    /// Mean latency over the limit's mean.
    pub mean: Option<f64>,
    /// p50 over the limit's p50.
    pub p50: Option<f64>,
    /// p90 over the limit's p90.
    pub p90: Option<f64>,
    /// p99 over the limit's p99.
    pub p99: Option<f64>,
    /// p99.9 over the limit's p99.9.
    pub p999: Option<f64>,
    /// Max over the limit's max.
    pub max: Option<f64>,
    /// Throughput over the limit's throughput.
    pub throughput: Option<f64>,
}

/// `a / b` when both are finite and `b` is positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        Some(a / b)
    } else {
        None
    }
}

impl Ratios {
    /// The ratios of `figure` to `limit`.
    pub fn of(figure: &Summary, limit: &Limit) -> Self {
        let l = &limit.summary;
        Self {
            limit: limit.name.clone(),
            mean: ratio(figure.mean_ns, l.mean_ns),
            p50: ratio(figure.p50_ns, l.p50_ns),
            p90: ratio(figure.p90_ns, l.p90_ns),
            p99: ratio(figure.p99_ns, l.p99_ns),
            p999: ratio(figure.p999_ns, l.p999_ns),
            max: ratio(figure.max_ns, l.max_ns),
            throughput: ratio(figure.throughput_per_s, l.throughput_per_s),
        }
    }
}

/// One measured figure of the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measurement {
    /// Name (for example `shm-ring-rtt-64B`).
    pub name: String,
    /// The parameters specific to this figure (backend, payload, appenders, ...).
    pub params: BTreeMap<String, serde_json::Value>,
    /// The measured distribution.
    pub summary: Summary,
    /// Ratios to the matching limit of the same run, when it was measured.
    pub ratios: Option<Ratios>,
    /// `(percentile, latency_ns)` points for `--plot` (not in JSON).
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
}

/// Which side of the bound a target wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The ratio must be at most the bound.
    AtMost,
    /// The ratio must be at least the bound.
    AtLeast,
}

/// A target we hold ourselves to: a ratio of two figures from the same run against a bound.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    /// What the target says, in words.
    pub name: String,
    /// The measured value (numerator).
    pub measured: f64,
    /// The reference value (denominator).
    pub reference: f64,
    /// `measured / reference`, when both are known.
    pub ratio: Option<f64>,
    /// Which side of `bound` the ratio must be.
    pub bound: Bound,
    /// The bound on the ratio.
    pub bound_ratio: f64,
    /// Whether the target was met (`None` when the ratio is unknown).
    pub met: Option<bool>,
}

impl Target {
    /// Evaluates `measured / reference` against `bound_ratio`.
    pub fn new(
        name: impl Into<String>,
        measured: f64,
        reference: f64,
        bound: Bound,
        bound_ratio: f64,
    ) -> Self {
        let r = ratio(measured, reference);
        let met = r.map(|r| match bound {
            Bound::AtMost => r <= bound_ratio,
            Bound::AtLeast => r >= bound_ratio,
        });
        Self {
            name: name.into(),
            measured,
            reference,
            ratio: r,
            bound,
            bound_ratio,
            met,
        }
    }
}

/// Facts about the machine the run was on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// The kernel clock source (`tsc`, `kvm-clock`, ...).
    pub clocksource: String,
    /// `uname -r` equivalent.
    pub kernel: String,
    /// 1-minute load average when the run started (other work on the machine skews figures).
    pub loadavg_1m: Option<f64>,
}

impl Machine {
    /// Reads the facts from /proc and /sys (empty strings when unavailable).
    pub fn probe() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let loadavg_1m = read("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok());
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
            kernel: read("/proc/sys/kernel/osrelease"),
            loadavg_1m,
        }
    }
}

/// A whole run: parameters, limits, figures, targets and notes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The subcommand (`limits`, `log`, `ring`, `local`, `etcd`).
    pub command: String,
    /// The keel-bench version.
    pub version: String,
    /// Every parameter of the run.
    pub params: BTreeMap<String, serde_json::Value>,
    /// The machine.
    pub machine: Machine,
    /// Limits measured in this run.
    pub limits: Vec<Limit>,
    /// Limits that could not be measured here.
    pub skipped: Vec<Skipped>,
    /// The figures.
    pub results: Vec<Measurement>,
    /// The targets and whether they were met.
    pub targets: Vec<Target>,
    /// Free-form notes.
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report for `command` with `params`.
    pub fn new(command: &str, params: BTreeMap<String, serde_json::Value>) -> Self {
        Self {
            command: command.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            params,
            machine: Machine::probe(),
            limits: Vec::new(),
            skipped: Vec::new(),
            results: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a limit outcome.
    pub fn add_limit(&mut self, outcome: LimitOutcome) {
        match outcome {
            LimitOutcome::Measured(l) => self.limits.push(l),
            LimitOutcome::Skipped(s) => self.skipped.push(s),
        }
    }

    /// The measured limit called `name`.
    pub fn limit(&self, name: &str) -> Option<&Limit> {
        self.limits.iter().find(|l| l.name == name)
    }

    /// Adds a figure; its ratios are computed against the limit called `limit` when that limit
    /// was measured in this run.
    pub fn add_result(
        &mut self,
        name: impl Into<String>,
        params: BTreeMap<String, serde_json::Value>,
        summary: Summary,
        limit: Option<&str>,
    ) -> &Measurement {
        let ratios = limit
            .and_then(|l| self.limit(l))
            .map(|l| Ratios::of(&summary, l));
        self.results.push(Measurement {
            name: name.into(),
            params,
            summary,
            ratios,
            curve: Vec::new(),
        });
        let last = self.results.len() - 1;
        &self.results[last]
    }

    /// Adds a figure from recorded latencies (summary over `elapsed`, and its plot curve).
    pub fn add_latencies(
        &mut self,
        name: impl Into<String>,
        params: BTreeMap<String, serde_json::Value>,
        latencies: &Latencies,
        elapsed: std::time::Duration,
        limit: Option<&str>,
    ) -> &Measurement {
        self.add_result(name, params, latencies.summary(elapsed), limit);
        let last = self.results.len() - 1;
        self.results[last].curve = latencies.percentile_curve();
        &self.results[last]
    }

    /// The plot curves of every figure and limit that has one.
    pub fn curves(&self) -> Vec<crate::plot::Curve> {
        let figures = self.results.iter().map(|m| (m.name.clone(), &m.curve));
        let limits = self
            .limits
            .iter()
            .map(|l| (format!("limit {}", l.name), &l.curve));
        figures
            .chain(limits)
            // A single event (a fail-over) is no distribution.
            .filter(|(_, c)| c.len() > 1)
            .map(|(name, c)| crate::plot::Curve {
                name,
                points: c.clone(),
            })
            .collect()
    }

    /// The figure called `name`.
    pub fn result(&self, name: &str) -> Option<&Measurement> {
        self.results.iter().find(|m| m.name == name)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, ReportError> {
        serde_json::to_string_pretty(self).map_err(ReportError::Serialize)
    }

    /// Writes the JSON report to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let json = self.to_json()?;
        std::fs::write(path, json + "\n").map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let load = m
            .loadavg_1m
            .map(|l| format!("{l:.2}"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "keel-bench {} ({} cpus, clocksource {}, kernel {}, load {})",
            self.command, m.cpus, m.clocksource, m.kernel, load
        );
        let _ = writeln!(out, "\nlimits measured in this run:");
        let _ = writeln!(out, "{}", header("limit"));
        for l in &self.limits {
            let _ = writeln!(out, "{}", summary_row(&l.name, &l.summary, None));
            for (k, v) in &l.extra {
                let _ = writeln!(out, "    {k}: {v:.1}");
            }
            for n in &l.notes {
                let _ = writeln!(out, "    {n}");
            }
        }
        for s in &self.skipped {
            let _ = writeln!(out, "  {:<34} {}", s.name, s.reason);
        }
        if !self.results.is_empty() {
            let _ = writeln!(
                out,
                "\nresults (each figure with its ratio to the named limit, percentile by percentile):"
            );
            let _ = writeln!(out, "{}", header("figure"));
            for r in &self.results {
                let _ = writeln!(
                    out,
                    "{}",
                    summary_row(&r.name, &r.summary, r.ratios.as_ref())
                );
                match &r.ratios {
                    Some(ra) => {
                        let _ = writeln!(out, "    vs limit {}", ra.limit);
                    }
                    None => {
                        let _ = writeln!(out, "    no matching limit measured");
                    }
                }
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\ntargets:");
            for t in &self.targets {
                let verdict = match t.met {
                    Some(true) => "MET",
                    Some(false) => "MISSED",
                    None => "UNKNOWN",
                };
                let cmp = match t.bound {
                    Bound::AtMost => "<=",
                    Bound::AtLeast => ">=",
                };
                let _ = writeln!(
                    out,
                    "  {:<6} {}: {} (want {} {}x)",
                    verdict,
                    t.name,
                    fmt_ratio(t.ratio),
                    cmp,
                    t.bound_ratio
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}

fn header(first: &str) -> String {
    format!(
        "  {:<34} {:>9} {:>12} {:>17} {:>17} {:>17} {:>17} {:>17} {:>17}",
        first, "count", "ops/s", "mean", "p50", "p90", "p99", "p99.9", "max"
    )
}

fn summary_row(name: &str, s: &Summary, r: Option<&Ratios>) -> String {
    let cell = |v: f64, ra: Option<f64>| match r {
        Some(_) => format!("{} ({})", fmt_ns(v), fmt_ratio(ra)),
        None => fmt_ns(v),
    };
    let tput = match r {
        Some(ra) => format!(
            "{} ({})",
            fmt_rate(s.throughput_per_s),
            fmt_ratio(ra.throughput)
        ),
        None => fmt_rate(s.throughput_per_s),
    };
    format!(
        "  {:<34} {:>9} {:>12} {:>17} {:>17} {:>17} {:>17} {:>17} {:>17}",
        name,
        s.count,
        tput,
        cell(s.mean_ns, r.and_then(|r| r.mean)),
        cell(s.p50_ns, r.and_then(|r| r.p50)),
        cell(s.p90_ns, r.and_then(|r| r.p90)),
        cell(s.p99_ns, r.and_then(|r| r.p99)),
        cell(s.p999_ns, r.and_then(|r| r.p999)),
        cell(s.max_ns, r.and_then(|r| r.max)),
    )
}

/// A latency in nanoseconds with a unit and three significant digits (`-` for unknown).
pub fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        return "-".into();
    }
    let (v, unit) = if ns < 1_000.0 {
        (ns, "ns")
    } else if ns < 1_000_000.0 {
        (ns / 1_000.0, "us")
    } else if ns < 1_000_000_000.0 {
        (ns / 1_000_000.0, "ms")
    } else {
        (ns / 1_000_000_000.0, "s")
    };
    format!("{} {unit}", sig3(v))
}

/// A rate per second with three significant digits and a k/M suffix.
pub fn fmt_rate(per_s: f64) -> String {
    if !per_s.is_finite() {
        return "-".into();
    }
    if per_s >= 1_000_000.0 {
        format!("{}M", sig3(per_s / 1_000_000.0))
    } else if per_s >= 1_000.0 {
        format!("{}k", sig3(per_s / 1_000.0))
    } else {
        sig3(per_s)
    }
}

/// A ratio as `1.23x` (`-` when unknown).
pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r.is_finite() => format!("{}x", sig3(r)),
        _ => "-".into(),
    }
}

fn sig3(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Builds a parameter map from `(name, value)` pairs.
pub fn params<I, K, V>(pairs: I) -> BTreeMap<String, serde_json::Value>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<serde_json::Value>,
{
    pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn summary_of(values: &[u64], elapsed_ms: u64) -> Summary {
        let mut l = Latencies::new().unwrap();
        for v in values {
            l.record_ns(*v);
        }
        l.summary(Duration::from_millis(elapsed_ms))
    }

    fn limit_of(name: &str, values: &[u64], elapsed_ms: u64) -> Limit {
        Limit {
            name: name.into(),
            description: "synthetic".into(),
            summary: summary_of(values, elapsed_ms),
            extra: BTreeMap::new(),
            notes: vec![],
            curve: vec![],
        }
    }

    #[test]
    fn ratios_are_percentile_by_percentile_and_throughput_by_throughput() {
        // Limit: 100 values of 100 ns over 10 us -> 10M/s. Figure: 100 values of 250 ns over
        // 50 ms -> 2000/s.
        let limit = limit_of("cacheline-rtt", &[100; 100], 0);
        let limit = Limit {
            summary: Summary {
                elapsed_s: 0.00001,
                throughput_per_s: 10_000_000.0,
                ..limit.summary
            },
            ..limit
        };
        let figure = summary_of(&[250; 100], 50);
        let r = Ratios::of(&figure, &limit);
        assert_eq!(r.limit, "cacheline-rtt");
        assert_eq!(r.p50, Some(2.5));
        assert_eq!(r.p90, Some(2.5));
        assert_eq!(r.p99, Some(2.5));
        assert_eq!(r.p999, Some(2.5));
        assert_eq!(r.max, Some(2.5));
        assert_eq!(r.mean, Some(2.5));
        assert_eq!(figure.throughput_per_s, 2000.0);
        assert_eq!(r.throughput, Some(0.0002));
    }

    #[test]
    fn a_missing_limit_gives_no_ratio() {
        let mut report = Report::new("test", BTreeMap::new());
        report.add_limit(LimitOutcome::Skipped(Skipped {
            name: "ib-write-rtt".into(),
            reason: "no RDMA device: skipped".into(),
        }));
        let m = report.add_result(
            "rdma-ring-rtt",
            BTreeMap::new(),
            summary_of(&[1000], 1),
            Some("ib-write-rtt"),
        );
        assert_eq!(m.ratios, None);
        assert!(report.to_text().contains("no RDMA device: skipped"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(json["skipped"][0]["reason"], "no RDMA device: skipped");
        assert_eq!(json["results"][0]["ratios"], serde_json::Value::Null);
    }

    #[test]
    fn json_has_every_parameter_figure_and_limit() {
        let mut report = Report::new(
            "ring",
            params([("payload_bytes", 64u64), ("duration_ms", 1000u64)]),
        );
        report.add_limit(LimitOutcome::Measured(limit_of(
            "cacheline-rtt",
            &[200; 10],
            1,
        )));
        report.add_result(
            "shm-ring-rtt",
            params([("backend", "shm")]),
            summary_of(&[300, 300, 300, 300, 500], 1),
            Some("cacheline-rtt"),
        );
        report.targets.push(Target::new(
            "shm p50 <= 2x cacheline",
            300.0,
            200.0,
            Bound::AtMost,
            2.0,
        ));
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(json["command"], "ring");
        assert_eq!(json["params"]["payload_bytes"], 64);
        assert_eq!(json["params"]["duration_ms"], 1000);
        assert_eq!(json["limits"][0]["name"], "cacheline-rtt");
        assert_eq!(json["limits"][0]["summary"]["p50_ns"], 200.0);
        assert_eq!(json["limits"][0]["summary"]["throughput_per_s"], 10_000.0);
        let r = &json["results"][0];
        assert_eq!(r["params"]["backend"], "shm");
        assert_eq!(r["summary"]["count"], 5);
        assert_eq!(r["summary"]["p50_ns"], 300.0);
        assert_eq!(r["summary"]["max_ns"], 500.0);
        assert_eq!(r["summary"]["throughput_per_s"], 5000.0);
        assert_eq!(r["ratios"]["p50"], 1.5);
        assert_eq!(r["ratios"]["max"], 2.5);
        assert_eq!(r["ratios"]["throughput"], 0.5);
        let t = &json["targets"][0];
        assert_eq!(t["ratio"], 1.5);
        assert_eq!(t["bound"], "at_most");
        assert_eq!(t["met"], true);
    }

    #[test]
    fn targets_compare_on_the_right_side() {
        let t = Target::new("group", 80_000.0, 10_000.0, Bound::AtLeast, 8.0);
        assert_eq!(t.ratio, Some(8.0));
        assert_eq!(t.met, Some(true));
        let t = Target::new("group", 79_999.0, 10_000.0, Bound::AtLeast, 8.0);
        assert_eq!(t.met, Some(false));
        let t = Target::new("single", 111.0, 100.0, Bound::AtMost, 1.1);
        assert_eq!(t.met, Some(false));
        let t = Target::new("unknown", f64::NAN, 100.0, Bound::AtMost, 1.1);
        assert_eq!(t.ratio, None);
        assert_eq!(t.met, None);
        let t = Target::new("zero ref", 1.0, 0.0, Bound::AtMost, 1.1);
        assert_eq!(t.met, None);
    }

    #[test]
    fn text_shows_figures_with_ratios() {
        let mut report = Report::new("ring", BTreeMap::new());
        report.add_limit(LimitOutcome::Measured(limit_of(
            "cacheline-rtt",
            &[200; 10],
            1,
        )));
        report.add_result(
            "shm-ring-rtt",
            BTreeMap::new(),
            summary_of(&[300; 10], 1),
            Some("cacheline-rtt"),
        );
        let text = report.to_text();
        assert!(text.contains("300 ns (1.50x)"), "{text}");
        assert!(text.contains("10.0k (1.00x)"), "{text}");
        assert!(text.contains("vs limit cacheline-rtt"), "{text}");
    }

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_ns(144.0), "144 ns");
        assert_eq!(fmt_ns(1_234.0), "1.23 us");
        assert_eq!(fmt_ns(72_000.0), "72.0 us");
        assert_eq!(fmt_ns(125_000.0), "125 us");
        assert_eq!(fmt_ns(12_000_000.0), "12.0 ms");
        assert_eq!(fmt_ns(2_500_000_000.0), "2.50 s");
        assert_eq!(fmt_ns(f64::NAN), "-");
        assert_eq!(fmt_rate(4_700.0), "4.70k");
        assert_eq!(fmt_rate(1_000_000.0), "1.00M");
        assert_eq!(fmt_rate(800.0), "800");
        assert_eq!(fmt_ratio(Some(1.1)), "1.10x");
        assert_eq!(fmt_ratio(None), "-");
    }
}
