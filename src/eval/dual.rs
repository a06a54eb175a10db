//! The dual-error test (SynTSBench, seed "Validation Contracts"): a model that learned
//! the planted signal sits closer to the clean truth than to the noisy labels it was
//! trained on; one that memorized the labels sits on them.
//!
//! For each contract canary, over its candidates in the given turns: MSE_Obs = mean
//! (p − label)², MSE_True = mean (p − relevance)². Labels are Bernoulli draws from the
//! relevance, so even the truth misses the labels by the **floor** F = mean (label −
//! relevance)² (the irreducible E[r(1 − r)] plus label flips), and any predictor that did
//! not see the label noise has MSE_Obs ≈ MSE_True + F. A canary passes when
//! - the predictor keeps its distance from the labels: MSE_Obs − MSE_True > F / 2 (a
//!   label memorizer has MSE_Obs − MSE_True ≈ −F), and
//! - it learned the signal: its **skill** 1 − MSE_True / MSE_base > [`MIN_SKILL`], where
//!   MSE_base is the MSE_True of the best constant for the canary, its mean relevance:
//!   a predictor that only knows which memories belong to the canary scores 0, so skill
//!   means the rule that moves the canary's relevance (weekday, selector, age, version)
//!   was learned. A canary whose relevance nothing moves (burst: a fixed level) is its
//!   level, and is compared with the constant at the turns' base rate instead.

use serde::Serialize;

use super::canary::softmax_relevance;
use super::scoring::mean_relevant;
use super::split::Case;
use crate::data::Dataset;
use crate::features::Canary;

/// Least skill over the base-rate constant for a canary to pass.
pub const MIN_SKILL: f64 = 0.1;

/// The dual-error test of one system on one canary's candidates.
#[derive(Clone, Debug, Serialize)]
pub struct DualError {
    pub canary: Canary,
    pub n: usize,
    /// Mean squared error against the observed (noisy) labels.
    pub mse_obs: f64,
    /// Mean squared error against the clean relevance.
    pub mse_true: f64,
    /// Mean (label − relevance)²: the MSE_Obs of the truth itself.
    pub floor: f64,
    /// MSE_True of the best constant for the canary (its mean relevance; the turns' base
    /// rate where its relevance does not vary).
    pub mse_base: f64,
    /// 1 − MSE_True / MSE_base.
    pub skill: f64,
    pub pass: bool,
}

impl DualError {
    fn judged(
        canary: Canary,
        n: usize,
        mse_obs: f64,
        mse_true: f64,
        floor: f64,
        mse_base: f64,
    ) -> DualError {
        let skill = 1.0 - mse_true / mse_base.max(1e-12);
        DualError {
            canary,
            n,
            mse_obs,
            mse_true,
            floor,
            mse_base,
            skill,
            pass: n > 0 && skill > MIN_SKILL && mse_obs - mse_true > floor / 2.0,
        }
    }
}

/// Mean observed label over the valid candidates of `turns`: the constant predictor.
pub fn base_rate(data: &Dataset, turns: &[Case]) -> f64 {
    let k = data.k;
    let (mut s, mut n) = (0.0f64, 0.0f64);
    for c in turns {
        let u = &data.users[c.user];
        for j in 0..k {
            let slot = c.turn * k + j;
            if u.valid[slot] == 1.0 {
                s += u.labels[slot] as f64;
                n += 1.0;
            }
        }
    }
    s / n.max(1.0)
}

/// The test for every contract canary; `predicted[i][j]` is the predicted relevance
/// probability of candidate j of `turns[i]`.
pub fn dual_error(data: &Dataset, turns: &[Case], predicted: &[Vec<f64>]) -> Vec<DualError> {
    let k = data.k;
    let base = base_rate(data, turns);
    Canary::CONTRACT
        .iter()
        .map(|&c| {
            let (mut obs, mut tru, mut floor, mut n) = (0.0, 0.0, 0.0, 0usize);
            let mut truth = Vec::new();
            for (case, p) in turns.iter().zip(predicted) {
                let u = &data.users[case.user];
                for (j, &pj) in p.iter().enumerate().take(k) {
                    let slot = case.turn * k + j;
                    if u.valid[slot] == 1.0 && u.canary[slot] & c.bit() != 0 {
                        let (l, r) = (u.labels[slot] as f64, u.relevance[slot] as f64);
                        obs += (pj - l).powi(2);
                        tru += (pj - r).powi(2);
                        floor += (l - r).powi(2);
                        truth.push(r);
                        n += 1;
                    }
                }
            }
            let nf = n.max(1) as f64;
            let level = truth.iter().sum::<f64>() / nf;
            let spread = truth.iter().map(|r| (r - level).powi(2)).sum::<f64>() / nf;
            let mse_base = if spread > 1e-6 {
                spread
            } else {
                truth.iter().map(|r| (base - r).powi(2)).sum::<f64>() / nf
            };
            DualError::judged(c, n, obs / nf, tru / nf, floor / nf, mse_base)
        })
        .collect()
}

/// The mean over seeds of each canary's errors, judged again.
pub fn average(runs: &[Vec<DualError>]) -> Vec<DualError> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let n = runs.len() as f64;
    first
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let m = |f: fn(&DualError) -> f64| runs.iter().map(|r| f(&r[i])).sum::<f64>() / n;
            DualError::judged(
                d.canary,
                d.n,
                m(|d| d.mse_obs),
                m(|d| d.mse_true),
                d.floor,
                d.mse_base,
            )
        })
        .collect()
}

/// The dual-error test of the primary model's seeds (`scores[seed][case]`, at their
/// `scales`) on `cases`, averaged over the seeds: on the training turns, where noise
/// could be memorized, and on the test cases.
pub(super) fn model_dual(
    data: &Dataset,
    cases: &[Case],
    scores: &[Vec<Vec<f64>>],
    scales: &[f64],
) -> Vec<DualError> {
    let k = data.k;
    let per_turn = mean_relevant(data, cases);
    let per_seed: Vec<Vec<DualError>> = scores
        .iter()
        .zip(scales)
        .map(|(scores, &scale)| {
            let probs: Vec<Vec<f64>> = cases
                .iter()
                .zip(scores)
                .map(|(c, s)| {
                    let u = &data.users[c.user];
                    let s: Vec<f64> = s.iter().map(|x| scale * x).collect();
                    softmax_relevance(&s, &u.valid[c.turn * k..(c.turn + 1) * k], per_turn)
                })
                .collect();
            dual_error(data, cases, &probs)
        })
        .collect();
    average(&per_seed)
}
