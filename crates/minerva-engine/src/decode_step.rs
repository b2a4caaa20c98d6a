//! One decode step: a token in at the end of the cache, the next token's logits (or their
//! argmax) out. On a GPU the whole step (every layer, the LM head and the argmax) is
//! captured once as a CUDA graph and then replayed with one launch per token; only the
//! token id and its position go in, and only the picked id (or, for sampling on the host,
//! the logits) comes back.
//!
//! A graph replays on the buffers it was captured with: the page tables are rewritten in
//! place before each replay, and the graph is captured again whenever the cache's pools
//! move (they grow by doubling: a handful of captures per conversation).

use std::sync::Arc;

use minerva_core::backends::cuda::{self, CudaDevice, CudaGraph};
use minerva_core::ops::{Draw, SampleSettings};
use minerva_core::{ops, Array, DType, Device};
use minerva_models::{CausalLm, KvCache, Logits};

use crate::generate::forward;
use crate::kv_cache::{PagedKvCache, PassInputs, SequenceCache};
use crate::sampler::argmax;

/// Runs decode steps for one cache; keeps the captured graph between them.
#[derive(Default)]
pub struct DecodeStep {
    captured: Option<Captured>,
}

/// A graph of one decode step and the arrays it reads and writes in place.
struct Captured {
    graph: CudaGraph,
    /// `[1]` i32 token id and the pass's positions and page tables, rewritten before each
    /// replay.
    ids: Array,
    inputs: PassInputs,
    /// `[1, vocab]` f32 logits and their `[1]` i32 argmax, rewritten by each replay.
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
        let Device::Cuda(ordinal) = model.device() else {
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
            let gpu = cuda::device(ordinal)?;
            let inputs = cache.inputs(&pass)?;
            self.captured = Some(Captured::new(&gpu, model, cache, inputs, model_id)?);
        }
        let c = self.captured.as_mut().expect("captured above");
        if !stale {
            cache.refill(&mut c.inputs, &pass)?;
        }
        c.ids.overwrite(&Array::from_i32(&[token as i32], &[1])?)?;
        c.graph.launch()?;
        cache.view(&c.inputs).advance(1);
        Ok(Output::Replayed(c))
    }
}

impl Captured {
    /// Records one decode step of the pass `inputs` describes (recording runs nothing: the
    /// first launch of the graph does the step).
    fn new(
        gpu: &Arc<CudaDevice>,
        model: &dyn CausalLm,
        cache: &mut PagedKvCache,
        inputs: PassInputs,
        model_id: usize,
    ) -> minerva_models::Result<Captured> {
        let ids = Array::zeros_on(DType::I32, &[1], model.device())?;
        let epoch = cache.epoch();
        let (graph, (logits, greedy)) = gpu.capture(|| -> minerva_models::Result<_> {
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
}
