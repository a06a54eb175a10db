//! Every TOML config type. One file describes a run end to end; every field has a
//! default, unknown fields are an error, and the resolved config is written beside the
//! output so every result can be reproduced.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    pub train: crate::train::TrainConfig,
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
    pub baselines: Vec<crate::model::scorer::Variant>,
    /// Retrained ablations of the primary model, each on the same seeds: `d_state=N`,
    /// `layers=N`, `d_model=N`, `expand=N`, `no_selectivity`, `temporal_only`,
    /// `no_history` (the seed's "Required Ablations"), `relative` / `no_relative` (the
    /// turn-relative features on or off).
    pub ablations: Vec<String>,
    /// Quantizations exported.
    pub export: Vec<crate::export::Quant>,
    /// Largest relative DCG@10 drop an export may show on the test cases.
    pub max_drop: f64,
    /// Canary probe sites per canary.
    pub probes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            seeds: vec![1, 2, 3, 4, 5],
            baselines: vec![crate::model::scorer::Variant::Xattn],
            ablations: Vec::new(),
            export: vec![crate::export::Quant::F32, crate::export::Quant::Int8],
            max_drop: 0.02,
            probes: 32,
        }
    }
}

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
            train: crate::train::TrainConfig::default(),
            pipeline: PipelineConfig::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    World,
    Poc,
    Persistence,
}

/// The `persistence` preset: each user's current topic (a few memories of its pool) carries
/// over from turn to turn with probability `stay`; topic memories are relevant with
/// probability `relevance_on`, the rest with `relevance_off`; features carry no signal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PersistenceConfig {
    /// Memories per user (at least `candidates.k`).
    pub pool: u32,
    /// Memories per topic (at most `candidates.k`); all of them are shown every turn.
    pub topic: u32,
    pub stay: f64,
    pub relevance_on: f64,
    pub relevance_off: f64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            pool: 60,
            topic: 3,
            stay: 0.85,
            relevance_on: 0.9,
            relevance_off: 0.03,
        }
    }
}

/// The `poc` preset: a query carries one of the seven patterns with probability
/// `pattern_share` (the PoC's `canary_ratio`), else labels drawn from Beta(1, 3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PocConfig {
    pub pattern_share: f64,
}

impl Default for PocConfig {
    fn default() -> Self {
        PocConfig { pattern_share: 0.3 }
    }
}

/// An inclusive integer range written `[lo, hi]`.
pub type Range = [u32; 2];

/// The simulated users and their knowledge graphs (seed: "Data Generation Architecture").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorldConfig {
    /// Number of users. Each user's turn stream is one sequence of the seed's data budget.
    pub users: u32,
    /// Entities per user.
    pub entities: Range,
    /// Communities per user.
    pub communities: Range,
    /// Aspects per entity.
    pub aspects_per_entity: Range,
    /// Attributes per aspect.
    pub attributes_per_aspect: Range,
    /// Memories per entity when the timeline starts (more are created as it runs).
    pub memories_per_entity: Range,
    /// Mean number of dependency edges leaving an entity.
    pub dependency_degree: f64,
    /// Share of dependency edges that stay inside the entity's community.
    pub within_community: f64,
    /// Share of memories that are pinned.
    pub pinned_share: f64,
    /// Share of memories that are constraints.
    pub constraint_share: f64,
    /// Share of memories with an embedding.
    pub embedded_share: f64,
    /// Dimension of the content embeddings (query and memory).
    pub embedding_dim: u32,
    /// Probability, per session, that a memory gets a newer version that supersedes it.
    pub supersession_rate: f64,
    /// Probability, per session, that a focal entity gains a new memory.
    pub memory_creation_rate: f64,
    /// Width of the hashed memory-slot table.
    pub memory_slots: u32,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            users: 64,
            entities: [50, 200],
            communities: [3, 8],
            aspects_per_entity: [2, 5],
            attributes_per_aspect: [1, 4],
            memories_per_entity: [2, 5],
            dependency_degree: 1.5,
            within_community: 0.8,
            pinned_share: 0.05,
            constraint_share: 0.2,
            embedded_share: 0.7,
            embedding_dim: 16,
            supersession_rate: 0.3,
            memory_creation_rate: 0.5,
            memory_slots: 4096,
        }
    }
}

/// Sessions and turns (seed: "SessionSimulator").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimelineConfig {
    /// Turns per user (the sequence length) when the curriculum is off.
    pub turns: Range,
    /// Turns per session.
    pub turns_per_session: Range,
    /// Days over which a user's sessions are spread (each starts on a day drawn
    /// uniformly from this span), so every user has history on both sides of a
    /// timestamp cut-off.
    pub span_days: u32,
    /// Mean seconds between turns of a session (exponential gaps).
    pub mean_turn_gap_s: f64,
    /// First possible timestamp, Unix seconds (UTC, taken as the user's local time).
    pub start_unix: i64,
    /// Users start on a day drawn uniformly from this many days after `start_unix`.
    pub start_spread_days: u32,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            turns: [40, 200],
            turns_per_session: [3, 15],
            span_days: 42,
            mean_turn_gap_s: 60.0,
            // 2026-01-05 00:00:00 UTC, a Monday.
            start_unix: 1_767_571_200,
            start_spread_days: 3,
        }
    }
}

