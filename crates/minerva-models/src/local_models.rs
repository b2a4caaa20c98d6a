//! Models already on this machine, by name: repositories in the Hugging Face hub cache
//! (where `huggingface-cli download`, transformers and mlx-lm put them) as
//! `ORG/NAME[@REVISION][/FILE]`, and the models in Minerva's own cache (`models/`, where the
//! default model lives) by their file or folder name, `.gguf` optional.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::formats::gguf::GgufFile;
use crate::model_cache::minerva_home;

/// A model found by [`Caches::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalModel {
    /// What `--model` accepts for it.
    pub name: String,
    /// The GGUF file or the model folder.
    pub path: PathBuf,
}

/// What a model is, as `minerva ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// `gguf`, `safetensors` or `mlx` (safetensors quantized by MLX).
    pub format: &'static str,
    /// The weights' dominant type (`q4_1`, `bfloat16`) or MLX's scheme (`affine q4 g64`, `mxfp4`).
    pub quantization: String,
    pub architecture: String,
    /// Bytes of the weights and everything beside them that loading reads.
    pub bytes: u64,
}

/// Where models are looked for.
#[derive(Clone, Debug)]
pub struct Caches {
    /// The Hugging Face hub cache (holding `models--ORG--NAME` folders).
    pub hub: PathBuf,
    /// Minerva's models folder.
    pub minerva: PathBuf,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Hugging Face's home folder (the hub cache and the login token live there): `$HF_HOME`,
/// else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`, as huggingface_hub
/// finds it.
pub fn hf_home() -> PathBuf {
    env_path("HF_HOME").unwrap_or_else(|| {
        env_path("XDG_CACHE_HOME")
            .or_else(|| env_path("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("huggingface")
    })
}

impl Caches {
    /// The caches the environment names: the hub cache is `$HF_HUB_CACHE`, else
    /// [`hf_home`]`/hub` (as huggingface_hub finds it); Minerva's is
    /// [`minerva_home`]`/models`.
    pub fn from_env() -> Caches {
        let hub = env_path("HF_HUB_CACHE").unwrap_or_else(|| hf_home().join("hub"));
        Caches {
            hub,
            minerva: minerva_home().join("models"),
        }
    }

    /// The file or folder `spec` names: a path that exists, a model in Minerva's cache, or
    /// a repository in the hub cache (its `main` revision unless `@REVISION` names a
    /// branch, tag or commit; the one GGUF file or the config.json folder of its snapshot,
    /// or the `/FILE` named).
    pub fn resolve(&self, spec: &str) -> Result<PathBuf> {
        let path = Path::new(spec);
        if path.exists() {
            return Ok(path.to_path_buf());
        }
        for candidate in [
            self.minerva.join(spec),
            self.minerva.join(format!("{spec}.gguf")),
        ] {
            if !spec.is_empty() && candidate.exists() {
                return Ok(candidate);
            }
        }
        let Some(repo) = RepoSpec::parse(spec) else {
            return Err(self.not_found(spec));
        };
        let folder = self.hub.join(repo.folder());
        if !folder.is_dir() {
            return Err(self.not_found(spec));
        }
        let snapshot = snapshot(&folder, repo.revision)?;
        match repo.file {
            Some(file) => {
                let path = snapshot.join(file);
                match path.exists() {
                    true => Ok(path),
                    false => Err(ModelError::config(
                        &snapshot,
                        format!("no file '{file}' in {spec}"),
                    )),
                }
            }
            None => model_in(&snapshot, spec),
        }
    }

    fn not_found(&self, spec: &str) -> ModelError {
        ModelError::config(
            spec,
            format!(
                "not a file or folder, and no such model in the Hugging Face cache ({}) or \
                 Minerva's ({}); `minerva ls` lists the models found there",
                self.hub.display(),
                self.minerva.display()
            ),
        )
    }

    /// Every model in the two caches, by the name [`Caches::resolve`] takes: Minerva's
    /// first, then the hub cache's `main` snapshots (each GGUF file of a repository holding
    /// several as `ORG/NAME/FILE`).
    pub fn list(&self) -> Vec<LocalModel> {
        let mut found = Vec::new();
        for entry in sorted_entries(&self.minerva) {
            let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_model =
                entry.join("config.json").is_file() || (entry.is_file() && name.ends_with(".gguf"));
            if is_model {
                let name = name.strip_suffix(".gguf").unwrap_or(name).to_string();
                found.push(LocalModel { name, path: entry });
            }
        }
        for folder in sorted_entries(&self.hub) {
            let Some(repo) = folder
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("models--"))
                .and_then(|n| n.split_once("--"))
                .map(|(org, name)| format!("{org}/{name}"))
            else {
                continue;
            };
            let Ok(snapshot) = snapshot(&folder, None) else {
                continue;
            };
            if snapshot.join("config.json").is_file() {
                found.push(LocalModel {
                    name: repo,
                    path: snapshot,
                });
                continue;
            }
            let ggufs = ggufs_in(&snapshot);
            for gguf in &ggufs {
                let name = match ggufs.len() {
                    1 => repo.clone(),
                    _ => format!("{repo}/{}", file_name(gguf)),
                };
                found.push(LocalModel {
                    name,
                    path: gguf.clone(),
                });
            }
        }
        found
    }
}

/// A hub repository by name: `ORG/NAME[@REVISION][/FILE]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepoSpec<'a> {
    pub org: &'a str,
    pub name: &'a str,
    /// A branch, tag or commit.
    pub revision: Option<&'a str>,
    /// A path inside the repository.
    pub file: Option<&'a str>,
}

impl<'a> RepoSpec<'a> {
    /// `None` where `spec` is not of that form.
    pub fn parse(spec: &'a str) -> Option<RepoSpec<'a>> {
        let (org, rest) = spec.split_once('/')?;
        let (repo, file) = match rest.split_once('/') {
            Some((repo, file)) => (repo, Some(file)),
            None => (rest, None),
        };
        let (name, revision) = match repo.split_once('@') {
            Some((name, revision)) => (name, Some(revision)),
            None => (repo, None),
        };
        let plain = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.contains(['\\', '\0']);
        (plain(org) && plain(name) && revision.is_none_or(plain)).then_some(RepoSpec {
            org,
            name,
            revision,
            file: file.filter(|f| !f.is_empty()),
        })
    }

    /// The repository's folder in the hub cache.
    pub fn folder(&self) -> String {
        format!("models--{}--{}", self.org, self.name)
    }

    /// `ORG/NAME`, as the hub's URLs name the repository.
    pub fn repo_id(&self) -> String {
        format!("{}/{}", self.org, self.name)
    }
}

/// The snapshot folder of `revision` (a ref such as `main`, or a commit) in a repository's
/// cache folder; without one, `main`, or the only snapshot there is.
fn snapshot(folder: &Path, revision: Option<&str>) -> Result<PathBuf> {
    let snapshots = folder.join("snapshots");
    let wanted = revision.unwrap_or("main");
    let commit = std::fs::read_to_string(folder.join("refs").join(wanted))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| wanted.to_string());
    let path = snapshots.join(&commit);
    if path.is_dir() {
        return Ok(path);
    }
    let all = sorted_entries(&snapshots);
    if let ([only], None) = (all.as_slice(), revision) {
        return Ok(only.clone());
    }
    let names: Vec<String> = all.iter().map(|p| file_name(p)).collect();
    Err(ModelError::config(
        folder,
        format!(
            "no snapshot for revision '{wanted}' (snapshots here: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ),
    ))
}

/// The model of a snapshot: its folder where it has config.json, else its one GGUF file.
fn model_in(snapshot: &Path, spec: &str) -> Result<PathBuf> {
    if snapshot.join("config.json").is_file() {
        return Ok(snapshot.to_path_buf());
    }
    let ggufs = ggufs_in(snapshot);
    match ggufs.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ModelError::config(
            snapshot,
            format!("{spec} holds no config.json and no .gguf file"),
        )),
        several => {
            let names: Vec<String> = several.iter().map(|p| file_name(p)).collect();
            Err(ModelError::config(
                snapshot,
                format!(
                    "{spec} holds {} GGUF files ({}): name one as {spec}/FILE",
                    names.len(),
                    names.join(", ")
                ),
            ))
        }
    }
}

