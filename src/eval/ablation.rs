//! Input ablations at evaluation time: the primary model with an input removed from
//! every sequence, against the full model on the same cases.

use std::collections::BTreeMap;

use burn::prelude::*;
use serde::Serialize;

use super::Unit;
use super::canary::CanaryResult;
use super::options::EvalOptions;
use super::scoring::{System, model_scores};
use super::split::Case;
use super::stats::{ComparisonRow, compare};
use crate::data::{Dataset, UserSeq};
use crate::metrics::{case_row, metric_index};
use crate::model::scorer::{ModelConfig, Scorer};

/// DCG@10 of the primary model with an input removed at evaluation time.
#[derive(Clone, Debug, Serialize)]
pub struct Ablation {
    /// Short name (`no_temporal_features`, `no_content_features`).
    pub id: String,
    pub name: String,
    pub dcg10: f64,
    pub full_dcg10: f64,
    /// Mean of ablated − full per case, with its BCa interval.
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
}

#[allow(clippy::too_many_arguments)]
pub fn input_ablations(
    data: &Dataset,
    gts: &[Case],
    labels: &[Vec<f64>],
    models: &[(Scorer, ModelConfig)],
    full: &System,
    units: &[u64],
    opts: &EvalOptions,
    device: &Device,
) -> Vec<Ablation> {
    use crate::features::{FEATURE_DIM, feat};
    let m = metric_index("dcg@10");
    let time_cols = feat::TEMPORAL;
    let kinds: [(&str, &str, Ablate); 2] = [
        (
            "no_temporal_features",
            "no temporal features (turn context, the candidates' time features — age, time of day, weekday, month, session gap — and history features zeroed)",
            |u, cols| {
                u.context.fill(0.0);
                let slots = u.valid.len();
                u.history = vec![0.0; slots * crate::history::HISTORY_DIM];
                for row in u.features.chunks_mut(FEATURE_DIM) {
                    for &c in cols {
                        row[c] = 0.0;
                    }
                }
            },
        ),
        (
            "no_content_features",
            "no content features (query and memory embeddings zeroed)",
            |u, _| {
                u.query.fill(0.0);
                u.content.fill(0.0);
            },
        ),
    ];
    let all: Vec<usize> = (0..gts.len()).collect();
    kinds
        .iter()
        .map(|(id, name, ablate)| {
            let mut d = data.clone();
            for u in &mut d.users {
                ablate(u, &time_cols);
            }
            let mut per_case = vec![0.0; gts.len()];
            for (model, cfg) in models {
                let scores = model_scores(model, cfg, &d, gts, device);
                for (i, (s, l)) in scores.iter().zip(labels).enumerate() {
                    per_case[i] += case_row(s, l)[m] / models.len() as f64;
                }
            }
            let diffs: Vec<f64> = per_case
                .iter()
                .zip(&full.cases)
                .map(|(a, f)| a - f[m])
                .collect();
            let c = compare(
                &diffs,
                (opts.unit == Unit::User).then_some(units),
                &opts.compare,
            );
            Ablation {
                id: id.to_string(),
                name: name.to_string(),
                dcg10: per_case.iter().sum::<f64>() / per_case.len().max(1) as f64,
                full_dcg10: full.mean(m, &all),
                difference: c.theta_hat,
                ci_low: c.ci_low,
                ci_high: c.ci_high,
                p_value: c.p_value,
            }
        })
        .collect()
}

/// Removes an input from a sequence (the columns are the candidates' time encodings).
type Ablate = fn(&mut UserSeq, &[usize]);

