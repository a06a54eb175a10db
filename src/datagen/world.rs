//! One user's world: the entity graph (entities, aspects, attributes, dependency edges,
//! communities) and the memory store (importance, pinned, supersession chains), with
//! content embeddings that cluster by community and entity.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Exp, StandardNormal};

use crate::config::{Config, Range};

/// Internal identities of the canary entities and memories. The simulator works with
/// these; the ids it writes are a per-user permutation of them (see `sim::simulate`), and
/// the written data says which id plays which role (`canary_role`, `selector_*`).
pub mod roles {
    /// 1: entity X, relevant on one weekday.
    pub const CYCLE_X: u32 = 0;
    /// 2: entity R, whose memories decay at the planted rate.
    pub const RECENCY_R: u32 = 1;
    /// 3: entity holding memory Y, relevant only when Z is focal.
    pub const SELECT_Y: u32 = 2;
    pub const SELECT_Z: u32 = 3;
    /// 3: the contrast entity W.
    pub const SELECT_W: u32 = 4;
    /// 4: entity holding the chain A → B → C.
    pub const CHAIN_S: u32 = 5;
    /// 6: when P is active, Q's memories become relevant.
    pub const DEP_P: u32 = 6;
    pub const DEP_Q: u32 = 7;
    /// 7: entity V (cycle × selectivity × recency), selected by T.
    pub const COMBINED_V: u32 = 8;
    pub const COMBINED_T: u32 = 9;
    /// Entities below this id play a canary role; the rest are ordinary.
    pub const FIRST_ORDINARY: u32 = 10;

    /// Internal ids of the initial canary memories.
    pub const X_MEMORIES: [u32; 3] = [0, 1, 2];
    pub const R_INITIAL: [u32; 3] = [3, 4, 5];
    pub const Y_MEMORIES: [u32; 2] = [6, 7];
    /// A (oldest), B, C (newest).
    pub const CHAIN: [u32; 3] = [8, 9, 10];
    pub const Q_MEMORIES: [u32; 3] = [11, 12, 13];
    pub const V_INITIAL: [u32; 3] = [14, 15, 16];
    pub const FIRST_ORDINARY_MEMORY: u32 = 17;

    /// The entities that select a canary when focal, in the order of
    /// [`crate::canary::Selector`] (Z, W, P, T).
    pub const SELECTORS: [u32; 4] = [SELECT_Z, SELECT_W, DEP_P, COMBINED_T];

    pub fn is_selector(e: u32) -> bool {
        SELECTORS.contains(&e)
    }
}

#[derive(Clone, Debug)]
pub struct Aspect {
    pub weight: f32,
    pub attributes: u16,
}

#[derive(Clone, Copy, Debug)]
pub struct Edge {
    pub to: u32,
    pub strength: f32,
    pub confidence: f32,
}

#[derive(Clone, Debug)]
pub struct Entity {
    pub community: u16,
    /// Zipf popularity weight.
    pub popularity: f64,
    /// Preferred hour of day (0–24) and weekday (0–7, Monday = 0).
    pub pref_hour: f64,
    pub pref_weekday: f64,
    pub season_phase: f64,
    pub aspects: Vec<Aspect>,
    /// Outgoing dependency edges.
    pub deps: Vec<Edge>,
    /// Graph neighbours in either direction (for traversal), with the edge used.
    pub adjacent: Vec<Edge>,
    /// ln(1 + structural density): the feature every candidate of the entity carries.
    pub log_structural_density: f32,
    pub center: Vec<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    Exponential,
    PowerLaw,
}

#[derive(Clone, Debug)]
pub struct Memory {
    pub entity: u32,
    pub aspect: u16,
    pub attribute: u16,
    /// Unix seconds.
    pub created: i64,
    pub importance: f32,
    pub pinned: bool,
    pub constraint: bool,
    pub embedded: bool,
    /// When a newer version superseded it (Unix seconds).
    pub superseded_at: Option<i64>,
    /// The memory it superseded.
    pub supersedes: Option<u32>,
    pub decay: Decay,
    pub access_count: u32,
    pub embedding: Vec<f32>,
    /// The embedding's Euclidean norm.
    pub norm: f32,
    /// Appeared in a candidate set (so it is written to the memories table).
    pub referenced: bool,
}

