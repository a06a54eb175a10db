//! Column buffers of the four dataset tables, filled per user and turned into polars
//! frames by the writer. Column names and order here are the on-disk schema.

use polars::prelude::*;

use crate::features::{FEATURE_DIM, FEATURE_NAMES, clean_column};

/// One row per turn.
#[derive(Default, Clone)]
pub struct Turns {
    pub user_id: Vec<u32>,
    pub turn_index: Vec<u32>,
    pub session_index: Vec<u32>,
    pub turn_in_session: Vec<u32>,
    pub timestamp: Vec<i64>,
    pub stage: Vec<u8>,
    pub log_dt: Vec<f32>,
    pub tod_sin: Vec<f32>,
    pub tod_cos: Vec<f32>,
    pub dow_sin: Vec<f32>,
    pub dow_cos: Vec<f32>,
    pub log_session_age: Vec<f32>,
    pub focal_0: Vec<i32>,
    pub focal_1: Vec<i32>,
    /// The user's selector entities Z, W, P, T (`selector_z` …), −1 without canaries.
    pub selectors: [Vec<i32>; 4],
    /// Where in the week the user's cycle entity X peaks, in days from Monday 00:00
    /// (`cycle_peak`), −1 without canaries.
    pub cycle_peak: Vec<f32>,
    pub canary: Vec<u16>,
    pub n_relevant: Vec<u8>,
    /// Candidate slots that were filled as negatives (hard negatives are drawn from these).
    pub negative_slots: Vec<u8>,
    /// Query embedding, `[turn][dim]` flattened.
    pub query: Vec<f32>,
    /// Each turn's name (its scenario or pattern); empty for data that names no turn,
    /// which then has no `name` column.
    pub name: Vec<String>,
}

impl Turns {
    /// Starts turn `index` of `user` in `slot`: its ids, time and time encodings (the
    /// previous turn was at `prev_ts`). The focal, canary and query columns follow.
    pub fn push_time(
        &mut self,
        user: u32,
        index: u32,
        stage: u8,
        slot: &super::schedule::Slot,
        prev_ts: Option<i64>,
    ) {
        use super::calendar::{self, angle};
        let ts = slot.ts;
        let (tod_s, tod_c) = angle(calendar::hour(ts) / 24.0);
        let (dow_s, dow_c) = angle(calendar::weekday(ts).floor() / 7.0);
        self.user_id.push(user);
        self.turn_index.push(index);
        self.session_index.push(slot.session);
        self.turn_in_session.push(slot.turn_in_session);
        self.timestamp.push(ts);
        self.stage.push(stage);
        self.log_dt
            .push(prev_ts.map_or(0.0, |p| ((ts - p) as f64).ln_1p()) as f32);
        self.tod_sin.push(tod_s);
        self.tod_cos.push(tod_c);
        self.dow_sin.push(dow_s);
        self.dow_cos.push(dow_c);
        self.log_session_age
            .push(((ts - slot.session_start) as f64).ln_1p() as f32);
    }
}

/// One row per turn × candidate.
#[derive(Default, Clone)]
pub struct Candidates {
    pub user_id: Vec<u32>,
    pub turn_index: Vec<u32>,
    pub cand_index: Vec<u8>,
    pub memory_id: Vec<u32>,
    pub entity_id: Vec<u32>,
    pub memory_slot: Vec<u32>,
    pub path_id: Vec<u32>,
    /// The memory's part in a contract canary ([`crate::canary::Role`] code, 0 = none).
    pub canary_role: Vec<u8>,
    /// Observed (noisy) features, column-major: `feat[d][row]`; empty until the noise pass
    /// draws them, and left empty where readers rebuild them.
    pub feat: [Vec<f32>; FEATURE_DIM],
    pub clean: [Vec<f32>; FEATURE_DIM],
    /// Bit d set: feature d is missing (its value is 0).
    pub mask: Vec<u32>,
    pub label: Vec<u8>,
    pub clean_label: Vec<u8>,
    pub relevance: Vec<f32>,
    pub canary: Vec<u16>,
    pub hard_negative: Vec<u8>,
}

