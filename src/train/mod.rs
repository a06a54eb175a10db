//! `ssmkit train`: listwise softmax CE, AdamW (weight decay 0.01), global-norm gradient
//! clipping, linear warm-up + cosine LR, the curriculum stages, validation on unnormalized
//! DCG@10 for model selection, checkpoints and `--resume`.
//!
//! Split ([`batch::Cutoffs`]): the global temporal split of `eval` (test from the 90th
//! percentile of turn timestamps). Training sees turns before the 80th percentile;
//! validation scores the turns in [P80, P90) from the history before them. Data without a
//! time axis is split by a seeded random partition of users in the same shares. No test
//! label reaches training.

pub mod step;
pub mod stream;
mod trainer;
pub mod validation;

pub use crate::config::TrainConfig;
pub use crate::model::batch::{self, slice_user};
pub use crate::run::{
    RunState, checkpoint, dataset_fingerprint, load_run, model_file, read_run_state,
};
pub use step::{SHARES, step_gradients};
pub use validation::{
    Validation, baseline_validation, history_validations, reference_validations, validate,
};

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{ModuleVisitor, Param};
use burn::optim::AdamWConfig;
use burn::optim::module_optimizer::ModuleOptimizer;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::mamba::ScanImpl;
use crate::model::scorer::{Init, ModelConfig, Scorer, Variant};
use batch::{Cutoffs, cutoffs};
use stream::Source;
use trainer::{Part, Trainer};

/// Options of one `train` invocation.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub run: PathBuf,
    pub seed: u64,
    pub resume: bool,
    pub quiet: bool,
    /// Stop after this many steps of this invocation (a time-boxed job); the run stays
    /// resumable from its last checkpoint.
    pub stop_after: Option<usize>,
    /// The device to train on.
    pub backend: crate::backend::BackendChoice,
    /// The selective-scan implementation (default: the fastest for the device).
    pub scan: Option<ScanImpl>,
    /// Show the training bar under this parent's bars (`ssmkit run`) rather than alone.
    pub progress: Option<indicatif::MultiProgress>,
    /// Datasets whose training turns are mixed into the training (the TSTR protocol's
    /// synthetic + real arm), each with its own split; `data` stays the run's own: its
    /// validation turns select the model and its identity is the run's.
    pub mix: Vec<PathBuf>,
    /// The share of the steps whose batch comes from `mix` (split equally among them).
    pub mix_share: f64,
}

impl TrainOptions {
    /// Options to train on `data` into `run` with `seed`, everything else at its default.
    pub fn new(data: PathBuf, run: PathBuf, seed: u64) -> TrainOptions {
        TrainOptions {
            data,
            run,
            seed,
            resume: false,
            quiet: true,
            stop_after: None,
            backend: Default::default(),
            scan: None,
            progress: None,
            mix: Vec::new(),
            mix_share: crate::config::MIX_SHARE,
        }
    }
}

/// Trains a model on the dataset at `opts.data` into the run directory `opts.run`.
pub fn train(train_cfg: &TrainConfig, opts: &TrainOptions) -> Result<Validation> {
    train_validated(train_cfg, opts).map(|t| t.last)
}

/// What a training run ends with: the last validation, and the split and users it
/// validated on (for the baselines' numbers on the same turns).
pub struct Trained {
    pub last: Validation,
    pub cutoffs: Cutoffs,
    pub validation_users: Dataset,
}

/// [`train`], returning also the split and the users it validated on.
pub fn train_validated(train_cfg: &TrainConfig, opts: &TrainOptions) -> Result<Trained> {
    train_cfg.validate()?;
    let reader = crate::data::DatasetReader::open(&opts.data)?;
    let mixed: Vec<crate::data::DatasetReader> = opts
        .mix
        .iter()
        .map(|p| crate::data::DatasetReader::open(p))
        .collect::<Result<_>>()?;
    let on_disk = |reader| on_disk(reader, train_cfg);
    train_from(
        on_disk(&reader),
        mixed.iter().map(on_disk).collect(),
        train_cfg,
        opts,
    )
}

/// A dataset read from disk a block of users at a time, with the columns the model reads.
fn on_disk<'a>(reader: &'a crate::data::DatasetReader, train_cfg: &TrainConfig) -> Source<'a> {
    Source::Disk {
        reader,
        columns: columns_for(train_cfg),
        loaded: None,
    }
}

