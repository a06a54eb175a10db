use super::*;
use crate::data::CONTEXT_DIM;
use crate::features::HOP_DIM;
use crate::history::HISTORY_DIM;
use crate::model::normal_tensor;

/// One user, one turn of `x.len()` candidates whose features and turn-relative
/// features are `x[i]` and `r[i]`; `valid[i]` 0 marks padding.
fn turn(x: &[Vec<f32>], r: &[Vec<f32>], valid: &[f32], e: usize, device: &Device) -> Batch {
    let k = x.len();
    let t4 =
        |v: Vec<f32>, d: usize| Tensor::<4>::from_data(TensorData::new(v, [1, 1, k, d]), device);
    Batch {
        context: Tensor::zeros([1, 1, CONTEXT_DIM], device),
        query: Tensor::zeros([1, 1, e], device),
        focal: Tensor::zeros([1, 1, 2], device),
        features: t4(x.concat(), FEATURE_DIM),
        missing: Tensor::zeros([1, 1, k, FEATURE_DIM], device),
        labels: Tensor::zeros([1, 1, k], device),
        valid: Tensor::from_data(TensorData::new(valid.to_vec(), [1, 1, k]), device),
        turn_mask: Tensor::ones([1, 1], device),
        memory_slot: Tensor::zeros([1, 1, k], device),
        entity: Tensor::zeros([1, 1, k], device),
        content: Tensor::zeros([1, 1, k, e], device),
        hops: Tensor::zeros([1, 1, k, MAX_HOPS, HOP_DIM], device),
        hop_count: Tensor::ones([1, 1, k], device),
        history: Tensor::zeros([1, 1, k, HISTORY_DIM], device),
        relative: t4(r.concat(), RELATIVE_DIM),
        keyed_events: Tensor::zeros([1, 1, k, 1, crate::keyed::EVENT_DIM], device),
        keyed_days: Tensor::zeros([1, 1, k, 1], device),
        keyed_read: None,
    }
}

/// A model's scores of a batch of one turn.
fn scores_of(model: &Scorer, b: &Batch) -> Vec<f32> {
    model
        .forward(b, ScanImpl::Reference)
        .to_data()
        .try_into_vec_as::<f32>()
        .unwrap()
}

/// Features and turn-relative features of `k` candidates, drawn from `seed`.
fn drawn(k: u64, seed: u64, device: &Device) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let row = |seed: u64, d: usize| {
        normal_tensor(seed, [d], 1.0, device)
            .to_data()
            .try_into_vec_as::<f32>()
            .unwrap()
    };
    (
        (0..k).map(|i| row(seed + i, FEATURE_DIM)).collect(),
        (0..k).map(|i| row(seed + 100 + i, RELATIVE_DIM)).collect(),
    )
}

#[test]
fn the_set_encoder_reads_the_turn_as_a_set_and_padding_changes_nothing() {
    let device = Device::flex();
    let mut cfg = ModelConfig::sized(Variant::Mlp, Size::Tiny, 4, 1);
    cfg.relative = true;
    cfg.set_encoder = true;
    let model = cfg.init(3, &device);
    let (x, r) = drawn(4, 10, &device);
    let scores = |b: &Batch| scores_of(&model, b);
    let base = scores(&turn(&x, &r, &[1.0; 4], 4, &device));

    // Two padding candidates with large features: the real scores do not move.
    let mut xp = x.clone();
    let mut rp = r.clone();
    xp.extend([vec![50.0; FEATURE_DIM], vec![-50.0; FEATURE_DIM]]);
    rp.extend([vec![9.0; RELATIVE_DIM], vec![9.0; RELATIVE_DIM]]);
    let padded = scores(&turn(&xp, &rp, &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0], 4, &device));
    for i in 0..4 {
        assert!((padded[i] - base[i]).abs() < 1e-5, "{padded:?} vs {base:?}");
    }

    // Permuting the candidates permutes their scores.
    let perm = [2, 0, 3, 1];
    let xs: Vec<Vec<f32>> = perm.iter().map(|&i| x[i].clone()).collect();
    let rs: Vec<Vec<f32>> = perm.iter().map(|&i| r[i].clone()).collect();
    let permuted = scores(&turn(&xs, &rs, &[1.0; 4], 4, &device));
    for (j, &i) in perm.iter().enumerate() {
        assert!(
            (permuted[j] - base[i]).abs() < 1e-5,
            "{permuted:?} vs {base:?}"
        );
    }

    // And a candidate's score depends on the others: change one, the rest move.
    let mut xc = x.clone();
    xc[3] = vec![30.0; FEATURE_DIM];
    let changed = scores(&turn(&xc, &r, &[1.0; 4], 4, &device));
    let moved = (0..3)
        .map(|i| (changed[i] - base[i]).abs())
        .fold(0f32, f32::max);
    assert!(
        moved > 1e-3,
        "the set layer ignores the turn: {changed:?} vs {base:?}"
    );
    // Without it, the scores of the other candidates stay where they were.
    cfg.set_encoder = false;
    let plain = cfg.init(3, &device);
    let plain_scores = |b: &Batch| scores_of(&plain, b);
    let before = plain_scores(&turn(&x, &r, &[1.0; 4], 4, &device));
    let after = plain_scores(&turn(&xc, &r, &[1.0; 4], 4, &device));
    for i in 0..3 {
        assert!((before[i] - after[i]).abs() < 1e-6);
    }
}

