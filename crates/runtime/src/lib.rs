//! The plain-Rust runtime: loads an exported safetensors file (any quantization) and
//! scores one turn at a time with a recurrent state, without Burn.
//!
//! A turn in: its context, query embedding, focal entities and K candidates (features,
//! missing-value flags, memory slot, entity, content embedding, traversal path). Out: K
//! scores, computed from the state *before* the turn. Then [`Runtime::observe`] folds the
//! turn and the candidates that turned out relevant into the state (the continuity loop).
//! Models with history features also keep the user's history table in the state
//! ([`ssmkit_format::history`]: per memory id, when it was last shown and relevant, and how often),
//! so they need each turn's timestamp and each candidate's memory id.
//! The computation mirrors the Burn model's `Scorer::step` in `ssmkit`; a test there
//! checks the two agree over whole sequences.
//!
//! The state serializes to bytes ([`State::to_bytes`]): a magic, a version, the model's
//! fingerprint, the floats, the history table, and a SHA-256 checksum. [`Runtime::restore`] falls back to the
//! default (zero) state with a warning when the bytes are corrupt or come from another
//! model (seed: "Hidden state corruption: fall back to project defaults").

mod build;
mod inputs;
pub mod jsonl;
mod keyed;
mod layers;
mod load;
mod pointwise;
mod score;
mod state;

use keyed::{EventAttn, Keyed};
use layers::{Dense, Mamba, PathEncoder, S4d, Xattn, rms_norm};
use pointwise::Pointwise;
pub use state::State;

use std::path::{Path, PathBuf};

use ssmkit_format::features::{CONTEXT_DIM, FEATURE_DIM, HOP_DIM};
use ssmkit_format::history::Table;
use ssmkit_format::keyed::Log;
use ssmkit_format::model::ModelConfig;

/// Why a model or a turn was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An export that is not what it should be (its format, metadata or tensors).
    #[error("{}: {msg}", path.display())]
    Export { path: PathBuf, msg: String },
    /// A turn the model cannot read; the message names the value at fault.
    #[error("{0}")]
    Turn(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A loaded model.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub config: ModelConfig,
    pub quantization: String,
    /// Identity of the file (from its tensor digest), stamped into saved states.
    pub fingerprint: [u8; 16],
    /// Where the weights came from, as the export's metadata records it.
    pub source: serde_json::Value,
    memory_emb: Vec<f32>,
    entity_emb: Vec<f32>,
    cand_enc: Option<Dense>,
    /// `cand_enc`'s weight transposed (`[in, out]`): scores use (W x + b)·q = x·(Wᵀq) + b·q,
    /// so a turn costs one matrix-vector product instead of one per candidate.
    cand_enc_t: Option<Dense>,
    turn_in: Option<Dense>,
    query_proj: Option<Dense>,
    mamba: Vec<Mamba>,
    s4d: Vec<S4d>,
    norm_f: Option<Vec<f32>>,
    mlp: Option<Pointwise>,
    path: Option<PathEncoder>,
    xattn: Option<Xattn>,
    keyed: Option<Keyed>,
    attn: Option<EventAttn>,
}

/// One candidate of a turn.
#[derive(Clone, Debug, Default)]
pub struct Candidate {
    pub features: [f32; FEATURE_DIM],
    /// 1 where the feature is missing (its value is then ignored).
    pub missing: [f32; FEATURE_DIM],
    pub memory_slot: u32,
    /// The memory's own id: the key of the user's history table (models with history
    /// features need it).
    pub memory_id: Option<u64>,
    pub entity: u32,
    /// Content embedding (`content_dim` values, or empty for zeros).
    pub content: Vec<f32>,
    /// Traversal path hops (`[hops][HOP_DIM]`), at most `MAX_HOPS`.
    pub hops: Vec<[f32; HOP_DIM]>,
}

/// One turn: what is known before its outcome.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    /// Unix seconds; models with history features need it.
    pub timestamp: Option<i64>,
    pub context: [f32; CONTEXT_DIM],
    /// Query embedding (`content_dim` values, or empty for zeros).
    pub query: Vec<f32>,
    /// Focal entities (−1: none).
    pub focal: [i32; 2],
    pub candidates: Vec<Candidate>,
}

impl Runtime {
    /// Loads an exported file; refuses a foreign, damaged or inconsistent one with its path
    /// and the reason.
    pub fn load(path: &Path) -> Result<Runtime> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Number of floats in the state.
    pub fn state_len(&self) -> usize {
        let layers: usize = self.mamba.iter().map(Mamba::state_len).sum::<usize>()
            + self.s4d.iter().map(S4d::state_len).sum::<usize>();
        if self.config.variant.is_temporal() {
            layers + self.config.d_model
        } else {
            0
        }
    }

    /// The default state (before any turn).
    pub fn zero_state(&self) -> State {
        State {
            values: vec![0.0; self.state_len()],
            history: Table::default(),
            keyed: Log::default(),
        }
    }

