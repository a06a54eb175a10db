//! The report directory of `ssmkit eval`: `gates.json`, `summary.json`, the CSV files,
//! the figures, `report.md` and `report.html`.

use std::fs;
use std::path::{Path, PathBuf};

use super::findings::Curve;
use super::findings::EvalReport;
use super::options::EvalOptions;
use super::report::{self, Block};
use super::scoring::System;
use super::sections::sections;
use crate::atomic::StagedDir;
use crate::error::{Error, Result};
use crate::layout::sha256_file;
use crate::metrics::METRICS;

/// Each run's training curve, from its `metrics.csv`.
pub fn training_curves(runs: &[PathBuf]) -> Vec<Curve> {
    runs.iter()
        .filter_map(|run| {
            let mut r = csv::Reader::from_path(run.join("metrics.csv")).ok()?;
            let rows: Vec<(f64, f64, f64)> = r
                .records()
                .filter_map(|rec| {
                    let rec = rec.ok()?;
                    let step: f64 = rec.get(0)?.parse().ok()?;
                    let loss: f64 = rec.get(2)?.parse().ok()?;
                    let dcg: f64 = rec.get(4)?.parse().unwrap_or(f64::NAN);
                    Some((step, loss, dcg))
                })
                .collect();
            Some((run.display().to_string(), rows))
        })
        .collect()
}

fn csv_write(
    path: &Path,
    write: impl FnOnce(&mut csv::Writer<fs::File>) -> csv::Result<()>,
) -> Result<()> {
    let mut w = csv::Writer::from_path(path)
        .map_err(|e| Error::Save(format!("{}: {e}", path.display())))?;
    write(&mut w).map_err(|e| Error::Save(format!("{}: {e}", path.display())))?;
    w.flush().map_err(|e| Error::io(path, e))
}

/// Writes the report directory: `systems` hold their rows on the GTS cases, whose user
/// ids and turns are `cases`; `loo_idx` are the LOO cases' positions among them.
pub fn write_report(
    opts: &EvalOptions,
    report: &EvalReport,
    systems: &[System],
    cases: &[(u32, usize)],
    loo_idx: &[usize],
    curves: &[Curve],
) -> Result<()> {
    let staged = StagedDir::new(&opts.out, opts.force)?;
    let dir = staged.tmp.clone();
    let io = |p: &Path, e| Error::io(p, e);
    let write = |name: &str, text: &str| -> Result<()> {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| io(&path, e))
    };
    write(
        "gates.json",
        &serde_json::to_string_pretty(&serde_json::json!({
            "primary": report.primary,
            "dataset": report.dataset,
            "gates": report.gates,
            "reference": report
                .reference
                .iter()
                .map(|(name, g)| (name.clone(), serde_json::json!(g)))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
            "test_set": report.test_set,
            "inputs": report.inputs,
        }))
        .expect("serializable"),
    )?;
    write(
        "summary.json",
        &serde_json::to_string_pretty(report).expect("serializable"),
    )?;
    let all: Vec<usize> = (0..cases.len()).collect();
    metrics_csv(&dir, systems, &all, loo_idx)?;
    patterns_csv(&dir, report)?;
    ablations_csv(&dir, report)?;
    cases_csv(&dir, systems, cases, loo_idx)?;
    comparisons_csv(&dir, report)?;
    canaries_csv(&dir, report)?;
    let sections = sections(report, systems, &all, loo_idx, curves);
    for sec in &sections {
        for b in &sec.blocks {
            if let Block::Figure { file, svg, .. } = b {
                write(file, svg)?;
            }
        }
    }
    write(
        "report.md",
        &report::markdown("Evaluation report", &sections),
    )?;
    write("report.html", &report::html("Evaluation report", &sections))?;
    write(DIGESTS, &digests_of(&dir)?)?;
    staged.commit()?;
    Ok(())
}

/// The file of a report directory that records the SHA-256 of every other file in it.
pub const DIGESTS: &str = "digests.json";

/// `{"sha256": {file: digest}}` of every file in `dir`.
fn digests_of(dir: &Path) -> Result<String> {
    let mut sha256 = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name != DIGESTS {
            sha256.insert(name.into_owned(), sha256_file(&path)?);
        }
    }
    Ok(serde_json::to_string_pretty(&serde_json::json!({ "sha256": sha256 })).expect("json"))
}

/// Whether `dir` is a whole report as `eval` wrote it: every file its `digests.json`
/// names is there with that digest, and so is `digests.json` itself.
pub fn report_intact(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join(DIGESTS)) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let Some(files) = v["sha256"].as_object().filter(|f| !f.is_empty()) else {
        return false;
    };
    files.iter().all(|(name, want)| {
        sha256_file(&dir.join(name)).is_ok_and(|got| want.as_str() == Some(got.as_str()))
    })
}

