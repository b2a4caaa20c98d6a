//! A mixture of SwiGLU experts as one op, so a backend can run it fused (the CUDA backend
//! reads each chosen expert's gate and up rows in one pass and its down rows with the mixing
//! in another); elsewhere it is the composition of the plain ops.

use super::{clamped_swiglu, deinterleave, gather_linear, shape_err, weighted_sum};
use crate::backends::backend_of;
use crate::{Array, DType, Result};

/// The gate and up projections of a stack of SwiGLU experts, as checkpoints store them.
pub enum ExpertGateUp {
    /// One `[experts, 2 * inter, hidden]` weight whose rows alternate gate, up, gate, ...
    /// (transformers and OpenAI's release), with a `[experts, 2 * inter]` bias.
    Interleaved { weight: Array, bias: Array },
    /// Separate `[experts, inter, hidden]` weights and `[experts, inter]` biases (MLX).
    Separate {
        gate: Array,
        gate_bias: Array,
        up: Array,
        up_bias: Array,
    },
}

/// A stack of gpt-oss-style experts: `down(swiglu(gate x + bg, up x + bu)) + bd`, with the
/// clamped SwiGLU of [`clamped_swiglu`].
pub struct SwigluExperts<'a> {
    pub gate_up: &'a ExpertGateUp,
    /// `[experts, hidden, inter]` and `[experts, hidden]`.
    pub down: &'a Array,
    pub down_bias: &'a Array,
    pub alpha: f32,
    pub limit: f32,
}

/// Each token's mix of its chosen experts: `Σ_j weights[t, j] · expert_{ids[t, j]}(x_t)` for
/// `x` `[tokens, hidden]` f32 and `ids`/`weights` `[tokens, k]` (i32 / f32, from
/// [`top_k_softmax`](super::top_k_softmax)); returns `[tokens, hidden]`. Only the chosen
/// experts' weights are read.
pub fn mixture_of_experts(
    x: &Array,
    experts: &SwigluExperts<'_>,
    ids: &Array,
    weights: &Array,
) -> Result<Array> {
    if ids.shape() != weights.shape() || ids.shape().len() != 2 || ids.dtype() != DType::I32 {
        return shape_err(format!(
            "mixture_of_experts: ids {} {:?}, weights {:?}",
            ids.dtype(),
            ids.shape(),
            weights.shape()
        ));
    }
    let backend = backend_of("mixture_of_experts", &[x, ids, weights, experts.down])?;
    if let Some(mixed) = backend.mixture_of_experts(x, experts, ids, weights)? {
        return Ok(mixed);
    }
    // [tokens, k, inter] each: every token through each of its chosen experts.
    let (gate, up) = match experts.gate_up {
        ExpertGateUp::Interleaved { weight, bias } => {
            deinterleave(&gather_linear(x, weight, Some(bias), ids)?)?
        }
        ExpertGateUp::Separate {
            gate,
            gate_bias,
            up,
            up_bias,
        } => (
            gather_linear(x, gate, Some(gate_bias), ids)?,
            gather_linear(x, up, Some(up_bias), ids)?,
        ),
    };
    let h = clamped_swiglu(&gate, &up, experts.alpha, experts.limit)?;
    let y = gather_linear(&h, experts.down, Some(experts.down_bias), ids)?;
    weighted_sum(&y, weights)
}
