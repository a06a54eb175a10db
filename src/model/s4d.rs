//! S4D: a diagonal, input-independent SSM (Gu et al. 2022, "On the Parameterization and
//! Initialization of Diagonal State Space Models").
//!
//! Per channel h (H of them) and complex mode n (N/2 of them, the conjugate halves are
//! implicit): A_n = −exp(log_A_real_n) + i·A_imag_n, S4D-Lin init A_n = −1/2 + iπn;
//! ZOH: Ā = exp(ΔA), B̄ = (exp(ΔA) − 1)/A · B, with B = 1 folded into C;
//! kernel K_l = 2·Re(Σ_n C_n B̄_n Ā_n^l), y = K ∗ u + D·u. Used as the temporal mixer (the
//! "no selectivity" ablation) and as the traversal-path encoder.

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

use super::tensor;
use burn::tensor::activation::gelu;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct S4dConfig {
    /// Channels H.
    pub d_model: usize,
    /// State size N (N/2 complex modes).
    pub d_state: usize,
}

impl S4dConfig {
    pub fn modes(&self) -> usize {
        ssmkit_format::model::s4d_modes(self.d_state)
    }

    pub fn init(&self, seed: u64, device: &Device) -> S4dBlock {
        let (h, m) = (self.d_model, self.modes());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // log Δ ~ U[log 0.001, log 0.1]
        let log_dt: Vec<f32> = (0..h)
            .map(|_| rng.random_range(0.001f32.ln()..0.1f32.ln()))
            .collect();
        let log_a_real = vec![0.5f32.ln(); h * m];
        let a_imag: Vec<f32> = (0..h)
            .flat_map(|_| (0..m).map(|n| std::f32::consts::PI * n as f32))
            .collect();
        // C ~ N(0, 1/2) per real and imaginary part (complex N(0, 1)).
        let mut normal = |count: usize| -> Vec<f32> {
            (0..count)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (z * 0.5f64.sqrt()) as f32
                })
                .collect()
        };
        let c_re = normal(h * m);
        let c_im = normal(h * m);
        let bound = 1.0 / (h as f32).sqrt();
        let out: Vec<f32> = (0..h * h)
            .map(|_| rng.random_range(-bound..=bound))
            .collect();
        S4dBlock {
            norm: LayerNormConfig::new(h).init(device),
            log_dt: Param::from_tensor(tensor(log_dt, [h], device)),
            log_a_real: Param::from_tensor(tensor(log_a_real, [h, m], device)),
            a_imag: Param::from_tensor(tensor(a_imag, [h, m], device)),
            c_re: Param::from_tensor(tensor(c_re, [h, m], device)),
            c_im: Param::from_tensor(tensor(c_im, [h, m], device)),
            d: Param::from_tensor(Tensor::ones([h], device)),
            out_weight: Param::from_tensor(tensor(out, [h, h], device)),
            out_bias: Param::from_tensor(Tensor::zeros([h], device)),
        }
    }
}

/// A residual S4D block: `x + W·GELU(S4D(LayerNorm(x))) + b`.
#[derive(Module, Debug)]
pub struct S4dBlock {
    pub norm: LayerNorm,
    pub log_dt: Param<Tensor<1>>,
    pub log_a_real: Param<Tensor<2>>,
    pub a_imag: Param<Tensor<2>>,
    pub c_re: Param<Tensor<2>>,
    pub c_im: Param<Tensor<2>>,
    pub d: Param<Tensor<1>>,
    pub out_weight: Param<Tensor<2>>,
    pub out_bias: Param<Tensor<1>>,
}

/// Discretized parameters: Ā (re, im) and C̃ = C·B̄ (re, im), each `[H, M]`.
pub struct Discrete {
    pub a_re: Tensor<2>,
    pub a_im: Tensor<2>,
    pub c_re: Tensor<2>,
    pub c_im: Tensor<2>,
}

/// Complex product (a + ib)(c + id).
fn cmul(a: Tensor<2>, b: Tensor<2>, c: Tensor<2>, d: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    (a.clone() * c.clone() - b.clone() * d.clone(), a * d + b * c)
}

/// S4D's recurrent state: complex `[B, H, M]` (re, im).
#[derive(Clone, Debug)]
pub struct S4dState {
    pub re: Tensor<3>,
    pub im: Tensor<3>,
}

impl S4dBlock {
    pub fn channels(&self) -> usize {
        self.d.dims()[0]
    }

    /// ZOH discretization.
    pub fn discretize(&self) -> Discrete {
        let dt = self.log_dt.val().exp().unsqueeze_dim::<2>(1); // [H, 1]
        let ar = self.log_a_real.val().exp().neg(); // Re A < 0
        let ai = self.a_imag.val();
        // ΔA, then Ā = exp(ΔA) = e^{Δ·Re A}(cos(Δ·Im A) + i sin(Δ·Im A))
        let (xr, xi) = (ar.clone() * dt.clone(), ai.clone() * dt);
        let mag = xr.exp();
        let (a_re, a_im) = (mag.clone() * xi.clone().cos(), mag * xi.sin());
        // B̄ = (Ā − 1) / A (B = 1): (p + iq)/(r + is) = ((pr + qs) + i(qr − ps)) / (r² + s²)
        let (p, q) = (a_re.clone() - 1.0, a_im.clone());
        let den = ar.clone().square() + ai.clone().square();
        let b_re = (p.clone() * ar.clone() + q.clone() * ai.clone()) / den.clone();
        let b_im = (q * ar - p * ai) / den;
        let (c_re, c_im) = cmul(self.c_re.val(), self.c_im.val(), b_re, b_im);
        Discrete {
            a_re,
            a_im,
            c_re,
            c_im,
        }
    }

