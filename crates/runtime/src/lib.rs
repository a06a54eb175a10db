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

pub mod jsonl;
mod layers;
mod load;
mod state;

use layers::{Dense, Mamba, PathEncoder, S4d, Xattn, rms_norm, sigmoid};
use load::Loader;
pub use state::State;

use std::path::{Path, PathBuf};

use ssmkit_format::features::{CONTEXT_DIM, FEATURE_DIM, HOP_DIM, MAX_HOPS, feat};
use ssmkit_format::history::Table;
use ssmkit_format::keyed::{
    ATTN_EVENT_DIM, ATTN_HEADS, EVENT_DIM, EVENTS, Log, MEMORY_EVENTS, interval,
};
use ssmkit_format::meta::{Metadata, digest_of};
use ssmkit_format::model::{Inputs, ModelConfig, Variant};
use ssmkit_format::names::{
    BIAS, NORM_F, WEIGHT, attn, join, mamba, mixer, norm, path, scorer, xattn,
};
use ssmkit_format::quant::ScaleAxis;
use ssmkit_format::relative::RELATIVE_DIM;
use ssmkit_format::simd::{dot, transpose};

/// Why a model or a turn was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file or an input that is not what it should be; the message names it.
    #[error("{0}")]
    Input(String),
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

/// What a candidate reads of the user's keyed log: `[EVENTS × EVENT_DIM]` numbers and
/// `[EVENTS]` ages in days ([`Log::read`]).
type Events = ([f32; EVENTS * EVENT_DIM], [f32; EVENTS]);

/// The events `cand` of `turn` reads of `log`.
fn events(log: &Log, turn: &Turn, cand: &Candidate) -> Events {
    let mut out = ([0f32; EVENTS * EVENT_DIM], [0f32; EVENTS]);
    log.read(
        turn.timestamp.unwrap_or(0),
        [turn.focal[0] as i64, turn.focal[1] as i64],
        cand.memory_id.unwrap_or(cand.memory_slot as u64),
        cand.entity as u64,
        &mut out.0,
        &mut out.1,
    );
    out
}

/// The attention peer's projections (`ssmkit::model::keyed::EventAttention` has the read
/// this computes).
#[derive(Clone, Debug)]
struct EventAttn {
    q: Dense,
    k: Dense,
    v: Dense,
}

impl EventAttn {
    /// Appends a candidate's read of its events `ev` / `days` ([`Events`]; `d_attn`
    /// numbers) to `x`, which holds its query input.
    fn read(&self, ev: &Events, x: &mut Vec<f32>) {
        let (ev, days) = (&ev.0, &ev.1);
        let q = self.q.apply(x);
        let d = q.len();
        let dh = d / ATTN_HEADS;
        let mut logits: Vec<[f32; ATTN_HEADS]> = Vec::with_capacity(EVENTS);
        let mut values: Vec<Vec<f32>> = Vec::with_capacity(EVENTS);
        for l in 0..EVENTS {
            let e = &ev[l * EVENT_DIM..(l + 1) * EVENT_DIM];
            if e[0] == 0.0 {
                continue; // an empty place is masked out
            }
            let mut z = Vec::with_capacity(ATTN_EVENT_DIM);
            z.extend_from_slice(e);
            z.push((l < MEMORY_EVENTS) as u8 as f32);
            z.extend_from_slice(&interval(days[l]));
            let key = self.k.apply(&z);
            let mut lg = [0f32; ATTN_HEADS];
            for (h, lg) in lg.iter_mut().enumerate() {
                let r = h * dh..(h + 1) * dh;
                let dot: f32 = key[r.clone()].iter().zip(&q[r]).map(|(a, b)| a * b).sum();
                *lg = dot / (dh as f32).sqrt();
            }
            logits.push(lg);
            values.push(self.v.apply(&z));
        }
        let at = x.len();
        x.resize(at + d, 0.0);
        for h in 0..ATTN_HEADS {
            let top = logits
                .iter()
                .map(|l| l[h])
                .fold(f32::NEG_INFINITY, f32::max);
            let w: Vec<f32> = logits.iter().map(|l| (l[h] - top).exp()).collect();
            let sum: f32 = w.iter().sum();
            for (w, v) in w.iter().zip(&values) {
                for i in h * dh..(h + 1) * dh {
                    x[at + i] += w / sum * v[i];
                }
            }
        }
    }
}