/// One row per memory that appears in some candidate set.
#[derive(Default, Clone)]
pub struct Memories {
    pub user_id: Vec<u32>,
    pub memory_id: Vec<u32>,
    pub entity_id: Vec<u32>,
    pub aspect: Vec<u16>,
    pub attribute: Vec<u16>,
    pub created: Vec<i64>,
    pub importance: Vec<f32>,
    pub pinned: Vec<u8>,
    pub superseded_at: Vec<Option<i64>>,
    pub supersedes: Vec<Option<u32>>,
    pub community: Vec<u16>,
    /// Content embedding, `[memory][dim]` flattened.
    pub embedding: Vec<f32>,
}

/// One row per hop of each distinct traversal path.
#[derive(Default, Clone)]
pub struct Paths {
    pub user_id: Vec<u32>,
    pub path_id: Vec<u32>,
    pub hop: Vec<u8>,
    pub hop_type: Vec<u8>,
    pub edge_confidence: Vec<f32>,
    pub aspect_weight: Vec<f32>,
    pub community_crossing: Vec<u8>,
    pub dependency_strength: Vec<f32>,
}

/// Everything one user (or one batch of users) contributes.
#[derive(Default, Clone)]
pub struct Tables {
    pub turns: Turns,
    pub candidates: Candidates,
    pub memories: Memories,
    pub paths: Paths,
}

impl Candidates {
    /// Room for `rows` more rows in every column.
    pub fn reserve(&mut self, rows: usize) {
        self.user_id.reserve(rows);
        self.turn_index.reserve(rows);
        self.cand_index.reserve(rows);
        self.memory_id.reserve(rows);
        self.entity_id.reserve(rows);
        self.memory_slot.reserve(rows);
        self.path_id.reserve(rows);
        self.canary_role.reserve(rows);
        for c in &mut self.clean {
            c.reserve(rows);
        }
        self.mask.reserve(rows);
        self.label.reserve(rows);
        self.clean_label.reserve(rows);
        self.relevance.reserve(rows);
        self.canary.reserve(rows);
        self.hard_negative.reserve(rows);
    }

    /// Pushes one row's features as both the observed and the clean values (imported
    /// data, which has no clean truth).
    pub fn push_features(&mut self, x: &[f32; FEATURE_DIM]) {
        self.push_clean(x);
        for (f, &v) in self.feat.iter_mut().zip(x) {
            f.push(v);
        }
    }

    /// Pushes one row's clean features (the noise pass draws the observed ones).
    pub fn push_clean(&mut self, x: &[f32; FEATURE_DIM]) {
        for (d, &v) in x.iter().enumerate() {
            self.clean[d].push(v);
        }
    }
}

fn append<T: Clone>(a: &mut Vec<T>, b: &[T]) {
    a.extend_from_slice(b);
}

/// One table's columns, appended to user by user.
pub trait Append: Default {
    /// Appends another user's rows (users are appended in id order).
    fn extend(&mut self, o: &Self);

    /// Room for the rows of `parts`, so that appending them moves each value once.
    fn reserve_for<'a>(&mut self, _parts: impl Iterator<Item = &'a Self> + Clone)
    where
        Self: 'a,
    {
    }

    /// The rows of `parts`, one after another.
    fn merged<'a>(parts: impl Iterator<Item = &'a Self> + Clone) -> Self
    where
        Self: 'a,
    {
        let mut all = Self::default();
        all.reserve_for(parts.clone());
        for part in parts {
            all.extend(part);
        }
        all
    }
}

impl Append for Turns {
    fn extend(&mut self, o: &Turns) {
        let (t, ot) = (self, o);
        append(&mut t.user_id, &ot.user_id);
        append(&mut t.turn_index, &ot.turn_index);
        append(&mut t.session_index, &ot.session_index);
        append(&mut t.turn_in_session, &ot.turn_in_session);
        append(&mut t.timestamp, &ot.timestamp);
        append(&mut t.stage, &ot.stage);
        append(&mut t.log_dt, &ot.log_dt);
        append(&mut t.tod_sin, &ot.tod_sin);
        append(&mut t.tod_cos, &ot.tod_cos);
        append(&mut t.dow_sin, &ot.dow_sin);
        append(&mut t.dow_cos, &ot.dow_cos);
        append(&mut t.log_session_age, &ot.log_session_age);
        append(&mut t.focal_0, &ot.focal_0);
        append(&mut t.focal_1, &ot.focal_1);
        for (a, b) in t.selectors.iter_mut().zip(&ot.selectors) {
            append(a, b);
        }
        append(&mut t.cycle_peak, &ot.cycle_peak);
        append(&mut t.canary, &ot.canary);
        append(&mut t.n_relevant, &ot.n_relevant);
        append(&mut t.negative_slots, &ot.negative_slots);
        append(&mut t.query, &ot.query);
        append(&mut t.name, &ot.name);
    }
}