impl Memory {
    pub fn superseded(&self, now: i64) -> bool {
        self.superseded_at.is_some_and(|t| t <= now)
    }

    pub fn exists(&self, now: i64) -> bool {
        self.created <= now
    }
}

pub struct World {
    pub entities: Vec<Entity>,
    pub memories: Vec<Memory>,
    pub by_entity: Vec<Vec<u32>>,
    pub embedding_dim: usize,
}

fn uniform(rng: &mut ChaCha8Rng, r: Range) -> u32 {
    rng.random_range(r[0]..=r[1])
}

/// The Euclidean norm of `v`.
pub fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn gaussian_vec(rng: &mut ChaCha8Rng, dim: usize, scale: f32) -> Vec<f32> {
    (0..dim)
        .map(|_| {
            let z: f64 = StandardNormal.sample(rng);
            scale * z as f32
        })
        .collect()
}

impl World {
    /// Builds a user's world. `start` is the user's first timestamp; initial memories are
    /// created before it.
    pub fn generate(config: &Config, rng: &mut ChaCha8Rng, start: i64) -> World {
        let (mut entities, n_communities) = Self::entities(config, rng);
        Self::link(&mut entities, n_communities, config, rng);
        let n_entities = entities.len();
        let mut world = World {
            entities,
            memories: Vec::new(),
            by_entity: vec![Vec::new(); n_entities],
            embedding_dim: config.world.embedding_dim as usize,
        };
        world.initial_memories(config, rng, start);
        world
    }

    /// The user's entities: communities with embedding centres, Zipf popularity over a
    /// random ranking, preferred hours, weekdays and seasons, aspects; no edges yet. Also
    /// returns the number of communities drawn.
    fn entities(config: &Config, rng: &mut ChaCha8Rng) -> (Vec<Entity>, usize) {
        let w = &config.world;
        let dim = w.embedding_dim as usize;
        let n_entities = uniform(rng, w.entities) as usize;
        let n_communities = uniform(rng, w.communities) as usize;
        let community_centers: Vec<Vec<f32>> = (0..n_communities)
            .map(|_| gaussian_vec(rng, dim, 1.0))
            .collect();
        // Popularity: Zipf over a random ranking of the ordinary entities.
        let mut ranks: Vec<usize> = (0..n_entities).collect();
        for i in (1..ranks.len()).rev() {
            let j = rng.random_range(0..=i);
            ranks.swap(i, j);
        }
        let entities = (0..n_entities)
            .map(|e| {
                let community = rng.random_range(0..n_communities) as u16;
                let n_aspects = uniform(rng, w.aspects_per_entity);
                let aspects = (0..n_aspects)
                    .map(|_| Aspect {
                        weight: rng.random_range(0.05f32..1.0),
                        attributes: uniform(rng, w.attributes_per_aspect) as u16,
                    })
                    .collect();
                let offset = gaussian_vec(rng, dim, 0.5);
                let center = community_centers[community as usize]
                    .iter()
                    .zip(&offset)
                    .map(|(c, o)| c + o)
                    .collect();
                Entity {
                    community,
                    popularity: 1.0 / ((ranks[e] + 1) as f64).powf(config.patterns.zipf_exponent),
                    pref_hour: rng.random_range(0.0..24.0),
                    pref_weekday: rng.random_range(0.0..7.0),
                    season_phase: rng.random_range(0.0..std::f64::consts::TAU),
                    aspects,
                    deps: Vec::new(),
                    adjacent: Vec::new(),
                    log_structural_density: 0.0,
                    center,
                }
            })
            .collect();
        (entities, n_communities)
    }