/// metrics.csv: one row per system and split.
fn metrics_csv(dir: &Path, systems: &[System], all: &[usize], loo_idx: &[usize]) -> Result<()> {
    csv_write(&dir.join("metrics.csv"), |w| {
        let mut header = vec!["split", "system", "kind", "seeds", "cases"];
        header.extend(METRICS);
        w.write_record(&header)?;
        for (split, idx) in [("gts", all), ("loo", loo_idx)] {
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
    })
}

/// patterns.csv: the PoC's metrics on every held-out query, per turn name and system.
fn patterns_csv(dir: &Path, report: &EvalReport) -> Result<()> {
    csv_write(&dir.join("patterns.csv"), |w| {
        w.write_record(["name", "system", "cases", "hr5", "mrr5", "dcg5"])?;
        for r in &report.patterns {
            w.write_record([
                r.name.clone(),
                r.system.clone(),
                r.cases.to_string(),
                format!("{:.6}", r.hr5),
                format!("{:.6}", r.mrr5),
                format!("{:.6}", r.dcg5),
            ])?;
        }
        Ok(())
    })
}

/// ablations.csv: every row of the seed's ablation list that was measured.
fn ablations_csv(dir: &Path, report: &EvalReport) -> Result<()> {
    csv_write(&dir.join("ablations.csv"), |w| {
        w.write_record([
            "ablation", "metric", "value", "diff", "ci_low", "ci_high", "p_value",
        ])?;
        for row in csv_rows(report) {
            w.write_record(&row)?;
        }
        Ok(())
    })
}

/// cases.csv: every GTS case, every system's per-case metrics (LOO cases flagged).
fn cases_csv(
    dir: &Path,
    systems: &[System],
    cases: &[(u32, usize)],
    loo_idx: &[usize],
) -> Result<()> {
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
        for (i, &(uid, turn)) in cases.iter().enumerate() {
            let mut row = vec![
                format!("{uid}:{turn}"),
                uid.to_string(),
                turn.to_string(),
                (loo.contains(&i) as u8).to_string(),
            ];
            for s in systems {
                row.extend(s.cases[i].iter().map(|v| format!("{v:.6}")));
            }
            w.write_record(&row)?;
        }
        Ok(())
    })
}

/// comparisons.csv: every paired comparison with its statistics.
fn comparisons_csv(dir: &Path, report: &EvalReport) -> Result<()> {
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
    })
}

/// canaries.csv: each system's detection of each canary at each SNR level; the peers
/// (probed at 20 dB only) under their own names.
fn canaries_csv(dir: &Path, report: &EvalReport) -> Result<()> {
    let Some(levels) = &report.canaries else {
        return Ok(());
    };
    let peers = report
        .peers
        .iter()
        .map(|(sys, rs)| (Some(20.0), sys.as_str(), rs));
    csv_write(&dir.join("canaries.csv"), |w| {
        w.write_record([
            "snr_db",
            "system",
            "canary",
            "probes",
            "detection",
            "statistic",
            "ci_low",
            "ci_high",
            "threshold",
            "pass",
        ])?;
        let systems = levels.iter().flat_map(|l| {
            [
                (report.primary.as_str(), &l.model),
                ("oracle", &l.oracle),
                ("random", &l.random),
                ("constant", &l.constant),
                ("observable", &l.observable),
            ]
            .map(|(sys, rs)| (l.snr_db, sys, rs))
        });
        for (snr_db, sys, rs) in systems.chain(peers) {
            for r in rs {
                w.write_record([
                    snr_db.map_or("clean".into(), |v| v.to_string()),
                    sys.into(),
                    r.canary.to_string(),
                    r.probes.to_string(),
                    format!("{:.6}", r.detection),
                    format!("{:.6}", r.statistic),
                    format!("{:.6}", r.ci_low),
                    format!("{:.6}", r.ci_high),
                    format!("{:.6}", r.threshold),
                    r.pass.to_string(),
                ])?;
            }
        }
        Ok(())
    })
}

/// `ablations.csv`'s rows (`ablation,metric,value,diff,ci_low,ci_high,p_value`), one per
/// row of the seed's "Required Ablations": the input ablations at evaluation time, the
/// primary model (also as its own `d_state=N` and `layers=L`), each retrained ablation,
/// the sequence-length strata (`diff` against the heuristic on the same cases) and the
/// frequency check (`diff` against the oracle). Empty fields: not measured.
pub fn csv_rows(report: &EvalReport) -> Vec<[String; 7]> {
    let num = |v: f64| {
        if v.is_finite() {
            format!("{v:.6}")
        } else {
            String::new()
        }
    };
    let mut rows = Vec::new();
    let mut push = |a: &str, m: &str, v: f64, d: f64, lo: f64, hi: f64, p: f64| {
        rows.push([a.into(), m.into(), num(v), num(d), num(lo), num(hi), num(p)]);
    };
    for a in &report.ablations {
        let (v, d) = (a.dcg10, a.difference);
        push(&a.id, "dcg@10", v, d, a.ci_low, a.ci_high, a.p_value);
    }
    let names: Vec<&str> = report.retrained.iter().map(|r| &r.ablation[..]).collect();
    for r in &report.retrained {
        let mut labels = vec![r.ablation.clone()];
        if r.ablation == "primary" {
            // The primary model is the grid's point at its own state size and depth.
            for own in [
                format!("d_state={}", r.d_state),
                format!("layers={}", r.layers),
            ] {
                if !names.contains(&own.as_str()) {
                    labels.push(own);
                }
            }
        }
        for label in labels {
            for m in &r.metrics {
                let nan = f64::NAN;
                let (lo, hi) = if r.ablation == "primary" {
                    (nan, nan)
                } else {
                    (m.ci_low, m.ci_high)
                };
                push(&label, m.metric, m.value, m.difference, lo, hi, m.p_value);
            }
        }
    }
    for s in &report.sequence_length {
        let name = format!("sequence_length {} sessions", s.sessions);
        let (v, d) = (s.model_dcg10, s.difference);
        push(&name, "dcg@10", v, d, s.ci_low, s.ci_high, s.p_value);
    }
    if let Some((m, o)) = &report.frequency {
        let nan = f64::NAN;
        let weekly = m.weekly_share - o.weekly_share;
        push("fft", "weekly_share", m.weekly_share, weekly, nan, nan, nan);
        let daily = m.daily_share - o.daily_share;
        push("fft", "daily_share", m.daily_share, daily, nan, nan, nan);
    }
    rows
}