impl Append for Candidates {
    fn reserve_for<'a>(&mut self, parts: impl Iterator<Item = &'a Candidates> + Clone) {
        let rows: usize = parts.clone().map(|c| c.user_id.len()).sum();
        self.reserve(rows);
        if parts.into_iter().any(|c| !c.feat[0].is_empty()) {
            for f in &mut self.feat {
                f.reserve(rows);
            }
        }
    }

    fn extend(&mut self, o: &Candidates) {
        let (c, oc) = (self, o);
        append(&mut c.user_id, &oc.user_id);
        append(&mut c.turn_index, &oc.turn_index);
        append(&mut c.cand_index, &oc.cand_index);
        append(&mut c.memory_id, &oc.memory_id);
        append(&mut c.entity_id, &oc.entity_id);
        append(&mut c.memory_slot, &oc.memory_slot);
        append(&mut c.path_id, &oc.path_id);
        append(&mut c.canary_role, &oc.canary_role);
        for d in 0..FEATURE_DIM {
            append(&mut c.feat[d], &oc.feat[d]);
            append(&mut c.clean[d], &oc.clean[d]);
        }
        append(&mut c.mask, &oc.mask);
        append(&mut c.label, &oc.label);
        append(&mut c.clean_label, &oc.clean_label);
        append(&mut c.relevance, &oc.relevance);
        append(&mut c.canary, &oc.canary);
        append(&mut c.hard_negative, &oc.hard_negative);
    }
}

impl Append for Memories {
    fn extend(&mut self, o: &Memories) {
        let (m, om) = (self, o);
        append(&mut m.user_id, &om.user_id);
        append(&mut m.memory_id, &om.memory_id);
        append(&mut m.entity_id, &om.entity_id);
        append(&mut m.aspect, &om.aspect);
        append(&mut m.attribute, &om.attribute);
        append(&mut m.created, &om.created);
        append(&mut m.importance, &om.importance);
        append(&mut m.pinned, &om.pinned);
        append(&mut m.superseded_at, &om.superseded_at);
        append(&mut m.supersedes, &om.supersedes);
        append(&mut m.community, &om.community);
        append(&mut m.embedding, &om.embedding);
    }
}

impl Append for Paths {
    fn extend(&mut self, o: &Paths) {
        let (p, op) = (self, o);
        append(&mut p.user_id, &op.user_id);
        append(&mut p.path_id, &op.path_id);
        append(&mut p.hop, &op.hop);
        append(&mut p.hop_type, &op.hop_type);
        append(&mut p.edge_confidence, &op.edge_confidence);
        append(&mut p.aspect_weight, &op.aspect_weight);
        append(&mut p.community_crossing, &op.community_crossing);
        append(&mut p.dependency_strength, &op.dependency_strength);
    }
}

fn col<T>(name: &str, v: Vec<T::Native>) -> Column
where
    T: PolarsNumericType,
{
    ChunkedArray::<T>::from_vec(name.into(), v)
        .into_series()
        .into_column()
}

/// Splits a flattened `[row][dim]` buffer into `prefix_0 … prefix_{dim-1}` columns.
fn split_columns(prefix: &str, flat: Vec<f32>, dim: usize) -> Vec<Column> {
    let rows = flat.len().checked_div(dim).unwrap_or(0);
    (0..dim)
        .map(|d| {
            let v: Vec<f32> = (0..rows).map(|r| flat[r * dim + d]).collect();
            col::<Float32Type>(&format!("{prefix}_{d}"), v)
        })
        .collect()
}

