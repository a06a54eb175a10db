//! Input ablations at evaluation time: the primary model with an input removed from
//! every sequence, against the full model on the same cases.

use burn::prelude::*;
use serde::Serialize;

use super::Unit;
use super::metrics::{case_row, metric_index};
use super::phase::EvalOptions;
use super::scoring::{System, model_scores};
use super::split::Case;
use super::stats::compare;
use crate::data::{Dataset, UserSeq};
use crate::model::scorer::{ModelConfig, Scorer};

/// DCG@10 of the primary model with an input removed at evaluation time.
#[derive(Clone, Debug, Serialize)]
pub struct Ablation {
    pub name: String,
    pub dcg10: f64,
    pub full_dcg10: f64,
    /// Mean of ablated − full per case, with its BCa interval.
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
}

#[allow(clippy::too_many_arguments)]
pub fn input_ablations(
    data: &Dataset,
    gts: &[Case],
    labels: &[Vec<f64>],
    models: &[(Scorer, ModelConfig)],
    full: &System,
    units: &[u64],
    opts: &EvalOptions,
    device: &Device,
) -> Vec<Ablation> {
    use crate::features::{FEATURE_DIM, feat};
    let m = metric_index("dcg@10");
    let time_cols = [
        feat::TOD_SIN,
        feat::TOD_COS,
        feat::DOW_SIN,
        feat::DOW_COS,
        feat::MOY_SIN,
        feat::MOY_COS,
        feat::LOG_SESSION_GAP,
    ];
    let kinds: [(&str, Ablate); 2] = [
        (
            "no temporal features (turn context and the candidates' time encodings zeroed)",
            |u, cols| {
                u.context.fill(0.0);
                for row in u.features.chunks_mut(FEATURE_DIM) {
                    for &c in cols {
                        row[c] = 0.0;
                    }
                }
            },
        ),
        (
            "no content features (query and memory embeddings zeroed)",
            |u, _| {
                u.query.fill(0.0);
                u.content.fill(0.0);
            },
        ),
    ];
    let all: Vec<usize> = (0..gts.len()).collect();
    kinds
        .iter()
        .map(|(name, ablate)| {
            let mut d = data.clone();
            for u in &mut d.users {
                ablate(u, &time_cols);
            }
            let mut per_case = vec![0.0; gts.len()];
            for (model, cfg) in models {
                let scores = model_scores(model, cfg, &d, gts, device);
                for (i, (s, l)) in scores.iter().zip(labels).enumerate() {
                    per_case[i] += case_row(s, l)[m] / models.len() as f64;
                }
            }
            let diffs: Vec<f64> = per_case
                .iter()
                .zip(&full.cases)
                .map(|(a, f)| a - f[m])
                .collect();
            let c = compare(
                &diffs,
                (opts.unit == Unit::User).then_some(units),
                &opts.compare,
            );
            Ablation {
                name: name.to_string(),
                dcg10: per_case.iter().sum::<f64>() / per_case.len().max(1) as f64,
                full_dcg10: full.mean(m, &all),
                difference: c.theta_hat,
                ci_low: c.ci_low,
                ci_high: c.ci_high,
                p_value: c.p_value,
            }
        })
        .collect()
}

/// Removes an input from a sequence (the columns are the candidates' time encodings).
type Ablate = fn(&mut UserSeq, &[usize]);
