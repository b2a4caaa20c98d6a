//! The ops API: everything model code may do to an [`Array`].
//!
//! Ops check their arguments and return new arrays, computed by the backend of the device
//! the arguments are on (all on one device; mixing is an error). Elementwise ops, norms,
//! softmax and products are ops of the lazy graph (`graph::lazy`): inside `graph::lazily`
//! they record and fuse, and compute when something reads them; attention, RoPE and the
//! rest run as they are called, reading their inputs (and so computing what they need).

use crate::backends::backend_of;
use crate::backends::cpu::linear::multiplies;
use crate::backends::cpu::{dense, elementwise};
use crate::graph::{lazy, Binary, Graph, NodeId, Reduce, Unary};
use crate::{Array, DType, Error, Result};

mod experts;
mod paged;
mod sample_settings;
pub use experts::{mixture_of_experts, ExpertGateUp, SwigluExperts};
pub(crate) use paged::copy_prefix;
pub(crate) use paged::TableDims;
pub use paged::{paged_attention, write_kv_pages};
pub(crate) use sample_settings::MAX_TOP_K;
pub use sample_settings::{Draw, SampleSettings};

pub(crate) fn shape_err<T>(msg: String) -> Result<T> {
    Err(Error::Shape(msg))
}

fn expect_f32(op: &str, a: &Array) -> Result<()> {
    if a.dtype() != DType::F32 {
        return Err(Error::Unsupported(format!("{op} of {} values", a.dtype())));
    }
    Ok(())
}

/// `x @ wᵀ (+ bias)`: `x` is `[.., k]` f32, `w` is `[n, k]` in any weight dtype (dense or
/// block-quantized, read in place), `bias` is `[n]`. Returns `[.., n]` f32.
pub fn linear(x: &Array, w: &Array, bias: Option<&Array>) -> Result<Array> {
    let mut args = vec![x, w];
    args.extend(bias);
    backend_of("linear", &args)?;
    if !multiplies(w.dtype()) {
        return Err(Error::Unsupported(format!(
            "linear with {} weights",
            w.dtype()
        )));
    }
    // Shapes are checked as the product is recorded (`Graph::product`).
    // A weight still to be computed is computed now: products read weights in place.
    let w = w.ready()?;
    let mut inputs = vec![x];
    inputs.extend(bias);
    let mut out = lazy::record_weighted("linear", &inputs, &[w], |g, ids| {
        let bias = bias.map(|_| ids[1]);
        Ok(vec![g.product(ids[0], ids[inputs.len()], bias)?])
    })?;
    Ok(out.pop().expect("one output"))
}

/// `a @ b` for f32 `[m, k]` and `[k, n]`.
pub fn matmul(a: &Array, b: &Array) -> Result<Array> {
    let (&[m, k], &[k2, n]) = (a.shape(), b.shape()) else {
        return shape_err(format!(
            "matmul needs 2-D arrays, got {:?} and {:?}",
            a.shape(),
            b.shape()
        ));
    };
    if k != k2 {
        return shape_err(format!("matmul: {:?} @ {:?}", a.shape(), b.shape()));
    }
    let mut out = Array::zeros(DType::F32, &[m, n])?;
    dense::matmul_f32(a.as_f32()?, b.as_f32()?, m, k, n, false, out.as_f32_mut()?);
    Ok(out)
}

/// Rows `ids` of `table` (`[vocab, d]`, any weight dtype) as `[ids.len(), d]` f32.
pub fn embedding(table: &Array, ids: &Array) -> Result<Array> {
    let [vocab, _] = *table.shape() else {
        return shape_err(format!(
            "embedding table must be 2-D, got {:?}",
            table.shape()
        ));
    };
    let backend = backend_of("embedding", &[table])?;
    if ids.device() == table.device() {
        return backend.embedding(table, ids);
    }
    // Ids from the host are checked there, then moved.
    check_ids(ids.as_i32()?, vocab)?;
    backend.embedding(table, &ids.to_device(table.device())?)
}

