//! The KV cache as model code sees it. The engine owns the storage (paged, maybe quantized)
//! and knows which sequences a forward pass carries; a model only appends its new
//! keys/values and attends.

use minerva_core::ops::AttentionOptions;
use minerva_core::{Array, Result};

pub trait KvCache: Send {
    /// Tokens already cached, i.e. the position of the first token of this forward pass
    /// (of its first sequence, when it carries several).
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

    /// The rows of a pass of `tokens` tokens that end a sequence (whose logits pick its next
    /// token): the last one, unless the pass carries several sequences.
    fn last_rows(&self, tokens: usize) -> Vec<usize> {
        vec![tokens - 1]
    }

    /// Commits the new tokens once every layer has attended.
    fn advance(&mut self, tokens: usize);
}
