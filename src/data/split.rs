//! The split of a dataset's turns into training, validation and test: the global temporal
//! split of timestamped data, a seeded random partition of data without a time axis.

use super::{Dataset, UserSeq};
use crate::config::{OWN_TEST_FROM, OWN_VALID_FROM};

/// The split of a dataset's turns into training, validation (model selection) and test.
///
/// - Timestamped data: the global temporal split (GTS). Turns before `valid` train, turns
///   in [`valid`, `test`) validate, turns from `test` on are the test cases of `eval`. Both
///   are percentiles of all turn timestamps.
/// - Data without a time axis (the `poc` preset, PoC-format JSONL; the manifest says
///   `"time_axis": false`): a seeded random partition of users (each one query there), in
///   the same shares: a user trains with probability `valid_from`, validates with
///   `test_from − valid_from`, and is a test case otherwise. `random` holds the seed; the
///   timestamps are then unused.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cutoffs {
    pub valid: i64,
    pub test: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomSplit>,
}

/// A seeded random partition of users: shares of training and validation users.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RandomSplit {
    pub seed: u64,
    pub train: f64,
    pub valid: f64,
}

/// Where a user falls in a random split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Valid,
    Test,
}

impl RandomSplit {
    /// The part of the user with id `user`: a uniform draw from (seed, user id), so the
    /// partition does not depend on the users' order or on which other users exist.
    pub fn part(&self, user: u32) -> Part {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ 0x5B11_7000);
        rng.set_stream(user as u64);
        let u: f64 = rng.random_range(0.0..1.0);
        if u < self.train {
            Part::Train
        } else if u < self.valid {
            Part::Valid
        } else {
            Part::Test
        }
    }
}

impl Cutoffs {
    /// Turns of `u` whose labels training may read: `u`'s first `train_end` turns.
    pub fn train_end(&self, u: &UserSeq) -> usize {
        match self.random {
            Some(r) => match r.part(u.user_id) {
                Part::Train => u.turns,
                Part::Valid | Part::Test => 0,
            },
            None => turns_before(u, self.valid),
        }
    }

    /// The first of `u`'s test turns (`u.turns`: none); turns in
    /// [`Self::train_end`, `test_start`) validate.
    pub fn test_start(&self, u: &UserSeq) -> usize {
        match self.random {
            Some(r) => match r.part(u.user_id) {
                Part::Train | Part::Valid => u.turns,
                Part::Test => 0,
            },
            None => turns_before(u, self.test),
        }
    }

    /// How the split is made, in words for the report.
    pub fn describe(&self) -> String {
        match self.random {
            Some(r) => format!(
                "random partition of queries (seed {}): {:.0}% train, {:.0}% validation, {:.0}% test",
                r.seed,
                100.0 * r.train,
                100.0 * (r.valid - r.train),
                100.0 * (1.0 - r.valid)
            ),
            None => format!(
                "global temporal split: validation from {}, test from {} (Unix seconds)",
                self.valid, self.test
            ),
        }
    }
}

/// The timestamp at percentile `q` (0–1) of all turns (nearest rank).
pub fn percentile_timestamp(data: &Dataset, q: f64) -> i64 {
    let mut ts: Vec<i64> = data
        .users
        .iter()
        .flat_map(|u| u.timestamp.iter().copied())
        .collect();
    ts.sort_unstable();
    let i = ((ts.len() as f64 * q).ceil() as usize).clamp(1, ts.len()) - 1;
    ts[i]
}

/// A dataset's own split ([`OWN_VALID_FROM`], [`OWN_TEST_FROM`]): what training makes by
/// default, and what the canary suite and TSTR evaluate on.
pub fn own_cutoffs(data: &Dataset) -> Cutoffs {
    cutoffs(data, OWN_VALID_FROM, OWN_TEST_FROM)
}

/// The split of `data` with validation from share `valid_q` and test from `test_q`: GTS
/// percentiles of timestamped data, a random partition of data without a time axis.
pub fn cutoffs(data: &Dataset, valid_q: f64, test_q: f64) -> Cutoffs {
    Cutoffs {
        valid: percentile_timestamp(data, valid_q),
        test: percentile_timestamp(data, test_q),
        random: (!data.time_axis()).then_some(RandomSplit {
            seed: data.manifest.seed,
            train: valid_q,
            valid: test_q,
        }),
    }
}

/// Number of a user's turns strictly before `ts` (turns are in time order).
pub fn turns_before(u: &UserSeq, ts: i64) -> usize {
    u.timestamp.partition_point(|&t| t < ts)
}
