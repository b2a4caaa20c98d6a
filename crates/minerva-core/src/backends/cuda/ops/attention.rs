//! The paged KV cache on CUDA (`kernels/attention.cu`): writing a pass's keys and values into
//! their pages, and attention over them, per sequence either split over the keys (decoded
//! tokens, short runs) or on tensor cores (prompt chunks).

use std::sync::Arc;

use super::{device_of, ptr_or_null};
use crate::backends::cuda::CudaDevice;
use crate::ops::AttentionOptions;
use crate::{Array, DType, Error, KvDType, KvPages, PageTable, Result};

/// Keys per split that keep a block busy without leaving the GPU idle.
const KEYS_PER_SPLIT: usize = 64;
const MAX_SPLITS: usize = 64;

/// Tokens of one sequence from which its attention runs on tensor cores (`attn_prompt_*`, 64
/// queries per block: fewer would leave most of each tile idle).
const FLASH_MIN_TOKENS: usize = 16;
const FLASH_ROWS: usize = 64;

/// The kernels' number for a storage kind (`KV_*` in attention.cu).
fn kind(dtype: KvDType) -> i32 {
    match dtype {
        KvDType::F32 => 0,
        KvDType::F16 => 1,
        KvDType::Int8 => 2,
        KvDType::Int4 => 3,
    }
}

/// The pool as kernel arguments: codes and parameters (0 for the float kinds).
fn pool_ptrs(pages: &KvPages) -> Result<(u64, u64)> {
    Ok((pages.codes().device_ptr()?, ptr_or_null(pages.params())?))
}

/// Writes `new` (`[tokens, kv_heads, head_dim]`) into `pages`; see [`crate::ops::write_kv_pages`].
pub(crate) fn write_kv_pages(
    pages: &mut KvPages,
    table: PageTable<'_>,
    positions: &Array,
    new: &Array,
) -> Result<()> {
    let dev = device_of(new)?;
    let (tokens, width) = (new.dim(0), table.tables.dim(1));
    let (kv_heads, page_size, count, head_dim) = (
        pages.kv_heads(),
        pages.page_size(),
        pages.pages(),
        pages.head_dim(),
    );
    let kind = kind(pages.dtype());
    let (codes, params) = pages.parts_mut();
    let codes = codes.device_ptr_mut()?;
    let params = match params {
        Some(p) => p.device_ptr_mut()?,
        None => 0,
    };
    let warps = 8;
    dev.launch(
        "write_kv_pages",
        ((tokens * kv_heads).div_ceil(warps) as u32, 1, 1),
        32 * warps as u32,
        &[
            &codes,
            &params,
            &new.device_ptr()?,
            &positions.device_ptr()?,
            &table.seq_of.device_ptr()?,
            &table.tables.device_ptr()?,
            &(tokens as i32),
            &(kv_heads as i32),
            &(page_size as i32),
            &(width as i32),
            &(count as i32),
            &(head_dim as i32),
            &kind,
        ],
    )
}

/// The name of a kernel that reads keys and values stored as `storage` (both alike, or int8
/// keys with int4 values; `kv_pages` says why those two), or `$unbuilt` for other pairs.
macro_rules! by_storage {
    ($storage:expr, $unbuilt:expr, $($name:literal),+) => {{
        use KvDType::{Int4, Int8, F16, F32};
        match $storage {
            (F32, F32) => concat!($($name),+, "_f32"),
            (F16, F16) => concat!($($name),+, "_f16"),
            (Int8, Int8) => concat!($($name),+, "_int8"),
            (Int4, Int4) => concat!($($name),+, "_int4"),
            (Int8, Int4) => concat!($($name),+, "_int8_int4"),
            _ => $unbuilt,
        }
    }};
}

