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
    let clean: Vec<&[f32]> = c.clean.iter().map(|v| v.as_slice()).collect();
    let mut feat: Vec<&mut [f32]> = c.feat.iter_mut().map(|v| v.as_mut_slice()).collect();
    let out = Observed {
        feat: &mut feat,
        mask: &mut c.mask,
        label: &mut c.label,
    };
    observe(&clean, &c.clean_label, out, sigma, cfg, rng)
}

/// Where [`observe`] writes one user's observed values, each of the user's rows long.
pub struct Observed<'a, 'b> {
    /// `[FEATURE_DIM][rows]` observed features.
    pub feat: &'a mut [&'b mut [f32]],
    /// Bit d set: feature d is missing (its value is 0).
    pub mask: &'a mut [u32],
    pub label: &'a mut [u8],
}

/// One user's observed features, missing flags and labels from its clean columns
/// (`clean[d][row]`, `clean_label[row]`), drawing from `rng` row by row. `gen` calls it
/// with the user's noise stream; a reader of a dataset whose observed columns were not
/// stored calls it with the same stream and gets the same values.
pub fn observe(
    clean: &[&[f32]],
    clean_label: &[u8],
    out: Observed,
    sigma: &[f64; FEATURE_DIM],
    cfg: &NoiseConfig,
    rng: &mut ChaCha8Rng,
) -> NoiseCounts {
    let mut counts = NoiseCounts::default();
    let rows = clean_label.len();
    out.mask.fill(0);
    for r in 0..rows {
        for (d, &sd) in sigma.iter().enumerate() {
            if cfg.missing > 0.0 && rng.random_bool(cfg.missing) {
                out.feat[d][r] = 0.0;
                out.mask[r] |= 1 << d;
                counts.missing_cells += 1;
                continue;
            }
            let mut x = clean[d][r];
            if cfg.corruption > 0.0 && rng.random_bool(cfg.corruption) {
                x = clean[d][rng.random_range(0..rows)];
                counts.corrupted_cells += 1;
            }
            if sd > 0.0 {
                let z: f64 = StandardNormal.sample(rng);
                x += (sd * z) as f32;
            }
            out.feat[d][r] = x;
        }
        if cfg.label_flip > 0.0 && rng.random_bool(cfg.label_flip) {
            out.label[r] = 1 - clean_label[r];
            counts.flipped_labels += 1;
        } else {
            out.label[r] = clean_label[r];
        }
    }
    counts
}
