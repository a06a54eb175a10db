//! Files and directories replaced whole or not at all. A file is written under a hidden
//! temporary name beside the target, flushed to disk, then renamed into place; every file
//! ssmkit writes outside a staged directory goes through [`write()`] or [`write_new()`].
//! A final rename never replaces what appeared since the writer looked ([`rename_new`]),
//! and a replace swaps the two whole ([`exchange`]).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::lock::Lock;

/// The hidden per-process temporary sibling of `path`; it never meets a file of the
/// user's, and the next writer of `path` removes one a killed writer left.
pub fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The hidden sibling `.NAME.old` that holds the previous `path` during a replace where
/// the two cannot be swapped in one step (and that an interrupted replace by an earlier
/// build left).
pub fn old(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.old"))
}

/// Writes `bytes` to `path` through its [`temporary`] sibling and a rename that replaces
/// what is there; the temporary file is removed when the write fails. A `path` that is a
/// symbolic link is replaced, never written through: what it leads to is left as it is.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = stage(path, bytes)?;
    finish(&tmp, path, fs::rename(&tmp, path))
}

/// [`write`] for a file that must not exist: one that appeared since the caller looked
/// is left as it is and the write fails.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = stage(path, bytes)?;
    finish(&tmp, path, rename_new(&tmp, path))
}

/// Refuses the file output `path` when something stands there (a symbolic link counts,
/// even a dangling one), unless `force`: checked before a command's work, so a refused
/// command costs nothing.
pub fn check_output(path: &Path, force: bool) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() && !force {
        return Err(Error::Occupied(format!(
            "{} already exists: pass --force to replace it",
            path.display()
        )));
    }
    Ok(())
}

/// Writes the file output `path` as [`check_output`] allowed it: replacing what is there
/// with `force` ([`write`]), else only as a new file ([`write_new`]).
pub fn write_output(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if force {
        write(path, bytes)
    } else {
        write_new(path, bytes)
    }
}

/// Writes `bytes` to the [`temporary`] sibling of `path`, created new: whatever stands
/// at its name (a leftover of a killed writer, a planted symbolic link) is unlinked
/// first, never written through, and one that appears again in between fails the write.
/// The temporaries of writers of `path` that no longer run go first.
fn stage(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    remove_dead_temporaries(path)?;
    let tmp = temporary(path);
    if fs::symlink_metadata(&tmp).is_ok_and(|m| !m.is_dir()) {
        fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let created = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp);
    let written = created.and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    Ok(tmp)
}

/// The outcome of renaming `tmp` to `path`: the temporary goes when the rename failed.
fn finish(tmp: &Path, path: &Path, renamed: io::Result<()>) -> Result<()> {
    renamed.map_err(|e| {
        let _ = fs::remove_file(tmp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            appeared(path)
        } else {
            Error::io(path, e)
        }
    })
}

/// The error of a write whose target appeared while it was being written.
pub fn appeared(path: &Path) -> Error {
    Error::Occupied(format!(
        "{} appeared while this output was being written: it is left as it is and nothing was written",
        path.display()
    ))
}

/// Removes the files `.NAME.tmp-PID` beside `path` whose process no longer runs: what a
/// killed writer of `path` left.
fn remove_dead_temporaries(path: &Path) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let prefix = format!(".{name}.tmp-");
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let entry_name = entry.file_name();
        let Some(pid) = entry_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let dead = pid.parse().is_ok_and(|p| !crate::lock::alive(p));
        if dead && entry.file_type().is_ok_and(|t| !t.is_dir()) {
            let tmp = entry.path();
            fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
    }
    Ok(())
}

/// Renames `from` to `to` unless `to` exists (an `AlreadyExists` error then): the check
/// and the rename are one step where the system allows it.
pub fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    match renameat2(from, to, libc::RENAME_NOREPLACE) {
        Err(e) if unsupported(&e) => {}
        done => return done,
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    fs::rename(from, to)
}

