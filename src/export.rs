//! `ssmkit export`: a trained run as one safetensors file for the plain-Rust runtime.
//!
//! Tensor names follow the reference Mamba checkpoint (`layers.{i}.mixer.in_proj.weight`,
//! `…conv1d.weight`, `…x_proj.weight`, `…dt_proj.weight`, `…A_log`, `…D`,
//! `…out_proj.weight`, `layers.{i}.norm.weight`, `norm_f.weight`), with linear weights
//! stored `[out, in]` as PyTorch does. S4D layers use `layers.{i}.mixer.{log_dt,
//! log_A_real, A_imag, C_re, C_im, D, out_proj.weight, out_proj.bias}` and a LayerNorm
//! `layers.{i}.norm.{weight,bias}`. The scorer's parts live under `scorer.` (embeddings,
//! `cand_enc`, `turn_in`, `query_proj`, `mlp.fc1`, `mlp.fc2`), the dual variant's path
//! encoder under `path.` (`hop_in`, `s4d.*` as an S4D layer, `out`, `gate`) and the
//! cross-attention scorer under `xattn.`.
//!
//! Quantization (`__metadata__["quantization"]`): `f32` keeps everything. `int8` stores
//! every linear projection and embedding table as `<name>.qweight` (I8, symmetric, one
//! scale per output channel: per row of a projection `[out, in]`, per column of an
//! embedding `[rows, dim]`) and `<name>.scale` (F16); `ternary` stores them as
//! `<name>.qweight2` (U8, four 2-bit codes per byte, 0/1/2 = −1/0/+1, rows padded to a
//! byte) with absmean scales on the same axes. State-sensitive tensors (A_log, D, dt_proj,
//! the S4D parameters, norms, conv1d, biases) are F16 beside quantized projections, F32 in
//! the f32 export.
//! `__metadata__` also holds the format version, the model config, the feature layout and
//! the SHA-256 of all tensor bytes, which the runtime checks.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear, RmsNorm};
use burn::prelude::*;
use serde::Serialize;
use ssmkit_format::meta::digest_of;
pub use ssmkit_format::meta::metadata;
use ssmkit_format::names::{
    BIAS, NORM_F, QWEIGHT, QWEIGHT2, SCALE, WEIGHT, attn, join, mamba, mixer, norm, path, s4d,
    scorer, xattn,
};
pub use ssmkit_format::quant::Quant;
use ssmkit_format::quant::{ScaleAxis, quantize_int8, quantize_ternary};
use ssmkit_format::simd::transpose;

use crate::error::{Error, Result};
use crate::model::mamba::MambaBlock;
use crate::model::s4d::S4dBlock;
use crate::model::scorer::{ModelConfig, Scorer};

/// A named f32 tensor taken from the model, and whether it is a quantizable projection
/// (`[out, in]` rows) or kept in full precision.
#[derive(Clone, Debug)]
pub struct Named {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub quantizable: bool,
    /// Where the quantization scales run: embeddings map a row (one-hot input) to its
    /// columns (the outputs), so their output channels are columns.
    pub axis: ScaleAxis,
}

fn vals<const D: usize>(p: &Param<Tensor<D>>) -> (Vec<usize>, Vec<f32>) {
    let t = p.val();
    let shape = t.dims().to_vec();
    (shape, t.try_into_vec_as::<f32>().expect("f32 parameter"))
}

struct Collector(Vec<Named>);

impl Collector {
    fn put(&mut self, name: String, shape: Vec<usize>, data: Vec<f32>, quantizable: bool) {
        self.0.push(Named {
            name,
            shape,
            data,
            quantizable,
            axis: ScaleAxis::Row,
        });
    }

    fn linear(&mut self, name: &str, l: &Linear, quantizable: bool) {
        let (s, w) = vals(&l.weight);
        self.put(
            join(name, WEIGHT),
            vec![s[1], s[0]],
            transpose(&w, s[0], s[1]),
            quantizable,
        );
        if let Some(b) = &l.bias {
            let (s, v) = vals(b);
            self.put(join(name, BIAS), s, v, false);
        }
    }

    fn rms(&mut self, name: &str, n: &RmsNorm) {
        let (s, v) = vals(&n.gamma);
        self.put(join(name, WEIGHT), s, v, false);
    }

