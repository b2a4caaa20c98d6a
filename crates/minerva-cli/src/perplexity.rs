//! `minerva perplexity`: how well a model predicts a text — the yardstick for accuracy claims
//! (quantization, KV cache formats, kernels).
//!
//! Computed as llama.cpp's `llama-perplexity` does, so numbers compare: the tokenized text is
//! cut into non-overlapping windows of `--ctx` tokens (BOS first when the model wants one);
//! in each window the first half is context only and every token of the second half is
//! scored by the model's prediction from all tokens before it. ppl = exp(mean negative
//! log-likelihood of the scored tokens).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context};
use clap::Args;
use minerva_engine::{forward, KvConfig, SequenceCache};
use minerva_models::Logits;

use crate::model_path::ModelChoice;

#[derive(Args)]
pub struct PerplexityArgs {
    /// Text file to score (UTF-8)
    #[arg(long)]
    pub file: PathBuf,
    /// Window length in tokens
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many windows (0 = all)
    #[arg(long, default_value_t = 0)]
    pub max_windows: usize,
    /// Print one JSON line: {"ppl": .., "tokens": .., ...}
    #[arg(long)]
    pub json: bool,
}

/// Tokens run through the model at once; bounds the logits held in memory.
const BATCH: usize = 256;

pub fn perplexity(choice: &ModelChoice, args: &PerplexityArgs) -> anyhow::Result<()> {
    ensure!(args.ctx >= 4, "--ctx must be at least 4");
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("{}: cannot read as UTF-8 text", args.file.display()))?;
    let engine = choice.load_engine()?;
    let model = engine.model();
    ensure!(
        args.ctx <= model.info().context_length,
        "--ctx {} is longer than the model's context ({})",
        args.ctx,
        model.info().context_length
    );
    let tok = engine.tokenizer();
    let tokens = tok.encode(&text, false)?;
    let bos = tok.bos_id().filter(|_| tok.add_bos());
    let mut windows = tokens.len() / args.ctx;
    if args.max_windows > 0 {
        windows = windows.min(args.max_windows);
    }
    ensure!(
        windows > 0,
        "{}: {} tokens, fewer than one --ctx window of {}",
        args.file.display(),
        tokens.len(),
        args.ctx
    );
    let start = Instant::now();
    let (mut nll, mut scored) = (0f64, 0usize);
    let mut cache = SequenceCache::with_config(
        model.info(),
        Some(args.ctx),
        KvConfig {
            // Each window runs in one pass.
            max_pass_tokens: args.ctx,
            ..engine.kv_config()
        },
    )?;
    for w in 0..windows {
        let mut window = tokens[w * args.ctx..(w + 1) * args.ctx].to_vec();
        if let Some(bos) = bos {
            window[0] = bos;
        }
        cache.truncate(0);
        let first_scored = args.ctx / 2;
        for (b, batch) in window.chunks(BATCH).enumerate() {
            // Context-only batches need no logits (the lm_head is much of a small model's work).
            if (b + 1) * BATCH <= first_scored {
                forward(model, batch, &mut cache, Logits::Last)?;
                continue;
            }
            let logits = forward(model, batch, &mut cache, Logits::All)?;
            let logits = logits.as_f32()?;
            let vocab = logits.len() / batch.len();
            for (i, row) in logits.chunks(vocab).enumerate() {
                let pos = b * BATCH + i;
                if pos < first_scored || pos + 1 >= window.len() {
                    continue;
                }
                nll += negative_log_likelihood(row, window[pos + 1] as usize)?;
                scored += 1;
            }
        }
        if !args.json {
            eprint!(
                "\rwindow {}/{windows}: ppl {:.4}",
                w + 1,
                (nll / scored as f64).exp()
            );
        }
    }
    let ppl = (nll / scored as f64).exp();
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "ppl": ppl,
                "tokens": tokens.len(),
                "scored": scored,
                "ctx": args.ctx,
                "windows": windows,
                "seconds": seconds,
            })
        );
    } else {
        eprintln!();
        println!(
            "perplexity {ppl:.4} over {scored} scored tokens ({} tokens in the file, {windows} windows of {}; {:.0} tok/s)",
            tokens.len(),
            args.ctx,
            (windows * args.ctx) as f64 / seconds
        );
    }
    Ok(())
}

/// -log softmax(row)[target], in f64 so long sums stay exact enough.
fn negative_log_likelihood(row: &[f32], target: usize) -> anyhow::Result<f64> {
    ensure!(
        target < row.len(),
        "token id {target} is outside the logits"
    );
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    ensure!(max.is_finite(), "the model's logits are not finite");
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    Ok(max + sum.ln() - row[target] as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_uniform_and_peaked_rows() {
        let uniform = [0.0f32; 4];
        assert!((negative_log_likelihood(&uniform, 2).unwrap() - 4f64.ln()).abs() < 1e-12);
        let peaked = [0.0, 30.0, 0.0];
        assert!(negative_log_likelihood(&peaked, 1).unwrap() < 1e-12);
        assert!(negative_log_likelihood(&peaked, 3).is_err());
    }
}
