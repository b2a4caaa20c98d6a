//! Kernels, one folder per device, each implementing `Backend`. Ops check their
//! arguments, then call the backend of the device their arguments are on, once; only ops
//! and the graph runner call into here.

pub mod cpu;
pub mod cuda;
pub mod wgpu;

use crate::device_stats::KernelTime;
use crate::graph::Plan;
use crate::ops::{AttentionOptions, Draw, Rope, SampleSettings, SwigluExperts, TableDims};
use crate::{Array, Device, Error, KvPages, PageTable, Result};

/// Device work recorded once, replayed with one call (see [`crate::Replay`]).
pub(crate) trait Recorded: Send + Sync {
    fn launch(&self) -> Result<()>;
    /// Operations recorded (kernels, copies).
    fn nodes(&self) -> usize;
}

/// What a device computes for the ops. Arguments arrive checked (shapes, dtypes, all on
/// this backend's device); the lazy graph's ops (elementwise, norms, products) arrive as
/// [`Plan`]s.
pub(crate) trait Backend: Sync {
    /// Whether `device` can be used; if not, why (no driver, no such GPU).
    fn open(&self, device: Device) -> Result<()>;

    /// The device's name as its driver gives it.
    fn name(&self, device: Device) -> Result<String>;

    /// Memory bandwidth in GB/s (read plus written) of a copy kernel moving `bytes`, the best
    /// of `reps`.
    fn copy_bandwidth(&self, device: Device, _bytes: usize, _reps: usize) -> Result<f64> {
        Err(Error::Unsupported(format!("copy bandwidth of {device}")))
    }

    /// Whether the device times its kernels one by one.
    fn times_kernels(&self, _device: Device) -> Result<bool> {
        Ok(false)
    }

    /// Time per kernel since the last call, slowest first.
    fn take_kernel_times(&self, _device: Device) -> Result<Vec<KernelTime>> {
        Ok(Vec::new())
    }

    /// Whether work on the device can be recorded for replay.
    fn records(&self) -> bool {
        false
    }

    /// Records the device work `queue` enqueues instead of running it.
    fn record(
        &self,
        device: Device,
        _queue: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Box<dyn Recorded>> {
        Err(Error::Unsupported(format!(
            "recording work for replay on {device}"
        )))
    }

    /// Runs a compiled plan on `inputs` (f32, but for products' weights) on `device`.
    fn run_plan(&self, device: Device, plan: &Plan, inputs: &[&Array]) -> Result<Vec<Array>>;

    /// Rows `ids` (`[tokens]` i32, on any device) of `table` (`[vocab, d]`) as f32.
    fn embedding(&self, table: &Array, ids: &Array) -> Result<Array>;

    /// `x` (`[tokens, heads, head_dim]`) rotated at `positions`.
    fn rope(&self, x: &Array, positions: &Array, rope: &Rope) -> Result<Array>;

    /// The even and odd entries of the last axis, each of `half_shape`.
    fn deinterleave(&self, x: &Array, half_shape: &[usize]) -> Result<(Array, Array)>;

    /// Each row's first largest index, `[rows]` i32.
    fn argmax(&self, x: &Array) -> Result<Array>;

    /// One token drawn per row (`settings` and `draws` have one entry per row).
    fn sample(&self, x: &Array, settings: &[SampleSettings], draws: &[Draw]) -> Result<Array>;

    /// Per row, the top `k` indices (`[rows, k]` i32) and the softmax over them.
    fn top_k_softmax(&self, scores: &Array, k: usize) -> Result<(Array, Array)>;

    /// Gathered products: see [`crate::ops::gather_linear`].
    fn gather_linear(
        &self,
        x: &Array,
        w: &Array,
        bias: Option<&Array>,
        ids: &Array,
    ) -> Result<Array>;

    /// `Σ_s weights[t, s] * y[t, s]`.
    fn weighted_sum(&self, y: &Array, weights: &Array) -> Result<Array>;

    /// The mixture of experts as one fused op, or `None` where this backend composes it of
    /// the plain ops.
    fn mixture_of_experts(
        &self,
        _x: &Array,
        _experts: &SwigluExperts<'_>,
        _ids: &Array,
        _weights: &Array,
    ) -> Result<Option<Array>> {
        Ok(None)
    }

    /// `x` with its last two axes swapped, as f32 of `out_shape`.
    fn transpose_last2(&self, x: &Array, out_shape: &[usize]) -> Result<Array>;

    /// The first `bytes` of `dst` set to `src`'s.
    fn copy_prefix(&self, src: &Array, dst: &mut Array, bytes: usize) -> Result<()>;

    /// Writes `new` into `pages` at each token's position in its sequence.
    fn write_kv_pages(
        &self,
        pages: &mut KvPages,
        table: PageTable<'_>,
        dims: &TableDims,
        positions: &Array,
        new: &Array,
    ) -> Result<()>;

    /// Attention of `q` over the pages of each token's sequence.
    #[allow(clippy::too_many_arguments)]
    fn paged_attention(
        &self,
        q: &Array,
        k: &KvPages,
        v: &KvPages,
        table: PageTable<'_>,
        dims: &TableDims,
        positions: &Array,
        opts: AttentionOptions<'_>,
    ) -> Result<Array>;
}

/// The backend that computes on `device`.
pub(crate) fn backend(device: Device) -> &'static dyn Backend {
    match device {
        Device::Cpu => &cpu::Cpu,
        Device::Cuda(_) => &cuda::Cuda,
        Device::Wgpu(_) => &wgpu::Wgpu,
    }
}

/// The backend of `op`'s arguments, which must all be on one device.
pub(crate) fn backend_of(op: &str, arrays: &[&Array]) -> Result<&'static dyn Backend> {
    let first = arrays.first().map_or(Device::Cpu, |a| a.device());
    if let Some(other) = arrays.iter().find(|a| a.device() != first) {
        return Err(Error::Device(format!(
            "{op}: arguments on {first} and {}",
            other.device()
        )));
    }
    Ok(backend(first))
}
