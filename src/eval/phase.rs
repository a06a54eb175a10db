//! `ssmkit eval`: trained runs and the baselines on exactly the same test cases, the
//! metric suite with paired statistics, and the phase gates.
//!
//! Splits (SPEC §4.1):
//! - **GTS**: every turn at or after the runs' test cut-off (the 90th percentile of turn
//!   timestamps) with a relevant label is a case, scored from the full history before it
//!   (successive targets). Training and model selection saw only turns before the cut-off.
//! - **LOO**: each user's last turn, among the GTS cases (a user whose last turn falls
//!   before the cut-off was seen in training and gives no LOO case).
//!
//! Several runs of one model (seeds) are averaged per case before the paired comparison,
//! so the comparison is model against baseline, not one lucky seed against it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::Unit;
use super::metrics::case_metrics;
use super::stats::{CompareOptions, Comparison, compare};
use crate::data::{Dataset, UserSeq};
use crate::datagen::writer::StagedDir;
use crate::error::{Error, Result};
use crate::model::baselines::{self, Baseline};
use crate::model::mamba::ScanImpl;
use crate::model::scorer::{ModelConfig, Scorer, Variant};
use crate::train::batch::make_batch;
use crate::train::{dataset_fingerprint, load_run, read_run_state};

/// The metrics of one case, in report order.
pub const METRICS: [&str; 7] = [
    "hr@5", "hr@10", "mrr@10", "dcg@10", "ndcg@10", "p@10", "r@10",
];

/// Metrics compared between systems with the paired statistics.
pub const COMPARED: [&str; 4] = ["dcg@10", "hr@10", "hr@5", "mrr@10"];

fn case_row(scores: &[f64], labels: &[f64]) -> [f64; 7] {
    let m10 = case_metrics(scores, labels, 10);
    let m5 = case_metrics(scores, labels, 5);
    [
        m5.hr,
        m10.hr,
        m10.mrr,
        m10.dcg,
        m10.ndcg,
        m10.precision,
        m10.recall,
    ]
}

fn metric_index(name: &str) -> usize {
    METRICS
        .iter()
        .position(|&m| m == name)
        .expect("known metric")
}

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub data: PathBuf,
    pub runs: Vec<PathBuf>,
    /// The report directory (`reports/<name>`).
    pub out: PathBuf,
    pub force: bool,
    /// The model the gates judge (default: mamba if evaluated, else the first temporal
    /// variant, else the first run's).
    pub primary: Option<Variant>,
    pub unit: Unit,
    pub compare: CompareOptions,
    /// Users whose turns are replayed one step at a time to measure latency.
    pub latency_users: usize,
    pub quiet: bool,
}

/// A test case: user index and turn index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Case {
    pub user: usize,
    pub turn: usize,
}

fn labels_of(u: &UserSeq, t: usize, k: usize) -> Vec<f64> {
    (0..k)
        .map(|c| (u.labels[t * k + c] * u.valid[t * k + c]) as f64)
        .collect()
}

/// The GTS cases (turns at or after `test_cutoff` with a relevant label) and the LOO
/// subset (each user's last turn, when it is a GTS case).
pub fn test_cases(data: &Dataset, test_cutoff: i64) -> (Vec<Case>, Vec<Case>) {
    let mut gts = Vec::new();
    let mut loo = Vec::new();
    for (ui, u) in data.users.iter().enumerate() {
        let first = crate::train::batch::turns_before(u, test_cutoff);
        for t in first..u.turns {
            if labels_of(u, t, data.k).iter().any(|&l| l > 0.0) {
                gts.push(Case { user: ui, turn: t });
                if t + 1 == u.turns {
                    loo.push(Case { user: ui, turn: t });
                }
            }
        }
    }
    (gts, loo)
}

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
    for chunk in users.chunks(16) {
        let seqs: Vec<&UserSeq> = chunk.iter().map(|(u, _)| &data.users[*u]).collect();
        // Through the last case of each user: later turns cannot change earlier scores.
        let lens: Vec<usize> = chunk
            .iter()
            .map(|(_, cs)| cs.iter().map(|&(_, t)| t + 1).max().unwrap_or(0))
            .collect();
        let b = make_batch(
            data,
            &seqs,
            &lens,
            cfg.entity_slots,
            cfg.memory_slots,
            device,
        );
        let scores = model.forward(&b, ScanImpl::for_device(device));
        let [_, t, _] = scores.dims();
        let s: Vec<f32> = scores.try_into_vec_as::<f32>().expect("f32 scores");
        for (bi, (_, cs)) in chunk.iter().enumerate() {
            for &(i, turn) in cs {
                let row = (bi * t + turn) * k;
                out[i] = s[row..row + k].iter().map(|&v| v as f64).collect();
            }
        }
    }
    out
}

