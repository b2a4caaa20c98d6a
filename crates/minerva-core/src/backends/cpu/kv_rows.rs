//! Rows of a paged KV cache in host memory: storing a row of f32 values in each
//! [`KvDType`](crate::KvDType) (quantizing the integer ones) and reading one back, as attention uses it.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// A pool's codes and parameters, read-only, by storage type.
#[derive(Clone, Copy)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Int8 { codes: &'a [u8], params: &'a [f16] },
    Int4 { codes: &'a [u8], params: &'a [f16] },
}

/// The same, writable.
pub enum KvRowsMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [f16]),
    Int8 {
        codes: &'a mut [u8],
        params: &'a mut [f16],
    },
    Int4 {
        codes: &'a mut [u8],
        params: &'a mut [f16],
    },
}

impl KvRows<'_> {
    /// Row `row` (of `out.len()` values), as attention multiplies it: integer codes are
    /// dequantized and rounded to f16, the precision the GPU's tensor cores take them in.
    pub fn widen(&self, row: usize, out: &mut [f32]) {
        let d = out.len();
        match *self {
            KvRows::F32(s) => out.copy_from_slice(&s[row * d..][..d]),
            KvRows::F16(s) => s[row * d..][..d].convert_to_f32_slice(out),
            KvRows::Int8 { codes, params } => {
                let scale = params[row].to_f32();
                for (o, &q) in out.iter_mut().zip(&codes[row * d..][..d]) {
                    *o = round_f16(f32::from(q as i8) * scale);
                }
            }
            KvRows::Int4 { codes, params } => {
                let (scale, min) = (params[2 * row].to_f32(), params[2 * row + 1].to_f32());
                let bytes = &codes[row * d.div_ceil(2)..][..d.div_ceil(2)];
                for (i, o) in out.iter_mut().enumerate() {
                    let q = (bytes[i / 2] >> (4 * (i % 2))) & 15;
                    *o = round_f16(f32::from(q) * scale + min);
                }
            }
        }
    }
}

impl KvRowsMut<'_> {
    /// Stores `x` as row `row`.
    pub fn store(&mut self, row: usize, x: &[f32]) {
        let d = x.len();
        match self {
            KvRowsMut::F32(s) => s[row * d..][..d].copy_from_slice(x),
            KvRowsMut::F16(s) => s[row * d..][..d].convert_from_f32_slice(x),
            KvRowsMut::Int8 { codes, params } => {
                let (scale, codes_of) = int8_codes(x);
                params[row] = scale;
                for (c, q) in codes[row * d..][..d].iter_mut().zip(codes_of) {
                    *c = q as u8;
                }
            }
            KvRowsMut::Int4 { codes, params } => {
                let (scale, min, codes_of) = int4_codes(x);
                params[2 * row] = scale;
                params[2 * row + 1] = min;
                let bytes = &mut codes[row * d.div_ceil(2)..][..d.div_ceil(2)];
                bytes.fill(0);
                for (i, q) in codes_of.enumerate() {
                    bytes[i / 2] |= q << (4 * (i % 2));
                }
            }
        }
    }
}

fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Symmetric 8-bit codes of `x`: the f16 scale `max |x| / 127`, then each value divided by
/// that (rounded) scale, rounded half to even. The GPU kernels follow the same steps, so
/// both write the same bytes.
fn int8_codes(x: &[f32]) -> (f16, impl Iterator<Item = i8> + '_) {
    let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = f16::from_f32(absmax / 127.0);
    let s = scale.to_f32();
    let codes = x.iter().map(move |&v| {
        if s == 0.0 {
            0
        } else {
            (v / s).round_ties_even().clamp(-127.0, 127.0) as i8
        }
    });
    (scale, codes)
}

/// Asymmetric 4-bit codes of `x`: f16 scale `(max - min) / 15` and f16 minimum, then
/// `(v - min) / scale` rounded half to even into 0..=15.
fn int4_codes(x: &[f32]) -> (f16, f16, impl Iterator<Item = u8> + '_) {
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
    let scale = f16::from_f32((hi - lo) / 15.0);
    let min = f16::from_f32(lo);
    let (s, m) = (scale.to_f32(), min.to_f32());
    let codes = x.iter().map(move |&v| {
        if s == 0.0 {
            0
        } else {
            ((v - m) / s).round_ties_even().clamp(0.0, 15.0) as u8
        }
    });
    (scale, min, codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(rows: &mut KvRowsMut<'_>, x: &[f32]) {
        rows.store(1, x);
    }

    #[test]
    fn integer_rows_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 20.0) * 0.173)
            .collect();
        let (lo, hi) = (-20.0 * 0.173f32, 43.0 * 0.173f32);
        let mut codes = vec![0u8; 2 * 64];
        let mut params = vec![f16::ZERO; 2 * 2];
        let mut out = vec![0.0f32; 64];
        round_trip(
            &mut KvRowsMut::Int8 {
                codes: &mut codes,
                params: &mut params,
            },
            &x,
        );
        KvRows::Int8 {
            codes: &codes,
            params: &params,
        }
        .widen(1, &mut out);
        let step = hi.abs().max(lo.abs()) / 127.0;
        for (a, b) in x.iter().zip(&out) {
            assert!(
                (a - b).abs() <= 0.5 * step * 1.01 + b.abs() / 1024.0,
                "{a} {b}"
            );
        }
        round_trip(
            &mut KvRowsMut::Int4 {
                codes: &mut codes,
                params: &mut params,
            },
            &x,
        );
        KvRows::Int4 {
            codes: &codes,
            params: &params,
        }
        .widen(1, &mut out);
        let step = (hi - lo) / 15.0;
        for (a, b) in x.iter().zip(&out) {
            assert!(
                (a - b).abs() <= 0.5 * step * 1.01 + b.abs() / 1024.0,
                "{a} {b}"
            );
        }
        // The extremes are exact up to the f16 scale: the largest magnitude keeps its sign.
        assert!(out.iter().any(|&v| v < 0.0));
    }

    #[test]
    fn a_zero_row_stays_zero() {
        let mut codes = vec![7u8; 8];
        let mut params = vec![f16::ONE; 2];
        let mut rows = KvRowsMut::Int4 {
            codes: &mut codes,
            params: &mut params,
        };
        rows.store(0, &[0.0; 16]);
        let mut out = [1.0f32; 16];
        KvRows::Int4 {
            codes: &codes,
            params: &params,
        }
        .widen(0, &mut out);
        assert_eq!(out, [0.0; 16]);
    }
}
