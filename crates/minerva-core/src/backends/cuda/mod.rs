//! CUDA backend: one context and one stream per GPU, a caching memory pool, and kernels
//! written in CUDA C that NVRTC compiles at first use (cached on disk per GPU architecture).
//!
//! The driver and NVRTC are loaded at run time (cudarc's dynamic loading), so Minerva builds
//! and runs on machines without CUDA; [`device`] says why when no GPU can be used. All work
//! goes to the device's one stream in order, so a buffer returned to the pool may be handed
//! out again at once: every later use is queued behind every earlier one.

mod backend;
mod blas;
mod compile;
pub(crate) mod fused;
mod graph;
mod libraries;
pub(crate) mod ops;
mod pool;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{result as cu, sys, CudaContext};

use crate::device_stats::KernelTime;
use crate::{Error, Result};

pub(crate) use backend::Cuda;
pub use graph::CudaGraph;
pub(crate) use pool::DeviceBuffer;

/// The oldest driver whose API the bindings were generated for (CUDA 13.0).
const MIN_DRIVER_VERSION: i32 = 13000;

/// A GPU ready for work: context, stream, memory pool and compiled kernels.
pub struct CudaDevice {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: sys::CUstream,
    name: String,
    arch: (i32, i32),
    multiprocessors: u32,
    pool: Mutex<pool::Pool>,
    module: sys::CUmodule,
    functions: Mutex<HashMap<&'static str, sys::CUfunction>>,
    /// With `MINERVA_CUDA_PROFILE=1`: each launch's kernel name and start/end events.
    profile: Option<Mutex<Vec<TimedLaunch>>>,
    /// Set while work is captured into a graph (see [`CudaDevice::capture`]).
    capturing: AtomicBool,
    /// cuBLAS, opened at the first prompt product (`None`: not available here).
    blas: OnceLock<Option<blas::Blas>>,
}

/// A launch between two recorded events.
type TimedLaunch = (&'static str, sys::CUevent, sys::CUevent);

// SAFETY: the raw handles (stream, module, functions) are driver objects that CUDA allows
// any thread to use once the owning context is current, which every entry point ensures
// through `bind`; the mutable state (pool, function table) sits behind mutexes.
unsafe impl Send for CudaDevice {}
// SAFETY: as above.
unsafe impl Sync for CudaDevice {}

fn device_err(ordinal: usize, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("cuda:{ordinal}: {what}: {e}"))
}

/// Device `ordinal`, opened on first use and shared afterwards; a clear error when there is
/// no driver, the driver is too old, or no such GPU exists.
pub fn device(ordinal: usize) -> Result<Arc<CudaDevice>> {
    static OPEN: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .expect("device table");
    if let Some(d) = open.get(&ordinal) {
        return Ok(Arc::clone(d));
    }
    let d = Arc::new(CudaDevice::open(ordinal)?);
    open.insert(ordinal, Arc::clone(&d));
    Ok(d)
}

/// How many CUDA GPUs this machine has, or why none can be used.
pub fn device_count() -> Result<usize> {
    driver_ready()?;
    cu::device::get_count()
        .map(|n| n as usize)
        .map_err(|e| Error::Device(format!("counting CUDA devices: {e}")))
}

/// Checks that libcuda loads and is new enough.
fn driver_ready() -> Result<()> {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::Device(
            "no NVIDIA driver found (libcuda.so could not be loaded)".into(),
        ));
    }
    cu::init().map_err(|e| Error::Device(format!("initializing the CUDA driver: {e}")))?;
    let mut version = 0;
    // SAFETY: writes one int through a valid pointer.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| Error::Device(format!("reading the CUDA driver version: {e}")))?;
    if version < MIN_DRIVER_VERSION {
        return Err(Error::Device(format!(
            "the NVIDIA driver supports CUDA {}.{}; Minerva's CUDA backend needs {}.{} or newer",
            version / 1000,
            version % 1000 / 10,
            MIN_DRIVER_VERSION / 1000,
            MIN_DRIVER_VERSION % 1000 / 10
        )));
    }
    Ok(())
}

