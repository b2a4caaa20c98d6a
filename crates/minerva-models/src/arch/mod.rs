//! Model architectures, one file each, written against the core ops API.

pub mod gpt_oss;
pub mod llama;

use minerva_core::Array;

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
