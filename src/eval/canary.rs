//! The canary suite (the seed's "Canary Pattern Tests"): probes, per-canary detection with a bootstrap
//! interval over probe sites (and seeds), PASS/FAIL, the SNR curve and the frequency
//! response.
//!
//! A **probe** is a GTS test case that holds a canary memory, copied with its history and
//! edited in one factor only at the probed turn: the weekday (context and the candidates'
//! time encodings), the selector in the second focal slot (where the generator puts
//! selectors; sites are turns whose second slot holds no ordinary entity), or the canary
//! memory's age (`log_age`). The generator makes these edits exact: selectors have no
//! graph edges and no memories and do not shape the query, and no ordinary memory's
//! relevance depends on the weekday, so no other input of the probed turn would differ
//! had the generator drawn the edited turn.
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
//! | temporal_cycle | d = value(peak) − value(3 days later) | exp(mean d) > 2 |
//! | recency_decay | slope of value over ages 0–14 d | −mean slope within 20% of λ |
//! | entity_selectivity | d = value(Z focal) − value(W focal) | exp(mean d) > 3 |
//! | supersession_chain | newest > middle > oldest (1/0) | ordered at every test point |
//! | burst | Recall@10 of the burst memories | mean > 0.8 |
//! | cross_entity_dependency | d = value(P focal) − value(no selector) | mean d / rms d (the correlation of P focal with the centred values) > 0.7 |
//! | combined | for each signal, sign of the difference between two versions that differ in that signal only | removing a signal costs (acc − ½)/acc of the accuracy; the smallest > 10% |
//!
//! Detection of a site is whether its value has the planted sign (a tie counts one half,
//! so a blind system detects 50%). Several seeds are averaged per site; the interval of a
//! statistic resamples seeds and sites (two-level percentile bootstrap), and a canary
//! passes only when its criterion holds over the whole 95% interval.
//!
//! Noise for the SNR curve is added to the clean features of every turn of a probe:
//! σ² = Var(clean column) / 10^(SNR/10), with the same standard normal draws at every
//! level (common random numbers), so the curve of a system is comparable across levels.

use std::cell::RefCell;
use std::f64::consts::TAU;

use burn::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use super::split::Case;
use crate::canary::{Inputs, Role, Rules, Selector};
use crate::data::{CONTEXT_NAMES, Dataset, UserSeq};
use crate::features::{Canary, FEATURE_DIM, feat};
use crate::metrics::case_metrics;
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
const AGES: [f64; 5] = [0.0, 3.5, 7.0, 10.5, 14.0];

/// Bootstrap resamples of a canary statistic's interval.
const CI_RESAMPLES: usize = 1000;

fn ctx(name: &str) -> usize {
    CONTEXT_NAMES
        .iter()
        .position(|&n| n == name)
        .expect("context column")
}

/// Factors changed at the probed turn; `None` leaves a factor as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Edit {
    /// Position in the week, in days from Monday 00:00 (the fraction is the time of day).
    pub week: Option<f64>,
    /// The second focal slot: a selector of the user, or empty.
    pub selector: Option<Option<Selector>>,
    /// The probed candidate's age in days.
    pub age: Option<f64>,
}

impl Edit {
    pub fn week(w: f64) -> Edit {
        Edit {
            week: Some(w),
            ..Edit::default()
        }
    }

    pub fn selector(s: Option<Selector>) -> Edit {
        Edit {
            selector: Some(s),
            ..Edit::default()
        }
    }

    pub fn age(a: f64) -> Edit {
        Edit {
            age: Some(a),
            ..Edit::default()
        }
    }
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

/// A trained model: its scores times the scale fitted on validation.
pub struct ModelProbe<'a> {
    pub model: &'a Scorer,
    pub cfg: &'a ModelConfig,
    pub data: &'a Dataset,
    pub device: &'a Device,
    pub scale: f64,
}

