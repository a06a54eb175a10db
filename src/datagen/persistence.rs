//! The persistence preset: a stream where only history helps. Each user has a pool of
//! memories and a current topic of a few of them that carries over from turn to turn with
//! probability `stay` (otherwise a new topic is drawn from the whole pool, so it may share
//! a memory with the old one). Topic memories are relevant with
//! probability `relevance_on`, the others with `relevance_off`, and every feature is drawn
//! from the PoC's distributions independently of relevance. A stateless scorer therefore
//! ranks at chance, while "relevant at the previous turn" recovers most of the oracle: a
//! temporal model that cannot match that rule has not learned from history.

use rand::RngExt;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::poc::{self, Drawn};
use super::schedule::{UserSpec, schedule};
use super::sim::independent_labels;
use super::tables::Tables;
use crate::config::Config;

/// `n` distinct memories of `0..pool`.
fn draw_topic(pool: u32, n: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let mut all: Vec<u32> = (0..pool).collect();
    all.shuffle(rng);
    all.truncate(n);
    all
}

/// One user's stream.
pub fn simulate(config: &Config, spec: &UserSpec, rng: &mut ChaCha8Rng) -> Tables {
    let p = &config.persistence;
    let k = config.candidates.k as usize;
    let dim = config.world.embedding_dim as usize;
    let t = &config.timeline;
    let first_day =
        t.start_unix.div_euclid(86_400) + rng.random_range(0..=t.start_spread_days as i64);
    let slots = schedule(config, rng, first_day, spec.turns);
    let first_ts = slots.first().map_or(first_day * 86_400, |s| s.ts);
    let mut out = Tables::default();
    // The pool: each memory's features are drawn once and shown unchanged.
    let pool: Vec<Drawn> = (0..p.pool).map(|_| poc::draw(rng)).collect();
    for (id, d) in pool.iter().enumerate() {
        d.push_memory(&mut out, spec.user_id, id as u32, first_ts, dim, rng);
    }
    let mut topic = draw_topic(p.pool, p.topic as usize, rng);
    let mut prev_ts = None;
    for (index, slot) in slots.iter().enumerate() {
        if index > 0 && !rng.random_bool(p.stay) {
            topic = draw_topic(p.pool, p.topic as usize, rng);
        }
        let mut others: Vec<u32> = (0..p.pool).filter(|m| !topic.contains(m)).collect();
        others.shuffle(rng);
        let mut shown: Vec<u32> = topic.iter().copied().chain(others).take(k).collect();
        shown.shuffle(rng);
        let probs: Vec<f64> = shown
            .iter()
            .map(|m| {
                if topic.contains(m) {
                    p.relevance_on
                } else {
                    p.relevance_off
                }
            })
            .collect();
        let labels = independent_labels(&probs, rng);
        let c = &mut out.candidates;
        for (i, (&m, &label)) in shown.iter().zip(&labels).enumerate() {
            let d = &pool[m as usize];
            c.user_id.push(spec.user_id);
            c.turn_index.push(index as u32);
            c.cand_index.push(i as u8);
            c.memory_id.push(m);
            c.entity_id.push(d.entity());
            c.memory_slot.push(m % config.world.memory_slots);
            c.path_id.push(m);
            c.canary_role.push(0);
            c.push_clean(&d.x);
            c.mask.push(0);
            c.label.push(label);
            c.clean_label.push(label);
            c.relevance.push(probs[i] as f32);
            c.canary.push(0);
            c.hard_negative.push(0);
        }
        let tr = &mut out.turns;
        tr.push_time(spec.user_id, index as u32, spec.stage, slot, prev_ts);
        tr.focal_0.push(-1);
        tr.focal_1.push(-1);
        for col in &mut tr.selectors {
            col.push(-1);
        }
        tr.cycle_peak.push(-1.0);
        tr.canary.push(0);
        tr.n_relevant.push(labels.iter().sum());
        tr.negative_slots.push(0);
        for _ in 0..dim {
            let z: f64 = StandardNormal.sample(rng);
            tr.query.push(z as f32);
        }
        prev_ts = Some(slot.ts);
    }
    out
}
