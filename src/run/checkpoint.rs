//! A run directory's checkpoints, each committed as one unit.
//!
//! A checkpoint is a directory `ckpt-<step>` holding the weights (`checkpoint.bpk`), the
//! optimizer state (`optimizer.bpk`), the run's best model so far (`model.bpk`) and the
//! metrics log up to its step (`metrics.csv`). It is written under a staging name, renamed
//! into place, and only then does `state.json` (replaced atomically) name it, with the
//! SHA-256 of each of its files. So a kill at any instant leaves `state.json` naming a
//! complete checkpoint, or no `state.json` at all (no checkpoint yet); other checkpoint
//! directories are debris of an interrupted commit and are removed. Loading a checkpoint
//! checks every file against its recorded digest.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::RunState;
use crate::error::{Error, Result};
use crate::layout::sha256_file;

/// The files of a checkpoint.
pub const FILES: [&str; 4] = [
    "checkpoint.bpk",
    "optimizer.bpk",
    "model.bpk",
    "metrics.csv",
];

/// The directory name of the checkpoint at `step`.
pub fn dir_name(step: usize) -> String {
    format!("ckpt-{step:08}")
}

fn staging_name(step: usize) -> String {
    format!(".ckpt-{step:08}.tmp")
}

/// An empty staging directory for the checkpoint at `step` (a leftover is replaced).
pub fn stage(run: &Path, step: usize) -> Result<PathBuf> {
    let dir = run.join(staging_name(step));
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// Commits the staged checkpoint of `state.step`: hashes and flushes its files, renames it
/// into place, records it in `state` and writes `state.json`, then removes every other
/// checkpoint directory.
pub fn commit(run: &Path, staged: &Path, state: &mut RunState) -> Result<()> {
    let mut sums = BTreeMap::new();
    for name in FILES {
        let path = staged.join(name);
        let f = fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        f.sync_all().map_err(|e| Error::io(&path, e))?;
        sums.insert(name.to_string(), sha256_file(&path)?);
    }
    let name = dir_name(state.step);
    let dir = run.join(&name);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    fs::rename(staged, &dir).map_err(|e| Error::io(&dir, e))?;
    state.checkpoint = name.clone();
    state.sha256 = sums;
    crate::atomic::write(&run.join("state.json"), state.sealed().as_bytes())?;
    clean(run, Some(&name))
}

/// Removes the checkpoint directories and staging leftovers other than `keep`, and the
/// temporary files of [`crate::atomic::write`]s that were interrupted.
pub fn clean(run: &Path, keep: Option<&str>) -> Result<()> {
    let entries = fs::read_dir(run).map_err(|e| Error::io(run, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if is_checkpoint_name(&name) && Some(name.as_str()) != keep {
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        } else if is_run_temporary(&name) && path.is_file() {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Whether `name` is a checkpoint directory (`ckpt-00000120`) or one being staged
/// (`.ckpt-00000120.tmp`), as training names them; nothing else in a run directory is
/// removed as a checkpoint.
pub fn is_checkpoint_name(name: &str) -> bool {
    let step = |d: &str| d.len() >= 8 && d.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix("ckpt-").is_some_and(step)
        || name
            .strip_prefix(".ckpt-")
            .and_then(|n| n.strip_suffix(".tmp"))
            .is_some_and(step)
}

/// Whether `name` is the temporary file of an interrupted write of one of the run's own
/// files (`.metrics.csv.tmp-4242`).
pub fn is_run_temporary(name: &str) -> bool {
    ["config.json", "metrics.csv", "state.json"]
        .iter()
        .any(|f| {
            name.strip_prefix(&format!(".{f}.tmp-"))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The directory of the checkpoint `state` names, every file checked against its digest.
/// A run written before checkpoints were directories keeps its files in `run` itself.
pub fn verified(run: &Path, state: &RunState) -> Result<PathBuf> {
    if state.checkpoint.is_empty() {
        return Ok(run.to_path_buf());
    }
    let dir = run.join(&state.checkpoint);
    for name in FILES {
        let path = dir.join(name);
        let want = state.sha256.get(name).ok_or_else(|| {
            Error::Damaged(format!(
                "{}: state.json records no digest of {name}",
                run.display()
            ))
        })?;
        if !path.is_file() {
            return Err(Error::Damaged(format!(
                "{}: {name} is missing from checkpoint {} (the one state.json names)",
                run.display(),
                state.checkpoint
            )));
        }
        if &sha256_file(&path)? != want {
            return Err(Error::Damaged(format!(
                "{}: does not match the SHA-256 state.json records: the checkpoint is damaged",
                path.display()
            )));
        }
    }
    Ok(dir)
}

/// Hard-links `from` to `to` (a copy where links are not possible): for files that are
/// only ever replaced, never changed in place.
pub fn link(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).map_err(|e| Error::io(to, e))?;
    }
    Ok(())
}
