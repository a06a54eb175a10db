//! The canary suite (SPEC §1.3, §4.4): probes built from the manifest, per-canary
//! detection and PASS/FAIL, the SNR curve, and the dual-error test.
//!
//! A **probe** is a GTS test case that holds a canary memory, copied with its history and
//! edited in one factor only at the probed turn: the weekday (context and the candidates'
//! time features), the focal entity (and the candidates' `is_ka_traversal` flag), or the
//! canary memory's age (`log_age`). Each system gives a *log-relevance* for the canary
//! candidate in each version: a trained model its score (a listwise softmax model's
//! logits are log-relevance up to a per-turn constant, which the paired differences
//! cancel); the oracle the logarithm of the planted relevance, computed by the
//! generator's rule from the inputs it sees. Supersession and burst are judged on the
//! unedited test cases.
//!
//! Detection of a pair = the log-relevance difference has the planted sign (a tie counts
//! one half, so a blind system detects 50%). The criteria (manifest `criterion`):
//!
//! | canary | detection | PASS when |
//! |---|---|---|
//! | temporal_cycle | weekday peak > 3 days later | exp(mean difference) > 2 |
//! | recency_decay | slope of log-relevance over ages 0–14 d < 0 | fitted λ within 20% of λ |
//! | entity_selectivity | Z focal > W focal | exp(mean difference) > 3 |
//! | supersession_chain | newest > middle > oldest at a test point | at every test point |
//! | burst | Recall@10 of the burst memories | mean Recall@10 > 0.8 |
//! | cross_entity_dependency | P focal > P not focal | correlation(P focal, pair-centred log-relevance) > 0.7 |
//! | combined | pairs differing in weekday, focal and age | masking any one signal costs > 10% of the accuracy |
//!
//! Noise for the SNR curve is added to the clean features of every turn of a probe:
//! σ² = Var(clean column) / 10^(SNR/10), with the same standard normal draws at every
//! level (common random numbers), so the curve of a system is comparable across levels.

use std::f64::consts::TAU;

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use super::metrics::case_metrics;
use super::phase::Case;
use crate::data::{CONTEXT_NAMES, Dataset, UserSeq};
use crate::datagen::world::roles;
use crate::features::{Canary, FEATURE_DIM, feat};
use crate::model::mamba::ScanImpl;
use crate::model::scorer::{ModelConfig, Scorer};
use crate::train::batch::make_batch;
use crate::train::slice_user;

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
const AGES: [f64; 8] = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0];

fn ctx(name: &str) -> usize {
    CONTEXT_NAMES
        .iter()
        .position(|&n| n == name)
        .expect("context column")
}

/// One factor changed at the probed turn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Edit {
    None,
    /// Position in the week, in days from Monday 00:00 (the fraction is the time of day).
    Weekday(f64),
    /// The focal entities.
    Focal([i32; 2]),
    /// The probed candidate's age in days.
    Age(f64),
    /// Several at once (combined canary): weekday, focal, age; `None` leaves one alone.
    Joint(Option<f64>, Option<[i32; 2]>, Option<f64>),
}

/// A probed candidate in one version of its turn.
#[derive(Clone, Debug)]
struct Version {
    case: Case,
    cand: usize,
    edit: Edit,
}

/// What a system says about probes.
pub trait ProbeScorer {
    /// Log-relevance of every candidate at the last turn of each sequence.
    fn score(&self, seqs: &[UserSeq], k: usize) -> Vec<Vec<f64>>;
}

/// A trained model: its scores.
pub struct ModelProbe<'a> {
    pub model: &'a Scorer,
    pub cfg: &'a ModelConfig,
    pub data: &'a Dataset,
    pub device: &'a Device,
}

impl ProbeScorer for ModelProbe<'_> {
    fn score(&self, seqs: &[UserSeq], k: usize) -> Vec<Vec<f64>> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(16) {
            let refs: Vec<&UserSeq> = chunk.iter().collect();
            let lens: Vec<usize> = chunk.iter().map(|u| u.turns).collect();
            let b = make_batch(
                self.data,
                &refs,
                &lens,
                self.cfg.entity_slots,
                self.cfg.memory_slots,
                self.device,
            );
            let s = self.model.forward(&b, ScanImpl::for_device(self.device));
            let [_, t, _] = s.dims();
            let v: Vec<f32> = s.try_into_vec_as::<f32>().expect("f32 scores");
            for (i, u) in chunk.iter().enumerate() {
                let row = (i * t + u.turns - 1) * k;
                out.push(v[row..row + k].iter().map(|&x| x as f64).collect());
            }
        }
        out
    }
}

