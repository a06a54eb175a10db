//! The proof-of-concept preset: the seed's PoC generator. Each sequence is one query of K
//! candidates whose 17 features follow the PoC's distributions (see [`draw`]). A share
//! `[poc] pattern_share` of the queries (the PoC's 0.3) carries one of the seven patterns,
//! chosen by the user id modulo 7, and its labels are 1 for the candidates the pattern's
//! rule picks and 0 otherwise; the other queries get labels drawn from Beta(1, 3),
//! independent of the features. The rules read the whole turn ([`PATTERN_RULES`]): the
//! youngest quarter, the top quartile of access, closeness to the first candidate.
//!
//! A candidate is relevant (`label` 1) when its label exceeds 0.5, as the PoC's HR@5
//! counts it; `relevance` keeps the graded label. The turn's `name` is its pattern's, or
//! [`RANDOM_NAME`]. Feature noise comes later, from `[noise]`, as for every preset.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Bernoulli, Beta, Distribution, Exp, Poisson, StandardNormal};

use super::calendar::{self, angle};
use super::tables::Tables;
use crate::config::Config;
use crate::datagen::schedule::UserSpec;
use crate::features::{Canary, FEATURE_DIM, HopType, MAX_HOPS, feat};

/// The rules of the seven patterns of the `world` preset's PoC canaries, in
/// [`Canary::POC`] order (documented in the manifest).
pub const RULES: [&str; 7] = [
    "log_age < log1p(7): memories younger than a week",
    "importance > 0.45",
    "access count >= 3",
    "the memory's entity was focal in the previous turn",
    "the memory's entity is in the focal entity's community",
    "a focal entity's memory that is not superseded",
    "reached by traversal within 2 entity hops",
];

/// The rules of the `poc` preset's patterns, as the PoC's generator applies them, in
/// [`Canary::POC`] order (documented in the manifest).
pub const PATTERN_RULES: [&str; 7] = [
    "the youngest quarter of the turn's candidates (lowest log_age)",
    "importance > 0.7, else the most important candidate",
    "log_access above the turn's 75th percentile, else the most accessed candidate",
    "time of day within distance 0.5 of the first candidate's (tod_sin, tod_cos)",
    "entity_slot within 0.15 of the first candidate's",
    "not superseded and importance > 0.5, else the first candidate not superseded; superseded ones are never relevant",
    "is_ka_traversal and log_structural_density above the turn's median, else every traversal candidate, else one candidate made a traversal (density log 2.0)",
];

/// The name of the queries whose labels are drawn independently of the features.
pub const RANDOM_NAME: &str = "random_relevance";

/// Relevance of a candidate that satisfies its turn's rule, and of one that does not
/// (the `world` preset's PoC canaries).
pub const RULE_ON: f64 = 0.9;
pub const RULE_OFF: f64 = 0.04;

