//! Scoring test cases: a trained model's scores from the history before each case, the
//! systems compared in a report (a baseline, or a model's seeds), and the latency of the
//! recurrent step.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use rayon::prelude::*;

use super::split::{Case, labels_of};
use crate::data::{Dataset, UserSeq};
use crate::features::Canary;
use crate::metrics::Row;
use crate::model::batch::{Cutoffs, chosen_turns, make_batch};
use crate::model::mamba::ScanImpl;
use crate::model::scorer::{ModelConfig, Scorer};

/// Scores of `cases` (sorted by user, then turn) by a trained model, each from the history
/// before its turn.
pub fn model_scores(
    model: &Scorer,
    cfg: &ModelConfig,
    data: &Dataset,
    cases: &[Case],
    device: &Device,
) -> Vec<Vec<f64>> {
    let mut by_user: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for (i, c) in cases.iter().enumerate() {
        by_user.entry(c.user).or_default().push((i, c.turn));
    }
    let mut out = vec![Vec::new(); cases.len()];
    let users: Vec<(usize, Vec<(usize, usize)>)> = by_user.into_iter().collect();
    let k = data.k;
    // Chunks of users on both cores; each gives (case index, scores) pairs.
    let scored: Vec<Vec<(usize, Vec<f64>)>> = users
        .par_chunks(8)
        .map(|chunk| {
            let seqs: Vec<&UserSeq> = chunk.iter().map(|(u, _)| &data.users[*u]).collect();
            // Through the last case of each user: later turns cannot change earlier scores.
            let lens: Vec<usize> = chunk
                .iter()
                .map(|(_, cs)| cs.iter().map(|&(_, t)| t + 1).max().unwrap_or(0))
                .collect();
            // Only the cases' turns are scored (the backbone reads every turn before).
            let at: Vec<(usize, usize)> = chunk
                .iter()
                .enumerate()
                .flat_map(|(bi, (_, cs))| cs.iter().map(move |&(_, turn)| (bi, turn)))
                .collect();
            let (full, turns) = chosen_turns(data, &seqs, &lens, &at, cfg, device);
            let scores = model.forward_at(&full, &turns, &at, ScanImpl::for_device(device));
            let s: Vec<f32> = scores.try_into_vec_as::<f32>().expect("f32 scores");
            let cases = chunk.iter().flat_map(|(_, cs)| cs.iter().map(|&(i, _)| i));
            let got: Vec<(usize, Vec<f64>)> = cases
                .enumerate()
                .map(|(r, i)| (i, s[r * k..(r + 1) * k].iter().map(|&v| v as f64).collect()))
                .collect();
            got
        })
        .collect();
    for (i, s) in scored.into_iter().flatten() {
        out[i] = s;
    }
    out
}

/// One evaluated system: a baseline, a reference system, or a model (its seeds).
#[derive(Clone, Debug)]
pub struct System {
    pub name: String,
    pub kind: &'static str,
    pub runs: Vec<PathBuf>,
    pub seeds: Vec<u64>,
    /// Per seed (one for a baseline), per case: the metric rows.
    pub seed_rows: Vec<Vec<Row>>,
    /// Per case, per metric (mean over seeds).
    pub cases: Vec<Row>,
    /// Per seed, the mean of each metric.
    pub per_seed: Vec<Row>,
}

impl System {
    /// A system from its per-seed rows.
    pub fn new(
        name: impl Into<String>,
        kind: &'static str,
        runs: Vec<PathBuf>,
        seeds: Vec<u64>,
        seed_rows: Vec<Vec<Row>>,
    ) -> System {
        let n_cases = seed_rows.first().map_or(0, Vec::len);
        let n = seed_rows.len().max(1) as f64;
        let cases = (0..n_cases)
            .map(|c| {
                let mut row = [0.0; 7];
                for r in &seed_rows {
                    for (m, v) in row.iter_mut().enumerate() {
                        *v += r[c][m] / n;
                    }
                }
                row
            })
            .collect();
        System {
            name: name.into(),
            kind,
            runs,
            seeds,
            per_seed: seed_rows.iter().map(|r| mean_rows(r)).collect(),
            seed_rows,
            cases,
        }
    }

