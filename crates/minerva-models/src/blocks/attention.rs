//! Multi-head self-attention with grouped KV heads, optional q/k/v/o biases, RoPE, and the
//! KV cache owned by the caller.

use minerva_core::ops::{self, AttentionOptions, Rope};
use minerva_core::{Array, Result};

use super::bytes_of;
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
    /// Every weight array (to move them between devices).
    pub fn weights_mut(&mut self) -> Vec<&mut Array> {
        let mut all = vec![&mut self.q, &mut self.k, &mut self.v, &mut self.o];
        for extra in [
            &mut self.q_bias,
            &mut self.k_bias,
            &mut self.v_bias,
            &mut self.o_bias,
            &mut self.sinks,
        ] {
            all.extend(extra.as_mut());
        }
        all
    }

    /// Bytes of every weight (a decoded token reads them all).
    pub fn weight_bytes(&self) -> u64 {
        let optional = [
            &self.q_bias,
            &self.k_bias,
            &self.v_bias,
            &self.o_bias,
            &self.sinks,
        ];
        bytes_of(
            [&self.q, &self.k, &self.v, &self.o]
                .into_iter()
                .chain(optional.into_iter().flatten()),
        )
    }

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
        // All three products before anything reads one (a reshape reads), so that they run
        // together.
        let q = ops::linear(x, &self.q, self.q_bias.as_ref())?;
        let k = ops::linear(x, &self.k, self.k_bias.as_ref())?;
        let v = ops::linear(x, &self.v, self.v_bias.as_ref())?;
        let heads = |a: Array, n: usize| a.reshape(&[tokens, n, self.head_dim]);
        let q = ops::rope(&heads(q, self.heads)?, positions, rope)?;
        let k = ops::rope(&heads(k, self.kv_heads)?, positions, rope)?;
        let v = heads(v, self.kv_heads)?;
        let opts = AttentionOptions {
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            window: self.window,
            sinks: self.sinks.as_ref(),
        };
        let mixed = cache.attend(layer, &q, &k, &v, positions, opts)?;
        ops::linear(&mixed, &self.o, self.o_bias.as_ref())
    }
}