impl<'a> ModelProbe<'a> {
    /// One probe scorer per seed of a system, each at its fitted score scale.
    pub fn seeds(
        models: &'a [(Scorer, ModelConfig)],
        scales: &[f64],
        data: &'a Dataset,
        device: &'a Device,
    ) -> Vec<ModelProbe<'a>> {
        models
            .iter()
            .zip(scales)
            .map(|((model, cfg), &scale)| ModelProbe {
                model,
                cfg,
                data,
                device,
                scale,
            })
            .collect()
    }
}

impl ProbeScorer for ModelProbe<'_> {
    fn score(&self, seqs: &[UserSeq], k: usize) -> Vec<Vec<f64>> {
        use rayon::prelude::*;
        // Chunks on both cores: one batch alone leaves most of the second idle.
        seqs.par_chunks(16)
            .flat_map_iter(|chunk| {
                let refs: Vec<&UserSeq> = chunk.iter().collect();
                let lens: Vec<usize> = chunk.iter().map(|u| u.turns).collect();
                let b = make_batch(self.data, &refs, &lens, self.cfg, self.device);
                let s = self.model.forward(&b, ScanImpl::for_device(self.device));
                let [_, t, _] = s.dims();
                let v: Vec<f32> = s.try_into_vec_as::<f32>().expect("f32 scores");
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, u)| {
                        let row = (i * t + u.turns - 1) * k;
                        v[row..row + k]
                            .iter()
                            .map(|&x| self.scale * x as f64)
                            .collect()
                    })
                    .collect::<Vec<Vec<f64>>>()
            })
            .collect()
    }
}

/// The oracle: the generator's rules read off the inputs of the probed turn (its
/// context, focal slots, each candidate's role and observed age); ordinary candidates get
/// their clean relevance.
pub struct OracleProbe<'a> {
    pub rules: &'a Rules,
}

/// Position in the week (days from Monday 00:00) encoded in a turn's context.
fn week_position(u: &UserSeq, t: usize) -> f64 {
    let cx = &u.context[t * CONTEXT_NAMES.len()..(t + 1) * CONTEXT_NAMES.len()];
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
    day.round().rem_euclid(7.0) + hour / 24.0
}

