//! What goes wrong when pulling, each a one-line message naming the repository, file or
//! URL concerned.

use std::path::PathBuf;

/// A failed pull.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The name is not `ORG/NAME[@REVISION][/FILE]`.
    #[error("'{0}' is not a hub repository: expected ORG/NAME[@REVISION][/FILE]")]
    BadSpec(String),
    /// The hub answered with an error status.
    #[error("{url}: HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        /// What the status means here, e.g. that a token is needed.
        hint: String,
    },
    /// The connection failed (after the retries).
    #[error("{url}: {source}")]
    Network {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A transfer kept breaking; what arrived is kept for the next pull to resume.
    #[error("{file}: the download stopped at {done} of {size} bytes ({reason}); run pull again to resume")]
    Interrupted {
        file: String,
        done: u64,
        size: u64,
        reason: String,
    },
    /// The bytes do not hash to what the hub publishes; nothing of them was kept.
    #[error("{file}: {algorithm} mismatch: the hub publishes {expected}, the download hashes to {got}; the download was deleted")]
    Mismatch {
        file: String,
        algorithm: &'static str,
        expected: String,
        got: String,
    },
    /// Reading or writing the cache failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The hub's answer or the request makes no sense (a missing field, an unsafe path, no
    /// matching file).
    #[error("{0}")]
    Invalid(String),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, HubError>;

/// Attaches the path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| HubError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