/// What training reads beside every model's inputs: the path hops for the dual variant.
fn columns_for(train_cfg: &TrainConfig) -> crate::data::Columns {
    crate::data::Columns {
        clean: false,
        hops: train_cfg.model == Variant::Dual,
    }
}

/// [`train`] from a dataset already opened (`opts.data` names it in the run's records).
pub fn train_read(
    reader: &crate::data::DatasetReader,
    train_cfg: &TrainConfig,
    opts: &TrainOptions,
) -> Result<Validation> {
    train_read_mixed(reader, &[], train_cfg, opts)
}

/// [`train_read`] with the training turns of `mixed` (already opened, named in order by
/// `opts.mix`) mixed in.
pub fn train_read_mixed(
    reader: &crate::data::DatasetReader,
    mixed: &[&crate::data::DatasetReader],
    train_cfg: &TrainConfig,
    opts: &TrainOptions,
) -> Result<Validation> {
    let sources = mixed.iter().map(|r| on_disk(r, train_cfg)).collect();
    train_from(on_disk(reader, train_cfg), sources, train_cfg, opts).map(|t| t.last)
}

/// The model a training config builds on a dataset.
pub fn model_config(data: &Dataset, train_cfg: &TrainConfig) -> ModelConfig {
    model_config_mixed(data, &[], train_cfg)
}

/// [`model_config_mixed`], refusing a mixed dataset that is the run's own, one whose
/// content width the model reads and `data` does not share, and a share of steps out of
/// (0, 1).
fn checked_model_config(
    data: &Dataset,
    mixed: &[&Dataset],
    train_cfg: &TrainConfig,
    opts: &TrainOptions,
) -> Result<ModelConfig> {
    let cfg = model_config_mixed(data, mixed, train_cfg);
    for (m, path) in mixed.iter().zip(&opts.mix) {
        if dataset_fingerprint(m) == dataset_fingerprint(data) {
            return Err(Error::Usage(format!(
                "--mix {}: the run's own dataset ({}); mix in another one",
                path.display(),
                opts.data.display()
            )));
        }
        if cfg.reads_content() && m.embedding_dim != data.embedding_dim {
            return Err(Error::Mismatch(format!(
                "{} has {}-dimensional content embeddings and {} has {}: the model reads them, so they must meet ({})",
                path.display(),
                m.embedding_dim,
                opts.data.display(),
                data.embedding_dim,
                crate::config::content_width_remedy(data.embedding_dim)
            )));
        }
    }
    let share_of_steps = opts.mix_share > 0.0 && opts.mix_share < 1.0;
    if !opts.mix.is_empty() && !share_of_steps {
        return Err(Error::Usage(format!(
            "--mix-share {}: expected a share of the steps in (0, 1)",
            opts.mix_share
        )));
    }
    Ok(cfg)
}

/// The model a training config builds on `data` with `mixed` mixed in: sized for the
/// memory slots of the widest ([`ModelConfig::sized`] caps them).
pub fn model_config_mixed(
    data: &Dataset,
    mixed: &[&Dataset],
    train_cfg: &TrainConfig,
) -> ModelConfig {
    let memory_slots = mixed
        .iter()
        .map(|m| m.manifest.memory_slots())
        .fold(data.manifest.memory_slots(), u32::max);
    train_cfg.model_config(data.embedding_dim, memory_slots as usize)
}

/// What the run records of the datasets mixed into its training.
pub fn mixed_records(mixed: &[&Dataset], mix_share: f64) -> Vec<crate::run::Mixed> {
    let share = mix_share / mixed.len().max(1) as f64;
    mixed
        .iter()
        .map(|m| crate::run::Mixed {
            dataset_sha: dataset_fingerprint(m),
            share,
        })
        .collect()
}

/// [`train`] on a dataset already in memory (`opts.data` names it in the run's records).
pub fn train_on(
    data: &Dataset,
    train_cfg: &TrainConfig,
    opts: &TrainOptions,
) -> Result<Validation> {
    train_from(Source::Memory(data), Vec::new(), train_cfg, opts).map(|t| t.last)
}

