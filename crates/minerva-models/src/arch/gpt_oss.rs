//! gpt-oss (OpenAI, 2025): a pre-norm decoder whose layers alternate sliding-window and full
//! grouped-query attention, each with learned per-head sink logits that take part in the
//! softmax, and whose feed-forward is a mixture of experts (top-k of a linear router,
//! softmax over the chosen) of clamped SwiGLU MLPs. YaRN RoPE, biases on q/k/v/o, an
//! untied LM head.
//!
//! ```text
//! h = x + Attention_l(RMSNorm(x))          sliding window on even layers, full on odd
//! y = h + MoE(RMSNorm(h))
//! logits = LMHead(RMSNorm(y_last))
//! ```
//!
//! Reads transformers' layout (dense experts `gate_up_proj` `[E, hidden, 2 inter]`,
//! input-major), OpenAI's release (`*_blocks` / `*_scales` MXFP4, output-major) and MLX
//! conversions (`experts.{gate,up,down}_proj` with quantized codes, scales and biases).

use minerva_core::ops;
use minerva_core::{Array, Device};

use super::{decoder_causal_lm, CausalLm, Decoder, DecoderBlock, Logits, ModelInfo};
use crate::blocks::moe::{GateUp, Moe};
use crate::blocks::Attention;
use crate::checkpoint::Checkpoint;
use crate::config::{AttentionKind, GptOssConfig};
use crate::error::Result;
use crate::kv::KvCache;

/// The SwiGLU sigmoid sharpness gpt-oss uses (not in its config).
const SWIGLU_ALPHA: f32 = 1.702;

pub struct GptOss {
    config: GptOssConfig,
    info: ModelInfo,
    decoder: Decoder<Moe>,
}

impl GptOss {
    pub fn load(checkpoint: &Checkpoint, config: GptOssConfig) -> Result<GptOss> {
        let c = &config;
        let (d, q_dim, kv_dim) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let (e, inter) = (c.experts, c.intermediate);
        let blocks = (0..c.layers)
            .map(|l| {
                let name = |role: &str| format!("model.layers.{l}.{role}");
                let weight = |role: &str, shape: &[usize]| {
                    checkpoint.weight(&name(&format!("{role}.weight")), shape)
                };
                let bias = |role: &str, shape: &[usize]| {
                    checkpoint.f32_tensor(&name(&format!("{role}.bias")), shape)
                };
                let attn = Attention {
                    q: weight("self_attn.q_proj", &[q_dim, d])?,
                    k: weight("self_attn.k_proj", &[kv_dim, d])?,
                    v: weight("self_attn.v_proj", &[kv_dim, d])?,
                    o: weight("self_attn.o_proj", &[d, q_dim])?,
                    q_bias: Some(bias("self_attn.q_proj", &[q_dim])?),
                    k_bias: Some(bias("self_attn.k_proj", &[kv_dim])?),
                    v_bias: Some(bias("self_attn.v_proj", &[kv_dim])?),
                    o_bias: Some(bias("self_attn.o_proj", &[d])?),
                    heads: c.heads,
                    kv_heads: c.kv_heads,
                    head_dim: c.head_dim,
                    window: match c.layer_types[l] {
                        AttentionKind::Sliding => Some(c.sliding_window),
                        AttentionKind::Full => None,
                    },
                    sinks: Some(checkpoint.f32_tensor(&name("self_attn.sinks"), &[c.heads])?),
                };
                let experts = |part: &str| name(&format!("mlp.experts.{part}"));
                let (gate_up, down) = if checkpoint.contains(&experts("gate_proj.weight")) {
                    // MLX: separate gate and up, `[E, out, in]`.
                    let gate_up = GateUp::Separate {
                        gate: weight("mlp.experts.gate_proj", &[e, inter, d])?,
                        gate_bias: bias("mlp.experts.gate_proj", &[e, inter])?,
                        up: weight("mlp.experts.up_proj", &[e, inter, d])?,
                        up_bias: bias("mlp.experts.up_proj", &[e, inter])?,
                    };
                    (gate_up, weight("mlp.experts.down_proj", &[e, d, inter])?)
                } else if checkpoint.contains(&experts("gate_up_proj_blocks")) {
                    // OpenAI's release: MXFP4, output-major, gate/up rows interleaved.
                    let gate_up = GateUp::Interleaved {
                        weight: checkpoint
                            .mxfp4_blocks(&experts("gate_up_proj"), &[e, 2 * inter, d])?,
                        bias: checkpoint
                            .f32_tensor(&experts("gate_up_proj_bias"), &[e, 2 * inter])?,
                    };
                    (
                        gate_up,
                        checkpoint.mxfp4_blocks(&experts("down_proj"), &[e, d, inter])?,
                    )
                } else {
                    // transformers: dense, input-major; stored transposed to `[E, out, in]`.
                    let dense = |part: &str, shape: &[usize]| -> Result<Array> {
                        Ok(ops::transpose_last2(
                            &checkpoint.weight(&experts(part), shape)?,
                        )?)
                    };
                    let gate_up = GateUp::Interleaved {
                        weight: dense("gate_up_proj", &[e, d, 2 * inter])?,
                        bias: checkpoint
                            .f32_tensor(&experts("gate_up_proj_bias"), &[e, 2 * inter])?,
                    };
                    (gate_up, dense("down_proj", &[e, inter, d])?)
                };
                let down_bias = match checkpoint.contains(&experts("down_proj.bias")) {
                    true => bias("mlp.experts.down_proj", &[e, d])?,
                    false => checkpoint.f32_tensor(&experts("down_proj_bias"), &[e, d])?,
                };
                Ok(DecoderBlock {
                    attn_norm: checkpoint.f32_tensor(&name("input_layernorm.weight"), &[d])?,
                    attn,
                    mlp_norm: checkpoint
                        .f32_tensor(&name("post_attention_layernorm.weight"), &[d])?,
                    ffn: Moe {
                        router: weight("mlp.router", &[e, d])?,
                        router_bias: bias("mlp.router", &[e])?,
                        gate_up,
                        down,
                        down_bias,
                        top_k: c.experts_per_token,
                        alpha: SWIGLU_ALPHA,
                        limit: c.swiglu_limit,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GptOss {
            info: ModelInfo {
                arch: "gpt_oss".into(),
                vocab: c.vocab,
                layers: c.layers,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim,
                context_length: c.context_length,
                windows: c
                    .layer_types
                    .iter()
                    .map(|t| match t {
                        AttentionKind::Sliding => Some(c.sliding_window),
                        AttentionKind::Full => None,
                    })
                    .collect(),
                device: Device::Cpu,
            },
            decoder: Decoder {
                embed: checkpoint.weight("model.embed_tokens.weight", &[c.vocab, d])?,
                lm_head: Some(checkpoint.weight("lm_head.weight", &[c.vocab, d])?),
                norm: checkpoint.f32_tensor("model.norm.weight", &[d])?,
                rope: c.rope.build(None),
                rms_eps: c.rms_eps,
                blocks,
            },
            config,
        })
    }

    pub fn config(&self) -> &GptOssConfig {
        &self.config
    }
}

decoder_causal_lm!(GptOss);
