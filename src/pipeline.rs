//! `ssmkit run CONFIG`: gen → train (every seed, every baseline) → eval → export, with one
//! progress display. Resumable: a finished stage is not redone — an existing dataset made
//! from the same config is reused, a finished run is kept and an interrupted one resumes
//! from its checkpoint, and the report and exports are reused only when the digests they
//! record of their inputs (the dataset's files, each run's `state.json`, the options)
//! match what they would be made from now, and their own digests hold.
//!
//! Layout, under `--root` (default: the working directory): `data/<name>`,
//! `runs/<name>/<model>-s<seed>`, `reports/<name>`, `runs/<name>/export/<model>-<quant>.safetensors`.
//!
//! Past one machine: the training jobs (each seed of each model) are independent.
//! `shard: Some((i, n))` trains only jobs `i, i + n, i + 2n, …` (0-based) and stops there;
//! once every shard's run directories are gathered under one `runs/<name>/`, a plain run
//! finds them finished and evaluates them together (`no_train` makes it refuse, listing
//! them, when any is missing instead of training it).

use std::path::PathBuf;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::{Config, MIX_SHARE, OWN_TEST_FROM, OWN_VALID_FROM, content_width_remedy};
use crate::datagen::{GenOptions, generate};
use crate::error::{Error, Result};
use crate::eval::Unit;
use crate::eval::findings::EvalReport;
use crate::eval::inputs::Inputs;
use crate::eval::options::EvalOptions;
use crate::eval::phase::evaluate_read;
use crate::eval::stats::CompareOptions;
use crate::eval::verdict::Verdict;
use crate::export::{ExportOptions, export_read};
use crate::run::read_run_state;
use crate::train::{TrainConfig, TrainOptions};

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config: PathBuf,
    pub root: PathBuf,
    pub quiet: bool,
    /// Train only the jobs of shard `i` of `n` (0-based), then stop: no eval, no export.
    pub shard: Option<(usize, usize)>,
    /// Train nothing: every run must already be finished (merging shards).
    pub no_train: bool,
}

/// Parses a shard written `I/N` (1-based, as job arrays number their tasks) into
/// (I − 1, N).
pub fn parse_shard(text: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::Usage(format!(
            "--shard {text}: expected I/N with 1 <= I <= N (e.g. 2/8)"
        ))
    };
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if i == 0 || i > n {
        return Err(bad());
    }
    Ok((i - 1, n))
}

#[derive(Clone, Debug, Serialize)]
pub struct PipelineResult {
    pub data: PathBuf,
    pub runs: Vec<PathBuf>,
    pub report: PathBuf,
    pub exports: Vec<PathBuf>,
    /// The shard this invocation trained (0-based), if it was one.
    pub shard: Option<(usize, usize)>,
    /// Stages skipped because their output was already there.
    pub reused: Vec<String>,
    #[serde(skip)]
    pub eval: Option<EvalReport>,
    /// The primary model's gates, from the report (this run's or the reused one).
    pub gates: Vec<crate::eval::gates::Gate>,
    pub all_gates_passed: bool,
    /// The gates' verdict, as the report opens with it.
    #[serde(skip)]
    pub verdict: Verdict,
    /// With `[tstr]`: the real dataset, its report and the primary model's gates there.
    pub tstr: Option<TstrResult>,
}

/// The TSTR protocol's outputs: the real sessions as a dataset, the runs of its two arms
/// trained on them, and the report of all three arms on their test split.
#[derive(Clone, Debug, Serialize)]
pub struct TstrResult {
    pub data: PathBuf,
    pub runs: Vec<PathBuf>,
    pub report: PathBuf,
    pub gates: Vec<crate::eval::gates::Gate>,
}

/// The files of a report that `ssmkit run` must find before it reuses the report.
const REPORT_FILES: [&str; 4] = ["gates.json", "summary.json", "report.md", "report.html"];

