//! Mamba-1 selective SSM block (Gu & Dao 2023, Algorithm 2), over the turn sequence.
//!
//! Parameter names follow the reference implementation (`in_proj`, `conv1d`, `x_proj`,
//! `dt_proj`, `A_log`, `D`, `out_proj`), so exported weights are recognisable. Shapes:
//! B batch, T turns, H d_model, E d_inner = expand·H, N d_state, R dt_rank.

use burn::module::Param;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig1d, RmsNorm, RmsNormConfig};
use burn::prelude::*;

use super::tensor;
use burn::tensor::activation::{silu, softplus};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sizes of one Mamba block.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MambaConfig {
    pub d_model: usize,
    pub d_state: usize,
    pub expand: usize,
    pub d_conv: usize,
    /// Selection on (Mamba): Δ, B and C are read from each input. Off (the seed's "no
    /// selectivity" ablation): the same block with x_proj applied to a constant input of
    /// ones, so Δ, B and C are learned parameters that do not depend on the input.
    pub selective: bool,
}

impl MambaConfig {
    pub fn d_inner(&self) -> usize {
        ssmkit_format::model::d_inner(self.expand, self.d_model)
    }

    pub fn dt_rank(&self) -> usize {
        ssmkit_format::model::dt_rank(self.d_model)
    }

    /// Builds a block with the reference initializations, every random draw from `seed`.
    pub fn init(&self, seed: u64, device: &Device) -> MambaBlock {
        let (h, e, n, r, width) = (
            self.d_model,
            self.d_inner(),
            self.d_state,
            self.dt_rank(),
            self.d_conv,
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let uniform = |rng: &mut ChaCha8Rng, shape: &[usize], bound: f32| -> Vec<f32> {
            (0..shape.iter().product::<usize>())
                .map(|_| rng.random_range(-bound..=bound))
                .collect()
        };
        let linear = |rng: &mut ChaCha8Rng, d_in: usize, d_out: usize, bias: bool| -> Linear {
            // PyTorch's nn.Linear default: U(−1/√d_in, 1/√d_in).
            let bound = 1.0 / (d_in as f32).sqrt();
            let mut l = LinearConfig::new(d_in, d_out)
                .with_bias(bias)
                .with_initializer(Initializer::Zeros)
                .init(device);
            l.weight = Param::from_tensor(tensor(
                uniform(rng, &[d_in, d_out], bound),
                [d_in, d_out],
                device,
            ));
            if bias {
                l.bias = Some(Param::from_tensor(tensor(
                    uniform(rng, &[d_out], bound),
                    [d_out],
                    device,
                )));
            }
            l
        };
        let in_proj = linear(&mut rng, h, 2 * e, false);
        let mut conv1d = Conv1dConfig::new(e, e, width)
            .with_groups(e)
            .with_padding(PaddingConfig1d::Explicit(width - 1, 0))
            .with_initializer(Initializer::Zeros)
            .init(device);
        let bound = 1.0 / (width as f32).sqrt();
        conv1d.weight = Param::from_tensor(tensor(
            uniform(&mut rng, &[e, 1, width], bound),
            [e, 1, width],
            device,
        ));
        conv1d.bias = Some(Param::from_tensor(tensor(
            uniform(&mut rng, &[e], bound),
            [e],
            device,
        )));
        let x_proj = linear(&mut rng, e, r + 2 * n, false);
        // dt_proj: weight U(±R^−1/2); bias = softplus⁻¹(Δ), Δ log-uniform in [0.001, 0.1].
        let mut dt_proj = linear(&mut rng, r, e, true);
        let bound = 1.0 / (r as f32).sqrt();
        dt_proj.weight =
            Param::from_tensor(tensor(uniform(&mut rng, &[r, e], bound), [r, e], device));
        let dt_bias: Vec<f32> = (0..e)
            .map(|_| {
                let u: f64 = rng.random_range(0.0..1.0);
                let dt = (u * (0.1f64.ln() - 0.001f64.ln()) + 0.001f64.ln())
                    .exp()
                    .max(1e-4);
                // inverse softplus: dt + log(−expm1(−dt))
                (dt + (-(-dt).exp_m1()).ln()) as f32
            })
            .collect();
        dt_proj.bias = Some(Param::from_tensor(tensor(dt_bias, [e], device)));
        // A_log = log(1..N) per channel (S4D-Real), D = 1.
        let a_log: Vec<f32> = (0..e)
            .flat_map(|_| (1..=n).map(|i| (i as f32).ln()))
            .collect();
        let out_proj = linear(&mut rng, e, h, false);
        MambaBlock {
            norm: RmsNormConfig::new(h).with_epsilon(1e-5).init(device),
            in_proj,
            conv1d,
            x_proj,
            dt_proj,
            a_log: Param::from_tensor(tensor(a_log, [e, n], device)),
            d: Param::from_tensor(Tensor::ones([e], device)),
            out_proj,
            d_state: n,
            dt_rank: r,
            d_conv: width,
            selective: self.selective,
        }
    }
}

/// One residual Mamba block: `x + mixer(RMSNorm(x))`.
#[derive(Module, Debug)]
pub struct MambaBlock {
    pub norm: RmsNorm,
    pub in_proj: Linear,
    pub conv1d: Conv1d,
    pub x_proj: Linear,
    pub dt_proj: Linear,
    pub a_log: Param<Tensor<2>>,
    pub d: Param<Tensor<1>>,
    pub out_proj: Linear,
    d_state: usize,
    dt_rank: usize,
    d_conv: usize,
    selective: bool,
}

/// Recurrent state of one block: the last `d_conv − 1` conv inputs and the SSM state.
#[derive(Clone, Debug)]
pub struct MambaState {
    /// `[B, E, d_conv − 1]`
    pub conv: Tensor<3>,
    /// `[B, E, N]`
    pub ssm: Tensor<3>,
}

/// Which selective-scan implementation the full-sequence forward uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ScanImpl {
    /// Plain per-timestep loop of Burn ops: obviously correct, differentiable by autodiff.
    #[default]
    Reference,
    /// One kernel for the whole sequence with a hand-written backward: the scan module's
    /// CPU kernel, or its CubeCL kernels on the GPU backend of a `wgpu` build.
    #[value(name = "fast", alias = "fused")]
    Fused,
}

