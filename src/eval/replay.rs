//! The dataset seen through the runtime: a loaded user's turns as the runtime reads them,
//! and whole users replayed turn by turn, for checking an export against the Burn model.

use crate::data::{Dataset, UserSeq};
use crate::eval::split::Case;
use crate::features::{CONTEXT_DIM, FEATURE_DIM, HOP_DIM, MAX_HOPS};
use crate::runtime::{Candidate, Runtime, Turn};

/// Turn `t` of a loaded user sequence as the runtime reads it: its valid candidates, their
/// indices in the dataset's K slots, and their observed labels.
pub fn turn_of(
    u: &UserSeq,
    t: usize,
    k: usize,
    content_dim: usize,
) -> (Turn, Vec<usize>, Vec<f32>) {
    let mut turn = Turn {
        timestamp: Some(u.timestamp[t]),
        context: u.context[t * CONTEXT_DIM..(t + 1) * CONTEXT_DIM]
            .try_into()
            .expect("context width"),
        query: u.query[t * content_dim..(t + 1) * content_dim].to_vec(),
        focal: [u.focal[2 * t], u.focal[2 * t + 1]],
        candidates: Vec::new(),
    };
    let mut idx = Vec::new();
    let mut labels = Vec::new();
    for j in 0..k {
        let slot = t * k + j;
        if u.valid[slot] != 1.0 {
            continue;
        }
        let hop_n = (u.hop_count[slot] as usize).min(MAX_HOPS);
        let hops = (0..hop_n)
            .map(|h| {
                let at = (slot * MAX_HOPS + h) * HOP_DIM;
                u.hops[at..at + HOP_DIM].try_into().expect("hop width")
            })
            .collect();
        turn.candidates.push(Candidate {
            features: u.features[slot * FEATURE_DIM..(slot + 1) * FEATURE_DIM]
                .try_into()
                .expect("feature width"),
            missing: u.missing[slot * FEATURE_DIM..(slot + 1) * FEATURE_DIM]
                .try_into()
                .expect("feature width"),
            memory_slot: u.memory_slot[slot],
            memory_id: Some(u.memory_id[slot] as u64),
            entity: u.entity[slot],
            content: u.content[slot * content_dim..(slot + 1) * content_dim].to_vec(),
            hops,
        });
        idx.push(j);
        labels.push(u.labels[slot]);
    }
    (turn, idx, labels)
}

/// Replays each user's turns through the runtime, one at a time with its outcome folded
/// in, and returns the scores of `cases` (sorted by user, then turn) in the dataset's K
/// slots (−1e9 for an empty slot, as the Burn model pads).
pub fn replay(rt: &Runtime, data: &Dataset, cases: &[Case]) -> Vec<Vec<f64>> {
    let k = data.k;
    let mut out = vec![Vec::new(); cases.len()];
    let mut i = 0;
    while i < cases.len() {
        let user = cases[i].user;
        let u = &data.users[user];
        let last = cases[i..]
            .iter()
            .take_while(|c| c.user == user)
            .map(|c| c.turn)
            .max()
            .unwrap_or(0);
        let mut state = rt.zero_state();
        for t in 0..=last {
            let (turn, idx, labels) = turn_of(u, t, k, data.embedding_dim);
            let s = rt.step(&mut state, &turn, &labels);
            if i < cases.len() && cases[i].user == user && cases[i].turn == t {
                let mut row = vec![-1e9f64; k];
                for (j, v) in idx.iter().zip(s) {
                    row[*j] = v as f64;
                }
                out[i] = row;
                i += 1;
            }
        }
    }
    out
}
