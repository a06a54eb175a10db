//! The selective scan as CubeCL kernels for Burn's GPU backend (the `wgpu` feature).
//!
//! Same contract and recurrences as the CPU kernel in [`scan`](super::scan): one GPU
//! thread runs the whole sequence of one (user, channel) pair with its `N` states in
//! registers, so a scan is one launch instead of the reference loop's few ops per turn.
//!
//! The backward runs the forward again, keeping the states in a scratch tensor laid out
//! `[B, T, N, E]` (neighbouring threads touch neighbouring channels), then a second kernel
//! walks time backwards over them. The sums
//! over channels (∂B, ∂C) and over users (∂A) are written per thread and reduced with
//! Burn's own sum, so no thread waits on another.

use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::prelude::*;

use super::scan::SelectiveScanOps;

/// Threads per cube: one per (user, channel) pair.
const CUBE_THREADS: u32 = 128;

/// y = C · h for every turn; with `keep_states`, also the states h_t, stored `[B, T, N, E]`.
#[cube(launch)]
fn scan_forward_kernel<F: Float>(
    x: &Tensor<F>,
    delta: &Tensor<F>,
    a: &Tensor<F>,
    bm: &Tensor<F>,
    cm: &Tensor<F>,
    y: &mut Tensor<F>,
    states: &mut Tensor<F>,
    pairs: u32,
    steps: u32,
    channels: u32,
    #[comptime] n: usize,
    #[comptime] keep_states: bool,
    #[define(F)] _dtype: ElemType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= pairs as usize {
        terminate!();
    }
    let e_len = channels as usize;
    let t_len = steps as usize;
    let b = pos / e_len;
    let e = pos % e_len;

    let mut av = Array::<F>::new(n);
    let mut h = Array::<F>::new(n);
    #[unroll]
    for k in 0..n {
        av[k] = a[e * n + k];
        h[k] = F::new(0.0);
    }
    for t in 0..t_len {
        let row = b * t_len + t;
        let dt = delta[row * e_len + e];
        let dx = dt * x[row * e_len + e];
        let mut acc = F::new(0.0);
        #[unroll]
        for k in 0..n {
            let hk = (dt * av[k]).exp() * h[k] + dx * bm[row * n + k];
            h[k] = hk;
            acc += cm[row * n + k] * hk;
            if keep_states {
                states[(row * n + k) * e_len + e] = hk;
            }
        }
        y[row * e_len + e] = acc;
    }
}

/// The gradients, walking time backwards over the states the forward kept.
#[cube(launch)]
fn scan_backward_kernel<F: Float>(
    x: &Tensor<F>,
    delta: &Tensor<F>,
    a: &Tensor<F>,
    bm: &Tensor<F>,
    cm: &Tensor<F>,
    grad: &Tensor<F>,
    states: &Tensor<F>,
    gx: &mut Tensor<F>,
    gdelta: &mut Tensor<F>,
    ga: &mut Tensor<F>,
    gb: &mut Tensor<F>,
    gc: &mut Tensor<F>,
    pairs: u32,
    steps: u32,
    channels: u32,
    #[comptime] n: usize,
    #[define(F)] _dtype: ElemType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= pairs as usize {
        terminate!();
    }
    let e_len = channels as usize;
    let t_len = steps as usize;
    let b = pos / e_len;
    let e = pos % e_len;

    // The gradient reaching h_t from later turns, and ∂A summed over this pair's turns.
    let mut av = Array::<F>::new(n);
    let mut gh = Array::<F>::new(n);
    let mut ga_acc = Array::<F>::new(n);
    #[unroll]
    for k in 0..n {
        av[k] = a[e * n + k];
        gh[k] = F::new(0.0);
        ga_acc[k] = F::new(0.0);
    }
    for i in 0..t_len {
        let t = t_len - 1 - i;
        let row = b * t_len + t;
        let dt = delta[row * e_len + e];
        let xv = x[row * e_len + e];
        let g = grad[row * e_len + e];
        let mut d_delta = F::new(0.0);
        let mut d_x = F::new(0.0);
        #[unroll]
        for k in 0..n {
            let at = (row * n + k) * e_len + e;
            let h_t = states[at];
            let mut h_prev = F::new(0.0);
            if t > 0 {
                h_prev = states[at - n * e_len];
            }
            let decay = (dt * av[k]).exp();
            let bk = bm[row * n + k];
            let reach = gh[k] + g * cm[row * n + k];
            gc[at] = g * h_t;
            gb[at] = reach * dt * xv;
            ga_acc[k] += reach * h_prev * decay * dt;
            d_delta += reach * (h_prev * decay * av[k] + bk * xv);
            d_x += reach * bk * dt;
            gh[k] = reach * decay;
        }
        gx[row * e_len + e] = d_x;
        gdelta[row * e_len + e] = d_delta;
    }
    #[unroll]
    for k in 0..n {
        ga[(b * e_len + e) * n + k] = ga_acc[k];
    }
}