    fn layer_norm(&mut self, name: &str, n: &LayerNorm) {
        let (s, v) = vals(&n.gamma);
        self.put(join(name, WEIGHT), s, v, false);
        if let Some(b) = &n.beta {
            let (s, v) = vals(b);
            self.put(join(name, BIAS), s, v, false);
        }
    }

    fn embedding(&mut self, name: &str, e: &Embedding) {
        let (s, v) = vals(&e.weight);
        self.put(join(name, WEIGHT), s, v, true);
        self.0.last_mut().expect("just put").axis = ScaleAxis::Column;
    }

    fn param<const D: usize>(&mut self, name: String, p: &Param<Tensor<D>>) {
        let (s, v) = vals(p);
        self.put(name, s, v, false);
    }

    fn mamba(&mut self, i: usize, b: &MambaBlock) {
        let m = mixer(i);
        self.rms(&norm(i), &b.norm);
        self.linear(&join(&m, mamba::IN_PROJ), &b.in_proj, true);
        self.param(join(&join(&m, mamba::CONV1D), WEIGHT), &b.conv1d.weight);
        if let Some(bias) = &b.conv1d.bias {
            self.param(join(&join(&m, mamba::CONV1D), BIAS), bias);
        }
        self.linear(&join(&m, mamba::X_PROJ), &b.x_proj, true);
        self.linear(&join(&m, mamba::DT_PROJ), &b.dt_proj, false);
        self.param(join(&m, mamba::A_LOG), &b.a_log);
        self.param(join(&m, mamba::D), &b.d);
        self.linear(&join(&m, mamba::OUT_PROJ), &b.out_proj, true);
    }

    fn s4d(&mut self, norm: &str, m: &str, b: &S4dBlock) {
        self.layer_norm(norm, &b.norm);
        self.param(join(m, s4d::LOG_DT), &b.log_dt);
        self.param(join(m, s4d::LOG_A_REAL), &b.log_a_real);
        self.param(join(m, s4d::A_IMAG), &b.a_imag);
        self.param(join(m, s4d::C_RE), &b.c_re);
        self.param(join(m, s4d::C_IM), &b.c_im);
        self.param(join(m, s4d::D), &b.d);
        let (s, w) = vals(&b.out_weight);
        self.put(
            join(&join(m, s4d::OUT_PROJ), WEIGHT),
            vec![s[1], s[0]],
            transpose(&w, s[0], s[1]),
            false,
        );
        self.param(join(&join(m, s4d::OUT_PROJ), BIAS), &b.out_bias);
    }
}

/// Every tensor of a scorer under its export name.
pub fn named_tensors(model: &Scorer) -> Vec<Named> {
    let mut c = Collector(Vec::new());
    for (i, b) in model.mamba.iter().enumerate() {
        c.mamba(i, b);
    }
    for (i, b) in model.s4d.iter().enumerate() {
        c.s4d(&norm(i), &mixer(i), b);
    }
    if let Some(n) = &model.norm {
        c.rms(NORM_F, n);
    }
    c.embedding(scorer::MEMORY_EMB, &model.memory_emb);
    c.embedding(scorer::ENTITY_EMB, &model.entity_emb);
    for (name, l) in [
        (scorer::CAND_ENC, &model.cand_enc),
        (scorer::TURN_IN, &model.turn_in),
        (scorer::QUERY_PROJ, &model.query_proj),
        (scorer::MLP_FC1, &model.mlp_in),
        (scorer::MLP_FC2, &model.mlp_out),
        (scorer::MLP_SET, &model.mlp_set),
        (scorer::MLP_MID, &model.mlp_mid),
        (scorer::MLP_PICK, &model.mlp_pick),
    ] {
        if let Some(l) = l {
            c.linear(name, l, true);
        }
    }
    if let Some(a) = &model.attn {
        c.linear(attn::Q_PROJ, &a.q_proj, true);
        c.linear(attn::K_PROJ, &a.k_proj, true);
        c.linear(attn::V_PROJ, &a.v_proj, true);
    }
    if let Some(k) = &model.keyed {
        c.param(scorer::KEYED_LOG_RATE.into(), &k.log_rate);
        if let Some(o) = &k.omega {
            c.param(scorer::KEYED_OMEGA.into(), o);
        }
        if let Some(l) = &k.select {
            c.linear(scorer::KEYED_SELECT, l, false);
        }
    }
    if let Some(p) = &model.path {
        c.linear(path::HOP_IN, &p.hop_in, true);
        c.s4d(path::S4D_NORM, path::S4D_MIXER, &p.s4d);
        c.linear(path::OUT, &p.out, true);
        c.param(path::GATE.into(), &p.gate);
    }
    if let Some(x) = &model.xattn {
        c.linear(xattn::Q_PROJ, &x.q_proj, true);
        c.linear(xattn::K_PROJ, &x.k_proj, true);
        c.layer_norm(xattn::Q_NORM, &x.q_norm);
        c.layer_norm(xattn::K_NORM, &x.k_norm);
        c.linear(xattn::GATE, &x.gate, true);
        c.linear(xattn::VALUE, &x.value, true);
    }
    c.0
}

