//! Traversal paths: the breadth-first tree from a focal entity and each candidate's
//! path to it, with its hop features.

use super::Sim;
use crate::datagen::world::Edge;
use crate::features::{HopType, MAX_HOPS};

impl Sim<'_> {
    /// Makes sure the breadth-first tree from `from` is computed (`state.bfs[&from]`: each
    /// entity's parent and the edge to it).
    fn bfs(&mut self, from: u32) {
        let world = &*self.world;
        self.state.bfs.entry(from).or_insert_with(|| {
            let none = Edge {
                to: u32::MAX,
                strength: 0.0,
                confidence: 0.0,
            };
            let mut parent = vec![(u32::MAX, none); world.n_entities()];
            let mut depth = vec![0usize; world.n_entities()];
            parent[from as usize] = (from, none);
            let mut queue = std::collections::VecDeque::from([from]);
            while let Some(e) = queue.pop_front() {
                if depth[e as usize] >= MAX_HOPS - 3 {
                    continue;
                }
                for d in &world.entities[e as usize].adjacent {
                    if parent[d.to as usize].0 == u32::MAX {
                        parent[d.to as usize] = (e, *d);
                        depth[d.to as usize] = depth[e as usize] + 1;
                        queue.push_back(d.to);
                    }
                }
            }
            parent
        });
    }

    /// The traversal path from the focal entity to memory `m`, its path id, and the path
    /// features (dims 17–23 except the feedback score, filled by the caller).
    pub(super) fn path(&mut self, focal: u32, m: u32) -> (u32, [f32; 7]) {
        // The graph, the tree and the memory's place in it do not change during a user's
        // stream: a path met before is read back.
        if let Some(&known) = self.state.paths.get(&(focal, m)) {
            return known;
        }
        let (entity, aspect) = {
            let mem = &self.world.memories[m as usize];
            (mem.entity, mem.aspect)
        };
        // hops: (type, confidence, aspect weight, crossing, strength), at most MAX_HOPS
        // (the tree is cut at MAX_HOPS − 3 entity hops, and the entity's own hop, its
        // aspect and its attribute make three more): held in place, not allocated.
        const NO_HOP: (HopType, f32, f32, u8, f32) = (HopType::Entity, 0.0, 0.0, 0, 0.0);
        let mut hop_store = [NO_HOP; MAX_HOPS];
        hop_store[0] = (HopType::Entity, 1.0, 0.0, 0, 1.0);
        let mut len = 1;
        let mut entity_hops = 0usize;
        if entity != focal {
            self.bfs(focal);
            let parent = &self.state.bfs[&focal];
            if parent[entity as usize].0 == u32::MAX {
                let crossing = (self.world.entities[focal as usize].community
                    != self.world.entities[entity as usize].community)
                    as u8;
                hop_store[len] = (HopType::Entity, 0.1, 0.0, crossing, 0.05);
                len += 1;
                entity_hops = MAX_HOPS;
            } else {
                // Walked from the entity up to the focal one, then turned around.
                let mut e = entity;
                while e != focal {
                    let (p, edge) = parent[e as usize];
                    let crossing = (self.world.entities[p as usize].community
                        != self.world.entities[e as usize].community)
                        as u8;
                    hop_store[len + entity_hops] = (
                        HopType::Dependency,
                        edge.confidence,
                        0.0,
                        crossing,
                        edge.strength,
                    );
                    entity_hops += 1;
                    e = p;
                }
                hop_store[len..len + entity_hops].reverse();
                len += entity_hops;
            }
        }
        let aspect_weight = self.world.entities[entity as usize].aspects[aspect as usize].weight;
        hop_store[len] = (HopType::Aspect, 1.0, aspect_weight, 0, 1.0);
        hop_store[len + 1] = (HopType::Attribute, 1.0, 0.0, 0, 1.0);
        let hops = &hop_store[..len + 2];
        let id = self.state.paths.len() as u32;
        let p = &mut self.out.paths;
        for (i, h) in hops.iter().enumerate() {
            p.user_id.push(self.spec.user_id);
            p.path_id.push(id);
            p.hop.push(i as u8);
            p.hop_type.push(h.0 as u8);
            p.edge_confidence.push(h.1);
            p.aspect_weight.push(h.2);
            p.community_crossing.push(h.3);
            p.dependency_strength.push(h.4);
        }
        let min_conf = hops.iter().map(|h| h.1).fold(1.0f32, f32::min);
        let crossings: u32 = hops.iter().map(|h| h.3 as u32).sum();
        let log_strength: f32 = hops.iter().map(|h| h.4.ln()).sum();
        let features = [
            hops.len() as f32 / MAX_HOPS as f32,
            min_conf,
            aspect_weight,
            crossings as f32 / MAX_HOPS as f32,
            0.0,
            log_strength,
            entity_hops as f32 / MAX_HOPS as f32,
        ];
        self.state.paths.insert((focal, m), (id, features));
        (id, features)
    }
}