/// [`train_on`] with the training turns of `mixed` (already in memory, named in order by
/// `opts.mix`) mixed in.
pub fn train_on_mixed(
    data: &Dataset,
    mixed: &[Dataset],
    train_cfg: &TrainConfig,
    opts: &TrainOptions,
) -> Result<Validation> {
    if mixed.len() != opts.mix.len() {
        return Err(Error::Usage(format!(
            "{} mixed datasets in memory but {} named in the options",
            mixed.len(),
            opts.mix.len()
        )));
    }
    let sources = mixed.iter().map(Source::Memory).collect();
    train_from(Source::Memory(data), sources, train_cfg, opts).map(|t| t.last)
}

/// Trains on `source` (the run's dataset) and, with `mixed`, on the training turns of
/// each of `opts.mix` too.
fn train_from<'s>(
    mut source: Source<'s>,
    mut mixed: Vec<Source<'s>>,
    train_cfg: &TrainConfig,
    opts: &TrainOptions,
) -> Result<Trained> {
    train_cfg.validate()?;
    if let Source::Disk { .. } = source {
        check_memory(train_cfg, 1 + mixed.len())?;
    }
    let data = source.outline();
    let (plain_device, device_name) = crate::backend::select(opts.backend)?;
    let device = plain_device.clone().autodiff();
    let outlines: Vec<&Dataset> = mixed.iter().map(|s| s.outline()).collect();
    let model_cfg = checked_model_config(data, &outlines, train_cfg, opts)?;
    let cut = cutoffs(data, train_cfg.valid_from, train_cfg.test_from);
    let mut state = RunState::new(
        model_cfg.clone(),
        train_cfg.clone(),
        opts.seed,
        cut,
        dataset_fingerprint(data),
    );
    state.mixed = mixed_records(&outlines, opts.mix_share);
    let mut model = model_cfg.init(opts.seed, &device);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(train_cfg.weight_decay as f32)
        .with_epsilon(1e-8)
        .init();
    let _lock = crate::run::claim(&opts.run, opts.resume)?;
    // Without state.json the directory holds no checkpoint (a run killed before its first
    // one, or nothing; `claim` refused a --resume that would lose one): training starts
    // from scratch.
    if opts.resume && opts.run.join("state.json").is_file() {
        (model, optim, state) = resume(opts, &state, model, optim)?;
    } else {
        begin(opts, &state, model.num_params(), &device_name)?;
    }
    let mut parts = vec![Part::new(data, &opts.data, train_cfg)?];
    for (m, path) in outlines.iter().zip(&opts.mix) {
        parts.push(Part::new(m, path, train_cfg)?);
    }
    let trainer = Trainer::new(opts, train_cfg, model_cfg, parts, device);
    let split_seed = data.manifest.seed;
    let validation_data = source.validation_users(
        &cut,
        stream::turns_in(
            train_cfg.validation_mb,
            source.outline(),
            columns_for(train_cfg),
        ),
        split_seed,
    )?;
    // The first block is read before training starts, so bad values in it (in the whole
    // dataset, when it fits in one block) are refused before any step; a later block's
    // are refused when it is read, and the last checkpoint stays.
    let plan = &trainer.parts[0].plan;
    source.block(plan, plan.block_at(state.step, opts.seed))?;
    let bar = progress_bar(opts, train_cfg.steps, &device_name);
    bar.set_position(state.step as u64);
    let log_path = opts.run.join("metrics.csv");
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&opts.run, e))?;
    let mut last = Validation::none();
    let first_step = state.step;
    while state.step < train_cfg.steps && !state.stopped_early {
        if opts
            .stop_after
            .is_some_and(|n| state.step - first_step >= n)
        {
            break;
        }
        let done;
        (model, done) = trainer.step(&mut source, &mut mixed, model, &mut optim, state.step)?;
        state.step += 1;
        bar.set_position(state.step as u64);
        bar.set_message(format!(
            "stage {} block {}/{} loss {:.4} {:.0} turns/s",
            done.stage,
            done.block + 1,
            trainer.parts[done.part].plan.blocks.len(),
            done.loss,
            done.turns_per_s
        ));
        let mut val = (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
        let evaluated =
            state.step.is_multiple_of(train_cfg.eval_every) || state.step == train_cfg.steps;
        if evaluated {
            last = validate(
                &model.valid(),
                &validation_data,
                &cut,
                &trainer.model_cfg,
                train_cfg,
                trainer.scan,
                &plain_device,
            );
            val = (last.loss, last.dcg10, last.hr10, last.ndcg10);
        }
        writeln!(
            log,
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.1}",
            state.step,
            done.stage,
            done.loss,
            val.0,
            val.1,
            val.2,
            val.3,
            done.lr,
            done.turns_per_s
        )
        .and_then(|_| log.flush())
        .map_err(|e| Error::io(&log_path, e))?;
        if evaluated {
            // Stop early only once the last curriculum stage is training.
            let last_stage = !train_cfg.curriculum || trainer.own_last_stage(state.step - 1);
            save_checkpoint(&opts.run, &model, &optim, &mut state, &last, last_stage)?;
        }
    }
    bar.finish_and_clear();
    Ok(Trained {
        last,
        cutoffs: cut,
        validation_users: validation_data,
    })
}