fn ggufs_in(folder: &Path) -> Vec<PathBuf> {
    sorted_entries(folder)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gguf") && p.is_file())
        .collect()
}

/// The last component of `path` (a folder entry: it has one), for messages and names.
fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// A folder's entries, sorted (none where it cannot be read).
fn sorted_entries(folder: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(folder)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    all.sort();
    all
}

/// Reads what `path` (a GGUF file or a model folder) is from its header or config.json,
/// without loading weights.
pub fn describe(path: &Path) -> Result<Description> {
    if path.is_file() {
        let gguf = GgufFile::open(path)?;
        let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
        for t in gguf.tensors() {
            *by_type.entry(t.dtype.name().into_owned()).or_default() += t.nbytes;
        }
        return Ok(Description {
            format: "gguf",
            quantization: dominant(by_type),
            architecture: gguf.architecture()?.to_string(),
            bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        });
    }
    let config_path = path.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| ModelError::config(&config_path, e.to_string()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::config(&config_path, e.to_string()))?;
    let field = |k: &str| config.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let quant = config
        .get("quantization")
        .or_else(|| config.get("quantization_config"));
    let (format, quantization) = match quant {
        Some(q) => {
            let mode = q.get("mode").and_then(|m| m.as_str()).unwrap_or("affine");
            let bits = q.get("bits").and_then(|b| b.as_u64());
            let group = q.get("group_size").and_then(|g| g.as_u64());
            let scheme = match (mode, bits, group) {
                ("affine", Some(b), Some(g)) => format!("affine q{b} g{g}"),
                (mode, ..) => mode.to_string(),
            };
            let method = q.get("quant_method").and_then(|m| m.as_str());
            match method {
                Some(method) => ("safetensors", method.to_string()),
                None => ("mlx", scheme),
            }
        }
        None => (
            "safetensors",
            field("torch_dtype")
                .or_else(|| field("dtype"))
                .unwrap_or_else(|| "?".into()),
        ),
    };
    let bytes = sorted_entries(path)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    Ok(Description {
        format,
        quantization,
        architecture: field("model_type").unwrap_or_else(|| "?".into()),
        bytes,
    })
}

