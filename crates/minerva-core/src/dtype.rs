//! Element types of an `Array`, dense and block-quantized.

use std::fmt;

/// The element type of an [`crate::Array`].
///
/// Quantized types store values in fixed-size blocks (a block of `block_len()` values takes
/// `block_bytes()` bytes); their arrays are addressed by block, never by single element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    U8,
    U32,
    /// GGUF Q4_0: blocks of 32, f16 scale `d`, 16 bytes of 4-bit values; x = d * (q - 8).
    Q4_0,
    /// GGUF Q4_1: blocks of 32, f16 scale `d` and min `m`, 16 bytes of 4-bit values; x = d * q + m.
    Q4_1,
    /// GGUF Q8_0: blocks of 32, f16 scale `d`, 32 signed bytes; x = d * q.
    Q8_0,
    /// MLX affine quantization: unsigned `bits`-bit codes packed little-endian into u32
    /// words, and per `group` consecutive values a scale and a bias held beside the codes
    /// (see [`crate::Array::quant`]); x = scale * q + bias.
    Affine {
        bits: u8,
        group: u16,
    },
    /// MXFP4 (OCP microscaling FP4), as MLX and OpenAI store it: e2m1 codes two per byte, low
    /// nibble first, and per 32 values an e8m0 scale byte held beside the codes;
    /// x = 2^(s - 127) * e2m1(q).
    Mxfp4,
}

impl DType {
    /// Values per block (1 for dense types).
    pub const fn block_len(self) -> usize {
        match self {
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::Mxfp4 => 32,
            DType::Affine { group, .. } => group as usize,
            _ => 1,
        }
    }

    /// Bytes per block (the element size for dense types).
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q8_0 => 34,
            // Codes only: the scales (and biases) are separate arrays.
            DType::Affine { bits, group } => group as usize * bits as usize / 8,
            DType::Mxfp4 => 16,
        }
    }

    /// Whether the per-group parameters live beside the codes rather than inside the blocks.
    pub const fn has_group_params(self) -> bool {
        matches!(self, DType::Affine { .. } | DType::Mxfp4)
    }

    pub const fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// Bytes taken by `n` values, or `None` when `n` is not a whole number of blocks.
    pub const fn bytes_for(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_len()) {
            return None;
        }
        (n / self.block_len()).checked_mul(self.block_bytes())
    }

    /// The short name used in messages and listings (`f16`, `q4_0`, `affine8g64`, `mxfp4`).
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q8_0 => "q8_0",
            DType::Mxfp4 => "mxfp4",
            DType::Affine { bits, group } => {
                return std::borrow::Cow::Owned(format!("affine{bits}g{group}"))
            }
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_match_ggml() {
        assert_eq!(DType::Q4_0.bytes_for(64), Some(36));
        assert_eq!(DType::Q4_1.bytes_for(32), Some(20));
        assert_eq!(DType::Q8_0.bytes_for(32), Some(34));
        assert_eq!(DType::Q8_0.bytes_for(33), None);
        assert_eq!(DType::F16.bytes_for(3), Some(6));
        let a3 = DType::Affine { bits: 3, group: 32 };
        assert_eq!(a3.bytes_for(64), Some(24));
        assert_eq!(DType::Mxfp4.bytes_for(64), Some(32));
        assert_eq!(a3.to_string(), "affine3g32");
    }
}