/// Swaps `a` and `b` (files or directories), both of which exist: in one step where the
/// system allows it, else by three renames through [`old`]`(b)`, which the next writer
/// of `b` finds if they were interrupted.
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    match renameat2(a, b, libc::RENAME_EXCHANGE) {
        Err(e) if unsupported(&e) => {}
        done => return done,
    }
    let aside = old(b);
    rename_new(b, &aside)?;
    fs::rename(a, b)?;
    fs::rename(&aside, a)
}

/// Linux's `renameat2` with `flags`.
#[cfg(target_os = "linux")]
fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths, both relative to the working directory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `renameat2` failed because the kernel or the file system lacks the flag.
#[cfg(target_os = "linux")]
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
}

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
            .ok_or_else(|| Error::Usage(format!("{} is not a directory name", target.display())))?;
        let lock = crate::lock::path(target)?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        recover_old(target)?;
        // A symbolic link there counts as there (even a dangling one) and is replaced
        // itself, never written through.
        let there = fs::symlink_metadata(target);
        let exists = there.is_ok();
        let link = there.is_ok_and(|m| m.is_symlink());
        if exists && !link && !target.is_dir() {
            return Err(Error::Occupied(format!(
                "{} exists and is not a directory: it is not replaced, even with --force",
                target.display()
            )));
        }
        if exists && !force {
            return Err(Error::Occupied(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_a_link_and_leaves_what_it_leads_to() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("theirs.bin");
        fs::write(&target, b"old").unwrap();
        let link = dir.path().join("out.bin");
        std::os::unix::fs::symlink("theirs.bin", &link).unwrap();
        super::write(&link, b"new").unwrap();
        assert!(!fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read(&link).unwrap(), b"new");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        // A new file never replaces a link, even a dangling one.
        let dangling = dir.path().join("dangling.bin");
        std::os::unix::fs::symlink("nowhere.bin", &dangling).unwrap();
        assert!(super::write_new(&dangling, b"made").is_err());
        assert!(!dir.path().join("nowhere.bin").exists());
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"first").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A target that cannot be replaced (a directory) fails and leaves the directory
        // and no temporary file.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(write(&blocked, b"data").is_err());
        assert!(blocked.join("inside").is_file());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        fs::write(&outside, b"keep me").unwrap();
        let path = dir.path().join("model.safetensors");
        std::os::unix::fs::symlink(&outside, temporary(&path)).unwrap();
        write(&path, b"model").unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"keep me");
        assert_eq!(fs::read(&path).unwrap(), b"model");
        assert!(fs::symlink_metadata(temporary(&path)).is_err());
    }

    #[test]
    fn a_new_file_never_replaces_one_that_appeared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        fs::write(&path, b"theirs").unwrap();
        let err = write_new(&path, b"ours").unwrap_err().to_string();
        assert!(err.contains("appeared"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"theirs");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn renames_never_replace_and_exchanges_swap_whole_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (d, f) in [(&a, "new"), (&b, "old")] {
            fs::create_dir(d).unwrap();
            fs::write(d.join(f), b"x").unwrap();
        }
        let e = rename_new(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        // An empty directory at the target is not replaced either.
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert!(rename_new(&a, &empty).is_err());
        assert!(a.join("new").is_file() && b.join("old").is_file());
        exchange(&a, &b).unwrap();
        assert!(b.join("new").is_file() && a.join("old").is_file());
        assert!(!old(&b).exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_dead_writers_temporary_goes_and_a_live_ones_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.state");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_tmp = dir.path().join(format!(".user.state.tmp-{dead}"));
        let live_tmp = dir.path().join(".user.state.tmp-1");
        fs::write(&dead_tmp, b"killed").unwrap();
        fs::write(&live_tmp, b"running").unwrap();
        write(&path, b"state").unwrap();
        assert!(!dead_tmp.exists());
        assert!(
            live_tmp.exists(),
            "process 1 runs: its file is not ours to remove"
        );
    }

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
        let err = staged.commit().unwrap_err();
        assert!(matches!(err, Error::Occupied(_)), "{err}");
        assert!(err.to_string().contains("appeared"), "{err}");
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
