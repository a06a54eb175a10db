//! [`DatasetReader`]: a dataset opened by its id columns, read a range of users at a time.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use super::assemble::assemble;
use super::table::{Meta, i64s, metadata, read_rows, u8s, u32s, user_runs, verify_files};
use super::{Columns, Dataset, UserSeq, bad};
use crate::error::Result;
use crate::features::{FEATURE_NAMES, clean_column};
use crate::layout;
use crate::manifest::Manifest;

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
    /// Each user's rows in the four tables ([`layout::TABLES`] order).
    rows: Vec<[Range<usize>; 4]>,
    meta: [Meta; 4],
}

impl DatasetReader {
    pub fn open(path: &Path) -> Result<DatasetReader> {
        let manifest = Manifest::read(path)?;
        let embedding_dim = manifest.embedding_dim;
        let k = manifest.candidates_per_turn;
        if k == 0 || k > 256 {
            return Err(bad(path, format!("manifest has k = {k}")));
        }
        verify_files(path, &manifest)?;
        let meta: [Meta; 4] = [
            metadata(path, layout::TURNS)?,
            metadata(path, layout::CANDIDATES)?,
            metadata(path, layout::MEMORIES)?,
            metadata(path, layout::PATHS)?,
        ];
        if meta[0].num_rows == 0 || meta[1].num_rows == 0 {
            return Err(bad(path, "the dataset has no turns"));
        }
        check_counts(path, &manifest, &meta)?;
        check_width(path, embedding_dim, &meta[0])?;
        let (users, mut rows, position) = read_users(path, &manifest, &meta[0])?;
        locate_rows(path, &meta, &position, &mut rows)?;
        Ok(DatasetReader {
            outline: Dataset {
                path: path.to_path_buf(),
                manifest: std::sync::Arc::new(manifest),
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
        let at_read = self.outline.manifest.observed_at_read();
        let mut candidate_columns: Vec<String> = [
            "user_id",
            "turn_index",
            "cand_index",
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
        if !at_read {
            candidate_columns.push("mask".to_string());
            candidate_columns.extend(FEATURE_NAMES.iter().map(|s| s.to_string()));
        }
        if columns.clean || at_read {
            candidate_columns.extend(FEATURE_NAMES.iter().map(|n| clean_column(n)));
        }
        let candidate_columns: Vec<&str> = candidate_columns.iter().map(|s| s.as_str()).collect();
        let hop_rows = if columns.hops { span(3) } else { 0..0 };
        let parts = [
            read_rows(path, layout::TURNS, &self.meta[0], span(0), None)?,
            read_rows(
                path,
                layout::CANDIDATES,
                &self.meta[1],
                span(1),
                Some(&candidate_columns),
            )?,
            read_rows(path, layout::MEMORIES, &self.meta[2], span(2), None)?,
            read_rows(path, layout::PATHS, &self.meta[3], hop_rows, None)?,
        ];
        assemble(&self.outline, parts, columns)
    }

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

/// Consecutive blocks of a sequence of users whose turns (`turns`, in order) add up to at
/// most `budget` each; a user longer than the budget is a block of its own. Ranges index
/// the sequence.
pub fn blocks(turns: impl IntoIterator<Item = usize>, budget: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut sum, mut i) = (0, 0, 0);
    for n in turns {
        if i > start && sum + n > budget {
            out.push(start..i);
            (start, sum) = (i, 0);
        }
        sum += n;
        i += 1;
    }
    if start < i {
        out.push(start..i);
    }
    out
}

/// Users in a run of neighbours that a sample takes or leaves together.
const SAMPLE_RUN: usize = 64;

/// A seeded sample of the users at `positions` (ascending) whose turns add up to at most
/// `budget` (at least one): all of them when they fit; otherwise runs of up to 64
/// neighbours in `positions`, drawn at random until the budget is spent (neighbours are
/// read together, which keeps a sample of a large dataset quick to read). Ascending.
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

/// The manifest describes the tables: its counts must match their rows.
fn check_counts(path: &Path, manifest: &Manifest, meta: &[Meta; 4]) -> Result<()> {
    let c = &manifest.counts;
    let counts = [Some(c.turns), Some(c.candidates), c.memories, c.path_hops];
    let keys = ["turns", "candidates", "memories", "path_hops"];
    for (i, (key, counted)) in keys.iter().zip(counts).enumerate() {
        let file = layout::TABLES[i];
        let rows = meta[i].num_rows;
        let recorded = manifest.files.get(file).map(|f| f.rows);
        for n in [counted, recorded].into_iter().flatten() {
            if n != rows as u64 {
                return Err(bad(
                    path,
                    format!("the manifest counts {n} {key} but {file} holds {rows} rows"),
                ));
            }
        }
    }
    Ok(())
}

/// The turns table holds query columns for exactly the manifest's `embedding_dim`.
fn check_width(path: &Path, embedding_dim: usize, turns_meta: &Meta) -> Result<()> {
    let schema = read_rows(path, layout::TURNS, turns_meta, 0..0, None)?;
    if schema.df.column(&format!("query_{embedding_dim}")).is_ok() {
        return Err(bad(
            path,
            format!(
                "the manifest's embedding_dim is {embedding_dim} but {} has more query columns",
                layout::TURNS
            ),
        ));
    }
    Ok(())
}

/// The users and their turns (ids, stages, timestamps), with each user's rows of the
/// turns table and each user id's position; the turns of a user must be together and in
/// order, and their number the manifest's.
#[allow(clippy::type_complexity)]
fn read_users(
    path: &Path,
    manifest: &Manifest,
    turns_meta: &Meta,
) -> Result<(Vec<UserSeq>, Vec<[Range<usize>; 4]>, HashMap<u32, usize>)> {
    let turns = read_rows(
        path,
        layout::TURNS,
        turns_meta,
        0..turns_meta.num_rows,
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
                &turns.file,
                format!("turns of user {} are not in order at row {r}", t_user[r]),
            ));
        }
        u.turns += 1;
        // Unix seconds within ±10¹³ (as import takes them): no sum or difference of two
        // can overflow.
        if t_ts[r].unsigned_abs() >= 10_000_000_000_000 {
            return Err(bad(
                &turns.file,
                format!("timestamp {} at row {r} is not Unix seconds", t_ts[r]),
            ));
        }
        u.timestamp.push(t_ts[r]);
        rows.last_mut().expect("pushed")[0].end = r + 1;
    }
    let counted = manifest.counts.users;
    if counted != users.len() as u64 {
        return Err(bad(
            path,
            format!(
                "the manifest counts {counted} users but {} holds {}",
                layout::TURNS,
                users.len()
            ),
        ));
    }
    Ok((users, rows, position))
}

/// Each user's rows in the other tables: together, and in the users' order. Candidates of
/// an unknown user are an error; memories and paths of one are unused.
fn locate_rows(
    path: &Path,
    meta: &[Meta; 4],
    position: &HashMap<u32, usize>,
    rows: &mut [[Range<usize>; 4]],
) -> Result<()> {
    for (i, table) in layout::TABLES.iter().enumerate().skip(1) {
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
                        layout::TURNS
                    ),
                ));
            }
            last = Some(p);
            rows[p][i] = range;
        }
    }
    Ok(())
}
