//! The keyed read ([`KeyedState::read`](super::keyed::KeyedState::read)) as one CPU
//! kernel with a hand-written backward, registered as a Burn backend extension so it joins
//! the autodiff graph.
//!
//! Written with tensor operations, the read builds several `[B·T·K, L, C]` tensors (the
//! step, the rate, the kernel, the phases) for every candidate's L = 24 events and C
//! channels, and autodiff keeps them for the backward; on the CPU that memory traffic was
//! most of a training step. Here each candidate is read in one pass over its events, and
//! the backward recomputes what it needs. Only the parameters get gradients (the log decay
//! rates, the selective step's weights and bias): the events and their ages are data.
//!
//! For event e of source s with values v (its first `VALUE_DIM` numbers), age d and
//! selective step σ = softplus(p), p = w_s · v + b_s, channel c reads
//! `k = exp(−a · d) · o_c` with `a = exp(ℓ_{s,c}) · σ` (at most `CYCLE_MAX_RATE` for an
//! oscillating channel) and adds `k · v / √L` to its output. Given the output's gradient g:
//!
//! ```text
//! ĝ_c   = Σ_v g_{s,c,v} · v / √L            ∂a = −d · ĝ_c · k
//! ∂ℓ_{s,c} += ∂a · a     ∂σ += ∂a · exp(ℓ_{s,c})     (both 0 where a is held at the bound)
//! ∂p    = ∂σ · sigmoid(p)                   ∂w_s += ∂p · v,  ∂b_s += ∂p
//! ```
//!
//! The parameter gradients are summed over fixed blocks of candidates, then over the blocks
//! in order, so they do not depend on the number of threads.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::flex::FlexTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use rayon::prelude::*;

use super::scan::{contiguous, f32s, flex};

use crate::keyed::{
    CYCLE_MAX_RATE, ENTITY_EVENTS, EVENT_DIM, EVENTS, MEMORY_EVENTS, VALUE_DIM, WEEK_APART,
};

/// The read's configuration: decaying and oscillating modes per source, and whether the
/// step is selective (without, σ = 1 and the weight and bias are not read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadShape {
    pub modes: usize,
    pub cycles: usize,
    pub selective: bool,
}

impl ReadShape {
    pub fn channels(self) -> usize {
        self.modes + 2 * self.cycles
    }

    /// Numbers each candidate reads: both sources, every channel, every value.
    pub fn width(self) -> usize {
        2 * self.channels() * VALUE_DIM
    }
}

/// The keyed read as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait KeyedReadOps: Backend {
    /// The read `[N, 2 · C · VALUE_DIM]` of events `[N, EVENTS, EVENT_DIM]` with ages
    /// `[N, EVENTS]` (days), from log rates `[2, C]`, the step's weight `[VALUE_DIM, 2]`
    /// and bias `[2]`, and the oscillating modes' frequencies `[2, max(cycles, 1)]`.
    fn keyed_read(
        events: FloatTensor<Self>,
        days: FloatTensor<Self>,
        log_rate: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        omega: FloatTensor<Self>,
        shape: ReadShape,
    ) -> FloatTensor<Self>;

    /// Gradients (log rates, weight, bias) of Σ grad ⊙ read.
    #[allow(clippy::too_many_arguments)]
    fn keyed_read_backward(
        events: FloatTensor<Self>,
        days: FloatTensor<Self>,
        log_rate: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        omega: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        shape: ReadShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The fused read on tensors, for a device of Burn's CPU backend (plain or autodiff).
pub fn keyed_read_fused(
    events: Tensor<3>,
    days: Tensor<2>,
    log_rate: Tensor<2>,
    weight: Tensor<2>,
    bias: Tensor<1>,
    omega: Tensor<2>,
    shape: ReadShape,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as KeyedReadOps>::keyed_read(
        events.into_dispatch(),
        days.into_dispatch(),
        log_rate.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        omega.into_dispatch(),
        shape,
    ))
}

