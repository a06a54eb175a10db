//! What a report was computed from, by digest: the dataset's files, each run's
//! `state.json`, and the options that change a number in it. `ssmkit run` reuses a report
//! only when what it would evaluate now has the same digests, never by modification time
//! (a copied or `touch`ed file says nothing about its contents).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::options::EvalOptions;
use crate::data::DatasetReader;
use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// SHA-256 of the manifest's record of the dataset's files (each with its own digest).
    pub dataset: String,
    /// Each run as named, with the SHA-256 of its `state.json` (which records the digest
    /// of every checkpoint file, so it changes with the weights).
    pub runs: Vec<(String, String)>,
    pub primary: Option<String>,
    pub primary_system: Option<String>,
    pub unit: String,
    pub resamples: usize,
    pub permutations: usize,
    pub seed: u64,
    pub confidence: f64,
    pub latency_users: usize,
    pub probes_per_canary: usize,
    pub transfer: bool,
    pub resident_mb: usize,
}

impl Inputs {
    /// The inputs of evaluating `opts` on `reader`'s dataset, as they are now.
    pub fn of(reader: &DatasetReader, opts: &EvalOptions) -> Result<Inputs> {
        let runs = opts
            .runs
            .iter()
            .map(|run| Ok((run.display().to_string(), crate::run::state_digest(run)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Inputs {
            dataset: crate::layout::sha256_text(
                &serde_json::to_value(&reader.outline.manifest.files)
                    .expect("file records serialize")
                    .to_string(),
            ),
            runs,
            primary: opts.primary.map(|v| v.name().to_string()),
            primary_system: opts.primary_system.clone(),
            unit: format!("{:?}", opts.unit),
            resamples: opts.compare.resamples,
            permutations: opts.compare.permutations,
            seed: opts.compare.seed,
            confidence: opts.compare.confidence,
            latency_users: opts.latency_users,
            probes_per_canary: opts.probes_per_canary,
            transfer: opts.transfer,
            resident_mb: opts.resident_mb,
        })
    }

    /// The inputs a report directory records in its `gates.json` (none: a report written
    /// before they were recorded, or no report).
    pub fn recorded(report: &Path) -> Option<Inputs> {
        let text = std::fs::read_to_string(report.join("gates.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        serde_json::from_value(v.get("inputs")?.clone()).ok()
    }
}
