//! The generation loop: prefill a prompt, then sample token by token, streaming text to a
//! callback that can stop it at any time.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use minerva_core::{Array, Device};
use minerva_models::tokenizer::Tokenizer;
use minerva_models::{CausalLm, KvCache, Logits};

use crate::decode_step::DecodeStep;
use crate::error::{EngineError, Result};
use crate::kv_cache::{KvConfig, SequenceCache};
use crate::sampler::{Sampler, SamplerConfig};
use crate::stop::StopMatcher;
use minerva_models::tokenizer::StreamDecoder;

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
    /// Report each sampled token's log-probability and this many most likely alternatives
    /// (None = no log-probabilities).
    pub logprobs: Option<usize>,
    /// Keep generating past end-of-text tokens (benchmarks that need answers of one length).
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            logprobs: None,
            ignore_eos: false,
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

/// One step of a generation (see [`Session::step`]).
#[derive(Clone, Debug)]
pub enum Step {
    /// A slice of the prompt ran through the model; no token yet.
    Prefill { done: usize, total: usize },
    /// A token was sampled.
    Token(SampledToken),
    /// The generation ended; `text` is what was held back until now (possibly empty).
    Finished {
        text: String,
        stats: GenerationStats,
    },
}

#[derive(Clone, Debug)]
pub struct SampledToken {
    pub id: u32,
    /// Text that became final with this token: may be empty (an unfinished character, or
    /// text that could still be the start of a stop string) or include earlier tokens' text.
    pub text: String,
    pub logprobs: Option<TokenLogprobs>,
}

/// Log-probabilities under the model's distribution (before sampling settings).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    /// The most likely tokens, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// A conversation's model state: the KV cache and the tokens it holds. Successive calls reuse
/// the longest common prefix of the cached tokens and the new prompt, so a chat turn only
/// pays for its new tokens.
///
/// Generation runs either in one call ([`generate`](Session::generate)) or step by step
/// ([`start`](Session::start), then [`step`](Session::step) until `Step::Finished`), which lets
/// a scheduler interleave many sessions and drop one between any two steps.
pub struct Session<'m> {
    model: &'m dyn CausalLm,
    tokenizer: &'m Tokenizer,
    cache: SequenceCache,
    decode: DecodeStep,
    tokens: Vec<u32>,
    run: Option<Run<'m>>,
}

/// The state of one generation: its prompt, sampler, text decoding and statistics.
pub(crate) struct Run<'m> {
    pub(crate) options: GenerateOptions,
    pub(crate) prompt: Vec<u32>,
    reused: usize,
    /// Prompt tokens still to run through the model.
    prefill_at: usize,
    /// Logits for the next token, once the prompt (or the last token) has run.
    logits: Option<Vec<f32>>,
    pub(crate) sampler: Sampler,
    decoder: StreamDecoder<&'m Tokenizer>,
    stop: StopMatcher,
    generated: usize,
    started: Instant,
    prefill_time: Duration,
    decode_start: Option<Instant>,
}

impl<'m> Session<'m> {
    pub fn new(
        model: &'m dyn CausalLm,
        tokenizer: &'m Tokenizer,
        max_context: Option<usize>,
        kv: KvConfig,
    ) -> Result<Self> {
        Ok(Session {
            cache: SequenceCache::with_config(model.info(), max_context, kv)?,
            decode: DecodeStep::new(),
            model,
            tokenizer,
            tokens: Vec::new(),
            run: None,
        })
    }

    /// The tokens whose keys and values are cached.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The most tokens this session's cache holds.
    pub fn max_context(&self) -> usize {
        self.cache.max_len()
    }