/// Whether `device` runs the fused read: Burn's CPU backend, plain or under autodiff.
pub fn has_fused_read(device: &Device) -> bool {
    use burn::backend::DispatchDevice;
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// The read's parameters as plain numbers.
struct Params {
    shape: ReadShape,
    /// `exp(ℓ)`, `[2, C]`.
    rate: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    omega: Vec<f32>,
}

impl Params {
    fn new(
        log_rate: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        omega: FlexTensor,
        shape: ReadShape,
    ) -> Params {
        let [log_rate, weight, bias, omega] = [log_rate, weight, bias, omega].map(contiguous);
        let rate: Vec<f32> = f32s(&log_rate).iter().map(|l| l.exp()).collect();
        assert_eq!(rate.len(), 2 * shape.channels(), "log rates must be [2, C]");
        let (weight, bias, omega) = (
            f32s(&weight).to_vec(),
            f32s(&bias).to_vec(),
            f32s(&omega).to_vec(),
        );
        assert!(
            !shape.selective || (weight.len() == 2 * VALUE_DIM && bias.len() == 2),
            "the selective step needs a [VALUE_DIM, 2] weight and a [2] bias"
        );
        assert!(omega.len() >= 2 * shape.cycles, "omega must be [2, cycles]");
        Params {
            shape,
            rate,
            weight,
            bias,
            omega,
        }
    }

    /// The selective step σ = softplus(p) for source `s` and its derivative dσ/dp (Burn's
    /// softplus: the identity above 20); without selection σ = 1.
    fn step(&self, s: usize, v: &[f32]) -> (f32, f32) {
        if !self.shape.selective {
            return (1.0, 0.0);
        }
        let pre = self.bias[s]
            + v.iter()
                .enumerate()
                .map(|(i, x)| x * self.weight[i * 2 + s])
                .sum::<f32>();
        if pre > 20.0 {
            (pre, 1.0)
        } else {
            (pre.exp().ln_1p(), 1.0 / (1.0 + (-pre).exp()))
        }
    }

    /// Channel `ch`'s oscillation for source `s` at `apart` days before the turn's time
    /// of the week: 1 for a decaying mode, the cosine or sine of its phase otherwise.
    fn osc(&self, s: usize, ch: usize, apart: f32) -> f32 {
        let ReadShape { modes, cycles, .. } = self.shape;
        if ch < modes {
            return 1.0;
        }
        let j = (ch - modes) % cycles;
        let phase = self.omega[s * cycles + j] * apart;
        if ch < modes + cycles {
            phase.cos()
        } else {
            phase.sin()
        }
    }

    /// Channel `ch`'s decay rate for source `s` at step σ, and whether it is held at the
    /// oscillating modes' bound.
    fn rate(&self, s: usize, ch: usize, sigma: f32) -> (f32, bool) {
        let a = self.rate[s * self.shape.channels() + ch] * sigma;
        if ch >= self.shape.modes && a > CYCLE_MAX_RATE {
            (CYCLE_MAX_RATE, true)
        } else {
            (a, false)
        }
    }
}

/// Each source's places among a candidate's events.
const SOURCES: [(usize, usize); 2] = [(0, MEMORY_EVENTS), (MEMORY_EVENTS, ENTITY_EVENTS)];

/// Candidates per block of the backward's sums.
const BLOCK: usize = 256;

/// One candidate's event `j`: its values, its phase and its age; `None` for an empty
/// place (all values 0), which reads nothing and gets no gradient.
fn event<'a>(events: &'a [f32], days: &[f32], i: usize, j: usize) -> Option<(&'a [f32], f32, f32)> {
    let ev = &events[(i * EVENTS + j) * EVENT_DIM..][..EVENT_DIM];
    let v = &ev[..VALUE_DIM];
    (!v.iter().all(|&x| x == 0.0)).then(|| (v, ev[WEEK_APART], days[i * EVENTS + j]))
}

fn forward(p: &Params, events: &[f32], days: &[f32], n: usize) -> Vec<f32> {
    let c = p.shape.channels();
    let width = p.shape.width();
    let mut out = vec![0f32; n * width];
    out.par_chunks_mut(width.max(1))
        .enumerate()
        .for_each(|(i, out)| {
            for (s, &(first, len)) in SOURCES.iter().enumerate() {
                let scale = 1.0 / (len as f32).sqrt();
                for j in first..first + len {
                    let Some((v, apart, d)) = event(events, days, i, j) else {
                        continue;
                    };
                    let (sigma, _) = p.step(s, v);
                    for ch in 0..c {
                        let (a, _) = p.rate(s, ch, sigma);
                        let k = (-a * d).exp() * p.osc(s, ch, apart) * scale;
                        let o = &mut out[(s * c + ch) * VALUE_DIM..][..VALUE_DIM];
                        for (o, x) in o.iter_mut().zip(v) {
                            *o += k * x;
                        }
                    }
                }
            }
        });
    out
}

/// Gradients of one candidate's read, added to `g` (`[2 · C]` log rates, then
/// `[VALUE_DIM, 2]` weight, then `[2]` bias).
fn backward_one(p: &Params, events: &[f32], days: &[f32], grad: &[f32], i: usize, g: &mut [f32]) {
    let c = p.shape.channels();
    let (g_rate, rest) = g.split_at_mut(2 * c);
    let (g_weight, g_bias) = rest.split_at_mut(2 * VALUE_DIM);
    let grad = &grad[i * p.shape.width()..][..p.shape.width()];
    for (s, &(first, len)) in SOURCES.iter().enumerate() {
        let scale = 1.0 / (len as f32).sqrt();
        for j in first..first + len {
            let Some((v, apart, d)) = event(events, days, i, j) else {
                continue;
            };
            let (sigma, d_sigma) = p.step(s, v);
            let mut g_sigma = 0f32;
            for ch in 0..c {
                let (a, held) = p.rate(s, ch, sigma);
                if held {
                    continue;
                }
                let gv = &grad[(s * c + ch) * VALUE_DIM..][..VALUE_DIM];
                let g_k = scale * gv.iter().zip(v).map(|(g, x)| g * x).sum::<f32>();
                let g_a = -d * g_k * (-a * d).exp() * p.osc(s, ch, apart);
                g_rate[s * c + ch] += g_a * a;
                g_sigma += g_a * p.rate[s * c + ch];
            }
            if p.shape.selective {
                let g_pre = g_sigma * d_sigma;
                for (k, x) in v.iter().enumerate() {
                    g_weight[k * 2 + s] += g_pre * x;
                }
                g_bias[s] += g_pre;
            }
        }
    }
}

