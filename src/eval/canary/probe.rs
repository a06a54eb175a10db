//! The probes: the one-factor edits of a canary turn, the probe sites of every canary,
//! the noise of the SNR curve, and the systems that score probes (a trained model, the
//! oracle with the generator's rules, a constant and a random scorer).

use std::cell::RefCell;

use burn::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::canary::{Inputs, Role, Rules, Selector};
use crate::data::{CONTEXT_NAMES, Dataset, UserSeq};
use crate::datagen::calendar;
use crate::eval::split::Case;
use crate::features::{Canary, FEATURE_DIM, feat};
use crate::model::batch::chosen_turns;
use crate::model::mamba::ScanImpl;
use crate::model::scorer::{ModelConfig, Scorer};

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
pub(super) struct Version {
    pub(super) case: Case,
    pub(super) cand: usize,
    pub(super) edit: Edit,
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
                // Only the probed (last) turns are scored.
                let at: Vec<(usize, usize)> =
                    lens.iter().enumerate().map(|(i, &n)| (i, n - 1)).collect();
                let (full, turns) =
                    chosen_turns(self.data, &refs, &lens, &at, self.cfg, self.device);
                let s =
                    self.model
                        .forward_at(&full, &turns, &at, ScanImpl::for_device(self.device));
                let v: Vec<f32> = s.try_into_vec_as::<f32>().expect("f32 scores");
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, _)| {
                        let row = i * k;
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
pub(super) fn week_position(u: &UserSeq, t: usize) -> f64 {
    let cd = CONTEXT_NAMES.len();
    crate::features::week_position(&u.context[t * cd..(t + 1) * cd])
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
            cycle_peak: u.cycle_peak,
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
    pub(super) rng: RefCell<ChaCha8Rng>,
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
pub(super) fn noise_turn(
    u: &mut UserSeq,
    t: usize,
    k: usize,
    sigma: Option<&[f64; FEATURE_DIM]>,
    seed: u64,
) {
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

/// Applies `edit` to turn `t` (candidate `c` for an age) of `u`.
pub fn apply_edit(u: &mut UserSeq, t: usize, c: usize, k: usize, edit: Edit) {
    let cd = CONTEXT_NAMES.len();
    if let Some(d) = edit.week {
        let d = d.rem_euclid(7.0);
        // Written as the generator writes a turn's weekday and time of day.
        let (ds, dc) = calendar::angle(d.floor() / 7.0);
        let (ts, tc) = calendar::angle(d - d.floor());
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
pub(super) struct CombinedSite {
    pub(super) case: Case,
    pub(super) cand: usize,
    pub(super) others: [[bool; 2]; 3],
}

/// Probe sites of every canary, chosen once per dataset.
#[derive(Clone, Debug, Default)]
pub struct Probes {
    pub(super) cycle: Vec<(Case, usize)>,
    pub(super) recency: Vec<(Case, usize)>,
    pub(super) selectivity: Vec<(Case, usize)>,
    pub(super) chain: Vec<Case>,
    pub(super) burst: Vec<Case>,
    pub(super) dependency: Vec<(Case, usize)>,
    pub(super) combined: Vec<CombinedSite>,
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

/// Least number of earlier showings of a probed memory's entity: a canary is probed
/// where the user's own history holds evidence of its pattern.
pub const MIN_EVIDENCE: usize = 16;

/// The same for the combined canary, whose three signals are learned from the showings of
/// one entity.
pub const COMBINED_EVIDENCE: usize = 32;

/// What the turns before `t` show of entity `e`'s memories: how many were shown, and how
/// many at turns where entity id `f` was focal.
fn evidence(u: &UserSeq, t: usize, k: usize, e: u32, f: Option<i32>) -> (usize, usize) {
    let (mut shown, mut with) = (0, 0);
    for s in 0..t {
        let n = (0..k)
            .filter(|&j| u.valid[s * k + j] == 1.0 && u.entity[s * k + j] == e)
            .count();
        shown += n;
        if f.is_some_and(|f| u.focal[2 * s] == f || u.focal[2 * s + 1] == f) {
            with += n;
        }
    }
    (shown, with)
}

/// Whether memory `m` was shown before turn `t` (a memory with no history: an edit of its
/// age contradicts none of its history features).
fn shown_before(u: &UserSeq, t: usize, k: usize, m: u32) -> bool {
    (0..t * k).any(|i| u.valid[i] == 1.0 && u.memory_id[i] == m)
}

impl Probes {
    /// Finds up to `per_canary` sites of each canary among the GTS `cases`: turns that
    /// show a canary memory whose entity the user was shown at least [`MIN_EVIDENCE`]
    /// times before ([`COMBINED_EVIDENCE`] for combined); selectivity, dependency and
    /// combined also need an earlier showing with their selector focal, recency and
    /// combined a memory never shown before.
    pub fn build(data: &Dataset, cases: &[Case], per_canary: usize, seed: u64) -> Probes {
        let k = data.k;
        let with_role = |role: Role, selector: Option<Selector>| -> Vec<(Case, usize)> {
            let v: Vec<(Case, usize)> = cases
                .iter()
                .filter(|c| selector.is_none() || selector_slot_free(&data.users[c.user], c.turn))
                .filter_map(|&c| {
                    let u = &data.users[c.user];
                    let f = selector.map(|s| u.selectors[s as usize]);
                    (0..k)
                        .find(|&j| {
                            let slot = c.turn * k + j;
                            if u.valid[slot] != 1.0 || u.role[slot] != role.code() {
                                return false;
                            }
                            let (shown, with) = evidence(u, c.turn, k, u.entity[slot], f);
                            let fresh = !matches!(role, Role::Recency | Role::Combined)
                                || !shown_before(u, c.turn, k, u.memory_id[slot]);
                            let needed = if role == Role::Combined {
                                COMBINED_EVIDENCE
                            } else {
                                MIN_EVIDENCE
                            };
                            shown >= needed && (selector.is_none() || with > 0) && fresh
                        })
                        .map(|j| (c, j))
                })
                .collect();
            spread(v, per_canary)
        };
        let cycle = with_role(Role::Cycle, None);
        let recency = with_role(Role::Recency, None);
        let selectivity = with_role(Role::Selectivity, Some(Selector::Z));
        let dependency = with_role(Role::Dependency, Some(Selector::P));
        let combined_sites = with_role(Role::Combined, Some(Selector::T));
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

/// The combined canary's edit with the three signals set: [at its peak or three days
/// later, its selector T focal or another selector (P), fresh or 14 days old].
pub(super) fn combined_edit(rules: &Rules, on: [bool; 3]) -> Edit {
    let peak = rules.combined_peak();
    Edit {
        week: Some(if on[0] { peak } else { peak + 3.0 }),
        selector: Some(Some(if on[1] { Selector::T } else { Selector::P })),
        age: Some(if on[2] { 0.0 } else { 14.0 }),
    }
}