/// One retrained system of the seed's ablation grid (or the primary model itself) against
/// the primary model, on the GTS test cases.
#[derive(Clone, Debug, Serialize)]
pub struct Retrained {
    pub system: String,
    /// The setting changed (`d_state=4`, `no_selectivity`, …); `primary` for the primary
    /// model.
    pub ablation: String,
    /// The seed's question the row answers.
    pub question: &'static str,
    pub d_state: usize,
    pub layers: usize,
    /// The keyed state's decaying and oscillating modes; `None` for a model without a
    /// temporal state (the pooled ablation: `Some((0, 0))`).
    pub keyed: Option<(usize, usize)>,
    pub seeds: usize,
    /// DCG@10 on the GTS cases of each seed on its own: the spread a retrained
    /// difference has to clear.
    pub seed_dcg10: Vec<f64>,
    /// DCG@10, HR@10, MRR@10 against the primary model.
    pub metrics: Vec<RetrainedMetric>,
    /// Canary results at 20 dB (`None`: the dataset planted no canaries).
    pub canaries: Option<Vec<CanaryResult>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RetrainedMetric {
    pub metric: &'static str,
    pub value: f64,
    /// This system − the primary model (0 for the primary), BCa interval, p-value
    /// (NaN for the primary).
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
}

impl Retrained {
    /// The model column of the table: the backbone's N and depth, the keyed state's
    /// modes where the model has a temporal state, and the seeds.
    pub fn model(&self) -> String {
        let keyed = match self.keyed {
            None => String::new(),
            Some((0, 0)) => ", no keyed state".into(),
            Some((m, 0)) => format!(", keyed {m} decaying"),
            Some((m, c)) => format!(", keyed {m} decaying + {c} oscillating"),
        };
        format!(
            "N = {}, {} layers{keyed}, {} seeds",
            self.d_state, self.layers, self.seeds
        )
    }
}

/// Metrics of the retrained-ablation table.
pub const RETRAINED_METRICS: [&str; 3] = ["dcg@10", "hr@10", "mrr@10"];

/// What the report says under the retrained table when a row rests on one seed (the
/// primary's or the ablation's): its interval then resamples users only and holds none of
/// the spread between seeds, which for the primary is measured when it has two or more.
pub fn one_seed_caveat(rows: &[Retrained]) -> Option<String> {
    let lone: Vec<&str> = rows
        .iter()
        .filter(|r| r.seeds < 2)
        .map(|r| r.ablation.as_str())
        .collect();
    if lone.is_empty() || rows.len() < 2 {
        return None;
    }
    let head = format!(
        "One seed ({}): where a row or the primary has one seed, its interval resamples users only and holds none of the spread between seeds, so a difference inside that spread is not evidence that the setting matters.",
        lone.join(", ")
    );
    let primary = rows.iter().find(|r| r.ablation == "primary");
    Some(match primary.filter(|p| p.seed_dcg10.len() >= 2) {
        Some(p) => {
            let lo = p.seed_dcg10.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = p
                .seed_dcg10
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{head} The primary's {} seeds alone span DCG@10 {lo:.4}–{hi:.4} ({:.4} apart).",
                p.seed_dcg10.len(),
                hi - lo
            )
        }
        None => format!(
            "{head} The spread between seeds is not measured here: train the primary on two or more seeds."
        ),
    })
}

/// What a system changes relative to the primary: the parts of its name the primary's
/// lacks (`mamba+d_state=4` against `mamba` → `d_state=4`; `mamba+d_state=4+no_history`
/// against `mamba+no_history` → `d_state=4`).
pub fn ablation_of(system: &str, primary: &str) -> String {
    let own: Vec<&str> = primary.split('+').skip(1).collect();
    let theirs: Vec<&str> = system.split('+').skip(1).collect();
    let mut parts: Vec<String> = theirs
        .iter()
        .filter(|p| !own.contains(p))
        .map(|p| p.to_string())
        .collect();
    // A switch the primary turns from its default and the system does not: `mlp` against
    // `mlp+relative` → `no_relative` (a sized setting is named by the system's value, and
    // one the system leaves at its default, off, by `no_`: `mlp` against
    // `mlp+picks=5` → `no_picks`).
    let key = |p: &str| p.split('=').next().unwrap_or("").to_string();
    for p in own.iter().filter(|p| !theirs.contains(p)) {
        if p.contains('=') {
            if !theirs.iter().any(|t| key(t) == key(p)) {
                parts.push(format!("no_{}", key(p)));
            }
            continue;
        }
        parts.push(match p.strip_prefix("no_") {
            Some(on) => on.to_string(),
            None => format!("no_{p}"),
        });
    }
    parts.join("+")
}

