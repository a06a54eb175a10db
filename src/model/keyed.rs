//! The identity-keyed state: a candidate's record of what happened under its own memory
//! id and its own entity id, read before its turn.
//!
//! Each event e (one earlier showing, [`crate::keyed::EVENT_NAMES`]: relevant or not,
//! whether the focal entities then meet the current ones, whether it was the same memory,
//! …) written d days before the turn contributes to kernel channel c
//!
//! `k_c(e, d) = exp(−a_c · s(e) · d) · o_c(w)`
//!
//! with a learned decay rate a_c, a selective step s(e) = softplus(w · e + b) per event
//! and source, shared by the channels as Mamba's Δ is shared by a channel's state modes
//! (the input-dependent part: how fast an event fades depends on what it was), and
//! o_c = 1 for a decaying mode, cos(ω_j w) or sin(ω_j w) for an oscillating (complex) mode
//! of fixed frequency ω_j, one day, one week, half a week, half a day (divisors of the
//! week, so o_c is a function of the time of the week), where w is how many days the
//! event's time of the week lies before the turn's ([`crate::keyed::WEEK_APART`], from
//! their contexts, while d comes from the timestamps). An oscillating mode's envelope
//! a_c · s(e) is held at most [`crate::keyed::CYCLE_MAX_RATE`] a day, so that it remembers
//! earlier weeks. The read is `r_c = Σ_e k_c(e, d_e) · v(e) / N` for each event source,
//! v(e) the event's numbers but its phase ([`crate::keyed::VALUE_DIM`]), all channels
//! times all those numbers: a diagonal state per identity (per memory and per entity),
//! each channel a linear recurrence over that identity's events, read at the turn's own
//! time and focal entities. It enters the candidate's pointwise inputs. N is √L for the
//! memory's L places, and for the entity's the number n of its places that hold an event
//! (at least 1): the entity's read is a mean over its events, so that it does not grow
//! with the entity's record, where a sum pulled the slope of a memory's own age down as
//! the record grew (docs/keyed-state.md, "The entity's read as a mean").
//!
//! The runtime computes the same read in plain Rust (`ssmkit-runtime`).

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::softplus;

use super::keyed_fused::{ReadShape, has_fused_read, keyed_read_fused};
use crate::keyed::{
    ATTN_HEADS, CYCLE_MAX_RATE, ENTITY_EVENTS, MEMORY_EVENTS, VALUE_DIM, WEEK_APART,
};

/// softplus⁻¹(1): the selective step starts at 1.
pub const STEP_BIAS: f32 = 0.541_324_85;

/// Periods (days) the oscillating modes start at, in order.
pub const CYCLE_DAYS: [f32; 4] = [1.0, 7.0, 3.5, 0.5];

/// The decay rates (per day) the decaying modes start at: log-spaced from 1/50 to 2.
pub fn initial_rates(modes: usize) -> Vec<f32> {
    let (lo, hi) = (0.02f32.ln(), 2.0f32.ln());
    (0..modes)
        .map(|i| {
            let f = if modes == 1 {
                0.5
            } else {
                i as f32 / (modes - 1) as f32
            };
            (lo + f * (hi - lo)).exp()
        })
        .collect()
}

/// The rate every oscillating mode's envelope starts at (per day).
pub const CYCLE_RATE: f32 = 0.05;

#[derive(Module, Debug)]
pub struct KeyedState {
    /// `[2, C]` log decay rate per event source (memory, entity) and channel.
    pub log_rate: Param<Tensor<2>>,
    /// `[2, cycles]` frequency (radians per day) of each oscillating mode (`None`
    /// without any): [`CYCLE_DAYS`], fixed (the read detaches it), kept with the
    /// parameters for the runtime.
    pub omega: Option<Param<Tensor<2>>>,
    /// Event → 2 selective step pre-activations (the memory's, then the entity's);
    /// `None` without selection (every step 1).
    pub select: Option<Linear>,
    modes: usize,
    cycles: usize,
}

