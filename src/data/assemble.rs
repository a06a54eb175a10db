//! Building users from rows of the four tables: each table's columns are read and
//! checked, the users are made from the turns, then each candidate row is placed in its
//! user's turn with its content embedding and path hops.

use std::collections::HashMap;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::table::{Part, f32s, i32s, i64s, u8s, u16s, u32s};
use super::{CONTEXT_NAMES, Columns, Dataset, HOP_DIM, UserSeq, bad};
use crate::config::NoiseConfig;
use crate::datagen::{Stream, noise, rng_for};
use crate::error::Result;
use crate::features::{FEATURE_DIM, FEATURE_NAMES, MAX_HOPS, clean_column};
use crate::manifest::NoiseRecord;

/// Builds the users of `parts` (rows of the four tables, whole users) into a dataset
/// like `outline`; rows must come in (user, turn, candidate) order.
pub(super) fn assemble(outline: &Dataset, parts: [Part; 4], columns: Columns) -> Result<Dataset> {
    let (path, k, embedding_dim) = (&outline.path, outline.k, outline.embedding_dim);
    let [turns, cands, mems, paths] = parts;
    let t = TurnColumns::read(&turns, embedding_dim)?;
    let mut c = CandidateColumns::read(&cands, outline, columns.clean)?;
    let content = Content::read(&mems, embedding_dim)?;
    let hops = Hops::read(&paths)?;
    let (mut users, turn_of) = t.users(path)?;
    if let Some(noise) = outline.manifest.noise.as_ref()
        && noise.observed_at_read
    {
        c.observe(noise, outline.manifest.seed, &users, &cands.file)?;
    }
    for u in &mut users {
        u.allocate(k, embedding_dim, columns);
    }
    let mut last: Option<((u32, u32), (usize, usize))> = None;
    for r in 0..c.user.len() {
        let key = (c.user[r], c.turn[r]);
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
        last = Some((key, (ui, ti)));
        let u = &mut users[ui];
        let slot = c.place(r, u, ti, k, path)?;
        c.fill(r, u, slot, columns.clean, path)?;
        content.fill(u, slot, c.memory_id[r], embedding_dim);
        if columns.hops {
            hops.fill(u, slot, c.path_id[r]);
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
        names: t.names,
    })
}

/// The turns table's columns.
struct TurnColumns {
    user: Vec<u32>,
    index: Vec<u32>,
    stage: Vec<u8>,
    timestamp: Vec<i64>,
    session: Vec<u32>,
    context: Vec<Vec<f32>>,
    query: Vec<Vec<f32>>,
    focal: [Vec<i32>; 2],
    /// Each turn's name as an index into `names` (datasets without names have no column).
    name_index: Option<Vec<u32>>,
    names: Vec<String>,
    selectors: Vec<Vec<i32>>,
    /// The cycle's per-user peak (datasets written before it was drawn per user lack it).
    cycle_peak: Option<Vec<f32>>,
}

impl TurnColumns {
    fn read(turns: &Part, embedding_dim: usize) -> Result<TurnColumns> {
        let (name_index, names) = match turns.df.column("name") {
            Err(_) => (None, Vec::new()),
            Ok(c) => {
                let ca = c.str().map_err(|_| {
                    bad(
                        &turns.file,
                        format!("column `name` has type {}, expected text", c.dtype()),
                    )
                })?;
                let (index, names) = intern(ca.iter().map(|v| v.unwrap_or("")));
                (Some(index), names)
            }
        };
        Ok(TurnColumns {
            user: u32s(turns, "user_id")?,
            index: u32s(turns, "turn_index")?,
            stage: u8s(turns, "stage")?,
            timestamp: i64s(turns, "timestamp")?,
            session: u32s(turns, "session_index")?,
            context: CONTEXT_NAMES
                .iter()
                .map(|n| f32s(turns, n))
                .collect::<Result<_>>()?,
            query: (0..embedding_dim)
                .map(|d| f32s(turns, &format!("query_{d}")))
                .collect::<Result<_>>()?,
            focal: [i32s(turns, "focal_0")?, i32s(turns, "focal_1")?],
            name_index,
            names,
            selectors: crate::canary::Selector::ALL
                .iter()
                .map(|s| i32s(turns, s.column()))
                .collect::<Result<_>>()?,
            cycle_peak: match turns.df.column("cycle_peak") {
                Err(_) => None,
                Ok(_) => Some(f32s(turns, "cycle_peak")?),
            },
        })
    }

