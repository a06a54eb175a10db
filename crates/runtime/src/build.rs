//! Building a [`Runtime`] from an export's bytes: the metadata and the tensors' digest are
//! checked first, then each part the model config names is read.

use std::path::Path;

use super::keyed::{EventAttn, Keyed, Step};
use super::layers::{Dense, Mamba, PathEncoder, S4d, Xattn};
use super::load::Loader;
use super::pointwise::Pointwise;
use crate::{Error, Result, Runtime};
use ssmkit_format::features::HOP_DIM;
use ssmkit_format::keyed::{ATTN_EVENT_DIM, VALUE_DIM};
use ssmkit_format::meta::{Metadata, digest_of};
use ssmkit_format::model::{ModelConfig, Variant};
use ssmkit_format::names::{
    BIAS, NORM_F, WEIGHT, attn, join, mamba, mixer, norm, path, scorer, xattn,
};
use ssmkit_format::quant::ScaleAxis;
use ssmkit_format::simd::transpose;

impl Runtime {
    /// Loads an export from its bytes (`path` names it in errors); refuses a foreign,
    /// damaged or inconsistent one with the reason.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Runtime> {
        let (meta, st, fingerprint) = verified(bytes, path)?;
        let config = meta.model_config.clone();
        let l = Loader::new(st, path);
        let c = &config;
        let h = c.d_model;
        let temporal = c.variant.is_temporal();
        let (memory_emb, entity_emb) = embeddings(&l, c)?;
        let (mamba, s4d) = backbone(&l, c)?;
        let mlp = pointwise(&l, c)?;
        let path_enc = path_encoder(&l, c)?;
        let xattn = cross_attention(&l, c)?;
        let keyed = keyed_state(&l, c)?;
        let attn = event_attention(&l, c)?;
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

    /// Fills in `cand_enc_t`: the candidate encoder's weight transposed, for scoring.
    fn with_transposed(mut self) -> Runtime {
        self.cand_enc_t = self.cand_enc.as_ref().map(|d| Dense {
            wt: transpose(&d.wt, d.d_in, d.d_out),
            b: None,
            d_in: d.d_out,
            d_out: d.d_in,
        });
        self
    }
}

