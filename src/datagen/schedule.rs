//! A user's timeline: what the driver decides about a user, and its turns laid out over
//! sessions (seed: "SessionSimulator").

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, StandardNormal};

use crate::config::Config;

/// What the driver decides about a user before simulating it.
#[derive(Clone, Debug)]
pub struct UserSpec {
    pub user_id: u32,
    /// Curriculum stage (0 when the curriculum is off).
    pub stage: u8,
    pub turns: u32,
    pub hard_negative_share: f64,
}

/// One scheduled turn.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub ts: i64,
    pub session: u32,
    pub turn_in_session: u32,
    pub session_start: i64,
    /// Start of the previous session, if any.
    pub prev_session_start: Option<i64>,
}

/// Lays out `n_turns` turns over sessions spread across the user's span: sessions of
/// `turns_per_session` turns start on days drawn uniformly over `span_days` (several on
/// one day, none on others), around two preferred hours, with exponential gaps between
/// the turns of a session. Every user is active over most of the dataset's span, so a
/// timestamp cut-off leaves history on both sides of it.
pub fn schedule(config: &Config, rng: &mut ChaCha8Rng, first_day: i64, n_turns: u32) -> Vec<Slot> {
    let t = &config.timeline;
    let gap = Exp::new(1.0 / t.mean_turn_gap_s).expect("positive gap");
    let hours = [rng.random_range(8.0..12.0), rng.random_range(18.0..22.0)];
    let mut sizes = Vec::new();
    let mut left = n_turns as usize;
    while left > 0 {
        let n =
            (rng.random_range(t.turns_per_session[0]..=t.turns_per_session[1]) as usize).min(left);
        sizes.push(n);
        left -= n;
    }
    // Session start times: a day over the span and an hour near a preferred one.
    let span = t.span_days.max(1) as f64;
    let mut starts: Vec<f64> = sizes
        .iter()
        .map(|_| {
            let day = (rng.random_range(0.0..span)).floor();
            let h = hours[rng.random_range(0..2)];
            let z: f64 = StandardNormal.sample(rng);
            day * 86_400.0 + (h + 1.5 * z).clamp(0.0, 23.9) * 3600.0
        })
        .collect();
    starts.sort_by(f64::total_cmp);
    let mut slots = Vec::with_capacity(n_turns as usize);
    let mut cursor = first_day * 86_400;
    let mut prev_start = None;
    for (session, (&n, &offset)) in sizes.iter().zip(&starts).enumerate() {
        let start = (first_day * 86_400 + offset as i64).max(cursor + 300);
        let mut ts = start;
        for i in 0..n {
            if i > 0 {
                ts += 1 + gap.sample(rng) as i64;
            }
            slots.push(Slot {
                ts,
                session: session as u32,
                turn_in_session: i as u32,
                session_start: start,
                prev_session_start: prev_start,
            });
        }
        cursor = ts;
        prev_start = Some(start);
    }
    slots
}
