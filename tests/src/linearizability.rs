//! A linearizability checker for histories of reads and writes on registers (one per key).
//!
//! Linearizability is compositional (Herlihy & Wing), so each key is checked on its own. Per key
//! the search is Wing & Gong's, with Lowe's memoisation: repeatedly pick an operation that may
//! go next (it was invoked before every not-yet-linearized completed operation returned), apply
//! it to the register, and backtrack on a mismatch; a (set of linearized operations, register
//! value) pair already explored is never explored again.
//!
//! Operations that never returned (the client timed out, its replica crashed) may have taken
//! effect or not: a pending write may be linearized anywhere after its invocation or left out,
//! and a pending read constrains nothing, so it is dropped.

use std::collections::{BTreeMap, HashSet};

/// What a client did to one register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegOp {
    /// Wrote a value.
    Write(u64),
    /// Read; `Some(observed)` once it returned (`observed` = `None` when the key was unset).
    Read(Option<Option<u64>>),
}

/// One operation of a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// Which client (for reports only).
    pub client: u64,
    /// Which register.
    pub key: u64,
    /// What it did.
    pub op: RegOp,
    /// When it was invoked (true time, microseconds).
    pub invoke_us: u64,
    /// When it returned; `None` if it never did.
    pub return_us: Option<u64>,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key whose sub-history has no linearization.
    pub key: u64,
    /// The operations on that key (sorted by invocation), for the report.
    pub ops: Vec<Operation>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "history of key {} is not linearizable ({} ops):",
            self.key,
            self.ops.len()
        )?;
        let skip = self.ops.len().saturating_sub(40);
        if skip > 0 {
            writeln!(f, "  ... {skip} earlier ops")?;
        }
        for o in &self.ops[skip..] {
            let ret = o.return_us.map_or("pending".to_string(), |r| r.to_string());
            writeln!(
                f,
                "  client {} {:?} [{} .. {}]",
                o.client, o.op, o.invoke_us, ret
            )?;
        }
        Ok(())
    }
}

/// Outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key has a linearization.
    Linearizable,
    /// Some key has none.
    NotLinearizable(Box<Violation>),
    /// The search for some key exceeded its budget (explored states) without an answer.
    Undecided {
        /// The key.
        key: u64,
    },
}

/// Checks a whole history, key by key; `budget` bounds the states explored per key.
pub fn check(history: &[Operation], budget: usize) -> Verdict {
    let mut by_key: BTreeMap<u64, Vec<Operation>> = BTreeMap::new();
    for o in history {
        if matches!(o.op, RegOp::Read(None)) {
            continue;
        }
        if let Some(r) = o.return_us {
            assert!(
                r >= o.invoke_us,
                "history: op returns before it is invoked: {o:?}"
            );
        }
        by_key.entry(o.key).or_default().push(*o);
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|o| (o.invoke_us, o.return_us.unwrap_or(u64::MAX)));
        match check_register(&ops, budget) {
            Some(true) => {}
            Some(false) => return Verdict::NotLinearizable(Box::new(Violation { key, ops })),
            None => return Verdict::Undecided { key },
        }
    }
    Verdict::Linearizable
}

/// Bit set over operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
}

