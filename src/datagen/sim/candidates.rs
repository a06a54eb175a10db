//! Candidate sets: the turn's canaries, its positive pool from the mixer, and hard
//! negatives of each kind (seed: "Memory candidate generation", "Hard Negative
//! Generation").

use rand::RngExt;

use super::{POOL_MIN_RELEVANCE, Pick, Sim, Turn};
use crate::datagen::world::{World, norm, roles};
use crate::features::{Canary, HardNegative};

impl Sim<'_> {
    /// The canary memories this turn puts into the candidate set.
    fn canary_picks(&mut self, turn: &Turn, picks: &mut Vec<Pick>) {
        let k = &self.config.canaries;
        if !k.enabled {
            return;
        }
        let groups: [(u32, usize); 6] = [
            (roles::CYCLE_X, 2),
            (roles::RECENCY_R, 2),
            (roles::SELECT_Y, 2),
            (roles::CHAIN_S, 3),
            (roles::DEP_Q, 2),
            (roles::COMBINED_V, 2),
        ];
        // A selector in the second focal slot brings up the memories it speaks to (Z and
        // its contrast W: Y's; P and T: Q's or V's, at random), so the user's history
        // holds evidence of which selector gates them; their presence alone says which
        // pair of selectors is focal, not which one.
        let linked = match turn.focal[1] {
            Some(roles::SELECT_Z | roles::SELECT_W) => Some(2),
            Some(roles::DEP_P | roles::COMBINED_T) => {
                Some(if self.rng.random_bool(0.5) { 4 } else { 5 })
            }
            _ => None,
        };
        let group = match linked {
            Some(g) if self.rng.random_bool(k.selector_inject_prob) => Some(g),
            _ => self
                .rng
                .random_bool(k.inject_prob)
                .then(|| self.rng.random_range(0..groups.len())),
        };
        if let Some(g) = group {
            let (e, n) = groups[g];
            {
                // The decaying entities show their newest memory beside older ones, as a
                // memory system surfaces what was just written.
                let decaying = e == roles::RECENCY_R || e == roles::COMBINED_V;
                let chosen = if decaying {
                    self.newest_and_sampled(e, turn.ts, n)
                } else {
                    self.sample_existing(e, turn.ts, n)
                };
                for m in chosen {
                    let (p, c) = self.canary_relevance(m, turn).expect("canary entity");
                    picks.push(Pick {
                        memory: m,
                        p,
                        canary: c.bit(),
                        hard: HardNegative::None,
                    });
                }
            }
        }
        if turn.post_burst {
            let e = self.state.burst_entity;
            for m in self.sample_existing(e, turn.ts, 3) {
                if !picks.iter().any(|p| p.memory == m) {
                    picks.push(Pick {
                        memory: m,
                        p: k.burst_relevance,
                        canary: Canary::Burst.bit(),
                        hard: HardNegative::None,
                    });
                }
            }
        }
    }

    fn ordinary_pick(&self, m: u32, turn: &Turn, hard: HardNegative) -> Pick {
        Pick {
            memory: m,
            p: self.world_relevance(m, turn),
            canary: 0,
            hard,
        }
    }

    fn taken(picks: &[Pick], m: u32) -> bool {
        picks.iter().any(|p| p.memory == m)
    }

    fn random_ordinary_entity(&mut self) -> u32 {
        let n = self.world.n_entities() as u32;
        self.rng.random_range(roles::FIRST_ORDINARY..n)
    }

    /// One hard negative of the given kind, if this turn's world has one.
    fn hard_negative(
        &mut self,
        kind: HardNegative,
        turn: &Turn,
        picks: &[Pick],
        near: &mut Near,
    ) -> Option<Pick> {
        let primary = turn.focal[0]?;
        // A memory a negative may be: it exists at the turn and is of an ordinary entity.
        let usable = |s: &Self, m: u32| -> bool {
            let mem = &s.world.memories[m as usize];
            mem.exists(turn.ts) && World::is_ordinary(mem.entity)
        };
        let ok = |s: &Self, m: u32| -> bool { !Self::taken(picks, m) && usable(s, m) };
        match kind {
            HardNegative::EntityNeighbor => {
                let adj: Vec<u32> = turn
                    .focal
                    .iter()
                    .flatten()
                    .flat_map(|&f| {
                        self.world.entities[f as usize]
                            .adjacent
                            .iter()
                            .map(|d| d.to)
                    })
                    .filter(|&e| World::is_ordinary(e) && !turn.is_focal(e))
                    .collect();
                for _ in 0..6 {
                    if adj.is_empty() {
                        break;
                    }
                    let e = adj[self.rng.random_range(0..adj.len())];
                    let ms = &self.world.by_entity[e as usize];
                    if ms.is_empty() {
                        continue;
                    }
                    let m = ms[self.rng.random_range(0..ms.len())];
                    if ok(self, m) {
                        let pick = self.ordinary_pick(m, turn, kind);
                        if pick.p < 0.15 {
                            return Some(pick);
                        }
                    }
                }
                None
            }
            HardNegative::TemporalNeighbor => {
                let live = near.live.get_or_insert_with(|| {
                    turn.focal
                        .iter()
                        .flatten()
                        .flat_map(|&f| self.world.by_entity[f as usize].iter().copied())
                        .filter(|&m| {
                            usable(self, m) && !self.world.memories[m as usize].superseded(turn.ts)
                        })
                        .map(|m| self.ordinary_pick(m, turn, kind))
                        .collect()
                });
                let stale = live
                    .iter()
                    .filter(|p| !Self::taken(picks, p.memory))
                    .min_by(|a, b| a.p.total_cmp(&b.p))
                    .copied();
                stale.filter(|p| p.p < 0.2)
            }
            HardNegative::SemanticNeighbor => {
                let community = self.world.entities[primary as usize].community;
                let center = self.world.entities[primary as usize].center.clone();
                let center_norm = norm(&center);
                let mut best: Option<(f32, u32)> = None;
                for _ in 0..12 {
                    let e = self.random_ordinary_entity();
                    let ent = &self.world.entities[e as usize];
                    if ent.community != community
                        || turn.is_focal(e)
                        || self.world.adjacent(primary, e)
                    {
                        continue;
                    }
                    let ms = &self.world.by_entity[e as usize];
                    if ms.is_empty() {
                        continue;
                    }
                    let m = ms[self.rng.random_range(0..ms.len())];
                    if !ok(self, m) {
                        continue;
                    }
                    let mem = &self.world.memories[m as usize];
                    let sim = cosine(&mem.embedding, mem.norm, &center, center_norm);
                    if best.is_none_or(|(s, _)| sim > s) {
                        best = Some((sim, m));
                    }
                }
                best.map(|(_, m)| self.ordinary_pick(m, turn, kind))
                    .filter(|p| p.p < 0.15)
            }
            HardNegative::Superseded => {
                let all = near.superseded.get_or_insert_with(|| {
                    turn.focal
                        .iter()
                        .flatten()
                        .flat_map(|&f| {
                            std::iter::once(f).chain(
                                self.world.entities[f as usize]
                                    .adjacent
                                    .iter()
                                    .map(|d| d.to),
                            )
                        })
                        .filter(|&e| World::is_ordinary(e))
                        .flat_map(|e| self.world.by_entity[e as usize].iter().copied())
                        .filter(|&m| {
                            usable(self, m) && self.world.memories[m as usize].superseded(turn.ts)
                        })
                        .collect()
                });
                let olds: Vec<u32> = all
                    .iter()
                    .copied()
                    .filter(|&m| !Self::taken(picks, m))
                    .collect();
                if olds.is_empty() {
                    return None;
                }
                let m = olds[self.rng.random_range(0..olds.len())];
                Some(self.ordinary_pick(m, turn, kind))
            }
            HardNegative::None => None,
        }
    }

    /// Builds the K candidates of a turn: canaries, then the positive pool up to an expected
    /// relevant count drawn in the configured band, then hard negatives and distractors.
    pub(super) fn candidates(&mut self, turn: &Turn) -> (Vec<Pick>, usize) {
        let cfg = self.config;
        let k = cfg.candidates.k as usize;
        let [lo, hi] = cfg.candidates.relevant_share;
        let mut picks = Vec::with_capacity(k);
        self.canary_picks(turn, &mut picks);
        picks.truncate(k / 2);
        let target = self.rng.random_range(lo * k as f64..=hi * k as f64);
        let mut expected: f64 = picks.iter().map(|p| p.p).sum();
        // Positive pool: focal memories, dependency neighbours' memories.
        let mut pool: Vec<Pick> = Vec::new();
        for f in turn.focal.iter().flatten().copied() {
            if !World::is_ordinary(f) {
                continue;
            }
            let ents =
                std::iter::once(f).chain(self.world.entities[f as usize].deps.iter().map(|d| d.to));
            for e in ents.filter(|&e| World::is_ordinary(e)).collect::<Vec<_>>() {
                for m in self.existing(e, turn.ts) {
                    if !Self::taken(&picks, m) && !pool.iter().any(|p: &Pick| p.memory == m) {
                        let pick = self.ordinary_pick(m, turn, HardNegative::None);
                        // Stale and superseded ones are left to the hard negatives.
                        if pick.p >= POOL_MIN_RELEVANCE {
                            pool.push(pick);
                        }
                    }
                }
            }
        }
        let max_pos = k - (k * 3).div_ceil(10);
        while expected < target && picks.len() < max_pos && !pool.is_empty() {
            let total: f64 = pool.iter().map(|p| p.p).sum();
            let mut x = self.rng.random_range(0.0..total.max(1e-12));
            let mut i = 0;
            while i + 1 < pool.len() && x >= pool[i].p {
                x -= pool[i].p;
                i += 1;
            }
            let pick = pool.swap_remove(i);
            expected += pick.p;
            picks.push(pick);
        }
        // Negatives.
        let n_neg = k - picks.len();
        let n_hard = (self.spec.hard_negative_share * n_neg as f64).round() as usize;
        let mix = cfg.candidates.hard_negative_mix;
        let mix_total: f64 = mix.iter().sum();
        let mut near = Near::default();
        for _ in 0..n_hard {
            let mut x = self.rng.random_range(0.0..mix_total);
            let mut first = 0;
            while first + 1 < 4 && x >= mix[first] {
                x -= mix[first];
                first += 1;
            }
            // The drawn kind first, then the others in order, if the world lacks it.
            let found = (0..4)
                .map(|i| HardNegative::KINDS[(first + i) % 4])
                .filter(|&kind| i_weight(&mix, kind) > 0.0)
                .find_map(|kind| self.hard_negative(kind, turn, &picks, &mut near));
            match found {
                Some(p) => picks.push(p),
                None => break,
            }
        }
        let mut tries = 0;
        while picks.len() < k && tries < 200 {
            tries += 1;
            let e = self.random_ordinary_entity();
            if turn.is_focal(e) {
                continue;
            }
            let ms = &self.world.by_entity[e as usize];
            if ms.is_empty() {
                continue;
            }
            let m = ms[self.rng.random_range(0..ms.len())];
            if Self::taken(&picks, m) || !self.world.memories[m as usize].exists(turn.ts) {
                continue;
            }
            picks.push(self.ordinary_pick(m, turn, HardNegative::None));
        }
        // A tiny world may run out of distinct memories: top up with fresh ones.
        while picks.len() < k {
            let e = self.random_ordinary_entity();
            let m = self.world.add_memory(cfg, self.rng, e, turn.ts - 86_400);
            picks.push(self.ordinary_pick(m, turn, HardNegative::None));
        }
        for i in (1..picks.len()).rev() {
            let j = self.rng.random_range(0..=i);
            picks.swap(i, j);
        }
        (picks, n_neg)
    }
}

/// The turn's memories that two kinds of hard negative choose from, listed once a turn
/// (the memories and the turn do not change while its negatives are drawn); each draw
/// leaves out the ones already picked.
#[derive(Default)]
struct Near {
    /// Live memories of the focal entities, with their relevance at the turn.
    live: Option<Vec<Pick>>,
    /// Superseded memories of the focal entities and their neighbours.
    superseded: Option<Vec<u32>>,
}

fn i_weight(mix: &[f64; 4], kind: HardNegative) -> f64 {
    mix[kind as usize - 1]
}

/// The cosine of two vectors, given their norms.
fn cosine(a: &[f32], na: f32, b: &[f32], nb: f32) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (na * nb).max(1e-12)
}