impl KeyedState {
    /// The state with `modes` decaying and `cycles` oscillating modes; the selective
    /// step's weights are drawn from `seed` (small: every step starts near 1).
    pub fn new(
        modes: usize,
        cycles: usize,
        selective: bool,
        seed: u64,
        device: &Device,
    ) -> KeyedState {
        let c = modes + 2 * cycles;
        let mut rates = initial_rates(modes);
        rates.extend(std::iter::repeat_n(CYCLE_RATE, 2 * cycles));
        let log_rate: Vec<f32> = rates.iter().chain(&rates).map(|r| r.ln()).collect();
        let omega: Vec<f32> = (0..2)
            .flat_map(|_| {
                (0..cycles).map(|j| {
                    let days = CYCLE_DAYS.get(j).copied().unwrap_or(7.0 / (j as f32 + 1.0));
                    std::f32::consts::TAU / days
                })
            })
            .collect();
        let select = selective.then(|| {
            let mut l = burn::nn::LinearConfig::new(VALUE_DIM, 2)
                .with_initializer(burn::nn::Initializer::Zeros)
                .init(device);
            l.weight = Param::from_tensor(super::normal_tensor(seed, [VALUE_DIM, 2], 0.05, device));
            l.bias = Some(Param::from_tensor(
                Tensor::<1>::zeros([2], device).add_scalar(STEP_BIAS),
            ));
            l
        });
        KeyedState {
            log_rate: Param::from_tensor(Tensor::from_data(
                TensorData::new(log_rate, [2, c]),
                device,
            )),
            omega: (cycles > 0).then(|| {
                Param::from_tensor(Tensor::from_data(
                    TensorData::new(omega, [2, cycles]),
                    device,
                ))
            }),
            select,
            modes,
            cycles,
        }
    }

    fn channels(&self) -> usize {
        self.shape().channels()
    }

    /// The read `[B, T, K, 2 · C · VALUE_DIM]` of events `[B, T, K, EVENTS, EVENT_DIM]`
    /// with ages `[B, T, K, EVENTS]` (days): one fused kernel on the CPU
    /// ([`super::keyed_fused`]), tensor operations elsewhere.
    pub fn read(&self, events: Tensor<5>, days: Tensor<4>) -> Tensor<4> {
        if has_fused_read(&events.device()) {
            self.read_fused(events, days)
        } else {
            self.read_reference(events, days)
        }
    }

    fn shape(&self) -> ReadShape {
        ReadShape {
            modes: self.modes,
            cycles: self.cycles,
            selective: self.select.is_some(),
        }
    }

    fn read_fused(&self, events: Tensor<5>, days: Tensor<4>) -> Tensor<4> {
        let [b, t, k, l, e] = events.dims();
        let device = events.device();
        let n = b * t * k;
        let (weight, bias) = match &self.select {
            Some(sel) => (sel.weight.val(), sel.bias.as_ref().expect("a bias").val()),
            None => (
                Tensor::zeros([VALUE_DIM, 2], &device),
                Tensor::zeros([2], &device),
            ),
        };
        let omega = match &self.omega {
            Some(o) => o.val().detach(),
            None => Tensor::zeros([2, 1], &device),
        };
        let shape = self.shape();
        keyed_read_fused(
            events.reshape([n, l, e]),
            days.reshape([n, l]),
            self.log_rate.val(),
            weight,
            bias,
            omega,
            shape,
        )
        .reshape([b, t, k, shape.width()])
    }

