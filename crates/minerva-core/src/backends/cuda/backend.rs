//! CUDA as a [`Backend`]: each op to its kernels in `ops` (found by the device its
//! arguments are on).

use std::sync::Arc;

use super::{fused, ops, CudaDevice, CudaGraph};
use crate::backends::{Backend, Recorded};
use crate::device_stats::KernelTime;
use crate::graph::Plan;
use crate::ops::{AttentionOptions, Draw, Rope, SampleSettings, SwigluExperts, TableDims};
use crate::{Array, Device, Error, KvPages, PageTable, Result};

/// Every CUDA GPU's backend.
pub(crate) struct Cuda;

/// The GPU `device` names.
fn gpu(device: Device) -> Result<Arc<CudaDevice>> {
    match device {
        Device::Cuda(n) => super::device(n),
        other => Err(Error::Device(format!("the CUDA backend asked for {other}"))),
    }
}

impl Recorded for CudaGraph {
    fn launch(&self) -> Result<()> {
        CudaGraph::launch(self)
    }

    fn nodes(&self) -> usize {
        CudaGraph::nodes(self)
    }
}

impl Backend for Cuda {
    fn open(&self, device: Device) -> Result<()> {
        gpu(device).map(drop)
    }

    fn name(&self, device: Device) -> Result<String> {
        Ok(gpu(device)?.name().to_string())
    }

    fn copy_bandwidth(&self, device: Device, bytes: usize, reps: usize) -> Result<f64> {
        gpu(device)?.measure_bandwidth(bytes, reps)
    }

    fn times_kernels(&self, device: Device) -> Result<bool> {
        Ok(gpu(device)?.is_profiling())
    }

    fn take_kernel_times(&self, device: Device) -> Result<Vec<KernelTime>> {
        gpu(device)?.take_profile()
    }

    fn records(&self) -> bool {
        true
    }

    fn record(
        &self,
        device: Device,
        queue: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Box<dyn Recorded>> {
        let (graph, ()) = gpu(device)?.capture(queue)?;
        Ok(Box::new(graph))
    }

    fn run_plan(&self, device: Device, plan: &Plan, inputs: &[&Array]) -> Result<Vec<Array>> {
        fused::run_plan(&gpu(device)?, plan, inputs)
    }

    fn embedding(&self, table: &Array, ids: &Array) -> Result<Array> {
        ops::embedding(table, ids)
    }

    fn rope(&self, x: &Array, positions: &Array, rope: &Rope) -> Result<Array> {
        ops::rope(x, positions, rope)
    }

    fn deinterleave(&self, x: &Array, half_shape: &[usize]) -> Result<(Array, Array)> {
        ops::deinterleave(x, half_shape)
    }

    fn argmax(&self, x: &Array) -> Result<Array> {
        ops::argmax(x)
    }

    fn sample(&self, x: &Array, settings: &[SampleSettings], draws: &[Draw]) -> Result<Array> {
        ops::sample(x, settings, draws)
    }

    fn top_k_softmax(&self, scores: &Array, k: usize) -> Result<(Array, Array)> {
        ops::top_k_softmax(scores, k)
    }

    fn gather_linear(
        &self,
        x: &Array,
        w: &Array,
        bias: Option<&Array>,
        ids: &Array,
    ) -> Result<Array> {
        ops::gather_linear(x, w, bias, ids)
    }

    fn weighted_sum(&self, y: &Array, weights: &Array) -> Result<Array> {
        ops::weighted_sum(y, weights)
    }

    fn mixture_of_experts(
        &self,
        x: &Array,
        experts: &SwigluExperts<'_>,
        ids: &Array,
        weights: &Array,
    ) -> Result<Option<Array>> {
        ops::mixture_of_experts(x, experts, ids, weights)
    }

    fn transpose_last2(&self, x: &Array, out_shape: &[usize]) -> Result<Array> {
        ops::transpose_last2(x, out_shape)
    }

    fn copy_prefix(&self, src: &Array, dst: &mut Array, bytes: usize) -> Result<()> {
        ops::copy_strided(src, dst, 1, bytes, 0, 0)
    }

    fn write_kv_pages(
        &self,
        pages: &mut KvPages,
        table: PageTable<'_>,
        _dims: &TableDims,
        positions: &Array,
        new: &Array,
    ) -> Result<()> {
        ops::write_kv_pages(pages, table, positions, new)
    }

    fn paged_attention(
        &self,
        q: &Array,
        k: &KvPages,
        v: &KvPages,
        table: PageTable<'_>,
        _dims: &TableDims,
        positions: &Array,
        opts: AttentionOptions<'_>,
    ) -> Result<Array> {
        ops::paged_attention(q, k, v, table, positions, opts)
    }
}