/// The tensor-core prompt kernel for `head_dim` and `storage` (keys, values), where there is
/// one (not over f32).
fn prompt_kernel(head_dim: usize, storage: (KvDType, KvDType)) -> Option<&'static str> {
    if storage.0 == KvDType::F32 {
        return None;
    }
    macro_rules! pick {
        ($d:literal) => {
            by_storage!(storage, return None, "attn_prompt_d", $d)
        };
    }
    Some(match head_dim {
        16 => pick!("16"),
        32 => pick!("32"),
        64 => pick!("64"),
        128 => pick!("128"),
        _ => return None,
    })
}

/// The split-over-keys kernel for `head_dim`, `group` query heads per KV head and `storage`
/// (keys, values).
fn split_kernel(
    head_dim: usize,
    group: usize,
    storage: (KvDType, KvDType),
) -> Result<&'static str> {
    let unbuilt = || {
        Error::Unsupported(format!(
            "attention over {} keys and {} values on CUDA",
            storage.0, storage.1
        ))
    };
    macro_rules! by_kind {
        ($d:literal, $g:literal) => {
            by_storage!(
                storage,
                return Err(unbuilt()),
                "attn_partial_d",
                $d,
                "_g",
                $g
            )
        };
    }
    macro_rules! pick {
        ($d:literal) => {
            match group {
                ..=4 => by_kind!($d, "4"),
                ..=8 => by_kind!($d, "8"),
                ..=16 => by_kind!($d, "16"),
                _ => {
                    return Err(Error::Unsupported(format!(
                        "{group} query heads per KV head on CUDA"
                    )))
                }
            }
        };
    }
    Ok(match head_dim {
        1..=32 => pick!("1"),
        33..=64 => pick!("2"),
        65..=128 => pick!("4"),
        _ => {
            return Err(Error::Unsupported(format!(
                "head_dim {head_dim} attention on CUDA"
            )))
        }
    })
}

/// One attention call's arrays as kernel arguments, and its sizes.
#[derive(Clone, Copy)]
struct Call<'a> {
    dev: &'a Arc<CudaDevice>,
    q: u64,
    k: (u64, u64),
    v: (u64, u64),
    positions: u64,
    seq_of: u64,
    tables: u64,
    out: u64,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    page_size: usize,
    width: usize,
    pages: usize,
    opts: AttentionOptions<'a>,
}

impl Call<'_> {
    /// The pointers of a call over tokens `first..` alone.
    fn at_token(self, first: usize) -> Self {
        let row = (first * self.heads * self.head_dim * 4) as u64;
        let id = (first * 4) as u64;
        Call {
            q: self.q + row,
            out: self.out + row,
            positions: self.positions + id,
            seq_of: self.seq_of + id,
            ..self
        }
    }
}

/// Causal GQA attention over paged keys and values; see [`crate::ops::paged_attention`].
/// Each sequence's run of tokens goes to the tensor-core kernel when it is a prompt chunk
/// (and the storage is 16-bit or narrower), else with its neighbours to the split kernel:
/// which kernel a sequence gets depends on its own tokens alone, never on the batch.
pub(crate) fn paged_attention(
    q: &Array,
    k: &KvPages,
    v: &KvPages,
    table: PageTable<'_>,
    positions: &Array,
    opts: AttentionOptions<'_>,
) -> Result<Array> {
    let dev = device_of(q)?;
    let [tokens, heads, head_dim] = *q.shape() else {
        unreachable!("ops::paged_attention checked the rank")
    };
    let out = Array::empty_cuda(&dev, DType::F32, &[tokens, heads * head_dim])?;
    let call = Call {
        dev: &dev,
        q: q.device_ptr()?,
        k: pool_ptrs(k)?,
        v: pool_ptrs(v)?,
        positions: positions.device_ptr()?,
        seq_of: table.seq_of.device_ptr()?,
        tables: table.tables.device_ptr()?,
        out: out.device_ptr()?,
        heads,
        kv_heads: k.kv_heads(),
        head_dim,
        page_size: k.page_size(),
        width: table.tables.dim(1),
        pages: k.pages(),
        opts,
    };
    let storage = (k.dtype(), v.dtype());
    let flash = prompt_kernel(head_dim, storage);
    let split = split_kernel(head_dim, heads / call.kv_heads, storage)?;
    // Runs of consecutive sequences that go to the split kernel, launched together.
    let mut pending: Option<(usize, usize)> = None;
    let mut at = 0;
    for &run in table.runs {
        match flash.filter(|_| run >= FLASH_MIN_TOKENS) {
            Some(kernel) => {
                if let Some((first, n)) = pending.take() {
                    split_attention(split, call.at_token(first), n)?;
                }
                flash_attention(kernel, call.at_token(at), run)?;
            }
            None => {
                let (first, n) = pending.unwrap_or((at, 0));
                pending = Some((first, n + run));
            }
        }
        at += run;
    }
    if let Some((first, n)) = pending {
        split_attention(split, call.at_token(first), n)?;
    }
    Ok(out)
}