impl ScanImpl {
    /// The fastest implementation that runs on `device`.
    pub fn for_device(device: &Device) -> Self {
        if has_fused_scan(device) {
            ScanImpl::Fused
        } else {
            ScanImpl::Reference
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScanImpl::Reference => "reference",
            ScanImpl::Fused => "fused",
        }
    }
}

/// Whether the fused scan has a kernel for `device`'s backend, plain or under autodiff:
/// Burn's CPU backend (Flex) always, its GPU backend in a build with the `wgpu` feature.
pub fn has_fused_scan(device: &Device) -> bool {
    use burn::backend::DispatchDevice;
    #[allow(unreachable_patterns)]
    match device.as_dispatch().clone().inner() {
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "wgpu")]
        DispatchDevice::Cube(_) => true,
        _ => false,
    }
}

/// Runs the selective scan with the chosen implementation.
pub fn selective_scan(
    scan: ScanImpl,
    x: Tensor<3>,
    delta: Tensor<3>,
    a: Tensor<2>,
    bm: Tensor<3>,
    cm: Tensor<3>,
) -> Tensor<3> {
    match scan {
        ScanImpl::Reference => selective_scan_reference(x, delta, a, bm, cm),
        ScanImpl::Fused => super::scan::selective_scan_fused(x, delta, a, bm, cm),
    }
}

impl MambaBlock {
    pub fn d_inner(&self) -> usize {
        self.a_log.dims()[0]
    }

    /// A = −exp(A_log), `[E, N]`.
    fn a(&self) -> Tensor<2> {
        self.a_log.val().exp().neg()
    }

    /// Δ, B, C from the conv output u `[B, T, E]`.
    pub fn delta_b_c(&self, u: Tensor<3>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let [b, t, _] = u.dims();
        let (r, n) = (self.dt_rank, self.d_state);
        // Without selection, Δ, B and C come from a constant input: learned, input-free.
        let u = if self.selective { u } else { u.ones_like() };
        let x_dbl = self.x_proj.forward(u); // [B, T, R + 2N]
        let dt = x_dbl.clone().slice(s![.., .., 0..r]);
        let bm = x_dbl.clone().slice(s![.., .., r..r + n]); // [B, T, N]
        let cm = x_dbl.slice(s![.., .., r + n..r + 2 * n]); // [B, T, N]
        // Δ = softplus(dt_proj(dt)), [B, T, E]
        let delta = softplus(self.dt_proj.forward(dt), 1.0);
        debug_assert_eq!(delta.dims()[..2], [b, t]);
        (delta, bm, cm)
    }

    /// Full-sequence forward: `[B, T, H] → [B, T, H]`.
    pub fn forward(&self, x: Tensor<3>, scan: ScanImpl) -> Tensor<3> {
        let [_, t, _] = x.dims();
        let e = self.d_inner();
        let xz = self.in_proj.forward(self.norm.forward(x.clone())); // [B, T, 2E]
        let xs = xz.clone().slice(s![.., .., 0..e]);
        let z = xz.slice(s![.., .., e..2 * e]);
        // Causal depthwise conv over time: [B, E, T] layout.
        let u = self
            .conv1d
            .forward(xs.swap_dims(1, 2))
            .slice(s![.., .., 0..t])
            .swap_dims(1, 2);
        let u = silu(u); // [B, T, E]
        let (delta, bm, cm) = self.delta_b_c(u.clone());
        let y = selective_scan(scan, u.clone(), delta, self.a(), bm, cm);
        // y + D·u, gated by SiLU(z)
        let y = (y + u * self.d.val().unsqueeze::<3>()) * silu(z);
        x + self.out_proj.forward(y)
    }

