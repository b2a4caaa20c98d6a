//! The op/backend boundary: the engine, models, server, CLI, hub client and the embedding
//! example call the ops API on arrays and name no backend (no `backends::` path, no CUDA
//! type); only minerva-core's ops, graph runner and own tests reach the kernels.

use std::path::{Path, PathBuf};

/// What naming a backend looks like in source.
const BACKEND_NAMES: [&str; 4] = ["backends::", "CudaDevice", "CudaGraph", "cuda::"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn only_minerva_core_names_a_backend() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in [
        "crates/minerva-engine",
        "crates/minerva-models",
        "crates/minerva-server",
        "crates/minerva-cli",
        "crates/minerva-hub",
        "examples/embed",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 50,
        "the crates' sources were found ({} files)",
        files.len()
    );
    let this_file = Path::new(file!()).file_name();
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| f.file_name() != this_file) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if let Some(name) = BACKEND_NAMES.iter().find(|name| code.contains(*name)) {
                offenders.push(format!("{}:{}: names `{name}`", file.display(), n + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "backends named outside minerva-core:\n{}",
        offenders.join("\n")
    );
}
