//! GPU micro-benchmark of decode's hot kernels on gpt-oss-20b's shapes (MLX MXFP4-Q8
//! layout): the device's copy bandwidth, then each weight product at batch 1, launched
//! back to back so the GPU never waits for the host. Prints µs per launch, GB/s over the
//! weight bytes read, and the fraction of the copy bandwidth. Launches cycle through enough
//! copies of each weight (and sets of experts) that every launch reads from memory, not from
//! the 50 MB L2, as decode does: each layer's weights are read once per token.
//! Then a decode batch of 10 tokens: the whole mixture of experts and two q8 products.
//!
//!     cargo run --release -p minerva-core --example cuda_kernels [device]

use minerva_core::backends::cuda;
use minerva_core::ops::{ExpertGateUp, SwigluExperts};
use minerva_core::{ops, Array, DType, Device, Result};

const REPS: usize = 50;

/// Bytes of weights cycled through per product: well past the L2 cache.
const COLD_BYTES: usize = 256 << 20;

/// Times launches `run(i)` reading `bytes` of weights each, and prints a line `name`.
type Report<'a> = dyn Fn(&str, usize, &dyn Fn(usize) -> Result<Array>) -> Result<()> + 'a;

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
    batch_products(&mut noise, device, &report, &bytes_of)
}

/// A decode batch: the whole mixture of experts (gate/up with SwiGLU, down, mix) of
/// gpt-oss-20b's shapes for 1 and `BATCH` tokens, each token choosing 4 of the 32 experts
/// (the draws cycle, so launches read from memory), and the q8 products of `BATCH` tokens.
/// Bytes count each expert chosen by any of the tokens once.
fn batch_products(
    noise: &mut Noise,
    device: Device,
    report: &Report,
    bytes_of: &dyn Fn(&Array, usize) -> usize,
) -> Result<()> {
    const BATCH: usize = 10;
    let (hidden, experts) = (2880, 32);
    let gate_up = weight(noise, DType::Mxfp4, &[experts, 2 * hidden, hidden], device)?;
    let down = weight(noise, DType::Mxfp4, &[experts, hidden, hidden], device)?;
    let biases = [
        Array::from_f32(&noise.floats(experts * 2 * hidden), &[experts, 2 * hidden])?
            .to_device(device)?,
        Array::from_f32(&noise.floats(experts * hidden), &[experts, hidden])?.to_device(device)?,
    ];
    let layout = ExpertGateUp::Interleaved {
        weight: gate_up.clone(),
        bias: biases[0].clone(),
    };
    let stack = SwigluExperts {
        gate_up: &layout,
        down: &down,
        down_bias: &biases[1],
        alpha: 1.702,
        limit: 7.0,
    };
    let per_expert = bytes_of(&gate_up, 2 * hidden) + bytes_of(&down, hidden);
    for tokens in [1, BATCH] {
        let x = Array::from_f32(&noise.floats(tokens * hidden), &[tokens, hidden])?
            .to_device(device)?;
        let mix = Array::from_f32(&vec![0.25; tokens * 4], &[tokens, 4])?.to_device(device)?;
        let mut draws = Vec::new();
        let mut touched = 0;
        for _ in 0..8 {
            let mut ids = Vec::new();
            for _ in 0..tokens {
                let mut chosen: Vec<i32> = Vec::new();
                while chosen.len() < 4 {
                    let e = (noise.next() % experts as u64) as i32;
                    if !chosen.contains(&e) {
                        chosen.push(e);
                    }
                }
                ids.extend(chosen);
            }
            let mut distinct = ids.clone();
            distinct.sort_unstable();
            distinct.dedup();
            touched += distinct.len() * per_expert;
            draws.push(Array::from_i32(&ids, &[tokens, 4])?.to_device(device)?);
        }
        let name = format!("mixture of experts x{tokens} mxfp4");
        report(&name, touched / draws.len(), &|i| {
            ops::mixture_of_experts(&x, &stack, &draws[i % draws.len()], &mix)
        })?;
    }
    let x = Array::from_f32(&noise.floats(BATCH * hidden), &[BATCH, hidden])?.to_device(device)?;
    let q8 = DType::Affine { bits: 8, group: 64 };
    for (name, n) in [
        ("q_proj 4096x2880 q8", 4096),
        ("lm_head 201088x2880 q8", 201088),
    ] {
        let copies = if n > 100_000 { 1 } else { 8 };
        let ws = (0..copies)
            .map(|_| weight(noise, q8, &[n, hidden], device))
            .collect::<Result<Vec<_>>>()?;
        report(&format!("{name} x{BATCH}"), bytes_of(&ws[0], n), &|i| {
            ops::linear(&x, &ws[i % ws.len()], None)
        })?;
    }
    Ok(())
}