/// The seed's question beside an ablation ("Required Ablations"); settings changed
/// together (`keyed_modes=1+no_selectivity`) ask whether one stands in for the other.
pub fn question(ablation: &str) -> &'static str {
    if ablation.contains('+') {
        return "Together: does one stand in for the other?";
    }
    let key = ablation.split('=').next().unwrap_or("");
    match key {
        "primary" => "the primary model",
        "d_state" => "Optimal state size for our data",
        "layers" => "Optimal depth",
        "d_model" | "expand" => "Optimal width",
        "mlp_hidden" => "Optimal width of the per-candidate branch",
        "mlp_layers" => "Does a second hidden layer in the per-candidate branch help?",
        "no_selectivity" => "Is Mamba's selection mechanism helping?",
        "temporal_only" => "Can SSM predict from time alone?",
        "no_history" => "Do the per-candidate history features help?",
        "relative" | "no_relative" => "Do the turn-relative features help?",
        "set_encoder" | "no_set_encoder" => "Does reading the turn's candidates as a set help?",
        "picks" | "no_picks" => "Does picking the top places one at a time help?",
        "pooled" => "Does a state written per identity and read per candidate help?",
        "keyed_modes" => "Optimal size of the keyed state",
        "real_only" | "keyed_cycles" => "Complex vs real state: do oscillating modes help?",
        _ => "",
    }
}

