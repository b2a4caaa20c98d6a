//! The generation loop: prefill a prompt, then sample token by token, streaming text to a
//! callback that can stop it at any time.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use minerva_core::Array;
use minerva_models::tokenizer::Tokenizer;
use minerva_models::{CausalLm, KvCache, Logits};

use crate::error::{EngineError, Result};
use crate::kv_cache::ContiguousKvCache;
use crate::sampler::{Sampler, SamplerConfig};
use crate::stop::StopMatcher;

/// Longest prompt slice run through the model at once; bounds activation memory.
const PREFILL_CHUNK: usize = 512;

/// Runs one forward pass on the compute thread pool. The pass's serial parts then run on a
/// pool worker that joins every parallel op itself, instead of handing each op to the pool
/// and sleeping until it is done (a wake-up per matmul costs tens of microseconds).
pub fn forward(
    model: &dyn CausalLm,
    tokens: &[u32],
    cache: &mut dyn KvCache,
    logits: Logits,
) -> minerva_models::Result<Array> {
    rayon::scope(|_| model.forward(tokens, cache, logits))
}

#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation ends before any of these strings would be emitted.
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model emitted an end-of-generation token.
    EndOfText,
    /// `max_tokens` were generated.
    Length,
    /// A stop string appeared.
    Stop,
    /// The callback asked to stop.
    Cancelled,
    /// The KV cache reached its capacity (the model's context length).
    ContextFull,
}

/// What one `generate` call did and how fast.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens served from the cache of an earlier turn.
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    pub finish: FinishReason,
}

impl GenerationStats {
    /// Prompt tokens processed per second (excluding reused ones).
    pub fn prefill_tok_s(&self) -> f64 {
        (self.prompt_tokens - self.reused_tokens) as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second after the first (which prefill produces).
    pub fn decode_tok_s(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// A conversation's model state: the KV cache and the tokens it holds. Successive calls reuse
/// the longest common prefix of the cached tokens and the new prompt, so a chat turn only
/// pays for its new tokens.
pub struct Session<'m> {
    model: &'m dyn CausalLm,
    tokenizer: &'m Tokenizer,
    cache: ContiguousKvCache,
    tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    pub fn new(
        model: &'m dyn CausalLm,
        tokenizer: &'m Tokenizer,
        max_context: Option<usize>,
    ) -> Result<Self> {
        Ok(Session {
            cache: ContiguousKvCache::new(model.info(), max_context)?,
            model,
            tokenizer,
            tokens: Vec::new(),
        })
    }

    /// The tokens whose keys and values are cached.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Generates a continuation of `prompt`, passing each new piece of text to `on_text`;
    /// return `ControlFlow::Break(())` from it to stop.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationStats> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() > self.cache.max_len() {
            return Err(EngineError::PromptTooLong {
                tokens: prompt.len(),
                context: self.cache.max_len(),
            });
        }
        // Keep at least the last prompt token to run: its logits pick the first new token.
        let reused = common_prefix(&self.tokens, prompt).min(prompt.len() - 1);
        self.cache.truncate(reused);
        self.tokens.truncate(reused);

        let start = Instant::now();
        let mut logits = Vec::new();
        for chunk in prompt[reused..].chunks(PREFILL_CHUNK) {
            let out = forward(self.model, chunk, &mut self.cache, Logits::Last)?;
            self.tokens.extend_from_slice(chunk);
            logits = out.to_f32_vec()?;
        }
        let prefill_time = start.elapsed();

        let mut sampler = Sampler::new(options.sampler.clone());
        let mut decoder = self.tokenizer.stream_decoder();
        let mut stop = StopMatcher::new(&options.stop);
        let mut generated = 0;
        let decode_start = Instant::now();
        let finish = loop {
            if generated == options.max_tokens {
                break FinishReason::Length;
            }
            let next = sampler.sample(&logits, &self.tokens);
            generated += 1;
            if self.tokenizer.is_eog(next) {
                break FinishReason::EndOfText;
            }
            let piece = decoder.push(next)?.unwrap_or_default();
            let (emit, stopped) = stop.push(&piece);
            if !emit.is_empty() && on_text(&emit).is_break() {
                break FinishReason::Cancelled;
            }
            if stopped {
                break FinishReason::Stop;
            }
            if generated == options.max_tokens {
                break FinishReason::Length;
            }
            if self.cache.len() == self.cache.max_len() {
                break FinishReason::ContextFull;
            }
            logits = self
                .model
                .forward(&[next], &mut self.cache, Logits::Last)?
                .to_f32_vec()?;
            self.tokens.push(next);
        };
        if matches!(
            finish,
            FinishReason::Length | FinishReason::EndOfText | FinishReason::ContextFull
        ) {
            let rest = stop.finish();
            if !rest.is_empty() {
                let _ = on_text(&rest);
            }
        }
        Ok(GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: generated,
            prefill_time,
            decode_time: decode_start.elapsed(),
            finish,
        })
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
