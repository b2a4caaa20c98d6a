//! `minerva perplexity`: how well a model predicts a text — the yardstick for accuracy claims
//! (quantization, KV cache formats, kernels).
//!
//! Computed as llama.cpp's `llama-perplexity` does, so numbers compare: the tokenized text is
//! cut into non-overlapping windows of `--ctx` tokens (BOS first when the model wants one);
//! in each window the first half is context only and every token of the second half is
//! scored by the model's prediction from all tokens before it. ppl = exp(mean negative
//! log-likelihood of the scored tokens).
//!
//! `--against f16` also runs every window over a second KV cache stored that way and compares
//! the scored predictions: how often the top token is the same (greedy agreement) and the
//! mean KL divergence of the reference's distribution to this one's, as llama.cpp's
//! `--kl-divergence` reports them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context};
use clap::Args;
use minerva_engine::sampler::argmax;
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
    /// Also run over a KV cache stored as this (e.g. f16) and report how often the top token
    /// agrees and the mean KL divergence from it
    #[arg(long, value_name = "KV_DTYPE")]
    pub against: Option<String>,
}

/// How the scored predictions compare with the reference cache's.
#[derive(Default)]
struct Agreement {
    same_top: usize,
    kl: f64,
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
    let new_cache = |kv: KvConfig| {
        SequenceCache::with_config(
            model.info(),
            Some(args.ctx),
            KvConfig {
                // Each window runs in one pass.
                max_pass_tokens: args.ctx,
                ..kv
            },
        )
    };
    let mut cache = new_cache(engine.kv_config())?;
    // (its spelling, the reference cache, how the predictions compare so far)
    let mut reference = match &args.against {
        Some(spec) => {
            let kv = KvConfig::parse(spec).map_err(|e| anyhow::anyhow!("--against: {e}"))?;
            Some((spec, new_cache(kv)?, Agreement::default()))
        }
        None => None,
    };
    for w in 0..windows {
        let mut window = tokens[w * args.ctx..(w + 1) * args.ctx].to_vec();
        if let Some(bos) = bos {
            window[0] = bos;
        }
        cache.truncate(0);
        if let Some((_, c, _)) = &mut reference {
            c.truncate(0);
        }
        let first_scored = args.ctx / 2;
        for (b, batch) in window.chunks(BATCH).enumerate() {
            // Context-only batches need no logits (the lm_head is much of a small model's work).
            let wanted = if (b + 1) * BATCH <= first_scored {
                Logits::Last
            } else {
                Logits::All
            };
            let logits = forward(model, batch, &mut cache, wanted)?;
            let ref_logits = match &mut reference {
                Some((_, c, _)) => Some(forward(model, batch, c, wanted)?),
                None => None,
            };
            if wanted == Logits::Last {
                continue;
            }
            let logits = logits.as_f32()?;
            let vocab = logits.len() / batch.len();
            let ref_logits = ref_logits.as_ref().map(|l| l.as_f32()).transpose()?;
            for (i, row) in logits.chunks(vocab).enumerate() {
                let pos = b * BATCH + i;
                if pos < first_scored || pos + 1 >= window.len() {
                    continue;
                }
                nll += negative_log_likelihood(row, window[pos + 1] as usize)?;
                scored += 1;
                if let (Some((_, _, agreement)), Some(r)) = (&mut reference, &ref_logits) {
                    agreement.add(&r[i * vocab..(i + 1) * vocab], row);
                }
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
    // (reference, share of top tokens that agree, mean KL divergence)
    let compared = reference.as_ref().map(|(spec, _, a)| {
        (
            spec,
            a.same_top as f64 / scored as f64,
            a.kl / scored as f64,
        )
    });
    if args.json {
        let mut line = serde_json::json!({
            "ppl": ppl,
            "tokens": tokens.len(),
            "scored": scored,
            "ctx": args.ctx,
            "windows": windows,
            "seconds": seconds,
        });
        if let Some((spec, same_top, kl)) = compared {
            line["against"] = spec.as_str().into();
            line["same_top"] = same_top.into();
            line["mean_kl"] = kl.into();
        }
        println!("{line}");
    } else {
        eprintln!();
        println!(
            "perplexity {ppl:.4} over {scored} scored tokens ({} tokens in the file, {windows} windows of {}; {:.0} tok/s)",
            tokens.len(),
            args.ctx,
            (windows * args.ctx) as f64 / seconds
        );
        if let Some((spec, same_top, kl)) = compared {
            println!(
                "against a {spec} KV cache: same top token {:.2}%, mean KL divergence {kl:.6}",
                100.0 * same_top
            );
        }
    }
    Ok(())
}

impl Agreement {
    /// Compares one scored position's logits with the reference's.
    fn add(&mut self, reference: &[f32], row: &[f32]) {
        self.same_top += (argmax(reference) == argmax(row)) as usize;
        self.kl += kl_divergence(reference, row);
    }
}

/// log sum exp(row), in f64 so long sums stay exact enough; not finite when the row's
/// largest logit is not.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln()
}

/// log-softmax of a row, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let log_sum = log_sum_exp(row);
    row.iter().map(|&x| x as f64 - log_sum).collect()
}

/// KL(p || q) of the distributions softmax(p_logits), softmax(q_logits).
fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let (p, q) = (log_softmax(p_logits), log_softmax(q_logits));
    p.iter().zip(&q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum()
}

/// `-log softmax(row)[target]`.
fn negative_log_likelihood(row: &[f32], target: usize) -> anyhow::Result<f64> {
    ensure!(
        target < row.len(),
        "token id {target} is outside the logits"
    );
    let log_sum = log_sum_exp(row);
    ensure!(log_sum.is_finite(), "the model's logits are not finite");
    Ok(log_sum - row[target] as f64)
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

    #[test]
    fn agreement_of_equal_and_different_rows() {
        let mut a = Agreement::default();
        a.add(&[0.0, 2.0, 1.0], &[0.0, 2.0, 1.0]);
        assert_eq!(a.same_top, 1);
        assert!(a.kl.abs() < 1e-12);
        a.add(&[0.0, 2.0, 1.0], &[0.0, 1.0, 2.0]);
        assert_eq!(a.same_top, 1);
        // KL of softmax([0,2,1]) to softmax([0,1,2]) = (p1 - p2) * 1 with p ∝ (1, e^2, e).
        let z = 1.0 + 2f64.exp() + 1f64.exp();
        let expected = (2f64.exp() - 1f64.exp()) / z;
        assert!((a.kl - expected).abs() < 1e-9, "{}", a.kl);
    }
}