    /// Bytes the KV cache holds now.
    pub fn kv_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Generates a continuation of `prompt`, passing each new piece of text to `on_text`;
    /// return `ControlFlow::Break(())` from it to stop.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationStats> {
        self.start(prompt, options)?;
        loop {
            let text = match self.step()? {
                Step::Prefill { .. } => continue,
                Step::Token(token) => token.text,
                Step::Finished { text, stats } => {
                    if !text.is_empty() {
                        let _ = on_text(&text);
                    }
                    return Ok(stats);
                }
            };
            if !text.is_empty() && on_text(&text).is_break() {
                return Ok(self.cancel().expect("a generation is running"));
            }
        }
    }

    /// Begins generating a continuation of `prompt` (replacing any generation in progress);
    /// the work happens in [`step`](Session::step).
    pub fn start(&mut self, prompt: &[u32], options: &GenerateOptions) -> Result<()> {
        self.run = None;
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
        let shared = common_prefix(&self.tokens, prompt).min(prompt.len() - 1);
        let reused = self.cache.truncate(shared);
        self.tokens.truncate(reused);
        self.run = Some(Run::new(self.tokenizer, prompt, options, reused));
        Ok(())
    }

    /// Advances the generation in progress by one model pass: a prompt chunk, or one token.
    /// Errors if none is in progress.
    pub fn step(&mut self) -> Result<Step> {
        let run = self.run.as_mut().ok_or(EngineError::NotGenerating)?;
        if run.prefill_at < run.prompt.len() {
            // Prompt slices as long as the cache takes in one pass (bounding activation
            // memory too).
            let chunk = self.cache.config().max_pass_tokens;
            let end = (run.prefill_at + chunk).min(run.prompt.len());
            let chunk = &run.prompt[run.prefill_at..end];
            let out = forward(self.model, chunk, &mut self.cache, Logits::Last)?;
            self.tokens.extend_from_slice(chunk);
            run.prefill_at = end;
            if end < run.prompt.len() {
                return Ok(Step::Prefill {
                    done: end,
                    total: run.prompt.len(),
                });
            }
            run.logits = Some(out.to_f32_vec()?);
            run.prompt_done();
        }
        if run.at_limit() {
            return Ok(self.finish(FinishReason::Length, String::new()));
        }
        let (id, logits) = match run.logits.take() {
            Some(logits) => (run.sampler.sample(&logits, &self.tokens), logits),
            None => {
                if self.cache.len() == self.cache.max_len() {
                    return Ok(self.finish(FinishReason::ContextFull, String::new()));
                }
                let last = *self.tokens.last().expect("a prompt token ran");
                let (model, cache) = (self.model, &mut self.cache);
                let on_gpu = matches!(model.device(), Device::Cuda(_));
                let ids_only = run.options.logprobs.is_none();
                if run.sampler.is_argmax() && ids_only {
                    // Only the id crosses from the device.
                    let id = self.decode.greedy(model, cache, last)?;
                    run.sampler.accept(id);
                    (id, Vec::new())
                } else if let Some((settings, draw)) = (on_gpu && ids_only)
                    .then(|| run.sampler.device_draw())
                    .flatten()
                {
                    let id = self.decode.sample(model, cache, last, settings, draw)?;
                    run.sampler.accept(id);
                    (id, Vec::new())
                } else {
                    let logits = self.decode.logits(model, cache, last)?;
                    (run.sampler.sample(&logits, &self.tokens), logits)
                }
            }
        };
        match run.accept(id, &logits, self.tokenizer)? {
            Accepted::Token(token) => {
                self.tokens.push(id);
                Ok(Step::Token(token))
            }
            Accepted::End(finish, text) => {
                if finish == FinishReason::Stop {
                    self.tokens.push(id);
                }
                Ok(self.finish(finish, text))
            }
        }
    }

    /// Stops the generation in progress, if any, and returns its statistics.
    pub fn cancel(&mut self) -> Option<GenerationStats> {
        let run = self.run.take()?;
        Some(run.stats(FinishReason::Cancelled))
    }

    /// Ends the generation; see [`Run::end`].
    fn finish(&mut self, finish: FinishReason, text: String) -> Step {
        self.run
            .take()
            .expect("a generation is running")
            .end(finish, text)
    }
}

/// What became of a sampled token.
pub(crate) enum Accepted {
    Token(SampledToken),
    /// The generation ends with it (end of text, or a stop string; `String` is the text
    /// before the stop string not yet emitted).
    End(FinishReason, String),
}

