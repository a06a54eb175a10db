//! The export file's metadata: the format version, the model config, the feature layout,
//! the quantization scheme and SHA-256 digests of the tensors and of the metadata itself.
//! The exporter writes it with [`metadata`]; a loader reads it back, checked, with
//! [`Metadata::read`].

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::features::{CONTEXT_NAMES, FEATURE_NAMES, HOP_FEATURE_NAMES, LAYOUT_VERSION};
use crate::keyed::{CYCLE_MAX_RATE, EVENT_NAMES, VALUE_DIM};
use crate::model::ModelConfig;
use crate::quant::Quant;

pub const FORMAT_VERSION: &str = "ssmkit-export-v1";

/// The keys of `__metadata__`, each value a JSON string.
pub mod key {
    pub const FORMAT_VERSION: &str = "format_version";
    pub const MODEL_CONFIG: &str = "model_config";
    pub const FEATURE_LAYOUT: &str = "feature_layout";
    pub const QUANTIZATION: &str = "quantization";
    pub const TENSORS_SHA256: &str = "tensors_sha256";
    /// Where the model came from (run, step, dataset).
    pub const SOURCE: &str = "source";
    pub const METADATA_SHA256: &str = "metadata_sha256";
}

/// SHA-256 over every tensor's name, dtype, shape and bytes; tensors must come in name
/// order.
pub fn digest_of<'a>(
    tensors: impl Iterator<Item = (&'a str, safetensors::Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = Sha256::new();
    for (name, dtype, shape, bytes) in tensors {
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}{shape:?}").as_bytes());
        h.update(bytes);
    }
    format!("{:x}", h.finalize())
}

/// How the keyed state reads its events: the numbers it sums, what each source's sums are
/// divided by, and the fastest an oscillating mode's envelope decays (per day).
fn keyed_read() -> serde_json::Value {
    serde_json::json!({
        "values": &EVENT_NAMES[..VALUE_DIM],
        "divided_by": {"memory": "sqrt of its places", "entity": "its events, at least 1"},
        // As written (0.1), not as the f32 widens (0.10000000149…).
        "cycle_max_rate": format!("{CYCLE_MAX_RATE}").parse::<f64>().unwrap_or(f64::NAN),
    })
}

/// What `__metadata__` carries, each value a JSON string.
pub fn metadata(
    cfg: &ModelConfig,
    quant: Quant,
    digest: &str,
    source: &serde_json::Value,
) -> HashMap<String, String> {
    let layout = serde_json::json!({
        "version": LAYOUT_VERSION,
        "features": FEATURE_NAMES,
        "context": CONTEXT_NAMES,
        "hop_features": HOP_FEATURE_NAMES,
        "keyed_events": EVENT_NAMES,
        "keyed_read": keyed_read(),
    });
    let scheme = serde_json::json!({
        "name": quant.name(),
        "projections": match quant {
            Quant::F32 => "F32",
            Quant::Int8 => "int8 symmetric per output channel: <name>.qweight (I8) * <name>.scale (F16); projections [out, in] scale per row, embeddings [rows, dim] per column",
            Quant::Ternary => "ternary per output channel: <name>.qweight2 (U8, 4 codes/byte, 0/1/2 = -1/0/+1) * <name>.scale (F16, absmean); projections per row, embeddings per column",
        },
        "full_precision": if quant == Quant::F32 { "everything F32" } else { "A_log, D, dt_proj, conv1d, S4D parameters, norms, biases, path.gate: F16" },
    });
    let meta = [
        (key::FORMAT_VERSION.to_string(), FORMAT_VERSION.to_string()),
        (
            key::MODEL_CONFIG.into(),
            serde_json::to_string(cfg).expect("json"),
        ),
        (key::FEATURE_LAYOUT.into(), layout.to_string()),
        (key::QUANTIZATION.into(), scheme.to_string()),
        (key::TENSORS_SHA256.into(), digest.to_string()),
        (key::SOURCE.into(), source.to_string()),
    ]
    .into_iter()
    .collect::<HashMap<String, String>>();
    let sum = metadata_digest(&meta);
    let mut meta = meta;
    meta.insert(key::METADATA_SHA256.into(), sum);
    meta
}

