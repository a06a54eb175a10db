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

use super::scoring::{System, model_scores};
use super::split::{Case, TestSet, labels_of, test_cases, users_with_test};
use crate::data::{Columns, Dataset, DatasetReader};
use crate::error::Result;
use crate::metrics::{Row, case_row};
use crate::model::baselines::{self, Baseline};
use crate::model::rules::{self, HistoryRule};
use crate::model::scorer::{ModelConfig, Scorer, Variant};
use crate::run::load_run;
use crate::train::batch::Cutoffs;

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
                    let (model, cfg) = load_run(run, false, &device)?;
                    dual |= cfg.variant == Variant::Dual;
                    models.push((model, cfg));
                }
                How::Runs(models)
            }
        };
        scorers.push(how);
    }
    let outline = &reader.outline;
    let columns = Columns {
        clean: false,
        hops: dual,
    };
    let budget = crate::train::stream::turns_in(block_mb, outline, columns);
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
            match how {
                How::Baseline(kind) => {
                    let scores: Vec<Vec<f64>> = gts
                        .iter()
                        .map(|c| baselines::scores(*kind, &data.users[c.user], c.turn, k, &mut rng))
                        .collect();
                    out[0].extend(rows(&data, &gts, &labels, &scores));
                }
                How::Constant => {
                    out[0].extend(rows(&data, &gts, &labels, &vec![vec![0.0; k]; gts.len()]));
                }
                How::Rule(r) => {
                    let scores: Vec<Vec<f64>> = history.iter().map(|h| h[*r].clone()).collect();
                    out[0].extend(rows(&data, &gts, &labels, &scores));
                }
                How::Runs(models) => {
                    for ((model, cfg), seed_out) in models.iter().zip(out.iter_mut()) {
                        let scores = model_scores(model, cfg, &data, &gts, &device);
                        seed_out.extend(rows(&data, &gts, &labels, &scores));
                    }
                }
            }
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
