//! Building users from rows of the four tables.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use super::table::{Part, f32s, i32s, i64s, u8s, u16s, u32s};
use super::{CONTEXT_NAMES, Columns, Dataset, HOP_DIM, UserSeq, bad};
use crate::error::Result;
use crate::features::{FEATURE_DIM, FEATURE_NAMES, MAX_HOPS, clean_column};

/// Builds the users of `parts` (rows of the four tables, whole users) into a dataset
/// like `outline`; rows must come in (user, turn, candidate) order.
pub(super) fn assemble(outline: &Dataset, parts: [Part; 4], columns: Columns) -> Result<Dataset> {
    let clean = columns.clean;
    let (path, k, embedding_dim) = (&outline.path, outline.k, outline.embedding_dim);
    let [turns, cands, mems, paths] = parts;
    // Turns.
    let t_user = u32s(&turns, "user_id")?;
    let t_index = u32s(&turns, "turn_index")?;
    let t_stage = u8s(&turns, "stage")?;
    let t_ts = i64s(&turns, "timestamp")?;
    let t_session = u32s(&turns, "session_index")?;
    let context: Vec<Vec<f32>> = CONTEXT_NAMES
        .iter()
        .map(|n| f32s(&turns, n))
        .collect::<Result<_>>()?;
    let query: Vec<Vec<f32>> = (0..embedding_dim)
        .map(|d| f32s(&turns, &format!("query_{d}")))
        .collect::<Result<_>>()?;
    let f0 = i32s(&turns, "focal_0")?;
    let f1 = i32s(&turns, "focal_1")?;
    // Turn names: optional (datasets without them have no column).
    let mut names: Vec<String> = Vec::new();
    let name_index: Option<Vec<u32>> = match turns.df.column("name") {
        Err(_) => None,
        Ok(c) => {
            let ca = c.str().map_err(|_| {
                bad(
                    &turns.file,
                    format!("column `name` has type {}, expected text", c.dtype()),
                )
            })?;
            let mut seen: HashMap<String, u32> = HashMap::new();
            let mut out = Vec::with_capacity(ca.len());
            for v in ca.iter() {
                let v = v.unwrap_or("");
                let i = match seen.get(v) {
                    Some(&i) => i,
                    None => {
                        names.push(v.to_string());
                        seen.insert(v.to_string(), names.len() as u32 - 1);
                        names.len() as u32 - 1
                    }
                };
                out.push(i);
            }
            Some(out)
        }
    };
    let selectors: Vec<Vec<i32>> = crate::canary::Selector::ALL
        .iter()
        .map(|s| i32s(&turns, s.column()))
        .collect::<Result<_>>()?;
    // The cycle's per-user peak (datasets written before it was drawn per user lack it).
    let cycle_peak: Option<Vec<f32>> = match turns.df.column("cycle_peak") {
        Err(_) => None,
        Ok(_) => Some(f32s(&turns, "cycle_peak")?),
    };

    // Candidates.
    let c_user = u32s(&cands, "user_id")?;
    let c_turn = u32s(&cands, "turn_index")?;
    let c_index = u8s(&cands, "cand_index")?;
    let feats: Vec<Vec<f32>> = FEATURE_NAMES
        .iter()
        .map(|n| f32s(&cands, n))
        .collect::<Result<_>>()?;
    let clean_feats: Vec<Vec<f32>> = if clean {
        FEATURE_NAMES
            .iter()
            .map(|n| f32s(&cands, &clean_column(n)))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let mask = u32s(&cands, "mask")?;
    let label = u8s(&cands, "label")?;
    if let Some(r) = label.iter().position(|&l| l > 1) {
        return Err(bad(
            &cands.file,
            format!(
                "column `label` row {} is {}: labels are 0 or 1",
                cands.base + r,
                label[r]
            ),
        ));
    }
    let relevance = f32s(&cands, "relevance")?;
    let memory_slot = u32s(&cands, "memory_slot")?;
    if let Some(slots) = outline.manifest["config"]["world"]["memory_slots"].as_u64()
        && let Some(r) = memory_slot.iter().position(|&m| m as u64 >= slots)
    {
        return Err(bad(
            &cands.file,
            format!(
                "column `memory_slot` row {} is {}, outside the manifest's {slots} memory slots",
                cands.base + r,
                memory_slot[r]
            ),
        ));
    }
    let memory_id = u32s(&cands, "memory_id")?;
    let entity = u32s(&cands, "entity_id")?;
    let canary = u16s(&cands, "canary")?;
    let role = u8s(&cands, "canary_role")?;
    if let Some(r) = role
        .iter()
        .position(|&c| crate::canary::Role::from_code(c).is_none())
    {
        return Err(bad(
            path,
            format!(
                "candidate row {}: unknown canary_role {}",
                cands.base + r,
                role[r]
            ),
        ));
    }
    let hard = u8s(&cands, "hard_negative")?;
    let path_id = u32s(&cands, "path_id")?;

    // Memory embeddings (a row of `emb` per (user, memory id)) and path hops (the rows
    // of `hop_order[start..start + len]` per (user, path id), in file order).
    let mut content: FxHashMap<(u32, u32), usize> = FxHashMap::default();
    let mut emb: Vec<Vec<f32>> = Vec::new();
    if embedding_dim > 0 {
        let mu = u32s(&mems, "user_id")?;
        let mi = u32s(&mems, "memory_id")?;
        emb = (0..embedding_dim)
            .map(|d| f32s(&mems, &format!("embedding_{d}")))
            .collect::<Result<_>>()?;
        for r in 0..mu.len() {
            content.insert((mu[r], mi[r]), r);
        }
    }
    let pu = u32s(&paths, "user_id")?;
    let pi = u32s(&paths, "path_id")?;
    let hop_columns: [Vec<f32>; HOP_DIM] = [
        u8s(&paths, "hop_type")?
            .into_iter()
            .map(f32::from)
            .collect(),
        f32s(&paths, "edge_confidence")?,
        f32s(&paths, "aspect_weight")?,
        u8s(&paths, "community_crossing")?
            .into_iter()
            .map(f32::from)
            .collect(),
        f32s(&paths, "dependency_strength")?,
    ];
    // Hops of a path come together in generated data; any other order is sorted (stable,
    // so each path keeps its hops' order).
    let mut hop_order: Vec<usize> = (0..pu.len()).collect();
    if pu
        .windows(2)
        .zip(pi.windows(2))
        .any(|(u, p)| (u[0], p[0]) > (u[1], p[1]))
    {
        hop_order.sort_by_key(|&r| (pu[r], pi[r]));
    }
    let mut hop_rows: FxHashMap<(u32, u32), (usize, usize)> = FxHashMap::default();
    for (i, &r) in hop_order.iter().enumerate() {
        hop_rows.entry((pu[r], pi[r])).or_insert((i, 0)).1 += 1;
    }

    // Assemble users; rows must come in (user, turn, candidate) order.
    let mut users: Vec<UserSeq> = Vec::new();
    let mut turn_of: FxHashMap<(u32, u32), (usize, usize)> = FxHashMap::default();
    for r in 0..t_user.len() {
        if users.last().is_none_or(|u| u.user_id != t_user[r]) {
            users.push(UserSeq {
                user_id: t_user[r],
                stage: t_stage[r],
                selectors: std::array::from_fn(|i| selectors[i][r]),
                cycle_peak: cycle_peak.as_ref().map_or(-1.0, |c| c[r] as f64),
                ..Default::default()
            });
        }
        let ui = users.len() - 1;
        let u = &mut users[ui];
        if t_index[r] as usize != u.turns {
            return Err(bad(
                path,
                format!("turns of user {} are not in order at row {r}", t_user[r]),
            ));
        }
        turn_of.insert((t_user[r], t_index[r]), (ui, u.turns));
        u.turns += 1;
        u.timestamp.push(t_ts[r]);
        u.session.push(t_session[r]);
        for c in &context {
            u.context.push(c[r]);
        }
        for q in &query {
            u.query.push(q[r]);
        }
        u.focal.extend([f0[r], f1[r]]);
        if let Some(n) = &name_index {
            u.name.push(n[r]);
        }
    }
    for u in &mut users {
        let t = u.turns;
        u.features = vec![0.0; t * k * FEATURE_DIM];
        if clean {
            u.clean_features = vec![0.0; t * k * FEATURE_DIM];
        }
        u.missing = vec![1.0; t * k * FEATURE_DIM];
        u.valid = vec![0.0; t * k];
        u.labels = vec![0.0; t * k];
        u.relevance = vec![0.0; t * k];
        u.memory_slot = vec![0; t * k];
        u.memory_id = vec![0; t * k];
        u.entity = vec![0; t * k];
        u.canary = vec![0; t * k];
        u.role = vec![0; t * k];
        u.hard_negative = vec![0; t * k];
        u.content = vec![0.0; t * k * embedding_dim];
        if columns.hops {
            u.hops = vec![0.0; t * k * MAX_HOPS * HOP_DIM];
            u.hop_count = vec![0; t * k];
        }
    }
    let mut last: Option<((u32, u32), (usize, usize))> = None;
    for r in 0..c_user.len() {
        let key = (c_user[r], c_turn[r]);
        let found = match last {
            Some((k, at)) if k == key => Some(at),
            _ => turn_of.get(&key).copied(),
        };
        let Some((ui, ti)) = found else {
            return Err(bad(
                path,
                format!(
                    "candidate row {} refers to a turn that does not exist",
                    cands.base + r
                ),
            ));
        };
        let ci = c_index[r] as usize;
        if ci >= k {
            return Err(bad(
                path,
                format!(
                    "candidate row {} has index {ci}, but k = {k}",
                    cands.base + r
                ),
            ));
        }
        last = Some((key, (ui, ti)));
        let u = &mut users[ui];
        let slot = ti * k + ci;
        if u.valid[slot] == 1.0 {
            return Err(bad(
                path,
                format!(
                    "candidate row {} repeats candidate {ci} of user {} turn {ti}",
                    cands.base + r,
                    c_user[r]
                ),
            ));
        }
        u.valid[slot] = 1.0;
        for (d, column) in feats.iter().enumerate() {
            let x = column[r];
            if !x.is_finite() {
                return Err(bad(
                    path,
                    format!(
                        "candidate row {}: feature {} is {x}; NaN and infinite features are refused",
                        cands.base + r,
                        FEATURE_NAMES[d]
                    ),
                ));
            }
            if mask[r] >> d & 1 == 0 {
                u.features[slot * FEATURE_DIM + d] = x;
                u.missing[slot * FEATURE_DIM + d] = 0.0;
                if clean {
                    u.clean_features[slot * FEATURE_DIM + d] = clean_feats[d][r];
                }
            }
        }
        u.labels[slot] = label[r] as f32;
        u.relevance[slot] = relevance[r];
        u.memory_slot[slot] = memory_slot[r];
        u.memory_id[slot] = memory_id[r];
        u.entity[slot] = entity[r];
        u.canary[slot] = canary[r];
        u.role[slot] = role[r];
        u.hard_negative[slot] = hard[r];
        if let Some(&m) = content.get(&(c_user[r], memory_id[r])) {
            for (d, column) in emb.iter().enumerate() {
                u.content[slot * embedding_dim + d] = column[m];
            }
        }
        if columns.hops
            && let Some(&(start, len)) = hop_rows.get(&(c_user[r], path_id[r]))
        {
            let n = len.min(MAX_HOPS);
            u.hop_count[slot] = n as u8;
            for (h, &row) in hop_order[start..start + n].iter().enumerate() {
                let at = (slot * MAX_HOPS + h) * HOP_DIM;
                for (d, column) in hop_columns.iter().enumerate() {
                    u.hops[at + d] = column[row];
                }
            }
        }
    }
    for u in &users {
        for t in 0..u.turns {
            if u.valid[t * k..(t + 1) * k].iter().all(|&v| v == 0.0) {
                return Err(bad(
                    path,
                    format!("user {} turn {t} has no candidate", u.user_id),
                ));
            }
        }
    }
    Ok(Dataset {
        path: path.to_path_buf(),
        manifest: outline.manifest.clone(),
        k,
        embedding_dim,
        users,
        names,
    })
}
