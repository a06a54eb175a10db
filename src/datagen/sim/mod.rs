//! The session simulator: one user's timeline of sessions and turns, the temporal
//! pattern mixer that picks focal entities, the canaries, and the candidate sets with
//! their clean relevance, features and traversal paths.
//!
//! Relevance is an intensity in [0, 1] per (memory, turn). Ordinary memories follow the
//! mixer (focal entity, dependency neighbours, age decay, importance, supersession);
//! canary memories follow their planted rule exactly, so each canary's effect is visible
//! in the clean ground truth with a known strength.

use rustc_hash::FxHashMap;
use std::f64::consts::TAU;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

mod candidates;
mod paths;

use crate::canary::{Inputs, Role, Rules};
use crate::config::{Config, PatternConfig};
use crate::datagen::calendar::{self, angle};
use crate::datagen::schedule::{Slot, UserSpec, schedule};
use crate::datagen::tables::Tables;
use crate::datagen::world::{Decay, Edge, Entity, World, roles};
use crate::datagen::{Stream, rng_for};
use crate::features::{Canary, FEATURE_DIM, HardNegative, feat};

/// Least relevance of a memory in a turn's positive pool.
const POOL_MIN_RELEVANCE: f64 = 0.2;

/// A candidate before features: which memory, its clean relevance, what planted it.
#[derive(Clone, Copy, Debug)]
struct Pick {
    memory: u32,
    p: f64,
    canary: u16,
    hard: HardNegative,
}

/// A turn's row fields beyond its focal entities and labels.
struct Written<'a> {
    index: u32,
    slot: &'a Slot,
    prev_ts: Option<i64>,
    turn_canary: u16,
    negative_slots: usize,
}

/// Per-user simulation state beyond the world.
struct State {
    /// BFS tree per focal entity: parent and the edge used, `u32::MAX` if unreached.
    bfs: FxHashMap<u32, Vec<(u32, Edge)>>,
    /// Path id and path features per (focal entity, memory), in the order first met.
    paths: FxHashMap<(u32, u32), (u32, [f32; 7])>,
    /// Path feedback per (focal entity, target entity): (successes, trials).
    feedback: FxHashMap<(u32, u32), (f32, f32)>,
    burst_entity: u32,
    burst_left: u32,
    post_burst_left: u32,
    prev_primary: Option<u32>,
    prev_focal: [Option<u32>; 2],
    /// The mixer's weight of every ordinary entity at one instant (a turn draws several
    /// entities at its time); entities never change once the world is made.
    mixer: (i64, Vec<f64>),
    /// Each ordinary entity's phases for the mixer, made once: the cosine and sine of its
    /// preferred hour and weekday as angles, and of its seasonal phase.
    phases: Vec<[f64; 6]>,
}

/// Turn-level context shared by all candidates of a turn.
struct Turn {
    ts: i64,
    focal: [Option<u32>; 2],
    /// Continuous weekday position in [0, 7), Monday 00:00 = 0.
    weekday: f64,
    post_burst: bool,
}

impl Turn {
    fn is_focal(&self, e: u32) -> bool {
        self.focal.contains(&Some(e))
    }
}

/// Simulates one user; returns its rows with clean features (the noise pass comes later).
pub fn simulate(
    config: &Config,
    spec: &UserSpec,
    world_rng: &mut ChaCha8Rng,
    rng: &mut ChaCha8Rng,
) -> Tables {
    let t = &config.timeline;
    let first_day =
        t.start_unix.div_euclid(86_400) + world_rng.random_range(0..=t.start_spread_days as i64);
    let mut world = World::generate(config, world_rng, first_day * 86_400);
    // The ids written for this user: a random permutation of its entities and of its
    // initial memories, so no id plays the same canary role in two users.
    let entity_out = shuffled(world.n_entities() as u32, world_rng);
    let memory_out = shuffled(world.memories.len() as u32, world_rng);
    let slots = schedule(config, rng, first_day, spec.turns);
    let mut sim = Sim {
        config,
        spec,
        rules: Rules::from_config(&config.canaries),
        cycle_peak: cycle_peak(config, spec.user_id),
        entity_out,
        memory_out,
        world: &mut world,
        rng,
        state: State {
            bfs: FxHashMap::default(),
            paths: FxHashMap::default(),
            feedback: FxHashMap::default(),
            burst_entity: 0,
            burst_left: 0,
            post_burst_left: 0,
            prev_primary: None,
            prev_focal: [None, None],
            mixer: (i64::MIN, Vec::new()),
            phases: Vec::new(),
        },
        out: Tables::default(),
    };
    // Every turn writes K candidate rows: their columns grow once.
    sim.out
        .candidates
        .reserve(spec.turns as usize * config.candidates.k as usize);
    sim.plant_chain(&slots);
    for (i, slot) in slots.iter().enumerate() {
        if slot.turn_in_session == 0 {
            sim.session_events(slot.ts);
        }
        let prev_ts = if i == 0 { None } else { Some(slots[i - 1].ts) };
        sim.turn(i as u32, slot, prev_ts);
    }
    sim.write_memories();
    sim.out
}

