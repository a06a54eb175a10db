//! The training losses over a batch of turns: listwise softmax cross-entropy and the hit
//! loss (the softmax mass on the relevant candidates together).

use burn::prelude::*;

pub use crate::config::Loss;

/// The mean loss over turns with a relevant label ([`Loss::Softmax`] or [`Loss::Hit`]);
/// turns without one (or padding) are skipped. Returns the mean over counted turns (0 if
/// none) as `[1]`.
pub fn loss(
    kind: Loss,
    scores: Tensor<3>,
    labels: Tensor<3>,
    valid: Tensor<3>,
    turn_mask: Tensor<2>,
    temperature: f64,
) -> Tensor<1> {
    let labels = labels * valid;
    let n_rel = labels.clone().sum_dim(2); // [B, T, 1]
    let counted = n_rel.clone().greater_elem(0.0).float() * turn_mask.unsqueeze_dim::<3>(2);
    let logp = burn::tensor::activation::log_softmax(scores / temperature, 2);
    let per_turn = match kind {
        // −Σ_k p_k log softmax(s/τ)_k with p = labels / Σ labels.
        Loss::Softmax => (labels / n_rel.clamp_min(1.0) * logp).sum_dim(2).neg(),
        // −log Σ over the relevant candidates: the others pushed far below.
        Loss::Hit => {
            let masked = logp + (labels - 1.0) * 1e4;
            let top = masked.clone().max_dim(2).detach(); // [B, T, 1]
            let lse = (masked - top.clone())
                .exp()
                .sum_dim(2)
                .clamp_min(1e-30)
                .log()
                + top;
            lse.neg()
        }
    };
    (per_turn * counted.clone()).sum() / counted.sum().clamp_min(1.0)
}

/// [`Loss::Hit`]: −log Σ_{relevant i} softmax(s / τ)_i per turn with a relevant label.
pub fn hit_loss(
    scores: Tensor<3>,
    labels: Tensor<3>,
    valid: Tensor<3>,
    turn_mask: Tensor<2>,
    temperature: f64,
) -> Tensor<1> {
    loss(Loss::Hit, scores, labels, valid, turn_mask, temperature)
}
