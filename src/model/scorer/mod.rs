//! The scorer: a temporal backbone (Mamba or S4D blocks) over the user's turns, read
//! *before* each turn's labels are seen, times an encoding of each candidate, plus a
//! parallel pointwise MLP branch on the candidate's own features (the seed's fix for the
//! PoC's importance_threshold failure). The `dual` variant adds an S4D encoder of each
//! candidate's traversal path, combined through a learned gate.
//!
//! Token fed to the backbone at turn t (after its labels): the turn context, the query
//! embedding, the focal entities' embedding and the mean encoding of the candidates
//! labelled relevant (the feedback). Turn t is scored from the backbone output at t − 1.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};

use super::keyed::{EventAttention, KeyedState};
use super::mamba::{MambaBlock, MambaState, ScanImpl};
use super::s4d::{S4dBlock, S4dState};
use crate::features::{FEATURE_DIM, MAX_HOPS};
use crate::relative::RELATIVE_DIM;
pub use ssmkit_format::model::{Inputs, MODEL_MEMORY_SLOTS, ModelConfig, Size, Variant};

mod init;
pub use init::{Init, linear_init};

/// The dual variant's traversal-path encoder.
#[derive(Module, Debug)]
pub struct PathEncoder {
    pub hop_in: Linear,
    pub s4d: S4dBlock,
    pub out: Linear,
    /// Gate logit: the path score enters the candidate score times sigmoid(gate).
    pub gate: Param<Tensor<1>>,
}

/// The production cross-attention scorer, rebuilt from its public description: the query
/// (the turn's query embedding and its project, here the focal entities) and each
/// candidate (content, features, memory slot) are down-projected and layer-normed; the
/// score is the scaled similarity q·k/√d, weighted by a learned gate, plus a learned value,
/// both read from [candidate features, candidate slot, project embedding] with a bias.
#[derive(Module, Debug)]
pub struct CrossAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub q_norm: LayerNorm,
    pub k_norm: LayerNorm,
    pub gate: Linear,
    pub value: Linear,
}

#[derive(Module, Debug)]
pub struct Scorer {
    pub memory_emb: Embedding,
    pub entity_emb: Embedding,
    pub cand_enc: Option<Linear>,
    pub turn_in: Option<Linear>,
    pub query_proj: Option<Linear>,
    pub mamba: Vec<MambaBlock>,
    pub s4d: Vec<S4dBlock>,
    pub norm: Option<RmsNorm>,
    pub mlp_in: Option<Linear>,
    pub mlp_out: Option<Linear>,
    /// With `set_encoder`: [own hidden units, their shortfall from the turn's largest] →
    /// hidden units, between `mlp_in` and `mlp_out`.
    pub mlp_set: Option<Linear>,
    /// With `mlp_layers = 2`: a second hidden layer (and ReLU) before `mlp_out`.
    pub mlp_mid: Option<Linear>,
    /// With `picks`: the sum of the pointwise inputs of the candidates already picked this
    /// turn → hidden units, added before the first ReLU (no bias: no picks add nothing).
    pub mlp_pick: Option<Linear>,
    pub path: Option<PathEncoder>,
    pub xattn: Option<CrossAttention>,
    /// The identity-keyed state ([`super::keyed`]), read into the pointwise inputs.
    pub keyed: Option<KeyedState>,
    /// The attention peer's read of the same events, into the pointwise inputs.
    pub attn: Option<EventAttention>,
    d_model: usize,
    entity_slots: usize,
    memory_slots: usize,
    history: bool,
    relative: bool,
    temporal_only: bool,
    /// The width of the content and query embeddings the model was built for; with
    /// `temporal_only` a batch of any width reads as zeros of this one.
    content_dim: usize,
    picks: usize,
}