/// One PoC sequence: a single turn of K candidates.
pub fn simulate(config: &Config, spec: &UserSpec, rng: &mut ChaCha8Rng) -> Tables {
    let k = config.candidates.k as usize;
    let dim = config.world.embedding_dim as usize;
    let rule = rng
        .random_bool(config.poc.pattern_share)
        .then(|| Canary::POC[spec.user_id as usize % Canary::POC.len()]);
    let ts = config.timeline.start_unix + spec.user_id as i64 * 3_600 + rng.random_range(0..3_600);
    let query_hour = calendar::hour(ts);
    let focal_slot: f32 = rng.random_range(0.0..1.0);
    let mut drawn: Vec<Drawn> = (0..k).map(|_| draw(rng)).collect();
    let graded: Vec<f32> = match rule {
        Some(rule) => pattern_labels(rule, &mut drawn, rng),
        None => {
            let beta = Beta::new(1.0, 3.0).expect("shape");
            (0..k).map(|_| beta.sample(rng) as f32).collect()
        }
    };
    let labels: Vec<u8> = graded.iter().map(|&g| (g > 0.5) as u8).collect();
    let bit = rule.map_or(0, Canary::bit);
    let mut out = Tables::default();
    for (c, d) in drawn.iter().enumerate() {
        // One memory and one path per candidate.
        d.push_memory(&mut out, spec.user_id, c as u32, ts, dim, rng);
    }
    let c = &mut out.candidates;
    for (i, d) in drawn.iter().enumerate() {
        let x = &d.x;
        c.user_id.push(spec.user_id);
        c.turn_index.push(0);
        c.cand_index.push(i as u8);
        c.memory_id.push(i as u32);
        c.entity_id.push(d.entity());
        c.memory_slot.push(i as u32 % config.world.memory_slots);
        c.path_id.push(i as u32);
        c.canary_role.push(0);
        c.push_clean(x);
        c.mask.push(0);
        c.label.push(labels[i]);
        c.clean_label.push(labels[i]);
        c.relevance.push(graded[i]);
        c.canary.push(bit);
        c.hard_negative.push(0);
    }
    let t = &mut out.turns;
    let (tod_s, tod_c) = angle(query_hour / 24.0);
    let (dow_s, dow_c) = angle(calendar::weekday(ts).floor() / 7.0);
    t.user_id.push(spec.user_id);
    t.turn_index.push(0);
    t.session_index.push(0);
    t.turn_in_session.push(0);
    t.timestamp.push(ts);
    t.stage.push(spec.stage);
    t.log_dt.push(0.0);
    t.tod_sin.push(tod_s);
    t.tod_cos.push(tod_c);
    t.dow_sin.push(dow_s);
    t.dow_cos.push(dow_c);
    t.log_session_age.push(0.0);
    t.focal_0.push((focal_slot * 199.0).round() as i32);
    t.focal_1.push(-1);
    for col in &mut t.selectors {
        col.push(-1);
    }
    t.cycle_peak.push(-1.0);
    t.canary.push(bit);
    t.n_relevant.push(labels.iter().sum());
    t.negative_slots.push(0);
    t.name
        .push(rule.map_or(RANDOM_NAME, Canary::name).to_string());
    for _ in 0..dim {
        let z: f64 = StandardNormal.sample(rng);
        t.query.push(z as f32);
    }
    out
}

/// The value at percentile `q` (0–100) of `v`, interpolated linearly between the closest
/// ranks (numpy's default).
fn percentile(v: &[f32], q: f64) -> f32 {
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    let pos = q / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let w = (pos - lo as f64) as f32;
    s[lo] + (s[hi] - s[lo]) * w
}

