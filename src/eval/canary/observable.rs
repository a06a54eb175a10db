//! The observable reference: a causal rule learner that reads only what a model reads.
//!
//! The oracle proves that a canary gate can pass for a system that knows the planted
//! roles. This reference proves that it can pass for one that has to learn them: for
//! each candidate it estimates the relevance from the user's own earlier turns (their
//! observed labels, the memory and entity ids shown, the focal entities, the time of
//! the week, the observed features) and never reads a role, a selector, the planted
//! peak, the clean features or the clean relevance. A canary gate it cannot pass is one
//! the data cannot teach: INVALID for learned models.
//!
//! The estimate is a product of a base rate and factors. The entity's showings that count
//! are those in its focal class now (focal, focal in recent turns, neither); each factor is
//! their label rate in a context like this one over their rate in all of them (shrunk
//! towards it by [`PRIOR`] pseudo-showings), so a factor the history does not support
//! stays near 1. What is alike for every user (the rates by focal state, by
//! the turns since a memory was last relevant, by the superseded flag) is learned over
//! every user's training turns, as a model learns it:
//!
//! | factor | what it learns | canary it serves |
//! |---|---|---|
//! | the entity's label rate in its focal class now (focal, focal in recent turns, neither), shrunk towards every user's rate in its focal state | which entities matter to this user, and that an entity focal in a run of recent turns stays relevant | all; burst |
//! | each focal entity of the turn, present or (for an entity that gated the candidate's relevance) absent | which focal entity gates which entity (a Bayes rule over the focal entities of the past showings) | selectivity, dependency, combined |
//! | time of the week (a weekly harmonic fitted to the labels) | when in the week an entity matters | cycle, combined |
//! | age: exponential decay | how fast an entity's memories fade | recency, combined, chain |
//! | turns since the memory was last relevant (pooled) | that what was just relevant stays so | burst, chain |
//! | the observed `is_superseded` flag (pooled) | that superseded versions matter less | chain |
//!
//! **Decay**, too, is learned across users, as a model learns it from its training turns: a
//! dozen showings of one user cannot fix a rate within 20%. An entity whose fresh memories
//! (under [`FRESH_DAYS`] old) were relevant while it was not focal, and whose older ones
//! much less, and that no focal entity gates and no supersession touches, is a decaying
//! entity; [`ObservableProbe::fit`] fits one rate, above the rate old memories settle at,
//! to the showings of every such entity of the training turns (each user's history split
//! in halves: one marks, the other fits). At a probed turn an entity the user's history
//! marks as decaying fades at that rate; any other at the rate fitted to its own showings,
//! never faster.
//!
//! **How far the training turns back the weekly factor.** Every factor above enters with
//! weight 1, as its rule says. A model learns its weights from its loss instead, so
//! [`ObservableProbe::fit`] also measures the weight the weekly factor earns: the one
//! that maximizes the listwise softmax likelihood (a model's training loss) of a sample
//! of training turns spread evenly over the users, with the rest of the rule's
//! log-relevance scaled by a factor fitted with it ([`ObservableProbe::week_scale`]), as
//! a model's scores are scaled to the labels before its canary values are read. The
//! weight ([`ObservableProbe::week_trust`]) is then in the units of those values: a
//! weight well under 1 says a learner would trust the weekly harmonic less than this rule
//! does, and a cycle ratio the rule reaches may be out of a learner's reach.
//!
//! A memory's age is estimated from every showing of it (the observed `log_age` of each,
//! moved to the probed turn), which averages out the feature noise; a newer memory ranks
//! above an older one of equal evidence.

use std::collections::BTreeMap;
use std::f64::consts::TAU;

use super::probe::{ProbeScorer, week_position};
use crate::data::UserSeq;
use crate::features::{FEATURE_DIM, feat};

/// Pseudo-showings that shrink every rate towards the rate it refines.
pub const PRIOR: f64 = 1.0;

/// Ridge on the weekly harmonic's cosine and sine coefficients (in showings).
const WEEK_RIDGE: f64 = 0.5;

/// Showings at most this old (days) fit a decay, and at least this many of them.
const DECAY_MAX_AGE: f64 = 21.0;
const DECAY_MIN_SHOWN: usize = 5;

/// Past this age (days) a memory has settled at the rate its decay leads to: showings of
/// a decaying entity older than this give that rate, and no age counts beyond it.
const FLOOR_DAYS: f64 = 35.0;