/// Candidate sets (seed: "Memory candidate generation", "Hard Negative Generation").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CandidateConfig {
    /// Candidates per turn.
    pub k: u32,
    /// Band of the relevant share per turn. `world`: the turn's expected number of
    /// relevant candidates (the sum of their relevance) is filled to a target drawn in
    /// this band and each label is an independent draw from its relevance, so relevance
    /// is the label's probability. `poc` does not use it (see `[poc]`).
    pub relevant_share: [f64; 2],
    /// Share of a turn's negatives that are hard negatives.
    pub hard_negative_share: f64,
    /// Relative weights of the four hard-negative kinds: entity neighbour, temporal
    /// neighbour, semantic neighbour, superseded.
    pub hard_negative_mix: [f64; 4],
}

impl Default for CandidateConfig {
    fn default() -> Self {
        CandidateConfig {
            k: 40,
            relevant_share: [0.025, 0.075],
            hard_negative_share: 0.25,
            hard_negative_mix: [1.0, 1.0, 1.0, 1.0],
        }
    }
}

/// The temporal pattern mixer: what makes an entity focal, and a memory relevant, when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PatternConfig {
    /// Zipf exponent of entity popularity (entity selectivity: a few entities dominate).
    pub zipf_exponent: f64,
    /// Amplitude of each entity's time-of-day preference, 0–1.
    pub daily_amplitude: f64,
    /// Amplitude of each entity's day-of-week preference, 0–1.
    pub weekly_amplitude: f64,
    /// Amplitude (log scale) of each entity's slow seasonal drift.
    pub seasonal_amplitude: f64,
    /// Period of the seasonal drift, days.
    pub seasonal_period_days: f64,
    /// Probability that a turn keeps the previous turn's focal entity.
    pub focal_persistence: f64,
    /// Probability that a turn has a second focal entity.
    pub second_focal: f64,
    /// Probability that a burst starts at a turn (a Poisson process over turns).
    pub burst_prob_per_turn: f64,
    /// Turns a burst lasts (its entity is focal throughout).
    pub burst_turns: Range,
    /// Time constant of exponential decay of relevance with memory age, days.
    pub exp_decay_days: f64,
    /// Exponent of power-law decay of relevance with memory age.
    pub power_law_alpha: f64,
    /// Share of memories whose relevance decays as a power law (the rest exponentially).
    pub power_law_share: f64,
    /// Relevance multiplier of a superseded memory.
    pub superseded_factor: f64,
    /// Relevance of a focal entity's memories before age and importance.
    pub focal_relevance: f64,
    /// Relevance of a dependency neighbour's memories, times the edge strength.
    pub neighbour_relevance: f64,
    /// Relevance of any other memory.
    pub background_relevance: f64,
}

impl Default for PatternConfig {
    fn default() -> Self {
        PatternConfig {
            zipf_exponent: 1.0,
            daily_amplitude: 0.6,
            weekly_amplitude: 0.6,
            seasonal_amplitude: 0.5,
            seasonal_period_days: 90.0,
            focal_persistence: 0.6,
            second_focal: 0.35,
            burst_prob_per_turn: 0.03,
            burst_turns: [3, 6],
            exp_decay_days: 20.0,
            power_law_alpha: 0.7,
            power_law_share: 0.3,
            superseded_factor: 0.12,
            focal_relevance: 0.95,
            neighbour_relevance: 0.35,
            background_relevance: 0.03,
        }
    }
}

