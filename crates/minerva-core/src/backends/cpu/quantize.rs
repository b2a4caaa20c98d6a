//! MLX group quantization (`mx.quantize` of mlx 0.32.4 on CPU), bit for bit: the inverse of
//! [`super::grouped`]. The rules, verified against mlx on the fixture and on thousands of
//! edge-case groups, are in `tests/fixtures/mlx-quant/FORMAT.md`; this is a port of the pure
//! numpy quantizer in `scripts/fixtures/make_mlx_quant_fixtures.py` that checks them.

use half::{bf16, f16};
use rayon::prelude::*;

use super::grouped::E2M1;
use crate::{DType, Error, Result};

/// The dense element types a weight can be quantized from (mlx rounds some intermediates to
/// the input type, and stores affine scales and biases in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    F32,
    F16,
    BF16,
}

impl Source {
    pub fn of(dtype: DType) -> Result<Source> {
        match dtype {
            DType::F32 => Ok(Source::F32),
            DType::F16 => Ok(Source::F16),
            DType::BF16 => Ok(Source::BF16),
            other => Err(Error::Unsupported(format!("quantizing {other} values"))),
        }
    }

    fn size(self) -> usize {
        match self {
            Source::F32 => 4,
            Source::F16 | Source::BF16 => 2,
        }
    }

    /// Little-endian values (possibly unaligned) into `out`.
    fn decode(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            Source::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Source::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Source::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
        }
    }

    /// `x` rounded to this type (nearest, ties to even), as f32.
    fn round(self, x: f32) -> f32 {
        match self {
            Source::F32 => x,
            Source::F16 => f16::from_f32(x).to_f32(),
            Source::BF16 => bf16::from_f32(x).to_f32(),
        }
    }

    /// `x` stored in this type, little-endian.
    fn write(self, x: f32, out: &mut [u8]) {
        match self {
            Source::F32 => out.copy_from_slice(&x.to_le_bytes()),
            Source::F16 => out.copy_from_slice(&f16::from_f32(x).to_le_bytes()),
            Source::BF16 => out.copy_from_slice(&bf16::from_f32(x).to_le_bytes()),
        }
    }
}

/// The packed output of [`quantize`]: codes (one little-endian bit stream per row), scales
/// (the source type for affine, e8m0 bytes for MXFP4) and, for affine, biases.
pub struct Quantized {
    pub codes: Vec<u8>,
    pub scales: Vec<u8>,
    pub biases: Option<Vec<u8>>,
}

/// One row's source values, and its codes, scales and (affine) biases to fill.
type Row<'a> = (
    ((&'a [u8], &'a mut [u8]), &'a mut [u8]),
    Option<&'a mut [u8]>,
);

/// Quantizes `rows` rows of `k` values of `source` type (`bytes`, little-endian) as `dtype`
/// (MLX affine or MXFP4), exactly as `mx.quantize` does.
pub fn quantize(bytes: &[u8], source: Source, k: usize, dtype: DType) -> Result<Quantized> {
    check(dtype, k)?;
    let rows = bytes.len() / (k * source.size()).max(1);
    if rows * k * source.size() != bytes.len() {
        return Err(Error::Shape(format!(
            "{} bytes are not whole rows of {k} {source:?} values",
            bytes.len()
        )));
    }
    let group = dtype.block_len();
    let groups = k / group;
    let row_codes = groups * dtype.block_bytes();
    let param_size = match dtype {
        DType::Mxfp4 => 1,
        _ => source.size(),
    };
    let mut codes = vec![0u8; rows * row_codes];
    let mut scales = vec![0u8; rows * groups * param_size];
    let mut biases = match dtype {
        DType::Mxfp4 => None,
        _ => Some(vec![0u8; rows * groups * param_size]),
    };
    let row_bytes = k * source.size();
    let quantize_row = |(((src, codes), scales), biases): Row<'_>| {
        let mut values = vec![0.0f32; k];
        source.decode(src, &mut values);
        let groups = values
            .chunks_exact(group)
            .zip(codes.chunks_exact_mut(dtype.block_bytes()))
            .enumerate();
        match (dtype, biases) {
            (DType::Affine { bits, .. }, Some(biases)) => {
                for (g, (vals, packed)) in groups {
                    let (scale, bias) = affine_group(vals, bits, packed);
                    let at = g * param_size..(g + 1) * param_size;
                    source.write(scale, &mut scales[at.clone()]);
                    source.write(bias, &mut biases[at]);
                }
            }
            _ => {
                for (g, (vals, packed)) in groups {
                    scales[g] = mxfp4_group(vals, source, packed);
                }
            }
        }
    };
    let parts = bytes
        .par_chunks(row_bytes)
        .zip(codes.par_chunks_mut(row_codes))
        .zip(scales.par_chunks_mut(groups * param_size));
    match biases.as_mut() {
        Some(b) => parts
            .zip(b.par_chunks_mut(groups * param_size).map(Some))
            .for_each(quantize_row),
        None => parts.map(|p| (p, None)).for_each(quantize_row),
    }
    Ok(Quantized {
        codes,
        scales,
        biases,
    })
}

/// The bit widths and group sizes mlx quantizes to.
fn check(dtype: DType, k: usize) -> Result<()> {
    match dtype {
        DType::Affine { bits, group }
            if matches!(bits, 2 | 3 | 4 | 5 | 6 | 8) && matches!(group, 32 | 64 | 128) => {}
        DType::Mxfp4 => {}
        other => return Err(Error::Unsupported(format!("quantizing to {other}"))),
    }
    if k == 0 || !k.is_multiple_of(dtype.block_len()) {
        return Err(Error::Shape(format!(
            "{dtype}: rows of {k} values are not whole groups of {}",
            dtype.block_len()
        )));
    }
    Ok(())
}