/// The retrained-ablation rows: the primary model first, then every system of kind
/// `ablation`, each with its differences to the primary from `comparisons` (GTS split).
pub fn retrained_rows(
    primary: &str,
    systems: &[System],
    comparisons: &[ComparisonRow],
    configs: &BTreeMap<String, ModelConfig>,
    canaries: &BTreeMap<String, Vec<CanaryResult>>,
) -> Vec<Retrained> {
    let all = |s: &System| -> Vec<usize> { (0..s.cases.len()).collect() };
    systems
        .iter()
        .filter(|s| s.name == primary || s.kind == "ablation")
        .filter_map(|s| {
            let cfg = configs.get(&s.name)?;
            let is_primary = s.name == primary;
            let metrics = RETRAINED_METRICS
                .iter()
                .map(|&metric| {
                    let value = s.mean(metric_index(metric), &all(s));
                    let row = comparisons.iter().find(|c| {
                        c.split == "gts" && c.metric == metric && c.a == primary && c.b == s.name
                    });
                    match (is_primary, row) {
                        (false, Some(c)) => RetrainedMetric {
                            metric,
                            value,
                            // The rows hold primary − other: flip to other − primary.
                            difference: -c.stats.theta_hat,
                            ci_low: -c.stats.ci_high,
                            ci_high: -c.stats.ci_low,
                            p_value: c.stats.p_value,
                        },
                        _ => RetrainedMetric {
                            metric,
                            value,
                            difference: 0.0,
                            ci_low: 0.0,
                            ci_high: 0.0,
                            p_value: f64::NAN,
                        },
                    }
                })
                .collect();
            let ablation = if is_primary {
                "primary".to_string()
            } else {
                ablation_of(&s.name, primary)
            };
            Some(Retrained {
                system: s.name.clone(),
                question: question(&ablation),
                ablation,
                d_state: cfg.d_state,
                layers: cfg.layers,
                keyed: cfg
                    .variant
                    .is_temporal()
                    .then_some((cfg.keyed_modes, cfg.keyed_cycles)),
                seeds: s.seed_rows.len(),
                seed_dcg10: s
                    .per_seed
                    .iter()
                    .map(|r| r[metric_index("dcg@10")])
                    .collect(),
                metrics,
                canaries: canaries.get(&s.name).cloned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ablation: &str, seed_dcg10: &[f64]) -> Retrained {
        Retrained {
            system: format!("mamba+{ablation}"),
            ablation: ablation.into(),
            question: question(ablation),
            d_state: 32,
            layers: 2,
            keyed: Some((4, 2)),
            seeds: seed_dcg10.len(),
            seed_dcg10: seed_dcg10.to_vec(),
            metrics: Vec::new(),
            canaries: None,
        }
    }

    #[test]
    fn a_one_seed_row_is_told_the_spread_between_the_primarys_seeds() {
        let primary = row("primary", &[1.1600, 1.1646, 1.1615]);
        // Every side with two or more seeds: no caveat; a primary alone neither.
        assert_eq!(
            one_seed_caveat(&[primary.clone(), row("d_state=4", &[1.15, 1.16])]),
            None
        );
        assert_eq!(one_seed_caveat(&[row("primary", &[1.16])]), None);
        let text = one_seed_caveat(&[primary, row("d_state=4", &[1.1643])]).unwrap();
        assert!(text.starts_with("One seed (d_state=4)"), "{text}");
        assert!(
            text.ends_with("The primary's 3 seeds alone span DCG@10 1.1600–1.1646 (0.0046 apart)."),
            "{text}"
        );
        // A primary of one seed: the spread is not measured, and the report says so.
        let text =
            one_seed_caveat(&[row("primary", &[1.16]), row("real_only", &[1.15, 1.17])]).unwrap();
        assert!(text.starts_with("One seed (primary)"), "{text}");
        assert!(text.contains("not measured here"), "{text}");
    }

    #[test]
    fn the_model_column_names_the_keyed_state_a_row_was_trained_with() {
        let mut r = row("keyed_modes=1", &[1.07, 1.08]);
        r.keyed = Some((1, 2));
        assert_eq!(
            r.model(),
            "N = 32, 2 layers, keyed 1 decaying + 2 oscillating, 2 seeds"
        );
        r.keyed = Some((4, 0));
        assert_eq!(r.model(), "N = 32, 2 layers, keyed 4 decaying, 2 seeds");
        r.keyed = Some((0, 0));
        assert_eq!(r.model(), "N = 32, 2 layers, no keyed state, 2 seeds");
        r.keyed = None;
        assert_eq!(r.model(), "N = 32, 2 layers, 2 seeds");
    }

    #[test]
    fn an_ablation_is_named_by_what_it_changes_from_the_primary() {
        assert_eq!(ablation_of("mamba+d_state=4", "mamba"), "d_state=4");
        assert_eq!(
            ablation_of("mamba+d_state=4+no_history", "mamba+no_history"),
            "d_state=4"
        );
        assert_eq!(ablation_of("mlp", "mlp+relative"), "no_relative");
        assert_eq!(
            ablation_of("mamba+no_history", "mamba+relative+no_history"),
            "no_relative"
        );
        assert_eq!(
            ablation_of("mamba+d_state=4", "mamba+d_state=16"),
            "d_state=4"
        );
        assert_eq!(
            ablation_of("mlp+relative", "mlp+relative+picks=5+set_encoder"),
            "no_picks+no_set_encoder"
        );
        assert_eq!(ablation_of("mlp+picks=3", "mlp+picks=5"), "picks=3");
        assert_eq!(
            question("no_selectivity"),
            "Is Mamba's selection mechanism helping?"
        );
        assert_eq!(question("d_state=4"), "Optimal state size for our data");
        assert_eq!(question("real_only"), question("keyed_cycles=1"));
        assert_eq!(
            question("no_selectivity+keyed_modes=1"),
            "Together: does one stand in for the other?"
        );
    }
}
