//! Work recorded once on a device and replayed with one call: how a decode step runs on a
//! GPU (on CUDA, a CUDA graph). Callers ask a [`Device`] and name no backend.

use crate::backends::cuda::{self, CudaGraph};
use crate::{Device, Error, Result};

/// Device work recorded by [`Device::record`].
pub struct Replay {
    graph: CudaGraph,
}

impl Replay {
    /// Queues one run of the recorded work: it reads the inputs it was recorded with as they
    /// are now and rewrites the outputs made while recording.
    pub fn launch(&self) -> Result<()> {
        self.graph.launch()
    }

    /// Operations recorded (kernels, copies).
    pub fn nodes(&self) -> usize {
        self.graph.nodes()
    }
}

impl Device {
    /// Whether work on this device can be recorded for replay: a GPU.
    pub fn records(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// Records the work `queue` enqueues on this device instead of running it, and returns
    /// it with `queue`'s result (arrays made while recording are the replay's outputs).
    /// `queue` must only enqueue device work: no uploads from the host, no reads back.
    pub fn record<T, E: From<Error>>(
        &self,
        queue: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<(Replay, T), E> {
        let Device::Cuda(n) = *self else {
            return Err(Error::Unsupported(format!("recording work for replay on {self}")).into());
        };
        let (graph, out) = cuda::device(n)?.capture(queue)?;
        Ok((Replay { graph }, out))
    }
}