/// The keyed state's parameters (`ssmkit::model::keyed` has the read this computes).
#[derive(Clone, Debug)]
struct Keyed {
    /// `[2, C]` decay rates per event source (memory, entity) and channel (per day).
    rate: Vec<f32>,
    /// `[2, cycles]` frequencies (radians per day).
    omega: Vec<f32>,
    /// Event → 2 selective step pre-activations (the memory's, then the entity's).
    select: Option<Dense>,
    modes: usize,
    cycles: usize,
}

impl Keyed {
    fn channels(&self) -> usize {
        self.modes + 2 * self.cycles
    }

    /// Appends a candidate's read of its events ([`Events`]; `2 · C · EVENT_DIM`
    /// numbers) to `out`.
    fn read(&self, ev: &Events, out: &mut Vec<f32>) {
        let (ev, days) = (&ev.0, &ev.1);
        let c = self.channels();
        for (source, range) in [(0, 0..MEMORY_EVENTS), (1, MEMORY_EVENTS..EVENTS)] {
            let scale = 1.0 / (range.len() as f32).sqrt();
            let at = out.len();
            out.resize(at + c * EVENT_DIM, 0.0);
            for l in range {
                let e = &ev[l * EVENT_DIM..(l + 1) * EVENT_DIM];
                if e[0] == 0.0 {
                    continue; // an empty place reads 0
                }
                let s = self
                    .select
                    .as_ref()
                    .map_or(1.0, |p| softplus(p.apply(e)[source]));
                for ch in 0..c {
                    let mut k = (-self.rate[source * c + ch] * s * days[l]).exp();
                    if ch >= self.modes {
                        let j = (ch - self.modes) % self.cycles;
                        let phase = self.omega[source * self.cycles + j] * days[l];
                        k *= if ch < self.modes + self.cycles {
                            phase.cos()
                        } else {
                            phase.sin()
                        };
                    }
                    let r = &mut out[at + ch * EVENT_DIM..at + (ch + 1) * EVENT_DIM];
                    for (r, x) in r.iter_mut().zip(e) {
                        *r += k * x;
                    }
                }
            }
            for r in &mut out[at..] {
                *r *= scale;
            }
        }
    }
}

/// ln(1 + eˣ), without overflow.
fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// The pointwise branch: fc1 (plus, with `picks`, the picks' term), ReLU, with
/// `set_encoder` the set layer and ReLU, fc2.
#[derive(Clone, Debug)]
struct Pointwise {
    fc1: Dense,
    set: Option<Dense>,
    fc2: Dense,
    /// With `picks`: the sum of the picked candidates' inputs → hidden units (no bias).
    pick: Option<Dense>,
}

impl Pointwise {
    /// The scores of a turn's candidates from fc1's outputs `pre` and a term `shift`
    /// added to every candidate's (the picks').
    fn scores(&self, pre: &[Vec<f32>], shift: Option<&[f32]>) -> Vec<f32> {
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
        let mut one = [0f32; 1];
        hidden
            .iter()
            .map(|h| {
                self.fc2.apply_into(h, &mut one);
                one[0]
            })
            .collect()
    }
}