/// The labels (1 relevant, 0 not) `rule` gives the turn's candidates, as the PoC's
/// generator plants it; the traversal rule may turn one candidate into a traversal.
pub fn pattern_labels(rule: Canary, drawn: &mut [Drawn], rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = drawn.len();
    let col = |d: usize, drawn: &[Drawn]| -> Vec<f32> { drawn.iter().map(|c| c.x[d]).collect() };
    let argmax = |v: &[f32]| -> usize {
        // The first of the largest, as numpy's argmax.
        let mut best = 0;
        for (i, &x) in v.iter().enumerate() {
            if x > v[best] {
                best = i;
            }
        }
        best
    };
    let mut labels = vec![0f32; n];
    let mut set = |idx: &[usize]| {
        for &i in idx {
            labels[i] = 1.0;
        }
    };
    let which =
        |keep: &dyn Fn(usize) -> bool| -> Vec<usize> { (0..n).filter(|&i| keep(i)).collect() };
    match rule {
        Canary::RecencyBias => {
            let age = col(feat::LOG_AGE, drawn);
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| age[a].total_cmp(&age[b]));
            set(&order[..(n / 4).max(1)]);
        }
        Canary::ImportanceThreshold => {
            let imp = col(feat::IMPORTANCE, drawn);
            let idx = which(&|i| imp[i] > 0.7);
            set(&if idx.is_empty() {
                vec![argmax(&imp)]
            } else {
                idx
            });
        }
        Canary::AccessFrequency => {
            let acc = col(feat::LOG_ACCESS, drawn);
            let p75 = percentile(&acc, 75.0);
            let idx = which(&|i| acc[i] > p75);
            set(&if idx.is_empty() {
                vec![argmax(&acc)]
            } else {
                idx
            });
        }
        Canary::TemporalCoherence => {
            let (s0, c0) = (drawn[0].x[feat::TOD_SIN], drawn[0].x[feat::TOD_COS]);
            let dist: Vec<f32> = drawn
                .iter()
                .map(|d| {
                    ((d.x[feat::TOD_SIN] - s0).powi(2) + (d.x[feat::TOD_COS] - c0).powi(2)).sqrt()
                })
                .collect();
            // The first candidate is always within reach of itself.
            set(&which(&|i| dist[i] < 0.5));
        }
        Canary::EntityClustering => {
            let e0 = drawn[0].x[feat::ENTITY_SLOT];
            set(&which(&|i| {
                (drawn[i].x[feat::ENTITY_SLOT] - e0).abs() < 0.15
            }));
        }
        Canary::SupersessionFilter => {
            let current = |i: usize| drawn[i].x[feat::IS_SUPERSEDED] < 0.5;
            let idx = which(&|i| current(i) && drawn[i].x[feat::IMPORTANCE] > 0.5);
            if idx.is_empty() {
                set(&which(&current).into_iter().take(1).collect::<Vec<_>>());
            } else {
                set(&idx);
            }
        }
        Canary::GraphTraversalPriority => {
            let median = percentile(&col(feat::LOG_STRUCTURAL_DENSITY, drawn), 50.0);
            let trav = |i: usize| drawn[i].x[feat::IS_KA_TRAVERSAL] > 0.5;
            let mut idx = which(&|i| trav(i) && drawn[i].x[feat::LOG_STRUCTURAL_DENSITY] > median);
            if idx.is_empty() {
                idx = which(&trav);
            }
            if idx.is_empty() {
                let pick = rng.random_range(0..n);
                drawn[pick].make_traversal(rng);
                drawn[pick].x[feat::LOG_STRUCTURAL_DENSITY] = 2.0;
                idx = vec![pick];
            }
            set(&idx);
        }
        _ => unreachable!("only PoC patterns"),
    }
    labels
}

/// One candidate drawn from the PoC's feature distributions, with the
/// parameters of its traversal path.
#[derive(Clone, Debug)]
pub struct Drawn {
    pub x: [f32; FEATURE_DIM],
    /// Hour of day the memory is tied to.
    pub hour: f64,
    hops: usize,
    confidence: f32,
    aspect_weight: f32,
    strength: f32,
}

/// Draws one candidate's features and path.
pub fn draw(rng: &mut ChaCha8Rng) -> Drawn {
    let age = Exp::new(1.0 / 30.0).expect("rate");
    let gap = Exp::new(1.0 / 7.0).expect("rate");
    let density = Exp::new(1.0 / 2.0).expect("rate");
    let access = Poisson::new(3.0).expect("rate");
    let beta = Beta::new(2.0, 5.0).expect("shape");
    let bern = |p: f64| Bernoulli::new(p).expect("probability");
    let mut x = [0f32; FEATURE_DIM];
    let hour = rng.random_range(0.0..24.0);
    x[feat::LOG_AGE] = (age.sample(rng) as f32).ln_1p();
    x[feat::IMPORTANCE] = beta.sample(rng) as f32;
    x[feat::LOG_ACCESS] = (access.sample(rng) as f32).ln_1p();
    (x[feat::TOD_SIN], x[feat::TOD_COS]) = angle(hour / 24.0);
    (x[feat::DOW_SIN], x[feat::DOW_COS]) = angle(rng.random_range(0..7) as f64 / 7.0);
    (x[feat::MOY_SIN], x[feat::MOY_COS]) = angle(rng.random_range(0..12) as f64 / 12.0);
    x[feat::LOG_SESSION_GAP] = (gap.sample(rng) as f32).ln_1p();
    x[feat::IS_EMBEDDED] = bern(0.7).sample(rng) as u8 as f32;
    x[feat::IS_SUPERSEDED] = bern(0.1).sample(rng) as u8 as f32;
    x[feat::ENTITY_SLOT] = rng.random_range(0.0..1.0);
    x[feat::ASPECT_SLOT] = rng.random_range(0.0..1.0);
    x[feat::IS_CONSTRAINT] = bern(0.2).sample(rng) as u8 as f32;
    x[feat::LOG_STRUCTURAL_DENSITY] = (density.sample(rng) as f32).ln_1p();
    x[feat::IS_KA_TRAVERSAL] = bern(0.15).sample(rng) as u8 as f32;
    let hops = if x[feat::IS_KA_TRAVERSAL] == 1.0 {
        rng.random_range(2..=MAX_HOPS)
    } else {
        1
    };
    let mut d = Drawn {
        x,
        hour,
        hops,
        confidence: rng.random_range(0.3..1.0),
        aspect_weight: rng.random_range(0.05..1.0),
        strength: rng.random_range(0.05..1.0),
    };
    d.set_path();
    d
}