/// One evaluated system: a baseline or a model (its seeds averaged per case).
#[derive(Clone, Debug)]
struct System {
    name: String,
    kind: &'static str,
    runs: Vec<PathBuf>,
    seeds: Vec<u64>,
    /// Per case, per metric (mean over seeds).
    cases: Vec<[f64; 7]>,
    /// Per seed, the mean of each metric.
    per_seed: Vec<[f64; 7]>,
}

impl System {
    fn mean(&self, metric: usize, cases: &[usize]) -> f64 {
        if cases.is_empty() {
            return f64::NAN;
        }
        cases.iter().map(|&i| self.cases[i][metric]).sum::<f64>() / cases.len() as f64
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    pub name: String,
    pub phase: String,
    pub value: Option<f64>,
    pub threshold: f64,
    /// `PASS`, `FAIL` or `NOT MEASURED` (which fails `--fail-on-gate` too).
    pub status: String,
    pub note: String,
}

impl Gate {
    fn new(
        name: &str,
        phase: &str,
        value: Option<f64>,
        threshold: f64,
        pass: bool,
        note: String,
    ) -> Gate {
        let status = match value {
            None => "NOT MEASURED",
            Some(_) if pass => "PASS",
            Some(_) => "FAIL",
        };
        Gate {
            name: name.into(),
            phase: phase.into(),
            value,
            threshold,
            status: status.into(),
            note,
        }
    }

