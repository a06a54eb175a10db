//! A dataset's `manifest.json`: what the dataset holds and how it was made, one type for
//! its writers (`gen`, `gen --import`) and every reader. A field missing from the file is
//! an error; the sections only one source has (`config` and `noise` of a generated world,
//! `input` of an import) are `Option`s, and [`Manifest::read`] holds each source to its
//! own.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::features::{Canary, FEATURE_NAMES, HOP_FEATURE_NAMES, HardNegative, LAYOUT_VERSION};
use crate::layout;

/// The memory slots an import hashes its memory ids into; a generated world has its own
/// (`[world] memory_slots`).
pub const IMPORT_MEMORY_SLOTS: u32 = 4096;

/// Where a dataset's turns come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `ssmkit gen`'s simulator.
    World,
    /// `ssmkit gen --import` of JSONL records.
    Jsonl,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `ssmkit VERSION` of the build that wrote it.
    pub generator: String,
    pub layout_version: String,
    pub source: Source,
    /// The seed of everything random in the dataset, and of its random split when it has
    /// no time axis (an import: 0).
    pub seed: u64,
    /// Whether timestamps order the turns (false: the turns are split at random).
    pub time_axis: bool,
    /// Whether `relevance` holds graded labels (a label above 0.5 counts as relevant)
    /// rather than the generator's relevance probability.
    pub graded_labels: bool,
    /// Turn names whose labels are drawn independently of the features: no ranker beats
    /// chance on them.
    pub chance_names: Vec<String>,
    /// The generator's config (a generated world).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
    /// The file an import read (an import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputFile>,
    pub features: Vec<String>,
    /// The prefix of the clean (noise-free) copies of the feature columns.
    pub clean_prefix: String,
    /// Width of the content embeddings (0: none).
    pub embedding_dim: usize,
    /// Candidates per turn (the `k` of the candidates table, not a top-K cut-off).
    #[serde(rename = "k")]
    pub candidates_per_turn: usize,
    pub hop_features: Vec<String>,
    /// `hop_type` codes of `paths.parquet`.
    pub hop_types: BTreeMap<String, String>,
    /// `hard_negative` codes of `candidates.parquet`.
    pub hard_negative_kinds: BTreeMap<String, String>,
    /// The bit of each canary in the `canary` column.
    pub canary_bits: BTreeMap<String, u16>,
    /// The planted patterns' parameters, each with its description; read a canary's
    /// numbers with [`Manifest::canary`].
    pub canaries: BTreeMap<String, serde_json::Value>,
    /// The observation noise (a generated world).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseRecord>,
    pub counts: Counts,
    /// Each table's rows, bytes and SHA-256.
    pub files: BTreeMap<String, FileRecord>,
    /// The SHA-256 of this file's text with this field empty ([`layout::seal`]).
    pub manifest_sha256: String,
}

/// The JSONL file an import read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    pub path: String,
    pub sha256: String,
}

/// A table's size and digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// What the dataset holds. Every dataset counts its users, turns and candidates; a
/// generated world counts the rest too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub users: u64,
    pub turns: u64,
    pub candidates: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_by_stage: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memories: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hops: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant_labels: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_relevant_labels: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_negatives: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_rows: Option<BTreeMap<String, u64>>,
}

/// The observation noise of a generated world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseRecord {
    /// `None`: no feature noise.
    pub snr_db: Option<f64>,
    /// Each feature column's clean variance over the calibration users.
    pub column_variance: Vec<f64>,
    pub calibration_users: usize,
    /// Each curriculum stage's noise scale per column (stages with users only).
    pub sigma_by_stage: BTreeMap<String, Vec<f64>>,
    pub label_flip: f64,
    pub corruption: f64,
    pub missing: f64,
    pub applied: NoiseCounts,
    /// The observed feature columns and `mask` are not stored: a reader rebuilds them
    /// from the clean columns with this noise and each user's noise stream, as `gen`
    /// drew them (`ssmkit gen --materialize` stores them).
    #[serde(default)]
    pub observed_at_read: bool,
}

/// Counts of what the noise injector did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseCounts {
    pub missing_cells: u64,
    pub corrupted_cells: u64,
    pub flipped_labels: u64,
}

