//! The pointwise branch: each candidate's score from its own inputs, and greedy picks
//! that score a turn's places one at a time.

use super::layers::Dense;

/// The pointwise branch: fc1 (plus, with `picks`, the picks' term), ReLU, with
/// `set_encoder` the set layer and ReLU, with two hidden layers the second and ReLU, fc2.
#[derive(Clone, Debug)]
pub(super) struct Pointwise {
    pub(super) fc1: Dense,
    pub(super) set: Option<Dense>,
    /// The second hidden layer (`mlp_layers = 2`).
    pub(super) mid: Option<Dense>,
    pub(super) fc2: Dense,
    /// With `picks`: the sum of the picked candidates' inputs → hidden units (no bias).
    pub(super) pick: Option<Dense>,
}

impl Pointwise {
    /// The scores of a turn's candidates from fc1's outputs `pre` and a term `shift`
    /// added to every candidate's (the picks').
    pub(super) fn scores(&self, pre: &[Vec<f32>], shift: Option<&[f32]>) -> Vec<f32> {
        let mut hidden: Vec<Vec<f32>> = pre
            .iter()
            .map(|p| match shift {
                Some(d) => p.iter().zip(d).map(|(a, b)| (a + b).max(0.0)).collect(),
                None => p.iter().map(|a| a.max(0.0)).collect(),
            })
            .collect();
        if let Some(set) = &self.set {
            // Each unit's largest over the turn (ReLU units are ≥ 0: 0 for an empty turn).
            let mut top = vec![0f32; self.fc1.d_out];
            for h in &hidden {
                for (t, &v) in top.iter_mut().zip(h) {
                    *t = t.max(v);
                }
            }
            let mut x = vec![0f32; 2 * self.fc1.d_out];
            for h in hidden.iter_mut() {
                let (own, below) = x.split_at_mut(h.len());
                own.copy_from_slice(h);
                for ((b, &t), &v) in below.iter_mut().zip(&top).zip(h.iter()) {
                    *b = t - v;
                }
                set.apply_into(&x, h);
                h.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
        if let Some(mid) = &self.mid {
            let mut x = vec![0f32; self.fc1.d_out];
            for h in hidden.iter_mut() {
                x.copy_from_slice(h);
                mid.apply_into(&x, h);
                h.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
        let mut one = [0f32; 1];
        hidden
            .iter()
            .map(|h| {
                self.fc2.apply_into(h, &mut one);
                one[0]
            })
            .collect()
    }

    /// Greedy picks (the Burn model's `Scorer::rounds`): round j scores the candidates
    /// left given the picks before it and picks the best; pick j scores P − j above the
    /// best candidate left after P picks (at least −1e4), which keep those scores.
    pub(super) fn greedy(
        &self,
        picks: usize,
        inputs: &[Vec<f32>],
        pre: &[Vec<f32>],
        rest: &[f32],
    ) -> Vec<f32> {
        let pick = self.pick.as_ref().expect("a model with picks");
        let n = rest.len();
        let mut chosen = vec![0f32; pick.d_in];
        let mut place: Vec<Option<usize>> = vec![None; n];
        let mut shift = vec![0f32; pick.d_out];
        let mut j = 0;
        loop {
            pick.apply_into(&chosen, &mut shift);
            let scores: Vec<f32> = self
                .scores(pre, Some(&shift))
                .iter()
                .zip(rest)
                .map(|(p, r)| p + r)
                .collect();
            // The first of the best candidates left, as Burn's argmax.
            let mut best: Option<usize> = None;
            for i in (0..n).filter(|&i| place[i].is_none()) {
                if best.is_none_or(|b| scores[i] > scores[b]) {
                    best = Some(i);
                }
            }
            match best {
                Some(b) if j < picks => {
                    place[b] = Some(j);
                    for (c, x) in chosen.iter_mut().zip(&inputs[b]) {
                        *c += x;
                    }
                    j += 1;
                }
                _ => {
                    let top = best.map_or(-1e4, |b| scores[b].max(-1e4));
                    return (0..n)
                        .map(|i| match place[i] {
                            Some(j) => top + (picks - j) as f32,
                            None => scores[i],
                        })
                        .collect();
                }
            }
        }
    }
}

/// What greedy picks read again: the pointwise branch, each candidate's inputs and fc1
/// outputs.
pub(super) type Picking<'a> = (&'a Pointwise, Vec<Vec<f32>>, Vec<Vec<f32>>);
