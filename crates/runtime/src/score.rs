//! Scoring a turn's candidates from the state: the pointwise branch, then the temporal,
//! path and cross-attention terms, then greedy picks.

use super::inputs::masked;
use super::keyed::events;
use super::layers::sigmoid;
use super::pointwise::{Picking, Pointwise};
use crate::{Runtime, State, Turn};
use ssmkit_format::features::HOP_DIM;
use ssmkit_format::model::Inputs;
use ssmkit_format::simd::dot;

impl Runtime {
    /// Scores of the turn's candidates from `state` and their encoder inputs `enc`.
    pub(super) fn score_enc(&self, state: &State, turn: &Turn, enc: &[Vec<f32>]) -> Vec<f32> {
        // The pointwise branch's inputs and fc1 outputs (greedy picks read them again).
        let (mut scores, pointwise) = self.pointwise_scores(state, turn, enc);
        let query = Self::padded(&turn.query, self.config.content_dim);
        self.add_temporal(&mut scores, state, turn, enc, &query);
        self.add_path(&mut scores, turn);
        self.add_xattn(&mut scores, turn, &query);
        match pointwise {
            Some((mlp, inputs, pre)) => mlp.greedy(self.config.picks, &inputs, &pre, &scores),
            None => scores,
        }
    }

    /// The pointwise branch's scores (zeros without the branch, or with picks: those are
    /// scored after every other term, from what this returns beside them).
    fn pointwise_scores(
        &self,
        state: &State,
        turn: &Turn,
        enc: &[Vec<f32>],
    ) -> (Vec<f32>, Option<Picking<'_>>) {
        let Some(mlp) = &self.mlp else {
            return (vec![0.0; turn.candidates.len()], None);
        };
        let (inputs, pre) = self.pointwise_pre(mlp, state, turn, enc);
        if mlp.pick.is_some() {
            // Scored after every other term, pick by pick.
            (vec![0.0; turn.candidates.len()], Some((mlp, inputs, pre)))
        } else {
            (mlp.scores(&pre, None), None)
        }
    }

    /// The candidates' fc1 outputs, and (with picks, which read them again) their inputs
    /// to the pointwise branch.
    fn pointwise_pre(
        &self,
        mlp: &Pointwise,
        state: &State,
        turn: &Turn,
        enc: &[Vec<f32>],
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let relative = if enc.is_empty() {
            self.relative(turn)
        } else {
            Vec::new()
        };
        // Greedy picks read the inputs again: kept only for them.
        let mut inputs = Vec::new();
        let mut x = vec![0f32; self.config.pointwise_in()];
        let pre: Vec<Vec<f32>> = (0..turn.candidates.len())
            .map(|k| {
                let input = self.pointwise_input(state, turn, k, enc.get(k), &relative, &mut x);
                if mlp.pick.is_some() {
                    inputs.push(input.to_vec());
                }
                mlp.fc1.apply(input)
            })
            .collect();
        (inputs, pre)
    }