impl<'m> Run<'m> {
    pub(crate) fn new(
        tokenizer: &'m Tokenizer,
        prompt: &[u32],
        options: &GenerateOptions,
        reused: usize,
    ) -> Run<'m> {
        Run {
            options: options.clone(),
            prompt: prompt.to_vec(),
            reused,
            prefill_at: reused,
            logits: None,
            sampler: Sampler::new(options.sampler.clone()),
            decoder: tokenizer.stream_decoder(),
            stop: StopMatcher::new(&options.stop),
            generated: 0,
            started: Instant::now(),
            prefill_time: Duration::ZERO,
            decode_start: None,
        }
    }

    /// The first `tokens` of the prompt were found cached (counted in the statistics).
    pub(crate) fn reuse(&mut self, tokens: usize) {
        self.reused = tokens;
        self.prefill_at = tokens;
    }

    /// Marks the prompt as done: the first token is being picked.
    pub(crate) fn prompt_done(&mut self) {
        self.prefill_time = self.started.elapsed();
        self.decode_start = Some(Instant::now());
    }

    /// Whether `max_tokens` have been generated.
    pub(crate) fn at_limit(&self) -> bool {
        self.generated == self.options.max_tokens
    }

    /// Takes sampled token `id` (with the `logits` it was drawn from, when they are on the
    /// host; needed for log-probabilities): counts it, decodes its text, watches for the end
    /// of text and stop strings.
    pub(crate) fn accept(
        &mut self,
        id: u32,
        logits: &[f32],
        tokenizer: &Tokenizer,
    ) -> Result<Accepted> {
        self.generated += 1;
        if tokenizer.is_eog(id) && !self.options.ignore_eos {
            return Ok(Accepted::End(FinishReason::EndOfText, String::new()));
        }
        let logprobs = self
            .options
            .logprobs
            .map(|top| token_logprobs(logits, id, top));
        let piece = self.decoder.push(id)?.unwrap_or_default();
        let (text, stopped) = self.stop.push(&piece);
        if stopped {
            // Emit the text before the stop string with this token, then end.
            return Ok(Accepted::End(FinishReason::Stop, text));
        }
        Ok(Accepted::Token(SampledToken { id, text, logprobs }))
    }

    /// The generation's last step; `text` is final text not yet emitted. Without a stop
    /// string, whatever the decoder and the stop matcher still hold is released after it.
    pub(crate) fn end(mut self, finish: FinishReason, mut text: String) -> Step {
        if finish != FinishReason::Stop {
            let tail = self.decoder.finish().unwrap_or_default();
            let (emit, _) = self.stop.push(&tail);
            text = text + &emit + &self.stop.finish();
        }
        Step::Finished {
            text,
            stats: self.stats(finish),
        }
    }

    pub(crate) fn stats(&self, finish: FinishReason) -> GenerationStats {
        GenerationStats {
            prompt_tokens: self.prompt.len(),
            reused_tokens: self.reused,
            generated_tokens: self.generated,
            prefill_time: self.prefill_time,
            decode_time: self.decode_start.map_or(Duration::ZERO, |t| t.elapsed()),
            finish,
        }
    }
}

/// The log-probability of `id` and of the `top` most likely tokens under `logits`.
fn token_logprobs(logits: &[f32], id: u32, top: usize) -> TokenLogprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_total = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() < top || l > best[best.len() - 1].1 {
                let at = best.partition_point(|&(_, b)| b >= l);
                best.insert(at, (i as u32, l));
                best.truncate(top);
            }
        }
    }
    TokenLogprobs {
        logprob: logits[id as usize] - log_total,
        top: best.into_iter().map(|(t, l)| (t, l - log_total)).collect(),
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_log_softmax_with_sorted_alternatives() {
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let lp = token_logprobs(&logits, 2, 2);
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((lp.logprob - (2f32.exp() / total).ln()).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2]);
        assert!((lp.top[0].1 - (3f32.exp() / total).ln()).abs() < 1e-6);
        assert!(token_logprobs(&logits, 0, 0).top.is_empty());
    }
}
