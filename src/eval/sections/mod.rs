//! The report's sections (`report.md`, `report.html`): every table, figure and verdict of
//! an evaluation, as blocks for [`super::report`] to render.

mod ablations;
mod canaries;

use super::findings::Curve;
use super::findings::EvalReport;
use super::gates::{REFERENCES, reference_behaved};
use super::report::{self, Block, Mark, Section, table};
use super::scoring::System;
use super::split::MIN_USERS;
use super::strata::{Stratum, crossover};
use super::verdict::{self, Verdict};
use crate::metrics::METRICS;
use ablations::ablation_blocks;
use canaries::{canary_sections, dual_section};

fn f4(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "—".into()
    }
}

pub fn snr_name(snr: Option<f64>) -> String {
    match snr {
        None => "clean".into(),
        Some(db) => format!("{db} dB"),
    }
}

/// The report's sections, in reading order: the verdict, the gates and their validity,
/// the metrics, the canaries, the ablations, the strata, the PoC's patterns, the runs.
pub fn sections(
    report: &EvalReport,
    systems: &[System],
    all: &[usize],
    loo_idx: &[usize],
    curves: &[Curve],
) -> Vec<Section> {
    let mut out = vec![
        verdict_section(report),
        gates_section(report),
        validity_section(report),
    ];
    out.extend(metric_sections(report, systems, all, loo_idx));
    out.extend(canary_sections(report));
    out.push(dual_section(report));
    out.push(Section {
        title: "Ablations".into(),
        blocks: ablation_blocks(report),
    });
    out.extend(strata_sections(report));
    out.extend(super::patterns::section(&report.patterns, &report.split));
    out.extend(poc_section(report));
    out.extend(runs_section(report, curves));
    out
}

/// The verdict per phase transition, its validity, and what was evaluated.
fn verdict_section(report: &EvalReport) -> Section {
    let ts = &report.test_set;
    let mut about = vec![Block::Para(format!(
        "Dataset `{}`. Primary model: **{}**. GTS: {} test cases from {} users, {} of them with history before the cut-off (every test turn with a relevant label, scored from the full history before it; split: {}); LOO: {} cases from {} users (each user's last turn, when it is a GTS case). Resampling unit: {}; several seeds of a model are resampled with the users (hierarchical bootstrap). Significance: BCa lower bound > 0 and p < 0.05.",
        report.dataset,
        report.primary,
        ts.cases,
        ts.users,
        ts.warm_users,
        report.split,
        report.loo_set.cases,
        report.loo_set.users,
        report.unit
    ))];
    for (name, set) in [("GTS", ts), ("LOO", &report.loo_set)] {
        if set.too_small() {
            about.push(Block::Para(format!(
                "**Warning: the {name} split has {} users (fewer than {MIN_USERS}); its statistics describe these users, not a population.**",
                set.users
            )));
        }
    }
    let v = Verdict::new(&report.gates, !report.reference.is_empty());
    Section {
        title: "Verdict".into(),
        blocks: verdict::blocks(&v, about),
    }
}

fn gates_section(report: &EvalReport) -> Section {
    Section {
        title: "Phase gates".into(),
        blocks: vec![table(
            &[
                "gate",
                "phase",
                "value",
                "95% CI",
                "threshold",
                "status",
                "note",
            ],
            report
                .gates
                .iter()
                .map(|g| {
                    vec![
                        g.name.clone(),
                        g.phase.clone(),
                        g.value.map_or("—".into(), f4),
                        match (g.ci_low, g.ci_high) {
                            (Some(lo), Some(hi)) => format!("[{}, {}]", f4(lo), f4(hi)),
                            _ => "—".into(),
                        },
                        g.threshold.to_string(),
                        report::gate_status(g.status),
                        g.note.clone(),
                    ]
                })
                .collect(),
        )],
    }
}

/// The validity matrix: each reference system's status on each gate, marked by whether
/// it did what it must there.
fn validity_section(report: &EvalReport) -> Section {
    let mut header = vec!["gate", "judges quality", report.primary.as_str()];
    header.extend(REFERENCES);
    let rows = report
        .gates
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut r = vec![
                g.name.clone(),
                if g.judges_quality {
                    "yes".into()
                } else {
                    "no".into()
                },
                report::gate_status(g.status),
            ];
            r.extend(report.reference.iter().enumerate().map(|(k, (_, gs))| {
                gs.get(i).map_or("—".into(), |x| {
                    let mark = match reference_behaved(k, g, x.status) {
                        Some(Ok(())) => Mark::Pass,
                        Some(Err(_)) => Mark::Fail,
                        None => Mark::Open,
                    };
                    let value = x.value.map_or("—".into(), f4);
                    format!("{} {} ({value})", mark.symbol(), x.status)
                })
            }));
            r
        })
        .collect();
    Section {
        title: "Gate validity".into(),
        blocks: vec![
            Block::Para("Every gate computed for systems whose answer is known: the oracle (planted relevance) must pass each gate that judges model quality, random and a constant scorer must fail it, a label memorizer (observed labels on the turns it trained on, a constant elsewhere) must fail the dual-error gate, and the observable reference (a rule learner that reads only what a model reads: earlier labels, ids, focal entities, time, observed features) must pass each canary gate, or the data cannot teach it. A gate that does not is INVALID for the primary model. In the reference columns ✓ marks a reference that did what it must on that gate, ✗ one that did not, ○ one not judged there.".into()),
            table(&header, rows),
        ],
    }
}

