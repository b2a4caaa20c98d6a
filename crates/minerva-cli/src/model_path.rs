//! Which model to use when none is named: the default model in Minerva's cache.

use std::path::{Path, PathBuf};

use anyhow::bail;
use minerva_models::model_cache::default_model_path;

/// The model to load: `explicit`, else the cached default model.
pub fn resolve(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let default = default_model_path();
    if !default.is_file() {
        bail!(
            "no --model given and the default model is not at {}: run scripts/fetch-default-model (or ./minerva, which fetches it)",
            default.display()
        );
    }
    Ok(default)
}
