//! The canary suite (the seed's "Canary Pattern Tests"): probes, per-canary detection with a bootstrap
//! interval over probe sites (and seeds), PASS/FAIL, the SNR curve and the frequency
//! response.
//!
//! A **probe** is a GTS test case that holds a canary memory, copied with its history and
//! edited in one factor only at the probed turn: the time of the week (context and the
//! candidates' time encodings), the selector in the second focal slot (where the generator
//! puts selectors; sites are turns whose second slot holds no ordinary entity), or the
//! canary memory's age (`log_age`). The generator makes these edits exact: selectors have
//! no graph edges and no memories and do not shape the query, and no ordinary memory's
//! relevance depends on the weekday, so no other input of the probed turn would differ
//! had the generator drawn the edited turn. An age is edited only on a memory the user
//! was never shown before, so no history feature contradicts it.
//!
//! A canary is probed only where the user's own history can teach it: the probed memory's
//! entity was shown at least [`MIN_EVIDENCE`] times before ([`COMBINED_EVIDENCE`] for the
//! combined canary, whose three signals come from one entity's showings), and for selectivity,
//! dependency and combined at least once with the selector focal. The **observable
//! reference** ([`ObservableProbe`]) shows that a learner reading only what a model reads
//! can pass every canary on these sites; a canary gate it fails is INVALID for learned
//! models.
//!
//! **Identification.** A listwise softmax fixes logits only up to a per-turn constant,
//! so a version's value is the canary candidate's log-relevance *minus the mean
//! log-relevance of the turn's reference candidates* (memories without a canary role,
//! whose planted relevance no edit changes). A model's log-relevance is its score times a scale fitted
//! on validation turns (the temperature that best explains the validation labels); the
//! oracle's is the logarithm of the planted relevance, computed with the generator's own
//! rules ([`crate::canary::Rules`]) from the inputs it sees.
//!
//! | canary | value per site | statistic, PASS when |
//! |---|---|---|
//! | temporal_cycle | d = value(the user's peak) − value(3 days later) | exp(mean d) > 2 |
//! | recency_decay | slope of value over ages 0–14 d | −mean slope within 20% of λ |
//! | entity_selectivity | d = value(Z focal) − value(W focal) | exp(mean d) > 3 |
//! | supersession_chain | score margins of the adjacent versions present (newer − older) | ordered (every margin > 0) at every test point within sampling error: share ordered ≥ 95% and its interval reaches 1 |
//! | burst | Recall@10 of the burst memories | mean > 0.8 |
//! | cross_entity_dependency | d = value(P focal) − value(T focal) | mean d / rms d (the correlation of P focal with the centred values) > 0.7 |
//! | combined | for each signal (weekday, selector T against P, age), the difference between two versions that differ in that signal only | removing a signal costs (acc − ½)/acc of the accuracy; the smallest > 10% |
//!
//! Detection of a site is whether its value has the planted sign (a tie counts one half,
//! so a blind system detects 50%). Several seeds are averaged per site; the interval of a
//! statistic resamples seeds and sites (two-level percentile bootstrap), and a canary
//! passes only when its criterion holds over the whole 95% interval.
//!
//! Noise for the SNR curve is added to the clean features of every turn of a probe:
//! σ² = Var(clean column) / 10^(SNR/10), with the same standard normal draws at every
//! level (common random numbers), so the curve of a system is comparable across levels.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::split::Case;
use crate::canary::Rules;
use crate::data::Dataset;
use crate::features::Canary;

mod frequency;
mod observable;
mod probe;
mod sites;

pub use frequency::{FrequencyResponse, frequency_response};
pub use observable::ObservableProbe;
pub use probe::{
    COMBINED_EVIDENCE, ConstantProbe, Edit, MIN_EVIDENCE, ModelProbe, OracleProbe, ProbeScorer,
    Probes, RandomProbe, apply_edit, noise_sigma,
};
pub use sites::site_values;

/// Each probe site's value(s) for one system at one noise level, per canary in
/// [`Canary::CONTRACT`] order: `[canary][site][component]`.
pub type SiteValues = Vec<Vec<Vec<f64>>>;

