//! Ranking metrics of one case (a list of candidates with scores and labels), and their
//! means over cases.
//!
//! Ranking: candidates are sorted by score, descending, with a stable sort on an exact
//! comparison: equal scores keep their original order (the earlier candidate ranks
//! first), and −0.0 ties 0.0. NaN scores are refused before ranking.
//!
//! A candidate is *relevant* when its label is > 0; DCG uses the label as the gain, so
//! graded labels work. With `hits` the relevant candidates in the top K:
//! - HR@K = 1 if hits > 0;
//! - MRR@K = 1 / rank of the first relevant candidate in the top K, else 0;
//! - DCG@K = Σ_{i ≤ K} label_i / log2(i + 1), unnormalized (the model-selection metric);
//! - nDCG@K = DCG@K / IDCG@K, 0 when the case has no relevant candidate;
//! - Precision@K = hits / K (K, not the list length, even when the list is shorter);
//! - Recall@K = hits / relevant, 0 when the case has no relevant candidate.

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub hr: f64,
    pub mrr: f64,
    pub dcg: f64,
    pub ndcg: f64,
    pub precision: f64,
    pub recall: f64,
}

impl Metrics {
    pub const NAMES: [&'static str; 6] = ["hr", "mrr", "dcg", "ndcg", "precision", "recall"];

    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "hr" => self.hr,
            "mrr" => self.mrr,
            "dcg" => self.dcg,
            "ndcg" => self.ndcg,
            "precision" => self.precision,
            "recall" => self.recall,
            _ => return None,
        })
    }

    /// Mean of each metric over cases (all zero for no case).
    pub fn mean(cases: &[Metrics]) -> Metrics {
        let n = cases.len().max(1) as f64;
        let mut m = Metrics::default();
        for c in cases {
            m.hr += c.hr;
            m.mrr += c.mrr;
            m.dcg += c.dcg;
            m.ndcg += c.ndcg;
            m.precision += c.precision;
            m.recall += c.recall;
        }
        m.hr /= n;
        m.mrr /= n;
        m.dcg /= n;
        m.ndcg /= n;
        m.precision /= n;
        m.recall /= n;
        m
    }
}

/// Candidate indices in rank order (see the module doc for the tie rule).
pub fn rank(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // `partial_cmp` compares −0.0 and 0.0 as equal; the sort is stable.
    order.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order
}

fn discount(position: usize) -> f64 {
    // position is 0-based: rank i = position + 1, discount log2(i + 1).
    ((position + 2) as f64).log2()
}

/// Metrics of one case at the top-`cutoff` cut-off (the @10 of DCG@10). Scores must not be NaN.
pub fn case_metrics(scores: &[f64], labels: &[f64], cutoff: usize) -> Metrics {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let order = rank(scores);
    let top = &order[..cutoff.min(order.len())];
    let hits = top.iter().filter(|&&i| labels[i] > 0.0).count();
    let relevant = labels.iter().filter(|&&l| l > 0.0).count();
    let first = top.iter().position(|&i| labels[i] > 0.0);
    let dcg: f64 = top
        .iter()
        .enumerate()
        .map(|(p, &i)| labels[i] / discount(p))
        .sum();
    let mut ideal: Vec<f64> = labels.to_vec();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(cutoff)
        .enumerate()
        .map(|(p, &l)| l.max(0.0) / discount(p))
        .sum();
    Metrics {
        hr: (hits > 0) as u8 as f64,
        mrr: first.map_or(0.0, |p| 1.0 / (p + 1) as f64),
        dcg,
        ndcg: if idcg > 0.0 { dcg / idcg } else { 0.0 },
        precision: hits as f64 / cutoff as f64,
        recall: if relevant > 0 {
            hits as f64 / relevant as f64
        } else {
            0.0
        },
    }
}

/// The metrics of one test case, in report order.
pub const METRICS: [&str; 7] = [
    "hr@5", "hr@10", "mrr@10", "dcg@10", "ndcg@10", "p@10", "r@10",
];

/// One case's [`METRICS`] row.
pub type Row = [f64; 7];

/// The [`METRICS`] of one case.
pub fn case_row(scores: &[f64], labels: &[f64]) -> Row {
    let m10 = case_metrics(scores, labels, 10);
    let m5 = case_metrics(scores, labels, 5);
    [
        m5.hr,
        m10.hr,
        m10.mrr,
        m10.dcg,
        m10.ndcg,
        m10.precision,
        m10.recall,
    ]
}

/// The position of a metric in [`METRICS`].
pub fn metric_index(name: &str) -> usize {
    METRICS
        .iter()
        .position(|&m| m == name)
        .expect("known metric")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn metrics_match_a_hand_computed_case() {
        // Scores rank the candidates 2, 0, 3, 1, 4; relevant are 0 (label 1) and 4 (label 2).
        let scores = [0.8, 0.1, 0.9, 0.5, 0.05];
        let labels = [1.0, 0.0, 0.0, 0.0, 2.0];
        let m = case_metrics(&scores, &labels, 3);
        // Top 3: [2, 0, 3] → one hit, at rank 2.
        assert!(close(m.hr, 1.0));
        assert!(close(m.mrr, 0.5));
        // DCG@3 = 0/log2(2) + 1/log2(3) + 0/log2(4).
        assert!(close(m.dcg, 1.0 / 3f64.log2()));
        // IDCG@3 = 2/log2(2) + 1/log2(3).
        assert!(close(
            m.ndcg,
            (1.0 / 3f64.log2()) / (2.0 + 1.0 / 3f64.log2())
        ));
        assert!(close(m.precision, 1.0 / 3.0));
        assert!(close(m.recall, 0.5));
        // At K = 5 both relevant are in: DCG = 1/log2(3) + 2/log2(6).
        let m5 = case_metrics(&scores, &labels, 5);
        assert!(close(m5.dcg, 1.0 / 3f64.log2() + 2.0 / 6f64.log2()));
        assert!(close(m5.recall, 1.0));
        assert!(close(m5.precision, 0.4));
    }

    #[test]
    fn ties_keep_the_original_order_and_negative_zero_ties_zero() {
        assert_eq!(rank(&[0.5, 0.7, 0.5, 0.7]), vec![1, 3, 0, 2]);
        assert_eq!(rank(&[0.0, -0.0, 0.0]), vec![0, 1, 2]);
        assert_eq!(rank(&[-0.0, 0.0]), vec![0, 1]);
        // All-equal scores: the first candidate is ranked first.
        let m = case_metrics(&[1.0, 1.0, 1.0], &[0.0, 0.0, 1.0], 2);
        assert!(close(m.hr, 0.0));
        let m = case_metrics(&[1.0, 1.0, 1.0], &[1.0, 0.0, 0.0], 1);
        assert!(close(m.mrr, 1.0));
    }

    #[test]
    fn a_case_without_relevant_candidates_scores_zero() {
        let m = case_metrics(&[0.3, 0.2], &[0.0, 0.0], 10);
        assert_eq!(m, Metrics::default());
    }

    #[test]
    fn precision_divides_by_k_even_for_short_lists() {
        let m = case_metrics(&[0.3, 0.2], &[1.0, 1.0], 10);
        assert!(close(m.precision, 0.2));
        assert!(close(m.recall, 1.0));
    }
}