/// The planted rules of the manifest, applied to what a system sees.
#[derive(Clone, Debug)]
pub struct Rules {
    cycle_mean: f64,
    cycle_amplitude: f64,
    cycle_weekday: f64,
    recency_p0: f64,
    recency_lambda: f64,
    selectivity_on: f64,
    selectivity_off: f64,
    dependency_on: f64,
    dependency_off: f64,
    combined_floor: f64,
    combined_weekday: f64,
    combined_lambda: f64,
}

impl Rules {
    /// The canary parameters of the dataset's manifest (`None`: it planted no canaries).
    pub fn from_manifest(data: &Dataset) -> Option<Rules> {
        let c = &data.manifest["canaries"];
        let f = |canary: &str, key: &str| c[canary][key].as_f64();
        Some(Rules {
            cycle_mean: f("temporal_cycle", "mean")?,
            cycle_amplitude: f("temporal_cycle", "amplitude")?,
            cycle_weekday: f("temporal_cycle", "weekday")?,
            recency_p0: f("recency_decay", "p0")?,
            recency_lambda: f("recency_decay", "lambda_per_day")?,
            selectivity_on: f("entity_selectivity", "relevance_on")?,
            selectivity_off: f("entity_selectivity", "relevance_off")?,
            dependency_on: f("cross_entity_dependency", "relevance_on")?,
            dependency_off: f("cross_entity_dependency", "relevance_off")?,
            combined_floor: f("combined", "floor")?,
            combined_weekday: f("combined", "weekday")?,
            combined_lambda: f("combined", "lambda_per_day")?,
        })
    }

    pub fn recency_lambda(&self) -> f64 {
        self.recency_lambda
    }

    fn cycle(mean: f64, amplitude: f64, weekday: f64, w: f64) -> f64 {
        mean * (1.0 + amplitude * (TAU * (w - (weekday + 0.5)) / 7.0).cos())
    }
}

/// The oracle: the generator's rules read off the inputs of the probed turn (its
/// context, focal entities and the candidate's observed features); ordinary candidates
/// get their clean relevance.
pub struct OracleProbe<'a> {
    pub rules: &'a Rules,
}

impl OracleProbe<'_> {
    fn log_relevance(&self, u: &UserSeq, t: usize, c: usize, k: usize) -> f64 {
        let r = self.rules;
        let slot = t * k + c;
        let x = &u.features[slot * FEATURE_DIM..(slot + 1) * FEATURE_DIM];
        let cx = &u.context[t * CONTEXT_NAMES.len()..(t + 1) * CONTEXT_NAMES.len()];
        // Weekday position from the day and hour encodings.
        let day = (cx[ctx("dow_sin")] as f64)
            .atan2(cx[ctx("dow_cos")] as f64)
            .rem_euclid(TAU)
            / TAU
            * 7.0;
        let hour = (cx[ctx("tod_sin")] as f64)
            .atan2(cx[ctx("tod_cos")] as f64)
            .rem_euclid(TAU)
            / TAU
            * 24.0;
        let w = day.round().rem_euclid(7.0) + hour / 24.0;
        let focal = |e: u32| u.focal[2 * t] == e as i32 || u.focal[2 * t + 1] == e as i32;
        let age = (x[feat::LOG_AGE] as f64).exp_m1().max(0.0);
        let p = match u.entity[slot] {
            roles::CYCLE_X => Rules::cycle(r.cycle_mean, r.cycle_amplitude, r.cycle_weekday, w),
            roles::RECENCY_R => r.recency_p0 * (-r.recency_lambda * age).exp(),
            roles::SELECT_Y => {
                if focal(roles::SELECT_Z) {
                    r.selectivity_on
                } else {
                    r.selectivity_off
                }
            }
            roles::DEP_Q => {
                if focal(roles::DEP_P) {
                    r.dependency_on
                } else {
                    r.dependency_off
                }
            }
            roles::COMBINED_V => {
                let f = r.combined_floor;
                let cyc = f + (1.0 - f) * 0.5 * Rules::cycle(1.0, 1.0, r.combined_weekday, w);
                let sel = if focal(roles::COMBINED_T) { 1.0 } else { f };
                let rec = f + (1.0 - f) * (-r.combined_lambda * age).exp();
                0.95 * cyc * sel * rec
            }
            // Newer chain versions are more relevant: the oracle orders them by observed age.
            roles::CHAIN_S => return -age,
            _ => u.relevance[slot] as f64,
        };
        p.max(1e-9).ln()
    }
}

