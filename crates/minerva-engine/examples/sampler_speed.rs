//! Time per `Sampler::sample` call on a vocab-sized logit vector, per sampling setting.
//!     cargo run --release -p minerva-engine --example sampler_speed [vocab]
use std::time::Instant;

use minerva_engine::{Sampler, SamplerConfig};

fn main() {
    let vocab: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(49152);
    // A peaked, language-model-like distribution: a few likely tokens over a long tail.
    let mut state = 12345u64;
    let logits: Vec<f32> = (0..vocab)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            -8.0 * u.powf(0.3) + 10.0
        })
        .collect();
    let settings = [
        ("greedy", SamplerConfig::default()),
        (
            "temperature 1",
            SamplerConfig {
                temperature: 1.0,
                seed: Some(1),
                ..Default::default()
            },
        ),
        (
            "top_p 0.9",
            SamplerConfig {
                temperature: 0.7,
                top_p: 0.9,
                seed: Some(1),
                ..Default::default()
            },
        ),
        (
            "top_k 40",
            SamplerConfig {
                temperature: 0.7,
                top_k: 40,
                seed: Some(1),
                ..Default::default()
            },
        ),
        (
            "min_p 0.05",
            SamplerConfig {
                temperature: 0.7,
                min_p: 0.05,
                seed: Some(1),
                ..Default::default()
            },
        ),
    ];
    for (name, config) in settings {
        let mut sampler = Sampler::new(config);
        let runs = 300;
        let t = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(sampler.sample(&logits, &[]));
        }
        println!(
            "{name:14} {:8.1} us per token (vocab {vocab})",
            t.elapsed().as_secs_f64() * 1e6 / runs as f64
        );
    }
}
