//! Kernels for MLX-style group quantization, where codes and per-group parameters are
//! separate arrays: affine (`x = scale * q + bias`, 2..8-bit codes) and MXFP4 (e2m1 codes
//! with e8m0 power-of-two scales).
//!
//! Activations stay f32, as MLX computes: each weight row is decoded once into a small f32
//! buffer in cache and dotted with every token, so decode reads each packed weight byte
//! once and prefill amortizes the decoding over the tokens.

use std::ops::Range;

use half::{bf16, f16};

use crate::{Array, DType, Error, Result};

/// The e2m1 values of the 16 FP4 codes (sign in bit 3).
pub(crate) const E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Per-group parameters as stored (little-endian, possibly unaligned in a mapping).
#[derive(Clone, Copy)]
enum Params<'a> {
    F32(&'a [u8]),
    F16(&'a [u8]),
    BF16(&'a [u8]),
    /// e8m0: a biased power-of-two exponent per byte.
    E8M0(&'a [u8]),
}

impl<'a> Params<'a> {
    fn of(a: &'a Array) -> Result<Params<'a>> {
        let b = a.host_bytes()?;
        Ok(match a.dtype() {
            DType::F32 => Params::F32(b),
            DType::F16 => Params::F16(b),
            DType::BF16 => Params::BF16(b),
            DType::U8 => Params::E8M0(b),
            other => return Err(Error::Unsupported(format!("{other} group parameters"))),
        })
    }

    fn get(self, i: usize) -> f32 {
        match self {
            Params::F32(b) => {
                f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            }
            Params::F16(b) => f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
            Params::BF16(b) => bf16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
            Params::E8M0(b) => e8m0(b[i]),
        }
    }
}

/// 2^(e - 127), exactly (e = 0 is the subnormal 2^-127; e = 255 is NaN).
fn e8m0(e: u8) -> f32 {
    match e {
        0 => f32::from_bits(0x0040_0000),
        255 => f32::NAN,
        e => f32::from_bits((e as u32) << 23),
    }
}

/// A 2-D (`[rows, k]`) look at a group-quantized array.
pub struct GroupedView<'a> {
    dtype: DType,
    codes: &'a [u8],
    scales: Params<'a>,
    biases: Option<Params<'a>>,
    pub rows: usize,
    pub k: usize,
}

impl<'a> GroupedView<'a> {
    pub fn of(a: &'a Array) -> Result<GroupedView<'a>> {
        let Some(params) = a.quant() else {
            return Err(Error::Unsupported(format!(
                "{} array without group parameters",
                a.dtype()
            )));
        };
        let k = a.dim(-1);
        Ok(GroupedView {
            dtype: a.dtype(),
            codes: a.host_bytes()?,
            scales: Params::of(&params.scales)?,
            biases: params.biases.as_ref().map(Params::of).transpose()?,
            rows: a.numel() / k.max(1),
            k,
        })
    }

    fn group(&self) -> usize {
        self.dtype.block_len()
    }

    /// Decodes row `r` into `out` (`k` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (group, k) = (self.group(), self.k);
        let groups = k / group;
        let group_bytes = self.dtype.block_bytes();
        let codes = &self.codes[r * groups * group_bytes..(r + 1) * groups * group_bytes];
        for (g, (packed, vals)) in codes
            .chunks_exact(group_bytes)
            .zip(out[..k].chunks_exact_mut(group))
            .enumerate()
        {
            let scale = self.scales.get(r * groups + g);
            match self.dtype {
                DType::Mxfp4 => decode_mxfp4(packed, scale, vals),
                DType::Affine { bits, .. } => {
                    let bias = self.biases.map_or(0.0, |b| b.get(r * groups + g));
                    decode_affine(packed, bits, scale, bias, vals)
                }
                other => unreachable!("grouped kernel for {other}"),
            }
        }
    }

    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        for (r, dst) in rows.zip(out.chunks_exact_mut(self.k)) {
            self.dequantize_row(r, dst);
        }
    }
}

fn decode_mxfp4(packed: &[u8], scale: f32, out: &mut [f32]) {
    for (pair, &byte) in out.chunks_exact_mut(2).zip(packed) {
        pair[0] = scale * E2M1[(byte & 0x0F) as usize];
        pair[1] = scale * E2M1[(byte >> 4) as usize];
    }
}

/// Codes are one little-endian bit stream: value `i` occupies bits `i * bits ..`.
fn decode_affine(packed: &[u8], bits: u8, scale: f32, bias: f32, out: &mut [f32]) {
    match bits {
        8 => {
            for (o, &q) in out.iter_mut().zip(packed) {
                *o = scale * q as f32 + bias;
            }
        }
        4 => {
            for (pair, &byte) in out.chunks_exact_mut(2).zip(packed) {
                pair[0] = scale * (byte & 0x0F) as f32 + bias;
                pair[1] = scale * (byte >> 4) as f32 + bias;
            }
        }
        _ => {
            let bits = bits as usize;
            let mask = (1u32 << bits) - 1;
            for (i, o) in out.iter_mut().enumerate() {
                let bit = i * bits;
                let at = bit / 8;
                // Up to 8 bits starting anywhere in a byte span at most two bytes.
                let lo = packed[at] as u32;
                let hi = packed.get(at + 1).copied().unwrap_or(0) as u32;
                let q = ((lo | hi << 8) >> (bit % 8)) & mask;
                *o = scale * q as f32 + bias;
            }
        }
    }
}

/// `out[t * n + r] = dot(row r of w, x row t)` for `w` `[n, k]` and `tokens` rows of `x`.
pub fn matmul(w: &GroupedView<'_>, x: &[f32], out: &mut [f32]) {
    let (n, k) = (w.rows, w.k);
    let tokens = x.len() / k;
    super::parallel_rows(out, n, tokens, |rows, block| {
        let mut row = vec![0.0f32; k];
        for (r, acc) in rows.zip(block.chunks_exact_mut(tokens)) {
            w.dequantize_row(r, &mut row);
            for (t, o) in acc.iter_mut().enumerate() {
                *o = dot(&row, &x[t * k..(t + 1) * k]);
            }
        }
    });
}

/// f32 dot product, vectorized for the widest SIMD this CPU has.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, the features `dot_avx2` is compiled for.
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

/// Eight independent accumulators, so the compiler keeps them in one SIMD register.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u8_array(bytes: &[u8], shape: &[usize]) -> Array {
        let mut a = Array::zeros(DType::U8, shape).unwrap();
        a.host_bytes_mut().unwrap().copy_from_slice(bytes);
        a
    }

    #[test]
    fn e8m0_and_e2m1() {
        assert_eq!(e8m0(127), 1.0);
        assert_eq!(e8m0(130), 8.0);
        assert_eq!(e8m0(1), 2f32.powi(-126));
        assert_eq!(e8m0(0), 2f32.powi(-127));
        let codes = u8_array(&[0x71; 16], &[1, 16]);
        let scales = u8_array(&[128], &[1, 1]);
        let w = Array::quantized(&codes, DType::Mxfp4, &[1, 32], scales, None).unwrap();
        let v = w.to_f32_vec().unwrap();
        // Low nibble 1 -> 0.5, high nibble 7 -> 6, times 2^(128-127).
        assert_eq!(&v[..4], &[1.0, 12.0, 1.0, 12.0]);
    }

    #[test]
    fn affine_bit_stream_for_every_width() {
        for bits in [2u8, 3, 4, 5, 6, 8] {
            let group = 32usize;
            let values: Vec<u32> = (0..group as u32)
                .map(|i| (i * 7 + 3) % (1 << bits))
                .collect();
            let mut packed = vec![0u8; group * bits as usize / 8];
            for (i, &q) in values.iter().enumerate() {
                for b in 0..bits as usize {
                    if q >> b & 1 == 1 {
                        let bit = i * bits as usize + b;
                        packed[bit / 8] |= 1 << (bit % 8);
                    }
                }
            }
            let mut out = vec![0.0; group];
            decode_affine(&packed, bits, 2.0, -1.0, &mut out);
            let want: Vec<f32> = values.iter().map(|&q| 2.0 * q as f32 - 1.0).collect();
            assert_eq!(out, want, "bits {bits}");
        }
    }

    #[test]
    fn matmul_matches_dequantized_dot() {
        let (n, k, tokens) = (5, 64, 3);
        let codes: Vec<u8> = (0..n * k / 2).map(|i| (i * 37 % 251) as u8).collect();
        let codes = u8_array(&codes, &[n, k / 2]);
        let scales = Array::from_f32(
            &[0.5, 0.25, 1.0, 2.0, 0.1, 0.3, 0.7, 1.5, 0.9, 0.2],
            &[n, 2],
        )
        .unwrap();
        let biases = Array::from_f32(
            &[-1.0, 0.5, 0.0, 1.0, -0.2, 0.3, 0.1, -0.4, 0.6, 0.05],
            &[n, 2],
        )
        .unwrap();
        let dtype = DType::Affine { bits: 4, group: 32 };
        let w = Array::quantized(&codes, dtype, &[n, k], scales, Some(biases)).unwrap();
        let dense = w.to_f32_vec().unwrap();
        let x: Vec<f32> = (0..tokens * k)
            .map(|i| ((i * 13) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let mut out = vec![0.0; tokens * n];
        matmul(&GroupedView::of(&w).unwrap(), &x, &mut out);
        for t in 0..tokens {
            for r in 0..n {
                let want: f32 = (0..k).map(|i| dense[r * k + i] * x[t * k + i]).sum();
                assert!((out[t * n + r] - want).abs() < 1e-4, "t {t} r {r}");
            }
        }
    }
}
