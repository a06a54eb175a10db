//! The report's sections (`report.md`, `report.html`): every table, figure and verdict of
//! an evaluation, as blocks for [`super::report`] to render.

use super::ablation::question;
use super::canary::CanaryResult;
use super::canary::mean_detection;
use super::dual::DualError;
use super::findings::Curve;
use super::findings::{EvalReport, SnrLevel};
use super::gates::{REFERENCES, cliff, reference_behaved};
use super::report::{self, Block, Mark, Section, table};
use super::scoring::System;
use super::split::MIN_USERS;
use super::strata::{Stratum, crossover};
use super::verdict::{self, Verdict};
use crate::metrics::METRICS;

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
                        report::status(&g.status.to_string()),
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
                report::status(&g.status.to_string()),
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
    if systems.iter().any(|s| s.name.contains('@')) {
        out.push(Section {
            title: "TSTR".into(),
            blocks: vec![Block::Para(
                "Systems named `model@sha` were trained on another dataset (the first characters of its candidates SHA-256) and are evaluated on this dataset's own test split (train on synthetic, test on real when this dataset is real); systems without a suffix were trained on this dataset. Their metrics and paired comparisons are in the tables above.".into(),
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

/// A canary result as a status cell.
fn canary_status(r: &CanaryResult) -> String {
    if r.probes == 0 {
        report::status("no probe")
    } else if r.pass {
        report::status("PASS")
    } else {
        report::status("FAIL")
    }
}

/// The canary suite at 20 dB, the frequency response and the SNR curve.
fn canary_sections(report: &EvalReport) -> Vec<Section> {
    let Some(levels) = &report.canaries else {
        return vec![Section {
            title: "Canary suite".into(),
            blocks: vec![Block::Para("The dataset planted no canaries (its manifest has no canary parameters): no probe, no SNR curve.".into())],
        }];
    };
    let scales = report
        .scales
        .iter()
        .map(|a| format!("{a:.3}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut blocks = vec![Block::Para(format!(
        "Probes: GTS test cases holding a canary memory, edited in one factor at the probed turn (see `src/eval/canary/`). A version's value is the canary candidate's log-relevance minus the mean over the turn's ordinary candidates, whose planted relevance no edit changes (this removes a listwise model's per-turn constant); a model's log-relevance is its score times the scale fitted on validation turns ({scales} for the seeds). Detection = share of probe sites where the value moves in the planted direction (ties count one half). The statistic is computed on the sites' values averaged over the seeds; its 95% interval resamples seeds and sites. The oracle applies the generator's rules to the inputs it sees; the observable reference learns each user's patterns from the user's earlier turns, reading only what a model reads. A canary is probed where the user's history holds evidence of it (its entity shown at least {} times before, {} for combined; for the selector canaries, once with the selector focal).",
        super::canary::MIN_EVIDENCE,
        super::canary::COMBINED_EVIDENCE
    ))];
    if let Some(l) = levels.iter().find(|l| l.snr_db == Some(20.0)) {
        blocks.push(table(
            &[
                "canary",
                "probes",
                "detection",
                "statistic",
                "95% CI",
                "threshold",
                "status",
                "oracle",
                "random",
                "constant",
                "observable",
            ],
            l.model
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let refer = |v: &[CanaryResult]| {
                        v.get(i).map_or("—".into(), |r| {
                            format!("{} ({})", canary_status(r), f4(r.statistic))
                        })
                    };
                    vec![
                        m.canary.to_string(),
                        m.probes.to_string(),
                        f4(m.detection),
                        f4(m.statistic),
                        format!("[{}, {}]", f4(m.ci_low), f4(m.ci_high)),
                        f4(m.threshold),
                        canary_status(m),
                        refer(&l.oracle),
                        refer(&l.random),
                        refer(&l.constant),
                        refer(&l.observable),
                    ]
                })
                .collect(),
        ));
    }
    let mut out = vec![Section {
        title: "Canary suite at 20 dB".into(),
        blocks,
    }];
    out.extend(frequency_section(report));
    out.push(snr_section(report, levels));
    out
}

fn frequency_section(report: &EvalReport) -> Option<Section> {
    let (m, o) = report.frequency.as_ref()?;
    Some(Section {
        title: "Frequency response".into(),
        blocks: vec![
            Block::Para(format!(
                "The temporal-cycle memories' log-relevance as the probed turn sweeps one week ({} probe sites, 12 points a day, each site centred, then averaged), and the share of the curve's spectral power (DC excluded) at the weekly and the daily period. The planted cycle is weekly, peaking at a time of the week drawn per user (`turns.cycle_peak`): the sweep starts at each user's peak, so the planted curve peaks at day 0.",
                m.sites
            )),
            table(
                &[
                    "system",
                    "weekly share",
                    "daily share",
                    "peak (days after the user's peak)",
                ],
                vec![
                    vec![
                        report.primary.clone(),
                        f4(m.weekly_share),
                        f4(m.daily_share),
                        format!("{:.2}", m.peak_day),
                    ],
                    vec![
                        "oracle".into(),
                        f4(o.weekly_share),
                        f4(o.daily_share),
                        format!("{:.2}", o.peak_day),
                    ],
                ],
            ),
            Block::Figure {
                file: "frequency_response.svg".into(),
                svg: report::line_chart(
                    &[
                        (report.primary.clone(), m.curve.clone()),
                        ("oracle".into(), o.curve.clone()),
                    ],
                    "time of the week (days after the user's planted peak)",
                    "centred log-relevance (nats)",
                    &(0..=7)
                        .map(|d| (d as f64, d.to_string()))
                        .collect::<Vec<_>>(),
                    None,
                ),
                caption:
                    "Response of the temporal-cycle memories' log-relevance to the time of the week"
                        .into(),
            },
        ],
    })
}

fn snr_section(report: &EvalReport, levels: &[SnrLevel]) -> Section {
    let x = |l: &SnrLevel| l.snr_db.unwrap_or(40.0);
    let ticks: Vec<(f64, String)> = levels.iter().map(|l| (x(l), snr_name(l.snr_db))).collect();
    let curve = |name: &str, of: fn(&SnrLevel) -> &[CanaryResult]| {
        (
            name.to_string(),
            levels
                .iter()
                .map(|l| (x(l), mean_detection(of(l))))
                .collect::<Vec<_>>(),
        )
    };
    let series = vec![
        curve(&report.primary, |l| &l.model),
        curve("oracle", |l| &l.oracle),
        curve("random", |l| &l.random),
        curve("observable", |l| &l.observable),
    ];
    let floor = levels
        .iter()
        .filter(|l| l.snr_db.is_some())
        .find(|l| mean_detection(&l.model) < 0.5)
        .map_or(
            "below −10 dB (detection ≥ 50% at every level)".to_string(),
            |l| snr_name(l.snr_db),
        );
    let mut header = vec!["level".to_string()];
    header.extend(levels[0].model.iter().map(|r| r.canary.to_string()));
    header.push("mean".into());
    header.push("oracle mean".into());
    header.push("observable mean".into());
    let rows = levels
        .iter()
        .map(|l| {
            let mut r = vec![snr_name(l.snr_db)];
            r.extend(l.model.iter().map(|c| f4(c.detection)));
            r.push(f4(mean_detection(&l.model)));
            r.push(f4(mean_detection(&l.oracle)));
            r.push(f4(mean_detection(&l.observable)));
            r
        })
        .collect();
    let max_drop = cliff(
        &levels
            .iter()
            .map(|l| (l.snr_db, l.model.clone()))
            .collect::<Vec<_>>(),
    )
    .map_or(f64::NAN, |c| c.0);
    Section {
        title: "SNR curve".into(),
        blocks: vec![
            Block::Table { header, rows },
            Block::Figure {
                file: "snr_curve.svg".into(),
                svg: report::line_chart(
                    &series,
                    "feature SNR (dB; clean at the right)",
                    "mean canary detection (share of probe sites)",
                    &ticks,
                    Some((0.0, 1.0)),
                ),
                caption: "Mean canary detection against feature noise".into(),
            },
            Block::Para(format!(
                "Noise floor (first level where the mean detection falls below 50%): {floor}. Largest drop between adjacent levels above the noise floor: {:.1} points.",
                100.0 * max_drop
            )),
        ],
    }
}

fn dual_section(report: &EvalReport) -> Section {
    let dual_header = [
        "canary",
        "candidates",
        "MSE_Obs",
        "MSE_True",
        "floor",
        "skill",
        "status",
    ];
    let dual_rows = |d: &[DualError]| -> Vec<Vec<String>> {
        d.iter()
            .map(|e| {
                vec![
                    e.canary.to_string(),
                    e.n.to_string(),
                    format!("{:.5}", e.mse_obs),
                    format!("{:.5}", e.mse_true),
                    format!("{:.5}", e.floor),
                    format!("{:+.3}", e.skill),
                    report::status(if e.pass { "PASS" } else { "FAIL" }),
                ]
            })
            .collect()
    };
    let mut blocks = vec![
        Block::Para("Predicted relevance (a model's softmax over the turn's candidates, at its validation scale, times the mean number of relevant labels per turn) against the observed labels (MSE_Obs) and the clean relevance (MSE_True) of each canary's candidates. Labels are draws from the relevance, so even the truth misses them by the floor F = mean (label − relevance)²; a canary passes when MSE_Obs − MSE_True > F / 2 (the model did not fit the label noise) and its skill 1 − MSE_True / MSE_base > 0.1, MSE_base being the MSE_True of the canary's mean relevance (it learned the rule that moves the canary's relevance, not only which memories are the canary's; burst, a fixed level, is compared with the turns' base rate). Training turns (the gate):".into()),
        table(&dual_header, dual_rows(&report.dual_train)),
        Block::Para("Test turns:".into()),
        table(&dual_header, dual_rows(&report.dual_test)),
    ];
    if !report.dual_reference.is_empty() {
        let mut refs = Vec::new();
        for (name, d) in &report.dual_reference {
            refs.push(Block::Para(format!(
                "Reference system `{name}`, training turns:"
            )));
            refs.push(table(&dual_header, dual_rows(d)));
        }
        blocks.push(Block::Details {
            summary: format!(
                "The reference systems on the training turns ({})",
                report
                    .dual_reference
                    .iter()
                    .map(|r| r.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            blocks: refs,
        });
    }
    Section {
        title: "Dual-error test".into(),
        blocks,
    }
}

/// The retrained ablations and the inputs removed at evaluation time.
fn ablation_blocks(report: &EvalReport) -> Vec<Block> {
    let mut blocks = retrained_blocks(report);
    blocks.extend([
            Block::Para("Inputs removed at evaluation time from the primary model (no retraining). The sequence-length strata are below, the frequency check under the canaries; `ablations.csv` holds every row.".into()),
            table(
                &["ablation", "DCG@10", "full DCG@10", "difference", "BCa 95%", "p"],
                report
                    .ablations
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.clone(),
                            f4(a.dcg10),
                            f4(a.full_dcg10),
                            format!("{:+.4}", a.difference),
                            format!("[{:+.4}, {:+.4}]", a.ci_low, a.ci_high),
                            f4(a.p_value),
                        ]
                    })
                    .collect(),
            ),
            Block::Figure {
                file: "ablations.svg".into(),
                svg: report::bar_chart(
                    &std::iter::once(("full".to_string(), report.ablations.first().map_or(f64::NAN, |a| a.full_dcg10)))
                        .chain(report.ablations.iter().map(|a| (a.name.split(" (").next().unwrap_or("").to_string(), a.dcg10)))
                        .collect::<Vec<_>>(),
                    "DCG@10 on the GTS test cases",
                    None,
                ),
                caption: "DCG@10 with inputs removed".into(),
            },
    ]);
    blocks
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
            "Latency of `{}`, one turn per step, batch 1, {} turns: p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms.",
            l.model, l.turns, l.p50_ms, l.p95_ms, l.p99_ms
        )));
    }
    (!blocks.is_empty()).then(|| Section {
        title: "Runs".into(),
        blocks,
    })
}

