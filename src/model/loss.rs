//! The training losses over a batch of turns: listwise softmax cross-entropy, the hit
//! loss (the softmax mass on the relevant candidates together), the slate loss (the
//! chance that the top [`SLATE`] holds a relevant candidate) and binary cross-entropy
//! (each candidate's own chance of being relevant).

use burn::prelude::*;

pub use crate::config::Loss;

/// How many top places the slate loss asks to hold a relevant candidate: the 5 of HR@5.
pub const SLATE: usize = 5;

/// The mean loss over turns with a relevant label ([`Loss::Softmax`], [`Loss::Hit`] or
/// [`Loss::Slate`]) or, for [`Loss::Binary`], with a candidate (a turn without a relevant
/// one still teaches that its candidates were not); other turns (and padding) are
/// skipped. Returns the mean over counted turns (0 if none) as `[1]`.
pub fn loss(
    kind: Loss,
    scores: Tensor<3>,
    labels: Tensor<3>,
    valid: Tensor<3>,
    turn_mask: Tensor<2>,
    temperature: f64,
) -> Tensor<1> {
    let labels = labels * valid.clone();
    let n_rel = labels.clone().sum_dim(2); // [B, T, 1]
    let n_valid = valid.clone().sum_dim(2); // [B, T, 1]
    let has = if kind == Loss::Binary {
        n_valid.clone()
    } else {
        n_rel.clone()
    };
    let counted = has.greater_elem(0.0).float() * turn_mask.unsqueeze_dim::<3>(2);
    let logits = scores / temperature;
    let log_softmax = |logits: Tensor<3>| burn::tensor::activation::log_softmax(logits, 2);
    let per_turn = match kind {
        // −Σ_k p_k log softmax(s/τ)_k with p = labels / Σ labels.
        Loss::Softmax => (labels / n_rel.clamp_min(1.0) * log_softmax(logits))
            .sum_dim(2)
            .neg(),
        // −log Σ over the relevant candidates: the others pushed far below.
        Loss::Hit => {
            let masked = log_softmax(logits) + (labels - 1.0) * 1e4;
            let top = masked.clone().detach().max_dim(2); // [B, T, 1]
            let lse = (masked - top.clone())
                .exp()
                .sum_dim(2)
                .clamp_min(1e-30)
                .log()
                + top;
            lse.neg()
        }
        Loss::Slate => slate_per_turn(logits, labels.clone(), valid),
        // softplus(z) − y z = −log σ(±z), averaged over the turn's candidates; padding
        // (scored −1e9) is read as z = 0 and weighs nothing.
        Loss::Binary => {
            let z = logits.mask_where(valid.clone().lower_elem(0.5), valid.zeros_like());
            let per = (burn::tensor::activation::softplus(z.clone(), 1.0) - labels * z) * valid;
            per.sum_dim(2) / n_valid.clamp_min(1.0)
        }
    };
    (per_turn * counted.clone()).sum() / counted.sum().clamp_min(1.0)
}

/// [`Loss::Slate`] per turn `[B, T, 1]`, on scores already divided by the temperature.
///
/// Place d (0-based) draws from the candidates the model does not rank in its top d, with
/// probabilities softmax(s) over them; p_d is the share of relevant ones among them. The
/// model's own top candidates fill the earlier places (not a sum over every order the
/// draws could take), so the chance of a miss in all [`SLATE`] places is Π_d (1 − p_d)
/// and the loss is −log(1 − Π_d (1 − p_d)). A relevant candidate that the model ranks at
/// place d only competes with the ones below it: a rule whose candidates the model puts
/// at place 5 has met the objective, as HR@5 counts it. The ranking is not differentiated
/// (a candidate's place moves in steps); the probabilities are.
fn slate_per_turn(logits: Tensor<3>, labels: Tensor<3>, valid: Tensor<3>) -> Tensor<3> {
    let [b, t, k] = logits.dims();
    let device = logits.device();
    let depth = SLATE.min(k);
    let s = logits.clone().detach();
    // The largest score, taken off before exp: the shares do not change.
    let top = s.clone().max_dim(2).unsqueeze_dim::<4>(2); // [B, T, 1, 1]
    // Each candidate's place: how many candidates score above it (padding scores −1e9
    // and sinks below every real candidate).
    let mine = s.clone().unsqueeze_dim::<4>(3).expand([b, t, k, k]);
    let others = s.unsqueeze_dim::<4>(2).expand([b, t, k, k]);
    let place = others.greater(mine).float().sum_dim(3); // [B, T, K, 1]
    let place = place.swap_dims(2, 3).expand([b, t, depth, k]);
    let d: Vec<f32> = (0..depth).map(|d| d as f32).collect();
    let d = Tensor::<4>::from_data(TensorData::new(d, [1, 1, depth, 1]), &device)
        .expand([b, t, depth, k]);
    let left = place.greater_equal(d).float() * valid.unsqueeze_dim::<4>(2);
    let rel = left.clone() * labels.unsqueeze_dim::<4>(2);
    let x = logits.unsqueeze_dim::<4>(2).expand([b, t, depth, k]);
    let mass = |keep: Tensor<4>| -> Tensor<4> {
        (keep * (x.clone() - top.clone()).exp()).sum_dim(3) // [B, T, D, 1]
    };
    let p = (mass(rel) / mass(left).clamp_min(1e-30)).clamp(0.0, 1.0 - 1e-6);
    let m = p.neg().log1p().sum_dim(2).squeeze_dim::<3>(2); // [B, T, 1]: log Π (1 − p_d)
    // −log(1 − e^m), with 1 − e^m by its series near m = 0.
    let near = m.clone().greater_elem(-1e-3);
    let series = (m.clone() + m.clone().powi_scalar(2) * 0.5).neg();
    let hit = m.exp().neg().add_scalar(1.0).mask_where(near, series);
    hit.clamp_min(1e-30).log().neg()
}
