//! Launchers: the CUDA side of each op in [`crate::ops`]. Arguments arrive checked (shapes,
//! dtypes, one device); each function picks a kernel, sizes its grid and queues it.
//! Activations are f32 and contiguous.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{CudaDevice, KernelArg};
use crate::ops::{Draw, Rope, RopeStyle, SampleSettings};
use crate::{Array, DType, Error, Result};

/// Rows of a weight per block in the matrix-vector kernels (one warp each).
const ROWS_PER_BLOCK: u32 = 4;
/// Tokens that share one pass over the weights in a multi-token product.
const TOKEN_TILE: usize = 8;
const THREADS: u32 = 256;
/// Rows from which a plain product takes the tensor-core kernels where its format has them.
/// Smaller products stay on the streaming kernels, whose one-token launches are shorter
/// (H100, 2880 columns of 8-bit affine, one token: 512 rows 4.5 us streaming, 10.1 us on
/// tensor cores; 2880 rows 14.4 vs 13.8; 4096 rows 13.7 vs 12.6). The choice follows the
/// weight alone, never the batch, so a token's bits do not depend on its company.
const TENSOR_MIN_ROWS: usize = 2048;

mod attention;
mod experts;
mod gemm;
pub(crate) use attention::{paged_attention, write_kv_pages};
pub(crate) use experts::mixture_of_experts;

fn device_of(a: &Array) -> Result<Arc<CudaDevice>> {
    Ok(Arc::clone(a.cuda_buffer()?.device()))
}

/// A grid for `n` elements with grid-stride loops (enough blocks to fill any GPU).
fn grid_for(n: usize) -> (u32, u32, u32) {
    (
        (n.div_ceil(THREADS as usize)).clamp(1, 1 << 16) as u32,
        1,
        1,
    )
}

fn ptr_or_null(a: Option<&Array>) -> Result<u64> {
    a.map(Array::device_ptr).transpose().map(|p| p.unwrap_or(0))
}

/// The kernel side of `struct Weight` in `products.cuh` (same field order and sizes).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct WeightArg {
    codes: u64,
    scales: u64,
    biases: u64,
    row_bytes: i64,
    expert_bytes: i64,
    expert_groups: i64,
    k: i32,
    param_kind: i32,
    bits: i32,
    group: i32,
}

/// The kernels generated for one weight format.
struct FormatKernels {
    linear1: &'static str,
    linear8: &'static str,
    /// `linear1` and `linear8` for up to three products of one input in one launch.
    linear_set1: &'static str,
    linear_set8: &'static str,
    embed: &'static str,
    /// Decodes rows to f16 for tensor-core products.
    dequant: &'static str,
    /// The streaming one-token products, (kernel, rows per block), most rows first.
    matvec: Option<&'static [(&'static str, usize)]>,
    /// The streaming few-token products, (kernel, rows per block), most rows first.
    tokens: Option<&'static [(&'static str, usize)]>,
    /// The tensor-core decode products (`tensor_products.cu`: any number of tokens, 16 a
    /// pass), (kernel, rows per block), most rows first. Where a format has them they take
    /// every plain product of at least [`TENSOR_MIN_ROWS`] rows.
    tensor: Option<&'static [(&'static str, usize)]>,
}

macro_rules! format_kernels {
    ($f:literal) => {
        FormatKernels {
            linear1: concat!("linear_", $f, "_1"),
            linear8: concat!("linear_", $f, "_8"),
            linear_set1: concat!("linear_set_", $f, "_1"),
            linear_set8: concat!("linear_set_", $f, "_8"),
            embed: concat!("embed_", $f),
            dequant: concat!("dequant_f16_", $f),
            matvec: None,
            tokens: None,
            tensor: None,
        }
    };
    ($f:literal, streaming $($rows:literal)+; tokens $($t:literal)+) => {
        FormatKernels {
            matvec: Some(&[$((concat!("matvec_", $f, "_r", $rows), $rows)),+]),
            tokens: Some(&[$((concat!("matvec_tokens_", $f, "_r", $t, "_n8"), $t)),+]),
            dequant: concat!("dequant8_f16_", $f),
            ..format_kernels!($f)
        }
    };
}

