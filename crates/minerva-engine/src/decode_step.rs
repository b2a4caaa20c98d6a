//! One decode step: a token in at the end of the cache, the next token's logits (or their
//! argmax) out. On a GPU the whole step (every layer, the LM head and the argmax) is
//! captured once as a CUDA graph and then replayed with one launch per token; only the
//! token id and its position go in, and only the picked id (or, for sampling on the host,
//! the logits) comes back.
//!
//! A graph replays on the buffers it was captured with: the page tables are rewritten in
//! place before each replay, and the graph is captured again whenever the cache's pools
//! move (they grow by doubling: a handful of captures per conversation).
//!
//! [`BatchDecode`] does the same for a batch's decode steps: one graph per number of
//! sequences, each replayed whenever that many sequences bring one token each.

use std::collections::HashMap;

use minerva_core::ops::{Draw, SampleSettings};
use minerva_core::{ops, Array, DType, Device, Replay};
use minerva_models::{CausalLm, KvCache, Logits};

use crate::generate::forward;
use crate::kv_cache::{PagedKvCache, PassInputs, SeqId, SequenceCache};
use crate::sampler::argmax;

/// Runs decode steps for one cache; keeps the captured graph between them.
#[derive(Default)]
pub struct DecodeStep {
    captured: Option<Captured>,
}

/// A graph of one decode step and the arrays it reads and writes in place.
struct Captured {
    graph: Replay,
    /// `[n]` i32 token ids (one per sequence) and the pass's positions and page tables,
    /// rewritten before each replay.
    ids: Array,
    inputs: PassInputs,
    /// `[n, vocab]` f32 logits and their `[n]` i32 argmax, rewritten by each replay.
    logits: Array,
    greedy: Array,
    /// What the graph was captured against: the model (by address) and the pools' epoch.
    model: usize,
    epoch: u64,
}

/// What a step hands back.
enum Output<'a> {
    /// Logits from an ordinary forward pass (host or GPU).
    Eager(Array),
    /// The graph's outputs, valid until its next replay.
    Replayed(&'a Captured),
}

impl Output<'_> {
    /// The step's `[1, vocab]` logits, wherever they are.
    fn logits(&self) -> &Array {
        match self {
            Output::Eager(logits) => logits,
            Output::Replayed(c) => &c.logits,
        }
    }
}

/// The id in a `[1]` i32 array, brought to the host.
fn host_id(ids: &Array) -> minerva_models::Result<u32> {
    Ok(ids.to_device(Device::Cpu)?.as_i32()?[0] as u32)
}

impl DecodeStep {
    pub fn new() -> DecodeStep {
        DecodeStep::default()
    }

    /// Runs `token` at position `cache.len()` and returns the most likely next token.
    pub fn greedy(
        &mut self,
        model: &dyn CausalLm,
        cache: &mut SequenceCache,
        token: u32,
    ) -> minerva_models::Result<u32> {
        Ok(match self.run(model, cache, token)? {
            Output::Eager(logits) => argmax(&logits.to_f32_vec()?),
            Output::Replayed(c) => host_id(&c.greedy)?,
        })
    }

    /// Runs `token` at position `cache.len()` and draws the next token where the logits are
    /// (`ops::sample`): on a GPU only the id comes back.
    pub fn sample(
        &mut self,
        model: &dyn CausalLm,
        cache: &mut SequenceCache,
        token: u32,
        settings: SampleSettings,
        draw: Draw,
    ) -> minerva_models::Result<u32> {
        let out = self.run(model, cache, token)?;
        host_id(&ops::sample(out.logits(), &[settings], &[draw])?)
    }

    /// Runs `token` at position `cache.len()` and returns the next token's logits.
    pub fn logits(
        &mut self,
        model: &dyn CausalLm,
        cache: &mut SequenceCache,
        token: u32,
    ) -> minerva_models::Result<Vec<f32>> {
        Ok(self.run(model, cache, token)?.logits().to_f32_vec()?)
    }

    /// The captured graph's operations per step (kernels, copies), if a graph runs the steps.
    pub fn graph_nodes(&self) -> Option<usize> {
        self.captured.as_ref().map(|c| c.graph.nodes())
    }

