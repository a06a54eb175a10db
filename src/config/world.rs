//! The generator's sections: the simulated world, its timeline, candidates, patterns,
//! canaries, noise and curriculum, and the `poc` and `persistence` presets.

use serde::{Deserialize, Serialize};

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
    /// Probability that a turn whose second focal slot holds a selector shows the memories
    /// that selector's canary is about (Z, W: Y's; P, T: Q's or V's).
    pub selector_inject_prob: f64,
    /// 1: hours of the day within which X's peak is drawn, per user (its weekday is drawn
    /// uniformly), `[from, to)`.
    pub cycle_peak_hours: [f64; 2],
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
            inject_prob: 0.5,
            selector_inject_prob: 0.6,
            cycle_peak_hours: [8.0, 20.0],
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