/// Whether `dir` exists and holds anything.
fn holds_files(dir: &std::path::Path) -> bool {
    dir.read_dir().is_ok_and(|mut d| d.next().is_some())
}

/// Whether `dir` holds files but none of `ours`: a directory ssmkit did not write.
fn is_foreign_dir(dir: &std::path::Path, ours: &[&str]) -> bool {
    holds_files(dir) && !ours.iter().any(|f| dir.join(f).exists())
}

/// The refusal of a `data/` directory that holds files but no dataset ssmkit wrote.
fn foreign_data(dir: &std::path::Path) -> Error {
    Error::Occupied(format!(
        "{} holds files but no manifest.json: it is no dataset ssmkit wrote, so it is not replaced; remove it or change `name`",
        dir.display()
    ))
}

/// The dataset config as the manifest records it, without the sections `gen` ignores.
fn gen_part(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("train");
        o.remove("pipeline");
        o.remove("tstr");
    }
    v
}

pub fn run(opts: &RunOptions) -> Result<PipelineResult> {
    let cfg = Config::load(&opts.config)?;
    // One `run` at a time under a root: two would train, evaluate and export into the
    // same directories. The shards of one job are the exception: each trains runs no
    // other trains (each run directory has its own lock), and none evaluates.
    let _lock = match opts.shard {
        Some(_) => crate::lock::dir_shared(&opts.root)?,
        None => crate::lock::dir(&opts.root)?,
    };
    let configs = train_configs(&cfg)?;
    let jobs = jobs(&configs, &cfg.pipeline.seeds, opts)?;
    if cfg.tstr.is_some() && opts.shard.is_some() {
        return Err(Error::Usage(
            "--shard does not split the [tstr] arms: run this config without it".into(),
        ));
    }
    let arms = if cfg.tstr.is_some() {
        2 * cfg.pipeline.seeds.len() + 1
    } else {
        0
    };
    let mut job = Job::new(&cfg, opts, jobs.len() + arms);
    {
        // A shard that finds another generating the dataset waits for it, then reuses it.
        let _generating = match opts.shard {
            Some(_) => Some(crate::lock::path_waiting(&job.data)?),
            None => None,
        };
        job.dataset()?;
    }
    let reader = crate::data::DatasetReader::open(&job.data)?;
    // The real sessions, checked before anything trains.
    let real = match &cfg.tstr {
        Some(t) => {
            let path = job.real_dataset(t)?;
            let real = crate::data::DatasetReader::open(&path)?;
            job.tstr_fits(&path, &real.outline, &reader.outline)?;
            Some((path, real))
        }
        None => None,
    };
    let (data, runs_dir) = (job.data.clone(), job.runs_dir.clone());
    let runs = job.train(&reader, &data, &runs_dir, None, &jobs)?;
    if opts.shard.is_some() {
        job.bar.finish_and_clear();
        return Ok(PipelineResult {
            data: job.data,
            runs,
            report: job.report,
            exports: Vec::new(),
            shard: opts.shard,
            reused: job.reused,
            eval: None,
            gates: Vec::new(),
            all_gates_passed: false,
            verdict: Verdict::new(&[], false),
            tstr: None,
        });
    }
    let report = job.report.clone();
    let (eval, gates, references_checked) = job.eval(&reader, &data, &runs, &report, false)?;
    let exports = job.export(&reader)?;
    let tstr = match real {
        Some((path, real)) => {
            Some(job.tstr(path, &real, &reader, &runs[..cfg.pipeline.seeds.len()])?)
        }
        None => None,
    };
    job.bar.finish_and_clear();
    Ok(PipelineResult {
        data: job.data,
        runs,
        report: job.report,
        exports,
        shard: None,
        reused: job.reused,
        eval,
        all_gates_passed: gates.iter().all(crate::eval::gates::Gate::passed),
        verdict: Verdict::new(&gates, references_checked),
        gates,
        tstr,
    })
}