/// The export's metadata and tensors, once the tensors match their recorded SHA-256, and
/// the file's fingerprint (the first 16 bytes of that digest).
fn verified<'a>(
    bytes: &'a [u8],
    path: &Path,
) -> Result<(Metadata, safetensors::SafeTensors<'a>, [u8; 16])> {
    let bad = |msg: String| Error::Export {
        path: path.to_path_buf(),
        msg,
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let meta = meta
        .metadata()
        .clone()
        .ok_or_else(|| bad("no __metadata__: not an ssmkit export".into()))?;
    let meta = Metadata::read(&meta).map_err(bad)?;
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
    // The scheme's name must be the one its tensors are stored in.
    let stored = |suffix: &str| views.iter().any(|(n, _)| n.ends_with(suffix));
    let scheme = match (stored(".qweight"), stored(".qweight2")) {
        (false, false) => "f32",
        (true, false) => "int8",
        (false, true) => "ternary",
        (true, true) => "mixed",
    };
    if meta.quantization != scheme {
        return Err(bad(format!(
            "the metadata names quantization {} but the tensors are stored as {scheme}",
            meta.quantization
        )));
    }
    let mut fingerprint = [0u8; 16];
    for (i, b) in fingerprint.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    Ok((meta, st, fingerprint))
}

/// The memory and entity embedding tables, refused unless their shapes match the config.
fn embeddings(l: &Loader, c: &ModelConfig) -> Result<(Vec<f32>, Vec<f32>)> {
    let (mem_rows, mem_cols, memory_emb) =
        l.matrix(scorer::MEMORY_EMB, c.d_slot, ScaleAxis::Column)?;
    let (ent_rows, ent_cols, entity_emb) =
        l.matrix(scorer::ENTITY_EMB, c.d_slot, ScaleAxis::Column)?;
    if mem_cols != c.d_slot
        || ent_cols != c.d_slot
        || mem_rows != c.memory_slots.max(1)
        || ent_rows != c.entity_slots + 1
    {
        return Err(l.err("embedding tables do not match the model config".into()));
    }
    Ok((memory_emb, entity_emb))
}

/// The temporal backbone's blocks, Mamba or S4D by variant (none without a backbone).
fn backbone(l: &Loader, c: &ModelConfig) -> Result<(Vec<Mamba>, Vec<S4d>)> {
    let mut mamba = Vec::new();
    let mut s4d = Vec::new();
    let layers = if c.variant.is_temporal() { c.layers } else { 0 };
    for i in 0..layers {
        match c.variant {
            Variant::S4d => s4d.push(l.s4d(&norm(i), &mixer(i), c.d_model, c.backbone_modes())?),
            _ => mamba.push(mamba_block(l, c, i)?),
        }
    }
    Ok((mamba, s4d))
}

/// Mamba block `i` of the backbone, with its A = −exp(A_log).
fn mamba_block(l: &Loader, c: &ModelConfig, i: usize) -> Result<Mamba> {
    let m = mixer(i);
    let h = c.d_model;
    let e = c.d_inner();
    let n = c.d_state;
    let r = c.dt_rank();
    let width = c.d_conv;
    let (ws, conv_w) = l.f32s(&join(&join(&m, mamba::CONV1D), WEIGHT))?;
    if ws != [e, 1, width] {
        return Err(l.err(format!(
            "`{m}.conv1d.weight` is {ws:?}, expected [{e}, 1, {width}]"
        )));
    }
    let a_log = l.vector(&join(&m, mamba::A_LOG), e * n)?;
    Ok(Mamba {
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
        width,
        selective: c.selective,
    })
}

/// The pointwise branch (every variant but the cross-attention scorer).
fn pointwise(l: &Loader, c: &ModelConfig) -> Result<Option<Pointwise>> {
    if c.variant == Variant::Xattn {
        return Ok(None);
    }
    Ok(Some(Pointwise {
        fc1: l.dense(scorer::MLP_FC1, c.pointwise_in(), c.mlp_hidden)?,
        set: if c.set_encoder {
            Some(l.dense(scorer::MLP_SET, 2 * c.mlp_hidden, c.mlp_hidden)?)
        } else {
            None
        },
        mid: if c.mlp_layers > 1 {
            Some(l.dense(scorer::MLP_MID, c.mlp_hidden, c.mlp_hidden)?)
        } else {
            None
        },
        fc2: l.dense(scorer::MLP_FC2, c.mlp_hidden, 1)?,
        pick: if c.picks > 0 {
            Some(l.dense(scorer::MLP_PICK, c.pointwise_in(), c.mlp_hidden)?)
        } else {
            None
        },
    }))
}

/// The traversal path encoder and its gate (the dual variant).
fn path_encoder(l: &Loader, c: &ModelConfig) -> Result<Option<PathEncoder>> {
    if c.variant != Variant::Dual {
        return Ok(None);
    }
    let gate = l.vector(path::GATE, 1)?;
    Ok(Some(PathEncoder {
        hop_in: l.dense(path::HOP_IN, HOP_DIM, c.path_channels)?,
        s4d: l.s4d(
            path::S4D_NORM,
            path::S4D_MIXER,
            c.path_channels,
            c.path_modes(),
        )?,
        out: l.dense(path::OUT, c.path_channels, 1)?,
        gate: gate[0],
    }))
}

/// The cross-attention scorer's projections, norms and heads (the xattn variant).
fn cross_attention(l: &Loader, c: &ModelConfig) -> Result<Option<Xattn>> {
    if c.variant != Variant::Xattn {
        return Ok(None);
    }
    let side = c.xattn_side();
    Ok(Some(Xattn {
        q_proj: l.dense(xattn::Q_PROJ, c.content_dim + c.d_slot, c.d_attn)?,
        k_proj: l.dense(xattn::K_PROJ, c.content_dim + side, c.d_attn)?,
        q_norm: l.layer_norm(xattn::Q_NORM, c.d_attn)?,
        k_norm: l.layer_norm(xattn::K_NORM, c.d_attn)?,
        gate: l.dense(xattn::GATE, side + c.d_slot, 1)?,
        value: l.dense(xattn::VALUE, side + c.d_slot, 1)?,
    }))
}

/// The keyed state's decay rates, frequencies and selective step (models with keyed
/// channels).
fn keyed_state(l: &Loader, c: &ModelConfig) -> Result<Option<Keyed>> {
    if c.keyed_channels() == 0 {
        return Ok(None);
    }
    let ch = c.keyed_channels();
    Ok(Some(Keyed {
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
            Some(Step::of(&l.dense(scorer::KEYED_SELECT, VALUE_DIM, 2)?))
        } else {
            None
        },
        modes: c.keyed_modes,
        cycles: c.keyed_cycles,
    }))
}

/// The attention peer's projections (the attn variant).
fn event_attention(l: &Loader, c: &ModelConfig) -> Result<Option<EventAttn>> {
    if c.variant != Variant::Attn {
        return Ok(None);
    }
    Ok(Some(EventAttn {
        q: l.dense(attn::Q_PROJ, c.attn_query_in(), c.d_attn)?,
        k: l.dense(attn::K_PROJ, ATTN_EVENT_DIM, c.d_attn)?,
        v: l.dense(attn::V_PROJ, ATTN_EVENT_DIM, c.d_attn)?,
    }))
}