fn param_kind(a: &Array) -> Result<i32> {
    Ok(match a.dtype() {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::U8 => 3,
        other => return Err(Error::Unsupported(format!("{other} group parameters"))),
    })
}

/// Describes `w` (`[.., rows, k]`; a stack when it has three axes) to the kernels.
fn weight_arg(w: &Array) -> Result<(WeightArg, FormatKernels)> {
    let (k, rows) = (w.dim(-1), w.dim(-2));
    let dtype = w.dtype();
    let row_bytes = dtype
        .bytes_for(k)
        .ok_or_else(|| Error::Shape(format!("{dtype} rows of {k} values")))?;
    let codes = w.device_ptr()?;
    let (mut scales, mut biases, mut kind, mut bits, mut group) = (0, 0, 0, 0, 1);
    if let Some(q) = w.quant() {
        scales = q.scales.device_ptr()?;
        biases = ptr_or_null(q.biases.as_ref())?;
        kind = param_kind(&q.scales)?;
        group = dtype.block_len() as i32;
    }
    let vec4 = k % 4 == 0;
    let kernels = match dtype {
        DType::F32 if vec4 => format_kernels!("f32x4"),
        DType::F32 => format_kernels!("f32x1"),
        DType::F16 if vec4 => format_kernels!("f16x4"),
        DType::F16 => format_kernels!("f16x1"),
        DType::BF16 if vec4 => format_kernels!("bf16x4"),
        DType::BF16 => format_kernels!("bf16x1"),
        DType::Q4_0 => format_kernels!("q4_0"),
        DType::Q4_1 => format_kernels!("q4_1"),
        DType::Q8_0 => format_kernels!("q8_0"),
        DType::Affine { bits: b, .. } => {
            bits = b as i32;
            match b {
                8 if group % 64 == 0 => FormatKernels {
                    tensor: Some(&[
                        ("tc_linear_affine8_t4", 32),
                        ("tc_linear_affine8_t2", 16),
                        ("tc_linear_affine8_t1", 8),
                    ]),
                    ..format_kernels!("affine8", streaming 4 1; tokens 4 1)
                },
                8 => format_kernels!("affine8", streaming 4 1; tokens 4 1),
                4 => format_kernels!("affine4", streaming 4 1; tokens 2 1),
                _ => format_kernels!("affine_any"),
            }
        }
        DType::Mxfp4 => format_kernels!("mxfp4", streaming 16 8 4 1; tokens 4 1),
        other => return Err(Error::Unsupported(format!("{other} weights on CUDA"))),
    };
    // The 16-byte chunk loads of the MLX formats need 16-byte aligned rows.
    let wide = matches!(dtype, DType::Mxfp4) || matches!(dtype, DType::Affine { bits: 4 | 8, .. });
    if wide && (codes % 16 != 0 || row_bytes % 16 != 0) {
        return Err(Error::Unsupported(format!(
            "{dtype} weight rows not 16-byte aligned on the GPU"
        )));
    }
    let arg = WeightArg {
        codes,
        scales,
        biases,
        row_bytes: row_bytes as i64,
        expert_bytes: (rows * row_bytes) as i64,
        expert_groups: (rows * (k / group as usize)) as i64,
        k: k as i32,
        param_kind: kind,
        bits,
        group,
    };
    Ok((arg, kernels))
}

/// A product's operands as device addresses (a compiled graph's buffers): `tokens` rows of
/// f32 `x` times `w` (`[n, k]`, any weight dtype), plus the `n` f32 values at `bias` when
/// it is not 0, into `y`.
pub(crate) struct LinearPtrs<'a> {
    pub x: u64,
    pub tokens: usize,
    pub w: &'a Array,
    pub bias: u64,
    pub y: u64,
}

