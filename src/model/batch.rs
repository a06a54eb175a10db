//! Turning loaded user sequences into padded tensor batches. The split that keeps
//! validation and test labels out of training is the dataset's ([`crate::data::split`]).

use burn::prelude::*;

use crate::data::{CONTEXT_DIM, Dataset, HOP_DIM, UserSeq};
use crate::features::{FEATURE_DIM, MAX_HOPS};
use crate::history::HISTORY_DIM;
use crate::keyed::{EVENT_DIM, EVENTS};
use crate::model::scorer::{Batch, ModelConfig};
use crate::relative::{RELATIVE_DIM, turn_features as relative_features};

pub use crate::data::split::{Cutoffs, RandomSplit, cutoffs, percentile_timestamp, turns_before};

/// Pads `users`' first `lens[i]` turns into a batch. Labels of every included turn are
/// visible to the model's state for later turns, so callers pass only turns whose labels
/// may be seen, plus (for scoring) the turns to score.
pub fn make_batch(
    data: &Dataset,
    users: &[&UserSeq],
    lens: &[usize],
    cfg: &ModelConfig,
    device: &Device,
) -> Batch {
    batch_of(data, users, lens, cfg, cfg.reads_events(), device)
}

/// [`make_batch`], with the keyed events only when `events`.
fn batch_of(
    data: &Dataset,
    users: &[&UserSeq],
    lens: &[usize],
    cfg: &ModelConfig,
    events: bool,
    device: &Device,
) -> Batch {
    let (entity_slots, memory_slots) = (cfg.entity_slots, cfg.memory_slots.max(1));
    let b = users.len();
    let t = lens.iter().copied().max().unwrap_or(1).max(1);
    let k = data.k;
    let e = data.embedding_dim;
    let mut context = vec![0f32; b * t * CONTEXT_DIM];
    let mut query = vec![0f32; b * t * e];
    let mut focal = vec![entity_slots as i32; b * t * 2];
    let mut features = vec![0f32; b * t * k * FEATURE_DIM];
    let mut missing = vec![1f32; b * t * k * FEATURE_DIM];
    let mut labels = vec![0f32; b * t * k];
    let mut valid = vec![0f32; b * t * k];
    let mut turn_mask = vec![0f32; b * t];
    let mut memory_slot = vec![0i32; b * t * k];
    let mut entity = vec![entity_slots as i32; b * t * k];
    let mut content = vec![0f32; b * t * k * e];
    let mut hops = vec![0f32; b * t * k * MAX_HOPS * HOP_DIM];
    let mut hop_count = vec![1i32; b * t * k];
    let mut history = vec![0f32; b * t * k * HISTORY_DIM];
    let mut relative = vec![0f32; b * t * k * RELATIVE_DIM];
    // A model without a keyed state gets one empty event place.
    let places = if events { EVENTS } else { 1 };
    let mut keyed_events = vec![0f32; b * t * k * places * EVENT_DIM];
    let mut keyed_days = vec![0f32; b * t * k * places];
    for (i, (u, &len)) in users.iter().zip(lens).enumerate() {
        let len = len.min(u.turns);
        let tk = len * k;
        let at = |per: usize| (i * t * per, i * t * per + len * per);
        let (s, e_) = at(CONTEXT_DIM);
        context[s..e_].copy_from_slice(&u.context[..len * CONTEXT_DIM]);
        let (s, e_) = at(e);
        query[s..e_].copy_from_slice(&u.query[..len * e]);
        for j in 0..len * 2 {
            let f = u.focal[j];
            focal[i * t * 2 + j] = if f < 0 {
                entity_slots as i32
            } else {
                (f as usize % entity_slots) as i32
            };
        }
        let (s, e_) = at(k * FEATURE_DIM);
        features[s..e_].copy_from_slice(&u.features[..tk * FEATURE_DIM]);
        missing[s..e_].copy_from_slice(&u.missing[..tk * FEATURE_DIM]);
        let (s, e_) = at(k);
        labels[s..e_].copy_from_slice(&u.labels[..tk]);
        valid[s..e_].copy_from_slice(&u.valid[..tk]);
        for j in 0..tk {
            memory_slot[s + j] = (u.memory_slot[j] as usize % memory_slots) as i32;
            entity[s + j] = (u.entity[j] as usize % entity_slots) as i32;
            hop_count[s + j] = u.hop_count.get(j).map_or(1, |&n| (n as i32).max(1));
        }
        let (s, e_) = at(k * e);
        content[s..e_].copy_from_slice(&u.content[..tk * e]);
        let (s, e_) = at(k * MAX_HOPS * HOP_DIM);
        if !u.hops.is_empty() {
            hops[s..e_].copy_from_slice(&u.hops[..tk * MAX_HOPS * HOP_DIM]);
        }
        if cfg.history {
            let (s, e_) = at(k * HISTORY_DIM);
            history[s..e_].copy_from_slice(&u.history_features(k)[..tk * HISTORY_DIM]);
        }
        if cfg.relative {
            for tt in 0..len {
                let (f, v) = (tt * k * FEATURE_DIM, tt * k);
                let r =
                    relative_features(&u.features[f..f + k * FEATURE_DIM], &u.valid[v..v + k], k);
                let at = (i * t + tt) * k * RELATIVE_DIM;
                relative[at..at + k * RELATIVE_DIM].copy_from_slice(&r);
            }
        }
        if events {
            let (ev, days) = u.keyed_reads(k, len);
            let (s, e_) = at(k * EVENTS * EVENT_DIM);
            keyed_events[s..e_].copy_from_slice(&ev);
            let (s, e_) = at(k * EVENTS);
            keyed_days[s..e_].copy_from_slice(&days);
        }
        turn_mask[i * t..i * t + len].fill(1.0);
    }
    let f = |v: Vec<f32>, shape: &[usize]| TensorData::new(v, shape.to_vec());
    let i = |v: Vec<i32>, shape: &[usize]| TensorData::new(v, shape.to_vec());
    Batch {
        context: Tensor::from_data(f(context, &[b, t, CONTEXT_DIM]), device),
        query: Tensor::from_data(f(query, &[b, t, e]), device),
        focal: Tensor::from_data(i(focal, &[b, t, 2]), device),
        features: Tensor::from_data(f(features, &[b, t, k, FEATURE_DIM]), device),
        missing: Tensor::from_data(f(missing, &[b, t, k, FEATURE_DIM]), device),
        labels: Tensor::from_data(f(labels, &[b, t, k]), device),
        valid: Tensor::from_data(f(valid, &[b, t, k]), device),
        turn_mask: Tensor::from_data(f(turn_mask, &[b, t]), device),
        memory_slot: Tensor::from_data(i(memory_slot, &[b, t, k]), device),
        entity: Tensor::from_data(i(entity, &[b, t, k]), device),
        content: Tensor::from_data(f(content, &[b, t, k, e]), device),
        hops: Tensor::from_data(f(hops, &[b, t, k, MAX_HOPS, HOP_DIM]), device),
        hop_count: Tensor::from_data(i(hop_count, &[b, t, k]), device),
        history: Tensor::from_data(f(history, &[b, t, k, HISTORY_DIM]), device),
        relative: Tensor::from_data(f(relative, &[b, t, k, RELATIVE_DIM]), device),
        keyed_events: Tensor::from_data(f(keyed_events, &[b, t, k, places, EVENT_DIM]), device),
        keyed_days: Tensor::from_data(f(keyed_days, &[b, t, k, places]), device),
        keyed_read: None,
    }
}

