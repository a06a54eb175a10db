//! The run directory as the rest of the toolkit reads it: `state.json` (what was trained,
//! how far, on what, and which checkpoint holds it) and the models it names. How
//! checkpoints are committed is `checkpoint`'s.

use std::fs;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub mod checkpoint;

use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::data::split::Cutoffs;
use crate::error::{Error, Result};
use crate::model::scorer::{Init, ModelConfig, Scorer};

/// The header of a run's training log, `metrics.csv`.
pub const LOG_HEADER: &str =
    "step,stage,loss,val_loss,val_dcg10,val_hr10,val_ndcg10,lr,turns_per_s";

/// What the run directory's `state.json` records (written atomically with each checkpoint).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub step: usize,
    pub best_dcg10: f64,
    pub best_step: usize,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub seed: u64,
    pub cutoffs: Cutoffs,
    pub dataset_sha: String,
    /// Training stopped before `train.steps`: validation stopped improving (`patience`).
    #[serde(default)]
    pub stopped_early: bool,
    /// The checkpoint directory of `step` (empty: a run written before checkpoints were
    /// directories, whose files sit in the run directory itself), and the SHA-256 of each
    /// of its files.
    #[serde(default)]
    pub checkpoint: String,
    #[serde(default)]
    pub sha256: std::collections::BTreeMap<String, String>,
    /// The SHA-256 of `state.json`'s text with this field empty ([`RunState::sealed`]),
    /// so an edited `state.json` (another seed or step) is refused rather than carried into
    /// evaluations and export metadata. A `state.json` without it is refused too.
    #[serde(default)]
    pub state_sha256: String,
    /// The datasets whose training turns were mixed into the training (none: the run
    /// trained on its own dataset alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mixed: Vec<Mixed>,
}

/// A dataset mixed into a run's training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mixed {
    /// Its identity ([`dataset_fingerprint`]).
    pub dataset_sha: String,
    /// The share of the steps whose batch came from it.
    pub share: f64,
}

impl RunState {
    /// The state of a run that has not taken a step yet.
    pub fn new(
        model: ModelConfig,
        train: TrainConfig,
        seed: u64,
        cutoffs: Cutoffs,
        dataset_sha: String,
    ) -> RunState {
        RunState {
            step: 0,
            best_dcg10: f64::NEG_INFINITY,
            best_step: 0,
            model,
            train,
            seed,
            cutoffs,
            dataset_sha,
            stopped_early: false,
            checkpoint: String::new(),
            sha256: Default::default(),
            state_sha256: String::new(),
            mixed: Vec::new(),
        }
    }

    /// The text of `state.json` for this state, with its own digest. The digest is of the
    /// text, not of the state read back: floats need not parse back to the same bits.
    pub fn sealed(&self) -> String {
        let unsealed = RunState {
            state_sha256: String::new(),
            ..self.clone()
        };
        let text = serde_json::to_string_pretty(&unsealed).expect("a run state serializes");
        crate::layout::seal(&text, STATE_SEAL)
    }

    /// Whether `text`, the `state.json` this state was read from, records a digest and
    /// matches it: without one an edit (another seed or step) could not be told apart.
    fn seal_holds(&self, text: &str) -> bool {
        crate::layout::seal_holds(text, STATE_SEAL, &self.state_sha256)
    }

    /// Whether training has nothing left to do.
    pub fn finished(&self) -> bool {
        self.stopped_early || self.step >= self.train.steps
    }
}

