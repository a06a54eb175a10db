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

/// Applies noise to one user's candidates in place: labels flipped from the label stream
/// (`streams[1]`), and, with `features`, the observed features and `mask` drawn from the
/// feature stream (`streams[0]`). Without `features` the observed features stay empty
/// (readers draw them, [`observe`]); they are drawn and dropped only where a cell can be
/// missing or corrupted, to count those cells.
pub fn apply(
    c: &mut Candidates,
    sigma: &[f64; FEATURE_DIM],
    cfg: &NoiseConfig,
    features: bool,
    streams: [&mut ChaCha8Rng; 2],
) -> NoiseCounts {
    let [feature_rng, label_rng] = streams;
    let flipped_labels = flip_labels(&c.clean_label, &mut c.label, cfg.label_flip, label_rng);
    let mut counts = NoiseCounts {
        flipped_labels,
        ..Default::default()
    };
    if features || cfg.missing > 0.0 || cfg.corruption > 0.0 {
        let rows = c.clean_label.len();
        for f in &mut c.feat {
            f.resize(rows, 0.0);
        }
        let clean: Vec<&[f32]> = c.clean.iter().map(|v| v.as_slice()).collect();
        let mut feat: Vec<&mut [f32]> = c.feat.iter_mut().map(|v| v.as_mut_slice()).collect();
        let (missing, corrupted) = observe(&clean, &mut feat, &mut c.mask, sigma, cfg, feature_rng);
        counts.missing_cells = missing;
        counts.corrupted_cells = corrupted;
        if !features {
            c.feat = Default::default();
        }
    }
    counts
}

/// One user's observed labels: each clean one flipped with probability `p`. Returns the
/// number flipped.
pub fn flip_labels(clean: &[u8], label: &mut [u8], p: f64, rng: &mut ChaCha8Rng) -> u64 {
    let mut flipped = 0;
    for (l, &c) in label.iter_mut().zip(clean) {
        *l = if p > 0.0 && rng.random_bool(p) {
            flipped += 1;
            1 - c
        } else {
            c
        };
    }
    flipped
}

/// One user's observed features (`feat[d][row]`) and missing flags (`mask[row]`, bit d
/// set: feature d is missing and 0) from its clean features (`clean[d][row]`), drawing
/// from `rng` row by row. `gen` calls it with the user's feature-noise stream; a reader of
/// a dataset whose observed columns were not stored calls it with the same stream and
/// gets the same values. Returns the numbers of missing and corrupted cells.
pub fn observe(
    clean: &[&[f32]],
    feat: &mut [&mut [f32]],
    mask: &mut [u32],
    sigma: &[f64; FEATURE_DIM],
    cfg: &NoiseConfig,
    rng: &mut ChaCha8Rng,
) -> (u64, u64) {
    let (mut missing, mut corrupted) = (0, 0);
    let rows = mask.len();
    mask.fill(0);
    for r in 0..rows {
        for (d, &sd) in sigma.iter().enumerate() {
            if cfg.missing > 0.0 && rng.random_bool(cfg.missing) {
                feat[d][r] = 0.0;
                mask[r] |= 1 << d;
                missing += 1;
                continue;
            }
            let mut x = clean[d][r];
            if cfg.corruption > 0.0 && rng.random_bool(cfg.corruption) {
                x = clean[d][rng.random_range(0..rows)];
                corrupted += 1;
            }
            if sd > 0.0 {
                let z: f64 = StandardNormal.sample(rng);
                x += (sd * z) as f32;
            }
            feat[d][r] = x;
        }
    }
    (missing, corrupted)
}
