//! A contiguous KV cache: per layer, keys and values as `[kv_heads, capacity, head_dim]` in
//! f16 (the default: half the memory traffic) or f32 (exact, for reference checks).
//! It grows by doubling up to the model's context length, so short chats stay small.

use minerva_core::ops::{self, AttentionOptions};
use minerva_core::{Array, DType, Device, Error, Result};
use minerva_models::{KvCache, ModelInfo};

pub struct ContiguousKvCache {
    layers: Vec<(Array, Array)>,
    len: usize,
    capacity: usize,
    max_len: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    device: Device,
}

const INITIAL_CAPACITY: usize = 256;

impl ContiguousKvCache {
    /// An f16 cache for `info`'s shapes holding at most `max_len` tokens (the model's
    /// context length when `None`).
    pub fn new(info: &ModelInfo, max_len: Option<usize>) -> Result<Self> {
        Self::with_dtype(info, max_len, DType::F16)
    }

    /// A cache storing keys and values as `dtype` (f16 or f32), on the model's device.
    pub fn with_dtype(info: &ModelInfo, max_len: Option<usize>, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F16 | DType::F32) {
            return Err(Error::Unsupported(format!("{dtype} KV cache")));
        }
        let max_len = max_len
            .unwrap_or(info.context_length)
            .min(info.context_length)
            .max(1);
        let mut cache = ContiguousKvCache {
            layers: Vec::new(),
            len: 0,
            capacity: 0,
            max_len,
            kv_heads: info.kv_heads,
            head_dim: info.head_dim,
            dtype,
            device: info.device,
        };
        cache.layers = (0..info.layers)
            .map(|_| Ok((cache.empty(0)?, cache.empty(0)?)))
            .collect::<Result<_>>()?;
        cache.grow_to(INITIAL_CAPACITY.min(max_len))?;
        Ok(cache)
    }

    /// Most tokens this cache can hold.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes allocated for keys and values (capacity, not just the tokens held).
    pub fn bytes(&self) -> usize {
        2 * self.layers.len()
            * self.kv_heads
            * self.capacity
            * self.head_dim
            * self.dtype.block_bytes()
    }

    /// Tokens the storage holds now before it must grow (and move).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Grows the storage, if needed, to hold `tokens` more tokens, so that the next passes
    /// up to that length write in place; errors when that exceeds `max_len`.
    pub fn reserve(&mut self, tokens: usize) -> Result<()> {
        let end = self.len + tokens;
        if end > self.max_len {
            return Err(Error::Shape(format!(
                "context full: {end} tokens exceed the cache's {} tokens",
                self.max_len
            )));
        }
        self.grow_to(end)
    }

    /// Forgets everything after the first `len` tokens (to reuse a shared prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn empty(&self, capacity: usize) -> Result<Array> {
        Array::zeros_on(
            self.dtype,
            &[self.kv_heads, capacity, self.head_dim],
            self.device,
        )
    }

    fn grow_to(&mut self, needed: usize) -> Result<()> {
        if needed <= self.capacity {
            return Ok(());
        }
        let capacity = needed.next_power_of_two().min(self.max_len);
        for i in 0..self.layers.len() {
            let mut fresh = (self.empty(capacity)?, self.empty(capacity)?);
            let (old_k, old_v) = &self.layers[i];
            ops::copy_kv_prefix(old_k, &mut fresh.0, self.len)?;
            ops::copy_kv_prefix(old_v, &mut fresh.1, self.len)?;
            self.layers[i] = fresh;
        }
        self.capacity = capacity;
        Ok(())
    }
}

impl KvCache for ContiguousKvCache {
    fn len(&self) -> usize {
        self.len
    }

    fn attend(
        &mut self,
        layer: usize,
        q: &Array,
        k: &Array,
        v: &Array,
        positions: &Array,
        opts: AttentionOptions<'_>,
    ) -> Result<Array> {
        let tokens = k.dim(0);
        self.reserve(tokens)?;
        let end = self.len + tokens;
        let (kc, vc) = &mut self.layers[layer];
        ops::write_kv(kc, positions, k)?;
        ops::write_kv(vc, positions, v)?;
        ops::attention(q, kc, vc, end, positions, opts)
    }

    fn advance(&mut self, tokens: usize) {
        self.len += tokens;
    }
}
