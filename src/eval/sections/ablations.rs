//! The report's ablation section: the retrained ablations (the seed's grid, with its
//! questions) and the inputs removed at evaluation time.

use super::f4;
use crate::eval::ablation::{one_seed_caveat, question};
use crate::eval::findings::EvalReport;
use crate::eval::report::{self, Block, table};

/// The retrained ablations and the inputs removed at evaluation time.
pub(super) fn ablation_blocks(report: &EvalReport) -> Vec<Block> {
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

/// The report's blocks for the retrained ablations: a table with the seed's question
/// beside each row, and DCG@10 against the state size and against the depth.
fn retrained_blocks(report: &EvalReport) -> Vec<Block> {
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
                r.model(),
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
            "Retrained ablations: each row is the primary model retrained with one setting changed, on the same seeds and data, against the primary model on the GTS test cases (difference = ablation − primary, BCa 95% over seeds and users; p two-sided, a sign-flip test over users of the mean over seeds, which holds the seeds fixed). Canaries: how many of the seven pass at 20 dB, the ablation's seeds judged together."
                .into(),
        ),
        table(
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
    blocks.extend(one_seed_caveat(&report.retrained).map(Block::Para));
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
                svg: report::line_chart(
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