/// The report's blocks for the retrained ablations: a table with the seed's question
/// beside each row, and DCG@10 against the state size and against the depth.
pub fn retrained_blocks(report: &EvalReport) -> Vec<Block> {
    if report.retrained.len() < 2 {
        return vec![Block::Para(
            "Retrained ablations: none in this evaluation. List them under `[pipeline] ablations` (e.g. `[\"d_state=4\", \"layers=1\", \"no_selectivity\", \"temporal_only\"]`), or pass their runs to `eval`."
                .into(),
        )];
    }
    let fmt = |v: f64| format!("{v:+.4}");
    let rows = report
        .retrained
        .iter()
        .map(|r| {
            let m = |i: usize| &r.metrics[i];
            let diff = |i: usize| {
                if r.ablation == "primary" {
                    "—".to_string()
                } else {
                    let m = m(i);
                    format!(
                        "{} [{}, {}]",
                        fmt(m.difference),
                        fmt(m.ci_low),
                        fmt(m.ci_high)
                    )
                }
            };
            let canaries = r.canaries.as_ref().map_or("—".to_string(), |c| {
                format!("{}/{}", c.iter().filter(|c| c.pass).count(), c.len())
            });
            let p = m(0).p_value;
            vec![
                r.ablation.clone(),
                r.question.to_string(),
                format!("N = {}, {} layers, {} seeds", r.d_state, r.layers, r.seeds),
                format!("{:.4}", m(0).value),
                diff(0),
                if p.is_finite() {
                    format!("{p:.4}")
                } else {
                    "—".into()
                },
                diff(1),
                diff(2),
                canaries,
            ]
        })
        .collect();
    let mut blocks = vec![
        Block::Para(
            "Retrained ablations: each row is the primary model retrained with one setting changed, on the same seeds and data, against the primary model on the GTS test cases (difference = ablation − primary, BCa 95% over seeds and users; p two-sided). Canaries: how many of the seven pass at 20 dB, the ablation's seeds judged together."
                .into(),
        ),
        super::report::table(
            &[
                "ablation",
                "the seed's question",
                "model",
                "DCG@10",
                "Δ DCG@10 [BCa]",
                "p",
                "Δ HR@10 [BCa]",
                "Δ MRR@10 [BCa]",
                "canaries",
            ],
            rows,
        ),
    ];
    // DCG@10 against N and against depth: the primary and the single-setting ablations.
    for (key, axis, file) in [
        ("d_state", "state size N", "ablation_state_size.svg"),
        ("layers", "layers", "ablation_layers.svg"),
    ] {
        let mut points: Vec<(f64, f64)> = report
            .retrained
            .iter()
            .filter(|r| r.ablation == "primary" || r.ablation.starts_with(&format!("{key}=")))
            .filter(|r| !r.ablation.contains('+'))
            .map(|r| {
                let x = if key == "d_state" {
                    r.d_state
                } else {
                    r.layers
                };
                (x as f64, r.metrics[0].value)
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if points.len() >= 2 {
            let ticks: Vec<(f64, String)> =
                points.iter().map(|p| (p.0, format!("{}", p.0))).collect();
            blocks.push(Block::Figure {
                file: file.into(),
                svg: super::report::line_chart(
                    &[(report.primary.clone(), points)],
                    axis,
                    "DCG@10 (GTS)",
                    &ticks,
                    None,
                ),
                caption: format!("DCG@10 against {axis} (the seed: \"{}\")", question(key)),
            });
        }
    }
    blocks
}
