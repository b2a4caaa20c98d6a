//! Pulling models from the Hugging Face hub (`minerva pull ORG/NAME[@REVISION][/FILE]`) into
//! the hub's own cache layout, where `--model ORG/NAME` and every Hugging Face tool find
//! them.
//!
//! Each file is written to `blobs/<etag>.incomplete`, resumed from where it stopped when a
//! transfer breaks (within a run by retrying, across runs by the next `pull`), checked
//! against the digest the hub publishes for it (sha256 for LFS files, the git blob hash for
//! the others), and only then renamed to `blobs/<etag>`. Once every file's blob is there,
//! `snapshots/<commit>/<path>` links to them and the ref (`refs/main`) moves, so a name
//! never resolves to a half-pulled snapshot. A digest mismatch deletes the download.
//!
//! Why not the `hf-hub` crate: its 1.0 downloads neither resume an interrupted transfer
//! nor check digests, and it brings hf-xet (a cold build of it alone is over 5 minutes
//! on CI's two cores). This crate is the HTTP half of huggingface_hub's protocol over the
//! blocking reqwest client Minerva already builds, and writes the same cache.
//!
//! This is the crate's only concern and the engine's only network access: nothing else in
//! Minerva opens a connection except the server's listener.
//!
//! ```no_run
//! use minerva_hub::{pull, Hub, PullProgress};
//! use minerva_models::local_models::Caches;
//!
//! struct Quiet;
//! impl PullProgress for Quiet {}
//!
//! let hub = Hub::from_env()?;
//! let pulled = pull(&hub, &Caches::from_env().hub, "HuggingFaceTB/SmolLM2-135M-Instruct", &mut Quiet)?;
//! println!("{} files at {}", pulled.files, pulled.snapshot.display());
//! # Ok::<(), minerva_hub::HubError>(())
//! ```

mod cache_layout;
mod client;
mod digest;
mod download;
mod error;
#[cfg(feature = "mock-hub")]
pub mod mock_hub;
mod pull;

pub use client::{Hub, RemoteFile, RepoInfo};
pub use digest::Digest;
pub use error::{HubError, Result};
pub use pull::{pull, PlannedFile, PullProgress, Pulled};
