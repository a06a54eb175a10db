//! Advisory locks that keep two ssmkit processes off one output: a run directory, a
//! dataset or report being written, an export file, a `predict` state, a `run` root.
//!
//! A lock is an exclusive `flock` on a small file that holds its owner's process id. The
//! system releases it when the owner exits, however it ends, so a killed process never
//! leaves a lock held; the owner removes the file when it lets go, and a file a killed
//! owner left is simply locked again. The second process fails at once, before it changes
//! anything. Within one process a lock is shared: a stage that asks for the lock its
//! caller already holds (`eval` writing the report it locked at its start) gets it.
//!
//! Two kinds are looser. The shards of one `run` hold their root's lock *shared*: any
//! number of them at once, each training runs no other trains, while a whole `run` (which
//! evaluates and exports) stays alone. And a shard *waits* for the dataset a shard beside
//! it is generating, then reuses it, rather than failing.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::error::{Error, Result};

/// A held lock; dropping the last handle releases it and removes its file.
#[derive(Clone)]
pub struct Lock {
    _held: Arc<Held>,
}

struct Held {
    /// The lock file, as this process names it in [`HELD`].
    key: PathBuf,
    file: Option<File>,
    /// Held shared: the file is left in place for the other holders.
    shared: bool,
}

/// How a lock is taken.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Alone, or at once an error naming the owner.
    Alone,
    /// Beside other shared holders, never beside one alone; else at once an error.
    Shared,
    /// Alone, waiting for the owner to let go.
    Waiting,
}

/// The locks this process holds, by their lock file.
static HELD: Mutex<BTreeMap<PathBuf, Weak<Held>>> = Mutex::new(BTreeMap::new());

/// Locks the directory `dir` itself (a run directory, a `run` root) through the file
/// `.ssmkit.lock` inside it, creating `dir` if need be.
pub fn dir(dir: &Path) -> Result<Lock> {
    dir_lock(dir, Mode::Alone)
}

/// Locks the directory `dir` as [`dir`] does, but shared: other shared holders (the
/// shards of one `run` under one root) may hold it too; one that holds it alone may not.
pub fn dir_shared(dir: &Path) -> Result<Lock> {
    dir_lock(dir, Mode::Shared)
}

fn dir_lock(dir: &Path, mode: Mode) -> Result<Lock> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    acquire(dir, &dir.join(".ssmkit.lock"), mode)
}

/// Locks `path` (a file, or a directory written whole under another name) through the
/// file `.NAME.lock` beside it, creating its parent directory if need be. `path` is
/// locked where it [`resolved`] to, so that a symbolic link to an output (even a dangling
/// one) and the output itself are one lock.
pub fn path(given: &Path) -> Result<Lock> {
    acquire(given, &path_file(given)?, Mode::Alone)
}

/// Locks `path` as [`path`] does, but waits while another process holds it (a shard
/// waiting for the dataset that another is generating).
pub fn path_waiting(given: &Path) -> Result<Lock> {
    acquire(given, &path_file(given)?, Mode::Waiting)
}

/// The lock file of the output `given`, its parent directory created.
fn path_file(given: &Path) -> Result<PathBuf> {
    let target = resolved(given);
    let canonical = fs::canonicalize(&target).ok();
    let path = canonical.as_deref().unwrap_or(&target);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    let file = path.with_file_name(format!(".{name}.lock"));
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    Ok(file)
}

/// The path an output named `path` is written at: where the symbolic links at its last
/// component lead, even to a file that does not exist yet (a dangling link names the
/// file it will be). A path that is no link is itself.
pub fn resolved(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    // Past 40 links the chain is a loop; the write then fails on the path itself.
    for _ in 0..40 {
        let Ok(target) = fs::read_link(&p) else {
            break;
        };
        p = match p.parent() {
            Some(parent) if target.is_relative() => parent.join(target),
            _ => target,
        };
    }
    p
}

/// Takes the lock file `file` for `target` (named in the error when it is in use).
fn acquire(target: &Path, file: &Path, mode: Mode) -> Result<Lock> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let key = fs::canonicalize(parent)
        .map_err(|e| Error::io(parent, e))?
        .join(file.file_name().unwrap_or_default());
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(h) = held.get(&key).and_then(Weak::upgrade) {
        return Ok(Lock { _held: h });
    }
    let locked = take(target, &key, mode)?;
    let h = Arc::new(Held {
        key: key.clone(),
        file: Some(locked),
        shared: mode == Mode::Shared,
    });
    held.insert(key, Arc::downgrade(&h));
    Ok(Lock { _held: h })
}