impl Turns {
    pub fn into_frame(self, dim: usize) -> PolarsResult<DataFrame> {
        let mut cols = vec![
            col::<UInt32Type>("user_id", self.user_id),
            col::<UInt32Type>("turn_index", self.turn_index),
            col::<UInt32Type>("session_index", self.session_index),
            col::<UInt32Type>("turn_in_session", self.turn_in_session),
            col::<Int64Type>("timestamp", self.timestamp),
            col::<UInt8Type>("stage", self.stage),
            col::<Float32Type>("log_dt", self.log_dt),
            col::<Float32Type>("tod_sin", self.tod_sin),
            col::<Float32Type>("tod_cos", self.tod_cos),
            col::<Float32Type>("dow_sin", self.dow_sin),
            col::<Float32Type>("dow_cos", self.dow_cos),
            col::<Float32Type>("log_session_age", self.log_session_age),
            col::<Int32Type>("focal_0", self.focal_0),
            col::<Int32Type>("focal_1", self.focal_1),
        ];
        let [z, w, p, t] = self.selectors;
        for (s, v) in crate::canary::Selector::ALL.iter().zip([z, w, p, t]) {
            cols.push(col::<Int32Type>(s.column(), v));
        }
        cols.extend([
            col::<Float32Type>("cycle_peak", self.cycle_peak),
            col::<UInt16Type>("canary", self.canary),
            col::<UInt8Type>("n_relevant", self.n_relevant),
            col::<UInt8Type>("negative_slots", self.negative_slots),
        ]);
        if !self.name.is_empty() {
            cols.push(Column::new("name".into(), self.name));
        }
        cols.extend(split_columns("query", self.query, dim));
        DataFrame::new_infer_height(cols)
    }
}

impl Candidates {
    /// The table as written; without `observed`, the observed feature columns and `mask`
    /// are left out (readers rebuild them, [`crate::manifest::NoiseRecord`]).
    pub fn into_frame(self, observed: bool) -> PolarsResult<DataFrame> {
        let mut cols = vec![
            col::<UInt32Type>("user_id", self.user_id),
            col::<UInt32Type>("turn_index", self.turn_index),
            col::<UInt8Type>("cand_index", self.cand_index),
            col::<UInt32Type>("memory_id", self.memory_id),
            col::<UInt32Type>("entity_id", self.entity_id),
            col::<UInt32Type>("memory_slot", self.memory_slot),
            col::<UInt32Type>("path_id", self.path_id),
            col::<UInt8Type>("canary_role", self.canary_role),
        ];
        let [feat, clean] = [self.feat, self.clean];
        if observed {
            for (d, v) in feat.into_iter().enumerate() {
                cols.push(col::<Float32Type>(FEATURE_NAMES[d], v));
            }
        }
        for (d, v) in clean.into_iter().enumerate() {
            cols.push(col::<Float32Type>(&clean_column(FEATURE_NAMES[d]), v));
        }
        if observed {
            cols.push(col::<UInt32Type>("mask", self.mask));
        }
        cols.extend([
            col::<UInt8Type>("label", self.label),
            col::<UInt8Type>("clean_label", self.clean_label),
            col::<Float32Type>("relevance", self.relevance),
            col::<UInt16Type>("canary", self.canary),
            col::<UInt8Type>("hard_negative", self.hard_negative),
        ]);
        DataFrame::new_infer_height(cols)
    }
}

impl Memories {
    pub fn into_frame(self, dim: usize) -> PolarsResult<DataFrame> {
        let mut cols = vec![
            col::<UInt32Type>("user_id", self.user_id),
            col::<UInt32Type>("memory_id", self.memory_id),
            col::<UInt32Type>("entity_id", self.entity_id),
            col::<UInt16Type>("aspect", self.aspect),
            col::<UInt16Type>("attribute", self.attribute),
            col::<Int64Type>("created", self.created),
            col::<Float32Type>("importance", self.importance),
            col::<UInt8Type>("pinned", self.pinned),
            Int64Chunked::from_iter_options("superseded_at".into(), self.superseded_at.into_iter())
                .into_series()
                .into_column(),
            UInt32Chunked::from_iter_options("supersedes".into(), self.supersedes.into_iter())
                .into_series()
                .into_column(),
            col::<UInt16Type>("community", self.community),
        ];
        cols.extend(split_columns("embedding", self.embedding, dim));
        DataFrame::new_infer_height(cols)
    }
}

impl Paths {
    pub fn into_frame(self) -> PolarsResult<DataFrame> {
        DataFrame::new_infer_height(vec![
            col::<UInt32Type>("user_id", self.user_id),
            col::<UInt32Type>("path_id", self.path_id),
            col::<UInt8Type>("hop", self.hop),
            col::<UInt8Type>("hop_type", self.hop_type),
            col::<Float32Type>("edge_confidence", self.edge_confidence),
            col::<Float32Type>("aspect_weight", self.aspect_weight),
            col::<UInt8Type>("community_crossing", self.community_crossing),
            col::<Float32Type>("dependency_strength", self.dependency_strength),
        ])
    }
}
