//! The metric suite over the whole test split of a dataset larger than memory: every
//! system's metric rows on every GTS case, computed a block of test users at a time.
//!
//! `eval` holds a seeded sample of the test users for what needs the users in memory (the
//! canary probes, the SNR curve, the dual-error test, the strata, the input ablations);
//! the systems' metrics, their paired comparisons and the quality gates are taken over
//! every test user from here. A block is scored exactly as the sample is (the same
//! functions, the same cases of its users), so a dataset read in one block gives the
//! sample's rows (tested), random scores aside: each block draws its own.

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Unit;
use super::options::{COMPARED, EvalOptions};
use super::scoring::{System, model_scores};
use super::split::{Case, TestData, TestSet, labels_of, test_cases, users_with_test};
use super::stats::{ComparisonRow, compare_seeds};
use crate::data::{Columns, Dataset, DatasetReader};
use crate::error::Result;
use crate::metrics::{Row, case_row, metric_index};
use crate::model::baselines::{self, Baseline};
use crate::model::batch::Cutoffs;
use crate::model::rules::{self, HistoryRule};
use crate::model::scorer::{ModelConfig, Scorer, Variant};
use crate::run::load_run;

/// Every system's rows over the whole test split.
pub struct FullSplit {
    /// The systems in the order they were asked for, with their rows on every GTS case.
    pub systems: Vec<System>,
    /// Each GTS case's user id (the resampling unit) and turn.
    pub cases: Vec<(u32, usize)>,
    /// Positions of the LOO cases among them.
    pub loo: Vec<usize>,
    pub test_set: TestSet,
    pub loo_set: TestSet,
    /// Users with a test turn (every one was read), and the blocks they were read in.
    pub users: usize,
    pub blocks: usize,
}

/// Metric rows of `scores` on `cases`, with the empty candidate slots of shorter
/// (imported) turns ranked last, as the models rank them.
pub fn rows(data: &Dataset, cases: &[Case], labels: &[Vec<f64>], scores: &[Vec<f64>]) -> Vec<Row> {
    let k = data.k;
    scores
        .iter()
        .zip(labels)
        .zip(cases)
        .map(|((s, l), c)| {
            let valid = &data.users[c.user].valid[c.turn * k..(c.turn + 1) * k];
            let masked: Vec<f64> = s
                .iter()
                .zip(valid)
                .map(|(&x, &v)| if v == 1.0 { x } else { -1e18 })
                .collect();
            case_row(&masked, l)
        })
        .collect()
}

/// How one system is scored.
enum How {
    Baseline(Baseline),
    Constant,
    Rule(usize),
    Runs(Vec<(Scorer, ModelConfig)>),
}