    /// The users of these turns, and where each (user id, turn index) is among them.
    #[allow(clippy::type_complexity)]
    fn users(
        &self,
        path: &std::path::Path,
    ) -> Result<(Vec<UserSeq>, FxHashMap<(u32, u32), (usize, usize)>)> {
        let mut users: Vec<UserSeq> = Vec::new();
        let mut turn_of: FxHashMap<(u32, u32), (usize, usize)> = FxHashMap::default();
        for r in 0..self.user.len() {
            if users.last().is_none_or(|u| u.user_id != self.user[r]) {
                users.push(UserSeq {
                    user_id: self.user[r],
                    stage: self.stage[r],
                    selectors: std::array::from_fn(|i| self.selectors[i][r]),
                    cycle_peak: self.cycle_peak.as_ref().map_or(-1.0, |c| c[r] as f64),
                    ..Default::default()
                });
            }
            let ui = users.len() - 1;
            let u = &mut users[ui];
            if self.index[r] as usize != u.turns {
                return Err(bad(
                    path,
                    format!("turns of user {} are not in order at row {r}", self.user[r]),
                ));
            }
            turn_of.insert((self.user[r], self.index[r]), (ui, u.turns));
            u.turns += 1;
            u.timestamp.push(self.timestamp[r]);
            u.session.push(self.session[r]);
            for c in &self.context {
                u.context.push(c[r]);
            }
            for q in &self.query {
                u.query.push(q[r]);
            }
            u.focal.extend([self.focal[0][r], self.focal[1][r]]);
            if let Some(n) = &self.name_index {
                u.name.push(n[r]);
            }
        }
        Ok((users, turn_of))
    }
}

/// Each value's index among the distinct values, in order of first appearance, and the
/// distinct values.
fn intern<'a>(values: impl Iterator<Item = &'a str>) -> (Vec<u32>, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let index = values
        .map(|v| {
            *seen.entry(v.to_string()).or_insert_with(|| {
                names.push(v.to_string());
                names.len() as u32 - 1
            })
        })
        .collect();
    (index, names)
}

/// The candidates table's columns, checked where a value could break a user.
struct CandidateColumns {
    base: usize,
    user: Vec<u32>,
    turn: Vec<u32>,
    index: Vec<u8>,
    features: Vec<Vec<f32>>,
    clean_features: Vec<Vec<f32>>,
    mask: Vec<u32>,
    label: Vec<u8>,
    relevance: Vec<f32>,
    memory_slot: Vec<u32>,
    memory_id: Vec<u32>,
    entity: Vec<u32>,
    canary: Vec<u16>,
    role: Vec<u8>,
    hard: Vec<u8>,
    path_id: Vec<u32>,
}

impl CandidateColumns {
    fn read(cands: &Part, outline: &Dataset, clean: bool) -> Result<CandidateColumns> {
        let path = &outline.path;
        let label = u8s(cands, "label")?;
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
        let memory_slot = u32s(cands, "memory_slot")?;
        let slots = outline.manifest.memory_slots();
        if let Some(r) = memory_slot.iter().position(|&m| m >= slots) {
            return Err(bad(
                &cands.file,
                format!(
                    "column `memory_slot` row {} is {}, outside the manifest's {slots} memory slots",
                    cands.base + r,
                    memory_slot[r]
                ),
            ));
        }
        let role = u8s(cands, "canary_role")?;
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
        let columns = |name: fn(&str) -> String| -> Result<Vec<Vec<f32>>> {
            FEATURE_NAMES
                .iter()
                .map(|n| f32s(cands, &name(n)))
                .collect()
        };
        let at_read = outline.manifest.observed_at_read();
        let rows = label.len();
        Ok(CandidateColumns {
            base: cands.base,
            user: u32s(cands, "user_id")?,
            turn: u32s(cands, "turn_index")?,
            index: u8s(cands, "cand_index")?,
            features: if at_read {
                vec![vec![0.0; rows]; FEATURE_DIM]
            } else {
                columns(|n| n.to_string())?
            },
            clean_features: if clean || at_read {
                columns(clean_column)?
            } else {
                Vec::new()
            },
            mask: if at_read {
                vec![0; rows]
            } else {
                u32s(cands, "mask")?
            },
            label,
            relevance: f32s(cands, "relevance")?,
            memory_slot,
            memory_id: u32s(cands, "memory_id")?,
            entity: u32s(cands, "entity_id")?,
            canary: u16s(cands, "canary")?,
            role,
            hard: u8s(cands, "hard_negative")?,
            path_id: u32s(cands, "path_id")?,
        })
    }