/// Appends `bits`-bit codes to one little-endian bit stream (least significant bit first).
fn pack(codes: impl Iterator<Item = u32>, bits: u8, out: &mut [u8]) {
    let (mut acc, mut filled, mut at) = (0u64, 0u32, 0usize);
    for q in codes {
        acc |= (q as u64) << filled;
        filled += bits as u32;
        while filled >= 8 {
            out[at] = acc as u8;
            (acc, filled, at) = (acc >> 8, filled - 8, at + 1);
        }
    }
}

/// One affine group, all in f32: the edge of larger magnitude gets code 0 and is exact (so
/// the scale is negative when that edge is the maximum), and the scale is refitted so that
/// the edge is a whole number of steps from zero. Returns (scale, bias) in f32.
fn affine_group(vals: &[f32], bits: u8, packed: &mut [u8]) -> (f32, f32) {
    let n_bins = ((1u32 << bits) - 1) as f32;
    let (mn, mx) = vals
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let spread = ((mx - mn) / n_bins).max(1e-7);
    let (mut scale, edge) = if mn.abs() > mx.abs() {
        (spread, mn)
    } else {
        (-spread, mx)
    };
    let q0 = (edge / scale).round_ties_even();
    let bias = if q0 != 0.0 {
        scale = edge / q0;
        edge
    } else {
        0.0
    };
    let codes = vals
        .iter()
        .map(|&w| ((w - bias) / scale).round_ties_even().clamp(0.0, n_bins) as u32);
    pack(codes, bits, packed);
    (scale, bias)
}

/// One MXFP4 group of 32: the e8m0 exponent is ceil(log2(amax / 6)), so no value clips, and
/// each value takes the nearest e2m1 code (first in table order on ties: +0 before -0, the
/// smaller magnitude first). Intermediates are rounded to the source type, as mlx computes
/// in it. Returns the scale byte.
fn mxfp4_group(vals: &[f32], source: Source, packed: &mut [u8]) -> u8 {
    let amax = vals.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let e = ceil_log2(source.round(amax / 6.0));
    let step = pow2(e);
    let codes = vals.iter().map(|&w| {
        let wq = source.round(w / step);
        let mut best = (0u32, f32::INFINITY);
        for (c, &v) in E2M1.iter().enumerate() {
            let d = source.round(wq - v).abs();
            if d < best.1 {
                best = (c as u32, d);
            }
        }
        best.0
    });
    pack(codes, 4, packed);
    // mlx casts the exponent to u8 the C way (wrapping), like numpy's astype.
    (e + 127) as u8
}

/// 2^e exactly (subnormal below 2^-126, as numpy's `ldexp`).
fn pow2(e: i32) -> f32 {
    match e {
        -126..=127 => f32::from_bits(((e + 127) as u32) << 23),
        -149..=-127 => f32::from_bits(1 << (e + 149)),
        _ if e > 0 => f32::INFINITY,
        _ => 0.0,
    }
}

/// ceil(log2(x)) exactly for finite x > 0 (from the float's bits, not a rounded log2); 0 for 0.
fn ceil_log2(x: f32) -> i32 {
    if x <= 0.0 || !x.is_finite() {
        return 0;
    }
    let bits = x.to_bits();
    let (exp, mantissa) = ((bits >> 23) & 0xFF, bits & 0x7F_FFFF);
    let (floor, exact) = if exp == 0 {
        // Subnormal: x = mantissa * 2^-149.
        (
            -149 + 31 - mantissa.leading_zeros() as i32,
            mantissa.is_power_of_two(),
        )
    } else {
        (exp as i32 - 127, mantissa == 0)
    };
    floor + i32::from(!exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_log2_is_exact() {
        assert_eq!(ceil_log2(1.0), 0);
        assert_eq!(ceil_log2(1.0000001), 1);
        assert_eq!(ceil_log2(0.75), 0);
        assert_eq!(ceil_log2(0.5), -1);
        assert_eq!(ceil_log2(f32::from_bits(1)), -149);
        assert_eq!(ceil_log2(f32::from_bits(3)), -147);
        assert_eq!(ceil_log2(0.0), 0);
    }

    #[test]
    fn pack_straddles_bytes() {
        let mut out = [0u8; 3];
        pack([5u32, 6, 7, 1, 2, 3, 4, 0].into_iter(), 3, &mut out);
        let stream = u32::from_le_bytes([out[0], out[1], out[2], 0]);
        let codes: Vec<u32> = (0..8).map(|i| (stream >> (3 * i)) & 7).collect();
        assert_eq!(codes, [5, 6, 7, 1, 2, 3, 4, 0]);
    }

    #[test]
    fn zero_group_gets_mlx_negative_epsilon_scale() {
        let zeros = [0u8; 32 * 4];
        let q = quantize(
            &zeros,
            Source::F32,
            32,
            DType::Affine { bits: 4, group: 32 },
        )
        .unwrap();
        assert_eq!(q.scales, 0xb3d6_bf95u32.to_le_bytes());
        assert_eq!(q.biases.unwrap(), [0; 4]);
        assert!(q.codes.iter().all(|&c| c == 0));
    }

    #[test]
    fn rejects_what_mlx_cannot_quantize() {
        let bytes = [0u8; 48 * 4];
        assert!(quantize(&bytes, Source::F32, 48, DType::Mxfp4).is_err());
        let seven = DType::Affine { bits: 7, group: 32 };
        assert!(quantize(&bytes[..128], Source::F32, 32, seven).is_err());
        assert!(quantize(&bytes[..130], Source::F32, 32, DType::Mxfp4).is_err());
        assert!(Source::of(DType::U8).is_err());
    }
}
