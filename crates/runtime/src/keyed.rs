//! What a candidate reads of the user's keyed log: the keyed state's decaying read and
//! its attention peer's read.

use super::layers::Dense;
use crate::{Candidate, Turn};
use ssmkit_format::keyed::{
    ATTN_EVENT_DIM, ATTN_HEADS, CYCLE_MAX_RATE, ENTITY_EVENTS, EVENT_DIM, EVENTS, Log,
    MEMORY_EVENTS, VALUE_DIM, WEEK_APART, interval, read_divisor, week_of,
};
use ssmkit_format::model::{MAX_KEYED_CYCLES, MAX_KEYED_MODES};
use ssmkit_format::multiversion;
use ssmkit_format::simd::{exp, sin_cos, softplus};

/// The most kernel channels a keyed state has.
const MAX_CHANNELS: usize = MAX_KEYED_MODES + 2 * MAX_KEYED_CYCLES;

/// The most places one event source has.
const MAX_PLACES: usize = if MEMORY_EVENTS > ENTITY_EVENTS {
    MEMORY_EVENTS
} else {
    ENTITY_EVENTS
};

/// What a candidate reads of the user's keyed log: `[EVENTS × EVENT_DIM]` numbers and
/// `[EVENTS]` ages in days ([`Log::read`]).
pub(super) type Events = ([f32; EVENTS * EVENT_DIM], [f32; EVENTS]);

/// The events `cand` of `turn` reads of `log`.
pub(super) fn events(log: &Log, turn: &Turn, cand: &Candidate) -> Events {
    let mut out = ([0f32; EVENTS * EVENT_DIM], [0f32; EVENTS]);
    log.read(
        turn.timestamp.unwrap_or(0),
        week_of(&turn.context),
        [turn.focal[0] as i64, turn.focal[1] as i64],
        cand.memory_id.unwrap_or(cand.memory_slot as u64),
        cand.entity as u64,
        super::inputs::log_age(cand),
        &mut out.0,
        &mut out.1,
    );
    out
}

/// The attention peer's projections (`ssmkit::model::keyed::EventAttention` has the read
/// this computes).
#[derive(Clone, Debug)]
pub(super) struct EventAttn {
    pub(super) q: Dense,
    pub(super) k: Dense,
    pub(super) v: Dense,
}

impl EventAttn {
    /// Appends a candidate's read of its events `ev` / `days` ([`Events`]; `d_attn`
    /// numbers) to `x`, which holds its query input.
    pub(super) fn read(&self, ev: &Events, x: &mut Vec<f32>) {
        let (ev, days) = (&ev.0, &ev.1);
        let q = self.q.apply(x);
        let d = q.len();
        let dh = d / ATTN_HEADS;
        let mut logits: Vec<[f32; ATTN_HEADS]> = Vec::with_capacity(EVENTS);
        let mut values: Vec<Vec<f32>> = Vec::with_capacity(EVENTS);
        for l in 0..EVENTS {
            let e = &ev[l * EVENT_DIM..(l + 1) * EVENT_DIM];
            if e[0] == 0.0 {
                continue; // an empty place is masked out
            }
            let mut z = Vec::with_capacity(ATTN_EVENT_DIM);
            z.extend_from_slice(e);
            z.push((l < MEMORY_EVENTS) as u8 as f32);
            z.extend_from_slice(&interval(days[l], e[WEEK_APART]));
            let key = self.k.apply(&z);
            let mut lg = [0f32; ATTN_HEADS];
            for (h, lg) in lg.iter_mut().enumerate() {
                let r = h * dh..(h + 1) * dh;
                let dot: f32 = key[r.clone()].iter().zip(&q[r]).map(|(a, b)| a * b).sum();
                *lg = dot / (dh as f32).sqrt();
            }
            logits.push(lg);
            values.push(self.v.apply(&z));
        }
        let at = x.len();
        x.resize(at + d, 0.0);
        for h in 0..ATTN_HEADS {
            let top = logits
                .iter()
                .map(|l| l[h])
                .fold(f32::NEG_INFINITY, f32::max);
            let w: Vec<f32> = logits.iter().map(|l| (l[h] - top).exp()).collect();
            let sum: f32 = w.iter().sum();
            for (w, v) in w.iter().zip(&values) {
                for i in h * dh..(h + 1) * dh {
                    x[at + i] += w / sum * v[i];
                }
            }
        }
    }
}

