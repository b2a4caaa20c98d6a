//! Same-file agreement with llama.cpp: greedy decoding of the default model (SmolLM2-135M
//! Q4_1 GGUF) for the 10 prompts of `tests/fixtures/smollm2/greedy.json`, which llama.cpp
//! (llama-cpp-python 0.3.36) produced from the same file (`scripts/fixtures/make_greedy_fixture.py`).
//!
//! Both engines quantize activations to 8 bits and sum in their own order, so logits differ
//! slightly; an argmax may flip only where llama.cpp's top-2 gap is a near-tie (< 1e-2).
//! After a divergence the two continuations differ, so a prompt is compared up to its first
//! divergence. The test prints the token agreement rate.

use std::path::PathBuf;

use minerva_engine::sampler::argmax;
use minerva_engine::ContiguousKvCache;
use minerva_models::{load_model, Logits};
use serde_json::Value;

const NEAR_TIE: f64 = 1e-2;

fn default_model() -> PathBuf {
    let home = std::env::var_os("MINERVA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
                })
                .join("minerva")
        });
    let path = home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-default-model",
        path.display()
    );
    path
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn greedy_decoding_agrees_with_llama_cpp() {
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/smollm2/greedy.json");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let model = load_model(&default_model()).unwrap_or_else(|e| panic!("{e}"));

    let (mut agreed, mut compared) = (0, 0);
    let mut failures = Vec::new();
    for case in reference["cases"].as_array().unwrap() {
        let prompt = u32s(&case["prompt_ids"]);
        let expected = u32s(&case["output_ids"]);
        let gaps: Vec<f64> = case["top1_minus_top2"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_f64().unwrap())
            .collect();
        let mut cache = ContiguousKvCache::new(model.info(), Some(1024)).unwrap();
        let mut logits = model.forward(&prompt, &mut cache, Logits::Last).unwrap();
        let mut outcome = format!("all {} tokens agree", expected.len());
        for (step, &want) in expected.iter().enumerate() {
            let got = argmax(logits.as_f32().unwrap());
            if std::env::var_os("MINERVA_DEBUG_LOGITS").is_some() {
                let l = logits.as_f32().unwrap();
                let top5 = case["top5"][step].as_array().unwrap();
                let diffs: Vec<String> = top5
                    .iter()
                    .map(|p| {
                        let id = p[0].as_u64().unwrap() as usize;
                        format!("{:+.3}", l[id] as f64 - p[1].as_f64().unwrap())
                    })
                    .collect();
                eprintln!("  step {step}: {}", diffs.join(" "));
            }
            compared += 1;
            if got != want {
                outcome = format!("diverges at token {step}: ours {got}, llama.cpp {want}, llama.cpp top-2 gap {:.4}", gaps[step]);
                if gaps[step] >= NEAR_TIE {
                    failures.push(format!("{:?}: {outcome}", case["prompt"]));
                }
                break;
            }
            agreed += 1;
            logits = model.forward(&[got], &mut cache, Logits::Last).unwrap();
        }
        eprintln!("{:<70} {outcome}", format!("{}", case["prompt"]));
    }
    let total: usize = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["output_ids"].as_array().unwrap().len())
        .sum();
    eprintln!("token agreement: {agreed}/{total} llama.cpp tokens reproduced ({:.1}%), {compared} compared", 100.0 * agreed as f64 / total as f64);
    assert!(
        failures.is_empty(),
        "divergence without a near-tie:\n{}",
        failures.join("\n")
    );
}