/// What greedy picks read again: the pointwise branch, each candidate's inputs and fc1
/// outputs.
type Picking<'a> = (&'a Pointwise, Vec<Vec<f32>>, Vec<Vec<f32>>);

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

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Runtime> {
        let bad = |msg: String| Error::Input(format!("{}: {msg}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let meta = meta
            .metadata()
            .clone()
            .ok_or_else(|| bad("no __metadata__: not an ssmkit export".into()))?;
        let meta = Metadata::read(&meta).map_err(bad)?;
        let config = meta.model_config.clone();
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        // The recorded digest catches any changed byte in the tensors.
        let mut views = st.tensors();
        views.sort_by(|a, b| a.0.cmp(&b.0));
        let digest = digest_of(
            views
                .iter()
                .map(|(n, t)| (n.as_str(), t.dtype(), t.shape(), t.data())),
        );
        if digest != meta.tensors_sha256().map_err(bad)? {
            return Err(bad(
                "tensor data does not match its recorded SHA-256: the file is damaged".into(),
            ));
        }
        let mut fingerprint = [0u8; 16];
        for (i, b) in fingerprint.iter_mut().enumerate() {
            *b = u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        let l = Loader::new(st, path);
        let c = &config;
        let h = c.d_model;
        let temporal = c.variant.is_temporal();
        let (mem_rows, mem_cols, memory_emb) =
            l.matrix(scorer::MEMORY_EMB, c.d_slot, ScaleAxis::Column)?;
        let (ent_rows, ent_cols, entity_emb) =
            l.matrix(scorer::ENTITY_EMB, c.d_slot, ScaleAxis::Column)?;
        if mem_cols != c.d_slot
            || ent_cols != c.d_slot
            || mem_rows != c.memory_slots.max(1)
            || ent_rows != c.entity_slots + 1
        {
            return Err(bad("embedding tables do not match the model config".into()));
        }
        let mut mamba = Vec::new();
        let mut s4d = Vec::new();
        let layers = if temporal { c.layers } else { 0 };
        for i in 0..layers {
            let m = mixer(i);
            match c.variant {
                Variant::S4d => s4d.push(l.s4d(&norm(i), &m, h, (c.d_state / 2).max(1))?),
                _ => {
                    let e = c.expand * h;
                    let n = c.d_state;
                    let r = h.div_ceil(16);
                    let k = c.d_conv;
                    let (ws, conv_w) = l.f32s(&join(&join(&m, mamba::CONV1D), WEIGHT))?;
                    if ws != [e, 1, k] {
                        return Err(bad(format!(
                            "`{m}.conv1d.weight` is {ws:?}, expected [{e}, 1, {k}]"
                        )));
                    }
                    let a_log = l.vector(&join(&m, mamba::A_LOG), e * n)?;
                    mamba.push(Mamba {
                        norm: l.vector(&join(&norm(i), WEIGHT), h)?,
                        in_proj: l.dense(&join(&m, mamba::IN_PROJ), h, 2 * e)?,
                        conv_w,
                        conv_b: l.vector(&join(&join(&m, mamba::CONV1D), BIAS), e)?,
                        x_proj: l.dense(&join(&m, mamba::X_PROJ), e, r + 2 * n)?,
                        dt_proj: l.dense(&join(&m, mamba::DT_PROJ), r, e)?,
                        a: a_log.iter().map(|v| -v.exp()).collect(),
                        d: l.vector(&join(&m, mamba::D), e)?,
                        out_proj: l.dense(&join(&m, mamba::OUT_PROJ), e, h)?,
                        e,
                        n,
                        r,
                        k,
                        selective: c.selective,
                    });
                }
            }
        }
        let mlp = if c.variant == Variant::Xattn {
            None
        } else {
            Some(Pointwise {
                fc1: l.dense(scorer::MLP_FC1, c.pointwise_in(), c.mlp_hidden)?,
                set: if c.set_encoder {
                    Some(l.dense(scorer::MLP_SET, 2 * c.mlp_hidden, c.mlp_hidden)?)
                } else {
                    None
                },
                fc2: l.dense(scorer::MLP_FC2, c.mlp_hidden, 1)?,
                pick: if c.picks > 0 {
                    Some(l.dense(scorer::MLP_PICK, c.pointwise_in(), c.mlp_hidden)?)
                } else {
                    None
                },
            })
        };
        let path_enc = if c.variant == Variant::Dual {
            let gate = l.vector(path::GATE, 1)?;
            Some(PathEncoder {
                hop_in: l.dense(path::HOP_IN, HOP_DIM, c.path_channels)?,
                s4d: l.s4d(path::S4D_NORM, path::S4D_MIXER, c.path_channels, 4)?,
                out: l.dense(path::OUT, c.path_channels, 1)?,
                gate: gate[0],
            })
        } else {
            None
        };
        let xattn = if c.variant == Variant::Xattn {
            let side = c.xattn_side();
            Some(Xattn {
                q_proj: l.dense(xattn::Q_PROJ, c.content_dim + c.d_slot, c.d_attn)?,
                k_proj: l.dense(xattn::K_PROJ, c.content_dim + side, c.d_attn)?,
                q_norm: l.layer_norm(xattn::Q_NORM, c.d_attn)?,
                k_norm: l.layer_norm(xattn::K_NORM, c.d_attn)?,
                gate: l.dense(xattn::GATE, side + c.d_slot, 1)?,
                value: l.dense(xattn::VALUE, side + c.d_slot, 1)?,
            })
        } else {
            None
        };
        let keyed = if c.keyed_channels() > 0 {
            let ch = c.keyed_channels();
            Some(Keyed {
                rate: l
                    .vector(scorer::KEYED_LOG_RATE, 2 * ch)?
                    .iter()
                    .map(|v| v.exp())
                    .collect(),
                omega: if c.keyed_cycles > 0 {
                    l.vector(scorer::KEYED_OMEGA, 2 * c.keyed_cycles)?
                } else {
                    Vec::new()
                },
                select: if c.selective {
                    Some(l.dense(scorer::KEYED_SELECT, EVENT_DIM, 2)?)
                } else {
                    None
                },
                modes: c.keyed_modes,
                cycles: c.keyed_cycles,
            })
        } else {
            None
        };
        let attn = if c.variant == Variant::Attn {
            Some(EventAttn {
                q: l.dense(attn::Q_PROJ, c.attn_query_in(), c.d_attn)?,
                k: l.dense(attn::K_PROJ, ATTN_EVENT_DIM, c.d_attn)?,
                v: l.dense(attn::V_PROJ, ATTN_EVENT_DIM, c.d_attn)?,
            })
        } else {
            None
        };
        let rt = Runtime {
            keyed,
            attn,
            quantization: meta.quantization,
            source: meta.source,
            fingerprint,
            memory_emb,
            entity_emb,
            cand_enc_t: None,
            cand_enc: temporal
                .then(|| l.dense(scorer::CAND_ENC, c.cand_in(), h))
                .transpose()?,
            turn_in: temporal
                .then(|| l.dense(scorer::TURN_IN, c.turn_in(), h))
                .transpose()?,
            query_proj: temporal
                .then(|| l.dense(scorer::QUERY_PROJ, c.query_in(), h))
                .transpose()?,
            norm_f: temporal
                .then(|| l.vector(&join(NORM_F, WEIGHT), h))
                .transpose()?,
            mamba,
            s4d,
            mlp,
            path: path_enc,
            xattn,
            config,
        };
        l.all_read()?;
        Ok(rt.with_transposed())
    }

    fn with_transposed(mut self) -> Runtime {
        self.cand_enc_t = self.cand_enc.as_ref().map(|d| Dense {
            wt: transpose(&d.wt, d.d_in, d.d_out),
            b: None,
            d_in: d.d_out,
            d_out: d.d_in,
        });
        self
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

    fn slot_row(table: &[f32], width: usize, row: usize) -> &[f32] {
        &table[row * width..(row + 1) * width]
    }

    fn entity_row(&self, e: i64) -> &[f32] {
        let c = &self.config;
        let row = if e < 0 {
            c.entity_slots
        } else {
            e as usize % c.entity_slots
        };
        Self::slot_row(&self.entity_emb, c.d_slot, row)
    }

    fn focal(&self, turn: &Turn) -> Vec<f32> {
        let a = self.entity_row(turn.focal[0] as i64);
        let b = self.entity_row(turn.focal[1] as i64);
        a.iter().zip(b).map(|(x, y)| (x + y) / 2.0).collect()
    }

    fn padded(v: &[f32], len: usize) -> Vec<f32> {
        let mut out = vec![0.0; len];
        let n = v.len().min(len);
        out[..n].copy_from_slice(&v[..n]);
        out
    }

    /// Checks a turn's shape against the model; a clear error names the problem.
    pub fn check(&self, turn: &Turn) -> Result<()> {
        let e = self.config.content_dim;
        if self.config.history || self.config.reads_events() {
            if turn.timestamp.is_none() {
                return Err(Error::Input(
                    "the turn has no timestamp: this model reads the user's history by time".into(),
                ));
            }
            if let Some(i) = turn.candidates.iter().position(|c| c.memory_id.is_none()) {
                return Err(Error::Input(format!(
                    "candidate {i} has no memory_id: this model keys the user's history by it"
                )));
            }
        }
        if !turn.query.is_empty() && turn.query.len() != e {
            return Err(Error::Input(format!(
                "query has {} values, the model reads {e}",
                turn.query.len()
            )));
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite(&turn.context) || !finite(&turn.query) {
            return Err(Error::Input(
                "the turn's context or query holds a NaN or infinite value".into(),
            ));
        }
        for (i, c) in turn.candidates.iter().enumerate() {
            if !finite(&c.content) || !c.hops.iter().all(|h| finite(h)) {
                return Err(Error::Input(format!(
                    "candidate {i}: its content or path holds a NaN or infinite value"
                )));
            }
            if !c.content.is_empty() && c.content.len() != e {
                return Err(Error::Input(format!(
                    "candidate {i}: content has {} values, the model reads {e}",
                    c.content.len()
                )));
            }
            if c.hops.len() > MAX_HOPS {
                return Err(Error::Input(format!(
                    "candidate {i}: {} hops, at most {MAX_HOPS}",
                    c.hops.len()
                )));
            }
            if c.features.iter().any(|x| !x.is_finite()) {
                return Err(Error::Input(format!(
                    "candidate {i}: a feature is NaN or infinite"
                )));
            }
        }
        Ok(())
    }

    /// The turn-relative features `[K][RELATIVE_DIM]` of the turn's candidates (empty for a
    /// model without them).
    fn relative(&self, turn: &Turn) -> Vec<f32> {
        if !self.config.relative {
            return Vec::new();
        }
        let n = turn.candidates.len();
        let features: Vec<f32> = turn
            .candidates
            .iter()
            .flat_map(|c| masked(&c.features, &c.missing))
            .collect();
        ssmkit_format::relative::turn_features(&features, &vec![1.0; n], n)
    }

    /// Candidate `i`'s row of [`Self::relative`] (empty when there are none).
    fn relative_row(relative: &[f32], i: usize) -> &[f32] {
        relative
            .get(i * RELATIVE_DIM..(i + 1) * RELATIVE_DIM)
            .unwrap_or(&[])
    }

    /// The candidates' encoder inputs `[K][cand_in]` (temporal models; empty otherwise).
    fn encodings(&self, state: &State, turn: &Turn) -> Vec<Vec<f32>> {
        let c = &self.config;
        let Some(enc) = &self.cand_enc else {
            return Vec::new();
        };
        let now = turn.timestamp.unwrap_or(0);
        let relative = self.relative(turn);
        turn.candidates
            .iter()
            .enumerate()
            .map(|(i, cand)| {
                let mut x = Vec::with_capacity(enc.d_in);
                x.extend(masked(&cand.features, &cand.missing));
                x.extend_from_slice(&cand.missing);
                if c.history {
                    let id = cand.memory_id.unwrap_or(cand.memory_slot as u64);
                    x.extend_from_slice(&state.history.features(now, id));
                }
                x.extend_from_slice(Self::relative_row(&relative, i));
                x.extend_from_slice(Self::slot_row(
                    &self.memory_emb,
                    c.d_slot,
                    cand.memory_slot as usize % c.memory_slots.max(1),
                ));
                let entity = match c.inputs {
                    Inputs::All => cand.entity as i64,
                    Inputs::TemporalOnly => -1,
                };
                x.extend_from_slice(self.entity_row(entity));
                if cand.content.len() == c.content_dim {
                    x.extend_from_slice(&cand.content);
                } else {
                    x.extend(Self::padded(&cand.content, c.content_dim));
                }
                x
            })
            .collect()
    }

    /// The turn as the model reads it: with `temporal_only` inputs, everything but the
    /// context, the time features and the history reads as absent (as the Burn model's
    /// `Scorer::restricted`; candidates' entities are read as "none" in [`Self::encodings`]).
    fn restricted<'a>(&self, turn: &'a Turn) -> std::borrow::Cow<'a, Turn> {
        if self.config.inputs != Inputs::TemporalOnly {
            return std::borrow::Cow::Borrowed(turn);
        }
        let mut t = turn.clone();
        t.query.clear();
        t.focal = [-1, -1];
        for c in &mut t.candidates {
            for d in 0..FEATURE_DIM {
                if !feat::TEMPORAL.contains(&d) {
                    c.features[d] = 0.0;
                    c.missing[d] = 0.0;
                }
            }
            c.memory_slot = 0;
            c.content.clear();
            c.hops.clear();
        }
        std::borrow::Cow::Owned(t)
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

    fn score_enc(&self, state: &State, turn: &Turn, enc: &[Vec<f32>]) -> Vec<f32> {
        let c = &self.config;
        // The pointwise branch's inputs and fc1 outputs (greedy picks read them again).
        let mut pointwise: Option<Picking> = None;
        let mut scores: Vec<f32> = match &self.mlp {
            Some(mlp) => {
                // The pointwise branch reads [features, missing, history, turn-relative]:
                // the encoder inputs start with them.
                let own = c.pointwise_in();
                let relative = if enc.is_empty() {
                    self.relative(turn)
                } else {
                    Vec::new()
                };
                // Greedy picks read the inputs again: kept only for them.
                let mut inputs = Vec::new();
                let mut x = vec![0f32; own];
                let pre: Vec<Vec<f32>> = turn
                    .candidates
                    .iter()
                    .enumerate()
                    .map(|(k, cand)| {
                        let input: &[f32] = match (enc.get(k), &self.keyed) {
                            // The keyed read follows the encoder's own inputs.
                            (Some(e), Some(keyed)) => {
                                x.clear();
                                x.extend_from_slice(&e[..own - c.keyed_dim()]);
                                match c.inputs {
                                    Inputs::All => {
                                        keyed.read(&events(&state.keyed, turn, cand), &mut x)
                                    }
                                    Inputs::TemporalOnly => x.resize(own, 0.0),
                                }
                                &x
                            }
                            (Some(e), None) => &e[..own],
                            (None, _) => {
                                // [features, missing, history, turn-relative], then the
                                // attention peer's read with them as its query.
                                x.clear();
                                x.extend(masked(&cand.features, &cand.missing));
                                x.extend_from_slice(&cand.missing);
                                let now = turn.timestamp.unwrap_or(0);
                                let id = cand.memory_id.unwrap_or(cand.memory_slot as u64);
                                if c.history {
                                    x.extend_from_slice(&state.history.features(now, id));
                                }
                                x.extend_from_slice(Self::relative_row(&relative, k));
                                if let Some(a) = &self.attn {
                                    match c.inputs {
                                        Inputs::All => {
                                            a.read(&events(&state.keyed, turn, cand), &mut x)
                                        }
                                        Inputs::TemporalOnly => x.resize(own, 0.0),
                                    }
                                }
                                &x
                            }
                        };
                        if mlp.pick.is_some() {
                            inputs.push(input.to_vec());
                        }
                        mlp.fc1.apply(input)
                    })
                    .collect();
                if mlp.pick.is_some() {
                    // Scored after every other term, pick by pick.
                    pointwise = Some((mlp, inputs, pre));
                    vec![0.0; turn.candidates.len()]
                } else {
                    mlp.scores(&pre, None)
                }
            }
            None => vec![0.0; turn.candidates.len()],
        };
        let query = Self::padded(&turn.query, c.content_dim);
        if c.variant.is_temporal() {
            let h = c.d_model;
            let last = &state.values[state.values.len() - h..];
            let mut qin = last.to_vec();
            qin.extend_from_slice(&turn.context);
            qin.extend_from_slice(&query);
            qin.extend(self.focal(turn));
            let q = self
                .query_proj
                .as_ref()
                .expect("temporal model")
                .apply(&qin);
            let scale = (h as f32).sqrt();
            // (W x + b)·q = x·(Wᵀq) + b·q
            let v = self.cand_enc_t.as_ref().expect("temporal model").apply(&q);
            let bq = self
                .cand_enc
                .as_ref()
                .and_then(|d| d.b.as_deref())
                .map_or(0.0, |b| dot(b, &q));
            for (s, x) in scores.iter_mut().zip(enc) {
                *s += (dot(x, &v) + bq) / scale;
            }
        }
        if let Some(p) = &self.path {
            let gate = sigmoid(p.gate);
            for (s, cand) in scores.iter_mut().zip(&turn.candidates) {
                let mut st = vec![0f32; p.s4d.state_len()];
                let n = cand.hops.len().max(1);
                let mut y = vec![0f32; p.s4d.h];
                for i in 0..n {
                    let hop = cand.hops.get(i).copied().unwrap_or([0.0; HOP_DIM]);
                    y = p.s4d.step(&p.hop_in.apply(&hop), &mut st);
                }
                *s += p.out.apply(&y)[0] * gate;
            }
        }
        if let Some(xa) = &self.xattn {
            let project = self.focal(turn);
            let mut qin = query.clone();
            qin.extend_from_slice(&project);
            let q = xa.q_norm.apply(&xa.q_proj.apply(&qin));
            let scale = (c.d_attn as f32).sqrt();
            let relative = self.relative(turn);
            for (i, (s, cand)) in scores.iter_mut().zip(&turn.candidates).enumerate() {
                let mut side: Vec<f32> = masked(&cand.features, &cand.missing).collect();
                side.extend_from_slice(&cand.missing);
                side.extend_from_slice(Self::relative_row(&relative, i));
                side.extend_from_slice(Self::slot_row(
                    &self.memory_emb,
                    c.d_slot,
                    cand.memory_slot as usize % c.memory_slots.max(1),
                ));
                let mut kin = Self::padded(&cand.content, c.content_dim);
                kin.extend_from_slice(&side);
                let key = xa.k_norm.apply(&xa.k_proj.apply(&kin));
                side.extend_from_slice(&project);
                let sim = dot(&key, &q) / scale;
                *s += sim * sigmoid(xa.gate.apply(&side)[0]) + xa.value.apply(&side)[0];
            }
        }
        match pointwise {
            Some((mlp, inputs, pre)) => Self::greedy(mlp, c.picks, &inputs, &pre, &scores),
            None => scores,
        }
    }

    /// Greedy picks (the Burn model's `Scorer::rounds`): round j scores the candidates
    /// left given the picks before it and picks the best; pick j scores P − j above the
    /// best candidate left after P picks (at least −1e4), which keep those scores.
    fn greedy(
        mlp: &Pointwise,
        picks: usize,
        inputs: &[Vec<f32>],
        pre: &[Vec<f32>],
        rest: &[f32],
    ) -> Vec<f32> {
        let pick = mlp.pick.as_ref().expect("a model with picks");
        let n = rest.len();
        let mut chosen = vec![0f32; pick.d_in];
        let mut place: Vec<Option<usize>> = vec![None; n];
        let mut shift = vec![0f32; pick.d_out];
        let mut j = 0;
        loop {
            pick.apply_into(&chosen, &mut shift);
            let scores: Vec<f32> = mlp
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
                [turn.focal[0] as i64, turn.focal[1] as i64],
                shown.map(|(cand, &l)| ssmkit_format::keyed::Shown {
                    memory: cand.memory_id.unwrap_or(cand.memory_slot as u64),
                    entity: cand.entity as u64,
                    relevant: l > 0.0,
                    log_age: masked(&cand.features, &cand.missing).next().unwrap_or(0.0),
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

/// Features with missing values zeroed (as the dataset loader stores them).
fn masked<'a>(
    f: &'a [f32; FEATURE_DIM],
    m: &'a [f32; FEATURE_DIM],
) -> impl Iterator<Item = f32> + 'a {
    f.iter()
        .zip(m)
        .map(|(x, m)| if *m == 1.0 { 0.0 } else { *x })
}
