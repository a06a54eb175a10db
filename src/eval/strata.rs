//! Strata of the test cases: cold start (sessions the user has had) and sequence length
//! (the user's sessions in the whole dataset), each with the primary model against the
//! heuristic, and the crossover stratum.

use serde::Serialize;

use super::Unit;
use super::options::EvalOptions;
use super::scoring::System;
use super::split::{Case, TestSet};
use super::stats::compare;
use crate::data::Dataset;
use crate::metrics::metric_index;

/// One cold-start stratum: the primary model against the heuristic on its cases.
#[derive(Clone, Debug, Serialize)]
pub struct Stratum {
    pub name: String,
    pub sessions: String,
    pub cases: usize,
    pub users: usize,
    pub warm_users: usize,
    pub model_dcg10: f64,
    pub heuristic_dcg10: f64,
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
    pub significant: bool,
}

/// Cold-start strata: sessions the user has had, this one included.
pub const COLD_START: [(&str, u32, u32); 4] = [
    ("ice cold", 1, 3),
    ("warming", 4, 10),
    ("warm", 11, 50),
    ("hot", 51, u32::MAX),
];

/// Sequence-length strata: the user's sessions in the whole dataset.
pub const SEQUENCE_LENGTH: [(&str, u32, u32); 4] = [
    ("short", 1, 9),
    ("medium", 10, 50),
    ("long", 51, 200),
    ("very long", 201, u32::MAX),
];

/// The primary model against the heuristic (DCG@10) on the cases of each stratum, a case
/// falling in the stratum whose range holds `key(case)`.
#[allow(clippy::too_many_arguments)]
pub fn strata_of(
    strata: &[(&str, u32, u32)],
    key: impl Fn(&Case) -> u32,
    gts: &[Case],
    model: &System,
    heuristic: &System,
    units: &[u64],
    opts: &EvalOptions,
    data: &Dataset,
    split: &crate::model::batch::Cutoffs,
) -> Vec<Stratum> {
    let m = metric_index("dcg@10");
    strata
        .iter()
        .map(|&(name, lo, hi)| {
            let idx: Vec<usize> = (0..gts.len())
                .filter(|&i| (lo..=hi).contains(&key(&gts[i])))
                .collect();
            let sessions = if hi == u32::MAX {
                format!("{lo}+")
            } else {
                format!("{lo}–{hi}")
            };
            let (mut low, mut high, mut pv, mut sig, mut diff) =
                (f64::NAN, f64::NAN, f64::NAN, false, f64::NAN);
            if idx.len() >= 2 {
                let diffs: Vec<f64> = idx
                    .iter()
                    .map(|&i| model.cases[i][m] - heuristic.cases[i][m])
                    .collect();
                let u: Vec<u64> = idx.iter().map(|&i| units[i]).collect();
                let c = compare(
                    &diffs,
                    (opts.unit == Unit::User).then_some(&u[..]),
                    &opts.compare,
                );
                (low, high, pv, sig, diff) =
                    (c.ci_low, c.ci_high, c.p_value, c.significant, c.theta_hat);
            }
            let set = TestSet::of(data, idx.iter().map(|&i| &gts[i]), split);
            Stratum {
                name: name.into(),
                sessions,
                cases: idx.len(),
                users: set.users,
                warm_users: set.warm_users,
                model_dcg10: model.mean(m, &idx),
                heuristic_dcg10: heuristic.mean(m, &idx),
                difference: diff,
                ci_low: low,
                ci_high: high,
                p_value: pv,
                significant: sig,
            }
        })
        .collect()
}

/// The first stratum from which the model beats the heuristic significantly in every
/// stratum with cases.
pub fn crossover(strata: &[Stratum]) -> Option<String> {
    let with_cases: Vec<&Stratum> = strata.iter().filter(|s| s.cases > 0).collect();
    (0..with_cases.len())
        .find(|&i| {
            with_cases[i..]
                .iter()
                .all(|s| s.significant && s.difference > 0.0)
        })
        .map(|i| {
            format!(
                "{} ({} sessions)",
                with_cases[i].name, with_cases[i].sessions
            )
        })
}
