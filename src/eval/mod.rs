//! Evaluation: ranking metrics, paired statistics, and the `metrics` / `compare`
//! commands that score any system's logged rankings with the same code.

pub mod ablation;
pub mod canary;
pub mod dual;
pub mod findings;
pub mod full;
pub mod gates;
pub mod inputs;
pub mod io;
pub mod options;
pub mod output;
pub mod patterns;
pub mod phase;
pub mod replay;
pub mod report;
mod runs;
pub mod scoring;
pub mod sections;
pub mod split;
pub mod stats;
pub mod strata;
pub mod verdict;

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::{Metrics, case_metrics};
use stats::{CompareOptions, Comparison};

#[derive(Clone, Debug, Serialize)]
pub struct CaseRow {
    pub case_id: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

#[derive(Clone, Debug, Serialize)]
pub struct MetricsReport {
    /// The top-K cut-off of every metric.
    #[serde(rename = "k")]
    pub cutoff: usize,
    pub n_cases: usize,
    /// Cases with no relevant candidate (they score 0 on every metric).
    pub n_without_relevant: usize,
    pub cases: Vec<CaseRow>,
    pub mean: Metrics,
}

/// `ssmkit metrics`: per-case and mean metrics at the top-`cutoff` of a rankings file.
pub fn metrics_file(path: &Path, cutoff: usize) -> Result<MetricsReport> {
    if cutoff == 0 {
        return Err(Error::Usage("--k must be at least 1".into()));
    }
    let cases = io::read_rankings(path)?;
    let rows: Vec<CaseRow> = cases
        .iter()
        .map(|c| CaseRow {
            case_id: c.id.clone(),
            metrics: case_metrics(&c.scores, &c.labels, cutoff),
        })
        .collect();
    let all: Vec<Metrics> = rows.iter().map(|r| r.metrics).collect();
    Ok(MetricsReport {
        cutoff,
        n_cases: rows.len(),
        n_without_relevant: cases
            .iter()
            .filter(|c| c.labels.iter().all(|&l| l <= 0.0))
            .count(),
        mean: Metrics::mean(&all),
        cases: rows,
    })
}

impl MetricsReport {
    pub fn to_text(&self) -> String {
        let k = self.cutoff;
        let mut s = format!(
            "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "case_id",
            format!("HR@{k}"),
            format!("MRR@{k}"),
            format!("DCG@{k}"),
            format!("nDCG@{k}"),
            format!("P@{k}"),
            format!("R@{k}")
        );
        let line = |id: &str, m: &Metrics| {
            format!(
                "{:<24} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4}\n",
                id, m.hr, m.mrr, m.dcg, m.ndcg, m.precision, m.recall
            )
        };
        for r in &self.cases {
            s += &line(&r.case_id, &r.metrics);
        }
        s += &line(&format!("mean ({} cases)", self.n_cases), &self.mean);
        if self.n_without_relevant > 0 {
            s += &format!(
                "{} cases have no relevant candidate and score 0\n",
                self.n_without_relevant
            );
        }
        s
    }
}

/// Resampling unit of `compare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Unit {
    Case,
    User,
}

