//! Turn-relative features: each candidate seen against the other candidates of its turn.
//!
//! A pointwise scorer reads one candidate at a time, so it cannot tell "the youngest
//! quarter of this turn" or "close to the first candidate" (the retriever's top hit) from
//! the candidate's own numbers. For every feature `d` these features give
//!
//! - `rank_d`: the share of the turn's other candidates with a smaller value (ties count
//!   half), in [0, 1]; 0.5 for a turn of one candidate;
//! - `first_d`: `|x_d − x_first,d|`, the distance from the turn's first candidate;
//! - `top_d`, `bottom_d`: 1 when no other candidate of the turn has a larger (smaller)
//!   value, else 0: the turn's extremes, which a pointwise scorer cannot pick out of
//!   ranks without steep weights.
//!
//! Missing features read as 0, as the scorer reads them. The Burn model
//! (`ssmkit::train::batch::make_batch`) and the runtime (`ssmkit-runtime`) both call
//! [`turn_features`], so the two cannot drift apart.

use crate::features::FEATURE_DIM;

/// Turn-relative features per candidate: ranks, distances from the first candidate, top
/// flags, bottom flags (each `FEATURE_DIM` wide, in that order).
pub const RELATIVE_DIM: usize = 4 * FEATURE_DIM;

/// The turn-relative features `[K][RELATIVE_DIM]` of one turn's candidates, `features`
/// `[K][FEATURE_DIM]` (missing values already 0); candidates with `valid[i] == 0` (padding)
/// neither get features (zeros) nor count for the others.
pub fn turn_features(features: &[f32], valid: &[f32], k: usize) -> Vec<f32> {
    let mut out = vec![0f32; k * RELATIVE_DIM];
    let live: Vec<usize> = (0..k).filter(|&i| valid[i] == 1.0).collect();
    let Some(&first) = live.first() else {
        return out;
    };
    let x = |i: usize, d: usize| features[i * FEATURE_DIM + d];
    let n = live.len();
    let others = (n - 1) as f32;
    // Per feature, the live candidates in value order: a run of equal values at
    // positions [p, p + g) has p candidates below it and g − 1 ties (O(K log K)).
    let mut order = live.clone();
    for d in 0..FEATURE_DIM {
        // −0.0 equals 0.0 here, as with `==` (features are finite: refused at the door).
        order.sort_by(|&a, &b| {
            x(a, d)
                .partial_cmp(&x(b, d))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut p = 0;
        while p < n {
            let v = x(order[p], d);
            let g = order[p..].iter().take_while(|&&j| x(j, d) == v).count();
            for &i in &order[p..p + g] {
                let row = &mut out[i * RELATIVE_DIM..(i + 1) * RELATIVE_DIM];
                row[d] = if n == 1 {
                    0.5
                } else {
                    (p as f32 + 0.5 * (g - 1) as f32) / others
                };
                row[FEATURE_DIM + d] = (v - x(first, d)).abs();
                row[2 * FEATURE_DIM + d] = (p + g == n) as u8 as f32;
                row[3 * FEATURE_DIM + d] = (p == 0) as u8 as f32;
            }
            p += g;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A turn of candidates whose feature 0 is `v[i]` (the rest 0).
    fn turn(v: &[f32]) -> Vec<f32> {
        let mut f = vec![0f32; v.len() * FEATURE_DIM];
        for (i, &x) in v.iter().enumerate() {
            f[i * FEATURE_DIM] = x;
        }
        f
    }

    #[test]
    fn ranks_and_distances_by_hand() {
        // Values 3, 1, 2, 2 (padding last): ranks 1, 0, 0.5 ± ties, distances from 3.
        let f = turn(&[3.0, 1.0, 2.0, 2.0, 9.0]);
        let valid = [1.0, 1.0, 1.0, 1.0, 0.0];
        let r = turn_features(&f, &valid, 5);
        let rank = |i: usize| r[i * RELATIVE_DIM];
        let dist = |i: usize| r[i * RELATIVE_DIM + FEATURE_DIM];
        assert_eq!([rank(0), rank(1), rank(2), rank(3)], [1.0, 0.0, 0.5, 0.5]);
        assert_eq!([dist(0), dist(1), dist(2), dist(3)], [0.0, 2.0, 1.0, 1.0]);
        let top = |i: usize| r[i * RELATIVE_DIM + 2 * FEATURE_DIM];
        let bottom = |i: usize| r[i * RELATIVE_DIM + 3 * FEATURE_DIM];
        assert_eq!([top(0), top(1), top(2), top(3)], [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(
            [bottom(0), bottom(1), bottom(2), bottom(3)],
            [0.0, 1.0, 0.0, 0.0]
        );
        // A feature equal everywhere: every candidate is both top and bottom.
        assert_eq!((r[2 * FEATURE_DIM + 1], r[3 * FEATURE_DIM + 1]), (1.0, 1.0));
        // Padding gets nothing and does not count (9 would outrank everyone).
        assert!(r[4 * RELATIVE_DIM..].iter().all(|&x| x == 0.0));
        // A feature equal everywhere ranks in the middle and is 0 from the first.
        assert_eq!(r[1], 0.5);
        assert_eq!(r[FEATURE_DIM + 1], 0.0);
    }

    /// The definition, pair by pair (O(K²)).
    fn by_pairs(features: &[f32], valid: &[f32], k: usize) -> Vec<f32> {
        let mut out = vec![0f32; k * RELATIVE_DIM];
        let live: Vec<usize> = (0..k).filter(|&i| valid[i] == 1.0).collect();
        let x = |i: usize, d: usize| features[i * FEATURE_DIM + d];
        for &i in &live {
            for d in 0..FEATURE_DIM {
                let (mut below, mut ties, mut above) = (0.0, 0.0, 0.0);
                for &j in live.iter().filter(|&&j| j != i) {
                    if x(j, d) < x(i, d) {
                        below += 1.0;
                    } else if x(j, d) == x(i, d) {
                        ties += 1.0;
                    } else {
                        above += 1.0;
                    }
                }
                let row = &mut out[i * RELATIVE_DIM..];
                row[d] = if live.len() == 1 {
                    0.5
                } else {
                    (below + 0.5 * ties) / (live.len() - 1) as f32
                };
                row[FEATURE_DIM + d] = (x(i, d) - x(live[0], d)).abs();
                row[2 * FEATURE_DIM + d] = (above == 0.0) as u8 as f32;
                row[3 * FEATURE_DIM + d] = (below == 0.0) as u8 as f32;
            }
        }
        out
    }

    #[test]
    fn sorting_gives_the_pairwise_definition_with_ties_and_signed_zeros() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..50 {
            let k = rng.random_range(1..30);
            // Few distinct values, so ties are common; −0.0 beside 0.0.
            let features: Vec<f32> = (0..k * FEATURE_DIM)
                .map(|_| match rng.random_range(0..5) {
                    0 => -0.0,
                    1 => 0.0,
                    v => v as f32 * 0.5,
                })
                .collect();
            let valid: Vec<f32> = (0..k).map(|_| rng.random_bool(0.8) as u8 as f32).collect();
            assert_eq!(
                turn_features(&features, &valid, k),
                by_pairs(&features, &valid, k)
            );
        }
    }

    #[test]
    fn a_lone_candidate_ranks_in_the_middle_and_the_first_valid_one_is_the_anchor() {
        let f = turn(&[5.0, 7.0]);
        let r = turn_features(&f, &[0.0, 1.0], 2);
        assert_eq!(r[RELATIVE_DIM], 0.5);
        assert_eq!(r[RELATIVE_DIM + FEATURE_DIM], 0.0);
    }
}
