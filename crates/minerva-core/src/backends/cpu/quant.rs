//! GGUF block formats on the CPU: dequantization, and the integer dot products that let a
//! quantized matmul read packed weights directly.
//!
//! Activations are quantized to 8 bits in blocks of 32 (scale `d`, and `s = d * Σq` for the
//! formats with an offset), the way ggml does, so a weight block and an activation block meet
//! in one integer dot product and one float multiply-add.

use half::f16;

use crate::DType;

/// Values per block in every GGUF format here.
pub const QK: usize = 32;

/// Activations of one or more tokens, quantized to 8-bit blocks.
pub struct Q8Activations {
    /// Quantized values, `tokens * k`.
    qs: Vec<i8>,
    /// Per-block scale, rounded through f16 like ggml's `block_q8_1`.
    d: Vec<f32>,
    /// Per-block `d * Σq` (f16-rounded), used for the offset/min terms.
    s: Vec<f32>,
    k: usize,
}

impl Q8Activations {
    /// Quantizes `x` (`tokens` rows of `k` values, `k` a multiple of 32).
    pub fn quantize(x: &[f32], k: usize) -> Q8Activations {
        debug_assert!(k.is_multiple_of(QK) && x.len().is_multiple_of(k));
        let blocks = x.len() / QK;
        let mut out = Q8Activations {
            qs: vec![0; x.len()],
            d: vec![0.0; blocks],
            s: vec![0.0; blocks],
            k,
        };
        for (b, (xs, qs)) in x
            .chunks_exact(QK)
            .zip(out.qs.chunks_exact_mut(QK))
            .enumerate()
        {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            // 127/amax (not 1/d): the same rounding as ggml's SIMD quantizer, so values on
            // a rounding boundary land where llama.cpp puts them.
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                let r = round_ties_even(v * id) as i32;
                *q = r as i8;
                sum += r;
            }
            out.d[b] = f16::from_f32(d).to_f32();
            out.s[b] = f16::from_f32(sum as f32 * d).to_f32();
        }
        out
    }

    /// The blocks of token `t`.
    fn token(&self, t: usize) -> Q8Row<'_> {
        let nb = self.k / QK;
        Q8Row {
            qs: &self.qs[t * self.k..(t + 1) * self.k],
            d: &self.d[t * nb..(t + 1) * nb],
            s: &self.s[t * nb..(t + 1) * nb],
        }
    }
}

/// Round half to even for |x| < 2^22 (here |x| ≤ 127): adding 1.5·2^23 leaves no fraction
/// bits, so the FPU's own rounding does the work. `f32::round_ties_even` would be a libm
/// call on baseline x86-64.
#[inline]
fn round_ties_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

#[derive(Clone, Copy)]
struct Q8Row<'a> {
    qs: &'a [i8],
    d: &'a [f32],
    s: &'a [f32],
}

fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantizes whole blocks of `dtype` from `bytes` into `out` (`out.len()` values).
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    let bb = dtype.block_bytes();
    for (block, vals) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(QK)) {
        let d = half_at(block, 0);
        match dtype {
            DType::Q4_0 | DType::Q4_1 => {
                let (m, qs) = if dtype == DType::Q4_1 {
                    (half_at(block, 2), &block[4..20])
                } else {
                    (-8.0 * d, &block[2..18])
                };
                for (j, &byte) in qs.iter().enumerate() {
                    vals[j] = d * (byte & 0x0F) as f32 + m;
                    vals[j + 16] = d * (byte >> 4) as f32 + m;
                }
            }
            DType::Q8_0 => {
                for (v, &q) in vals.iter_mut().zip(&block[2..34]) {
                    *v = d * (q as i8) as f32;
                }
            }
            other => unreachable!("dequantize called with dense dtype {other}"),
        }
    }
}

