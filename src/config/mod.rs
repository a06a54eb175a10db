//! Every TOML config type. One file describes a run end to end; every field has a
//! default, unknown fields are an error, and the resolved config is written beside the
//! output so every result can be reproduced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use ssmkit_format::model::Variant;
use ssmkit_format::quant::Quant;

mod train;
mod validate;
mod world;

pub use train::{Loss, OWN_TEST_FROM, OWN_VALID_FROM, TrainConfig};
pub use world::{
    CanaryConfig, CandidateConfig, CurriculumConfig, NoiseConfig, PatternConfig, PersistenceConfig,
    PocConfig, Preset, Range, Stage, TimelineConfig, WorldConfig,
};

/// A whole run: the dataset to generate (and, later, what to train and evaluate on it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of the run; outputs land under `data/<name>`, `runs/<name>`, `reports/<name>`.
    pub name: String,
    /// Seed of every random choice.
    pub seed: u64,
    /// `world`: the entity-graph simulator. `poc`: the seed's proof-of-concept generator
    /// (one query of K candidates per sequence, its seven pointwise patterns).
    /// `persistence`: a stream where only history helps (see `[persistence]`).
    pub preset: Preset,
    pub world: WorldConfig,
    pub timeline: TimelineConfig,
    pub candidates: CandidateConfig,
    pub patterns: PatternConfig,
    pub canaries: CanaryConfig,
    pub noise: NoiseConfig,
    pub curriculum: CurriculumConfig,
    /// The `persistence` preset's topic process.
    pub persistence: PersistenceConfig,
    /// The `poc` preset's share of patterned queries.
    pub poc: PocConfig,
    pub output: OutputConfig,
    /// What `ssmkit train` does with the dataset.
    pub train: TrainConfig,
    /// What `ssmkit run` does end to end: seeds, baselines, exports.
    pub pipeline: PipelineConfig,
    /// The seed's TSTR protocol against real sessions (none: `ssmkit run` evaluates the
    /// synthetic world alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tstr: Option<TstrConfig>,
}

/// `ssmkit run`'s TSTR protocol: the primary model is trained on the configured seeds in
/// three arms (on this config's synthetic world, on the real sessions, on the real
/// sessions with the world mixed in) and all are evaluated on the real sessions' own test
/// split, whose report carries the two TSTR gates.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TstrConfig {
    /// The real sessions: a JSONL file `ssmkit run` imports (as `gen --import` does) into
    /// `data/<name>-real`, or a dataset directory; relative to the config file.
    pub real: PathBuf,
    /// The share of the mixed arm's training steps drawn from the synthetic world.
    #[serde(default = "mix_share")]
    pub mix_share: f64,
}

/// The share of a mixed training's steps drawn from the mixed datasets, unless set.
pub const MIX_SHARE: f64 = 0.5;

fn mix_share() -> f64 {
    MIX_SHARE
}

/// What makes a content width of `width` meet a model that reads content: the setting of
/// a generated world, or a model that reads none.
pub fn content_width_remedy(width: usize) -> String {
    format!(
        "`[world] embedding_dim = {width}` for a generated world, or `[train] inputs = \"temporal_only\"`, which reads no content"
    )
}

/// `ssmkit run`: the primary model (`[train] model`) is trained once per seed, each
/// baseline too, then everything is evaluated and the primary model's first seed exported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Training seeds (the phase 1→2 gate asks for at least 5).
    pub seeds: Vec<u64>,
    /// Models trained beside the primary one on the same seeds (learned baselines).
    pub baselines: Vec<Variant>,
    /// Retrained ablations of the primary model, each on the same seeds: `d_state=N`,
    /// `layers=N`, `d_model=N`, `expand=N`, `no_selectivity`, `temporal_only`,
    /// `no_history` (the seed's "Required Ablations"), `relative` / `no_relative` (the
    /// turn-relative features on or off), `set_encoder` / `no_set_encoder`, `picks=N` /
    /// `no_picks`, `keyed_modes=N`, `keyed_cycles=N`, `pooled`, `real_only`. Settings
    /// joined by `+` change together (`keyed_modes=1+no_selectivity`), to ask whether
    /// two components stand in for each other.
    pub ablations: Vec<String>,
    /// Quantizations exported.
    pub export: Vec<Quant>,
    /// Largest relative DCG@10 drop an export may show on the test cases.
    pub max_drop: f64,
    /// Canary probe sites per canary.
    pub probes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            seeds: vec![1, 2, 3, 4, 5],
            baselines: vec![Variant::Xattn],
            ablations: Vec::new(),
            export: vec![Quant::F32, Quant::Int8],
            max_drop: 0.02,
            probes: 32,
        }
    }
}

