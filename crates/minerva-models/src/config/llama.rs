//! Hyper-parameters of Llama-family models, from GGUF metadata or an HF `config.json`.

use std::path::Path;

use minerva_core::ops::RopeStyle;

use super::hf::HfJson;
use super::SUPPORTED;
use crate::blocks::rope::{RopeConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::formats::gguf::GgufFile;

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub arch: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope: RopeConfig,
    pub context_length: usize,
    /// Biases on the q/k/v projections (Qwen2).
    pub qkv_bias: bool,
    /// Sliding-window attention length (Mistral v0.1), for every layer.
    pub sliding_window: Option<usize>,
}

impl LlamaConfig {
    fn validate(self, path: &Path) -> Result<Self> {
        let bad = |msg: String| Err(ModelError::config(path, msg));
        if self.hidden == 0
            || self.layers == 0
            || self.heads == 0
            || self.kv_heads == 0
            || self.vocab == 0
        {
            return bad(format!("config has a zero dimension: {self:?}"));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "{} heads are not a multiple of {} KV heads",
                self.heads, self.kv_heads
            ));
        }
        if self.rope.dim > self.head_dim || !self.rope.dim.is_multiple_of(2) {
            return bad(format!(
                "rope dimension {} does not fit head dim {}",
                self.rope.dim, self.head_dim
            ));
        }
        Ok(self)
    }

    /// From GGUF metadata keys `{arch}.*`; vocabulary size from the embedding tensor.
    pub fn from_gguf(gguf: &GgufFile) -> Result<LlamaConfig> {
        let arch = gguf.architecture()?.to_string();
        let style = match arch.as_str() {
            // llama.cpp's converter permutes Llama Q/K rows so that pairs are adjacent.
            "llama" | "mistral" => RopeStyle::Interleaved,
            "qwen2" => RopeStyle::Half,
            _ => {
                return Err(ModelError::UnsupportedArchitecture {
                    path: gguf.path().to_path_buf(),
                    arch,
                    supported: SUPPORTED,
                })
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = gguf.get_u32(&key("embedding_length"))? as usize;
        let heads = gguf.get_u32(&key("attention.head_count"))? as usize;
        let kv_heads = gguf
            .get_opt_u32(&key("attention.head_count_kv"))?
            .map_or(heads, |v| v as usize);
        let head_dim = gguf
            .get_opt_u32(&key("attention.key_length"))?
            .map_or(hidden / heads.max(1), |v| v as usize);
        let scaling = match gguf.get_opt_str(&key("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: gguf.get_f32(&key("rope.scaling.factor"))?,
            },
            Some(other) => {
                return Err(ModelError::config(
                    gguf.path(),
                    format!(
                        "unsupported rope scaling '{other}' ({})",
                        key("rope.scaling.type")
                    ),
                ))
            }
        };
        let vocab = gguf.tensor("token_embd.weight").map_or(0, |t| t.shape[0]);
        LlamaConfig {
            hidden,
            layers: gguf.get_u32(&key("block_count"))? as usize,
            heads,
            kv_heads,
            head_dim,
            intermediate: gguf.get_u32(&key("feed_forward_length"))? as usize,
            vocab,
            rms_eps: gguf.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope: RopeConfig {
                theta: gguf
                    .get_opt_f32(&key("rope.freq_base"))?
                    .unwrap_or(10_000.0),
                dim: gguf
                    .get_opt_u32(&key("rope.dimension_count"))?
                    .map_or(head_dim, |v| v as usize),
                scaling,
                style,
            },
            context_length: gguf
                .get_opt_u32(&key("context_length"))?
                .map_or(2048, |v| v as usize),
            qkv_bias: gguf.tensor("blk.0.attn_q.bias").is_some(),
            sliding_window: gguf
                .get_opt_u32(&key("attention.sliding_window"))?
                .map(|v| v as usize),
            arch,
        }
        .validate(gguf.path())
    }

    /// From an HF `config.json` (already read).
    pub fn from_hf(cfg: &HfJson<'_>) -> Result<LlamaConfig> {
        let arch = cfg.model_type()?.to_string();
        if !matches!(arch.as_str(), "llama" | "mistral" | "qwen2") {
            return Err(ModelError::UnsupportedArchitecture {
                path: cfg.path.to_path_buf(),
                arch,
                supported: SUPPORTED,
            });
        }
        let hidden = cfg.int("hidden_size")?;
        let heads = cfg.int("num_attention_heads")?;
        let head_dim = cfg.opt_int("head_dim")?.unwrap_or(hidden / heads.max(1));
        let (theta, scaling) = cfg.rope()?;
        let sliding_window = match arch.as_str() {
            "mistral" => cfg.opt_int("sliding_window")?,
            "qwen2" if cfg.bool("use_sliding_window") == Some(true) => {
                return Err(cfg.error("qwen2 use_sliding_window is not supported"))
            }
            _ => None,
        };
        LlamaConfig {
            hidden,
            layers: cfg.int("num_hidden_layers")?,
            heads,
            kv_heads: cfg.opt_int("num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            intermediate: cfg.int("intermediate_size")?,
            vocab: cfg.int("vocab_size")?,
            rms_eps: cfg.float("rms_norm_eps", 1e-6)?,
            rope: RopeConfig {
                theta,
                dim: head_dim,
                scaling,
                style: RopeStyle::Half,
            },
            context_length: cfg.opt_int("max_position_embeddings")?.unwrap_or(2048),
            qkv_bias: arch == "qwen2" || cfg.bool("attention_bias") == Some(true),
            sliding_window,
            arch,
        }
        .validate(cfg.path)
    }
}
