//! Dense matrix products: f32 through the `gemm` crate, f16/bf16 weights by row dot products.

use half::{bf16, f16};

use super::parallel_rows;

/// `out[m, n] = a[m, k] @ b` where `b` is `[k, n]` (`b_transposed = false`) or `[n, k]`
/// (`b_transposed = true`); all row-major f32.
pub fn matmul_f32(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    b_transposed: bool,
    out: &mut [f32],
) {
    assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
    let (b_cs, b_rs) = if b_transposed {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && m * n * k > 1 << 16 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above bound every index gemm reads or writes: `a` is m×k with
    // row stride k, `b` is k×n with the strides chosen above, `out` is m×n with row stride n.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Weights stored as 16-bit floats, read row by row and widened on the fly.
pub trait HalfFloat: Copy + Send + Sync {
    fn widen(self) -> f32;
}

impl HalfFloat for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl HalfFloat for bf16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// `out[t, r] = dot(w[r, :], x[t, :])` for a `[n, k]` 16-bit weight.
pub fn matmul_half<T: HalfFloat>(w: &[T], n: usize, k: usize, x: &[f32], out: &mut [f32]) {
    let tokens = x.len() / k;
    parallel_rows(out, n, tokens, |rows, block| {
        for (r, acc) in rows.zip(block.chunks_exact_mut(tokens)) {
            let wr = &w[r * k..(r + 1) * k];
            for (t, o) in acc.iter_mut().enumerate() {
                let xr = &x[t * k..(t + 1) * k];
                *o = wr.iter().zip(xr).map(|(w, x)| w.widen() * x).sum();
            }
        }
    });
}