pub(crate) fn check_ids(ids: &[i32], vocab: usize) -> Result<()> {
    match ids
        .iter()
        .find(|&&id| !usize::try_from(id).is_ok_and(|i| i < vocab))
    {
        Some(id) => shape_err(format!(
            "token id {id} is outside the vocabulary of {vocab}"
        )),
        None => Ok(()),
    }
}

/// One op of the lazy graph over f32 `inputs` (see [`crate::graph::lazy`]): pending inside
/// [`graph::lazily`], computed at once outside.
fn recorded(
    name: &str,
    inputs: &[&Array],
    build: impl FnOnce(&mut Graph, &[NodeId]) -> Result<NodeId>,
) -> Result<Array> {
    let mut out = lazy::record(name, inputs, |g, ids| Ok(vec![build(g, ids)?]))?;
    Ok(out.pop().expect("one output"))
}

/// `a op b` with NumPy broadcasting.
fn binary(name: &str, op: Binary, a: &Array, b: &Array) -> Result<Array> {
    recorded(name, &[a, b], |g, x| g.binary(op, x[0], x[1]))
}

pub fn add(a: &Array, b: &Array) -> Result<Array> {
    binary("add", Binary::Add, a, b)
}

pub fn mul(a: &Array, b: &Array) -> Result<Array> {
    binary("mul", Binary::Mul, a, b)
}

/// `x * s`.
pub fn scale(x: &Array, s: f32) -> Result<Array> {
    recorded("scale", &[x], |g, x| {
        let s = g.constant(s);
        g.binary(Binary::Mul, x[0], s)
    })
}

/// RMSNorm over the last axis with a learned per-channel weight.
pub fn rms_norm(x: &Array, weight: &Array, eps: f32) -> Result<Array> {
    if weight.shape() != [x.dim(-1)] {
        return shape_err(format!(
            "rms_norm: weight {:?} for input {:?}",
            weight.shape(),
            x.shape()
        ));
    }
    recorded("rms_norm", &[x, weight], |g, x| g.rms_norm(x[0], x[1], eps))
}

/// Which pairs of a head's dimensions rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimensions (2i, 2i+1): GGUF Llama, whose Q/K rows were permuted at conversion.
    Interleaved,
    /// Dimensions (i, i + d/2): the "rotate half" layout of HF checkpoints (GPT-NeoX style).
    Half,
}

/// Rotary position embedding: per-pair inverse frequencies (with any context-extension
/// scaling already applied), the pairing style, and YaRN's magnitude scale.
#[derive(Clone, Debug)]
pub struct Rope {
    pub inv_freq: Vec<f32>,
    pub style: RopeStyle,
    pub mscale: f32,
}

/// Applies `rope` to `x` (`[tokens, heads, head_dim]`) at `positions` (`[tokens]` i32).
pub fn rope(x: &Array, positions: &Array, rope: &Rope) -> Result<Array> {
    let [tokens, _, head_dim] = *x.shape() else {
        return shape_err(format!(
            "rope input must be [tokens, heads, head_dim], got {:?}",
            x.shape()
        ));
    };
    if positions.shape() != [tokens] || 2 * rope.inv_freq.len() > head_dim {
        return shape_err(format!(
            "rope: positions {:?} / {} frequencies for input {:?}",
            positions.shape(),
            rope.inv_freq.len(),
            x.shape()
        ));
    }
    expect_f32("rope", x)?;
    backend_of("rope", &[x, positions])?.rope(x, positions, rope)
}

/// Softmax over the last axis.
/// Softmax over the last axis.
pub fn softmax(x: &Array) -> Result<Array> {
    recorded("softmax", &[x], |g, x| {
        let max = g.reduce(Reduce::Max, x[0])?;
        let shifted = g.binary(Binary::Sub, x[0], max)?;
        let e = g.unary(Unary::Exp, shifted);
        let sum = g.reduce(Reduce::Sum, e)?;
        g.binary(Binary::Div, e, sum)
    })
}

pub fn silu(x: &Array) -> Result<Array> {
    recorded("silu", &[x], |g, x| Ok(g.unary(Unary::Silu, x[0])))
}