/// A tensor as stored: dtype, shape, little-endian bytes.
#[derive(Clone, Debug)]
pub struct Stored {
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The tensors of `model` as stored under `quant`.
pub fn store(model: &Scorer, quant: Quant) -> BTreeMap<String, Stored> {
    let mut out = BTreeMap::new();
    for t in named_tensors(model) {
        let quantize = t.quantizable && t.shape.len() == 2 && quant != Quant::F32;
        if !quantize {
            // Full-precision tensors: F32 in the f32 export, F16 beside quantized projections.
            let stored = if quant == Quant::F32 {
                Stored {
                    dtype: safetensors::Dtype::F32,
                    shape: t.shape,
                    bytes: f32_bytes(&t.data),
                }
            } else {
                Stored {
                    dtype: safetensors::Dtype::F16,
                    shape: t.shape,
                    bytes: t
                        .data
                        .iter()
                        .flat_map(|&x| burn::tensor::f16::from_f32(x).to_le_bytes())
                        .collect(),
                }
            };
            out.insert(t.name, stored);
            continue;
        }
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let (codes, scales) = match quant {
            Quant::Int8 => {
                let (q, s) = quantize_int8(&t.data, rows, cols, t.axis);
                (
                    (
                        QWEIGHT,
                        Stored {
                            dtype: safetensors::Dtype::I8,
                            shape: vec![rows, cols],
                            bytes: q.iter().map(|&v| v as u8).collect(),
                        },
                    ),
                    s,
                )
            }
            _ => {
                let (q, s) = quantize_ternary(&t.data, rows, cols, t.axis);
                (
                    (
                        QWEIGHT2,
                        Stored {
                            dtype: safetensors::Dtype::U8,
                            shape: vec![rows, cols.div_ceil(4)],
                            bytes: q,
                        },
                    ),
                    s,
                )
            }
        };
        let base = t
            .name
            .strip_suffix(&format!(".{WEIGHT}"))
            .unwrap_or(&t.name)
            .to_string();
        out.insert(join(&base, codes.0), codes.1);
        out.insert(
            join(&base, SCALE),
            Stored {
                dtype: safetensors::Dtype::F16,
                shape: vec![scales.len()],
                bytes: scales
                    .iter()
                    .flat_map(|&x| burn::tensor::f16::from_f32(x).to_le_bytes())
                    .collect(),
            },
        );
    }
    out
}

/// SHA-256 over every tensor's name, dtype, shape and bytes, in name order.
pub fn tensors_digest(tensors: &BTreeMap<String, Stored>) -> String {
    digest_of(
        tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.dtype, t.shape.as_slice(), t.bytes.as_slice())),
    )
}

/// Bytes per tensor group (the name's first component, and `layers` by kind).
#[derive(Clone, Debug, Serialize)]
pub struct SizeReport {
    pub groups: Vec<(String, usize)>,
    pub tensor_bytes: usize,
    pub file_bytes: usize,
}

fn group_of(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["layers", _, "mixer", rest @ ..] => format!("layers.*.mixer.{}", rest[0]),
        ["layers", _, rest @ ..] => format!("layers.*.{}", rest[0]),
        [a, b, ..] => format!("{a}.{b}"),
        [a] => a.to_string(),
        [] => String::new(),
    }
}

