//! GPU micro-benchmark of decode's hot kernels on gpt-oss-20b's shapes (MLX MXFP4-Q8
//! layout): the device's copy bandwidth, then each weight product at batch 1, launched
//! back to back so the GPU never waits for the host. Prints µs per launch, GB/s over the
//! weight bytes read, and the fraction of the copy bandwidth. Launches cycle through enough
//! copies of each weight (and sets of experts) that every launch reads from memory, not from
//! the 50 MB L2, as decode does: each layer's weights are read once per token.
//!
//!     cargo run --release -p minerva-core --example cuda_kernels [device]

use minerva_core::backends::cuda;
use minerva_core::{ops, Array, DType, Device, Result};

const REPS: usize = 50;

/// Bytes of weights cycled through per product: well past the L2 cache.
const COLD_BYTES: usize = 256 << 20;

/// Deterministic noise (xorshift) for codes and activations.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }
}

/// A random `[.., k]` weight of `dtype` (MLX affine 8-bit g64 with bf16 parameters, or
/// MXFP4 with e8m0 scales near 1), on `device`.
fn weight(noise: &mut Noise, dtype: DType, shape: &[usize], device: Device) -> Result<Array> {
    let values: usize = shape.iter().product();
    let mut codes = Array::zeros(DType::U8, &[dtype.bytes_for(values).unwrap()])?;
    let random = noise.bytes(codes.nbytes());
    codes.host_bytes_mut()?.copy_from_slice(&random);
    let mut groups = shape.to_vec();
    *groups.last_mut().unwrap() /= dtype.block_len();
    let group_count: usize = groups.iter().product();
    let (scales, biases) = match dtype {
        DType::Mxfp4 => {
            let mut s = Array::zeros(DType::U8, &groups)?;
            let e: Vec<u8> = (0..group_count)
                .map(|_| 120 + (noise.next() % 8) as u8)
                .collect();
            s.host_bytes_mut()?.copy_from_slice(&e);
            (s, None)
        }
        _ => {
            let param = |noise: &mut Noise| -> Result<Array> {
                let mut p = Array::zeros(DType::BF16, &groups)?;
                let bits: Vec<u8> = noise
                    .floats(group_count)
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(x * 0.01).to_le_bytes())
                    .collect();
                p.host_bytes_mut()?.copy_from_slice(&bits);
                Ok(p)
            };
            (param(noise)?, Some(param(noise)?))
        }
    };
    Array::quantized(&codes, dtype, shape, scales, biases)?.to_device(device)
}

fn main() -> Result<()> {
    let ordinal: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let gpu = cuda::device(ordinal)?;
    let device = Device::Cuda(ordinal);
    let bandwidth = gpu.measure_bandwidth(1 << 30, 10)?;
    println!("{} ({} SMs)", gpu.name(), gpu.multiprocessors());
    println!("copy bandwidth: {bandwidth:.0} GB/s (read + write)");

    let mut noise = Noise(0x9e3779b97f4a7c15);
    let q8 = DType::Affine { bits: 8, group: 64 };
    let hidden = 2880;
    let x = Array::from_f32(&noise.floats(4096), &[1, 4096])?.to_device(device)?;
    let x_hidden = Array::from_f32(&noise.floats(hidden), &[1, hidden])?.to_device(device)?;
    let x_slots = Array::from_f32(&noise.floats(4 * hidden), &[1, 4, hidden])?.to_device(device)?;
    // 8 disjoint sets of 4 of the 32 experts, used in turn.
    let id_sets = (0..8)
        .map(|set| {
            let ids: Vec<i32> = (0..4).map(|j| (set * 4 + j) * 5 % 32).collect();
            Array::from_i32(&ids, &[1, 4])?.to_device(device)
        })
        .collect::<Result<Vec<_>>>()?;

    println!(
        "{:<34} {:>9} {:>9} {:>8}",
        "product", "us", "GB/s", "of copy"
    );
    // `run(i)` queues launch i.
    let report = |name: &str, bytes: usize, run: &dyn Fn(usize) -> Result<Array>| -> Result<()> {
        run(0)?;
        let ms = gpu.time_ms(|| {
            for i in 0..REPS {
                run(i)?;
            }
            Ok(())
        })?;
        let us = 1e3 * ms / REPS as f64;
        let gbs = bytes as f64 / (us * 1e-6) / 1e9;
        println!(
            "{name:<34} {us:>9.1} {gbs:>9.0} {:>7.0}%",
            100.0 * gbs / bandwidth
        );
        Ok(())
    };
    let bytes_of = |w: &Array, rows: usize| -> usize {
        let per_row = w.nbytes() / w.shape()[..w.shape().len() - 1].iter().product::<usize>();
        let q = w.quant().expect("quantized");
        let params = q.scales.nbytes() + q.biases.as_ref().map_or(0, Array::nbytes);
        let all_rows: usize = w.shape()[..w.shape().len() - 1].iter().product();
        rows * (per_row + params / all_rows)
    };
    for (name, n, k) in [
        ("q_proj 4096x2880 q8", 4096, hidden),
        ("k_proj 512x2880 q8", 512, hidden),
        ("o_proj 2880x4096 q8", hidden, 4096),
        ("router 32x2880 q8", 32, hidden),
        ("lm_head 201088x2880 q8", 201088, hidden),
    ] {
        let first = weight(&mut noise, q8, &[n, k], device)?;
        let copies = COLD_BYTES.div_ceil(first.nbytes()).min(REPS);
        let mut ws = vec![first];
        for _ in 1..copies {
            ws.push(weight(&mut noise, q8, &[n, k], device)?);
        }
        let input = if k == hidden { &x_hidden } else { &x };
        report(name, bytes_of(&ws[0], n), &|i| {
            ops::linear(input, &ws[i % ws.len()], None)
        })?;
    }
    let experts = weight(&mut noise, DType::Mxfp4, &[32, hidden, hidden], device)?;
    let touched = bytes_of(&experts, 4 * hidden);
    report("experts gate (4 of 32) mxfp4", touched, &|i| {
        ops::gather_linear(&x_hidden, &experts, None, &id_sets[i % id_sets.len()])
    })?;
    report("experts down (4 of 32) mxfp4", touched, &|i| {
        ops::gather_linear(&x_slots, &experts, None, &id_sets[i % id_sets.len()])
    })?;
    Ok(())
}