/// The primary model's training config, then each learned baseline's (at its own
/// defaults), then each ablation's.
fn train_configs(cfg: &Config) -> Result<Vec<TrainConfig>> {
    let mut configs = vec![cfg.train.clone()];
    for &b in &cfg.pipeline.baselines {
        configs.push(cfg.train.for_baseline(b));
    }
    for spec in &cfg.pipeline.ablations {
        configs.push(cfg.train.ablated(spec)?);
    }
    Ok(configs)
}

/// Every (config, seed) training job, or this shard's share of them.
fn jobs<'a>(
    configs: &'a [TrainConfig],
    seeds: &[u64],
    opts: &RunOptions,
) -> Result<Vec<(&'a TrainConfig, u64)>> {
    let jobs = configs
        .iter()
        .flat_map(|c| seeds.iter().map(move |&s| (c, s)));
    let Some((i, n)) = opts.shard else {
        return Ok(jobs.collect());
    };
    if opts.no_train {
        return Err(Error::Usage(
            "--shard trains a share of the runs and --no-train trains none: pick one".into(),
        ));
    }
    Ok(jobs
        .enumerate()
        .filter(|(j, _)| j % n == i)
        .map(|(_, job)| job)
        .collect())
}

/// One `ssmkit run`: its config and paths, the stage bar, and what it reused so far.
struct Job<'a> {
    cfg: &'a Config,
    opts: &'a RunOptions,
    data: PathBuf,
    runs_dir: PathBuf,
    report: PathBuf,
    /// The stage bar, and under it each training's own bar (step, turns/s, ETA).
    multi: MultiProgress,
    bar: ProgressBar,
    reused: Vec<String>,
}

impl<'a> Job<'a> {
    fn new(cfg: &'a Config, opts: &'a RunOptions, jobs: usize) -> Job<'a> {
        let name = &cfg.name;
        let stages = if opts.shard.is_some() {
            1 + jobs
        } else {
            1 + jobs + 1 + cfg.pipeline.export.len()
        };
        let multi = MultiProgress::new();
        let bar = if opts.quiet {
            ProgressBar::hidden()
        } else {
            multi.add(ProgressBar::new(stages as u64))
        };
        bar.set_style(
            ProgressStyle::with_template("run [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
                .expect("template"),
        );
        Job {
            cfg,
            opts,
            data: opts.root.join("data").join(name),
            runs_dir: opts.root.join("runs").join(name),
            report: opts.root.join("reports").join(name),
            multi,
            bar,
            reused: Vec::new(),
        }
    }

    /// The dataset: reused when made from this config, refused when made from another or
    /// when its directory holds files ssmkit did not write, generated otherwise.
    fn dataset(&mut self) -> Result<()> {
        let (cfg, data) = (self.cfg, &self.data);
        self.bar.set_message(format!("gen {}", data.display()));
        if data.join("manifest.json").is_file() {
            let m = crate::manifest::Manifest::read(data)?;
            let want = serde_json::to_value(cfg).expect("config serializes");
            // An import records no config (null): never the same.
            let recorded = serde_json::to_value(&m.config).expect("config serializes");
            if gen_part(&recorded) != gen_part(&want) {
                return Err(Error::Occupied(format!(
                    "{} was generated from another config than {}: remove it, or change `name`",
                    data.display(),
                    self.opts.config.display()
                )));
            }
            self.reused.push(format!("gen ({})", data.display()));
        } else if holds_files(data) {
            return Err(foreign_data(data));
        } else {
            generate(
                cfg,
                &GenOptions {
                    out: data.clone(),
                    force: true,
                    quiet: true,
                    materialize: false,
                },
            )?;
        }
        self.bar.inc(1);
        Ok(())
    }

