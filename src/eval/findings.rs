//! What `ssmkit eval` found: every number the report directory is written from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::ablation::{Ablation, Retrained};
use super::canary::{CanaryResult, FrequencyResponse};
use super::dual::DualError;
use super::gates::Gate;
use super::patterns::{PatternRow, PocPattern};
use super::split::TestSet;
use super::stats::ComparisonRow;
use super::strata::Stratum;

/// A run's training curve: (run, \[(step, loss, validation DCG@10)\]).
pub type Curve = (String, Vec<(f64, f64, f64)>);

/// The runtime's latency on the primary model.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub model: String,
    pub turns: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub primary: String,
    pub n_gts: usize,
    pub n_loo: usize,
    /// Cases, users and warm users of the GTS split and of its LOO subset.
    pub test_set: TestSet,
    pub loo_set: TestSet,
    pub unit: String,
    pub gates: Vec<Gate>,
    /// The same gates computed for each reference system, in [`super::gates::REFERENCES`] order.
    pub reference: Vec<(String, Vec<Gate>)>,
    /// Score scale of each of the primary model's seeds, fitted on validation turns.
    pub scales: Vec<f64>,
    pub comparisons: Vec<ComparisonRow>,
    pub latency: Option<Latency>,
    /// Canary detection by SNR level (`None`: the dataset planted no canaries).
    pub canaries: Option<Vec<SnrLevel>>,
    /// The learned baselines' canary results at 20 dB, each judged as the primary model
    /// is (its seeds together, at their scales), by system name.
    pub peers: BTreeMap<String, Vec<CanaryResult>>,
    pub dual_train: Vec<DualError>,
    pub dual_test: Vec<DualError>,
    /// The dual-error test of each reference system on the training turns.
    pub dual_reference: Vec<(String, Vec<DualError>)>,
    pub cold_start: Vec<Stratum>,
    pub sequence_length: Vec<Stratum>,
    /// The primary model's (first seed) and the oracle's response to the time of the week.
    pub frequency: Option<(FrequencyResponse, FrequencyResponse)>,
    /// The seed's seven proof-of-concept patterns.
    pub poc: Vec<PocPattern>,
    /// How the test split was made.
    pub split: String,
    /// The PoC's metrics on every held-out query, per turn name ([`super::patterns`]).
    pub patterns: Vec<PatternRow>,
    pub ablations: Vec<Ablation>,
    /// The primary model and its retrained ablations (the seed's grid).
    pub retrained: Vec<Retrained>,
    pub out: PathBuf,
    /// What the report was computed from, by digest.
    pub inputs: super::inputs::Inputs,
}

impl EvalReport {
    pub fn all_passed(&self) -> bool {
        self.gates.iter().all(Gate::passed)
    }
}

/// Canary results at one SNR: the primary model (its seeds together) and the reference
/// systems.
#[derive(Clone, Debug, Serialize)]
pub struct SnrLevel {
    /// `None`: the clean features.
    pub snr_db: Option<f64>,
    pub model: Vec<CanaryResult>,
    pub oracle: Vec<CanaryResult>,
    pub random: Vec<CanaryResult>,
    pub constant: Vec<CanaryResult>,
    /// The observable reference ([`super::canary::ObservableProbe`]).
    pub observable: Vec<CanaryResult>,
    /// The weight the training turns' listwise likelihood gives the observable reference's
    /// weekly factor, which it applies at 1 (the same at every level).
    pub observable_week_trust: f64,
    /// The scale of the rest of its log-relevance, fitted with that weight.
    pub observable_week_scale: f64,
}