/// `tokens` query tokens of one sequence on tensor cores.
fn flash_attention(kernel: &'static str, c: Call<'_>, tokens: usize) -> Result<()> {
    c.dev.launch(
        kernel,
        (tokens.div_ceil(FLASH_ROWS) as u32, c.heads as u32, 1),
        128,
        &[
            &c.q,
            &c.k.0,
            &c.k.1,
            &c.v.0,
            &c.v.1,
            &c.positions,
            &c.seq_of,
            &c.tables,
            &ptr_or_null(c.opts.sinks)?,
            &c.out,
            &(tokens as i32),
            &(c.heads as i32),
            &(c.kv_heads as i32),
            &(c.page_size as i32),
            &(c.width as i32),
            &(c.pages as i32),
            &(c.opts.window.unwrap_or(0) as i32),
            &c.opts.scale,
        ],
    )
}

/// `tokens` query tokens split over the keys, then merged with the sinks.
fn split_attention(kernel: &'static str, c: Call<'_>, tokens: usize) -> Result<()> {
    let dev = c.dev;
    // The split count follows what a sequence could see (its table's span, or the window),
    // never the tokens cached or the batch: a captured decode step replays unchanged as the
    // context grows (the kernel finds the visible keys from the positions on the device;
    // splits past them do nothing), and a sequence sums its keys in the same order alone or
    // in a batch.
    let span = c.width * c.page_size;
    let visible = c.opts.window.map_or(span, |w| w.min(span));
    let splits = visible.div_ceil(KEYS_PER_SPLIT).clamp(1, MAX_SPLITS);
    let rows = tokens * c.heads * splits;
    let part_acc = Array::empty_cuda(dev, DType::F32, &[rows, c.head_dim])?;
    let part_ml = Array::empty_cuda(dev, DType::F32, &[rows, 2])?;
    dev.launch(
        kernel,
        (splits as u32, c.kv_heads as u32, tokens as u32),
        128,
        &[
            &c.q,
            &c.k.0,
            &c.k.1,
            &c.v.0,
            &c.v.1,
            &c.positions,
            &c.seq_of,
            &c.tables,
            &part_acc.device_ptr()?,
            &part_ml.device_ptr()?,
            &(c.heads as i32),
            &(c.kv_heads as i32),
            &(c.page_size as i32),
            &(c.width as i32),
            &(c.pages as i32),
            &(c.head_dim as i32),
            &(c.opts.window.unwrap_or(0) as i32),
            &c.opts.scale,
        ],
    )?;
    dev.launch(
        "attn_combine",
        ((tokens * c.heads) as u32, 1, 1),
        c.head_dim as u32,
        &[
            &part_acc.device_ptr()?,
            &part_ml.device_ptr()?,
            &ptr_or_null(c.opts.sinks)?,
            &c.out,
            &(c.heads as i32),
            &(splits as i32),
            &(c.head_dim as i32),
        ],
    )
}
