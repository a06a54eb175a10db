//! The runtime's layers in plain Rust: dense, layer norm, the Mamba and S4D steps, the
//! path encoder and the cross-attention scorer's parts, with their kernels.

use ssmkit_format::multiversion;
use ssmkit_format::simd::{dot, exp, softplus};

/// A dense layer, weights stored `[in, out]` (the file's `[out, in]` transposed at load):
/// y = b + Σ_i x_i · W[i, :], whose inner loop runs over contiguous outputs.
#[derive(Clone, Debug)]
pub(super) struct Dense {
    pub(super) wt: Vec<f32>,
    pub(super) b: Option<Vec<f32>>,
    pub(super) d_in: usize,
    pub(super) d_out: usize,
}

impl Dense {
    pub(super) fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.d_out];
        self.apply_into(x, &mut out);
        out
    }

    /// Output `j`'s weights over the inputs and its bias (0 without one).
    pub(super) fn column(&self, j: usize) -> (Vec<f32>, f32) {
        let w = (0..self.d_in)
            .map(|i| self.wt[i * self.d_out + j])
            .collect();
        (w, self.b.as_ref().map_or(0.0, |b| b[j]))
    }

    /// out += W x (no bias).
    pub(super) fn accumulate(&self, x: &[f32], out: &mut [f32]) {
        gemv(&self.wt, x, out);
    }

    pub(super) fn apply_into(&self, x: &[f32], out: &mut [f32]) {
        debug_assert_eq!(x.len(), self.d_in);
        match &self.b {
            Some(b) => out.copy_from_slice(b),
            None => out.fill(0.0),
        }
        gemv(&self.wt, x, out);
    }
}

/// Outputs [`gemv`] sums in registers at a time: 8 AVX2 vectors.
const GEMV_BLOCK: usize = 64;

// out += Wᵀ x with W `[in, out]`, skipping zero inputs. Each block of GEMV_BLOCK outputs
// is summed in a local array the compiler keeps in registers over all the inputs, rather
// than loaded and stored once per input; every output adds its terms in input order as
// before, so the result is the same to the bit.
multiversion!(gemv(wt: &[f32], x: &[f32], out: &mut [f32]) {
    let d_out = out.len();
    let mut from = 0;
    while from + GEMV_BLOCK <= d_out {
        let mut acc = [0f32; GEMV_BLOCK];
        acc.copy_from_slice(&out[from..from + GEMV_BLOCK]);
        for (i, &xi) in x.iter().enumerate() {
            if xi == 0.0 {
                continue;
            }
            let at = i * d_out + from;
            let w: &[f32; GEMV_BLOCK] = wt[at..at + GEMV_BLOCK].try_into().expect("a block");
            for (a, &w) in acc.iter_mut().zip(w) {
                *a += xi * w;
            }
        }
        out[from..from + GEMV_BLOCK].copy_from_slice(&acc);
        from += GEMV_BLOCK;
    }
    if from < d_out {
        for (i, &xi) in x.iter().enumerate() {
            if xi == 0.0 {
                continue;
            }
            let row = &wt[i * d_out + from..(i + 1) * d_out];
            for (o, &w) in out[from..].iter_mut().zip(row) {
                *o += xi * w;
            }
        }
    }
});

// The selective SSM of one turn: h ← exp(Δ A) h + Δ B u per channel, y = C · h + D u.
multiversion!(ssm_step(h: &mut [f32], a: &[f32], delta: &[f32], bm: &[f32], cm: &[f32], u: &[f32], d: &[f32], y: &mut [f32]) {
    let n = bm.len();
    for c in 0..u.len() {
        let hc = &mut h[c * n..(c + 1) * n];
        let ac = &a[c * n..(c + 1) * n];
        let (dc, du) = (delta[c], delta[c] * u[c]);
        for ((hv, &av), &bv) in hc.iter_mut().zip(ac).zip(bm) {
            *hv = exp(dc * av) * *hv + du * bv;
        }
        y[c] = dot(hc, cm) + u[c] * d[c];
    }
});

pub(super) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub(super) fn gelu(x: f32) -> f32 {
    (x as f64 * 0.5 * (1.0 + statrs::function::erf::erf(x as f64 / std::f64::consts::SQRT_2)))
        as f32
}

pub(super) fn rms_norm(x: &[f32], gamma: &[f32]) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = (ms + 1e-5).sqrt();
    x.iter().zip(gamma).map(|(v, g)| v / r * g).collect()
}

#[derive(Clone, Debug)]
pub(super) struct LayerNorm {
    pub(super) gamma: Vec<f32>,
    pub(super) beta: Option<Vec<f32>>,
}

impl LayerNorm {
    pub(super) fn apply(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() as f32;
        let mean = x.iter().sum::<f32>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
        let r = (var + 1e-5).sqrt();
        x.iter()
            .enumerate()
            .map(|(i, v)| (v - mean) / r * self.gamma[i] + self.beta.as_ref().map_or(0.0, |b| b[i]))
            .collect()
    }
}

