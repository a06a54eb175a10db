//! What a user's own history says about each memory: a small table keyed by memory id,
//! updated after every turn's outcome. The temporal scorer reads [`HISTORY_DIM`] causal
//! features of each candidate from it (beside the observed features), the runtime keeps it
//! in the user's state, and the history baselines of `eval` are rules over the same entries.
//!
//! Everything here is plain arithmetic on ids and timestamps: training batches, `eval` and
//! the runtime call the same code, so their features agree exactly.

use crate::IdMap;

/// Per-candidate history features, in this order.
pub const HISTORY_NAMES: [&str; 8] = [
    "relevant_prev_turn",
    "shown_prev_turn",
    "relevant_turn_recency",
    "relevant_recency",
    "shown_recency",
    "log_decayed_relevant",
    "log_decayed_shown",
    "relevant_rate",
];
pub const HISTORY_DIM: usize = HISTORY_NAMES.len();

/// Decay time of the decayed counts, in seconds (7 days).
pub const DECAY_S: f64 = 7.0 * 86_400.0;

/// Memories the table keeps per user. Past it, the least recently shown are forgotten, an
/// eighth of the table at a time (so a full table costs one pass per 512 new memories, not
/// one per memory).
pub const MAX_ENTRIES: usize = 4096;

/// Bytes one entry takes in a saved state.
pub const ENTRY_BYTES: usize = 8 + 4 + 8 + 4 + 8 + 8 + 8 + 4 + 4;

/// What the history before a turn says about one memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Entry {
    /// Time and turn number (1-based) the memory was last shown as a candidate.
    pub last_shown: i64,
    pub shown_turn: u32,
    /// Time and turn number it was last relevant (turn 0: never).
    pub last_relevant: i64,
    pub relevant_turn: u32,
    /// Relevant and shown events, each decayed by exp(−age / [`DECAY_S`]), as of
    /// `last_shown`.
    pub decayed_relevant: f64,
    pub decayed_shown: f64,
    /// How often it was shown, and relevant.
    pub shown: u32,
    pub relevant: u32,
}

/// A user's history table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// Turns folded in so far.
    pub turns: u32,
    entries: IdMap<Entry>,
}

fn days(seconds: i64) -> f64 {
    seconds.max(0) as f64 / 86_400.0
}

fn decay(seconds: i64) -> f64 {
    (-(seconds.max(0) as f64) / DECAY_S).exp()
}

