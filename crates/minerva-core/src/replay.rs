//! Work recorded once on a device and replayed with one call: how a decode step runs on a
//! GPU (on CUDA, a CUDA graph). Callers ask a [`Device`] and name no backend.

use crate::backends::{backend, Recorded};
use crate::{Device, Error, Result};

/// Device work recorded by [`Device::record`].
pub struct Replay {
    recorded: Box<dyn Recorded>,
}

impl Replay {
    /// Queues one run of the recorded work: it reads the inputs it was recorded with as they
    /// are now and rewrites the outputs made while recording.
    pub fn launch(&self) -> Result<()> {
        self.recorded.launch()
    }

    /// Operations recorded (kernels, copies).
    pub fn nodes(&self) -> usize {
        self.recorded.nodes()
    }
}

impl Device {
    /// Whether work on this device can be recorded for replay: a GPU.
    pub fn records(&self) -> bool {
        backend(*self).records()
    }

    /// Records the work `queue` enqueues on this device instead of running it, and returns
    /// it with `queue`'s result (arrays made while recording are the replay's outputs).
    /// `queue` must only enqueue device work: no uploads from the host, no reads back.
    pub fn record<T, E: From<Error>>(
        &self,
        queue: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<(Replay, T), E> {
        // The backend takes the work as a plain closure; its value or error waits here.
        let mut queue = Some(queue);
        let mut outcome = None;
        let recorded = backend(*self).record(*self, &mut || {
            let queue = queue
                .take()
                .ok_or_else(|| Error::Unsupported("a recording that runs its work twice".into()))?;
            let result = queue();
            let failed = result.is_err();
            outcome = Some(result);
            match failed {
                true => Err(Error::Unsupported("the recorded work failed".into())),
                false => Ok(()),
            }
        });
        match (recorded, outcome) {
            (Ok(recorded), Some(Ok(out))) => Ok((Replay { recorded }, out)),
            (_, Some(Err(e))) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(_), None) => Err(Error::Unsupported("a recording that ran no work".into()).into()),
        }
    }
}