    /// [`Self::read`] written with tensor operations (autodiff derives its backward).
    pub fn read_reference(&self, events: Tensor<5>, days: Tensor<4>) -> Tensor<4> {
        let [b, t, k, _, e] = events.dims();
        let c = self.channels();
        let n = b * t * k;
        let mut parts = Vec::with_capacity(2);
        for (source, range) in [
            (0, 0..MEMORY_EVENTS),
            (1, MEMORY_EVENTS..MEMORY_EVENTS + ENTITY_EVENTS),
        ] {
            let l = range.len();
            let ev = events
                .clone()
                .slice(s![.., .., .., range.clone(), ..])
                .reshape([n, l, e]);
            let values = ev.clone().slice(s![.., .., ..VALUE_DIM]);
            // The entity's events, counted for its mean ([n, 1, 1]).
            let held = (source == 1).then(|| entity_event_count(ev.clone()));
            let d = days.clone().slice(s![.., .., .., range]).reshape([n, l, 1]);
            let mut rate = self
                .log_rate
                .val()
                .slice(s![source..source + 1, ..])
                .exp()
                .reshape([1, 1, c]);
            if let Some(sel) = &self.select {
                // This source's column of the projection only.
                let cols = source..source + 1;
                let w = sel.weight.val().slice(s![.., cols.clone()]);
                let bias = sel.bias.as_ref().expect("a bias").val().slice(s![cols]);
                let pre =
                    values.clone().reshape([n * l, VALUE_DIM]).matmul(w) + bias.unsqueeze::<2>();
                rate = rate * softplus(pre, 1.0).reshape([n, l, 1]); // [n, l, C]
            }
            let mut rate = rate.expand([n, l, c]);
            if self.cycles > 0 {
                let slow = rate
                    .clone()
                    .slice(s![.., .., self.modes..])
                    .clamp_max(CYCLE_MAX_RATE);
                rate = Tensor::cat(vec![rate.slice(s![.., .., ..self.modes]), slow], 2);
            }
            let mut kernel = (d * rate).neg().exp();
            if let Some(omega) = &self.omega {
                // Fixed: divisors of the week, so a phase is a function of the time of
                // the week that does not jump where `week_apart` wraps.
                let w = omega
                    .val()
                    .detach()
                    .slice(s![source..source + 1, ..])
                    .reshape([1, 1, self.cycles]);
                let apart = ev.slice(s![.., .., WEEK_APART..WEEK_APART + 1]);
                let phase = apart * w; // [n, l, cycles]
                let ones = Tensor::<3>::ones([n, l, self.modes], &events.device());
                let osc = Tensor::cat(vec![ones, phase.clone().cos(), phase.sin()], 2);
                kernel = kernel * osc;
            }
            // [n, C, l] @ [n, l, V] → [n, C, V]
            let r = kernel.swap_dims(1, 2).matmul(values);
            let r = match held {
                Some(held) => r / held,
                None => r / (l as f64).sqrt(),
            };
            parts.push(r.reshape([b, t, k, c * VALUE_DIM]));
        }
        Tensor::cat(parts, 3)
    }
}

/// max(n, 1) for the entity's events `[…, L, EVENT_DIM]` → `[…, 1, 1]`, n the places that
/// hold an event (their `shown` number is 1, an empty place's 0).
fn entity_event_count<const D: usize>(events: Tensor<D>) -> Tensor<D> {
    events.slice_dim(D - 1, 0..1).sum_dim(D - 2).clamp_min(1.0)
}

/// The attention peer's read: each candidate's query (from its own inputs) attends over
/// its events (keys and values from each event's numbers and interval, TiSASRec-style);
/// empty places are masked out, a candidate with no events reads 0.
#[derive(Module, Debug)]
pub struct EventAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
}