/// SNR levels of the curve, in dB (`None`: the clean features).
pub const SNR_LEVELS: [Option<f64>; 6] = [
    None,
    Some(30.0),
    Some(20.0),
    Some(10.0),
    Some(0.0),
    Some(-10.0),
];

/// Ages (days) of the recency probes.
const AGES: [f64; 5] = [0.0, 3.5, 7.0, 10.5, 14.0];

/// Bootstrap resamples of a canary statistic's interval.
const CI_RESAMPLES: usize = 1000;

/// The outcome of one canary for one system at one noise level.
#[derive(Clone, Debug, Serialize)]
pub struct CanaryResult {
    pub canary: Canary,
    /// Probe sites.
    pub probes: usize,
    /// Fraction detected (ties count one half).
    pub detection: f64,
    /// The criterion's statistic (see the module table), with its 95% bootstrap interval.
    pub statistic: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub threshold: f64,
    pub pass: bool,
}

fn sign_share(v: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v
        .into_iter()
        .map(|d| {
            if d > 0.0 {
                1.0
            } else if d == 0.0 {
                0.5
            } else {
                0.0
            }
        })
        .collect();
    mean(&v)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Element-wise mean of several systems' (seeds') site values.
fn mean_sites(runs: &[&Vec<Vec<f64>>]) -> Vec<Vec<f64>> {
    let n = runs.len() as f64;
    runs[0]
        .iter()
        .enumerate()
        .map(|(i, site)| {
            (0..site.len())
                .map(|c| runs.iter().map(|r| r[i][c]).sum::<f64>() / n)
                .collect()
        })
        .collect()
}

/// A canary's statistic and detection from its (seed-averaged) site values.
fn statistic(canary: Canary, sites: &[Vec<f64>]) -> (f64, f64) {
    let first = |v: &[Vec<f64>]| -> Vec<f64> { v.iter().map(|s| s[0]).collect() };
    match canary {
        Canary::TemporalCycle | Canary::EntitySelectivity => {
            let d = first(sites);
            (mean(&d).exp(), sign_share(d))
        }
        Canary::RecencyDecay => {
            let s = first(sites);
            (-mean(&s), sign_share(s.iter().map(|x| -x)))
        }
        Canary::SupersessionChain => {
            let ordered: Vec<f64> = sites
                .iter()
                .map(|m| m.iter().all(|&d| d > 0.0) as u8 as f64)
                .collect();
            (mean(&ordered), mean(&ordered))
        }
        Canary::Burst => {
            let v = first(sites);
            (mean(&v), mean(&v))
        }
        Canary::CrossEntityDependency => {
            let d = first(sites);
            let rms = (d.iter().map(|v| v * v).sum::<f64>() / d.len().max(1) as f64).sqrt();
            let corr = if rms > 0.0 { mean(&d) / rms } else { 0.0 };
            (corr, sign_share(d))
        }
        Canary::Combined => {
            let acc: Vec<f64> = (0..3)
                .map(|s| sign_share(sites.iter().map(|v| v[s])))
                .collect();
            let drop = acc
                .iter()
                .map(|a| (a - 0.5) / a.max(1e-12))
                .fold(f64::INFINITY, f64::min);
            (drop, mean(&acc))
        }
        _ => (f64::NAN, f64::NAN),
    }
}

/// The criterion's threshold of each canary (the manifest's `criterion`).
pub fn threshold(canary: Canary, rules: &Rules) -> f64 {
    match canary {
        Canary::TemporalCycle => 2.0,
        Canary::RecencyDecay => rules.recency_lambda,
        Canary::EntitySelectivity => 3.0,
        Canary::SupersessionChain => 1.0,
        Canary::Burst => 0.8,
        Canary::CrossEntityDependency => 0.7,
        Canary::Combined => 0.10,
        _ => f64::NAN,
    }
}

/// Share of test points the supersession chain must be ordered at, beside an interval
/// that reaches every point (see [`passes`]).
pub const CHAIN_MIN_SHARE: f64 = 0.95;

