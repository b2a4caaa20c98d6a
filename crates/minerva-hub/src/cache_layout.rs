//! The hub cache's layout for one repository, as huggingface_hub writes it:
//!
//! ```text
//! models--ORG--NAME/blobs/<etag>                   file contents, named by digest
//! models--ORG--NAME/snapshots/<commit>/<path>      links to ../../blobs/<etag>
//! models--ORG--NAME/refs/<revision>                the commit a branch or tag named
//! .locks/models--ORG--NAME/<etag>.lock             held while a blob is written
//! ```

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{HubError, IoContext, Result};

/// One repository's folders in a hub cache.
pub(crate) struct RepoCache {
    root: PathBuf,
    locks: PathBuf,
}

impl RepoCache {
    /// The repository folder `folder` (`models--ORG--NAME`) of the hub cache `hub`.
    pub(crate) fn new(hub: &Path, folder: &str) -> RepoCache {
        RepoCache {
            root: hub.join(folder),
            locks: hub.join(".locks").join(folder),
        }
    }

    pub(crate) fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    /// Where a blob grows while it downloads (huggingface_hub's name, so either tool can
    /// resume the other's transfer).
    pub(crate) fn incomplete(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub(crate) fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// Waits for, then holds, the lock on writing blob `etag` (until the file is dropped):
    /// two pulls of one model take turns instead of writing one file twice.
    pub(crate) fn lock(&self, etag: &str) -> Result<File> {
        std::fs::create_dir_all(&self.locks).at(&self.locks)?;
        let path = self.locks.join(format!("{etag}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at(&path)?;
        file.lock().at(&path)?;
        Ok(file)
    }

    /// Links `snapshots/<commit>/<path>` to blob `etag`, replacing what was there.
    pub(crate) fn link(&self, commit: &str, path: &str, etag: &str) -> Result<()> {
        let link = self.snapshot(commit).join(path);
        let parent = link.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).at(parent)?;
        // From snapshots/<commit>/<dirs...>/ back up to the repository folder.
        let depth = 2 + path.matches('/').count();
        let target: PathBuf = std::iter::repeat_n("..", depth)
            .collect::<PathBuf>()
            .join("blobs")
            .join(etag);
        match std::fs::remove_file(&link) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&link),
            _ => {}
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &link).at(&link)?;
        #[cfg(not(unix))]
        std::fs::copy(self.blob(etag), &link).at(&link)?;
        Ok(())
    }

    /// Points `refs/<revision>` at `commit`, atomically: a reader sees the old commit or
    /// the new one.
    pub(crate) fn set_ref(&self, revision: &str, commit: &str) -> Result<()> {
        let path = self.root.join("refs").join(revision);
        let parent = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).at(parent)?;
        let staged = parent.join(format!(
            ".{}.{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        std::fs::write(&staged, commit).at(&staged)?;
        std::fs::rename(&staged, &path).at(&path)
    }
}

/// `path` from a hub answer, where it is safe to join under a snapshot folder: relative,
/// `/`-separated, with no empty, `.` or `..` component.
pub(crate) fn check_repo_path(path: &str) -> Result<&str> {
    let safe = !path.is_empty()
        && !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    match safe {
        true => Ok(path),
        false => Err(HubError::Invalid(format!(
            "the hub lists a file named '{path}', which is not a safe relative path"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_leaving_the_snapshot_are_refused() {
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "a\\b",
            "./a",
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad}");
        }
        for good in ["config.json", "original/model.safetensors", "a.b/c..d"] {
            assert_eq!(check_repo_path(good).unwrap(), good);
        }
    }
}
