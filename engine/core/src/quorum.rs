//! Quorum arithmetic, kept in one place so it is table-tested once.

/// The smallest number of voters out of `voters` that forms a majority.
///
/// Any two majorities of the same voter set intersect; this is the property every Paxos
/// safety argument in this crate rests on. `majority(0)` is 1 so an empty voter set can never
/// be satisfied by zero acceptances.
pub const fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The `k`-th largest value among `values` (1-based), or `None` when there are fewer than `k`.
///
/// With `k = majority(n)` this is the highest value that a majority has reached: used for the
/// lease start (the oldest heartbeat a majority has acknowledged).
pub fn kth_largest(mut values: Vec<u64>, k: usize) -> Option<u64> {
    kth_largest_in(&mut values, k)
}

/// [`kth_largest`] in a buffer the caller reuses (reordered; allocates nothing).
pub fn kth_largest_in(values: &mut [u64], k: usize) -> Option<u64> {
    if k == 0 || values.len() < k {
        return None;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values.get(k - 1).copied()
}

/// [`kth_largest`] without allocating: `O(n²)` comparisons, for the handful of voters of a
/// membership on paths that run every tick. The `k`-th largest value is the largest one that at
/// least `k` values reach.
pub fn kth_largest_of<I>(values: I, k: usize) -> Option<u64>
where
    I: Iterator<Item = u64> + Clone,
{
    if k == 0 {
        return None;
    }
    values
        .clone()
        .filter(|&v| values.clone().filter(|&u| u >= v).count() >= k)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table: voters | majority | tolerated failures.
    const TABLE: &str = "
        0 1 0
        1 1 0
        2 2 0
        3 2 1
        4 3 1
        5 3 2
        6 4 2
        7 4 3
        9 5 4
    ";

    #[test]
    fn majority_table() {
        for line in TABLE.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let cols: Vec<usize> = line
                .split_whitespace()
                .map(|c| c.parse().unwrap())
                .collect();
            let (n, q, f) = (cols[0], cols[1], cols[2]);
            assert_eq!(majority(n), q, "majority({n})");
            if n > 0 {
                assert_eq!(n - majority(n), f, "failures tolerated by {n}");
                // Two majorities always intersect.
                assert!(2 * majority(n) > n, "majorities of {n} must intersect");
            }
        }
    }

    #[test]
    fn kth_largest_table() {
        let cases: &[(&[u64], usize, Option<u64>)] = &[
            (&[5, 1, 3], 2, Some(3)),
            (&[5, 1, 3], 1, Some(5)),
            (&[5, 1, 3], 3, Some(1)),
            (&[5, 1], 3, None),
            (&[7], 0, None),
            (&[4, 4, 2, 9, 9], 3, Some(4)),
        ];
        for (values, k, want) in cases {
            assert_eq!(kth_largest(values.to_vec(), *k), *want, "{values:?} k={k}");
            assert_eq!(
                kth_largest_of(values.iter().copied(), *k),
                *want,
                "{values:?} k={k} (allocation-free)"
            );
        }
    }
}
