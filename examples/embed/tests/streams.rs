//! The embedding example loads the default model, streams a reply, stops when cancelled,
//! and unloads.

use std::process::Command;

use minerva_models::model_cache::default_model_path;

fn embed(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_embed"))
        .args(args)
        .env("MINERVA_DEVICE", "cpu")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    (stdout, stderr)
}

#[test]
fn streams_a_reply_and_stops_when_cancelled() {
    if !default_model_path().is_file() {
        eprintln!("SKIPPED: the default model is not fetched (scripts/fetch-default-model)");
        return;
    }
    let (reply, log) = embed(&["Name three colors."]);
    assert!(!reply.trim().is_empty(), "a reply; log: {log}");
    assert!(
        log.contains("loaded") && log.ends_with("unloaded\n"),
        "{log}"
    );

    let (reply, log) = embed(&[
        "--cancel-after",
        "2",
        "Tell me a long story about a dragon.",
    ]);
    assert!(log.contains("finished: Cancelled"), "{log}");
    let generated: usize = log
        .split(" tokens,")
        .next()
        .and_then(|l| l.lines().last())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("a token count in {log}"));
    assert!(
        (2..10).contains(&generated),
        "stopped soon after 2 pieces: {generated} tokens; {reply:?}"
    );
}
