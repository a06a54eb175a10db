//! Loading a dataset written by `ssmkit gen` into per-user sequences, with the checks a
//! trainer needs: the layout version, the feature names, finite values, a consistent
//! candidate count, rows in (user, turn, candidate) order.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rustc_hash::FxHashMap;

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
    /// `[T, K, MAX_HOPS, HOP_DIM]` hop features, zero-padded; `[T, K]` hop counts (both
    /// empty when the read left the hops out, [`Columns::hops`]).
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

/// Part of one table: the rows read and the number of the first one in the file (error
/// messages give file row numbers).
struct Part {
    file: PathBuf,
    df: DataFrame,
    base: usize,
}

impl Part {
    fn col(&self, name: &str) -> Result<&Column> {
        self.df
            .column(name)
            .map_err(|_| bad(&self.file, format!("missing column `{name}`")))
    }
}

/// Opens a table and reads its Parquet footer.
fn metadata(path: &Path, table: &str) -> Result<Meta> {
    let file_path = path.join(table);
    let file = File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
    let mut reader = ParquetReader::new(file);
    let meta = reader
        .get_metadata()
        .map_err(|e| bad(&file_path, format!("not a readable Parquet table: {e}")))?;
    Ok(meta.clone())
}

type Meta = std::sync::Arc<polars::prelude::FileMetadata>;

/// Rows `rows` of a table (only `columns`, when given). Each read maps the file afresh and
/// drops the mapping when done, so memory holds only the rows asked for.
fn read_rows(
    path: &Path,
    table: &str,
    meta: &Meta,
    rows: Range<usize>,
    columns: Option<&[&str]>,
) -> Result<Part> {
    let file_path = path.join(table);
    let file = File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
    let mut reader = ParquetReader::new(file);
    reader.set_metadata(meta.clone());
    let df = reader
        .with_slice(Some((rows.start, rows.len())))
        .with_columns(columns.map(|c| c.iter().map(|s| s.to_string()).collect()))
        .finish()
        .map_err(|e| bad(&file_path, format!("not a readable Parquet table: {e}")))?;
    Ok(Part {
        file: file_path,
        df,
        base: rows.start,
    })
}

macro_rules! getter {
    ($fn:ident, $t:ty, $acc:ident) => {
        fn $fn(part: &Part, name: &str) -> Result<Vec<$t>> {
            let c = part.col(name)?;
            let ca = c.$acc().map_err(|_| {
                bad(
                    &part.file,
                    format!(
                        "column `{name}` has type {}, expected {}",
                        c.dtype(),
                        stringify!($t)
                    ),
                )
            })?;
            if ca.null_count() > 0 {
                return Err(bad(
                    &part.file,
                    format!("column `{name}` has {} nulls", ca.null_count()),
                ));
            }
            Ok(ca.into_no_null_iter().collect())
        }
    };
}
getter!(any_f32s, f32, f32);

