//! A dataset directory's files as the writer and the reader both know them: the four
//! Parquet tables, `manifest.json` and its own digest, and the SHA-256 of a file.

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

/// The field of `manifest.json` that holds the SHA-256 of its own text (with the field
/// empty), so an edited manifest (another `k`, other counts) is refused.
const MANIFEST_SEAL: &str = "manifest_sha256";

/// The text of `manifest.json` for `manifest`, with its own digest.
pub fn sealed_manifest(manifest: &serde_json::Value) -> String {
    let mut m = manifest.clone();
    m[MANIFEST_SEAL] = serde_json::Value::String(String::new());
    let text = serde_json::to_string_pretty(&m).expect("a manifest serializes") + "\n";
    let digest = format!("{:x}", Sha256::digest(text.as_bytes()));
    text.replacen(&seal_field(""), &seal_field(&digest), 1)
}

/// Whether `text`, a `manifest.json`, records its own digest and matches it.
pub fn manifest_seal_holds(text: &str, manifest: &serde_json::Value) -> bool {
    let Some(recorded) = manifest[MANIFEST_SEAL].as_str().filter(|d| !d.is_empty()) else {
        return false;
    };
    let unsealed = text.replacen(&seal_field(recorded), &seal_field(""), 1);
    format!("{:x}", Sha256::digest(unsealed.as_bytes())) == recorded
}

fn seal_field(digest: &str) -> String {
    format!("\"{MANIFEST_SEAL}\": \"{digest}\"")
}
pub const TABLES: [&str; 4] = [TURNS, CANDIDATES, MEMORIES, PATHS];

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
