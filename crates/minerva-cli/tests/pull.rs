//! `minerva pull` against a loopback hub serving the default model: the pull is resumed
//! after the process is killed mid-transfer, and the pulled model answers by name.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use minerva_hub::mock_hub::{scratch_dir, Fault, MockFile, MockHub};
use minerva_models::model_cache::{default_model_path, DEFAULT_MODEL_FILE};

const REPO: &str = "test-org/SmolLM2-135M-Instruct-GGUF";
const TOKEN: &str = "hf_test_token";

fn minerva(hub: &MockHub, cache: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_minerva"));
    command
        .args(args)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", TOKEN)
        .env("HF_HUB_CACHE", cache)
        .env("MINERVA_HOME", cache.join("minerva-home"))
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("MINERVA_MODEL");
    command
}

fn succeeded(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_killed_pull_resumes_and_the_model_then_runs_by_name() {
    if !default_model_path().is_file() {
        eprintln!("SKIPPED: the default model is not fetched (scripts/fetch-default-model)");
        return;
    }
    let gguf = std::fs::read(default_model_path()).unwrap();
    let hub = MockHub::start();
    hub.require_token(TOKEN);
    hub.add_repo(
        REPO,
        &["main"],
        vec![
            MockFile::new("README.md", b"# SmolLM2 GGUF\n".to_vec(), false),
            MockFile::new(DEFAULT_MODEL_FILE, gguf.clone(), true),
        ],
    );
    let cache = scratch_dir("killed");

    // The transfer holds after 40 MB; the pull is killed there.
    hub.set_fault(DEFAULT_MODEL_FILE, Fault::StallAfter(40_000_000));
    let mut child = minerva(&hub, &cache, &["pull", REPO])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        hub.wait_stalled(Duration::from_secs(60)),
        "the transfer reached the stall"
    );
    let blobs = cache.join("models--test-org--SmolLM2-135M-Instruct-GGUF/blobs");
    let etag = MockFile::new("", gguf.clone(), true)
        .digest()
        .hex()
        .to_string();
    let partial = blobs.join(format!("{etag}.incomplete"));
    let mut kept = 0;
    for _ in 0..100 {
        kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if kept == 40_000_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    hub.clear_faults();
    assert!(kept > 0, "the killed pull kept what it had");
    assert!(!cache
        .join("models--test-org--SmolLM2-135M-Instruct-GGUF/refs/main")
        .exists());

    let out = succeeded(minerva(&hub, &cache, &["pull", REPO]).output().unwrap());
    assert!(out.contains(&format!("pulled {REPO} at")), "{out}");
    let resumed = hub.lfs_ranges();
    assert_eq!(
        resumed.last(),
        Some(&Some(format!("bytes={kept}-"))),
        "{resumed:?}"
    );
    assert!(
        std::fs::read(blobs.join(&etag)).unwrap() == gguf,
        "the blob is the model, byte for byte"
    );

    let reply = succeeded(
        minerva(
            &hub,
            &cache,
            &[
                "--model",
                REPO,
                "run",
                "--raw",
                "--prompt",
                "The capital of France is",
                "--max-tokens",
                "4",
            ],
        )
        .output()
        .unwrap(),
    );
    assert!(!reply.trim().is_empty(), "the pulled model answers");
}

#[test]
fn pull_errors_are_one_line_and_name_the_problem() {
    let hub = MockHub::start();
    hub.require_token(TOKEN);
    let cache = scratch_dir("errors");
    let out = minerva(&hub, &cache, &["pull", "test-org/missing"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/api/models/test-org/missing/revision/main")
            && stderr.contains("HTTP 404 (no such repository"),
        "{stderr}"
    );

    let out = minerva(&hub, &cache, &["pull", "test-org/missing"])
        .env_remove("HF_TOKEN")
        .env("HF_HOME", cache.join("no-login"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("set HF_TOKEN"),
        "{stderr}"
    );
}
