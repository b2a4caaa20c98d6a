//! Machine-readable and shell-facing outputs: `inspect --json` and `completions`.

use std::process::Command;

use minerva_models::model_cache::default_model_path;

fn minerva(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_minerva"))
        .args(args)
        .env_remove("MINERVA_MODEL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn inspect_json_describes_the_default_model() {
    if !default_model_path().is_file() {
        eprintln!("SKIPPED: the default model is not fetched (scripts/fetch-default-model)");
        return;
    }
    let text = minerva(&["inspect", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["format"], "gguf");
    assert_eq!(report["metadata"]["general.architecture"], "llama");
    assert_eq!(report["metadata"]["llama.block_count"], 30);
    let tensors = report["tensors"].as_array().unwrap();
    // SmolLM2-135M: 9 tensors per layer for 30 layers, the embedding and the final norm.
    assert_eq!(tensors.len(), 272, "{:?}", &tensors[..3]);
    assert!(tensors.iter().any(|t| t["dtype"] == "q4_1"));
    assert!(report["config"]
        .as_str()
        .is_some_and(|c| c.contains("Llama")));
}

#[test]
fn completions_cover_the_subcommands() {
    let script = minerva(&["completions", "bash"]);
    for sub in [
        "chat",
        "run",
        "serve",
        "inspect",
        "bench",
        "ls",
        "completions",
    ] {
        assert!(script.contains(sub), "bash completion mentions {sub}");
    }
    assert!(minerva(&["completions", "zsh"]).contains("#compdef minerva"));
}