/// The keyed state's parameters (`ssmkit::model::keyed` has the read this computes).
#[derive(Clone, Debug)]
pub(super) struct Keyed {
    /// `[2, C]` decay rates per event source (memory, entity) and channel (per day).
    pub(super) rate: Vec<f32>,
    /// `[2, cycles]` frequencies (radians per day).
    pub(super) omega: Vec<f32>,
    /// The selective step's pre-activation per event source (the memory's, then the
    /// entity's): weights over an event's numbers and a bias.
    pub(super) select: Option<[Step; 2]>,
    pub(super) modes: usize,
    pub(super) cycles: usize,
}

/// One event source's selective step: softplus(w · event + b).
#[derive(Clone, Copy, Debug)]
pub(super) struct Step {
    pub(super) w: [f32; VALUE_DIM],
    pub(super) b: f32,
}

impl Step {
    /// The steps of both sources, from the projection (event → 2) that holds them.
    pub(super) fn of(select: &Dense) -> [Step; 2] {
        std::array::from_fn(|source| {
            let (w, b) = select.column(source);
            let mut step = Step {
                w: [0.0; VALUE_DIM],
                b,
            };
            step.w.copy_from_slice(&w);
            step
        })
    }
}

impl Keyed {
    fn channels(&self) -> usize {
        self.modes + 2 * self.cycles
    }

    /// Appends a candidate's read of its events ([`Events`]; `2 · C · VALUE_DIM`
    /// numbers) to `out`.
    pub(super) fn read(&self, ev: &Events, out: &mut Vec<f32>) {
        for source in 0..2 {
            read_source(self, &ev.0, &ev.1, source, out);
        }
    }
}