/// Shapes of one scan: x, Δ (and the output gradient) `[B, T, E]`, A `[E, N]`, B and C
/// `[B, T, N]`. The kernels read every tensor by linear index, so a shape that disagrees
/// would read the wrong elements: it stops here instead.
fn dims(
    x: &CubeTensor,
    delta: &CubeTensor,
    a: &CubeTensor,
    bm: &CubeTensor,
    cm: &CubeTensor,
) -> [usize; 4] {
    let xs = x.meta.shape();
    let as_ = a.meta.shape();
    assert!(
        xs.num_dims() == 3 && as_.num_dims() == 2 && xs[2] == as_[0],
        "selective scan: x must be [B, T, E] and A [E, N]"
    );
    let [b, t, e, n] = [xs[0], xs[1], xs[2], as_[1]];
    assert!(
        delta.meta.shape().dims::<3>() == [b, t, e]
            && bm.meta.shape().dims::<3>() == [b, t, n]
            && cm.meta.shape().dims::<3>() == [b, t, n],
        "selective scan: Δ must be [B, T, E] and B, C [B, T, N]"
    );
    assert!(
        [x, delta, a, bm, cm].iter().all(|t| t.dtype == DType::F32),
        "the GPU selective scan runs on f32 tensors"
    );
    [b, t, e, n]
}

/// An uninitialized f32 tensor, contiguous (the kernels index it linearly).
fn empty(like: &CubeTensor, shape: Vec<usize>) -> CubeTensor {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        DType::F32,
    )
}

fn launch_grid(pairs: usize) -> (CubeCount, CubeDim) {
    let cubes = pairs.div_ceil(CUBE_THREADS as usize) as u32;
    (
        CubeCount::Static(cubes, 1, 1),
        CubeDim::new_1d(CUBE_THREADS),
    )
}

const F32: ElemType = ElemType::Float(FloatKind::F32);

/// Launches the forward kernel: y `[B, T, E]`, and the states `[B, T, N, E]` when `keep`.
fn forward(
    x: &CubeTensor,
    delta: &CubeTensor,
    a: &CubeTensor,
    bm: &CubeTensor,
    cm: &CubeTensor,
    [b, t, e, n]: [usize; 4],
    keep: bool,
) -> (CubeTensor, CubeTensor) {
    let y = empty(x, vec![b, t, e]);
    let states = empty(x, if keep { vec![b, t, n, e] } else { vec![1] });
    let (count, dim) = launch_grid(b * e);
    scan_forward_kernel::launch(
        &x.client.clone(),
        count,
        dim,
        x.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        a.clone().into_tensor_arg(),
        bm.clone().into_tensor_arg(),
        cm.clone().into_tensor_arg(),
        y.clone().into_tensor_arg(),
        states.clone().into_tensor_arg(),
        (b * e) as u32,
        t as u32,
        e as u32,
        n,
        keep,
        F32,
    );
    (y, states)
}

/// Sums `t` over `dim` and gives it `shape`.
fn sum_to(t: CubeTensor, dim: usize, shape: Vec<usize>) -> CubeTensor {
    let summed = CubeBackend::float_sum_dim(t, dim);
    CubeBackend::float_reshape(summed, Shape::from(shape))
}

impl SelectiveScanOps for CubeBackend {
    fn selective_scan(
        x: CubeTensor,
        delta: CubeTensor,
        a: CubeTensor,
        bm: CubeTensor,
        cm: CubeTensor,
    ) -> CubeTensor {
        let [b, t, e, n] = dims(&x, &delta, &a, &bm, &cm);
        let [x, delta, a, bm, cm] = [x, delta, a, bm, cm].map(into_contiguous);
        // The states are not kept: a one-element placeholder takes their place.
        let (y, _) = forward(&x, &delta, &a, &bm, &cm, [b, t, e, n], false);
        y
    }