#[test]
fn greedy_picks_follow_their_rounds_and_train_only_after_a_miss() {
    use crate::model::loss::{Loss, loss};
    let device = Device::flex();
    let mut cfg = ModelConfig::sized(Variant::Mlp, Size::Tiny, 4, 1);
    cfg.relative = true;
    let plain = cfg.init(5, &device);
    cfg.picks = 2;
    let model = cfg.init(5, &device);
    let (x, r) = drawn(5, 30, &device);
    let mut b = turn(&x, &r, &[1.0, 1.0, 1.0, 1.0, 0.0], 4, &device);
    let v = |t: Tensor<3>| t.to_data().try_into_vec_as::<f32>().unwrap();
    let argmax = |s: &[f32], skip: &[usize]| {
        (0..4)
            .filter(|i| !skip.contains(i))
            .max_by(|&a, &b| s[a].total_cmp(&s[b]))
            .unwrap()
    };
    // Round 0 reads no picks: the same weights without picks score it.
    let first = argmax(&v(plain.forward(&b, ScanImpl::Reference)), &[]);
    let rest = model.rest(&b, ScanImpl::Reference);
    let rounds = model.rounds(&b, rest);
    assert_eq!(rounds.len(), 3);
    assert_eq!(argmax(&v(rounds[0].0.clone()), &[]), first);
    let second = argmax(&v(rounds[1].0.clone()), &[first]);
    // The decoded scores put the picks on top in order, the rest by the last round.
    let scores = v(model.forward(&b, ScanImpl::Reference));
    let mut order: Vec<usize> = (0..4).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    assert_eq!(&order[..2], &[first, second], "{scores:?}");
    let last = v(rounds[2].0.clone());
    for &i in &order[2..] {
        assert!((scores[i] - last[i]).abs() < 1e-5);
    }
    assert!(scores[4] < -1e8, "padding stays below: {scores:?}");

    // The first pick relevant: only round 0 counts, and it is the plain loss.
    let mut labels = vec![0f32; 5];
    labels[first] = 1.0;
    b.labels = Tensor::from_data(TensorData::new(labels, [1, 1, 5]), &device);
    let got: f32 = model
        .training_loss(&b, ScanImpl::Reference, Loss::Softmax, 1.0)
        .into_scalar();
    let plain_loss: f32 = loss(
        Loss::Softmax,
        plain.forward(&b, ScanImpl::Reference),
        b.labels.clone(),
        b.valid.clone(),
        b.turn_mask.clone(),
        1.0,
    )
    .into_scalar();
    assert!(
        (got - plain_loss / 3.0).abs() < 1e-5,
        "{got} vs {plain_loss} / 3"
    );
    // The relevant candidate picked last: every round counts, round 2 over the two
    // candidates left.
    let mut labels = vec![0f32; 5];
    labels[order[3]] = 1.0;
    b.labels = Tensor::from_data(TensorData::new(labels, [1, 1, 5]), &device);
    let got: f32 = model
        .training_loss(&b, ScanImpl::Reference, Loss::Softmax, 1.0)
        .into_scalar();
    let ce = |s: &[f32], left: &[usize]| {
        let m = left.iter().map(|&i| s[i]).fold(f32::MIN, f32::max);
        let z: f32 = left.iter().map(|&i| (s[i] - m).exp()).sum();
        -(s[order[3]] - m - z.ln())
    };
    let by_hand = (ce(&v(rounds[0].0.clone()), &[0, 1, 2, 3])
        + ce(&v(rounds[1].0.clone()), &order[1..])
        + ce(&last, &order[2..]))
        / 3.0;
    assert!((got - by_hand).abs() < 1e-4, "{got} vs {by_hand}");
}