/// A padded batch of user sequences (B users × T turns × K candidates).
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[B, T, CONTEXT_DIM]`
    pub context: Tensor<3>,
    /// `[B, T, E]`
    pub query: Tensor<3>,
    /// `[B, T, 2]` entity slots (entity_slots = none).
    pub focal: Tensor<3, Int>,
    /// `[B, T, K, FEATURE_DIM]` each.
    pub features: Tensor<4>,
    pub missing: Tensor<4>,
    /// `[B, T, K]`
    pub labels: Tensor<3>,
    /// `[B, T, K]` 1 for a real candidate.
    pub valid: Tensor<3>,
    /// `[B, T]` 1 for a real turn.
    pub turn_mask: Tensor<2>,
    /// `[B, T, K]`
    pub memory_slot: Tensor<3, Int>,
    pub entity: Tensor<3, Int>,
    /// `[B, T, K, E]`
    pub content: Tensor<4>,
    /// `[B, T, K, MAX_HOPS, HOP_DIM]` and `[B, T, K]` hop counts.
    pub hops: Tensor<5>,
    pub hop_count: Tensor<3, Int>,
    /// `[B, T, K, HISTORY_DIM]` history features (zeros for a model without them).
    pub history: Tensor<4>,
    /// `[B, T, K, RELATIVE_DIM]` turn-relative features (zeros for a model without them).
    pub relative: Tensor<4>,
    /// `[B, T, K, EVENTS, EVENT_DIM]` and `[B, T, K, EVENTS]`: what each candidate reads of
    /// the keyed log before its turn, and each event's age in days ([`crate::keyed`]; one
    /// empty place for a model without a keyed state).
    pub keyed_events: Tensor<5>,
    pub keyed_days: Tensor<4>,
    /// `[B, T, K, keyed_dim]` the model's read of the keyed events: filled by the model
    /// itself before it scores (`None` in a batch as built).
    pub keyed_read: Option<Tensor<4>>,
}

impl Batch {
    /// The batch restricted to turn `t` (T = 1), for [`Scorer::step`].
    pub fn turn(&self, t: usize) -> Batch {
        Batch {
            context: self.context.clone().slice(s![.., t..t + 1, ..]),
            query: self.query.clone().slice(s![.., t..t + 1, ..]),
            focal: self.focal.clone().slice(s![.., t..t + 1, ..]),
            features: self.features.clone().slice(s![.., t..t + 1, .., ..]),
            missing: self.missing.clone().slice(s![.., t..t + 1, .., ..]),
            labels: self.labels.clone().slice(s![.., t..t + 1, ..]),
            valid: self.valid.clone().slice(s![.., t..t + 1, ..]),
            turn_mask: self.turn_mask.clone().slice(s![.., t..t + 1]),
            memory_slot: self.memory_slot.clone().slice(s![.., t..t + 1, ..]),
            entity: self.entity.clone().slice(s![.., t..t + 1, ..]),
            content: self.content.clone().slice(s![.., t..t + 1, .., ..]),
            hops: self.hops.clone().slice(s![.., t..t + 1, .., .., ..]),
            hop_count: self.hop_count.clone().slice(s![.., t..t + 1, ..]),
            history: self.history.clone().slice(s![.., t..t + 1, .., ..]),
            relative: self.relative.clone().slice(s![.., t..t + 1, .., ..]),
            keyed_events: self
                .keyed_events
                .clone()
                .slice(s![.., t..t + 1, .., .., ..]),
            keyed_days: self.keyed_days.clone().slice(s![.., t..t + 1, .., ..]),
            keyed_read: self
                .keyed_read
                .as_ref()
                .map(|r| r.clone().slice(s![.., t..t + 1, .., ..])),
        }
    }
}

/// Recurrent state of a whole scorer: one per backbone layer, plus the last output.
#[derive(Clone, Debug)]
pub struct ScorerState {
    pub mamba: Vec<MambaState>,
    pub s4d: Vec<S4dState>,
    /// Backbone output after the last turn seen, `[B, H]`.
    pub last: Tensor<2>,
}

impl Scorer {
    pub fn is_temporal(&self) -> bool {
        self.cand_enc.is_some()
    }

    /// Places picked one at a time ([`ModelConfig::picks`]; 0: none).
    pub fn picks(&self) -> usize {
        self.picks
    }

    /// The batch as the model reads it: with [`Inputs::TemporalOnly`], everything but the
    /// turn context, the time features and the history features reads as absent (zeros,
    /// the "no entity" row, memory slot 0, no path).
    /// With a keyed state, its read of the batch's keyed events is filled in.
    fn restricted<'a>(&self, batch: &'a Batch) -> std::borrow::Cow<'a, Batch> {
        let inputs = self.restrict_inputs(batch);
        let (events, days) = (inputs.keyed_events.clone(), inputs.keyed_days.clone());
        let read = match (&self.keyed, &self.attn) {
            (Some(keyed), _) => keyed.read(events, days),
            (None, Some(attn)) => attn.read(self.own_inputs(&inputs), events, days),
            (None, None) => return inputs,
        };
        std::borrow::Cow::Owned(Batch {
            keyed_read: Some(read),
            ..inputs.into_owned()
        })
    }

    fn restrict_inputs<'a>(&self, batch: &'a Batch) -> std::borrow::Cow<'a, Batch> {
        if !self.temporal_only {
            return std::borrow::Cow::Borrowed(batch);
        }
        let device = batch.features.device();
        let mut keep = [0f32; FEATURE_DIM];
        for c in crate::features::feat::TEMPORAL {
            keep[c] = 1.0;
        }
        // Turn-relative features of an absent feature: a rank in the middle, no distance,
        // top and bottom at once (what `crate::relative` gives a feature 0 everywhere).
        let mut keep_rel = [0f32; RELATIVE_DIM];
        let mut mid = [0f32; RELATIVE_DIM];
        for d in 0..FEATURE_DIM {
            for part in 0..4 {
                keep_rel[part * FEATURE_DIM + d] = keep[d];
            }
            mid[d] = 0.5 * (1.0 - keep[d]);
            mid[2 * FEATURE_DIM + d] = 1.0 - keep[d];
            mid[3 * FEATURE_DIM + d] = 1.0 - keep[d];
        }
        let row = |v: [f32; RELATIVE_DIM]| {
            Tensor::<1>::from_data(TensorData::new(v.to_vec(), [RELATIVE_DIM]), &device)
                .unsqueeze::<4>()
        };
        let relative = batch.relative.clone() * row(keep_rel)
            + batch.valid.clone().unsqueeze_dim::<4>(3) * row(mid);
        let keep = Tensor::<1>::from_data(TensorData::new(keep.to_vec(), [FEATURE_DIM]), &device)
            .unsqueeze::<4>();
        let none = self.entity_slots as i32;
        let [b, t, k, _] = batch.features.dims();
        let e = self.content_dim;
        std::borrow::Cow::Owned(Batch {
            relative,
            features: batch.features.clone() * keep.clone(),
            missing: batch.missing.clone() * keep,
            query: Tensor::zeros([b, t, e], &device),
            focal: batch.focal.zeros_like() + none,
            memory_slot: batch.memory_slot.zeros_like(),
            entity: batch.entity.zeros_like() + none,
            content: Tensor::zeros([b, t, k, e], &device),
            hops: batch.hops.zeros_like(),
            hop_count: batch.hop_count.ones_like(),
            keyed_events: batch.keyed_events.zeros_like(),
            keyed_days: batch.keyed_days.zeros_like(),
            ..batch.clone()
        })
    }

    fn focal_embedding(&self, focal: Tensor<3, Int>) -> Tensor<3> {
        let [b, t, _] = focal.dims();
        let e = self.entity_emb.forward(focal.reshape([b, t * 2])); // [B, 2T, d]
        let d = e.dims()[2];
        e.reshape([b, t, 2, d]).mean_dim(2).squeeze_dim::<3>(2)
    }

    /// The candidate encoder's own inputs `[B, T, K, ·]`: features, missing flags, with
    /// history the history features, with turn-relative features those.
    fn own_inputs(&self, batch: &Batch) -> Tensor<4> {
        let mut parts = vec![batch.features.clone(), batch.missing.clone()];
        if self.history {
            parts.push(batch.history.clone());
        }
        if self.relative {
            parts.push(batch.relative.clone());
        }
        Tensor::cat(parts, 3)
    }

    /// The pointwise branch's input `[B, T, K, pointwise_in]`: the own inputs, then with
    /// a keyed state its read.
    fn pointwise_inputs(&self, batch: &Batch) -> Tensor<4> {
        let own = self.own_inputs(batch);
        match &batch.keyed_read {
            Some(r) => Tensor::cat(vec![own, r.clone()], 3),
            None => own,
        }
    }

    /// Candidate encodings `[B, T, K, H]`.
    fn encode_candidates(&self, batch: &Batch) -> Tensor<4> {
        let [b, t, k, _] = batch.features.dims();
        let mem = self
            .memory_emb
            .forward(batch.memory_slot.clone().reshape([b, t * k]));
        let ent = self
            .entity_emb
            .forward(batch.entity.clone().reshape([b, t * k]));
        let d = mem.dims()[2];
        let x = Tensor::cat(
            vec![
                self.own_inputs(batch),
                mem.reshape([b, t, k, d]),
                ent.reshape([b, t, k, d]),
                batch.content.clone(),
            ],
            3,
        );
        self.cand_enc.as_ref().expect("temporal model").forward(x)
    }

    /// The pointwise branch's score `[B, T, K]` (zeros for the cross-attention scorer,
    /// which has none); with `picked` (`[B, T, K]`, 1 for a candidate picked earlier in
    /// the turn) the hidden units also read the picks.
    fn pointwise(&self, batch: &Batch, picked: Option<&Tensor<3>>) -> Tensor<3> {
        let (Some(mlp_in), Some(mlp_out)) = (&self.mlp_in, &self.mlp_out) else {
            let [b, t, k, _] = batch.features.dims();
            return Tensor::zeros([b, t, k], &batch.features.device());
        };
        let x = self.pointwise_inputs(batch);
        let mut pre = mlp_in.forward(x.clone()); // [B, T, K, H]
        if let (Some(pick), Some(picked)) = (&self.mlp_pick, picked) {
            let chosen = (x * picked.clone().unsqueeze_dim::<4>(3)).sum_dim(2); // [B, T, 1, D]
            pre = pre.clone() + pick.forward(chosen).expand(pre.dims());
        }
        let mut h = relu(pre);
        if let Some(set) = &self.mlp_set {
            // Padding reads as 0, the least a ReLU unit can be: it never raises the max.
            let h_live = h * batch.valid.clone().unsqueeze_dim::<4>(3);
            let top = h_live.clone().max_dim(2); // [B, T, 1, H]
            let below = top.expand(h_live.dims()) - h_live.clone();
            h = relu(set.forward(Tensor::cat(vec![h_live, below], 3)));
        }
        if let Some(mid) = &self.mlp_mid {
            h = relu(mid.forward(h));
        }
        mlp_out.forward(h).squeeze_dim::<3>(3)
    }

    /// The cross-attention scorer's scores `[B, T, K]`.
    fn cross_attention(&self, batch: &Batch) -> Option<Tensor<3>> {
        let xa = self.xattn.as_ref()?;
        let [b, t, k, _] = batch.features.dims();
        let project = self.focal_embedding(batch.focal.clone()); // [B, T, d_slot]
        let q = xa.q_norm.forward(
            xa.q_proj
                .forward(Tensor::cat(vec![batch.query.clone(), project.clone()], 2)),
        ); // [B, T, d]
        let mem = self
            .memory_emb
            .forward(batch.memory_slot.clone().reshape([b, t * k]));
        let d_slot = mem.dims()[2];
        let mut parts = vec![batch.features.clone(), batch.missing.clone()];
        if self.relative {
            parts.push(batch.relative.clone());
        }
        parts.push(mem.reshape([b, t, k, d_slot]));
        let cand = Tensor::cat(parts, 3);
        let key = xa.k_norm.forward(
            xa.k_proj
                .forward(Tensor::cat(vec![batch.content.clone(), cand.clone()], 3)),
        );
        let d = key.dims()[3];
        let sim = (key * q.unsqueeze_dim::<4>(2))
            .sum_dim(3)
            .squeeze_dim::<3>(3)
            / (d as f64).sqrt();
        let side = Tensor::cat(
            vec![
                cand,
                project.unsqueeze_dim::<4>(2).expand([b, t, k, d_slot]),
            ],
            3,
        );
        let gate = sigmoid(xa.gate.forward(side.clone())).squeeze_dim::<3>(3);
        let value = xa.value.forward(side).squeeze_dim::<3>(3);
        Some(sim * gate + value)
    }

    /// The dual variant's gated path score `[B, T, K]`.
    fn path_score(&self, batch: &Batch) -> Option<Tensor<3>> {
        let p = self.path.as_ref()?;
        let [b, t, k, hops, hd] = batch.hops.dims();
        let x = p
            .hop_in
            .forward(batch.hops.clone().reshape([b * t * k, hops, hd])); // [BTK, hops, C]
        let y = p.s4d.forward(x); // [BTK, hops, C]
        // Read the output at the last real hop.
        let last = (batch.hop_count.clone().reshape([b * t * k]) - 1).clamp_min(0);
        let c = y.dims()[2];
        let idx = last.reshape([b * t * k, 1, 1]).expand([b * t * k, 1, c]);
        let at = y.gather(1, idx).squeeze_dim::<2>(1); // [BTK, C]
        let s = p.out.forward(at).reshape([b, t, k]);
        Some(s * sigmoid(p.gate.val()).unsqueeze::<3>())
    }

    /// Backbone over tokens `[B, T, H]`.
    fn backbone(&self, u: Tensor<3>, scan: ScanImpl) -> Tensor<3> {
        let mut x = u;
        for block in &self.mamba {
            x = block.forward(x, scan);
        }
        for block in &self.s4d {
            x = block.forward(x);
        }
        self.norm.as_ref().expect("temporal model").forward(x)
    }

    /// Tokens fed to the backbone, one per turn, built after the turn's labels.
    fn tokens(&self, batch: &Batch, cand: &Tensor<4>, focal: &Tensor<3>) -> Tensor<3> {
        let labels = batch.labels.clone() * batch.valid.clone();
        let n = labels.clone().sum_dim(2).clamp_min(1.0); // [B, T, 1]
        let pooled = (cand.clone() * labels.unsqueeze_dim::<4>(3))
            .sum_dim(2)
            .squeeze_dim::<3>(2)
            / n; // [B, T, H]
        let x = Tensor::cat(
            vec![
                batch.context.clone(),
                batch.query.clone(),
                focal.clone(),
                pooled,
            ],
            2,
        );
        self.turn_in.as_ref().expect("temporal model").forward(x)
    }

    /// Scores `[B, T, K]` of every turn from the history before it; padded candidates get
    /// −1e9.
    pub fn forward(&self, batch: &Batch, scan: ScanImpl) -> Tensor<3> {
        let batch = &*self.restricted(batch);
        let rest = self.rest(batch, scan);
        self.decode(batch, rest)
    }

    /// The scores `[R, 1, K]` of R chosen turns, equal to [`Scorer::forward`]'s at those
    /// turns: `full` holds the sequences (the backbone reads every turn), `turns` the
    /// chosen turns alone (T = 1, as [`super::batch::slice_user`] cuts them, with the
    /// history and keyed reads of their whole prefix) and `at[r]` = (sequence, turn) of
    /// row r in `full`. Only the chosen turns pay for the keyed read and the pointwise
    /// branch, so `full` may be built without keyed events.
    pub fn forward_at(
        &self,
        full: &Batch,
        turns: &Batch,
        at: &[(usize, usize)],
        scan: ScanImpl,
    ) -> Tensor<3> {
        let full = &*self.restrict_inputs(full);
        let rest = self.rest(full, scan);
        let [b, t, k] = rest.dims();
        let rows: Vec<i64> = at.iter().map(|&(u, turn)| (u * t + turn) as i64).collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [at.len()]), &rest.device());
        let rest = rest
            .reshape([b * t, k])
            .select(0, rows)
            .reshape([at.len(), 1, k]);
        let turns = &*self.restricted(turns);
        self.decode(turns, rest)
    }

    /// Every term of the score but the pointwise branch's, padding at −1e9.
    fn rest(&self, batch: &Batch, scan: ScanImpl) -> Tensor<3> {
        let mut score = batch.valid.zeros_like();
        if self.is_temporal() {
            let [b, t, _, _] = batch.features.dims();
            let h = self.d_model;
            let cand = self.encode_candidates(batch);
            let focal = self.focal_embedding(batch.focal.clone());
            let out = self.backbone(self.tokens(batch, &cand, &focal), scan); // [B, T, H]
            // The state before turn t's labels: the output at t − 1 (zeros before turn 0).
            let device = out.device();
            let zeros = Tensor::zeros([b, 1, h], &device);
            let before = if t == 1 {
                zeros
            } else {
                Tensor::cat(vec![zeros, out.slice(s![.., 0..t - 1, ..])], 1)
            };
            let q = self
                .query_proj
                .as_ref()
                .expect("temporal model")
                .forward(Tensor::cat(
                    vec![before, batch.context.clone(), batch.query.clone(), focal],
                    2,
                ));
            let sim = (cand * q.unsqueeze_dim::<4>(2))
                .sum_dim(3)
                .squeeze_dim::<3>(3)
                / (h as f64).sqrt();
            score = score + sim;
        }
        if let Some(p) = self.path_score(batch) {
            score = score + p;
        }
        if let Some(x) = self.cross_attention(batch) {
            score = score + x;
        }
        score + (batch.valid.clone() - 1.0) * 1e9
    }

    /// The scores: the pointwise branch plus `rest`. With `picks` P, the first P places
    /// are picked greedily, each pick scored given the picks before it (the pointwise
    /// branch reads them): pick j scores P − j above the best candidate left, and the
    /// candidates left keep their scores given all P picks.
    fn decode(&self, batch: &Batch, rest: Tensor<3>) -> Tensor<3> {
        if self.picks == 0 {
            return self.pointwise(batch, None) + rest;
        }
        Self::decoded(&self.rounds(batch, rest))
    }

    /// The scores [`Self::rounds`] decode to.
    fn decoded(rounds: &[(Tensor<3>, Tensor<3>, Tensor<3>)]) -> Tensor<3> {
        let (last, picked, bonus) = rounds.last().cloned().expect("P + 1 rounds");
        // The best candidate left (≥ −1e4: when every real candidate is picked, the picks
        // still rank above the padding).
        let top = last.clone().detach().max_dim(2).clamp_min(-1e4);
        let unpicked = picked.clone().neg().add_scalar(1.0);
        last * unpicked + picked * (bonus + top)
    }

    /// Greedy decoding, P + 1 rounds: round j's scores (picked candidates at −1e9), the
    /// picks before it (1 picked) and each pick's bonus P − j. Round j picks the best
    /// real candidate left (none when every one is picked); the last round ranks the rest.
    pub fn rounds(&self, batch: &Batch, rest: Tensor<3>) -> Vec<(Tensor<3>, Tensor<3>, Tensor<3>)> {
        let [b, t, k] = rest.dims();
        let device = rest.device();
        let index = Tensor::<1, Int>::arange(0..k as i64, &device)
            .reshape([1, 1, k])
            .expand([b, t, k]);
        let mut picked = Tensor::<3>::zeros([b, t, k], &device);
        let mut bonus = Tensor::<3>::zeros([b, t, k], &device);
        let mut out = Vec::with_capacity(self.picks + 1);
        for j in 0..=self.picks {
            let s = self.pointwise(batch, Some(&picked)) + rest.clone() - picked.clone() * 1e9;
            out.push((s.clone(), picked.clone(), bonus.clone()));
            if j == self.picks {
                break;
            }
            let best = s.detach().argmax(2).expand([b, t, k]); // [B, T, K]
            let left = (batch.valid.clone() - picked.clone())
                .sum_dim(2)
                .greater_elem(0.5)
                .float(); // [B, T, 1]
            let pick = index.clone().equal(best).float() * left.expand([b, t, k]);
            bonus = bonus + pick.clone() * (self.picks - j) as f64;
            picked = picked + pick;
        }
        out
    }

    /// The training loss of a batch: `kind` on the scores; with `picks`, on every round of
    /// the greedy decoding, each over the candidates left and the turns whose picks so
    /// far hold no relevant candidate (label > 0.5), so that pick j learns what is
    /// relevant when the picks before it were not. Rounds count equally.
    pub fn training_loss(
        &self,
        batch: &Batch,
        scan: ScanImpl,
        kind: super::loss::Loss,
        temperature: f64,
    ) -> Tensor<1> {
        if self.picks == 0 {
            return self
                .scores_and_loss(batch, batch.turn_mask.clone(), scan, kind, temperature)
                .1;
        }
        // Only the rounds: the decoded scores would add graph nodes no backward reaches.
        let batch = &*self.restricted(batch);
        let rounds = self.rounds(batch, self.rest(batch, scan));
        Self::rounds_loss(batch, &rounds, batch.turn_mask.clone(), kind, temperature)
    }

    /// The scores of a batch and its [`Self::training_loss`] over the turns of `turns`
    /// (`[B, T]`, in place of the batch's turn mask), from one forward pass.
    pub fn scores_and_loss(
        &self,
        batch: &Batch,
        turns: Tensor<2>,
        scan: ScanImpl,
        kind: super::loss::Loss,
        temperature: f64,
    ) -> (Tensor<3>, Tensor<1>) {
        let batch = &*self.restricted(batch);
        let rest = self.rest(batch, scan);
        if self.picks == 0 {
            let scores = self.pointwise(batch, None) + rest;
            let l = super::loss::loss(
                kind,
                scores.clone(),
                batch.labels.clone(),
                batch.valid.clone(),
                turns,
                temperature,
            );
            return (scores, l);
        }
        let rounds = self.rounds(batch, rest);
        let l = Self::rounds_loss(batch, &rounds, turns, kind, temperature);
        (Self::decoded(&rounds), l)
    }

    /// The loss of the greedy rounds over the turns of `turns` (see
    /// [`Self::training_loss`]).
    fn rounds_loss(
        batch: &Batch,
        rounds: &[(Tensor<3>, Tensor<3>, Tensor<3>)],
        turns: Tensor<2>,
        kind: super::loss::Loss,
        temperature: f64,
    ) -> Tensor<1> {
        let labels = batch.labels.clone() * batch.valid.clone();
        let hits = labels.clone().greater_elem(0.5).float();
        let mut total: Option<Tensor<1>> = None;
        for (s, picked, _) in rounds {
            let missed = (hits.clone() * picked.clone())
                .sum_dim(2)
                .lower_elem(0.5)
                .float()
                .squeeze_dim::<2>(2); // [B, T]
            let left = batch.valid.clone() * picked.clone().neg().add_scalar(1.0);
            let l = super::loss::loss(
                kind,
                s.clone(),
                labels.clone() * left.clone(),
                left,
                turns.clone() * missed,
                temperature,
            );
            total = Some(match total {
                Some(x) => x + l,
                None => l,
            });
        }
        total.expect("P + 1 rounds") / rounds.len() as f64
    }

    pub fn zero_state(&self, batch: usize, device: &Device) -> ScorerState {
        ScorerState {
            mamba: self
                .mamba
                .iter()
                .map(|m| m.zero_state(batch, device))
                .collect(),
            s4d: self
                .s4d
                .iter()
                .map(|m| m.zero_state(batch, device))
                .collect(),
            last: Tensor::zeros([batch, self.d_model], device),
        }
    }

    /// One turn at a time: scores this turn (`batch` with T = 1) from `state`, then folds
    /// the turn's labels into the state. Equals [`Scorer::forward`] turn by turn.
    pub fn step(&self, batch: &Batch, state: ScorerState) -> (Tensor<3>, ScorerState) {
        let batch = &*self.restricted(batch);
        let mut score = batch.valid.zeros_like();
        let mut state = state;
        if self.is_temporal() {
            let h = self.d_model;
            let cand = self.encode_candidates(batch);
            let focal = self.focal_embedding(batch.focal.clone());
            let q = self
                .query_proj
                .as_ref()
                .expect("temporal model")
                .forward(Tensor::cat(
                    vec![
                        state.last.clone().unsqueeze_dim::<3>(1),
                        batch.context.clone(),
                        batch.query.clone(),
                        focal.clone(),
                    ],
                    2,
                ));
            let sim = (cand.clone() * q.unsqueeze_dim::<4>(2))
                .sum_dim(3)
                .squeeze_dim::<3>(3)
                / (h as f64).sqrt();
            score = score + sim;
            let mut x = self.tokens(batch, &cand, &focal).squeeze_dim::<2>(1);
            let mut mamba = Vec::with_capacity(self.mamba.len());
            for (block, s) in self.mamba.iter().zip(state.mamba) {
                let (y, s) = block.step(x, s);
                x = y;
                mamba.push(s);
            }
            let mut s4d = Vec::with_capacity(self.s4d.len());
            for (block, s) in self.s4d.iter().zip(state.s4d) {
                let (y, s) = block.step(x, s);
                x = y;
                s4d.push(s);
            }
            let last = self.norm.as_ref().expect("temporal model").forward(x);
            state = ScorerState { mamba, s4d, last };
        }
        if let Some(p) = self.path_score(batch) {
            score = score + p;
        }
        if let Some(x) = self.cross_attention(batch) {
            score = score + x;
        }
        let rest = score + (batch.valid.clone() - 1.0) * 1e9;
        (self.decode(batch, rest), state)
    }
}

const _: () = assert!(MAX_HOPS == 10);

#[cfg(test)]
mod tests;