    pub fn passed(&self) -> bool {
        self.status == "PASS"
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ComparisonRow {
    pub split: String,
    pub metric: String,
    pub a: String,
    pub b: String,
    pub mean_a: f64,
    pub mean_b: f64,
    #[serde(flatten)]
    pub stats: Comparison,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub model: String,
    pub turns: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub primary: String,
    pub n_gts: usize,
    pub n_loo: usize,
    pub unit: String,
    pub gates: Vec<Gate>,
    pub comparisons: Vec<ComparisonRow>,
    pub latency: Option<Latency>,
    pub out: PathBuf,
}

impl EvalReport {
    pub fn all_passed(&self) -> bool {
        self.gates.iter().all(Gate::passed)
    }
}

fn quantile_ms(sorted: &[f64], q: f64) -> f64 {
    super::stats::quantile(sorted, q)
}

/// Per-turn latency of `model.step` (batch 1), replaying whole users one turn at a time.
fn step_latency(
    model: &Scorer,
    cfg: &ModelConfig,
    data: &Dataset,
    users: usize,
    device: &Device,
) -> Vec<f64> {
    let mut times = Vec::new();
    for u in data.users.iter().take(users) {
        let batch = make_batch(
            data,
            &[u],
            &[u.turns],
            cfg.entity_slots,
            cfg.memory_slots,
            device,
        );
        let mut state = model.zero_state(1, device);
        for t in 0..u.turns {
            let turn = batch.turn(t);
            let start = Instant::now();
            let (scores, next) = model.step(&turn, state);
            let _: Vec<f32> = scores.try_into_vec_as::<f32>().expect("f32 scores");
            times.push(start.elapsed().as_secs_f64() * 1e3);
            state = next;
        }
    }
    times.sort_by(f64::total_cmp);
    times
}

/// Runs the evaluation and writes the report directory.
pub fn evaluate(opts: &EvalOptions) -> Result<EvalReport> {
    if opts.runs.is_empty() {
        return Err(Error::Input("eval needs at least one --run".into()));
    }
    let data = Dataset::load(&opts.data)?;
    let sha = dataset_fingerprint(&data);
    let device = Device::flex();
    // Every run must come from this dataset and share one test cut-off.
    let mut states = Vec::new();
    for run in &opts.runs {
        let st = read_run_state(run)?;
        if st.dataset_sha != sha {
            return Err(Error::Input(format!(
                "{}: trained on another dataset (candidates SHA-256 {}…, {} has {}…)",
                run.display(),
                &st.dataset_sha.get(..12).unwrap_or(""),
                opts.data.display(),
                &sha.get(..12).unwrap_or("")
            )));
        }
        if let Some((first, r0)) = states
            .first()
            .map(|s: &(PathBuf, crate::train::RunState)| (&s.1, &s.0))
            && first.cutoffs != st.cutoffs
        {
            return Err(Error::Input(format!(
                "{} and {} use different split cut-offs: the test cases would differ",
                r0.display(),
                run.display()
            )));
        }
        states.push((run.clone(), st));
    }
    let cutoff = states[0].1.cutoffs.test;
    let (gts, loo) = test_cases(&data, cutoff);
    if gts.is_empty() {
        return Err(Error::Input(format!(
            "{}: no test case (no turn at or after the test cut-off {cutoff} has a relevant label)",
            opts.data.display()
        )));
    }
    let k = data.k;
    let labels: Vec<Vec<f64>> = gts
        .iter()
        .map(|c| labels_of(&data.users[c.user], c.turn, k))
        .collect();
    let mut systems: Vec<System> = Vec::new();
    // Baselines that need no training.
    for kind in [Baseline::Heuristic, Baseline::Random, Baseline::Oracle] {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.compare.seed ^ 0xBA5E);
        let cases: Vec<[f64; 7]> = gts
            .iter()
            .zip(&labels)
            .map(|(c, l)| {
                case_row(
                    &baselines::scores(kind, &data.users[c.user], c.turn, k, &mut rng),
                    l,
                )
            })
            .collect();
        let mean = mean_rows(&cases);
        systems.push(System {
            name: format!("{kind:?}").to_lowercase(),
            kind: "baseline",
            runs: Vec::new(),
            seeds: Vec::new(),
            cases,
            per_seed: vec![mean],
        });
    }
    // Trained runs, grouped by variant.
    let mut by_variant: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
    for (i, (_, st)) in states.iter().enumerate() {
        by_variant
            .entry(st.model.variant.name())
            .or_default()
            .push(i);
    }
    let mut latency = None;
    let primary = match opts.primary {
        Some(v) => v.name(),
        None => {
            let names: Vec<&str> = by_variant.keys().copied().collect();
            if names.contains(&"mamba") {
                "mamba"
            } else {
                Variant::ALL
                    .iter()
                    .find(|v| v.is_temporal() && names.contains(&v.name()))
                    .map(|v| v.name())
                    .unwrap_or(states[0].1.model.variant.name())
            }
        }
    };
    if !by_variant.contains_key(primary) {
        return Err(Error::Input(format!(
            "--primary {primary}: no run of that model was given"
        )));
    }
    for (name, idx) in &by_variant {
        let mut per_run: Vec<Vec<[f64; 7]>> = Vec::new();
        let mut seeds = Vec::new();
        for &i in idx {
            let (run, st) = &states[i];
            if !opts.quiet {
                eprintln!("scoring {} ({name}, seed {})", run.display(), st.seed);
            }
            let (model, cfg) = load_run(run, false, &device)?;
            let scores = model_scores(&model, &cfg, &data, &gts, &device);
            per_run.push(
                scores
                    .iter()
                    .zip(&labels)
                    .map(|(s, l)| case_row(s, l))
                    .collect(),
            );
            seeds.push(st.seed);
            if *name == primary && latency.is_none() && opts.latency_users > 0 {
                let times = step_latency(&model, &cfg, &data, opts.latency_users, &device);
                if !times.is_empty() {
                    latency = Some(Latency {
                        model: run.display().to_string(),
                        turns: times.len(),
                        p50_ms: quantile_ms(&times, 0.50),
                        p95_ms: quantile_ms(&times, 0.95),
                        p99_ms: quantile_ms(&times, 0.99),
                    });
                }
            }
        }
        let n_runs = per_run.len() as f64;
        let cases: Vec<[f64; 7]> = (0..gts.len())
            .map(|c| {
                let mut row = [0.0; 7];
                for r in &per_run {
                    for (m, v) in row.iter_mut().enumerate() {
                        *v += r[c][m] / n_runs;
                    }
                }
                row
            })
            .collect();
        systems.push(System {
            name: name.to_string(),
            kind: if Variant::ALL
                .iter()
                .any(|v| v.name() == *name && v.is_temporal())
            {
                "model"
            } else {
                "learned baseline"
            },
            runs: idx.iter().map(|&i| states[i].0.clone()).collect(),
            seeds,
            per_seed: per_run.iter().map(|r| mean_rows(r)).collect(),
            cases,
        });
    }
    // Paired comparisons: the primary model against every other system, on both splits.
    let all: Vec<usize> = (0..gts.len()).collect();
    let loo_idx: Vec<usize> = loo
        .iter()
        .map(|c| gts.binary_search(c).expect("LOO cases are GTS cases"))
        .collect();
    let p = systems
        .iter()
        .position(|s| s.name == primary)
        .expect("primary scored");
    let units: Vec<u64> = gts
        .iter()
        .map(|c| data.users[c.user].user_id as u64)
        .collect();
    let mut comparisons = Vec::new();
    for (split, idx) in [("gts", &all), ("loo", &loo_idx)] {
        if idx.len() < 2 {
            continue;
        }
        let split_units: Vec<u64> = idx.iter().map(|&i| units[i]).collect();
        for (j, other) in systems.iter().enumerate() {
            if j == p {
                continue;
            }
            for metric in COMPARED {
                let m = metric_index(metric);
                let diffs: Vec<f64> = idx
                    .iter()
                    .map(|&i| systems[p].cases[i][m] - other.cases[i][m])
                    .collect();
                let stats = compare(
                    &diffs,
                    (opts.unit == Unit::User).then_some(&split_units[..]),
                    &opts.compare,
                );
                comparisons.push(ComparisonRow {
                    split: split.into(),
                    metric: metric.into(),
                    a: primary.into(),
                    b: other.name.clone(),
                    mean_a: systems[p].mean(m, idx),
                    mean_b: other.mean(m, idx),
                    stats,
                });
            }
        }
    }
    let gates = phase_gates(&systems[p], &comparisons, latency.as_ref(), &all);
    let report = EvalReport {
        dataset: opts.data.display().to_string(),
        primary: primary.into(),
        n_gts: gts.len(),
        n_loo: loo.len(),
        unit: format!("{:?}", opts.unit).to_lowercase(),
        gates,
        comparisons,
        latency,
        out: opts.out.clone(),
    };
    write_report(opts, &report, &systems, &gts, &loo_idx, &data)?;
    Ok(report)
}

fn mean_rows(rows: &[[f64; 7]]) -> [f64; 7] {
    let mut m = [0.0; 7];
    for r in rows {
        for (a, b) in m.iter_mut().zip(r) {
            *a += b;
        }
    }
    let n = rows.len().max(1) as f64;
    m.map(|v| v / n)
}

fn find<'a>(
    rows: &'a [ComparisonRow],
    split: &str,
    metric: &str,
    b: &str,
) -> Option<&'a ComparisonRow> {
    rows.iter()
        .find(|r| r.split == split && r.metric == metric && r.b == b)
}