/// Refuses a training whose blocks of users (`resident_mb` for each of its `datasets`,
/// plus `validation_mb`) would not fit in the memory available.
fn check_memory(train_cfg: &TrainConfig, datasets: usize) -> Result<()> {
    let needed = (datasets * train_cfg.resident_mb + train_cfg.validation_mb) as u64 * 1_000_000;
    if let Some(available) = crate::data::available_memory()
        && needed > available
    {
        return Err(Error::Memory(format!(
            "[train] resident_mb (once per dataset) + validation_mb is {:.1} GB but {:.1} GB of memory is available: lower them",
            needed as f64 / 1e9,
            available as f64 / 1e9
        )));
    }
    Ok(())
}

/// Loads the last checkpoint of the run in `opts.run`, which must have been made with the
/// model, training config, seed and dataset of `fresh` (the state a new run would start
/// from). Steps after the checkpoint will be redone: the log goes back to its rows up to
/// the checkpoint, and debris of an interrupted commit goes.
fn resume(
    opts: &TrainOptions,
    fresh: &RunState,
    model: Scorer,
    optim: ModuleOptimizer,
) -> Result<(Scorer, ModuleOptimizer, RunState)> {
    let saved = read_run_state(&opts.run)?;
    if saved.model != fresh.model || saved.train != fresh.train || saved.seed != fresh.seed {
        return Err(Error::Mismatch(format!(
            "{}: the checkpoint was made with another model, training config or seed; resume with the same ones or train into a new run directory",
            opts.run.display()
        )));
    }
    if saved.dataset_sha != fresh.dataset_sha {
        return Err(Error::Mismatch(format!(
            "{}: the checkpoint was trained on another dataset",
            opts.run.display()
        )));
    }
    if saved.mixed != fresh.mixed {
        return Err(Error::Mismatch(format!(
            "{}: the checkpoint mixed in other datasets, or in another share (--mix, --mix-share)",
            opts.run.display()
        )));
    }
    let dir = checkpoint::verified(&opts.run, &saved)?;
    let unreadable = |what: &str, file: &Path, e: String| {
        Error::Damaged(format!("{}: cannot load the {what}: {e}", file.display()))
    };
    let file = dir.join("checkpoint.bpk");
    let model = model
        .try_load_file(&file)
        .map_err(|e| unreadable("checkpoint", &file, e.to_string()))?;
    let file = dir.join("optimizer.bpk");
    let optim = optim
        .load(&file)
        .map_err(|e| unreadable("optimizer state", &file, e.to_string()))?;
    let state = saved;
    let log_path = opts.run.join("metrics.csv");
    if state.checkpoint.is_empty() {
        let text = fs::read_to_string(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, l)| {
                *i == 0
                    || l.split(',')
                        .next()
                        .and_then(|s| s.parse::<usize>().ok())
                        .is_some_and(|s| s <= state.step)
            })
            .map(|(_, l)| l)
            .collect();
        crate::atomic::write(&log_path, (kept.join("\n") + "\n").as_bytes())?;
    } else {
        let saved_log = dir.join("metrics.csv");
        let text = fs::read(&saved_log).map_err(|e| Error::io(&saved_log, e))?;
        crate::atomic::write(&log_path, &text)?;
        checkpoint::clean(&opts.run, Some(&state.checkpoint))?;
    }
    Ok((model, optim, state))
}

