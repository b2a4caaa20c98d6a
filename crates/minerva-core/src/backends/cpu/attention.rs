//! Scaled dot-product attention over a paged KV cache (f32, f16, int8 or int4 rows),
//! grouped-query, causal, with an optional sliding window and per-head sink logits.

use half::f16;
use rayon::prelude::*;

use super::kv_rows::KvRows;

/// The paged cache and masking a pass's queries attend over.
pub struct AttentionArgs<'a> {
    /// Keys and values, rows indexed `(page * kv_heads + head) * page_size + slot`.
    pub k: KvRows<'a>,
    pub v: KvRows<'a>,
    pub kv_heads: usize,
    pub page_size: usize,
    /// `[sequences, width]` page ids; a sequence's position `j` is in page
    /// `tables[seq * width + (j / page_size) % width]`.
    pub tables: &'a [i32],
    pub width: usize,
    /// Each query row's sequence, and how many consecutive rows each sequence has.
    pub seq_of: &'a [i32],
    pub runs: &'a [usize],
    /// Absolute position of each query row; key `j` of its sequence is visible to a query at
    /// `p` when `j <= p` and, with a window `w`, `j > p - w`.
    pub positions: &'a [i32],
    pub window: Option<usize>,
    /// One extra logit per query head that joins the softmax but has no value (gpt-oss).
    pub sinks: Option<&'a [f32]>,
    pub scale: f32,
    /// Round queries and probabilities to f16 (caches other than f32), so each product has
    /// two f16 operands (f32 sums), as GPU flash attention and llama.cpp do; results then
    /// track those engines instead of drifting by f16 noise.
    pub half_products: bool,
}

impl AttentionArgs<'_> {
    /// The first position a query at `pos` sees.
    pub fn first_visible(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }

    /// The row of `seq`'s position `j` for KV head `h`.
    fn row(&self, seq: usize, j: usize, h: usize) -> usize {
        let page = self.tables[seq * self.width + (j / self.page_size) % self.width] as usize;
        (page * self.kv_heads + h) * self.page_size + j % self.page_size
    }
}

/// Query rows `t0..t1` of one sequence, one head: a task.
struct Task {
    head: usize,
    t0: usize,
    t1: usize,
}

/// `q` is `[tokens, heads, head_dim]`; returns `[tokens, heads * head_dim]` in `out`.
pub fn attention(
    q: &[f32],
    heads: usize,
    head_dim: usize,
    args: &AttentionArgs<'_>,
    out: &mut [f32],
) {
    let group = heads / args.kv_heads;
    // One task per (head, block of up to 32 query rows of one sequence); each widens the
    // rows its queries see once.
    let mut blocks = Vec::new();
    let mut start = 0;
    for &run in args.runs {
        blocks.extend(
            (start..start + run)
                .step_by(32)
                .map(|t0| (t0, (t0 + 32).min(start + run))),
        );
        start += run;
    }
    let tasks: Vec<Task> = (0..heads)
        .flat_map(|head| blocks.iter().map(move |&(t0, t1)| Task { head, t0, t1 }))
        .collect();
    let round = |x: f32| {
        if args.half_products {
            f16::from_f32(x).to_f32()
        } else {
            x
        }
    };
    let results: Vec<(Task, Vec<f32>)> = tasks
        .into_par_iter()
        .map(|task| {
            let Task { head: h, t0, t1 } = task;
            let seq = args.seq_of[t0] as usize;
            let rows = &args.positions[t0..t1];
            let hi = rows.iter().map(|&p| p as usize + 1).max().unwrap_or(0);
            let lo = rows
                .iter()
                .map(|&p| args.first_visible(p as usize))
                .min()
                .unwrap_or(0);
            let kv = h / group;
            let seen = hi - lo;
            let mut keys = vec![0.0f32; seen * head_dim];
            let mut values = vec![0.0f32; seen * head_dim];
            for j in lo..hi {
                let row = args.row(seq, j, kv);
                let at = (j - lo) * head_dim;
                args.k.widen(row, &mut keys[at..at + head_dim]);
                args.v.widen(row, &mut values[at..at + head_dim]);
            }
            let mut scores = vec![0.0f32; seen];
            let mut res = vec![0.0f32; (t1 - t0) * head_dim];
            let mut qh = vec![0.0f32; head_dim];
            for t in t0..t1 {
                let q_row = &q[(t * heads + h) * head_dim..(t * heads + h + 1) * head_dim];
                qh.iter_mut().zip(q_row).for_each(|(o, &x)| *o = round(x));
                let pos = args.positions[t] as usize;
                let (start, end) = (args.first_visible(pos) - lo, pos + 1 - lo);
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
            (task, res)
        })
        .collect();
    for (Task { head: h, t0, .. }, res) in results {
        for (i, row) in res.chunks_exact(head_dim).enumerate() {
            let t = t0 + i;
            out[(t * heads + h) * head_dim..(t * heads + h + 1) * head_dim].copy_from_slice(row);
        }
    }
}
