//! The Burn model a [`ModelConfig`] describes, with its weights drawn from a seed.

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, LayerNormConfig, Linear, LinearConfig, RmsNormConfig};
use burn::prelude::*;

use super::{CrossAttention, Inputs, ModelConfig, PathEncoder, Scorer, Variant};
use crate::features::HOP_DIM;
use crate::keyed::ATTN_EVENT_DIM;
use crate::model::keyed::{EventAttention, KeyedState};
use crate::model::mamba::{MambaBlock, MambaConfig};
use crate::model::normal_tensor;
use crate::model::s4d::{S4dBlock, S4dConfig};

/// Builds the Burn model a [`ModelConfig`] describes.
pub trait Init {
    /// The model with weights drawn from `seed`.
    fn init(&self, seed: u64, device: &Device) -> Scorer;
}

impl Init for ModelConfig {
    fn init(&self, seed: u64, device: &Device) -> Scorer {
        let h = self.d_model;
        let mut next = seed;
        let mut seed = || {
            next = next
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            next
        };
        let linear = |s: u64, d_in: usize, d_out: usize| linear_init(s, d_in, d_out, device);
        let temporal = self.variant.is_temporal();
        let mamba_cfg = MambaConfig {
            d_model: h,
            d_state: self.d_state,
            expand: self.expand,
            d_conv: self.d_conv,
            selective: self.selective,
        };
        let s4d_cfg = S4dConfig {
            d_model: h,
            d_state: self.d_state,
        };
        let layers = if temporal { self.layers } else { 0 };
        let mamba: Vec<MambaBlock> = match self.variant {
            Variant::Mamba | Variant::Dual => (0..layers)
                .map(|_| mamba_cfg.init(seed(), device))
                .collect(),
            _ => Vec::new(),
        };
        let s4d: Vec<S4dBlock> = match self.variant {
            Variant::S4d => (0..layers).map(|_| s4d_cfg.init(seed(), device)).collect(),
            _ => Vec::new(),
        };
        let path = (self.variant == Variant::Dual).then(|| PathEncoder {
            hop_in: linear(seed(), HOP_DIM, self.path_channels),
            s4d: S4dConfig {
                d_model: self.path_channels,
                d_state: ssmkit_format::model::PATH_D_STATE,
            }
            .init(seed(), device),
            out: linear(seed(), self.path_channels, 1),
            gate: Param::from_tensor(Tensor::zeros([1], device)),
        });
        let embedding = |s: u64, n: usize, d: usize| -> Embedding {
            let mut e = EmbeddingConfig::new(n, d).init(device);
            e.weight = Param::from_tensor(normal_tensor(s, [n, d], 0.1, device));
            e
        };
        Scorer {
            memory_emb: embedding(seed(), self.memory_slots.max(1), self.d_slot),
            entity_emb: embedding(seed(), self.entity_slots + 1, self.d_slot),
            cand_enc: temporal.then(|| linear(seed(), self.cand_in(), h)),
            turn_in: temporal.then(|| linear(seed(), self.turn_in(), h)),
            query_proj: temporal.then(|| linear(seed(), self.query_in(), h)),
            mamba,
            s4d,
            norm: temporal.then(|| RmsNormConfig::new(h).init(device)),
            mlp_in: (self.variant != Variant::Xattn)
                .then(|| linear(seed(), self.pointwise_in(), self.mlp_hidden)),
            mlp_out: (self.variant != Variant::Xattn).then(|| linear(seed(), self.mlp_hidden, 1)),
            mlp_set: (self.set_encoder && self.variant != Variant::Xattn)
                .then(|| linear(seed(), 2 * self.mlp_hidden, self.mlp_hidden)),
            mlp_mid: (self.mlp_layers > 1 && self.variant != Variant::Xattn)
                .then(|| linear(seed(), self.mlp_hidden, self.mlp_hidden)),
            mlp_pick: (self.picks > 0 && self.variant != Variant::Xattn).then(|| {
                let mut l = linear(seed(), self.pointwise_in(), self.mlp_hidden);
                l.bias = None;
                l
            }),
            path,
            xattn: (self.variant == Variant::Xattn).then(|| {
                let d = self.d_attn;
                let cand_side = self.xattn_side();
                CrossAttention {
                    q_proj: linear(seed(), self.content_dim + self.d_slot, d),
                    k_proj: linear(seed(), self.content_dim + cand_side, d),
                    q_norm: LayerNormConfig::new(d).init(device),
                    k_norm: LayerNormConfig::new(d).init(device),
                    gate: linear(seed(), cand_side + self.d_slot, 1),
                    value: linear(seed(), cand_side + self.d_slot, 1),
                }
            }),
            keyed: (self.keyed_channels() > 0).then(|| {
                KeyedState::new(
                    self.keyed_modes,
                    self.keyed_cycles,
                    self.selective,
                    seed(),
                    device,
                )
            }),
            attn: (self.variant == Variant::Attn).then(|| EventAttention {
                q_proj: linear(seed(), self.attn_query_in(), self.d_attn),
                k_proj: linear(seed(), ATTN_EVENT_DIM, self.d_attn),
                v_proj: linear(seed(), ATTN_EVENT_DIM, self.d_attn),
            }),
            d_model: h,
            entity_slots: self.entity_slots,
            memory_slots: self.memory_slots.max(1),
            history: self.history,
            relative: self.relative,
            temporal_only: self.inputs == Inputs::TemporalOnly,
            content_dim: self.content_dim,
            picks: if self.variant == Variant::Xattn {
                0
            } else {
                self.picks
            },
        }
    }
}

/// A linear layer with PyTorch's default init, drawn from `seed`.
pub fn linear_init(seed: u64, d_in: usize, d_out: usize, device: &Device) -> Linear {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let bound = 1.0 / (d_in as f32).sqrt();
    let mut draw =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..=bound)).collect() };
    let mut l = LinearConfig::new(d_in, d_out)
        .with_initializer(burn::nn::Initializer::Zeros)
        .init(device);
    l.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(draw(d_in * d_out), [d_in, d_out]),
        device,
    ));
    l.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(draw(d_out), [d_out]),
        device,
    )));
    l
}
