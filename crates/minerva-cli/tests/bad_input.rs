//! Bad input gets one clear line on stderr naming the file and the problem, a non-zero exit
//! status, and no panic.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minerva-bad-input-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// Runs `minerva run --model <model> --prompt hi` and checks the failure; returns stderr.
fn fails_cleanly(model: &Path, expected: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_minerva"))
        .args(["run", "--prompt", "hi", "--model"])
        .arg(model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status for {model:?}; stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("minerva: "), "{stderr}");
    for needle in expected {
        assert!(
            stderr.contains(needle),
            "{stderr:?} should mention {needle:?}"
        );
    }
    stderr
}

/// A minimal GGUF v3 file: string metadata and tensor infos with the given ggml types.
fn write_gguf(path: &Path, metadata: &[(&str, &str)], tensors: &[(&str, &[u64], u32)]) {
    let mut b = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        string(&mut b, key);
        b.extend_from_slice(&8u32.to_le_bytes());
        string(&mut b, value);
    }
    for (name, dims, ggml_type) in tensors {
        string(&mut b, name);
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        dims.iter()
            .for_each(|d| b.extend_from_slice(&d.to_le_bytes()));
        b.extend_from_slice(&ggml_type.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
    }
    b.resize(b.len().next_multiple_of(32) + 4096, 0);
    std::fs::write(path, b).unwrap();
}

/// A copy of the tiny Llama fixture directory, to break one file of.
fn tiny_llama_copy(name: &str) -> PathBuf {
    let dir = scratch(name);
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-llama").join(file), dir.join(file)).unwrap();
    }
    dir
}

#[test]
fn missing_file() {
    fails_cleanly(
        Path::new("/no/such/dir/model.gguf"),
        &["/no/such/dir/model.gguf", "No such file"],
    );
}

#[test]
fn truncated_gguf() {
    let dir = scratch("truncated-gguf");
    let path = dir.join("cut.gguf");
    write_gguf(
        &path,
        &[("general.architecture", "llama")],
        &[("token_embd.weight", &[64, 4096], 0)],
    );
    fails_cleanly(&path, &["cut.gguf", "truncated", "token_embd.weight"]);
    // Cut inside the header.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..40]).unwrap();
    fails_cleanly(&path, &["cut.gguf", "truncated header"]);
}

#[test]
fn unsupported_quant_type() {
    let dir = scratch("q4k");
    let path = dir.join("q4k.gguf");
    write_gguf(
        &path,
        &[("general.architecture", "llama")],
        &[("blk.0.attn_q.weight", &[256, 16], 12)],
    );
    fails_cleanly(
        &path,
        &["q4k.gguf", "blk.0.attn_q.weight", "unsupported type q4_k"],
    );
}

#[test]
fn unknown_architecture() {
    let dir = scratch("arch");
    let path = dir.join("mamba.gguf");
    write_gguf(&path, &[("general.architecture", "mamba")], &[]);
    fails_cleanly(&path, &["mamba.gguf", "unsupported architecture 'mamba'"]);

    let dir = tiny_llama_copy("arch-hf");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"llama\"", "\"bert\""),
    )
    .unwrap();
    fails_cleanly(&dir, &["config.json", "unsupported architecture 'bert'"]);
}

#[test]
fn truncated_safetensors() {
    let dir = tiny_llama_copy("truncated-st");
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    fails_cleanly(&dir, &["model.safetensors", "truncated"]);
}

#[test]
fn corrupt_index_json() {
    let dir = tiny_llama_copy("index");
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        "{\"weight_map\": {\"a\": ",
    )
    .unwrap();
    fails_cleanly(&dir, &["model.safetensors.index.json"]);
}

#[test]
fn not_a_model() {
    let dir = scratch("text");
    let path = dir.join("notes.txt");
    std::fs::write(&path, "hello").unwrap();
    fails_cleanly(&path, &["notes.txt", "not a model"]);
}