/// The key with the most bytes.
fn dominant(by_type: BTreeMap<String, usize>) -> String {
    by_type
        .into_iter()
        .max_by_key(|(_, bytes)| *bytes)
        .map_or_else(|| "?".into(), |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub cache folder of `repo` with `files` in the snapshot `main` points to, stored
    /// as huggingface_hub stores them (snapshot entries link to blobs).
    fn hub_repo(hub: &Path, repo: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let folder = hub.join(format!("models--{}", repo.replace('/', "--")));
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let snapshot = folder.join("snapshots").join(commit);
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(folder.join("blobs")).unwrap();
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::write(folder.join("refs/main"), commit).unwrap();
        for (i, (name, bytes)) in files.iter().enumerate() {
            let blob = folder.join("blobs").join(format!("blob{i}"));
            std::fs::write(&blob, bytes).unwrap();
            std::os::unix::fs::symlink(&blob, snapshot.join(name)).unwrap();
        }
        snapshot
    }

    fn caches(root: &Path) -> Caches {
        Caches {
            hub: root.join("hub"),
            minerva: root.join("minerva"),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("minerva-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn repositories_in_the_hub_cache_resolve_by_name() {
        let root = scratch("hub");
        let c = caches(&root);
        let gguf = hub_repo(
            &c.hub,
            "org/one-gguf",
            &[("m.Q4_0.gguf", b"GGUF"), ("README.md", b"")],
        );
        let st = hub_repo(
            &c.hub,
            "org/st",
            &[("config.json", b"{}"), ("model.safetensors", b"")],
        );
        let two = hub_repo(
            &c.hub,
            "org/two",
            &[("a.gguf", b"GGUF"), ("b.gguf", b"GGUF")],
        );
        assert_eq!(c.resolve("org/one-gguf").unwrap(), gguf.join("m.Q4_0.gguf"));
        assert_eq!(
            c.resolve("org/one-gguf@main").unwrap(),
            gguf.join("m.Q4_0.gguf")
        );
        let commit = gguf.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            c.resolve(&format!("org/one-gguf@{commit}")).unwrap(),
            gguf.join("m.Q4_0.gguf")
        );
        assert_eq!(c.resolve("org/st").unwrap(), st);
        assert_eq!(c.resolve("org/two/b.gguf").unwrap(), two.join("b.gguf"));
        let several = c.resolve("org/two").unwrap_err().to_string();
        assert!(
            several.contains("2 GGUF files (a.gguf, b.gguf)"),
            "{several}"
        );
        let rev = c.resolve("org/st@v2").unwrap_err().to_string();
        assert!(rev.contains("no snapshot for revision 'v2'"), "{rev}");
        let missing = c.resolve("org/absent").unwrap_err().to_string();
        assert!(missing.contains("minerva ls"), "{missing}");
        let names: Vec<String> = c.list().into_iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            ["org/one-gguf", "org/st", "org/two/a.gguf", "org/two/b.gguf"]
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn minervas_own_models_resolve_by_file_name() {
        let root = scratch("own");
        let c = caches(&root);
        std::fs::create_dir_all(c.minerva.join("converted")).unwrap();
        std::fs::write(c.minerva.join("converted/config.json"), "{}").unwrap();
        std::fs::write(c.minerva.join("small.Q8_0.gguf"), "GGUF").unwrap();
        assert_eq!(
            c.resolve("small.Q8_0").unwrap(),
            c.minerva.join("small.Q8_0.gguf")
        );
        assert_eq!(c.resolve("converted").unwrap(), c.minerva.join("converted"));
        let names: Vec<String> = c.list().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["converted", "small.Q8_0"]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn configs_describe_their_format_and_quantization() {
        let root = scratch("describe");
        let mlx = root.join("mlx");
        std::fs::create_dir_all(&mlx).unwrap();
        std::fs::write(
            mlx.join("config.json"),
            r#"{"model_type": "gpt_oss", "quantization": {"group_size": 64, "bits": 8}}"#,
        )
        .unwrap();
        std::fs::write(mlx.join("model.safetensors"), [0u8; 100]).unwrap();
        let d = describe(&mlx).unwrap();
        assert_eq!(
            (d.format, d.quantization.as_str(), d.architecture.as_str()),
            ("mlx", "affine q8 g64", "gpt_oss")
        );
        assert!(d.bytes >= 100);
        std::fs::write(
            mlx.join("config.json"),
            r#"{"model_type": "llama", "torch_dtype": "bfloat16"}"#,
        )
        .unwrap();
        let d = describe(&mlx).unwrap();
        assert_eq!(
            (d.format, d.quantization.as_str()),
            ("safetensors", "bfloat16")
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