    /// Candidate `k`'s input to the pointwise branch, [features, missing, history,
    /// turn-relative] then its keyed or attention read: the head of its encoder inputs
    /// `e` where it has them, else built in `x`.
    fn pointwise_input<'a>(
        &self,
        state: &State,
        turn: &Turn,
        k: usize,
        e: Option<&'a Vec<f32>>,
        relative: &[f32],
        x: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        let c = &self.config;
        // The pointwise branch reads [features, missing, history, turn-relative]:
        // the encoder inputs start with them.
        let own = c.pointwise_in();
        let cand = &turn.candidates[k];
        match (e, &self.keyed) {
            // The keyed read follows the encoder's own inputs.
            (Some(e), Some(keyed)) => {
                x.clear();
                x.extend_from_slice(&e[..own - c.keyed_dim()]);
                match c.inputs {
                    Inputs::All => keyed.read(&events(&state.keyed, turn, cand), x),
                    Inputs::TemporalOnly => x.resize(own, 0.0),
                }
                x
            }
            (Some(e), None) => &e[..own],
            (None, _) => {
                self.own_input(state, turn, k, relative, x);
                x
            }
        }
    }

    /// Writes into `x` candidate `k`'s [features, missing, history, turn-relative] (models
    /// without an encoder), then the attention peer's read with them as its query.
    fn own_input(&self, state: &State, turn: &Turn, k: usize, relative: &[f32], x: &mut Vec<f32>) {
        let c = &self.config;
        let own = c.pointwise_in();
        let cand = &turn.candidates[k];
        x.clear();
        x.extend(masked(&cand.features, &cand.missing));
        x.extend_from_slice(&cand.missing);
        let now = turn.timestamp.unwrap_or(0);
        let id = cand.memory_id.unwrap_or(cand.memory_slot as u64);
        if c.history {
            x.extend_from_slice(&state.history.features(now, id));
        }
        x.extend_from_slice(Self::relative_row(relative, k));
        if let Some(a) = &self.attn {
            match c.inputs {
                Inputs::All => a.read(&events(&state.keyed, turn, cand), x),
                Inputs::TemporalOnly => x.resize(own, 0.0),
            }
        }
    }

    /// Adds the temporal term (temporal models): each candidate's encoding against a query
    /// projected from the state's last output, the turn's context, query and focal
    /// entities.
    fn add_temporal(
        &self,
        scores: &mut [f32],
        state: &State,
        turn: &Turn,
        enc: &[Vec<f32>],
        query: &[f32],
    ) {
        if !self.config.variant.is_temporal() {
            return;
        }
        let h = self.config.d_model;
        let last = &state.values[state.values.len() - h..];
        let mut qin = last.to_vec();
        qin.extend_from_slice(&turn.context);
        qin.extend_from_slice(query);
        qin.extend(self.focal(turn));
        let q = self
            .query_proj
            .as_ref()
            .expect("temporal model")
            .apply(&qin);
        let scale = (h as f32).sqrt();
        // (W x + b)·q = x·(Wᵀq) + b·q
        let v = self.cand_enc_t.as_ref().expect("temporal model").apply(&q);
        let bq = self
            .cand_enc
            .as_ref()
            .and_then(|d| d.b.as_deref())
            .map_or(0.0, |b| dot(b, &q));
        for (s, x) in scores.iter_mut().zip(enc) {
            *s += (dot(x, &v) + bq) / scale;
        }
    }

    /// Adds the gated path term (models with a path encoder): each candidate's traversal
    /// path run through the path's S4D, hop by hop.
    fn add_path(&self, scores: &mut [f32], turn: &Turn) {
        let Some(p) = &self.path else {
            return;
        };
        let gate = sigmoid(p.gate);
        for (s, cand) in scores.iter_mut().zip(&turn.candidates) {
            let mut st = vec![0f32; p.s4d.state_len()];
            let n = cand.hops.len().max(1);
            let mut y = vec![0f32; p.s4d.h];
            for i in 0..n {
                let hop = cand.hops.get(i).copied().unwrap_or([0.0; HOP_DIM]);
                y = p.s4d.step(&p.hop_in.apply(&hop), &mut st);
            }
            *s += p.out.apply(&y)[0] * gate;
        }
    }

    /// Adds the cross-attention scorer's term (the xattn variant): query · candidate
    /// similarity under a gate, plus a value, both read from the candidate's side inputs.
    fn add_xattn(&self, scores: &mut [f32], turn: &Turn, query: &[f32]) {
        let Some(xa) = &self.xattn else {
            return;
        };
        let c = &self.config;
        let project = self.focal(turn);
        let mut qin = query.to_vec();
        qin.extend_from_slice(&project);
        let q = xa.q_norm.apply(&xa.q_proj.apply(&qin));
        let scale = (c.d_attn as f32).sqrt();
        let relative = self.relative(turn);
        for (i, (s, cand)) in scores.iter_mut().zip(&turn.candidates).enumerate() {
            let mut side: Vec<f32> = masked(&cand.features, &cand.missing).collect();
            side.extend_from_slice(&cand.missing);
            side.extend_from_slice(Self::relative_row(&relative, i));
            side.extend_from_slice(Self::slot_row(
                &self.memory_emb,
                c.d_slot,
                cand.memory_slot as usize % c.memory_slots.max(1),
            ));
            let mut kin = Self::padded(&cand.content, c.content_dim);
            kin.extend_from_slice(&side);
            let key = xa.k_norm.apply(&xa.k_proj.apply(&kin));
            side.extend_from_slice(&project);
            let sim = dot(&key, &q) / scale;
            *s += sim * sigmoid(xa.gate.apply(&side)[0]) + xa.value.apply(&side)[0];
        }
    }
}