/// A memory younger than this (days) is fresh; one older than [`OLD_DAYS`] is old.
pub const FRESH_DAYS: f64 = 2.0;
const OLD_DAYS: f64 = 7.0;

/// A focal entity whose presence raised an entity's rate this many times gates it: its
/// absence counts too.
const GATE_RATIO: f64 = 2.0;

/// Turns looked back for an entity's recent focal turns and a memory's last relevant one.
const RECENT_TURNS: usize = 6;

/// Training turns, at most, that [`ObservableProbe::week_trust`] is measured on (spread
/// evenly over the users' histories), and the first turn of a history that counts.
const TRUST_TURNS: usize = 10_000;
const TRUST_FIRST_TURN: usize = 8;

/// The observable reference as a probe scorer: what it learned on the training turns.
#[derive(Clone, Debug, Default)]
pub struct ObservableProbe {
    /// Per day, of the entities a user's history marks as decaying.
    pub decay: f64,
    /// The label rates by context that are alike for every user (an entity's focal state,
    /// a memory's last relevant turn, the superseded flag), over every user's showings.
    pooled: Pooled,
    /// The weight on the weekly factor, and the scale of the rest of the log-relevance,
    /// that the training turns' listwise likelihood prefers (the rule applies 1 to both;
    /// see the module's documentation).
    pub week_trust: f64,
    pub week_scale: f64,
}

/// Label rates by context, pooled over showings.
#[derive(Clone, Debug, Default)]
struct Pooled {
    all: Count,
    /// By the entity's focal state ([`focal_state`]).
    by_state: BTreeMap<usize, Count>,
    /// By turns since the memory was last relevant (0: not within [`RECENT_TURNS`]).
    by_last_relevant: BTreeMap<usize, Count>,
    /// By the observed `is_superseded` flag.
    by_superseded: [Count; 2],
}

impl Pooled {
    fn add(&mut self, o: &Pooled) {
        add_count(&mut self.all, o.all);
        for (k, c) in &o.by_state {
            add_count(self.by_state.entry(*k).or_default(), *c);
        }
        for (k, c) in &o.by_last_relevant {
            add_count(self.by_last_relevant.entry(*k).or_default(), *c);
        }
        for (a, b) in self.by_superseded.iter_mut().zip(o.by_superseded) {
            add_count(a, b);
        }
    }
}

fn add_count(c: &mut Count, o: Count) {
    c.0 += o.0;
    c.1 += o.1;
}

impl ObservableProbe {
    /// Learns the decay rate from the turns of `data`'s users before their test turns
    /// (`test_start(user)`): the showings of every entity their history marks as
    /// decaying, pooled. The mark is read off one half of those turns and the rate fitted
    /// to the other (both ways round), so the users whose labels happened to look most
    /// like decay do not steepen it.
    pub fn fit(
        data: &crate::data::Dataset,
        test_start: impl Fn(&UserSeq) -> usize,
    ) -> ObservableProbe {
        let k = data.k;
        let mut pooled: Vec<(f64, f64)> = Vec::new();
        let mut rates = Pooled::default();
        for u in data.users.iter().filter(|u| u.turns > 0) {
            let t = test_start(u).min(u.turns);
            let h = History::of(u, t, k);
            rates.add(&h.pooled);
            for showings in h.by_entity.values() {
                let (first, second): (Vec<Showing>, Vec<Showing>) =
                    showings.iter().cloned().partition(|s| s.turn < t / 2);
                for (mark, fit) in [(&first, &second), (&second, &first)] {
                    if decaying(u, mark) {
                        pooled.extend(
                            fit.iter()
                                .filter(|s| !s.focal)
                                .map(|s| (s.age_then, s.label)),
                        );
                    }
                }
            }
        }
        // The rate the decayed memories settle at (label noise): the oldest showings'.
        let old: Vec<f64> = pooled
            .iter()
            .filter(|s| s.0 > FLOOR_DAYS)
            .map(|s| s.1)
            .collect();
        let floor = if old.len() >= 20 {
            old.iter().sum::<f64>() / old.len() as f64
        } else {
            0.0
        };
        let mut probe = ObservableProbe {
            decay: decay_rate(&pooled, floor),
            pooled: rates,
            week_scale: 1.0,
            week_trust: 1.0,
        };
        (probe.week_scale, probe.week_trust) =
            likeliest_scale_and_weight(&probe.trust_turns(data, &test_start));
        probe
    }

