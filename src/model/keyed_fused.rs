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
//!
//! Per candidate and source, the steps and the phases' sines and cosines of all its events
//! are computed first, together, with the branch-free functions of `ssmkit_format::simd`
//! (the runtime's own), so that they vectorize; then each event's channels run side by
//! side, the sums held `[VALUE_DIM, C]`. Both passes are compiled for AVX2 where the CPU
//! has it.

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

use ssmkit_format::model::{MAX_KEYED_CYCLES, MAX_KEYED_MODES};
use ssmkit_format::multiversion;
use ssmkit_format::simd::{exp, sin_cos, softplus};

use crate::keyed::{
    CYCLE_MAX_RATE, ENTITY_EVENTS, EVENT_DIM, EVENTS, MEMORY_EVENTS, VALUE_DIM, WEEK_APART,
    read_divisor,
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

    /// One source's places of one candidate (`ev`: `[len, EVENT_DIM]`): which are live,
    /// and each live event's step σ, dσ/dp and the sines and cosines of its phases, all
    /// events at once so that the exponentials, logarithms, sines and cosines vectorize
    /// (the functions of `ssmkit_format::simd`).
    #[inline(always)]
    fn prepare(&self, s: usize, ev: &[f32]) -> Prepared {
        let cycles = self.shape.cycles;
        let mut p = Prepared {
            live: [0; MAX_PLACES],
            n: 0,
            sigma: [1.0; MAX_PLACES],
            d_sigma: [0.0; MAX_PLACES],
            sin: [0.0; MAX_PLACES * MAX_KEYED_CYCLES],
            cos: [0.0; MAX_PLACES * MAX_KEYED_CYCLES],
        };
        let mut apart = [0f32; MAX_PLACES];
        for (j, e) in ev.chunks_exact(EVENT_DIM).enumerate() {
            // An empty place (all values 0) reads nothing and gets no gradient.
            if e[..VALUE_DIM].iter().any(|&x| x != 0.0) {
                p.live[p.n] = j;
                apart[p.n] = e[WEEK_APART];
                p.n += 1;
            }
        }
        let n = p.n;
        if self.shape.selective {
            let mut pre = [0f32; MAX_PLACES];
            for (pre, &j) in pre.iter_mut().zip(&p.live[..n]) {
                let v = &ev[j * EVENT_DIM..j * EVENT_DIM + VALUE_DIM];
                let w = self.weight.chunks_exact(2).map(|w| w[s]);
                *pre = self.bias[s] + v.iter().zip(w).map(|(x, w)| x * w).sum::<f32>();
            }
            // Burn's softplus: the identity above 20.
            for ((sigma, d_sigma), &pre) in p.sigma.iter_mut().zip(&mut p.d_sigma).zip(&pre[..n]) {
                let big = pre > 20.0;
                *sigma = if big { pre } else { softplus(pre) };
                *d_sigma = if big { 1.0 } else { 1.0 / (1.0 + exp(-pre)) };
            }
        }
        let omega = &self.omega[s * cycles..(s + 1) * cycles];
        let mut phase = [0f32; MAX_PLACES * MAX_KEYED_CYCLES];
        for (ph, &apart) in phase.chunks_exact_mut(cycles.max(1)).zip(&apart[..n]) {
            for (ph, w) in ph.iter_mut().zip(omega) {
                *ph = w * apart;
            }
        }
        let phases = phase[..n * cycles].iter().zip(&mut p.sin).zip(&mut p.cos);
        for ((&ph, sin), cos) in phases {
            (*sin, *cos) = sin_cos(ph);
        }
        p
    }

    /// Live event `i` of [`Params::prepare`], `d` days old, as every channel reads it:
    /// the channels' kernels exp(−a · d) · o_c (o_c: 1 for a decaying mode, the cosine or
    /// sine of its phase for an oscillating one), their rates a, and whether each is held
    /// at the oscillating modes' bound.
    #[inline(always)]
    fn kernel(&self, s: usize, prep: &Prepared, i: usize, d: f32) -> Kernel {
        let ReadShape { modes, cycles, .. } = self.shape;
        let c = self.shape.channels();
        let mut k = Kernel {
            k: [0.0; MAX_CHANNELS],
            a: [0.0; MAX_CHANNELS],
            held: [false; MAX_CHANNELS],
        };
        let mut osc = [1f32; MAX_CHANNELS];
        osc[modes..modes + cycles].copy_from_slice(&prep.cos[i * cycles..(i + 1) * cycles]);
        osc[modes + cycles..c].copy_from_slice(&prep.sin[i * cycles..(i + 1) * cycles]);
        let sigma = prep.sigma[i];
        let rate = &self.rate[s * c..(s + 1) * c];
        for (ch, ((&r, a), held)) in rate.iter().zip(&mut k.a).zip(&mut k.held).enumerate() {
            *a = r * sigma;
            if ch >= modes && *a > CYCLE_MAX_RATE {
                (*a, *held) = (CYCLE_MAX_RATE, true);
            }
        }
        for ((k, &a), &o) in k.k[..c].iter_mut().zip(&k.a).zip(&osc) {
            *k = exp(-a * d) * o;
        }
        k
    }
}

