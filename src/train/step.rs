//! One optimizer step's gradients: a batch split into shares that run forward and
//! backward on threads of their own, and the gradient-norm clipping.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use super::TrainConfig;
use super::batch::make_batch;
use crate::data::{Dataset, UserSeq};
use crate::model::mamba::ScanImpl;
use crate::model::scorer::{ModelConfig, Scorer};

/// Users of a batch go to this many shares, each run forward and backward on a thread of
/// its own (fixed, so that results do not depend on the machine's number of cores).
pub const SHARES: usize = 2;

/// A one-thread pool for each share. The backend's kernels split large operations over the
/// current rayon pool; run inside a share's own pool they stay on that share's thread,
/// instead of both shares handing every operation to the one global pool and waiting on it.
fn share_pools() -> &'static [rayon::ThreadPool] {
    static POOLS: std::sync::OnceLock<Vec<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOLS.get_or_init(|| {
        (0..SHARES)
            .map(|i| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("share-{i}"))
                    .build()
                    .expect("a one-thread pool starts")
            })
            .collect()
    })
}

/// The loss of a batch and its gradients. The users are split into [`SHARES`] shares;
/// each share's loss is its sum of per-turn losses over the whole batch's number of
/// counted turns, so the shares' losses and gradients add up to those of the batch's mean
/// loss.
#[allow(clippy::too_many_arguments)]
pub fn step_gradients(
    model: &Scorer,
    data: &Dataset,
    users: &[&UserSeq],
    lens: &[usize],
    model_cfg: &ModelConfig,
    train_cfg: &TrainConfig,
    scan: ScanImpl,
    device: &Device,
) -> (f32, GradientsParams) {
    let k = data.k;
    // Turns the loss counts: within the window, with a relevant label.
    let counted = |u: &UserSeq, len: usize| -> usize {
        (0..len.min(u.turns))
            .filter(|&t| (0..k).any(|c| u.labels[t * k + c] * u.valid[t * k + c] > 0.0))
            .count()
    };
    let total: usize = users.iter().zip(lens).map(|(u, &l)| counted(u, l)).sum();
    let per = users.len().div_ceil(SHARES);
    let shares: Vec<(f32, GradientsParams)> = std::thread::scope(|scope| {
        let handles: Vec<_> = users
            .chunks(per)
            .zip(lens.chunks(per))
            .zip(share_pools())
            .map(|((us, ls), pool)| {
                // Fresh leaves for the parameters: the shares' autodiff graphs stay
                // apart (one graph is one lock) and run in parallel.
                let model = model.clone().map(&mut Fresh);
                let n: usize = us.iter().zip(ls).map(|(u, &l)| counted(u, l)).sum();
                scope.spawn(move || {
                    pool.install(|| {
                        let b = make_batch(data, us, ls, model_cfg, device);
                        let mean =
                            model.training_loss(&b, scan, train_cfg.loss, train_cfg.temperature);
                        let share = mean * (n as f64 / total.max(1) as f64);
                        let value: f32 = share.clone().into_scalar();
                        (value, GradientsParams::from_grads(share.backward(), &model))
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a training thread panicked"))
            .collect()
    });
    let mut shares = shares.into_iter();
    let (mut value, mut grads) = shares.next().expect("a batch has a user");
    for (v, mut g) in shares {
        value += v;
        model.visit(&mut Add(&mut grads, &mut g));
    }
    (value, grads)
}

/// Makes each parameter a fresh leaf of the autodiff graph: the same values, with no
/// node behind them. (Burn's `Module::fork` moves a parameter with a tracked `to_device`,
/// even onto its own device, and detaches the copy: every share of every step then left
/// a node in the graph under the shared parameter that no backward pass reaches. Burn's
/// sweep after each backward walks all of them, so each step grew slower than the last:
/// 17K turns/s at step 250 of the PoC MLP, 480 at step 2,500.)
struct Fresh;
impl ModuleMapper for Fresh {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        p.map(|t| {
            let grad = t.is_require_grad();
            let t = Tensor::from_inner(t.inner());
            if grad { t.require_grad() } else { t }
        })
    }
}

/// Adds the second gradients into the first.
struct Add<'a>(&'a mut GradientsParams, &'a mut GradientsParams);
impl ModuleVisitor for Add<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        match (self.0.remove::<D>(p.id), self.1.remove::<D>(p.id)) {
            (Some(a), Some(b)) => self.0.register::<D>(p.id, a + b),
            (Some(g), None) | (None, Some(g)) => self.0.register::<D>(p.id, g),
            (None, None) => {}
        }
    }
}

/// Squared global norm of the gradients.
pub(super) struct SqNorm<'a>(pub(super) &'a GradientsParams, pub(super) f64);
impl ModuleVisitor for SqNorm<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.0.get::<D>(p.id) {
            self.1 += g.square().sum().into_scalar::<f32>() as f64;
        }
    }
}
pub(super) struct Scale<'a>(pub(super) &'a mut GradientsParams, pub(super) f32);
impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.0.remove::<D>(p.id) {
            self.0.register::<D>(p.id, g.mul_scalar(self.1));
        }
    }
}