    /// Every job's run directory under `runs_dir`, trained on `data` (opened as `reader`)
    /// and with `mix` (opened, at its path) mixed in: a finished run of the same config is
    /// kept, an interrupted one resumes, a missing one is trained (with `no_train`,
    /// refused).
    fn train(
        &mut self,
        reader: &crate::data::DatasetReader,
        data: &std::path::Path,
        runs_dir: &std::path::Path,
        mix: Option<(&crate::data::DatasetReader, &std::path::Path)>,
        jobs: &[(&TrainConfig, u64)],
    ) -> Result<Vec<PathBuf>> {
        let mut runs = Vec::new();
        let mut missing = Vec::new();
        let mixed: Vec<&crate::data::DatasetReader> = mix.iter().map(|m| m.0).collect();
        let outlines: Vec<&crate::data::Dataset> = mixed.iter().map(|r| &r.outline).collect();
        let mix_share = self.cfg.tstr.as_ref().map_or(MIX_SHARE, |t| t.mix_share);
        let records = crate::train::mixed_records(&outlines, mix_share);
        let sha = crate::run::dataset_fingerprint(&reader.outline);
        for &(tcfg, seed) in jobs {
            let suffix = if mix.is_some() { "+mix" } else { "" };
            let run = runs_dir.join(format!("{}{suffix}-s{seed}", tcfg.system_name()));
            let train_opts = TrainOptions {
                quiet: self.opts.quiet,
                progress: Some(self.multi.clone()),
                mix: mix.iter().map(|m| m.1.to_path_buf()).collect(),
                mix_share,
                ..TrainOptions::new(data.to_path_buf(), run.clone(), seed)
            };
            self.bar.set_message(format!("train {}", run.display()));
            // A state.json that cannot be read (edited, damaged) is an error naming it, not
            // a run to train over.
            let state = if run.join("state.json").exists() {
                Some(read_run_state(&run)?)
            } else {
                None
            };
            // The same training config and the same model (a run written by an older build
            // can read back as the same config but hold another model).
            let model = crate::train::model_config_mixed(&reader.outline, &outlines, tcfg);
            let same = |s: &crate::run::RunState| {
                s.train == *tcfg && s.model == model && s.mixed == records && s.dataset_sha == sha
            };
            let finished = state.as_ref().is_some_and(|s| s.finished() && same(s));
            if finished {
                self.reused.push(format!("train ({})", run.display()));
            } else if self.opts.no_train {
                missing.push(run.display().to_string());
            } else {
                let resume = state.as_ref().is_some_and(|s| same(s) && s.seed == seed);
                if state.is_some() && !resume {
                    return Err(Error::Occupied(format!(
                        "{} holds a run of another training config: remove it to retrain",
                        run.display()
                    )));
                }
                crate::train::train_read_mixed(
                    reader,
                    &mixed,
                    tcfg,
                    &TrainOptions {
                        resume,
                        ..train_opts
                    },
                )?;
            }
            runs.push(run);
            self.bar.inc(1);
        }
        if !missing.is_empty() {
            return Err(Error::Usage(format!(
                "--no-train: {} of {} runs are not finished: {}",
                missing.len(),
                jobs.len(),
                missing.join(", ")
            )));
        }
        Ok(runs)
    }

