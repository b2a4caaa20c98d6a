//! Generation flags shared by `chat` and `run`.

use clap::Args;
use minerva_engine::{GenerateOptions, SamplerConfig};

#[derive(Args, Clone, Debug)]
pub struct GenerationArgs {
    /// Most tokens to generate per answer
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 picks the most likely token (greedy, deterministic)
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = all)
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Drop tokens less likely than this fraction of the most likely one
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalize tokens seen in the last 64 (1 = off)
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed, for reproducible sampling
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when this text appears (repeatable)
    #[arg(long)]
    pub stop: Vec<String>,
    /// Longest conversation in tokens [default: the model's context length]
    #[arg(long)]
    pub context: Option<usize>,
}

impl GenerationArgs {
    pub fn options(&self) -> anyhow::Result<GenerateOptions> {
        let check = |ok: bool, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{msg}"))
            }
        };
        check(
            self.temperature >= 0.0 && self.temperature.is_finite(),
            "--temperature must be ≥ 0",
        )?;
        check(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "--top-p must be in (0, 1]",
        )?;
        check(
            (0.0..=1.0).contains(&self.min_p),
            "--min-p must be in [0, 1]",
        )?;
        check(self.repeat_penalty > 0.0, "--repeat-penalty must be > 0")?;
        Ok(GenerateOptions {
            max_tokens: self.max_tokens,
            sampler: SamplerConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repeat_penalty,
                seed: self.seed,
                ..SamplerConfig::default()
            },
            stop: self.stop.clone(),
            ..GenerateOptions::default()
        })
    }
}