/// A float column, every value finite.
fn f32s(part: &Part, name: &str) -> Result<Vec<f32>> {
    let v = any_f32s(part, name)?;
    match v.iter().position(|x| !x.is_finite()) {
        Some(r) => Err(bad(
            &part.file,
            format!(
                "column `{name}` row {} is {}: NaN and infinite values are refused",
                part.base + r,
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

/// What a read holds beside what every model reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Columns {
    /// The features before noise (only the SNR analysis reads them).
    pub clean: bool,
    /// The path hops (only the dual variant's path encoder reads them).
    pub hops: bool,
}

impl Columns {
    pub const ALL: Columns = Columns {
        clean: true,
        hops: true,
    };
}

/// Bytes one turn of `k` candidates takes while it is read and held as a [`UserSeq`]:
/// every candidate slot with its features (observed, missing flags and, with
/// `columns.clean`, clean), ids, content and (with `columns.hops`) path hops, plus the
/// Parquet columns held while it is read.
pub fn bytes_per_turn(k: usize, embedding_dim: usize, columns: Columns) -> u64 {
    let copies = if columns.clean { 3 } else { 2 };
    let hops = if columns.hops {
        MAX_HOPS * HOP_DIM * 4
    } else {
        0
    };
    let per_slot = copies * FEATURE_DIM * 4 + 6 * 4 + 4 + embedding_dim * 4 + hops;
    let columns = ((copies - 1) * FEATURE_DIM + 16) * 4;
    (k * (per_slot + columns)) as u64
}

/// Bytes [`Dataset::load`] needs for a whole dataset, from its manifest.
pub fn estimated_bytes(manifest: &serde_json::Value) -> u64 {
    let turns = manifest["counts"]["turns"].as_u64().unwrap_or(0);
    let k = manifest["k"].as_u64().unwrap_or(0) as usize;
    let e = manifest["embedding_dim"].as_u64().unwrap_or(0) as usize;
    turns * bytes_per_turn(k, e, Columns::ALL)
}

/// `MemAvailable` of /proc/meminfo, where there is one.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reads and checks a dataset's manifest.
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

/// Rows read at a time while a table's `user_id` column is scanned.
const SCAN_ROWS: usize = 1 << 22;

/// The runs of equal `user_id` in a table, as (user id, rows), read a slice at a time.
fn user_runs(path: &Path, table: &str, meta: &Meta) -> Result<Vec<(u32, Range<usize>)>> {
    let mut runs: Vec<(u32, Range<usize>)> = Vec::new();
    let n = meta.num_rows;
    let mut start = 0;
    while start < n {
        let end = (start + SCAN_ROWS).min(n);
        let part = read_rows(path, table, meta, start..end, Some(&["user_id"]))?;
        for (i, u) in u32s(&part, "user_id")?.into_iter().enumerate() {
            let r = start + i;
            match runs.last_mut() {
                Some((last, rows)) if *last == u => rows.end = r + 1,
                _ => runs.push((u, r..r + 1)),
            }
        }
        start = end;
    }
    Ok(runs)
}

/// A dataset opened for reading a range of its users at a time: training holds a bounded
/// number of users in memory however large the dataset is, and [`Dataset::load`] reads
/// every user through the same path.
///
/// Opening checks the manifest, the files' SHA-256 and row counts, and reads only the
/// id columns: each user's turns and the rows of its candidates, memories and paths.
pub struct DatasetReader {
    /// Every user, in file order, with only `user_id`, `stage`, `turns` and `timestamp`
    /// filled: enough to split the data and plan what to read.
    pub outline: Dataset,
    /// Each user's rows in the four tables ([`writer::TABLES`] order).
    rows: Vec<[Range<usize>; 4]>,
    meta: [Meta; 4],
}

impl DatasetReader {
    pub fn open(path: &Path) -> Result<DatasetReader> {
        let manifest = read_manifest(path)?;
        let embedding_dim = manifest["embedding_dim"].as_u64().unwrap_or(0) as usize;
        let k = manifest["k"].as_u64().unwrap_or(0) as usize;
        if k == 0 || k > 256 {
            return Err(bad(path, format!("manifest has k = {k}")));
        }
        verify_files(path, &manifest)?;
        let meta: [Meta; 4] = [
            metadata(path, writer::TURNS)?,
            metadata(path, writer::CANDIDATES)?,
            metadata(path, writer::MEMORIES)?,
            metadata(path, writer::PATHS)?,
        ];
        let height = |i: usize| meta[i].num_rows;
        if height(0) == 0 || height(1) == 0 {
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
        for (i, key) in ["turns", "candidates", "memories", "paths"]
            .iter()
            .enumerate()
        {
            let file = writer::TABLES[i];
            let rows = height(i);
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
        let schema = read_rows(path, writer::TURNS, &meta[0], 0..0, None)?;
        if schema.df.column(&format!("query_{embedding_dim}")).is_ok() {
            return Err(bad(
                path,
                format!(
                    "the manifest's embedding_dim is {embedding_dim} but {} has more query columns",
                    writer::TURNS
                ),
            ));
        }

        // The users and their turns.
        let turns = read_rows(
            path,
            writer::TURNS,
            &meta[0],
            0..height(0),
            Some(&["user_id", "turn_index", "stage", "timestamp"]),
        )?;
        let t_user = u32s(&turns, "user_id")?;
        let t_index = u32s(&turns, "turn_index")?;
        let t_stage = u8s(&turns, "stage")?;
        let t_ts = i64s(&turns, "timestamp")?;
        let mut users: Vec<UserSeq> = Vec::new();
        let mut rows: Vec<[Range<usize>; 4]> = Vec::new();
        let mut position: HashMap<u32, usize> = HashMap::new();
        for r in 0..t_user.len() {
            if users.last().is_none_or(|u| u.user_id != t_user[r]) {
                if position.insert(t_user[r], users.len()).is_some() {
                    return Err(bad(
                        &turns.file,
                        format!(
                            "the turns of user {} are not together at row {r}: rows must come in user order",
                            t_user[r]
                        ),
                    ));
                }
                users.push(UserSeq {
                    user_id: t_user[r],
                    stage: t_stage[r],
                    ..Default::default()
                });
                rows.push(std::array::from_fn(|_| 0..0));
                rows.last_mut().expect("pushed")[0] = r..r;
            }
            let u = users.last_mut().expect("pushed");
            if t_index[r] as usize != u.turns {
                return Err(bad(
                    path,
                    format!("turns of user {} are not in order at row {r}", t_user[r]),
                ));
            }
            u.turns += 1;
            u.timestamp.push(t_ts[r]);
            rows.last_mut().expect("pushed")[0].end = r + 1;
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

        // Each user's rows in the other tables: together, and in the users' order.
        // Candidates of an unknown user are an error; memories and paths of one are unused.
        for (i, table) in writer::TABLES.iter().enumerate().skip(1) {
            let mut last = None;
            for (u, range) in user_runs(path, table, &meta[i])? {
                let Some(&p) = position.get(&u) else {
                    if i == 1 {
                        return Err(bad(
                            path,
                            format!(
                                "candidate row {} refers to a turn that does not exist",
                                range.start
                            ),
                        ));
                    }
                    continue;
                };
                if last.is_some_and(|l| p <= l) {
                    return Err(bad(
                        &path.join(table),
                        format!(
                            "the rows of user {u} at row {} are not in the order of {}: rows must come in user order",
                            range.start,
                            writer::TURNS
                        ),
                    ));
                }
                last = Some(p);
                rows[p][i] = range;
            }
        }
        Ok(DatasetReader {
            outline: Dataset {
                path: path.to_path_buf(),
                manifest,
                k,
                embedding_dim,
                users,
                names: Vec::new(),
            },
            rows,
            meta,
        })
    }

    /// Number of users.
    pub fn users(&self) -> usize {
        self.outline.users.len()
    }

    /// Users `range` (positions in file order), with the optional `columns`.
    pub fn read(&self, range: Range<usize>, columns: Columns) -> Result<Dataset> {
        let path = &self.outline.path;
        let span = |i: usize| {
            let rs = self.rows[range.clone()]
                .iter()
                .map(|r| r[i].clone())
                .filter(|r| !r.is_empty());
            let (mut lo, mut hi) = (usize::MAX, 0);
            for r in rs {
                lo = lo.min(r.start);
                hi = hi.max(r.end);
            }
            if lo > hi { 0..0 } else { lo..hi }
        };
        let mut candidate_columns: Vec<String> = [
            "user_id",
            "turn_index",
            "cand_index",
            "mask",
            "label",
            "relevance",
            "memory_slot",
            "memory_id",
            "entity_id",
            "canary",
            "canary_role",
            "hard_negative",
            "path_id",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        candidate_columns.extend(FEATURE_NAMES.iter().map(|s| s.to_string()));
        if columns.clean {
            candidate_columns.extend(FEATURE_NAMES.iter().map(|n| clean_column(n)));
        }
        let candidate_columns: Vec<&str> = candidate_columns.iter().map(|s| s.as_str()).collect();
        let hop_rows = if columns.hops { span(3) } else { 0..0 };
        let parts = [
            read_rows(path, writer::TURNS, &self.meta[0], span(0), None)?,
            read_rows(
                path,
                writer::CANDIDATES,
                &self.meta[1],
                span(1),
                Some(&candidate_columns),
            )?,
            read_rows(path, writer::MEMORIES, &self.meta[2], span(2), None)?,
            read_rows(path, writer::PATHS, &self.meta[3], hop_rows, None)?,
        ];
        assemble(&self.outline, parts, columns)
    }
}

/// Users in a run of neighbours that a sample takes or leaves together.
const SAMPLE_RUN: usize = 64;

/// A seeded sample of the users at `positions` (ascending) whose turns add up to at most
/// `budget` (at least one): all of them when they fit; otherwise runs of up to 64
/// neighbours in `positions`, drawn at random until the budget is spent (neighbours are read together,
/// which keeps a sample of a large dataset quick to read). Ascending.
pub fn sample_users(
    outline: &Dataset,
    positions: Vec<usize>,
    budget: usize,
    seed: u64,
) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let turns = |i: usize| outline.users[i].turns;
    if positions.iter().map(|&i| turns(i)).sum::<usize>() <= budget {
        return positions;
    }
    let mut runs: Vec<&[usize]> = positions.chunks(SAMPLE_RUN).collect();
    runs.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ 0x5A3F_1E00,
    ));
    let mut used = 0;
    let mut out = Vec::new();
    // A budget smaller than every user still holds one.
    let first = runs.first().and_then(|r| r.first()).copied();
    for run in runs {
        for &i in run {
            if used + turns(i) <= budget {
                used += turns(i);
                out.push(i);
            }
        }
    }
    if out.is_empty() {
        out.extend(first);
    }
    out.sort_unstable();
    out
}

impl DatasetReader {
    /// The users at `positions` (ascending), each run of neighbours read at once.
    pub fn read_users(&self, positions: &[usize], columns: Columns) -> Result<Dataset> {
        let mut users = Vec::with_capacity(positions.len());
        let mut names: Vec<String> = Vec::new();
        let mut at = 0;
        while at < positions.len() {
            let mut end = at + 1;
            while end < positions.len() && positions[end] == positions[end - 1] + 1 {
                end += 1;
            }
            let part = self.read(positions[at]..positions[end - 1] + 1, columns)?;
            // Name indices are per read: map them onto one list.
            for mut u in part.users {
                for n in &mut u.name {
                    let name = &part.names[*n as usize];
                    *n = match names.iter().position(|x| x == name) {
                        Some(i) => i as u32,
                        None => {
                            names.push(name.clone());
                            names.len() as u32 - 1
                        }
                    };
                }
                users.push(u);
            }
            at = end;
        }
        Ok(Dataset {
            users,
            names,
            ..Dataset::clone_empty(&self.outline)
        })
    }
}

impl Dataset {
    /// Loads every user of the dataset at `path`, refusing one that cannot fit in memory
    /// (train reads a large dataset a range of users at a time instead).
    pub fn load(path: &Path) -> Result<Dataset> {
        let manifest = read_manifest(path)?;
        if let Some(available) = available_memory() {
            let need = estimated_bytes(&manifest);
            if need > available {
                return Err(bad(
                    path,
                    format!(
                        "loading every user needs about {:.1} GB of memory and {:.1} GB is available: `ssmkit train` reads a dataset this large a part at a time ([train] resident_mb), this command cannot yet",
                        need as f64 / 1e9,
                        available as f64 / 1e9
                    ),
                ));
            }
        }
        let reader = DatasetReader::open(path)?;
        reader.read(0..reader.users(), Columns::ALL)
    }
}

/// Builds the users of `parts` (rows of the four tables, whole users) into a dataset
/// like `outline`; rows must come in (user, turn, candidate) order.
fn assemble(outline: &Dataset, parts: [Part; 4], columns: Columns) -> Result<Dataset> {
    let clean = columns.clean;
    let (path, k, embedding_dim) = (&outline.path, outline.k, outline.embedding_dim);
    let [turns, cands, mems, paths] = parts;
    // Turns.
    let t_user = u32s(&turns, "user_id")?;
    let t_index = u32s(&turns, "turn_index")?;
    let t_stage = u8s(&turns, "stage")?;
    let t_ts = i64s(&turns, "timestamp")?;
    let t_session = u32s(&turns, "session_index")?;
    let context: Vec<Vec<f32>> = CONTEXT_NAMES
        .iter()
        .map(|n| f32s(&turns, n))
        .collect::<Result<_>>()?;
    let query: Vec<Vec<f32>> = (0..embedding_dim)
        .map(|d| f32s(&turns, &format!("query_{d}")))
        .collect::<Result<_>>()?;
    let f0 = i32s(&turns, "focal_0")?;
    let f1 = i32s(&turns, "focal_1")?;
    // Turn names: optional (datasets without them have no column).
    let mut names: Vec<String> = Vec::new();
    let name_index: Option<Vec<u32>> = match turns.df.column("name") {
        Err(_) => None,
        Ok(c) => {
            let ca = c.str().map_err(|_| {
                bad(
                    &turns.file,
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
        .map(|s| i32s(&turns, s.column()))
        .collect::<Result<_>>()?;

    // Candidates.
    let c_user = u32s(&cands, "user_id")?;
    let c_turn = u32s(&cands, "turn_index")?;
    let c_index = u8s(&cands, "cand_index")?;
    let feats: Vec<Vec<f32>> = FEATURE_NAMES
        .iter()
        .map(|n| f32s(&cands, n))
        .collect::<Result<_>>()?;
    let clean_feats: Vec<Vec<f32>> = if clean {
        FEATURE_NAMES
            .iter()
            .map(|n| f32s(&cands, &clean_column(n)))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let mask = u32s(&cands, "mask")?;
    let label = u8s(&cands, "label")?;
    if let Some(r) = label.iter().position(|&l| l > 1) {
        return Err(bad(
            &cands.file,
            format!(
                "column `label` row {} is {}: labels are 0 or 1",
                cands.base + r,
                label[r]
            ),
        ));
    }
    let relevance = f32s(&cands, "relevance")?;
    let memory_slot = u32s(&cands, "memory_slot")?;
    if let Some(slots) = outline.manifest["config"]["world"]["memory_slots"].as_u64()
        && let Some(r) = memory_slot.iter().position(|&m| m as u64 >= slots)
    {
        return Err(bad(
            &cands.file,
            format!(
                "column `memory_slot` row {} is {}, outside the manifest's {slots} memory slots",
                cands.base + r,
                memory_slot[r]
            ),
        ));
    }
    let memory_id = u32s(&cands, "memory_id")?;
    let entity = u32s(&cands, "entity_id")?;
    let canary = u16s(&cands, "canary")?;
    let role = u8s(&cands, "canary_role")?;
    if let Some(r) = role
        .iter()
        .position(|&c| crate::canary::Role::from_code(c).is_none())
    {
        return Err(bad(
            path,
            format!(
                "candidate row {}: unknown canary_role {}",
                cands.base + r,
                role[r]
            ),
        ));
    }
    let hard = u8s(&cands, "hard_negative")?;
    let path_id = u32s(&cands, "path_id")?;

    // Memory embeddings (a row of `emb` per (user, memory id)) and path hops (the rows
    // of `hop_order[start..start + len]` per (user, path id), in file order).
    let mut content: FxHashMap<(u32, u32), usize> = FxHashMap::default();
    let mut emb: Vec<Vec<f32>> = Vec::new();
    if embedding_dim > 0 {
        let mu = u32s(&mems, "user_id")?;
        let mi = u32s(&mems, "memory_id")?;
        emb = (0..embedding_dim)
            .map(|d| f32s(&mems, &format!("embedding_{d}")))
            .collect::<Result<_>>()?;
        for r in 0..mu.len() {
            content.insert((mu[r], mi[r]), r);
        }
    }
    let pu = u32s(&paths, "user_id")?;
    let pi = u32s(&paths, "path_id")?;
    let hop_columns: [Vec<f32>; HOP_DIM] = [
        u8s(&paths, "hop_type")?
            .into_iter()
            .map(f32::from)
            .collect(),
        f32s(&paths, "edge_confidence")?,
        f32s(&paths, "aspect_weight")?,
        u8s(&paths, "community_crossing")?
            .into_iter()
            .map(f32::from)
            .collect(),
        f32s(&paths, "dependency_strength")?,
    ];
    // Hops of a path come together in generated data; any other order is sorted (stable,
    // so each path keeps its hops' order).
    let mut hop_order: Vec<usize> = (0..pu.len()).collect();
    if pu
        .windows(2)
        .zip(pi.windows(2))
        .any(|(u, p)| (u[0], p[0]) > (u[1], p[1]))
    {
        hop_order.sort_by_key(|&r| (pu[r], pi[r]));
    }
    let mut hop_rows: FxHashMap<(u32, u32), (usize, usize)> = FxHashMap::default();
    for (i, &r) in hop_order.iter().enumerate() {
        hop_rows.entry((pu[r], pi[r])).or_insert((i, 0)).1 += 1;
    }

    // Assemble users; rows must come in (user, turn, candidate) order.
    let mut users: Vec<UserSeq> = Vec::new();
    let mut turn_of: FxHashMap<(u32, u32), (usize, usize)> = FxHashMap::default();
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
        if clean {
            u.clean_features = vec![0.0; t * k * FEATURE_DIM];
        }
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
        if columns.hops {
            u.hops = vec![0.0; t * k * MAX_HOPS * HOP_DIM];
            u.hop_count = vec![0; t * k];
        }
    }
    let mut last: Option<((u32, u32), (usize, usize))> = None;
    for r in 0..c_user.len() {
        let key = (c_user[r], c_turn[r]);
        let found = match last {
            Some((k, at)) if k == key => Some(at),
            _ => turn_of.get(&key).copied(),
        };
        let Some((ui, ti)) = found else {
            return Err(bad(
                path,
                format!(
                    "candidate row {} refers to a turn that does not exist",
                    cands.base + r
                ),
            ));
        };
        let ci = c_index[r] as usize;
        if ci >= k {
            return Err(bad(
                path,
                format!(
                    "candidate row {} has index {ci}, but k = {k}",
                    cands.base + r
                ),
            ));
        }
        last = Some((key, (ui, ti)));
        let u = &mut users[ui];
        let slot = ti * k + ci;
        if u.valid[slot] == 1.0 {
            return Err(bad(
                path,
                format!(
                    "candidate row {} repeats candidate {ci} of user {} turn {ti}",
                    cands.base + r,
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
                        "candidate row {}: feature {} is {x}; NaN and infinite features are refused",
                        cands.base + r,
                        FEATURE_NAMES[d]
                    ),
                ));
            }
            if mask[r] >> d & 1 == 0 {
                u.features[slot * FEATURE_DIM + d] = x;
                u.missing[slot * FEATURE_DIM + d] = 0.0;
                if clean {
                    u.clean_features[slot * FEATURE_DIM + d] = clean_feats[d][r];
                }
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
        if let Some(&m) = content.get(&(c_user[r], memory_id[r])) {
            for (d, column) in emb.iter().enumerate() {
                u.content[slot * embedding_dim + d] = column[m];
            }
        }
        if columns.hops
            && let Some(&(start, len)) = hop_rows.get(&(c_user[r], path_id[r]))
        {
            let n = len.min(MAX_HOPS);
            u.hop_count[slot] = n as u8;
            for (h, &row) in hop_order[start..start + n].iter().enumerate() {
                let at = (slot * MAX_HOPS + h) * HOP_DIM;
                for (d, column) in hop_columns.iter().enumerate() {
                    u.hops[at + d] = column[row];
                }
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
    Ok(Dataset {
        path: path.to_path_buf(),
        manifest: outline.manifest.clone(),
        k,
        embedding_dim,
        users,
        names,
    })
}

impl Dataset {
    /// A dataset like `data` without its users.
    pub fn clone_empty(data: &Dataset) -> Dataset {
        Dataset {
            path: data.path.clone(),
            manifest: data.manifest.clone(),
            k: data.k,
            embedding_dim: data.embedding_dim,
            users: Vec::new(),
            names: data.names.clone(),
        }
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
