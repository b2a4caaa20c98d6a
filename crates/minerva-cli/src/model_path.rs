//! Which model to use when none is named: the default model in Minerva's cache.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::bail;
use minerva_core::Device;
use minerva_engine::{Engine, KvConfig};
use minerva_models::local_models::Caches;
use minerva_models::model_cache::default_model_path;

/// The model and device the global `--model` and `--device` flags name.
pub struct ModelChoice {
    pub model: Option<PathBuf>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `f16`, `f32`, `int8` or `int4`.
    pub kv_dtype: String,
}

impl ModelChoice {
    /// The model file or folder (see [`resolve`]).
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        resolve(self.model.as_deref())
    }

    /// The device to run on; an error that says why when a named GPU cannot be used.
    pub fn device(&self) -> anyhow::Result<Device> {
        Ok(Device::choose(&self.device)?)
    }

    /// How KV caches store keys and values (`--kv-dtype`).
    pub fn kv_config(&self) -> anyhow::Result<KvConfig> {
        KvConfig::parse(&self.kv_dtype).map_err(|e| anyhow::anyhow!("--kv-dtype: {e}"))
    }

    /// Loads the model onto the chosen device, with a progress bar on a terminal while
    /// weights upload to a GPU.
    pub fn load_engine(&self) -> anyhow::Result<Engine> {
        let path = self.path()?;
        let device = self.device()?;
        let kv = self.kv_config()?;
        let bar = upload_bar(device);
        let mut engine = Engine::load_on(&path, device, &mut |done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            }
        })?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        engine.set_kv_config(kv);
        tracing::info!(
            "loaded {} on {device} in {:.0} ms",
            path.display(),
            engine.load_time().as_secs_f64() * 1e3
        );
        Ok(engine)
    }
}

fn upload_bar(device: Device) -> Option<indicatif::ProgressBar> {
    if device == Device::Cpu || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "uploading weights to {device} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}}"
        ))
        .ok()?,
    );
    Some(bar)
}

/// The model to load: `explicit` (a path, or a name found in the model caches: see
/// [`Caches::resolve`]), else the cached default model.
pub fn resolve(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        // A path spelled as one (absolute or relative to '.') is taken as is, so that a
        // missing file is reported as such by the loader.
        if path.exists() || path.is_absolute() || path.starts_with(".") || path.starts_with("..") {
            return Ok(path.to_path_buf());
        }
        let spec = path.to_string_lossy();
        return Caches::from_env()
            .resolve(&spec)
            .map_err(|e| anyhow::anyhow!("--model {e}"));
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
