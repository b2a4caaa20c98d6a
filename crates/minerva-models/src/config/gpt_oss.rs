//! Hyper-parameters of gpt-oss, from transformers' `config.json` (also what mlx-lm writes) or
//! OpenAI's original `config.json` (`num_experts`, `rope_ntk_alpha`, ...).

use minerva_core::ops::RopeStyle;
use serde_json::Value;

use super::hf::HfJson;
use crate::blocks::rope::{RopeConfig, RopeScaling};
use crate::error::Result;

/// Which attention a layer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    /// Sees the last `sliding_window` positions.
    Sliding,
    Full,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GptOssConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Each expert's SwiGLU width.
    pub intermediate: usize,
    pub experts: usize,
    pub experts_per_token: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope: RopeConfig,
    pub context_length: usize,
    pub sliding_window: usize,
    pub layer_types: Vec<AttentionKind>,
    /// SwiGLU clamp: gate at most this, linear half within ±this.
    pub swiglu_limit: f32,
}

impl GptOssConfig {
    /// Whether `cfg` is OpenAI's original gpt-oss config (no `model_type`, `num_experts`).
    pub fn is_openai_original(cfg: &HfJson<'_>) -> bool {
        cfg.field("model_type").is_none() && cfg.field("num_experts").is_some()
    }

    pub fn from_hf(cfg: &HfJson<'_>) -> Result<GptOssConfig> {
        let original = Self::is_openai_original(cfg);
        let layers = cfg.int("num_hidden_layers")?;
        let heads = cfg.int("num_attention_heads")?;
        let hidden = cfg.int("hidden_size")?;
        let head_dim = cfg.opt_int("head_dim")?.unwrap_or(hidden / heads.max(1));
        let (theta, scaling, experts, per_token, context) = if original {
            // OpenAI's own names for the same YaRN (its ntk alpha/beta are beta_slow/fast).
            let scaling = RopeScaling::Yarn {
                factor: cfg.float("rope_scaling_factor", 1.0)?,
                original_context: cfg.int("initial_context_length")? as f32,
                beta_fast: cfg.float("rope_ntk_beta", 32.0)?,
                beta_slow: cfg.float("rope_ntk_alpha", 1.0)?,
                truncate: false,
                attention_factor: None,
            };
            let context = cfg.int("initial_context_length")?
                * cfg.float("rope_scaling_factor", 1.0)? as usize;
            let theta = cfg.float("rope_theta", 150_000.0)?;
            (
                theta,
                scaling,
                cfg.int("num_experts")?,
                cfg.int("experts_per_token")?,
                context,
            )
        } else {
            let (theta, scaling) = cfg.rope()?;
            (
                theta,
                scaling,
                cfg.int("num_local_experts")?,
                cfg.int("num_experts_per_tok")?,
                cfg.int("max_position_embeddings")?,
            )
        };
        let layer_types = match cfg.field("layer_types") {
            Some(Value::Array(kinds)) => kinds
                .iter()
                .map(|k| match k.as_str() {
                    Some("sliding_attention") => Ok(AttentionKind::Sliding),
                    Some("full_attention") => Ok(AttentionKind::Full),
                    _ => Err(cfg.error(format!("layer_types: unknown entry {k}"))),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => return Err(cfg.error("layer_types is not a list")),
            // gpt-oss alternates, starting with a sliding-window layer.
            None => (0..layers)
                .map(|l| match l % 2 {
                    0 => AttentionKind::Sliding,
                    _ => AttentionKind::Full,
                })
                .collect(),
        };
        let config = GptOssConfig {
            hidden,
            layers,
            heads,
            kv_heads: cfg.opt_int("num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            intermediate: cfg.int("intermediate_size")?,
            experts,
            experts_per_token: per_token,
            vocab: cfg.int("vocab_size")?,
            rms_eps: cfg.float("rms_norm_eps", 1e-5)?,
            rope: RopeConfig {
                theta,
                dim: head_dim,
                scaling,
                style: RopeStyle::Half,
            },
            context_length: context,
            sliding_window: cfg.opt_int("sliding_window")?.unwrap_or(128),
            layer_types,
            swiglu_limit: cfg.float("swiglu_limit", 7.0)?,
        };
        config.validate(cfg)
    }

    fn validate(self, cfg: &HfJson<'_>) -> Result<Self> {
        let zero = [
            self.hidden,
            self.layers,
            self.heads,
            self.kv_heads,
            self.head_dim,
        ]
        .into_iter()
        .chain([
            self.intermediate,
            self.experts,
            self.vocab,
            self.sliding_window,
        ])
        .any(|d| d == 0);
        if zero {
            return Err(cfg.error(format!("config has a zero dimension: {self:?}")));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(cfg.error(format!(
                "{} heads are not a multiple of {} KV heads",
                self.heads, self.kv_heads
            )));
        }
        if self.experts_per_token == 0 || self.experts_per_token > self.experts {
            return Err(cfg.error(format!(
                "{} experts per token out of {} experts",
                self.experts_per_token, self.experts
            )));
        }
        if self.layer_types.len() != self.layers {
            return Err(cfg.error(format!(
                "layer_types has {} entries for {} layers",
                self.layer_types.len(),
                self.layers
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(cfg.error(format!("head_dim {} is odd", self.head_dim)));
        }
        Ok(self)
    }
}
