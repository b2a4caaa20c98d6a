//! `minerva perplexity` on the default model (fetched by scripts/test): English prose scores a
//! low perplexity, the JSON line has the promised fields, and a too-short file is one clear
//! error.

use std::process::Command;

const PROSE: &str = "The history of computing is a story of ideas that became machines. \
Early mechanical calculators could add and subtract, but they could not be programmed. In the \
nineteenth century, Charles Babbage designed the Analytical Engine, a general purpose machine \
that would have read its instructions from punched cards, and Ada Lovelace wrote what many \
consider the first program for it. A century later, electronic computers filled whole rooms, \
consumed enormous amounts of power, and were programmed by rewiring panels or flipping switches.";

fn minerva(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_minerva"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn english_prose_has_low_perplexity() {
    let path = std::env::temp_dir().join(format!("minerva-ppl-{}.txt", std::process::id()));
    std::fs::write(&path, PROSE).unwrap();
    let out = minerva(&[
        "perplexity",
        "--ctx",
        "32",
        "--json",
        "--file",
        path.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (ppl, tokens, scored) = (
        v["ppl"].as_f64().unwrap(),
        v["tokens"].as_u64().unwrap(),
        v["scored"].as_u64().unwrap(),
    );
    // 135M-parameter model on plain English: far below the 49152-token vocabulary's uniform
    // perplexity, and above 1 (nothing is certain).
    assert!(ppl > 1.0 && ppl < 60.0, "ppl {ppl}");
    assert!(tokens > 64, "{v}");
    let windows = tokens / 32;
    assert_eq!(scored, windows * 15, "{v}"); // per window: positions 16..31 predict 17..31
    assert_eq!(v["windows"].as_u64(), Some(windows));

    let err = minerva(&[
        "perplexity",
        "--ctx",
        "4096",
        "--file",
        path.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert_eq!(err.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("fewer than one --ctx window of 4096"),
        "{stderr}"
    );
}
