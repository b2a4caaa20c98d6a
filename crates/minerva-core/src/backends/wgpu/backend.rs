//! wgpu as a [`Backend`]: each op as a WGSL kernel. The ops a model's forward pass needs
//! beyond these (the lazy graph's plans and products, paged attention, sampling, the fused
//! experts) are not written yet and say so.

use std::sync::Arc;

use super::dispatch::{groups_for, Launch};
use super::{device, WgpuBuffer, WgpuDevice};
use crate::backends::Backend;
use crate::graph::Plan;
use crate::ops::{AttentionOptions, Draw, Rope, RopeStyle, SampleSettings, TableDims};
use crate::{Array, DType, Device, Error, KvPages, PageTable, Result};

/// Every wgpu adapter's backend.
pub(crate) struct Wgpu;

/// The adapter `device` names.
fn gpu(device_id: Device) -> Result<Arc<WgpuDevice>> {
    match device_id {
        Device::Wgpu(n) => device(n),
        other => Err(Error::Device(format!("the wgpu backend asked for {other}"))),
    }
}

/// An op this backend does not have yet.
fn missing<T>(op: &str) -> Result<T> {
    Err(Error::Unsupported(format!(
        "{op} on wgpu (not written yet: the wgpu backend runs embedding, rope, argmax, routing, \
         expert mixing and layout ops so far)"
    )))
}

/// A fresh f32 (or i32) array of `shape` on `dev`.
fn fresh(dev: &Arc<WgpuDevice>, dtype: DType, shape: &[usize]) -> Result<Array> {
    Array::zeros_on(dtype, shape, Device::Wgpu(dev.ordinal()))
}

/// An array's buffer and its offset in elements of 4 bytes.
fn operand(a: &Array) -> Result<(&WgpuBuffer, u32)> {
    let offset = a.wgpu_offset()?;
    Ok((a.wgpu_buffer()?, (offset / 4) as u32))
}

impl Backend for Wgpu {
    fn open(&self, device_id: Device) -> Result<()> {
        gpu(device_id).map(drop)
    }

    fn name(&self, device_id: Device) -> Result<String> {
        Ok(gpu(device_id)?.name())
    }

    fn run_plan(&self, _device: Device, _plan: &Plan, _inputs: &[&Array]) -> Result<Vec<Array>> {
        missing("elementwise ops, norms and products (the lazy graph's plans)")
    }

    fn embedding(&self, table: &Array, ids: &Array) -> Result<Array> {
        let dev = gpu(table.device())?;
        let (vocab, d) = (table.dim(0), table.dim(1));
        let tokens = ids.numel();
        let out = fresh(&dev, DType::F32, &[tokens, d])?;
        let entry = match table.dtype() {
            _ if table.quant().is_some() => {
                return missing("embedding from an MLX-quantized table")
            }
            DType::F32 => "embed_f32",
            DType::F16 => "embed_f16",
            DType::BF16 => "embed_bf16",
            DType::Q4_0 => "embed_q4_0",
            DType::Q4_1 => "embed_q4_1",
            DType::Q8_0 => "embed_q8_0",
            other => return Err(Error::Unsupported(format!("embedding with {other} table"))),
        };
        if tokens * d == 0 {
            return Ok(out);
        }
        let (ids_buf, ids_at) = operand(ids)?;
        dev.launch(&Launch {
            module: "embedding",
            entry,
            params: &[
                d as u32,
                tokens as u32,
                vocab as u32,
                table.wgpu_offset()? as u32,
                ids_at,
            ],
            arrays: &[table.wgpu_buffer()?, ids_buf, out.wgpu_buffer()?],
            groups: groups_for(tokens * d, 256),
        })?;
        Ok(out)
    }

    fn rope(&self, x: &Array, positions: &Array, rope: &Rope) -> Result<Array> {
        let dev = gpu(x.device())?;
        let [tokens, heads, head_dim] = *x.shape() else {
            unreachable!("checked by the op")
        };
        let out = fresh(&dev, DType::F32, x.shape())?;
        let half = rope.inv_freq.len();
        if tokens == 0 {
            return Ok(out);
        }
        let freqs = WgpuBuffer::upload(&dev, bytemuck::cast_slice(&rope.inv_freq))?;
        let (xb, x_at) = operand(x)?;
        let (pb, p_at) = operand(positions)?;
        dev.launch(&Launch {
            module: "rope",
            entry: "rope",
            params: &[
                tokens as u32,
                heads as u32,
                head_dim as u32,
                half as u32,
                u32::from(rope.style == RopeStyle::Half),
                rope.mscale.to_bits(),
                x_at,
                p_at,
            ],
            arrays: &[xb, pb, &freqs, out.wgpu_buffer()?],
            groups: groups_for(tokens * heads * (head_dim - half), 256),
        })?;
        Ok(out)
    }

