//! CUDA graphs: a sequence of queued work captured once and replayed with one launch, so a
//! decode step costs one host call instead of hundreds of kernel launches.
//!
//! A graph replays its kernels on the addresses and argument values they had during capture.
//! The caller keeps every input it reads alive and unchanged in place (writing new values
//! into the same buffers between replays); scratch and outputs allocated during capture live
//! in the graph's own [`Arena`], which no other work is given.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cudarc::driver::{sys, DriverError};

use super::pool::Arena;
use super::CudaDevice;
use crate::Result;

/// A captured, instantiated graph and the memory its kernels use.
pub struct CudaGraph {
    device: Arc<CudaDevice>,
    exec: sys::CUgraphExec,
    /// Held so that the scratch and outputs the graph's kernels use outlive it.
    _arena: Arc<Arena>,
    nodes: usize,
}

// SAFETY: an executable graph is a driver object any thread may launch once the owning
// context is current (`launch` binds it); it is never mutated after instantiation.
unsafe impl Send for CudaGraph {}
// SAFETY: as above.
unsafe impl Sync for CudaGraph {}

impl CudaDevice {
    /// Captures the work `queue` enqueues on this device into a graph instead of running it,
    /// and returns the graph with `queue`'s result (arrays made during capture are the
    /// graph's outputs: each replay rewrites them). `queue` must only enqueue: no uploads
    /// from the host and no reads back, and no other thread may use the device meanwhile.
    pub fn capture<T, E: From<crate::Error>>(
        self: &Arc<Self>,
        queue: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<(CudaGraph, T), E> {
        self.bind()?;
        let arena = Arena::new(self);
        let open = OpenCapture::begin(self, &arena)?;
        let out = queue()?;
        let graph = open.end()?;
        let mut exec: sys::CUgraphExec = std::ptr::null_mut();
        let mut nodes = 0;
        // SAFETY: `graph` is the valid graph just captured (a null node array asks only for
        // the count); it is destroyed once, after instantiation, which does not need it.
        let instantiated = unsafe {
            let _ = sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &mut nodes);
            let r = sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0).result();
            let _ = sys::cuGraphDestroy(graph);
            r
        };
        instantiated.map_err(|e| self.err("instantiating a graph", e))?;
        let captured = CudaGraph {
            device: Arc::clone(self),
            exec,
            _arena: arena,
            nodes,
        };
        Ok((captured, out))
    }

    /// Whether work is being captured into a graph instead of running.
    pub(crate) fn is_capturing(&self) -> bool {
        self.capturing.load(Ordering::SeqCst)
    }
}

/// A stream capture in progress. Dropped without [`end`](OpenCapture::end) (the queued
/// work failed or panicked), it ends the capture and discards the graph, so the device
/// runs work normally again.
struct OpenCapture<'a> {
    device: &'a CudaDevice,
    open: bool,
}

impl<'a> OpenCapture<'a> {
    /// Routes allocations to `arena` and starts capturing the device's stream.
    fn begin(device: &'a CudaDevice, arena: &Arc<Arena>) -> Result<OpenCapture<'a>> {
        let pool = || device.pool.lock().expect("pool");
        pool().capture_into(Some(Arc::clone(arena)));
        device.capturing.store(true, Ordering::SeqCst);
        // Relaxed: allocating device memory for the arena during capture is allowed.
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        // SAFETY: the stream belongs to this device's context, which the caller bound.
        let began = unsafe { sys::cuStreamBeginCapture_v2(device.stream, mode) }.result();
        if let Err(e) = began {
            device.capturing.store(false, Ordering::SeqCst);
            pool().capture_into(None);
            return Err(device.err("beginning a graph capture", e));
        }
        Ok(OpenCapture { device, open: true })
    }

    /// Ends the capture; the captured graph, which the caller destroys.
    fn end(mut self) -> Result<sys::CUgraph> {
        let (graph, ended) = self.close();
        ended.map_err(|e| self.device.err("ending a graph capture", e))?;
        Ok(graph)
    }

    fn close(&mut self) -> (sys::CUgraph, std::result::Result<(), DriverError>) {
        self.open = false;
        let mut graph: sys::CUgraph = std::ptr::null_mut();
        // SAFETY: ends the capture begun on this stream; the driver writes the captured
        // graph (null on failure) through a valid pointer.
        let ended = unsafe { sys::cuStreamEndCapture(self.device.stream, &mut graph) }.result();
        self.device.capturing.store(false, Ordering::SeqCst);
        self.device.pool.lock().expect("pool").capture_into(None);
        (graph, ended)
    }
}

impl Drop for OpenCapture<'_> {
    fn drop(&mut self) {
        if self.open {
            let (graph, _) = self.close();
            if !graph.is_null() {
                // SAFETY: the graph just captured, destroyed once and never used.
                let _ = unsafe { sys::cuGraphDestroy(graph) };
            }
        }
    }
}

impl CudaGraph {
    /// Queues one replay of the captured work.
    pub fn launch(&self) -> Result<()> {
        self.device.bind()?;
        // SAFETY: the executable graph is alive (owned by self) and belongs to this device's
        // context; its buffers are kept by the arena and by the arrays the caller keeps.
        unsafe { sys::cuGraphLaunch(self.exec, self.device.stream) }
            .result()
            .map_err(|e| self.device.err("launching a graph", e))
    }

    /// Operations (kernels, copies, memsets) one launch runs.
    pub fn nodes(&self) -> usize {
        self.nodes
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        let _ = self.device.bind();
        // SAFETY: destroyed once; the driver defers the release until queued replays finish.
        let _ = unsafe { sys::cuGraphExecDestroy(self.exec) };
    }
}
