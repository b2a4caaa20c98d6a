//! `minerva bench --load` and `minerva inspect` on synthetic gpt-oss checkpoints: tiny ones
//! with random values in both published layouts, and the real 20B OpenAI layout as sparse
//! zero files.

use std::path::{Path, PathBuf};
use std::process::Command;

use minerva_models::synthetic::{self, Fill, GptOssDims, Layout};
use serde_json::Value;

fn synthetic_dir(name: &str, layout: Layout, dims: &GptOssDims, fill: Fill) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("minerva-bench-load-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = synthetic::gpt_oss(layout, dims).unwrap();
    synthetic::write(&spec, &dir, fill, |_| {}).unwrap();
    dir
}

fn minerva(args: &[&str], model: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_minerva"))
        .args(args)
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "minerva {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bench_load_reports_load_time_memory_and_decode_speed() {
    for (name, layout) in [("openai", Layout::OpenAi), ("mlx", Layout::Mlx)] {
        let dir = synthetic_dir(name, layout, &GptOssDims::TINY, Fill::Random { seed: 1 });
        let line = minerva(
            &[
                "bench",
                "--load",
                "--json",
                "--runs",
                "2",
                "--gen-tokens",
                "3",
            ],
            &dir,
        );
        let r: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(r["arch"], "gpt_oss");
        assert_eq!(r["runs"], 2);
        let min = r["load_ms_min"].as_f64().unwrap();
        assert!(
            min > 0.0 && min <= r["load_ms_median"].as_f64().unwrap(),
            "{r}"
        );
        // Decoding succeeded, so the random values kept the logits finite.
        assert!(r["decode_tok_s"].as_f64().unwrap() > 0.0, "{r}");
        if cfg!(target_os = "linux") {
            assert!(r["rss_loaded"]["total_mib"].as_f64().unwrap() > 0.0, "{r}");
        }
        let text = minerva(
            &["bench", "--load", "--runs", "1", "--gen-tokens", "1"],
            &dir,
        );
        assert!(text.contains("load (start to ready"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn inspect_lists_the_459_tensors_of_the_real_openai_layout() {
    let dims = GptOssDims::GPT_OSS_20B;
    let dir = synthetic_dir("openai-20b", Layout::OpenAi, &dims, Fill::Zeros);
    let text = minerva(&["inspect", "--all"], &dir);
    assert!(text.contains("tensors: 459 (13761.3 MB)"), "{text}");
    let shape = |name: &str| {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")));
        line.unwrap_or_else(|| panic!("no {name} in {text}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        shape("model.layers.23.mlp.experts.gate_up_proj_blocks"),
        "u8 [32, 5760, 90, 16]"
    );
    assert_eq!(shape("model.embed_tokens.weight"), "bf16 [201088, 2880]");
    assert_eq!(text.matches(": safetensors").count(), 3, "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