    fn selective_scan_backward(
        x: CubeTensor,
        delta: CubeTensor,
        a: CubeTensor,
        bm: CubeTensor,
        cm: CubeTensor,
        grad: CubeTensor,
    ) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
        let [b, t, e, n] = dims(&x, &delta, &a, &bm, &cm);
        assert!(
            grad.meta.shape().dims::<3>() == [b, t, e],
            "selective scan: the output gradient must be [B, T, E]"
        );
        let [x, delta, a, bm, cm, grad] = [x, delta, a, bm, cm, grad].map(into_contiguous);
        let (_, states) = forward(&x, &delta, &a, &bm, &cm, [b, t, e, n], true);
        let gx = empty(&x, vec![b, t, e]);
        let gdelta = empty(&x, vec![b, t, e]);
        let ga = empty(&x, vec![b, e, n]);
        let gb = empty(&x, vec![b, t, n, e]);
        let gc = empty(&x, vec![b, t, n, e]);
        let (count, dim) = launch_grid(b * e);
        scan_backward_kernel::launch(
            &x.client.clone(),
            count,
            dim,
            x.into_tensor_arg(),
            delta.into_tensor_arg(),
            a.into_tensor_arg(),
            bm.into_tensor_arg(),
            cm.into_tensor_arg(),
            grad.into_tensor_arg(),
            states.into_tensor_arg(),
            gx.clone().into_tensor_arg(),
            gdelta.clone().into_tensor_arg(),
            ga.clone().into_tensor_arg(),
            gb.clone().into_tensor_arg(),
            gc.clone().into_tensor_arg(),
            (b * e) as u32,
            t as u32,
            e as u32,
            n,
            F32,
        );
        (
            gx,
            gdelta,
            sum_to(ga, 0, vec![e, n]),
            sum_to(gb, 3, vec![b, t, n]),
            sum_to(gc, 3, vec![b, t, n]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::mamba::selective_scan_reference;
    use super::super::scan::selective_scan_fused;
    use burn::prelude::*;

    type Scan = fn(Tensor<3>, Tensor<3>, Tensor<2>, Tensor<3>, Tensor<3>) -> Tensor<3>;

    /// The GPU device, or None (with a line saying so) where no adapter answers.
    fn gpu() -> Option<Device> {
        match crate::backend::select(crate::backend::BackendChoice::Wgpu) {
            Ok((device, _)) => Some(device),
            Err(why) => {
                eprintln!("no GPU scan check on this machine: {why}");
                None
            }
        }
    }

    /// x, Δ, A `[1, E, N]`, B, C as plain data: the CPU kernel's test inputs.
    fn inputs(b: usize, t: usize, e: usize, n: usize, seed: u64) -> Vec<TensorData> {
        super::super::scan::tests::inputs(b, t, e, n, seed, &Device::flex())
            .into_iter()
            .map(|t| t.to_data())
            .collect()
    }

    /// y and the gradients of Σ w ⊙ y, on `device`, as plain vectors.
    fn forward_and_grads(
        scan: Scan,
        v: &[TensorData],
        w: &TensorData,
        device: &Device,
    ) -> Vec<Vec<f32>> {
        let ad = device.clone().autodiff();
        let v: Vec<Tensor<3>> = v
            .iter()
            .map(|d| Tensor::from_data(d.clone(), &ad).require_grad())
            .collect();
        let y = scan(
            v[0].clone(),
            v[1].clone(),
            v[2].clone().squeeze_dim::<2>(0),
            v[3].clone(),
            v[4].clone(),
        );
        let g = (y.clone() * Tensor::from_data(w.clone(), &ad))
            .sum()
            .backward();
        let mut out = vec![y.to_data().try_to_vec::<f32>().unwrap()];
        for t in &v {
            out.push(
                t.grad(&g)
                    .expect("input has a gradient")
                    .to_data()
                    .try_to_vec()
                    .unwrap(),
            );
        }
        out
    }

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The GPU kernels against the reference loop on the CPU: output and all gradients.
    #[test]
    fn gpu_scan_matches_cpu_reference_loop() {
        let Some(gpu) = gpu() else { return };
        // Channel counts that leave a cube partly idle; a one-step and a long sequence.
        for (b, t, e, n, seed) in [(3, 11, 13, 5, 1), (2, 64, 128, 32, 2), (1, 1, 8, 8, 3)] {
            let v = inputs(b, t, e, n, seed);
            let w = inputs(b, t, e, n, seed + 100)[0].clone();
            let on_gpu = forward_and_grads(selective_scan_fused, &v, &w, &gpu);
            let on_cpu = forward_and_grads(selective_scan_reference, &v, &w, &Device::flex());
            for ((name, g), c) in ["y", "∂x", "∂Δ", "∂A", "∂B", "∂C"]
                .iter()
                .zip(&on_gpu)
                .zip(&on_cpu)
            {
                let diff = max_rel_diff(g, c);
                assert!(
                    diff <= 1e-4,
                    "{name}, shape {:?}: relative difference {diff}",
                    (b, t, e, n)
                );
            }
        }
    }
}
