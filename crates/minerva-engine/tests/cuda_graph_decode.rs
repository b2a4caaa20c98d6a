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
use minerva_engine::{BatchDecode, DecodeStep, KvConfig, PagedKvCache, SequenceCache};
use minerva_models::{load_model, KvCache, Logits};

/// The tiny gpt-oss on the GPU, or `None` (said on stderr) without one.
fn tiny_gpt_oss(test: &str) -> Option<Box<dyn minerva_models::CausalLm>> {
    if let Err(e) = minerva_core::Device::choose("cuda") {
        eprintln!("SKIPPED {test}: no usable GPU ({e})");
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gpt-oss");
    let mut model = load_model(&dir).unwrap_or_else(|e| panic!("{e}"));
    model.to_device(Device::Cuda(0), &mut |_, _| {}).unwrap();
    Some(model)
}

/// The largest difference of two logit rows relative to the largest logit of `want`.
fn relative_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

#[test]
fn graph_replays_match_eager_steps_across_cache_growth() {
    let Some(model) = tiny_gpt_oss("graph_replays_match_eager_steps_across_cache_growth") else {
        return;
    };
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
                worst = worst.max(relative_diff(&got, &want));
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

/// A batch's decode steps replayed from graphs (one per number of sequences) against the
/// same passes run op by op, as sequences leave and join and the pools grow: the same
/// kernels with the same arguments, so the same bits (within the 1e-6 bound above).
#[test]
fn batch_graph_replays_match_eager_passes() {
    let Some(model) = tiny_gpt_oss("batch_graph_replays_match_eager_passes") else {
        return;
    };
    let model = model.as_ref();
    let new_cache = || PagedKvCache::new(model.info(), Some(400), KvConfig::default(), None, 4);
    let (mut eager, mut graphed) = (new_cache().unwrap(), new_cache().unwrap());
    let mut graphs = BatchDecode::default();
    // (sequence in each cache, its next token)
    let mut live = Vec::new();
    let join = |eager: &mut PagedKvCache, graphed: &mut PagedKvCache, len: usize| {
        let prompt: Vec<i32> = (0..len as i32)
            .map(|i| (i * 37 + len as i32) % 256)
            .collect();
        let (a, b) = (eager.add_sequence(), graphed.add_sequence());
        let mut logits = Vec::new();
        for (cache, id) in [(&mut *eager, a), (&mut *graphed, b)] {
            cache.reserve(id, len).unwrap();
            let inputs = cache.inputs(&[(id, len)]).unwrap();
            let ids = Array::from_i32(&prompt, &[len]).unwrap();
            let mut view = cache.view(&inputs);
            let out = model
                .forward_ids(&ids, &inputs.positions, &mut view, Logits::Last)
                .unwrap();
            logits = out.to_f32_vec().unwrap();
        }
        (a, b, argmax(&logits) as i32)
    };
    for len in [20, 45, 7] {
        live.push(join(&mut eager, &mut graphed, len));
    }
    let mut worst = 0.0f32;
    for step in 0..300 {
        if step == 100 {
            let (a, b, _) = live.remove(1);
            eager.remove_sequence(a);
            graphed.remove_sequence(b);
        }
        if step == 150 {
            live.push(join(&mut eager, &mut graphed, 30));
        }
        let ids: Vec<i32> = live.iter().map(|l| l.2).collect();
        for l in &live {
            eager.reserve(l.0, 1).unwrap();
            graphed.reserve(l.1, 1).unwrap();
        }
        let pass: Vec<_> = live.iter().map(|l| (l.0, 1)).collect();
        let inputs = eager.inputs(&pass).unwrap();
        let mut view = eager.view(&inputs);
        let want = model
            .forward_ids(
                &Array::from_i32(&ids, &[ids.len()]).unwrap(),
                &inputs.positions,
                &mut view,
                Logits::Last,
            )
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let order: Vec<_> = live.iter().map(|l| l.1).collect();
        let got = graphs
            .run(model, &mut graphed, &order, &ids)
            .unwrap()
            .expect("on the GPU")
            .to_f32_vec()
            .unwrap();
        let vocab = want.len() / live.len();
        for (i, l) in live.iter_mut().enumerate() {
            let row = i * vocab..(i + 1) * vocab;
            worst = worst.max(relative_diff(&got[row.clone()], &want[row.clone()]));
            l.2 = argmax(&want[row]) as i32;
            assert_eq!(eager.len(l.0), graphed.len(l.1), "step {step}");
        }
    }
    assert!(graphed.epoch() >= 2, "the pools never grew");
    eprintln!("batch graph vs eager over 300 steps: max rel diff {worst:.2e}");
    assert!(
        worst <= 1e-6,
        "batch graph replay differs from eager passes: {worst:e}"
    );
}