/// `out[t * n + r] = dot(weight row r, x row t)` for a `[n, k]` weight of `dtype` and
/// activations `x` of `tokens` rows. Threads split the weight rows.
pub fn matmul(dtype: DType, weight: &[u8], n: usize, k: usize, x: &[f32], out: &mut [f32]) {
    let tokens = x.len() / k;
    let act = Q8Activations::quantize(x, k);
    let row_bytes = k / QK * dtype.block_bytes();
    let kernels = kernels(dtype);
    super::parallel_rows(out, n, tokens, |rows, block| {
        // Tokens in chunks whose activations stay in L1 while the task's rows pass over them.
        for t0 in (0..tokens).step_by(TOKEN_CHUNK) {
            let t1 = (t0 + TOKEN_CHUNK).min(tokens);
            for (r, acc) in rows.clone().zip(block.chunks_exact_mut(tokens)) {
                let w = &weight[r * row_bytes..(r + 1) * row_bytes];
                let mut t = t0;
                if let Some(dot4) = kernels.dot4 {
                    while t + 4 <= t1 {
                        let xs = [
                            act.token(t),
                            act.token(t + 1),
                            act.token(t + 2),
                            act.token(t + 3),
                        ];
                        acc[t..t + 4].copy_from_slice(&dot4(w, &xs));
                        t += 4;
                    }
                }
                for (t, o) in acc.iter_mut().enumerate().take(t1).skip(t) {
                    *o = (kernels.dot)(w, act.token(t));
                }
            }
        }
    });
}

/// Tokens per pass over a task's weight rows in a multi-token matmul (32 tokens of 8-bit
/// activations at k = 576 are 18 KB).
const TOKEN_CHUNK: usize = 32;

