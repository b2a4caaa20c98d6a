//! Continuous batching: many generations advanced together, one forward pass per step for
//! all of them, so each weight is read once per step whatever the number of users.
//! Generations join and leave between any two steps; their keys and values live in one
//! paged KV cache, and a finished or cancelled generation's pages are free at once.
//!
//! A step takes every generation that waits for one token (decoding) and then prompt
//! chunks, in arrival order, while the step's token budget lasts. A prompt runs in chunks of
//! `max_pass_tokens` (the last one shorter) and a chunk is never cut to fit the budget: it
//! waits for the next step instead. So a sequence runs the same passes, and its rows the
//! same arithmetic, alone or beside others (batch invariance), as long as every kernel
//! treats rows independently of their neighbours (the CPU backend's do; see the tests).
//!
//! When a fixed pool runs out of pages, the newest generation is preempted: its pages are
//! freed and its tokens (prompt and what it generated so far) run again later, as a prompt,
//! before it continues; nothing it already emitted is emitted again.

use std::collections::VecDeque;

use minerva_core::{ops, Array, Device};
use minerva_models::tokenizer::Tokenizer;
use minerva_models::{CausalLm, Logits};

use crate::decode_step::BatchDecode;
use crate::error::{EngineError, Result};
use crate::generate::{Accepted, FinishReason, GenerateOptions, GenerationStats, Run, Step};
use crate::kv_cache::{KvConfig, PagedKvCache, SeqId};

/// How many generations run together and how much memory their KV cache takes.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// Generations advanced together; more wait.
    pub max_batch: usize,
    /// Tokens in one step (decoded tokens plus prompt chunks); at least `max_batch`.
    pub max_step_tokens: usize,
    /// Most tokens of one generation (prompt and answer); the model's context when `None`.
    pub max_context: Option<usize>,
    /// Pages of the full-attention pool; grows on demand when `None`.
    pub kv_pages: Option<usize>,
    pub kv: KvConfig,
    /// Whether computed pages are kept for later generations that begin with the same
    /// tokens (see [`PagedKvCache::enable_prefix_cache`]).
    pub prefix_cache: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 32,
            max_step_tokens: 512,
            max_context: None,
            kv_pages: None,
            kv: KvConfig::default(),
            prefix_cache: true,
        }
    }
}

/// A generation's handle in a [`Batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GenId(u64);

struct Entry<'m> {
    id: GenId,
    seq: SeqId,
    run: Run<'m>,
    /// Every token whose keys and values the generation needs: the prompt, then what it
    /// generated. The cache holds the first `cache.len(seq)` of them.
    history: Vec<u32>,
    /// The prefix cache's version when this (still empty) sequence last took what it held
    /// of `history`; none since the sequence (re)started.
    prefix_looked: Option<u64>,
}

/// Generations advanced together; see the module documentation.
pub struct Batch<'m> {
    model: &'m dyn CausalLm,
    tokenizer: &'m Tokenizer,
    cache: PagedKvCache,
    config: BatchConfig,
    /// In arrival order.
    entries: VecDeque<Entry<'m>>,
    next_id: u64,
    /// Captured steps where every generation decodes one token (GPU).
    graphs: BatchDecode,
}

/// What one entry brings to a step.
struct Planned {
    index: usize,
    tokens: usize,
}