    /// Every `stride`-th training turn of `data` from [`TRUST_FIRST_TURN`] on (at most
    /// about [`TRUST_TURNS`] of them), as the rule scores it: each candidate's
    /// log-relevance without the weekly factor, the weekly factor, and its label.
    fn trust_turns(
        &self,
        data: &crate::data::Dataset,
        test_start: &impl Fn(&UserSeq) -> usize,
    ) -> Vec<Terms> {
        let ends: Vec<usize> = data
            .users
            .iter()
            .map(|u| test_start(u).min(u.turns))
            .collect();
        let total: usize = ends
            .iter()
            .map(|e| e.saturating_sub(TRUST_FIRST_TURN))
            .sum();
        let stride = total.div_ceil(TRUST_TURNS).max(1);
        let k = data.k;
        let mut out = Vec::new();
        for (u, &end) in data.users.iter().zip(&ends) {
            for t in (TRUST_FIRST_TURN..end).step_by(stride) {
                let parts = self.parts(u, t, k);
                out.push(Terms {
                    base: parts.iter().map(|p| p[0]).collect(),
                    extra: parts.iter().map(|p| p[1]).collect(),
                    relevant: (0..k)
                        .map(|j| u.valid[t * k + j] == 1.0 && u.labels[t * k + j] > 0.0)
                        .collect(),
                });
            }
        }
        out
    }
}

/// One turn's candidates as [`likeliest_scale_and_weight`] takes them: scores `base + w · extra`
/// (`base` −∞ for a slot that is not a candidate) and which were relevant.
struct Terms {
    base: Vec<f64>,
    extra: Vec<f64>,
    relevant: Vec<bool>,
}

/// The listwise softmax log-likelihood of the relevant candidates, `Σ_turns Σ_relevant
/// (s_j − log Σ_i e^{s_i})` with scores `s = τ · base + w · extra` (`p = [τ, w]`), with its
/// gradient and Hessian in `p`. Slots whose `base` is not finite are not candidates.
fn likelihood(turns: &[Terms], p: [f64; 2]) -> (f64, [f64; 2], [[f64; 2]; 2]) {
    let (mut ll, mut grad, mut hess) = (0.0, [0.0; 2], [[0.0; 2]; 2]);
    for t in turns {
        let live: Vec<([f64; 2], bool)> = t
            .base
            .iter()
            .zip(&t.extra)
            .zip(&t.relevant)
            .filter(|((b, _), _)| b.is_finite())
            .map(|((b, e), r)| ([*b, *e], *r))
            .collect();
        let hits = live.iter().filter(|(_, r)| *r).count() as f64;
        if hits == 0.0 {
            continue;
        }
        let s: Vec<f64> = live
            .iter()
            .map(|(x, _)| p[0] * x[0] + p[1] * x[1])
            .collect();
        let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - top).exp()).collect();
        let z: f64 = e.iter().sum();
        let lse = top + z.ln();
        // The softmax's mean and second moment of x.
        let (mut mean, mut second) = ([0.0; 2], [[0.0; 2]; 2]);
        for ((x, _), ei) in live.iter().zip(&e) {
            let q = ei / z;
            for a in 0..2 {
                mean[a] += q * x[a];
                for b in 0..2 {
                    second[a][b] += q * x[a] * x[b];
                }
            }
        }
        for ((x, r), si) in live.iter().zip(&s) {
            if *r {
                ll += si - lse;
                for a in 0..2 {
                    grad[a] += x[a] - mean[a];
                }
            }
        }
        for a in 0..2 {
            for b in 0..2 {
                hess[a][b] -= hits * (second[a][b] - mean[a] * mean[b]);
            }
        }
    }
    (ll, grad, hess)
}

