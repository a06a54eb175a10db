//! One training step: the dataset its batch comes from (the run's own, or a mixed one),
//! the curriculum pool and the block of users, the windows drawn, the gradients, the
//! refusal of a non-finite loss or gradient, clipping and the optimizer's update. Every
//! draw comes from the seed and the step, so a resumed run repeats them.

use std::path::Path;

use burn::optim::module_optimizer::ModuleOptimizer;
use burn::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::batch::{self, Cutoffs, cutoffs};
use super::step::{Scale, SqNorm, step_gradients};
use super::stream::{self, Plan, Source};
use super::{TrainConfig, TrainOptions, columns_for, slice_user};
use crate::data::{Dataset, UserSeq};
use crate::error::{Error, Result};
use crate::model::mamba::ScanImpl;
use crate::model::scorer::{ModelConfig, Scorer};

/// The random stream of step `step` of a run seeded `seed` (a resumed run draws the same).
fn step_rng(seed: u64, step: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Which stage pool a step draws from: stages in order, each for its share of the steps.
fn stage_at(step: usize, steps: usize, shares: &[f64]) -> usize {
    let total: f64 = shares.iter().sum();
    let x = (step as f64 + 0.5) / steps as f64 * total;
    let mut acc = 0.0;
    for (i, s) in shares.iter().enumerate() {
        acc += s;
        if x < acc {
            return i;
        }
    }
    shares.len() - 1
}

/// What a training needs at every step: its options and config, the model's config, each
/// dataset it trains on (the run's first, then the mixed ones), the scan and the device.
pub(super) struct Trainer<'a> {
    pub(super) opts: &'a TrainOptions,
    pub(super) cfg: &'a TrainConfig,
    pub(super) model_cfg: ModelConfig,
    pub(super) parts: Vec<Part>,
    pub(super) scan: ScanImpl,
    pub(super) device: Device,
}

/// One dataset a training draws batches from: its split, the curriculum's pools of users
/// and their shares, and its blocks of users.
pub(super) struct Part {
    pub(super) cut: Cutoffs,
    pub(super) pools: Vec<(u8, Vec<usize>)>,
    pub(super) shares: Vec<f64>,
    pub(super) plan: Plan,
    pub(super) k: usize,
}

impl Part {
    pub(super) fn new(data: &Dataset, path: &Path, cfg: &TrainConfig) -> Result<Part> {
        let cut = cutoffs(data, cfg.valid_from, cfg.test_from);
        let pools = stream::stage_pools(&data.users, &cut, 0);
        if pools.is_empty() {
            return Err(Error::dataset(
                path,
                format!(
                    "the training split is empty: no user has a turn to train on ({})",
                    cut.describe()
                ),
            ));
        }
        Ok(Part {
            plan: Plan::new(
                data,
                &cut,
                stream::turns_in(cfg.resident_mb, data, columns_for(cfg)),
                cfg.batch_users * cfg.window,
            ),
            shares: stage_shares(data, &pools, cfg.curriculum),
            pools,
            cut,
            k: data.k,
        })
    }
}

/// What one training step did, for the log and the bar.
pub(super) struct StepDone {
    pub(super) loss: f32,
    pub(super) lr: f64,
    /// The dataset the batch came from (0: the run's own).
    pub(super) part: usize,
    /// The curriculum stage drawn, and the block of users read.
    pub(super) stage: u8,
    pub(super) block: usize,
    pub(super) turns_per_s: f64,
}

