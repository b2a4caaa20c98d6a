//! The mixture of experts on CUDA. Decode: the fused kernels of `kernels/experts.cu`, one
//! launch for the gate and up products with their SwiGLU, one for the down products with
//! the router's mixing. A few tokens (a decode batch): the pairs grouped by expert on the
//! device, each chosen expert's rows read once for all of its pairs. Prompts: the (token,
//! expert) pairs sorted by expert, each expert's rows one tensor-core product (see
//! `gemm.rs`).

use bytemuck::{Pod, Zeroable};

use std::sync::Arc;

use super::super::blas::HalfGemm;
use super::gemm::{half_rows, half_weight, worth_it, HalfOut};
use super::{chunk_threads, device_of, grid_for, rows_per_block, weight_arg, WeightArg, THREADS};
use crate::backends::cuda::CudaDevice;
use crate::ops::{ExpertGateUp, SwigluExperts};
use crate::{Array, DType, Device, Error, Result};

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
    /// A few tokens, grouped by expert: the gate/up and the down kernels.
    grouped_swiglu: [(&'static str, usize); 2],
    grouped_down: [(&'static str, usize); 2],
}

macro_rules! expert_kernels {
    ($f:literal, grouped $s1:literal $s2:literal, $d1:literal $d2:literal) => {
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
            grouped_swiglu: [
                (concat!("expert_swiglu_grouped_", $f, "_r", $s1), $s1),
                (concat!("expert_swiglu_grouped_", $f, "_r", $s2), $s2),
            ],
            grouped_down: [
                (concat!("expert_down_grouped_", $f, "_r", $d1), $d1),
                (concat!("expert_down_grouped_", $f, "_r", $d2), $d2),
            ],
        }
    };
}

/// Experts the grouping kernel handles (`MAX_GROUPED_EXPERTS` in `experts.cu`).
const MAX_GROUPED_EXPERTS: usize = 1024;

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
        // Rows per block of the grouped kernels as measured best on an H100 (gpt-oss-20b,
        // 10 tokens): with MXFP4 gate/up at 8 rows (254 registers, 6 warps an SM) the
        // mixture took 14% longer than at 4; the down kernel is best at 8.
        DType::Mxfp4 => expert_kernels!("mxfp4", grouped 4 2, 8 2),
        DType::Affine { bits: 8, .. } => expert_kernels!("affine8", grouped 4 2, 4 2),
        DType::Affine { bits: 4, .. } => expert_kernels!("affine4", grouped 4 2, 4 2),
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
    let rows = ExpertProducts {
        gate,
        up,
        down,
        inter,
        hidden,
    };
    if worth_it(&dev, tokens, inter, hidden) && inter.is_multiple_of(8) {
        let dequant = weight_arg(experts.down)?.1.dequant;
        let sorted = SortedPairs::new(ids, experts.down.dim(0))?;
        return grouped(&dev, x, (&rows, dequant), &sorted, experts, weights).map(Some);
    }
    if tokens > 1 && experts.down.dim(0) <= MAX_GROUPED_EXPERTS {
        return few_tokens(&dev, x, &rows, &kernels, (ids, weights), experts).map(Some);
    }
    let h = Array::empty_cuda(&dev, DType::F32, &[tokens, slots, inter])?;
    let (name, per_block) = rows_per_block(&dev, &kernels.swiglu, inter, tokens * slots);
    dev.launch(
        name,
        (
            inter.div_ceil(per_block) as u32,
            slots as u32,
            tokens as u32,
        ),
        chunk_threads(&rows.gate.w),
        &[
            &rows.gate,
            &rows.up,
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
    let (name, per_block) = rows_per_block(&dev, down_kernels, hidden, tokens);
    dev.launch(
        name,
        (hidden.div_ceil(per_block) as u32, tokens as u32, 1),
        chunk_threads(&rows.down.w),
        &[
            &rows.down,
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

/// The experts of a few tokens, each chosen expert's rows read once: the pairs grouped by
/// expert on the device (`expert_groups`, nothing comes back to the host), the gate and up
/// products with their SwiGLU per group, the down products per group, then each token's
/// mix (`expert_mix_sorted`, as for prompts). The kernels read the f32 activations as the
/// one-token kernels do.
fn few_tokens(
    dev: &Arc<CudaDevice>,
    x: &Array,
    p: &ExpertProducts,
    kernels: &ExpertKernels,
    (ids, weights): (&Array, &Array),
    experts: &SwigluExperts<'_>,
) -> Result<Array> {
    let (tokens, slots) = (ids.dim(0), ids.dim(1));
    let (pairs, inter, hidden) = (tokens * slots, p.inter, p.hidden);
    let count = experts.down.dim(0);
    // Blocks for every expert that could have pairs; those past the active ones leave.
    let max_active = count.min(pairs);
    let groups = dev.alloc(4 * (1 + 3 * max_active + 2 * pairs))?;
    dev.launch(
        "expert_groups",
        (1, 1, 1),
        THREADS,
        &[
            &ids.device_ptr()?,
            &(pairs as i32),
            &(count as i32),
            &(max_active as i32),
            &groups.ptr(),
        ],
    )?;
    let rank = groups.ptr() + 4 * (1 + 3 * max_active + pairs) as u64;
    let (swiglu, rows) = rows_per_block(dev, &kernels.grouped_swiglu, inter, max_active);
    let (down, down_rows) = rows_per_block(dev, &kernels.grouped_down, hidden, max_active);
    let h = dev.alloc(4 * pairs * inter)?;
    dev.launch(
        swiglu,
        (inter.div_ceil(rows) as u32, max_active as u32, 1),
        chunk_threads(&p.gate.w),
        &[
            &p.gate,
            &p.up,
            &x.device_ptr()?,
            &groups.ptr(),
            &(max_active as i32),
            &(slots as i32),
            &h.ptr(),
            &(inter as i32),
            &experts.alpha,
            &experts.limit,
        ],
    )?;
    let y = dev.alloc(4 * pairs * hidden)?;
    dev.launch(
        down,
        (hidden.div_ceil(down_rows) as u32, max_active as u32, 1),
        chunk_threads(&p.down.w),
        &[
            &p.down,
            &h.ptr(),
            &groups.ptr(),
            &(max_active as i32),
            &y.ptr(),
            &(hidden as i32),
        ],
    )?;
    mix_sorted(dev, (y.ptr(), rank), (ids, weights), &p.down, hidden)
}

/// Each token's output: the sum over its slots of the router weight times (its sorted row of
/// `y` (`rank[pair]`) + the expert's down bias).
fn mix_sorted(
    dev: &Arc<CudaDevice>,
    (y, rank): (u64, u64),
    (ids, weights): (&Array, &Array),
    down: &ExpertRowsArg,
    hidden: usize,
) -> Result<Array> {
    let (tokens, slots) = (ids.dim(0), ids.dim(1));
    let out = Array::empty_cuda(dev, DType::F32, &[tokens, hidden])?;
    dev.launch(
        "expert_mix_sorted",
        grid_for(tokens * hidden),
        THREADS,
        &[
            &y,
            &rank,
            &ids.device_ptr()?,
            &weights.device_ptr()?,
            down,
            &(tokens as i64),
            &(slots as i32),
            &(hidden as i32),
            &out.device_ptr()?,
        ],
    )?;
    Ok(out)
}

/// A prompt's (token, slot) pairs sorted by expert (a counting sort on the host), so each
/// expert's pairs are consecutive rows of one product.
struct SortedPairs {
    /// Per expert, its first sorted row and its number of rows.
    spans: Vec<(usize, usize)>,
    /// On the device, `order` (sorted row -> pair) then `rank` (pair -> sorted row).
    index: Array,
    ids: Array,
    pairs: usize,
    slots: usize,
}

impl SortedPairs {
    fn new(ids: &Array, experts: usize) -> Result<SortedPairs> {
        let host = ids.to_device(Device::Cpu)?;
        let chosen = host.as_i32()?;
        let mut spans = vec![(0, 0); experts];
        for &e in chosen {
            let e = usize::try_from(e)
                .ok()
                .filter(|&e| e < experts)
                .ok_or_else(|| {
                    Error::Shape(format!(
                        "mixture_of_experts: expert id {e} of {experts} experts"
                    ))
                })?;
            spans[e].1 += 1;
        }
        let mut start = 0;
        for span in &mut spans {
            span.0 = start;
            start += span.1;
        }
        let pairs = chosen.len();
        let mut index = vec![0i32; 2 * pairs];
        let mut next: Vec<usize> = spans.iter().map(|s| s.0).collect();
        for (pair, &e) in chosen.iter().enumerate() {
            let row = next[e as usize];
            next[e as usize] += 1;
            index[row] = pair as i32;
            index[pairs + pair] = row as i32;
        }
        Ok(SortedPairs {
            spans,
            index: Array::from_i32(&index, &[2 * pairs])?.to_device(ids.device())?,
            ids: ids.clone(),
            pairs,
            slots: ids.dim(1),
        })
    }

    /// Runs of at most `batch` consecutive experts, without experts that have no pairs at
    /// either end: (first expert, its spans and the following ones').
    fn batches(&self, batch: usize) -> impl Iterator<Item = (usize, &[(usize, usize)])> + '_ {
        let mut next = 0;
        std::iter::from_fn(move || {
            next += self.spans[next.min(self.spans.len())..]
                .iter()
                .take_while(|s| s.1 == 0)
                .count();
            if next >= self.spans.len() {
                return None;
            }
            let first = next;
            let mut end = (first + batch).min(self.spans.len());
            while self.spans[end - 1].1 == 0 {
                end -= 1;
            }
            next = end;
            Some((first, &self.spans[first..end]))
        })
    }

    fn order(&self) -> Result<u64> {
        self.index.device_ptr()
    }

    fn rank(&self) -> Result<u64> {
        Ok(self.index.device_ptr()? + 4 * self.pairs as u64)
    }
}

/// Bytes of f16 scratch for decoded experts; batches of experts that fit in it are decoded
/// in one launch (fewer, longer launches than one per expert).
const DECODE_BYTES: usize = 256 << 20;

/// Experts decoded per launch, at `bytes` each, out of `experts`.
fn decode_batch(bytes: usize, experts: usize) -> usize {
    (DECODE_BYTES / bytes).clamp(1, experts.max(1))
}

/// The three projections of an expert stack as the grouped products read them.
struct ExpertProducts {
    gate: ExpertRowsArg,
    up: ExpertRowsArg,
    down: ExpertRowsArg,
    inter: usize,
    hidden: usize,
}

/// For each expert with pairs, its rows of `y` (f32 `[pairs, n]`, sorted order) = its rows
/// of `x` (f16 `[pairs, k]`) times its `[n, k]` weight, which `decode(first expert, out)`
/// writes in f16 for a batch of experts at a time.
fn expert_products(
    dev: &Arc<CudaDevice>,
    sorted: &SortedPairs,
    (n, k): (usize, usize),
    (x, y): (u64, u64),
    decode: impl Fn(usize, &HalfOut) -> Result<()>,
) -> Result<()> {
    let per_expert = n * k;
    let batch = decode_batch(2 * per_expert, sorted.spans.len());
    let scratch = dev.alloc(2 * per_expert * batch)?;
    for (first, spans) in sorted.batches(batch) {
        let to = HalfOut {
            ptr: scratch.ptr(),
            count: spans.len(),
            stride: per_expert,
        };
        decode(first, &to)?;
        for (i, &(row0, rows)) in spans.iter().enumerate().filter(|(_, s)| s.1 > 0) {
            dev.half_gemm(&HalfGemm {
                m: rows,
                n,
                k,
                x: x + (2 * row0 * k) as u64,
                w: scratch.ptr() + (2 * i * per_expert) as u64,
                y: y + (4 * row0 * n) as u64,
            })?;
        }
    }
    Ok(())
}

/// The experts of a prompt on tensor cores: per expert with pairs, its gate and up rows
/// decoded to f16 and multiplied with its pairs' inputs, the SwiGLU of all pairs, then per
/// expert its down rows times its pairs' SwiGLU outputs, and each token's mix.
fn grouped(
    dev: &Arc<CudaDevice>,
    x: &Array,
    (p, dequant): (&ExpertProducts, &'static str),
    sorted: &SortedPairs,
    experts: &SwigluExperts<'_>,
    weights: &Array,
) -> Result<Array> {
    let (pairs, inter, hidden) = (sorted.pairs, p.inter, p.hidden);
    let xs = half_rows(
        dev,
        x.device_ptr()?,
        sorted.order()?,
        sorted.slots,
        pairs,
        hidden,
    )?;
    let gu = dev.alloc(4 * pairs * 2 * inter)?;
    // Each expert's gate rows, then its up rows: one [2 * inter, hidden] weight.
    expert_products(
        dev,
        sorted,
        (2 * inter, hidden),
        (xs.ptr(), gu.ptr()),
        |first, to| {
            for (half, m) in [&p.gate, &p.up].into_iter().enumerate() {
                let to = HalfOut {
                    ptr: to.ptr + (2 * half * inter * hidden) as u64,
                    ..*to
                };
                let layout = (inter, m.step as usize, m.offset as usize);
                half_weight(dev, (&m.w, dequant), first, layout, &to)?;
            }
            Ok(())
        },
    )?;
    drop(xs);
    let h = dev.alloc(2 * pairs * inter)?;
    dev.launch(
        "expert_swiglu_sorted",
        grid_for(pairs * inter),
        THREADS,
        &[
            &gu.ptr(),
            &sorted.order()?,
            &sorted.ids.device_ptr()?,
            &p.gate,
            &p.up,
            &(pairs as i64),
            &(inter as i32),
            &experts.alpha,
            &experts.limit,
            &h.ptr(),
        ],
    )?;
    drop(gu);
    let y = dev.alloc(4 * pairs * hidden)?;
    expert_products(
        dev,
        sorted,
        (hidden, inter),
        (h.ptr(), y.ptr()),
        |first, to| half_weight(dev, (&p.down.w, dequant), first, (hidden, 1, 0), to),
    )?;
    let rank = sorted.rank()?;
    mix_sorted(
        dev,
        (y.ptr(), rank),
        (&sorted.ids, weights),
        &p.down,
        hidden,
    )
}