    pub fn zero_state(&self, batch: usize, device: &Device) -> MambaState {
        let e = self.d_inner();
        MambaState {
            conv: Tensor::zeros([batch, e, self.d_conv - 1], device),
            ssm: Tensor::zeros([batch, e, self.d_state], device),
        }
    }

    /// One turn: `[B, H]` and the state before it → `[B, H]` and the state after it.
    pub fn step(&self, x: Tensor<2>, state: MambaState) -> (Tensor<2>, MambaState) {
        let e = self.d_inner();
        let width = self.d_conv;
        let xz = self.in_proj.forward(self.norm.forward(x.clone())); // [B, 2E]
        let xs = xz.clone().slice(s![.., 0..e]);
        let z = xz.slice(s![.., e..2 * e]);
        // Conv over the window [last width−1 inputs, this input]: Σ_j w[:, 0, j] · window[:, :, j] + b
        let window = Tensor::cat(vec![state.conv, xs.unsqueeze_dim::<3>(2)], 2); // [B, E, width]
        let w = self
            .conv1d
            .weight
            .val()
            .squeeze_dim::<2>(1)
            .unsqueeze::<3>(); // [1, E, width]
        let mut u = (window.clone() * w).sum_dim(2).squeeze_dim::<2>(2); // [B, E]
        if let Some(bias) = &self.conv1d.bias {
            u = u + bias.val().unsqueeze::<2>();
        }
        let u = silu(u);
        let conv = window.slice(s![.., .., 1..width]);
        let (delta, bm, cm) = self.delta_b_c(u.clone().unsqueeze_dim::<3>(1));
        let delta = delta.squeeze_dim::<2>(1); // [B, E]
        let (bm, cm) = (bm.squeeze_dim::<2>(1), cm.squeeze_dim::<2>(1)); // [B, N]
        let (ssm, y) = scan_step(state.ssm, u.clone(), delta, self.a(), bm, cm);
        let y = (y + u * self.d.val().unsqueeze::<2>()) * silu(z);
        (x + self.out_proj.forward(y), MambaState { conv, ssm })
    }
}

/// One step of the discretized recurrence (ZOH for A, Euler for B, as the reference):
/// h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t;  y_t = C_t · h_t.
/// Shapes: h `[B, E, N]`, x and Δ `[B, E]`, A `[E, N]`, B_t and C_t `[B, N]`.
pub fn scan_step(
    h: Tensor<3>,
    x: Tensor<2>,
    delta: Tensor<2>,
    a: Tensor<2>,
    bm: Tensor<2>,
    cm: Tensor<2>,
) -> (Tensor<3>, Tensor<2>) {
    let dt = delta.unsqueeze_dim::<3>(2); // [B, E, 1]
    let da = (dt.clone() * a.unsqueeze::<3>()).exp(); // [B, E, N]
    let dbx = dt * bm.unsqueeze_dim::<3>(1) * x.unsqueeze_dim::<3>(2); // [B, E, N]
    let h = da * h + dbx;
    let y = (h.clone() * cm.unsqueeze_dim::<3>(1))
        .sum_dim(2)
        .squeeze_dim::<2>(2); // [B, E]
    (h, y)
}

/// The selective scan as a plain loop over time (mamba-minimal's `selective_scan`).
/// x, Δ `[B, T, E]`; A `[E, N]`; B, C `[B, T, N]` → y `[B, T, E]` (without the D skip).
pub fn selective_scan_reference(
    x: Tensor<3>,
    delta: Tensor<3>,
    a: Tensor<2>,
    bm: Tensor<3>,
    cm: Tensor<3>,
) -> Tensor<3> {
    let [b, t, e] = x.dims();
    let n = a.dims()[1];
    let mut h = Tensor::<3>::zeros([b, e, n], &x.device());
    let mut ys = Vec::with_capacity(t);
    // Split each input along time once (one op each) rather than slicing per step.
    let steps = |v: Tensor<3>| v.split(1, 1).into_iter().map(|s| s.squeeze_dim::<2>(1));
    for (((xt, dt), bt), ct) in steps(x).zip(steps(delta)).zip(steps(bm)).zip(steps(cm)) {
        let (h2, y) = scan_step(h, xt, dt, a.clone(), bt, ct);
        h = h2;
        ys.push(y);
    }
    debug_assert_eq!(ys.len(), t);
    Tensor::stack(ys, 1)
}
