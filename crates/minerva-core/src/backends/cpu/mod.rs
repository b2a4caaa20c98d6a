//! CPU kernels: rayon for threads, AVX2+FMA / NEON where it matters, scalar fallbacks.

pub mod attention;
pub mod dense;
pub mod elementwise;
pub mod quant;

use rayon::prelude::*;

/// Runs `row(r, acc)` for every weight row `r < n` on the thread pool, where `acc` receives
/// row `r`'s result for each of the `tokens` inputs; the results land in `out` as
/// `[tokens, n]`. Rows are split into a few tasks per thread: enough to balance, few
/// enough that scheduling stays far below the work.
pub(crate) fn parallel_rows<F>(out: &mut [f32], n: usize, tokens: usize, row: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    debug_assert_eq!(out.len(), n * tokens);
    let rows_per_task = n.div_ceil(rayon::current_num_threads() * 4).max(16);
    if tokens == 1 {
        out.par_chunks_mut(rows_per_task)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (i, o) in chunk.iter_mut().enumerate() {
                    row(task * rows_per_task + i, std::slice::from_mut(o));
                }
            });
        return;
    }
    let mut by_row = vec![0.0f32; n * tokens];
    by_row
        .par_chunks_mut(rows_per_task * tokens)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, acc) in chunk.chunks_exact_mut(tokens).enumerate() {
                row(task * rows_per_task + i, acc);
            }
        });
    for (r, acc) in by_row.chunks_exact(tokens).enumerate() {
        for (t, &v) in acc.iter().enumerate() {
            out[t * n + r] = v;
        }
    }
}
