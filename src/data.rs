//! Loading a dataset written by `ssmkit gen` into per-user sequences, with the checks a
//! trainer needs: the layout version, the feature names, finite values, a consistent
//! candidate count, rows in (user, turn, candidate) order.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::datagen::writer;
use crate::error::{Error, Result};
use crate::features::{
    FEATURE_DIM, FEATURE_NAMES, HOP_FEATURE_NAMES, LAYOUT_VERSION, MAX_HOPS, clean_column,
};

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
pub const HOP_DIM: usize = HOP_FEATURE_NAMES.len();

/// One user's turns, flattened row-major.
#[derive(Clone, Debug, Default)]
pub struct UserSeq {
    pub user_id: u32,
    pub stage: u8,
    pub turns: usize,
    pub timestamp: Vec<i64>,
    pub session: Vec<u32>,
    /// `[T, CONTEXT_DIM]`
    pub context: Vec<f32>,
    /// `[T, E]` query embedding.
    pub query: Vec<f32>,
    /// `[T, 2]` focal entity ids, −1 for none.
    pub focal: Vec<i32>,
    /// `[T, K, FEATURE_DIM]` observed features (missing ones are 0).
    pub features: Vec<f32>,
    /// `[T, K, FEATURE_DIM]` 1 where a feature is missing.
    pub missing: Vec<f32>,
    /// `[T, K]` 1 for a candidate row that exists (imported turns may have fewer than K).
    pub valid: Vec<f32>,
    /// `[T, K]` observed labels, 0/1.
    pub labels: Vec<f32>,
    /// `[T, K, F]` the features before noise (the generator's truth), for the SNR curve.
    pub clean_features: Vec<f32>,
    /// `[T, K]` clean relevance probability.
    pub relevance: Vec<f32>,
    /// `[T, K]`
    pub memory_slot: Vec<u32>,
    pub memory_id: Vec<u32>,
    pub entity: Vec<u32>,
    pub canary: Vec<u16>,
    /// `[T, K]` the candidate's contract-canary role ([`crate::canary::Role`] code).
    pub role: Vec<u8>,
    pub hard_negative: Vec<u8>,
    /// The user's selector entities Z, W, P, T (−1: none planted).
    pub selectors: [i32; 4],
    /// `[T, K, E]` content embedding of each candidate memory (zeros when absent).
    pub content: Vec<f32>,
    /// `[T, K, MAX_HOPS, HOP_DIM]` hop features, zero-padded; `[T, K]` hop counts.
    pub hops: Vec<f32>,
    pub hop_count: Vec<u8>,
    /// `[T, K, HISTORY_DIM]` history features of a window cut from a longer sequence,
    /// computed over the whole sequence ([`crate::history::sequence_features`]); empty for
    /// a sequence that starts at the user's first turn (they are computed from it).
    pub history: Vec<f32>,
    /// `[T]` each turn's name (the scenario or pattern it comes from) as an index into
    /// [`Dataset::names`]; empty when the dataset names no turn.
    pub name: Vec<u32>,
}

impl UserSeq {
    /// The history features `[T, K, HISTORY_DIM]` of the sequence's turns.
    pub fn history_features(&self, k: usize) -> std::borrow::Cow<'_, [f32]> {
        if self.history.is_empty() {
            std::borrow::Cow::Owned(crate::history::sequence_features(
                &self.timestamp,
                &self.valid,
                &self.labels,
                &self.memory_id,
                k,
            ))
        } else {
            std::borrow::Cow::Borrowed(&self.history)
        }
    }
}

/// A loaded dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub path: PathBuf,
    pub manifest: serde_json::Value,
    /// Candidates per turn.
    pub k: usize,
    /// Content embedding dimension (0 for imported data).
    pub embedding_dim: usize,
    pub users: Vec<UserSeq>,
    /// The distinct turn names of `turns.parquet`'s `name` column, in order of first
    /// appearance (empty: no such column).
    pub names: Vec<String>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Checks every table against the SHA-256 and row count the manifest records for it.
fn verify_files(path: &Path, manifest: &serde_json::Value) -> Result<()> {
    for table in writer::TABLES {
        let entry = &manifest["files"][table];
        let (Some(want), Some(_rows)) = (entry["sha256"].as_str(), entry["rows"].as_u64()) else {
            return Err(bad(
                path,
                format!("the manifest records no SHA-256 and row count of {table}"),
            ));
        };
        let file_path = path.join(table);
        if writer::sha256_file(&file_path)? != want {
            return Err(bad(
                &file_path,
                "does not match the SHA-256 the manifest records: the dataset is damaged or was edited",
            ));
        }
    }
    Ok(())
}