// The read of one event source (0: the memory's places, 1: the entity's), in passes that
// each run over the source's live events at once, so that the exponentials, logarithms and
// phases vectorize: the selective steps, the kernel of every event and channel, then their
// sums over the events' numbers, event by event in order as the model sums them.
multiversion!(read_source(keyed: &Keyed, ev: &[f32], days: &[f32], source: usize, out: &mut Vec<f32>) {
    let range = if source == 0 {
        0..MEMORY_EVENTS
    } else {
        MEMORY_EVENTS..EVENTS
    };
    let places = range.len();
    let (modes, cycles) = (keyed.modes, keyed.cycles);
    let c = keyed.channels();
    // The live places (an empty one reads 0).
    let mut live = [0usize; MAX_PLACES];
    let mut n = 0;
    for l in range {
        if ev[l * EVENT_DIM] != 0.0 {
            live[n] = l;
            n += 1;
        }
    }
    let live = &live[..n];
    let scale = 1.0 / read_divisor(source, places, n);
    let mut step = [1f32; MAX_PLACES];
    if let Some(select) = &keyed.select {
        let p = &select[source];
        for (s, &l) in step.iter_mut().zip(live) {
            let e = &ev[l * EVENT_DIM..l * EVENT_DIM + VALUE_DIM];
            *s = e.iter().zip(&p.w).fold(p.b, |acc, (x, w)| acc + x * w);
        }
        for s in &mut step[..n] {
            *s = softplus(*s);
        }
    }
    // The channels' kernels `[n, C]`: envelopes (an oscillating mode's bounded), then the
    // oscillating modes' phases.
    let rate = &keyed.rate[source * c..(source + 1) * c];
    let mut bound = [f32::INFINITY; MAX_CHANNELS];
    bound[modes..c].fill(CYCLE_MAX_RATE);
    let mut kernel = [0f32; MAX_PLACES * MAX_CHANNELS];
    let kernel = &mut kernel[..n * c];
    for ((row, &l), &s) in kernel.chunks_exact_mut(c).zip(live).zip(&step) {
        let d = -days[l];
        for ((k, &r), &b) in row.iter_mut().zip(rate).zip(&bound[..c]) {
            *k = (r * s).min(b) * d;
        }
    }
    for k in kernel.iter_mut() {
        *k = exp(*k);
    }
    // The phases `[n, cycles]`, all at once.
    let omega = &keyed.omega[source * cycles..(source + 1) * cycles];
    let mut phase = [0f32; MAX_PLACES * MAX_KEYED_CYCLES];
    let phase = &mut phase[..n * cycles];
    for (i, &l) in live.iter().enumerate() {
        let apart = ev[l * EVENT_DIM + WEEK_APART];
        for (p, w) in phase[i * cycles..(i + 1) * cycles].iter_mut().zip(omega) {
            *p = w * apart;
        }
    }
    let mut sin = [0f32; MAX_PLACES * MAX_KEYED_CYCLES];
    let mut cos = [0f32; MAX_PLACES * MAX_KEYED_CYCLES];
    for ((p, s), c) in phase.iter().zip(&mut sin).zip(&mut cos) {
        (*s, *c) = sin_cos(*p);
    }
    for i in 0..n {
        for j in 0..cycles {
            kernel[i * c + modes + j] *= cos[i * cycles + j];
            kernel[i * c + modes + cycles + j] *= sin[i * cycles + j];
        }
    }
    // Σ over the events of kernel ⊗ numbers, held `[VALUE_DIM, C]` (a channel's sums
    // side by side), written out `[C, VALUE_DIM]`.
    let mut sum = [0f32; VALUE_DIM * MAX_CHANNELS];
    let sum = &mut sum[..VALUE_DIM * c];
    for (i, &l) in live.iter().enumerate() {
        let e = &ev[l * EVENT_DIM..l * EVENT_DIM + VALUE_DIM];
        let k = &kernel[i * c..(i + 1) * c];
        for (row, &x) in sum.chunks_exact_mut(c).zip(e) {
            for (r, &k) in row.iter_mut().zip(k) {
                *r += k * x;
            }
        }
    }
    let at = out.len();
    out.resize(at + c * VALUE_DIM, 0.0);
    for (ch, o) in out[at..].chunks_exact_mut(VALUE_DIM).enumerate() {
        for (v, o) in o.iter_mut().enumerate() {
            *o = sum[v * c + ch] * scale;
        }
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    /// One relevant event under the memory, `days` old at the turn's own time of the week,
    /// read by one decaying and one weekly mode at decay rates `rates` (per day).
    fn read_one(rates: [f32; 3], days: f32) -> Vec<f32> {
        let k = Keyed {
            rate: [rates, rates].concat(),
            omega: vec![std::f32::consts::TAU / 7.0; 2],
            select: None,
            modes: 1,
            cycles: 1,
        };
        let mut ev = ([0f32; EVENTS * EVENT_DIM], [0f32; EVENTS]);
        ev.0[..2].copy_from_slice(&[1.0, 1.0]);
        ev.1[0] = days;
        let mut out = Vec::new();
        k.read(&ev, &mut out);
        out
    }

    #[test]
    fn an_oscillating_envelope_decays_no_faster_than_its_bound() {
        let v = VALUE_DIM;
        let slow = read_one([0.5, 0.5, 0.5], 20.0);
        let fast = read_one([5.0, 5.0, 5.0], 20.0);
        // The memory's "shown" number: channel 0 decays at its own rate, channel 1
        // (weekly cosine, phase 0) at the bound, whatever rate it was given above it.
        let scale = 1.0 / (MEMORY_EVENTS as f32).sqrt();
        assert!((slow[0] - (-0.5f32 * 20.0).exp() * scale).abs() < 1e-7);
        assert!((fast[0] - (-5.0f32 * 20.0).exp() * scale).abs() < 1e-7);
        let bounded = (-CYCLE_MAX_RATE * 20.0).exp() * scale;
        for out in [&slow, &fast] {
            assert!((out[v] - bounded).abs() < 1e-6, "{} vs {bounded}", out[v]);
            assert!(out[2 * v].abs() < 1e-6, "the sine at phase 0");
        }
        // Below the bound, the envelope's own rate.
        let under = read_one([0.5, 0.02, 0.02], 20.0);
        assert!((under[v] - (-0.02f32 * 20.0).exp() * scale).abs() < 1e-6);
    }
}
