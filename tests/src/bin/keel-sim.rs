//! `keel-sim`: runs seeded simulations of whole Keel clusters with fault injection.
//!
//! `keel-sim --seeds 0..2000` runs a range and ends with one line `N passed, M failed`;
//! `keel-sim --seed S --verbose` prints the trace of one run; `--mutation NAME` switches on a
//! deliberate core bug (build with `--features mutations`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use keel_tests::faults::Faults;
use keel_tests::runner::{self, RunResult};
use keel_tests::world::RunSpec;

#[derive(Parser, Debug)]
#[command(name = "keel-sim", about = "Deterministic simulation of Keel clusters")]
struct Args {
    /// Run one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run a range of seeds, `A..B` (B exclusive).
    #[arg(long)]
    seeds: Option<String>,
    /// Print every event of the run (with --seed).
    #[arg(long)]
    verbose: bool,
    /// Fault kinds to inject: `all`, `none`, or a comma list (loss,duplicate,reorder,partition,
    /// oneway,clog,crash,drift,membership,snapshot,transfer).
    #[arg(long, default_value = "all")]
    faults: String,
    /// Switch on a deliberate core bug: AcceptLowerBallot, DoubleCountVote,
    /// CommitWithoutMajority, LeaseReadAfterExpiry (needs the `mutations` feature).
    #[arg(long)]
    mutation: Option<String>,
    /// Trace lines to print for a failing run.
    #[arg(long, default_value_t = 60)]
    trace_lines: usize,
    /// Worker threads for a range (default: available cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Do not shrink failures (faster when many fail, e.g. under a mutation).
    #[arg(long)]
    no_shrink: bool,
    /// With a range: stop at the first failure.
    #[arg(long)]
    stop_on_failure: bool,
    /// With a range and --mutation: succeed only if some seed fails (the bug is caught), and
    /// name the first seed that caught it. Implies --stop-on-failure and --no-shrink.
    #[arg(long)]
    expect_caught: bool,
}

fn parse_range(s: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s.split_once("..").context("--seeds wants A..B")?;
    let a: u64 = a.trim().parse().context("--seeds start")?;
    let b: u64 = b.trim().parse().context("--seeds end")?;
    if b < a {
        bail!("--seeds {a}..{b} is empty the wrong way round");
    }
    Ok((a, b))
}

fn parse_mutation(name: Option<&str>) -> anyhow::Result<Option<keel_core::Mutation>> {
    let Some(name) = name else { return Ok(None) };
    let m = keel_core::Mutation::from_name(name).with_context(|| {
        let names: Vec<&str> = keel_core::Mutation::ALL.iter().map(|m| m.name()).collect();
        format!("unknown mutation {name:?}; known: {}", names.join(", "))
    })?;
    if !cfg!(feature = "mutations") {
        bail!("--mutation needs keel-sim built with `--features mutations`");
    }
    Ok(Some(m))
}