impl Table {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, memory: u64) -> Option<&Entry> {
        self.entries.get(&memory)
    }

    /// Folds in a turn at `ts` whose candidates were `shown` (memory id, relevant).
    pub fn observe(&mut self, ts: i64, shown: impl IntoIterator<Item = (u64, bool)>) {
        self.turns = self.turns.saturating_add(1);
        let turn = self.turns;
        for (memory, relevant) in shown {
            let e = self.entries.entry(memory).or_default();
            let d = if e.shown_turn == 0 {
                0.0
            } else {
                decay(ts.saturating_sub(e.last_shown))
            };
            e.decayed_shown = e.decayed_shown * d + 1.0;
            e.decayed_relevant *= d;
            e.last_shown = ts;
            e.shown_turn = turn;
            e.shown += 1;
            if relevant {
                e.decayed_relevant += 1.0;
                e.last_relevant = ts;
                e.relevant_turn = turn;
                e.relevant += 1;
            }
        }
        if self.entries.len() > MAX_ENTRIES {
            let mut order: Vec<(u32, i64, u64)> = self
                .entries
                .iter()
                .map(|(id, e)| (e.shown_turn, e.last_shown, *id))
                .collect();
            let forget = self.entries.len() - (MAX_ENTRIES - MAX_ENTRIES / 8);
            order.select_nth_unstable(forget - 1);
            for (_, _, id) in &order[..forget] {
                self.entries.remove(id);
            }
        }
    }

    /// Folds in one turn of a stored sequence: its K slots' `valid` flags, observed
    /// `labels` and `memory` ids (a slot counts when valid, relevant when its label is > 0).
    pub fn observe_slots(&mut self, ts: i64, valid: &[f32], labels: &[f32], memory: &[u32]) {
        let slots = valid.iter().zip(labels).zip(memory);
        self.observe(
            ts,
            slots
                .filter(|((v, _), _)| **v == 1.0)
                .map(|((_, l), m)| (*m as u64, *l > 0.0)),
        );
    }

    /// The features of `memory` for a turn at `now` (all zeros for a memory never shown).
    pub fn features(&self, now: i64, memory: u64) -> [f32; HISTORY_DIM] {
        let Some(e) = self.entries.get(&memory) else {
            return [0.0; HISTORY_DIM];
        };
        let ever = e.relevant_turn > 0;
        let since_shown = now.saturating_sub(e.last_shown);
        [
            (ever && e.relevant_turn == self.turns) as u8 as f32,
            (e.shown_turn == self.turns) as u8 as f32,
            if ever {
                1.0 / (1.0 + (self.turns - e.relevant_turn) as f32)
            } else {
                0.0
            },
            if ever {
                (1.0 / (1.0 + days(now.saturating_sub(e.last_relevant)))) as f32
            } else {
                0.0
            },
            (1.0 / (1.0 + days(since_shown))) as f32,
            (e.decayed_relevant * decay(since_shown)).ln_1p() as f32,
            (e.decayed_shown * decay(since_shown)).ln_1p() as f32,
            e.relevant as f32 / (e.shown as f32 + 1.0),
        ]
    }

    /// The decayed count of relevant events of `memory` at `now`.
    pub fn decayed_relevant(&self, now: i64, memory: u64) -> f64 {
        self.entries.get(&memory).map_or(0.0, |e| {
            e.decayed_relevant * decay(now.saturating_sub(e.last_shown))
        })
    }

    /// Appends the table to `out` (`turns u32 | n u32 | n × (id u64, entry)`, little-endian,
    /// entries in id order).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.turns.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        let mut ids: Vec<&u64> = self.entries.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.entries[id];
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&e.shown_turn.to_le_bytes());
            out.extend_from_slice(&e.last_shown.to_le_bytes());
            out.extend_from_slice(&e.relevant_turn.to_le_bytes());
            out.extend_from_slice(&e.last_relevant.to_le_bytes());
            out.extend_from_slice(&e.decayed_relevant.to_le_bytes());
            out.extend_from_slice(&e.decayed_shown.to_le_bytes());
            out.extend_from_slice(&e.shown.to_le_bytes());
            out.extend_from_slice(&e.relevant.to_le_bytes());
        }
    }

    /// Parses [`Table::write`]'s bytes, which must fill `b` exactly.
    pub fn read(b: &[u8]) -> Result<Table, String> {
        let short = || format!("{} bytes is too short for a history table", b.len());
        let u32_at = |at: usize| -> Result<u32, String> {
            Ok(u32::from_le_bytes(
                b.get(at..at + 4).ok_or_else(short)?.try_into().expect("4"),
            ))
        };
        let u64_at = |at: usize| -> Result<u64, String> {
            Ok(u64::from_le_bytes(
                b.get(at..at + 8).ok_or_else(short)?.try_into().expect("8"),
            ))
        };
        let turns = u32_at(0)?;
        let n = u32_at(4)? as usize;
        if n > MAX_ENTRIES || b.len() != 8 + n * ENTRY_BYTES {
            return Err(format!(
                "a history table of {n} entries takes {} bytes, not {}",
                8 + n * ENTRY_BYTES,
                b.len()
            ));
        }
        let mut entries = IdMap::with_capacity_and_hasher(n, Default::default());
        for i in 0..n {
            let at = 8 + i * ENTRY_BYTES;
            let e = Entry {
                shown_turn: u32_at(at + 8)?,
                last_shown: u64_at(at + 12)? as i64,
                relevant_turn: u32_at(at + 20)?,
                last_relevant: u64_at(at + 24)? as i64,
                decayed_relevant: f64::from_bits(u64_at(at + 32)?),
                decayed_shown: f64::from_bits(u64_at(at + 40)?),
                shown: u32_at(at + 48)?,
                relevant: u32_at(at + 52)?,
            };
            let finite = e.decayed_relevant.is_finite() && e.decayed_shown.is_finite();
            if !finite || e.shown_turn > turns || e.relevant_turn > turns {
                return Err(format!("history entry {i} is inconsistent"));
            }
            entries.insert(u64_at(at)?, e);
        }
        Ok(Table { turns, entries })
    }
}