/// The gates of SPEC §4.5 for the primary model on the GTS split.
fn phase_gates(
    primary: &System,
    rows: &[ComparisonRow],
    latency: Option<&Latency>,
    all: &[usize],
) -> Vec<Gate> {
    let mut gates = vec![Gate::new(
        "canaries 7/7 detected at 20 dB",
        "0→1",
        None,
        7.0,
        false,
        "canary probes are not built by this version of eval: the gate cannot pass".into(),
    )];
    let hr5 = primary.mean(metric_index("hr@5"), all);
    gates.push(Gate::new(
        "HR@5 ≥ 0.60",
        "0→1",
        Some(hr5),
        0.60,
        hr5 >= 0.60,
        format!("{} on the GTS test cases", primary.name),
    ));
    let dcg = find(rows, "gts", "dcg@10", "heuristic").map(|r| {
        let rel = r.mean_a / r.mean_b - 1.0;
        (rel, r.stats.significant, r.stats.p_value, r.stats.ci_low)
    });
    gates.push(match dcg {
        Some((rel, sig, pv, lo)) => Gate::new(
            "DCG@10 ≥ +10% over the heuristic, significant",
            "0→1",
            Some(rel),
            0.10,
            rel >= 0.10 && sig,
            format!("relative improvement {:+.1}%; BCa lower bound of the difference {lo:.4}, p = {pv:.4}", 100.0 * rel),
        ),
        None => Gate::new("DCG@10 ≥ +10% over the heuristic, significant", "0→1", None, 0.10, false, "no comparison".into()),
    });
    gates.push(match latency {
        Some(l) => Gate::new(
            "p95 latency ≤ 5 ms per prediction",
            "0→1",
            Some(l.p95_ms),
            5.0,
            l.p95_ms <= 5.0,
            format!("Burn model, one turn per step, {} turns (CPU)", l.turns),
        ),
        None => Gate::new(
            "p95 latency ≤ 5 ms per prediction",
            "0→1",
            None,
            5.0,
            false,
            "latency not measured".into(),
        ),
    });
    let seeds = primary.seeds.len();
    gates.push(match find(rows, "gts", "hr@10", "xattn") {
        Some(r) => {
            let rel = r.mean_a / r.mean_b - 1.0;
            Gate::new(
                "HR@10 > cross-attention baseline + 3%, p < 0.05, ≥ 5 seeds",
                "1→2",
                Some(rel),
                0.03,
                rel > 0.03 && r.stats.significant && seeds >= 5,
                format!(
                    "synthetic held-out data (no real dataset given); relative {:+.1}%, p = {:.4}, {seeds} seed(s)",
                    100.0 * rel,
                    r.stats.p_value
                ),
            )
        }
        None => Gate::new(
            "HR@10 > cross-attention baseline + 3%, p < 0.05, ≥ 5 seeds",
            "1→2",
            None,
            0.03,
            false,
            "no xattn run was given".into(),
        ),
    });
    gates
}

