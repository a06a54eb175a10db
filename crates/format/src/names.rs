//! The export's tensor names, written by the exporter and read by the runtime. Backbone
//! layers follow the reference Mamba checkpoint (`layers.{i}.mixer.in_proj.weight`, …,
//! `norm_f.weight`); the scorer, the dual variant's path encoder and the cross-attention
//! scorer live under `scorer.`, `path.` and `xattn.`. A parameterized module (a linear
//! projection, a norm) stores `<base>.weight` and, when it has one, `<base>.bias`;
//! quantized weights are `<base>.qweight` / `<base>.qweight2` with `<base>.scale`.

/// Layer `i`'s mixer (Mamba or S4D).
pub fn mixer(i: usize) -> String {
    format!("layers.{i}.mixer")
}

/// Layer `i`'s norm (RMSNorm for Mamba, LayerNorm for S4D).
pub fn norm(i: usize) -> String {
    format!("layers.{i}.norm")
}

/// `<base>.<part>`.
pub fn join(base: &str, part: &str) -> String {
    format!("{base}.{part}")
}

/// Parts of a parameterized module.
pub const WEIGHT: &str = "weight";
pub const BIAS: &str = "bias";
/// Quantized codes (int8, ternary) and their per-channel scales.
pub const QWEIGHT: &str = "qweight";
pub const QWEIGHT2: &str = "qweight2";
pub const SCALE: &str = "scale";

/// The final norm after the last layer.
pub const NORM_F: &str = "norm_f";

/// The parts of a Mamba mixer, under [`mixer`].
pub mod mamba {
    pub const IN_PROJ: &str = "in_proj";
    pub const CONV1D: &str = "conv1d";
    pub const X_PROJ: &str = "x_proj";
    pub const DT_PROJ: &str = "dt_proj";
    pub const A_LOG: &str = "A_log";
    pub const D: &str = "D";
    pub const OUT_PROJ: &str = "out_proj";
}

/// The parts of an S4D mixer, under [`mixer`] (or [`path::S4D_MIXER`]).
pub mod s4d {
    pub const LOG_DT: &str = "log_dt";
    pub const LOG_A_REAL: &str = "log_A_real";
    pub const A_IMAG: &str = "A_imag";
    pub const C_RE: &str = "C_re";
    pub const C_IM: &str = "C_im";
    pub const D: &str = "D";
    pub const OUT_PROJ: &str = "out_proj";
}

/// The scorer: embedding tables, the candidate, token and query projections, the
/// pointwise branch.
pub mod scorer {
    pub const MEMORY_EMB: &str = "scorer.memory_emb";
    pub const ENTITY_EMB: &str = "scorer.entity_emb";
    pub const CAND_ENC: &str = "scorer.cand_enc";
    pub const TURN_IN: &str = "scorer.turn_in";
    pub const QUERY_PROJ: &str = "scorer.query_proj";
    pub const MLP_FC1: &str = "scorer.mlp.fc1";
    pub const MLP_FC2: &str = "scorer.mlp.fc2";
    /// The pointwise branch's set layer (with `set_encoder`), between fc1 and fc2.
    pub const MLP_SET: &str = "scorer.mlp.set";
    /// The pointwise branch's second hidden layer (with `mlp_layers = 2`), before fc2.
    pub const MLP_MID: &str = "scorer.mlp.mid";
    /// The pointwise branch's term for the candidates picked so far (with `picks`).
    pub const MLP_PICK: &str = "scorer.mlp.pick";
    /// The keyed state: `[2, C]` log decay rates, `[2, cycles]` frequencies (with
    /// oscillating modes), the selective step's projection (with selection).
    pub const KEYED_LOG_RATE: &str = "scorer.keyed.log_rate";
    pub const KEYED_OMEGA: &str = "scorer.keyed.omega";
    pub const KEYED_SELECT: &str = "scorer.keyed.select";
}

/// The dual variant's path encoder.
pub mod path {
    pub const HOP_IN: &str = "path.hop_in";
    pub const S4D_NORM: &str = "path.s4d.norm";
    pub const S4D_MIXER: &str = "path.s4d.mixer";
    pub const OUT: &str = "path.out";
    pub const GATE: &str = "path.gate";
}

/// The cross-attention scorer.
pub mod xattn {
    pub const Q_PROJ: &str = "xattn.q_proj";
    pub const K_PROJ: &str = "xattn.k_proj";
    pub const Q_NORM: &str = "xattn.q_norm";
    pub const K_NORM: &str = "xattn.k_norm";
    pub const GATE: &str = "xattn.gate";
    pub const VALUE: &str = "xattn.value";
}

/// The attention peer: query, key and value projections over each candidate's events.
pub mod attn {
    pub const Q_PROJ: &str = "attn.q_proj";
    pub const K_PROJ: &str = "attn.k_proj";
    pub const V_PROJ: &str = "attn.v_proj";
}
