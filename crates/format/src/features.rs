//! The feature layout shared by the dataset, the models and the export: one place that
//! names every column.
//!
//! Dims 0–16 are the production predictor's per-memory vector, in its order and with its
//! names; dims 17–23 are the path extension. A dataset records [`LAYOUT_VERSION`] in its
//! manifest and every loader refuses a layout it does not know.

/// Version of the feature layout and of the table schemas written by `ssmkit gen`.
pub const LAYOUT_VERSION: &str = "ssmkit-layout-v2";

/// Width of the production feature vector (the PoC's and Signet's `protocol.rs`).
pub const BASE_DIM: usize = 17;

/// Width of the full per-candidate vector (production + path features).
pub const FEATURE_DIM: usize = 24;

/// Per-candidate feature names, in vector order.
pub const FEATURE_NAMES: [&str; FEATURE_DIM] = [
    "log_age",
    "importance",
    "log_access",
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
    "moy_sin",
    "moy_cos",
    "log_session_gap",
    "is_embedded",
    "is_superseded",
    "entity_slot",
    "aspect_slot",
    "is_constraint",
    "log_structural_density",
    "is_ka_traversal",
    "hop_count_norm",
    "min_edge_confidence",
    "avg_aspect_weight",
    "community_crossings_norm",
    "path_feedback_score",
    "log_dependency_strength_product",
    "focal_distance_norm",
];

/// Index of each feature, so code says `feat::IMPORTANCE` and never a bare number.
pub mod feat {
    pub const LOG_AGE: usize = 0;
    pub const IMPORTANCE: usize = 1;
    pub const LOG_ACCESS: usize = 2;
    pub const TOD_SIN: usize = 3;
    pub const TOD_COS: usize = 4;
    pub const DOW_SIN: usize = 5;
    pub const DOW_COS: usize = 6;
    pub const MOY_SIN: usize = 7;
    pub const MOY_COS: usize = 8;
    pub const LOG_SESSION_GAP: usize = 9;
    pub const IS_EMBEDDED: usize = 10;
    pub const IS_SUPERSEDED: usize = 11;
    pub const ENTITY_SLOT: usize = 12;
    pub const ASPECT_SLOT: usize = 13;
    pub const IS_CONSTRAINT: usize = 14;
    pub const LOG_STRUCTURAL_DENSITY: usize = 15;
    pub const IS_KA_TRAVERSAL: usize = 16;
    pub const HOP_COUNT_NORM: usize = 17;
    pub const MIN_EDGE_CONFIDENCE: usize = 18;
    pub const AVG_ASPECT_WEIGHT: usize = 19;
    pub const COMMUNITY_CROSSINGS_NORM: usize = 20;
    pub const PATH_FEEDBACK_SCORE: usize = 21;
    pub const LOG_DEPENDENCY_STRENGTH_PRODUCT: usize = 22;
    pub const FOCAL_DISTANCE_NORM: usize = 23;

    /// The features that are time: the memory's age, the time of day, weekday and month
    /// encodings, and the gap since the previous session.
    pub const TEMPORAL: [usize; 8] = [
        LOG_AGE,
        TOD_SIN,
        TOD_COS,
        DOW_SIN,
        DOW_COS,
        MOY_SIN,
        MOY_COS,
        LOG_SESSION_GAP,
    ];
}

/// Column holding the clean (noise-free) value of a feature.
pub fn clean_column(name: &str) -> String {
    format!("clean_{name}")
}

/// Per-hop features of a traversal path (the S4D path encoder's input), in order.
pub const HOP_FEATURE_NAMES: [&str; 5] = [
    "hop_type",
    "edge_confidence",
    "aspect_weight",
    "community_crossing",
    "dependency_strength",
];

/// Longest traversal path, in hops.
pub const MAX_HOPS: usize = 10;

/// Kinds of hop on a traversal path (the `hop_type` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HopType {
    Entity = 0,
    Aspect = 1,
    Attribute = 2,
    Dependency = 3,
}

/// Kinds of hard negative (the `hard_negative` column); `None` for every other candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HardNegative {
    None = 0,
    EntityNeighbor = 1,
    TemporalNeighbor = 2,
    SemanticNeighbor = 3,
    Superseded = 4,
}

impl HardNegative {
    pub const KINDS: [HardNegative; 4] = [
        HardNegative::EntityNeighbor,
        HardNegative::TemporalNeighbor,
        HardNegative::SemanticNeighbor,
        HardNegative::Superseded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HardNegative::None => "none",
            HardNegative::EntityNeighbor => "entity_neighbor",
            HardNegative::TemporalNeighbor => "temporal_neighbor",
            HardNegative::SemanticNeighbor => "semantic_neighbor",
            HardNegative::Superseded => "superseded",
        }
    }
}

/// Planted patterns. Each one is a bit of the `canary` column: a row carries the bit of
/// every pattern that set its relevance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Canary {
    // The seed's seven validation-contract canaries.
    TemporalCycle = 0,
    RecencyDecay = 1,
    EntitySelectivity = 2,
    SupersessionChain = 3,
    Burst = 4,
    CrossEntityDependency = 5,
    Combined = 6,
    // The seven pointwise patterns of the seed's proof of concept.
    RecencyBias = 7,
    ImportanceThreshold = 8,
    AccessFrequency = 9,
    TemporalCoherence = 10,
    EntityClustering = 11,
    SupersessionFilter = 12,
    GraphTraversalPriority = 13,
}