/// The batches [`crate::model::scorer::Scorer::forward_at`] scores chosen turns of
/// `users` from: the sequences through `lens` (without keyed events: only the chosen
/// turns read them) and one row per chosen turn `at[r]` = (user, turn), cut with what
/// its whole prefix says.
pub fn chosen_turns(
    data: &Dataset,
    users: &[&UserSeq],
    lens: &[usize],
    at: &[(usize, usize)],
    cfg: &ModelConfig,
    device: &Device,
) -> (Batch, Batch) {
    let full = batch_of(data, users, lens, cfg, false, device);
    let (k, e) = (data.k, data.embedding_dim);
    // What each user's prefix says, computed once per user rather than once per turn.
    let prefix = Prefix::of(cfg);
    // Per user: history features, keyed events and their ages, of its first `lens` turns.
    type Said = (Vec<f32>, Vec<f32>, Vec<f32>);
    let mut said: Vec<Option<Said>> = vec![None; users.len()];
    let cut: Vec<UserSeq> = at
        .iter()
        .map(|&(u, t)| {
            let (history, events, days) = said[u].get_or_insert_with(|| {
                let seq = users[u];
                let n = lens[u].min(seq.turns);
                let history = if prefix.history {
                    seq.history_features(k)[..n * k * HISTORY_DIM].to_vec()
                } else {
                    Vec::new()
                };
                let (events, days) = if prefix.keyed {
                    let (ev, d) = seq.keyed_reads(k, n);
                    (ev.into_owned(), d.into_owned())
                } else {
                    (Vec::new(), Vec::new())
                };
                (history, events, days)
            });
            let part = |v: &[f32], per: usize| {
                if v.is_empty() {
                    Vec::new()
                } else {
                    v[t * per..(t + 1) * per].to_vec()
                }
            };
            UserSeq {
                history: part(history, k * HISTORY_DIM),
                keyed_events: part(events, k * EVENTS * EVENT_DIM),
                keyed_days: part(days, k * EVENTS),
                ..slice_user(users[u], t, 1, k, e, Prefix::NONE)
            }
        })
        .collect();
    let refs: Vec<&UserSeq> = cut.iter().collect();
    let turns = make_batch(data, &refs, &vec![1; cut.len()], cfg, device);
    (full, turns)
}