impl CudaDevice {
    fn open(ordinal: usize) -> Result<CudaDevice> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::Device(format!(
                "no CUDA device {ordinal} (this machine has {count})"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| device_err(ordinal, "context", e))?;
        let attr = |a| {
            ctx.attribute(a)
                .map_err(|e| device_err(ordinal, "device attributes", e))
        };
        use sys::CUdevice_attribute::*;
        let arch = (
            attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        let multiprocessors = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let stream = cu::stream::create(cu::stream::StreamKind::NonBlocking)
            .map_err(|e| device_err(ordinal, "creating a stream", e))?;
        let cubin = compile::kernels_cubin(arch).map_err(|e| device_err(ordinal, "kernels", e))?;
        // SAFETY: `cubin` is a complete CUBIN image for this device's architecture, and the
        // context is current (CudaContext::new bound it to this thread).
        let module = unsafe { cu::module::load_data(cubin.as_ptr().cast()) }
            .map_err(|e| device_err(ordinal, "loading the kernels", e))?;
        Ok(CudaDevice {
            ordinal,
            ctx,
            stream,
            name,
            arch,
            multiprocessors,
            pool: Mutex::new(pool::Pool::default()),
            module,
            functions: Mutex::new(HashMap::new()),
            profile: (std::env::var("MINERVA_CUDA_PROFILE").as_deref() == Ok("1"))
                .then(|| Mutex::new(Vec::new())),
            capturing: AtomicBool::new(false),
            blas: OnceLock::new(),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The GPU's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor).
    pub fn arch(&self) -> (i32, i32) {
        self.arch
    }

    pub fn multiprocessors(&self) -> u32 {
        self.multiprocessors
    }

    /// Free and total device memory in bytes.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.bind()?;
        cu::mem_get_info().map_err(|e| self.err("memory info", e))
    }

    /// Bytes the pool holds: (in use by arrays, cached for reuse, peak in use).
    pub fn pool_bytes(&self) -> (usize, usize, usize) {
        self.pool.lock().expect("pool").usage()
    }

    /// Waits until all queued work has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.not_capturing("waiting for the device")?;
        // SAFETY: the stream belongs to this device's context, which is current.
        unsafe { cu::stream::synchronize(self.stream) }.map_err(|e| self.err("synchronize", e))
    }

    fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| self.err("binding the context", e))
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        device_err(self.ordinal, what, e)
    }

    /// A buffer of at least `len` bytes from the pool (contents undefined).
    pub(crate) fn alloc(self: &Arc<Self>, len: usize) -> Result<DeviceBuffer> {
        self.bind()?;
        pool::alloc(self, len)
    }

    /// A copy of host bytes on the device.
    pub(crate) fn upload(self: &Arc<Self>, bytes: &[u8]) -> Result<DeviceBuffer> {
        let buf = self.alloc(bytes.len())?;
        self.write(buf.ptr(), bytes)?;
        Ok(buf)
    }

    /// Copies host bytes to device address `dst` (queued; `bytes` may go away at return).
    pub(crate) fn write(&self, dst: u64, bytes: &[u8]) -> Result<()> {
        self.bind()?;
        self.not_capturing("copying from the host")?;
        if bytes.is_empty() {
            return Ok(());
        }
        // SAFETY: the caller passes an address inside a live buffer with `bytes.len()` bytes
        // after it; a copy from pageable memory returns once the source has been read.
        unsafe { cu::memcpy_htod_async(dst, bytes, self.stream) }
            .map_err(|e| self.err("copying to the device", e))
    }

    /// A graph replays copies from the host on the host addresses of capture time, which
    /// are gone by then; reading back would wait for work that does not run. Both are bugs.
    fn not_capturing(&self, what: &str) -> Result<()> {
        if self.is_capturing() {
            return Err(self.err(what, "not allowed while capturing a graph"));
        }
        Ok(())
    }