fn read(path: &Path, table: &str) -> Result<DataFrame> {
    let file_path = path.join(table);
    let file = File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| bad(&file_path, format!("not a readable Parquet table: {e}")))
}

fn col<'a>(path: &Path, df: &'a DataFrame, name: &str) -> Result<&'a Column> {
    df.column(name)
        .map_err(|_| bad(path, format!("missing column `{name}`")))
}

macro_rules! getter {
    ($fn:ident, $t:ty, $acc:ident) => {
        fn $fn(path: &Path, df: &DataFrame, name: &str) -> Result<Vec<$t>> {
            let c = col(path, df, name)?;
            let ca = c.$acc().map_err(|_| {
                bad(
                    path,
                    format!(
                        "column `{name}` has type {}, expected {}",
                        c.dtype(),
                        stringify!($t)
                    ),
                )
            })?;
            if ca.null_count() > 0 {
                return Err(bad(
                    path,
                    format!("column `{name}` has {} nulls", ca.null_count()),
                ));
            }
            Ok(ca.into_no_null_iter().collect())
        }
    };
}
getter!(any_f32s, f32, f32);

/// A float column, every value finite.
fn f32s(path: &Path, df: &DataFrame, name: &str) -> Result<Vec<f32>> {
    let v = any_f32s(path, df, name)?;
    match v.iter().position(|x| !x.is_finite()) {
        Some(r) => Err(bad(
            path,
            format!(
                "column `{name}` row {r} is {}: NaN and infinite values are refused",
                v[r]
            ),
        )),
        None => Ok(v),
    }
}
getter!(u32s, u32, u32);
getter!(u16s, u16, u16);
getter!(u8s, u8, u8);
getter!(i32s, i32, i32);
getter!(i64s, i64, i64);

/// Reads and checks a dataset's manifest.
/// Bytes the loader needs for a dataset, from its manifest: every (turn, candidate slot)
/// with its features (observed, clean, missing flags), ids, content and path hops, plus
/// the Parquet columns held while they are read.
pub fn estimated_bytes(manifest: &serde_json::Value) -> u64 {
    let n = |k: &str| manifest["counts"][k].as_u64().unwrap_or(0);
    let k = manifest["k"].as_u64().unwrap_or(0);
    let e = manifest["embedding_dim"].as_u64().unwrap_or(0);
    let per_slot = 3 * FEATURE_DIM as u64 * 4 + 6 * 4 + 4 + e * 4 + (MAX_HOPS * HOP_DIM) as u64 * 4;
    let columns = n("candidates") * (2 * FEATURE_DIM as u64 + 16) * 4;
    n("turns") * k * per_slot + columns
}

/// `MemAvailable` of /proc/meminfo, where there is one.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn read_manifest(path: &Path) -> Result<serde_json::Value> {
    let mpath = path.join(writer::MANIFEST);
    let text = std::fs::read_to_string(&mpath).map_err(|e| Error::io(&mpath, e))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(&mpath, format!("not a JSON manifest: {e}")))?;
    let layout = manifest["layout_version"].as_str().unwrap_or("none");
    if layout != LAYOUT_VERSION {
        return Err(bad(
            path,
            format!(
                "dataset has feature layout {layout}, this build reads {LAYOUT_VERSION}: regenerate it with `ssmkit gen`"
            ),
        ));
    }
    let names: Vec<&str> = manifest["features"]
        .as_array()
        .map_or(vec![], |a| a.iter().filter_map(|v| v.as_str()).collect());
    if names != FEATURE_NAMES {
        return Err(bad(
            path,
            format!("manifest lists features {names:?}, not the {LAYOUT_VERSION} layout"),
        ));
    }
    Ok(manifest)
}