    /// The report of every run: reused only whole (every file a reader opens is there)
    /// and made from what would be evaluated now (the same dataset, runs and options, by
    /// digest). Returns the evaluation when it ran, the primary model's gates, and whether
    /// the reference systems were judged too.
    fn eval(
        &mut self,
        reader: &crate::data::DatasetReader,
        data: &std::path::Path,
        runs: &[PathBuf],
        report: &std::path::Path,
        transfer: bool,
    ) -> Result<(Option<EvalReport>, Vec<crate::eval::gates::Gate>, bool)> {
        let cfg = self.cfg;
        self.bar.set_message(format!("eval → {}", report.display()));
        let eval_opts = EvalOptions {
            data: data.to_path_buf(),
            runs: runs.to_vec(),
            out: report.to_path_buf(),
            force: true,
            primary: Some(cfg.train.model),
            primary_system: Some(cfg.train.system_name()),
            unit: Unit::User,
            compare: CompareOptions {
                seed: cfg.seed,
                ..CompareOptions::default()
            },
            latency_users: 4,
            probes_per_canary: cfg.pipeline.probes,
            transfer,
            quiet: true,
            resident_mb: cfg.train.resident_mb,
        };
        // A report is reused only whole: every file as `eval` wrote it (by its digest),
        // and every file a reader opens among them.
        let whole = crate::eval::output::report_intact(report)
            && REPORT_FILES.iter().all(|f| report.join(f).is_file());
        if !whole && is_foreign_dir(report, &["gates.json", crate::eval::output::DIGESTS]) {
            return Err(Error::Occupied(format!(
                "{} holds files but is no report ssmkit wrote (no gates.json or {}), so it is not replaced; remove it or change `name`",
                report.display(),
                crate::eval::output::DIGESTS
            )));
        }
        let same_inputs = || {
            Inputs::recorded(report)
                .is_some_and(|r| Inputs::of(reader, &eval_opts).is_ok_and(|now| r == now))
        };
        let result = if whole && same_inputs() {
            self.reused.push(format!("eval ({})", report.display()));
            let (gates, references_checked) = recorded_gates(&report.join("gates.json"))?;
            (None, gates, references_checked)
        } else {
            let r = evaluate_read(reader, &eval_opts)?;
            let (gates, references_checked) = (r.gates.clone(), !r.reference.is_empty());
            (Some(r), gates, references_checked)
        };
        self.bar.inc(1);
        Ok(result)
    }

    /// The TSTR protocol on the real sessions at `data` (opened as `reader`): the primary
    /// model trained on them alone and with this `world` mixed in (every seed; `synthetic`
    /// holds its runs on the world), and the report of the three arms on the real test
    /// split.
    fn tstr(
        &mut self,
        data: PathBuf,
        reader: &crate::data::DatasetReader,
        world: &crate::data::DatasetReader,
        synthetic: &[PathBuf],
    ) -> Result<TstrResult> {
        let name = format!("{}-real", self.cfg.name);
        let runs_dir = self.opts.root.join("runs").join(&name);
        let report = self.opts.root.join("reports").join(&name);
        let primary = &self.cfg.train;
        let jobs: Vec<(&TrainConfig, u64)> = self
            .cfg
            .pipeline
            .seeds
            .iter()
            .map(|&s| (primary, s))
            .collect();
        let world_path = self.data.clone();
        let mut runs = self.train(reader, &data, &runs_dir, None, &jobs)?;
        runs.extend(self.train(reader, &data, &runs_dir, Some((world, &world_path)), &jobs)?);
        let mut all = runs.clone();
        all.extend_from_slice(synthetic);
        let (_, gates, _) = self.eval(reader, &data, &all, &report, true)?;
        Ok(TstrResult {
            data,
            runs,
            report,
            gates,
        })
    }

    /// Refuses, before any arm trains, real sessions the arms cannot be trained and judged
    /// on: the config's own world, a content width the primary model reads and the world
    /// does not share, or a split other than the one the sessions are evaluated on.
    fn tstr_fits(
        &self,
        data: &std::path::Path,
        real: &crate::data::Dataset,
        world: &crate::data::Dataset,
    ) -> Result<()> {
        let fingerprint = crate::run::dataset_fingerprint;
        if fingerprint(real) == fingerprint(world) {
            return Err(Error::Config(format!(
                "tstr.real: {} is this config's own world; name the real sessions",
                data.display()
            )));
        }
        let train = &self.cfg.train;
        let model = crate::train::model_config(real, train);
        if model.reads_content() && real.embedding_dim != world.embedding_dim {
            return Err(Error::Config(format!(
                "tstr.real: {} has {}-dimensional content embeddings and the world {}: set {}",
                data.display(),
                real.embedding_dim,
                world.embedding_dim,
                content_width_remedy(real.embedding_dim)
            )));
        }
        if train.valid_from != OWN_VALID_FROM || train.test_from != OWN_TEST_FROM {
            return Err(Error::Config(format!(
                "[tstr]: the arms are judged on the real sessions' own split, so `[train] valid_from` and `test_from` must stay {OWN_VALID_FROM} and {OWN_TEST_FROM}"
            )));
        }
        Ok(())
    }