/// The most channels a read has.
const MAX_CHANNELS: usize = MAX_KEYED_MODES + 2 * MAX_KEYED_CYCLES;

/// The most places one source has.
const MAX_PLACES: usize = if MEMORY_EVENTS > ENTITY_EVENTS {
    MEMORY_EVENTS
} else {
    ENTITY_EVENTS
};

/// What [`Params::prepare`] gives for one source of one candidate: the live places in
/// order, then per live event (in that order) its step, dσ/dp and phases `[n, cycles]`.
struct Prepared {
    live: [usize; MAX_PLACES],
    n: usize,
    sigma: [f32; MAX_PLACES],
    d_sigma: [f32; MAX_PLACES],
    sin: [f32; MAX_PLACES * MAX_KEYED_CYCLES],
    cos: [f32; MAX_PLACES * MAX_KEYED_CYCLES],
}

/// What [`Params::kernel`] gives for one event.
struct Kernel {
    k: [f32; MAX_CHANNELS],
    a: [f32; MAX_CHANNELS],
    held: [bool; MAX_CHANNELS],
}

/// Each source's places among a candidate's events.
const SOURCES: [(usize, usize); 2] = [(0, MEMORY_EVENTS), (MEMORY_EVENTS, ENTITY_EVENTS)];

/// Candidates per block of the backward's sums.
const BLOCK: usize = 256;

fn forward(p: &Params, events: &[f32], days: &[f32], n: usize) -> Vec<f32> {
    let width = p.shape.width();
    let mut out = vec![0f32; n * width];
    out.par_chunks_mut(width.max(1))
        .zip(events.par_chunks(EVENTS * EVENT_DIM))
        .zip(days.par_chunks(EVENTS))
        .for_each(|((out, events), days)| read_one(p, events, days, out));
    out
}

// One candidate's read (its events `[EVENTS, EVENT_DIM]` and ages `[EVENTS]`) into `out`.
multiversion!(read_one(p: &Params, events: &[f32], days: &[f32], out: &mut [f32]) {
    let c = p.shape.channels();
    for (s, (&(first, len), out)) in SOURCES.iter().zip(out.chunks_exact_mut(c * VALUE_DIM)).enumerate() {
        let (ev, days) = (&events[first * EVENT_DIM..(first + len) * EVENT_DIM], &days[first..first + len]);
        let prep = p.prepare(s, ev);
        let scale = 1.0 / read_divisor(s, len, prep.n);
        // The sums held `[VALUE_DIM, C]` (a value's channels side by side), written out
        // `[C, VALUE_DIM]`.
        let mut sum = [[0f32; MAX_CHANNELS]; VALUE_DIM];
        for (i, &j) in prep.live[..prep.n].iter().enumerate() {
            let v = &ev[j * EVENT_DIM..j * EVENT_DIM + VALUE_DIM];
            let mut kernel = p.kernel(s, &prep, i, days[j]);
            kernel.k[..c].iter_mut().for_each(|k| *k *= scale);
            for (row, &x) in sum.iter_mut().zip(v) {
                for (r, &k) in row[..c].iter_mut().zip(&kernel.k) {
                    *r += k * x;
                }
            }
        }
        for (ch, o) in out.chunks_exact_mut(VALUE_DIM).enumerate() {
            for (o, row) in o.iter_mut().zip(&sum) {
                *o = row[ch];
            }
        }
    }
});

