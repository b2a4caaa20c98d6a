//! Products of many tokens (prompts) on tensor cores: the weight decoded to f16 in a scratch
//! buffer, the activations rounded to f16, and cuBLAS multiplying them with f32 sums. Below
//! [`GEMM_MIN_TOKENS`] tokens, while a graph is captured, or without cuBLAS, the streaming
//! kernels do the product instead.

use std::sync::Arc;

use super::super::blas::HalfGemm;
use super::super::DeviceBuffer;
use super::{grid_for, weight_arg, CudaDevice, LinearPtrs, WeightArg, THREADS};
use crate::{DType, Result};

/// Tokens from which a product goes to tensor cores: decoding the weight to f16 costs about
/// two more passes over it, which a pass of the streaming kernels per 8 tokens (and their
/// f32 arithmetic) outweighs from here on.
pub(super) const GEMM_MIN_TOKENS: usize = 32;

/// Outputs from which a weight is worth decoding: a router's few (gpt-oss: 32) are not, and
/// its scores pick experts, a discrete choice better left to f32 sums.
const GEMM_MIN_OUTPUTS: usize = 64;

/// Whether a product of `tokens` tokens with a `[n, k]` weight goes to tensor cores on
/// `dev` (rows of a multiple of 8 values keep every f16 row 16-byte aligned; cuBLAS is
/// there).
pub(super) fn worth_it(dev: &CudaDevice, tokens: usize, n: usize, k: usize) -> bool {
    tokens >= GEMM_MIN_TOKENS
        && n >= GEMM_MIN_OUTPUTS
        && k.is_multiple_of(8)
        && !dev.is_capturing()
        && dev.has_blas()
}

/// `rows` rows of `k` f32 values at `x` (row `index[r] / divisor` for row r where `index`
/// is set) as f16.
pub(super) fn half_rows(
    dev: &Arc<CudaDevice>,
    x: u64,
    index: u64,
    divisor: usize,
    rows: usize,
    k: usize,
) -> Result<DeviceBuffer> {
    let out = dev.alloc(2 * rows * k)?;
    dev.launch(
        "rows_to_f16",
        grid_for(rows * k / 2),
        THREADS,
        &[
            &x,
            &index,
            &(divisor.max(1) as i32),
            &(rows as i64),
            &(k as i32),
            &out.ptr(),
        ],
    )?;
    Ok(out)
}

/// Where [`half_weight`] puts its rows: `count` matrices, `stride` values apart, from `ptr`.
#[derive(Clone, Copy)]
pub(super) struct HalfOut {
    pub ptr: u64,
    pub count: usize,
    pub stride: usize,
}

/// Rows `offset, offset + step, ...` (`rows` of them) of matrices `first, first + 1, ...`
/// of `w` (a stack; 0 for a plain weight) decoded to f16 (`[rows, k]` each) at `out`.
pub(super) fn half_weight(
    dev: &Arc<CudaDevice>,
    (w, dequant): (&WeightArg, &'static str),
    first: usize,
    (rows, step, offset): (usize, usize, usize),
    out: &HalfOut,
) -> Result<()> {
    // A thread per chunk, and chunks have at least 8 values where it matters (the
    // quantized formats); dense rows take a few chunks per thread.
    let (x, _, _) = grid_for(rows * w.k as usize / 8);
    dev.launch(
        dequant,
        (x, out.count as u32, 1),
        THREADS,
        &[
            w,
            &(first as i64),
            &(rows as i32),
            &(step as i32),
            &(offset as i32),
            &out.ptr,
            &(out.stride as i64),
        ],
    )
}

/// `out = x wᵀ + bias` on tensor cores where that pays (see the module); `Ok(false)` leaves
/// it to the caller.
pub(super) fn linear(dev: &Arc<CudaDevice>, p: &LinearPtrs<'_>) -> Result<bool> {
    let (w, tokens) = (p.w, p.tokens);
    let (n, k) = (w.dim(0), w.dim(1));
    if !worth_it(dev, tokens, n, k) {
        return Ok(false);
    }
    let xh = half_rows(dev, p.x, 0, 1, tokens, k)?;
    // f16 weights are used as they are; everything else is decoded first.
    let decoded;
    let wh = if w.dtype() == DType::F16 && w.quant().is_none() {
        w.device_ptr()?
    } else {
        let (arg, kernels) = weight_arg(w)?;
        decoded = dev.alloc(2 * n * k)?;
        let to = HalfOut {
            ptr: decoded.ptr(),
            count: 1,
            stride: 0,
        };
        half_weight(dev, (&arg, kernels.dequant), 0, (n, 1, 0), &to)?;
        decoded.ptr()
    };
    let y = p.y;
    dev.half_gemm(&HalfGemm {
        m: tokens,
        n,
        k,
        x: xh.ptr(),
        w: wh,
        y,
    })?;
    if p.bias != 0 {
        super::add_rows(dev, y, p.bias, n, tokens * n)?;
    }
    Ok(true)
}