impl EventAttention {
    /// The read `[B, T, K, d_attn]` from the candidates' own inputs `[B, T, K, D]`,
    /// events `[B, T, K, EVENTS, EVENT_DIM]` and ages `[B, T, K, EVENTS]` (days).
    pub fn read(&self, own: Tensor<4>, events: Tensor<5>, days: Tensor<4>) -> Tensor<4> {
        let [b, t, k, l, e] = events.dims();
        let n = b * t * k;
        let device = events.device();
        let dq = own.dims()[3];
        let q = self.q_proj.forward(own.reshape([n, dq])); // [n, d]
        let d_attn = q.dims()[1];
        let dh = d_attn / ATTN_HEADS;
        let ev = events.reshape([n, l, e]);
        let d = days.reshape([n, l, 1]);
        // As `crate::keyed::interval` computes it.
        let apart = ev.clone().slice(s![.., .., WEEK_APART..WEEK_APART + 1]);
        let day = apart.clone() * std::f32::consts::TAU;
        let week = apart * (std::f32::consts::TAU / 7.0);
        let own_place: Vec<f32> = (0..l).map(|i| (i < MEMORY_EVENTS) as u8 as f32).collect();
        let own_place = Tensor::<1>::from_data(TensorData::new(own_place, [l]), &device)
            .reshape([1, l, 1])
            .expand([n, l, 1]);
        let z = Tensor::cat(
            vec![
                ev.clone(),
                own_place,
                d.log1p(),
                day.clone().cos(),
                day.sin(),
                week.clone().cos(),
                week.sin(),
            ],
            2,
        ); // [n, l, ATTN_EVENT_DIM]
        let key = self
            .k_proj
            .forward(z.clone())
            .reshape([n, l, ATTN_HEADS, dh]);
        let value = self.v_proj.forward(z).reshape([n, l, ATTN_HEADS, dh]);
        let logits = (key * q.reshape([n, 1, ATTN_HEADS, dh]))
            .sum_dim(3)
            .reshape([n, l, ATTN_HEADS])
            / (dh as f64).sqrt();
        let present = ev.slice(s![.., .., 0..1]); // [n, l, 1]: the "shown" number
        let logits = logits + (present.clone() - 1.0) * 1e9;
        let w = burn::tensor::activation::softmax(logits, 1) * present; // [n, l, H]
        let read = (w.reshape([n, l, ATTN_HEADS, 1]) * value).sum_dim(1); // [n, 1, H, dh]
        read.reshape([b, t, k, d_attn])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyed::{EVENT_DIM, EVENTS};
    use rand::{RngExt, SeedableRng};

    /// The read as a plain loop over channels and events, from the module's own
    /// parameters: `r[source][c][e] = Σ_l exp(−a·s·d) · o(d) · event[l][e] / N` for the
    /// event's first `VALUE_DIM` numbers, with a·s at most `CYCLE_MAX_RATE` for an
    /// oscillating mode, N = √L for the memory and the count of the entity's events (at
    /// least 1) for the entity.
    fn by_hand(m: &KeyedState, events: &[f32], days: &[f32]) -> Vec<f32> {
        let c = m.channels();
        let rate: Vec<f32> = m
            .log_rate
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        let omega: Vec<f32> = m
            .omega
            .as_ref()
            .map(|o| o.val().into_data().try_into_vec_as::<f32>().unwrap())
            .unwrap_or_default();
        let (w, b): (Vec<f32>, Vec<f32>) = match &m.select {
            Some(l) => (
                l.weight.val().into_data().try_into_vec_as::<f32>().unwrap(),
                l.bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .unwrap(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let mut out = Vec::new();
        for (source, range) in [(0, 0..MEMORY_EVENTS), (1, MEMORY_EVENTS..EVENTS)] {
            let held = range
                .clone()
                .filter(|&l| events[l * EVENT_DIM] != 0.0)
                .count();
            let norm = if source == 0 {
                (range.len() as f32).sqrt()
            } else {
                held.max(1) as f32
            };
            for ch in 0..c {
                for e in 0..VALUE_DIM {
                    let mut sum = 0f32;
                    for l in range.clone() {
                        let ev = &events[l * EVENT_DIM..(l + 1) * EVENT_DIM];
                        let step = if w.is_empty() {
                            1.0
                        } else {
                            let col = source;
                            let pre: f32 = b[col]
                                + (0..VALUE_DIM).map(|i| ev[i] * w[i * 2 + col]).sum::<f32>();
                            (1.0 + pre.exp()).ln()
                        };
                        let mut a = rate[source * c + ch].exp() * step;
                        if ch >= m.modes {
                            a = a.min(CYCLE_MAX_RATE);
                        }
                        let mut k = (-a * days[l]).exp();
                        if ch >= m.modes {
                            let j = (ch - m.modes) % m.cycles;
                            let phase = omega[source * m.cycles + j] * ev[WEEK_APART];
                            k *= if ch < m.modes + m.cycles {
                                phase.cos()
                            } else {
                                phase.sin()
                            };
                        }
                        sum += k * ev[e];
                    }
                    out.push(sum / norm);
                }
            }
        }
        out
    }

    #[test]
    fn the_read_matches_a_plain_loop_over_events() {
        let device = Device::flex();
        for (modes, cycles, selective, seed) in [(4, 2, true, 1), (3, 0, false, 2), (0, 1, true, 3)]
        {
            let (m, ev, d) = random_case(modes, cycles, selective, seed, &device);
            let events: Vec<f32> = ev.clone().into_data().try_into_vec_as::<f32>().unwrap();
            let days: Vec<f32> = d.clone().into_data().try_into_vec_as::<f32>().unwrap();
            let width = 2 * m.channels() * VALUE_DIM;
            for (name, read) in [
                ("fused", m.read(ev.clone(), d.clone())),
                ("tensor ops", m.read_reference(ev.clone(), d.clone())),
            ] {
                let got: Vec<f32> = read.into_data().try_into_vec_as::<f32>().unwrap();
                assert_eq!(got.len(), days.len() / EVENTS * width);
                for (i, got) in got.chunks(width).enumerate() {
                    let want = by_hand(
                        &m,
                        &events[i * EVENTS * EVENT_DIM..][..EVENTS * EVENT_DIM],
                        &days[i * EVENTS..][..EVENTS],
                    );
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() < 1e-5,
                            "{name}, {modes}/{cycles}/{selective}, candidate {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    /// A random state (rates from 0.02 to 1.6 a day, so some oscillating envelopes pass
    /// their bound; non-zero selection weights, so that the step depends on the event)
    /// and a batch `[2, 3, 5]` of random events (`shown` 1, the other numbers random),
    /// every third place empty, and a candidate whose entity holds no event.
    fn random_case(
        modes: usize,
        cycles: usize,
        selective: bool,
        seed: u64,
        device: &Device,
    ) -> (KeyedState, Tensor<5>, Tensor<4>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut m = KeyedState::new(modes, cycles, selective, seed, device);
        let c = m.channels();
        let rates: Vec<f32> = (0..2 * c).map(|_| rng.random_range(-4.0f32..0.5)).collect();
        m.log_rate = Param::from_tensor(Tensor::from_data(TensorData::new(rates, [2, c]), device));
        if let Some(l) = &mut m.select {
            let w: Vec<f32> = (0..VALUE_DIM * 2)
                .map(|_| rng.random_range(-0.5f32..0.5))
                .collect();
            l.weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [VALUE_DIM, 2]),
                device,
            ));
        }
        let shape = [2, 3, 5, EVENTS];
        let places = shape.iter().product::<usize>();
        let events: Vec<f32> = (0..places * EVENT_DIM)
            .map(|i| {
                let (place, number) = (i / EVENT_DIM, i % EVENT_DIM);
                let entity_place = place % EVENTS >= MEMORY_EVENTS;
                if place % 3 == 2 || (place / EVENTS == 0 && entity_place) {
                    0.0
                } else if number == 0 {
                    1.0
                } else {
                    rng.random_range(-1.0f32..1.0)
                }
            })
            .collect();
        let days: Vec<f32> = (0..places)
            .map(|_| rng.random_range(0.0f32..30.0))
            .collect();
        let [b, t, k, l] = shape;
        (
            m,
            Tensor::from_data(TensorData::new(events, [b, t, k, l, EVENT_DIM]), device),
            Tensor::from_data(TensorData::new(days, shape), device),
        )
    }

    /// The fused kernel's hand-written backward against autodiff through the tensor
    /// operations: the gradients of Σ w ⊙ read for the log rates and the selective
    /// step's weight and bias.
    #[test]
    fn the_fused_backward_matches_autodiff_of_the_tensor_ops() {
        let device = Device::flex().autodiff();
        for (modes, cycles, selective, seed) in [(4, 2, true, 3), (3, 0, false, 4), (0, 1, true, 5)]
        {
            let (m, ev, d) = random_case(modes, cycles, selective, seed, &device);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 100);
            let dims = [2, 3, 5, 2 * m.channels() * VALUE_DIM];
            let w: Vec<f32> = (0..dims.iter().product::<usize>())
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let w = Tensor::<4>::from_data(TensorData::new(w, dims), &device);
            let grads = |read: Tensor<4>| -> Vec<Vec<f32>> {
                let g = (read * w.clone()).sum().backward();
                let vec = |t: Tensor<2>| t.into_data().try_into_vec_as::<f32>().unwrap();
                let mut out = vec![vec(m.log_rate.grad(&g).expect("rates have a gradient"))];
                if let Some(l) = &m.select {
                    out.push(vec(l.weight.grad(&g).expect("weight has a gradient")));
                    let b = l
                        .bias
                        .as_ref()
                        .unwrap()
                        .grad(&g)
                        .expect("bias has a gradient");
                    out.push(b.into_data().try_into_vec_as::<f32>().unwrap());
                }
                out
            };
            let fused = grads(m.read(ev.clone(), d.clone()));
            let reference = grads(m.read_reference(ev, d));
            for (name, (f, r)) in ["log rate", "weight", "bias"]
                .iter()
                .zip(fused.iter().zip(&reference))
            {
                let scale = r.iter().fold(1e-6f32, |a, x| a.max(x.abs()));
                let diff = f.iter().zip(r).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(
                    diff / scale <= 1e-4,
                    "∂{name}, {modes}/{cycles}/{selective}: {f:?} vs {r:?}"
                );
            }
            assert_eq!(fused.len(), if selective { 3 } else { 1 });
        }
    }

    #[test]
    fn an_empty_place_reads_nothing_and_a_weekly_mode_peaks_at_whole_weeks() {
        let device = Device::flex();
        let m = KeyedState::new(0, 2, false, 1, &device);
        // One relevant event under the memory, 7 or 3.5 days old, at the turn's time of
        // the week or half a week before it.
        let read = |age: f32| -> Vec<f32> {
            let mut ev = vec![0f32; EVENTS * EVENT_DIM];
            ev[..2].copy_from_slice(&[1.0, 1.0]);
            ev[WEEK_APART] = age % 7.0;
            let mut days = vec![0f32; EVENTS];
            days[0] = age;
            m.read(
                Tensor::from_data(TensorData::new(ev, [1, 1, 1, EVENTS, EVENT_DIM]), &device),
                Tensor::from_data(TensorData::new(days, [1, 1, 1, EVENTS]), &device),
            )
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap()
        };
        // Channel 1 is the weekly cosine; its "relevant" number is at 1 · VALUE_DIM + 1.
        let (week, half) = (read(7.0), read(3.5));
        assert!(week[VALUE_DIM + 1] > 0.0 && half[VALUE_DIM + 1] < 0.0);
        // The entity's places are empty: their reads are 0.
        assert!(week[2 * 2 * VALUE_DIM..].iter().all(|&v| v == 0.0));
    }

    /// The same event held once and four times, under the memory and under the entity: the
    /// memory's read grows with its record (a sum), the entity's does not (a mean).
    #[test]
    fn the_entitys_read_is_a_mean_and_the_memorys_a_sum() {
        let device = Device::flex();
        let m = KeyedState::new(2, 1, false, 4, &device);
        let width = m.channels() * VALUE_DIM;
        let read = |copies: usize, under_entity: bool| -> Vec<f32> {
            let mut ev = vec![0f32; EVENTS * EVENT_DIM];
            let mut days = vec![0f32; EVENTS];
            let first = if under_entity { MEMORY_EVENTS } else { 0 };
            for l in first..first + copies {
                ev[l * EVENT_DIM..][..4].copy_from_slice(&[1.0, 1.0, 0.5, 0.5]);
                ev[l * EVENT_DIM + WEEK_APART] = 2.0;
                days[l] = 2.0;
            }
            let events =
                Tensor::<5>::from_data(TensorData::new(ev, [1, 1, 1, EVENTS, EVENT_DIM]), &device);
            let days = Tensor::<4>::from_data(TensorData::new(days, [1, 1, 1, EVENTS]), &device);
            let vec = |t: Tensor<4>| t.into_data().try_into_vec_as::<f32>().unwrap();
            let fused = vec(m.read(events.clone(), days.clone()));
            let reference = vec(m.read_reference(events, days));
            for (f, r) in fused.iter().zip(&reference) {
                assert!((f - r).abs() < 1e-6, "fused {f} vs tensor ops {r}");
            }
            fused
        };
        let (memory_once, memory_four) = (read(1, false), read(4, false));
        let (entity_once, entity_four) = (read(1, true), read(4, true));
        for i in 0..width {
            assert!((memory_four[i] - 4.0 * memory_once[i]).abs() < 1e-5);
            assert!((entity_four[width + i] - entity_once[width + i]).abs() < 1e-6);
        }
        // One event reads its kernel times its numbers, over √8 under the memory and over 1
        // under the entity.
        let ratio = entity_once[width] / memory_once[0];
        assert!(
            (ratio - (MEMORY_EVENTS as f32).sqrt()).abs() < 1e-4,
            "{ratio}"
        );
        assert!(memory_once[0] > 0.0);
    }
}