struct Sim<'a> {
    config: &'a Config,
    spec: &'a UserSpec,
    rules: Rules,
    /// Where in the week this user's cycle entity X peaks (days from Monday 00:00).
    cycle_peak: f64,
    /// Written id of each internal entity id.
    entity_out: Vec<u32>,
    /// Written id of each initial memory (later memories keep their internal id).
    memory_out: Vec<u32>,
    world: &'a mut World,
    rng: &'a mut ChaCha8Rng,
    state: State,
    out: Tables,
}

/// Each entity's phases for the mixer: the cosine and sine of its preferred hour and
/// weekday as angles, and of its seasonal phase.
fn mixer_phases(entities: &[Entity]) -> Vec<[f64; 6]> {
    entities
        .iter()
        .map(|ent| {
            let (sh, ch) = (TAU * ent.pref_hour / 24.0).sin_cos();
            let (sw, cw) = (TAU * ent.pref_weekday / 7.0).sin_cos();
            let (ss, cs) = ent.season_phase.sin_cos();
            [ch, sh, cw, sw, cs, ss]
        })
        .collect()
}

/// The mixer weight of each of `entities` at time `ts`: popularity × daily cycle × weekly
/// cycle × seasonal drift, where the daily cycle is 1 + a·cos(2π(hour − preferred hour)/24),
/// the weekly one the same over the week, and the drift exp(a·sin(2π·day/period + phase)).
/// Each cosine and sine of a difference or sum is expanded over the entity's `phases`
/// ([`mixer_phases`]), so a turn takes three sines and cosines rather than three an entity.
fn mixer_weights(p: &PatternConfig, entities: &[Entity], phases: &[[f64; 6]], ts: i64) -> Vec<f64> {
    let (sh, ch) = (TAU * calendar::hour(ts) / 24.0).sin_cos();
    let (sw, cw) = (TAU * calendar::weekday(ts) / 7.0).sin_cos();
    let (ss, cs) = (TAU * (ts as f64 / 86_400.0) / p.seasonal_period_days).sin_cos();
    entities
        .iter()
        .zip(phases)
        .map(|(ent, [pch, psh, pcw, psw, pcs, pss])| {
            // cos(a − b) = cos a cos b + sin a sin b; sin(a + b) = sin a cos b + cos a sin b.
            let daily = 1.0 + p.daily_amplitude * (ch * pch + sh * psh);
            let weekly = 1.0 + p.weekly_amplitude * (cw * pcw + sw * psw);
            let season = (p.seasonal_amplitude * (ss * pcs + cs * pss)).exp();
            ent.popularity * daily * weekly * season
        })
        .collect()
}

/// Where in the week user `user`'s cycle entity X peaks: a weekday drawn uniformly and an
/// hour within `canaries.cycle_peak_hours`, from a stream of its own (so the rest of the
/// user's world does not depend on it).
fn cycle_peak(config: &Config, user: u32) -> f64 {
    let mut rng = rng_for(config.seed, user, Stream::Roles);
    let [from, to] = config.canaries.cycle_peak_hours;
    rng.random_range(0..7u32) as f64 + rng.random_range(from..to) / 24.0
}

/// A random permutation of `0..n`.
fn shuffled(n: u32, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    shuffle(&mut v, rng);
    v
}

