//! Model hyper-parameters, from GGUF metadata or a `config.json`.

mod gpt_oss;
pub mod hf;
mod llama;

use std::path::Path;

pub use gpt_oss::{AttentionKind, GptOssConfig};
pub use llama::LlamaConfig;

use crate::error::{ModelError, Result};
use hf::HfJson;

/// Architectures Minerva runs, for error messages.
pub const SUPPORTED: &str = "llama, mistral, qwen2 (smollm2 is llama), gpt_oss";

/// A model's configuration, by architecture.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    Llama(LlamaConfig),
    GptOss(GptOssConfig),
}

impl ModelConfig {
    /// From a `config.json` (transformers, mlx-lm or OpenAI's original gpt-oss dialect).
    pub fn from_hf_json(path: &Path) -> Result<ModelConfig> {
        ModelConfig::from_hf(&HfJson::read(path)?)
    }

    /// The architecture of an already parsed `config.json`.
    pub fn from_hf(cfg: &HfJson<'_>) -> Result<ModelConfig> {
        let path = cfg.path;
        if GptOssConfig::is_openai_original(cfg) {
            return Ok(ModelConfig::GptOss(GptOssConfig::from_hf(cfg)?));
        }
        match cfg.model_type()? {
            "gpt_oss" => Ok(ModelConfig::GptOss(GptOssConfig::from_hf(cfg)?)),
            "llama" | "mistral" | "qwen2" => Ok(ModelConfig::Llama(LlamaConfig::from_hf(cfg)?)),
            other => Err(ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: other.to_string(),
                supported: SUPPORTED,
            }),
        }
    }
}