impl Dataset {
    /// Loads every user of the dataset at `path`.
    pub fn load(path: &Path) -> Result<Dataset> {
        let manifest = read_manifest(path)?;
        let embedding_dim = manifest["embedding_dim"].as_u64().unwrap_or(0) as usize;
        // The loader holds the whole dataset in memory: refuse one that cannot fit rather
        // than be killed half-way.
        if let Some(available) = available_memory() {
            let need = estimated_bytes(&manifest);
            if need > available {
                return Err(bad(
                    path,
                    format!(
                        "loading needs about {:.1} GB of memory and {:.1} GB is available; the in-memory loader cannot read a dataset this large (a streaming loader is not built yet)",
                        need as f64 / 1e9,
                        available as f64 / 1e9
                    ),
                ));
            }
        }
        verify_files(path, &manifest)?;
        let turns = read(path, writer::TURNS)?;
        let cands = read(path, writer::CANDIDATES)?;
        let mems = read(path, writer::MEMORIES)?;
        let paths = read(path, writer::PATHS)?;
        // Column errors name the table file.
        let (turns_file, cands_file) = (path.join(writer::TURNS), path.join(writer::CANDIDATES));
        let (mems_file, paths_file) = (path.join(writer::MEMORIES), path.join(writer::PATHS));
        if turns.height() == 0 || cands.height() == 0 {
            return Err(bad(path, "the dataset has no turns"));
        }
        // The manifest describes these tables: its counts and widths must match them.
        for key in ["users", "turns", "candidates"] {
            if !manifest["counts"][key].is_u64() {
                return Err(bad(
                    path,
                    format!("the manifest's counts.{key} is not a count"),
                ));
            }
        }
        for (key, file, rows) in [
            ("turns", writer::TURNS, turns.height()),
            ("candidates", writer::CANDIDATES, cands.height()),
            ("memories", writer::MEMORIES, mems.height()),
            ("paths", writer::PATHS, paths.height()),
        ] {
            let counted = [
                manifest["counts"][key].as_u64(),
                manifest["files"][file]["rows"].as_u64(),
            ];
            for n in counted.into_iter().flatten() {
                if n != rows as u64 {
                    return Err(bad(
                        path,
                        format!("the manifest counts {n} {key} but {file} holds {rows} rows"),
                    ));
                }
            }
        }
        if turns.column(&format!("query_{embedding_dim}")).is_ok() {
            return Err(bad(
                path,
                format!(
                    "the manifest's embedding_dim is {embedding_dim} but {} has more query columns",
                    writer::TURNS
                ),
            ));
        }

        // Turns.
        let t_user = u32s(&turns_file, &turns, "user_id")?;
        let t_index = u32s(&turns_file, &turns, "turn_index")?;
        let t_stage = u8s(&turns_file, &turns, "stage")?;
        let t_ts = i64s(&turns_file, &turns, "timestamp")?;
        let t_session = u32s(&turns_file, &turns, "session_index")?;
        let context: Vec<Vec<f32>> = CONTEXT_NAMES
            .iter()
            .map(|n| f32s(&turns_file, &turns, n))
            .collect::<Result<_>>()?;
        let query: Vec<Vec<f32>> = (0..embedding_dim)
            .map(|d| f32s(&turns_file, &turns, &format!("query_{d}")))
            .collect::<Result<_>>()?;
        let f0 = i32s(&turns_file, &turns, "focal_0")?;
        let f1 = i32s(&turns_file, &turns, "focal_1")?;
        // Turn names: optional (datasets without them have no column).
        let mut names: Vec<String> = Vec::new();
        let name_index: Option<Vec<u32>> = match turns.column("name") {
            Err(_) => None,
            Ok(c) => {
                let ca = c.str().map_err(|_| {
                    bad(
                        &turns_file,
                        format!("column `name` has type {}, expected text", c.dtype()),
                    )
                })?;
                let mut seen: HashMap<String, u32> = HashMap::new();
                let mut out = Vec::with_capacity(ca.len());
                for v in ca.iter() {
                    let v = v.unwrap_or("");
                    let i = match seen.get(v) {
                        Some(&i) => i,
                        None => {
                            names.push(v.to_string());
                            seen.insert(v.to_string(), names.len() as u32 - 1);
                            names.len() as u32 - 1
                        }
                    };
                    out.push(i);
                }
                Some(out)
            }
        };
        let selectors: Vec<Vec<i32>> = crate::canary::Selector::ALL
            .iter()
            .map(|s| i32s(&turns_file, &turns, s.column()))
            .collect::<Result<_>>()?;

        // Candidates.
        let c_user = u32s(&cands_file, &cands, "user_id")?;
        let c_turn = u32s(&cands_file, &cands, "turn_index")?;
        let c_index = u8s(&cands_file, &cands, "cand_index")?;
        let feats: Vec<Vec<f32>> = FEATURE_NAMES
            .iter()
            .map(|n| f32s(&cands_file, &cands, n))
            .collect::<Result<_>>()?;
        let clean_feats: Vec<Vec<f32>> = FEATURE_NAMES
            .iter()
            .map(|n| f32s(&cands_file, &cands, &clean_column(n)))
            .collect::<Result<_>>()?;
        let mask = u32s(&cands_file, &cands, "mask")?;
        let label = u8s(&cands_file, &cands, "label")?;
        if let Some(r) = label.iter().position(|&l| l > 1) {
            return Err(bad(
                &cands_file,
                format!("column `label` row {r} is {}: labels are 0 or 1", label[r]),
            ));
        }
        let relevance = f32s(&cands_file, &cands, "relevance")?;
        let memory_slot = u32s(&cands_file, &cands, "memory_slot")?;
        if let Some(slots) = manifest["config"]["world"]["memory_slots"].as_u64()
            && let Some(r) = memory_slot.iter().position(|&m| m as u64 >= slots)
        {
            return Err(bad(
                &cands_file,
                format!(
                    "column `memory_slot` row {r} is {}, outside the manifest's {slots} memory slots",
                    memory_slot[r]
                ),
            ));
        }
        let memory_id = u32s(&cands_file, &cands, "memory_id")?;
        let entity = u32s(&cands_file, &cands, "entity_id")?;
        let canary = u16s(&cands_file, &cands, "canary")?;
        let role = u8s(&cands_file, &cands, "canary_role")?;
        if let Some(r) = role
            .iter()
            .position(|&c| crate::canary::Role::from_code(c).is_none())
        {
            return Err(bad(
                path,
                format!("candidate row {r}: unknown canary_role {}", role[r]),
            ));
        }
        let hard = u8s(&cands_file, &cands, "hard_negative")?;
        let path_id = u32s(&cands_file, &cands, "path_id")?;
        let k = manifest["k"].as_u64().unwrap_or(0) as usize;
        if k == 0 || k > 256 {
            return Err(bad(path, format!("manifest has k = {k}")));
        }

        // Memory embeddings and path hops, keyed by (user, id).
        let mut content: HashMap<(u32, u32), Vec<f32>> = HashMap::new();
        if embedding_dim > 0 {
            let mu = u32s(&mems_file, &mems, "user_id")?;
            let mi = u32s(&mems_file, &mems, "memory_id")?;
            let emb: Vec<Vec<f32>> = (0..embedding_dim)
                .map(|d| f32s(&mems_file, &mems, &format!("embedding_{d}")))
                .collect::<Result<_>>()?;
            for r in 0..mu.len() {
                content.insert((mu[r], mi[r]), emb.iter().map(|c| c[r]).collect());
            }
        }
        let mut hop_rows: HashMap<(u32, u32), Vec<[f32; HOP_DIM]>> = HashMap::new();
        {
            let pu = u32s(&paths_file, &paths, "user_id")?;
            let pi = u32s(&paths_file, &paths, "path_id")?;
            let ht = u8s(&paths_file, &paths, "hop_type")?;
            let cols: Vec<Vec<f32>> = ["edge_confidence", "aspect_weight"]
                .iter()
                .map(|n| f32s(&paths_file, &paths, n))
                .collect::<Result<_>>()?;
            let cross = u8s(&paths_file, &paths, "community_crossing")?;
            let strength = f32s(&paths_file, &paths, "dependency_strength")?;
            for r in 0..pu.len() {
                hop_rows.entry((pu[r], pi[r])).or_default().push([
                    ht[r] as f32,
                    cols[0][r],
                    cols[1][r],
                    cross[r] as f32,
                    strength[r],
                ]);
            }
        }

        // Assemble users; rows must come in (user, turn, candidate) order.
        let mut users: Vec<UserSeq> = Vec::new();
        let mut turn_of: HashMap<(u32, u32), (usize, usize)> = HashMap::new();
        for r in 0..t_user.len() {
            if users.last().is_none_or(|u| u.user_id != t_user[r]) {
                users.push(UserSeq {
                    user_id: t_user[r],
                    stage: t_stage[r],
                    selectors: std::array::from_fn(|i| selectors[i][r]),
                    ..Default::default()
                });
            }
            let ui = users.len() - 1;
            let u = &mut users[ui];
            if t_index[r] as usize != u.turns {
                return Err(bad(
                    path,
                    format!("turns of user {} are not in order at row {r}", t_user[r]),
                ));
            }
            turn_of.insert((t_user[r], t_index[r]), (ui, u.turns));
            u.turns += 1;
            u.timestamp.push(t_ts[r]);
            u.session.push(t_session[r]);
            for c in &context {
                u.context.push(c[r]);
            }
            for q in &query {
                u.query.push(q[r]);
            }
            u.focal.extend([f0[r], f1[r]]);
            if let Some(n) = &name_index {
                u.name.push(n[r]);
            }
        }
        for u in &mut users {
            let t = u.turns;
            u.features = vec![0.0; t * k * FEATURE_DIM];
            u.clean_features = vec![0.0; t * k * FEATURE_DIM];
            u.missing = vec![1.0; t * k * FEATURE_DIM];
            u.valid = vec![0.0; t * k];
            u.labels = vec![0.0; t * k];
            u.relevance = vec![0.0; t * k];
            u.memory_slot = vec![0; t * k];
            u.memory_id = vec![0; t * k];
            u.entity = vec![0; t * k];
            u.canary = vec![0; t * k];
            u.role = vec![0; t * k];
            u.hard_negative = vec![0; t * k];
            u.content = vec![0.0; t * k * embedding_dim];
            u.hops = vec![0.0; t * k * MAX_HOPS * HOP_DIM];
            u.hop_count = vec![0; t * k];
        }
        for r in 0..c_user.len() {
            let Some(&(ui, ti)) = turn_of.get(&(c_user[r], c_turn[r])) else {
                return Err(bad(
                    path,
                    format!("candidate row {r} refers to a turn that does not exist"),
                ));
            };
            let ci = c_index[r] as usize;
            if ci >= k {
                return Err(bad(
                    path,
                    format!("candidate row {r} has index {ci}, but k = {k}"),
                ));
            }
            let u = &mut users[ui];
            let slot = ti * k + ci;
            if u.valid[slot] == 1.0 {
                return Err(bad(
                    path,
                    format!(
                        "candidate row {r} repeats candidate {ci} of user {} turn {ti}",
                        c_user[r]
                    ),
                ));
            }
            u.valid[slot] = 1.0;
            for (d, column) in feats.iter().enumerate() {
                let x = column[r];
                if !x.is_finite() {
                    return Err(bad(
                        path,
                        format!(
                            "candidate row {r}: feature {} is {x}; NaN and infinite features are refused",
                            FEATURE_NAMES[d]
                        ),
                    ));
                }
                if mask[r] >> d & 1 == 0 {
                    u.features[slot * FEATURE_DIM + d] = x;
                    u.missing[slot * FEATURE_DIM + d] = 0.0;
                    u.clean_features[slot * FEATURE_DIM + d] = clean_feats[d][r];
                }
            }
            u.labels[slot] = label[r] as f32;
            u.relevance[slot] = relevance[r];
            u.memory_slot[slot] = memory_slot[r];
            u.memory_id[slot] = memory_id[r];
            u.entity[slot] = entity[r];
            u.canary[slot] = canary[r];
            u.role[slot] = role[r];
            u.hard_negative[slot] = hard[r];
            if let Some(e) = content.get(&(c_user[r], memory_id[r])) {
                u.content[slot * embedding_dim..(slot + 1) * embedding_dim].copy_from_slice(e);
            }
            if let Some(hops) = hop_rows.get(&(c_user[r], path_id[r])) {
                let n = hops.len().min(MAX_HOPS);
                u.hop_count[slot] = n as u8;
                for (h, hop) in hops.iter().take(n).enumerate() {
                    let at = (slot * MAX_HOPS + h) * HOP_DIM;
                    u.hops[at..at + HOP_DIM].copy_from_slice(hop);
                }
            }
        }
        for u in &users {
            for t in 0..u.turns {
                if u.valid[t * k..(t + 1) * k].iter().all(|&v| v == 0.0) {
                    return Err(bad(
                        path,
                        format!("user {} turn {t} has no candidate", u.user_id),
                    ));
                }
            }
        }
        let counted = manifest["counts"]["users"].as_u64().unwrap_or(0);
        if counted != users.len() as u64 {
            return Err(bad(
                path,
                format!(
                    "the manifest counts {counted} users but {} holds {}",
                    writer::TURNS,
                    users.len()
                ),
            ));
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            manifest,
            k,
            embedding_dim,
            users,
            names,
        })
    }

    pub fn turns(&self) -> usize {
        self.users.iter().map(|u| u.turns).sum()
    }

    /// Whether the turns have a time axis (timestamps that order them): false for the
    /// `poc` preset and for JSONL without timestamps, which are split at random
    /// ([`crate::train::batch::Cutoffs`]).
    pub fn time_axis(&self) -> bool {
        self.manifest["time_axis"].as_bool().unwrap_or(true)
    }

    /// Whether `relevance` holds graded labels (the PoC preset and JSONL imports: a label
    /// above 0.5 counts as relevant) rather than the generator's relevance probability.
    pub fn graded_labels(&self) -> bool {
        self.manifest["graded_labels"].as_bool().unwrap_or(false)
    }

    /// The name of turn `t` of `u` ("" when the dataset names no turn).
    pub fn name_of(&self, u: &UserSeq, t: usize) -> &str {
        u.name.get(t).map_or("", |&i| &self.names[i as usize])
    }
}
