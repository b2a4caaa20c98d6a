//! `minerva bench --streams 1,4,10,32,64`: many users at once through the engine's
//! continuous batch. Each count starts that many generations together, with prompts of
//! mixed lengths (64 to 512 tokens), `--gen-tokens` greedy tokens each (end-of-text ignored,
//! so every answer has that length), and reports total and per-stream output tokens per
//! second over the whole run (prefills included), and the median time to first token.

use std::time::Instant;

use minerva_engine::{Batch, BatchConfig, Engine, GenerateOptions, Step};

/// Prompt lengths the streams cycle through.
const PROMPT_LENGTHS: [usize; 4] = [64, 512, 128, 256];

pub(super) fn streams(
    engine: &Engine,
    text: &[u32],
    counts: &[usize],
    gen_tokens: usize,
    json: bool,
) -> anyhow::Result<()> {
    let model = engine.model();
    for &count in counts {
        let config = BatchConfig {
            max_batch: count,
            max_step_tokens: 512 + count,
            kv: engine.kv_config(),
            max_context: Some(PROMPT_LENGTHS.iter().max().copied().unwrap_or(0) + gen_tokens + 1),
            ..BatchConfig::default()
        };
        let mut batch = Batch::new(model, engine.tokenizer(), config)?;
        let options = GenerateOptions {
            max_tokens: gen_tokens,
            ignore_eos: true,
            ..GenerateOptions::default()
        };
        let start = Instant::now();
        for i in 0..count {
            let len = PROMPT_LENGTHS[i % PROMPT_LENGTHS.len()];
            // Each stream its own text: shift the cycle so no two prompts are equal.
            let prompt: Vec<u32> = text.iter().copied().cycle().skip(i * 7).take(len).collect();
            batch.add(&prompt, &options)?;
        }
        let (mut generated, mut first_tokens, mut seen) =
            (0usize, Vec::new(), std::collections::HashSet::new());
        let mut steps = 0usize;
        while !batch.is_empty() {
            for (id, event) in batch.step()? {
                if let Step::Token(_) | Step::Finished { .. } = event {
                    if seen.insert(id) {
                        first_tokens.push(start.elapsed().as_secs_f64());
                    }
                }
                if let Step::Token(_) = event {
                    generated += 1;
                }
            }
            steps += 1;
        }
        let seconds = start.elapsed().as_secs_f64();
        first_tokens.sort_by(f64::total_cmp);
        let ttft = first_tokens
            .get(first_tokens.len() / 2)
            .copied()
            .unwrap_or(0.0);
        let total = generated as f64 / seconds;
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "streams": count, "generated": generated, "seconds": seconds,
                    "total_tok_s": total, "per_stream_tok_s": total / count as f64,
                    "median_ttft_s": ttft, "steps": steps,
                })
            );
        } else {
            println!(
                "{count:>3} streams: {total:>8.1} tok/s total, {:>7.1} per stream, median TTFT {:.0} ms ({generated} tokens, {steps} steps, {seconds:.1} s)",
                total / count as f64,
                ttft * 1e3
            );
        }
    }
    Ok(())
}
