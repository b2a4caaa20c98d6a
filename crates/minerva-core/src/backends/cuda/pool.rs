//! A caching device allocator. Freed buffers go back to a free list by size class instead
//! of to the driver, so a decode step reuses the same few buffers every token without a
//! `cuMemAlloc` (which synchronizes). Reuse is safe because the device has one stream: work
//! that reads a reused buffer is queued after all work on its previous owner.
//!
//! A captured graph breaks that argument: it replays its kernels later, on the addresses they
//! had during capture. So while a graph is captured, buffers come from an [`Arena`] that the
//! graph keeps alive; buffers freed during capture go back to the arena (the graph's own
//! later kernels may reuse them, in capture order), never to the shared free lists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::result as cu;

use super::CudaDevice;
use crate::{Error, Result};

/// Buffers at least this large go straight back to the driver (weights of a dropped
/// model), so one model's memory never sits cached while another loads.
const RETURN_TO_DRIVER: usize = 256 << 20;

#[derive(Default)]
pub(super) struct Pool {
    free: HashMap<usize, Vec<u64>>,
    cached: usize,
    in_use: usize,
    peak: usize,
    /// Where allocations come from while a graph is being captured.
    capture: Option<Arc<Arena>>,
}

/// Device memory private to one captured graph: every buffer allocated during its capture.
/// Freed when the graph and every array still holding one of its buffers are gone.
pub(crate) struct Arena {
    device: Arc<CudaDevice>,
    free: Mutex<HashMap<usize, Vec<u64>>>,
    /// Every allocation, by (address, size class).
    owned: Mutex<Vec<(u64, usize)>>,
}

impl Arena {
    pub(super) fn new(device: &Arc<CudaDevice>) -> Arc<Arena> {
        Arc::new(Arena {
            device: Arc::clone(device),
            free: Mutex::default(),
            owned: Mutex::default(),
        })
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let owned = std::mem::take(&mut *self.owned.lock().expect("arena"));
        let _ = self.device.bind();
        let mut pool = self.device.pool.lock().expect("pool");
        for (ptr, class) in owned {
            pool.in_use -= class;
            // SAFETY: no array holds these buffers any more (each holds the arena alive) and
            // the graph that used them is destroyed; cuMemFree waits for queued work.
            let _ = unsafe { cu::free_sync(ptr) };
        }
    }
}

impl Pool {
    pub(super) fn usage(&self) -> (usize, usize, usize) {
        (self.in_use, self.cached, self.peak)
    }

    fn count_in_use(&mut self, class: usize) {
        self.in_use += class;
        self.peak = self.peak.max(self.in_use);
    }

    /// Sends every allocation to `arena` until it is called again with `None`.
    pub(super) fn capture_into(&mut self, arena: Option<Arc<Arena>>) {
        self.capture = arena;
    }

    /// Returns every cached buffer to the driver.
    fn trim(&mut self) {
        for (_, ptrs) in self.free.drain() {
            for p in ptrs {
                // SAFETY: cached buffers are owned by no array; cuMemFree waits for queued
                // work that might still touch them.
                let _ = unsafe { cu::free_sync(p) };
            }
        }
        self.cached = 0;
    }
}

/// The allocation size for a request: 256-byte steps up to 4 KiB, then steps of an eighth
/// of the enclosing power of two (at most 12.5% slack), and 2 MiB steps past 64 MiB.
fn size_class(len: usize) -> usize {
    let len = len.max(1);
    let step = if len <= 4096 {
        256
    } else if len > 64 << 20 {
        2 << 20
    } else {
        len.next_power_of_two() / 8
    };
    len.div_ceil(step) * step
}

/// Device memory owned by one array's storage; returns to the pool when dropped.
pub(crate) struct DeviceBuffer {
    device: Arc<CudaDevice>,
    ptr: u64,
    len: usize,
    class: usize,
    /// The captured graph's arena this buffer came from (and goes back to).
    arena: Option<Arc<Arena>>,
}

