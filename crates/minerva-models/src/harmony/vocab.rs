//! The o200k vocabulary file `openai-harmony` reads, supplied locally.
//!
//! `openai-harmony` loads `o200k_base.tiktoken` from the folder `TIKTOKEN_ENCODINGS_BASE`
//! names (checking its SHA-256), and downloads it when that variable is unset. Minerva never
//! touches the network at run time: it writes the file once into its cache from the copy the
//! `tiktoken-rs` crate compiles in, and points the variable there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::model_cache::minerva_home;

const VAR: &str = "TIKTOKEN_ENCODINGS_BASE";
const FILE: &str = "o200k_base.tiktoken";
/// o200k's mergeable ranks are 0..199998; ids from 199998 up are special tokens.
const MERGEABLE_RANKS: u32 = 199_998;

/// Makes sure `TIKTOKEN_ENCODINGS_BASE` names a folder holding `o200k_base.tiktoken`, writing
/// the file on first use. A folder the user set is used as is.
pub fn ensure() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        if std::env::var_os(VAR).is_some_and(|v| !v.is_empty()) {
            return Ok(());
        }
        let dir = minerva_home().join("tiktoken");
        let path = dir.join(FILE);
        if !path.is_file() {
            write_vocab(&dir, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        // std's environment functions serialize on one lock, so Rust readers are safe; this
        // runs once, before any harmony encoding is loaded.
        std::env::set_var(VAR, &dir);
        Ok(())
    })
    .clone()
}

/// Writes the vocabulary as tiktoken files spell it (`base64(token bytes) rank` per line, by
/// rank), through a temporary file so a crash never leaves half a file behind.
fn write_vocab(dir: &Path, path: &Path) -> Result<(), String> {
    use base64::Engine as _;
    let bpe = tiktoken_rs::o200k_base().map_err(|e| e.to_string())?;
    let mut text = String::with_capacity(3 << 20);
    for rank in 0..MERGEABLE_RANKS {
        let bytes = bpe.decode_bytes(&[rank]).map_err(|e| e.to_string())?;
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
        text.push(' ');
        text.push_str(&rank.to_string());
        text.push('\n');
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let tmp: PathBuf = dir.join(format!("{FILE}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(|e| e.to_string())
}
