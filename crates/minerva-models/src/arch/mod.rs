//! Model architectures, one file each, written against the core ops API.

pub mod gpt_oss;
pub mod llama;

use minerva_core::ops::{self, Rope};
use minerva_core::Array;

use crate::blocks::moe::Moe;
use crate::blocks::{Attention, GatedMlp};

use crate::error::Result;
use crate::kv::KvCache;

/// Shape facts the engine needs to size caches and drive generation.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub arch: String,
    pub vocab: usize,
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub context_length: usize,
}

/// Which positions a forward pass returns logits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token (generation).
    Last,
    /// Every token (scoring, tests).
    All,
}

/// A decoder-only language model.
pub trait CausalLm: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// Runs `tokens` (positions `cache.len()..`) through the model, appending to `cache`;
    /// returns `[n, vocab]` f32 logits, `n` = 1 or `tokens.len()` per `logits`.
    fn forward(&self, tokens: &[u32], cache: &mut dyn KvCache, logits: Logits) -> Result<Array>;
}

/// A feed-forward sublayer: a dense MLP or a mixture of experts.
pub trait FeedForward: Send + Sync {
    fn forward(&self, x: &Array) -> Result<Array>;
}

impl FeedForward for GatedMlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        Ok(GatedMlp::forward(self, x)?)
    }
}

impl FeedForward for Moe {
    fn forward(&self, x: &Array) -> Result<Array> {
        Ok(Moe::forward(self, x)?)
    }
}

/// One pre-norm decoder layer: `h = x + attn(norm(x)); y = h + ffn(norm(h))`.
pub struct DecoderBlock<F> {
    pub attn_norm: Array,
    pub attn: Attention,
    pub mlp_norm: Array,
    pub ffn: F,
}

/// The pre-norm decoder stack both architectures are: embed, layers, final RMSNorm, LM head.
pub struct Decoder<F> {
    pub embed: Array,
    pub blocks: Vec<DecoderBlock<F>>,
    pub norm: Array,
    /// The output projection (the embedding table itself when the weights are tied).
    pub lm_head: Array,
    pub rope: Rope,
    pub rms_eps: f32,
}

impl<F: FeedForward> Decoder<F> {
    /// Runs `tokens` at positions `cache.len()..`; see [`CausalLm::forward`].
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut dyn KvCache,
        logits: Logits,
    ) -> Result<Array> {
        let n = tokens.len();
        if n == 0 {
            return Err(
                minerva_core::Error::Shape("forward needs at least one token".into()).into(),
            );
        }
        let start = cache.len();
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let positions: Vec<i32> = (start..start + n).map(|p| p as i32).collect();
        let positions = Array::from_i32(&positions, &[n])?;
        let eps = self.rms_eps;
        let mut x = ops::embedding(&self.embed, &Array::from_i32(&ids, &[n])?)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = ops::rms_norm(&x, &block.attn_norm, eps)?;
            let attended = block
                .attn
                .forward(&h, &positions, &self.rope, cache, layer)?;
            x = ops::add(&x, &attended)?;
            let h = ops::rms_norm(&x, &block.mlp_norm, eps)?;
            x = ops::add(&x, &block.ffn.forward(&h)?)?;
        }
        cache.advance(n);
        if logits == Logits::Last {
            x = ops::slice_rows(&x, n - 1, 1)?;
        }
        let x = ops::rms_norm(&x, &self.norm, eps)?;
        Ok(ops::linear(&x, &self.lm_head, None)?)
    }
}
