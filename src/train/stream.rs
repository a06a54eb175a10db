//! Training on a dataset larger than memory. Users are held a block at a time: a block is
//! a run of users in file order whose turns fit `[train] resident_mb`. Each round visits
//! every block once, in an order drawn from (seed, round), and spends on a block a number
//! of steps proportional to its training turns, so every training turn is seen about as
//! often as when the whole dataset is in memory. A dataset that fits is one block, and
//! the plan changes nothing. Which block a step uses is a function of (seed, step): a
//! resumed run reads the same users.
//!
//! Validation reads a seeded sample of the users with validation turns, up to
//! `[train] validation_mb` (every such user when they fit).

use std::ops::Range;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::split::Cutoffs;
use crate::data::{Columns, Dataset, DatasetReader, UserSeq, blocks, sample_users};
use crate::error::Result;

pub use crate::data::turns_in;

/// The blocks of a dataset and the steps each one gets in a round.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Users (positions in file order) of each block.
    pub blocks: Vec<Range<usize>>,
    /// Steps per round spent on each block.
    steps: Vec<usize>,
    /// Each block's users with a training turn, by stage.
    pools: Vec<Vec<(u8, Vec<usize>)>>,
}

impl Plan {
    /// Cuts `outline`'s users into blocks of at most `budget` turns (a longer user is a
    /// block of its own); blocks without a training turn are left out. A step trains on
    /// about `step_turns` turns.
    pub fn new(outline: &Dataset, cut: &Cutoffs, budget: usize, step_turns: usize) -> Plan {
        // Blocks with their training turns.
        let mut cut_blocks: Vec<(Range<usize>, usize)> =
            blocks(outline.users.iter().map(|u| u.turns), budget)
                .into_iter()
                .map(|b| {
                    let train = outline.users[b.clone()]
                        .iter()
                        .map(|u| cut.train_end(u))
                        .sum();
                    (b, train)
                })
                .collect();
        cut_blocks.retain(|&(_, train)| train > 0);
        let steps = cut_blocks
            .iter()
            .map(|&(_, train)| train.div_ceil(step_turns.max(1)).max(1))
            .collect();
        let blocks: Vec<Range<usize>> = cut_blocks.into_iter().map(|(b, _)| b).collect();
        let pools = blocks
            .iter()
            .map(|b| stage_pools(&outline.users[b.clone()], cut, b.start))
            .collect();
        Plan {
            blocks,
            steps,
            pools,
        }
    }

    /// Draws a user from block `b`: one of its users of `stage` with a training turn (any
    /// of its users with one, where the block has none of that stage).
    pub fn draw(&self, b: usize, stage: u8, rng: &mut ChaCha8Rng) -> usize {
        let pools = &self.pools[b];
        let all: Vec<usize>;
        let pool = match pools.iter().find(|(s, _)| *s == stage) {
            Some((_, p)) => p,
            None => {
                all = pools.iter().flat_map(|(_, p)| p.iter().copied()).collect();
                &all
            }
        };
        pool[rng.random_range(0..pool.len())]
    }

    /// The block step `step` trains on.
    pub fn block_at(&self, step: usize, seed: u64) -> usize {
        if self.blocks.len() <= 1 {
            return 0;
        }
        let round_steps: usize = self.steps.iter().sum();
        let (round, mut at) = (step / round_steps, step % round_steps);
        let mut order: Vec<usize> = (0..self.blocks.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xB10C_5EED);
        rng.set_stream(round as u64);
        order.shuffle(&mut rng);
        for b in order {
            if at < self.steps[b] {
                return b;
            }
            at -= self.steps[b];
        }
        unreachable!("the steps of a round add up to round_steps")
    }
}

/// Where training reads its users: a dataset in memory, or one read a block at a time.
pub enum Source<'a> {
    Memory(&'a Dataset),
    Disk {
        reader: &'a DatasetReader,
        /// What the model reads beside every model's inputs.
        columns: Columns,
        /// The block in memory (its index in the plan) and its users.
        loaded: Option<(usize, Dataset)>,
    },
}

impl Source<'_> {
    /// Every user's id, stage, turn count and timestamps.
    pub fn outline(&self) -> &Dataset {
        match self {
            Source::Memory(data) => data,
            Source::Disk { reader, .. } => &reader.outline,
        }
    }

    /// The users of block `b` of `plan`, with the position of the first one: user `i` of
    /// the block is `data.users[i - offset]`.
    pub fn block(&mut self, plan: &Plan, b: usize) -> Result<(&Dataset, usize)> {
        match self {
            Source::Memory(data) => Ok((data, 0)),
            Source::Disk {
                reader,
                columns,
                loaded,
            } => {
                if loaded.as_ref().is_none_or(|(l, _)| *l != b) {
                    *loaded = None; // free the old block before reading the next
                    *loaded = Some((b, reader.read(plan.blocks[b].clone(), *columns)?));
                }
                let (_, data) = loaded.as_ref().expect("loaded above");
                Ok((data, plan.blocks[b].start))
            }
        }
    }

    /// The validation users: a seeded sample of the users with a validation turn whose
    /// turns add up to at most `budget` (every such user when they fit; see
    /// [`sample_users`]), as a dataset of their own, in file order.
    pub fn validation_users(&self, cut: &Cutoffs, budget: usize, seed: u64) -> Result<Dataset> {
        let outline = self.outline();
        let with: Vec<usize> = (0..outline.users.len())
            .filter(|&i| {
                let u = &outline.users[i];
                cut.test_start(u) > cut.train_end(u)
            })
            .collect();
        let chosen = sample_users(outline, with, budget, seed);
        match self {
            Source::Memory(data) => Ok(Dataset {
                users: chosen.iter().map(|&i| data.users[i].clone()).collect(),
                ..Dataset::clone_empty(data)
            }),
            Source::Disk {
                reader, columns, ..
            } => reader.read_users(&chosen, *columns),
        }
    }
}

