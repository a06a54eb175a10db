//! Paired comparisons of two systems on the same cases (seed: "When +1% Is Not Enough"):
//! the BCa bootstrap confidence interval of the mean difference (Efron & Tibshirani,
//! ch. 14), the percentile interval, and the paired sign-flip permutation test.
//!
//! Resampling unit: a case, or a cluster of cases (a user): the bootstrap then draws
//! clusters with replacement and the jackknife leaves one cluster out; sign flips flip a
//! whole cluster. Random draws come from seeded streams in fixed chunks, so results do
//! not depend on the number of threads.

use rand::{RngExt, SeedableRng};
use rand_distr::{Binomial, Distribution};
use rand_pcg::Pcg64Mcg;
use rayon::prelude::*;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

/// Largest number of units for which the sign-flip test enumerates all 2^n patterns.
pub const MAX_EXACT_UNITS: usize = 20;

/// Relative slack when counting permutation statistics as extreme as the observed one.
pub const PERMUTATION_SLACK: f64 = 1e-12;

const CHUNKS: usize = 64;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Comparison {
    /// Paired cases.
    pub n: usize,
    /// Resampling units (cases, or clusters).
    pub n_units: usize,
    /// Mean of A − B.
    pub theta_hat: f64,
    /// BCa interval.
    pub ci_low: f64,
    pub ci_high: f64,
    pub percentile_ci_low: f64,
    pub percentile_ci_high: f64,
    pub confidence: f64,
    pub z0: f64,
    pub acceleration: f64,
    /// Two-sided sign-flip p-value.
    pub p_value: f64,
    /// The p-value enumerates every sign pattern (else Monte Carlo).
    pub exact: bool,
    pub n_resamples: usize,
    pub n_permutations: usize,
    /// All differences are equal: the intervals are the point and z0, a are 0.
    pub degenerate: bool,
    /// Significant: BCa lower bound > 0 and p < 0.05 (the seed's rule).
    pub significant: bool,
    pub note: Option<String>,
}

/// Standard normal.
fn normal() -> Normal {
    Normal::new(0.0, 1.0).expect("valid normal")
}

