//! Writes a dataset directory: the four Parquet tables and `manifest.json`. Everything is
//! written into a temporary sibling directory that is renamed into place at the end, so
//! a killed run never leaves a half dataset where a good one was.

use std::fs::{self, File};
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const TURNS: &str = "turns.parquet";
pub const CANDIDATES: &str = "candidates.parquet";
pub const MEMORIES: &str = "memories.parquet";
pub const PATHS: &str = "paths.parquet";
pub const MANIFEST: &str = "manifest.json";
pub const TABLES: [&str; 4] = [TURNS, CANDIDATES, MEMORIES, PATHS];

/// Parses the configured compression name.
pub fn compression(name: &str) -> Result<ParquetCompression> {
    Ok(match name {
        "zstd" => ParquetCompression::Zstd(None),
        "snappy" => ParquetCompression::Snappy,
        "lz4" => ParquetCompression::Lz4Raw,
        "none" => ParquetCompression::Uncompressed,
        other => {
            return Err(Error::Config(format!(
                "output.compression: unknown compression {other:?} (zstd, snappy, lz4, none)"
            )));
        }
    })
}

/// A directory being written; dropped without [`StagedDir::commit`], it is removed.
pub struct StagedDir {
    pub tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Refuses an existing `target` unless `force`; creates the temporary directory.
    pub fn new(target: &Path, force: bool) -> Result<StagedDir> {
        if target.exists() && !force {
            return Err(Error::Input(format!(
                "{} already exists: pass --force to replace it",
                target.display()
            )));
        }
        let name = target
            .file_name()
            .ok_or_else(|| Error::Input(format!("{} is not a directory name", target.display())))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(StagedDir {
            tmp,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// Moves the finished directory into place (replacing an old one).
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            let old = self.tmp.with_extension("old");
            fs::rename(&self.target, &old).map_err(|e| Error::io(&self.target, e))?;
            fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
            fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// A Parquet file written batch by batch.
pub struct TableWriter {
    path: PathBuf,
    compression: ParquetCompression,
    inner: Option<BatchedWriter<BufWriter<File>>>,
    pub rows: u64,
}

impl TableWriter {
    pub fn new(path: PathBuf, compression: ParquetCompression) -> TableWriter {
        TableWriter {
            path,
            compression,
            inner: None,
            rows: 0,
        }
    }

    pub fn write(&mut self, df: &DataFrame) -> Result<()> {
        if self.inner.is_none() {
            let file = File::create(&self.path).map_err(|e| Error::io(&self.path, e))?;
            let writer = ParquetWriter::new(BufWriter::new(file))
                .with_compression(self.compression)
                .with_statistics(StatisticsOptions::default())
                .batched(df.schema())?;
            self.inner = Some(writer);
        }
        if df.height() > 0 {
            self.inner.as_mut().expect("opened above").write_batch(df)?;
        }
        self.rows += df.height() as u64;
        Ok(())
    }

    /// Closes the file; a table that got no batch is written empty with `empty`'s schema.
    pub fn finish(mut self, empty: &DataFrame) -> Result<u64> {
        if self.inner.is_none() {
            self.write(empty)?;
        }
        self.inner.as_mut().expect("opened above").finish()?;
        Ok(self.rows)
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