    pub fn mean(&self, metric: usize, cases: &[usize]) -> f64 {
        if cases.is_empty() {
            return f64::NAN;
        }
        cases.iter().map(|&i| self.cases[i][metric]).sum::<f64>() / cases.len() as f64
    }

    /// The per-seed values of `metric` on `cases`: `[seed][case]`.
    pub fn column(&self, metric: usize, cases: &[usize]) -> Vec<Vec<f64>> {
        self.seed_rows
            .iter()
            .map(|r| cases.iter().map(|&i| r[i][metric]).collect())
            .collect()
    }
}

pub fn quantile_ms(sorted: &[f64], q: f64) -> f64 {
    super::stats::quantile(sorted, q)
}

/// Times each turn is replayed by [`step_latency`]; the fastest counts.
pub const LATENCY_REPLAYS: usize = 3;

/// Per-turn latency (ms) of `model.step` (batch 1), replaying whole users one turn at a
/// time, sorted. Each user is replayed [`LATENCY_REPLAYS`] times from the same state and
/// each turn keeps its fastest time: the same work every time, so what the replays add
/// is what other processes took from the machine, which is no cost of the model's (a
/// single pass read a p95 of 11.5 ms on a Phase 0 run that reads 0.5 ms alone).
pub fn step_latency(
    model: &Scorer,
    cfg: &ModelConfig,
    data: &Dataset,
    users: usize,
    device: &Device,
) -> Vec<f64> {
    let mut times = Vec::new();
    for u in data.users.iter().take(users) {
        let batch = make_batch(data, &[u], &[u.turns], cfg, device);
        let mut fastest = vec![f64::INFINITY; u.turns];
        for _ in 0..LATENCY_REPLAYS {
            let mut state = model.zero_state(1, device);
            for (t, best) in fastest.iter_mut().enumerate() {
                let turn = batch.turn(t);
                let start = Instant::now();
                let (scores, next) = model.step(&turn, state);
                let _: Vec<f32> = scores.try_into_vec_as::<f32>().expect("f32 scores");
                *best = best.min(start.elapsed().as_secs_f64() * 1e3);
                state = next;
            }
        }
        times.extend(fastest);
    }
    times.sort_by(f64::total_cmp);
    times
}

/// Training turns (labels training could read) with a contract canary planted (at most
/// `max`, spread).
pub fn canary_turns(data: &Dataset, cut: &Cutoffs, max: usize) -> Vec<Case> {
    let k = data.k;
    turns_between(
        data,
        |u| 0..cut.train_end(u),
        max,
        |u, t| {
            (0..k).any(|j| {
                u.valid[t * k + j] == 1.0
                    && Canary::CONTRACT
                        .iter()
                        .any(|c| u.canary[t * k + j] & c.bit() != 0)
            })
        },
    )
}

/// Validation turns with a relevant label (at most `max`, spread).
pub fn labelled_turns(data: &Dataset, cut: &Cutoffs, max: usize) -> Vec<Case> {
    turns_between(
        data,
        |u| cut.train_end(u)..cut.test_start(u),
        max,
        |u, t| labels_of(u, t, data.k).iter().any(|&l| l > 0.0),
    )
}

/// Turns in each user's `span` that `keep` accepts (at most `max`, spread evenly).
fn turns_between(
    data: &Dataset,
    span: impl Fn(&UserSeq) -> std::ops::Range<usize>,
    max: usize,
    keep: impl Fn(&UserSeq, usize) -> bool,
) -> Vec<Case> {
    let mut v = Vec::new();
    for (ui, u) in data.users.iter().enumerate() {
        for t in span(u) {
            if keep(u, t) {
                v.push(Case { user: ui, turn: t });
            }
        }
    }
    if v.len() > max {
        v = (0..max).map(|i| v[i * v.len() / max]).collect();
    }
    v
}

