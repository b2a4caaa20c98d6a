//! Model architectures, one file each, written against the core ops API.

pub mod gpt_oss;
pub mod llama;

use minerva_core::graph;
use minerva_core::ops::{self, Rope};
use minerva_core::{Array, Device};

use crate::blocks::moe::Moe;
use crate::blocks::{bytes_of, Attention, GatedMlp};

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
    /// Each layer's sliding attention window (`None`: the layer sees every position).
    pub windows: Vec<Option<usize>>,
    /// Where the weights are (caches go there too).
    pub device: Device,
}

/// Which positions a forward pass returns logits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token of each sequence (generation).
    Last,
    /// Every token (scoring, tests).
    All,
}

/// A decoder-only language model.
pub trait CausalLm: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// Runs `tokens` (positions `cache.len()..`) through the model, appending to `cache`;
    /// returns `[n, vocab]` f32 logits, `n` = 1 or `tokens.len()` per `logits`, on the
    /// model's device.
    fn forward(&self, tokens: &[u32], cache: &mut dyn KvCache, logits: Logits) -> Result<Array>;

    /// [`forward`](CausalLm::forward) with the token ids (`[n]` i32, trusted to be in the
    /// vocabulary when on a GPU) and their positions (`[n]` i32, from `cache.len()` on) as
    /// arrays on the model's device, so a captured graph can replay the pass with new values
    /// written into the same buffers.
    fn forward_ids(
        &self,
        ids: &Array,
        positions: &Array,
        cache: &mut dyn KvCache,
        logits: Logits,
    ) -> Result<Array>;

    /// Where the weights are.
    fn device(&self) -> Device;

    /// Bytes one decoded token reads at `context` tokens: every weight it uses (one
    /// embedding row, only the chosen experts) plus the keys and values it attends over,
    /// `kv_row_pair_bytes` per position and KV head (a key row and a value row as the cache
    /// stores them). Over memory bandwidth, the decode speed limit.
    fn decode_bytes(&self, context: usize, kv_row_pair_bytes: usize) -> u64;

    /// Moves every weight to `device`, calling `progress(bytes_done, bytes_total)` as it goes.
    fn to_device(&mut self, device: Device, progress: &mut dyn FnMut(u64, u64)) -> Result<()>;
}

/// `CausalLm` for an architecture struct with `info: ModelInfo` and `decoder: Decoder<_>`.
macro_rules! decoder_causal_lm {
    ($arch:ty) => {
        impl CausalLm for $arch {
            fn info(&self) -> &ModelInfo {
                &self.info
            }

            fn forward(
                &self,
                tokens: &[u32],
                cache: &mut dyn KvCache,
                logits: Logits,
            ) -> Result<Array> {
                self.decoder.forward(tokens, cache, logits)
            }

            fn forward_ids(
                &self,
                ids: &Array,
                positions: &Array,
                cache: &mut dyn KvCache,
                logits: Logits,
            ) -> Result<Array> {
                self.decoder.forward_ids(ids, positions, cache, logits)
            }

            fn device(&self) -> Device {
                self.decoder.device()
            }

            fn decode_bytes(&self, context: usize, kv_row_pair_bytes: usize) -> u64 {
                self.decoder.decode_bytes(context, kv_row_pair_bytes)
            }

            fn to_device(
                &mut self,
                device: Device,
                progress: &mut dyn FnMut(u64, u64),
            ) -> Result<()> {
                self.decoder.to_device(device, progress)?;
                self.info.device = device;
                Ok(())
            }
        }
    };
}
pub(crate) use decoder_causal_lm;

/// A feed-forward sublayer: a dense MLP or a mixture of experts.
pub trait FeedForward: Send + Sync {
    fn forward(&self, x: &Array) -> Result<Array>;

    /// Every weight array (to move them between devices).
    fn weights_mut(&mut self) -> Vec<&mut Array>;

    /// Weight bytes one token reads.
    fn decode_bytes(&self) -> u64;
}

impl FeedForward for GatedMlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        Ok(GatedMlp::forward(self, x)?)
    }

    fn decode_bytes(&self) -> u64 {
        bytes_of([&self.gate, &self.up, &self.down])
    }

    fn weights_mut(&mut self) -> Vec<&mut Array> {
        vec![&mut self.gate, &mut self.up, &mut self.down]
    }
}

impl FeedForward for Moe {
    fn forward(&self, x: &Array) -> Result<Array> {
        Ok(Moe::forward(self, x)?)
    }

