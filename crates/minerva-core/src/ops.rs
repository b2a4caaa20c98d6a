//! The ops API: everything model code may do to an [`Array`].
//!
//! Ops check their arguments and return new arrays, computed by the backend of the device
//! the arguments are on (all on one device; mixing is an error). Elementwise ops, norms,
//! softmax and products are ops of the lazy graph (`graph::lazy`): inside `graph::lazily`
//! they record and fuse, and compute when something reads them; attention, RoPE and the
//! rest run as they are called, reading their inputs (and so computing what they need).

use half::{bf16, f16};

use crate::backends::cpu::linear::{halves, multiplies};
use crate::backends::cpu::{dense, elementwise, grouped, quant, sampling};
use crate::backends::cuda::ops as gpu;
use crate::graph::{lazy, Binary, Graph, NodeId, Reduce, Unary};
use crate::{Array, DType, Device, Error, Result};

mod experts;
mod paged;
mod sample_settings;
pub use experts::{mixture_of_experts, ExpertGateUp, SwigluExperts};
pub(crate) use paged::copy_prefix;
pub use paged::{paged_attention, write_kv_pages};
pub(crate) use sample_settings::MAX_TOP_K;
pub use sample_settings::{Draw, SampleSettings};

fn shape_err<T>(msg: String) -> Result<T> {
    Err(Error::Shape(msg))
}

/// Whether `op`'s arguments are on a GPU (all of them) or in host memory (all of them).
fn on_gpu(op: &str, arrays: &[&Array]) -> Result<bool> {
    let first = arrays.first().map_or(Device::Cpu, |a| a.device());
    if let Some(other) = arrays.iter().find(|a| a.device() != first) {
        return Err(Error::Device(format!(
            "{op}: arguments on {first} and {}",
            other.device()
        )));
    }
    Ok(first != Device::Cpu)
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
    on_gpu("linear", &args)?;
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
    let [vocab, d] = *table.shape() else {
        return shape_err(format!(
            "embedding table must be 2-D, got {:?}",
            table.shape()
        ));
    };
    if on_gpu("embedding", &[table])? {
        if ids.device() == table.device() {
            return gpu::embedding(table, ids);
        }
        check_ids(ids.as_i32()?, vocab)?;
        return gpu::embedding(table, &ids.to_device(table.device())?);
    }
    let ids = ids.as_i32()?;
    check_ids(ids, vocab)?;
    let grouped = match table.dtype().has_group_params() {
        true => Some(grouped::GroupedView::of(table)?),
        false => None,
    };
    let row_bytes = table
        .dtype()
        .bytes_for(d)
        .expect("table shape was validated");
    let bytes = table.host_bytes()?;
    let mut out = Array::zeros(DType::F32, &[ids.len(), d])?;
    let o = out.as_f32_mut()?;
    for (&id, dst) in ids.iter().zip(o.chunks_exact_mut(d)) {
        let id = id as usize;
        if let Some(g) = &grouped {
            g.dequantize_row(id, dst);
            continue;
        }
        let row = &bytes[id * row_bytes..(id + 1) * row_bytes];
        match table.dtype() {
            DType::F32 => dst.copy_from_slice(&halves::<f32>(row)),
            DType::F16 => dst
                .iter_mut()
                .zip(halves::<f16>(row).iter())
                .for_each(|(o, v)| *o = v.to_f32()),
            DType::BF16 => dst
                .iter_mut()
                .zip(halves::<bf16>(row).iter())
                .for_each(|(o, v)| *o = v.to_f32()),
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => quant::dequantize(table.dtype(), row, dst),
            other => return Err(Error::Unsupported(format!("embedding with {other} table"))),
        }
    }
    Ok(out)
}