// Gradients of one candidate's read (its events, ages and output gradient `grad`), added
// to `g` (`[2 · C]` log rates, then `[VALUE_DIM, 2]` weight, then `[2]` bias).
multiversion!(backward_one(p: &Params, events: &[f32], days: &[f32], grad: &[f32], g: &mut [f32]) {
    let c = p.shape.channels();
    let (g_rate, rest) = g.split_at_mut(2 * c);
    let (g_weight, g_bias) = rest.split_at_mut(2 * VALUE_DIM);
    for (s, &(first, len)) in SOURCES.iter().enumerate() {
        let (ev, days) = (&events[first * EVENT_DIM..(first + len) * EVENT_DIM], &days[first..first + len]);
        let grad = &grad[s * c * VALUE_DIM..(s + 1) * c * VALUE_DIM];
        let rate = &p.rate[s * c..(s + 1) * c];
        let g_rate = &mut g_rate[s * c..(s + 1) * c];
        let prep = p.prepare(s, ev);
        if prep.n == 0 {
            continue; // no event: nothing read, no gradient
        }
        let scale = 1.0 / read_divisor(s, len, prep.n);
        // The output's gradient held `[VALUE_DIM, C]`, as the forward holds its sums.
        let mut g_out = [[0f32; MAX_CHANNELS]; VALUE_DIM];
        for (ch, gv) in grad.chunks_exact(VALUE_DIM).enumerate() {
            for (row, &g) in g_out.iter_mut().zip(gv) {
                row[ch] = g;
            }
        }
        for (i, &j) in prep.live[..prep.n].iter().enumerate() {
            let v = &ev[j * EVENT_DIM..j * EVENT_DIM + VALUE_DIM];
            let d = days[j];
            let kernel = p.kernel(s, &prep, i, d);
            // ĝ_c = Σ_v g_{c,v} · v / (the source's read divisor), every channel at once.
            let mut g_k = [0f32; MAX_CHANNELS];
            for (row, &x) in g_out.iter().zip(v) {
                for (g, &r) in g_k[..c].iter_mut().zip(row) {
                    *g += r * x;
                }
            }
            let mut g_sigma = 0f32;
            let channels = g_k[..c].iter().zip(g_rate.iter_mut()).zip(rate);
            for (ch, ((&g_k, g_rate), &r)) in channels.enumerate() {
                if kernel.held[ch] {
                    continue;
                }
                let g_a = -d * (scale * g_k) * kernel.k[ch];
                *g_rate += g_a * kernel.a[ch];
                g_sigma += g_a * r;
            }
            if p.shape.selective {
                let g_pre = g_sigma * prep.d_sigma[i];
                for (w, x) in g_weight.chunks_exact_mut(2).zip(v) {
                    w[s] += g_pre * x;
                }
                g_bias[s] += g_pre;
            }
        }
    }
});

fn backward(p: &Params, events: &[f32], days: &[f32], grad: &[f32], n: usize) -> Vec<f32> {
    let len = 2 * p.shape.channels() + 2 * VALUE_DIM + 2;
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut g = vec![0f32; len];
            let width = p.shape.width();
            for i in b * BLOCK..((b + 1) * BLOCK).min(n) {
                let (events, days) = (
                    &events[i * EVENTS * EVENT_DIM..][..EVENTS * EVENT_DIM],
                    &days[i * EVENTS..][..EVENTS],
                );
                backward_one(p, events, days, &grad[i * width..][..width], &mut g);
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
