//! Products on the CPU: `x · wᵀ + bias` for every weight dtype, read in place.

use half::{bf16, f16};

use super::{dense, grouped, quant};
use crate::{Array, DType, Error, Result};

/// Widens 16-bit float bytes (possibly unaligned, as in a mapping) into a typed vector.
pub(crate) fn halves<T: bytemuck::Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

/// Whether products take weights of `dtype` (every backend multiplies these).
pub(crate) const fn multiplies(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F32
            | DType::F16
            | DType::BF16
            | DType::Q4_0
            | DType::Q4_1
            | DType::Q8_0
            | DType::Affine { .. }
            | DType::Mxfp4
    )
}

/// `out = x · wᵀ (+ bias)` for rows of `x` (`[tokens, k]`), `w` `[n, k]` and `out`
/// `[tokens, n]`.
pub fn linear_into(x: &[f32], w: &Array, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
    let [n, k] = *w.shape() else {
        return Err(Error::Shape(format!("a weight of shape {:?}", w.shape())));
    };
    let tokens = x.len() / k;
    if x.len() != tokens * k || out.len() != tokens * n || bias.is_some_and(|b| b.len() != n) {
        return Err(Error::Shape(format!(
            "product of {} values and a {:?} weight into {}",
            x.len(),
            w.shape(),
            out.len()
        )));
    }
    match w.dtype() {
        DType::F32 => dense::matmul_f32(x, w.as_f32()?, tokens, k, n, true, out),
        DType::F16 => dense::matmul_half::<f16>(&halves(w.host_bytes()?), n, k, x, out),
        DType::BF16 => dense::matmul_half::<bf16>(&halves(w.host_bytes()?), n, k, x, out),
        DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => {
            quant::matmul(w.dtype(), w.host_bytes()?, n, k, x, out)
        }
        DType::Affine { .. } | DType::Mxfp4 => {
            grouped::matmul(&grouped::GroupedView::of(w)?, x, out)
        }
        other => return Err(Error::Unsupported(format!("linear with {other} weights"))),
    }
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(n) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
    Ok(())
}
