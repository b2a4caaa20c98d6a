//! The Llama family (Llama 2/3, Mistral, Qwen2, SmolLM2): pre-norm decoder blocks of
//! grouped-query attention with RoPE and a SwiGLU MLP, RMSNorm throughout.
//!
//! ```text
//! h = x + Attention(RMSNorm(x))
//! y = h + MLP(RMSNorm(h))
//! logits = LMHead(RMSNorm(y_last))
//! ```

use minerva_core::{Array, Device};

use super::{decoder_causal_lm, CausalLm, Decoder, DecoderBlock, Logits, ModelInfo};
use crate::blocks::{Attention, GatedMlp};
use crate::checkpoint::Checkpoint;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::kv::KvCache;

pub struct Llama {
    config: LlamaConfig,
    info: ModelInfo,
    decoder: Decoder<GatedMlp>,
}

/// Tensor names of one checkpoint layout.
#[derive(Clone, Copy)]
enum Naming {
    /// llama.cpp's GGUF names (`blk.0.attn_q.weight`).
    Gguf,
    /// Hugging Face names (`model.layers.0.self_attn.q_proj.weight`).
    Hf,
}

impl Naming {
    fn global(self, role: &str) -> &'static str {
        match (self, role) {
            (Naming::Gguf, "embed") => "token_embd.weight",
            (Naming::Gguf, "norm") => "output_norm.weight",
            (Naming::Gguf, "lm_head") => "output.weight",
            (Naming::Hf, "embed") => "model.embed_tokens.weight",
            (Naming::Hf, "norm") => "model.norm.weight",
            (Naming::Hf, "lm_head") => "lm_head.weight",
            _ => unreachable!("unknown global tensor role {role}"),
        }
    }

    /// `role` is the HF module path inside a layer, e.g. `self_attn.q_proj`.
    fn layer(self, layer: usize, role: &str, suffix: &str) -> String {
        match self {
            Naming::Hf => format!("model.layers.{layer}.{role}.{suffix}"),
            Naming::Gguf => {
                let short = match role {
                    "input_layernorm" => "attn_norm",
                    "self_attn.q_proj" => "attn_q",
                    "self_attn.k_proj" => "attn_k",
                    "self_attn.v_proj" => "attn_v",
                    "self_attn.o_proj" => "attn_output",
                    "post_attention_layernorm" => "ffn_norm",
                    "mlp.gate_proj" => "ffn_gate",
                    "mlp.up_proj" => "ffn_up",
                    "mlp.down_proj" => "ffn_down",
                    _ => unreachable!("unknown layer tensor role {role}"),
                };
                format!("blk.{layer}.{short}.{suffix}")
            }
        }
    }
}

impl Llama {
    pub fn load(checkpoint: &Checkpoint, config: LlamaConfig) -> Result<Llama> {
        let naming = match checkpoint {
            Checkpoint::Gguf(_) => Naming::Gguf,
            Checkpoint::Safetensors(_) => Naming::Hf,
        };
        let c = &config;
        let (d, q_dim, kv_dim) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let embed = checkpoint.matrix(naming.global("embed"), [c.vocab, d])?;
        let lm_head = match checkpoint.contains(naming.global("lm_head")) {
            true => Some(checkpoint.matrix(naming.global("lm_head"), [c.vocab, d])?),
            false => None,
        };
        let blocks = (0..c.layers)
            .map(|l| {
                let name = |role: &str| naming.layer(l, role, "weight");
                let bias = |role: &str, n: usize| {
                    checkpoint.optional_f32(&naming.layer(l, role, "bias"), &[n])
                };
                let attn = Attention {
                    q: checkpoint.matrix(&name("self_attn.q_proj"), [q_dim, d])?,
                    k: checkpoint.matrix(&name("self_attn.k_proj"), [kv_dim, d])?,
                    v: checkpoint.matrix(&name("self_attn.v_proj"), [kv_dim, d])?,
                    o: checkpoint.matrix(&name("self_attn.o_proj"), [d, q_dim])?,
                    q_bias: bias("self_attn.q_proj", q_dim)?,
                    k_bias: bias("self_attn.k_proj", kv_dim)?,
                    v_bias: bias("self_attn.v_proj", kv_dim)?,
                    o_bias: bias("self_attn.o_proj", d)?,
                    heads: c.heads,
                    kv_heads: c.kv_heads,
                    head_dim: c.head_dim,
                    window: c.sliding_window,
                    sinks: None,
                };
                if c.qkv_bias && attn.q_bias.is_none() {
                    return Err(ModelError::MissingTensor {
                        path: checkpoint.path().to_path_buf(),
                        name: naming.layer(l, "self_attn.q_proj", "bias"),
                    });
                }
                Ok(DecoderBlock {
                    attn_norm: checkpoint.f32_tensor(&name("input_layernorm"), &[d])?,
                    attn,
                    mlp_norm: checkpoint.f32_tensor(&name("post_attention_layernorm"), &[d])?,
                    ffn: GatedMlp {
                        gate: checkpoint.matrix(&name("mlp.gate_proj"), [c.intermediate, d])?,
                        up: checkpoint.matrix(&name("mlp.up_proj"), [c.intermediate, d])?,
                        down: checkpoint.matrix(&name("mlp.down_proj"), [d, c.intermediate])?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // GGUF Llama 3 files carry their RoPE scaling as precomputed per-frequency divisors.
        let freq_factors = checkpoint
            .optional_f32("rope_freqs.weight", &[c.rope.dim / 2])?
            .map(|a| a.to_f32_vec())
            .transpose()?;
        let rope = c.rope.build(freq_factors.as_deref());
        Ok(Llama {
            info: ModelInfo {
                arch: c.arch.clone(),
                vocab: c.vocab,
                layers: c.layers,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim,
                context_length: c.context_length,
                windows: vec![c.sliding_window; c.layers],
                device: Device::Cpu,
            },
            decoder: Decoder {
                norm: checkpoint.f32_tensor(naming.global("norm"), &[d])?,
                embed,
                blocks,
                lm_head,
                rope,
                rms_eps: c.rms_eps,
            },
            config,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }
}

decoder_causal_lm!(Llama);
