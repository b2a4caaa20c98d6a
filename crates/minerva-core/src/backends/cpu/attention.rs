//! Scaled dot-product attention over an f16 or f32 KV cache, grouped-query, causal, with
//! an optional sliding window and per-head sink logits.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Cached keys or values in their storage type.
#[derive(Clone, Copy)]
pub enum KvSlice<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
}

impl KvSlice<'_> {
    fn widen_into(self, start: usize, out: &mut [f32]) {
        match self {
            KvSlice::F16(s) => s[start..start + out.len()].convert_to_f32_slice(out),
            KvSlice::F32(s) => out.copy_from_slice(&s[start..start + out.len()]),
        }
    }
}

/// The cache and masking a batch of queries attends over.
pub struct AttentionArgs<'a> {
    /// `[kv_heads, capacity, head_dim]` keys; the first `kv_len` positions are valid.
    pub k: KvSlice<'a>,
    pub v: KvSlice<'a>,
    pub kv_heads: usize,
    pub capacity: usize,
    pub kv_len: usize,
    /// Absolute position of each query row; key `j` is visible to a query at `p` when
    /// `j <= p` and, with a window `w`, `j > p - w`.
    pub positions: &'a [i32],
    pub window: Option<usize>,
    /// One extra logit per query head that joins the softmax but has no value (gpt-oss).
    pub sinks: Option<&'a [f32]>,
    pub scale: f32,
}

/// `q` is `[tokens, heads, head_dim]`; returns `[tokens, heads * head_dim]` in `out`.
pub fn attention(
    q: &[f32],
    heads: usize,
    head_dim: usize,
    args: &AttentionArgs<'_>,
    out: &mut [f32],
) {
    let tokens = args.positions.len();
    let group = heads / args.kv_heads;
    // One task per (head, block of query rows); each widens its KV head's rows once.
    let rows_per_task = tokens.clamp(1, 32);
    let blocks = tokens.div_ceil(rows_per_task);
    let results: Vec<(usize, usize, Vec<f32>)> = (0..heads * blocks)
        .into_par_iter()
        .map(|task| {
            let (h, block) = (task / blocks, task % blocks);
            let t0 = block * rows_per_task;
            let t1 = (t0 + rows_per_task).min(tokens);
            let max_pos = args.positions[t0..t1].iter().copied().max().unwrap_or(0);
            let visible = (max_pos as usize + 1).min(args.kv_len);
            let kv = h / group;
            let base = kv * args.capacity * head_dim;
            let mut keys = vec![0.0f32; visible * head_dim];
            let mut values = vec![0.0f32; visible * head_dim];
            args.k.widen_into(base, &mut keys);
            args.v.widen_into(base, &mut values);
            let mut scores = vec![0.0f32; visible];
            let mut res = vec![0.0f32; (t1 - t0) * head_dim];
            // With an f16 cache, queries and probabilities are rounded to f16 too, so each
            // product has two f16 operands (f32 accumulation), as in GPU flash attention and
            // llama.cpp; results then track those engines instead of drifting by f16 noise.
            let half_products = matches!(args.k, KvSlice::F16(_));
            let round = |x: f32| {
                if half_products {
                    f16::from_f32(x).to_f32()
                } else {
                    x
                }
            };
            let mut qh = vec![0.0f32; head_dim];
            for t in t0..t1 {
                let q_row = &q[(t * heads + h) * head_dim..(t * heads + h + 1) * head_dim];
                qh.iter_mut().zip(q_row).for_each(|(o, &x)| *o = round(x));
                let pos = args.positions[t] as usize;
                let end = (pos + 1).min(visible);
                let start = args.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let mut max = args.sinks.map_or(f32::NEG_INFINITY, |s| s[h]);
                for j in start..end {
                    let kj = &keys[j * head_dim..(j + 1) * head_dim];
                    let s = qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * args.scale;
                    scores[j] = s;
                    max = max.max(s);
                }
                let mut denom = args.sinks.map_or(0.0, |s| f64::from((s[h] - max).exp()));
                for s in &mut scores[start..end] {
                    *s = (*s - max).exp();
                    denom += f64::from(*s);
                }
                let inv = (1.0 / denom) as f32;
                let o = &mut res[(t - t0) * head_dim..(t - t0 + 1) * head_dim];
                for j in start..end {
                    let p = round(scores[j] * inv);
                    for (o, &v) in o.iter_mut().zip(&values[j * head_dim..(j + 1) * head_dim]) {
                        *o += p * v;
                    }
                }
            }
            (h, t0, res)
        })
        .collect();
    for (h, t0, res) in results {
        for (i, row) in res.chunks_exact(head_dim).enumerate() {
            let t = t0 + i;
            out[(t * heads + h) * head_dim..(t * heads + h + 1) * head_dim].copy_from_slice(row);
        }
    }
}