/// Starts a new run in `opts.run` (which holds no run yet): the resolved config and the
/// header of the training log.
fn begin(opts: &TrainOptions, state: &RunState, params: usize, device_name: &str) -> Result<()> {
    if opts.run.join("state.json").exists() {
        return Err(Error::Occupied(format!(
            "{} already holds a run: pass --resume to continue it, or choose another run directory",
            opts.run.display()
        )));
    }
    checkpoint::clean(&opts.run, None)?;
    let resolved = serde_json::json!({"model": state.model, "train": state.train, "seed": opts.seed,
        "data": opts.data.display().to_string(), "cutoffs": state.cutoffs, "params": params,
        "backend": device_name});
    crate::atomic::write(
        &opts.run.join("config.json"),
        serde_json::to_string_pretty(&resolved)
            .expect("json")
            .as_bytes(),
    )?;
    crate::atomic::write(
        &opts.run.join("metrics.csv"),
        format!("{}\n", crate::run::LOG_HEADER).as_bytes(),
    )
}

/// The training's bar: hidden when quiet, under `opts.progress` when given.
fn progress_bar(opts: &TrainOptions, steps: usize, device_name: &str) -> ProgressBar {
    let bar = match (&opts.progress, opts.quiet) {
        (_, true) => ProgressBar::hidden(),
        (Some(parent), false) => parent.add(ProgressBar::new(steps as u64)),
        (None, false) => {
            eprintln!("backend: {device_name}");
            ProgressBar::new(steps as u64)
        }
    };
    bar.set_style(
        ProgressStyle::with_template(
            "train [{elapsed_precise}] {wide_bar} {pos}/{len} eta {eta} {msg}",
        )
        .expect("template"),
    );
    bar
}

/// Commits a checkpoint of step `state.step` as one unit (see `checkpoint`): the best
/// model so far (this one when `last` beats every earlier validation, else a link to the
/// previous checkpoint's), this model, the optimizer state and the log. Decides whether
/// training stops early: only once the last curriculum stage trains (`last_stage`).
fn save_checkpoint(
    run: &Path,
    model: &Scorer,
    optim: &ModuleOptimizer,
    state: &mut RunState,
    last: &Validation,
    last_stage: bool,
) -> Result<()> {
    let train_cfg = &state.train;
    let staged = checkpoint::stage(run, state.step)?;
    if last.dcg10 > state.best_dcg10 {
        state.best_dcg10 = last.dcg10;
        state.best_step = state.step;
        save_model(model, &staged.join("model.bpk"))?;
    } else {
        let previous = checkpoint::verified(run, state)?;
        checkpoint::link(&previous.join("model.bpk"), &staged.join("model.bpk"))?;
    }
    let patience = train_cfg.patience * train_cfg.eval_every;
    state.stopped_early = train_cfg.patience > 0
        && last_stage
        && state.step < train_cfg.steps
        && state.step.saturating_sub(state.best_step) >= patience;
    save_model(model, &staged.join("checkpoint.bpk"))?;
    let file = staged.join("optimizer.bpk");
    optim.save(&file).map_err(|e| {
        Error::Save(format!(
            "{}: cannot save the optimizer state: {e}",
            file.display()
        ))
    })?;
    let (log_path, saved_log) = (run.join("metrics.csv"), staged.join("metrics.csv"));
    fs::copy(&log_path, &saved_log).map_err(|e| Error::io(&saved_log, e))?;
    checkpoint::commit(run, &staged, state)
}

/// Every parameter value of a model, in visiting order (for comparisons and checksums).
pub fn flat_params(model: &Scorer) -> Vec<f32> {
    struct Flat(Vec<f32>);
    impl ModuleVisitor for Flat {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0
                .extend(p.val().try_into_vec_as::<f32>().expect("f32 parameter"));
        }
    }
    let mut f = Flat(Vec::new());
    model.visit(&mut f);
    f.0
}

fn save_model(model: &Scorer, path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp.bpk");
    model
        .clone()
        .save_file(&tmp)
        .map_err(|e| Error::Save(format!("{}: cannot save the model: {e}", path.display())))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