/// The kernel side of `struct LinearSet` in `linear.cu`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LinearSetArg {
    w: [WeightArg; 3],
    bias: [u64; 3],
    y: [u64; 3],
    n: [i32; 3],
    first: [i32; 4],
    pad: i32,
}

/// Queues the products of one input `ps` (same `x` and tokens): in one launch where they are
/// two or three of one format that all take the warp-per-row kernels (the GGUF and dense
/// formats at decode; each block computes what it would alone, so the bits are the same),
/// else one after another.
pub(crate) fn linear_set_into(dev: &Arc<CudaDevice>, ps: &[LinearPtrs<'_>]) -> Result<()> {
    let shared = match ps {
        [first, _, ..] if ps.len() <= 3 => {
            let dtype = first.w.dtype();
            let mut args = Vec::with_capacity(ps.len());
            for p in ps {
                let (arg, kernels) = weight_arg(p.w)?;
                let warp_rows = p.w.dtype() == dtype && warp_rows_only(dev, p, &kernels);
                args.push((arg, kernels, warp_rows));
            }
            args.iter().all(|a| a.2).then_some(args)
        }
        _ => None,
    };
    let Some(args) = shared else {
        return ps.iter().try_for_each(|p| linear_into(dev, p));
    };
    let mut set = LinearSetArg::zeroed();
    let mut blocks = 0;
    for (i, (p, (arg, _, _))) in ps.iter().zip(&args).enumerate() {
        let n = p.w.dim(0);
        set.w[i] = *arg;
        (set.bias[i], set.y[i], set.n[i], set.first[i]) = (p.bias, p.y, n as i32, blocks);
        blocks += n.div_ceil(ROWS_PER_BLOCK as usize) as i32;
    }
    set.first[ps.len()..].fill(blocks);
    let (tokens, kernels) = (ps[0].tokens, &args[0].1);
    let (name, grid_y) = match tokens {
        1 => (kernels.linear_set1, 1),
        _ => (kernels.linear_set8, tokens.div_ceil(TOKEN_TILE)),
    };
    dev.launch(
        name,
        (blocks as u32, grid_y as u32, 1),
        32 * ROWS_PER_BLOCK,
        &[&set, &ps[0].x, &(tokens as i32)],
    )
}

/// The format (a type of `products.cuh`) of `w`'s rows where its products can run on the
/// warp-per-row kernels at all (the GGUF, dense and odd-width affine formats; the MLX
/// 4- and 8-bit formats stream instead), for kernels generated around such products.
pub(crate) fn warp_row_format(w: &Array) -> Option<&'static str> {
    let vec4 = w.dim(-1).is_multiple_of(4);
    Some(match w.dtype() {
        DType::F32 if vec4 => "DenseF32<4>",
        DType::F32 => "DenseF32<1>",
        DType::F16 if vec4 => "DenseHalf<4, false>",
        DType::F16 => "DenseHalf<1, false>",
        DType::BF16 if vec4 => "DenseHalf<4, true>",
        DType::BF16 => "DenseHalf<1, true>",
        DType::Q4_0 => "Q4_0",
        DType::Q4_1 => "Q4_1",
        DType::Q8_0 => "Q8_0",
        DType::Affine { bits, .. } if !matches!(bits, 4 | 8) => "AffineAny",
        _ => return None,
    })
}

/// `p`'s weight as the warp-per-row kernels take it, where `p` runs on them (as
/// [`linear_into`] would run it now: the choice depends on the tokens and on capture).
pub(crate) fn warp_rows_weight(dev: &CudaDevice, p: &LinearPtrs<'_>) -> Result<Option<WeightArg>> {
    let (arg, kernels) = weight_arg(p.w)?;
    Ok(warp_rows_only(dev, p, &kernels).then_some(arg))
}

/// Whether `product` queues `p` on the warp-per-row kernels.
fn warp_rows_only(dev: &CudaDevice, p: &LinearPtrs<'_>, kernels: &FormatKernels) -> bool {
    let (n, k) = (p.w.dim(0), p.w.dim(1));
    let streaming = match p.tokens {
        1 => kernels.matvec.is_some(),
        _ => kernels.tokens.is_some(),
    };
    !gemm::worth_it(dev, p.tokens, n, k)
        && (kernels.tensor.is_none() || n < TENSOR_MIN_ROWS)
        && !streaming
}