/// The users of each stage with a training turn, in file order (stage 0: a dataset
/// without stages).
pub fn stage_pools(users: &[UserSeq], cut: &Cutoffs, offset: usize) -> Vec<(u8, Vec<usize>)> {
    let mut pools: std::collections::BTreeMap<u8, Vec<usize>> = Default::default();
    for (i, u) in users.iter().enumerate() {
        if cut.train_end(u) >= 1 {
            pools.entry(u.stage).or_default().push(offset + i);
        }
    }
    pools.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outline(turns: &[usize]) -> Dataset {
        let users = turns
            .iter()
            .enumerate()
            .map(|(i, &t)| UserSeq {
                user_id: i as u32,
                stage: (i % 2) as u8 + 1,
                turns: t,
                timestamp: (0..t as i64).collect(),
                ..Default::default()
            })
            .collect();
        Dataset {
            path: Default::default(),
            manifest: std::sync::Arc::new(crate::manifest::Manifest::new(
                crate::manifest::Source::World,
                0,
                4,
                0,
                crate::manifest::Counts::of(turns.len() as u64, 0, 0),
                Default::default(),
            )),
            k: 4,
            embedding_dim: 0,
            users,
            names: Vec::new(),
        }
    }

    #[test]
    fn a_sample_keeps_to_its_budget_in_seeded_runs_of_neighbours() {
        let turns: Vec<usize> = (0..300).map(|i| 5 + i % 7).collect();
        let data = outline(&turns);
        let all: Vec<usize> = (0..300).collect();
        let total: usize = turns.iter().sum();
        assert_eq!(sample_users(&data, all.clone(), total, 1), all);
        let sample = sample_users(&data, all.clone(), 500, 1);
        let used: usize = sample.iter().map(|&i| turns[i]).sum();
        assert!(used <= 500 && used > 450, "{used} turns");
        assert!(sample.windows(2).all(|w| w[0] < w[1]));
        // Whole runs of 64 neighbours are taken while they fit.
        assert!(sample.windows(2).filter(|w| w[1] == w[0] + 1).count() >= 50);
        assert_eq!(sample, sample_users(&data, all.clone(), 500, 1));
        assert_ne!(sample, sample_users(&data, all.clone(), 500, 2));
        // A budget below every user still holds one.
        assert_eq!(sample_users(&data, all, 1, 1).len(), 1);
    }

    #[test]
    fn a_round_spends_on_each_block_its_steps_in_a_seeded_order() {
        let data = outline(&[10, 10, 10, 30, 5, 5, 10, 10]);
        let cut = Cutoffs {
            valid: 8,
            test: 9,
            random: None,
        };
        let plan = Plan::new(&data, &cut, 20, 4);
        // Users fill blocks up to 20 turns; the 30-turn user is a block of its own.
        assert_eq!(plan.blocks, vec![0..2, 2..3, 3..4, 4..7, 7..8]);
        // Training turns: 8 per 10-turn user, 8 for the 30-turn one, 5 per 5-turn user.
        assert_eq!(plan.steps, vec![4, 2, 2, 5, 2]);
        let round: usize = plan.steps.iter().sum();
        for r in 0..3 {
            let at: Vec<usize> = (r * round..(r + 1) * round)
                .map(|s| plan.block_at(s, 11))
                .collect();
            for (b, &n) in plan.steps.iter().enumerate() {
                assert_eq!(at.iter().filter(|&&x| x == b).count(), n);
            }
            // A block's steps are consecutive.
            let changes = at.windows(2).filter(|w| w[0] != w[1]).count();
            assert_eq!(changes, plan.blocks.len() - 1);
        }
        let order = |seed| {
            (0..round)
                .map(|s| plan.block_at(s, seed))
                .collect::<Vec<_>>()
        };
        assert_eq!(order(11), order(11));
        assert!(
            (0..8).any(|s| order(s) != order(11)),
            "the order ignores the seed"
        );
        // A draw comes from the block and the stage asked for.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let i = plan.draw(3, 1, &mut rng);
            assert!(plan.blocks[3].contains(&i) && data.users[i].stage == 1);
        }
        // Everything fits: one block, every step on it.
        let one = Plan::new(&data, &cut, 1000, 4);
        assert_eq!(one.blocks, vec![0..8]);
        assert!((0..50).all(|s| one.block_at(s, 3) == 0));
    }
}
