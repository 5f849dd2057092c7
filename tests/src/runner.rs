//! Running seeds: one run, a core panic caught as a failure, and shrinking a failure to the
//! fewest fault kinds that still reproduce it.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

use crate::faults::Faults;
use crate::world::{Failure, RunSpec, Summary, World};

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// What ran.
    pub spec: RunSpec,
    /// Its figures, or why it failed.
    pub outcome: Result<Summary, Failure>,
    /// The trace lines kept (the last `spec.trace_lines`).
    pub trace: Vec<String>,
}

/// The message of the last panic on this process, captured by [`quiet_panics`].
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the panic hook with one that records the message instead of printing it (a core
/// contract violation is a run failure, reported with the seed and trace).
pub fn quiet_panics() {
    panic::set_hook(Box::new(|info| {
        let msg = match info.payload().downcast_ref::<&str>() {
            Some(s) => (*s).to_string(),
            None => match info.payload().downcast_ref::<String>() {
                Some(s) => s.clone(),
                None => "panic".to_string(),
            },
        };
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(format!("{msg}{loc}"));
        }
    }));
}

/// Runs `spec` to the end; a panic inside the core or the simulator is a failure.
pub fn run(spec: RunSpec) -> RunResult {
    let mut world = None;
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let w = world.insert(World::new(spec.clone()));
        w.run()
    }));
    let trace = world
        .as_ref()
        .map(|w: &World| w.trace().cloned().collect())
        .unwrap_or_default();
    let outcome = match outcome {
        Ok(r) => r,
        Err(_) => {
            let msg = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut l| l.take())
                .unwrap_or_default();
            Err(Failure {
                at_us: world.as_ref().map_or(0, World::now),
                what: format!("panic: {msg}"),
            })
        }
    };
    RunResult {
        spec,
        outcome,
        trace,
    }
}

/// Re-runs a failing spec with fault kinds switched off one at a time, keeping each removal
/// that still fails; returns the smallest failing set found (at most one run per kind).
pub fn shrink(spec: &RunSpec) -> RunSpec {
    let mut best = spec.clone();
    best.trace_lines = 0;
    best.verbose = false;
    for kind in spec.faults.kinds() {
        let mut candidate = best.clone();
        candidate.faults = best.faults.without(kind);
        if run(candidate.clone()).outcome.is_err() {
            best = candidate;
        }
    }
    best
}

/// The command line that reproduces `spec`.
pub fn reproduce_line(spec: &RunSpec) -> String {
    let mut s = format!("keel-sim --seed {}", spec.seed);
    if spec.faults != Faults::all() {
        s.push_str(&format!(" --faults {}", spec.faults));
    }
    if let Some(m) = spec.mutation {
        s.push_str(&format!(" --mutation {}", m.name()));
    }
    s
}