    /// Rebuilds the observed features and `mask` of every user's rows (all of them: a
    /// read holds whole users) from the clean columns with `noise` and the user's
    /// feature-noise stream, as `gen` drew them; users in parallel.
    fn observe(
        &mut self,
        noise: &NoiseRecord,
        seed: u64,
        users: &[UserSeq],
        file: &std::path::Path,
    ) -> Result<()> {
        let stage: FxHashMap<u32, u8> = users.iter().map(|u| (u.user_id, u.stage)).collect();
        let cfg = NoiseConfig {
            snr_db: noise.snr_db,
            label_flip: noise.label_flip,
            corruption: noise.corruption,
            missing: noise.missing,
            calibration_users: noise.calibration_users as u32,
        };
        // Each user's rows and noise scale.
        let mut runs: Vec<(usize, u32, [f64; FEATURE_DIM])> = Vec::new();
        let mut start = 0;
        while start < self.user.len() {
            let user = self.user[start];
            let rows = self.user[start..]
                .iter()
                .position(|&u| u != user)
                .unwrap_or(self.user.len() - start);
            let Some(&s) = stage.get(&user) else {
                return Err(bad(
                    file,
                    format!(
                        "candidate row {} refers to a turn that does not exist",
                        self.base + start
                    ),
                ));
            };
            let sigma = noise
                .sigma_by_stage
                .get(&s.to_string())
                .and_then(|v| v.as_slice().try_into().ok())
                .ok_or_else(|| {
                    bad(
                        file,
                        format!(
                            "manifest.json has no noise scale of {FEATURE_DIM} columns for stage {s} (user {user})"
                        ),
                    )
                })?;
            runs.push((rows, user, sigma));
            start += rows;
        }
        // Each user's part of every column, to fill in parallel.
        type Part<'a> = (Vec<&'a [f32]>, Vec<&'a mut [f32]>, &'a mut [u32]);
        let mut parts: Vec<Part> = Vec::with_capacity(runs.len());
        let mut mask: &mut [u32] = &mut self.mask;
        for &(rows, _, _) in &runs {
            let (head, tail) = std::mem::take(&mut mask).split_at_mut(rows);
            parts.push((
                Vec::with_capacity(FEATURE_DIM),
                Vec::with_capacity(FEATURE_DIM),
                head,
            ));
            mask = tail;
        }
        for (clean, feat) in self.clean_features.iter().zip(&mut self.features) {
            let (mut clean, mut feat): (&[f32], &mut [f32]) = (clean, feat);
            for (part, &(rows, _, _)) in parts.iter_mut().zip(&runs) {
                let (c, rest) = clean.split_at(rows);
                let (f, rest_f) = std::mem::take(&mut feat).split_at_mut(rows);
                part.0.push(c);
                part.1.push(f);
                (clean, feat) = (rest, rest_f);
            }
        }
        parts.into_par_iter().zip(&runs).for_each(
            |((clean, mut feat, mask), &(_, user, sigma))| {
                let mut rng = rng_for(seed, user, Stream::Noise);
                noise::observe(&clean, &mut feat, mask, &sigma, &cfg, &mut rng);
            },
        );
        Ok(())
    }

    /// The slot of row `r` in turn `ti` of `u`, which it must be the first to take.
    fn place(
        &self,
        r: usize,
        u: &UserSeq,
        ti: usize,
        k: usize,
        path: &std::path::Path,
    ) -> Result<usize> {
        let ci = self.index[r] as usize;
        if ci >= k {
            return Err(bad(
                path,
                format!(
                    "candidate row {} of candidates.parquet has index {ci}, but manifest.json says k = {k}",
                    self.base + r
                ),
            ));
        }
        let slot = ti * k + ci;
        if u.valid[slot] == 1.0 {
            return Err(bad(
                path,
                format!(
                    "candidate row {} repeats candidate {ci} of user {} turn {ti}",
                    self.base + r,
                    self.user[r]
                ),
            ));
        }
        Ok(slot)
    }

    /// Writes row `r` into `slot` of `u`: its observed features (NaN and infinite ones
    /// refused; masked ones left missing), labels, relevance and ids.
    fn fill(
        &self,
        r: usize,
        u: &mut UserSeq,
        slot: usize,
        clean: bool,
        path: &std::path::Path,
    ) -> Result<()> {
        u.valid[slot] = 1.0;
        for (d, column) in self.features.iter().enumerate() {
            let x = column[r];
            if !x.is_finite() {
                return Err(bad(
                    path,
                    format!(
                        "candidate row {}: feature {} is {x}; NaN and infinite features are refused",
                        self.base + r,
                        FEATURE_NAMES[d]
                    ),
                ));
            }
            if self.mask[r] >> d & 1 == 0 {
                u.features[slot * FEATURE_DIM + d] = x;
                u.missing[slot * FEATURE_DIM + d] = 0.0;
                if clean {
                    u.clean_features[slot * FEATURE_DIM + d] = self.clean_features[d][r];
                }
            }
        }
        u.labels[slot] = self.label[r] as f32;
        u.relevance[slot] = self.relevance[r];
        u.memory_slot[slot] = self.memory_slot[r];
        u.memory_id[slot] = self.memory_id[r];
        u.entity[slot] = self.entity[r];
        u.canary[slot] = self.canary[r];
        u.role[slot] = self.role[r];
        u.hard_negative[slot] = self.hard[r];
        Ok(())
    }
}

