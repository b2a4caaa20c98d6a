//! Keys and values in fixed-size pages, as a paged KV cache stores them.
//!
//! One layer's keys (or values) live in a pool of pages; a page holds `page_size` positions
//! of every KV head. Each (position, head) row of `head_dim` values is stored as
//! [`KvDType`] says:
//!
//! | dtype | codes per row | f16 parameters per row | value |
//! |---|---|---|---|
//! | `F32` | `head_dim` f32 | none | as stored |
//! | `F16` | `head_dim` f16 | none | as stored |
//! | `Int8` | `head_dim` i8 | scale `s` | `s * q`, `s = max abs / 127` |
//! | `Int4` | `head_dim / 2` bytes, two 4-bit codes each, low nibble first | scale `s`, minimum `m` | `s * q + m`, `s = (max - min) / 15` |
//!
//! Codes are `[pages, kv_heads, page_size, codes per row]` and parameters `[pages, kv_heads,
//! page_size, params per row]`, so a page is one contiguous run of each. A row's scale
//! belongs to that (position, head) alone: a row is quantized once, when it is written, and
//! never again (a per-page scale would have to be fixed before the page's later rows exist).
//! int8 is symmetric (an extra f16 minimum would cost 3% more memory for a gain the 8-bit
//! step does not need); int4 keeps the minimum, which matters at 16 levels.
//!
//! Keys and values are separate pools, and may be stored differently: 4-bit values want
//! 8-bit keys. A key row has a few large channels (RoPE's slowest pairs) that set its range,
//! so a 4-bit step over the row is coarse for all the others, and every attention score
//! takes that error; a value's error only averages into the output. SmolLM2-135M's
//! perplexity (40 windows of 512, CPU) against f16: int4 keys with f16 values +14.5%, f16
//! keys with int4 values +0.9%, int8 keys with int4 values +1.1% (51 bytes a row of 64 on
//! average, int8 66, int4 36). Finer 4-bit key rows cost as many bytes for less accuracy:
//! groups of 16 with their own scale and minimum (48 bytes) +6.9% for keys and values, with a
//! Hadamard rotation of the row first +3.7%, the two largest values kept in f16 as well (54
//! bytes, values in groups of 32) +2.2%.
//!
//! Which page holds a position is the [`PageTable`]'s business: a sequence's position `j` is
//! in page `tables[seq][(j / page_size) % width]`, row `j % page_size`. A table as wide as
//! the sequence's pages maps positions one to one; a narrower one is a ring, enough for a
//! sliding-window layer, whose old positions are overwritten once no query can see them.

use crate::{Array, DType, Device, Error, Result};

/// How a paged KV cache stores each (position, head) row; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvDType {
    F32,
    F16,
    Int8,
    Int4,
}

