//! CPU kernels: rayon for threads, AVX2+FMA / NEON where it matters, scalar fallbacks.

pub mod attention;
mod backend;
pub mod dense;
pub mod elementwise;
pub mod fused;
pub mod grouped;
pub mod kv_rows;
pub mod linear;
mod paged;
pub mod quant;
pub mod quantize;
pub mod sampling;

use std::ops::Range;

pub(crate) use backend::Cpu;

use rayon::prelude::*;

/// Computes a `[tokens, n]` result in `out` by weight rows on the thread pool: `rows(range,
/// block)` fills `block`, laid out `[range.len(), tokens]` (row-major by weight row), for the
/// weight rows in `range`. Rows are split into a few tasks per thread: enough to balance,
/// few enough that scheduling stays far below the work.
pub(crate) fn parallel_rows<F>(out: &mut [f32], n: usize, tokens: usize, rows: F)
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    debug_assert_eq!(out.len(), n * tokens);
    let rows_per_task = n.div_ceil(rayon::current_num_threads() * 4).max(16);
    let task = |(i, block): (usize, &mut [f32])| {
        let start = i * rows_per_task;
        rows(start..start + block.len() / tokens, block);
    };
    if tokens == 1 {
        // `[1, n]` and `[n, 1]` are the same layout.
        out.par_chunks_mut(rows_per_task).enumerate().for_each(task);
        return;
    }
    let mut by_row = vec![0.0f32; n * tokens];
    by_row
        .par_chunks_mut(rows_per_task * tokens)
        .enumerate()
        .for_each(task);
    for (r, acc) in by_row.chunks_exact(tokens).enumerate() {
        for (t, &v) in acc.iter().enumerate() {
            out[t * n + r] = v;
        }
    }
}