/// What a window cut from a longer sequence carries of the turns before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefix {
    /// The history features of its turns ([`crate::history`]).
    pub history: bool,
    /// The keyed reads of its turns ([`crate::keyed`]).
    pub keyed: bool,
}

impl Prefix {
    /// Nothing: for a window that starts at the user's first turn.
    pub const NONE: Prefix = Prefix {
        history: false,
        keyed: false,
    };

    /// What `cfg` reads.
    pub fn of(cfg: &ModelConfig) -> Prefix {
        Prefix {
            history: cfg.history,
            keyed: cfg.reads_events(),
        }
    }
}

/// A window of `len` turns of `u` starting at `start`, carrying what `prefix` asks of
/// all of `u`'s turns before them.
pub fn slice_user(
    u: &UserSeq,
    start: usize,
    len: usize,
    k: usize,
    e: usize,
    prefix: Prefix,
) -> UserSeq {
    use crate::data::{CONTEXT_DIM, HOP_DIM};
    use crate::features::{FEATURE_DIM, MAX_HOPS};
    use crate::history::{HISTORY_DIM, sequence_features};
    let r = |per: usize| start * per..(start + len) * per;
    let (keyed_events, keyed_days) = if prefix.keyed && len > 0 {
        crate::keyed::sequence_reads(&u.keyed_sequence(k), start, start + len)
    } else {
        (Vec::new(), Vec::new())
    };
    let history = if prefix.history && len > 0 {
        let end = start + len;
        sequence_features(
            &u.timestamp[..end],
            &u.valid[..end * k],
            &u.labels[..end * k],
            &u.memory_id[..end * k],
            k,
        )[r(k * HISTORY_DIM)]
        .to_vec()
    } else {
        Vec::new()
    };
    UserSeq {
        history,
        keyed_events,
        keyed_days,
        user_id: u.user_id,
        stage: u.stage,
        turns: len,
        timestamp: u.timestamp[r(1)].to_vec(),
        session: u.session[r(1)].to_vec(),
        context: u.context[r(CONTEXT_DIM)].to_vec(),
        query: u.query[r(e)].to_vec(),
        focal: u.focal[r(2)].to_vec(),
        features: u.features[r(k * FEATURE_DIM)].to_vec(),
        clean_features: if u.clean_features.is_empty() {
            Vec::new()
        } else {
            u.clean_features[r(k * FEATURE_DIM)].to_vec()
        },
        missing: u.missing[r(k * FEATURE_DIM)].to_vec(),
        valid: u.valid[r(k)].to_vec(),
        labels: u.labels[r(k)].to_vec(),
        relevance: u.relevance[r(k)].to_vec(),
        memory_slot: u.memory_slot[r(k)].to_vec(),
        memory_id: u.memory_id[r(k)].to_vec(),
        entity: u.entity[r(k)].to_vec(),
        canary: u.canary[r(k)].to_vec(),
        role: u.role[r(k)].to_vec(),
        hard_negative: u.hard_negative[r(k)].to_vec(),
        selectors: u.selectors,
        cycle_peak: u.cycle_peak,
        content: u.content[r(k * e)].to_vec(),
        hops: if u.hops.is_empty() {
            Vec::new()
        } else {
            u.hops[r(k * MAX_HOPS * HOP_DIM)].to_vec()
        },
        hop_count: if u.hop_count.is_empty() {
            Vec::new()
        } else {
            u.hop_count[r(k)].to_vec()
        },
        name: if u.name.is_empty() {
            Vec::new()
        } else {
            u.name[r(1)].to_vec()
        },
    }
}