impl OracleProbe<'_> {
    pub fn log_relevance(&self, u: &UserSeq, t: usize, c: usize, k: usize) -> f64 {
        let slot = t * k + c;
        let role = Role::from_code(u.role[slot]).unwrap_or(Role::None);
        let x = &u.features[slot * FEATURE_DIM..(slot + 1) * FEATURE_DIM];
        let focal = Selector::ALL.map(|s| {
            let id = u.selectors[s as usize];
            id >= 0 && (u.focal[2 * t] == id || u.focal[2 * t + 1] == id)
        });
        let inputs = Inputs {
            week_position: week_position(u, t),
            age_days: (x[feat::LOG_AGE] as f64).exp_m1().max(0.0),
            focal,
        };
        let p = self
            .rules
            .relevance(role, &inputs)
            .unwrap_or(u.relevance[slot] as f64);
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

/// A system that gives every candidate the same log-relevance.
pub struct ConstantProbe;

impl ProbeScorer for ConstantProbe {
    fn score(&self, seqs: &[UserSeq], k: usize) -> Vec<Vec<f64>> {
        vec![vec![0.0; k]; seqs.len()]
    }
}

/// A system that draws every log-relevance at random (seeded).
pub struct RandomProbe {
    rng: RefCell<ChaCha8Rng>,
}

impl RandomProbe {
    pub fn new(seed: u64) -> RandomProbe {
        RandomProbe {
            rng: RefCell::new(ChaCha8Rng::seed_from_u64(seed ^ 0x5A4D_0123)),
        }
    }
}

impl ProbeScorer for RandomProbe {
    fn score(&self, seqs: &[UserSeq], k: usize) -> Vec<Vec<f64>> {
        let mut rng = self.rng.borrow_mut();
        seqs.iter()
            .map(|_| (0..k).map(|_| rng.random_range(0.0..1.0)).collect())
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

/// The noise stream of turn `t` of a user: fixed by (seed, user, turn), so every level
/// and every version of a probe sees the same directions.
fn noise_rng(seed: u64, user_id: u32, t: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(
        seed ^ (user_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (t as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

/// Sets turn `t`'s features to its clean features plus noise of scale `sigma` (or
/// none); missing features stay 0.
fn noise_turn(u: &mut UserSeq, t: usize, k: usize, sigma: Option<&[f64; FEATURE_DIM]>, seed: u64) {
    let range = t * k * FEATURE_DIM..(t + 1) * k * FEATURE_DIM;
    u.features[range.clone()].copy_from_slice(&u.clean_features[range.clone()]);
    if let Some(sigma) = sigma {
        let mut rng = noise_rng(seed, u.user_id, t);
        for i in range.clone() {
            let z: f64 = StandardNormal.sample(&mut rng);
            u.features[i] += (sigma[i % FEATURE_DIM] * z) as f32;
        }
    }
    for i in range {
        if u.missing[i] == 1.0 {
            u.features[i] = 0.0;
        }
    }
}

fn angle(fraction: f64) -> (f32, f32) {
    let a = TAU * fraction;
    (a.sin() as f32, a.cos() as f32)
}

/// Applies `edit` to turn `t` (candidate `c` for an age) of `u`.
pub fn apply_edit(u: &mut UserSeq, t: usize, c: usize, k: usize, edit: Edit) {
    let cd = CONTEXT_NAMES.len();
    if let Some(d) = edit.week {
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
    if let Some(s) = edit.selector {
        // Selectors own no memories: no candidate's `is_ka_traversal` changes.
        u.focal[2 * t + 1] = s.map_or(-1, |s| u.selectors[s as usize]);
    }
    if let Some(a) = edit.age {
        let i = (t * k + c) * FEATURE_DIM + feat::LOG_AGE;
        let v = a.max(0.0).ln_1p() as f32;
        u.features[i] = v;
        u.clean_features[i] = v;
    }
}

/// A combined-canary site: the candidate and, per signal (weekday, selector, recency),
/// the setting of the two other signals in the pair that differs in that signal only.
#[derive(Clone, Copy, Debug)]
struct CombinedSite {
    case: Case,
    cand: usize,
    others: [[bool; 2]; 3],
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
    combined: Vec<CombinedSite>,
}

/// Up to `n` items spread evenly over `v`.
fn spread<T: Clone>(v: Vec<T>, n: usize) -> Vec<T> {
    if v.len() <= n {
        return v;
    }
    (0..n).map(|i| v[i * v.len() / n].clone()).collect()
}

/// Whether the second focal slot of turn `t` holds no ordinary entity (empty or one of
/// the user's selectors), so a selector edit changes nothing but the slot.
fn selector_slot_free(u: &UserSeq, t: usize) -> bool {
    let f = u.focal[2 * t + 1];
    u.selectors.iter().all(|&s| s >= 0) && (f < 0 || u.selectors.contains(&f))
}

impl Probes {
    /// Finds up to `per_canary` sites of each canary among the GTS `cases`.
    pub fn build(data: &Dataset, cases: &[Case], per_canary: usize, seed: u64) -> Probes {
        let k = data.k;
        let with_role = |role: Role, needs_selector: bool| -> Vec<(Case, usize)> {
            let v: Vec<(Case, usize)> = cases
                .iter()
                .filter(|c| !needs_selector || selector_slot_free(&data.users[c.user], c.turn))
                .filter_map(|&c| {
                    let u = &data.users[c.user];
                    (0..k)
                        .find(|&j| {
                            u.valid[c.turn * k + j] == 1.0 && u.role[c.turn * k + j] == role.code()
                        })
                        .map(|j| (c, j))
                })
                .collect();
            spread(v, per_canary)
        };
        let cycle = with_role(Role::Cycle, false);
        let recency = with_role(Role::Recency, false);
        let selectivity = with_role(Role::Selectivity, true);
        let dependency = with_role(Role::Dependency, true);
        let combined_sites = with_role(Role::Combined, true);
        let chain = spread(
            cases
                .iter()
                .copied()
                .filter(|c| {
                    let u = &data.users[c.user];
                    (0..k)
                        .filter(|&j| {
                            u.valid[c.turn * k + j] == 1.0
                                && Role::from_code(u.role[c.turn * k + j])
                                    .is_some_and(Role::is_chain)
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
        // Combined: per signal, a random setting of the two others, shared by the pair.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC0_4B1E);
        let combined = combined_sites
            .into_iter()
            .map(|(case, cand)| CombinedSite {
                case,
                cand,
                others: std::array::from_fn(|_| [rng.random_bool(0.5), rng.random_bool(0.5)]),
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

    /// Probe sites per canary, in [`Canary::CONTRACT`] order.
    pub fn sites(&self) -> [usize; 7] {
        [
            self.cycle.len(),
            self.recency.len(),
            self.selectivity.len(),
            self.chain.len(),
            self.burst.len(),
            self.dependency.len(),
            self.combined.len(),
        ]
    }
}

/// The combined canary's edit with the three signals set: [at its weekday, its selector
/// focal, fresh].
fn combined_edit(rules: &Rules, on: [bool; 3]) -> Edit {
    let wd = rules.combined_weekday;
    Edit {
        week: Some(if on[0] { wd + 0.5 } else { wd + 3.5 }),
        selector: Some(on[1].then_some(Selector::T)),
        age: Some(if on[2] { 0.0 } else { 14.0 }),
    }
}

/// Each probe site's value(s) for one system at one noise level, per canary in
/// [`Canary::CONTRACT`] order: `[canary][site][component]`.
pub type SiteValues = Vec<Vec<Vec<f64>>>;

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

/// Scores `versions` with every scorer: `[scorer][version][candidate]`. Each site's
/// history (through the probed turn, features at the noise level) is built once and
/// copied for its versions, then each version's edit is applied and its turn's noise
/// redrawn from the edited clean features with the same draws; the sequences are built
/// in chunks and shared by all scorers.
fn score_versions(
    scorers: &[&dyn ProbeScorer],
    data: &Dataset,
    versions: &[Version],
    sigma: Option<&[f64; FEATURE_DIM]>,
    seed: u64,
) -> Vec<Vec<Vec<f64>>> {
    let k = data.k;
    let mut out = vec![Vec::with_capacity(versions.len()); scorers.len()];
    for chunk in versions.chunks(64) {
        let mut seqs: Vec<UserSeq> = Vec::with_capacity(chunk.len());
        let mut base: Option<(Case, UserSeq)> = None;
        for v in chunk {
            if base.as_ref().is_none_or(|b| b.0 != v.case) {
                let u = &data.users[v.case.user];
                let mut s = slice_user(u, 0, v.case.turn + 1, k, data.embedding_dim, false);
                for t in 0..s.turns {
                    noise_turn(&mut s, t, k, sigma, seed);
                }
                base = Some((v.case, s));
            }
            let mut s = base.as_ref().expect("base sequence").1.clone();
            apply_edit(&mut s, v.case.turn, v.cand, k, v.edit);
            noise_turn(&mut s, v.case.turn, k, sigma, seed);
            seqs.push(s);
        }
        for (o, scorer) in out.iter_mut().zip(scorers) {
            o.extend(scorer.score(&seqs, k));
        }
    }
    out
}

/// The candidate's log-relevance minus the mean over the turn's reference candidates,
/// which removes a listwise model's per-turn constant. References are the valid
/// candidates without a contract-canary role: no probe edit changes their planted
/// relevance (ordinary relevance, the PoC rules and the burst rule read neither the
/// weekday, nor the selector slot, nor another memory's age).
fn identified(u: &UserSeq, t: usize, cand: usize, k: usize, scores: &[f64]) -> f64 {
    let refs: Vec<f64> = (0..k)
        .filter(|&j| {
            j != cand && u.valid[t * k + j] == 1.0 && u.role[t * k + j] == Role::None.code()
        })
        .map(|j| scores[j])
        .collect();
    let reference = if refs.is_empty() { 0.0 } else { mean(&refs) };
    scores[cand] - reference
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

/// Collects each probe site's values at one noise level for every scorer (one
/// [`SiteValues`] per scorer; the probe sequences are built once and shared).
pub fn site_values(
    scorers: &[&dyn ProbeScorer],
    data: &Dataset,
    probes: &Probes,
    rules: &Rules,
    snr_db: Option<f64>,
    seed: u64,
) -> Vec<SiteValues> {
    let k = data.k;
    let sigma = snr_db.map(|db| noise_sigma(data, db));
    // Every version of every canary, in canary order; `spans` marks each canary's range.
    let mut versions: Vec<Version> = Vec::new();
    let mut spans = Vec::new();
    let mut push = |vs: Vec<Version>, versions: &mut Vec<Version>| {
        let start = versions.len();
        versions.extend(vs);
        spans.push(start..versions.len());
    };
    let pairs = |sites: &[(Case, usize)], a: Edit, b: Edit| -> Vec<Version> {
        sites
            .iter()
            .flat_map(|&(case, cand)| [a, b].map(|edit| Version { case, cand, edit }))
            .collect()
    };
    let unedited = |cases: &[Case]| -> Vec<Version> {
        cases
            .iter()
            .map(|&case| Version {
                case,
                cand: 0,
                edit: Edit::default(),
            })
            .collect()
    };
    let wd = rules.cycle_weekday;
    push(
        pairs(&probes.cycle, Edit::week(wd + 0.5), Edit::week(wd + 3.5)),
        &mut versions,
    );
    push(
        probes
            .recency
            .iter()
            .flat_map(|&(case, cand)| {
                AGES.iter().map(move |&a| Version {
                    case,
                    cand,
                    edit: Edit::age(a),
                })
            })
            .collect(),
        &mut versions,
    );
    push(
        pairs(
            &probes.selectivity,
            Edit::selector(Some(Selector::Z)),
            Edit::selector(Some(Selector::W)),
        ),
        &mut versions,
    );
    push(unedited(&probes.chain), &mut versions);
    push(unedited(&probes.burst), &mut versions);
    push(
        pairs(
            &probes.dependency,
            Edit::selector(Some(Selector::P)),
            Edit::selector(None),
        ),
        &mut versions,
    );
    // Combined: per signal, a pair differing in that signal only.
    push(
        probes
            .combined
            .iter()
            .flat_map(|site| {
                (0..3).flat_map(move |signal| {
                    [true, false].map(|on| {
                        let mut set = [false; 3];
                        let mut others = site.others[signal].iter();
                        for (i, v) in set.iter_mut().enumerate() {
                            *v = if i == signal {
                                on
                            } else {
                                *others.next().expect("two other signals")
                            };
                        }
                        Version {
                            case: site.case,
                            cand: site.cand,
                            edit: combined_edit(rules, set),
                        }
                    })
                })
            })
            .collect(),
        &mut versions,
    );
    let scores = score_versions(scorers, data, &versions, sigma.as_ref(), seed);
    scores
        .iter()
        .map(|sc| {
            // Identified value of each version's probed candidate.
            let value = |i: usize| -> f64 {
                let v = &versions[i];
                identified(&data.users[v.case.user], v.case.turn, v.cand, k, &sc[i])
            };
            let diffs = |span: &std::ops::Range<usize>| -> Vec<Vec<f64>> {
                span.clone()
                    .step_by(2)
                    .map(|i| vec![value(i) - value(i + 1)])
                    .collect()
            };
            let age_mean = mean(&AGES);
            let sxx: f64 = AGES.iter().map(|a| (a - age_mean).powi(2)).sum();
            let recency: Vec<Vec<f64>> = spans[1]
                .clone()
                .step_by(AGES.len())
                .map(|start| {
                    let ys: Vec<f64> = (start..start + AGES.len()).map(value).collect();
                    let y_mean = mean(&ys);
                    vec![
                        AGES.iter()
                            .zip(&ys)
                            .map(|(a, y)| (a - age_mean) * (y - y_mean))
                            .sum::<f64>()
                            / sxx,
                    ]
                })
                .collect();
            // Supersession: every present pair of chain versions in order (newer above).
            let chain: Vec<Vec<f64>> = spans[3]
                .clone()
                .map(|i| {
                    let c = versions[i].case;
                    let u = &data.users[c.user];
                    let t = c.turn;
                    let mut members: Vec<(u8, f64)> = (0..k)
                        .filter(|&j| {
                            u.valid[t * k + j] == 1.0
                                && Role::from_code(u.role[t * k + j]).is_some_and(Role::is_chain)
                        })
                        .map(|j| (u.role[t * k + j], sc[i][j]))
                        .collect();
                    members.sort_by_key(|m| m.0);
                    vec![members.windows(2).all(|w| w[1].1 > w[0].1) as u8 as f64]
                })
                .collect();
            // Burst: Recall@10 of the burst memories on post-burst test cases.
            let burst: Vec<Vec<f64>> = spans[4]
                .clone()
                .map(|i| {
                    let c = versions[i].case;
                    let u = &data.users[c.user];
                    let t = c.turn;
                    let slot = |j: usize| t * k + j;
                    let labels: Vec<f64> = (0..k)
                        .map(|j| {
                            (u.valid[slot(j)] == 1.0
                                && u.canary[slot(j)] & Canary::Burst.bit() != 0)
                                as u8 as f64
                        })
                        .collect();
                    let masked: Vec<f64> = (0..k)
                        .map(|j| {
                            if u.valid[slot(j)] == 1.0 {
                                sc[i][j]
                            } else {
                                f64::NEG_INFINITY
                            }
                        })
                        .collect();
                    vec![case_metrics(&masked, &labels, 10).recall]
                })
                .collect();
            let combined: Vec<Vec<f64>> = spans[6]
                .clone()
                .step_by(6)
                .map(|start| {
                    (0..3)
                        .map(|s| value(start + 2 * s) - value(start + 2 * s + 1))
                        .collect()
                })
                .collect();
            vec![
                diffs(&spans[0]),
                recency,
                diffs(&spans[2]),
                chain,
                burst,
                diffs(&spans[5]),
                combined,
            ]
        })
        .collect()
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
        Canary::SupersessionChain | Canary::Burst => {
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

/// Whether a canary's criterion holds over its whole 95% interval `[lo, hi]` (see the
/// module table): a "greater than" criterion needs the lower bound above the threshold,
/// the recency rate the whole interval within 20% of λ. No probe never passes.
pub fn passes(canary: Canary, lo: f64, hi: f64, threshold: f64, probes: usize) -> bool {
    if probes == 0 || !lo.is_finite() || !hi.is_finite() {
        return false;
    }
    match canary {
        Canary::RecencyDecay => lo >= 0.8 * threshold && hi <= 1.2 * threshold,
        Canary::SupersessionChain => lo >= threshold,
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
                pass: passes(canary, lo, hi, threshold, n),
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
                edit: Edit::week(i as f64 / SWEEP_PER_DAY as f64),
            })
        })
        .collect();
    let scores = score_versions(&[scorer], data, &versions, None, 0).remove(0);
    let values: Vec<f64> = versions
        .iter()
        .zip(&scores)
        .map(|(v, sc)| identified(&data.users[v.case.user], v.case.turn, v.cand, data.k, sc))
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