/// Quantile of sorted values with linear interpolation between order statistics
/// (position (n − 1)·q; numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    assert!(n > 0, "quantile of nothing");
    let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Bias correction z0 = Φ⁻¹((#{θ* < θ̂} + #{θ* ≤ θ̂}) / 2B); the proportion is clamped to
/// [1/2B, 1 − 1/2B] so that z0 stays finite.
pub fn bias_correction(boot: &[f64], theta_hat: f64) -> f64 {
    let b = boot.len() as f64;
    let below = boot.iter().filter(|&&t| t < theta_hat).count() as f64;
    let at_most = boot.iter().filter(|&&t| t <= theta_hat).count() as f64;
    let p = ((below + at_most) / (2.0 * b)).clamp(0.5 / b, 1.0 - 0.5 / b);
    normal().inverse_cdf(p)
}

/// Jackknife acceleration a = Σ(θ̄ − θ₍ᵢ₎)³ / (6 (Σ(θ̄ − θ₍ᵢ₎)²)^{3/2}); 0 when the
/// jackknife values are all equal.
pub fn acceleration(jackknife: &[f64]) -> f64 {
    let mean = jackknife.iter().sum::<f64>() / jackknife.len() as f64;
    let (mut s2, mut s3) = (0.0, 0.0);
    for &t in jackknife {
        let u = mean - t;
        s2 += u * u;
        s3 += u * u * u;
    }
    if s2 > 0.0 {
        s3 / (6.0 * s2.powf(1.5))
    } else {
        0.0
    }
}

/// The BCa interval from a bootstrap distribution, θ̂ and the jackknife values:
/// α₁,₂ = Φ(z0 + (z0 + z_α) / (1 − a (z0 + z_α))) at z_{α/2} and z_{1−α/2}.
/// Returns (low, high, z0, a).
pub fn bca_interval(
    boot_sorted: &[f64],
    theta_hat: f64,
    jackknife: &[f64],
    confidence: f64,
) -> (f64, f64, f64, f64) {
    let z0 = bias_correction(boot_sorted, theta_hat);
    let a = acceleration(jackknife);
    let nd = normal();
    let alpha = 1.0 - confidence;
    let adjust = |z: f64| nd.cdf(z0 + (z0 + z) / (1.0 - a * (z0 + z)));
    let lo = adjust(nd.inverse_cdf(alpha / 2.0));
    let hi = adjust(nd.inverse_cdf(1.0 - alpha / 2.0));
    (quantile(boot_sorted, lo), quantile(boot_sorted, hi), z0, a)
}

/// Groups case indices by unit. `units[i]` is case i's cluster label; `None`: each case
/// is its own unit. Returns per unit (sum of differences, case count).
fn unit_sums(diffs: &[f64], units: Option<&[u64]>) -> Vec<(f64, f64)> {
    match units {
        None => diffs.iter().map(|&d| (d, 1.0)).collect(),
        Some(labels) => {
            let mut index = std::collections::HashMap::new();
            let mut out: Vec<(f64, f64)> = Vec::new();
            for (&d, &u) in diffs.iter().zip(labels) {
                let slot = *index.entry(u).or_insert_with(|| {
                    out.push((0.0, 0.0));
                    out.len() - 1
                });
                out[slot].0 += d;
                out[slot].1 += 1.0;
            }
            out
        }
    }
}

fn chunk_rng(seed: u64, stream: u64, chunk: usize) -> Pcg64Mcg {
    Pcg64Mcg::seed_from_u64(
        seed ^ (stream << 56) ^ (chunk as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// Splits `total` draws into [`CHUNKS`] fixed chunks: (chunk index, draws).
fn chunks(total: usize) -> Vec<(usize, usize)> {
    (0..CHUNKS)
        .map(|c| (c, total / CHUNKS + usize::from(c < total % CHUNKS)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// Distinct values with their counts, when there are few of them (per-case metric
/// differences such as HR or precision take a handful of values): the resampling loops
/// then draw counts per value instead of one index per case, which is exact and much
/// faster. `None` when the values are too varied for that to pay.
fn distinct_values(values: &[f64]) -> Option<Vec<(f64, u64)>> {
    let limit = (values.len() / 16).max(64);
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut out: Vec<(f64, u64)> = Vec::new();
    for x in sorted {
        match out.last_mut() {
            Some((v, c)) if *v == x => *c += 1,
            _ => {
                if out.len() == limit {
                    return None;
                }
                out.push((x, 1));
            }
        }
    }
    Some(out)
}

/// An unbiased uniform index in 0..n from 32 random bits (Lemire's multiply-shift with
/// rejection), drawing fresh bits only when the rare rejection happens.
#[inline]
fn bounded(rng: &mut Pcg64Mcg, bits: u32, n: u32) -> u32 {
    let mut m = bits as u64 * n as u64;
    if (m as u32) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u32) < threshold {
            m = rng.random::<u32>() as u64 * n as u64;
        }
    }
    (m >> 32) as u32
}

/// Bootstrap distribution of the mean difference: each resample draws units with
/// replacement; the statistic is Σ sums / Σ counts of the drawn units.
fn bootstrap(units: &[(f64, f64)], resamples: usize, seed: u64) -> Vec<f64> {
    bootstrap_with(units, resamples, seed, true)
}

fn bootstrap_with(
    units: &[(f64, f64)],
    resamples: usize,
    seed: u64,
    allow_grouped: bool,
) -> Vec<f64> {
    let n = units.len();
    let equal_weights = units.iter().all(|u| u.1 == 1.0);
    let grouped = if equal_weights && allow_grouped {
        distinct_values(&units.iter().map(|u| u.0).collect::<Vec<_>>())
    } else {
        None
    };
    let sums: Vec<f64> = units.iter().map(|u| u.0).collect();
    let counts: Vec<f64> = units.iter().map(|u| u.1).collect();
    let mut out: Vec<f64> = chunks(resamples)
        .into_par_iter()
        .flat_map_iter(|(c, count)| {
            let mut rng = chunk_rng(seed, 1, c);
            let grouped = grouped.as_deref();
            let (sums, counts) = (&sums, &counts);
            (0..count)
                .map(move |_| match grouped {
                    // Multinomial counts of each value by sequential binomials.
                    Some(values) => {
                        let mut left = n as u64;
                        let mut mass = n as u64;
                        let mut s = 0.0;
                        for &(v, c) in values {
                            if left == 0 {
                                break;
                            }
                            let k = if c == mass {
                                left
                            } else {
                                Binomial::new(left, c as f64 / mass as f64)
                                    .expect("valid binomial")
                                    .sample(&mut rng)
                            };
                            s += v * k as f64;
                            left -= k;
                            mass -= c;
                        }
                        s / n as f64
                    }
                    None => {
                        let n32 = n as u32;
                        let (mut s, mut w) = ([0.0f64; 4], 0.0);
                        let mut drawn = 0;
                        while drawn < n {
                            let bits: u64 = rng.random();
                            for half in [bits as u32, (bits >> 32) as u32] {
                                if drawn < n {
                                    let i = bounded(&mut rng, half, n32) as usize;
                                    s[drawn & 3] += sums[i];
                                    if !equal_weights {
                                        w += counts[i];
                                    }
                                    drawn += 1;
                                }
                            }
                        }
                        let w = if equal_weights { n as f64 } else { w };
                        (s[0] + s[1] + s[2] + s[3]) / w
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// Jackknife values: the mean difference leaving out each unit in turn.
fn jackknife(units: &[(f64, f64)]) -> Vec<f64> {
    let (s, w) = units
        .iter()
        .fold((0.0, 0.0), |(s, w), u| (s + u.0, w + u.1));
    units.iter().map(|u| (s - u.0) / (w - u.1)).collect()
}

/// Two-sided paired sign-flip test of mean(A − B) = 0. Flips the sign of whole units;
/// counts patterns whose |Σ ±s_u| ≥ |observed| (1 − 1e-12). Exact by enumeration (Gray
/// code) up to [`MAX_EXACT_UNITS`] units: p = count / 2^n. Monte Carlo above:
/// p = (1 + count) / (1 + N). Returns (p, exact, patterns used).
pub fn sign_flip(unit_sum: &[f64], permutations: usize, seed: u64) -> (f64, bool, usize) {
    sign_flip_with(unit_sum, permutations, seed, true)
}

fn sign_flip_with(
    unit_sum: &[f64],
    permutations: usize,
    seed: u64,
    allow_grouped: bool,
) -> (f64, bool, usize) {
    let n = unit_sum.len();
    let observed: f64 = unit_sum.iter().sum::<f64>().abs();
    let threshold = observed - PERMUTATION_SLACK * observed;
    if n <= MAX_EXACT_UNITS {
        let total = 1usize << n;
        // Gray code: pattern g = i ^ (i >> 1) differs from the previous in one bit.
        let mut sum: f64 = unit_sum.iter().sum();
        let mut signs = vec![1.0f64; n];
        let mut count = (sum.abs() >= threshold) as usize;
        for i in 1..total {
            let bit = i.trailing_zeros() as usize;
            signs[bit] = -signs[bit];
            sum += 2.0 * signs[bit] * unit_sum[bit];
            // Recompute now and then to keep rounding from drifting.
            if i % 4096 == 0 {
                sum = signs.iter().zip(unit_sum).map(|(s, d)| s * d).sum();
            }
            count += (sum.abs() >= threshold) as usize;
        }
        return (count as f64 / total as f64, true, total);
    }
    let grouped = if allow_grouped {
        distinct_values(unit_sum)
    } else {
        None
    };
    let count: usize = chunks(permutations)
        .into_par_iter()
        .map(|(c, count)| {
            let mut rng = chunk_rng(seed, 2, c);
            let mut hits = 0usize;
            for _ in 0..count {
                let stat = match grouped.as_deref() {
                    // Each value's plus signs are Binomial(count, 1/2).
                    Some(values) => values
                        .iter()
                        .map(|&(v, c)| {
                            let plus = Binomial::new(c, 0.5)
                                .expect("valid binomial")
                                .sample(&mut rng);
                            v * (2 * plus) as f64 - v * c as f64
                        })
                        .sum::<f64>(),
                    // 64 sign bits per draw, applied to the sign bit of each value.
                    None => {
                        let mut acc = [0.0f64; 4];
                        for block in unit_sum.chunks(64) {
                            let bits: u64 = rng.random();
                            for (j, &d) in block.iter().enumerate() {
                                let flip = ((bits >> j) & 1) << 63;
                                acc[j & 3] += f64::from_bits(d.to_bits() ^ flip);
                            }
                        }
                        acc[0] + acc[1] + acc[2] + acc[3]
                    }
                };
                hits += (stat.abs() >= threshold) as usize;
            }
            hits
        })
        .sum();
    (
        (1 + count) as f64 / (1 + permutations) as f64,
        false,
        permutations,
    )
}

/// Options of a paired comparison.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    pub resamples: usize,
    pub permutations: usize,
    pub seed: u64,
    pub confidence: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            resamples: 10_000,
            permutations: 10_000,
            seed: 0,
            confidence: 0.95,
        }
    }
}

/// Compares paired per-case values: `diffs[i]` = A_i − B_i; `units` optionally clusters
/// cases (e.g. by user) for resampling.
pub fn compare(diffs: &[f64], units: Option<&[u64]>, opts: &CompareOptions) -> Comparison {
    assert!(!diffs.is_empty(), "no paired cases");
    assert!(opts.resamples > 0 && opts.permutations > 0);
    let n = diffs.len();
    let theta_hat = diffs.iter().sum::<f64>() / n as f64;
    let by_unit = unit_sums(diffs, units);
    let (p_value, exact, n_permutations) = sign_flip(
        &by_unit.iter().map(|u| u.0).collect::<Vec<_>>(),
        opts.permutations,
        opts.seed,
    );
    let degenerate = diffs.iter().all(|&d| d == diffs[0]);
    let (ci_low, ci_high, pl, ph, z0, a, note) = if degenerate {
        let note =
            format!("all {n} paired differences equal {theta_hat}: the interval is that point");
        (
            theta_hat,
            theta_hat,
            theta_hat,
            theta_hat,
            0.0,
            0.0,
            Some(note),
        )
    } else {
        let boot = bootstrap(&by_unit, opts.resamples, opts.seed);
        let jack = jackknife(&by_unit);
        let (lo, hi, z0, a) = bca_interval(&boot, theta_hat, &jack, opts.confidence);
        let alpha = 1.0 - opts.confidence;
        let note = (by_unit.len() < 2)
            .then(|| "one resampling unit: the jackknife is undefined, a = 0".to_string());
        (
            lo,
            hi,
            quantile(&boot, alpha / 2.0),
            quantile(&boot, 1.0 - alpha / 2.0),
            z0,
            a,
            note,
        )
    };
    Comparison {
        n,
        n_units: by_unit.len(),
        theta_hat,
        ci_low,
        ci_high,
        percentile_ci_low: pl,
        percentile_ci_high: ph,
        confidence: opts.confidence,
        z0,
        acceleration: if a.is_finite() { a } else { 0.0 },
        p_value,
        exact,
        n_resamples: if degenerate { 0 } else { opts.resamples },
        n_permutations,
        degenerate,
        significant: ci_low > 0.0 && p_value < 0.05,
        note,
    }
}

/// Compares two systems trained with several seeds each on the same cases, with seed
/// variance in the interval (a hierarchical bootstrap): `a[s][i]` is seed s of system A
/// on case i, likewise `b`; the statistic is the mean over cases of
/// mean_s a − `weight` · mean_s b (a `weight` of 1.1 tests "A ≥ 1.1 × B").
///
/// Each bootstrap replicate draws A's seeds and B's seeds with replacement, then units
/// (cases or users) with replacement; z0 comes from those replicates and the
/// acceleration from the jackknife over units of the seed-averaged differences (BCa).
/// The sign-flip test runs on the seed-averaged differences. With one seed per system
/// this is [`compare`] on those differences.
pub fn compare_seeds(
    a: &[Vec<f64>],
    b: &[Vec<f64>],
    weight: f64,
    units: Option<&[u64]>,
    opts: &CompareOptions,
) -> Comparison {
    assert!(!a.is_empty() && !b.is_empty(), "no seeds");
    let n = a[0].len();
    let seed_mean = |v: &[Vec<f64>], i: usize| v.iter().map(|s| s[i]).sum::<f64>() / v.len() as f64;
    let diffs: Vec<f64> = (0..n)
        .map(|i| seed_mean(a, i) - weight * seed_mean(b, i))
        .collect();
    let mut out = compare(&diffs, units, opts);
    let same_seeds = |v: &[Vec<f64>]| v.iter().all(|s| s == &v[0]);
    if (a.len() < 2 && b.len() < 2) || (out.degenerate && same_seeds(a) && same_seeds(b)) {
        return out;
    }
    // Per seed, per unit: the sums of the case values (units in the same order for every
    // seed, as `unit_sums` numbers them by first appearance), and each unit's case count.
    let per_seed = |v: &[Vec<f64>]| -> Vec<Vec<f64>> {
        v.iter()
            .map(|s| unit_sums(s, units).into_iter().map(|u| u.0).collect())
            .collect()
    };
    let (ua, ub) = (per_seed(a), per_seed(b));
    let by_unit = unit_sums(&diffs, units);
    let counts: Vec<f64> = by_unit.iter().map(|u| u.1).collect();
    let n_units = counts.len();
    let mut boot: Vec<f64> = chunks(opts.resamples)
        .into_par_iter()
        .flat_map_iter(|(c, count)| {
            let mut rng = chunk_rng(opts.seed, 3, c);
            let (ua, ub, counts) = (&ua, &ub, &counts);
            (0..count)
                .map(move |_| {
                    let sa: Vec<usize> = (0..ua.len())
                        .map(|_| rng.random_range(0..ua.len()))
                        .collect();
                    let sb: Vec<usize> = (0..ub.len())
                        .map(|_| rng.random_range(0..ub.len()))
                        .collect();
                    let (mut s, mut w) = (0.0, 0.0);
                    for _ in 0..n_units {
                        let u = rng.random_range(0..n_units);
                        let va = sa.iter().map(|&k| ua[k][u]).sum::<f64>() / sa.len() as f64;
                        let vb = sb.iter().map(|&k| ub[k][u]).sum::<f64>() / sb.len() as f64;
                        s += va - weight * vb;
                        w += counts[u];
                    }
                    s / w
                })
                .collect::<Vec<_>>()
        })
        .collect();
    boot.sort_by(f64::total_cmp);
    let jack = jackknife(&by_unit);
    let z0 = bias_correction(&boot, out.theta_hat);
    let acc = acceleration(&jack);
    let acc = if acc.is_finite() { acc } else { 0.0 };
    let nd = normal();
    let alpha = 1.0 - opts.confidence;
    let adjust = |z: f64| nd.cdf(z0 + (z0 + z) / (1.0 - acc * (z0 + z)));
    let lo = quantile(&boot, adjust(nd.inverse_cdf(alpha / 2.0)));
    let hi = quantile(&boot, adjust(nd.inverse_cdf(1.0 - alpha / 2.0)));
    out.ci_low = lo;
    out.ci_high = hi;
    out.percentile_ci_low = quantile(&boot, alpha / 2.0);
    out.percentile_ci_high = quantile(&boot, 1.0 - alpha / 2.0);
    out.z0 = z0;
    out.acceleration = acc;
    out.degenerate = false;
    out.n_resamples = opts.resamples;
    out.significant = out.ci_low > 0.0 && out.p_value < 0.05;
    out.note = Some(format!(
        "hierarchical bootstrap: {} × {} seeds, then {} units",
        a.len(),
        b.len(),
        n_units
    ));
    out
}

/// One paired comparison as the report lists it: which split, metric and systems.
#[derive(Clone, Debug, Serialize)]
pub struct ComparisonRow {
    pub split: String,
    pub metric: String,
    pub a: String,
    pub b: String,
    pub mean_a: f64,
    pub mean_b: f64,
    #[serde(flatten)]
    pub stats: Comparison,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_variance_widens_the_interval_as_worked_by_hand() {
        // Every case's seed-averaged difference is 1; seed 1 of A is 0.5 above it, seed 2
        // 0.5 below. Resampling two seeds gives +0.5 (¼), 0 (½) or −0.5 (¼) on top of 1,
        // and resampling cases adds nothing: the 95% interval is [0.5, 1.5] (z0 = 0 by
        // symmetry, a = 0 for equal jackknife values).
        let a = vec![vec![1.5; 40], vec![0.5; 40]];
        let b = vec![vec![0.0; 40]];
        let opts = CompareOptions {
            resamples: 4000,
            ..CompareOptions::default()
        };
        let c = compare_seeds(&a, &b, 1.0, None, &opts);
        assert_eq!(c.theta_hat, 1.0);
        assert!(
            (c.ci_low - 0.5).abs() < 1e-12 && (c.ci_high - 1.5).abs() < 1e-12,
            "{c:?}"
        );
        // One seed each: the ordinary paired comparison of the differences.
        let one = compare_seeds(&a[..1], &b, 1.0, None, &opts);
        let diffs = vec![1.5; 40];
        assert_eq!(one, compare(&diffs, None, &opts));
        // A weight tests a margin: A − 1.1 B.
        let bb = vec![vec![1.0; 40]];
        let w = compare_seeds(&a, &bb, 1.1, None, &opts);
        assert!((w.theta_hat - (1.0 - 1.1)).abs() < 1e-12);
    }

    #[test]
    fn hierarchical_interval_matches_the_plain_one_when_seeds_agree() {
        let base: Vec<f64> = (0..30)
            .map(|i| ((i * 7) % 11) as f64 / 10.0 - 0.3)
            .collect();
        let a = vec![base.clone(), base.clone(), base.clone()];
        let b = vec![vec![0.0; 30]];
        let opts = CompareOptions {
            resamples: 2000,
            ..CompareOptions::default()
        };
        let h = compare_seeds(&a, &b, 1.0, None, &opts);
        let plain = compare(&base, None, &opts);
        assert!((h.theta_hat - plain.theta_hat).abs() < 1e-12);
        assert!((h.p_value - plain.p_value).abs() < 1e-9);
        // Same distribution, other random draws: the bounds agree to resampling noise.
        assert!((h.ci_low - plain.ci_low).abs() < 0.03, "{h:?} {plain:?}");
        assert!((h.ci_high - plain.ci_high).abs() < 0.03, "{h:?} {plain:?}");
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn acceleration_matches_a_hand_computed_jackknife() {
        // d = [0, 0, 0, 1]: θ₍ᵢ₎ = [1/3, 1/3, 1/3, 0], θ̄ = 1/4,
        // u = θ̄ − θ₍ᵢ₎ = [−1/12, −1/12, −1/12, 1/4];
        // Σu³ = −3/1728 + 27/1728 = 1/72, Σu² = 3/144 + 9/144 = 1/12,
        // a = (1/72) / (6 (1/12)^{3/2}) = 12^{3/2} / 432 = 0.0962250448649376.
        let units = unit_sums(&[0.0, 0.0, 0.0, 1.0], None);
        let jack = jackknife(&units);
        assert!(close(jack[0], 1.0 / 3.0, 1e-15) && close(jack[3], 0.0, 1e-15));
        assert!(close(acceleration(&jack), 0.096_225_044_864_937_6, 1e-12));
    }

    #[test]
    fn bca_matches_hand_computed_interval() {
        // Bootstrap values 1..=10, θ̂ = 5, a from the jackknife above.
        // z0 = Φ⁻¹((4 + 5) / 20) = Φ⁻¹(0.45) = −0.125661346855074.
        // α₁ = Φ(z0 + (z0 − 1.959964) / (1 − a (z0 − 1.959964))) = 0.0312533304626099,
        // α₂ = Φ(z0 + (z0 + 1.959964) / (1 − a (z0 + 1.959964))) = 0.982214667319936.
        // Quantiles at positions 9·α: 1 + 9·0.03125333 = 1.28128, 1 + 9·0.98221467 = 9.83993.
        let boot: Vec<f64> = (1..=10).map(f64::from).collect();
        let jack = jackknife(&unit_sums(&[0.0, 0.0, 0.0, 1.0], None));
        let (lo, hi, z0, a) = bca_interval(&boot, 5.0, &jack, 0.95);
        assert!(close(z0, -0.125_661_346_855_074, 1e-9), "z0 {z0}");
        assert!(close(a, 0.096_225_044_864_937_6, 1e-12));
        assert!(close(lo, 1.281_279_974_163_489, 1e-7), "low {lo}");
        assert!(close(hi, 9.839_932_005_879_422, 1e-7), "high {hi}");
        // The percentile interval of the same values: positions 9·0.025, 9·0.975.
        assert!(close(quantile(&boot, 0.025), 1.225, 1e-12));
        assert!(close(quantile(&boot, 0.975), 9.775, 1e-12));
    }

    #[test]
    fn sign_flip_enumeration_equals_the_closed_count() {
        // d = [1, 2, 3]: Σ±d ∈ {±6, ±4, ±2, 0, 0}; |Σ| ≥ 6 for 2 of 8 patterns.
        let (p, exact, n) = sign_flip(&[1.0, 2.0, 3.0], 100, 0);
        assert!(exact && n == 8);
        assert_eq!(p, 0.25);
        // For n ≤ 12, the Gray-code enumeration equals a direct count over all masks.
        let d = [
            0.3, -1.2, 2.5, 0.7, -0.1, 1.9, 0.0, 3.3, -2.2, 0.4, 1.1, -0.6,
        ];
        for n in 1..=d.len() {
            let x = &d[..n];
            let obs: f64 = x.iter().sum::<f64>().abs();
            let count = (0..1u32 << n)
                .filter(|mask| {
                    let s: f64 = x
                        .iter()
                        .enumerate()
                        .map(|(i, v)| if mask >> i & 1 == 1 { -v } else { *v })
                        .sum();
                    s.abs() >= obs * (1.0 - PERMUTATION_SLACK)
                })
                .count();
            let (p, exact, _) = sign_flip(x, 10, 0);
            assert!(exact);
            assert_eq!(p, count as f64 / (1u64 << n) as f64, "n = {n}");
        }
    }

    #[test]
    fn monte_carlo_sign_flip_is_seeded_and_close_to_exact() {
        let d: Vec<f64> = (0..24)
            .map(|i| ((i * 37 % 11) as f64 - 4.0) / 3.0)
            .collect();
        let (p1, exact, _) = sign_flip(&d, 20_000, 5);
        let (p2, _, _) = sign_flip(&d, 20_000, 5);
        assert!(!exact);
        assert_eq!(p1, p2, "same seed, same p");
        // The exact p for the first 20 of them is a reference for the order of magnitude;
        // for the full vector compare with a normal approximation of the flip distribution.
        let obs: f64 = d.iter().sum::<f64>().abs();
        let sd = d.iter().map(|x| x * x).sum::<f64>().sqrt();
        let approx = 2.0 * (1.0 - normal().cdf(obs / sd));
        assert!(
            close(p1, approx, 0.05),
            "Monte Carlo p {p1} vs normal approximation {approx}"
        );
    }

    #[test]
    fn grouped_and_per_case_resampling_agree() {
        // HR-like differences in {−1, 0, 1}: the grouped (multinomial) path and the
        // per-case path draw from the same distribution.
        let mut rng = Pcg64Mcg::seed_from_u64(2);
        let d: Vec<f64> = (0..3000)
            .map(|_| [-1.0, 0.0, 0.0, 1.0, 1.0][rng.random_range(0..5)])
            .collect();
        assert!(distinct_values(&d).is_some_and(|v| v.len() == 3));
        let units = unit_sums(&d, None);
        let a = bootstrap_with(&units, 20_000, 1, true);
        let b = bootstrap_with(&units, 20_000, 1, false);
        let se = 0.0149; // sd of d / sqrt(n) ≈ 0.8 / 54.8
        for q in [0.025, 0.25, 0.5, 0.75, 0.975] {
            let (x, y) = (quantile(&a, q), quantile(&b, q));
            assert!(
                (x - y).abs() < 0.1 * se * 4.0,
                "q{q}: grouped {x}, per case {y}"
            );
        }
        // Shift to a small effect so the p-value is neither 0 nor 1.
        let small: Vec<f64> = d.iter().map(|x| x - 0.18).collect();
        let small = &small[..400];
        let (p1, _, _) = sign_flip_with(small, 40_000, 3, true);
        let (p2, _, _) = sign_flip_with(small, 40_000, 3, false);
        assert!((p1 - p2).abs() < 0.02, "grouped p {p1}, per case p {p2}");
    }

    #[test]
    fn bounded_draws_are_uniform() {
        let mut rng = Pcg64Mcg::seed_from_u64(4);
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            let bits: u32 = rng.random();
            counts[bounded(&mut rng, bits, 7) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn degenerate_input_gives_the_point_interval() {
        let c = compare(&[0.25; 30], None, &CompareOptions::default());
        assert!(c.degenerate);
        assert_eq!((c.ci_low, c.ci_high), (0.25, 0.25));
        assert!(c.note.is_some());
        // Flipping signs of equal positive values: only the all-plus and all-minus patterns
        // reach |mean| = 0.25, p = 2 / 2^30 (Monte Carlo with 30 units: ≈ 1 / 10001).
        assert!(c.p_value < 0.001);
        let z = compare(&[0.0; 5], None, &CompareOptions::default());
        assert_eq!(z.p_value, 1.0);
        assert!(!z.significant);
    }

    #[test]
    fn bca_covers_a_known_mean_and_detects_a_real_difference() {
        // Differences 0.1 + noise: the interval covers 0.1, excludes 0, and is significant.
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        let d: Vec<f64> = (0..400)
            .map(|_| 0.1 + rng.random_range(-1.0..1.0))
            .collect();
        let opts = CompareOptions {
            resamples: 4000,
            permutations: 4000,
            seed: 3,
            confidence: 0.95,
        };
        let c = compare(&d, None, &opts);
        assert!(c.ci_low < c.theta_hat && c.theta_hat < c.ci_high);
        // Standard error ≈ 0.577 / 20 ≈ 0.029: the interval is about ±0.057 wide.
        assert!(
            close(c.ci_high - c.ci_low, 2.0 * 1.96 * 0.0289, 0.02),
            "{c:?}"
        );
        assert!(c.significant, "{c:?}");
        // Same data shifted to mean zero: not significant.
        let m = c.theta_hat;
        let d0: Vec<f64> = d.iter().map(|x| x - m).collect();
        let c0 = compare(&d0, None, &opts);
        assert!(!c0.significant && c0.p_value > 0.5, "{c0:?}");
    }

    #[test]
    fn clustered_resampling_widens_the_interval_for_correlated_cases() {
        // 20 users × 20 cases; within a user all differences share a user effect.
        let mut rng = Pcg64Mcg::seed_from_u64(9);
        let mut d = Vec::new();
        let mut users = Vec::new();
        for u in 0..20u64 {
            let effect = rng.random_range(-1.0..1.0);
            for _ in 0..20 {
                d.push(effect + 0.05 * rng.random_range(-1.0..1.0));
                users.push(u);
            }
        }
        let opts = CompareOptions {
            resamples: 2000,
            permutations: 2000,
            seed: 1,
            confidence: 0.95,
        };
        let by_case = compare(&d, None, &opts);
        let by_user = compare(&d, Some(&users), &opts);
        assert_eq!(by_user.n_units, 20);
        let w_case = by_case.ci_high - by_case.ci_low;
        let w_user = by_user.ci_high - by_user.ci_low;
        assert!(w_user > 3.0 * w_case, "case {w_case}, user {w_user}");
        assert!(by_user.exact, "20 users: exact enumeration");
    }
}