/// Memory embeddings: a row of `columns` per (user, memory id).
struct Content {
    row: FxHashMap<(u32, u32), usize>,
    columns: Vec<Vec<f32>>,
}

impl Content {
    fn read(mems: &Part, embedding_dim: usize) -> Result<Content> {
        let mut row = FxHashMap::default();
        let mut columns = Vec::new();
        if embedding_dim > 0 {
            let mu = u32s(mems, "user_id")?;
            let mi = u32s(mems, "memory_id")?;
            columns = (0..embedding_dim)
                .map(|d| f32s(mems, &format!("embedding_{d}")))
                .collect::<Result<_>>()?;
            for r in 0..mu.len() {
                row.insert((mu[r], mi[r]), r);
            }
        }
        Ok(Content { row, columns })
    }

    fn fill(&self, u: &mut UserSeq, slot: usize, memory_id: u32, embedding_dim: usize) {
        if let Some(&m) = self.row.get(&(u.user_id, memory_id)) {
            for (d, column) in self.columns.iter().enumerate() {
                u.content[slot * embedding_dim + d] = column[m];
            }
        }
    }
}

/// Path hops: the rows `order[start..start + len]` of `columns` per (user, path id).
struct Hops {
    columns: [Vec<f32>; HOP_DIM],
    order: Vec<usize>,
    rows: FxHashMap<(u32, u32), (usize, usize)>,
}

impl Hops {
    fn read(paths: &Part) -> Result<Hops> {
        let pu = u32s(paths, "user_id")?;
        let pi = u32s(paths, "path_id")?;
        let columns: [Vec<f32>; HOP_DIM] = [
            u8s(paths, "hop_type")?.into_iter().map(f32::from).collect(),
            f32s(paths, "edge_confidence")?,
            f32s(paths, "aspect_weight")?,
            u8s(paths, "community_crossing")?
                .into_iter()
                .map(f32::from)
                .collect(),
            f32s(paths, "dependency_strength")?,
        ];
        // Hops of a path come together in generated data; any other order is sorted
        // (stable, so each path keeps its hops' order).
        let mut order: Vec<usize> = (0..pu.len()).collect();
        if pu
            .windows(2)
            .zip(pi.windows(2))
            .any(|(u, p)| (u[0], p[0]) > (u[1], p[1]))
        {
            order.sort_by_key(|&r| (pu[r], pi[r]));
        }
        let mut rows: FxHashMap<(u32, u32), (usize, usize)> = FxHashMap::default();
        for (i, &r) in order.iter().enumerate() {
            rows.entry((pu[r], pi[r])).or_insert((i, 0)).1 += 1;
        }
        Ok(Hops {
            columns,
            order,
            rows,
        })
    }

    /// The first [`MAX_HOPS`] hops of the candidate's path into `slot` of `u`.
    fn fill(&self, u: &mut UserSeq, slot: usize, path_id: u32) {
        let Some(&(start, len)) = self.rows.get(&(u.user_id, path_id)) else {
            return;
        };
        let n = len.min(MAX_HOPS);
        u.hop_count[slot] = n as u8;
        for (h, &row) in self.order[start..start + n].iter().enumerate() {
            let at = (slot * MAX_HOPS + h) * HOP_DIM;
            for (d, column) in self.columns.iter().enumerate() {
                u.hops[at + d] = column[row];
            }
        }
    }
}

impl UserSeq {
    /// Room for every candidate slot of the user's turns, all missing until filled.
    fn allocate(&mut self, k: usize, embedding_dim: usize, columns: Columns) {
        let n = self.turns * k;
        self.features = vec![0.0; n * FEATURE_DIM];
        if columns.clean {
            self.clean_features = vec![0.0; n * FEATURE_DIM];
        }
        self.missing = vec![1.0; n * FEATURE_DIM];
        self.valid = vec![0.0; n];
        self.labels = vec![0.0; n];
        self.relevance = vec![0.0; n];
        self.memory_slot = vec![0; n];
        self.memory_id = vec![0; n];
        self.entity = vec![0; n];
        self.canary = vec![0; n];
        self.role = vec![0; n];
        self.hard_negative = vec![0; n];
        self.content = vec![0.0; n * embedding_dim];
        if columns.hops {
            self.hops = vec![0.0; n * MAX_HOPS * HOP_DIM];
            self.hop_count = vec![0; n];
        }
    }
}