fn same_shapes(name: &str, gate: &Array, up: &Array) -> Result<()> {
    if gate.shape() != up.shape() {
        return shape_err(format!(
            "{name}: gate {:?} vs up {:?}",
            gate.shape(),
            up.shape()
        ));
    }
    Ok(())
}

/// `silu(gate) * up`.
pub fn swiglu(gate: &Array, up: &Array) -> Result<Array> {
    same_shapes("swiglu", gate, up)?;
    recorded("swiglu", &[gate, up], |g, x| {
        let gated = g.unary(Unary::Silu, x[0]);
        g.binary(Binary::Mul, gated, x[1])
    })
}

/// gpt-oss's SwiGLU: `(clamp(up, ±limit) + 1) * g * sigmoid(alpha * g)`, `g = min(gate, limit)`.
pub fn clamped_swiglu(gate: &Array, up: &Array, alpha: f32, limit: f32) -> Result<Array> {
    same_shapes("clamped_swiglu", gate, up)?;
    recorded("clamped_swiglu", &[gate, up], |g, x| {
        let (high, low, one, alpha) = (
            g.constant(limit),
            g.constant(-limit),
            g.constant(1.0),
            g.constant(alpha),
        );
        let gate = g.binary(Binary::Min, x[0], high)?;
        let up = g.binary(Binary::Min, x[1], high)?;
        let up = g.binary(Binary::Max, up, low)?;
        let sharp = g.binary(Binary::Mul, gate, alpha)?;
        let sigmoid = g.unary(Unary::Sigmoid, sharp);
        let shifted = g.binary(Binary::Add, up, one)?;
        let gated = g.binary(Binary::Mul, shifted, gate)?;
        g.binary(Binary::Mul, gated, sigmoid)
    })
}