#[derive(Clone, Debug)]
pub(super) struct Mamba {
    pub(super) norm: Vec<f32>,
    pub(super) in_proj: Dense,
    /// `[E, width]`; `width` = `d_conv`
    pub(super) conv_w: Vec<f32>,
    pub(super) conv_b: Vec<f32>,
    pub(super) x_proj: Dense,
    pub(super) dt_proj: Dense,
    /// A = −exp(A_log), `[E, N]`.
    pub(super) a: Vec<f32>,
    pub(super) d: Vec<f32>,
    pub(super) out_proj: Dense,
    pub(super) e: usize,
    pub(super) n: usize,
    pub(super) r: usize,
    pub(super) width: usize,
    /// Off: x_proj reads a constant input of ones (Δ, B, C do not depend on the input).
    pub(super) selective: bool,
}

impl Mamba {
    pub(super) fn state_len(&self) -> usize {
        self.e * (self.width - 1) + self.e * self.n
    }

    /// One turn: `x` `[H]` and this block's state slice → output `[H]`.
    pub(super) fn step(&self, x: &[f32], st: &mut [f32]) -> Vec<f32> {
        let (e, n, width) = (self.e, self.n, self.width);
        let xz = self.in_proj.apply(&rms_norm(x, &self.norm));
        let (conv, ssm) = st.split_at_mut(e * (width - 1));
        let mut u = vec![0f32; e];
        for c in 0..e {
            let w = &self.conv_w[c * width..(c + 1) * width];
            let hist = &mut conv[c * (width - 1)..(c + 1) * (width - 1)];
            let mut acc = self.conv_b[c];
            for j in 0..width - 1 {
                acc += w[j] * hist[j];
            }
            acc += w[width - 1] * xz[c];
            hist.rotate_left(1);
            hist[width - 2] = xz[c];
            u[c] = silu(acc);
        }
        let x_dbl = if self.selective {
            self.x_proj.apply(&u)
        } else {
            self.x_proj.apply(&vec![1.0; e])
        };
        let (dt, rest) = x_dbl.split_at(self.r);
        let (bm, cm) = rest.split_at(n);
        let delta: Vec<f32> = self.dt_proj.apply(dt).into_iter().map(softplus).collect();
        let mut y = vec![0f32; e];
        ssm_step(ssm, &self.a, &delta, bm, cm, &u, &self.d, &mut y);
        for c in 0..e {
            y[c] *= silu(xz[e + c]);
        }
        let out = self.out_proj.apply(&y);
        x.iter().zip(out).map(|(a, b)| a + b).collect()
    }
}

#[derive(Clone, Debug)]
pub(super) struct S4d {
    pub(super) norm: LayerNorm,
    /// Discretized Ā and C̃, `[H, M]` (re, im).
    pub(super) a_re: Vec<f32>,
    pub(super) a_im: Vec<f32>,
    pub(super) c_re: Vec<f32>,
    pub(super) c_im: Vec<f32>,
    pub(super) d: Vec<f32>,
    pub(super) out: Dense,
    pub(super) h: usize,
    pub(super) m: usize,
}

impl S4d {
    pub(super) fn state_len(&self) -> usize {
        2 * self.h * self.m
    }

    pub(super) fn step(&self, x: &[f32], st: &mut [f32]) -> Vec<f32> {
        let (h, m) = (self.h, self.m);
        let u = self.norm.apply(x);
        let (re, im) = st.split_at_mut(h * m);
        let mut y = vec![0f32; h];
        for c in 0..h {
            let mut acc = 0f32;
            for j in 0..m {
                let i = c * m + j;
                let r2 = self.a_re[i] * re[i] - self.a_im[i] * im[i] + u[c];
                let i2 = self.a_re[i] * im[i] + self.a_im[i] * re[i];
                re[i] = r2;
                im[i] = i2;
                acc += self.c_re[i] * r2 - self.c_im[i] * i2;
            }
            y[c] = gelu(2.0 * acc + self.d[c] * u[c]);
        }
        let o = self.out.apply(&y);
        x.iter().zip(o).map(|(a, b)| a + b).collect()
    }
}

#[derive(Clone, Debug)]
pub(super) struct PathEncoder {
    pub(super) hop_in: Dense,
    pub(super) s4d: S4d,
    pub(super) out: Dense,
    pub(super) gate: f32,
}

#[derive(Clone, Debug)]
pub(super) struct Xattn {
    pub(super) q_proj: Dense,
    pub(super) k_proj: Dense,
    pub(super) q_norm: LayerNorm,
    pub(super) k_norm: LayerNorm,
    pub(super) gate: Dense,
    pub(super) value: Dense,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blocked_gemv_adds_each_output_in_input_order() {
        // Widths below, at and past a block, inputs with zeros among them.
        for (d_in, d_out) in [(7, 1), (33, 63), (40, 64), (19, 65), (50, 130)] {
            let wt: Vec<f32> = (0..d_in * d_out)
                .map(|k| ((k * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let x: Vec<f32> = (0..d_in)
                .map(|i| {
                    if i % 3 == 1 {
                        0.0
                    } else {
                        (i as f32 - 9.5) / 3.0
                    }
                })
                .collect();
            let start: Vec<f32> = (0..d_out).map(|j| j as f32 / 7.0).collect();
            let mut got = start.clone();
            gemv(&wt, &x, &mut got);
            for (j, &g) in got.iter().enumerate() {
                let mut want = start[j];
                for (i, &xi) in x.iter().enumerate() {
                    if xi != 0.0 {
                        want += xi * wt[i * d_out + j];
                    }
                }
                assert_eq!(g.to_bits(), want.to_bits(), "{d_in} × {d_out}, output {j}");
            }
        }
    }
}