/// Whether a canary's criterion holds for its statistic `stat` and 95% interval
/// `[lo, hi]` (see the module table): a "greater than" criterion needs the lower bound
/// above the threshold, the recency rate the whole interval within 20% of λ, and the
/// chain order at every test point within sampling error (the interval of the ordered
/// share reaches 1, and the share is at least [`CHAIN_MIN_SHARE`]). No probe never passes.
pub fn passes(canary: Canary, stat: f64, lo: f64, hi: f64, threshold: f64, probes: usize) -> bool {
    if probes == 0 || !lo.is_finite() || !hi.is_finite() {
        return false;
    }
    match canary {
        Canary::RecencyDecay => lo >= 0.8 * threshold && hi <= 1.2 * threshold,
        Canary::SupersessionChain => hi >= threshold && stat >= CHAIN_MIN_SHARE,
        _ => lo > threshold,
    }
}

/// Judges every canary from the site values of one or several seeds of a system: the
/// statistic of the seed-averaged sites, and its interval from resampling seeds, then
/// sites (percentile bootstrap, seeded).
pub fn judge(per_seed: &[SiteValues], rules: &Rules, seed: u64) -> Vec<CanaryResult> {
    Canary::CONTRACT
        .iter()
        .enumerate()
        .map(|(ci, &canary)| {
            let runs: Vec<&Vec<Vec<f64>>> = per_seed.iter().map(|s| &s[ci]).collect();
            let n = runs.first().map_or(0, |r| r.len());
            let threshold = threshold(canary, rules);
            if n == 0 {
                return CanaryResult {
                    canary,
                    probes: 0,
                    detection: f64::NAN,
                    statistic: f64::NAN,
                    ci_low: f64::NAN,
                    ci_high: f64::NAN,
                    threshold,
                    pass: false,
                };
            }
            let sites = mean_sites(&runs);
            let (stat, detection) = statistic(canary, &sites);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0xCA4A_0000 + ci as u64));
            let mut boot: Vec<f64> = (0..CI_RESAMPLES)
                .map(|_| {
                    let seeds: Vec<&Vec<Vec<f64>>> = (0..runs.len())
                        .map(|_| runs[rng.random_range(0..runs.len())])
                        .collect();
                    let averaged = mean_sites(&seeds);
                    let resampled: Vec<Vec<f64>> = (0..n)
                        .map(|_| averaged[rng.random_range(0..n)].clone())
                        .collect();
                    statistic(canary, &resampled).0
                })
                .filter(|v| v.is_finite())
                .collect();
            boot.sort_by(f64::total_cmp);
            let (lo, hi) = if boot.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                (
                    super::stats::quantile(&boot, 0.025),
                    super::stats::quantile(&boot, 0.975),
                )
            };
            CanaryResult {
                canary,
                probes: n,
                detection,
                statistic: stat,
                ci_low: lo,
                ci_high: hi,
                threshold,
                pass: passes(canary, stat, lo, hi, threshold, n),
            }
        })
        .collect()
}

/// Runs the canary suite for one system at one noise level (`None`: clean features).
pub fn run_suite(
    scorer: &dyn ProbeScorer,
    data: &Dataset,
    probes: &Probes,
    rules: &Rules,
    snr_db: Option<f64>,
    seed: u64,
) -> Vec<CanaryResult> {
    let values = site_values(&[scorer], data, probes, rules, snr_db, seed);
    judge(&values, rules, seed)
}

/// Mean detection over the canaries that have probes.
pub fn mean_detection(results: &[CanaryResult]) -> f64 {
    let v: Vec<f64> = results
        .iter()
        .filter(|r| r.probes > 0 && r.detection.is_finite())
        .map(|r| r.detection)
        .collect();
    mean(&v)
}

/// Relevance probabilities from a listwise model's scores: softmax over the turn's
/// candidates times the mean number of relevant labels per turn (`per_turn`).
pub fn softmax_relevance(scores: &[f64], valid: &[f32], per_turn: f64) -> Vec<f64> {
    let m = scores
        .iter()
        .zip(valid)
        .filter(|(_, v)| **v == 1.0)
        .map(|(s, _)| *s)
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores
        .iter()
        .zip(valid)
        .map(|(s, v)| if *v == 1.0 { (s - m).exp() } else { 0.0 })
        .collect();
    let z: f64 = e.iter().sum::<f64>().max(1e-300);
    e.iter().map(|x| (x / z * per_turn).min(1.0)).collect()
}

