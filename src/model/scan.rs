//! The fused selective scan: one CPU kernel for the whole sequence with a hand-written
//! backward, registered as a Burn backend extension so it joins the autodiff graph.
//!
//! Same contract as [`selective_scan_reference`](super::mamba::selective_scan_reference):
//! x, Δ `[B, T, E]`; A `[E, N]`; B, C `[B, T, N]` → y `[B, T, E]`, with
//! h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t and y_t = C_t · h_t, h_{−1} = 0.
//!
//! The forward keeps nothing but its inputs. The backward recomputes the states of one
//! sequence at a time into a buffer that stays in cache, then walks time backwards:
//!
//! ```text
//! ĝh_t   = gh_t + g_t C_t                      (gradient reaching h_t)
//! ∂C_t   = Σ_e g_t h_t          ∂B_t = Σ_e ĝh_t Δ_t x_t
//! ∂A    += ĝh_t h_{t−1} ΔA_t Δ_t               (ΔA_t = exp(Δ_t A))
//! ∂Δ_t   = Σ_n ĝh_t (h_{t−1} ΔA_t A + B_t x_t)
//! ∂x_t   = Σ_n ĝh_t B_t Δ_t         gh_{t−1} = ĝh_t ΔA_t
//! ```
//!
//! Inside the kernels the state is laid out `[N, E]` so that every inner loop runs over the
//! contiguous channel axis and vectorizes; the only reductions (∂B, ∂C) use fixed lane
//! accumulators, and ∂A is summed over the batch in batch order, so results do not depend
//! on the number of threads.

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

use ssmkit_format::multiversion;
use ssmkit_format::simd::{dot, exp, transpose};

/// The selective scan as a backend operation.
#[backend_extension(Flex, Cube: cfg(feature = "wgpu"), Autodiff)]
pub trait SelectiveScanOps: Backend {
    /// y `[B, T, E]` from x, Δ `[B, T, E]`, A `[E, N]`, B, C `[B, T, N]`.
    fn selective_scan(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        bm: FloatTensor<Self>,
        cm: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Gradients (x, Δ, A, B, C) of Σ g ⊙ y.
    #[allow(clippy::type_complexity)]
    fn selective_scan_backward(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        bm: FloatTensor<Self>,
        cm: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );
}

/// The fused scan on tensors. Runs on the CPU backend and, in a build with the `wgpu`
/// feature, on the GPU backend (plain or autodiff; see
/// [`ScanImpl::for_device`](super::mamba::ScanImpl::for_device)).
pub fn selective_scan_fused(
    x: Tensor<3>,
    delta: Tensor<3>,
    a: Tensor<2>,
    bm: Tensor<3>,
    cm: Tensor<3>,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as SelectiveScanOps>::selective_scan(
        x.into_dispatch(),
        delta.into_dispatch(),
        a.into_dispatch(),
        bm.into_dispatch(),
        cm.into_dispatch(),
    ))
}

/// Shapes of one scan, read from x `[B, T, E]` and A `[E, N]`.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    t: usize,
    e: usize,
    n: usize,
}