fn csv_write(
    path: &Path,
    write: impl FnOnce(&mut csv::Writer<fs::File>) -> csv::Result<()>,
) -> Result<()> {
    let mut w = csv::Writer::from_path(path)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    write(&mut w).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    w.flush().map_err(|e| Error::io(path, e))
}

fn write_report(
    opts: &EvalOptions,
    report: &EvalReport,
    systems: &[System],
    gts: &[Case],
    loo_idx: &[usize],
    data: &Dataset,
) -> Result<()> {
    let staged = StagedDir::new(&opts.out, opts.force)?;
    let dir = staged.tmp.clone();
    let io = |p: &Path, e| Error::io(p, e);
    let gates_path = dir.join("gates.json");
    fs::write(
        &gates_path,
        serde_json::to_string_pretty(&serde_json::json!({
            "primary": report.primary,
            "dataset": report.dataset,
            "gates": report.gates,
        }))
        .expect("serializable"),
    )
    .map_err(|e| io(&gates_path, e))?;
    let all: Vec<usize> = (0..gts.len()).collect();
    // metrics.csv: one row per system and split.
    csv_write(&dir.join("metrics.csv"), |w| {
        let mut header = vec!["split", "system", "kind", "seeds", "cases"];
        header.extend(METRICS);
        w.write_record(&header)?;
        for (split, idx) in [("gts", &all[..]), ("loo", loo_idx)] {
            for s in systems {
                let mut row = vec![
                    split.to_string(),
                    s.name.clone(),
                    s.kind.to_string(),
                    s.seeds.len().to_string(),
                    idx.len().to_string(),
                ];
                row.extend((0..METRICS.len()).map(|m| format!("{:.6}", s.mean(m, idx))));
                w.write_record(&row)?;
            }
        }
        Ok(())
    })?;
    // cases.csv: every GTS case, every system's per-case metrics (LOO cases flagged).
    csv_write(&dir.join("cases.csv"), |w| {
        let mut header = vec![
            "case_id".to_string(),
            "user_id".into(),
            "turn".into(),
            "loo".into(),
        ];
        for s in systems {
            for m in METRICS {
                header.push(format!("{}:{m}", s.name));
            }
        }
        w.write_record(&header)?;
        let loo: std::collections::HashSet<usize> = loo_idx.iter().copied().collect();
        for (i, c) in gts.iter().enumerate() {
            let uid = data.users[c.user].user_id;
            let mut row = vec![
                format!("{uid}:{}", c.turn),
                uid.to_string(),
                c.turn.to_string(),
                (loo.contains(&i) as u8).to_string(),
            ];
            for s in systems {
                row.extend(s.cases[i].iter().map(|v| format!("{v:.6}")));
            }
            w.write_record(&row)?;
        }
        Ok(())
    })?;
    csv_write(&dir.join("comparisons.csv"), |w| {
        w.write_record([
            "split",
            "metric",
            "a",
            "b",
            "mean_a",
            "mean_b",
            "theta_hat",
            "ci_low",
            "ci_high",
            "percentile_ci_low",
            "percentile_ci_high",
            "z0",
            "acceleration",
            "p_value",
            "exact",
            "n",
            "n_units",
            "significant",
        ])?;
        for r in &report.comparisons {
            let s = &r.stats;
            w.write_record([
                r.split.clone(),
                r.metric.clone(),
                r.a.clone(),
                r.b.clone(),
                format!("{:.6}", r.mean_a),
                format!("{:.6}", r.mean_b),
                format!("{:.6}", s.theta_hat),
                format!("{:.6}", s.ci_low),
                format!("{:.6}", s.ci_high),
                format!("{:.6}", s.percentile_ci_low),
                format!("{:.6}", s.percentile_ci_high),
                format!("{:.6}", s.z0),
                format!("{:.6}", s.acceleration),
                format!("{:.6}", s.p_value),
                s.exact.to_string(),
                s.n.to_string(),
                s.n_units.to_string(),
                s.significant.to_string(),
            ])?;
        }
        Ok(())
    })?;
    let md = markdown(report, systems, &all, loo_idx);
    let md_path = dir.join("report.md");
    fs::write(&md_path, md).map_err(|e| io(&md_path, e))?;
    staged.commit()?;
    Ok(())
}