impl DeviceBuffer {
    fn new(
        device: &Arc<CudaDevice>,
        ptr: u64,
        len: usize,
        class: usize,
        arena: Option<Arc<Arena>>,
    ) -> DeviceBuffer {
        DeviceBuffer {
            device: Arc::clone(device),
            ptr,
            len,
            class,
            arena,
        }
    }

    pub(crate) fn ptr(&self) -> u64 {
        self.ptr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if let Some(arena) = &self.arena {
            let mut free = arena.free.lock().expect("arena");
            free.entry(self.class).or_default().push(self.ptr);
            return;
        }
        let mut pool = self.device.pool.lock().expect("pool");
        pool.in_use -= self.class;
        if self.class >= RETURN_TO_DRIVER {
            let _ = self.device.bind();
            // SAFETY: this buffer is no longer referenced by any array; cuMemFree waits
            // for queued work that might still read it.
            let _ = unsafe { cu::free_sync(self.ptr) };
            return;
        }
        pool.cached += self.class;
        pool.free.entry(self.class).or_default().push(self.ptr);
    }
}

pub(super) fn alloc(device: &Arc<CudaDevice>, len: usize) -> Result<DeviceBuffer> {
    let class = size_class(len);
    let mut pool = device.pool.lock().expect("pool");
    if let Some(arena) = pool.capture.clone() {
        return alloc_in_arena(device, &mut pool, arena, len, class);
    }
    let reused = pool.free.get_mut(&class).and_then(Vec::pop);
    let ptr = match reused {
        Some(p) => {
            pool.cached -= class;
            p
        }
        // SAFETY: plain device allocation in the current context (the caller bound it).
        None => match unsafe { cu::malloc_sync(class) } {
            Ok(p) => p,
            Err(_) => {
                // Out of memory, or fragmented by cached buffers: give those back and retry.
                pool.trim();
                // SAFETY: as above.
                unsafe { cu::malloc_sync(class) }.map_err(|e| {
                    let (free, total) = cu::mem_get_info().unwrap_or((0, 0));
                    Error::Device(format!(
                        "cuda:{}: out of device memory: {:.1} MiB wanted, {:.1} MiB free of {:.1} MiB ({e})",
                        device.ordinal,
                        len as f64 / 1048576.0,
                        free as f64 / 1048576.0,
                        total as f64 / 1048576.0
                    ))
                })?
            }
        },
    };
    pool.count_in_use(class);
    Ok(DeviceBuffer::new(device, ptr, len, class, None))
}

/// A buffer for a graph being captured: a free one of the arena's, or a new one (a plain
/// `cuMemAlloc` is allowed during a relaxed capture; trimming the pool, which frees, is not).
fn alloc_in_arena(
    device: &Arc<CudaDevice>,
    pool: &mut Pool,
    arena: Arc<Arena>,
    len: usize,
    class: usize,
) -> Result<DeviceBuffer> {
    let reused = arena
        .free
        .lock()
        .expect("arena")
        .get_mut(&class)
        .and_then(Vec::pop);
    let ptr = match reused {
        Some(p) => p,
        None => {
            // SAFETY: plain device allocation in the current context (the caller bound it).
            let p = unsafe { cu::malloc_sync(class) }.map_err(|e| {
                Error::Device(format!(
                    "cuda:{}: out of device memory while capturing a graph: {:.1} MiB wanted ({e})",
                    device.ordinal,
                    len as f64 / 1048576.0
                ))
            })?;
            arena.owned.lock().expect("arena").push((p, class));
            pool.count_in_use(class);
            p
        }
    };
    Ok(DeviceBuffer::new(device, ptr, len, class, Some(arena)))
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_bound_the_slack() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4097), 4096 + 1024);
        for len in [5000, 123_457, 9_999_999, 70 << 20, (1 << 30) + 1] {
            let c = size_class(len);
            assert!(
                c >= len && (c - len) as f64 <= len as f64 / 8.0 + 256.0,
                "{len} -> {c}"
            );
        }
    }
}
