//! Writes a dataset's Parquet tables, hashing each as it is written. The directory is
//! staged whole ([`crate::atomic::StagedDir`]) and renamed into place at the end, so a
//! killed run never leaves a half dataset where a good one was; the file names and the
//! manifest's seal are [`crate::layout`]'s.

use std::fs::{self, File};
use std::path::PathBuf;

use polars::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

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
        Error::Save(format!("{}: cannot write: {msg}", self.path.display()))
    }

    pub fn write(&mut self, df: &DataFrame) -> Result<()> {
        if self.inner.is_none() {
            let file = File::create(&self.path).map_err(|e| Error::io(&self.path, e))?;
            let sink = HashingWriter {
                file,
                hasher: self.hasher.clone(),
            };
            // Polars writes whole pages: no extra buffering needed. No column statistics:
            // readers take rows by position, never by value, and computing the minima
            // and maxima was a twentieth of `gen`.
            let writer = ParquetWriter::new(sink)
                .with_compression(self.compression)
                .with_statistics(StatisticsOptions::empty())
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