    /// Parses saved state bytes, or falls back to the default state with a warning.
    pub fn restore(&self, bytes: &[u8]) -> (State, Option<String>) {
        match State::from_bytes(bytes, &self.fingerprint, self.state_len()) {
            Ok(s) if self.config.history && bytes.get(8..12) == Some(&1u32.to_le_bytes()[..]) => (
                s,
                Some(
                    "a version 1 state holds no history table: the user's history starts empty"
                        .into(),
                ),
            ),
            Ok(s) if self.keyed.is_some() && bytes.get(8..12) == Some(&2u32.to_le_bytes()[..]) => (
                s,
                Some(
                    "a version 2 state holds no keyed log: the user's keyed state starts empty"
                        .into(),
                ),
            ),
            Ok(s) => (s, None),
            Err(why) => (
                self.zero_state(),
                Some(format!("{why}; starting from the default state")),
            ),
        }
    }

    /// Scores the turn from `state`, then folds its outcome in: [`Runtime::score`] and
    /// [`Runtime::observe`] with the candidate encodings computed once.
    pub fn step(&self, state: &mut State, turn: &Turn, labels: &[f32]) -> Vec<f32> {
        let turn = &*self.restricted(turn);
        let enc = self.encodings(state, turn);
        let scores = self.score_enc(state, turn, &enc);
        self.observe_enc(state, turn, labels, &enc);
        scores
    }

    /// Scores of the turn's candidates from `state` (the state is not changed).
    pub fn score(&self, state: &State, turn: &Turn) -> Vec<f32> {
        let turn = &*self.restricted(turn);
        self.score_enc(state, turn, &self.encodings(state, turn))
    }

    /// Folds a turn and its outcome (`labels[k] > 0`: candidate k was relevant) into the
    /// state. Models without a temporal state ignore it.
    pub fn observe(&self, state: &mut State, turn: &Turn, labels: &[f32]) {
        let turn = &*self.restricted(turn);
        self.observe_enc(state, turn, labels, &self.encodings(state, turn));
    }

    /// Folds the turn's outcome into the user's history table and keyed log (the models
    /// that read them).
    fn observe_logs(&self, state: &mut State, turn: &Turn, labels: &[f32]) {
        let c = &self.config;
        if c.history {
            let shown = turn.candidates.iter().zip(labels);
            state.history.observe(
                turn.timestamp.unwrap_or(0),
                shown.map(|(cand, &l)| {
                    let id = cand.memory_id.unwrap_or(cand.memory_slot as u64);
                    (id, l > 0.0)
                }),
            );
        }
        if c.reads_events() {
            let shown = turn.candidates.iter().zip(labels);
            state.keyed.observe(
                turn.timestamp.unwrap_or(0),
                ssmkit_format::keyed::week_of(&turn.context),
                [turn.focal[0] as i64, turn.focal[1] as i64],
                shown.map(|(cand, &l)| ssmkit_format::keyed::Shown {
                    memory: cand.memory_id.unwrap_or(cand.memory_slot as u64),
                    entity: cand.entity as u64,
                    relevant: l > 0.0,
                    log_age: inputs::log_age(cand),
                }),
            );
        }
    }

    fn observe_enc(&self, state: &mut State, turn: &Turn, labels: &[f32], enc: &[Vec<f32>]) {
        self.observe_logs(state, turn, labels);
        let c = &self.config;
        if !c.variant.is_temporal() {
            return;
        }
        // Mean encoding of the relevant candidates: W x̄ + b·(Σl / max(1, Σl)).
        let d = self.cand_enc.as_ref().expect("temporal model");
        let mut mean_x = vec![0f32; d.d_in];
        let mut n = 0f32;
        for (x, &l) in enc.iter().zip(labels) {
            if l != 0.0 {
                for (m, v) in mean_x.iter_mut().zip(x) {
                    *m += l * v;
                }
            }
            n += l;
        }
        let denom = n.max(1.0);
        mean_x.iter_mut().for_each(|m| *m /= denom);
        let mut pooled = vec![0f32; d.d_out];
        d.accumulate(&mean_x, &mut pooled);
        if let Some(b) = &d.b {
            for (p, bv) in pooled.iter_mut().zip(b) {
                *p += bv * n / denom;
            }
        }
        let mut x = turn.context.to_vec();
        x.extend(Self::padded(&turn.query, c.content_dim));
        x.extend(self.focal(turn));
        x.extend(pooled);
        let mut x = self.turn_in.as_ref().expect("temporal model").apply(&x);
        let mut at = 0;
        for m in &self.mamba {
            let len = m.state_len();
            x = m.step(&x, &mut state.values[at..at + len]);
            at += len;
        }
        for s in &self.s4d {
            let len = s.state_len();
            x = s.step(&x, &mut state.values[at..at + len]);
            at += len;
        }
        let last = rms_norm(&x, self.norm_f.as_ref().expect("temporal model"));
        state.values[at..at + c.d_model].copy_from_slice(&last);
    }
}