/// The scale `a` of a listwise model's scores that minimizes the softmax cross-entropy
/// of `a · score` against the turns' label distributions (golden-section search over
/// log a in [ln 0.02, ln 50]): the temperature the validation labels support.
pub fn fit_scale(scores: &[Vec<f64>], labels: &[Vec<f64>], valid: &[Vec<f32>]) -> f64 {
    let loss = |log_a: f64| -> f64 {
        let a = log_a.exp();
        let mut total = 0.0;
        for ((s, l), v) in scores.iter().zip(labels).zip(valid) {
            let sum_l: f64 = l.iter().sum();
            if sum_l <= 0.0 {
                continue;
            }
            let m = s
                .iter()
                .zip(v)
                .filter(|(_, v)| **v == 1.0)
                .map(|(x, _)| a * x)
                .fold(f64::NEG_INFINITY, f64::max);
            let log_z = s
                .iter()
                .zip(v)
                .filter(|(_, v)| **v == 1.0)
                .map(|(x, _)| (a * x - m).exp())
                .sum::<f64>()
                .ln()
                + m;
            for ((x, y), ok) in s.iter().zip(l).zip(v) {
                if *ok == 1.0 && *y > 0.0 {
                    total -= y / sum_l * (a * x - log_z);
                }
            }
        }
        total
    };
    let (mut lo, mut hi) = (0.02f64.ln(), 50f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut x1, mut x2) = (hi - g * (hi - lo), lo + g * (hi - lo));
    let (mut f1, mut f2) = (loss(x1), loss(x2));
    for _ in 0..60 {
        if f1 <= f2 {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - g * (hi - lo);
            f1 = loss(x1);
        } else {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + g * (hi - lo);
            f2 = loss(x2);
        }
    }
    ((lo + hi) / 2.0).exp()
}

/// The canary suite of the reference systems alone, at one noise level.
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceSuite {
    /// `None`: the clean features.
    pub snr_db: Option<f64>,
    /// The decay rate the observable reference learned on the training turns.
    pub observable_decay: f64,
    /// The weight the training turns' listwise likelihood gives the observable reference's
    /// weekly factor, which the reference applies at 1 ([`ObservableProbe::week_trust`]).
    pub observable_week_trust: f64,
    /// The scale of the rest of the observable reference's log-relevance fitted with it.
    pub observable_week_scale: f64,
    /// GTS test cases the probes were drawn from, and their users.
    pub cases: usize,
    pub users: usize,
    /// Probe sites per canary, in [`Canary::CONTRACT`] order.
    pub sites: [usize; 7],
    /// (system, its canary results), oracle, observable, random, constant.
    pub systems: Vec<(String, Vec<CanaryResult>)>,
}

/// Runs the canary suite of the oracle, the observable reference, random and the constant
/// scorer on the GTS `cases` of `data` at each of `snr_levels` (the probe sites chosen
/// once): whether the probes can pass for a learner, before any model is trained.
pub fn reference_suites(
    data: &Dataset,
    cases: &[Case],
    rules: &Rules,
    observable: &ObservableProbe,
    per_canary: usize,
    snr_levels: &[Option<f64>],
    seed: u64,
) -> Vec<ReferenceSuite> {
    let probes = Probes::build(data, cases, per_canary, seed);
    let users = {
        let mut u: Vec<usize> = cases.iter().map(|c| c.user).collect();
        u.dedup();
        u.len()
    };
    snr_levels
        .iter()
        .map(|&snr_db| {
            let (oracle, random) = (OracleProbe { rules }, RandomProbe::new(seed));
            let scorers: [&dyn ProbeScorer; 4] = [&oracle, observable, &random, &ConstantProbe];
            let values = site_values(&scorers, data, &probes, rules, snr_db, seed);
            ReferenceSuite {
                snr_db,
                observable_decay: observable.decay,
                observable_week_trust: observable.week_trust,
                observable_week_scale: observable.week_scale,
                cases: cases.len(),
                users,
                sites: probes.sites(),
                systems: ["oracle", "observable", "random", "constant"]
                    .iter()
                    .zip(values)
                    .map(|(name, v)| (name.to_string(), judge(&[v], rules, seed)))
                    .collect(),
            }
        })
        .collect()
}

