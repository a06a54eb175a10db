//! History baselines: the cheapest temporal rules a production system would try before a
//! learned temporal model, each computed causally from the user's own history (the
//! observed labels of the turns before the scored one). A temporal model that does not
//! beat them has not learned more from history than a counter would.

use crate::data::UserSeq;
use crate::history::Table;

/// One history rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryRule {
    /// 1 if the memory was relevant at the user's previous turn, else 0.
    PreviousTurn,
    /// Minus the time since the memory was last relevant (never: last).
    LastRelevant,
    /// Past relevant labels of the memory, each decayed by exp(−age / 7 days).
    DecayedCount,
    /// Minus the time since the memory was last shown as a candidate (never: last).
    LastShown,
}

/// Score of a memory the rule has never seen: below every seen one.
const NEVER: f64 = -1e12;

impl HistoryRule {
    pub const ALL: [HistoryRule; 4] = [
        HistoryRule::PreviousTurn,
        HistoryRule::LastRelevant,
        HistoryRule::DecayedCount,
        HistoryRule::LastShown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HistoryRule::PreviousTurn => "prev-relevant",
            HistoryRule::LastRelevant => "last-relevant",
            HistoryRule::DecayedCount => "decayed-count",
            HistoryRule::LastShown => "last-shown",
        }
    }

    /// The rule's score of `memory` at `now` from the user's history table.
    pub fn score(self, table: &Table, now: i64, memory: u64) -> f64 {
        let Some(e) = table.get(memory) else {
            return match self {
                HistoryRule::PreviousTurn | HistoryRule::DecayedCount => 0.0,
                HistoryRule::LastRelevant | HistoryRule::LastShown => NEVER,
            };
        };
        let relevant = e.relevant_turn > 0;
        match self {
            HistoryRule::PreviousTurn => (relevant && e.relevant_turn == table.turns) as u8 as f64,
            HistoryRule::LastRelevant if relevant => -((now - e.last_relevant) as f64),
            HistoryRule::LastRelevant => NEVER,
            HistoryRule::DecayedCount => table.decayed_relevant(now, memory),
            HistoryRule::LastShown => -((now - e.last_shown) as f64),
        }
    }
}

/// Every rule's scores of the candidates of turn `t` of `u`, from turns `0..t` only:
/// `[rule][candidate]` in [`HistoryRule::ALL`] order.
pub fn scores(u: &UserSeq, t: usize, k: usize) -> Vec<Vec<f64>> {
    let mut table = Table::default();
    for s in 0..t {
        let slots = s * k..(s + 1) * k;
        let (valid, labels) = (&u.valid[slots.clone()], &u.labels[slots.clone()]);
        table.observe_slots(u.timestamp[s], valid, labels, &u.memory_id[slots]);
    }
    let now = u.timestamp[t];
    HistoryRule::ALL
        .iter()
        .map(|rule| {
            (0..k)
                .map(|j| match u.valid[t * k + j] == 1.0 {
                    true => rule.score(&table, now, u.memory_id[t * k + j] as u64),
                    false => NEVER,
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_only_the_turns_before() {
        // Memories 7 and 8 over three turns of two candidates, a day apart.
        let u = UserSeq {
            turns: 3,
            timestamp: vec![0, 86_400, 2 * 86_400],
            valid: vec![1.0; 6],
            memory_id: vec![7, 8, 8, 9, 7, 8],
            labels: vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0],
            ..Default::default()
        };
        let s = scores(&u, 2, 2);
        // Turn 1 had memory 8 relevant: the previous-turn rule marks 8 only.
        assert_eq!(s[0], vec![0.0, 1.0]);
        // 7 was last relevant two days ago, 8 one day ago.
        assert_eq!(s[1], vec![-2.0 * 86_400.0, -86_400.0]);
        // Decayed counts: 7 once two days ago, 8 once a day ago.
        assert!((s[2][0] - (-2.0f64 / 7.0).exp()).abs() < 1e-12);
        assert!((s[2][1] - (-1.0f64 / 7.0).exp()).abs() < 1e-12);
        // Last shown: 7 two days ago, 8 one day ago; turn 2's own labels play no part.
        assert_eq!(s[3], vec![-2.0 * 86_400.0, -86_400.0]);
        let first = scores(&u, 0, 2);
        assert!(first.iter().all(|r| r.iter().all(|&v| v <= 0.0)));
    }
}
