//! A few random seeds of the full simulator, in the debug build (the long ranges run in release
//! through `keel-sim --seeds`, see `tests/run-all`).

use keel_tests::runner;
use keel_tests::world::RunSpec;

#[test]
fn the_first_seeds_pass_with_every_fault_kind_on() {
    for seed in 0..2 {
        let r = runner::run(RunSpec::new(seed));
        if let Err(f) = &r.outcome {
            panic!(
                "seed {seed} failed: {f}\nreproduce: {}",
                runner::reproduce_line(&r.spec)
            );
        }
    }
}

#[test]
fn a_seed_reproduces_its_run_exactly() {
    let spec = RunSpec {
        trace_lines: 50,
        ..RunSpec::new(42)
    };
    let a = runner::run(spec.clone());
    let b = runner::run(spec);
    assert_eq!(a.outcome, b.outcome);
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.trace.len(), 50);
}