/// Queues `y = x wᵀ + bias` (see [`LinearPtrs`]).
pub(crate) fn linear_into(dev: &Arc<CudaDevice>, p: &LinearPtrs<'_>) -> Result<()> {
    if gemm::linear(dev, p)? {
        return Ok(());
    }
    let (w, kernels) = weight_arg(p.w)?;
    let args = ProductArgs {
        w,
        x: p.x,
        bias: p.bias,
        y: p.y,
        n: p.w.dim(0),
        tokens: p.tokens,
        ids: 0,
        slots: 1,
        x_per_slot: false,
    };
    product(dev, &kernels, &args)
}

/// One weight product as the `linear_*` and `matvec_*` kernels take it: `tokens` rows of `x`
/// times `w`, `n` outputs each, or, with `ids` set, each (token, slot) pair times its
/// gathered matrix (`x` per token, or per pair with `x_per_slot`).
struct ProductArgs {
    w: WeightArg,
    x: u64,
    bias: u64,
    y: u64,
    n: usize,
    tokens: usize,
    ids: u64,
    slots: usize,
    x_per_slot: bool,
}

/// Queues the product on the format's tensor-core decode kernels where it has them and the
/// weight is large enough (all tokens in one pass); else on its streaming kernels where it
/// has them: one token per pass (every gathered product, and a plain one of one token) or
/// all tokens in one pass; else on its warp-per-row kernel (1 or a tile of tokens per pass).
fn product(dev: &Arc<CudaDevice>, kernels: &FormatKernels, a: &ProductArgs) -> Result<()> {
    let gathered = a.ids != 0;
    let passes = if gathered { a.tokens * a.slots } else { 1 };
    let tensor = kernels
        .tensor
        .filter(|_| !gathered && a.n >= TENSOR_MIN_ROWS);
    if let Some(tensor_kernels) = tensor {
        return all_tokens(
            dev,
            tensor_rows_per_block(dev, tensor_kernels, a.n),
            a,
            THREADS,
        );
    }
    if let (true, Some(matvec_kernels)) = (gathered || a.tokens == 1, kernels.matvec) {
        return matvec(dev, matvec_kernels, a, passes);
    }
    if let (false, Some(tokens_kernels)) = (gathered, kernels.tokens) {
        let kernel = rows_per_block(dev, tokens_kernels, a.n, 1);
        return all_tokens(dev, kernel, a, chunk_threads(&a.w));
    }
    let (name, grid_y) = match (gathered, a.tokens) {
        (true, _) => (kernels.linear1, passes),
        (false, 1) => (kernels.linear1, 1),
        (false, tokens) => (kernels.linear8, tokens.div_ceil(TOKEN_TILE)),
    };
    dev.launch(
        name,
        (
            a.n.div_ceil(ROWS_PER_BLOCK as usize) as u32,
            grid_y as u32,
            1,
        ),
        32 * ROWS_PER_BLOCK,
        &[
            &a.w,
            &a.x,
            &a.bias,
            &a.y,
            &(a.n as i32),
            &(a.tokens as i32),
            &a.ids,
            &(a.slots as i32),
            &(a.x_per_slot as i32),
        ],
    )
}

