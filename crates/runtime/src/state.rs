//! A user's state and its file format.

use sha2::{Digest, Sha256};

use ssmkit_format::history::{ENTRY_BYTES, Table};
use ssmkit_format::keyed::Log;

/// A user's state: every layer's recurrent state, then the last backbone output; for
/// models with history features, the user's history table; for models with a keyed
/// state, the user's keyed log.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct State {
    pub values: Vec<f32>,
    pub history: Table,
    pub keyed: Log,
}

const STATE_MAGIC: &[u8; 8] = b"SSMKSTAT";
const STATE_VERSION: u32 = 4;

impl State {
    /// `magic (8) | version u32 | fingerprint (16) | count u32 | f32 × count | history
    /// table | keyed log length u32 | keyed log | SHA-256 (32)`, little-endian (the table
    /// as [`Table::write`] writes it, the log as [`Log::write`]).
    pub fn to_bytes(&self, fingerprint: &[u8; 16]) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + 4 * self.values.len());
        b.extend_from_slice(STATE_MAGIC);
        b.extend_from_slice(&STATE_VERSION.to_le_bytes());
        b.extend_from_slice(fingerprint);
        b.extend_from_slice(&(self.values.len() as u32).to_le_bytes());
        for v in &self.values {
            b.extend_from_slice(&v.to_le_bytes());
        }
        self.history.write(&mut b);
        let mut log = Vec::new();
        self.keyed.write(&mut log);
        b.extend_from_slice(&(log.len() as u32).to_le_bytes());
        b.extend_from_slice(&log);
        let sum = Sha256::digest(&b);
        b.extend_from_slice(&sum);
        b
    }

    /// Parses [`State::to_bytes`]; says what is wrong otherwise.
    pub fn from_bytes(
        b: &[u8],
        fingerprint: &[u8; 16],
        expected_len: usize,
    ) -> std::result::Result<State, String> {
        if b.len() < 8 + 4 + 16 + 4 + 32 {
            return Err(format!("{} bytes is too short for a state", b.len()));
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err("checksum mismatch: the state is corrupt".into());
        }
        if &body[..8] != STATE_MAGIC {
            return Err("not an ssmkit state".into());
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if !(1..=STATE_VERSION).contains(&version) {
            return Err(format!(
                "state version {version}, this build reads 1 to {STATE_VERSION}"
            ));
        }
        if &body[12..28] != fingerprint {
            return Err("the state belongs to another model".into());
        }
        let n = u32::from_le_bytes(body[28..32].try_into().expect("4 bytes")) as usize;
        if n != expected_len || body.len() < 32 + 4 * n {
            return Err(format!(
                "the state holds {n} values, the model needs {expected_len}"
            ));
        }
        let values: Vec<f32> = body[32..32 + 4 * n]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err("the state holds a NaN or infinite value".into());
        }
        // Version 1 states end with the floats: no history table yet; version 2 states
        // end with the table: no keyed log yet. Version 3 logs kept no time of the week:
        // one without events reads as today's, one with events cannot be read.
        let rest = &body[32 + 4 * n..];
        let (history, keyed) = match version {
            1 if rest.is_empty() => (Table::default(), Log::default()),
            1 => return Err("a version 1 state with trailing bytes".into()),
            2 => (Table::read(rest)?, Log::default()),
            _ => {
                // The table's own header says its length: 8 bytes and its entries.
                let entries = rest
                    .get(4..8)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize)
                    .ok_or("the state ends inside its history table")?;
                let table_len = entries
                    .checked_mul(ENTRY_BYTES)
                    .and_then(|n| n.checked_add(8))
                    .filter(|&n| n + 4 <= rest.len())
                    .ok_or("the state ends inside its history table")?;
                let (table, tail) = rest.split_at(table_len);
                let len = u32::from_le_bytes(tail[..4].try_into().expect("4")) as usize;
                if tail.len() != 4 + len {
                    return Err(format!(
                        "the state's keyed log says {len} bytes, {} follow",
                        tail.len() - 4
                    ));
                }
                let log = &tail[4..];
                // `turns u32 | memories u32 | … | entities u32 | …`: empty when both are 0.
                if version == 3 && log.get(4..) != Some(&[0u8; 8][..]) {
                    return Err("a version 3 state whose keyed log holds events, which \
                                kept no time of the week: start this user's state anew"
                        .into());
                }
                (Table::read(table)?, Log::read_bytes(log)?)
            }
        };
        Ok(State {
            values,
            history,
            keyed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssmkit_format::keyed::Shown;

    /// `state` saved as a version-`v` state (the same layout as today's), sealed anew.
    fn as_version(state: &State, v: u32, fingerprint: &[u8; 16]) -> Vec<u8> {
        let mut b = state.to_bytes(fingerprint);
        b.truncate(b.len() - 32);
        b[8..12].copy_from_slice(&v.to_le_bytes());
        let sum = Sha256::digest(&b);
        b.extend_from_slice(&sum);
        b
    }

    #[test]
    fn a_version_3_state_is_read_only_without_keyed_events() {
        let fp = [7u8; 16];
        let mut state = State {
            values: vec![0.5; 3],
            history: Table::default(),
            keyed: Log::default(),
        };
        // Today's version reads back whole.
        let back = State::from_bytes(&state.to_bytes(&fp), &fp, 3).unwrap();
        assert_eq!(back.keyed, state.keyed);
        // Version 3 with an empty log: its bytes mean the same.
        assert!(State::from_bytes(&as_version(&state, 3, &fp), &fp, 3).is_ok());
        // Version 3 with events: their time of the week is unknown, so it is refused.
        let shown = Shown {
            memory: 1,
            entity: 2,
            relevant: true,
            log_age: 0.5,
        };
        state.keyed.observe(10, 2.5, [2, -1], [shown]);
        assert!(State::from_bytes(&state.to_bytes(&fp), &fp, 3).is_ok());
        let err = State::from_bytes(&as_version(&state, 3, &fp), &fp, 3).unwrap_err();
        assert!(err.contains("version 3"), "{err}");
    }
}
