//! The test split (global temporal split, its leave-one-out subset) and its size.
//!
//! - **GTS**: every turn at or after the runs' test cut-off (the 90th percentile of turn
//!   timestamps) with a relevant label is a case, scored from the full history before it
//!   (successive targets). Training and model selection saw only turns before the cut-off.
//!   Data without a time axis has a random partition of users instead
//!   ([`Cutoffs`]): every labelled turn of a test user is a case.
//! - **LOO**: each user's last turn, among the GTS cases (a user whose last turn falls
//!   before the cut-off was seen in training and gives no LOO case).
//!
//! A split is only as good as its users: a test case's user is **warm** when it has at
//! least one turn before the cut-off (history the model can use), and a split with fewer
//! than [`MIN_USERS`] users is flagged in the report.

use serde::Serialize;

use super::options::EvalOptions;
use crate::data::{Columns, Dataset, DatasetReader, UserSeq, sample_users};
use crate::error::{Error, Result};
use crate::model::batch::Cutoffs;

/// Fewest users a split should have for its statistics to mean something.
pub const MIN_USERS: usize = 30;

/// A test case: user index and turn index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Case {
    pub user: usize,
    pub turn: usize,
}

/// Observed labels of turn `t` (0 for missing candidate slots).
pub fn labels_of(u: &UserSeq, t: usize, k: usize) -> Vec<f64> {
    (0..k)
        .map(|c| (u.labels[t * k + c] * u.valid[t * k + c]) as f64)
        .collect()
}

/// Megabytes of users `eval` and the export check hold by default.
pub const RESIDENT_MB: usize = 2500;

/// The users an evaluation reads: every user when the dataset fits `resident_mb`
/// megabytes, else a seeded sample of the users with a test turn under `cut` (see
/// [`sample_users`]); with a sample, how many of how many users it holds.
pub fn read_test_users(
    reader: &DatasetReader,
    cut: &Cutoffs,
    resident_mb: usize,
) -> Result<(Dataset, Option<(usize, usize)>)> {
    let outline = &reader.outline;
    let budget = crate::data::turns_in(resident_mb, outline, Columns::ALL);
    if outline.turns() <= budget {
        return Ok((reader.read(0..reader.users(), Columns::ALL)?, None));
    }
    let with_test = users_with_test(outline, cut);
    let n = with_test.len();
    let seed = outline.manifest.seed;
    let chosen = sample_users(outline, with_test, budget, seed);
    Ok((
        reader.read_users(&chosen, Columns::ALL)?,
        Some((chosen.len(), n)),
    ))
}

/// Positions of the users with a turn at or after the test cut-off.
pub fn users_with_test(data: &Dataset, cut: &Cutoffs) -> Vec<usize> {
    (0..data.users.len())
        .filter(|&i| cut.test_start(&data.users[i]) < data.users[i].turns)
        .collect()
}

/// Every test turn, with or without a relevant label, in user then turn order (the
/// queries the PoC's metrics are taken over; the GTS cases are those of them with a label).
pub fn test_turns(data: &Dataset, cut: &Cutoffs) -> Vec<Case> {
    let mut out = Vec::new();
    for (ui, u) in data.users.iter().enumerate() {
        for t in cut.test_start(u)..u.turns {
            out.push(Case { user: ui, turn: t });
        }
    }
    out
}

/// The GTS cases (test turns with a relevant label) and the LOO subset (each user's last
/// turn, when it is a GTS case).
pub fn test_cases(data: &Dataset, cut: &Cutoffs) -> (Vec<Case>, Vec<Case>) {
    let gts: Vec<Case> = test_turns(data, cut)
        .into_iter()
        .filter(|c| {
            labels_of(&data.users[c.user], c.turn, data.k)
                .iter()
                .any(|&l| l > 0.0)
        })
        .collect();
    let loo = gts
        .iter()
        .filter(|c| c.turn + 1 == data.users[c.user].turns)
        .copied()
        .collect();
    (gts, loo)
}

/// The size of a set of test cases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TestSet {
    pub cases: usize,
    pub users: usize,
    /// Users with history before the cut-off.
    pub warm_users: usize,
}

impl TestSet {
    pub fn of<'a>(
        data: &Dataset,
        cases: impl IntoIterator<Item = &'a Case>,
        cut: &Cutoffs,
    ) -> TestSet {
        let mut users = std::collections::BTreeSet::new();
        let mut n = 0;
        for c in cases {
            users.insert(c.user);
            n += 1;
        }
        let warm = users
            .iter()
            .filter(|&&u| cut.test_start(&data.users[u]) > 0)
            .count();
        TestSet {
            cases: n,
            users: users.len(),
            warm_users: warm,
        }
    }

    /// Adds the size of a set of other users' cases.
    pub fn add(&mut self, other: TestSet) {
        self.cases += other.cases;
        self.users += other.users;
        self.warm_users += other.warm_users;
    }

    /// Too few users for the split's statistics to generalize.
    pub fn too_small(&self) -> bool {
        self.users < MIN_USERS
    }
}

/// The test users in memory and their cases.
pub struct TestData {
    pub data: Dataset,
    /// `Some((n, of))`: the users are a seeded sample of `n` of the `of` with a test turn.
    pub sampled: Option<(usize, usize)>,
    pub split_text: String,
    pub gts: Vec<Case>,
    pub loo: Vec<Case>,
    pub test_set: TestSet,
    pub loo_set: TestSet,
    /// Each GTS case's labels.
    pub labels: Vec<Vec<f64>>,
    /// Each GTS case's user id, the resampling unit.
    pub units: Vec<u64>,
    /// Every held-out query, for the PoC's metrics, and where each GTS case sits among
    /// them: a model scores every held-out turn once.
    pub held_out: Vec<Case>,
    pub gts_in_held_out: Vec<usize>,
}

impl TestData {
    pub fn read(reader: &DatasetReader, split: &Cutoffs, opts: &EvalOptions) -> Result<TestData> {
        let (data, sampled) = super::split::read_test_users(reader, split, opts.resident_mb)?;
        let split_text = match sampled {
            None => split.describe(),
            Some((n, of)) => format!(
                "{}; test users: a seeded sample of {n} of the {of} users with a test turn, as many as fit --resident-mb {}",
                split.describe(),
                opts.resident_mb
            ),
        };
        let (gts, loo) = test_cases(&data, split);
        if gts.is_empty() {
            return Err(Error::dataset(
                &opts.data,
                format!(
                    "no test case (no test turn has a relevant label; {})",
                    split.describe()
                ),
            ));
        }
        let test_set = TestSet::of(&data, &gts, split);
        let loo_set = TestSet::of(&data, &loo, split);
        let labels = gts
            .iter()
            .map(|c| labels_of(&data.users[c.user], c.turn, data.k))
            .collect();
        let units = gts
            .iter()
            .map(|c| data.users[c.user].user_id as u64)
            .collect();
        let held_out = super::split::test_turns(&data, split);
        let gts_in_held_out = gts
            .iter()
            .map(|c| {
                held_out
                    .binary_search(c)
                    .expect("GTS cases are held-out turns")
            })
            .collect();
        Ok(TestData {
            data,
            sampled,
            split_text,
            gts,
            loo,
            test_set,
            loo_set,
            labels,
            units,
            held_out,
            gts_in_held_out,
        })
    }
}