fn markdown(report: &EvalReport, systems: &[System], all: &[usize], loo_idx: &[usize]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Evaluation report\n");
    let _ = writeln!(
        s,
        "Dataset `{}`. Primary model: **{}**. GTS: {} test cases; LOO: {} cases. Resampling unit: {}.\n",
        report.dataset, report.primary, report.n_gts, report.n_loo, report.unit
    );
    let _ = writeln!(
        s,
        "## Phase gates\n\n| gate | phase | value | threshold | status | note |\n|---|---|---|---|---|---|"
    );
    for g in &report.gates {
        let v = g.value.map_or("—".to_string(), |v| format!("{v:.4}"));
        let _ = writeln!(
            s,
            "| {} | {} | {v} | {} | **{}** | {} |",
            g.name, g.phase, g.threshold, g.status, g.note
        );
    }
    for (split, idx) in [("GTS", all), ("LOO", loo_idx)] {
        let _ = writeln!(s, "\n## Metrics, {split} ({} cases)\n", idx.len());
        let _ = writeln!(
            s,
            "| system | kind | seeds | {} |\n|---|---|---|{}",
            METRICS.join(" | "),
            "---|".repeat(METRICS.len())
        );
        for sys in systems {
            let vals: Vec<String> = (0..METRICS.len())
                .map(|m| format!("{:.4}", sys.mean(m, idx)))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                sys.name,
                sys.kind,
                sys.seeds.len(),
                vals.join(" | ")
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Runs (GTS)\n\n| system | run | seed | {} |\n|---|---|---|{}",
        METRICS.join(" | "),
        "---|".repeat(METRICS.len())
    );
    for sys in systems.iter().filter(|s| !s.seeds.is_empty()) {
        for ((run, seed), m) in sys.runs.iter().zip(&sys.seeds).zip(&sys.per_seed) {
            let vals: Vec<String> = m.iter().map(|v| format!("{v:.4}")).collect();
            let _ = writeln!(
                s,
                "| {} | `{}` | {seed} | {} |",
                sys.name,
                run.display(),
                vals.join(" | ")
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Paired comparisons ({} − baseline)\n\nBCa 95% interval of the mean difference and the two-sided sign-flip p-value; significant only when the BCa lower bound > 0 and p < 0.05.\n\n| split | metric | vs | {} | other | difference | BCa 95% | p | significant |\n|---|---|---|---|---|---|---|---|---|",
        report.primary, report.primary
    );
    for r in &report.comparisons {
        let st = &r.stats;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.4} | {:.4} | {:+.4} | [{:+.4}, {:+.4}] | {:.4}{} | {} |",
            r.split,
            r.metric,
            r.b,
            r.mean_a,
            r.mean_b,
            st.theta_hat,
            st.ci_low,
            st.ci_high,
            st.p_value,
            if st.exact { " (exact)" } else { "" },
            if st.significant { "yes" } else { "no" }
        );
    }
    if let Some(l) = &report.latency {
        let _ = writeln!(
            s,
            "\n## Latency\n\n`{}`, one turn per step, batch 1, {} turns: p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms.",
            l.model, l.turns, l.p50_ms, l.p95_ms, l.p99_ms
        );
    }
    let _ = writeln!(
        s,
        "\n## Not in this report\n\nCanary probes, the SNR curve, the dual-error test, ablations, cold-start strata and TSTR are not computed by this version; the canary gate is reported as NOT MEASURED and fails `--fail-on-gate`."
    );
    s
}
