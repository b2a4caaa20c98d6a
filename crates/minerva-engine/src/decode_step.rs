//! One decode step: a token in at the end of the cache, the next token's logits (or their
//! argmax) out. On a GPU the whole step (every layer, the LM head and the argmax) is
//! captured once as a CUDA graph and then replayed with one launch per token; only the
//! token id and its position go in, and only the picked id (or, for sampling on the host,
//! the logits) comes back.
//!
//! A graph replays on the buffers it was captured with, so it is captured again whenever the
//! cache's storage moves (it grows by doubling: a handful of captures per conversation).

use std::sync::Arc;

use minerva_core::backends::cuda::{self, CudaDevice, CudaGraph};
use minerva_core::ops::{Draw, SampleSettings};
use minerva_core::{ops, Array, DType, Device};
use minerva_models::{CausalLm, KvCache, Logits};

use crate::generate::forward;
use crate::kv_cache::ContiguousKvCache;
use crate::sampler::argmax;

/// Runs decode steps for one cache; keeps the captured graph between them.
#[derive(Default)]
pub struct DecodeStep {
    captured: Option<Captured>,
}

/// A graph of one decode step and the arrays it reads and writes in place.
struct Captured {
    graph: CudaGraph,
    /// `[1]` i32 inputs, rewritten before each replay.
    ids: Array,
    positions: Array,
    /// `[1, vocab]` f32 logits and their `[1]` i32 argmax, rewritten by each replay.
    logits: Array,
    greedy: Array,
    /// What the graph was captured against: the model (by address) and the cache capacity.
    model: usize,
    capacity: usize,
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
        cache: &mut ContiguousKvCache,
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
        cache: &mut ContiguousKvCache,
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
        cache: &mut ContiguousKvCache,
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
        cache: &mut ContiguousKvCache,
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
        cache.reserve(1)?;
        let model_id = model as *const dyn CausalLm as *const () as usize;
        let position = cache.len() as i32;
        let stale = self
            .captured
            .as_ref()
            .is_none_or(|c| c.model != model_id || c.capacity != cache.capacity());
        if stale {
            // Drop the old graph first: its arena goes back to the driver.
            self.captured = None;
            let gpu = cuda::device(ordinal)?;
            self.captured = Some(Captured::new(&gpu, model, cache, model_id)?);
        } else {
            // The captured pass advanced the cache when it was recorded; a replay must too.
            cache.advance(1);
        }
        let c = self.captured.as_mut().expect("captured above");
        c.ids.overwrite(&Array::from_i32(&[token as i32], &[1])?)?;
        c.positions
            .overwrite(&Array::from_i32(&[position], &[1])?)?;
        c.graph.launch()?;
        Ok(Output::Replayed(c))
    }
}

impl Captured {
    /// Records one decode step at the cache's end (this advances the cache by one token,
    /// which the first launch of the graph then fills).
    fn new(
        gpu: &Arc<CudaDevice>,
        model: &dyn CausalLm,
        cache: &mut ContiguousKvCache,
        model_id: usize,
    ) -> minerva_models::Result<Captured> {
        let device = model.device();
        let ids = Array::zeros_on(DType::I32, &[1], device)?;
        let positions = Array::zeros_on(DType::I32, &[1], device)?;
        let (capacity, len) = (cache.capacity(), cache.len());
        let captured = gpu.capture(|| -> minerva_models::Result<_> {
            let logits = model.forward_ids(&ids, &positions, cache, Logits::Last)?;
            let greedy = ops::argmax(&logits)?;
            Ok((logits, greedy))
        });
        let (graph, (logits, greedy)) = captured.inspect_err(|_| cache.truncate(len))?;
        Ok(Captured {
            graph,
            ids,
            positions,
            logits,
            greedy,
            model: model_id,
            capacity,
        })
    }
}