impl KvDType {
    /// Parses `f32`, `f16`, `int8` or `int4` (as the command-line flags spell them).
    pub fn parse(name: &str) -> Result<KvDType> {
        Ok(match name {
            "f32" => KvDType::F32,
            "f16" => KvDType::F16,
            "int8" | "q8" => KvDType::Int8,
            "int4" | "q4" => KvDType::Int4,
            _ => {
                return Err(Error::Unsupported(format!(
                    "KV cache dtype '{name}' (expected f16, f32, int8 or int4)"
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            KvDType::F32 => "f32",
            KvDType::F16 => "f16",
            KvDType::Int8 => "int8",
            KvDType::Int4 => "int4",
        }
    }

    /// The element type of the codes array.
    pub fn code_dtype(self) -> DType {
        match self {
            KvDType::F32 => DType::F32,
            KvDType::F16 => DType::F16,
            KvDType::Int8 | KvDType::Int4 => DType::U8,
        }
    }

    /// Code elements per row of `head_dim` values.
    pub fn codes_per_row(self, head_dim: usize) -> usize {
        match self {
            KvDType::Int4 => head_dim.div_ceil(2),
            _ => head_dim,
        }
    }

    /// f16 parameters per row (scale, then minimum).
    pub fn params_per_row(self) -> usize {
        match self {
            KvDType::F32 | KvDType::F16 => 0,
            KvDType::Int8 => 1,
            KvDType::Int4 => 2,
        }
    }

    /// Bytes one row of `head_dim` values takes, parameters included.
    pub fn row_bytes(self, head_dim: usize) -> usize {
        self.codes_per_row(head_dim) * self.code_dtype().block_bytes() + 2 * self.params_per_row()
    }

    /// Whether attention over this storage rounds its operands to f16 (everything but f32:
    /// the GPU multiplies such caches on f16 tensor cores, and the CPU rounds the same way).
    pub fn half_products(self) -> bool {
        self != KvDType::F32
    }
}

impl std::fmt::Display for KvDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One layer's keys or values: a pool of pages (see the module documentation).
pub struct KvPages {
    dtype: KvDType,
    head_dim: usize,
    /// `[pages, kv_heads, page_size, codes per row]`.
    codes: Array,
    /// `[pages, kv_heads, page_size, params per row]` f16, for the integer dtypes.
    params: Option<Array>,
}

impl KvPages {
    /// `pages` zeroed pages on `device`.
    pub fn zeros(
        dtype: KvDType,
        pages: usize,
        kv_heads: usize,
        page_size: usize,
        head_dim: usize,
        device: Device,
    ) -> Result<KvPages> {
        if kv_heads == 0 || page_size == 0 || head_dim == 0 {
            return Err(Error::Shape(format!(
                "KV pages of {kv_heads} heads x {page_size} positions x {head_dim} values"
            )));
        }
        if dtype == KvDType::Int4 && !head_dim.is_multiple_of(2) {
            return Err(Error::Unsupported(format!(
                "an int4 KV cache with an odd head_dim {head_dim}"
            )));
        }
        let rows = [pages, kv_heads, page_size];
        let codes = Array::zeros_on(
            dtype.code_dtype(),
            &[rows[0], rows[1], rows[2], dtype.codes_per_row(head_dim)],
            device,
        )?;
        let params = match dtype.params_per_row() {
            0 => None,
            n => Some(Array::zeros_on(
                DType::F16,
                &[rows[0], rows[1], rows[2], n],
                device,
            )?),
        };
        Ok(KvPages {
            dtype,
            head_dim,
            codes,
            params,
        })
    }

    pub fn dtype(&self) -> KvDType {
        self.dtype
    }

    pub fn pages(&self) -> usize {
        self.codes.dim(0)
    }

    pub fn kv_heads(&self) -> usize {
        self.codes.dim(1)
    }

    pub fn page_size(&self) -> usize {
        self.codes.dim(2)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub fn device(&self) -> Device {
        self.codes.device()
    }

    /// Bytes of storage, parameters included.
    pub fn nbytes(&self) -> usize {
        self.codes.nbytes() + self.params.as_ref().map_or(0, Array::nbytes)
    }

    pub fn codes(&self) -> &Array {
        &self.codes
    }

    pub fn params(&self) -> Option<&Array> {
        self.params.as_ref()
    }

    pub(crate) fn parts_mut(&mut self) -> (&mut Array, Option<&mut Array>) {
        (&mut self.codes, self.params.as_mut())
    }

    /// A pool of `pages` pages (at least as many as this one's) holding this one's pages
    /// first, for a cache that grows. Pages are the outer axis, so this is one copy each.
    pub fn grown(&self, pages: usize) -> Result<KvPages> {
        let mut bigger = KvPages::zeros(
            self.dtype,
            pages.max(self.pages()),
            self.kv_heads(),
            self.page_size(),
            self.head_dim,
            self.device(),
        )?;
        crate::ops::copy_prefix(&self.codes, &mut bigger.codes)?;
        if let (Some(from), Some(to)) = (&self.params, &mut bigger.params) {
            crate::ops::copy_prefix(from, to)?;
        }
        Ok(bigger)
    }
}

/// Where each token of a forward pass keeps its keys and values in [`KvPages`].
#[derive(Clone, Copy, Debug)]
pub struct PageTable<'a> {
    /// `[sequences, width]` i32 page ids: a sequence's position `j` is in page
    /// `tables[seq][(j / page_size) % width]`, row `j % page_size`.
    pub tables: &'a Array,
    /// `[tokens]` i32: each token's sequence (row of `tables`). A sequence's tokens are
    /// consecutive in a pass.
    pub seq_of: &'a Array,
    /// How many tokens each sequence brings, in the pass's order (on the host, so that a
    /// backend can pick a kernel per sequence: a prompt chunk and a decoded token are
    /// different work). Sums to the pass's tokens.
    pub runs: &'a [usize],
}