/// Splits the last axis of `x` into its even and odd entries (`[.., 2n]` -> two `[.., n]`),
/// for weights that interleave two projections.
pub fn deinterleave(x: &Array) -> Result<(Array, Array)> {
    let d = x.dim(-1);
    if !d.is_multiple_of(2) {
        return shape_err(format!("deinterleave: odd last axis in {:?}", x.shape()));
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("x has a last axis") = d / 2;
    expect_f32("deinterleave", x)?;
    backend_of("deinterleave", &[x])?.deinterleave(x, &shape)
}

/// [`argmax`] of one row already on the host (logits a sampler holds).
pub fn argmax_row(row: &[f32]) -> usize {
    elementwise::argmax(row)
}

/// The index of the largest value in each row of `[rows, n]` f32 `x` (ties to the lower
/// index), as `[rows]` i32: greedy decoding without bringing the logits to the host.
pub fn argmax(x: &Array) -> Result<Array> {
    let &[_, _] = x.shape() else {
        return shape_err(format!("argmax of {:?}: want [rows, n]", x.shape()));
    };
    expect_f32("argmax", x)?;
    backend_of("argmax", &[x])?.argmax(x)
}

/// One token drawn from each row of `[rows, n]` f32 logits with temperature, top-k, top-p
/// and min-p (`settings[r]`), seeded by `draws[r]`, as `[rows]` i32. The rules, identical on
/// every device, are in `backends/cpu/sampling.rs`; a temperature must be positive (greedy
/// decoding is [`argmax`]).
pub fn sample(x: &Array, settings: &[SampleSettings], draws: &[Draw]) -> Result<Array> {
    let &[rows, _] = x.shape() else {
        return shape_err(format!("sample of {:?}: want [rows, n]", x.shape()));
    };
    expect_f32("sample", x)?;
    if settings.len() != rows || draws.len() != rows {
        return shape_err(format!(
            "sample: {rows} rows, {} settings, {} draws",
            settings.len(),
            draws.len()
        ));
    }
    if let Some(s) = settings
        .iter()
        .find(|s| s.temperature.is_nan() || s.temperature <= 0.0)
    {
        return Err(Error::Unsupported(format!(
            "sample at temperature {} (greedy decoding is argmax)",
            s.temperature
        )));
    }
    backend_of("sample", &[x])?.sample(x, settings, draws)
}

/// Mixture-of-experts routing: per token (row of `[tokens, experts]` scores), the `k`
/// highest-scoring experts (highest first, ties to the lower index) and softmax weights over
/// just those. Returns (`[tokens, k]` i32 expert ids, `[tokens, k]` f32 weights).
pub fn top_k_softmax(scores: &Array, k: usize) -> Result<(Array, Array)> {
    let [_, experts] = *scores.shape() else {
        return shape_err(format!("top_k_softmax: scores {:?}", scores.shape()));
    };
    if k == 0 || k > experts {
        return shape_err(format!("top_k_softmax: top {k} of {experts}"));
    }
    expect_f32("top_k_softmax", scores)?;
    backend_of("top_k_softmax", &[scores])?.top_k_softmax(scores, k)
}

/// Gathered products (mixture-of-experts experts): for each token `t` and slot `s`,
/// `x_t @ w[e]ᵀ + bias[e]` with `e = ids[t, s]`. `w` is a stack `[experts, n, k]` in any
/// weight dtype, `bias` `[experts, n]`, `ids` `[tokens, slots]` i32, and `x` is `[tokens,
/// k]` (every slot reads its token's row) or `[tokens, slots, k]`. Returns `[tokens, slots,
/// n]` f32. Only the chosen experts' weights are read.
pub fn gather_linear(x: &Array, w: &Array, bias: Option<&Array>, ids: &Array) -> Result<Array> {
    let (&[experts, n, k], &[tokens, slots]) = (w.shape(), ids.shape()) else {
        return shape_err(format!(
            "gather_linear: weights {:?}, ids {:?}",
            w.shape(),
            ids.shape()
        ));
    };
    let x_ok = x.shape() == [tokens, k] || x.shape() == [tokens, slots, k];
    if !x_ok || bias.is_some_and(|b| b.shape() != [experts, n]) || ids.dtype() != DType::I32 {
        return shape_err(format!(
            "gather_linear: x {:?}, weights {:?}, bias {:?}, ids {} {:?}",
            x.shape(),
            w.shape(),
            bias.map(Array::shape),
            ids.dtype(),
            ids.shape()
        ));
    }
    let mut args = vec![x, w, ids];
    args.extend(bias);
    expect_f32("gather_linear", x)?;
    backend_of("gather_linear", &args)?.gather_linear(x, w, bias, ids)
}

/// `Σ_s weights[t, s] * y[t, s]`: `y` is `[tokens, slots, d]`, `weights` `[tokens, slots]`;
/// returns `[tokens, d]` (the experts' outputs mixed).
pub fn weighted_sum(y: &Array, weights: &Array) -> Result<Array> {
    let (&[tokens, slots, _], w_shape) = (y.shape(), weights.shape()) else {
        return shape_err(format!("weighted_sum: y {:?}", y.shape()));
    };
    if w_shape != [tokens, slots] {
        return shape_err(format!(
            "weighted_sum: y {:?}, weights {w_shape:?}",
            y.shape()
        ));
    }
    expect_f32("weighted_sum", y)?;
    expect_f32("weighted_sum", weights)?;
    backend_of("weighted_sum", &[y, weights])?.weighted_sum(y, weights)
}

/// `w` (dense f32, f16 or bf16, `[.., k]`) quantized along its last axis to `dtype` (MLX
/// affine or MXFP4), bit for bit as `mx.quantize` of mlx 0.32 computes it. Affine scales and
/// biases keep `w`'s dtype; MXFP4 scales are e8m0 bytes.
pub fn quantize(w: &Array, dtype: DType) -> Result<Array> {
    use crate::backends::cpu::quantize::{quantize as cpu_quantize, Source};
    let source = Source::of(w.dtype())?;
    let Some(&k) = w.shape().last() else {
        return shape_err("quantize: a scalar has no rows".into());
    };
    let q = cpu_quantize(w.host_bytes()?, source, k, dtype)?;
    let mut group_shape = w.shape().to_vec();
    *group_shape.last_mut().expect("w has a last axis") = k / dtype.block_len();
    let params = |bytes: Vec<u8>, dtype: DType| -> Result<Array> {
        let mut a = Array::zeros(dtype, &group_shape)?;
        a.host_bytes_mut()?.copy_from_slice(&bytes);
        Ok(a)
    };
    let scales = match dtype {
        DType::Mxfp4 => params(q.scales, DType::U8)?,
        _ => params(q.scales, w.dtype())?,
    };
    let biases = q.biases.map(|b| params(b, w.dtype())).transpose()?;
    let mut codes = Array::zeros(DType::U8, &[q.codes.len()])?;
    codes.host_bytes_mut()?.copy_from_slice(&q.codes);
    Array::quantized(&codes, dtype, w.shape(), scales, biases)
}

/// Swaps the last two axes of a dense array, as f32 (`[.., a, b]` -> `[.., b, a]`); for
/// checkpoints that store a weight input-major.
pub fn transpose_last2(x: &Array) -> Result<Array> {
    let rank = x.shape().len();
    if rank < 2 || x.dtype().is_quantized() {
        return shape_err(format!("transpose_last2: {} {:?}", x.dtype(), x.shape()));
    }
    let mut shape = x.shape().to_vec();
    shape.swap(rank - 2, rank - 1);
    backend_of("transpose_last2", &[x])?.transpose_last2(x, &shape)
}

/// Rows `start..start + len` of the first axis (a view; nothing is copied).
pub fn slice_rows(x: &Array, start: usize, len: usize) -> Result<Array> {
    x.narrow(start, len)
}

/// Masking and extras for [`paged_attention`].
#[derive(Clone, Copy, Debug)]
pub struct AttentionOptions<'a> {
    pub scale: f32,
    /// Sliding window length: a query sees only the last `window` positions.
    pub window: Option<usize>,
    /// Per-head sink logits (`[heads]` f32).
    pub sinks: Option<&'a Array>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(v: &[f32], shape: &[usize]) -> Array {
        Array::from_f32(v, shape).unwrap()
    }

    #[test]
    fn linear_f32_and_bias() {
        let x = arr(&[1.0, 2.0], &[1, 2]);
        let w = arr(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]);
        let b = arr(&[0.5, 0.5, 0.5], &[3]);
        let y = linear(&x, &w, Some(&b)).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[1.5, 2.5, 3.5]);
        assert!(linear(&arr(&[1.0; 3], &[1, 3]), &w, None).is_err());
    }

    #[test]
    fn argmax_per_row_ties_to_the_lower_index() {
        let x = arr(&[1.0, 3.0, 3.0, -1.0, -5.0, -2.0], &[2, 3]);
        assert_eq!(argmax(&x).unwrap().as_i32().unwrap(), &[1, 0]);
        assert!(argmax(&arr(&[1.0; 3], &[3])).is_err());
    }

    #[test]
    fn rms_norm_unit_weight() {
        let y = rms_norm(&arr(&[3.0, 4.0], &[1, 2]), &arr(&[1.0, 2.0], &[2]), 0.0).unwrap();
        let r = (12.5f32).sqrt();
        assert_eq!(y.as_f32().unwrap(), &[3.0 / r, 8.0 / r]);
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        let x = arr(&[1.0, 0.0, 0.0, 0.0], &[1, 1, 4]);
        let pos = Array::from_i32(&[1], &[1]).unwrap();
        let theta = std::f32::consts::FRAC_PI_2;
        let inter = Rope {
            inv_freq: vec![theta, 0.0],
            style: RopeStyle::Interleaved,
            mscale: 1.0,
        };
        let y = rope(&x, &pos, &inter).unwrap();
        assert!((y.as_f32().unwrap()[1] - 1.0).abs() < 1e-6);
        let half = Rope {
            style: RopeStyle::Half,
            ..inter
        };
        let y = rope(&x, &pos, &half).unwrap();
        assert!((y.as_f32().unwrap()[2] - 1.0).abs() < 1e-6);
    }
}
