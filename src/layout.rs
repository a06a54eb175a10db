//! A dataset directory's files as the writer and the reader both know them: the four
//! Parquet tables, `manifest.json` and its own digest; and the digests every file ssmkit
//! checks is read with: the SHA-256 of a file or a text, and the seal of a JSON file that
//! records the digest of its own text (`manifest.json`, a run's `state.json`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const TURNS: &str = "turns.parquet";
pub const CANDIDATES: &str = "candidates.parquet";
pub const MEMORIES: &str = "memories.parquet";
pub const PATHS: &str = "paths.parquet";
pub const MANIFEST: &str = "manifest.json";
pub const TABLES: [&str; 4] = [TURNS, CANDIDATES, MEMORIES, PATHS];

/// The field of `manifest.json` that holds the SHA-256 of its own text (with the field
/// empty), so an edited manifest (another `k`, other counts) is refused.
const MANIFEST_SEAL: &str = "manifest_sha256";

/// The text of `manifest.json` for `manifest`, with its own digest.
pub fn sealed_manifest(manifest: &serde_json::Value) -> String {
    let mut m = manifest.clone();
    m[MANIFEST_SEAL] = serde_json::Value::String(String::new());
    seal(
        &(serde_json::to_string_pretty(&m).expect("a manifest serializes") + "\n"),
        MANIFEST_SEAL,
    )
}

/// Whether `text`, a `manifest.json`, records its own digest and matches it.
pub fn manifest_seal_holds(text: &str, manifest: &serde_json::Value) -> bool {
    let recorded = manifest[MANIFEST_SEAL].as_str().unwrap_or("");
    seal_holds(text, MANIFEST_SEAL, recorded)
}

/// `text`, a JSON file whose string field `field` is empty, with that field set to the
/// SHA-256 of `text`.
pub fn seal(text: &str, field: &str) -> String {
    text.replacen(
        &seal_field(field, ""),
        &seal_field(field, &sha256_text(text)),
        1,
    )
}

/// Whether `text`, sealed by [`seal`], records a digest in `field` (`recorded`, as read
/// from it) and matches it: without one an edit could not be told apart.
pub fn seal_holds(text: &str, field: &str, recorded: &str) -> bool {
    let unsealed = text.replacen(&seal_field(field, recorded), &seal_field(field, ""), 1);
    !recorded.is_empty() && sha256_text(&unsealed) == recorded
}

fn seal_field(field: &str, digest: &str) -> String {
    format!("\"{field}\": \"{digest}\"")
}

/// SHA-256 of a text, hex.
pub fn sha256_text(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}
