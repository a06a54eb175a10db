//! Writes a dataset directory: the four Parquet tables and `manifest.json`. Everything is
//! written into a temporary sibling directory that is renamed into place at the end, so
//! a killed run never leaves a half dataset where a good one was.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::lock::Lock;

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

/// A directory being written, and the lock on its target, held until it is committed or
/// dropped; dropped without [`StagedDir::commit`], it is removed.
pub struct StagedDir {
    pub tmp: PathBuf,
    target: PathBuf,
    /// The target stood at the start and is replaced (`--force`).
    replace: bool,
    committed: bool,
    _lock: Lock,
}

impl StagedDir {
    /// Locks `target`, refuses it when it exists unless `force`, and creates the
    /// temporary directory beside it.
    pub fn new(target: &Path, force: bool) -> Result<StagedDir> {
        let name = target
            .file_name()
            .ok_or_else(|| Error::Input(format!("{} is not a directory name", target.display())))?;
        let lock = crate::lock::path(target)?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        recover_old(target)?;
        // A symbolic link there counts as there (even a dangling one) and is replaced
        // itself, never written through.
        let exists = fs::symlink_metadata(target).is_ok();
        let link = fs::symlink_metadata(target).is_ok_and(|m| m.is_symlink());
        if exists && !link && !target.is_dir() {
            return Err(Error::Input(format!(
                "{} exists and is not a directory: it is not replaced, even with --force",
                target.display()
            )));
        }
        if exists && !force {
            return Err(Error::Input(format!(
                "{} already exists: pass --force to replace it",
                target.display()
            )));
        }
        let prefix = format!(".{}.tmp-", name.to_string_lossy());
        remove_stale(&parent, &prefix)?;
        let tmp = parent.join(format!("{prefix}{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(StagedDir {
            tmp,
            target: target.to_path_buf(),
            replace: exists,
            committed: false,
            _lock: lock,
        })
    }

    /// Moves the finished directory into place. A replace swaps the two whole and then
    /// removes the old one (a kill in between leaves it under the temporary name, which the
    /// next writer removes); otherwise a target that appeared meanwhile is left as it is.
    pub fn commit(mut self) -> Result<PathBuf> {
        let io = |e| Error::io(&self.target, e);
        if self.replace {
            crate::atomic::exchange(&self.tmp, &self.target).map_err(io)?;
            self.committed = true;
            fs::remove_dir_all(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
        } else {
            crate::atomic::rename_new(&self.tmp, &self.target).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    crate::atomic::appeared(&self.target)
                } else {
                    io(e)
                }
            })?;
            self.committed = true;
        }
        Ok(self.target.clone())
    }
}

/// The `.NAME.old` of a replace that was interrupted between its renames (the complete
/// previous output): put back where the target is missing, removed where the replace got
/// as far as its new output. Called with the target's lock held, so no writer is still at
/// work on it.
fn recover_old(target: &Path) -> Result<()> {
    let old = crate::atomic::old(target);
    if !old.is_dir() {
        return Ok(());
    }
    if fs::symlink_metadata(target).is_err() {
        fs::rename(&old, target).map_err(|e| Error::io(&old, e))
    } else {
        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))
    }
}

/// Removes `<prefix><pid>` directories left in `parent` by writers that were killed:
/// their process no longer runs.
fn remove_stale(parent: &Path, prefix: &str) -> Result<()> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix) else {
            continue;
        };
        let ours = pid == std::process::id().to_string();
        if !ours && pid.parse().is_ok_and(|p| !crate::lock::alive(p)) {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// A file writer that hashes what it writes (Parquet is written front to back), so the
/// manifest's SHA-256 needs no second pass over the file.
pub struct HashingWriter {
    file: File,
    hasher: std::sync::Arc<std::sync::Mutex<Sha256>>,
}

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.lock().expect("hasher lock").update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A Parquet file written batch by batch.
pub struct TableWriter {
    path: PathBuf,
    compression: ParquetCompression,
    inner: Option<BatchedWriter<HashingWriter>>,
    hasher: std::sync::Arc<std::sync::Mutex<Sha256>>,
    pub rows: u64,
}

/// What a finished table reports.
pub struct Written {
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl TableWriter {
    pub fn new(path: PathBuf, compression: ParquetCompression) -> TableWriter {
        TableWriter {
            path,
            compression,
            inner: None,
            hasher: Default::default(),
            rows: 0,
        }
    }

    /// A Parquet error while writing this table, naming the file.
    fn failed(&self, e: PolarsError) -> Error {
        let msg = e.to_string();
        let msg = msg.trim_start_matches("parquet: ");
        Error::Input(format!("{}: cannot write: {msg}", self.path.display()))
    }

    pub fn write(&mut self, df: &DataFrame) -> Result<()> {
        if self.inner.is_none() {
            let file = File::create(&self.path).map_err(|e| Error::io(&self.path, e))?;
            let sink = HashingWriter {
                file,
                hasher: self.hasher.clone(),
            };
            // Polars writes whole pages: no extra buffering needed.
            let writer = ParquetWriter::new(sink)
                .with_compression(self.compression)
                .with_statistics(StatisticsOptions::default())
                .batched(df.schema())
                .map_err(|e| self.failed(e))?;
            self.inner = Some(writer);
        }
        if df.height() > 0 {
            self.inner
                .as_mut()
                .expect("opened above")
                .write_batch(df)
                .map_err(|e| self.failed(e))?;
        }
        self.rows += df.height() as u64;
        Ok(())
    }

    /// Closes the file; a table that got no batch is written empty with `empty`'s schema.
    pub fn finish(mut self, empty: &DataFrame) -> Result<Written> {
        if self.inner.is_none() {
            self.write(empty)?;
        }
        let writer = self.inner.take().expect("opened above");
        writer.finish().map_err(|e| self.failed(e))?;
        drop(writer);
        let bytes = fs::metadata(&self.path)
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        let hasher = std::mem::take(&mut *self.hasher.lock().expect("hasher lock"));
        Ok(Written {
            rows: self.rows,
            bytes,
            sha256: format!("{:x}", hasher.finalize()),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_target_that_appears_before_the_commit_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data");
        let staged = StagedDir::new(&target, false).unwrap();
        fs::write(staged.tmp.join("manifest.json"), b"ours").unwrap();
        fs::create_dir(&target).unwrap();
        fs::write(target.join("manifest.json"), b"theirs").unwrap();
        let err = staged.commit().unwrap_err().to_string();
        assert!(err.contains("appeared"), "{err}");
        assert_eq!(fs::read(target.join("manifest.json")).unwrap(), b"theirs");
        assert_eq!(names(dir.path()), ["data"], "no staging or lock left");
    }

    #[test]
    fn a_forced_commit_swaps_the_directories_and_leaves_only_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("gates.json"), b"old").unwrap();
        assert!(StagedDir::new(&target, false).is_err(), "needs force");
        let staged = StagedDir::new(&target, true).unwrap();
        fs::write(staged.tmp.join("gates.json"), b"new").unwrap();
        staged.commit().unwrap();
        assert_eq!(fs::read(target.join("gates.json")).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["report"]);
    }
}