/// The metric means on GTS (the per-seed rows folded under them) and LOO, the paired
/// comparisons, and what `model@sha` systems are.
fn metric_sections(
    report: &EvalReport,
    systems: &[System],
    all: &[usize],
    loo_idx: &[usize],
) -> Vec<Section> {
    let mut out = Vec::new();
    for (split, idx) in [("GTS", all), ("LOO", loo_idx)] {
        let mut header = vec!["system", "kind", "seeds"];
        header.extend(METRICS);
        let mut blocks = vec![table(
            &header,
            systems
                .iter()
                .map(|s| {
                    let mut r = vec![
                        s.name.clone(),
                        s.kind.to_string(),
                        s.seeds.len().to_string(),
                    ];
                    r.extend((0..METRICS.len()).map(|m| f4(s.mean(m, idx))));
                    r
                })
                .collect(),
        )];
        if split == "GTS" {
            blocks.push(per_seed(systems));
        }
        out.push(Section {
            title: format!("Metrics, {split} ({} cases)", idx.len()),
            blocks,
        });
    }
    out.push(Section {
        title: format!("Paired comparisons ({} − other)", report.primary),
        blocks: vec![Block::Details {
            summary: format!(
                "{} paired comparisons: the primary model against each other system, per split and metric",
                report.comparisons.len()
            ),
            blocks: vec![comparisons_table(report)],
        }],
    });
    if systems
        .iter()
        .any(|s| s.name.contains('@') || s.name.contains("+mix="))
    {
        out.push(Section {
            title: "TSTR".into(),
            blocks: vec![Block::Para(
                "Systems named `model@sha` were trained on another dataset (the first characters of its candidates SHA-256) and are evaluated on this dataset's own test split (train on synthetic, test on real when this dataset is real); systems named `model+mix=sha` were trained on this dataset with that one's training turns mixed in (synthetic + real); systems without either were trained on this dataset alone. The TSTR gates compare the primary model's three arms; their metrics and paired comparisons are in the tables above.".into(),
            )],
        });
    }
    out
}

/// Each trained run's GTS metrics, folded.
fn per_seed(systems: &[System]) -> Block {
    let mut header = vec!["system", "run", "seed"];
    header.extend(METRICS);
    let mut rows = Vec::new();
    for sys in systems.iter().filter(|s| !s.seeds.is_empty()) {
        for ((run, seed), m) in sys.runs.iter().zip(&sys.seeds).zip(&sys.per_seed) {
            let mut r = vec![
                sys.name.clone(),
                format!("`{}`", run.display()),
                seed.to_string(),
            ];
            r.extend(m.iter().map(|v| f4(*v)));
            rows.push(r);
        }
    }
    Block::Details {
        summary: format!("Per seed ({} runs)", rows.len()),
        blocks: vec![table(&header, rows)],
    }
}

fn comparisons_table(report: &EvalReport) -> Block {
    table(
        &[
            "split",
            "metric",
            "other",
            &report.primary,
            "other's",
            "difference",
            "BCa 95%",
            "p",
            "significant",
        ],
        report
            .comparisons
            .iter()
            .map(|r| {
                let st = &r.stats;
                vec![
                    r.split.clone(),
                    r.metric.clone(),
                    r.b.clone(),
                    f4(r.mean_a),
                    f4(r.mean_b),
                    format!("{:+.4}", st.theta_hat),
                    format!("[{:+.4}, {:+.4}]", st.ci_low, st.ci_high),
                    format!(
                        "{:.4}{}",
                        st.p_value,
                        if st.exact { " (exact)" } else { "" }
                    ),
                    if st.significant {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                ]
            })
            .collect(),
    )
}

fn strata_table(primary: &str, st: &[Stratum]) -> Block {
    table(
        &[
            "stratum",
            "sessions",
            "cases",
            "users (warm)",
            primary,
            "heuristic",
            "difference",
            "BCa 95%",
            "p",
            "significant",
        ],
        st.iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.sessions.clone(),
                    s.cases.to_string(),
                    format!("{} ({})", s.users, s.warm_users),
                    f4(s.model_dcg10),
                    f4(s.heuristic_dcg10),
                    f4(s.difference),
                    format!("[{}, {}]", f4(s.ci_low), f4(s.ci_high)),
                    f4(s.p_value),
                    if s.significant {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                ]
            })
            .collect(),
    )
}