    /// Dependency edges, mostly within a community (known dependency chains), and each
    /// entity's structural density.
    fn link(entities: &mut [Entity], n_communities: usize, config: &Config, rng: &mut ChaCha8Rng) {
        let w = &config.world;
        let n_entities = entities.len();
        let by_community: Vec<Vec<u32>> = (0..n_communities)
            .map(|c| {
                (0..n_entities as u32)
                    .filter(|&e| entities[e as usize].community as usize == c)
                    .collect()
            })
            .collect();
        let degree = Exp::new(1.0 / w.dependency_degree).expect("positive degree");
        for e in 0..n_entities {
            let n_edges = (degree.sample(rng) as usize).min(6);
            for _ in 0..n_edges {
                let same = &by_community[entities[e].community as usize];
                let to = if rng.random_bool(w.within_community) && same.len() > 1 {
                    same[rng.random_range(0..same.len())]
                } else {
                    rng.random_range(0..n_entities as u32)
                };
                // Selectors have no edges: which selector is focal changes no ordinary
                // memory's relevance, path or features (what the canary probes rely on).
                if to as usize == e
                    || roles::is_selector(e as u32)
                    || roles::is_selector(to)
                    || entities[e].deps.iter().any(|d| d.to == to)
                {
                    continue;
                }
                let edge = Edge {
                    to,
                    strength: rng.random_range(0.05f32..1.0),
                    confidence: rng.random_range(0.3f32..1.0),
                };
                entities[e].deps.push(edge);
                entities[e].adjacent.push(edge);
                entities[to as usize].adjacent.push(Edge {
                    to: e as u32,
                    ..edge
                });
            }
        }
        for ent in entities.iter_mut() {
            let attrs: u32 = ent.aspects.iter().map(|a| a.attributes as u32).sum();
            let density =
                ent.adjacent.len() as f32 + 0.5 * ent.aspects.len() as f32 + 0.25 * attrs as f32;
            ent.log_structural_density = density.ln_1p();
        }
    }

    /// The memories that exist before the timeline starts at `start`: the canary memories
    /// first, at the internal ids of `roles`, then each ordinary entity's; some already
    /// superseded.
    fn initial_memories(&mut self, config: &Config, rng: &mut ChaCha8Rng, start: i64) {
        let w = &config.world;
        let n_entities = self.entities.len();
        let world = self;
        // Ages of the initial memories: mostly recent (Exp, mean 30 days, as in the PoC),
        // some old knowledge (60–365 days) that the temporal-neighbour negatives draw on.
        let age = Exp::new(1.0 / 30.0).expect("positive rate");
        let old = |rng: &mut ChaCha8Rng| {
            let days = if rng.random_bool(0.3) {
                rng.random_range(60.0..365.0)
            } else {
                age.sample(rng)
            };
            start - (days * 86_400.0) as i64 - 3_600
        };
        // Canary memories first, at the internal ids of `roles`.
        let t = old(rng);
        for _ in roles::X_MEMORIES {
            let t = old(rng);
            world.add_memory(config, rng, roles::CYCLE_X, t);
        }
        for _ in roles::R_INITIAL {
            let t = old(rng);
            world.add_memory(config, rng, roles::RECENCY_R, t);
        }
        for _ in roles::Y_MEMORIES {
            world.add_memory(config, rng, roles::SELECT_Y, t);
        }
        // The chain: A exists from the start; B and C are dated by the simulator.
        for _ in roles::CHAIN {
            world.add_memory(config, rng, roles::CHAIN_S, t);
        }
        for _ in roles::Q_MEMORIES {
            let t = old(rng);
            world.add_memory(config, rng, roles::DEP_Q, t);
        }
        for _ in roles::V_INITIAL {
            let t = old(rng);
            world.add_memory(config, rng, roles::COMBINED_V, t);
        }
        debug_assert_eq!(world.memories.len() as u32, roles::FIRST_ORDINARY_MEMORY);
        for e in roles::FIRST_ORDINARY..n_entities as u32 {
            for _ in 0..uniform(rng, w.memories_per_entity) {
                let t = old(rng);
                world.add_memory(config, rng, e, t);
            }
        }
        // Some facts were already updated before the timeline starts.
        let initial = world.memories.len() as u32;
        for m in roles::FIRST_ORDINARY_MEMORY..initial {
            if rng.random_bool(w.supersession_rate) {
                let created = world.memories[m as usize].created;
                let when = rng.random_range(created..start);
                world.supersede(config, rng, m, when);
            }
        }
    }