type DotFn = fn(&[u8], Q8Row<'_>) -> f32;
/// One weight row against four tokens: unpacks each weight block once for all four.
type Dot4Fn = fn(&[u8], &[Q8Row<'_>; 4]) -> [f32; 4];

struct Kernels {
    dot: DotFn,
    dot4: Option<Dot4Fn>,
}

fn kernels(dtype: DType) -> Kernels {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
    {
        return match dtype {
            DType::Q4_0 => Kernels {
                dot: avx2::dot_q4_0,
                dot4: Some(avx2::dot4_q4_0),
            },
            DType::Q4_1 => Kernels {
                dot: avx2::dot_q4_1,
                dot4: Some(avx2::dot4_q4_1),
            },
            DType::Q8_0 => Kernels {
                dot: avx2::dot_q8_0,
                dot4: None,
            },
            other => unreachable!("no quantized dot for {other}"),
        };
    }
    Kernels {
        dot: dot_fn(dtype),
        dot4: None,
    }
}

/// The best single-row kernel for `dtype` on this CPU.
fn dot_fn(dtype: DType) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
    {
        return match dtype {
            DType::Q4_0 => avx2::dot_q4_0,
            DType::Q4_1 => avx2::dot_q4_1,
            DType::Q8_0 => avx2::dot_q8_0,
            other => unreachable!("no quantized dot for {other}"),
        };
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        return match dtype {
            DType::Q4_0 => neon::dot_q4_0,
            DType::Q4_1 => neon::dot_q4_1,
            DType::Q8_0 => neon::dot_q8_0,
            other => unreachable!("no quantized dot for {other}"),
        };
    }
    match dtype {
        DType::Q4_0 => scalar::dot_q4::<false>,
        DType::Q4_1 => scalar::dot_q4::<true>,
        DType::Q8_0 => scalar::dot_q8_0,
        other => unreachable!("no quantized dot for {other}"),
    }
}

/// Portable reference kernels; the SIMD ones must agree with these exactly (integer sums)
/// up to float summation order.
mod scalar {
    use super::{half_at, Q8Row, QK};

    /// Q4_0 (`HAS_MIN = false`, values q - 8) or Q4_1 (`HAS_MIN = true`, values d*q + m).
    pub fn dot_q4<const HAS_MIN: bool>(w: &[u8], x: Q8Row<'_>) -> f32 {
        let bb = if HAS_MIN { 20 } else { 18 };
        let mut sum = 0.0f32;
        for (b, block) in w.chunks_exact(bb).enumerate() {
            let dw = half_at(block, 0);
            let qs = &block[bb - 16..];
            let xq = &x.qs[b * QK..(b + 1) * QK];
            let mut dot = 0i32;
            for j in 0..16 {
                dot +=
                    (qs[j] & 0x0F) as i32 * xq[j] as i32 + (qs[j] >> 4) as i32 * xq[j + 16] as i32;
            }
            sum += dw * x.d[b] * dot as f32;
            sum += if HAS_MIN {
                half_at(block, 2) * x.s[b]
            } else {
                -8.0 * dw * x.s[b]
            };
        }
        sum
    }

    pub fn dot_q8_0(w: &[u8], x: Q8Row<'_>) -> f32 {
        let mut sum = 0.0f32;
        for (b, block) in w.chunks_exact(34).enumerate() {
            let xq = &x.qs[b * QK..(b + 1) * QK];
            let dot: i32 = block[2..]
                .iter()
                .zip(xq)
                .map(|(&q, &v)| (q as i8) as i32 * v as i32)
                .sum();
            sum += half_at(block, 0) * x.d[b] * dot as f32;
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Q8Row, QK};

    pub fn dot_q4_0(w: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: `dot_fn` hands out this function only after detecting AVX2, FMA and F16C;
        // `dot_q4` checks the slice lengths it reads.
        unsafe { dot_q4::<false>(w, x) }
    }

    pub fn dot_q4_1(w: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: as in `dot_q4_0`.
        unsafe { dot_q4::<true>(w, x) }
    }

    pub fn dot_q8_0(w: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: as in `dot_q4_0`.
        unsafe { dot_q8(w, x) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn half(p: *const u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            p.cast::<u16>().read_unaligned() as i32,
        )))
    }

    /// Integer dot product of one 4-bit weight block (unsigned nibbles) with 32 activation
    /// bytes, as 8 f32 partial sums.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibble_dot(packed: *const u8, xq: *const i8) -> __m256 {
        let bytes = _mm_loadu_si128(packed.cast());
        // Low nibbles are values 0..16 of the block, high nibbles values 16..32.
        let wq = _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes),
            _mm256_set1_epi8(0x0F),
        );
        let xq = _mm256_loadu_si256(xq.cast());
        _mm256_cvtepi32_ps(_mm256_madd_epi16(
            _mm256_maddubs_epi16(wq, xq),
            _mm256_set1_epi16(1),
        ))
    }

    pub fn dot4_q4_0(w: &[u8], xs: &[Q8Row<'_>; 4]) -> [f32; 4] {
        // SAFETY: as in `dot_q4_0`.
        unsafe { dot4_q4::<false>(w, xs) }
    }

    pub fn dot4_q4_1(w: &[u8], xs: &[Q8Row<'_>; 4]) -> [f32; 4] {
        // SAFETY: as in `dot_q4_0`.
        unsafe { dot4_q4::<true>(w, xs) }
    }

    /// One weight row against four tokens: each weight block is unpacked once, and the four
    /// accumulators are independent chains.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot4_q4<const HAS_MIN: bool>(w: &[u8], xs: &[Q8Row<'_>; 4]) -> [f32; 4] {
        let bb = if HAS_MIN { 20 } else { 18 };
        let nb = xs[0].d.len();
        assert!(w.len() >= nb * bb);
        for x in xs {
            assert!(x.d.len() == nb && x.s.len() == nb && x.qs.len() >= nb * QK);
        }
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        // Each token sums exactly as `dot_q4` does (even and odd blocks in two accumulators,
        // offsets multiplied then added), so a token's result is the same bits whether it
        // runs alone or beside others: batch invariance.
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        let mut offset = [[0.0f32; 2]; 4];
        for b in 0..nb {
            let lane = b & 1;
            let block = w.as_ptr().add(b * bb);
            let dw = half(block);
            let bytes = _mm_loadu_si128(block.add(bb - 16).cast());
            let wq = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes), mask);
            let factor = if HAS_MIN {
                half(block.add(2))
            } else {
                -8.0 * dw
            };
            for (t, x) in xs.iter().enumerate() {
                let xq = _mm256_loadu_si256(x.qs.as_ptr().add(b * QK).cast());
                let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(wq, xq), ones));
                let scale = _mm256_set1_ps(dw * *x.d.get_unchecked(b));
                acc[t][lane] = _mm256_fmadd_ps(dot, scale, acc[t][lane]);
                offset[t][lane] += factor * *x.s.get_unchecked(b);
            }
        }
        let mut out = [0.0f32; 4];
        for ((o, a), off) in out.iter_mut().zip(acc).zip(offset) {
            *o = hsum(_mm256_add_ps(a[0], a[1])) + off[0] + off[1];
        }
        out
    }

    /// Two blocks per iteration into two accumulators, so consecutive fused multiply-adds do
    /// not wait on each other.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_q4<const HAS_MIN: bool>(w: &[u8], x: Q8Row<'_>) -> f32 {
        let bb = if HAS_MIN { 20 } else { 18 };
        let nb = x.d.len();
        assert!(w.len() >= nb * bb && x.qs.len() >= nb * QK && x.s.len() >= nb);
        let (wp, xp) = (w.as_ptr(), x.qs.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut offset = [0.0f32; 2];
        let mut step = |b: usize, lane: usize| {
            let block = wp.add(b * bb);
            let dw = half(block);
            let dot = nibble_dot(block.add(bb - 16), xp.add(b * QK));
            let scale = _mm256_set1_ps(dw * *x.d.get_unchecked(b));
            acc[lane] = _mm256_fmadd_ps(dot, scale, acc[lane]);
            offset[lane] += if HAS_MIN {
                half(block.add(2)) * *x.s.get_unchecked(b)
            } else {
                -8.0 * dw * *x.s.get_unchecked(b)
            };
        };
        let mut b = 0;
        while b + 1 < nb {
            step(b, 0);
            step(b + 1, 1);
            b += 2;
        }
        if b < nb {
            step(b, 0);
        }
        hsum(_mm256_add_ps(acc[0], acc[1])) + offset[0] + offset[1]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_q8(w: &[u8], x: Q8Row<'_>) -> f32 {
        let nb = x.d.len();
        assert!(w.len() >= nb * 34 && x.qs.len() >= nb * QK);
        let (wp, xp) = (w.as_ptr(), x.qs.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut step = |b: usize, lane: usize| {
            let block = wp.add(b * 34);
            let wq = _mm256_loadu_si256(block.add(2).cast());
            let xq = _mm256_loadu_si256(xp.add(b * QK).cast());
            // maddubs wants unsigned × signed: move the weight's sign onto the activation.
            let dot = _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq)),
                _mm256_set1_epi16(1),
            );
            acc[lane] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(dot),
                _mm256_set1_ps(half(block) * *x.d.get_unchecked(b)),
                acc[lane],
            );
        };
        let mut b = 0;
        while b + 1 < nb {
            step(b, 0);
            step(b + 1, 1);
            b += 2;
        }
        if b < nb {
            step(b, 0);
        }
        hsum(_mm256_add_ps(acc[0], acc[1]))
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::{half_at, Q8Row, QK};

    pub fn dot_q4_0(w: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: `dot_fn` hands out this function only after detecting `dotprod`; the
        // kernel checks the slice lengths it reads.
        unsafe { dot_q4::<false>(w, x) }
    }

    pub fn dot_q4_1(w: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: as in `dot_q4_0`.
        unsafe { dot_q4::<true>(w, x) }
    }

    pub fn dot_q8_0(w: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: as in `dot_q4_0`.
        unsafe { dot_q8(w, x) }
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot_q4<const HAS_MIN: bool>(w: &[u8], x: Q8Row<'_>) -> f32 {
        let bb = if HAS_MIN { 20 } else { 18 };
        let nb = x.d.len();
        assert!(w.len() >= nb * bb && x.qs.len() >= nb * QK && x.s.len() >= nb);
        let mut sum = 0.0f32;
        for b in 0..nb {
            let block = &w[b * bb..(b + 1) * bb];
            let packed = vld1q_u8(block.as_ptr().add(bb - 16));
            let lo = vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0F)));
            let hi = vreinterpretq_s8_u8(vshrq_n_u8(packed, 4));
            let x0 = vld1q_s8(x.qs.as_ptr().add(b * QK));
            let x1 = vld1q_s8(x.qs.as_ptr().add(b * QK + 16));
            let dot = vaddvq_s32(vdotq_s32(vdotq_s32(vdupq_n_s32(0), lo, x0), hi, x1));
            let dw = half_at(block, 0);
            sum += dw * x.d[b] * dot as f32;
            sum += if HAS_MIN {
                half_at(block, 2) * x.s[b]
            } else {
                -8.0 * dw * x.s[b]
            };
        }
        sum
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot_q8(w: &[u8], x: Q8Row<'_>) -> f32 {
        let nb = x.d.len();
        assert!(w.len() >= nb * 34 && x.qs.len() >= nb * QK);
        let mut sum = 0.0f32;
        for b in 0..nb {
            let block = &w[b * 34..(b + 1) * 34];
            let w0 = vld1q_s8(block.as_ptr().add(2).cast());
            let w1 = vld1q_s8(block.as_ptr().add(18).cast());
            let x0 = vld1q_s8(x.qs.as_ptr().add(b * QK));
            let x1 = vld1q_s8(x.qs.as_ptr().add(b * QK + 16));
            let dot = vaddvq_s32(vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1));
            sum += half_at(block, 0) * x.d[b] * dot as f32;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantizes `values` (a multiple of 32) to `dtype` with a simple reference quantizer.
    pub(crate) fn quantize_ref(dtype: DType, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for xs in values.chunks_exact(QK) {
            match dtype {
                DType::Q4_0 => {
                    let amax =
                        xs.iter()
                            .copied()
                            .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
                    let d = amax / -8.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                    for j in 0..16 {
                        let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                        out.push(q(xs[j]) | (q(xs[j + 16]) << 4));
                    }
                }
                DType::Q4_1 => {
                    let min = xs.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let d = (max - min) / 15.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                    for j in 0..16 {
                        let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                        out.push(q(xs[j]) | (q(xs[j + 16]) << 4));
                    }
                }
                DType::Q8_0 => {
                    let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                    out.extend(xs.iter().map(|v| (v * id).round() as i8 as u8));
                }
                _ => unreachable!(),
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn quantized_matmul_matches_dequantized_reference() {
        let (n, k, tokens) = (37, 256, 6);
        let x = pseudo_random(tokens * k, 7);
        for dtype in [DType::Q4_0, DType::Q4_1, DType::Q8_0] {
            let w = quantize_ref(dtype, &pseudo_random(n * k, 11));
            let mut wf = vec![0.0; n * k];
            dequantize(dtype, &w, &mut wf);
            let mut out = vec![0.0; tokens * n];
            matmul(dtype, &w, n, k, &x, &mut out);
            // The reference multiplies dequantized weights by the f32 activations; the kernel
            // quantizes activations to 8 bits, which costs about 1/254 of each block's range.
            for t in 0..tokens {
                for r in 0..n {
                    let xr = &x[t * k..(t + 1) * k];
                    let wr = &wf[r * k..(r + 1) * k];
                    let exact: f32 = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
                    let bound: f32 =
                        xr.iter().zip(wr).map(|(a, b)| (a * b).abs()).sum::<f32>() * 0.01;
                    let got = out[t * n + r];
                    assert!(
                        (got - exact).abs() <= bound,
                        "{dtype} t{t} r{r}: {got} vs {exact}"
                    );
                }
            }
            // The SIMD kernel (if any) and the scalar one must agree to float rounding.
            let act = Q8Activations::quantize(&x, k);
            let scalar: DotFn = match dtype {
                DType::Q4_0 => scalar::dot_q4::<false>,
                DType::Q4_1 => scalar::dot_q4::<true>,
                _ => scalar::dot_q8_0,
            };
            let row_bytes = k / QK * dtype.block_bytes();
            // `out` came from the multi-token kernels (4 tokens at a time, then singles).
            for (t, r) in (0..tokens).flat_map(|t| (0..n).map(move |r| (t, r))) {
                let wr = &w[r * row_bytes..(r + 1) * row_bytes];
                let (a, b) = (out[t * n + r], scalar(wr, act.token(t)));
                assert!(
                    (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                    "{dtype} t{t} r{r}: {a} vs {b}"
                );
            }
            // Batch invariance: a token's result is the same bits alone (the single-token
            // kernel) as among others (the four-token kernel).
            for t in 0..tokens {
                let mut alone = vec![0.0; n];
                matmul(dtype, &w, n, k, &x[t * k..(t + 1) * k], &mut alone);
                let among: Vec<f32> = (0..n).map(|r| out[t * n + r]).collect();
                assert_eq!(alone, among, "{dtype} token {t}");
            }
        }
    }

    #[test]
    fn dequantize_q4_1_layout() {
        let mut block = vec![0u8; 20];
        block[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        block[4] = 0x31; // value 0 = 1, value 16 = 3
        let mut out = vec![0.0; 32];
        dequantize(DType::Q4_1, &block, &mut out);
        assert_eq!(out[0], -0.5);
        assert_eq!(out[16], 0.5);
        assert_eq!(out[1], -1.0);
    }
}