/// DCG@10 by the user's sessions so far (cold start) and in the whole dataset.
fn strata_sections(report: &EvalReport) -> Vec<Section> {
    let cs = &report.cold_start;
    let by_stratum = |f: fn(&Stratum) -> f64| -> Vec<(f64, f64)> {
        cs.iter()
            .enumerate()
            .map(|(i, s)| (i as f64, f(s)))
            .collect()
    };
    vec![
        Section {
            title: "Cold-start strata".into(),
            blocks: vec![
                strata_table(&report.primary, cs),
                Block::Figure {
                    file: "cold_start.svg".into(),
                    svg: report::line_chart(
                        &[
                            (report.primary.clone(), by_stratum(|s| s.model_dcg10)),
                            ("heuristic".into(), by_stratum(|s| s.heuristic_dcg10)),
                        ],
                        "the user's sessions so far",
                        "DCG@10 on the stratum's test cases",
                        &cs.iter()
                            .enumerate()
                            .map(|(i, s)| (i as f64, s.sessions.clone()))
                            .collect::<Vec<_>>(),
                        None,
                    ),
                    caption: "DCG@10 by cold-start stratum".into(),
                },
                Block::Para(format!(
                    "DCG@10 by the number of sessions the user has had. Crossover (the model beats the heuristic significantly from this stratum on): {}.",
                    crossover(cs).unwrap_or_else(|| "none".into())
                )),
            ],
        },
        Section {
            title: "Sequence-length strata".into(),
            blocks: vec![
                Block::Para(
                    "DCG@10 of the test cases by the user's number of sessions in the whole dataset."
                        .into(),
                ),
                strata_table(&report.primary, &report.sequence_length),
            ],
        },
    ]
}

/// The seed's seven proof-of-concept patterns, where the dataset shaped test cases by them.
fn poc_section(report: &EvalReport) -> Option<Section> {
    if report.canaries.is_none() || !report.poc.iter().any(|p| p.cases > 0) {
        return None;
    }
    Some(Section {
        title: "Proof-of-concept patterns".into(),
        blocks: vec![
            Block::Para("The seed's seven pointwise patterns (planted on `canaries.poc_share` of the turns): HR@5 of the primary model on the test cases each pattern shaped, PASS above 0.5 as in the seed's table. Compare with the random column: with many relevant candidates per turn, 0.5 is below chance, so this table is for comparison with the seed's, not a verdict.".into()),
            table(
                &["pattern", "cases", "HR@5", "random HR@5", "oracle HR@5", "status"],
                report
                    .poc
                    .iter()
                    .map(|p| {
                        vec![
                            p.pattern.clone(),
                            p.cases.to_string(),
                            f4(p.hr5),
                            f4(p.random_hr5),
                            f4(p.oracle_hr5),
                            report::status(if p.cases == 0 {
                                "no case"
                            } else if p.pass {
                                "PASS"
                            } else {
                                "FAIL"
                            }),
                        ]
                    })
                    .collect(),
            ),
        ],
    })
}

/// The primary model's training curves and its latency.
fn runs_section(report: &EvalReport, curves: &[Curve]) -> Option<Section> {
    let mut blocks = Vec::new();
    if !curves.is_empty() {
        // A run is named by its directory: the legend has room for about 20 characters.
        let name = |run: &str| {
            std::path::Path::new(run)
                .file_name()
                .map_or(run.to_string(), |n| n.to_string_lossy().into_owned())
        };
        let dcg: Vec<(String, Vec<(f64, f64)>)> = curves
            .iter()
            .map(|(run, rows)| {
                (
                    name(run),
                    rows.iter()
                        .filter(|r| r.2.is_finite())
                        .map(|r| (r.0, r.2))
                        .collect(),
                )
            })
            .collect();
        let loss: Vec<(String, Vec<(f64, f64)>)> = curves
            .iter()
            .map(|(run, rows)| (name(run), rows.iter().map(|r| (r.0, r.1)).collect()))
            .collect();
        blocks.extend([
            Block::Figure {
                file: "training_loss.svg".into(),
                svg: report::line_chart(
                    &loss,
                    "optimizer step",
                    "training loss (per turn)",
                    &[],
                    None,
                ),
                caption: "Training loss of the primary model's runs".into(),
            },
            Block::Figure {
                file: "training_dcg.svg".into(),
                svg: report::line_chart(&dcg, "optimizer step", "validation DCG@10", &[], None),
                caption: "Validation DCG@10 (model selection) of the primary model's runs".into(),
            },
        ]);
    }
    if let Some(l) = &report.latency {
        blocks.push(Block::Para(format!(
            "Latency of `{}`, one turn per step, batch 1, {} turns, each the fastest of {} replays: p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms.",
            l.model,
            l.turns,
            crate::eval::scoring::LATENCY_REPLAYS,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms
        )));
    }
    (!blocks.is_empty()).then(|| Section {
        title: "Runs".into(),
        blocks,
    })
}
