//! A turn as the model reads it: the check of its shape, the `temporal_only`
//! restriction, the candidates' encoder inputs, the turn-relative features and the
//! embedding rows.

use crate::{Error, Result, Runtime, State, Turn};
use ssmkit_format::features::{FEATURE_DIM, MAX_HOPS, feat};
use ssmkit_format::model::Inputs;
use ssmkit_format::relative::RELATIVE_DIM;

impl Runtime {
    /// Checks a turn's shape against the model; a clear error names the problem.
    pub fn check(&self, turn: &Turn) -> Result<()> {
        let e = self.config.content_dim;
        if self.config.history || self.config.reads_events() {
            if turn.timestamp.is_none() {
                return Err(Error::Turn(
                    "the turn has no timestamp: this model reads the user's history by time".into(),
                ));
            }
            if let Some(i) = turn.candidates.iter().position(|c| c.memory_id.is_none()) {
                return Err(Error::Turn(format!(
                    "candidate {i} has no memory_id: this model keys the user's history by it"
                )));
            }
        }
        // A model that reads no content takes any width (and ignores it).
        let e_read = |len: usize| len == 0 || len == e || !self.config.reads_content();
        if !e_read(turn.query.len()) {
            return Err(Error::Turn(format!(
                "query has {} values, the model reads {e}",
                turn.query.len()
            )));
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite(&turn.context) || !finite(&turn.query) {
            return Err(Error::Turn(
                "the turn's context or query holds a NaN or infinite value".into(),
            ));
        }
        for (i, c) in turn.candidates.iter().enumerate() {
            if !finite(&c.content) || !c.hops.iter().all(|h| finite(h)) {
                return Err(Error::Turn(format!(
                    "candidate {i}: its content or path holds a NaN or infinite value"
                )));
            }
            if !e_read(c.content.len()) {
                return Err(Error::Turn(format!(
                    "candidate {i}: content has {} values, the model reads {e}",
                    c.content.len()
                )));
            }
            if c.hops.len() > MAX_HOPS {
                return Err(Error::Turn(format!(
                    "candidate {i}: {} hops, at most {MAX_HOPS}",
                    c.hops.len()
                )));
            }
            if c.features.iter().any(|x| !x.is_finite()) {
                return Err(Error::Turn(format!(
                    "candidate {i}: a feature is NaN or infinite"
                )));
            }
        }
        Ok(())
    }

    /// Row `row` of an embedding table `width` values wide.
    pub(super) fn slot_row(table: &[f32], width: usize, row: usize) -> &[f32] {
        &table[row * width..(row + 1) * width]
    }

    /// Entity `e`'s embedding (a negative `e`: the "none" row).
    pub(super) fn entity_row(&self, e: i64) -> &[f32] {
        let c = &self.config;
        let row = if e < 0 {
            c.entity_slots
        } else {
            e as usize % c.entity_slots
        };
        Self::slot_row(&self.entity_emb, c.d_slot, row)
    }

    /// The mean of the turn's two focal entities' embeddings.
    pub(super) fn focal(&self, turn: &Turn) -> Vec<f32> {
        let a = self.entity_row(turn.focal[0] as i64);
        let b = self.entity_row(turn.focal[1] as i64);
        a.iter().zip(b).map(|(x, y)| (x + y) / 2.0).collect()
    }

    /// `v` cut or padded with zeros to `len` values.
    pub(super) fn padded(v: &[f32], len: usize) -> Vec<f32> {
        let mut out = vec![0.0; len];
        let n = v.len().min(len);
        out[..n].copy_from_slice(&v[..n]);
        out
    }

    /// The turn-relative features `[K][RELATIVE_DIM]` of the turn's candidates (empty for a
    /// model without them).
    pub(super) fn relative(&self, turn: &Turn) -> Vec<f32> {
        if !self.config.relative {
            return Vec::new();
        }
        let n = turn.candidates.len();
        let features: Vec<f32> = turn
            .candidates
            .iter()
            .flat_map(|c| masked(&c.features, &c.missing))
            .collect();
        ssmkit_format::relative::turn_features(&features, &vec![1.0; n], n)
    }

    /// Candidate `i`'s row of [`Self::relative`] (empty when there are none).
    pub(super) fn relative_row(relative: &[f32], i: usize) -> &[f32] {
        relative
            .get(i * RELATIVE_DIM..(i + 1) * RELATIVE_DIM)
            .unwrap_or(&[])
    }

    /// The candidates' encoder inputs `[K][cand_in]` (temporal models; empty otherwise).
    pub(super) fn encodings(&self, state: &State, turn: &Turn) -> Vec<Vec<f32>> {
        let c = &self.config;
        let Some(enc) = &self.cand_enc else {
            return Vec::new();
        };
        let now = turn.timestamp.unwrap_or(0);
        let relative = self.relative(turn);
        turn.candidates
            .iter()
            .enumerate()
            .map(|(i, cand)| {
                let mut x = Vec::with_capacity(enc.d_in);
                x.extend(masked(&cand.features, &cand.missing));
                x.extend_from_slice(&cand.missing);
                if c.history {
                    let id = cand.memory_id.unwrap_or(cand.memory_slot as u64);
                    x.extend_from_slice(&state.history.features(now, id));
                }
                x.extend_from_slice(Self::relative_row(&relative, i));
                x.extend_from_slice(Self::slot_row(
                    &self.memory_emb,
                    c.d_slot,
                    cand.memory_slot as usize % c.memory_slots.max(1),
                ));
                let entity = match c.inputs {
                    Inputs::All => cand.entity as i64,
                    Inputs::TemporalOnly => -1,
                };
                x.extend_from_slice(self.entity_row(entity));
                if cand.content.len() == c.content_dim {
                    x.extend_from_slice(&cand.content);
                } else {
                    x.extend(Self::padded(&cand.content, c.content_dim));
                }
                x
            })
            .collect()
    }

    /// The turn as the model reads it: with `temporal_only` inputs, everything but the
    /// context, the time features and the history reads as absent (as the Burn model's
    /// `Scorer::restricted`; candidates' entities are read as "none" in [`Self::encodings`]).
    pub(super) fn restricted<'a>(&self, turn: &'a Turn) -> std::borrow::Cow<'a, Turn> {
        if self.config.inputs != Inputs::TemporalOnly {
            return std::borrow::Cow::Borrowed(turn);
        }
        let mut t = turn.clone();
        t.query.clear();
        t.focal = [-1, -1];
        for c in &mut t.candidates {
            for d in 0..FEATURE_DIM {
                if !feat::TEMPORAL.contains(&d) {
                    c.features[d] = 0.0;
                    c.missing[d] = 0.0;
                }
            }
            c.memory_slot = 0;
            c.content.clear();
            c.hops.clear();
        }
        std::borrow::Cow::Owned(t)
    }
}

/// The candidate's observed `log_age` (0 where it is missing), what its keyed events
/// record of it and what it reads them against.
pub(super) fn log_age(c: &crate::Candidate) -> f32 {
    if c.missing[feat::LOG_AGE] == 1.0 {
        0.0
    } else {
        c.features[feat::LOG_AGE]
    }
}

/// Features with missing values zeroed (as the dataset loader stores them).
pub(super) fn masked<'a>(
    f: &'a [f32; FEATURE_DIM],
    m: &'a [f32; FEATURE_DIM],
) -> impl Iterator<Item = f32> + 'a {
    f.iter()
        .zip(m)
        .map(|(x, m)| if *m == 1.0 { 0.0 } else { *x })
}