/// The scale `τ` of the rest of the rule's log-relevance and the weight `w` of the extra
/// factor that maximize [`likelihood`] (concave in them): Newton's method from the rule's
/// `(1, 1)`, each step halved until the likelihood rises. `(1, 0)` without turns.
fn likeliest_scale_and_weight(turns: &[Terms]) -> (f64, f64) {
    if turns.iter().all(|t| !t.relevant.contains(&true)) {
        return (1.0, 0.0);
    }
    let mut p = [1.0, 1.0];
    let (mut ll, mut grad, mut hess) = likelihood(turns, p);
    for _ in 0..100 {
        // Solve −H d = g (2 × 2; a tiny ridge where a direction is flat).
        let (a, b, c) = (-hess[0][0] + 1e-12, -hess[0][1], -hess[1][1] + 1e-12);
        let det = a * c - b * b;
        if det.abs() < 1e-300 {
            break;
        }
        let d = [
            (c * grad[0] - b * grad[1]) / det,
            (a * grad[1] - b * grad[0]) / det,
        ];
        let mut step = 1.0;
        let moved = loop {
            let next = [p[0] + step * d[0], p[1] + step * d[1]];
            let (l, g, h) = likelihood(turns, next);
            if l >= ll {
                break Some((next, l, g, h));
            }
            step /= 2.0;
            if step < 1e-9 {
                break None;
            }
        };
        let Some((next, l, g, h)) = moved else { break };
        let size = (d[0] * step).abs().max((d[1] * step).abs());
        (p, ll, grad, hess) = (next, l, g, h);
        if size < 1e-7 {
            break;
        }
    }
    (p[0], p[1])
}

impl ProbeScorer for ObservableProbe {
    fn score(&self, seqs: &[UserSeq], k: usize) -> Vec<Vec<f64>> {
        seqs.iter()
            .map(|u| self.log_relevance(u, u.turns - 1, k))
            .collect()
    }
}

/// One earlier showing.
#[derive(Clone)]
struct Showing {
    turn: usize,
    memory: u32,
    label: f64,
    /// The memory's age when shown, and at the turn the history is taken to, from this
    /// showing's observed `log_age`.
    age_then: f64,
    age_now: f64,
    /// Its entity's focal state then ([`focal_state`]).
    state: usize,
    /// Whether its entity was focal then.
    focal: bool,
    /// Whether its observed `is_superseded` flag was set.
    superseded: bool,
}

/// The focal state of an entity at a turn: focal, or in how many of the last
/// [`RECENT_TURNS`] turns it was (pooled over entities for a factor).
fn focal_state(u: &UserSeq, t: usize, e: u32) -> usize {
    let e = e as i32;
    if u.focal[2 * t] == e || u.focal[2 * t + 1] == e {
        return RECENT_TURNS + 1;
    }
    (t.saturating_sub(RECENT_TURNS)..t)
        .filter(|&s| u.focal[2 * s] == e || u.focal[2 * s + 1] == e)
        .count()
}

/// The class of a focal state: neither focal now nor lately (0), focal lately (1), focal
/// now (2).
fn class(state: usize) -> u8 {
    match state {
        0 => 0,
        s if s <= RECENT_TURNS => 1,
        _ => 2,
    }
}

/// A rate with [`PRIOR`] pseudo-showings at `prior`.
fn shrunk(hits: f64, n: f64, prior: f64) -> f64 {
    (hits + PRIOR * prior) / (n + PRIOR)
}

/// Hits and showings.
type Count = (f64, f64);

fn add(c: &mut Count, y: f64) {
    c.0 += y;
    c.1 += 1.0;
}

/// The factor by which a context's rate `c` (shrunk towards `base`) exceeds `base`.
fn log_factor(c: Count, base: f64) -> f64 {
    (shrunk(c.0, c.1, base) / base).ln()
}

fn observed(u: &UserSeq, slot: usize, col: usize) -> f64 {
    u.features[slot * FEATURE_DIM + col] as f64
}

fn days(u: &UserSeq, t: usize) -> f64 {
    u.timestamp[t] as f64 / 86_400.0
}

/// When (in days) the memory at `slot`, shown at turn `s`, was created, by its observed
/// `log_age`.
fn created_at(u: &UserSeq, s: usize, slot: usize) -> f64 {
    days(u, s) - observed(u, slot, feat::LOG_AGE).exp_m1().max(0.0)
}

/// Whether an entity's showings mark it as decaying: while it was not focal, its fresh
/// memories were relevant (at least half of two or more showings) and its old ones at
/// under half that rate; and neither did a focal entity gate its relevance nor were its
/// memories superseded (then its fresh memories say more of the gate, or of the newest
/// version, than of age).
fn decaying(u: &UserSeq, showings: &[Showing]) -> bool {
    if showings.iter().any(|s| s.superseded) || gated(u, showings) {
        return false;
    }
    let (mut fresh, mut old) = (Count::default(), Count::default());
    for s in showings.iter().filter(|s| !s.focal) {
        if s.age_then < FRESH_DAYS {
            add(&mut fresh, s.label);
        } else if s.age_then > OLD_DAYS {
            add(&mut old, s.label);
        }
    }
    let fresh_rate = fresh.0 / fresh.1.max(1.0);
    fresh.1 >= 2.0 && fresh_rate >= 0.5 && (old.1 == 0.0 || old.0 / old.1 < 0.5 * fresh_rate)
}