/// `ssmkit compare`: paired BCa CI and sign-flip test of A − B over shared case ids.
pub fn compare_files(a: &Path, b: &Path, unit: Unit, opts: &CompareOptions) -> Result<Comparison> {
    if opts.resamples == 0 || opts.permutations == 0 {
        return Err(Error::Usage(
            "--resamples and --permutations must be at least 1".into(),
        ));
    }
    if !(opts.confidence > 0.0 && opts.confidence < 1.0) {
        return Err(Error::Usage(format!(
            "confidence {} is not in (0, 1)",
            opts.confidence
        )));
    }
    let va = io::read_values(a)?;
    let vb = io::read_values(b)?;
    let index: HashMap<&str, usize> = vb
        .iter()
        .enumerate()
        .map(|(i, v)| (v.0.as_str(), i))
        .collect();
    let mut diffs = Vec::with_capacity(va.len());
    let mut users: Vec<u64> = Vec::new();
    let mut user_ids: HashMap<String, u64> = HashMap::new();
    for (id, x, user) in &va {
        let Some(&j) = index.get(id.as_str()) else {
            return Err(Error::Mismatch(format!(
                "case_id {id:?} is in {} but not in {}",
                a.display(),
                b.display()
            )));
        };
        diffs.push(x - vb[j].1);
        if unit == Unit::User {
            if let (Some(ua), Some(ub)) = (user, &vb[j].2)
                && ua != ub
            {
                return Err(Error::Mismatch(format!(
                    "case_id {id:?} has user_id {ua:?} in {} but {ub:?} in {}",
                    a.display(),
                    b.display()
                )));
            }
            let Some(u) = user.as_ref().or(vb[j].2.as_ref()) else {
                return Err(Error::Usage(format!(
                    "--unit user needs a user_id column; case_id {id:?} has none in {}",
                    a.display()
                )));
            };
            let n = user_ids.len() as u64;
            users.push(*user_ids.entry(u.clone()).or_insert(n));
        }
    }
    if vb.len() != va.len() {
        let in_a: std::collections::HashSet<&str> = va.iter().map(|v| v.0.as_str()).collect();
        let missing = vb
            .iter()
            .find(|v| !in_a.contains(v.0.as_str()))
            .expect("sizes differ");
        return Err(Error::Mismatch(format!(
            "case_id {:?} is in {} but not in {}",
            missing.0,
            b.display(),
            a.display()
        )));
    }
    Ok(stats::compare(
        &diffs,
        (unit == Unit::User).then_some(&users[..]),
        opts,
    ))
}

impl Comparison {
    pub fn to_text(&self) -> String {
        let pct = 100.0 * self.confidence;
        let mut s = format!(
            "paired cases: {} ({} resampling units)\n\
             mean A − B: {:+.6}\n\
             BCa {pct:.0}% CI: [{:+.6}, {:+.6}]  (z0 {:.4}, a {:.4}, {} resamples)\n\
             percentile CI: [{:+.6}, {:+.6}]\n\
             sign-flip p: {:.6} ({}, {} patterns)\n\
             significant (BCa low > 0 and p < 0.05): {}\n",
            self.n,
            self.n_units,
            self.theta_hat,
            self.ci_low,
            self.ci_high,
            self.z0,
            self.acceleration,
            self.n_resamples,
            self.percentile_ci_low,
            self.percentile_ci_high,
            self.p_value,
            if self.exact { "exact" } else { "Monte Carlo" },
            self.n_permutations,
            if self.significant { "yes" } else { "no" },
        );
        if let Some(note) = &self.note {
            s += &format!("note: {note}\n");
        }
        s
    }
}

/// `ssmkit canaries`: the canary suite of the reference systems (oracle, observable
/// reference, random, constant) on a dataset's GTS test cases at each of `snr_levels`,
/// with no trained model: whether every canary gate can pass for a learner, and fail for
/// a blind system, before hours go into training.
pub fn reference_canaries(
    data: &Path,
    per_canary: usize,
    snr_levels: &[Option<f64>],
    resident_mb: usize,
    seed: u64,
) -> Result<Vec<canary::ReferenceSuite>> {
    let reader = crate::data::DatasetReader::open(data)?;
    let split = crate::data::split::own_cutoffs(&reader.outline);
    let rules = crate::canary::Rules::from_manifest(&reader.outline.manifest)?
        .ok_or_else(|| Error::dataset(data, "the dataset planted no contract canaries"))?;
    let (users, _) = split::read_test_users(&reader, &split, resident_mb)?;
    let (gts, _) = split::test_cases(&users, &split);
    let observable = canary::ObservableProbe::fit(&users, |u| split.test_start(u));
    Ok(canary::reference_suites(
        &users,
        &gts,
        &rules,
        &observable,
        per_canary,
        snr_levels,
        seed,
    ))
}
