//! Multi-head self-attention with grouped KV heads, optional q/k/v/o biases, RoPE, and the
//! KV cache owned by the caller.

use minerva_core::ops::{self, AttentionOptions, Rope};
use minerva_core::{Array, Result};

use crate::kv::KvCache;

pub struct Attention {
    pub q: Array,
    pub k: Array,
    pub v: Array,
    pub o: Array,
    pub q_bias: Option<Array>,
    pub k_bias: Option<Array>,
    pub v_bias: Option<Array>,
    pub o_bias: Option<Array>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Sliding-window length for local-attention layers.
    pub window: Option<usize>,
    /// Learned per-head sink logits (gpt-oss).
    pub sinks: Option<Array>,
}

impl Attention {
    /// `x` is `[tokens, hidden]` at `positions`; returns `[tokens, hidden]`.
    pub fn forward(
        &self,
        x: &Array,
        positions: &Array,
        rope: &Rope,
        cache: &mut dyn KvCache,
        layer: usize,
    ) -> Result<Array> {
        let tokens = x.dim(0);
        let project = |w: &Array, b: &Option<Array>, heads: usize| {
            ops::linear(x, w, b.as_ref())?.reshape(&[tokens, heads, self.head_dim])
        };
        let q = ops::rope(
            &project(&self.q, &self.q_bias, self.heads)?,
            positions,
            rope,
        )?;
        let k = ops::rope(
            &project(&self.k, &self.k_bias, self.kv_heads)?,
            positions,
            rope,
        )?;
        let v = project(&self.v, &self.v_bias, self.kv_heads)?;
        let opts = AttentionOptions {
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            window: self.window,
            sinks: self.sinks.as_ref(),
        };
        let mixed = cache.attend(layer, &q, &k, &v, positions, opts)?;
        ops::linear(&mixed, &self.o, self.o_bias.as_ref())
    }
}