/// The safetensors bytes of `model` under `quant`, and their size report.
pub fn encode(
    model: &Scorer,
    cfg: &ModelConfig,
    quant: Quant,
    source: &serde_json::Value,
) -> Result<(Vec<u8>, SizeReport)> {
    let tensors = store(model, quant);
    let digest = tensors_digest(&tensors);
    let meta = metadata(cfg, quant, &digest, source);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                    .expect("consistent tensor"),
            )
        })
        .collect();
    let bytes = canonical_header(
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Save(format!("cannot serialize the model: {e}")))?,
    );
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for (n, t) in &tensors {
        *groups.entry(group_of(n)).or_default() += t.bytes.len();
    }
    let report = SizeReport {
        tensor_bytes: groups.values().sum(),
        groups: groups.into_iter().collect(),
        file_bytes: bytes.len(),
    };
    Ok((bytes, report))
}

/// The file with its JSON header's keys in sorted order. The safetensors writer takes the
/// metadata as a `HashMap`, whose order changes from one map to the next; the same model
/// must give the same bytes. The header keeps its length (the same keys and values), so
/// the tensor offsets and the padding stay as they are.
fn canonical_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length")) as usize;
    let header = &bytes[8..8 + n];
    let json_len = header.trim_ascii_end().len();
    let value: serde_json::Value =
        serde_json::from_slice(&header[..json_len]).expect("the writer's own header parses");
    // serde_json's maps are ordered by key.
    let sorted = serde_json::to_vec(&value).expect("serializes");
    if sorted.len() == json_len {
        bytes[8..8 + json_len].copy_from_slice(&sorted);
    }
    bytes
}

/// Options of `ssmkit export`.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub run: std::path::PathBuf,
    pub quant: Quant,
    pub out: std::path::PathBuf,
    /// A dataset whose GTS test cases verify the exported model against the run's.
    pub data: Option<std::path::PathBuf>,
    /// Largest relative DCG@10 drop allowed (with `data`).
    pub max_drop: Option<f64>,
    /// Replace an existing `out`.
    pub force: bool,
}

/// How the exported model scores the test cases against the run's Burn model.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub cases: usize,
    pub burn_dcg10: f64,
    pub export_dcg10: f64,
    /// (burn − export) / burn.
    pub relative_drop: f64,
    /// Largest |score difference| over real candidates.
    pub max_abs_diff: f64,
    /// Mean share of the top 10 the two models agree on.
    pub top10_agreement: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    pub out: std::path::PathBuf,
    pub quantization: String,
    pub sizes: SizeReport,
    /// Bytes of a saved state before any turn.
    pub state_bytes: usize,
    /// Bytes the state grows by per memory in the user's history table (0: the model keeps
    /// no history table), and the most memories the table keeps.
    pub history_entry_bytes: usize,
    pub history_max_entries: usize,
    pub verification: Option<Verification>,
}

/// Compares the runtime's scores with the Burn model's on `cases`.
pub fn verify(
    rt: &crate::runtime::Runtime,
    model: &Scorer,
    cfg: &ModelConfig,
    data: &crate::data::Dataset,
    cases: &[crate::eval::split::Case],
) -> Verification {
    use crate::metrics::{case_metrics, rank};
    let device = Device::flex();
    let burn = crate::eval::scoring::model_scores(model, cfg, data, cases, &device);
    let ours = crate::eval::replay::replay(rt, data, cases);
    let k = data.k;
    let (mut db, mut de, mut agree, mut max_diff) = (0.0, 0.0, 0.0, 0f64);
    for ((c, b), o) in cases.iter().zip(&burn).zip(&ours) {
        let u = &data.users[c.user];
        let labels: Vec<f64> = (0..k)
            .map(|j| (u.labels[c.turn * k + j] * u.valid[c.turn * k + j]) as f64)
            .collect();
        db += case_metrics(b, &labels, 10).dcg;
        de += case_metrics(o, &labels, 10).dcg;
        for j in 0..k {
            if u.valid[c.turn * k + j] == 1.0 {
                max_diff = max_diff.max((b[j] - o[j]).abs());
            }
        }
        let top = |s: &[f64]| -> Vec<usize> { rank(s).into_iter().take(10).collect() };
        let (tb, to) = (top(b), top(o));
        agree += tb.iter().filter(|i| to.contains(i)).count() as f64 / tb.len().max(1) as f64;
    }
    let n = cases.len().max(1) as f64;
    let (db, de) = (db / n, de / n);
    Verification {
        cases: cases.len(),
        burn_dcg10: db,
        export_dcg10: de,
        relative_drop: if db != 0.0 { (db - de) / db } else { 0.0 },
        max_abs_diff: max_diff,
        top10_agreement: agree / n,
    }
}

