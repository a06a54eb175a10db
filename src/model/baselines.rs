//! Baselines that need no training, scored on exactly the same candidates as the models:
//! the production heuristic, random scores (the floor) and the oracle (clean relevance,
//! the ceiling). The learned baselines (`mlp`, and the cross-attention scorer) train
//! through `ssmkit train` like the SSMs.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::data::UserSeq;
use crate::features::{FEATURE_DIM, feat};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// `importance × 0.95^clip(expm1(log_age), 0, 365)`, the production rule as the PoC
    /// computes it from the feature vector (no pinned flag is in the vector).
    Heuristic,
    /// Uniform random scores from the given generator.
    Random,
    /// The clean relevance probability: what a perfect model of the generator would say.
    Oracle,
}

/// Scores of turn `t`'s `k` candidates.
pub fn scores(kind: Baseline, u: &UserSeq, t: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..k)
        .map(|c| {
            let row = (t * k + c) * FEATURE_DIM;
            match kind {
                Baseline::Heuristic => {
                    let x = &u.features[row..row + FEATURE_DIM];
                    let age_days = (x[feat::LOG_AGE] as f64).exp_m1().clamp(0.0, 365.0);
                    x[feat::IMPORTANCE] as f64 * 0.95f64.powf(age_days)
                }
                Baseline::Random => rng.random_range(0.0..1.0),
                Baseline::Oracle => u.relevance[t * k + c] as f64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_matches_the_production_rule() {
        let mut u = UserSeq {
            turns: 1,
            ..Default::default()
        };
        u.features = vec![0.0; 2 * FEATURE_DIM];
        u.relevance = vec![0.2, 0.7];
        // Candidate 0: importance 0.8, 10 days old → 0.8 · 0.95^10.
        u.features[feat::IMPORTANCE] = 0.8;
        u.features[feat::LOG_AGE] = 10f32.ln_1p();
        // Candidate 1: importance 0.5, 1000 days old → the age is clipped at 365.
        u.features[FEATURE_DIM + feat::IMPORTANCE] = 0.5;
        u.features[FEATURE_DIM + feat::LOG_AGE] = 1000f32.ln_1p();
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let s = scores(Baseline::Heuristic, &u, 0, 2, &mut rng);
        assert!((s[0] - 0.8 * 0.95f64.powi(10)).abs() < 1e-5, "{s:?}");
        assert!((s[1] - 0.5 * 0.95f64.powi(365)).abs() < 1e-9, "{s:?}");
        assert_eq!(
            scores(Baseline::Oracle, &u, 0, 2, &mut rng),
            vec![0.2f32 as f64, 0.7f32 as f64]
        );
    }
}