/// Shuffles `v` in place (Fisher–Yates, from the back).
fn shuffle(v: &mut [u32], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

impl Sim<'_> {
    /// The id written for internal entity `e`.
    fn entity_id(&self, e: u32) -> u32 {
        self.entity_out[e as usize]
    }

    /// The id written for internal memory `m`.
    fn memory_id(&self, m: u32) -> u32 {
        self.memory_out.get(m as usize).copied().unwrap_or(m)
    }

    /// The written ids of the selector entities Z, W, P, T (−1 without canaries).
    fn selectors(&self) -> [i32; 4] {
        if !self.config.canaries.enabled {
            return [-1; 4];
        }
        roles::SELECTORS.map(|e| self.entity_id(e) as i32)
    }

    /// Dates the chain A → B → C: B appears 30% and C 60% of the way through the timeline.
    fn plant_chain(&mut self, slots: &[Slot]) {
        let [a, b, c] = roles::CHAIN;
        let n = slots.len();
        let tb = slots[(n * 3 / 10).min(n - 1)].ts;
        let tc = slots[(n * 6 / 10).min(n - 1)].ts.max(tb + 1);
        let m = &mut self.world.memories;
        m[b as usize].created = tb;
        m[b as usize].supersedes = Some(a);
        m[a as usize].superseded_at = Some(tb);
        m[c as usize].created = tc;
        m[c as usize].supersedes = Some(b);
        m[b as usize].superseded_at = Some(tc);
    }

    /// World events at the start of a session: new memories, supersessions, and new
    /// memories of the decaying canary entities R and V.
    fn session_events(&mut self, ts: i64) {
        let cfg = self.config;
        let n = self.world.n_entities() as u32;
        if self.rng.random_bool(cfg.world.memory_creation_rate) {
            let e = match self.state.prev_primary {
                Some(e) if self.rng.random_bool(0.5) => e,
                _ => self.rng.random_range(roles::FIRST_ORDINARY..n),
            };
            self.world.add_memory(cfg, self.rng, e, ts);
        }
        // Facts about the entities in use get updated: the superseded versions stay in
        // the store (the superseded hard negatives and the PoC's supersession filter).
        if self.rng.random_bool(cfg.world.supersession_rate) {
            let e = self.draw_mixer_entity(ts, None);
            let current: Vec<u32> = self.world.by_entity[e as usize]
                .iter()
                .copied()
                .filter(|&m| {
                    let mem = &self.world.memories[m as usize];
                    mem.superseded_at.is_none() && mem.exists(ts)
                })
                .collect();
            if !current.is_empty() {
                let m = current[self.rng.random_range(0..current.len())];
                self.world.supersede(cfg, self.rng, m, ts);
            }
        }
        if cfg.canaries.enabled {
            for e in [roles::RECENCY_R, roles::COMBINED_V] {
                if self.rng.random_bool(0.5) {
                    self.world.add_memory(cfg, self.rng, e, ts);
                }
            }
        }
    }

    /// The mixer weight of every ordinary entity at time `ts` (see [`mixer_weights`]).
    fn mixer_weights(&mut self, ts: i64) -> Vec<f64> {
        let ordinary = &self.world.entities[roles::FIRST_ORDINARY as usize..];
        if self.state.phases.len() != ordinary.len() {
            self.state.phases = mixer_phases(ordinary);
        }
        mixer_weights(&self.config.patterns, ordinary, &self.state.phases, ts)
    }

    fn draw_mixer_entity(&mut self, ts: i64, exclude: Option<u32>) -> u32 {
        let n = self.world.n_entities() as u32;
        let ordinary = (n - roles::FIRST_ORDINARY) as usize;
        if self.state.mixer.0 != ts || self.state.mixer.1.len() != ordinary {
            let weights = self.mixer_weights(ts);
            self.state.mixer = (ts, weights);
        }
        let skip = exclude.map_or(usize::MAX, |e| {
            (e as usize).wrapping_sub(roles::FIRST_ORDINARY as usize)
        });
        let weight = |(i, &w): (usize, &f64)| if i == skip { 0.0 } else { w };
        let weights = &self.state.mixer.1;
        let total: f64 = weights.iter().enumerate().map(weight).sum();
        let mut x = self.rng.random_range(0.0..total);
        for (i, w) in weights.iter().enumerate().map(|p| (p.0, weight(p))) {
            if x < w {
                return roles::FIRST_ORDINARY + i as u32;
            }
            x -= w;
        }
        n - 1
    }

    /// Picks the turn's focal entities: bursts, persistence, the mixer, and the canary
    /// selectors (Z or W, P, T) in the second slot.
    fn focal(&mut self, ts: i64) -> ([Option<u32>; 2], bool) {
        let cfg = self.config;
        let p = &cfg.patterns;
        let mut post_burst = false;
        let primary = if self.state.burst_left > 0 {
            self.state.burst_left -= 1;
            if self.state.burst_left == 0 {
                self.state.post_burst_left = cfg.canaries.post_burst_turns;
            }
            self.state.burst_entity
        } else {
            if self.state.post_burst_left > 0 {
                self.state.post_burst_left -= 1;
                post_burst = cfg.canaries.enabled;
            }
            let burst_start = self.state.post_burst_left == 0
                && !post_burst
                && self.rng.random_bool(p.burst_prob_per_turn);
            if burst_start {
                let e = self.draw_mixer_entity(ts, None);
                let len = self.rng.random_range(p.burst_turns[0]..=p.burst_turns[1]);
                self.state.burst_entity = e;
                self.state.burst_left = len - 1;
                if self.state.burst_left == 0 {
                    self.state.post_burst_left = cfg.canaries.post_burst_turns;
                }
                e
            } else {
                match self.state.prev_primary {
                    Some(e) if self.rng.random_bool(p.focal_persistence) => e,
                    _ => self.draw_mixer_entity(ts, post_burst.then_some(self.state.burst_entity)),
                }
            }
        };
        // While the burst entity's memories are relevant after the burst, it is not focal.
        let primary = if post_burst && primary == self.state.burst_entity {
            self.draw_mixer_entity(ts, Some(self.state.burst_entity))
        } else {
            primary
        };
        let k = &cfg.canaries;
        let x: f64 = self.rng.random_range(0.0..1.0);
        let second = if k.enabled && x < k.selectivity_focal_prob {
            Some(if self.rng.random_bool(0.5) {
                roles::SELECT_Z
            } else {
                roles::SELECT_W
            })
        } else if k.enabled && x < k.selectivity_focal_prob + k.dependency_focal_prob {
            Some(roles::DEP_P)
        } else if k.enabled
            && x < k.selectivity_focal_prob + k.dependency_focal_prob + k.combined_focal_prob
        {
            Some(roles::COMBINED_T)
        } else if self.rng.random_bool(p.second_focal) {
            let e = self.draw_mixer_entity(ts, Some(primary));
            (!(post_burst && e == self.state.burst_entity)).then_some(e)
        } else {
            None
        };
        self.state.prev_primary = Some(primary);
        ([Some(primary), second], post_burst)
    }

    /// Clean relevance of an ordinary memory under the mixer.
    fn world_relevance(&self, m: u32, turn: &Turn) -> f64 {
        let p = &self.config.patterns;
        let mem = &self.world.memories[m as usize];
        let e = mem.entity;
        let base = if turn.is_focal(e) {
            p.focal_relevance
        } else {
            let edge = turn
                .focal
                .iter()
                .flatten()
                .filter_map(|&f| self.world.has_edge(f, e))
                .map(|d| d.strength as f64)
                .fold(0.0, f64::max);
            if edge > 0.0 {
                (p.neighbour_relevance * edge).max(p.background_relevance)
            } else {
                p.background_relevance
            }
        };
        let age = ((turn.ts - mem.created) as f64 / 86_400.0).max(0.0);
        let decay = if mem.pinned {
            1.0
        } else {
            match mem.decay {
                Decay::Exponential => (-age / p.exp_decay_days).exp(),
                Decay::PowerLaw => (1.0 + age / p.exp_decay_days).powf(-p.power_law_alpha),
            }
        };
        let importance = 0.5 + mem.importance as f64;
        let superseded = if mem.superseded(turn.ts) {
            p.superseded_factor
        } else {
            1.0
        };
        (base * (0.05 + 0.95 * decay) * importance * superseded).min(0.97)
    }

    /// The canary role of internal memory `m` at this turn (chain versions by identity).
    fn role(&self, m: u32) -> Role {
        if !self.config.canaries.enabled {
            return Role::None;
        }
        match self.world.memories[m as usize].entity {
            roles::CYCLE_X => Role::Cycle,
            roles::RECENCY_R => Role::Recency,
            roles::SELECT_Y => Role::Selectivity,
            roles::CHAIN_S => match roles::CHAIN.iter().position(|&c| c == m) {
                Some(0) => Role::ChainOldest,
                Some(1) => Role::ChainMiddle,
                _ => Role::ChainNewest,
            },
            roles::DEP_Q => Role::Dependency,
            roles::COMBINED_V => Role::Combined,
            _ => Role::None,
        }
    }

    /// Clean relevance of a canary memory and the canary it belongs to, or `None` for an
    /// ordinary memory. The rules are [`Rules::relevance`], shared with `eval`'s oracle.
    fn canary_relevance(&self, m: u32, turn: &Turn) -> Option<(f64, Canary)> {
        let role = self.role(m);
        let mem = &self.world.memories[m as usize];
        let inputs = Inputs {
            week_position: turn.weekday,
            cycle_peak: self.cycle_peak,
            age_days: ((turn.ts - mem.created) as f64 / 86_400.0).max(0.0),
            focal: roles::SELECTORS.map(|e| turn.is_focal(e)),
        };
        // A chain version's level is its rank among the versions that exist, newest first.
        let rank_role = if role.is_chain() {
            let newer = roles::CHAIN
                .iter()
                .filter(|&&c| {
                    let other = &self.world.memories[c as usize];
                    other.exists(turn.ts) && other.created > mem.created
                })
                .count();
            [Role::ChainNewest, Role::ChainMiddle, Role::ChainOldest][newer.min(2)]
        } else {
            role
        };
        let p = self.rules.relevance(rank_role, &inputs)?;
        let canary = match role {
            Role::Cycle => Canary::TemporalCycle,
            Role::Recency => Canary::RecencyDecay,
            Role::Selectivity => Canary::EntitySelectivity,
            Role::Dependency => Canary::CrossEntityDependency,
            Role::Combined => Canary::Combined,
            _ => Canary::SupersessionChain,
        };
        Some((p, canary))
    }

    fn existing(&self, e: u32, ts: i64) -> Vec<u32> {
        self.world.by_entity[e as usize]
            .iter()
            .copied()
            .filter(|&m| self.world.memories[m as usize].exists(ts))
            .collect()
    }

    fn sample_existing(&mut self, e: u32, ts: i64, n: usize) -> Vec<u32> {
        let mut ms = self.existing(e, ts);
        shuffle(&mut ms, self.rng);
        ms.truncate(n);
        ms
    }

    /// The newest existing memory of entity `e` and `n − 1` others drawn at random.
    fn newest_and_sampled(&mut self, e: u32, ts: i64, n: usize) -> Vec<u32> {
        let mut ms = self.existing(e, ts);
        let Some(newest) =
            (0..ms.len()).max_by_key(|&i| (self.world.memories[ms[i] as usize].created, ms[i]))
        else {
            return ms;
        };
        let first = ms.swap_remove(newest);
        shuffle(&mut ms, self.rng);
        ms.truncate(n.saturating_sub(1));
        ms.insert(0, first);
        ms
    }

    /// Simulates turn `index` at `slot`: its focal entities and candidates, their clean
    /// features, relevance and labels; writes its candidate rows and turn row, then updates
    /// what the user's memory system has seen.
    fn turn(&mut self, index: u32, slot: &Slot, prev_ts: Option<i64>) {
        let cfg = self.config;
        let ts = slot.ts;
        let (focal, post_burst) = self.focal(ts);
        let poc = (cfg.canaries.poc_share > 0.0 && self.rng.random_bool(cfg.canaries.poc_share))
            .then(|| Canary::POC[self.rng.random_range(0..Canary::POC.len())]);
        let turn = Turn {
            ts,
            focal,
            weekday: calendar::weekday(ts),
            post_burst,
        };
        let (mut picks, negative_slots) = self.candidates(&turn);
        let primary = focal[0].expect("every turn has a primary focal entity");
        let (rows, path_ids) = self.features(&turn, slot, &picks, primary);
        if let Some(rule) = poc {
            self.poc_relevance(rule, &turn, primary, &mut picks, &rows);
        }
        let probs: Vec<f64> = picks.iter().map(|p| p.p).collect();
        let labels = independent_labels(&probs, self.rng);
        let mut turn_canary = poc.map_or(0, |c| c.bit());
        if post_burst {
            turn_canary |= Canary::Burst.bit();
        }
        turn_canary |= self.write_candidates(index, &picks, &rows, &path_ids, &labels);
        let written = Written {
            index,
            slot,
            prev_ts,
            turn_canary,
            negative_slots,
        };
        self.write_turn(&written, focal, &labels);
        self.observe(&picks, &labels, primary, focal);
    }

    /// Each candidate's clean features at the turn, and the id of its path from the
    /// primary focal entity.
    fn features(
        &mut self,
        turn: &Turn,
        slot: &Slot,
        picks: &[Pick],
        primary: u32,
    ) -> (Vec<[f32; FEATURE_DIM]>, Vec<u32>) {
        let cfg = self.config;
        let ts = turn.ts;
        // Clean features.
        let hour = calendar::hour(ts);
        let (tod_s, tod_c) = angle(hour / 24.0);
        let (dow_s, dow_c) = angle(turn.weekday.floor() / 7.0);
        let (moy_s, moy_c) = angle(calendar::month0(ts) as f64 / 12.0);
        let session_gap = slot
            .prev_session_start
            .map_or(0.0, |p| (slot.session_start - p) as f64 / 86_400.0);
        let log_session_gap = session_gap.ln_1p() as f32;
        let k = picks.len();
        let mut rows: Vec<[f32; FEATURE_DIM]> = Vec::with_capacity(k);
        let mut path_ids = Vec::with_capacity(k);
        let max_entity = (cfg.world.entities[1].max(2) - 1) as f32;
        let max_aspect = (cfg.world.aspects_per_entity[1].max(2) - 1) as f32;
        for pick in picks {
            let mem = &self.world.memories[pick.memory as usize];
            let ent = &self.world.entities[mem.entity as usize];
            let mut x = [0f32; FEATURE_DIM];
            x[feat::LOG_AGE] = (((ts - mem.created) as f64 / 86_400.0).max(0.0)).ln_1p() as f32;
            x[feat::IMPORTANCE] = mem.importance;
            x[feat::LOG_ACCESS] = (mem.access_count as f32).ln_1p();
            x[feat::TOD_SIN] = tod_s;
            x[feat::TOD_COS] = tod_c;
            x[feat::DOW_SIN] = dow_s;
            x[feat::DOW_COS] = dow_c;
            x[feat::MOY_SIN] = moy_s;
            x[feat::MOY_COS] = moy_c;
            x[feat::LOG_SESSION_GAP] = log_session_gap;
            x[feat::IS_EMBEDDED] = mem.embedded as u8 as f32;
            x[feat::IS_SUPERSEDED] = mem.superseded(ts) as u8 as f32;
            x[feat::ENTITY_SLOT] = self.entity_out[mem.entity as usize] as f32 / max_entity;
            x[feat::ASPECT_SLOT] = mem.aspect as f32 / max_aspect;
            x[feat::IS_CONSTRAINT] = mem.constraint as u8 as f32;
            x[feat::LOG_STRUCTURAL_DENSITY] = ent.log_structural_density;
            x[feat::IS_KA_TRAVERSAL] = (!turn.is_focal(mem.entity)) as u8 as f32;
            let entity = mem.entity;
            let (pid, path) = self.path(primary, pick.memory);
            x[feat::HOP_COUNT_NORM..].copy_from_slice(&path);
            let (s, n) = self
                .state
                .feedback
                .get(&(primary, entity))
                .copied()
                .unwrap_or((0.0, 0.0));
            x[feat::PATH_FEEDBACK_SCORE] = (s + 0.5) / (n + 1.0);
            rows.push(x);
            path_ids.push(pid);
        }

        (rows, path_ids)
    }

    /// The PoC's pointwise pattern `rule` replaces the relevance of the turn's ordinary
    /// candidates: 0.9 where it holds, 0.04 where it does not.
    fn poc_relevance(
        &self,
        rule: Canary,
        turn: &Turn,
        primary: u32,
        picks: &mut [Pick],
        rows: &[[f32; FEATURE_DIM]],
    ) {
        for (pick, x) in picks.iter_mut().zip(rows) {
            if pick.canary == 0 {
                let mem = &self.world.memories[pick.memory as usize];
                let holds = match rule {
                    Canary::RecencyBias => x[feat::LOG_AGE] < 7f32.ln_1p(),
                    Canary::ImportanceThreshold => x[feat::IMPORTANCE] > 0.45,
                    Canary::AccessFrequency => mem.access_count >= 3,
                    Canary::TemporalCoherence => self.state.prev_focal.contains(&Some(mem.entity)),
                    Canary::EntityClustering => {
                        self.world.entities[mem.entity as usize].community
                            == self.world.entities[primary as usize].community
                    }
                    Canary::SupersessionFilter => {
                        turn.is_focal(mem.entity) && x[feat::IS_SUPERSEDED] == 0.0
                    }
                    Canary::GraphTraversalPriority => {
                        x[feat::IS_KA_TRAVERSAL] == 1.0 && x[feat::FOCAL_DISTANCE_NORM] <= 0.2
                    }
                    _ => unreachable!("only PoC patterns are drawn"),
                };
                pick.p = if holds { 0.9 } else { 0.04 };
                pick.canary |= rule.bit();
            }
        }
    }

    /// Writes the turn's candidate rows; returns the canary bits they carry.
    fn write_candidates(
        &mut self,
        index: u32,
        picks: &[Pick],
        rows: &[[f32; FEATURE_DIM]],
        path_ids: &[u32],
        labels: &[u8],
    ) -> u16 {
        let cfg = self.config;
        let mut turn_canary = 0;
        let written: Vec<(u32, u32, Role)> = picks
            .iter()
            .map(|p| {
                let e = self.world.memories[p.memory as usize].entity;
                (
                    self.memory_id(p.memory),
                    self.entity_id(e),
                    self.role(p.memory),
                )
            })
            .collect();
        let c = &mut self.out.candidates;
        for (i, (pick, x)) in picks.iter().zip(rows).enumerate() {
            let (memory_id, entity_id, role) = written[i];
            c.user_id.push(self.spec.user_id);
            c.turn_index.push(index);
            c.cand_index.push(i as u8);
            c.memory_id.push(memory_id);
            c.entity_id.push(entity_id);
            c.memory_slot.push(memory_id % cfg.world.memory_slots);
            c.canary_role.push(role.code());
            c.path_id.push(path_ids[i]);
            c.push_clean(x);
            c.mask.push(0);
            c.label.push(labels[i]);
            c.clean_label.push(labels[i]);
            c.relevance.push(pick.p as f32);
            c.canary.push(pick.canary);
            c.hard_negative.push(pick.hard as u8);
            turn_canary |= pick.canary;
        }

        turn_canary
    }

    /// Writes the turn row: time, focal entities, selectors, canary bits, counts and the
    /// query embedding (the primary focal entity's centre, mixed with an ordinary second
    /// focal entity's, plus noise).
    fn write_turn(&mut self, w: &Written, focal: [Option<u32>; 2], labels: &[u8]) {
        let cfg = self.config;
        let primary = focal[0].expect("every turn has a primary focal entity");
        let focal_ids = [
            self.entity_id(primary) as i32,
            focal[1].map_or(-1, |e| self.entity_id(e) as i32),
        ];
        let selectors = self.selectors();
        let tr = &mut self.out.turns;
        tr.push_time(
            self.spec.user_id,
            w.index,
            self.spec.stage,
            w.slot,
            w.prev_ts,
        );
        tr.focal_0.push(focal_ids[0]);
        tr.focal_1.push(focal_ids[1]);
        for (col, id) in tr.selectors.iter_mut().zip(selectors) {
            col.push(id);
        }
        tr.cycle_peak.push(if cfg.canaries.enabled {
            self.cycle_peak as f32
        } else {
            -1.0
        });
        tr.canary.push(w.turn_canary);
        tr.n_relevant.push(labels.iter().sum());
        tr.negative_slots.push(w.negative_slots as u8);
        let dim = self.world.embedding_dim;
        let c0 = &self.world.entities[primary as usize].center;
        // Canary selectors are not topics: only an ordinary second focal entity shapes the
        // query, so an edit of the selector slot changes nothing else the model reads.
        let c1 = focal[1]
            .filter(|&e| World::is_ordinary(e))
            .map(|e| &self.world.entities[e as usize].center);
        for d in 0..dim {
            let z: f64 = StandardNormal.sample(self.rng);
            let mix = match c1 {
                Some(c1) => 0.75 * c0[d] + 0.25 * c1[d],
                None => c0[d],
            };
            tr.query.push(mix + 0.3 * z as f32);
        }
    }

    /// What the user's memory system saw: accesses of the labelled memories, path feedback
    /// per (primary focal, entity), referenced memories, the focal entities.
    fn observe(&mut self, picks: &[Pick], labels: &[u8], primary: u32, focal: [Option<u32>; 2]) {
        for (pick, &label) in picks.iter().zip(labels) {
            let mem = &mut self.world.memories[pick.memory as usize];
            mem.referenced = true;
            mem.access_count += label as u32;
            let fb = self
                .state
                .feedback
                .entry((primary, mem.entity))
                .or_insert((0.0, 0.0));
            fb.0 += label as f32;
            fb.1 += 1.0;
        }
        self.state.prev_focal = focal;
    }

    fn write_memories(&mut self) {
        let m = &mut self.out.memories;
        for (id, mem) in self.world.memories.iter().enumerate() {
            if !mem.referenced {
                continue;
            }
            m.user_id.push(self.spec.user_id);
            m.memory_id
                .push(self.memory_out.get(id).copied().unwrap_or(id as u32));
            m.entity_id.push(self.entity_out[mem.entity as usize]);
            m.aspect.push(mem.aspect);
            m.attribute.push(mem.attribute);
            m.created.push(mem.created);
            m.importance.push(mem.importance);
            m.pinned.push(mem.pinned as u8);
            m.superseded_at.push(mem.superseded_at);
            m.supersedes.push(
                mem.supersedes
                    .map(|s| self.memory_out.get(s as usize).copied().unwrap_or(s)),
            );
            m.community
                .push(self.world.entities[mem.entity as usize].community);
            m.embedding.extend_from_slice(&mem.embedding);
        }
    }
}