    fn weights_mut(&mut self) -> Vec<&mut Array> {
        Moe::weights_mut(self)
    }

    fn decode_bytes(&self) -> u64 {
        let experts = self.router.dim(0) as u64;
        bytes_of([&self.router, &self.router_bias])
            + self.expert_bytes() * self.top_k as u64 / experts
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
    /// The output projection; `None` when it is the embedding table (tied weights).
    pub lm_head: Option<Array>,
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
        let start = cache.len();
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let positions: Vec<i32> = (start..start + tokens.len()).map(|p| p as i32).collect();
        // Positions go to the weights' device once per pass; every layer reads them there.
        // The ids stay on the host so that the embedding checks them against the vocabulary.
        let positions = Array::from_i32(&positions, &[tokens.len()])?.to_device(self.device())?;
        self.forward_ids(
            &Array::from_i32(&ids, &[ids.len()])?,
            &positions,
            cache,
            logits,
        )
    }

    /// See [`CausalLm::forward_ids`].
    pub fn forward_ids(
        &self,
        ids: &Array,
        positions: &Array,
        cache: &mut dyn KvCache,
        logits: Logits,
    ) -> Result<Array> {
        let n = ids.numel();
        if n == 0 || positions.shape() != [n] {
            return Err(minerva_core::Error::Shape(format!(
                "forward: {n} tokens at {:?} positions (need at least one, one each)",
                positions.shape()
            ))
            .into());
        }
        let eps = self.rms_eps;
        // Elementwise ops record lazily: each residual add and the norm after it compute
        // in one pass, when the next product reads the norm.
        graph::lazily(|| {
            let mut x = ops::embedding(&self.embed, ids)?;
            for (layer, block) in self.blocks.iter().enumerate() {
                let h = ops::rms_norm(&x, &block.attn_norm, eps)?;
                let attended = block
                    .attn
                    .forward(&h, positions, &self.rope, cache, layer)?;
                x = ops::add(&x, &attended)?;
                let h = ops::rms_norm(&x, &block.mlp_norm, eps)?;
                x = ops::add(&x, &block.ffn.forward(&h)?)?;
            }
            let mut h = ops::rms_norm(&x, &self.norm, eps)?;
            drop(x); // the last residual sum is only normed: never written out
            let last = cache.last_rows(n);
            cache.advance(n);
            if logits == Logits::Last && last.len() < n {
                h = match last[..] {
                    [row] => ops::slice_rows(&h, row, 1)?,
                    _ => {
                        let rows: Vec<i32> = last.iter().map(|&r| r as i32).collect();
                        ops::embedding(&h, &Array::from_i32(&rows, &[rows.len()])?)?
                    }
                };
            }
            let lm_head = self.lm_head.as_ref().unwrap_or(&self.embed);
            Ok(ops::linear(&h, lm_head, None)?)
        })
    }

    pub fn device(&self) -> Device {
        self.embed.device()
    }

    /// See [`CausalLm::decode_bytes`].
    pub fn decode_bytes(&self, context: usize, kv_row_pair_bytes: usize) -> u64 {
        let embed_row = bytes_of([&self.embed]) / self.embed.dim(0) as u64;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let blocks: u64 = self
            .blocks
            .iter()
            .map(|b| {
                let attn = &b.attn;
                let seen = attn.window.map_or(context, |w| w.min(context));
                let kv = attn.kv_heads * seen * kv_row_pair_bytes;
                bytes_of([&b.attn_norm, &b.mlp_norm])
                    + attn.weight_bytes()
                    + b.ffn.decode_bytes()
                    + kv as u64
            })
            .sum();
        embed_row + blocks + bytes_of([&self.norm, head])
    }

    /// See [`CausalLm::to_device`]: the blocks in order, then the head.
    pub fn to_device(&mut self, device: Device, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        let mut arrays: Vec<&mut Array> = vec![&mut self.embed, &mut self.norm];
        arrays.extend(self.lm_head.as_mut());
        for block in &mut self.blocks {
            arrays.push(&mut block.attn_norm);
            arrays.push(&mut block.mlp_norm);
            arrays.extend(block.attn.weights_mut());
            arrays.extend(block.ffn.weights_mut());
        }
        let total: u64 = arrays.iter().map(|a| a.nbytes() as u64).sum();
        let mut done = 0;
        for a in arrays {
            *a = a.to_device(device)?;
            done += a.nbytes() as u64;
            progress(done, total);
        }
        Ok(())
    }
}
