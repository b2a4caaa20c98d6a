//! Decode steps replayed from a captured CUDA graph against the same steps run op by op on
//! the GPU, across cache growth (each growth moves the pools and forces a new capture) and
//! with greedy picks and sampled draws made on the device. Both paths launch the same kernels with the same
//! arguments, so they should agree to the last bit; the 1e-6 bound (relative to the largest
//! logit) admits nothing beyond f32 rounding noise. Agreement with transformers is checked
//! in `reference_logits.rs`, through the graph too.

use std::path::PathBuf;

use minerva_core::ops::{self, Draw, SampleSettings};
use minerva_core::{Array, Device};
use minerva_engine::sampler::argmax;
use minerva_engine::{DecodeStep, SequenceCache};
use minerva_models::{load_model, KvCache, Logits};

#[test]
fn graph_replays_match_eager_steps_across_cache_growth() {
    if let Err(e) = minerva_core::backends::cuda::device(0) {
        eprintln!(
            "SKIPPED graph_replays_match_eager_steps_across_cache_growth: no usable GPU ({e})"
        );
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gpt-oss");
    let mut model = load_model(&dir).unwrap_or_else(|e| panic!("{e}"));
    model.to_device(Device::Cuda(0), &mut |_, _| {}).unwrap();
    let model = model.as_ref();
    let prompt: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % 256).collect();
    let (mut eager, mut graphed) = (
        SequenceCache::new(model.info(), Some(600)).unwrap(),
        SequenceCache::new(model.info(), Some(600)).unwrap(),
    );
    let first = model.forward(&prompt, &mut eager, Logits::Last).unwrap();
    model.forward(&prompt, &mut graphed, Logits::Last).unwrap();
    let mut token = argmax(&first.to_f32_vec().unwrap());
    let mut step = DecodeStep::new();
    let mut worst = 0.0f32;
    // 20 + 560 tokens: the pools grow from 256 to 512 to 1024 positions.
    for i in 0..560 {
        let want = model
            .forward(&[token], &mut eager, Logits::Last)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let next = match i % 3 {
            0 => {
                let got = step.logits(model, &mut graphed, token).unwrap();
                let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let diff = got
                    .iter()
                    .zip(&want)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                worst = worst.max(diff / scale);
                argmax(&got)
            }
            1 => step.greedy(model, &mut graphed, token).unwrap(),
            _ => {
                // A draw on the device picks what the CPU picks from the same logits.
                let settings = SampleSettings {
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 0.9,
                    min_p: 0.0,
                };
                let draw = Draw {
                    seed: 11,
                    counter: i,
                };
                let got = step
                    .sample(model, &mut graphed, token, settings, draw)
                    .unwrap();
                let logits = Array::from_f32(&want, &[1, want.len()]).unwrap();
                let on_cpu = ops::sample(&logits, &[settings], &[draw]).unwrap();
                assert_eq!(got as i32, on_cpu.as_i32().unwrap()[0], "step {i}: draw");
                got
            }
        };
        if i % 3 != 2 {
            assert_eq!(next, argmax(&want), "step {i}: greedy pick");
        }
        assert_eq!(graphed.len(), eager.len());
        token = next;
    }
    // The pools grew (16 -> 32 -> 64 pages of 16 positions), each growth a new capture.
    assert!(graphed.epoch() >= 2, "the cache never grew");
    eprintln!("graph vs eager over 560 steps: max rel diff {worst:.2e}");
    assert!(
        worst <= 1e-6,
        "graph replay differs from eager steps: {worst:e}"
    );
}