    /// Adds a memory of `entity` created at `created`; returns its id.
    pub fn add_memory(
        &mut self,
        config: &Config,
        rng: &mut ChaCha8Rng,
        entity: u32,
        created: i64,
    ) -> u32 {
        let w = &config.world;
        let ent = &self.entities[entity as usize];
        let aspect = rng.random_range(0..ent.aspects.len()) as u16;
        let attribute = rng.random_range(0..ent.aspects[aspect as usize].attributes);
        let noise = gaussian_vec(rng, self.embedding_dim, 0.3);
        let embedding: Vec<f32> = ent.center.iter().zip(&noise).map(|(c, n)| c + n).collect();
        let norm = norm(&embedding);
        let importance = Beta::new(2.0, 5.0).expect("valid beta").sample(rng) as f32;
        let decay = if rng.random_bool(config.patterns.power_law_share) {
            Decay::PowerLaw
        } else {
            Decay::Exponential
        };
        let id = self.memories.len() as u32;
        self.memories.push(Memory {
            entity,
            aspect,
            attribute,
            created,
            importance,
            pinned: rng.random_bool(w.pinned_share),
            constraint: rng.random_bool(w.constraint_share),
            embedded: rng.random_bool(w.embedded_share),
            superseded_at: None,
            supersedes: None,
            decay,
            access_count: 0,
            embedding,
            norm,
            referenced: false,
        });
        self.by_entity[entity as usize].push(id);
        id
    }

    /// Creates a newer version of memory `old` at `now` (same entity and aspect) and marks
    /// the old one superseded; returns the new id.
    pub fn supersede(&mut self, config: &Config, rng: &mut ChaCha8Rng, old: u32, now: i64) -> u32 {
        let entity = self.memories[old as usize].entity;
        let new = self.add_memory(config, rng, entity, now);
        let (aspect, attribute) = {
            let m = &self.memories[old as usize];
            (m.aspect, m.attribute)
        };
        let m = &mut self.memories[new as usize];
        m.aspect = aspect;
        m.attribute = attribute;
        m.supersedes = Some(old);
        self.memories[old as usize].superseded_at = Some(now);
        new
    }

    pub fn n_entities(&self) -> usize {
        self.entities.len()
    }

    pub fn is_ordinary(entity: u32) -> bool {
        entity >= roles::FIRST_ORDINARY
    }

    pub fn has_edge(&self, from: u32, to: u32) -> Option<Edge> {
        self.entities[from as usize]
            .deps
            .iter()
            .find(|d| d.to == to)
            .copied()
    }

    pub fn adjacent(&self, a: u32, b: u32) -> bool {
        self.entities[a as usize].adjacent.iter().any(|d| d.to == b)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn canary_memories_have_fixed_ids() {
        let config = Config::default();
        for seed in 0..3 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let world = World::generate(&config, &mut rng, 1_767_571_200);
            for (ids, entity) in [
                (&roles::X_MEMORIES[..], roles::CYCLE_X),
                (&roles::R_INITIAL[..], roles::RECENCY_R),
                (&roles::Y_MEMORIES[..], roles::SELECT_Y),
                (&roles::CHAIN[..], roles::CHAIN_S),
                (&roles::Q_MEMORIES[..], roles::DEP_Q),
                (&roles::V_INITIAL[..], roles::COMBINED_V),
            ] {
                for &id in ids {
                    assert_eq!(world.memories[id as usize].entity, entity);
                }
            }
            let n = world.n_entities() as u32;
            assert!((config.world.entities[0]..=config.world.entities[1]).contains(&n));
            for (e, ent) in world.entities.iter().enumerate() {
                for d in &ent.deps {
                    assert_ne!(d.to as usize, e, "no self loops");
                    assert!(world.adjacent(d.to, e as u32), "adjacency is symmetric");
                }
            }
        }
    }
}