/// The rows of `like`'s systems (same names, kinds, runs and order) over every user with a
/// test turn under `split`, reading users in blocks of about `block_mb` megabytes.
pub fn score(
    reader: &DatasetReader,
    split: &Cutoffs,
    like: &[System],
    block_mb: usize,
    seed: u64,
    quiet: bool,
) -> Result<FullSplit> {
    let device = Device::flex();
    let (scorers, dual) = scorers_of(like, &device)?;
    let outline = &reader.outline;
    let columns = Columns {
        clean: false,
        hops: dual,
    };
    let budget = crate::data::turns_in(block_mb, outline, columns);
    let with_test = users_with_test(outline, split);
    let users = with_test.len();
    let turns = with_test.iter().map(|&i| outline.users[i].turns);
    let blocks: Vec<&[usize]> = crate::data::blocks(turns, budget)
        .into_iter()
        .map(|b| &with_test[b])
        .collect();
    let mut seed_rows: Vec<Vec<Vec<Row>>> = like
        .iter()
        .map(|s| vec![Vec::new(); s.seed_rows.len().max(1)])
        .collect();
    let mut cases = Vec::new();
    let mut loo = Vec::new();
    let (mut test_set, mut loo_set) = (TestSet::default(), TestSet::default());
    for (b, block) in blocks.iter().enumerate() {
        if !quiet {
            eprintln!(
                "scoring the full test split: block {} of {} ({} users)",
                b + 1,
                blocks.len(),
                block.len()
            );
        }
        let data = reader.read_users(block, columns)?;
        let (gts, block_loo) = test_cases(&data, split);
        let k = data.k;
        let labels: Vec<Vec<f64>> = gts
            .iter()
            .map(|c| labels_of(&data.users[c.user], c.turn, k))
            .collect();
        let history: Vec<Vec<Vec<f64>>> = if scorers.iter().any(|s| matches!(s, How::Rule(_))) {
            gts.iter()
                .map(|c| rules::scores(&data.users[c.user], c.turn, k))
                .collect()
        } else {
            Vec::new()
        };
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ 0xBA5E ^ (b as u64).wrapping_mul(0x9E37_79B9));
        for (how, out) in scorers.iter().zip(&mut seed_rows) {
            how.score_block(&data, &gts, (&labels, &history), &mut rng, &device, out);
        }
        let at = cases.len();
        for c in &block_loo {
            loo.push(at + gts.binary_search(c).expect("LOO cases are GTS cases"));
        }
        cases.extend(gts.iter().map(|c| (data.users[c.user].user_id, c.turn)));
        test_set.add(TestSet::of(&data, &gts, split));
        loo_set.add(TestSet::of(&data, &block_loo, split));
    }
    let systems = like
        .iter()
        .zip(seed_rows)
        .map(|(s, rows)| {
            System::new(
                s.name.clone(),
                s.kind,
                s.runs.clone(),
                s.seeds.clone(),
                rows,
            )
        })
        .collect();
    Ok(FullSplit {
        systems,
        cases,
        loo,
        test_set,
        loo_set,
        users,
        blocks: blocks.len(),
    })
}

/// How each of `like`'s systems is scored, loading the runs' models on `device`; and
/// whether one of them reads traversal paths (the `dual` variant).
fn scorers_of(like: &[System], device: &Device) -> Result<(Vec<How>, bool)> {
    let mut scorers = Vec::with_capacity(like.len());
    let mut dual = false;
    for s in like {
        let how = match (s.kind, s.name.as_str()) {
            ("baseline", "heuristic") => How::Baseline(Baseline::Heuristic),
            ("baseline", "random") => How::Baseline(Baseline::Random),
            ("baseline", "oracle") => How::Baseline(Baseline::Oracle),
            ("reference", _) => How::Constant,
            ("history baseline", name) => How::Rule(
                HistoryRule::ALL
                    .iter()
                    .position(|r| r.name() == name)
                    .expect("a history rule's name"),
            ),
            _ => {
                let mut models = Vec::new();
                for run in &s.runs {
                    let (model, cfg) = load_run(run, false, device)?;
                    dual |= cfg.variant == Variant::Dual;
                    models.push((model, cfg));
                }
                How::Runs(models)
            }
        };
        scorers.push(how);
    }
    Ok((scorers, dual))
}

impl How {
    /// Appends the rows of this system (one list per seed in `out`) on a block's GTS
    /// cases `gts`, whose labels and history-rule scores are given.
    fn score_block(
        &self,
        data: &crate::data::Dataset,
        gts: &[Case],
        (labels, history): (&[Vec<f64>], &[Vec<Vec<f64>>]),
        rng: &mut ChaCha8Rng,
        device: &Device,
        out: &mut [Vec<Row>],
    ) {
        let k = data.k;
        match self {
            How::Baseline(kind) => {
                let scores: Vec<Vec<f64>> = gts
                    .iter()
                    .map(|c| baselines::scores(*kind, &data.users[c.user], c.turn, k, rng))
                    .collect();
                out[0].extend(rows(data, gts, labels, &scores));
            }
            How::Constant => {
                out[0].extend(rows(data, gts, labels, &vec![vec![0.0; k]; gts.len()]));
            }
            How::Rule(r) => {
                let scores: Vec<Vec<f64>> = history.iter().map(|h| h[*r].clone()).collect();
                out[0].extend(rows(data, gts, labels, &scores));
            }
            How::Runs(models) => {
                for ((model, cfg), seed_out) in models.iter().zip(out.iter_mut()) {
                    let scores = model_scores(model, cfg, data, gts, device);
                    seed_out.extend(rows(data, gts, labels, &scores));
                }
            }
        }
    }
}