/// The history features `[T, K, HISTORY_DIM]` of a user's turns, each from the turns
/// before it (`valid`, `labels` and `memory` are `[T, K]`).
pub fn sequence_features(
    timestamp: &[i64],
    valid: &[f32],
    labels: &[f32],
    memory: &[u32],
    k: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; timestamp.len() * k * HISTORY_DIM];
    let mut table = Table::default();
    for (t, &now) in timestamp.iter().enumerate() {
        let slots = t * k..(t + 1) * k;
        for j in slots.clone() {
            if valid[j] == 1.0 {
                out[j * HISTORY_DIM..(j + 1) * HISTORY_DIM]
                    .copy_from_slice(&table.features(now, memory[j] as u64));
            }
        }
        table.observe_slots(
            now,
            &valid[slots.clone()],
            &labels[slots.clone()],
            &memory[slots],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn features_follow_the_turns_before() {
        // Memory 7 relevant at turn 1 (day 0); memory 8 shown then, relevant at turn 2
        // (day 1); turn 3 is scored on day 3.
        let mut t = Table::default();
        t.observe(0, [(7, true), (8, false)]);
        t.observe(DAY, [(8, true), (9, false)]);
        let f7 = t.features(3 * DAY, 7);
        let f8 = t.features(3 * DAY, 8);
        assert_eq!(&f7[..3], &[0.0, 0.0, 0.5]);
        assert_eq!(&f8[..3], &[1.0, 1.0, 1.0]);
        assert!((f7[3] - 0.25).abs() < 1e-6 && (f8[3] - 1.0 / 3.0).abs() < 1e-6);
        assert!((f7[4] - 0.25).abs() < 1e-6);
        // Decayed counts by hand: 7 once, 3 days ago; 8 shown twice (3 and 2 days ago).
        let d = |days: f64| (-days / 7.0).exp();
        assert!((f7[5] as f64 - d(3.0).ln_1p()).abs() < 1e-6);
        assert!((f8[5] as f64 - d(2.0).ln_1p()).abs() < 1e-6);
        assert!((f8[6] as f64 - (d(3.0) + d(2.0)).ln_1p()).abs() < 1e-6);
        assert!((t.decayed_relevant(3 * DAY, 8) - d(2.0)).abs() < 1e-12);
        // Rates: 7 relevant 1 of 1 shown, 8 1 of 2.
        assert_eq!((f7[7], f8[7]), (0.5, 1.0 / 3.0));
        assert_eq!(t.features(3 * DAY, 42), [0.0; HISTORY_DIM]);
    }

    #[test]
    fn sequence_features_read_only_earlier_turns() {
        // Two candidates per turn; turn 2's own labels must not reach its features.
        let ts = [0, DAY, 2 * DAY];
        let valid = [1.0; 6];
        let memory = [7, 8, 8, 9, 7, 8];
        let labels = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        let f = sequence_features(&ts, &valid, &labels, &memory, 2);
        assert!(f[..2 * HISTORY_DIM].iter().all(|&v| v == 0.0));
        let at = |slot: usize| &f[slot * HISTORY_DIM..(slot + 1) * HISTORY_DIM];
        // Turn 2: 8 was relevant at the previous turn, 7 two turns ago.
        assert_eq!((at(5)[0], at(4)[0], at(4)[2]), (1.0, 0.0, 0.5));
        let mut flipped = labels;
        flipped[4] = 0.0;
        flipped[5] = 0.0;
        assert_eq!(f, sequence_features(&ts, &valid, &flipped, &memory, 2));
    }

    #[test]
    fn table_bytes_round_trip_and_refuse_damage() {
        let mut t = Table::default();
        t.observe(5, [(1, true), (u64::MAX, false)]);
        t.observe(9, [(1, false)]);
        let mut b = Vec::new();
        t.write(&mut b);
        assert_eq!(b.len(), 8 + 2 * ENTRY_BYTES);
        assert_eq!(Table::read(&b).unwrap(), t);
        assert!(Table::read(&b[..b.len() - 1]).is_err());
        let mut bad = b.clone();
        bad[8 + 8] = 9; // the first entry's shown turn past the table's turns
        assert!(Table::read(&bad).is_err());
    }

    #[test]
    fn the_least_recently_shown_memories_are_forgotten_first() {
        let mut t = Table::default();
        // Memory m shown at turn m + 1; then memory 0 again and one new memory.
        for m in 0..MAX_ENTRIES as u64 {
            t.observe(m as i64, [(m, false)]);
        }
        let n = MAX_ENTRIES as u64;
        t.observe(n as i64, [(0, true), (n, false)]);
        let kept = MAX_ENTRIES - MAX_ENTRIES / 8;
        assert_eq!(t.len(), kept);
        // The two just shown stay; of the rest, the most recently shown stay.
        assert!(t.get(0).is_some() && t.get(n).is_some());
        let first_kept = n - (kept as u64 - 2);
        assert!(t.get(first_kept - 1).is_none() && t.get(first_kept).is_some());
        assert!(t.get(1).is_none());
    }
}