/// Clean labels of the `world` preset: one independent Bernoulli(relevance) draw per
/// candidate, so a candidate's relevance is the probability of its label.
pub fn independent_labels(probs: &[f64], rng: &mut ChaCha8Rng) -> Vec<u8> {
    probs
        .iter()
        .map(|p| rng.random_bool(p.clamp(0.0, 1.0)) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// The expanded weights equal the cycles computed directly from the angles' differences.
    #[test]
    fn mixer_weights_match_the_cycles_computed_directly() {
        let config = Config::default();
        let p = &config.patterns;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let world = World::generate(&config, &mut rng, 1_767_571_200);
        let ordinary = &world.entities[roles::FIRST_ORDINARY as usize..];
        let phases = mixer_phases(ordinary);
        for ts in [1_767_571_200, 1_767_600_000, 1_768_000_123, 1_790_000_000] {
            let (hour, weekday) = (calendar::hour(ts), calendar::weekday(ts));
            let day = ts as f64 / 86_400.0;
            for (ent, w) in ordinary.iter().zip(mixer_weights(p, ordinary, &phases, ts)) {
                let daily = 1.0 + p.daily_amplitude * (TAU * (hour - ent.pref_hour) / 24.0).cos();
                let weekly =
                    1.0 + p.weekly_amplitude * (TAU * (weekday - ent.pref_weekday) / 7.0).cos();
                let season = (p.seasonal_amplitude
                    * (TAU * day / p.seasonal_period_days + ent.season_phase).sin())
                .exp();
                let direct = ent.popularity * daily * weekly * season;
                assert!((w - direct).abs() <= 1e-12 * direct, "{w} against {direct}");
            }
        }
    }
}