/// The systems the metrics, their comparisons and the quality gates are computed on: the
/// users in memory, or, when they are a sample, every test user read a block at a time
/// (half the budget each, beside the sample).
pub(super) struct MetricSuite<'a> {
    pub(super) in_memory: &'a [System],
    pub(super) full: Option<FullSplit>,
    /// Each GTS case's user id and turn, and the LOO cases' positions among them.
    pub(super) cases: Vec<(u32, usize)>,
    pub(super) loo: Vec<usize>,
    pub(super) units: Vec<u64>,
    pub(super) test_set: TestSet,
    pub(super) loo_set: TestSet,
    pub(super) split_text: String,
}

impl<'a> MetricSuite<'a> {
    pub(super) fn measure(
        reader: &DatasetReader,
        test: &TestData,
        split: &Cutoffs,
        systems: &'a [System],
        opts: &EvalOptions,
    ) -> Result<MetricSuite<'a>> {
        let data = &test.data;
        let full = match test.sampled {
            Some(_) => Some(super::full::score(
                reader,
                split,
                systems,
                (opts.resident_mb / 2).max(1),
                opts.compare.seed,
                opts.quiet,
            )?),
            None => None,
        };
        let cases: Vec<(u32, usize)> = match &full {
            Some(f) => f.cases.clone(),
            None => test
                .gts
                .iter()
                .map(|c| (data.users[c.user].user_id, c.turn))
                .collect(),
        };
        let loo = match &full {
            Some(f) => f.loo.clone(),
            None => test
                .loo
                .iter()
                .map(|c| test.gts.binary_search(c).expect("LOO cases are GTS cases"))
                .collect(),
        };
        let (test_set, loo_set) = full
            .as_ref()
            .map_or((test.test_set, test.loo_set), |f| (f.test_set, f.loo_set));
        let split_text = match &full {
            Some(f) => format!(
                "{}; the metrics, their comparisons and the quality gates: every one of the {} users with a test turn, read in {} blocks ({} GTS cases from {} users); the canary probes, SNR curve, frequency response, dual error, strata, input ablations and pattern tables: the sample",
                test.split_text, f.users, f.blocks, f.test_set.cases, f.test_set.users
            ),
            None => test.split_text.clone(),
        };
        Ok(MetricSuite {
            in_memory: systems,
            units: cases.iter().map(|&(u, _)| u as u64).collect(),
            full,
            cases,
            loo,
            test_set,
            loo_set,
            split_text,
        })
    }

    pub(super) fn systems(&self) -> &[System] {
        self.full
            .as_ref()
            .map_or(self.in_memory, |f| &f.systems[..])
    }

    pub(super) fn system(&self, name: &str) -> Option<&System> {
        self.systems().iter().find(|s| s.name == name)
    }
}

/// Paired comparisons: the primary model against every other system, on both splits,
/// seeds resampled with the users.
pub(super) fn paired_comparisons(
    suite: &MetricSuite,
    primary: &str,
    opts: &EvalOptions,
) -> Vec<ComparisonRow> {
    let systems = suite.systems();
    let p = systems
        .iter()
        .position(|s| s.name == primary)
        .expect("the primary was scored");
    let all: Vec<usize> = (0..suite.cases.len()).collect();
    let mut comparisons = Vec::new();
    for (split, idx) in [("gts", &all), ("loo", &suite.loo)] {
        if idx.len() < 2 {
            continue;
        }
        let split_units: Vec<u64> = idx.iter().map(|&i| suite.units[i]).collect();
        for (j, other) in systems.iter().enumerate() {
            if j == p {
                continue;
            }
            for metric in COMPARED {
                let m = metric_index(metric);
                let stats = compare_seeds(
                    &systems[p].column(m, idx),
                    &other.column(m, idx),
                    1.0,
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
    comparisons
}
