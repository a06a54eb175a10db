//! The report's canary sections: the canary suite at 20 dB, the frequency response, the
//! SNR curve, and the dual-error test.

use super::{f4, snr_name};
use crate::eval::canary::{CanaryResult, mean_detection};
use crate::eval::dual::DualError;
use crate::eval::findings::{EvalReport, SnrLevel};
use crate::eval::gates::cliff;
use crate::eval::report::{self, Block, Section, table};

/// Below this weight on the observable reference's weekly factor, the report says the
/// training loss does not reward the trust the cycle canary asks (its ratio of 2 needs
/// about half the factor where the reference reads 4–6).
const WEEK_TRUST_LOW: f64 = 0.5;

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

/// A system's result for one canary as a cell: its status and statistic, or a dash where
/// it has none.
fn result_cell(r: Option<&CanaryResult>) -> String {
    r.map_or("—".into(), |r| {
        format!("{} ({})", canary_status(r), f4(r.statistic))
    })
}

/// The canary suite at 20 dB, the frequency response and the SNR curve.
pub(super) fn canary_sections(report: &EvalReport) -> Vec<Section> {
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
        crate::eval::canary::MIN_EVIDENCE,
        crate::eval::canary::COMBINED_EVIDENCE
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
                    let refer = |v: &[CanaryResult]| result_cell(v.get(i));
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
        blocks.push(Block::Para(format!(
            "The observable reference applies its weekly factor (a harmonic fitted to each entity's labels over the week) at weight 1; on the training turns the listwise softmax likelihood, a model's loss, gives it {:.3}, with the rest of the reference's log-relevance scaled by {:.3} (as a model's scores are scaled before its canary values are read). {}",
            l.observable_week_trust,
            l.observable_week_scale,
            if l.observable_week_trust < WEEK_TRUST_LOW {
                "A learner is not rewarded for trusting the time of the week as far as the temporal_cycle canary asks on this data: a model that fails it may be doing what its loss asks (docs/canary-suite.md)."
            } else {
                "The training loss rewards the weekly factor."
            }
        )));
    }
    blocks.extend(peer_blocks(report, levels));
    let mut out = vec![Section {
        title: "Canary suite at 20 dB".into(),
        blocks,
    }];
    out.extend(frequency_section(report));
    out.push(snr_section(report, levels));
    out
}

/// The other models scored beside the primary (the learned baselines), probed on the same
/// sites at 20 dB and judged as the primary is: a table with the primary beside them.
fn peer_blocks(report: &EvalReport, levels: &[SnrLevel]) -> Vec<Block> {
    let Some(l) = levels.iter().find(|l| l.snr_db == Some(20.0)) else {
        return Vec::new();
    };
    if report.peers.is_empty() {
        return Vec::new();
    }
    let passed =
        |v: &[CanaryResult]| format!("{}/{}", v.iter().filter(|r| r.pass).count(), v.len());
    let mut header = vec!["canary", report.primary.as_str()];
    header.extend(report.peers.keys().map(String::as_str));
    let mut rows: Vec<Vec<String>> = l
        .model
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut row = vec![m.canary.to_string(), result_cell(Some(m))];
            row.extend(report.peers.values().map(|v| result_cell(v.get(i))));
            row
        })
        .collect();
    let mut total = vec!["passed".to_string(), passed(&l.model)];
    total.extend(report.peers.values().map(|v| passed(v)));
    rows.push(total);
    vec![
        Block::Para("The other models scored beside the primary (its peers and the learned baselines), probed on the same sites at 20 dB and judged as the primary is: each one's seeds together, its scores at the scales fitted on its validation turns. No gate reads them; they say whether a reader of another design passes what the primary does not.".into()),
        table(&header, rows),
    ]
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

pub(super) fn dual_section(report: &EvalReport) -> Section {
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