/// Queues a `matvec_tokens_*` or `tc_linear_*` kernel (`name`, of `rows` rows and `threads`
/// threads a block): every token of a plain product, each block looping over the tokens for
/// its rows.
fn all_tokens(
    dev: &Arc<CudaDevice>,
    (name, rows): (&'static str, usize),
    a: &ProductArgs,
    threads: u32,
) -> Result<()> {
    dev.launch(
        name,
        (a.n.div_ceil(rows) as u32, 1, 1),
        threads,
        &[&a.w, &a.x, &a.bias, &a.y, &(a.n as i32), &(a.tokens as i32)],
    )
}

/// Queues a `matvec_*` kernel over `passes` one-token products (see [`rows_per_block`] and
/// [`chunk_threads`]).
fn matvec(
    dev: &Arc<CudaDevice>,
    kernels: &[(&'static str, usize)],
    a: &ProductArgs,
    passes: usize,
) -> Result<()> {
    let (name, rows) = rows_per_block(dev, kernels, a.n, passes);
    dev.launch(
        name,
        (a.n.div_ceil(rows) as u32, passes as u32, 1),
        chunk_threads(&a.w),
        &[
            &a.w,
            &a.x,
            &a.bias,
            &a.y,
            &(a.n as i32),
            &a.ids,
            &(a.slots as i32),
            &(a.x_per_slot as i32),
        ],
    )
}

/// Of streaming kernels that compute R rows per block (most rows first), the one with the
/// most rows that still gives every SM two blocks over `n` rows in each of `passes`. The
/// formats offer what measured best on an H100: up to 4 rows for affine, whose registers
/// run out first, 16 for MXFP4, whose f16 activations cost more to prepare.
fn rows_per_block(
    dev: &CudaDevice,
    kernels: &[(&'static str, usize)],
    n: usize,
    passes: usize,
) -> (&'static str, usize) {
    most_rows_for(kernels, n, passes, 2 * dev.multiprocessors() as usize)
}

/// Of the tensor-core decode products (most rows first), the one with the most rows that
/// still gives every SM one and a half blocks. Measured on an H100 (8-bit affine, one and
/// ten tokens): q_proj's 4096 rows took 27-37% less time at 16 rows a block (256 blocks)
/// than at 8, o_proj's 2880 rows 14% more (180 blocks), the LM head least at 32.
fn tensor_rows_per_block(
    dev: &CudaDevice,
    kernels: &[(&'static str, usize)],
    n: usize,
) -> (&'static str, usize) {
    most_rows_for(kernels, n, 1, 3 * dev.multiprocessors() as usize / 2)
}

/// The first of `kernels` (most rows first) whose blocks over `n` rows in each of `passes`
/// number at least `min_blocks`, else the last.
fn most_rows_for(
    kernels: &[(&'static str, usize)],
    n: usize,
    passes: usize,
    min_blocks: usize,
) -> (&'static str, usize) {
    kernels
        .iter()
        .copied()
        .find(|&(_, rows)| n.div_ceil(rows) * passes >= min_blocks)
        .unwrap_or(kernels[kernels.len() - 1])
}

/// Threads of a streaming block: a warp per 32 chunks of a row (at most 8), so each thread
/// loads about one chunk of each row.
fn chunk_threads(w: &WeightArg) -> u32 {
    let chunks = w.row_bytes as usize / 16;
    32 * chunks.div_ceil(32).clamp(1, 8) as u32
}

/// For each (token, slot) pair, `x @ w[ids[pair]]ᵀ + bias[ids[pair]]`: `w` is a stack
/// `[experts, n, k]`, `ids` `[tokens, slots]`, and `x` is `[tokens, k]` (shared by the
/// slots) or `[tokens, slots, k]`. Returns `[tokens, slots, n]`.
pub(crate) fn gather_linear(
    x: &Array,
    w: &Array,
    bias: Option<&Array>,
    ids: &Array,
) -> Result<Array> {
    let dev = device_of(x)?;
    let (n, k) = (w.dim(1), w.dim(2));
    let (tokens, slots) = (ids.dim(0), ids.dim(1));
    let (w, kernels) = weight_arg(w)?;
    let out = Array::empty_cuda(&dev, DType::F32, &[tokens, slots, n])?;
    let args = ProductArgs {
        w,
        x: x.device_ptr()?,
        bias: ptr_or_null(bias)?,
        y: out.device_ptr()?,
        n,
        tokens,
        ids: ids.device_ptr()?,
        slots,
        x_per_slot: x.numel() == tokens * slots * k,
    };
    product(&dev, &kernels, &args)?;
    Ok(out)
}

/// Rows `ids` (`[tokens]` i32 on the device) of `table` (`[vocab, d]`) as f32.
pub(crate) fn embedding(table: &Array, ids: &Array) -> Result<Array> {
    let dev = device_of(table)?;
    let (vocab, d) = (table.dim(0), table.dim(1));
    let tokens = ids.numel();
    let (arg, kernels) = weight_arg(table)?;
    let out = Array::empty_cuda(&dev, DType::F32, &[tokens, d])?;
    dev.launch(
        kernels.embed,
        (tokens as u32, 1, 1),
        THREADS,
        &[
            &arg,
            &ids.device_ptr()?,
            &out.device_ptr()?,
            &(vocab as i32),
        ],
    )?;
    Ok(out)
}

/// Copies `bytes` (a multiple of 16) from `src` to `dst` with a kernel (the bandwidth probe;
/// the driver's own copy is not a kernel and overlaps differently).
pub(crate) fn copy_bytes(dev: &Arc<CudaDevice>, dst: u64, src: u64, bytes: usize) -> Result<()> {
    let n = (bytes / 16) as i64;
    let blocks = 4 * dev.multiprocessors() * (2048 / THREADS);
    dev.launch("copy_u4", (blocks, 1, 1), THREADS, &[&src, &dst, &n])
}

/// Queues the grid-stride kernel `name(inputs.., out, rest..)` over `n` elements, writing a
/// fresh f32 `out` of `out_shape` on `like`'s GPU.
fn map_kernel(
    name: &'static str,
    like: &Array,
    out_shape: &[usize],
    n: usize,
    inputs: &[&dyn KernelArg],
    rest: &[&dyn KernelArg],
) -> Result<Array> {
    let dev = device_of(like)?;
    let out = Array::empty_cuda(&dev, DType::F32, out_shape)?;
    let out_ptr = out.device_ptr()?;
    let mut args = inputs.to_vec();
    args.push(&out_ptr);
    args.extend_from_slice(rest);
    dev.launch(name, grid_for(n), THREADS, &args)?;
    Ok(out)
}

/// Adds the `m` f32 values at `bias` (one row) to each row of the `n` at `y`, in place.
fn add_rows(dev: &CudaDevice, y: u64, bias: u64, m: usize, n: usize) -> Result<()> {
    dev.launch(
        "binary_bcast",
        grid_for(n),
        THREADS,
        &[&y, &bias, &y, &(n as i64), &(m as i64), &0i32],
    )
}

/// The kernel side of `struct RopeFreqs` (passed by value).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RopeFreqs {
    inv_freq: [f32; 128],
}

pub(crate) fn rope(x: &Array, positions: &Array, rope: &Rope) -> Result<Array> {
    let dev = device_of(x)?;
    let [tokens, heads, head_dim] = *x.shape() else {
        unreachable!("ops::rope checked the rank")
    };
    let half = rope.inv_freq.len();
    if half > 128 {
        return Err(Error::Unsupported(format!(
            "rope over {} dims on CUDA",
            2 * half
        )));
    }
    let mut freqs = RopeFreqs {
        inv_freq: [0.0; 128],
    };
    freqs.inv_freq[..half].copy_from_slice(&rope.inv_freq);
    let out = Array::empty_cuda(&dev, DType::F32, x.shape())?;
    let style = match rope.style {
        RopeStyle::Interleaved => 0i32,
        RopeStyle::Half => 1,
    };
    if tokens * heads == 0 {
        return Ok(out);
    }
    dev.launch(
        "rope",
        ((tokens * heads) as u32, 1, 1),
        (head_dim.div_ceil(32) * 32).min(1024) as u32,
        &[
            &x.device_ptr()?,
            &out.device_ptr()?,
            &positions.device_ptr()?,
            &freqs,
            &(heads as i32),
            &(head_dim as i32),
            &(half as i32),
            &style,
            &rope.mscale,
        ],
    )?;
    Ok(out)
}

pub(crate) fn deinterleave(x: &Array, half_shape: &[usize]) -> Result<(Array, Array)> {
    let dev = device_of(x)?;
    let even = Array::empty_cuda(&dev, DType::F32, half_shape)?;
    let odd = Array::empty_cuda(&dev, DType::F32, half_shape)?;
    let pairs = even.numel();
    dev.launch(
        "deinterleave",
        grid_for(pairs),
        THREADS,
        &[
            &x.device_ptr()?,
            &even.device_ptr()?,
            &odd.device_ptr()?,
            &(pairs as i64),
        ],
    )?;
    Ok((even, odd))
}

pub(crate) fn transpose_last2(x: &Array, out_shape: &[usize]) -> Result<Array> {
    let (a, b) = (x.dim(-2), x.dim(-1));
    let batch = x.numel() / (a * b).max(1);
    let kind = match x.dtype() {
        DType::F32 => 0i32,
        DType::F16 => 1,
        DType::BF16 => 2,
        other => return Err(Error::Unsupported(format!("transposing {other} on CUDA"))),
    };
    let rest: [&dyn KernelArg; 4] = [&(batch as i64), &(a as i32), &(b as i32), &kind];
    map_kernel(
        "transpose_last2",
        x,
        out_shape,
        x.numel(),
        &[&x.device_ptr()?],
        &rest,
    )
}

/// Copies `count` runs of `run` bytes, at strides `src_stride` and `dst_stride`.
pub(crate) fn copy_strided(
    src: &Array,
    dst: &mut Array,
    count: usize,
    run: usize,
    src_stride: usize,
    dst_stride: usize,
) -> Result<()> {
    let dev = device_of(src)?;
    let (from, to) = (src.device_ptr()?, dst.device_ptr_mut()?);
    for i in 0..count {
        if run > 0 {
            dev.copy(
                to + (i * dst_stride) as u64,
                from + (i * src_stride) as u64,
                run,
            )?;
        }
    }
    Ok(())
}

/// Per token, the `k` best of `[tokens, experts]` scores and their softmax weights:
/// (`[tokens, k]` i32 ids, `[tokens, k]` f32 weights).
pub(crate) fn top_k_softmax(scores: &Array, k: usize) -> Result<(Array, Array)> {
    let dev = device_of(scores)?;
    let (tokens, experts) = (scores.dim(0), scores.dim(1));
    if k > 32 || experts > 1024 {
        return Err(Error::Unsupported(format!(
            "top-{k} of {experts} experts on CUDA (at most 32 of 1024)"
        )));
    }
    let ids = Array::empty_cuda(&dev, DType::I32, &[tokens, k])?;
    let weights = Array::empty_cuda(&dev, DType::F32, &[tokens, k])?;
    let warps = 4;
    dev.launch(
        "top_k_softmax",
        (tokens.div_ceil(warps) as u32, 1, 1),
        32 * warps as u32,
        &[
            &scores.device_ptr()?,
            &ids.device_ptr()?,
            &weights.device_ptr()?,
            &(tokens as i32),
            &(experts as i32),
            &(k as i32),
        ],
    )?;
    Ok((ids, weights))
}

/// `out[t] = Σ_s w[t, s] y[t, s]` for `y` `[tokens, slots, d]`.
pub(crate) fn weighted_sum(y: &Array, w: &Array) -> Result<Array> {
    let (tokens, slots, d) = (y.dim(0), y.dim(1), y.dim(2));
    let n = tokens * d;
    let inputs: [&dyn KernelArg; 2] = [&y.device_ptr()?, &w.device_ptr()?];
    let rest: [&dyn KernelArg; 3] = [&(slots as i32), &(n as i64), &(d as i32)];
    map_kernel("weighted_sum", y, &[tokens, d], n, &inputs, &rest)
}

/// Values each block of the first argmax stage scans (16 per thread).
const ARGMAX_SPAN: usize = 4096;

/// The index of the largest value of each row of `[rows, n]` f32 `x`, as `[rows]` i32: a
/// block per slice of a row, then a block per row over the slices (a single block per row
/// would read a 201k-token vocabulary at one multiprocessor's bandwidth).
pub(crate) fn argmax(x: &Array) -> Result<Array> {
    let dev = device_of(x)?;
    let (rows, n) = (x.dim(0), x.dim(1));
    let (parts, part_v, part_i, ids) = argmax_buffers(&dev, rows, n)?;
    if rows == 0 {
        return Ok(ids);
    }
    dev.launch(
        "argmax_partial",
        (parts as u32, rows as u32, 1),
        256,
        &[
            &x.device_ptr()?,
            &part_v.device_ptr()?,
            &part_i.device_ptr()?,
            &(n as i32),
            &(ARGMAX_SPAN as i32),
        ],
    )?;
    argmax_final(&dev, &part_v, &part_i, &ids, parts)?;
    Ok(ids)
}

/// The slices per row of a two-stage argmax over `[rows, n]`, their partial results (value,
/// index) and the `[rows]` output.
fn argmax_buffers(
    dev: &Arc<CudaDevice>,
    rows: usize,
    n: usize,
) -> Result<(usize, Array, Array, Array)> {
    let parts = n.div_ceil(ARGMAX_SPAN).max(1);
    Ok((
        parts,
        Array::empty_cuda(dev, DType::F32, &[rows, parts])?,
        Array::empty_cuda(dev, DType::I32, &[rows, parts])?,
        Array::empty_cuda(dev, DType::I32, &[rows])?,
    ))
}

/// The second argmax stage: a block per row merges its `parts` partial results into `ids`.
fn argmax_final(
    dev: &CudaDevice,
    part_v: &Array,
    part_i: &Array,
    ids: &Array,
    parts: usize,
) -> Result<()> {
    dev.launch(
        "argmax_final",
        (ids.dim(0) as u32, 1, 1),
        (parts.next_multiple_of(32)).min(1024) as u32,
        &[
            &part_v.device_ptr()?,
            &part_i.device_ptr()?,
            &ids.device_ptr()?,
            &(parts as i32),
        ],
    )
}

/// One token drawn from each row (see `ops::sample`): a block per row finds the row's
/// threshold (`sample_bounds`), then the argmax stages pick among the kept values by their
/// Gumbel-perturbed scores.
pub(crate) fn sample(x: &Array, settings: &[SampleSettings], draws: &[Draw]) -> Result<Array> {
    let dev = device_of(x)?;
    let device = x.device();
    let (rows, n) = (x.dim(0), x.dim(1));
    let settings: Vec<f32> = settings.iter().flat_map(SampleSettings::to_row).collect();
    let settings = Array::from_f32(&settings, &[rows, 4])?.to_device(device)?;
    let draws: Vec<i32> = draws
        .iter()
        .flat_map(Draw::to_row)
        .map(|w| w as i32)
        .collect();
    let draws = Array::from_i32(&draws, &[rows, 3])?.to_device(device)?;
    let bounds = Array::empty_cuda(&dev, DType::I32, &[rows, 2])?;
    let (parts, part_v, part_i, ids) = argmax_buffers(&dev, rows, n)?;
    if rows == 0 {
        return Ok(ids);
    }
    dev.launch(
        "sample_bounds",
        (rows as u32, 1, 1),
        1024,
        &[
            &x.device_ptr()?,
            &settings.device_ptr()?,
            &bounds.device_ptr()?,
            &(n as i32),
        ],
    )?;
    dev.launch(
        "sample_partial",
        (parts as u32, rows as u32, 1),
        256,
        &[
            &x.device_ptr()?,
            &settings.device_ptr()?,
            &bounds.device_ptr()?,
            &draws.device_ptr()?,
            &part_v.device_ptr()?,
            &part_i.device_ptr()?,
            &(n as i32),
            &(ARGMAX_SPAN as i32),
        ],
    )?;
    argmax_final(&dev, &part_v, &part_i, &ids, parts)?;
    Ok(ids)
}