    fn run(
        &mut self,
        model: &dyn CausalLm,
        cache: &mut SequenceCache,
        token: u32,
    ) -> minerva_models::Result<Output<'_>> {
        if !model.device().records() {
            return Ok(Output::Eager(forward(
                model,
                &[token],
                cache,
                Logits::Last,
            )?));
        };
        let (cache, seq) = cache.parts();
        cache.reserve(seq, 1)?;
        let model_id = model as *const dyn CausalLm as *const () as usize;
        let pass = [(seq, 1)];
        let stale = self
            .captured
            .as_ref()
            .is_none_or(|c| c.model != model_id || c.epoch != cache.epoch());
        if stale {
            // Drop the old graph first: its arena goes back to the driver.
            self.captured = None;
            let inputs = cache.inputs(&pass)?;
            self.captured = Some(Captured::new(model, cache, inputs, model_id)?);
        }
        let c = self.captured.as_mut().expect("captured above");
        c.replay(cache, &pass, &[token as i32], !stale)?;
        Ok(Output::Replayed(c))
    }
}

/// Captured decode steps of a batch on a GPU: one graph per number of sequences.
#[derive(Default)]
pub struct BatchDecode {
    graphs: HashMap<usize, Captured>,
}

/// Graphs kept at most (each holds its activations); the oldest size goes first.
const MAX_BATCH_GRAPHS: usize = 16;

impl BatchDecode {
    /// Runs one token of each of `seqs` (token `ids[i]` at the end of sequence `seqs[i]`,
    /// whose pages are reserved) and returns their `[n, vocab]` logits, valid until the
    /// next run; `None` off the GPU or while kernels are profiled (the caller runs the pass
    /// itself).
    pub fn run(
        &mut self,
        model: &dyn CausalLm,
        cache: &mut PagedKvCache,
        seqs: &[SeqId],
        ids: &[i32],
    ) -> minerva_models::Result<Option<&Array>> {
        let device = model.device();
        if !device.records() || device.times_kernels()? {
            // Kernels are timed one by one only outside graphs.
            return Ok(None);
        }
        let model_id = model as *const dyn CausalLm as *const () as usize;
        self.graphs
            .retain(|_, c| c.model == model_id && c.epoch == cache.epoch());
        let pass: Vec<(SeqId, usize)> = seqs.iter().map(|&s| (s, 1)).collect();
        let n = seqs.len();
        let fresh = !self.graphs.contains_key(&n);
        if fresh {
            if self.graphs.len() >= MAX_BATCH_GRAPHS {
                let oldest = *self.graphs.keys().min().expect("full");
                self.graphs.remove(&oldest);
            }
            let inputs = cache.inputs(&pass)?;
            let c = Captured::new(model, cache, inputs, model_id)?;
            self.graphs.insert(n, c);
        }
        let c = self.graphs.get_mut(&n).expect("captured above");
        c.replay(cache, &pass, ids, !fresh)?;
        Ok(Some(&c.logits))
    }
}

impl Captured {
    /// Records one decode step of the pass `inputs` describes, one token per sequence
    /// (recording runs nothing: the first launch of the graph does the step).
    fn new(
        model: &dyn CausalLm,
        cache: &mut PagedKvCache,
        inputs: PassInputs,
        model_id: usize,
    ) -> minerva_models::Result<Captured> {
        let tokens = inputs.positions.numel();
        let ids = Array::zeros_on(DType::I32, &[tokens], model.device())?;
        let epoch = cache.epoch();
        let (graph, (logits, greedy)) =
            model.device().record(|| -> minerva_models::Result<_> {
                // The caller advances the sequence after each launch, the first one included.
                let mut view = cache.recording_view(&inputs);
                let logits = model.forward_ids(&ids, &inputs.positions, &mut view, Logits::Last)?;
                let greedy = ops::argmax(&logits)?;
                Ok((logits, greedy))
            })?;
        Ok(Captured {
            graph,
            ids,
            inputs,
            logits,
            greedy,
            model: model_id,
            epoch,
        })
    }

    /// Runs the step for `pass` (the sequences it was captured for, or as many others when
    /// `refill`), token `ids[i]` for sequence i, and advances them.
    fn replay(
        &mut self,
        cache: &mut PagedKvCache,
        pass: &[(SeqId, usize)],
        ids: &[i32],
        refill: bool,
    ) -> minerva_models::Result<()> {
        if refill {
            cache.refill(&mut self.inputs, pass)?;
        }
        self.ids.overwrite(&Array::from_i32(ids, &[ids.len()])?)?;
        self.graph.launch()?;
        cache.view(&self.inputs).advance(1);
        Ok(())
    }
}