impl Drawn {
    /// Makes the candidate a traversal: reached over 2 to `MAX_HOPS` hops.
    pub fn make_traversal(&mut self, rng: &mut ChaCha8Rng) {
        self.x[feat::IS_KA_TRAVERSAL] = 1.0;
        self.hops = rng.random_range(2..=MAX_HOPS);
        self.set_path();
    }

    /// The path features (dims 17–23) of the candidate's hops.
    fn set_path(&mut self) {
        let (x, hops) = (&mut self.x, self.hops);
        x[feat::HOP_COUNT_NORM] = hops as f32 / MAX_HOPS as f32;
        x[feat::MIN_EDGE_CONFIDENCE] = self.confidence;
        x[feat::AVG_ASPECT_WEIGHT] = self.aspect_weight;
        x[feat::COMMUNITY_CROSSINGS_NORM] = 0.0;
        x[feat::PATH_FEEDBACK_SCORE] = 0.5;
        x[feat::LOG_DEPENDENCY_STRENGTH_PRODUCT] = (hops - 1) as f32 * self.strength.ln();
        x[feat::FOCAL_DISTANCE_NORM] = (hops - 1) as f32 / MAX_HOPS as f32;
    }

    /// The entity id the candidate's `entity_slot` stands for.
    pub fn entity(&self) -> u32 {
        (self.x[feat::ENTITY_SLOT] * 199.0).round() as u32
    }

    /// Writes the memory row (as of `ts`, with a random embedding) and its path
    /// (`path_id` = `id`).
    pub fn push_memory(
        &self,
        out: &mut Tables,
        user: u32,
        id: u32,
        ts: i64,
        dim: usize,
        rng: &mut ChaCha8Rng,
    ) {
        let x = &self.x;
        let m = &mut out.memories;
        m.user_id.push(user);
        m.memory_id.push(id);
        m.entity_id.push(self.entity());
        m.aspect.push((x[feat::ASPECT_SLOT] * 4.0).round() as u16);
        m.attribute.push(0);
        m.created
            .push(ts - (x[feat::LOG_AGE].exp_m1() as f64 * 86_400.0) as i64);
        m.importance.push(x[feat::IMPORTANCE]);
        m.pinned.push(0);
        m.superseded_at
            .push((x[feat::IS_SUPERSEDED] == 1.0).then_some(ts));
        m.supersedes.push(None);
        m.community.push(0);
        for _ in 0..dim {
            let z: f64 = StandardNormal.sample(rng);
            m.embedding.push(z as f32);
        }
        let p = &mut out.paths;
        for h in 0..self.hops {
            p.user_id.push(user);
            p.path_id.push(id);
            p.hop.push(h as u8);
            p.hop_type.push(if h == 0 {
                HopType::Entity
            } else {
                HopType::Dependency
            } as u8);
            p.edge_confidence
                .push(if h == 0 { 1.0 } else { self.confidence });
            p.aspect_weight
                .push(if h == 0 { self.aspect_weight } else { 0.0 });
            p.community_crossing.push(0);
            p.dependency_strength
                .push(if h == 0 { 1.0 } else { self.strength });
        }
    }
}
