//! The CPU as a [`Backend`]: the host-memory implementations of the ops, on the kernels of
//! this folder.

use half::{bf16, f16};

use super::linear::halves;
use super::{elementwise, fused, grouped, paged, quant, sampling};
use crate::backends::Backend;
use crate::graph::Plan;
use crate::ops::{self, check_ids, AttentionOptions, Draw, Rope, SampleSettings, TableDims};
use crate::{Array, DType, Device, Error, KvPages, PageTable, Result};

/// The host's backend.
pub(crate) struct Cpu;

impl Backend for Cpu {
    fn open(&self, _device: Device) -> Result<()> {
        Ok(())
    }

    fn name(&self, _device: Device) -> Result<String> {
        Ok("cpu".into())
    }

    fn run_plan(&self, _device: Device, plan: &Plan, inputs: &[&Array]) -> Result<Vec<Array>> {
        // Weights (any dtype) are read as arrays, by the products.
        let slices: Vec<&[f32]> = inputs
            .iter()
            .map(|a| match a.dtype() {
                DType::F32 if a.quant().is_none() => a.as_f32(),
                _ => Ok(&[][..]),
            })
            .collect::<Result<_>>()?;
        let mut outputs: Vec<Array> = plan
            .outputs
            .iter()
            .map(|&o| Array::zeros(DType::F32, &plan.nodes[o].shape))
            .collect::<Result<_>>()?;
        let mut values: Vec<&mut [f32]> = outputs
            .iter_mut()
            .map(|a| a.as_f32_mut())
            .collect::<Result<_>>()?;
        fused::run_plan_into(plan, &slices, inputs, &mut values, false)?;
        Ok(outputs)
    }

    fn embedding(&self, table: &Array, ids: &Array) -> Result<Array> {
        let (vocab, d) = (table.dim(0), table.dim(1));
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
                DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => {
                    quant::dequantize(table.dtype(), row, dst)
                }
                other => return Err(Error::Unsupported(format!("embedding with {other} table"))),
            }
        }
        Ok(out)
    }

    fn rope(&self, x: &Array, positions: &Array, rope: &Rope) -> Result<Array> {
        let (heads, head_dim) = (x.dim(1), x.dim(2));
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

    fn deinterleave(&self, x: &Array, shape: &[usize]) -> Result<(Array, Array)> {
        let xs = x.as_f32()?;
        let even: Vec<f32> = xs.iter().step_by(2).copied().collect();
        let odd: Vec<f32> = xs.iter().skip(1).step_by(2).copied().collect();
        Ok((
            Array::from_f32(&even, shape)?,
            Array::from_f32(&odd, shape)?,
        ))
    }

    fn argmax(&self, x: &Array) -> Result<Array> {
        let (rows, n) = (x.dim(0), x.dim(1));
        let values = x.as_f32()?;
        let ids: Vec<i32> = (0..rows)
            .map(|r| elementwise::argmax(&values[r * n..(r + 1) * n]) as i32)
            .collect();
        Array::from_i32(&ids, &[rows])
    }

    fn sample(&self, x: &Array, settings: &[SampleSettings], draws: &[Draw]) -> Result<Array> {
        let (rows, n) = (x.dim(0), x.dim(1));
        let values = x.as_f32()?;
        let ids: Vec<i32> = (0..rows)
            .map(|r| {
                sampling::sample_row(&values[r * n..(r + 1) * n], &settings[r], &draws[r]) as i32
            })
            .collect();
        Array::from_i32(&ids, &[rows])
    }

    fn top_k_softmax(&self, scores: &Array, k: usize) -> Result<(Array, Array)> {
        let (tokens, experts) = (scores.dim(0), scores.dim(1));
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

    fn gather_linear(
        &self,
        x: &Array,
        w: &Array,
        bias: Option<&Array>,
        ids: &Array,
    ) -> Result<Array> {
        let (experts, n, k) = (w.dim(0), w.dim(1), w.dim(2));
        let (tokens, slots) = (ids.dim(0), ids.dim(1));
        let per_slot = x.shape().len() == 3;
        let chosen = ids.as_i32()?;
        if let Some(&e) = chosen.iter().find(|&&e| e < 0 || e as usize >= experts) {
            return ops::shape_err(format!("gather_linear: expert {e} of {experts}"));
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
            let y = ops::linear(&rows, &w.index(e)?, bias_e.as_ref())?;
            for (&p, yr) in pairs.iter().zip(y.as_f32()?.chunks_exact(n)) {
                out[p * n..(p + 1) * n].copy_from_slice(yr);
            }
        }
        Array::from_f32(&out, &[tokens, slots, n])
    }

    fn weighted_sum(&self, y: &Array, weights: &Array) -> Result<Array> {
        let (tokens, slots, d) = (y.dim(0), y.dim(1), y.dim(2));
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

    fn transpose_last2(&self, x: &Array, shape: &[usize]) -> Result<Array> {
        let (a, b) = (x.dim(-2), x.dim(-1));
        let xs = x.to_f32_vec()?;
        let mut out = vec![0.0f32; xs.len()];
        for (src, dst) in xs.chunks_exact(a * b).zip(out.chunks_exact_mut(a * b)) {
            for i in 0..a {
                for j in 0..b {
                    dst[j * a + i] = src[i * b + j];
                }
            }
        }
        Array::from_f32(&out, shape)
    }

    fn copy_prefix(&self, src: &Array, dst: &mut Array, bytes: usize) -> Result<()> {
        dst.host_bytes_mut()?[..bytes].copy_from_slice(src.host_bytes()?);
        Ok(())
    }

    fn write_kv_pages(
        &self,
        pages: &mut KvPages,
        table: PageTable<'_>,
        dims: &TableDims,
        positions: &Array,
        new: &Array,
    ) -> Result<()> {
        paged::write_kv_pages(pages, table, dims, positions, new)
    }

    fn paged_attention(
        &self,
        q: &Array,
        k: &KvPages,
        v: &KvPages,
        table: PageTable<'_>,
        dims: &TableDims,
        positions: &Array,
        opts: AttentionOptions<'_>,
    ) -> Result<Array> {
        paged::paged_attention(q, k, v, table, dims, positions, opts)
    }
}
