//! The KV cache as model code sees it. The engine owns the storage (contiguous today, paged
//! and quantized later); a model only appends its new keys/values and attends.

use minerva_core::ops::AttentionOptions;
use minerva_core::{Array, Result};

pub trait KvCache: Send {
    /// Tokens already cached, i.e. the position of the first token of this forward pass.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends layer `layer`'s keys and values of the new tokens (`[tokens, kv_heads,
    /// head_dim]`) and returns the attention of `q` (`[tokens, heads, head_dim]`, queries at
    /// `positions`) over everything cached, as `[tokens, heads * head_dim]`.
    fn attend(
        &mut self,
        layer: usize,
        q: &Array,
        k: &Array,
        v: &Array,
        positions: &Array,
        opts: AttentionOptions<'_>,
    ) -> Result<Array>;

    /// Commits the new tokens once every layer has attended.
    fn advance(&mut self, tokens: usize);
}