impl ProbeScorer for OracleProbe<'_> {
    fn score(&self, seqs: &[UserSeq], k: usize) -> Vec<Vec<f64>> {
        seqs.iter()
            .map(|u| {
                (0..k)
                    .map(|c| self.log_relevance(u, u.turns - 1, c, k))
                    .collect()
            })
            .collect()
    }
}

/// Per-column noise scale at an SNR, from the clean features' variance.
pub fn noise_sigma(data: &Dataset, snr_db: f64) -> [f64; FEATURE_DIM] {
    let mut sum = [0.0f64; FEATURE_DIM];
    let mut sq = [0.0f64; FEATURE_DIM];
    let mut n = [0.0f64; FEATURE_DIM];
    let k = data.k;
    for u in &data.users {
        for slot in 0..u.turns * k {
            for d in 0..FEATURE_DIM {
                if u.valid[slot] == 1.0 && u.missing[slot * FEATURE_DIM + d] == 0.0 {
                    let x = u.clean_features[slot * FEATURE_DIM + d] as f64;
                    sum[d] += x;
                    sq[d] += x * x;
                    n[d] += 1.0;
                }
            }
        }
    }
    std::array::from_fn(|d| {
        let m = n[d].max(1.0);
        let var = (sq[d] / m - (sum[d] / m).powi(2)).max(0.0);
        (var / 10f64.powf(snr_db / 10.0)).sqrt()
    })
}