    fn deinterleave(&self, x: &Array, half_shape: &[usize]) -> Result<(Array, Array)> {
        let dev = gpu(x.device())?;
        let (even, odd) = (
            fresh(&dev, DType::F32, half_shape)?,
            fresh(&dev, DType::F32, half_shape)?,
        );
        let n = even.numel();
        if n > 0 {
            let (xb, x_at) = operand(x)?;
            dev.launch(&Launch {
                module: "layout",
                entry: "deinterleave",
                params: &[n as u32, x_at],
                arrays: &[xb, even.wgpu_buffer()?, odd.wgpu_buffer()?],
                groups: groups_for(n, 256),
            })?;
        }
        Ok((even, odd))
    }

    fn argmax(&self, x: &Array) -> Result<Array> {
        let dev = gpu(x.device())?;
        let (rows, n) = (x.dim(0), x.dim(1));
        let out = fresh(&dev, DType::I32, &[rows])?;
        if rows == 0 || n == 0 {
            return Ok(out);
        }
        let (xb, x_at) = operand(x)?;
        dev.launch(&Launch {
            module: "argmax",
            entry: "argmax",
            params: &[n as u32, x_at],
            arrays: &[xb, out.wgpu_buffer()?],
            groups: groups_for(rows, 1),
        })?;
        Ok(out)
    }

    fn sample(&self, _x: &Array, _settings: &[SampleSettings], _draws: &[Draw]) -> Result<Array> {
        missing("sampling")
    }

    fn top_k_softmax(&self, scores: &Array, k: usize) -> Result<(Array, Array)> {
        let dev = gpu(scores.device())?;
        let (tokens, experts) = (scores.dim(0), scores.dim(1));
        let ids = fresh(&dev, DType::I32, &[tokens, k])?;
        let weights = fresh(&dev, DType::F32, &[tokens, k])?;
        if tokens > 0 {
            let (sb, s_at) = operand(scores)?;
            dev.launch(&Launch {
                module: "top_k_softmax",
                entry: "top_k_softmax",
                params: &[experts as u32, k as u32, tokens as u32, s_at],
                arrays: &[sb, ids.wgpu_buffer()?, weights.wgpu_buffer()?],
                groups: groups_for(tokens, 64),
            })?;
        }
        Ok((ids, weights))
    }

    fn gather_linear(
        &self,
        _x: &Array,
        _w: &Array,
        _bias: Option<&Array>,
        _ids: &Array,
    ) -> Result<Array> {
        missing("gathered expert products")
    }

    fn weighted_sum(&self, y: &Array, weights: &Array) -> Result<Array> {
        let dev = gpu(y.device())?;
        let (tokens, slots, d) = (y.dim(0), y.dim(1), y.dim(2));
        let out = fresh(&dev, DType::F32, &[tokens, d])?;
        if tokens * d > 0 {
            let (yb, y_at) = operand(y)?;
            let (wb, w_at) = operand(weights)?;
            dev.launch(&Launch {
                module: "weighted_sum",
                entry: "weighted_sum",
                params: &[tokens as u32, slots as u32, d as u32, y_at, w_at],
                arrays: &[yb, wb, out.wgpu_buffer()?],
                groups: groups_for(tokens * d, 256),
            })?;
        }
        Ok(out)
    }

    fn transpose_last2(&self, x: &Array, out_shape: &[usize]) -> Result<Array> {
        if x.dtype() != DType::F32 {
            return missing("transposing a non-f32 array");
        }
        let dev = gpu(x.device())?;
        let out = fresh(&dev, DType::F32, out_shape)?;
        let (b, c) = (x.dim(-2), x.dim(-1));
        if out.numel() > 0 {
            let (xb, x_at) = operand(x)?;
            dev.launch(&Launch {
                module: "layout",
                entry: "transpose_last2",
                params: &[out.numel() as u32, b as u32, c as u32, x_at],
                arrays: &[xb, out.wgpu_buffer()?],
                groups: groups_for(out.numel(), 256),
            })?;
        }
        Ok(out)
    }

    fn copy_prefix(&self, src: &Array, dst: &mut Array, bytes: usize) -> Result<()> {
        dst.wgpu_buffer_mut()?
            .copy_from(0, src.wgpu_buffer()?, src.wgpu_offset()?, bytes)
    }

    fn write_kv_pages(
        &self,
        _pages: &mut KvPages,
        _table: PageTable<'_>,
        _dims: &TableDims,
        _positions: &Array,
        _new: &Array,
    ) -> Result<()> {
        missing("writing the paged KV cache")
    }

    fn paged_attention(
        &self,
        _q: &Array,
        _k: &KvPages,
        _v: &KvPages,
        _table: PageTable<'_>,
        _dims: &TableDims,
        _positions: &Array,
        _opts: AttentionOptions<'_>,
    ) -> Result<Array> {
        missing("paged attention")
    }
}