/// Locks the run directory `run` for a training, creating it. A directory with
/// `state.json` is a run (the training resumes or refuses it). One without is trained into
/// only when it holds nothing but what a training killed before its first checkpoint
/// wrote, and with `resume` only when that is no checkpoint, which would be lost
/// unverified; otherwise the error names the directory and nothing in it is changed.
pub fn claim(run: &Path, resume: bool) -> Result<crate::lock::Lock> {
    if run.exists() && !run.is_dir() {
        return Err(Error::Occupied(format!(
            "{} exists and is not a run directory",
            run.display()
        )));
    }
    let lock = crate::lock::dir(run)?;
    let names: Vec<String> = fs::read_dir(run)
        .map_err(|e| Error::io(run, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if run.join("state.json").exists() {
        // A run's directory may hold the user's files too: they are left as they are.
        let theirs: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| {
                // A run written before checkpoints were directories keeps them here.
                let legacy = checkpoint::FILES.contains(n);
                *n != "state.json" && !legacy && !written_by_train(run, n)
            })
            .collect();
        if !theirs.is_empty() {
            eprintln!(
                "warning: {} holds files that are not the run's ({}): they are left as they are",
                run.display(),
                theirs.join(", ")
            );
        }
        return Ok(lock);
    }
    let foreign: Vec<String> = names
        .iter()
        .filter(|n| !written_by_train(run, n))
        .map(|n| shown(run, n))
        .collect();
    if !foreign.is_empty() {
        return Err(Error::Occupied(format!(
            "{} holds files that are not a run's ({}) and no state.json: train into an empty or new directory (nothing in it was changed)",
            run.display(),
            foreign.join(", ")
        )));
    }
    if let Some(ckpt) = names.iter().find(|n| resume && n.starts_with("ckpt-")) {
        return Err(Error::Usage(format!(
            "{}: --resume, but there is no state.json to say whether checkpoint {ckpt} is complete: restore state.json, or train without --resume to start again (nothing was changed)",
            run.display()
        )));
    }
    Ok(lock)
}

/// `name` as an error shows it: a directory with the first files in it
/// (`ckpt-backup/ (mine.txt)`).
fn shown(run: &Path, name: &str) -> String {
    let Ok(entries) = fs::read_dir(run.join(name)) else {
        return name.to_string();
    };
    let mut inside: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    inside.sort();
    let more = inside.len().saturating_sub(3);
    inside.truncate(3);
    if more > 0 {
        inside.push(format!("{more} more"));
    }
    format!("{name}/ ({})", inside.join(", "))
}

/// Whether `name` in `run` is what a training writes there besides `state.json`: its
/// resolved config, its log (with the log's header), checkpoints, the temporary files of
/// interrupted writes, its lock.
fn written_by_train(run: &Path, name: &str) -> bool {
    match name {
        ".ssmkit.lock" => true,
        "config.json" => holds_run_config(run),
        "metrics.csv" => holds_run_log(run),
        _ => checkpoint::is_checkpoint_name(name) || checkpoint::is_run_temporary(name),
    }
}

/// Whether `run/config.json` is the resolved config a training writes: its keys and no
/// others.
fn holds_run_config(run: &Path) -> bool {
    let text = fs::read_to_string(run.join("config.json")).unwrap_or_default();
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text).is_ok_and(|v| {
        let mut keys: Vec<&str> = v.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys == [
            "backend", "cutoffs", "data", "model", "params", "seed", "train",
        ]
    })
}

/// Whether `run/metrics.csv` is a training log: its first line is the log's header.
fn holds_run_log(run: &Path) -> bool {
    let text = fs::read_to_string(run.join("metrics.csv")).unwrap_or_default();
    text.lines().next() == Some(LOG_HEADER)
}

/// The `state_sha256` field as `state.json` writes it.
/// The field of `state.json` that holds the SHA-256 of its own text.
const STATE_SEAL: &str = "state_sha256";

/// Reads a run directory's `state.json`, refusing one that contradicts itself.
pub fn read_run_state(run: &Path) -> Result<RunState> {
    let state_path = run.join("state.json");
    let text = fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: RunState = serde_json::from_str(&text)
        .map_err(|e| Error::Damaged(format!("{}: not a run state: {e}", state_path.display())))?;
    let bad = |why: String| Error::Damaged(format!("{}: {why}", state_path.display()));
    if state.best_step > state.step || state.step > state.train.steps {
        return Err(bad(format!(
            "step {}, best step {} and {} training steps contradict each other",
            state.step, state.best_step, state.train.steps
        )));
    }
    if !state.checkpoint.is_empty() && state.checkpoint != checkpoint::dir_name(state.step) {
        return Err(bad(format!(
            "names checkpoint {} for step {}",
            state.checkpoint, state.step
        )));
    }
    state.train.validate()?;
    state.model.check_sizes().map_err(bad)?;
    if !state.seal_holds(&text) {
        return Err(bad(
            "does not match the SHA-256 it records, or records none: it was edited or damaged (train into a new run directory)".into(),
        ));
    }
    Ok(state)
}

/// The SHA-256 of a run's `state.json` as it is on disk: what a report or an export made
/// from the run records, so that reuse is decided by contents.
pub fn state_digest(run: &Path) -> Result<String> {
    let path = run.join("state.json");
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    Ok(crate::layout::sha256_text(&text))
}

/// The file of a run's selected model: the `model.bpk` of the checkpoint `state.json`
/// names, checked against its digest.
pub fn model_file(run: &Path) -> Result<PathBuf> {
    let state = read_run_state(run)?;
    Ok(checkpoint::verified(run, &state)?.join("model.bpk"))
}

/// Loads a run's selected model (`model.bpk`, or `checkpoint.bpk` with `checkpoint`) with
/// the configuration it was trained with, on `device`.
pub fn load_run(run: &Path, checkpoint: bool, device: &Device) -> Result<(Scorer, ModelConfig)> {
    let state = read_run_state(run)?;
    let file = checkpoint::verified(run, &state)?.join(if checkpoint {
        "checkpoint.bpk"
    } else {
        "model.bpk"
    });
    let model = state
        .model
        .init(state.seed, device)
        .try_load_file(&file)
        .map_err(|e| {
            Error::Damaged(format!(
                "{}: does not fit the model that state.json describes ({}): {e}",
                file.display(),
                state.train.system_name()
            ))
        })?;
    Ok((model, state.model))
}

/// The dataset's identity as runs record it (the SHA-256 of its candidates table).
pub fn dataset_fingerprint(data: &Dataset) -> String {
    data.manifest
        .files
        .get(crate::layout::CANDIDATES)
        .map_or_else(String::new, |f| f.sha256.clone())
}