    /// Copies `out.len()` bytes at device address `src` to the host, waiting for them.
    pub(crate) fn download(&self, src: u64, out: &mut [u8]) -> Result<()> {
        self.bind()?;
        self.not_capturing("copying to the host")?;
        if out.is_empty() {
            return Ok(());
        }
        // SAFETY: the caller passes an address inside a live buffer with `out.len()` bytes
        // after it; the copy is ordered after all queued work and waited for before return.
        unsafe {
            cu::memcpy_dtoh_async(out, src, self.stream)
                .and_then(|_| cu::stream::synchronize(self.stream))
        }
        .map_err(|e| self.err("copying to the host", e))
    }

    /// Sets `len` bytes at `dst` to zero (queued).
    pub(crate) fn zero(&self, dst: u64, len: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller passes an address inside a live buffer with `len` bytes after it.
        unsafe { cu::memset_d8_async(dst, 0, len, self.stream) }
            .map_err(|e| self.err("clearing memory", e))
    }

    /// Copies `len` bytes between device addresses (queued).
    pub(crate) fn copy(&self, dst: u64, src: u64, len: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller passes addresses inside live buffers with `len` bytes after them.
        unsafe { cu::memcpy_dtod_async(dst, src, len, self.stream) }
            .map_err(|e| self.err("copying on the device", e))
    }

    fn function(&self, name: &'static str) -> Result<sys::CUfunction> {
        let mut table = self.functions.lock().expect("function table");
        if let Some(&f) = table.get(name) {
            return Ok(f);
        }
        let cname = std::ffi::CString::new(name).expect("kernel names have no NUL");
        // SAFETY: the module is loaded in this device's context, which is current.
        let f = unsafe { cu::module::get_function(self.module, cname) }
            .map_err(|e| self.err(&format!("kernel {name}"), e))?;
        table.insert(name, f);
        Ok(f)
    }

    /// Queues kernel `name` with `args`, which must match its C signature in order and type.
    pub(crate) fn launch(
        &self,
        name: &'static str,
        grid: (u32, u32, u32),
        block: u32,
        args: &[&dyn KernelArg],
    ) -> Result<()> {
        self.bind()?;
        let f = self.function(name)?;
        let mut params: Vec<*mut c_void> = args.iter().map(|a| a.param()).collect();
        self.profiled(name, || {
            // SAFETY: every kernel in the module is launched through typed wrappers in
            // `ops.rs` whose argument lists mirror the kernel's parameters; device pointers
            // come from live buffers that outlive the queued work (see the pool's ordering).
            unsafe { cu::launch_kernel(f, grid, (block, 1, 1), 0, self.stream, &mut params) }
                .map_err(|e| self.err(&format!("launching {name}"), e))
        })
    }

    /// Queues `work`, between two events logged under `name` when profiling. Captured work
    /// is not timed: its events would not be replayed.
    pub(super) fn profiled(
        &self,
        name: &'static str,
        work: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let timed = self
            .profile
            .as_ref()
            .filter(|_| !self.is_capturing())
            .map(|_| self.record_event())
            .transpose()?;
        work()?;
        if let (Some(start), Some(log)) = (timed, &self.profile) {
            let end = self.record_event()?;
            log.lock().expect("profile").push((name, start, end));
        }
        Ok(())
    }

    /// Whether products of prompts can go to cuBLAS (see `CudaDevice::blas`).
    pub fn has_blas(&self) -> bool {
        self.blas().is_some()
    }