/// Whether some focal entity gated the showings' relevance: its presence raised their rate
/// [`GATE_RATIO`] times and its absence lowered it as many times.
fn gated(u: &UserSeq, showings: &[Showing]) -> bool {
    let all = showings.iter().fold(Count::default(), |mut c, s| {
        add(&mut c, s.label);
        c
    });
    let rate = shrunk(all.0, all.1, 0.05);
    by_focal(u, showings, None).values().any(|&(h, n)| {
        h > 0.0
            && shrunk(h, n, rate) > GATE_RATIO * rate
            && shrunk(all.0 - h, all.1 - n, rate) * GATE_RATIO < rate
    })
}

/// The showings' counts by the focal entities of their turns (other than `except`).
fn by_focal<'a>(
    u: &UserSeq,
    showings: impl IntoIterator<Item = &'a Showing>,
    except: Option<i32>,
) -> BTreeMap<i32, Count> {
    let mut out: BTreeMap<i32, Count> = BTreeMap::new();
    for p in showings {
        for f in [u.focal[2 * p.turn], u.focal[2 * p.turn + 1]] {
            if f >= 0 && Some(f) != except {
                add(out.entry(f).or_default(), p.label);
            }
        }
    }
    out
}

/// The decay rate λ ≥ 0 that fits `rate = floor + c·exp(−λ·age)` to (age, label)
/// showings no older than [`DECAY_MAX_AGE`] (Poisson quasi-likelihood with a log link:
/// consistent for any mean of that form), by bisection of its score equation; 0 without
/// evidence of decay.
fn decay_rate(showings: &[(f64, f64)], floor: f64) -> f64 {
    let fit: Vec<(f64, f64)> = showings
        .iter()
        .filter(|s| s.0 <= DECAY_MAX_AGE)
        .map(|&(a, y)| (a, y - floor))
        .collect();
    if fit.len() < DECAY_MIN_SHOWN {
        return 0.0;
    }
    let hits: f64 = fit.iter().map(|s| s.1).sum();
    if hits <= 0.0 {
        return 0.0;
    }
    let hit_age: f64 = fit.iter().map(|s| s.0 * s.1).sum::<f64>() / hits;
    // The mean age under weights exp(−λ·age) falls with λ; the fit makes it the hits'.
    let weighted_age = |lambda: f64| -> f64 {
        let (mut w, mut wa) = (0.0, 0.0);
        for &(a, _) in &fit {
            let x = (-lambda * a).exp();
            w += x;
            wa += x * a;
        }
        wa / w.max(1e-300)
    };
    // Hits no younger than the showings (to rounding): no decay.
    if weighted_age(0.0) <= hit_age + 1e-9 * (1.0 + hit_age) {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0, 2.0);
    if weighted_age(hi) > hit_age {
        return hi;
    }
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if weighted_age(mid) > hit_age {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The log factor of the time of the week `now` for showings `(week position, label)`:
/// the weekly harmonic `a + b·cos θ + c·sin θ` fitted to the labels by least squares
/// (ridge [`WEEK_RIDGE`] on b and c; a weekly cosine in the relevance is exactly of this
/// form), at `now` over the showings' mean. Both are floored at a quarter of the rate
/// `rate`, so a fit below zero says "rarely", not "never".
fn week_factor(showings: &[(f64, f64)], now: f64, rate: f64) -> f64 {
    if showings.len() < 4 {
        return 0.0;
    }
    let angle = |w: f64| TAU * w / 7.0;
    // Normal equations of [1, cos, sin].
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    for &(w, y) in showings {
        let x = [1.0, angle(w).cos(), angle(w).sin()];
        for i in 0..3 {
            v[i] += x[i] * y;
            for j in 0..3 {
                m[i][j] += x[i] * x[j];
            }
        }
    }
    let mean = v[0] / m[0][0];
    m[1][1] += WEEK_RIDGE;
    m[2][2] += WEEK_RIDGE;
    let Some(beta) = solve3(m, v) else {
        return 0.0;
    };
    let at = beta[0] + beta[1] * angle(now).cos() + beta[2] * angle(now).sin();
    let floor = 0.25 * rate;
    (at.max(floor) / mean.max(floor)).ln()
}

/// Solves a 3 × 3 linear system by Cramer's rule (`None` when singular).
fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    let det = |a: [[f64; 3]; 3]| {
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    };
    let d = det(m);
    if d.abs() < 1e-12 {
        return None;
    }
    Some(std::array::from_fn(|c| {
        let mut a = m;
        for r in 0..3 {
            a[r][c] = v[r];
        }
        det(a) / d
    }))
}

/// What turns `0..t` of a user show: the showings by entity, and the pooled counts.
struct History {
    by_entity: BTreeMap<u32, Vec<Showing>>,
    pooled: Pooled,
    /// The turn each memory was last relevant at.
    last_relevant: BTreeMap<u32, usize>,
    week: Vec<f64>,
}

impl History {
    fn of(u: &UserSeq, t: usize, k: usize) -> History {
        let mut h = History {
            by_entity: BTreeMap::new(),
            pooled: Pooled::default(),
            last_relevant: BTreeMap::new(),
            week: (0..=t.min(u.turns - 1))
                .map(|s| week_position(u, s))
                .collect(),
        };
        let now = if t < u.turns {
            days(u, t)
        } else {
            days(u, u.turns - 1)
        };
        for s in 0..t {
            for j in 0..k {
                let slot = s * k + j;
                if u.valid[slot] != 1.0 {
                    continue;
                }
                let (y, e, m) = (u.labels[slot] as f64, u.entity[slot], u.memory_id[slot]);
                let state = focal_state(u, s, e);
                let since = h.since_relevant(m, s);
                let p = &mut h.pooled;
                add(&mut p.all, y);
                add(p.by_state.entry(state).or_default(), y);
                add(p.by_last_relevant.entry(since).or_default(), y);
                add(&mut p.by_superseded[superseded(u, slot)], y);
                let created = created_at(u, s, slot);
                h.by_entity.entry(e).or_default().push(Showing {
                    turn: s,
                    memory: m,
                    label: y,
                    age_then: (days(u, s) - created).max(0.0),
                    age_now: now - created,
                    state,
                    focal: state > RECENT_TURNS,
                    superseded: superseded(u, slot) == 1,
                });
            }
            for j in 0..k {
                let slot = s * k + j;
                if u.valid[slot] == 1.0 && u.labels[slot] == 1.0 {
                    h.last_relevant.insert(u.memory_id[slot], s);
                }
            }
        }
        h
    }

    /// Turns since memory `m` was last relevant before turn `t`, or 0 when it was not
    /// within [`RECENT_TURNS`].
    fn since_relevant(&self, m: u32, t: usize) -> usize {
        match self.last_relevant.get(&m) {
            Some(&s) if t - s <= RECENT_TURNS => t - s,
            _ => 0,
        }
    }
}

fn superseded(u: &UserSeq, slot: usize) -> usize {
    (observed(u, slot, feat::IS_SUPERSEDED) > 0.5) as usize
}

impl ObservableProbe {
    /// Log-relevance of every candidate of turn `t` of `u`, from turns `0..t` and the
    /// inputs of turn `t` (never its labels).
    pub fn log_relevance(&self, u: &UserSeq, t: usize, k: usize) -> Vec<f64> {
        self.parts(u, t, k)
            .iter()
            .map(|[rest, week]| rest + week)
            .collect()
    }

    /// Each candidate's log-relevance at turn `t` in two parts: every factor but the time
    /// of the week (−∞ for a slot that is not a candidate), and the time of the week's.
    fn parts(&self, u: &UserSeq, t: usize, k: usize) -> Vec<[f64; 2]> {
        let h = History::of(u, t, k);
        // The user's rate, shrunk towards one relevant candidate in twenty.
        let user_rate = (h.pooled.all.0 + 1.0) / (h.pooled.all.1 + 20.0);
        let now = days(u, t);
        let week_now = h.week[t];
        let focal_now = [u.focal[2 * t], u.focal[2 * t + 1]];
        let empty = Vec::new();
        (0..k)
            .map(|j| {
                let slot = t * k + j;
                if u.valid[slot] != 1.0 {
                    return [f64::NEG_INFINITY, 0.0];
                }
                let (e, m) = (u.entity[slot], u.memory_id[slot]);
                let all = h.by_entity.get(&e).unwrap_or(&empty);
                // The entity's showings in its focal class now (focal, recently focal,
                // neither): the context every rate and factor below is taken in.
                let state = focal_state(u, t, e);
                let past: Vec<&Showing> = all
                    .iter()
                    .filter(|p| class(p.state) == class(state))
                    .collect();
                let n = past.len() as f64;
                let y: f64 = past.iter().map(|p| p.label).sum();
                // Its rate, shrunk towards every user's rate in its focal state.
                let pop = &self.pooled;
                let prior = pop
                    .by_state
                    .get(&state)
                    .map_or(user_rate, |&(h, m)| shrunk(h, m, user_rate));
                let rate = shrunk(y, n, prior);
                let mut log_p = rate.ln();
                // Focal entities: present ones, and absent ones that gated this entity.
                let by_focal = by_focal(u, past.iter().copied(), Some(e as i32));
                for &f in focal_now.iter().filter(|&&f| f >= 0 && f != e as i32) {
                    log_p += log_factor(by_focal.get(&f).copied().unwrap_or_default(), rate);
                }
                for (&f, &(hf, nf)) in &by_focal {
                    if !focal_now.contains(&f)
                        && hf > 0.0
                        && shrunk(hf, nf, rate) > GATE_RATIO * rate
                    {
                        log_p += log_factor((y - hf, n - nf), rate);
                    }
                }
                // Time of the week.
                let week: Vec<(f64, f64)> =
                    past.iter().map(|p| (h.week[p.turn], p.label)).collect();
                let week = week_factor(&week, week_now, rate);
                // Age: the memory's, from every showing of it; the entity's decay.
                let sightings: Vec<f64> = past
                    .iter()
                    .filter(|p| p.memory == m)
                    .map(|p| p.age_now)
                    .chain([now - created_at(u, t, slot)])
                    .collect();
                let age = (sightings.iter().sum::<f64>() / sightings.len() as f64).max(0.0);
                // Any other entity fades at the rate of its own showings in the same focal
                // state as now (focal or not), never faster than a decaying one.
                let focal = state > RECENT_TURNS;
                let decay = if decaying(u, all) {
                    self.decay
                } else {
                    let fit: Vec<(f64, f64)> = past
                        .iter()
                        .filter(|p| p.focal == focal)
                        .map(|p| (p.age_then, p.label))
                        .collect();
                    decay_rate(&fit, 0.0).min(self.decay)
                };
                // Past FLOOR_DAYS a memory has settled at the rate decay leads to.
                log_p -= decay * age.min(FLOOR_DAYS);
                // Alike for every user (learned over the training turns): the memory's last
                // relevant turn, the superseded flag.
                let base = shrunk(pop.all.0, pop.all.1, 0.05);
                let factor = |c: Option<&Count>| log_factor(c.copied().unwrap_or_default(), base);
                log_p += factor(pop.by_last_relevant.get(&h.since_relevant(m, t)));
                log_p += factor(Some(&pop.by_superseded[superseded(u, slot)]));
                // Of two memories with equal evidence, the newer first.
                [log_p - 1e-4 * age, week]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_rate_recovers_an_exponential_above_its_floor() {
        // Showings whose labels are their expected values: the score equation holds
        // exactly at the planted rate.
        let showings: Vec<(f64, f64)> = (0..=40)
            .map(|i| {
                let a = i as f64 * 0.5;
                (a, 0.02 + 0.9 * (-0.15 * a).exp())
            })
            .collect();
        assert!((decay_rate(&showings, 0.02) - 0.15).abs() < 1e-6);
        // Ignoring the floor flattens the fit; no decay, or too little evidence, is 0.
        assert!(decay_rate(&showings, 0.0) < 0.15);
        let flat: Vec<(f64, f64)> = showings.iter().map(|s| (s.0, 0.3)).collect();
        assert_eq!(decay_rate(&flat, 0.0), 0.0);
        assert_eq!(decay_rate(&showings[..DECAY_MIN_SHOWN - 1], 0.02), 0.0);
    }

    /// Turns of `k` candidates with standard normal `base` and `extra`, one relevant each,
    /// drawn from the softmax of `scale · base + weight · extra`.
    fn drawn_turns(scale: f64, weight: f64, turns: usize, k: usize, seed: u64) -> Vec<Terms> {
        use rand::{RngExt, SeedableRng};
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..turns)
            .map(|_| {
                let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
                let base: Vec<f64> = (0..k).map(|_| normal()).collect();
                let extra: Vec<f64> = (0..k).map(|_| normal()).collect();
                let p: Vec<f64> = base
                    .iter()
                    .zip(&extra)
                    .map(|(b, e)| (scale * b + weight * e).exp())
                    .collect();
                let mut u = rng.random::<f64>() * p.iter().sum::<f64>();
                let pick = p
                    .iter()
                    .position(|&x| {
                        u -= x;
                        u <= 0.0
                    })
                    .unwrap_or(k - 1);
                Terms {
                    base,
                    extra,
                    relevant: (0..k).map(|j| j == pick).collect(),
                }
            })
            .collect()
    }

    #[test]
    fn likeliest_scale_and_weight_recover_the_planted_ones() {
        // 4,000 turns of 10 candidates fix each to about ±0.05 (a standard error of about
        // 0.02 here, from the Fisher information).
        for (scale, weight) in [(1.0, 0.0), (0.4, 0.3), (1.0, 1.0), (1.5, -0.5)] {
            let (s, w) = likeliest_scale_and_weight(&drawn_turns(scale, weight, 4000, 10, 7));
            assert!(
                (s - scale).abs() < 0.08 && (w - weight).abs() < 0.08,
                "planted ({scale}, {weight}): ({s}, {w})"
            );
        }
        // At the fit the gradient is zero and a step away in either parameter lowers the
        // likelihood.
        let turns = drawn_turns(0.7, 0.2, 2000, 10, 8);
        let (s, w) = likeliest_scale_and_weight(&turns);
        let (ll, grad, _) = likelihood(&turns, [s, w]);
        assert!(grad.iter().all(|g| g.abs() < 1e-4), "{grad:?}");
        for p in [[s + 0.05, w], [s - 0.05, w], [s, w + 0.05], [s, w - 0.05]] {
            assert!(likelihood(&turns, p).0 < ll);
        }
        // An extra term that says nothing of the labels earns no weight, whatever its size.
        let mut noise = drawn_turns(0.8, 0.0, 4000, 10, 9);
        for t in &mut noise {
            t.extra.iter_mut().for_each(|e| *e *= 3.0);
        }
        assert!(likeliest_scale_and_weight(&noise).1.abs() < 0.03);
        // Slots that are not candidates do not count; without a relevant label, the rule's
        // scale and no weight.
        let mut padded = drawn_turns(0.6, 1.0, 4000, 10, 10);
        for t in &mut padded {
            t.base.push(f64::NEG_INFINITY);
            t.extra.push(5.0);
            t.relevant.push(false);
        }
        let (s, w) = likeliest_scale_and_weight(&padded);
        assert!(
            (s - 0.6).abs() < 0.08 && (w - 1.0).abs() < 0.08,
            "({s}, {w})"
        );
        assert_eq!(likeliest_scale_and_weight(&[]), (1.0, 0.0));
    }

    #[test]
    fn week_factor_recovers_a_weekly_cosine() {
        // Labels at their expected values, 0.4·(1 + 0.8·cos) peaking at day 2.5, shown at
        // every hour of the week: the fitted harmonic is the planted one (up to the ridge,
        // under 1% of the amplitude here).
        let rate = |w: f64| 0.4 * (1.0 + 0.8 * (TAU * (w - 2.5) / 7.0).cos());
        let showings: Vec<(f64, f64)> = (0..7 * 24)
            .map(|h| {
                let w = h as f64 / 24.0;
                (w, rate(w))
            })
            .collect();
        let mean = 0.4;
        for w in [2.5, 4.0, 5.5, 6.9] {
            let want = (rate(w).max(0.25 * mean) / mean).ln();
            let got = week_factor(&showings, w, mean);
            assert!((got - want).abs() < 0.03, "at {w}: {got} against {want}");
        }
        // The peak against three days later: the planted ratio.
        let d = week_factor(&showings, 2.5, mean) - week_factor(&showings, 5.5, mean);
        assert!((d - (rate(2.5) / rate(5.5)).ln()).abs() < 0.05, "{d}");
    }
}
