//! The models: the Mamba and S4D blocks, the scorer that combines a temporal backbone
//! with candidate encodings, and the baselines.

pub mod baselines;
pub mod batch;
pub mod keyed;
pub mod keyed_fused;
pub mod loss;
pub mod mamba;
pub mod rules;
pub mod s4d;
pub mod scan;
#[cfg(feature = "wgpu")]
mod scan_cube;
pub mod scorer;

use burn::prelude::*;

/// A float tensor of `shape` from row-major values.
pub(crate) fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// A tensor of `shape` with values drawn from N(0, std²), seeded.
pub(crate) fn normal_tensor<const D: usize>(
    seed: u64,
    shape: [usize; D],
    std: f32,
    device: &Device,
) -> Tensor<D> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            std * z as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// A tensor of `shape` with values drawn uniformly from `[lo, hi)`.
pub(crate) fn uniform_tensor<const D: usize>(
    rng: &mut rand_chacha::ChaCha8Rng,
    shape: [usize; D],
    lo: f32,
    hi: f32,
    device: &Device,
) -> Tensor<D> {
    use rand::RngExt;
    let v: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(lo..hi))
        .collect();
    tensor(v, shape, device)
}

/// Parameter counts of every variant at the tiny, small and medium sizes with the default
/// training settings (16-dimensional content embeddings, 4,096 memory slots):
/// `train --dry-run`.
pub fn param_counts() -> Vec<(scorer::Variant, [usize; 3])> {
    use burn::module::Module;
    use scorer::{Init, Size, Variant};
    Variant::ALL
        .iter()
        .map(|&v| {
            let n = |s: Size| {
                let t = crate::config::TrainConfig {
                    model: v,
                    size: s,
                    ..Default::default()
                };
                t.model_config(16, 4096)
                    .init(0, &burn::prelude::Device::flex())
                    .num_params()
            };
            (v, [n(Size::Tiny), n(Size::Small), n(Size::Medium)])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use burn::module::{ModuleMapper, Param, ParamId};
    use burn::prelude::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::mamba::{MambaConfig, ScanImpl};
    use super::s4d::S4dConfig;

    fn random(shape: [usize; 3], seed: u64, device: &Device) -> Tensor<3> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// One user's turns `[1, T, K]` for a loss: labels, valid slots, the turn mask and
    /// the temperature.
    struct LossCase {
        kind: super::loss::Loss,
        shape: [usize; 3],
        labels: Vec<f32>,
        valid: Vec<f32>,
        turns: Vec<f32>,
        tau: f64,
    }

    impl LossCase {
        fn on(&self, scores: Tensor<3>) -> Tensor<1> {
            let device = scores.device();
            let t3 = |v: &[f32]| {
                Tensor::<3>::from_data(TensorData::new(v.to_vec(), self.shape), &device)
            };
            let [_, t, _] = self.shape;
            let turns =
                Tensor::<2>::from_data(TensorData::new(self.turns.clone(), [1, t]), &device);
            super::loss::loss(
                self.kind,
                scores,
                t3(&self.labels),
                t3(&self.valid),
                turns,
                self.tau,
            )
        }

        fn value(&self, scores: Vec<f32>) -> f64 {
            let s = Tensor::<3>::from_data(TensorData::new(scores, self.shape), &Device::flex());
            self.on(s).into_scalar::<f32>() as f64
        }

        /// The gradient by autodiff.
        fn gradient(&self, scores: &[f32]) -> Vec<f32> {
            let ad = Device::flex().autodiff();
            let s = Tensor::<3>::from_data(TensorData::new(scores.to_vec(), self.shape), &ad)
                .require_grad();
            let grads = self.on(s.clone()).backward();
            s.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap()
        }
    }

    #[test]
    fn hit_loss_is_minus_log_the_relevant_mass_by_hand_and_its_gradient_by_differences() {
        use super::loss::Loss;
        // One user, two turns of 3 candidates; the second turn has no relevant label and
        // is skipped; the third candidate of the first is padding.
        let scores = vec![1.0f32, 0.5, 3.0, 0.2, 0.1, 0.0];
        let case = LossCase {
            kind: Loss::Hit,
            shape: [1, 2, 3],
            labels: vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
            valid: vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0],
            turns: vec![1.0, 1.0],
            tau: 1.0,
        };
        // Softmax over all three scores (padding included, as the model's scores give it
        // −1e9 and the listwise loss does the same); the relevant mass is c0 + c1.
        let z: f64 = [1.0f64, 0.5, 3.0].iter().map(|x| x.exp()).sum();
        let want = -((1f64.exp() + 0.5f64.exp()) / z).ln();
        let got = case.value(scores.clone());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Gradient by autodiff against central differences.
        let g = case.gradient(&scores);
        assert_gradient_by_differences(&scores, &g, 0..6, |s| case.value(s));
    }

    /// Checks the gradient `g` of `value` at `scores`, at the positions `at`, against
    /// central differences.
    fn assert_gradient_by_differences(
        scores: &[f32],
        g: &[f32],
        at: impl Iterator<Item = usize>,
        value: impl Fn(Vec<f32>) -> f64,
    ) {
        let h = 1e-2f32;
        for i in at {
            let (mut up, mut down) = (scores.to_vec(), scores.to_vec());
            up[i] += h;
            down[i] -= h;
            let fd = (value(up) - value(down)) / (2.0 * h as f64);
            assert!(
                (g[i] as f64 - fd).abs() < 1e-3,
                "score {i}: autodiff {} vs {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn slate_loss_is_the_chance_of_a_top_5_hit_by_hand_and_its_gradient_by_differences() {
        use super::loss::{Loss, SLATE};
        // One user, two turns of 8 candidates (the last padding), scores apart by more than
        // the differencing step so no place changes; the first turn's relevant candidates
        // place 2nd and 7th (past the top 5), the second turn's 1st and 2nd.
        let k = 8;
        let scores = vec![
            2.0f32, 1.4, 0.3, -0.5, 0.9, -1.2, 0.1, -1e9, //
            0.7, 1.5, -0.2, 0.4, -1.0, 0.0, 1.1, -1e9,
        ];
        let labels = vec![
            0.0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, //
            0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0,
        ];
        let valid: Vec<f32> = (0..2 * k).map(|i| (i % k != k - 1) as u8 as f32).collect();
        let tau = 0.7;
        let case = LossCase {
            kind: Loss::Slate,
            shape: [1, 2, k],
            labels: labels.clone(),
            valid,
            turns: vec![1.0, 1.0],
            tau,
        };
        // By hand: sort each turn's real candidates, and at place d take the softmax share
        // of the relevant ones among those from place d down.
        let mut want = 0.0;
        for turn in 0..2 {
            let mut c: Vec<(f64, bool)> = (0..k - 1)
                .map(|i| {
                    let j = turn * k + i;
                    (scores[j] as f64 / tau, labels[j] > 0.0)
                })
                .collect();
            c.sort_by(|a, b| b.0.total_cmp(&a.0));
            let miss: f64 = (0..SLATE)
                .map(|d| {
                    let all: f64 = c[d..].iter().map(|x| x.0.exp()).sum();
                    let rel: f64 = c[d..].iter().filter(|x| x.1).map(|x| x.0.exp()).sum();
                    1.0 - rel / all
                })
                .product();
            want += -(1.0 - miss).ln() / 2.0;
        }
        let got = case.value(scores.clone());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Gradient by autodiff against central differences.
        let g = case.gradient(&scores);
        let real = (0..2 * k).filter(|i| i % k != k - 1);
        assert_gradient_by_differences(&scores, &g, real, |s| case.value(s));
    }

    #[test]
    fn binary_loss_is_the_mean_log_loss_of_each_candidate_by_hand_and_its_gradient_by_differences()
    {
        use super::loss::Loss;
        // One user, three turns of 3 candidates: the first with a padding slot (scored
        // −1e9, as the model scores it), the second without a relevant label (still
        // counted: its candidates were not relevant), the third masked out of the turns.
        let scores = vec![1.0f32, -0.5, -1e9, 0.3, 2.0, -1.0, 0.7, 0.1, -0.2];
        let labels = vec![1.0f32, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0];
        let valid = vec![1.0f32, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let tau = 0.5;
        let case = LossCase {
            kind: Loss::Binary,
            shape: [1, 3, 3],
            labels: labels.clone(),
            valid: valid.clone(),
            turns: vec![1.0, 1.0, 0.0],
            tau,
        };
        // By hand: −log σ(z) for a relevant candidate, −log(1 − σ(z)) for the others,
        // z = s / τ, averaged over each turn's real candidates, then over the two turns.
        let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
        let turn = |range: std::ops::Range<usize>| -> f64 {
            let real: Vec<usize> = range.filter(|&i| valid[i] > 0.0).collect();
            let sum: f64 = real
                .iter()
                .map(|&i| {
                    let p = sigmoid(scores[i] as f64 / tau);
                    if labels[i] > 0.0 {
                        -p.ln()
                    } else {
                        -(1.0 - p).ln()
                    }
                })
                .sum();
            sum / real.len() as f64
        };
        let want = (turn(0..3) + turn(3..6)) / 2.0;
        let got = case.value(scores.clone());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Gradient by autodiff against central differences (padding gets none).
        let g = case.gradient(&scores);
        assert_eq!(g[2], 0.0);
        assert!(g[6..].iter().all(|&x| x == 0.0), "{g:?}");
        assert_gradient_by_differences(&scores, &g, [0, 1, 3, 4, 5].into_iter(), |s| case.value(s));
    }

    fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Feeds `x` `[B, T, H]` one step at a time through `step`, stacking the outputs.
    fn run_steps<S>(
        x: Tensor<3>,
        mut state: S,
        step: impl Fn(Tensor<2>, S) -> (Tensor<2>, S),
    ) -> Tensor<3> {
        let t = x.dims()[1];
        let mut ys = Vec::with_capacity(t);
        for i in 0..t {
            let (y, s) = step(
                x.clone().slice(s![.., i..i + 1, ..]).squeeze_dim::<2>(1),
                state,
            );
            state = s;
            ys.push(y);
        }
        Tensor::stack(ys, 1)
    }

    #[test]
    fn mamba_step_matches_full_sequence_forward() {
        let device = Device::flex();
        for selective in [true, false] {
            let cfg = MambaConfig {
                d_model: 8,
                d_state: 4,
                expand: 2,
                d_conv: 4,
                selective,
            };
            let block = cfg.init(3, &device);
            let x = random([2, 9, 8], 5, &device);
            let full = block.forward(x.clone(), ScanImpl::Reference);
            let fused = block.forward(x.clone(), ScanImpl::Fused);
            let stepped = run_steps(x, block.zero_state(2, &device), |x, s| block.step(x, s));
            assert!(
                max_abs_diff(fused, stepped.clone()) <= 1e-5,
                "fused vs step"
            );
            let diff = max_abs_diff(full, stepped);
            assert!(diff <= 1e-5, "step vs full (selective {selective}): {diff}");
        }
    }

    #[test]
    fn without_selection_delta_b_and_c_do_not_depend_on_the_input() {
        let device = Device::flex();
        let block = |selective| {
            MambaConfig {
                d_model: 8,
                d_state: 4,
                expand: 1,
                d_conv: 4,
                selective,
            }
            .init(3, &device)
        };
        let a = random([1, 6, 8], 1, &device);
        let b = random([1, 6, 8], 2, &device);
        // The block's Δ, B, C of two different inputs: equal without selection only.
        let dbc = |m: &super::mamba::MambaBlock, x: Tensor<3>| {
            let (d, bm, cm) = m.delta_b_c(x);
            Tensor::cat(vec![d, bm, cm], 2)
        };
        let fixed = block(false);
        assert!(max_abs_diff(dbc(&fixed, a.clone()), dbc(&fixed, b.clone())) == 0.0);
        let selective = block(true);
        assert!(max_abs_diff(dbc(&selective, a), dbc(&selective, b)) > 1e-3);
    }

    #[test]
    fn s4d_kernel_convolution_matches_recurrence() {
        let device = Device::flex();
        let block = S4dConfig {
            d_model: 6,
            d_state: 8,
        }
        .init(1, &device);
        let u = random([3, 17, 6], 2, &device);
        let diff = max_abs_diff(block.ssm_conv(u.clone()), block.ssm_recurrent(u.clone()));
        assert!(diff <= 1e-4, "convolution vs recurrence: {diff}");
        // And the residual block's step agrees with its forward.
        let full = block.forward(u.clone());
        let stepped = run_steps(u, block.zero_state(3, &device), |x, s| block.step(x, s));
        let diff = max_abs_diff(full, stepped);
        assert!(diff <= 1e-4, "S4D step vs forward: {diff}");
    }

    /// Adds `delta` to element `idx` of the parameter `target`.
    struct Perturb {
        target: ParamId,
        idx: usize,
        delta: f32,
    }

    impl ModuleMapper for Perturb {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if p.id != self.target {
                return p;
            }
            let (idx, delta) = (self.idx, self.delta);
            p.map(|t| {
                let (dev, shape) = (t.device(), t.shape());
                let mut v = t.try_into_vec_as::<f32>().unwrap();
                v[idx] += delta;
                Tensor::from_data(TensorData::new(v, shape), &dev)
            })
        }
    }

    #[test]
    fn autodiff_gradients_match_finite_differences() {
        let device = Device::flex().autodiff();
        let cfg = MambaConfig {
            d_model: 4,
            d_state: 3,
            expand: 1,
            d_conv: 3,
            selective: true,
        };
        let block = cfg.init(11, &device);
        let x = random([1, 5, 4], 12, &device);
        let loss = |b: &super::mamba::MambaBlock| -> Tensor<1> {
            b.forward(x.clone(), ScanImpl::Reference).square().sum()
        };
        let grads = loss(&block).backward();
        let checks: Vec<(ParamId, Tensor<2>, &str)> = vec![
            (
                block.a_log.id,
                block.a_log.val().grad(&grads).unwrap(),
                "A_log",
            ),
            (
                block.in_proj.weight.id,
                block.in_proj.weight.val().grad(&grads).unwrap(),
                "in_proj",
            ),
            (
                block.dt_proj.weight.id,
                block.dt_proj.weight.val().grad(&grads).unwrap(),
                "dt_proj",
            ),
            (
                block.x_proj.weight.id,
                block.x_proj.weight.val().grad(&grads).unwrap(),
                "x_proj",
            ),
        ];
        let plain = block.valid();
        let f = |b: &super::mamba::MambaBlock| -> f64 {
            b.forward(x.clone().inner(), ScanImpl::Reference)
                .square()
                .sum()
                .into_scalar::<f32>() as f64
        };
        let eps = 1e-2f32;
        for (id, grad, name) in checks {
            let g = grad.try_into_vec_as::<f32>().unwrap();
            for idx in [0, g.len() / 2, g.len() - 1] {
                let up = f(&plain.clone().map(&mut Perturb {
                    target: id,
                    idx,
                    delta: eps,
                }));
                let down = f(&plain.clone().map(&mut Perturb {
                    target: id,
                    idx,
                    delta: -eps,
                }));
                let numeric = (up - down) / (2.0 * eps as f64);
                let analytic = g[idx] as f64;
                let tol = 2e-2 * numeric.abs().max(analytic.abs()).max(1e-2);
                assert!(
                    (numeric - analytic).abs() <= tol,
                    "{name}[{idx}]: autodiff {analytic}, finite difference {numeric}"
                );
            }
        }
    }
}
