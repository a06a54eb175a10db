//! What `ssmkit eval` is asked to do: the data, the runs, the primary system, the
//! resampling unit and the budgets of its analyses.

use std::path::PathBuf;

use super::Unit;
use super::stats::CompareOptions;
use crate::model::scorer::Variant;

/// Metrics compared between systems with the paired statistics.
pub const COMPARED: [&str; 4] = ["dcg@10", "hr@10", "hr@5", "mrr@10"];

/// The options of one evaluation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub data: PathBuf,
    pub runs: Vec<PathBuf>,
    /// The report directory (`reports/<name>`).
    pub out: PathBuf,
    pub force: bool,
    /// The model the gates judge (default: mamba if evaluated, else the first temporal
    /// variant, else the first run's).
    pub primary: Option<Variant>,
    /// The primary system by its exact name (`mamba+no_history`), when the runs' own
    /// config says which one it is (`ssmkit run`); it takes precedence over `primary`.
    pub primary_system: Option<String>,
    pub unit: Unit,
    pub compare: CompareOptions,
    /// Users whose turns are replayed one step at a time to measure latency.
    pub latency_users: usize,
    /// Probe sites per canary.
    pub probes_per_canary: usize,
    /// Evaluate runs trained on other datasets on this one (TSTR): its own 90th-percentile
    /// split, runs grouped by the dataset they were trained on.
    pub transfer: bool,
    pub quiet: bool,
    /// Megabytes of users to hold: a larger dataset is evaluated on a seeded sample of its
    /// users with a test turn, and the report says how many.
    pub resident_mb: usize,
}
