//! The kinds of fault a run may inject, as a set that can be shrunk.
//!
//! A failing seed is re-run with fault kinds switched off one at a time; a kind whose removal
//! keeps the failure stays off, so the report names the fewest kinds that still break the run.

use std::fmt;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Random message loss.
    Loss,
    /// Random message duplication.
    Duplicate,
    /// Random delays wide enough to reorder messages.
    Reorder,
    /// Two-way partitions of a random side.
    Partition,
    /// One-way cuts of single links.
    OneWay,
    /// Links clogged and unclogged at random (FoundationDB's swizzle-clogging).
    Clog,
    /// Crashes (unsynced writes lost) and restarts from the durable state.
    Crash,
    /// Clock drift within the configured bound.
    Drift,
    /// Membership changes (add/promote learner, remove/replace voter).
    Membership,
    /// Snapshots, log truncation and catch-up by snapshot.
    Snapshot,
    /// Leadership transfers.
    Transfer,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Loss,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Clog,
        FaultKind::Crash,
        FaultKind::Drift,
        FaultKind::Membership,
        FaultKind::Snapshot,
        FaultKind::Transfer,
    ];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Loss => "loss",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder => "reorder",
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "oneway",
            FaultKind::Clog => "clog",
            FaultKind::Crash => "crash",
            FaultKind::Drift => "drift",
            FaultKind::Membership => "membership",
            FaultKind::Snapshot => "snapshot",
            FaultKind::Transfer => "transfer",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of fault kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults(u32);

impl Faults {
    /// Every kind on.
    pub fn all() -> Faults {
        Faults(FaultKind::ALL.iter().fold(0, |acc, k| acc | k.bit()))
    }

    /// No kind on.
    pub fn none() -> Faults {
        Faults(0)
    }

    /// Whether `k` is on.
    pub fn has(self, k: FaultKind) -> bool {
        self.0 & k.bit() != 0
    }

    /// This set without `k`.
    pub fn without(self, k: FaultKind) -> Faults {
        Faults(self.0 & !k.bit())
    }

    /// This set with `k`.
    pub fn with(self, k: FaultKind) -> Faults {
        Faults(self.0 | k.bit())
    }

    /// The kinds that are on.
    pub fn kinds(self) -> Vec<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|k| self.has(*k))
            .collect()
    }

    /// Parses a comma-separated list of kind names (`all` and `none` allowed).
    pub fn parse(s: &str) -> Result<Faults, String> {
        match s {
            "all" => return Ok(Faults::all()),
            "none" | "" => return Ok(Faults::none()),
            _ => {}
        }
        let mut f = Faults::none();
        for name in s.split(',') {
            let k = FaultKind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| format!("unknown fault kind {name:?}"))?;
            f = f.with(k);
        }
        Ok(f)
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Faults::all() {
            return write!(f, "all");
        }
        if *self == Faults::none() {
            return write!(f, "none");
        }
        let names: Vec<&str> = self.kinds().into_iter().map(FaultKind::name).collect();
        write!(f, "{}", names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_sets_print_and_parse_back() {
        for f in [
            Faults::all(),
            Faults::none(),
            Faults::none().with(FaultKind::Crash),
        ] {
            assert_eq!(Faults::parse(&f.to_string()), Ok(f));
        }
        let f = Faults::parse("loss,clog").unwrap();
        assert!(f.has(FaultKind::Loss) && f.has(FaultKind::Clog) && !f.has(FaultKind::Crash));
        assert_eq!(f.to_string(), "loss,clog");
        assert!(Faults::parse("bogus").is_err());
        assert!(
            !Faults::all()
                .without(FaultKind::Drift)
                .has(FaultKind::Drift)
        );
    }
}
