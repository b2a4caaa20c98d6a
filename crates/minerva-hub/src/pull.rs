//! `pull`: which files of a revision a model needs, then each into the cache.

use std::path::{Path, PathBuf};

use minerva_models::local_models::RepoSpec;

use crate::cache_layout::{check_repo_path, RepoCache};
use crate::client::{Hub, RemoteFile};
use crate::download::{fetch_blob, Source};
use crate::error::{HubError, Result};

/// What a pull reports as it goes (every method has a default that ignores the event).
pub trait PullProgress {
    /// The files about to be pulled, in order, before the first byte moves.
    fn planned(&mut self, _files: &[PlannedFile]) {}
    /// `path` holds `done` bytes now (of its [`PlannedFile::size`]).
    fn advanced(&mut self, _path: &str, _done: u64) {}
    /// `path` is complete and verified.
    fn finished(&mut self, _path: &str) {}
}

/// A file a pull fetches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFile {
    pub path: String,
    pub size: u64,
    /// Already in the cache (no bytes move).
    pub cached: bool,
}

/// What a pull left in the cache.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// `ORG/NAME`.
    pub repo_id: String,
    pub commit: String,
    /// The snapshot folder: `--model` resolves the repository's name to it or to the one
    /// GGUF file in it.
    pub snapshot: PathBuf,
    pub files: usize,
    /// Bytes of all the files pulled, cached before or not.
    pub bytes: u64,
}

/// Weights in formats Minerva does not read: PyTorch pickles, TensorFlow, Flax, ONNX.
const FOREIGN_WEIGHTS: [&str; 9] = [
    ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".ot", ".tflite",
];

/// Pulls `spec` (`ORG/NAME[@REVISION][/PATH]`) from `hub` into the hub cache folder
/// `cache` (e.g. [`Caches::hub`](minerva_models::local_models::Caches)).
///
/// Without a `/PATH`, the pull takes what the model needs: every file except weights in
/// formats Minerva does not read and, where the repository's root holds a `config.json`
/// model, weights in subfolders (such as gpt-oss's `original/`). A repository of several
/// GGUF files needs one named. With a `/PATH`, it takes that file, or every file under
/// that folder.
pub fn pull(
    hub: &Hub,
    cache: &Path,
    spec: &str,
    progress: &mut dyn PullProgress,
) -> Result<Pulled> {
    let repo = RepoSpec::parse(spec).ok_or_else(|| HubError::BadSpec(spec.to_string()))?;
    let repo_id = repo.repo_id();
    let revision = repo.revision.unwrap_or("main");
    let info = hub.repo_info(&repo_id, revision)?;
    let files = select(&info.files, repo.file, spec)?;
    let layout = RepoCache::new(cache, &repo.folder());
    let planned: Vec<PlannedFile> = files
        .iter()
        .map(|f| PlannedFile {
            path: f.path.clone(),
            size: f.size,
            cached: layout.blob(f.digest.hex()).is_file(),
        })
        .collect();
    progress.planned(&planned);
    for file in &files {
        let source = Source {
            hub,
            repo_id: &repo_id,
            commit: &info.commit,
            file,
        };
        fetch_blob(&source, &layout, &mut |done| {
            progress.advanced(&file.path, done)
        })?;
        progress.finished(&file.path);
    }
    // The snapshot, then the ref, only once every blob is there: a name never resolves to
    // a pull that failed half-way.
    for file in &files {
        layout.link(&info.commit, &file.path, file.digest.hex())?;
    }
    if revision != info.commit {
        layout.set_ref(revision, &info.commit)?;
    }
    Ok(Pulled {
        repo_id,
        snapshot: layout.snapshot(&info.commit),
        commit: info.commit,
        files: files.len(),
        bytes: files.iter().map(|f| f.size).sum(),
    })
}

