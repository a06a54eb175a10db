//! Typed errors. Each carries the path, field or value at fault; the CLI prints one line.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file's value or section.
    #[error("config: {0}")]
    Config(String),
    /// Command-line flags out of range, or that do not go together or with what is on disk.
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of a JSONL input.
    #[error("{path}: line {line}: {msg}")]
    Jsonl {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// A dataset, or an input file, that is damaged, inconsistent or holds nothing to work
    /// on.
    #[error("{path}: {msg}")]
    Dataset { path: PathBuf, msg: String },
    #[error("parquet: {0}")]
    Parquet(#[from] polars::error::PolarsError),
    /// Another process holds the lock on `path` (`pid`: the id it wrote, when it has).
    #[error("{} is in use by {}", path.display(), pid.map_or("another process".to_string(), |p| format!("process {p}")))]
    Busy { path: PathBuf, pid: Option<u32> },
    /// An output path that already holds something, or something ssmkit did not write:
    /// nothing was changed.
    #[error("{0}")]
    Occupied(String),
    /// Inputs that do not belong together: a run and a dataset it was not trained on,
    /// runs with different splits, a checkpoint of another config, rankings of other cases.
    #[error("{0}")]
    Mismatch(String),
    /// A file ssmkit wrote that no longer reads back as written (a run's state or
    /// checkpoint, a report's gates).
    #[error("{0}")]
    Damaged(String),
    /// Training stopped at a loss or gradient that is not finite.
    #[error("{0}")]
    Diverged(String),
    /// Not enough memory for what the config asks.
    #[error("{0}")]
    Memory(String),
    /// An output that could not be encoded or written.
    #[error("{0}")]
    Save(String),
    /// An output that falls short of a bound the user set (an export's `--max-drop`):
    /// nothing was written.
    #[error("{0}")]
    Quality(String),
    /// The device asked for is not available.
    #[error("{0}")]
    Device(String),
    #[error(transparent)]
    Runtime(#[from] ssmkit_runtime::Error),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn dataset(path: &Path, msg: impl Into<String>) -> Error {
        Error::Dataset {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
