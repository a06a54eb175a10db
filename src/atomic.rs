//! Files replaced whole or not at all: written under a hidden temporary name beside the
//! target, flushed to disk, then renamed into place. Every file ssmkit writes outside a
//! staged directory goes through [`write()`].

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The hidden per-process temporary sibling of `path`; it never meets a file of the
/// user's, and [`crate::run::checkpoint::clean`] removes one an interrupted write left.
pub fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` through its [`temporary`] sibling and a rename; the temporary
/// file is removed when the write fails. The temporary is created new: whatever stands at
/// its name (a leftover of a killed writer, a planted symbolic link) is unlinked first,
/// never written through, and one that appears again in between fails the write.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
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
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