    /// cuBLAS on this device's stream, opened on first use; `None` (said once on stderr)
    /// where it cannot be loaded or `MINERVA_CUDA_BLAS=0` turns it off.
    fn blas(&self) -> Option<&blas::Blas> {
        self.blas
            .get_or_init(|| {
                if std::env::var("MINERVA_CUDA_BLAS").as_deref() == Ok("0") {
                    return None;
                }
                self.bind().ok()?;
                blas::Blas::new(self.stream)
                    .map_err(|why| {
                        eprintln!(
                            "minerva: cuda:{}: {why}; prompts use Minerva's own (slower) product kernels",
                            self.ordinal
                        )
                    })
                    .ok()
            })
            .as_ref()
    }

    /// Milliseconds of GPU time taken by the work `queue` enqueues (events around it; waits
    /// for it to finish).
    pub fn time_ms(&self, queue: impl FnOnce() -> Result<()>) -> Result<f64> {
        self.bind()?;
        let start = self.record_event()?;
        let queued = queue();
        let end = self.record_event()?;
        let waited = self.synchronize();
        // SAFETY: both events were recorded on this stream, which has been synchronized;
        // each is destroyed once, here.
        let ms = unsafe {
            let ms = cu::event::elapsed(start, end);
            let _ = cu::event::destroy(start);
            let _ = cu::event::destroy(end);
            ms
        };
        queued?;
        waited?;
        Ok(ms.map_err(|e| self.err("reading event times", e))? as f64)
    }

    /// Device memory bandwidth in GB/s (bytes read plus bytes written per second) of a copy
    /// kernel moving `bytes` between two buffers, best of `reps` after a warm-up.
    pub fn measure_bandwidth(self: &Arc<Self>, bytes: usize, reps: usize) -> Result<f64> {
        let bytes = bytes.next_multiple_of(16);
        let (src, dst) = (self.alloc(bytes)?, self.alloc(bytes)?);
        self.zero(src.ptr(), bytes)?;
        let copy = || ops::copy_bytes(self, dst.ptr(), src.ptr(), bytes);
        copy()?;
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            best = best.min(self.time_ms(copy)?);
        }
        Ok(2.0 * bytes as f64 / (best * 1e-3) / 1e9)
    }

    fn record_event(&self) -> Result<sys::CUevent> {
        let event = cu::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(|e| self.err("creating an event", e))?;
        // SAFETY: a fresh event recorded on this device's stream.
        unsafe { cu::event::record(event, self.stream) }
            .map_err(|e| self.err("recording an event", e))?;
        Ok(event)
    }

    /// Whether launches are timed (`MINERVA_CUDA_PROFILE=1` when the device was opened).
    pub fn is_profiling(&self) -> bool {
        self.profile.is_some()
    }

    /// GPU time per kernel since the last call, slowest first (empty unless the device was
    /// opened with `MINERVA_CUDA_PROFILE=1`).
    pub fn take_profile(&self) -> Result<Vec<KernelTime>> {
        let Some(log) = &self.profile else {
            return Ok(Vec::new());
        };
        self.synchronize()?;
        let mut by_name: HashMap<&'static str, KernelTime> = HashMap::new();
        for (name, start, end) in log.lock().expect("profile").drain(..) {
            // SAFETY: both events were recorded and the stream has been synchronized; each
            // is destroyed once, here.
            let ms = unsafe {
                let ms = cu::event::elapsed(start, end).unwrap_or(0.0);
                let _ = cu::event::destroy(start);
                let _ = cu::event::destroy(end);
                ms
            };
            let entry = by_name.entry(name).or_insert(KernelTime {
                name,
                launches: 0,
                millis: 0.0,
            });
            entry.launches += 1;
            entry.millis += ms as f64;
        }
        let mut times: Vec<KernelTime> = by_name.into_values().collect();
        times.sort_by(|a, b| b.millis.total_cmp(&a.millis));
        Ok(times)
    }
}

/// A value passed to a kernel by reference to its bytes.
pub(crate) trait KernelArg {
    fn param(&self) -> *mut c_void;
}

impl<T: bytemuck::Pod> KernelArg for T {
    fn param(&self) -> *mut c_void {
        (self as *const T).cast_mut().cast()
    }
}