impl<'a> Trainer<'a> {
    pub(super) fn new(
        opts: &'a TrainOptions,
        cfg: &'a TrainConfig,
        model_cfg: ModelConfig,
        parts: Vec<Part>,
        device: Device,
    ) -> Trainer<'a> {
        Trainer {
            opts,
            cfg,
            parts,
            scan: opts.scan.unwrap_or(ScanImpl::for_device(&device)),
            model_cfg,
            device,
        }
    }

    /// Whether step `step` falls in the last curriculum stage of the run's own dataset
    /// (a step drawn from a mixed dataset follows the run's own curriculum too).
    pub(super) fn own_last_stage(&self, step: usize) -> bool {
        let own = &self.parts[0];
        stage_at(step, self.cfg.steps, &own.shares) + 1 == own.pools.len()
    }

    /// The dataset step `step` draws its batch from: the run's own, or with mixed
    /// datasets one of them for `mix_share` of the steps (each draw from the seed and the
    /// step, on a stream of its own).
    fn part_at(&self, step: usize) -> usize {
        let mixed = self.parts.len() - 1;
        if mixed == 0 {
            return 0;
        }
        let mut rng = step_rng(self.opts.seed, step);
        rng.set_stream(0x313C);
        if rng.random_bool(self.opts.mix_share) {
            1 + rng.random_range(0..mixed)
        } else {
            0
        }
    }

    /// Step `step`: draws its batch (every draw from the seed and the step, so a resumed run
    /// repeats them), computes the gradients, refuses a non-finite loss or gradient,
    /// clips the gradient norm and updates the model.
    pub(super) fn step<'s>(
        &self,
        source: &mut Source<'s>,
        mixed: &mut [Source<'s>],
        model: Scorer,
        optim: &mut ModuleOptimizer,
        step: usize,
    ) -> Result<(Scorer, StepDone)> {
        let (opts, cfg) = (self.opts, self.cfg);
        let mut rng = step_rng(opts.seed, step);
        let part = self.part_at(step);
        let p = &self.parts[part];
        let pool = if cfg.curriculum {
            stage_at(step, cfg.steps, &p.shares)
        } else {
            rng.random_range(0..p.pools.len())
        };
        let stage = p.pools[pool].0;
        let block = p.plan.block_at(step, opts.seed);
        let source = match part {
            0 => source,
            m => &mut mixed[m - 1],
        };
        let (data, offset) = source.block(&p.plan, block)?;
        debug_assert_eq!(data.k, p.k);
        let (windows, lens) = draw_windows(
            data,
            offset,
            (&p.plan, block, stage),
            &p.cut,
            &self.model_cfg,
            cfg,
            &mut rng,
        );
        let users: Vec<&UserSeq> = windows.iter().collect();
        let started = std::time::Instant::now();
        let (loss, mut grads) = step_gradients(
            &model,
            data,
            &users,
            &lens,
            &self.model_cfg,
            cfg,
            self.scan,
            &self.device,
        );
        let mut norm = SqNorm(&grads, 0.0);
        model.visit(&mut norm);
        let norm = norm.1.sqrt();
        if !(loss.is_finite() && norm.is_finite()) {
            // state.json exists once the first checkpoint is committed.
            let kept = if opts.run.join("state.json").is_file() {
                format!("the last checkpoint (step {step}) is kept")
            } else {
                "no checkpoint was written yet".into()
            };
            return Err(Error::Diverged(format!(
                "{}: step {}: the training loss is {loss} and the gradient norm {norm}: training stopped; {kept}",
                opts.run.display(),
                step + 1
            )));
        }
        if norm > cfg.grad_clip {
            model.visit(&mut Scale(&mut grads, (cfg.grad_clip / norm) as f32));
        }
        let lr = cfg.lr_at(step);
        let model = optim.step(lr, model, grads);
        let turns: usize = lens.iter().sum();
        let done = StepDone {
            loss,
            lr,
            part,
            stage,
            block,
            turns_per_s: turns as f64 / started.elapsed().as_secs_f64(),
        };
        Ok((model, done))
    }
}

/// Each curriculum pool's share of the steps (1 each without a curriculum, or for stage 0),
/// from the stages the dataset's manifest records.
fn stage_shares(data: &Dataset, pools: &[(u8, Vec<usize>)], curriculum: bool) -> Vec<f64> {
    pools
        .iter()
        .map(|(s, _)| match (*s, curriculum) {
            (0, _) | (_, false) => 1.0,
            (s, true) => data.manifest.stage_share(s),
        })
        .collect()
}

/// One step's batch: `batch_users` users drawn from `block`'s users of curriculum `stage`
/// (`data` holds the block, its first user at `offset`), each cut to a window of at most
/// `window` turns ending within the training split. Returns the windows and their lengths.
fn draw_windows(
    data: &Dataset,
    offset: usize,
    (plan, block, stage): (&Plan, usize, u8),
    cut: &Cutoffs,
    model_cfg: &ModelConfig,
    train_cfg: &TrainConfig,
    rng: &mut ChaCha8Rng,
) -> (Vec<UserSeq>, Vec<usize>) {
    let mut lens = Vec::with_capacity(train_cfg.batch_users);
    let mut windows = Vec::with_capacity(train_cfg.batch_users);
    for _ in 0..train_cfg.batch_users {
        let u = &data.users[plan.draw(block, stage, rng) - offset];
        let n = cut.train_end(u);
        let len = n.min(train_cfg.window);
        let start = rng.random_range(0..=n - len);
        windows.push(slice_user(
            u,
            start,
            len,
            data.k,
            data.embedding_dim,
            batch::Prefix::of(model_cfg),
        ));
        lens.push(len);
    }
    (windows, lens)
}
