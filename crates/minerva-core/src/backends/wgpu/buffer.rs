//! Storage buffers on a wgpu device, and moving bytes in and out of them.
//!
//! wgpu copies whole 4-byte words at 4-byte offsets, so buffers are rounded up to words and
//! a read at an odd offset fetches the words around it.

use std::sync::Arc;

use super::WgpuDevice;
use crate::Result;

/// `n` rounded up to a whole number of 4-byte words (at least one).
fn words(n: usize) -> u64 {
    (n.max(1).div_ceil(4) * 4) as u64
}

/// Device memory holding an array's bytes.
pub(crate) struct WgpuBuffer {
    device: Arc<WgpuDevice>,
    buffer: wgpu::Buffer,
    len: usize,
}

impl WgpuBuffer {
    /// `len` bytes, zeroed (wgpu clears new buffers).
    pub(crate) fn zeroed(device: &Arc<WgpuDevice>, len: usize) -> Result<WgpuBuffer> {
        let max = device.device.limits().max_buffer_size;
        if words(len) > max {
            return Err(device.err(
                "allocating",
                format!("{len} bytes exceed the adapter's largest buffer ({max})"),
            ));
        }
        let buffer = device.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: words(len),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(WgpuBuffer {
            device: Arc::clone(device),
            buffer,
            len,
        })
    }

    /// A buffer holding `bytes`.
    pub(crate) fn upload(device: &Arc<WgpuDevice>, bytes: &[u8]) -> Result<WgpuBuffer> {
        let buffer = WgpuBuffer::zeroed(device, bytes.len())?;
        buffer.write(0, bytes)?;
        Ok(buffer)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn device(&self) -> &Arc<WgpuDevice> {
        &self.device
    }

    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Writes `bytes` at `offset` (queued behind earlier work). An unaligned edge is read
    /// back first and written with its neighbours.
    pub(crate) fn write(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        let start = offset / 4 * 4;
        let end = words(offset + bytes.len()) as usize;
        let mut staged = vec![0u8; end - start];
        if start != offset || end != offset + bytes.len() {
            let edge = end.min(self.buffer.size() as usize) - start;
            self.read_words(start, &mut staged[..edge])?;
        }
        staged[offset - start..offset - start + bytes.len()].copy_from_slice(bytes);
        self.device
            .queue
            .write_buffer(&self.buffer, start as u64, &staged);
        Ok(())
    }

    /// Reads `out.len()` bytes from `offset`, after all work queued so far.
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let start = offset / 4 * 4;
        let end = words(offset + out.len()) as usize;
        let mut staged = vec![0u8; end - start];
        self.read_words(start, &mut staged)?;
        out.copy_from_slice(&staged[offset - start..offset - start + out.len()]);
        Ok(())
    }

    /// Reads whole words from a word offset.
    fn read_words(&self, start: usize, out: &mut [u8]) -> Result<()> {
        let dev = &self.device;
        let size = out.len() as u64;
        let staging = dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = dev.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.buffer, start as u64, &staging, 0, size);
        dev.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        dev.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| dev.err("waiting for a read", e))?;
        receiver
            .recv()
            .map_err(|e| dev.err("reading back", e))?
            .map_err(|e| dev.err("reading back", e))?;
        let mapped = slice
            .get_mapped_range()
            .map_err(|e| dev.err("reading back", e))?;
        out.copy_from_slice(&mapped);
        drop(mapped);
        staging.unmap();
        Ok(())
    }

    /// Copies `len` bytes from `src` at `src_offset` to `dst_offset` of this buffer, on the
    /// device where both are word-aligned, else through the host.
    pub(crate) fn copy_from(
        &self,
        dst_offset: usize,
        src: &WgpuBuffer,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        if !(dst_offset | src_offset | len).is_multiple_of(4) {
            let mut bytes = vec![0u8; len];
            src.read(src_offset, &mut bytes)?;
            return self.write(dst_offset, &bytes);
        }
        let mut encoder = self
            .device
            .device
            .create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(
            &src.buffer,
            src_offset as u64,
            &self.buffer,
            dst_offset as u64,
            len as u64,
        );
        self.device.queue.submit([encoder.finish()]);
        Ok(())
    }
}