    /// The real sessions of `[tstr] real` as a dataset: a dataset directory as it is, or
    /// a JSONL file imported into `data/<name>-real` (reused while it was imported from a
    /// file of the same digest).
    fn real_dataset(&mut self, t: &crate::config::TstrConfig) -> Result<PathBuf> {
        let base = self
            .opts
            .config
            .parent()
            .unwrap_or(std::path::Path::new(""));
        let real = base.join(&t.real);
        // A directory is checked as a dataset when it is opened.
        if real.is_dir() {
            return Ok(real);
        }
        if !real.is_file() {
            return Err(Error::Config(format!(
                "tstr.real: {} is neither a JSONL file nor a dataset directory",
                real.display()
            )));
        }
        let out = self
            .opts
            .root
            .join("data")
            .join(format!("{}-real", self.cfg.name));
        self.bar.set_message(format!("import {}", out.display()));
        let digest = crate::layout::sha256_file(&real)?;
        if out.join(crate::layout::MANIFEST).is_file() {
            let m = crate::manifest::Manifest::read(&out)?;
            if m.input.is_none_or(|i| i.sha256 != digest) {
                return Err(Error::Occupied(format!(
                    "{} was not imported from {}: remove it, or change `name`",
                    out.display(),
                    real.display()
                )));
            }
            self.reused.push(format!("import ({})", out.display()));
        } else if holds_files(&out) {
            return Err(foreign_data(&out));
        } else {
            crate::datagen::import::import(
                &real,
                &GenOptions {
                    out: out.clone(),
                    force: true,
                    quiet: true,
                    materialize: false,
                },
            )?;
        }
        Ok(out)
    }

    /// The primary model's first seed in every configured quantization: an export is
    /// reused only when intact (its recorded digests hold) and made from the run as it is
    /// now (the digest of its state.json, which its metadata records).
    fn export(&mut self, reader: &crate::data::DatasetReader) -> Result<Vec<PathBuf>> {
        let (cfg, p) = (self.cfg, &self.cfg.pipeline);
        let source = self
            .runs_dir
            .join(format!("{}-s{}", cfg.train.system_name(), p.seeds[0]));
        let source_digest = crate::run::state_digest(&source)?;
        let mut exports = Vec::new();
        for &quant in &p.export {
            let out = self.runs_dir.join("export").join(format!(
                "{}-{}.safetensors",
                cfg.train.model.name(),
                quant.name()
            ));
            self.bar.set_message(format!("export {}", out.display()));
            let fresh = crate::runtime::Runtime::load(&out)
                .is_ok_and(|rt| rt.source["state_sha256"].as_str() == Some(source_digest.as_str()));
            if fresh {
                self.reused.push(format!("export ({})", out.display()));
            } else {
                export_read(
                    &ExportOptions {
                        run: source.clone(),
                        quant,
                        out: out.clone(),
                        data: Some(self.data.clone()),
                        max_drop: Some(p.max_drop),
                        force: true,
                    },
                    Some(reader),
                )?;
            }
            exports.push(out);
            self.bar.inc(1);
        }
        Ok(exports)
    }
}

/// The gates a reused report recorded, and whether it judged the reference systems.
fn recorded_gates(path: &std::path::Path) -> Result<(Vec<crate::eval::gates::Gate>, bool)> {
    #[derive(serde::Deserialize)]
    struct Recorded {
        gates: Vec<crate::eval::gates::Gate>,
        #[serde(default)]
        reference: serde_json::Map<String, serde_json::Value>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let r = serde_json::from_str::<Recorded>(&text)
        .map_err(|e| Error::Damaged(format!("{}: {e}", path.display())))?;
    Ok((r.gates, !r.reference.is_empty()))
}
