//! CPU kernels: rayon for threads, AVX2+FMA / NEON where it matters, scalar fallbacks.

pub mod quant;
