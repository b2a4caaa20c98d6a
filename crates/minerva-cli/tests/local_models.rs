//! `--model ORG/NAME` finds a model stored in the Hugging Face hub cache, and `minerva ls`
//! lists it with what it is.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use minerva_models::model_cache::default_model_path;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "minerva-local-models-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The default model stored as huggingface_hub stores a download of `repo`: a blob, a
/// snapshot entry linking to it, and `refs/main` naming the snapshot.
fn hub_cache_with_default_model(hub: &Path, repo: &str) {
    let folder = hub.join(format!("models--{}", repo.replace('/', "--")));
    let commit = "fa5a4d1e2c3b4a5968778695a4b3c2d1e0f1a2b3";
    let snapshot = folder.join("snapshots").join(commit);
    for dir in [&snapshot, &folder.join("blobs"), &folder.join("refs")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(folder.join("refs/main"), commit).unwrap();
    let blob = folder.join("blobs/0b1c2d3e");
    std::os::unix::fs::symlink(default_model_path(), &blob).unwrap();
    std::os::unix::fs::symlink(&blob, snapshot.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
}

fn minerva(hub: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_minerva"))
        .args(args)
        .env("HF_HUB_CACHE", hub)
        .env("MINERVA_HOME", home)
        .env_remove("MINERVA_MODEL")
        .output()
        .unwrap()
}

#[test]
fn a_model_in_the_hf_cache_is_found_by_name_and_listed() {
    if !default_model_path().is_file() {
        eprintln!("SKIPPED: the default model is not fetched (scripts/fetch-default-model)");
        return;
    }
    let root = scratch("hub");
    let (hub, home) = (root.join("hub"), root.join("home"));
    let repo = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF";
    hub_cache_with_default_model(&hub, repo);

    let out = minerva(
        &hub,
        &home,
        &[
            "--model",
            repo,
            "run",
            "--raw",
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "4",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!out.stdout.is_empty(), "a reply; stderr: {stderr}");

    let out = minerva(&hub, &home, &["ls"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = listing
        .lines()
        .find(|l| l.starts_with(repo))
        .unwrap_or_else(|| panic!("{repo} listed:\n{listing}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..4], ["gguf", "q4_1", "llama"], "{row}");

    let out = minerva(
        &hub,
        &home,
        &["--model", "HuggingFaceTB/absent", "run", "--prompt", "hi"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("HuggingFaceTB/absent") && stderr.contains("minerva ls"),
        "{stderr}"
    );
    std::fs::remove_dir_all(root).unwrap();
}
