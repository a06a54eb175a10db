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
}

impl RunState {
    /// Whether training has nothing left to do.
    pub fn finished(&self) -> bool {
        self.stopped_early || self.step >= self.train.steps
    }
}

/// Reads a run directory's `state.json`, refusing one that contradicts itself.
pub fn read_run_state(run: &Path) -> Result<RunState> {
    let state_path = run.join("state.json");
    let text = fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: RunState = serde_json::from_str(&text)
        .map_err(|e| Error::Input(format!("{}: not a run state: {e}", state_path.display())))?;
    let bad = |why: String| Error::Input(format!("{}: {why}", state_path.display()));
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
    Ok(state)
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
            Error::Input(format!(
                "{}: does not fit the model that state.json describes ({}): {e}",
                file.display(),
                state.train.system_name()
            ))
        })?;
    Ok((model, state.model))
}

/// The dataset's identity as runs record it (the SHA-256 of its candidates table).
pub fn dataset_fingerprint(data: &Dataset) -> String {
    data.manifest["files"]["candidates.parquet"]["sha256"]
        .as_str()
        .unwrap_or("")
        .to_string()
}