/// A contiguous f32 tensor (no copy when it already is one).
pub(super) fn contiguous(t: FlexTensor) -> FlexTensor {
    assert!(
        t.dtype() == burn::tensor::DType::F32,
        "the fused kernels run on f32 tensors"
    );
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

pub(super) fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

pub(super) fn flex(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

fn dims(x: &FlexTensor, a: &FlexTensor) -> Dims {
    let xs = x.layout().shape();
    let as_ = a.layout().shape();
    assert!(
        xs.num_dims() == 3 && as_.num_dims() == 2 && xs[2] == as_[0],
        "selective scan: x must be [B, T, E] and A [E, N]"
    );
    Dims {
        b: xs[0],
        t: xs[1],
        e: xs[2],
        n: as_[1],
    }
}

impl SelectiveScanOps for Flex {
    fn selective_scan(
        x: FlexTensor,
        delta: FlexTensor,
        a: FlexTensor,
        bm: FlexTensor,
        cm: FlexTensor,
    ) -> FlexTensor {
        let d = dims(&x, &a);
        let [x, delta, a, bm, cm] = [x, delta, a, bm, cm].map(contiguous);
        let a_t = transpose(f32s(&a), d.e, d.n);
        let y = forward(d, f32s(&x), f32s(&delta), &a_t, f32s(&bm), f32s(&cm));
        flex(y, vec![d.b, d.t, d.e])
    }

    fn selective_scan_backward(
        x: FlexTensor,
        delta: FlexTensor,
        a: FlexTensor,
        bm: FlexTensor,
        cm: FlexTensor,
        grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        let d = dims(&x, &a);
        let [x, delta, a, bm, cm, grad] = [x, delta, a, bm, cm, grad].map(contiguous);
        let a_t = transpose(f32s(&a), d.e, d.n);
        let g = backward(
            d,
            f32s(&x),
            f32s(&delta),
            &a_t,
            f32s(&bm),
            f32s(&cm),
            f32s(&grad),
        );
        (
            flex(g.x, vec![d.b, d.t, d.e]),
            flex(g.delta, vec![d.b, d.t, d.e]),
            flex(transpose(&g.a_t, d.n, d.e), vec![d.e, d.n]),
            flex(g.bm, vec![d.b, d.t, d.n]),
            flex(g.cm, vec![d.b, d.t, d.n]),
        )
    }
}

type Inputs<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
);

#[derive(Debug)]
struct ScanBackward;

impl<B: Backend + SelectiveScanOps> Backward<B, 5> for ScanBackward {
    type State = Inputs<B>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, delta, a, bm, cm) = ops.state;
        let (gx, gdelta, ga, gbm, gcm) = B::selective_scan_backward(x, delta, a, bm, cm, grad);
        for (parent, g) in ops.parents.into_iter().zip([gx, gdelta, ga, gbm, gcm]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: Backend + SelectiveScanOps, C: CheckpointStrategy> SelectiveScanOps for Autodiff<B, C> {
    fn selective_scan(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        bm: FloatTensor<Self>,
        cm: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let parents = [x.node(), delta.node(), a.node(), bm.node(), cm.node()];
        let inputs = (
            x.into_primitive(),
            delta.into_primitive(),
            a.into_primitive(),
            bm.into_primitive(),
            cm.into_primitive(),
        );
        let (xp, dp, ap, bp, cp) = inputs.clone();
        let y = B::selective_scan(xp, dp, ap, bp, cp);
        match ScanBackward
            .prepare::<C>(parents)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(inputs, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn selective_scan_backward(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        bm: FloatTensor<Self>,
        cm: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        // Gradients of gradients are not needed for training: the result is a constant.
        use burn::backend::AutodiffBackend;
        let (gx, gd, ga, gb, gc) = B::selective_scan_backward(
            x.into_primitive(),
            delta.into_primitive(),
            a.into_primitive(),
            bm.into_primitive(),
            cm.into_primitive(),
            grad.into_primitive(),
        );
        (
            Self::from_inner(gx),
            Self::from_inner(gd),
            Self::from_inner(ga),
            Self::from_inner(gb),
            Self::from_inner(gc),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Kernels on plain slices.

/// Per-sequence slices of the inputs.
struct Seq<'a> {
    x: &'a [f32],
    delta: &'a [f32],
    bm: &'a [f32],
    cm: &'a [f32],
}

impl<'a> Seq<'a> {
    fn of(d: Dims, i: usize, x: &'a [f32], delta: &'a [f32], bm: &'a [f32], cm: &'a [f32]) -> Self {
        let (te, tn) = (d.t * d.e, d.t * d.n);
        Seq {
            x: &x[i * te..(i + 1) * te],
            delta: &delta[i * te..(i + 1) * te],
            bm: &bm[i * tn..(i + 1) * tn],
            cm: &cm[i * tn..(i + 1) * tn],
        }
    }
}

/// Channels per register block of the forward kernel.
const LANES: usize = 8;

multiversion!(forward_seq(d: Dims, s: &Seq, a_t: &[f32], h: &mut [f32], y: &mut [f32]) {
    let (e, n) = (d.e, d.n);
    h.fill(0.0);
    let blocks = e / LANES;
    for t in 0..d.t {
        let dt = &s.delta[t * e..(t + 1) * e];
        let xt = &s.x[t * e..(t + 1) * e];
        let bt = &s.bm[t * n..(t + 1) * n];
        let ct = &s.cm[t * n..(t + 1) * n];
        let yt = &mut y[t * e..(t + 1) * e];
        // Blocks of LANES channels keep y in registers across the state dimension.
        for blk in 0..blocks {
            let c0 = blk * LANES;
            let dtb: [f32; LANES] = dt[c0..c0 + LANES].try_into().expect("block");
            let xb: [f32; LANES] = xt[c0..c0 + LANES].try_into().expect("block");
            let mut acc = [0.0f32; LANES];
            for j in 0..n {
                let (bj, cj) = (bt[j], ct[j]);
                let hj: &mut [f32; LANES] = (&mut h[j * e + c0..j * e + c0 + LANES])
                    .try_into()
                    .expect("block");
                let aj: &[f32; LANES] = a_t[j * e + c0..j * e + c0 + LANES].try_into().expect("block");
                for l in 0..LANES {
                    hj[l] = exp(dtb[l] * aj[l]) * hj[l] + dtb[l] * xb[l] * bj;
                    acc[l] += hj[l] * cj;
                }
            }
            yt[c0..c0 + LANES].copy_from_slice(&acc);
        }
        // The remaining channels one at a time.
        for c in blocks * LANES..e {
            let mut acc = 0.0f32;
            for j in 0..n {
                let hv = &mut h[j * e + c];
                *hv = exp(dt[c] * a_t[j * e + c]) * *hv + dt[c] * xt[c] * bt[j];
                acc += *hv * ct[j];
            }
            yt[c] = acc;
        }
    }
});

fn forward(d: Dims, x: &[f32], delta: &[f32], a_t: &[f32], bm: &[f32], cm: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; d.b * d.t * d.e];
    y.par_chunks_mut(d.t * d.e.max(1))
        .enumerate()
        .for_each_init(
            || vec![0.0f32; d.n * d.e],
            |h, (i, yi)| forward_seq(d, &Seq::of(d, i, x, delta, bm, cm), a_t, h, yi),
        );
    y
}

struct Grads {
    x: Vec<f32>,
    delta: Vec<f32>,
    /// `[N, E]`
    a_t: Vec<f32>,
    bm: Vec<f32>,
    cm: Vec<f32>,
}

/// Buffers of one sequence's backward pass.
struct Work {
    /// States h_t, `[T, N, E]`.
    hs: Vec<f32>,
    /// exp(Δ_t A), `[T, N, E]`.
    da: Vec<f32>,
    /// Gradient flowing into h, `[N, E]`.
    gh: Vec<f32>,
    dtx: Vec<f32>,
    gdt: Vec<f32>,
    gx: Vec<f32>,
}

/// Outputs of one sequence's backward pass.
struct SeqGrads<'a> {
    x: &'a mut [f32],
    delta: &'a mut [f32],
    a_t: &'a mut [f32],
    bm: &'a mut [f32],
    cm: &'a mut [f32],
}

multiversion!(backward_seq(d: Dims, s: &Seq, a_t: &[f32], g: &[f32], w: &mut Work, out: &mut SeqGrads) {
    let (e, n, ne) = (d.e, d.n, d.n * d.e);
    // Recompute the states and decays.
    for t in 0..d.t {
        let dt = &s.delta[t * e..(t + 1) * e];
        let xt = &s.x[t * e..(t + 1) * e];
        for ((o, &a), &b) in w.dtx.iter_mut().zip(dt).zip(xt) {
            *o = a * b;
        }
        let (before, now) = w.hs.split_at_mut(t * ne);
        let prev = if t == 0 { None } else { Some(&before[(t - 1) * ne..]) };
        let now = &mut now[..ne];
        let da = &mut w.da[t * ne..(t + 1) * ne];
        for j in 0..n {
            let bj = s.bm[t * n + j];
            let aj = &a_t[j * e..(j + 1) * e];
            let hj = &mut now[j * e..(j + 1) * e];
            let daj = &mut da[j * e..(j + 1) * e];
            for ((dav, &av), &dv) in daj.iter_mut().zip(aj).zip(dt) {
                *dav = exp(dv * av);
            }
            match prev {
                Some(p) => {
                    let pj = &p[j * e..(j + 1) * e];
                    for (((hv, &pv), &dav), &uv) in hj.iter_mut().zip(pj).zip(daj.iter()).zip(&w.dtx) {
                        *hv = dav * pv + uv * bj;
                    }
                }
                None => {
                    for (hv, &uv) in hj.iter_mut().zip(&w.dtx) {
                        *hv = uv * bj;
                    }
                }
            }
        }
    }
    // Walk time backwards.
    w.gh.fill(0.0);
    out.a_t.fill(0.0);
    for t in (0..d.t).rev() {
        let dt = &s.delta[t * e..(t + 1) * e];
        let xt = &s.x[t * e..(t + 1) * e];
        let gt = &g[t * e..(t + 1) * e];
        for ((o, &a), &b) in w.dtx.iter_mut().zip(dt).zip(xt) {
            *o = a * b;
        }
        w.gdt.fill(0.0);
        w.gx.fill(0.0);
        let now = &w.hs[t * ne..(t + 1) * ne];
        let da = &w.da[t * ne..(t + 1) * ne];
        for j in 0..n {
            let (bj, cj) = (s.bm[t * n + j], s.cm[t * n + j]);
            let hj = &now[j * e..(j + 1) * e];
            out.cm[t * n + j] = dot(gt, hj);
            let ghj = &mut w.gh[j * e..(j + 1) * e];
            for (ghv, &gv) in ghj.iter_mut().zip(gt) {
                *ghv += gv * cj;
            }
            out.bm[t * n + j] = dot(ghj, &w.dtx);
            let daj = &da[j * e..(j + 1) * e];
            let aj = &a_t[j * e..(j + 1) * e];
            let gaj = &mut out.a_t[j * e..(j + 1) * e];
            if t > 0 {
                let pj = &w.hs[(t - 1) * ne + j * e..(t - 1) * ne + (j + 1) * e];
                for ((((((ghv, &pv), &dav), &av), &dv), gav), (gdv, gxv)) in ghj
                    .iter_mut()
                    .zip(pj)
                    .zip(daj)
                    .zip(aj)
                    .zip(dt)
                    .zip(gaj.iter_mut())
                    .zip(w.gdt.iter_mut().zip(w.gx.iter_mut()))
                {
                    let gda = *ghv * pv * dav;
                    *gav += gda * dv;
                    *gdv += gda * av;
                    *gxv += *ghv * bj;
                    *ghv *= dav;
                }
            } else {
                for (ghv, gxv) in ghj.iter_mut().zip(w.gx.iter_mut()) {
                    *gxv += *ghv * bj;
                    *ghv = 0.0;
                }
            }
        }
        // ∂Δ also gets Σ_n ĝh B x = x · (Σ_n ĝh B), and ∂x = Δ · (Σ_n ĝh B).
        let gdelta = &mut out.delta[t * e..(t + 1) * e];
        let gxo = &mut out.x[t * e..(t + 1) * e];
        for (((((o_d, o_x), &gdv), &gxv), &xv), &dv) in gdelta
            .iter_mut()
            .zip(gxo.iter_mut())
            .zip(&w.gdt)
            .zip(&w.gx)
            .zip(xt)
            .zip(dt)
        {
            *o_d = gdv + gxv * xv;
            *o_x = gxv * dv;
        }
    }
});

fn backward(
    d: Dims,
    x: &[f32],
    delta: &[f32],
    a_t: &[f32],
    bm: &[f32],
    cm: &[f32],
    grad: &[f32],
) -> Grads {
    let (te, tn, ne) = (d.t * d.e, d.t * d.n, d.n * d.e);
    let mut gx = vec![0.0f32; d.b * te];
    let mut gdelta = vec![0.0f32; d.b * te];
    let mut gbm = vec![0.0f32; d.b * tn];
    let mut gcm = vec![0.0f32; d.b * tn];
    // ∂A per sequence, summed in sequence order afterwards.
    let mut ga_seq = vec![0.0f32; d.b * ne];
    if d.b * te * d.n > 0 {
        gx.par_chunks_mut(te)
            .zip(gdelta.par_chunks_mut(te))
            .zip(gbm.par_chunks_mut(tn))
            .zip(gcm.par_chunks_mut(tn))
            .zip(ga_seq.par_chunks_mut(ne))
            .enumerate()
            .for_each_init(
                || Work {
                    hs: vec![0.0; d.t * ne],
                    da: vec![0.0; d.t * ne],
                    gh: vec![0.0; ne],
                    dtx: vec![0.0; d.e],
                    gdt: vec![0.0; d.e],
                    gx: vec![0.0; d.e],
                },
                |w, (i, ((((gx, gdelta), gbm), gcm), ga))| {
                    let s = Seq::of(d, i, x, delta, bm, cm);
                    let mut out = SeqGrads {
                        x: gx,
                        delta: gdelta,
                        a_t: ga,
                        bm: gbm,
                        cm: gcm,
                    };
                    backward_seq(d, &s, a_t, &grad[i * te..(i + 1) * te], w, &mut out);
                },
            );
    }
    let mut ga = vec![0.0f32; ne];
    for seq in ga_seq.chunks_exact(ne.max(1)) {
        for (o, v) in ga.iter_mut().zip(seq) {
            *o += v;
        }
    }
    Grads {
        x: gx,
        delta: gdelta,
        a_t: ga,
        bm: gbm,
        cm: gcm,
    }
}

#[cfg(test)]
pub(in crate::model) mod tests {
    use super::super::mamba::selective_scan_reference;
    use super::super::uniform_tensor;
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// x, Δ, A, B, C of a scan with `b` sequences of `t` steps, `e` channels, `n` states.
    pub(in crate::model) fn inputs(
        b: usize,
        t: usize,
        e: usize,
        n: usize,
        seed: u64,
        device: &Device,
    ) -> Vec<Tensor<3>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        vec![
            uniform_tensor(&mut rng, [b, t, e], -1.0, 1.0, device),
            uniform_tensor(&mut rng, [b, t, e], 0.01, 0.5, device),
            uniform_tensor(&mut rng, [1, e, n], -3.0, -0.1, device),
            uniform_tensor(&mut rng, [b, t, n], -1.0, 1.0, device),
            uniform_tensor(&mut rng, [b, t, n], -1.0, 1.0, device),
        ]
    }

    fn run(
        scan: fn(Tensor<3>, Tensor<3>, Tensor<2>, Tensor<3>, Tensor<3>) -> Tensor<3>,
        v: &[Tensor<3>],
    ) -> Tensor<3> {
        scan(
            v[0].clone(),
            v[1].clone(),
            v[2].clone().squeeze_dim::<2>(0),
            v[3].clone(),
            v[4].clone(),
        )
    }

    fn max_rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-6);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    #[test]
    fn fused_forward_matches_reference_loop() {
        let device = Device::flex();
        // Channel and state counts that are not multiples of the vector width.
        for (b, t, e, n, seed) in [(3, 11, 13, 5, 1), (2, 40, 32, 16, 2), (1, 1, 8, 8, 3)] {
            let v = inputs(b, t, e, n, seed, &device);
            let diff = max_rel_diff(
                run(selective_scan_fused, &v),
                run(selective_scan_reference, &v),
            );
            assert!(
                diff <= 1e-5,
                "shape {:?}: relative difference {diff}",
                (b, t, e, n)
            );
        }
    }

    /// Gradients of Σ w ⊙ y with respect to the five inputs.
    fn grads(
        scan: fn(Tensor<3>, Tensor<3>, Tensor<2>, Tensor<3>, Tensor<3>) -> Tensor<3>,
        v: &[Tensor<3>],
        w: &Tensor<3>,
    ) -> Vec<Tensor<3>> {
        let v: Vec<Tensor<3>> = v.iter().map(|t| t.clone().require_grad()).collect();
        let g = (run(scan, &v) * w.clone()).sum().backward();
        v.iter()
            .map(|t| t.grad(&g).expect("input has a gradient"))
            .collect()
    }

    #[test]
    fn fused_backward_matches_autodiff_of_reference_loop() {
        let device = Device::flex().autodiff();
        for (b, t, e, n, seed) in [(3, 9, 13, 5, 4), (2, 33, 24, 16, 5)] {
            let v = inputs(b, t, e, n, seed, &device);
            let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
            let w = uniform_tensor(&mut rng, [b, t, e], -1.0, 1.0, &device);
            let fused = grads(selective_scan_fused, &v, &w);
            let reference = grads(selective_scan_reference, &v, &w);
            for ((name, f), r) in ["x", "delta", "A", "B", "C"]
                .iter()
                .zip(fused)
                .zip(reference)
            {
                let diff = max_rel_diff(f, r);
                assert!(
                    diff <= 1e-4,
                    "∂{name}, shape {:?}: relative difference {diff}",
                    (b, t, e, n)
                );
            }
        }
    }

    #[test]
    fn fused_backward_matches_finite_differences() {
        let device = Device::flex();
        let v = inputs(2, 6, 5, 3, 7, &device);
        let ad = Device::flex().autodiff();
        let v_ad: Vec<Tensor<3>> = v
            .iter()
            .map(|t| Tensor::from_data(t.to_data(), &ad))
            .collect();
        let w = inputs(2, 6, 5, 3, 8, &device)[0].clone();
        let g = grads(
            selective_scan_fused,
            &v_ad,
            &Tensor::from_data(w.to_data(), &ad),
        );
        let loss = |v: &[Tensor<3>]| -> f64 {
            (run(selective_scan_fused, v) * w.clone())
                .sum()
                .into_scalar::<f32>() as f64
        };
        let eps = 1e-2f32;
        for (k, name) in ["x", "delta", "A", "B", "C"].iter().enumerate() {
            let analytic = g[k].to_data().try_into_vec::<f32>().unwrap();
            let len = analytic.len();
            for idx in [0, len / 2, len - 1] {
                let shifted = |d: f32| -> f64 {
                    let mut v2 = v.to_vec();
                    let t = &v2[k];
                    let (shape, mut data) = (t.shape(), t.to_data().try_into_vec::<f32>().unwrap());
                    data[idx] += d;
                    v2[k] = Tensor::from_data(TensorData::new(data, shape), &device);
                    loss(&v2)
                };
                let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps as f64);
                let a = analytic[idx] as f64;
                let tol = 1e-2 * numeric.abs().max(a.abs()).max(1e-2);
                assert!(
                    (numeric - a).abs() <= tol,
                    "∂{name}[{idx}]: fused {a}, finite difference {numeric}"
                );
            }
        }
    }

    #[test]
    fn fused_gradients_do_not_depend_on_thread_count() {
        let device = Device::flex().autodiff();
        let v = inputs(5, 12, 16, 4, 9, &device);
        let w = inputs(5, 12, 16, 4, 10, &device)[0].clone();
        let in_pool = |threads: usize| -> Vec<Vec<f32>> {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    grads(selective_scan_fused, &v, &w)
                        .into_iter()
                        .map(|g| g.to_data().try_into_vec::<f32>().unwrap())
                        .collect()
                })
        };
        assert_eq!(in_pool(1), in_pool(3));
    }
}
