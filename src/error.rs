//! Typed errors. Each carries the path, field or value at fault; the CLI prints one line.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
    #[error("{path}: line {line}: {msg}")]
    Jsonl {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Dataset { path: PathBuf, msg: String },
    #[error("parquet: {0}")]
    Parquet(#[from] polars::error::PolarsError),
    /// Another process holds the lock on `path` (`pid`: the id it wrote, when it has).
    #[error("{} is in use by {}", path.display(), pid.map_or("another process".to_string(), |p| format!("process {p}")))]
    Busy { path: PathBuf, pid: Option<u32> },
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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
