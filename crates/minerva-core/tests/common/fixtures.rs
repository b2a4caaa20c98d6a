//! Inputs and comparisons the GPU backends' op tests share: deterministic random arrays,
//! weights in each dense and GGUF format, and the relative error against the CPU.

use minerva_core::{Array, DType};

/// xorshift64*: deterministic inputs without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }

    pub fn array(&mut self, shape: &[usize]) -> Array {
        Array::from_f32(&self.vec(shape.iter().product()), shape).unwrap()
    }
}

/// max |gpu - cpu| / max |cpu| (infinite where either has a NaN).
pub fn relative_error(gpu: &Array, cpu: &Array) -> f32 {
    assert_eq!(gpu.shape(), cpu.shape());
    let (g, c) = (gpu.to_f32_vec().unwrap(), cpu.to_f32_vec().unwrap());
    let scale = c.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    let diff = g.iter().zip(&c).fold(0.0f32, |m, (a, b)| {
        // NaN anywhere fails the comparison below.
        if a.is_nan() || b.is_nan() {
            f32::INFINITY
        } else {
            m.max((a - b).abs())
        }
    });
    diff / scale
}

/// `w`'s values as an f32 array.
pub fn dequantized(w: &Array) -> Array {
    Array::from_f32(&w.to_f32_vec().unwrap(), w.shape()).unwrap()
}

/// A dense weight of `dtype` from f32 values.
pub fn dense(values: &[f32], shape: &[usize], dtype: DType) -> Array {
    let mut a = Array::zeros(dtype, shape).unwrap();
    let bytes = a.host_bytes_mut().unwrap();
    match dtype {
        DType::F32 => bytes.copy_from_slice(bytemuck::cast_slice(values)),
        DType::F16 => values
            .iter()
            .zip(bytes.chunks_exact_mut(2))
            .for_each(|(v, b)| b.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
        DType::BF16 => values
            .iter()
            .zip(bytes.chunks_exact_mut(2))
            .for_each(|(v, b)| b.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes())),
        other => panic!("dense {other}"),
    }
    a
}

/// Random GGUF blocks: a small positive f16 scale (and min), random codes.
pub fn gguf(rng: &mut Rng, dtype: DType, shape: &[usize]) -> Array {
    let mut a = Array::zeros(dtype, shape).unwrap();
    let block = dtype.block_bytes();
    for b in a.host_bytes_mut().unwrap().chunks_exact_mut(block) {
        for byte in b.iter_mut() {
            *byte = rng.next() as u8;
        }
        let d = half::f16::from_f32(0.01 + 0.02 * rng.uniform().abs());
        b[..2].copy_from_slice(&d.to_le_bytes());
        if dtype == DType::Q4_1 {
            let m = half::f16::from_f32(0.1 * rng.uniform());
            b[2..4].copy_from_slice(&m.to_le_bytes());
        }
    }
    a
}
