//! The noise injector (seed: "NoiseInjector"): Gaussian feature noise at a target SNR per
//! column, feature corruption, missing values with a mask, and label flips. It only
//! writes the observed columns; the clean ones stay as the simulator left them.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::tables::Candidates;
use crate::config::NoiseConfig;
use crate::features::FEATURE_DIM;

/// Population variance of each clean feature column over the given candidate tables.
pub fn column_variance<'a>(
    tables: impl Iterator<Item = &'a Candidates> + Clone,
) -> [f64; FEATURE_DIM] {
    let mut out = [0.0; FEATURE_DIM];
    for (d, v) in out.iter_mut().enumerate() {
        let (mut n, mut mean, mut m2) = (0f64, 0f64, 0f64);
        for t in tables.clone() {
            for &x in &t.clean[d] {
                // Welford's update.
                n += 1.0;
                let delta = x as f64 - mean;
                mean += delta / n;
                m2 += delta * (x as f64 - mean);
            }
        }
        *v = if n > 0.0 { m2 / n } else { 0.0 };
    }
    out
}

/// Noise standard deviation per column for a target SNR: σ² = Var(clean) / 10^(SNR/10).
pub fn sigma_for(variance: &[f64; FEATURE_DIM], snr_db: Option<f64>) -> [f64; FEATURE_DIM] {
    let mut out = [0.0; FEATURE_DIM];
    if let Some(snr) = snr_db {
        for (s, v) in out.iter_mut().zip(variance) {
            *s = (v / 10f64.powf(snr / 10.0)).sqrt();
        }
    }
    out
}

/// Measured SNR of a column in dB: 10·log10(Var(clean) / Var(observed − clean)), over the
/// cells that are neither missing nor corrupted; `None` if no noise was added.
pub fn measured_snr_db(clean: &[f32], observed: &[f32]) -> Option<f64> {
    let n = clean.len() as f64;
    let mean = |it: &mut dyn Iterator<Item = f64>| it.sum::<f64>() / n;
    let mc = mean(&mut clean.iter().map(|&x| x as f64));
    let me = mean(&mut clean.iter().zip(observed).map(|(&c, &o)| (o - c) as f64));
    let vc = mean(&mut clean.iter().map(|&x| (x as f64 - mc).powi(2)));
    let ve = mean(
        &mut clean
            .iter()
            .zip(observed)
            .map(|(&c, &o)| ((o - c) as f64 - me).powi(2)),
    );
    (ve > 0.0).then(|| 10.0 * (vc / ve).log10())
}

pub use crate::manifest::NoiseCounts;

/// Applies noise to one user's candidates in place.
pub fn apply(
    c: &mut Candidates,
    sigma: &[f64; FEATURE_DIM],
    cfg: &NoiseConfig,
    rng: &mut ChaCha8Rng,
) -> NoiseCounts {
    let mut counts = NoiseCounts::default();
    let rows = c.label.len();
    for r in 0..rows {
        for (d, &sd) in sigma.iter().enumerate() {
            if cfg.missing > 0.0 && rng.random_bool(cfg.missing) {
                c.feat[d][r] = 0.0;
                c.mask[r] |= 1 << d;
                counts.missing_cells += 1;
                continue;
            }
            let mut x = c.clean[d][r];
            if cfg.corruption > 0.0 && rng.random_bool(cfg.corruption) {
                x = c.clean[d][rng.random_range(0..rows)];
                counts.corrupted_cells += 1;
            }
            if sd > 0.0 {
                let z: f64 = StandardNormal.sample(rng);
                x += (sd * z) as f32;
            }
            c.feat[d][r] = x;
        }
        if cfg.label_flip > 0.0 && rng.random_bool(cfg.label_flip) {
            c.label[r] = 1 - c.clean_label[r];
            counts.flipped_labels += 1;
        } else {
            c.label[r] = c.clean_label[r];
        }
    }
    counts
}