impl Canary {
    pub const CONTRACT: [Canary; 7] = [
        Canary::TemporalCycle,
        Canary::RecencyDecay,
        Canary::EntitySelectivity,
        Canary::SupersessionChain,
        Canary::Burst,
        Canary::CrossEntityDependency,
        Canary::Combined,
    ];

    pub const POC: [Canary; 7] = [
        Canary::RecencyBias,
        Canary::ImportanceThreshold,
        Canary::AccessFrequency,
        Canary::TemporalCoherence,
        Canary::EntityClustering,
        Canary::SupersessionFilter,
        Canary::GraphTraversalPriority,
    ];

    pub fn all() -> impl Iterator<Item = Canary> {
        Self::CONTRACT.into_iter().chain(Self::POC)
    }

    pub fn bit(self) -> u16 {
        1 << (self as u8)
    }

    pub fn name(self) -> &'static str {
        match self {
            Canary::TemporalCycle => "temporal_cycle",
            Canary::RecencyDecay => "recency_decay",
            Canary::EntitySelectivity => "entity_selectivity",
            Canary::SupersessionChain => "supersession_chain",
            Canary::Burst => "burst",
            Canary::CrossEntityDependency => "cross_entity_dependency",
            Canary::Combined => "combined",
            Canary::RecencyBias => "recency_bias",
            Canary::ImportanceThreshold => "importance_threshold",
            Canary::AccessFrequency => "access_frequency",
            Canary::TemporalCoherence => "temporal_coherence",
            Canary::EntityClustering => "entity_clustering",
            Canary::SupersessionFilter => "supersession_filter",
            Canary::GraphTraversalPriority => "graph_traversal_priority",
        }
    }
}

/// Written as its name (`"temporal_cycle"`, …) in reports and JSON.
impl serde::Serialize for Canary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl std::fmt::Display for Canary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Turn context features fed to the temporal model, in order (columns of `turns.parquet`).
pub const CONTEXT_NAMES: [&str; 6] = [
    "log_dt",
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
    "log_session_age",
];
pub const CONTEXT_DIM: usize = CONTEXT_NAMES.len();

/// A turn's position in the week, in days from Monday 00:00 in `[0, 7)` (the fraction is
/// the time of day), read from its context (`dow_sin`, `dow_cos` encode the weekday,
/// `tod_sin`, `tod_cos` the hour).
pub fn week_position(context: &[f32]) -> f64 {
    use std::f64::consts::TAU;
    let turn = |sin: f32, cos: f32| (sin as f64).atan2(cos as f64).rem_euclid(TAU) / TAU;
    let day = (turn(context[3], context[4]) * 7.0).round().rem_euclid(7.0);
    let hour = turn(context[1], context[2]);
    // A time of day that rounds up to a whole day stays on its weekday.
    day + hour.min(1.0 - f64::EPSILON)
}
/// Width of one traversal-path hop.
pub const HOP_DIM: usize = HOP_FEATURE_NAMES.len();

/// A context at `week` (days from Monday 00:00), its weekday and time of day encoded as
/// the generator encodes them, every other column 0: what [`week_position`] reads back.
#[cfg(test)]
pub(crate) fn context_at(week: f64) -> [f32; CONTEXT_DIM] {
    let angle = |f: f64| {
        let a = std::f64::consts::TAU * f;
        (a.sin() as f32, a.cos() as f32)
    };
    let (ts, tc) = angle(week - week.floor());
    let (ds, dc) = angle(week.floor() / 7.0);
    let mut cx = [0f32; CONTEXT_DIM];
    for (name, v) in [
        ("tod_sin", ts),
        ("tod_cos", tc),
        ("dow_sin", ds),
        ("dow_cos", dc),
    ] {
        cx[CONTEXT_NAMES.iter().position(|&n| n == name).unwrap()] = v;
    }
    cx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn week_position_reads_back_the_weekday_and_hour_a_context_encodes() {
        for w in [0.0, 0.25, 1.5, 3.999, 4.0, 6.75, 6.9999] {
            let got = week_position(&context_at(w));
            assert!((0.0..7.0).contains(&got), "{w}: {got}");
            assert!((got - w).abs() < 1e-4, "{w}: {got}");
        }
    }

    #[test]
    fn feature_indices_match_names() {
        assert_eq!(FEATURE_NAMES[feat::IMPORTANCE], "importance");
        assert_eq!(FEATURE_NAMES[feat::IS_KA_TRAVERSAL], "is_ka_traversal");
        assert_eq!(FEATURE_NAMES[feat::HOP_COUNT_NORM], "hop_count_norm");
        assert_eq!(
            FEATURE_NAMES[feat::FOCAL_DISTANCE_NORM],
            "focal_distance_norm"
        );
        let mut names = FEATURE_NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FEATURE_DIM, "feature names are unique");
    }

    #[test]
    fn canary_bits_are_distinct() {
        let mask = Canary::all().fold(0u16, |m, c| {
            assert_eq!(m & c.bit(), 0, "{} reuses a bit", c.name());
            m | c.bit()
        });
        assert_eq!(mask.count_ones(), 14);
    }
}