impl ReferenceSuite {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "canary suite at {}: probe sites drawn from {} GTS cases of {} users (statistic [95% interval] detection, PASS/FAIL); the observable reference's learned decay rate {:.4}/day, and the weight the training turns' likelihood gives its weekly factor {:.3} with the rest of its log-relevance scaled by {:.3} (it applies 1 to both)\n{:<24} {:>6}",
            self.snr_db
                .map_or("clean features".to_string(), |d| format!("{d} dB")),
            self.cases,
            self.users,
            self.observable_decay,
            self.observable_week_trust,
            self.observable_week_scale,
            "canary",
            "sites"
        );
        for (name, _) in &self.systems {
            s += &format!(" {name:>34}");
        }
        s += "\n";
        for (i, canary) in Canary::CONTRACT.iter().enumerate() {
            s += &format!("{:<24} {:>6}", canary.name(), self.sites[i]);
            for (_, rs) in &self.systems {
                let r = &rs[i];
                let cell = format!(
                    "{:.3} [{:.3}, {:.3}] {:.2} {}",
                    r.statistic,
                    r.ci_low,
                    r.ci_high,
                    r.detection,
                    if r.pass { "PASS" } else { "FAIL" }
                );
                s += &format!(" {cell:>34}");
            }
            s += "\n";
        }
        s += &format!("{:<24} {:>6}", "mean detection", "");
        for (_, rs) in &self.systems {
            let passed = rs.iter().filter(|r| r.pass).count();
            let cell = format!("{:.3}, {passed}/7 pass", mean_detection(rs));
            s += &format!(" {cell:>34}");
        }
        s + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_passes_when_every_point_may_be_ordered() {
        let c = Canary::SupersessionChain;
        // 31 of 32 ordered: the interval reaches 1, the share is above 95%.
        assert!(passes(c, 31.0 / 32.0, 0.906, 1.0, 1.0, 32));
        // 29 of 32: below 95% even though the interval reaches 1.
        assert!(!passes(c, 29.0 / 32.0, 0.81, 1.0, 1.0, 32));
        // An interval that excludes 1 says some point is not ordered.
        assert!(!passes(c, 0.96, 0.9, 0.99, 1.0, 32));
        // No probe never passes.
        assert!(!passes(c, 1.0, 1.0, 1.0, 1.0, 0));
    }

    #[test]
    fn chain_statistic_orders_on_the_seeds_mean_margins() {
        // One site, two seeds: seed 1 misorders a pair by a little, seed 2 orders it by a
        // lot, so the seeds' mean margin is ordered.
        let seed1: SiteValues = vec![
            vec![],
            vec![],
            vec![],
            vec![vec![0.5, -0.1]],
            vec![],
            vec![],
            vec![],
        ];
        let seed2: SiteValues = vec![
            vec![],
            vec![],
            vec![],
            vec![vec![0.4, 0.6]],
            vec![],
            vec![],
            vec![],
        ];
        let r = judge(
            &[seed1.clone(), seed2],
            &Rules::from_config(&Default::default()),
            0,
        );
        let chain = &r[3];
        assert_eq!(chain.statistic, 1.0);
        let alone = judge(&[seed1], &Rules::from_config(&Default::default()), 0);
        assert_eq!(alone[3].statistic, 0.0);
        // A chain with two versions present leaves its second margin ordered.
        let two: SiteValues = vec![
            vec![],
            vec![],
            vec![],
            vec![vec![0.2, f64::INFINITY]],
            vec![],
            vec![],
            vec![],
        ];
        assert_eq!(
            judge(&[two], &Rules::from_config(&Default::default()), 0)[3].statistic,
            1.0
        );
    }
}
