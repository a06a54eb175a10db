//! Every TOML config type. One file describes a run end to end; every field has a
//! default, unknown fields are an error, and the resolved config is written beside the
//! output so every result can be reproduced.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use ssmkit_format::model::Variant;
use ssmkit_format::quant::Quant;

mod train;
mod world;

pub use train::{Loss, TrainConfig};
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
    /// `no_picks`.
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
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        let range = |field: &str, r: Range, min: u32| -> Result<()> {
            if r[0] < min || r[0] > r[1] {
                return bad(
                    field,
                    format!("[{}, {}] must satisfy {min} <= lo <= hi", r[0], r[1]),
                );
            }
            Ok(())
        };
        let prob = |field: &str, p: f64| -> Result<()> {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, format!("{p} is not a probability in [0, 1]"));
            }
            Ok(())
        };
        let positive = |field: &str, x: f64| -> Result<()> {
            if !(x.is_finite() && x > 0.0) {
                return bad(field, format!("{x} must be a positive number"));
            }
            Ok(())
        };
        let w = &self.world;
        if w.users == 0 {
            return bad("world.users", "must be at least 1".into());
        }
        range("world.entities", w.entities, 12)?;
        range("world.communities", w.communities, 1)?;
        range("world.aspects_per_entity", w.aspects_per_entity, 1)?;
        range("world.attributes_per_aspect", w.attributes_per_aspect, 1)?;
        range("world.memories_per_entity", w.memories_per_entity, 1)?;
        if w.entities[1] > 4096 {
            return bad("world.entities", "at most 4096 entities per user".into());
        }
        if w.memory_slots == 0 {
            return bad("world.memory_slots", "must be at least 1".into());
        }
        if w.embedding_dim == 0 || w.embedding_dim > 1024 {
            return bad(
                "world.embedding_dim",
                format!("{} is not in 1..=1024", w.embedding_dim),
            );
        }
        positive("world.dependency_degree", w.dependency_degree)?;
        for (f, p) in [
            ("world.within_community", w.within_community),
            ("world.pinned_share", w.pinned_share),
            ("world.constraint_share", w.constraint_share),
            ("world.embedded_share", w.embedded_share),
            ("world.supersession_rate", w.supersession_rate),
            ("world.memory_creation_rate", w.memory_creation_rate),
        ] {
            prob(f, p)?;
        }
        let t = &self.timeline;
        range("timeline.turns", t.turns, 1)?;
        range("timeline.turns_per_session", t.turns_per_session, 1)?;
        if !(1..=3650).contains(&t.span_days) {
            return bad(
                "timeline.span_days",
                format!("{} is not in 1..=3650", t.span_days),
            );
        }
        positive("timeline.mean_turn_gap_s", t.mean_turn_gap_s)?;
        // Timestamps are whole seconds in an i64: bounded starts and gaps keep every sum
        // of them far from overflowing.
        if t.mean_turn_gap_s > MAX_TURN_GAP_S {
            return bad(
                "timeline.mean_turn_gap_s",
                format!(
                    "{:?} is more than {MAX_TURN_GAP_S} (a day)",
                    t.mean_turn_gap_s
                ),
            );
        }
        if !(0..=MAX_START_UNIX).contains(&t.start_unix) {
            return bad(
                "timeline.start_unix",
                format!(
                    "{} is not in 0..={MAX_START_UNIX} (1970 to the end of 9999)",
                    t.start_unix
                ),
            );
        }
        let c = &self.candidates;
        if !(4..=256).contains(&c.k) {
            return bad("candidates.k", format!("{} is not in 4..=256", c.k));
        }
        let [lo, hi] = c.relevant_share;
        if !(0.0 < lo && lo <= hi && hi < 1.0) {
            return bad(
                "candidates.relevant_share",
                format!("[{lo}, {hi}] must satisfy 0 < lo <= hi < 1"),
            );
        }
        if (hi * c.k as f64).floor() < (lo * c.k as f64).ceil() {
            return bad(
                "candidates.relevant_share",
                format!(
                    "no whole number of relevant candidates out of k = {} lies in [{lo}, {hi}]",
                    c.k
                ),
            );
        }
        prob("candidates.hard_negative_share", c.hard_negative_share)?;
        if c.hard_negative_mix
            .iter()
            .any(|x| !(x.is_finite() && *x >= 0.0))
            || c.hard_negative_mix.iter().sum::<f64>() <= 0.0
        {
            return bad(
                "candidates.hard_negative_mix",
                "weights must be >= 0 with a positive sum".into(),
            );
        }
        let p = &self.patterns;
        positive("patterns.seasonal_period_days", p.seasonal_period_days)?;
        positive("patterns.exp_decay_days", p.exp_decay_days)?;
        positive("patterns.power_law_alpha", p.power_law_alpha)?;
        // Far above any real skew (1 to 3), and below where the weights underflow to zero.
        if !(p.zipf_exponent.is_finite() && (0.0..=MAX_ZIPF_EXPONENT).contains(&p.zipf_exponent)) {
            return bad(
                "patterns.zipf_exponent",
                format!("{} is not in [0, {MAX_ZIPF_EXPONENT}]", p.zipf_exponent),
            );
        }
        range("patterns.burst_turns", p.burst_turns, 1)?;
        for (f, x) in [
            ("patterns.daily_amplitude", p.daily_amplitude),
            ("patterns.weekly_amplitude", p.weekly_amplitude),
            ("patterns.seasonal_amplitude", p.seasonal_amplitude),
            ("patterns.focal_persistence", p.focal_persistence),
            ("patterns.second_focal", p.second_focal),
            ("patterns.burst_prob_per_turn", p.burst_prob_per_turn),
            ("patterns.power_law_share", p.power_law_share),
            ("patterns.superseded_factor", p.superseded_factor),
            ("patterns.focal_relevance", p.focal_relevance),
            ("patterns.neighbour_relevance", p.neighbour_relevance),
            ("patterns.background_relevance", p.background_relevance),
        ] {
            prob(f, x)?;
        }
        let k = &self.canaries;
        for (f, x) in [
            ("canaries.inject_prob", k.inject_prob),
            ("canaries.selector_inject_prob", k.selector_inject_prob),
            ("canaries.cycle_mean", k.cycle_mean),
            ("canaries.cycle_amplitude", k.cycle_amplitude),
            ("canaries.recency_p0", k.recency_p0),
            ("canaries.selectivity_on", k.selectivity_on),
            ("canaries.selectivity_off", k.selectivity_off),
            ("canaries.selectivity_focal_prob", k.selectivity_focal_prob),
            ("canaries.burst_relevance", k.burst_relevance),
            ("canaries.dependency_on", k.dependency_on),
            ("canaries.dependency_off", k.dependency_off),
            ("canaries.dependency_focal_prob", k.dependency_focal_prob),
            ("canaries.combined_floor", k.combined_floor),
            ("canaries.combined_focal_prob", k.combined_focal_prob),
            ("canaries.poc_share", k.poc_share),
        ] {
            prob(f, x)?;
        }
        for x in k.supersession_levels {
            prob("canaries.supersession_levels", x)?;
        }
        if k.cycle_mean * (1.0 + k.cycle_amplitude) > 1.0 {
            return bad(
                "canaries.cycle_mean",
                "cycle_mean * (1 + cycle_amplitude) must be <= 1".into(),
            );
        }
        if k.selectivity_focal_prob + k.dependency_focal_prob + k.combined_focal_prob > 1.0 {
            return bad(
                "canaries.selectivity_focal_prob",
                "the three canary focal probabilities must sum to at most 1".into(),
            );
        }
        positive("canaries.recency_lambda", k.recency_lambda)?;
        positive("canaries.combined_lambda", k.combined_lambda)?;
        if k.combined_weekday > 6 {
            return bad(
                "canaries.combined_weekday",
                "weekdays are 0 (Monday) to 6 (Sunday)".into(),
            );
        }
        let [from, to] = k.cycle_peak_hours;
        if !((0.0..24.0).contains(&from) && from < to && to <= 24.0) {
            return bad(
                "canaries.cycle_peak_hours",
                format!("[{from}, {to}] is not a range of hours within 0 to 24"),
            );
        }
        prob("poc.pattern_share", self.poc.pattern_share)?;
        let ps = &self.persistence;
        for (f, x) in [
            ("persistence.stay", ps.stay),
            ("persistence.relevance_on", ps.relevance_on),
            ("persistence.relevance_off", ps.relevance_off),
        ] {
            prob(f, x)?;
        }
        if ps.topic == 0 || ps.topic > c.k {
            return bad(
                "persistence.topic",
                format!("{} is not in 1..=candidates.k ({})", ps.topic, c.k),
            );
        }
        if ps.pool < c.k {
            return bad(
                "persistence.pool",
                format!("{} is below candidates.k ({})", ps.pool, c.k),
            );
        }
        let n = &self.noise;
        if let Some(snr) = n.snr_db
            && !(-40.0..=100.0).contains(&snr)
        {
            return bad("noise.snr_db", format!("{snr} is not in -40..=100 dB"));
        }
        prob("noise.label_flip", n.label_flip)?;
        prob("noise.corruption", n.corruption)?;
        prob("noise.missing", n.missing)?;
        if n.calibration_users == 0 {
            return bad("noise.calibration_users", "must be at least 1".into());
        }
        let cur = &self.curriculum;
        if cur.enabled {
            if cur.stages.is_empty() {
                return bad(
                    "curriculum.stages",
                    "an enabled curriculum needs at least one stage".into(),
                );
            }
            for (i, s) in cur.stages.iter().enumerate() {
                range(&format!("curriculum.stages[{i}].turns"), s.turns, 1)?;
                prob(
                    &format!("curriculum.stages[{i}].hard_negative_share"),
                    s.hard_negative_share,
                )?;
                prob(&format!("curriculum.stages[{i}].share"), s.share)?;
                if !(-40.0..=100.0).contains(&s.snr_db) {
                    return bad(
                        &format!("curriculum.stages[{i}].snr_db"),
                        format!("{} is not in -40..=100 dB", s.snr_db),
                    );
                }
            }
            let total: f64 = cur.stages.iter().map(|s| s.share).sum();
            if (total - 1.0).abs() > 1e-6 {
                return bad("curriculum.stages", format!("shares sum to {total}, not 1"));
            }
        }
        if self.output.users_per_batch == 0 {
            return bad("output.users_per_batch", "must be at least 1".into());
        }
        self.output.parquet_compression()?;
        self.train.validate()?;
        let p = &self.pipeline;
        if p.seeds.is_empty() {
            return bad("pipeline.seeds", "at least one seed".into());
        }
        let mut seeds = p.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() != p.seeds.len() {
            return bad("pipeline.seeds", format!("{:?} repeats a seed", p.seeds));
        }
        if p.baselines.contains(&self.train.model) {
            return bad(
                "pipeline.baselines",
                format!("lists the primary model {}", self.train.model.name()),
            );
        }
        // Each ablation must build another model than the primary's and the others'.
        let model = |t: &TrainConfig| {
            t.overrides(ssmkit_format::model::ModelConfig::sized(
                t.model, t.size, 16, 4096,
            ))
        };
        let mut models = vec![model(&self.train)];
        for spec in &p.ablations {
            let m = model(&self.train.ablated(spec)?);
            if models.contains(&m) {
                return bad(
                    "pipeline.ablations",
                    format!("`{spec}` builds the same model as the primary or another ablation"),
                );
            }
            models.push(m);
        }
        if p.max_drop.is_nan() || p.max_drop < 0.0 {
            return bad("pipeline.max_drop", format!("{} must be >= 0", p.max_drop));
        }
        if p.probes == 0 {
            return bad("pipeline.probes", "must be at least 1".into());
        }
        // `name` names directories under data/, runs/ and reports/: "." or ".." would be
        // those directories themselves or their parent.
        if matches!(self.name.as_str(), "" | "." | "..") || self.name.contains(['/', '\\']) {
            return bad(
                "name",
                format!("{:?} must be a non-empty plain name", self.name),
            );
        }
        Ok(())
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
        let c = with(r#"["d_state=4", "layers=1", "no_selectivity", "temporal_only"]"#).unwrap();
        let names = ablation_names(&c);
        assert_eq!(
            names,
            [
                "mamba+d_state=4",
                "mamba+layers=1",
                "mamba+no_selectivity",
                "mamba+temporal_only"
            ]
        );
        // Small Mamba already has N = 32: that "ablation" would retrain the primary.
        for (list, why) in [
            (r#"["d_state=32"]"#, "same model"),
            (r#"["d_state=4", "d_state=4"]"#, "same model"),
            (r#"["d_state=0"]"#, "d_state"),
            (r#"["depth=2"]"#, "unknown setting"),
            (r#"["layers=two"]"#, "not a whole number"),
            (r#"["no_attention"]"#, "expected"),
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