/// The files of a revision that `path` (or, without one, the model) needs.
fn select<'a>(
    all: &'a [RemoteFile],
    path: Option<&str>,
    spec: &str,
) -> Result<Vec<&'a RemoteFile>> {
    for file in all {
        check_repo_path(&file.path)?;
    }
    let chosen: Vec<&RemoteFile> = match path {
        Some(path) => {
            let path = path.trim_end_matches('/');
            let folder = format!("{path}/");
            all.iter()
                .filter(|f| f.path == path || f.path.starts_with(&folder))
                .collect()
        }
        None => model_files(all, spec)?,
    };
    if chosen.is_empty() {
        let names: Vec<&str> = all.iter().map(|f| f.path.as_str()).take(20).collect();
        return Err(HubError::Invalid(format!(
            "{spec}: no such file or folder in the repository (it holds: {})",
            names.join(", ")
        )));
    }
    Ok(chosen)
}

/// The files a model needs when no path is named.
fn model_files<'a>(all: &'a [RemoteFile], spec: &str) -> Result<Vec<&'a RemoteFile>> {
    let is_weights = |p: &str| p.ends_with(".safetensors") || p.ends_with(".gguf");
    let config_at_root = all.iter().any(|f| f.path == "config.json");
    let usable: Vec<&RemoteFile> = all
        .iter()
        .filter(|f| !FOREIGN_WEIGHTS.iter().any(|ext| f.path.ends_with(ext)))
        .filter(|f| !(config_at_root && f.path.contains('/') && is_weights(&f.path)))
        .collect();
    let ggufs: Vec<&str> = usable
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| p.ends_with(".gguf"))
        .collect();
    if !config_at_root && ggufs.len() > 1 {
        return Err(HubError::Invalid(format!(
            "{spec} holds {} GGUF files ({}): pull one as {spec}/FILE",
            ggufs.len(),
            ggufs.join(", ")
        )));
    }
    Ok(usable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn files(paths: &[&str]) -> Vec<RemoteFile> {
        paths
            .iter()
            .map(|p| RemoteFile {
                path: p.to_string(),
                size: 1,
                digest: Digest::Sha256("0".repeat(64)),
            })
            .collect()
    }

    fn paths(chosen: &[&RemoteFile]) -> Vec<String> {
        chosen.iter().map(|f| f.path.clone()).collect()
    }

    /// A safetensors model skips PyTorch weights and the OpenAI-layout copy in `original/`;
    /// naming `original` takes exactly that folder.
    #[test]
    fn a_model_pull_takes_what_minerva_reads() {
        let repo = files(&[
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "original/model.safetensors",
            "original/config.json",
            "metal/model.bin",
            "pytorch_model.bin",
            "tokenizer.json",
        ]);
        assert_eq!(
            paths(&select(&repo, None, "o/m").unwrap()),
            [
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "original/config.json",
                "tokenizer.json"
            ]
        );
        assert_eq!(
            paths(&select(&repo, Some("original/"), "o/m/original").unwrap()),
            ["original/model.safetensors", "original/config.json"]
        );
        let missing = select(&repo, Some("nope.gguf"), "o/m/nope.gguf").unwrap_err();
        assert!(missing.to_string().contains("no such file"), "{missing}");
    }

    /// Of a repository of quantizations, one GGUF must be named.
    #[test]
    fn several_ggufs_need_one_named() {
        let repo = files(&["README.md", "m.Q4_0.gguf", "m.Q8_0.gguf"]);
        let err = select(&repo, None, "o/m").unwrap_err().to_string();
        assert!(
            err.contains("2 GGUF files") && err.contains("o/m/FILE"),
            "{err}"
        );
        let one = select(&repo, Some("m.Q8_0.gguf"), "o/m/m.Q8_0.gguf").unwrap();
        assert_eq!(paths(&one), ["m.Q8_0.gguf"]);
        let unsafe_name = files(&["../escape.gguf"]);
        assert!(select(&unsafe_name, None, "o/m").is_err());
    }
}
