//! What a benchmark asks of a device: its name, its copy bandwidth, and the time of each
//! kernel (when the GPU was opened with `MINERVA_CUDA_PROFILE=1`). Callers name no backend.

use crate::backends::backend;
use crate::{Device, Result};

/// GPU time of one kernel over the launches since the last report.
#[derive(Clone, Debug)]
pub struct KernelTime {
    pub name: &'static str,
    pub launches: usize,
    pub millis: f64,
}

impl Device {
    /// The device's name as its driver gives it ("cpu" for the host).
    pub fn name(&self) -> Result<String> {
        backend(*self).name(*self)
    }

    /// Memory bandwidth in GB/s (read plus written) of a copy kernel moving `bytes`, the
    /// best of `reps`; a GPU's only.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64> {
        backend(*self).copy_bandwidth(*self, bytes, reps)
    }

    /// Whether this device times its kernels one by one (`MINERVA_CUDA_PROFILE=1`), which
    /// only work run outside a replay ([`Device::record`]) can do.
    pub fn times_kernels(&self) -> Result<bool> {
        backend(*self).times_kernels(*self)
    }

    /// GPU time per kernel since the last call, slowest first; empty unless this device
    /// times its kernels ([`Device::times_kernels`]).
    pub fn take_kernel_times(&self) -> Result<Vec<KernelTime>> {
        backend(*self).take_kernel_times(*self)
    }
}