/// Planted patterns (seed: "Canary Pattern Tests", and the PoC's seven patterns).
/// Canary entities and memories have fixed ids in every user, so one trained model can
/// learn them and `eval` can build probes from these parameters alone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryConfig {
    /// Plant the seven validation-contract canaries.
    pub enabled: bool,
    /// Probability that a turn carries one contract canary's memories (the canary drawn
    /// uniformly among the six planted on fixed roles).
    pub inject_prob: f64,
    /// 1: weekday on which entity X peaks (0 = Monday … 6 = Sunday).
    pub cycle_weekday: u32,
    /// 1: mean relevance of X's memories and the relative amplitude of its weekly cycle.
    pub cycle_mean: f64,
    pub cycle_amplitude: f64,
    /// 2: planted decay rate λ (per day) of entity R's memories: relevance ∝ exp(−λ·age).
    pub recency_lambda: f64,
    /// 2: relevance of a brand-new memory of R.
    pub recency_p0: f64,
    /// 3: relevance of memory Y when Z is focal, and otherwise.
    pub selectivity_on: f64,
    pub selectivity_off: f64,
    /// 3: probability that Z (or its contrast W) is a turn's second focal entity.
    pub selectivity_focal_prob: f64,
    /// 4: relevance of the newest, middle and oldest version of the chain A → B → C.
    pub supersession_levels: [f64; 3],
    /// 5: relevance of the burst entity's memories in the turns after a burst.
    pub burst_relevance: f64,
    /// 5: turns after a burst during which its entity's memories stay relevant.
    pub post_burst_turns: u32,
    /// 6: relevance of Q's memories when P is focal, and otherwise.
    pub dependency_on: f64,
    pub dependency_off: f64,
    /// 6: probability that P is a turn's second focal entity.
    pub dependency_focal_prob: f64,
    /// 7: weekday on which V's cycle peaks, floor of each factor, decay rate.
    pub combined_weekday: u32,
    pub combined_floor: f64,
    pub combined_lambda: f64,
    /// 7: probability that T (V's selector) is a turn's second focal entity.
    pub combined_focal_prob: f64,
    /// Share of turns whose relevance follows one of the PoC's seven pointwise patterns.
    pub poc_share: f64,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            enabled: true,
            inject_prob: 0.35,
            cycle_weekday: 0,
            cycle_mean: 0.4,
            cycle_amplitude: 0.8,
            recency_lambda: 0.15,
            recency_p0: 0.9,
            selectivity_on: 0.85,
            selectivity_off: 0.05,
            selectivity_focal_prob: 0.15,
            supersession_levels: [0.85, 0.3, 0.08],
            burst_relevance: 0.9,
            post_burst_turns: 4,
            dependency_on: 0.85,
            dependency_off: 0.04,
            dependency_focal_prob: 0.15,
            combined_weekday: 2,
            combined_floor: 0.15,
            combined_lambda: 0.1,
            combined_focal_prob: 0.15,
            poc_share: 0.1,
        }
    }
}

/// Noise (seed: "NoiseInjector", "SNR Degradation Curve"). Clean values are always kept.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseConfig {
    /// Gaussian feature noise per column: σ² = Var(clean column) / 10^(SNR/10).
    /// Absent: no Gaussian noise.
    pub snr_db: Option<f64>,
    /// Probability that an observed label is flipped.
    pub label_flip: f64,
    /// Probability that a feature value is replaced by the same column's value from
    /// another row (feature corruption).
    pub corruption: f64,
    /// Probability that a feature value is missing: set to 0 and flagged in `mask`.
    pub missing: f64,
    /// Users whose clean columns estimate the per-column variance.
    pub calibration_users: u32,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            snr_db: Some(20.0),
            label_flip: 0.02,
            corruption: 0.0,
            missing: 0.0,
            calibration_users: 256,
        }
    }
}

/// One curriculum stage (seed: "Curriculum Schedule").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Turns per sequence.
    pub turns: Range,
    pub snr_db: f64,
    /// Share of negatives that are hard negatives.
    pub hard_negative_share: f64,
    /// Share of training spent in this stage (and of the users generated for it).
    pub share: f64,
}

/// The four-stage curriculum. When enabled, users are split among the stages by share
/// and each user's length, SNR and hard-negative share come from its stage.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CurriculumConfig {
    pub enabled: bool,
    pub stages: Vec<Stage>,
}

impl Default for CurriculumConfig {
    fn default() -> Self {
        let stage = |turns, snr_db, hard_negative_share, share| Stage {
            turns,
            snr_db,
            hard_negative_share,
            share,
        };
        CurriculumConfig {
            enabled: false,
            stages: vec![
                stage([10, 20], 30.0, 0.0, 0.2),
                stage([20, 50], 20.0, 0.25, 0.3),
                stage([50, 200], 10.0, 0.5, 0.3),
                stage([10, 200], 5.0, 0.75, 0.2),
            ],
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

    /// Checks every bound a field must respect; the error names the field.
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
        if !(p.zipf_exponent.is_finite() && p.zipf_exponent >= 0.0) {
            return bad(
                "patterns.zipf_exponent",
                format!("{} must be >= 0", p.zipf_exponent),
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
        if k.cycle_weekday > 6 || k.combined_weekday > 6 {
            return bad(
                "canaries.cycle_weekday",
                "weekdays are 0 (Monday) to 6 (Sunday)".into(),
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
        crate::datagen::writer::compression(&self.output.compression)?;
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
        let model = |t: &crate::train::TrainConfig| {
            crate::model::scorer::ModelConfig::sized(t.model, t.size, 16, 4096).with_train(t)
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
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
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
    fn negative_size_is_refused() {
        let err = Config::parse("[world]\nusers = -3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("users"), "{err}");
    }

    #[test]
    fn ablations_name_their_runs_and_a_change_that_changes_nothing_is_refused() {
        let with = |list: &str| Config::parse(&format!("[pipeline]\nablations = {list}\n"));
        let c = with(r#"["d_state=4", "layers=1", "no_selectivity", "temporal_only"]"#).unwrap();
        let names: Vec<String> = c
            .pipeline
            .ablations
            .iter()
            .map(|a| c.train.ablated(a).unwrap().system_name())
            .collect();
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