    /// Convolution kernel K `[H, L]`: K_l = 2·Re(Σ_m C̃_m Ā_m^l).
    pub fn kernel(&self, len: usize) -> Tensor<2> {
        let device = self.d.device();
        let dt = self
            .log_dt
            .val()
            .exp()
            .unsqueeze_dim::<2>(1)
            .unsqueeze_dim::<3>(2); // [H, 1, 1]
        let ar = self.log_a_real.val().exp().neg().unsqueeze_dim::<3>(2); // [H, M, 1]
        let ai = self.a_imag.val().unsqueeze_dim::<3>(2);
        let l = Tensor::<1, Int>::arange(0..len as i64, &device)
            .float()
            .unsqueeze::<3>(); // [1, 1, L]
        // Ā^l = exp(l Δ A)
        let mag = (ar * dt.clone() * l.clone()).exp();
        let phase = ai * dt * l;
        let (pr, pi) = (mag.clone() * phase.clone().cos(), mag * phase.sin()); // [H, M, L]
        let d = self.discretize();
        let kernel = d.c_re.unsqueeze_dim::<3>(2) * pr - d.c_im.unsqueeze_dim::<3>(2) * pi;
        kernel.sum_dim(1).squeeze_dim::<2>(1) * 2.0
    }

    /// The SSM alone over `[B, L, H]` by causal convolution with the kernel.
    pub fn ssm_conv(&self, u: Tensor<3>) -> Tensor<3> {
        let [b, l, h] = u.dims();
        let kernel = self.kernel(l); // [H, L]
        // y_t = Σ_{j ≤ t} K_{t−j} u_j: a Toeplitz matmul per channel, [H, L, L] lower-triangular.
        let device = u.device();
        let idx: Vec<i64> = (0..l)
            .flat_map(|t| (0..l).map(move |j| if j <= t { (t - j) as i64 } else { l as i64 }))
            .collect();
        let kernel_pad = Tensor::cat(vec![kernel, Tensor::zeros([h, 1], &device)], 1); // [H, L + 1]; index L = 0
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [l * l]), &device);
        let toeplitz = kernel_pad.select(1, idx).reshape([h, l, l]); // [H, t, j]
        let u_h = u.clone().permute([2, 1, 0]); // [H, L(j), B]
        let y = toeplitz.matmul(u_h); // [H, L(t), B]
        let y = y.permute([2, 1, 0]); // [B, L, H]
        debug_assert_eq!(y.dims(), [b, l, h]);
        y + u * self.d.val().unsqueeze::<3>()
    }

    /// The SSM alone by the recurrence h_t = Ā h_{t−1} + u_t, y_t = 2 Re(C̃ · h_t) + D u_t.
    pub fn ssm_recurrent(&self, u: Tensor<3>) -> Tensor<3> {
        let [b, l, _] = u.dims();
        let mut state = self.zero_state(b, &u.device());
        let d = self.discretize();
        let mut ys = Vec::with_capacity(l);
        for t in 0..l {
            let ut = u.clone().slice(s![.., t..t + 1, ..]).squeeze_dim::<2>(1); // [B, H]
            let (y, s2) = self.ssm_step(&d, ut, state);
            state = s2;
            ys.push(y);
        }
        Tensor::stack(ys, 1)
    }

    pub fn zero_state(&self, batch: usize, device: &Device) -> S4dState {
        let m = self.c_re.dims()[1];
        let h = self.channels();
        S4dState {
            re: Tensor::zeros([batch, h, m], device),
            im: Tensor::zeros([batch, h, m], device),
        }
    }

    fn ssm_step(&self, d: &Discrete, u: Tensor<2>, s: S4dState) -> (Tensor<2>, S4dState) {
        let ar = d.a_re.clone().unsqueeze::<3>();
        let ai = d.a_im.clone().unsqueeze::<3>();
        let re =
            ar.clone() * s.re.clone() - ai.clone() * s.im.clone() + u.clone().unsqueeze_dim::<3>(2);
        let im = ar * s.im + ai * s.re;
        let cr = d.c_re.clone().unsqueeze::<3>();
        let ci = d.c_im.clone().unsqueeze::<3>();
        let y = (cr * re.clone() - ci * im.clone())
            .sum_dim(2)
            .squeeze_dim::<2>(2)
            * 2.0;
        (y + u * self.d.val().unsqueeze::<2>(), S4dState { re, im })
    }

    fn mix(&self, y: Tensor<3>) -> Tensor<3> {
        gelu(y).matmul(self.out_weight.val().unsqueeze::<3>())
            + self.out_bias.val().unsqueeze::<3>()
    }

    /// Full-sequence forward of the residual block, `[B, L, H] → [B, L, H]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let y = self.ssm_conv(self.norm.forward(x.clone()));
        x + self.mix(y)
    }

    /// One step of the residual block.
    pub fn step(&self, x: Tensor<2>, state: S4dState) -> (Tensor<2>, S4dState) {
        let d = self.discretize();
        let (y, state) = self.ssm_step(&d, self.norm.forward(x.clone()), state);
        let y = self.mix(y.unsqueeze_dim::<3>(1)).squeeze_dim::<2>(1);
        (x + y, state)
    }
}