/// Mean number of relevant observed labels per turn over `cases`.
pub fn mean_relevant(data: &Dataset, cases: &[Case]) -> f64 {
    let k = data.k;
    let total: f64 = cases
        .iter()
        .map(|c| {
            labels_of(&data.users[c.user], c.turn, k)
                .iter()
                .sum::<f64>()
        })
        .sum();
    total / cases.len().max(1) as f64
}

pub fn mean_rows(rows: &[Row]) -> Row {
    let mut m = [0.0; 7];
    for r in rows {
        for (a, b) in m.iter_mut().zip(r) {
            *a += b;
        }
    }
    let n = rows.len().max(1) as f64;
    m.map(|v| v / n)
}

/// What [`write_scores`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scored {
    pub users: usize,
    pub turns: usize,
    /// Rows written: the real candidates of those turns.
    pub rows: usize,
}

/// Scores every turn of the first `users` users of the dataset `reader` opened (in its
/// order) with the trained run `run`, each turn from the history before it, and writes one
/// row per real candidate to the Parquet file `out`: `user_id`, `turn_index`,
/// `cand_index` (the keys of `candidates.parquet`) and `score`, the model's
/// log-relevance up to a per-turn constant. Users are read `resident_mb` megabytes at a
/// time. `out` is locked while it is written, replaced only with `force`, and written
/// under a temporary name first.
pub fn write_scores(
    reader: &crate::data::DatasetReader,
    run: &std::path::Path,
    users: usize,
    resident_mb: usize,
    out: &std::path::Path,
    force: bool,
) -> crate::error::Result<Scored> {
    use polars::prelude::*;

    use crate::error::Error;
    let _lock = crate::lock::path(out)?;
    crate::atomic::check_output(out, force)?;
    let device = Device::flex();
    let (model, cfg) = crate::run::load_run(run, false, &device)?;
    let columns = crate::data::Columns {
        clean: false,
        hops: cfg.variant == crate::model::scorer::Variant::Dual,
    };
    let outline = &reader.outline;
    let n = users.min(outline.users.len());
    let budget = crate::data::turns_in(resident_mb, outline, columns);
    let (mut user_id, mut turn_index, mut cand_index, mut score) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut turns = 0;
    for block in crate::data::blocks(outline.users[..n].iter().map(|u| u.turns), budget) {
        let data = reader.read(block, columns)?;
        let k = data.k;
        let cases: Vec<Case> = (0..data.users.len())
            .flat_map(|user| (0..data.users[user].turns).map(move |turn| Case { user, turn }))
            .collect();
        let scores = model_scores(&model, &cfg, &data, &cases, &device);
        for (c, s) in cases.iter().zip(&scores) {
            let u = &data.users[c.user];
            for (j, &v) in s.iter().enumerate() {
                if u.valid[c.turn * k + j] == 1.0 {
                    user_id.push(u.user_id);
                    turn_index.push(c.turn as u32);
                    cand_index.push(j as u8);
                    score.push(v as f32);
                }
            }
        }
        turns += cases.len();
    }
    let rows = score.len();
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("user_id".into(), user_id),
        Column::new("turn_index".into(), turn_index),
        Column::new("cand_index".into(), cand_index),
        Column::new("score".into(), score),
    ])
    .map_err(|e| Error::Save(format!("{}: {e}", out.display())))?;
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .with_compression(ParquetCompression::Lz4Raw)
        .finish(&mut df)
        .map_err(|e| Error::Save(format!("{}: cannot write: {e}", out.display())))?;
    crate::atomic::write_output(out, &bytes, force)?;
    Ok(Scored {
        users: n,
        turns,
        rows,
    })
}