fn check_ids(ids: &[i32], vocab: usize) -> Result<()> {
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
    let [tokens, heads, head_dim] = *x.shape() else {
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
    if on_gpu("rope", &[x, positions])? {
        expect_f32("rope", x)?;
        return gpu::rope(x, positions, rope);
    }
    let pos = positions.as_i32()?;
    let mut out = x.clone();
    elementwise::rope(
        out.as_f32_mut()?,
        heads,
        head_dim,
        pos,
        &rope.inv_freq,
        rope.style,
        rope.mscale,
    );
    Ok(out)
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
    if on_gpu("deinterleave", &[x])? {
        expect_f32("deinterleave", x)?;
        return gpu::deinterleave(x, &shape);
    }
    let xs = x.as_f32()?;
    let even: Vec<f32> = xs.iter().step_by(2).copied().collect();
    let odd: Vec<f32> = xs.iter().skip(1).step_by(2).copied().collect();
    Ok((
        Array::from_f32(&even, &shape)?,
        Array::from_f32(&odd, &shape)?,
    ))
}

/// [`argmax`] of one row already on the host (logits a sampler holds).
pub fn argmax_row(row: &[f32]) -> usize {
    elementwise::argmax(row)
}

/// The index of the largest value in each row of `[rows, n]` f32 `x` (ties to the lower
/// index), as `[rows]` i32: greedy decoding without bringing the logits to the host.
pub fn argmax(x: &Array) -> Result<Array> {
    let &[rows, n] = x.shape() else {
        return shape_err(format!("argmax of {:?}: want [rows, n]", x.shape()));
    };
    expect_f32("argmax", x)?;
    if on_gpu("argmax", &[x])? {
        return gpu::argmax(x);
    }
    let values = x.as_f32()?;
    let ids: Vec<i32> = (0..rows)
        .map(|r| elementwise::argmax(&values[r * n..(r + 1) * n]) as i32)
        .collect();
    Array::from_i32(&ids, &[rows])
}

/// One token drawn from each row of `[rows, n]` f32 logits with temperature, top-k, top-p
/// and min-p (`settings[r]`), seeded by `draws[r]`, as `[rows]` i32. The rules, identical on
/// every device, are in `backends/cpu/sampling.rs`; a temperature must be positive (greedy
/// decoding is [`argmax`]).
pub fn sample(x: &Array, settings: &[SampleSettings], draws: &[Draw]) -> Result<Array> {
    let &[rows, n] = x.shape() else {
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
    if on_gpu("sample", &[x])? {
        return gpu::sample(x, settings, draws);
    }
    let values = x.as_f32()?;
    let ids: Vec<i32> = (0..rows)
        .map(|r| sampling::sample_row(&values[r * n..(r + 1) * n], &settings[r], &draws[r]) as i32)
        .collect();
    Array::from_i32(&ids, &[rows])
}

/// Mixture-of-experts routing: per token (row of `[tokens, experts]` scores), the `k`
/// highest-scoring experts (highest first, ties to the lower index) and softmax weights over
/// just those. Returns (`[tokens, k]` i32 expert ids, `[tokens, k]` f32 weights).
pub fn top_k_softmax(scores: &Array, k: usize) -> Result<(Array, Array)> {
    let [tokens, experts] = *scores.shape() else {
        return shape_err(format!("top_k_softmax: scores {:?}", scores.shape()));
    };
    if k == 0 || k > experts {
        return shape_err(format!("top_k_softmax: top {k} of {experts}"));
    }
    if on_gpu("top_k_softmax", &[scores])? {
        expect_f32("top_k_softmax", scores)?;
        return gpu::top_k_softmax(scores, k);
    }
    let mut ids = Vec::with_capacity(tokens * k);
    let mut weights = Vec::with_capacity(tokens * k);
    for row in scores.as_f32()?.chunks_exact(experts) {
        for (e, w) in elementwise::top_k_softmax(row, k) {
            ids.push(e as i32);
            weights.push(w);
        }
    }
    Ok((
        Array::from_i32(&ids, &[tokens, k])?,
        Array::from_f32(&weights, &[tokens, k])?,
    ))
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
    if on_gpu("gather_linear", &args)? {
        expect_f32("gather_linear", x)?;
        return gpu::gather_linear(x, w, bias, ids);
    }
    let per_slot = x.shape().len() == 3;
    let chosen = ids.as_i32()?;
    if let Some(&e) = chosen.iter().find(|&&e| e < 0 || e as usize >= experts) {
        return shape_err(format!("gather_linear: expert {e} of {experts}"));
    }
    // Each expert runs once over all the (token, slot) pairs routed to it.
    let xs = x.as_f32()?;
    let mut out = vec![0.0f32; tokens * slots * n];
    for e in 0..experts {
        let pairs: Vec<usize> = (0..tokens * slots)
            .filter(|&p| chosen[p] as usize == e)
            .collect();
        if pairs.is_empty() {
            continue;
        }
        let mut rows = Vec::with_capacity(pairs.len() * k);
        for &p in &pairs {
            let r = if per_slot { p } else { p / slots };
            rows.extend_from_slice(&xs[r * k..(r + 1) * k]);
        }
        let rows = Array::from_f32(&rows, &[pairs.len(), k])?;
        let bias_e = bias.map(|b| b.index(e)).transpose()?;
        let y = linear(&rows, &w.index(e)?, bias_e.as_ref())?;
        for (&p, yr) in pairs.iter().zip(y.as_f32()?.chunks_exact(n)) {
            out[p * n..(p + 1) * n].copy_from_slice(yr);
        }
    }
    Array::from_f32(&out, &[tokens, slots, n])
}

/// `Σ_s weights[t, s] * y[t, s]`: `y` is `[tokens, slots, d]`, `weights` `[tokens, slots]`;
/// returns `[tokens, d]` (the experts' outputs mixed).
pub fn weighted_sum(y: &Array, weights: &Array) -> Result<Array> {
    let (&[tokens, slots, d], w_shape) = (y.shape(), weights.shape()) else {
        return shape_err(format!("weighted_sum: y {:?}", y.shape()));
    };
    if w_shape != [tokens, slots] {
        return shape_err(format!(
            "weighted_sum: y {:?}, weights {w_shape:?}",
            y.shape()
        ));
    }
    if on_gpu("weighted_sum", &[y, weights])? {
        expect_f32("weighted_sum", y)?;
        expect_f32("weighted_sum", weights)?;
        return gpu::weighted_sum(y, weights);
    }
    let (ys, ws) = (y.as_f32()?, weights.as_f32()?);
    let mut out = vec![0.0f32; tokens * d];
    for (t, o) in out.chunks_exact_mut(d).enumerate() {
        for s in 0..slots {
            let w = ws[t * slots + s];
            let row = &ys[(t * slots + s) * d..(t * slots + s + 1) * d];
            o.iter_mut().zip(row).for_each(|(o, &v)| *o += w * v);
        }
    }
    Array::from_f32(&out, &[tokens, d])
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
    let (a, b) = (x.dim(-2), x.dim(-1));
    let mut shape = x.shape().to_vec();
    shape.swap(rank - 2, rank - 1);
    if on_gpu("transpose_last2", &[x])? {
        return gpu::transpose_last2(x, &shape);
    }
    let xs = x.to_f32_vec()?;
    let mut out = vec![0.0f32; xs.len()];
    for (src, dst) in xs.chunks_exact(a * b).zip(out.chunks_exact_mut(a * b)) {
        for i in 0..a {
            for j in 0..b {
                dst[j * a + i] = src[i * b + j];
            }
        }
    }
    Array::from_f32(&out, &shape)
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
