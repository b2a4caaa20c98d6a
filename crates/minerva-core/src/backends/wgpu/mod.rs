//! The portable GPU backend: WGSL compute kernels run through wgpu on Vulkan, Metal or
//! DX12 (and, for tests on machines without a GPU, on Mesa's lavapipe: Vulkan on the CPU).
//!
//! A device is a wgpu adapter and its one queue; arrays on it live in storage buffers
//! (`WgpuBuffer`); each op is a pipeline compiled once from a kernel in `kernels/`.
//! Work is submitted in order, so a result is ready for any later submission.

mod backend;
mod buffer;
mod dispatch;

use std::sync::{Arc, Mutex, OnceLock};

use crate::{Error, Result};

pub(crate) use backend::Wgpu;
pub(crate) use buffer::WgpuBuffer;
pub use dispatch::{module_source, KERNELS};

/// One adapter, opened.
pub struct WgpuDevice {
    ordinal: usize,
    info: wgpu::AdapterInfo,
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// Pipelines by kernel name, built at first use.
    pipelines: Mutex<dispatch::Pipelines>,
}

impl WgpuDevice {
    /// The adapter's name and API, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)".
    pub fn name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Whether the adapter computes on the CPU (lavapipe, WARP): correct, not fast.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Device(format!(
            "wgpu:{} ({}): {what}: {e}",
            self.ordinal, self.info.name
        ))
    }
}

/// An adapter once opened, or why it could not be.
type Opened = OnceLock<std::result::Result<Arc<WgpuDevice>, String>>;

/// The adapters, best first (discrete, integrated, virtual, then CPU ones), each opened at
/// first use; or why there are none.
fn adapters() -> &'static std::result::Result<Vec<Opened>, String> {
    static ADAPTERS: OnceLock<std::result::Result<Vec<Opened>, String>> = OnceLock::new();
    ADAPTERS.get_or_init(|| {
        let found = found_adapters();
        match found.is_empty() {
            true => Err("no Vulkan, Metal or DX12 adapter (install a GPU driver, or Mesa's lavapipe: scripts/install-lavapipe)".into()),
            false => Ok(found.iter().map(|_| OnceLock::new()).collect()),
        }
    })
}

fn instance() -> &'static wgpu::Instance {
    static INSTANCE: OnceLock<wgpu::Instance> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
        descriptor.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
        wgpu::Instance::new(descriptor)
    })
}

/// Every adapter of the instance, best first.
fn found_adapters() -> Vec<wgpu::Adapter> {
    let mut all = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    all.sort_by_key(rank);
    all
}

/// Adapter `ordinal` (0 is the best), opened once per process.
pub fn device(ordinal: usize) -> Result<Arc<WgpuDevice>> {
    let slots = adapters()
        .as_ref()
        .map_err(|e| Error::Device(format!("wgpu: {e}")))?;
    let slot = slots.get(ordinal).ok_or_else(|| {
        Error::Device(format!(
            "wgpu:{ordinal}: no such adapter ({} found)",
            slots.len()
        ))
    })?;
    let message = |e: Error| match e {
        Error::Device(m) => m,
        other => other.to_string(),
    };
    slot.get_or_init(|| open(ordinal).map_err(message))
        .clone()
        .map_err(Error::Device)
}

/// How many adapters there are (0 where wgpu finds none).
pub fn device_count() -> usize {
    adapters().as_ref().map_or(0, Vec::len)
}

fn open(ordinal: usize) -> Result<Arc<WgpuDevice>> {
    let adapter = found_adapters()
        .into_iter()
        .nth(ordinal)
        .ok_or_else(|| Error::Device(format!("wgpu:{ordinal}: the adapter went away")))?;
    let info = adapter.get_info();
    let limits = adapter.limits();
    let descriptor = wgpu::DeviceDescriptor {
        label: Some("minerva"),
        // The adapter's own limits: model weights need the largest buffers it allows.
        required_limits: limits,
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&descriptor))
        .map_err(|e| Error::Device(format!("wgpu:{ordinal} ({}): opening it: {e}", info.name)))?;
    Ok(Arc::new(WgpuDevice {
        ordinal,
        info,
        device,
        queue,
        pipelines: Mutex::new(dispatch::Pipelines::default()),
    }))
}
