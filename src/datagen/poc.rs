//! The proof-of-concept preset: mimics the seed's PoC generator. Each sequence is one
//! query of K candidates whose 17 features follow the PoC's distributions (see [`draw`]),
//! and whose relevance follows one of the PoC's seven pointwise patterns.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Bernoulli, Beta, Distribution, Exp, Poisson, StandardNormal};

use super::calendar::{self, angle};
use super::tables::Tables;
use crate::config::Config;
use crate::datagen::sim::UserSpec;
use crate::features::{Canary, FEATURE_DIM, HopType, MAX_HOPS, feat};

/// The rules of the seven patterns, in [`Canary::POC`] order (documented in the manifest).
pub const RULES: [&str; 7] = [
    "log_age < log1p(7): memories younger than a week",
    "importance > 0.45",
    "access count >= 3 (PoC preset: log_access >= log1p(3))",
    "the memory's entity was focal in the previous turn (PoC preset: memory hour within 2 h of the query's)",
    "the memory's entity is in the focal entity's community (PoC preset: |entity_slot - focal slot| < 0.1)",
    "a focal entity's memory that is not superseded (PoC preset: not superseded and |aspect_slot - query aspect| < 0.25)",
    "reached by traversal within 2 entity hops (PoC preset: is_ka_traversal or log_structural_density > log1p(4))",
];

/// Relevance of a candidate that satisfies its turn's rule, and of one that does not.
pub const RULE_ON: f64 = 0.9;
pub const RULE_OFF: f64 = 0.04;

/// One PoC sequence: a single turn of K candidates.
pub fn simulate(config: &Config, spec: &UserSpec, rng: &mut ChaCha8Rng) -> Tables {
    let k = config.candidates.k as usize;
    let dim = config.world.embedding_dim as usize;
    let rule = Canary::POC[spec.user_id as usize % Canary::POC.len()];
    let ts = config.timeline.start_unix + spec.user_id as i64 * 3_600 + rng.random_range(0..3_600);
    let query_hour = calendar::hour(ts);
    let focal_slot: f32 = rng.random_range(0.0..1.0);
    let query_aspect: f32 = rng.random_range(0.0..1.0);
    let mut out = Tables::default();
    let mut rows = Vec::with_capacity(k);
    let mut ps = Vec::with_capacity(k);
    for c in 0..k {
        let d = draw(rng);
        let x = d.x;
        let hour_gap = (d.hour - query_hour)
            .abs()
            .min(24.0 - (d.hour - query_hour).abs());
        let holds = match rule {
            Canary::RecencyBias => x[feat::LOG_AGE] < 7f32.ln_1p(),
            Canary::ImportanceThreshold => x[feat::IMPORTANCE] > 0.45,
            Canary::AccessFrequency => x[feat::LOG_ACCESS] >= 3f32.ln_1p(),
            Canary::TemporalCoherence => hour_gap <= 2.0,
            Canary::EntityClustering => (x[feat::ENTITY_SLOT] - focal_slot).abs() < 0.1,
            Canary::SupersessionFilter => {
                x[feat::IS_SUPERSEDED] == 0.0 && (x[feat::ASPECT_SLOT] - query_aspect).abs() < 0.25
            }
            Canary::GraphTraversalPriority => {
                x[feat::IS_KA_TRAVERSAL] == 1.0 || x[feat::LOG_STRUCTURAL_DENSITY] > 4f32.ln_1p()
            }
            _ => unreachable!("only PoC patterns"),
        };
        ps.push(if holds { RULE_ON } else { RULE_OFF });
        rows.push(x);
        // One memory and one path per candidate.
        d.push_memory(&mut out, spec.user_id, c as u32, ts, dim, rng);
    }
    let labels = super::sim::banded_labels(config, &ps, rng);
    let c = &mut out.candidates;
    for (i, x) in rows.iter().enumerate() {
        c.user_id.push(spec.user_id);
        c.turn_index.push(0);
        c.cand_index.push(i as u8);
        c.memory_id.push(i as u32);
        c.entity_id
            .push((x[feat::ENTITY_SLOT] * 199.0).round() as u32);
        c.memory_slot.push(i as u32 % config.world.memory_slots);
        c.path_id.push(i as u32);
        c.canary_role.push(0);
        c.push_features(x);
        c.mask.push(0);
        c.label.push(labels[i]);
        c.clean_label.push(labels[i]);
        c.relevance.push(ps[i] as f32);
        c.canary.push(rule.bit());
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
    t.canary.push(rule.bit());
    t.n_relevant.push(labels.iter().sum());
    t.negative_slots.push(0);
    for _ in 0..dim {
        let z: f64 = StandardNormal.sample(rng);
        t.query.push(z as f32);
    }
    out
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
    let confidence: f32 = rng.random_range(0.3..1.0);
    let aspect_weight: f32 = rng.random_range(0.05..1.0);
    let strength: f32 = rng.random_range(0.05..1.0);
    x[feat::HOP_COUNT_NORM] = hops as f32 / MAX_HOPS as f32;
    x[feat::MIN_EDGE_CONFIDENCE] = confidence;
    x[feat::AVG_ASPECT_WEIGHT] = aspect_weight;
    x[feat::COMMUNITY_CROSSINGS_NORM] = 0.0;
    x[feat::PATH_FEEDBACK_SCORE] = 0.5;
    x[feat::LOG_DEPENDENCY_STRENGTH_PRODUCT] = (hops - 1) as f32 * strength.ln();
    x[feat::FOCAL_DISTANCE_NORM] = (hops - 1) as f32 / MAX_HOPS as f32;
    Drawn {
        x,
        hour,
        hops,
        confidence,
        aspect_weight,
        strength,
    }
}

impl Drawn {
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
