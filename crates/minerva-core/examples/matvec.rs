//! Micro-benchmark of the quantized matrix-vector product (decode's hot loop), for a weight
//! that fits in cache and one that streams from memory: prints ns per block and GB/s.
//!
//!     cargo run --release -p minerva-core --example matvec [threads]

use std::time::Instant;

use minerva_core::backends::cpu::quant;
use minerva_core::DType;

fn main() {
    if let Some(threads) = std::env::args().nth(1).and_then(|t| t.parse().ok()) {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .unwrap();
    }
    // Run inside the pool, as the engine does, so each call is not a cross-thread hand-off.
    rayon::scope(|_| run());
}

fn run() {
    let k = 576;
    let x: Vec<f32> = (0..k)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    for dtype in [DType::Q4_1, DType::Q8_0] {
        for (label, n) in [("in cache", 1536), ("streaming", 96 * 1536)] {
            let row_bytes = dtype.bytes_for(k).unwrap();
            // Random-looking bytes with small f16 scales (0x2000 ≈ 0.0078).
            let mut w: Vec<u8> = (0..n * row_bytes)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            for block in w.chunks_exact_mut(dtype.block_bytes()) {
                block[..2].copy_from_slice(&0x2000u16.to_le_bytes());
                if dtype == DType::Q4_1 {
                    block[2..4].copy_from_slice(&0xa000u16.to_le_bytes());
                }
            }
            let mut out = vec![0.0f32; n];
            let reps = (200_000_000 / w.len()).max(3);
            quant::matmul(dtype, &w, n, k, &x, &mut out);
            let t = Instant::now();
            for _ in 0..reps {
                quant::matmul(dtype, &w, n, k, &x, &mut out);
            }
            let secs = t.elapsed().as_secs_f64() / reps as f64;
            let blocks = (n * k / 32) as f64;
            println!(
                "{dtype} {label:<9} [{n} x {k}]: {:.2} ns/block, {:.1} GB/s",
                secs * 1e9 / blocks,
                w.len() as f64 / secs / 1e9
            );
        }
    }
}
