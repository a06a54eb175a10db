//! Loading a dataset written by `ssmkit gen` into per-user sequences, with the checks a
//! trainer needs: the layout version, the feature names, finite values, a consistent
//! candidate count, rows in (user, turn, candidate) order.

mod assemble;
mod reader;
pub mod split;
mod table;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::features::{FEATURE_DIM, MAX_HOPS};
use crate::manifest::Manifest;

pub use reader::{DatasetReader, blocks, sample_users};

pub use crate::features::{CONTEXT_DIM, CONTEXT_NAMES, HOP_DIM};

/// One user's turns, flattened row-major.
#[derive(Clone, Debug, Default)]
pub struct UserSeq {
    pub user_id: u32,
    pub stage: u8,
    pub turns: usize,
    pub timestamp: Vec<i64>,
    pub session: Vec<u32>,
    /// `[T, CONTEXT_DIM]`
    pub context: Vec<f32>,
    /// `[T, E]` query embedding.
    pub query: Vec<f32>,
    /// `[T, 2]` focal entity ids, −1 for none.
    pub focal: Vec<i32>,
    /// `[T, K, FEATURE_DIM]` observed features (missing ones are 0).
    pub features: Vec<f32>,
    /// `[T, K, FEATURE_DIM]` 1 where a feature is missing.
    pub missing: Vec<f32>,
    /// `[T, K]` 1 for a candidate row that exists (imported turns may have fewer than K).
    pub valid: Vec<f32>,
    /// `[T, K]` observed labels, 0/1.
    pub labels: Vec<f32>,
    /// `[T, K, F]` the features before noise (the generator's truth), for the SNR curve.
    pub clean_features: Vec<f32>,
    /// `[T, K]` clean relevance probability.
    pub relevance: Vec<f32>,
    /// `[T, K]`
    pub memory_slot: Vec<u32>,
    pub memory_id: Vec<u32>,
    pub entity: Vec<u32>,
    pub canary: Vec<u16>,
    /// `[T, K]` the candidate's contract-canary role ([`crate::canary::Role`] code).
    pub role: Vec<u8>,
    pub hard_negative: Vec<u8>,
    /// The user's selector entities Z, W, P, T (−1: none planted).
    pub selectors: [i32; 4],
    /// Where in the week the user's cycle entity X peaks (days from Monday 00:00; −1: not
    /// drawn per user).
    pub cycle_peak: f64,
    /// `[T, K, E]` content embedding of each candidate memory (zeros when absent).
    pub content: Vec<f32>,
    /// `[T, K, MAX_HOPS, HOP_DIM]` hop features, zero-padded; `[T, K]` hop counts (both
    /// empty when the read left the hops out, [`Columns::hops`]).
    pub hops: Vec<f32>,
    pub hop_count: Vec<u8>,
    /// `[T, K, HISTORY_DIM]` history features of a window cut from a longer sequence,
    /// computed over the whole sequence ([`crate::history::sequence_features`]); empty for
    /// a sequence that starts at the user's first turn (they are computed from it).
    pub history: Vec<f32>,
    /// `[T, K, EVENTS, EVENT_DIM]` and `[T, K, EVENTS]` keyed reads of a window cut from a
    /// longer sequence, over the whole sequence ([`crate::keyed::sequence_reads`]); empty
    /// for a sequence that starts at the user's first turn.
    pub keyed_events: Vec<f32>,
    pub keyed_days: Vec<f32>,
    /// `[T]` each turn's name (the scenario or pattern it comes from) as an index into
    /// [`Dataset::names`]; empty when the dataset names no turn.
    pub name: Vec<u32>,
}

impl UserSeq {
    /// The history features `[T, K, HISTORY_DIM]` of the sequence's turns.
    pub fn history_features(&self, k: usize) -> std::borrow::Cow<'_, [f32]> {
        if self.history.is_empty() {
            std::borrow::Cow::Owned(crate::history::sequence_features(
                &self.timestamp,
                &self.valid,
                &self.labels,
                &self.memory_id,
                k,
            ))
        } else {
            std::borrow::Cow::Borrowed(&self.history)
        }
    }
}

impl UserSeq {
    /// The sequence as the keyed log reads it.
    pub fn keyed_sequence(&self, k: usize) -> crate::keyed::Sequence<'_> {
        crate::keyed::Sequence {
            timestamp: &self.timestamp,
            context: &self.context,
            focal: &self.focal,
            valid: &self.valid,
            labels: &self.labels,
            memory: &self.memory_id,
            entity: &self.entity,
            features: &self.features,
            feature_dim: FEATURE_DIM,
            k,
        }
    }

    /// The keyed reads of the first `len` turns (see [`UserSeq::keyed_events`]).
    pub fn keyed_reads(
        &self,
        k: usize,
        len: usize,
    ) -> (std::borrow::Cow<'_, [f32]>, std::borrow::Cow<'_, [f32]>) {
        use crate::keyed::{EVENT_DIM, EVENTS};
        if self.keyed_events.is_empty() {
            let (e, d) = crate::keyed::sequence_reads(&self.keyed_sequence(k), 0, len);
            (e.into(), d.into())
        } else {
            (
                self.keyed_events[..len * k * EVENTS * EVENT_DIM].into(),
                self.keyed_days[..len * k * EVENTS].into(),
            )
        }
    }
}