impl Manifest {
    /// Whether readers rebuild the observed features from the clean ones
    /// ([`NoiseRecord::observed_at_read`]).
    pub fn observed_at_read(&self) -> bool {
        self.noise.as_ref().is_some_and(|n| n.observed_at_read)
    }
}

impl std::ops::AddAssign for NoiseCounts {
    fn add_assign(&mut self, o: Self) {
        self.missing_cells += o.missing_cells;
        self.corrupted_cells += o.corrupted_cells;
        self.flipped_labels += o.flipped_labels;
    }
}

impl Counts {
    /// The counts every dataset has; the rest left out.
    pub fn of(users: u64, turns: u64, candidates: u64) -> Counts {
        Counts {
            users,
            turns,
            candidates,
            users_by_stage: None,
            memories: None,
            path_hops: None,
            relevant_labels: None,
            clean_relevant_labels: None,
            hard_negatives: None,
            canary_rows: None,
        }
    }
}

impl Manifest {
    /// A manifest of this build's layout for a dataset of `source` with these counts and
    /// files; the source's own sections (`config`, `noise`, `input`), the canaries and the
    /// chance names are left empty for the writer to fill.
    pub fn new(
        source: Source,
        seed: u64,
        candidates_per_turn: usize,
        embedding_dim: usize,
        counts: Counts,
        files: BTreeMap<String, FileRecord>,
    ) -> Manifest {
        let codes = |names: &[&str]| -> BTreeMap<String, String> {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (i.to_string(), n.to_string()))
                .collect()
        };
        let mut hard = vec![HardNegative::None.name()];
        hard.extend(HardNegative::KINDS.iter().map(|k| k.name()));
        Manifest {
            generator: format!("ssmkit {}", env!("CARGO_PKG_VERSION")),
            layout_version: LAYOUT_VERSION.to_string(),
            source,
            seed,
            time_axis: true,
            graded_labels: false,
            chance_names: Vec::new(),
            config: None,
            input: None,
            features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            clean_prefix: "clean_".into(),
            embedding_dim,
            candidates_per_turn,
            hop_features: HOP_FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            hop_types: codes(&["entity", "aspect", "attribute", "dependency"]),
            hard_negative_kinds: codes(&hard),
            canary_bits: Canary::all()
                .map(|c| (c.name().to_string(), c.bit()))
                .collect(),
            canaries: BTreeMap::new(),
            noise: None,
            counts,
            files,
            manifest_sha256: String::new(),
        }
    }

    /// The text of `manifest.json`, sealed with its own digest.
    pub fn to_text(&self) -> String {
        let value = serde_json::to_value(self).expect("a manifest serializes");
        layout::sealed_manifest(&value)
    }

    /// Writes `manifest.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(layout::MANIFEST);
        std::fs::write(&path, self.to_text()).map_err(|e| Error::io(&path, e))
    }

    /// Reads and checks the manifest of the dataset at `dir`: ssmkit's, sealed, of this
    /// build's layout, every field present and each source with its own sections.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(layout::MANIFEST);
        let bad = |at: &Path, msg: String| Error::dataset(at, msg);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad(&path, format!("not a JSON manifest: {e}")))?;
        if value.get("layout_version").is_none() || value.get("files").is_none() {
            return Err(bad(
                &path,
                "is no manifest ssmkit wrote (it has no `layout_version` or `files`): this directory is not an ssmkit dataset".into(),
            ));
        }
        if !layout::manifest_seal_holds(&text, &value) {
            return Err(bad(
                &path,
                "does not match the SHA-256 it records, or records none: it was edited or damaged, or written by an earlier build (generate the dataset again with `ssmkit gen`)".into(),
            ));
        }
        let layout_version = value["layout_version"].as_str().unwrap_or("none");
        if layout_version != LAYOUT_VERSION {
            return Err(bad(
                dir,
                format!(
                    "dataset has feature layout {layout_version}, this build reads {LAYOUT_VERSION}: regenerate it with `ssmkit gen`"
                ),
            ));
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| {
            bad(
                &path,
                format!("{e}: it was written by another build (generate or import the dataset again: `ssmkit gen`, `ssmkit gen --import`)"),
            )
        })?;
        if manifest.features != FEATURE_NAMES {
            return Err(bad(
                dir,
                format!(
                    "manifest lists features {:?}, not the {LAYOUT_VERSION} layout",
                    manifest.features
                ),
            ));
        }
        let sections = match manifest.source {
            Source::World => manifest.config.is_some() && manifest.noise.is_some(),
            Source::Jsonl => manifest.input.is_some(),
        };
        if !sections || manifest.config.is_some() != manifest.noise.is_some() {
            return Err(bad(
                &path,
                "its sections do not fit its source (a world has `config` and `noise`, an import `input`)".into(),
            ));
        }
        Ok(manifest)
    }

    /// The memory slots a candidate's `memory_slot` lies in.
    pub fn memory_slots(&self) -> u32 {
        self.config
            .as_ref()
            .map_or(IMPORT_MEMORY_SLOTS, |c| c.world.memory_slots)
    }

    /// The share of training steps of curriculum stage `stage` (1-based) the generator's
    /// config gives (1 where it has no such stage).
    pub fn stage_share(&self, stage: u8) -> f64 {
        self.config
            .as_ref()
            .and_then(|c| c.curriculum.stages.get((stage as usize).checked_sub(1)?))
            .map_or(1.0, |s| s.share)
    }

    /// The parameters recorded for `canary`, read as `T` (`None`: the dataset did not
    /// plant it); a record without one of `T`'s fields is an error.
    pub fn canary<T: DeserializeOwned>(&self, canary: &str) -> Result<Option<T>> {
        let Some(record) = self.canaries.get(canary) else {
            return Ok(None);
        };
        serde_json::from_value(record.clone())
            .map(Some)
            .map_err(|e| {
                Error::dataset(layout::MANIFEST.as_ref(), format!("canaries.{canary}: {e}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> Manifest {
        let counts = Counts {
            users: 2,
            turns: 5,
            candidates: 20,
            users_by_stage: Some(vec![2]),
            memories: Some(3),
            path_hops: Some(0),
            relevant_labels: Some(4),
            clean_relevant_labels: Some(4),
            hard_negatives: Some(BTreeMap::new()),
            canary_rows: Some(BTreeMap::new()),
        };
        let mut m = Manifest::new(Source::World, 7, 4, 0, counts, BTreeMap::new());
        m.config = Some(Config::default());
        m.noise = Some(NoiseRecord {
            snr_db: None,
            column_variance: vec![1.0],
            calibration_users: 2,
            sigma_by_stage: BTreeMap::new(),
            label_flip: 0.0,
            corruption: 0.0,
            missing: 0.0,
            applied: NoiseCounts::default(),
            observed_at_read: false,
        });
        m
    }

    #[test]
    fn a_written_manifest_reads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let m = world();
        m.write(dir.path()).unwrap();
        let mut read = Manifest::read(dir.path()).unwrap();
        assert!(!read.manifest_sha256.is_empty());
        read.manifest_sha256.clear();
        assert_eq!(read, m);
        assert_eq!(read.memory_slots(), Config::default().world.memory_slots);
    }

    #[test]
    fn a_missing_field_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut value = serde_json::to_value(world()).unwrap();
        value.as_object_mut().unwrap().remove("k");
        let text = layout::sealed_manifest(&value);
        std::fs::write(dir.path().join(layout::MANIFEST), text).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing field `k`"), "{err}");
    }

    #[test]
    fn a_world_without_its_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = world();
        m.config = None;
        m.write(dir.path()).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("do not fit its source"), "{err}");
    }

    #[test]
    fn a_canary_record_without_a_number_is_an_error() {
        #[derive(Deserialize)]
        struct Cycle {
            #[allow(dead_code)]
            mean: f64,
        }
        let mut m = world();
        assert!(m.canary::<Cycle>("temporal_cycle").unwrap().is_none());
        m.canaries
            .insert("temporal_cycle".into(), serde_json::json!({"mean": 0.4}));
        assert!(m.canary::<Cycle>("temporal_cycle").unwrap().is_some());
        m.canaries.insert(
            "temporal_cycle".into(),
            serde_json::json!({"amplitude": 0.4}),
        );
        let err = m
            .canary::<Cycle>("temporal_cycle")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("canaries.temporal_cycle: missing field `mean`"),
            "{err}"
        );
    }
}
