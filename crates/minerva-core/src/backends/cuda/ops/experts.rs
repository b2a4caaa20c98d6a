//! The fused mixture of experts (`kernels/experts.cu`): one launch for the gate and up
//! products with their SwiGLU, one for the down products with the router's mixing.

use bytemuck::{Pod, Zeroable};

use super::{chunk_threads, device_of, rows_per_block, weight_arg, WeightArg};
use crate::ops::{ExpertGateUp, SwigluExperts};
use crate::{Array, DType, Error, Result};

/// The kernel side of `struct ExpertRows` (same field order and sizes, padding spelled out).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ExpertRowsArg {
    w: WeightArg,
    bias: u64,
    bias_rows: i32,
    step: i32,
    offset: i32,
    _pad: i32,
}

/// One projection of a stack `[experts, rows, k]`: its rows `offset, offset + step, ...`.
fn expert_rows(w: &Array, bias: &Array, step: usize, offset: i32) -> Result<ExpertRowsArg> {
    let bad = || {
        Error::Shape(format!(
            "mixture_of_experts: weight {:?} with {} bias {:?}",
            w.shape(),
            bias.dtype(),
            bias.shape()
        ))
    };
    let &[experts, rows, _] = w.shape() else {
        return Err(bad());
    };
    if bias.shape() != [experts, rows] || bias.dtype() != DType::F32 {
        return Err(bad());
    }
    Ok(ExpertRowsArg {
        w: weight_arg(w)?.0,
        bias: bias.device_ptr()?,
        bias_rows: rows as i32,
        step: step as i32,
        offset,
        _pad: 0,
    })
}

/// The fused kernels of a weight format, (name, rows per block), most rows first.
struct ExpertKernels {
    swiglu: [(&'static str, usize); 3],
    /// For up to 4 and up to 8 experts per token.
    down4: [(&'static str, usize); 3],
    down8: [(&'static str, usize); 2],
}

macro_rules! expert_kernels {
    ($f:literal) => {
        ExpertKernels {
            swiglu: [
                (concat!("expert_swiglu_", $f, "_r8"), 8),
                (concat!("expert_swiglu_", $f, "_r4"), 4),
                (concat!("expert_swiglu_", $f, "_r1"), 1),
            ],
            down4: [
                (concat!("expert_down_", $f, "_r4_s4"), 4),
                (concat!("expert_down_", $f, "_r2_s4"), 2),
                (concat!("expert_down_", $f, "_r1_s4"), 1),
            ],
            down8: [
                (concat!("expert_down_", $f, "_r2_s8"), 2),
                (concat!("expert_down_", $f, "_r1_s8"), 1),
            ],
        }
    };
}

/// See [`crate::ops::mixture_of_experts`]; `None` where no fused kernel fits (a format
/// without 16-byte chunks, mixed formats, more than 8 experts per token), for the caller
/// to compose it from plain ops.
pub(crate) fn mixture_of_experts(
    x: &Array,
    experts: &SwigluExperts<'_>,
    ids: &Array,
    weights: &Array,
) -> Result<Option<Array>> {
    let dtype = experts.down.dtype();
    let kernels = match dtype {
        DType::Mxfp4 => expert_kernels!("mxfp4"),
        DType::Affine { bits: 8, .. } => expert_kernels!("affine8"),
        DType::Affine { bits: 4, .. } => expert_kernels!("affine4"),
        _ => return Ok(None),
    };
    let (tokens, slots) = (ids.dim(0), ids.dim(1));
    let (gate, up, gate_up_dtypes) = match experts.gate_up {
        ExpertGateUp::Interleaved { weight, bias } => (
            expert_rows(weight, bias, 2, 0)?,
            expert_rows(weight, bias, 2, 1)?,
            [weight.dtype(); 2],
        ),
        ExpertGateUp::Separate {
            gate,
            gate_bias,
            up,
            up_bias,
        } => (
            expert_rows(gate, gate_bias, 1, 0)?,
            expert_rows(up, up_bias, 1, 0)?,
            [gate.dtype(), up.dtype()],
        ),
    };
    let down = expert_rows(experts.down, experts.down_bias, 1, 0)?;
    let (hidden, inter) = (down.bias_rows as usize, down.w.k as usize);
    let gate_rows = gate.bias_rows as usize / gate.step as usize;
    if gate_up_dtypes != [dtype; 2] || slots == 0 || slots > 8 {
        return Ok(None);
    }
    if x.shape() != [tokens, gate.w.k as usize] || gate_rows != inter || up.w.k != gate.w.k {
        return Err(Error::Shape(format!(
            "mixture_of_experts: x {:?}, gate/up rows of {} values, down {:?}",
            x.shape(),
            gate.w.k,
            experts.down.shape()
        )));
    }
    let dev = device_of(x)?;
    let h = Array::empty_cuda(&dev, DType::F32, &[tokens, slots, inter])?;
    let (name, rows) = rows_per_block(&dev, &kernels.swiglu, inter, tokens * slots);
    dev.launch(
        name,
        (inter.div_ceil(rows) as u32, slots as u32, tokens as u32),
        chunk_threads(&gate.w),
        &[
            &gate,
            &up,
            &x.device_ptr()?,
            &ids.device_ptr()?,
            &h.device_ptr()?,
            &(inter as i32),
            &experts.alpha,
            &experts.limit,
        ],
    )?;
    let out = Array::empty_cuda(&dev, DType::F32, &[tokens, hidden])?;
    let down_kernels: &[_] = if slots <= 4 {
        &kernels.down4
    } else {
        &kernels.down8
    };
    let (name, rows) = rows_per_block(&dev, down_kernels, hidden, tokens);
    dev.launch(
        name,
        (hidden.div_ceil(rows) as u32, tokens as u32, 1),
        chunk_threads(&down.w),
        &[
            &down,
            &h.device_ptr()?,
            &ids.device_ptr()?,
            &weights.device_ptr()?,
            &out.device_ptr()?,
            &(slots as i32),
            &(hidden as i32),
        ],
    )?;
    Ok(Some(out))
}