/// Replaces a sequence's features by its clean features plus noise of scale `sigma` (or
/// none), with draws fixed by (seed, user) so every level sees the same directions.
fn set_features(u: &mut UserSeq, sigma: Option<&[f64; FEATURE_DIM]>, seed: u64) {
    u.features.copy_from_slice(&u.clean_features);
    if let Some(sigma) = sigma {
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed ^ (u.user_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        for (i, x) in u.features.iter_mut().enumerate() {
            let z: f64 = StandardNormal.sample(&mut rng);
            if u.missing[i] == 0.0 {
                *x += (sigma[i % FEATURE_DIM] * z) as f32;
            }
        }
    }
    for (x, m) in u.features.iter_mut().zip(&u.missing) {
        if *m == 1.0 {
            *x = 0.0;
        }
    }
}

fn angle(fraction: f64) -> (f32, f32) {
    let a = TAU * fraction;
    (a.sin() as f32, a.cos() as f32)
}

/// Applies `edit` to turn `t` (candidate `c` for an age) of `u`.
pub fn apply_edit(u: &mut UserSeq, t: usize, c: usize, k: usize, edit: Edit) {
    let (weekday, focal, age) = match edit {
        Edit::None => (None, None, None),
        Edit::Weekday(d) => (Some(d), None, None),
        Edit::Focal(f) => (None, Some(f), None),
        Edit::Age(a) => (None, None, Some(a)),
        Edit::Joint(d, f, a) => (d, f, a),
    };
    let cd = CONTEXT_NAMES.len();
    if let Some(d) = weekday {
        let d = d.rem_euclid(7.0);
        let (ds, dc) = angle(d.floor() / 7.0);
        let (ts, tc) = angle(d - d.floor());
        let cx = &mut u.context[t * cd..(t + 1) * cd];
        cx[ctx("dow_sin")] = ds;
        cx[ctx("dow_cos")] = dc;
        cx[ctx("tod_sin")] = ts;
        cx[ctx("tod_cos")] = tc;
        for j in 0..k {
            for (col, v) in [
                (feat::DOW_SIN, ds),
                (feat::DOW_COS, dc),
                (feat::TOD_SIN, ts),
                (feat::TOD_COS, tc),
            ] {
                let i = (t * k + j) * FEATURE_DIM + col;
                u.features[i] = v;
                u.clean_features[i] = v;
            }
        }
    }
    if let Some(f) = focal {
        u.focal[2 * t] = f[0];
        u.focal[2 * t + 1] = f[1];
        for j in 0..k {
            let e = u.entity[t * k + j] as i32;
            let i = (t * k + j) * FEATURE_DIM + feat::IS_KA_TRAVERSAL;
            let v = (e != f[0] && e != f[1]) as u8 as f32;
            u.features[i] = v;
            u.clean_features[i] = v;
        }
    }
    if let Some(a) = age {
        let i = (t * k + c) * FEATURE_DIM + feat::LOG_AGE;
        let v = a.max(0.0).ln_1p() as f32;
        u.features[i] = v;
        u.clean_features[i] = v;
    }
}

/// Probe sites of every canary, chosen once per dataset.
#[derive(Clone, Debug, Default)]
pub struct Probes {
    cycle: Vec<(Case, usize)>,
    recency: Vec<(Case, usize)>,
    selectivity: Vec<(Case, usize)>,
    chain: Vec<Case>,
    burst: Vec<Case>,
    dependency: Vec<(Case, usize)>,
    combined: Vec<(Case, usize, [Edit; 2])>,
}

/// Up to `n` items spread evenly over `v`.
fn spread<T: Clone>(v: Vec<T>, n: usize) -> Vec<T> {
    if v.len() <= n {
        return v;
    }
    (0..n).map(|i| v[i * v.len() / n].clone()).collect()
}

impl Probes {
    /// Finds up to `per_canary` sites of each canary among the GTS `cases`.
    pub fn build(data: &Dataset, cases: &[Case], per_canary: usize, seed: u64) -> Probes {
        let k = data.k;
        let by_entity = |e: u32| -> Vec<(Case, usize)> {
            let v: Vec<(Case, usize)> = cases
                .iter()
                .filter_map(|&c| {
                    let u = &data.users[c.user];
                    (0..k)
                        .find(|&j| u.valid[c.turn * k + j] == 1.0 && u.entity[c.turn * k + j] == e)
                        .map(|j| (c, j))
                })
                .collect();
            spread(v, per_canary)
        };
        let cycle = by_entity(roles::CYCLE_X);
        let recency = by_entity(roles::RECENCY_R);
        let selectivity = by_entity(roles::SELECT_Y);
        let dependency = by_entity(roles::DEP_Q);
        let combined_sites = by_entity(roles::COMBINED_V);
        let chain = spread(
            cases
                .iter()
                .copied()
                .filter(|c| {
                    let u = &data.users[c.user];
                    (0..k)
                        .filter(|&j| {
                            u.valid[c.turn * k + j] == 1.0
                                && u.entity[c.turn * k + j] == roles::CHAIN_S
                        })
                        .count()
                        >= 2
                })
                .collect(),
            per_canary,
        );
        let burst = spread(
            cases
                .iter()
                .copied()
                .filter(|c| {
                    let u = &data.users[c.user];
                    (0..k).any(|j| {
                        u.valid[c.turn * k + j] == 1.0
                            && u.canary[c.turn * k + j] & Canary::Burst.bit() != 0
                    })
                })
                .collect(),
            per_canary,
        );
        // Combined: two random settings of (weekday, focal, age) per site.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC0_4B1E);
        let combined = combined_sites
            .into_iter()
            .map(|(c, j)| {
                use rand::RngExt;
                let draw = |rng: &mut ChaCha8Rng| -> [bool; 3] {
                    [
                        rng.random_bool(0.5),
                        rng.random_bool(0.5),
                        rng.random_bool(0.5),
                    ]
                };
                let a = draw(&mut rng);
                let mut b = draw(&mut rng);
                while b == a {
                    b = draw(&mut rng);
                }
                (c, j, [combined_edit(data, a), combined_edit(data, b)])
            })
            .collect();
        Probes {
            cycle,
            recency,
            selectivity,
            chain,
            burst,
            dependency,
            combined,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cycle.is_empty()
            && self.recency.is_empty()
            && self.selectivity.is_empty()
            && self.chain.is_empty()
            && self.burst.is_empty()
            && self.dependency.is_empty()
            && self.combined.is_empty()
    }
}

/// The combined canary's setting: [at its weekday, its selector focal, fresh].
fn combined_edit(data: &Dataset, on: [bool; 3]) -> Edit {
    let wd = data.manifest["canaries"]["combined"]["weekday"]
        .as_f64()
        .unwrap_or(0.0);
    Edit::Joint(
        Some(if on[0] { wd + 0.5 } else { wd + 3.5 }),
        Some(if on[1] {
            [roles::COMBINED_T as i32, -1]
        } else {
            [roles::FIRST_ORDINARY as i32, -1]
        }),
        Some(if on[2] { 0.0 } else { 14.0 }),
    )
}

/// The outcome of one canary for one system at one noise level.
#[derive(Clone, Debug, Serialize)]
pub struct CanaryResult {
    pub canary: String,
    /// Probes (pairs, sequences of ages, or test points).
    pub probes: usize,
    /// Fraction detected (ties count one half).
    pub detection: f64,
    /// The criterion's statistic (see the module table).
    pub statistic: f64,
    pub threshold: f64,
    pub pass: bool,
}

/// Builds the versions' sequences: history through the probed turn, features set to the
/// noise level, then the edit.
fn sequences(
    data: &Dataset,
    versions: &[Version],
    sigma: Option<&[f64; FEATURE_DIM]>,
    seed: u64,
) -> Vec<UserSeq> {
    versions
        .iter()
        .map(|v| {
            let u = &data.users[v.case.user];
            let mut s = slice_user(u, 0, v.case.turn + 1, data.k, data.embedding_dim);
            set_features(&mut s, sigma, seed);
            apply_edit(&mut s, v.case.turn, v.cand, data.k, v.edit);
            // The edit changed clean features the noise was added to: add it again there.
            if let Some(sig) = sigma {
                redo_noise_at(&mut s, v.case.turn, data.k, sig, seed);
            }
            s
        })
        .collect()
}

/// Recomputes the noisy features of turn `t` from its (edited) clean features with the
/// same draws as [`set_features`].
fn redo_noise_at(u: &mut UserSeq, t: usize, k: usize, sigma: &[f64; FEATURE_DIM], seed: u64) {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (u.user_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let start = t * k * FEATURE_DIM;
    for i in 0..(t + 1) * k * FEATURE_DIM {
        let z: f64 = StandardNormal.sample(&mut rng);
        if i >= start && u.missing[i] == 0.0 {
            u.features[i] = u.clean_features[i] + (sigma[i % FEATURE_DIM] * z) as f32;
        }
    }
}

fn pair_detection(diffs: &[f64]) -> f64 {
    if diffs.is_empty() {
        return f64::NAN;
    }
    diffs
        .iter()
        .map(|&d| {
            if d > 0.0 {
                1.0
            } else if d == 0.0 {
                0.5
            } else {
                0.0
            }
        })
        .sum::<f64>()
        / diffs.len() as f64
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
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
    let k = data.k;
    let sigma = snr_db.map(|db| noise_sigma(data, db));
    let sigma = sigma.as_ref();
    let score_versions = |versions: &[Version]| -> Vec<f64> {
        let seqs = sequences(data, versions, sigma, seed);
        let scores = scorer.score(&seqs, k);
        versions
            .iter()
            .zip(scores)
            .map(|(v, s)| s[v.cand])
            .collect()
    };
    // Paired probes: [a, b] versions per site, a planted to be more relevant.
    let paired = |sites: &[(Case, usize)], a: Edit, b: Edit| -> Vec<f64> {
        let versions: Vec<Version> = sites
            .iter()
            .flat_map(|&(case, cand)| {
                [
                    Version {
                        case,
                        cand,
                        edit: a,
                    },
                    Version {
                        case,
                        cand,
                        edit: b,
                    },
                ]
            })
            .collect();
        let s = score_versions(&versions);
        s.chunks(2).map(|p| p[0] - p[1]).collect()
    };
    // Unedited test cases: their versions and every candidate's log-relevance.
    let score_unedited = |cases: &[Case]| -> (Vec<Version>, Vec<Vec<f64>>) {
        let versions: Vec<Version> = cases
            .iter()
            .map(|&case| Version {
                case,
                cand: 0,
                edit: Edit::None,
            })
            .collect();
        let scores = scorer.score(&sequences(data, &versions, sigma, seed), k);
        (versions, scores)
    };
    let mut out = Vec::new();
    let wd = rules.cycle_weekday;
    let d = paired(
        &probes.cycle,
        Edit::Weekday(wd + 0.5),
        Edit::Weekday(wd + 3.5),
    );
    let ratio = mean(&d).exp();
    out.push(CanaryResult {
        canary: Canary::TemporalCycle.name().into(),
        probes: d.len(),
        detection: pair_detection(&d),
        statistic: ratio,
        threshold: 2.0,
        pass: passes(Canary::TemporalCycle.name(), ratio, 2.0, d.len()),
    });
    // Recency: log-relevance over ages; slope by least squares with a level per site.
    let versions: Vec<Version> = probes
        .recency
        .iter()
        .flat_map(|&(case, cand)| {
            AGES.iter().map(move |&a| Version {
                case,
                cand,
                edit: Edit::Age(a),
            })
        })
        .collect();
    let s = score_versions(&versions);
    let age_mean = mean(&AGES);
    let sxx: f64 = AGES.iter().map(|a| (a - age_mean).powi(2)).sum();
    let slopes: Vec<f64> = s
        .chunks(AGES.len())
        .map(|ys| {
            let y_mean = mean(ys);
            AGES.iter()
                .zip(ys)
                .map(|(a, y)| (a - age_mean) * (y - y_mean))
                .sum::<f64>()
                / sxx
        })
        .collect();
    let lambda_hat = -mean(&slopes);
    out.push(CanaryResult {
        canary: Canary::RecencyDecay.name().into(),
        probes: slopes.len(),
        detection: pair_detection(&slopes.iter().map(|s| -s).collect::<Vec<_>>()),
        statistic: lambda_hat,
        threshold: rules.recency_lambda,
        pass: passes(
            Canary::RecencyDecay.name(),
            lambda_hat,
            rules.recency_lambda,
            slopes.len(),
        ),
    });
    let d = paired(
        &probes.selectivity,
        Edit::Focal([roles::SELECT_Z as i32, -1]),
        Edit::Focal([roles::SELECT_W as i32, -1]),
    );
    let ratio = mean(&d).exp();
    out.push(CanaryResult {
        canary: Canary::EntitySelectivity.name().into(),
        probes: d.len(),
        detection: pair_detection(&d),
        statistic: ratio,
        threshold: 3.0,
        pass: passes(Canary::EntitySelectivity.name(), ratio, 3.0, d.len()),
    });
    // Supersession: unedited test points; every present pair of versions in order.
    let (versions, scores) = score_unedited(&probes.chain);
    let mut ordered = Vec::new();
    for (v, s) in versions.iter().zip(&scores) {
        let u = &data.users[v.case.user];
        let t = v.case.turn;
        // Chain members present, by memory id (A < B < C: older to newer).
        let mut members: Vec<(u32, f64)> = (0..k)
            .filter(|&j| u.valid[t * k + j] == 1.0 && u.entity[t * k + j] == roles::CHAIN_S)
            .map(|j| (u.memory_id[t * k + j], s[j]))
            .collect();
        members.sort_by_key(|m| m.0);
        let ok = members.windows(2).all(|w| w[1].1 > w[0].1);
        ordered.push(if ok { 1.0 } else { 0.0 });
    }
    let frac = mean(&ordered);
    out.push(CanaryResult {
        canary: Canary::SupersessionChain.name().into(),
        probes: ordered.len(),
        detection: frac,
        statistic: frac,
        threshold: 1.0,
        pass: passes(Canary::SupersessionChain.name(), frac, 1.0, ordered.len()),
    });
    // Burst: Recall@10 of the burst memories on post-burst test cases.
    let (versions, scores) = score_unedited(&probes.burst);
    let recalls: Vec<f64> = versions
        .iter()
        .zip(&scores)
        .map(|(v, s)| {
            let u = &data.users[v.case.user];
            let t = v.case.turn;
            let labels: Vec<f64> = (0..k)
                .map(|j| {
                    (u.valid[t * k + j] == 1.0 && u.canary[t * k + j] & Canary::Burst.bit() != 0)
                        as u8 as f64
                })
                .collect();
            let masked: Vec<f64> = (0..k)
                .map(|j| {
                    if u.valid[t * k + j] == 1.0 {
                        s[j]
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .collect();
            case_metrics(&masked, &labels, 10).recall
        })
        .collect();
    let r10 = mean(&recalls);
    out.push(CanaryResult {
        canary: Canary::Burst.name().into(),
        probes: recalls.len(),
        detection: r10,
        statistic: r10,
        threshold: 0.8,
        pass: passes(Canary::Burst.name(), r10, 0.8, recalls.len()),
    });
    // Dependency: P focal or not; correlation of the indicator with pair-centred values.
    let d = paired(
        &probes.dependency,
        Edit::Focal([roles::DEP_P as i32, -1]),
        Edit::Focal([roles::FIRST_ORDINARY as i32, -1]),
    );
    // Pairs (x = 1, d/2) and (x = 0, −d/2): Pearson r = mean(d) / rms(d).
    let rms = (d.iter().map(|v| v * v).sum::<f64>() / d.len().max(1) as f64).sqrt();
    let corr = if rms > 0.0 { mean(&d) / rms } else { 0.0 };
    out.push(CanaryResult {
        canary: Canary::CrossEntityDependency.name().into(),
        probes: d.len(),
        detection: pair_detection(&d),
        statistic: corr,
        threshold: 0.7,
        pass: passes(Canary::CrossEntityDependency.name(), corr, 0.7, d.len()),
    });
    // Combined: pair accuracy with all signals, then with each one masked in both versions.
    let truth = |e: &Edit| -> f64 {
        let Edit::Joint(Some(w), Some(f), Some(a)) = *e else {
            return 0.0;
        };
        let fl = rules.combined_floor;
        let cyc = fl + (1.0 - fl) * 0.5 * Rules::cycle(1.0, 1.0, rules.combined_weekday, w);
        let sel = if f[0] == roles::COMBINED_T as i32 {
            1.0
        } else {
            fl
        };
        let rec = fl + (1.0 - fl) * (-rules.combined_lambda * a).exp();
        cyc * sel * rec
    };
    let accuracy = |mask: Option<usize>| -> f64 {
        let versions: Vec<Version> = probes
            .combined
            .iter()
            .flat_map(|&(case, cand, edits)| {
                edits.map(|e| {
                    let Edit::Joint(w, f, a) = e else {
                        unreachable!("joint edits")
                    };
                    let edit = match mask {
                        Some(0) => Edit::Joint(Some(rules.combined_weekday + 1.5), f, a),
                        Some(1) => Edit::Joint(w, Some([-1, -1]), a),
                        Some(2) => Edit::Joint(w, f, Some(7.0)),
                        _ => e,
                    };
                    Version { case, cand, edit }
                })
            })
            .collect();
        let s = score_versions(&versions);
        let signed: Vec<f64> = probes
            .combined
            .iter()
            .zip(s.chunks(2))
            .map(|((_, _, edits), p)| {
                (p[0] - p[1]) * (truth(&edits[0]) - truth(&edits[1])).signum()
            })
            .collect();
        pair_detection(&signed)
    };
    let full = accuracy(None);
    let drops: Vec<f64> = (0..3)
        .map(|m| (full - accuracy(Some(m))) / full.max(1e-12))
        .collect();
    let min_drop = drops.iter().copied().fold(f64::INFINITY, f64::min);
    out.push(CanaryResult {
        canary: Canary::Combined.name().into(),
        probes: probes.combined.len(),
        detection: full,
        statistic: min_drop,
        threshold: 0.10,
        pass: passes(
            Canary::Combined.name(),
            min_drop,
            0.10,
            probes.combined.len(),
        ),
    });
    out
}

/// Whether a canary's criterion holds (see the module table); no probe never passes.
pub fn passes(canary: &str, statistic: f64, threshold: f64, probes: usize) -> bool {
    if probes == 0 || !statistic.is_finite() {
        return false;
    }
    match canary {
        "recency_decay" => (statistic - threshold).abs() <= 0.2 * threshold,
        "supersession_chain" => statistic >= threshold,
        _ => statistic > threshold,
    }
}

/// Mean of several systems' (seeds') results, canary by canary; the criterion is applied
/// to the mean statistic.
pub fn average(runs: &[Vec<CanaryResult>]) -> Vec<CanaryResult> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let n = runs.len() as f64;
            let detection = runs.iter().map(|x| x[i].detection).sum::<f64>() / n;
            let statistic = runs.iter().map(|x| x[i].statistic).sum::<f64>() / n;
            CanaryResult {
                canary: r.canary.clone(),
                probes: r.probes,
                detection,
                statistic,
                threshold: r.threshold,
                pass: passes(&r.canary, statistic, r.threshold, r.probes),
            }
        })
        .collect()
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

/// The dual-error test on one system's predicted relevance of canary candidates.
#[derive(Clone, Debug, Serialize)]
pub struct DualError {
    pub canary: String,
    pub n: usize,
    /// Mean squared error against the observed (noisy) labels.
    pub mse_obs: f64,
    /// Mean squared error against the clean relevance.
    pub mse_true: f64,
    pub pass: bool,
}

/// MSE of predicted relevance against observed labels and against clean relevance, per
/// contract canary, over the given turns' canary candidates. `predict` returns, per turn,
/// each candidate's predicted relevance probability.
pub fn dual_error(data: &Dataset, turns: &[Case], predicted: &[Vec<f64>]) -> Vec<DualError> {
    let k = data.k;
    Canary::CONTRACT
        .iter()
        .map(|&c| {
            let (mut obs, mut tru, mut n) = (0.0, 0.0, 0usize);
            for (case, p) in turns.iter().zip(predicted) {
                let u = &data.users[case.user];
                for (j, &pj) in p.iter().enumerate().take(k) {
                    let slot = case.turn * k + j;
                    if u.valid[slot] == 1.0 && u.canary[slot] & c.bit() != 0 {
                        obs += (pj - u.labels[slot] as f64).powi(2);
                        tru += (pj - u.relevance[slot] as f64).powi(2);
                        n += 1;
                    }
                }
            }
            let nf = n.max(1) as f64;
            DualError {
                canary: c.name().into(),
                n,
                mse_obs: obs / nf,
                mse_true: tru / nf,
                pass: n > 0 && tru < obs,
            }
        })
        .collect()
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

/// Points per day of the frequency-response sweep.
const SWEEP_PER_DAY: usize = 12;

/// The response of a system's log-relevance of the temporal-cycle memories to the time of
/// the week (M2Rec's frequency check): the probed turn swept over one week, the mean curve
/// over the probe sites (each centred), and the share of its spectral power (DC excluded)
/// at the weekly and the daily period.
#[derive(Clone, Debug, Serialize)]
pub struct FrequencyResponse {
    pub sites: usize,
    /// (position in the week in days, mean centred log-relevance).
    pub curve: Vec<(f64, f64)>,
    pub weekly_share: f64,
    pub daily_share: f64,
    /// Where in the week the curve peaks (days from Monday 00:00).
    pub peak_day: f64,
}

pub fn frequency_response(
    scorer: &dyn ProbeScorer,
    data: &Dataset,
    probes: &Probes,
    sites: usize,
) -> FrequencyResponse {
    let n = 7 * SWEEP_PER_DAY;
    let chosen: Vec<(Case, usize)> = probes.cycle.iter().take(sites).copied().collect();
    let versions: Vec<Version> = chosen
        .iter()
        .flat_map(|&(case, cand)| {
            (0..n).map(move |i| Version {
                case,
                cand,
                edit: Edit::Weekday(i as f64 / SWEEP_PER_DAY as f64),
            })
        })
        .collect();
    let seqs = sequences(data, &versions, None, 0);
    let scores = scorer.score(&seqs, data.k);
    let values: Vec<f64> = versions
        .iter()
        .zip(&scores)
        .map(|(v, s)| s[v.cand])
        .collect();
    let mut curve = vec![0.0; n];
    for site in values.chunks(n) {
        let m = mean(site);
        for (c, v) in curve.iter_mut().zip(site) {
            *c += (v - m) / chosen.len().max(1) as f64;
        }
    }
    // Power of the discrete Fourier transform at 1..n/2 cycles per week.
    let power: Vec<f64> = (1..=n / 2)
        .map(|f| {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, v) in curve.iter().enumerate() {
                let a = TAU * (f * i) as f64 / n as f64;
                re += v * a.cos();
                im -= v * a.sin();
            }
            re * re + im * im
        })
        .collect();
    let total: f64 = power.iter().sum::<f64>().max(1e-300);
    let peak = curve
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    FrequencyResponse {
        sites: chosen.len(),
        curve: curve
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 / SWEEP_PER_DAY as f64, *v))
            .collect(),
        weekly_share: power[0] / total,
        daily_share: power[7 - 1] / total,
        peak_day: peak as f64 / SWEEP_PER_DAY as f64,
    }
}