/// `ssmkit export`: encodes the run's selected model, verifies it when a dataset is
/// given, and only then moves the file into place.
pub fn export_run(opts: &ExportOptions) -> Result<ExportReport> {
    export_read(opts, None)
}

/// [`export_run`] with `opts.data` already opened, when it is (`ssmkit run` opens it
/// once for every stage).
pub fn export_read(
    opts: &ExportOptions,
    opened: Option<&crate::data::DatasetReader>,
) -> Result<ExportReport> {
    if let Some(m) = opts.max_drop
        && !(m.is_finite() && m >= -1.0)
    {
        return Err(Error::Usage(format!(
            "--max-drop {m}: expected a finite fraction (0.02 = 2%)"
        )));
    }
    if opts.max_drop.is_some() && opts.data.is_none() {
        return Err(Error::Usage(
            "--max-drop needs --data: the drop is measured on that dataset's test cases".into(),
        ));
    }
    let _lock = crate::lock::path(&opts.out)?;
    crate::atomic::check_output(&opts.out, opts.force)?;
    let device = Device::flex();
    let state = crate::run::read_run_state(&opts.run)?;
    let (model, cfg) = crate::run::load_run(&opts.run, false, &device)?;
    let source = serde_json::json!({
        "run": opts.run.display().to_string(),
        "seed": state.seed,
        "step": state.best_step,
        "dataset_sha256": state.dataset_sha,
        "state_sha256": crate::run::state_digest(&opts.run)?,
    });
    let (bytes, sizes) = encode(&model, &cfg, opts.quant, &source)?;
    let rt = crate::runtime::Runtime::from_bytes(&bytes, &opts.out)?;
    let verification = match &opts.data {
        Some(dir) => {
            let owned;
            let reader = match opened {
                Some(r) => r,
                None => {
                    owned = crate::data::DatasetReader::open(dir)?;
                    &owned
                }
            };
            let width = reader.outline.embedding_dim;
            if cfg.reads_content() && width != cfg.content_dim {
                return Err(Error::Mismatch(format!(
                    "--data {}: {width}-dimensional content embeddings, the model reads {}: verify it on data of its own width",
                    dir.display(),
                    cfg.content_dim
                )));
            }
            let (data, _) = crate::eval::split::read_test_users(
                reader,
                &state.cutoffs,
                crate::eval::split::RESIDENT_MB,
            )?;
            let (cases, _) = crate::eval::split::test_cases(&data, &state.cutoffs);
            if cases.is_empty() {
                return Err(Error::dataset(dir, "no test case to verify on"));
            }
            Some(verify(&rt, &model, &cfg, &data, &cases))
        }
        None => None,
    };
    if let (Some(v), Some(max)) = (&verification, opts.max_drop)
        && v.relative_drop > max
    {
        return Err(Error::Quality(format!(
            "the {} export loses {:.2}% of DCG@10 on the test cases ({:.4} → {:.4}), more than --max-drop {:.2}%; nothing written",
            opts.quant.name(),
            100.0 * v.relative_drop,
            v.burn_dcg10,
            v.export_dcg10,
            100.0 * max
        )));
    }
    crate::atomic::write_output(&opts.out, &bytes, opts.force)?;
    Ok(ExportReport {
        out: opts.out.clone(),
        quantization: opts.quant.name().into(),
        sizes,
        state_bytes: rt.zero_state().to_bytes(&rt.fingerprint).len(),
        history_entry_bytes: if rt.config.history {
            crate::history::ENTRY_BYTES
        } else {
            0
        },
        history_max_entries: crate::history::MAX_ENTRIES,
        verification,
    })
}