/// The largest `timeline.mean_turn_gap_s`: a day.
pub const MAX_TURN_GAP_S: f64 = 86_400.0;
/// The latest `timeline.start_unix`: 9999-12-31 23:59:59 UTC.
pub const MAX_START_UNIX: i64 = 253_402_300_799;
/// The largest `patterns.zipf_exponent`.
pub const MAX_ZIPF_EXPONENT: f64 = 10.0;

impl Config {
    /// Sets the SNR of the whole dataset: `[noise] snr_db` and every curriculum stage's
    /// (`gen --snr`).
    pub fn set_snr(&mut self, snr: f64) {
        self.noise.snr_db = Some(snr);
        for stage in &mut self.curriculum.stages {
            stage.snr_db = snr;
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "quick".into(),
            seed: 7,
            preset: Preset::World,
            world: WorldConfig::default(),
            timeline: TimelineConfig::default(),
            candidates: CandidateConfig::default(),
            patterns: PatternConfig::default(),
            canaries: CanaryConfig::default(),
            noise: NoiseConfig::default(),
            curriculum: CurriculumConfig::default(),
            persistence: PersistenceConfig::default(),
            poc: PocConfig::default(),
            output: OutputConfig::default(),
            train: TrainConfig::default(),
            pipeline: PipelineConfig::default(),
            tstr: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Users generated (and written) per batch: bounds memory.
    pub users_per_batch: u32,
    /// Parquet compression: "zstd", "snappy", "lz4" or "none".
    pub compression: String,
}

impl OutputConfig {
    /// The configured compression as the Parquet writer takes it.
    pub fn parquet_compression(&self) -> Result<polars::prelude::ParquetCompression> {
        use polars::prelude::ParquetCompression;
        Ok(match self.compression.as_str() {
            "zstd" => ParquetCompression::Zstd(None),
            "snappy" => ParquetCompression::Snappy,
            "lz4" => ParquetCompression::Lz4Raw,
            "none" => ParquetCompression::Uncompressed,
            other => {
                return Err(Error::Config(format!(
                    "output.compression: unknown compression {other:?} (zstd, snappy, lz4, none)"
                )));
            }
        })
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            users_per_batch: 128,
            compression: "zstd".into(),
        }
    }
}

impl Config {
    /// Reads and validates a TOML config.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| Error::Config(one_line(&e.to_string())))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every bound a field must respect; the error names the field and the value.
    pub fn validate(&self) -> Result<()> {
        validate::config(self)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config always serializes")
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_round_trips() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Config::parse("[world]\nusers = 3\nuserz = 4\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("userz"), "{err}");
    }

    #[test]
    fn a_name_that_is_not_a_plain_directory_name_is_refused() {
        for name in ["", ".", "..", "a/b"] {
            let err = Config::parse(&format!("name = {name:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("name") && err.contains("plain name"), "{err}");
        }
        Config::parse("name = \"quick.v2\"\n").unwrap();
    }

    #[test]
    fn negative_size_is_refused() {
        let err = Config::parse("[world]\nusers = -3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("users"), "{err}");
    }

    /// The model a training config builds, sized as `validate` sizes it.
    fn model(t: &TrainConfig) -> ssmkit_format::model::ModelConfig {
        t.model_config(16, 4096)
    }

    /// The system names of a config's ablations.
    fn ablation_names(c: &Config) -> Vec<String> {
        c.pipeline
            .ablations
            .iter()
            .map(|a| c.train.ablated(a).unwrap().system_name())
            .collect()
    }

    #[test]
    fn ablations_name_their_runs_and_a_change_that_changes_nothing_is_refused() {
        let with = |list: &str| Config::parse(&format!("[pipeline]\nablations = {list}\n"));
        let c = with(
            r#"["d_state=4", "layers=1", "no_selectivity", "temporal_only", "mlp_hidden=24", "mlp_layers=1"]"#,
        )
        .unwrap();
        let names = ablation_names(&c);
        assert_eq!(
            names,
            [
                "mamba+d_state=4",
                "mamba+layers=1",
                "mamba+no_selectivity",
                "mamba+temporal_only",
                "mamba+mlp_hidden=24",
                "mamba+mlp_layers=1"
            ]
        );
        let narrow = c.train.ablated("mlp_hidden=24").unwrap();
        assert_eq!(model(&narrow).mlp_hidden, 24);
        assert_eq!(model(&c.train).mlp_hidden, 64);
        let shallow = model(&c.train.ablated("mlp_layers=1").unwrap());
        assert_eq!((shallow.mlp_layers, model(&c.train).mlp_layers), (1, 2));
        // Small Mamba already has N = 32: that "ablation" would retrain the primary.
        for (list, why) in [
            (r#"["d_state=32"]"#, "same model"),
            (r#"["d_state=4", "d_state=4"]"#, "same model"),
            (r#"["mlp_hidden=64"]"#, "same model"),
            (r#"["mlp_hidden=5000"]"#, "mlp_hidden"),
            (r#"["mlp_layers=2"]"#, "same model"),
            (r#"["mlp_layers=3"]"#, "mlp_layers"),
            (r#"["d_state=0"]"#, "d_state"),
            (r#"["depth=2"]"#, "unknown setting"),
            (r#"["layers=two"]"#, "not a whole number"),
            (r#"["no_attention"]"#, "expected"),
        ] {
            let err = with(list).unwrap_err().to_string();
            assert!(err.contains(why), "{list}: {err}");
        }
        // Settings joined by `+` change together, named as one system; a bad part is named.
        let c = with(r#"["keyed_modes=1+no_selectivity", "real_only + d_state=4"]"#).unwrap();
        assert_eq!(
            ablation_names(&c),
            [
                "mamba+no_selectivity+keyed_modes=1",
                "mamba+d_state=4+real_only"
            ]
        );
        let both = c.train.ablated("keyed_modes=1+no_selectivity").unwrap();
        assert_eq!((both.keyed_modes, both.selective), (1, false));
        for (list, why) in [
            (r#"["keyed_modes=1+"]"#, "empty setting"),
            (r#"["keyed_modes=1+depth=2"]"#, "unknown setting `depth`"),
            (r#"["keyed_modes=4+d_state=32"]"#, "same model"),
        ] {
            let err = with(list).unwrap_err().to_string();
            assert!(err.contains(why), "{list}: {err}");
        }
        // The set encoder and greedy picks, on and off (the MLP with both as the primary).
        let c = Config::parse(
            "[train]\nmodel = \"mlp\"\nset_encoder = true\npicks = 5\n[pipeline]\nablations = [\"no_picks\", \"no_set_encoder\", \"picks=2\"]\n",
        )
        .unwrap();
        let names = ablation_names(&c);
        assert_eq!(
            c.train.system_name(),
            "mlp+picks=5+set_encoder",
            "the primary"
        );
        assert_eq!(
            names,
            ["mlp+set_encoder", "mlp+picks=5", "mlp+picks=2+set_encoder"]
        );
        for (list, why) in [
            (r#"["picks=5"]"#, "same model"),
            (r#"["picks=21"]"#, "picks"),
        ] {
            let err = Config::parse(&format!(
                "[train]\nmodel = \"mlp\"\npicks = 5\n[pipeline]\nablations = {list}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(why), "{list}: {err}");
        }
        // Only Mamba blocks have a selection mechanism.
        let err = Config::parse(
            "[train]\nmodel = \"s4d\"\n[pipeline]\nablations = [\"no_selectivity\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("selection"), "{err}");
    }

    #[test]
    fn unknown_preset_is_refused() {
        let err = Config::parse("preset = \"bogus\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus") || err.contains("preset"), "{err}");
    }

    #[test]
    fn bad_range_names_the_field() {
        let err = Config::parse("[timeline]\nturns = [9, 3]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeline.turns"), "{err}");
    }
}