fn report_failure(r: &RunResult, trace_lines: usize, shrink: bool) {
    let Err(f) = &r.outcome else { return };
    println!("FAILED seed {}: {f}", r.spec.seed);
    let mut spec = r.spec.clone();
    if shrink && spec.faults.kinds().len() > 1 {
        let small = runner::shrink(&spec);
        if small.faults != spec.faults {
            println!("  shrunk: still fails with faults {}", small.faults);
        }
        spec = small;
    }
    spec.trace_lines = trace_lines;
    let again = runner::run(spec.clone());
    match &again.outcome {
        Err(f2) => {
            println!(
                "  last {} events of the run that fails ({f2}):",
                again.trace.len()
            );
            for l in &again.trace {
                println!("    {l}");
            }
        }
        Ok(_) => println!("  (the shrunk re-run passed; trace omitted)"),
    }
    println!("reproduce: {}", runner::reproduce_line(&spec));
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.expect_caught {
        args.stop_on_failure = true;
        args.no_shrink = true;
    }
    let faults = Faults::parse(&args.faults).map_err(anyhow::Error::msg)?;
    let mutation = parse_mutation(args.mutation.as_deref())?;
    runner::quiet_panics();
    if let Some(seed) = args.seed {
        let spec = RunSpec {
            seed,
            faults,
            mutation,
            trace_lines: if args.verbose { 0 } else { args.trace_lines },
            verbose: args.verbose,
        };
        let r = runner::run(spec);
        match &r.outcome {
            Ok(s) => {
                println!("seed {seed}: ok {s:?}");
                println!("1 passed, 0 failed");
            }
            Err(f) => {
                println!("seed {seed}: FAILED {f}");
                if !args.verbose {
                    println!("  last {} events:", r.trace.len());
                    for l in &r.trace {
                        println!("    {l}");
                    }
                }
                println!("reproduce: {}", runner::reproduce_line(&r.spec));
                println!("0 passed, 1 failed");
                std::process::exit(1);
            }
        }
        return Ok(());
    }
    let Some(range) = args.seeds.as_deref() else {
        bail!("give --seed S or --seeds A..B");
    };
    let (a, b) = parse_range(range)?;
    // Catching a mutation names the first seed that catches it: run seeds in order.
    let jobs = if args.expect_caught {
        1
    } else {
        args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    };
    let next = Arc::new(AtomicU64::new(a));
    let passed = Arc::new(AtomicU64::new(0));
    let failed: Arc<Mutex<Vec<RunResult>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The slowest recovery after healing: (simulated us, seed).
    let worst = Arc::new(Mutex::new((0u64, 0u64)));
    let start = Instant::now();
    let total = b - a;
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            let (next, passed, failed, stop, worst) = (&next, &passed, &failed, &stop, &worst);
            s.spawn(move || {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= b {
                        return;
                    }
                    let spec = RunSpec {
                        seed,
                        faults,
                        mutation,
                        trace_lines: 0,
                        verbose: false,
                    };
                    let r = runner::run(spec);
                    if let Ok(summary) = &r.outcome {
                        if let Ok(mut w) = worst.lock() {
                            *w = (*w).max((summary.recovery_us, seed));
                        }
                        passed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        if let Err(f) = &r.outcome {
                            eprintln!("failed: seed {seed}: {f}");
                        }
                        if let Ok(mut f) = failed.lock() {
                            f.push(r);
                        }
                        if args.stop_on_failure {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        // Progress: a line every few seconds.
        let mut last = Instant::now();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let nfail = failed.lock().map(|f| f.len()).unwrap_or(0);
            let finished = passed.load(Ordering::Relaxed) + nfail as u64;
            if finished >= total || stop.load(Ordering::Relaxed) {
                break;
            }
            if last.elapsed().as_secs() >= 5 {
                last = Instant::now();
                eprintln!(
                    "progress: {finished}/{total} seeds, {nfail} failed, {:.0}s",
                    start.elapsed().as_secs_f64()
                );
            }
        }
    });
    let mut failed = failed.lock().map(|f| f.clone()).unwrap_or_default();
    failed.sort_by_key(|r| r.spec.seed);
    for (i, r) in failed.iter().enumerate() {
        // Shrinking and tracing re-run the seed: do it for the first few failures only.
        if i < 3 {
            report_failure(r, args.trace_lines, !args.no_shrink);
        } else if let Err(f) = &r.outcome {
            println!("FAILED seed {}: {f}", r.spec.seed);
            println!("reproduce: {}", runner::reproduce_line(&r.spec));
        }
    }
    let p = passed.load(Ordering::Relaxed);
    eprintln!("elapsed {:.1}s", start.elapsed().as_secs_f64());
    if let Ok(w) = worst.lock() {
        eprintln!(
            "slowest recovery after healing: {} us simulated (seed {}); bound {} us",
            w.0,
            w.1,
            keel_tests::world::LIVENESS_BOUND_US
        );
    }
    if args.expect_caught {
        let name = args.mutation.as_deref().unwrap_or("(no mutation)");
        match failed.first() {
            Some(r) => {
                println!("caught: {name} by seed {}", r.spec.seed);
                return Ok(());
            }
            None => {
                println!("NOT caught: {name} survived seeds {a}..{b}");
                println!("{p} passed, 0 failed");
                std::process::exit(1);
            }
        }
    }
    println!("{p} passed, {} failed", failed.len());
    if !failed.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
