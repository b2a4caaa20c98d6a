//! One file into its blob: resumed from the bytes already there, retried when the transfer
//! breaks, hashed as it arrives, and renamed into place only when the digest matches.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;

use crate::cache_layout::RepoCache;
use crate::client::{Hub, RemoteFile};
use crate::digest::Hasher;
use crate::error::{HubError, IoContext, Result};

/// How many times in a row a transfer may fail without a byte arriving before the pull
/// gives up (the next pull resumes it).
const RETRIES: u32 = 5;

/// What to fetch: a file of a repository at a commit.
pub(crate) struct Source<'a> {
    pub hub: &'a Hub,
    pub repo_id: &'a str,
    pub commit: &'a str,
    pub file: &'a RemoteFile,
}

/// Makes sure blob `file.digest` is in `cache`, downloading what is missing; `progress`
/// gets the bytes present so far each time they grow.
pub(crate) fn fetch_blob(
    source: &Source,
    cache: &RepoCache,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let etag = source.file.digest.hex();
    let blob = cache.blob(etag);
    if blob.is_file() {
        return Ok(());
    }
    let _lock = cache.lock(etag)?;
    if blob.is_file() {
        // Another pull wrote it while this one waited for the lock.
        return Ok(());
    }
    let part = cache.incomplete(etag);
    if let Some(blobs) = part.parent() {
        std::fs::create_dir_all(blobs).at(blobs)?;
    }
    let mut partial = Partial::open(&part, source.file)?;
    progress(partial.done);
    let mut failures = 0;
    while partial.done < source.file.size {
        let before = partial.done;
        match partial.extend(source, progress) {
            Ok(()) => {}
            Err(Break::Fatal(e)) => return Err(e),
            // A transfer that moved bytes before it broke resumes at once.
            Err(Break::Transient(_)) if partial.done > before => failures = 0,
            Err(Break::Transient(_)) if failures < RETRIES => {
                failures += 1;
                std::thread::sleep(backoff(failures));
            }
            Err(Break::Transient(reason)) => {
                return Err(HubError::Interrupted {
                    file: source.file.path.clone(),
                    done: partial.done,
                    size: source.file.size,
                    reason,
                })
            }
        }
    }
    partial.finish(&blob, source)
}

/// The wait before resuming after the `failures`th break in a row: 0.5 s, 1 s, 2 s, ...
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250 << failures.min(6))
}

/// Why a request delivered less than the rest of the file.
enum Break {
    /// Worth resuming: the connection failed or broke off, or the server is busy.
    Transient(String),
    /// Not: the hub refused (a missing token, a vanished file) or the disk failed.
    Fatal(HubError),
}

impl Break {
    fn from_request(e: HubError) -> Break {
        match e {
            HubError::Status { status, .. } if status < 500 && status != 429 => Break::Fatal(e),
            e => Break::Transient(e.to_string()),
        }
    }
}

/// A blob being written: the `.incomplete` file, how many bytes it holds, and their hash.
struct Partial {
    path: PathBuf,
    file: File,
    done: u64,
    hasher: Hasher,
}

impl Partial {
    /// Opens (or starts) `path`, hashing the bytes a previous transfer left there.
    fn open(path: &Path, remote: &RemoteFile) -> Result<Partial> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)
            .at(path)?;
        let mut partial = Partial {
            path: path.to_path_buf(),
            done: 0,
            hasher: remote.digest.hasher(remote.size),
            file: file.try_clone().at(path)?,
        };
        let present = file.metadata().at(path)?.len();
        if present > remote.size {
            partial.restart().at(path)?;
            return Ok(partial);
        }
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buffer).at(path)?;
            if n == 0 {
                break;
            }
            partial.hasher.update(&buffer[..n]);
            partial.done += n as u64;
        }
        Ok(partial)
    }

    /// Drops what is there and starts over (the server would not resume).
    fn restart(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.done = 0;
        Ok(())
    }

    /// Appends what one request delivers.
    fn extend(
        &mut self,
        source: &Source,
        progress: &mut dyn FnMut(u64),
    ) -> std::result::Result<(), Break> {
        let file = source.file;
        let mut response = source
            .hub
            .fetch(source.repo_id, source.commit, &file.path, self.done)
            .map_err(Break::from_request)?;
        let path = self.path.clone();
        let disk = |source| {
            Break::Fatal(HubError::Io {
                path: path.clone(),
                source,
            })
        };
        if self.done > 0 && response.status() != StatusCode::PARTIAL_CONTENT {
            // The whole file came instead of the rest: take it from the start.
            self.restart().map_err(disk)?;
            self.hasher = file.digest.hasher(file.size);
        }
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = match response.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(Break::Transient(e.to_string())),
            };
            if n as u64 > file.size - self.done {
                return Err(Break::Fatal(HubError::Invalid(format!(
                    "{}: the server sent more than the {} bytes the hub lists",
                    file.path, file.size
                ))));
            }
            self.file.write_all(&buffer[..n]).map_err(disk)?;
            self.hasher.update(&buffer[..n]);
            self.done += n as u64;
            progress(self.done);
        }
        match self.done < file.size {
            true => Err(Break::Transient("the connection closed early".into())),
            false => Ok(()),
        }
    }

    /// Checks the digest, then renames the download to `blob`; a mismatch deletes it.
    fn finish(self, blob: &Path, source: &Source) -> Result<()> {
        let part = self.path.as_path();
        self.file.sync_all().at(part)?;
        drop(self.file);
        let got = self.hasher.finish();
        let expected = source.file.digest.hex();
        if got != expected {
            std::fs::remove_file(part).at(part)?;
            return Err(HubError::Mismatch {
                file: source.file.path.clone(),
                algorithm: source.file.digest.algorithm(),
                expected: expected.to_string(),
                got,
            });
        }
        std::fs::rename(part, blob).at(blob)
    }
}