impl<'m> Batch<'m> {
    pub fn new(
        model: &'m dyn CausalLm,
        tokenizer: &'m Tokenizer,
        config: BatchConfig,
    ) -> Result<Batch<'m>> {
        let max_batch = config.max_batch.max(1);
        // A fixed pool holds at least one generation of the longest context.
        let max_len = config
            .max_context
            .unwrap_or(model.info().context_length)
            .min(model.info().context_length);
        let config = BatchConfig {
            max_batch,
            // A step fits a decoded token of every generation and a whole prompt chunk.
            max_step_tokens: config
                .max_step_tokens
                .max(max_batch)
                .max(config.kv.max_pass_tokens),
            kv_pages: config
                .kv_pages
                .map(|p| p.max(max_len.div_ceil(config.kv.page_size.max(1)))),
            ..config
        };
        let mut cache = PagedKvCache::new(
            model.info(),
            config.max_context,
            config.kv,
            config.kv_pages,
            config.max_batch,
        )?;
        if config.prefix_cache {
            cache.enable_prefix_cache();
        }
        Ok(Batch {
            model,
            tokenizer,
            cache,
            config,
            entries: VecDeque::new(),
            next_id: 0,
            graphs: BatchDecode::default(),
        })
    }

    /// Generations in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether another generation may join.
    pub fn has_room(&self) -> bool {
        self.entries.len() < self.config.max_batch
    }

    /// Most tokens one generation may hold.
    pub fn max_context(&self) -> usize {
        self.cache.max_len()
    }

    /// Tokens cached over all generations, and the bytes of the pages they hold.
    pub fn kv_usage(&self) -> (usize, usize) {
        let tokens = self.entries.iter().map(|e| self.cache.len(e.seq)).sum();
        (tokens, self.cache.bytes_in_use())
    }

    /// Bytes of the cache's pools, pages in use or free.
    pub fn kv_pool_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Adds a generation of a continuation of `prompt`; it runs from the next step.
    pub fn add(&mut self, prompt: &[u32], options: &GenerateOptions) -> Result<GenId> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() > self.cache.max_len() {
            return Err(EngineError::PromptTooLong {
                tokens: prompt.len(),
                context: self.cache.max_len(),
            });
        }
        let id = GenId(self.next_id);
        self.next_id += 1;
        let seq = self.cache.add_sequence();
        self.entries.push_back(Entry {
            id,
            seq,
            run: Run::new(self.tokenizer, prompt, options, 0),
            history: prompt.to_vec(),
            prefix_looked: None,
        });
        Ok(id)
    }

    /// Stops generation `id` and frees its pages; its statistics, if it was in the batch.
    pub fn cancel(&mut self, id: GenId) -> Option<GenerationStats> {
        let at = self.entries.iter().position(|e| e.id == id)?;
        let entry = self.entries.remove(at).expect("found above");
        self.cache.remove_sequence(entry.seq);
        Some(entry.run.stats(FinishReason::Cancelled))
    }

    /// Runs one forward pass over the generations' next tokens and returns what happened to
    /// each generation that took part (finished ones have left the batch).
    pub fn step(&mut self) -> Result<Vec<(GenId, Step)>> {
        let mut events = Vec::new();
        // Generations that have nothing left to run end here (a length limit reached by the
        // token sampled last step, or a full context).
        let mut i = 0;
        while i < self.entries.len() {
            let e = &self.entries[i];
            let pending = e.history.len() - self.cache.len(e.seq);
            let ended = if pending == 1 && e.run.at_limit() {
                Some(FinishReason::Length)
            } else if e.history.len() > self.cache.max_len() {
                Some(FinishReason::ContextFull)
            } else {
                None
            };
            match ended {
                Some(finish) => events.push(self.finish(i, finish, String::new())),
                None => i += 1,
            }
        }
        let plan = self.plan()?;
        if plan.is_empty() {
            return Ok(events);
        }
        let seqs: Vec<(SeqId, usize)> = plan
            .iter()
            .map(|p| (self.entries[p.index].seq, p.tokens))
            .collect();
        let mut ids = Vec::new();
        for p in &plan {
            let e = &self.entries[p.index];
            let start = self.cache.len(e.seq);
            ids.extend(e.history[start..start + p.tokens].iter().map(|&t| t as i32));
        }
        let model = self.model;
        // One token per generation: a captured step on the GPU.
        let replayed = if plan.iter().all(|p| p.tokens == 1) {
            let order: Vec<SeqId> = seqs.iter().map(|s| s.0).collect();
            self.graphs
                .run(model, &mut self.cache, &order, &ids)?
                .cloned()
        } else {
            None
        };
        let logits = match replayed {
            Some(logits) => logits,
            None => {
                let inputs = self.cache.inputs(&seqs)?;
                let ids = Array::from_i32(&ids, &[ids.len()])?;
                let mut view = self.cache.view(&inputs);
                // On the compute pool, as `generate::forward` runs a pass.
                rayon::scope(|_| {
                    model.forward_ids(&ids, &inputs.positions, &mut view, Logits::Last)
                })?
            }
        };
        // Rows of generations whose pending tokens all ran now pick a token.
        let picking: Vec<usize> = plan
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                let e = &self.entries[p.index];
                self.cache.len(e.seq) == e.history.len()
            })
            .map(|(row, _)| row)
            .collect();
        for p in &plan {
            let e = &self.entries[p.index];
            self.cache.publish(e.seq, &e.history);
        }
        let picks = self.pick(&plan, &picking, &logits)?;
        let mut leaving = Vec::new();
        for (row, p) in plan.iter().enumerate() {
            let e = &mut self.entries[p.index];
            let Some((id, row_logits)) = picks.get(&row) else {
                let done = self.cache.len(e.seq);
                let total = e.history.len();
                events.push((e.id, Step::Prefill { done, total }));
                continue;
            };
            if e.run.at_limit() {
                // `max_tokens` of 0: the prompt ran, nothing is generated.
                leaving.push((p.index, FinishReason::Length, String::new()));
                continue;
            }
            if e.history.len() == e.run.prompt.len() {
                e.run.prompt_done();
            }
            match e.run.accept(*id, row_logits, self.tokenizer)? {
                Accepted::Token(token) => {
                    e.history.push(*id);
                    events.push((e.id, Step::Token(token)));
                }
                Accepted::End(finish, text) => leaving.push((p.index, finish, text)),
            }
        }
        // Remove from the back so indices stay valid.
        leaving.sort_by_key(|l| std::cmp::Reverse(l.0));
        for (index, finish, text) in leaving {
            events.push(self.finish(index, finish, text));
        }
        Ok(events)
    }

    /// Ends entry `index` and frees its pages.
    fn finish(&mut self, index: usize, finish: FinishReason, text: String) -> (GenId, Step) {
        let entry = self.entries.remove(index).expect("a live entry");
        self.cache.remove_sequence(entry.seq);
        (entry.id, entry.run.end(finish, text))
    }

    /// Chooses this step's work: every generation waiting for one token, then prompt chunks
    /// in arrival order while the budget lasts; reserves their pages, preempting the newest
    /// generations when a fixed pool is full.
    fn plan(&mut self) -> Result<Vec<Planned>> {
        let chunk = self.cache.config().max_pass_tokens;
        let mut budget = self.config.max_step_tokens;
        let mut plan = Vec::new();
        let pending = |b: &Batch<'_>, i: usize| {
            let e = &b.entries[i];
            e.history.len() - b.cache.len(e.seq)
        };
        // Generations about to start (or restart after preemption) take what the prefix
        // cache holds of their tokens: once, and again while they wait only if it gained
        // pages since.
        let version = self.cache.prefix_version();
        for e in self.entries.iter_mut() {
            if self.cache.len(e.seq) == 0 && e.prefix_looked != Some(version) {
                e.prefix_looked = Some(version);
                let cached = self.cache.attach_prefix(e.seq, &e.history);
                if e.history.len() == e.run.prompt.len() {
                    e.run.reuse(cached);
                }
            }
        }
        let decoding = (0..self.entries.len()).filter(|&i| pending(self, i) == 1);
        let prompts = (0..self.entries.len()).filter(|&i| pending(self, i) > 1);
        let order: Vec<usize> = decoding.chain(prompts).collect();
        for index in order {
            let tokens = pending(self, index).min(chunk);
            if tokens > budget {
                continue;
            }
            if !self.make_room(index, tokens, &plan)? {
                continue;
            }
            budget -= tokens;
            plan.push(Planned { index, tokens });
        }
        plan.sort_by_key(|p| p.index);
        Ok(plan)
    }

    /// Reserves pages for `tokens` more tokens of entry `index`, preempting newer entries
    /// not in `plan` while the pool is full; false when it cannot (the entry waits).
    fn make_room(&mut self, index: usize, tokens: usize, plan: &[Planned]) -> Result<bool> {
        loop {
            let seq = self.entries[index].seq;
            match self.cache.reserve(seq, tokens) {
                Ok(()) => return Ok(true),
                Err(_) if self.cache.len(seq) + tokens > self.cache.max_len() => {
                    return Err(EngineError::PromptTooLong {
                        tokens: self.cache.len(seq) + tokens,
                        context: self.cache.max_len(),
                    })
                }
                Err(err) => {
                    let victim = (index + 1..self.entries.len()).rev().find(|&v| {
                        plan.iter().all(|p| p.index != v) && self.cache.len(self.entries[v].seq) > 0
                    });
                    let Some(victim) = victim else {
                        if plan.is_empty() {
                            // Nothing else holds pages it could take: the pool is too small.
                            return Err(err.into());
                        }
                        return Ok(false);
                    };
                    self.preempt(victim);
                }
            }
        }
    }

    /// Frees entry `index`'s pages; its tokens run again, as a prompt, when it is next
    /// planned.
    fn preempt(&mut self, index: usize) {
        let e = &mut self.entries[index];
        self.cache.remove_sequence(e.seq);
        e.seq = self.cache.add_sequence();
        e.prefix_looked = None;
    }

    /// The tokens picked for the rows `picking` of `logits` (one row per planned entry),
    /// with the logits on the host where a row's sampler needs them.
    fn pick(
        &mut self,
        plan: &[Planned],
        picking: &[usize],
        logits: &Array,
    ) -> Result<std::collections::HashMap<usize, (u32, Vec<f32>)>> {
        let mut picks = std::collections::HashMap::new();
        if picking.is_empty() {
            return Ok(picks);
        }
        let run_of = |row: usize| &self.entries[plan[row].index].run;
        let on_gpu = matches!(self.model.device(), Device::Cuda(_));
        let ids_only = picking
            .iter()
            .all(|&r| run_of(r).options.logprobs.is_none());
        let greedy = picking.iter().all(|&r| run_of(r).sampler.is_argmax());
        let drawn = picking.iter().all(|&r| run_of(r).sampler.draws_on_device());
        // Picked on the device where every row allows it: only the ids come back.
        let device_ids = if !(on_gpu && ids_only) {
            None
        } else if greedy {
            Some(ops::argmax(logits)?)
        } else if drawn {
            let draws: Vec<_> = picking
                .iter()
                .map(|&r| {
                    let run = &mut self.entries[plan[r].index].run;
                    run.sampler.device_draw().expect("checked above")
                })
                .collect();
            // Rows that pick nothing this step draw too (with the first row's settings),
            // unused.
            let mut settings = vec![draws[0].0; plan.len()];
            let mut all_draws = vec![draws[0].1; plan.len()];
            for (&row, &(s, d)) in picking.iter().zip(&draws) {
                settings[row] = s;
                all_draws[row] = d;
            }
            Some(ops::sample(logits, &settings, &all_draws)?)
        } else {
            None
        };
        if let Some(ids) = device_ids {
            let ids = ids.to_device(Device::Cpu)?;
            let ids = ids.as_i32()?;
            for &row in picking {
                let id = ids[row] as u32;
                self.entries[plan[row].index].run.sampler.accept(id);
                picks.insert(row, (id, Vec::new()));
            }
            return Ok(picks);
        }
        let all = logits.to_f32_vec()?;
        let vocab = logits.dim(1);
        for &row in picking {
            let e = &mut self.entries[plan[row].index];
            let row_logits = all[row * vocab..(row + 1) * vocab].to_vec();
            let id = e.run.sampler.sample(&row_logits, &e.history);
            picks.insert(row, (id, row_logits));
        }
        Ok(picks)
    }
}