/// A loaded dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub path: PathBuf,
    /// Shared by the parts of one dataset read apart.
    pub manifest: std::sync::Arc<Manifest>,
    /// Candidates per turn.
    pub k: usize,
    /// Content embedding dimension (0 for imported data).
    pub embedding_dim: usize,
    pub users: Vec<UserSeq>,
    /// The distinct turn names of `turns.parquet`'s `name` column, in order of first
    /// appearance (empty: no such column).
    pub names: Vec<String>,
}

pub(crate) fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::dataset(path, msg)
}

/// What a read holds beside what every model reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Columns {
    /// The features before noise (only the SNR analysis reads them).
    pub clean: bool,
    /// The path hops (only the dual variant's path encoder reads them).
    pub hops: bool,
}

impl Columns {
    pub const ALL: Columns = Columns {
        clean: true,
        hops: true,
    };
}

/// Megabytes of memory to turns of a dataset's shape, read with `columns`.
pub fn turns_in(megabytes: usize, data: &Dataset, columns: Columns) -> usize {
    let per_turn = bytes_per_turn(data.k, data.embedding_dim, columns).max(1);
    ((megabytes as u64 * 1_000_000) / per_turn).max(1) as usize
}

/// Bytes one turn of `k` candidates takes while it is read and held as a [`UserSeq`]:
/// every candidate slot with its features (observed, missing flags and, with
/// `columns.clean`, clean), ids, content and (with `columns.hops`) path hops, plus the
/// Parquet columns held while it is read.
pub fn bytes_per_turn(k: usize, embedding_dim: usize, columns: Columns) -> u64 {
    let copies = if columns.clean { 3 } else { 2 };
    let hops = if columns.hops {
        MAX_HOPS * HOP_DIM * 4
    } else {
        0
    };
    let per_slot = copies * FEATURE_DIM * 4 + 6 * 4 + 4 + embedding_dim * 4 + hops;
    let columns = ((copies - 1) * FEATURE_DIM + 16) * 4;
    (k * (per_slot + columns)) as u64
}

/// Bytes [`Dataset::load`] needs for a whole dataset, from its manifest.
pub fn estimated_bytes(manifest: &Manifest) -> u64 {
    let per_turn = bytes_per_turn(
        manifest.candidates_per_turn,
        manifest.embedding_dim,
        Columns::ALL,
    );
    manifest.counts.turns * per_turn
}

/// `MemAvailable` of /proc/meminfo, where there is one.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Dataset {
    /// Loads every user of the dataset at `path`, refusing one that cannot fit in memory
    /// (train reads a large dataset a range of users at a time instead).
    pub fn load(path: &Path) -> Result<Dataset> {
        let manifest = Manifest::read(path)?;
        if let Some(available) = available_memory() {
            let need = estimated_bytes(&manifest);
            if need > available {
                return Err(bad(
                    path,
                    format!(
                        "loading every user needs about {:.1} GB of memory and {:.1} GB is available: `ssmkit train` reads a dataset this large a part at a time ([train] resident_mb), this command cannot yet",
                        need as f64 / 1e9,
                        available as f64 / 1e9
                    ),
                ));
            }
        }
        let reader = DatasetReader::open(path)?;
        reader.read(0..reader.users(), Columns::ALL)
    }
}

impl Dataset {
    /// A dataset like `data` without its users.
    pub fn clone_empty(data: &Dataset) -> Dataset {
        Dataset {
            path: data.path.clone(),
            manifest: data.manifest.clone(),
            k: data.k,
            embedding_dim: data.embedding_dim,
            users: Vec::new(),
            names: data.names.clone(),
        }
    }

    pub fn turns(&self) -> usize {
        self.users.iter().map(|u| u.turns).sum()
    }

    /// Whether the turns have a time axis (timestamps that order them): false for the
    /// `poc` preset and for JSONL without timestamps, which are split at random
    /// ([`split::Cutoffs`]).
    pub fn time_axis(&self) -> bool {
        self.manifest.time_axis
    }

    /// Whether `relevance` holds graded labels (the PoC preset and JSONL imports: a label
    /// above 0.5 counts as relevant) rather than the generator's relevance probability.
    pub fn graded_labels(&self) -> bool {
        self.manifest.graded_labels
    }

    /// The name of turn `t` of `u` ("" when the dataset names no turn).
    pub fn name_of(&self, u: &UserSeq, t: usize) -> &str {
        u.name.get(t).map_or("", |&i| &self.names[i as usize])
    }
}
