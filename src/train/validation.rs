//! Validation: a model's listwise loss and metrics at 10 on the validation turns, and the
//! same numbers for the training-free systems (heuristic, random, oracle, history rules)
//! on the same turns.

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::batch::{Cutoffs, make_batch};
use crate::config::TrainConfig;
use crate::data::{Dataset, UserSeq};
use crate::metrics::{Metrics, case_metrics};
use crate::model::baselines::{self, Baseline};
use crate::model::mamba::ScanImpl;
use crate::model::scorer::{ModelConfig, Scorer};

/// Validation result at one step.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Validation {
    pub loss: f64,
    pub dcg10: f64,
    pub hr10: f64,
    pub ndcg10: f64,
}

impl Validation {
    /// Before any validation: no loss, zero metrics.
    pub fn none() -> Validation {
        Validation {
            loss: f64::NAN,
            dcg10: 0.0,
            hr10: 0.0,
            ndcg10: 0.0,
        }
    }
}

/// Scores turns in `[from, to)` of each user from its full history before them, with the
/// scan training uses; returns the mean listwise loss and the mean metrics at 10 over
/// scored turns with a relevant label (the loss is `train`'s, at its temperature).
pub fn validate(
    model: &Scorer,
    data: &Dataset,
    cut: &Cutoffs,
    cfg: &ModelConfig,
    train: &TrainConfig,
    scan: ScanImpl,
    device: &Device,
) -> Validation {
    let mut metrics = Vec::new();
    let mut loss_sum = 0.0;
    let mut loss_n = 0.0;
    for chunk in data.users.chunks(16) {
        let users: Vec<&UserSeq> = chunk.iter().collect();
        let lens: Vec<usize> = users.iter().map(|u| cut.test_start(u)).collect();
        if lens.iter().all(|&l| l == 0) {
            continue;
        }
        let b = make_batch(data, &users, &lens, cfg, device);
        let [_, t] = b.turn_mask.dims();
        // Loss over the validation turns only.
        let start: Vec<usize> = users.iter().map(|u| cut.train_end(u)).collect();
        let mut vmask = vec![0f32; users.len() * t];
        for (i, (&s0, &l)) in start.iter().zip(&lens).enumerate() {
            vmask[i * t + s0..i * t + l].fill(1.0);
        }
        let n: f32 = vmask.iter().sum();
        let vm = Tensor::<2>::from_data(TensorData::new(vmask, [users.len(), t]), device);
        let (scores, l) = model.scores_and_loss(&b, vm, scan, train.loss, train.temperature);
        let k = scores.dims()[2];
        let s: Vec<f32> = scores.try_into_vec_as::<f32>().expect("scores");
        let mask: Vec<f32> = b.turn_mask.clone().try_into_vec_as::<f32>().expect("mask");
        if n > 0.0 {
            let l: f32 = l.into_scalar();
            loss_sum += l as f64 * n as f64;
            loss_n += n as f64;
        }
        for (i, u) in users.iter().enumerate() {
            for ti in start[i]..lens[i] {
                if mask[i * t + ti] == 0.0 {
                    continue;
                }
                let labels: Vec<f64> = (0..k)
                    .map(|c| (u.labels[ti * k + c] * u.valid[ti * k + c]) as f64)
                    .collect();
                if labels.iter().all(|&l| l == 0.0) {
                    continue;
                }
                let sc: Vec<f64> = (0..k).map(|c| s[(i * t + ti) * k + c] as f64).collect();
                metrics.push(case_metrics(&sc, &labels, 10));
            }
        }
    }
    let m = Metrics::mean(&metrics);
    Validation {
        loss: if loss_n > 0.0 {
            loss_sum / loss_n
        } else {
            f64::NAN
        },
        dcg10: m.dcg,
        hr10: m.hr,
        ndcg10: m.ndcg,
    }
}

/// Validation numbers of a training-free baseline (heuristic, random, oracle) on the same
/// validation turns as [`validate`], for comparison.
pub fn baseline_validation(data: &Dataset, cut: &Cutoffs, kind: Baseline, seed: u64) -> Validation {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    validations_of(data, cut, 1, |u, t| {
        vec![baselines::scores(kind, u, t, data.k, &mut rng)]
    })
    .swap_remove(0)
}

/// The validation numbers of the training-free systems beside a trained model's: the
/// heuristic, random and oracle baselines, then every history rule, by name.
pub fn reference_validations(
    data: &Dataset,
    cut: &Cutoffs,
    seed: u64,
) -> Vec<(String, Validation)> {
    let mut rows: Vec<(String, Validation)> =
        [Baseline::Heuristic, Baseline::Random, Baseline::Oracle]
            .into_iter()
            .map(|kind| {
                (
                    format!("{kind:?}").to_lowercase(),
                    baseline_validation(data, cut, kind, seed),
                )
            })
            .collect();
    for (rule, v) in history_validations(data, cut) {
        rows.push((rule.name().to_string(), v));
    }
    rows
}

/// Validation numbers of every history rule (`crate::model::rules`), in
/// `HistoryRule::ALL` order, on the same validation turns as [`validate`].
pub fn history_validations(
    data: &Dataset,
    cut: &Cutoffs,
) -> Vec<(crate::model::rules::HistoryRule, Validation)> {
    use crate::model::rules::{HistoryRule, scores};
    let rules = HistoryRule::ALL;
    let all = validations_of(data, cut, rules.len(), |u, t| scores(u, t, data.k));
    rules.into_iter().zip(all).collect()
}
/// Validation numbers of `systems` training-free scorers: `score(u, t)` gives each one's
/// scores of the candidates of turn `t`.
fn validations_of(
    data: &Dataset,
    cut: &Cutoffs,
    systems: usize,
    mut score: impl FnMut(&UserSeq, usize) -> Vec<Vec<f64>>,
) -> Vec<Validation> {
    let k = data.k;
    let mut metrics = vec![Vec::new(); systems];
    for u in &data.users {
        for t in cut.train_end(u)..cut.test_start(u) {
            let labels: Vec<f64> = (0..k)
                .map(|c| (u.labels[t * k + c] * u.valid[t * k + c]) as f64)
                .collect();
            if labels.iter().all(|&l| l == 0.0) {
                continue;
            }
            for (m, s) in metrics.iter_mut().zip(score(u, t)) {
                m.push(case_metrics(&s, &labels, 10));
            }
        }
    }
    metrics
        .iter()
        .map(|m| {
            let m = Metrics::mean(m);
            Validation {
                loss: f64::NAN,
                dcg10: m.dcg,
                hr10: m.hr,
                ndcg10: m.ndcg,
            }
        })
        .collect()
}