/// Opens and locks `file`, writing this process's id into it. An owner that let go
/// between the open and the lock removed the file: the new one at its name is taken.
fn take(target: &Path, file: &Path, mode: Mode) -> Result<File> {
    let io = |e| Error::io(file, e);
    loop {
        let mut f = open(file).map_err(io)?;
        let got = match mode {
            Mode::Alone => f.try_lock(),
            Mode::Shared => f.try_lock_shared(),
            Mode::Waiting => f.lock().map_err(std::fs::TryLockError::Error),
        };
        match got {
            Ok(()) if same_file(&f, file) => {
                f.set_len(0).map_err(io)?;
                write!(f, "{}", std::process::id()).map_err(io)?;
                return Ok(f);
            }
            Ok(()) => continue,
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Busy {
                    path: target.to_path_buf(),
                    pid: owner(&mut f),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

/// Opens the lock file for reading and writing, creating it; a symbolic link planted at
/// its name is not followed.
fn open(file: &Path) -> std::io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    options.open(file)
}

/// Whether `f` is still the file at `path`.
fn same_file(f: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (f.metadata(), fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (f, path);
        true
    }
}

/// The process id a lock's owner wrote into its file (none yet if it has only just
/// taken the lock).
fn owner(f: &mut File) -> Option<u32> {
    let mut text = String::new();
    f.rewind().ok()?;
    f.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl Drop for Held {
    /// Removes the file while it is still locked, then closes it: a process that opened
    /// the old file meanwhile finds it gone and retries on a new one. A shared holder
    /// leaves the file to the others that may hold it.
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if held.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
            held.remove(&self.key);
        }
        if !self.shared {
            let _ = fs::remove_file(&self.key);
        }
        drop(self.file.take());
    }
}

/// Whether the process `pid` may still run: only a process the system says does not exist
/// counts as gone, so what such a process left can be removed.
pub fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // An id no process can have (0, or beyond the system's range) names none.
        let Ok(id) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if id <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let gone = unsafe { libc::kill(id, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        !gone
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds `file` locked as another process would: a separate open file, locked.
    fn hold_elsewhere(file: &Path, pid: &str) -> File {
        let mut f = open(file).unwrap();
        f.try_lock().unwrap();
        f.write_all(pid.as_bytes()).unwrap();
        f
    }

    /// Takes `f`'s lock once it is free. A lock let go can stay held for a moment: a child
    /// process that another test spawns holds a copy of every open descriptor until it
    /// runs its program.
    fn taken_once_free(f: &File) {
        for _ in 0..200 {
            if f.try_lock().is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the lock was not let go within 2 s");
    }

    #[test]
    fn an_output_and_a_link_to_it_are_one_lock() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let other = hold_elsewhere(&dir.path().join(".real.lock"), "4243");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = path(&link)
            .err()
            .expect("held through the link")
            .to_string();
        assert!(err.contains("in use by process 4243"), "{err}");
        let dotted = dir.path().join(".").join("real");
        assert!(path(&dotted).is_err(), "another spelling, the same lock");
        drop(other);
        let _held = path(&link).unwrap();
        assert!(dir.path().join(".real.lock").exists());
    }

    #[test]
    fn a_dangling_link_is_locked_as_the_file_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let other = hold_elsewhere(&dir.path().join(".new.bin.lock"), "4244");
        let link = dir.path().join("dangling.bin");
        std::os::unix::fs::symlink("new.bin", &link).unwrap();
        assert_eq!(resolved(&link), dir.path().join("new.bin"));
        let err = path(&link)
            .err()
            .expect("held through the link")
            .to_string();
        assert!(err.contains("in use by process 4244"), "{err}");
        drop(other);
    }

    #[test]
    fn a_held_lock_names_its_owner_and_is_free_again_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("data");
        let other = hold_elsewhere(&dir.path().join(".data.lock"), "4242");
        let err = path(&out).err().expect("held elsewhere").to_string();
        assert_eq!(err, format!("{} is in use by process 4242", out.display()));
        drop(other);
        let lock = path(&out).unwrap();
        let text = fs::read_to_string(dir.path().join(".data.lock")).unwrap();
        assert_eq!(text, std::process::id().to_string());
        drop(lock);
        assert!(!dir.path().join(".data.lock").exists(), "the file goes too");
    }

    #[test]
    fn one_process_shares_its_lock_and_keeps_it_until_the_last_handle() {
        let dir = tempfile::tempdir().unwrap();
        let first = super::dir(dir.path()).unwrap();
        let second = super::dir(dir.path()).unwrap();
        drop(first);
        let file = dir.path().join(".ssmkit.lock");
        let mut f = open(&file).unwrap();
        assert!(f.try_lock().is_err(), "still held by the second handle");
        assert_eq!(owner(&mut f), Some(std::process::id()));
        drop(second);
        assert!(!file.exists());
    }

    #[test]
    fn shared_holders_hold_together_and_keep_a_lone_one_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".ssmkit.lock");
        // Another process's shard.
        let other = open(&file).unwrap();
        other.try_lock_shared().unwrap();
        let ours = dir_shared(dir.path()).expect("shards share a root");
        let mut alone = open(&file).unwrap();
        assert!(alone.try_lock().is_err(), "a whole run is kept out");
        drop(ours);
        assert!(file.exists(), "left for the other shard");
        assert!(alone.try_lock().is_err(), "still held by the other shard");
        drop(other);
        taken_once_free(&alone);
        // A root held alone refuses a shard at once, naming the owner.
        alone.set_len(0).unwrap();
        alone.write_all(b"4245").unwrap();
        let err = dir_shared(dir.path())
            .err()
            .expect("held alone")
            .to_string();
        assert!(err.contains("in use by process 4245"), "{err}");
    }

    #[test]
    fn a_waiting_lock_is_taken_once_the_owner_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("data");
        let other = hold_elsewhere(&dir.path().join(".data.lock"), "4246");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let out = out.clone();
            std::thread::spawn(move || {
                let lock = path_waiting(&out);
                tx.send(()).unwrap();
                lock.map(|_| ())
            })
        };
        let wait = std::time::Duration::from_millis(300);
        assert!(rx.recv_timeout(wait).is_err(), "taken while held elsewhere");
        drop(other);
        rx.recv_timeout(10 * wait).expect("taken once let go");
        waiter.join().unwrap().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_process_itself_is_alive_and_an_unused_id_is_not() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
        assert!(!alive(4_000_000_000) && !alive(0));
    }
}
