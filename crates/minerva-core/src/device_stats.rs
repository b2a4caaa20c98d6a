//! What a benchmark asks of a device: its name, its copy bandwidth, and the time of each
//! kernel (when the GPU was opened with `MINERVA_CUDA_PROFILE=1`). Callers name no backend.

use crate::backends::cuda;
use crate::{Device, Error, Result};

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
        Ok(match *self {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(n) => cuda::device(n)?.name().to_string(),
        })
    }

    /// Memory bandwidth in GB/s (read plus written) of a copy kernel moving `bytes`, the
    /// best of `reps`; a GPU's only.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64> {
        match *self {
            Device::Cpu => Err(Error::Unsupported("copy bandwidth of the CPU".into())),
            Device::Cuda(n) => cuda::device(n)?.measure_bandwidth(bytes, reps),
        }
    }

    /// Whether this device times its kernels one by one (`MINERVA_CUDA_PROFILE=1`), which
    /// only work run outside a replay ([`Device::record`]) can do.
    pub fn times_kernels(&self) -> Result<bool> {
        Ok(match *self {
            Device::Cpu => false,
            Device::Cuda(n) => cuda::device(n)?.is_profiling(),
        })
    }

    /// GPU time per kernel since the last call, slowest first; empty unless this device
    /// times its kernels ([`Device::times_kernels`]).
    pub fn take_kernel_times(&self) -> Result<Vec<KernelTime>> {
        match *self {
            Device::Cpu => Ok(Vec::new()),
            Device::Cuda(n) => cuda::device(n)?.take_profile(),
        }
    }
}