/// SHA-256 of the metadata entries other than `metadata_sha256` itself: `key=value` lines
/// in key order. With `tensors_sha256` among them it covers the whole file, so an edited
/// model config is caught like a changed weight.
pub fn metadata_digest(meta: &HashMap<String, String>) -> String {
    let mut keys: Vec<&String> = meta.keys().filter(|k| *k != key::METADATA_SHA256).collect();
    keys.sort();
    let mut h = Sha256::new();
    for k in keys {
        h.update(format!("{k}={}\n", meta[k]).as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// An export's metadata after its checks.
#[derive(Clone, Debug)]
pub struct Metadata {
    pub model_config: ModelConfig,
    /// The quantization scheme's name (`f32`, `int8`, `ternary`).
    pub quantization: String,
    /// The recorded digest of the tensors ([`digest_of`]), if any: a loader compares it
    /// with the tensors it read ([`Metadata::tensors_sha256`]).
    recorded_tensors_sha256: Option<String>,
    /// Where the weights came from (run, seed, step, digests), as export recorded it;
    /// `null` when absent.
    pub source: serde_json::Value,
}

impl Metadata {
    /// Checks `meta`'s own digest, the format version, the feature layout and the model
    /// config's sizes; the error says what is wrong, for the caller to prefix with the path.
    pub fn read(meta: &HashMap<String, String>) -> Result<Metadata, String> {
        let get = |k: &str| -> Result<&String, String> {
            meta.get(k)
                .ok_or_else(|| format!("__metadata__ has no `{k}`: not an ssmkit export"))
        };
        if get(key::METADATA_SHA256)? != &metadata_digest(meta) {
            return Err(
                "__metadata__ does not match its recorded SHA-256: the file was edited or is damaged"
                    .into(),
            );
        }
        if get(key::FORMAT_VERSION)? != FORMAT_VERSION {
            return Err(format!(
                "format {}, this build reads {FORMAT_VERSION}",
                get(key::FORMAT_VERSION)?
            ));
        }
        let layout: serde_json::Value = serde_json::from_str(get(key::FEATURE_LAYOUT)?)
            .map_err(|e| format!("feature_layout: {e}"))?;
        if layout["version"] != LAYOUT_VERSION {
            return Err(format!(
                "feature layout {}, this build uses {LAYOUT_VERSION}",
                layout["version"]
            ));
        }
        let config: ModelConfig = serde_json::from_str(get(key::MODEL_CONFIG)?)
            .map_err(|e| format!("model_config: {e}"))?;
        config.check_sizes()?;
        if config.reads_events() && layout["keyed_events"] != serde_json::json!(EVENT_NAMES) {
            return Err(format!(
                "the model reads keyed events {}; this build computes {EVENT_NAMES:?}: \
                 train and export it again with this build",
                match &layout["keyed_events"] {
                    serde_json::Value::Null =>
                        "as an earlier build did (no time of the week)".to_string(),
                    v => v.to_string(),
                }
            ));
        }
        if config.keyed_channels() > 0 && layout["keyed_read"] != keyed_read() {
            return Err(format!(
                "the model's keyed state reads {}; this build reads {}: \
                 train and export it again with this build",
                match &layout["keyed_read"] {
                    serde_json::Value::Null => "as an earlier build did".to_string(),
                    v => v.to_string(),
                },
                keyed_read()
            ));
        }
        let quant: serde_json::Value = serde_json::from_str(get(key::QUANTIZATION)?)
            .map_err(|e| format!("quantization: {e}"))?;
        Ok(Metadata {
            model_config: config,
            quantization: quant["name"].as_str().unwrap_or("?").to_string(),
            recorded_tensors_sha256: meta.get(key::TENSORS_SHA256).cloned(),
            source: meta
                .get(key::SOURCE)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(serde_json::Value::Null),
        })
    }

    /// The tensors' recorded digest; the error says the key is missing.
    pub fn tensors_sha256(&self) -> Result<&str, String> {
        self.recorded_tensors_sha256.as_deref().ok_or_else(|| {
            format!(
                "__metadata__ has no `{}`: not an ssmkit export",
                key::TENSORS_SHA256
            )
        })
    }
}