/// Checks one register's history (sorted by invocation). `None`: budget exhausted.
fn check_register(ops: &[Operation], budget: usize) -> Option<bool> {
    let n = ops.len();
    let must = ops.iter().filter(|o| o.return_us.is_some()).count();
    let mut done = Bits::new(n);
    let mut done_must = 0usize;
    let mut value: Option<u64> = None;
    let mut seen: HashSet<(Bits, Option<u64>)> = HashSet::new();
    // Each frame: (op linearized at this depth, register value before it).
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    // Next candidate index to try at the current depth.
    let mut next_try = 0usize;
    loop {
        if done_must == must {
            return Some(true);
        }
        // The deadline: the earliest return among completed ops not yet linearized. Only ops
        // invoked before it may go next.
        let deadline = (0..n)
            .filter(|&i| !done.get(i))
            .filter_map(|i| ops[i].return_us)
            .min()
            .unwrap_or(u64::MAX);
        let mut advanced = false;
        let mut i = next_try;
        while i < n && ops[i].invoke_us <= deadline {
            if !done.get(i) {
                let after = match ops[i].op {
                    RegOp::Write(v) => Some(Some(v)),
                    RegOp::Read(Some(seen_v)) if seen_v == value => Some(value),
                    RegOp::Read(_) => None,
                };
                if let Some(new_value) = after {
                    done.flip(i);
                    if seen.insert((done.clone(), new_value)) {
                        if seen.len() > budget {
                            return None;
                        }
                        stack.push((i, value));
                        value = new_value;
                        if ops[i].return_us.is_some() {
                            done_must += 1;
                        }
                        next_try = 0;
                        advanced = true;
                        break;
                    }
                    done.flip(i);
                }
            }
            i += 1;
        }
        if advanced {
            continue;
        }
        // Backtrack.
        let Some((last, prev_value)) = stack.pop() else {
            return Some(false);
        };
        done.flip(last);
        if ops[last].return_us.is_some() {
            done_must -= 1;
        }
        value = prev_value;
        next_try = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(client: u64, v: u64, inv: u64, ret: Option<u64>) -> Operation {
        Operation {
            client,
            key: 0,
            op: RegOp::Write(v),
            invoke_us: inv,
            return_us: ret,
        }
    }
    fn r(client: u64, v: Option<u64>, inv: u64, ret: u64) -> Operation {
        Operation {
            client,
            key: 0,
            op: RegOp::Read(Some(v)),
            invoke_us: inv,
            return_us: Some(ret),
        }
    }
    fn ok(h: &[Operation]) -> bool {
        match check(h, 1_000_000) {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable(_) => false,
            Verdict::Undecided { .. } => panic!("undecided"),
        }
    }

    #[test]
    fn sequential_histories_are_checked_exactly() {
        assert!(ok(&[w(1, 1, 0, Some(1)), r(2, Some(1), 2, 3)]));
        assert!(ok(&[r(2, None, 0, 1), w(1, 1, 2, Some(3))]));
        assert!(
            !ok(&[w(1, 1, 0, Some(1)), r(2, None, 2, 3)]),
            "stale read after a write"
        );
        assert!(!ok(&[r(2, Some(5), 0, 1)]), "a value nobody wrote");
    }

    #[test]
    fn overlapping_operations_may_be_ordered_either_way() {
        // The read overlaps the write: it may see the old or the new value.
        assert!(ok(&[w(1, 1, 0, Some(10)), r(2, None, 5, 6)]));
        assert!(ok(&[w(1, 1, 0, Some(10)), r(2, Some(1), 5, 6)]));
    }

    #[test]
    fn a_read_that_goes_back_in_time_is_rejected() {
        // w1 then w2 complete; a later read sees w1: not linearizable.
        let h = [
            w(1, 1, 0, Some(1)),
            w(1, 2, 2, Some(3)),
            r(2, Some(1), 4, 5),
        ];
        assert!(!ok(&h));
        // Two sequential reads see 2 then 1 while both writes overlap them: the first read pins
        // w2 after w1, so the second cannot see 1 again.
        let h = [
            w(1, 1, 0, Some(100)),
            w(2, 2, 0, Some(100)),
            r(3, Some(2), 10, 20),
            r(3, Some(1), 30, 40),
        ];
        assert!(
            ok(&h),
            "w2 before the first read, then w1, then the second read"
        );
        let h = [
            w(1, 1, 0, Some(5)),
            w(2, 2, 6, Some(100)),
            r(3, Some(2), 10, 20),
            r(3, Some(1), 30, 40),
        ];
        assert!(!ok(&h), "w1 finished before w2 began, so 1 cannot follow 2");
    }

    #[test]
    fn pending_writes_may_or_may_not_take_effect() {
        assert!(ok(&[w(1, 1, 0, None), r(2, Some(1), 5, 6)]));
        assert!(ok(&[w(1, 1, 0, None), r(2, None, 5, 6)]));
        // ...but not before they were invoked.
        assert!(!ok(&[r(2, Some(1), 0, 1), w(1, 1, 5, None)]));
        // ...and once seen they stay (no flicker back).
        assert!(!ok(&[
            w(1, 1, 0, None),
            r(2, Some(1), 5, 6),
            r(2, None, 7, 8)
        ]));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut a = w(1, 1, 0, Some(1));
        a.key = 7;
        let b = r(2, None, 2, 3);
        assert!(ok(&[a, b]), "the read is of key 0, never written");
        let mut c = r(2, None, 2, 3);
        c.key = 7;
        match check(&[a, c], 1000) {
            Verdict::NotLinearizable(v) => assert_eq!(v.key, 7),
            other => panic!("expected a violation on key 7, got {other:?}"),
        }
    }

    #[test]
    fn a_large_concurrent_history_is_decided() {
        // 6 clients, 150 operations each, generated from a real sequential execution with
        // overlapping intervals: linearizable by construction.
        let mut rng = crate::rng::SimRng::new(11);
        let mut h = Vec::new();
        let mut value = None;
        let mut t = 0u64;
        for i in 0..900u64 {
            t += 10;
            let c = i % 6;
            let inv = t - rng.below(0, 25);
            let ret = t + rng.below(0, 25);
            if rng.chance(0.5) {
                value = Some(i);
                h.push(w(c, i, inv, Some(ret)));
            } else {
                h.push(r(c, value, inv, ret));
            }
        }
        assert!(ok(&h));
        // Corrupt one late read to a value long overwritten.
        let idx = h
            .iter()
            .rposition(|o| matches!(o.op, RegOp::Read(_)))
            .unwrap();
        let first_write = h.iter().find_map(|o| match o.op {
            RegOp::Write(v) => Some(v),
            _ => None,
        });
        h[idx].op = RegOp::Read(Some(first_write));
        assert!(!ok(&h));
    }
}