fn backward(p: &Params, events: &[f32], days: &[f32], grad: &[f32], n: usize) -> Vec<f32> {
    let len = 2 * p.shape.channels() + 2 * VALUE_DIM + 2;
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut g = vec![0f32; len];
            for i in b * BLOCK..((b + 1) * BLOCK).min(n) {
                backward_one(p, events, days, grad, i, &mut g);
            }
            g
        })
        .collect();
    let mut total = vec![0f32; len];
    for g in blocks {
        for (t, x) in total.iter_mut().zip(g) {
            *t += x;
        }
    }
    total
}

fn candidates(events: &FlexTensor, days: &FlexTensor) -> usize {
    let (es, ds) = (events.layout().shape(), days.layout().shape());
    assert!(
        es.num_dims() == 3 && es[1] == EVENTS && es[2] == EVENT_DIM,
        "keyed read: events must be [N, EVENTS, EVENT_DIM]"
    );
    assert!(
        ds.num_dims() == 2 && ds[0] == es[0] && ds[1] == EVENTS,
        "keyed read: days must be [N, EVENTS]"
    );
    es[0]
}

impl KeyedReadOps for Flex {
    fn keyed_read(
        events: FlexTensor,
        days: FlexTensor,
        log_rate: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        omega: FlexTensor,
        shape: ReadShape,
    ) -> FlexTensor {
        let n = candidates(&events, &days);
        let p = Params::new(log_rate, weight, bias, omega, shape);
        let [events, days] = [events, days].map(contiguous);
        let out = forward(&p, f32s(&events), f32s(&days), n);
        flex(out, vec![n, shape.width()])
    }

    fn keyed_read_backward(
        events: FlexTensor,
        days: FlexTensor,
        log_rate: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        omega: FlexTensor,
        grad: FlexTensor,
        shape: ReadShape,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let n = candidates(&events, &days);
        let p = Params::new(log_rate, weight, bias, omega, shape);
        let [events, days, grad] = [events, days, grad].map(contiguous);
        let g = backward(&p, f32s(&events), f32s(&days), f32s(&grad), n);
        let c = shape.channels();
        (
            flex(g[..2 * c].to_vec(), vec![2, c]),
            flex(g[2 * c..2 * c + 2 * VALUE_DIM].to_vec(), vec![VALUE_DIM, 2]),
            flex(g[2 * c + 2 * VALUE_DIM..].to_vec(), vec![2]),
        )
    }
}

type Inputs<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    ReadShape,
);

#[derive(Debug)]
struct ReadBackward;

impl<B: Backend + KeyedReadOps> Backward<B, 3> for ReadBackward {
    type State = Inputs<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (events, days, log_rate, weight, bias, omega, shape) = ops.state;
        let (g_rate, g_weight, g_bias) =
            B::keyed_read_backward(events, days, log_rate, weight, bias, omega, grad, shape);
        for (parent, g) in ops.parents.into_iter().zip([g_rate, g_weight, g_bias]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: Backend + KeyedReadOps, C: CheckpointStrategy> KeyedReadOps for Autodiff<B, C> {
    fn keyed_read(
        events: FloatTensor<Self>,
        days: FloatTensor<Self>,
        log_rate: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        omega: FloatTensor<Self>,
        shape: ReadShape,
    ) -> FloatTensor<Self> {
        // The events, their ages and the (fixed) frequencies are data: no gradient.
        let parents = [log_rate.node(), weight.node(), bias.node()];
        let inputs = (
            events.into_primitive(),
            days.into_primitive(),
            log_rate.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            omega.into_primitive(),
            shape,
        );
        let (e, d, l, w, b, o, _) = inputs.clone();
        let out = B::keyed_read(e, d, l, w, b, o, shape);
        match ReadBackward
            .prepare::<C>(parents)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(inputs, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn keyed_read_backward(
        events: FloatTensor<Self>,
        days: FloatTensor<Self>,
        log_rate: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        omega: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        shape: ReadShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Gradients of gradients are not needed for training: the result is a constant.
        use burn::backend::AutodiffBackend;
        let (g_rate, g_weight, g_bias) = B::keyed_read_backward(
            events.into_primitive(),
            days.into_primitive(),
            log_rate.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            omega.into_primitive(),
            grad.into_primitive(),
            shape,
        );
        (
            Self::from_inner(g_rate),
            Self::from_inner(g_weight),
            Self::from_inner(g_bias),
        )
    }
}
