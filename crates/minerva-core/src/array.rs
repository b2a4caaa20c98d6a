//! `Array`: a typed, shaped view of a buffer on a device.
//!
//! Storage is shared (`Arc`) and either owned host memory, a read-only range of a mapped
//! checkpoint (so loading a model copies nothing), or a GPU buffer. Arrays are immutable
//! once shared; the few in-place writes (KV cache appends) go through
//! [`Array::host_bytes_mut`] or a device kernel.

use std::fmt;
use std::sync::Arc;

use half::{bf16, f16};

use crate::backends::backend;
use crate::backends::cuda::{self, DeviceBuffer};
use crate::backends::wgpu::{self as portable, WgpuBuffer};
use crate::graph::lazy::Pending;
use crate::{DType, Error, Result};

/// Where an array's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    /// The CUDA GPU of this ordinal.
    Cuda(usize),
    /// The wgpu adapter of this ordinal (Vulkan, Metal or DX12), best first.
    Wgpu(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Wgpu(n) => write!(f, "wgpu:{n}"),
        }
    }
}

impl Device {
    /// The device a user's `--device` names: `cpu`, `cuda`, `cuda:N`, or `auto` (the first
    /// GPU when one can be opened, else the CPU). Asking for a GPU that cannot be used is
    /// an error that says why (no driver, driver too old, no such device).
    pub fn choose(spec: &str) -> Result<Device> {
        if spec == "auto" {
            let gpu = Device::Cuda(0);
            return Ok(match backend(gpu).open(gpu) {
                Ok(()) => gpu,
                Err(_) => Device::Cpu,
            });
        }
        let device: Device = spec.parse()?;
        backend(device).open(device)?;
        Ok(device)
    }
}

impl std::str::FromStr for Device {
    type Err = Error;

    /// `cpu`, `cuda` (GPU 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    Error::Device(format!("unknown device {s:?} (cpu, cuda or cuda:N)"))
                }),
        }
    }
}

/// 64-byte aligned chunk, so host buffers suit any SIMD load.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Chunk([u8; 64]);

/// The bytes behind an array.
enum Storage {
    /// Owned, 64-byte aligned host memory of `len` bytes.
    Host { chunks: Vec<Chunk>, len: usize },
    /// A byte range of a read-only file mapping (a checkpoint tensor).
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
    /// CUDA GPU memory.
    Cuda(DeviceBuffer),
    /// A wgpu storage buffer.
    Wgpu(WgpuBuffer),
    /// A value recorded lazily and not computed yet (`graph::lazy`).
    Pending(Arc<Pending>),
}

impl Storage {
    fn host_zeroed(len: usize) -> Storage {
        Storage::Host {
            chunks: vec![Chunk([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    fn len(&self) -> usize {
        match self {
            Storage::Host { len, .. } | Storage::Mapped { len, .. } => *len,
            Storage::Cuda(b) => b.len(),
            Storage::Wgpu(b) => b.len(),
            Storage::Pending(_) => 0,
        }
    }

    fn device(&self) -> Device {
        match self {
            Storage::Cuda(b) => Device::Cuda(b.device().ordinal()),
            Storage::Wgpu(b) => Device::Wgpu(b.device().ordinal()),
            Storage::Pending(p) => p.device(),
            _ => Device::Cpu,
        }
    }

    /// The bytes of host storage; `None` for device memory.
    fn bytes(&self) -> Option<&[u8]> {
        Some(match self {
            Storage::Host { chunks, len } => {
                // SAFETY: `Chunk` is a plain 64-byte array with no padding, so the vector's
                // memory is `chunks.len() * 64` initialized bytes and `len` never exceeds that.
                unsafe { std::slice::from_raw_parts(chunks.as_ptr().cast::<u8>(), *len) }
            }
            Storage::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            Storage::Cuda(_) | Storage::Wgpu(_) | Storage::Pending(_) => return None,
        })
    }

    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        match self {
            Storage::Host { chunks, len } => {
                // SAFETY: as in `bytes`; the `&mut self` borrow makes the access exclusive.
                Some(unsafe {
                    std::slice::from_raw_parts_mut(chunks.as_mut_ptr().cast::<u8>(), *len)
                })
            }
            Storage::Mapped { .. } | Storage::Cuda(_) | Storage::Wgpu(_) | Storage::Pending(_) => {
                None
            }
        }
    }
}

/// A dense row-major array (or a block-quantized matrix) on a device.
#[derive(Clone)]
pub struct Array {
    storage: Arc<Storage>,
    /// Where this array's bytes start in `storage` (views share storage).
    offset: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Scales and biases of dtypes that keep them beside the codes (MLX affine, MXFP4).
    quant: Option<Arc<GroupParams>>,
}

/// The per-group parameters of an MLX-style quantized array: `scales` (and for affine,
/// `biases`) shaped like the array with the last axis divided by the group size.
#[derive(Clone, Debug)]
pub struct GroupParams {
    pub scales: Array,
    pub biases: Option<Array>,
}

impl Array {
    /// A zero-filled array.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Array> {
        if dtype.has_group_params() {
            return Err(Error::Unsupported(format!(
                "a zero {dtype} array (its group parameters are separate arrays)"
            )));
        }
        let len = byte_len(dtype, shape)?;
        Ok(Array {
            storage: Arc::new(Storage::host_zeroed(len)),
            offset: 0,
            dtype,
            shape: shape.to_vec(),
            quant: None,
        })
    }

    /// An f32 array that takes the values of `data`.
    pub fn from_f32(data: &[f32], shape: &[usize]) -> Result<Array> {
        Self::from_pod(DType::F32, data, shape)
    }

    /// An i32 array (token ids, positions).
    pub fn from_i32(data: &[i32], shape: &[usize]) -> Result<Array> {
        Self::from_pod(DType::I32, data, shape)
    }

    fn from_pod<T: bytemuck::Pod>(dtype: DType, data: &[T], shape: &[usize]) -> Result<Array> {
        let mut array = Array::zeros(dtype, shape)?;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let dst = array.host_bytes_mut()?;
        if bytes.len() != dst.len() {
            return Err(Error::Shape(format!(
                "{} values do not fill shape {shape:?}",
                data.len()
            )));
        }
        dst.copy_from_slice(bytes);
        Ok(array)
    }

    /// An array whose data is `len` bytes of a file mapping starting at `offset` (zero-copy).
    pub fn from_mapped(
        map: Arc<memmap2::Mmap>,
        offset: usize,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Array> {
        let len = byte_len(dtype, shape)?;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= map.len())
            .ok_or_else(|| {
                Error::Shape(format!(
                    "mapped range {offset}+{len} exceeds the mapping ({} bytes)",
                    map.len()
                ))
            })?;
        debug_assert!(end <= map.len());
        Ok(Array {
            storage: Arc::new(Storage::Mapped { map, offset, len }),
            offset: 0,
            dtype,
            shape: shape.to_vec(),
            quant: None,
        })
    }

    /// An MLX-style quantized array: `codes` (any dtype; only its bytes are used) read as
    /// `dtype` values of `shape`, with per-group `scales` and, for affine, `biases`, both
    /// shaped like `shape` with the last axis divided by the group size. Nothing is copied.
    pub fn quantized(
        codes: &Array,
        dtype: DType,
        shape: &[usize],
        scales: Array,
        biases: Option<Array>,
    ) -> Result<Array> {
        if !dtype.has_group_params() {
            return Err(Error::Unsupported(format!(
                "{dtype} keeps its scales inside its blocks"
            )));
        }
        let len = byte_len(dtype, shape)?;
        let have = codes.byte_range().len();
        if have != len {
            return Err(Error::Shape(format!(
                "{dtype} codes of {shape:?} take {len} bytes, got {have}"
            )));
        }
        if scales.device() != codes.device()
            || biases
                .as_ref()
                .is_some_and(|b| b.device() != codes.device())
        {
            return Err(Error::Device(format!(
                "{dtype} codes and their scales/biases are on different devices"
            )));
        }
        let mut group_shape = shape.to_vec();
        *group_shape
            .last_mut()
            .expect("byte_len checked the last axis") /= dtype.block_len();
        if scales.shape() != group_shape.as_slice() {
            return Err(Error::Shape(format!(
                "{dtype} scales have shape {:?}, expected {group_shape:?}",
                scales.shape()
            )));
        }
        let scale_ok = match dtype {
            DType::Mxfp4 => scales.dtype() == DType::U8,
            _ => matches!(scales.dtype(), DType::F32 | DType::F16 | DType::BF16),
        };
        if !scale_ok {
            return Err(Error::Shape(format!(
                "{dtype} scales cannot be {}",
                scales.dtype()
            )));
        }
        match (&biases, dtype) {
            (None, DType::Affine { .. }) => {
                return Err(Error::Shape(format!("{dtype} needs biases")))
            }
            (Some(_), DType::Mxfp4) => return Err(Error::Shape("mxfp4 has no biases".into())),
            (Some(b), _) if b.shape() != scales.shape() || b.dtype() != scales.dtype() => {
                return Err(Error::Shape(format!(
                    "{dtype} biases {} {:?} do not match scales {} {:?}",
                    b.dtype(),
                    b.shape(),
                    scales.dtype(),
                    scales.shape()
                )))
            }
            _ => {}
        }
        let codes = codes.ready()?;
        Ok(Array {
            storage: Arc::clone(&codes.storage),
            offset: codes.offset,
            dtype,
            shape: shape.to_vec(),
            quant: Some(Arc::new(GroupParams { scales, biases })),
        })
    }

    /// Scales and biases of an MLX-style quantized array.
    pub fn quant(&self) -> Option<&GroupParams> {
        self.quant.as_deref()
    }

    /// Element `i` of the first axis, as a view sharing this array's storage (an expert's
    /// weight matrix out of `[experts, out, in]`, say).
    pub fn index(&self, i: usize) -> Result<Array> {
        let this = self.ready()?;
        if !std::ptr::eq(this, self) {
            return this.index(i);
        }
        let Some((&first, rest)) = self.shape.split_first() else {
            return Err(Error::Shape("cannot index a scalar".into()));
        };
        if i >= first {
            return Err(Error::Shape(format!(
                "index {i} out of range for {:?}",
                self.shape
            )));
        }
        let stride = byte_len(self.dtype, rest)?;
        let quant = match &self.quant {
            Some(q) => Some(Arc::new(GroupParams {
                scales: q.scales.index(i)?,
                biases: q.biases.as_ref().map(|b| b.index(i)).transpose()?,
            })),
            None => None,
        };
        Ok(Array {
            storage: Arc::clone(&self.storage),
            offset: self.offset + i * stride,
            dtype: self.dtype,
            shape: rest.to_vec(),
            quant,
        })
    }

    /// Rows `start..start + len` of the first axis, as a view sharing this array's storage.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Array> {
        let this = self.ready()?;
        if !std::ptr::eq(this, self) {
            return this.narrow(start, len);
        }
        let Some((&first, rest)) = self.shape.split_first() else {
            return Err(Error::Shape("cannot narrow a scalar".into()));
        };
        if self.quant.is_some() || start.checked_add(len).is_none_or(|end| end > first) {
            return Err(Error::Shape(format!(
                "rows {start}..{} of a {} {:?} array",
                start.saturating_add(len),
                self.dtype,
                self.shape
            )));
        }
        let mut shape = self.shape.clone();
        shape[0] = len;
        Ok(Array {
            storage: Arc::clone(&self.storage),
            offset: self.offset + start * byte_len(self.dtype, rest)?,
            dtype: self.dtype,
            shape,
            quant: None,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// Bytes of data, including the group parameters of MLX-quantized arrays.
    pub fn nbytes(&self) -> usize {
        let params = self.quant.as_ref().map_or(0, |q| {
            q.scales.nbytes() + q.biases.as_ref().map_or(0, Array::nbytes)
        });
        self.byte_range().len() + params
    }

    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of axis `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> usize {
        let rank = self.shape.len() as isize;
        let axis = if axis < 0 { rank + axis } else { axis };
        self.shape[axis as usize]
    }

    /// The same data with another shape of equal element count (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Array> {
        let this = self.ready()?;
        if !std::ptr::eq(this, self) {
            return this.reshape(shape);
        }
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return Err(Error::Shape(format!(
                "cannot reshape {:?} to {shape:?}",
                self.shape
            )));
        }
        if self.dtype.is_quantized() && shape.last() != self.shape.last() {
            return Err(Error::Shape(format!(
                "a {} array keeps its last axis when reshaped ({:?} to {shape:?})",
                self.dtype, self.shape
            )));
        }
        if self.quant.is_some() {
            return Err(Error::Unsupported(format!(
                "reshaping a {} array",
                self.dtype
            )));
        }
        Ok(Array {
            storage: Arc::clone(&self.storage),
            offset: self.offset,
            dtype: self.dtype,
            shape: shape.to_vec(),
            quant: None,
        })
    }

    fn byte_range(&self) -> std::ops::Range<usize> {
        // The shape was validated when the array was made.
        let len = byte_len(self.dtype, &self.shape).unwrap_or(0);
        self.offset..self.offset + len
    }

    /// Raw bytes of the array; an error for an array in GPU memory (see [`Array::to_device`]).
    pub fn host_bytes(&self) -> Result<&[u8]> {
        let this = self.ready()?;
        if !std::ptr::eq(this, self) {
            return this.host_bytes();
        }
        match self.storage.bytes() {
            Some(b) => Ok(&b[self.byte_range()]),
            None => Err(Error::Device(format!(
                "a {} {:?} array is on {}, not in host memory",
                self.dtype,
                self.shape,
                self.device()
            ))),
        }
    }

    /// This array on `device`: itself when already there, else a copy (group parameters
    /// of quantized arrays go along).
    pub fn to_device(&self, device: Device) -> Result<Array> {
        let this = self.ready()?;
        if this.device() == device {
            return Ok(this.clone());
        }
        if !std::ptr::eq(this, self) {
            return this.to_device(device);
        }
        if self.device() != Device::Cpu && device != Device::Cpu {
            // Between two devices: through the host.
            return self.to_device(Device::Cpu)?.to_device(device);
        }
        let storage = match device {
            Device::Cuda(n) => Storage::Cuda(cuda::device(n)?.upload(self.host_bytes()?)?),
            Device::Wgpu(n) => Storage::Wgpu(WgpuBuffer::upload(
                &portable::device(n)?,
                self.host_bytes()?,
            )?),
            Device::Cpu => {
                let mut host = Storage::host_zeroed(self.byte_range().len());
                let out = host.bytes_mut().expect("host storage is writable");
                self.download(out)?;
                host
            }
        };
        let quant = match &self.quant {
            Some(q) => Some(Arc::new(GroupParams {
                scales: q.scales.to_device(device)?,
                biases: q.biases.as_ref().map(|b| b.to_device(device)).transpose()?,
            })),
            None => None,
        };
        Ok(Array {
            storage: Arc::new(storage),
            offset: 0,
            dtype: self.dtype,
            shape: self.shape.clone(),
            quant,
        })
    }

    /// An array of `dtype` and `shape` in fresh GPU memory whose contents a kernel will
    /// write (uninitialized until then).
    pub(crate) fn empty_cuda(
        device: &Arc<cuda::CudaDevice>,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Array> {
        let len = byte_len(dtype, shape)?;
        Ok(Array {
            storage: Arc::new(Storage::Cuda(device.alloc(len)?)),
            offset: 0,
            dtype,
            shape: shape.to_vec(),
            quant: None,
        })
    }

    /// This array's bytes (on a device) copied into `out`, after the work queued there.
    fn download(&self, out: &mut [u8]) -> Result<()> {
        match &*self.ready()?.storage {
            Storage::Wgpu(b) => b.read(self.offset, out),
            _ => self
                .cuda_buffer()?
                .device()
                .download(self.device_ptr()?, out),
        }
    }

    /// A zero-filled array on `device`.
    pub fn zeros_on(dtype: DType, shape: &[usize], device: Device) -> Result<Array> {
        match device {
            Device::Cpu => Array::zeros(dtype, shape),
            Device::Wgpu(n) => Ok(Array {
                storage: Arc::new(Storage::Wgpu(WgpuBuffer::zeroed(
                    &portable::device(n)?,
                    byte_len(dtype, shape)?,
                )?)),
                offset: 0,
                dtype,
                shape: shape.to_vec(),
                quant: None,
            }),
            Device::Cuda(n) => {
                let a = Array::empty_cuda(&cuda::device(n)?, dtype, shape)?;
                a.cuda_buffer()?
                    .device()
                    .zero(a.device_ptr()?, a.byte_range().len())?;
                Ok(a)
            }
        }
    }

    /// The GPU buffer behind an array in GPU memory.
    pub(crate) fn cuda_buffer(&self) -> Result<&DeviceBuffer> {
        match &*self.storage {
            Storage::Cuda(b) => Ok(b),
            Storage::Pending(p) => p.value()?.cuda_buffer(),
            _ => Err(Error::Device(format!(
                "a {} {:?} array is in host memory, not on a GPU",
                self.dtype, self.shape
            ))),
        }
    }

    /// The wgpu buffer behind an array on a wgpu adapter.
    pub(crate) fn wgpu_buffer(&self) -> Result<&WgpuBuffer> {
        match &*self.storage {
            Storage::Wgpu(b) => Ok(b),
            Storage::Pending(p) => p.value()?.wgpu_buffer(),
            _ => Err(Error::Device(format!(
                "a {} {:?} array on {}, not on a wgpu adapter",
                self.dtype,
                self.shape,
                self.device()
            ))),
        }
    }

    /// The wgpu buffer for an in-place write; copies first (on the device) when the
    /// storage is shared or larger than this array, as [`Array::host_bytes_mut`] does.
    pub(crate) fn wgpu_buffer_mut(&mut self) -> Result<&WgpuBuffer> {
        self.settle()?;
        let len = self.byte_range().len();
        let whole = self.offset == 0 && len == self.storage.len();
        if !whole || Arc::get_mut(&mut self.storage).is_none() {
            let fresh = Array::zeros_on(self.dtype, &self.shape, self.device())?;
            fresh
                .wgpu_buffer()?
                .copy_from(0, self.wgpu_buffer()?, self.offset, len)?;
            self.storage = fresh.storage;
            self.offset = 0;
        }
        self.wgpu_buffer()
    }

    /// Where this array starts in its wgpu buffer, in bytes.
    pub(crate) fn wgpu_offset(&self) -> Result<usize> {
        Ok(self.ready()?.offset)
    }

    /// The device address of this array's first byte.
    pub(crate) fn device_ptr(&self) -> Result<u64> {
        let this = self.ready()?;
        Ok(this.cuda_buffer()?.ptr() + this.offset as u64)
    }

    /// The device address for an in-place write; copies first (on the device) when the
    /// storage is shared or larger than this array, as [`Array::host_bytes_mut`] does.
    pub(crate) fn device_ptr_mut(&mut self) -> Result<u64> {
        self.settle()?;
        let len = self.byte_range().len();
        let whole = self.offset == 0 && len == self.storage.len();
        if !whole || Arc::get_mut(&mut self.storage).is_none() {
            let device = Arc::clone(self.cuda_buffer()?.device());
            let fresh = Array::empty_cuda(&device, self.dtype, &self.shape)?;
            device.copy(fresh.device_ptr()?, self.device_ptr()?, len)?;
            self.storage = fresh.storage;
            self.offset = 0;
        }
        self.device_ptr()
    }

    /// Mutable raw bytes; copies the array's bytes first when its storage is shared, mapped
    /// or larger than the array (a view).
    pub fn host_bytes_mut(&mut self) -> Result<&mut [u8]> {
        self.settle()?;
        let range = self.byte_range();
        let whole = range.start == 0 && range.end == self.storage.len();
        if !whole || Arc::get_mut(&mut self.storage).is_none_or(|s| s.bytes_mut().is_none()) {
            let bytes = self.host_bytes()?;
            let mut fresh = Storage::host_zeroed(bytes.len());
            fresh
                .bytes_mut()
                .expect("host storage is writable")
                .copy_from_slice(bytes);
            self.storage = Arc::new(fresh);
            self.offset = 0;
        }
        let storage = Arc::get_mut(&mut self.storage).expect("storage was just made unique");
        Ok(storage.bytes_mut().expect("host storage is writable"))
    }

    /// The values as an f32 slice; the array must be f32.
    pub fn as_f32(&self) -> Result<&[f32]> {
        self.expect_dtype(DType::F32)?;
        Ok(bytemuck::cast_slice(self.host_bytes()?))
    }

    /// Mutable f32 values (copy on write).
    pub fn as_f32_mut(&mut self) -> Result<&mut [f32]> {
        self.expect_dtype(DType::F32)?;
        Ok(bytemuck::cast_slice_mut(self.host_bytes_mut()?))
    }

    /// Overwrites this array's values with `src`'s (same dtype and shape, on any device) in
    /// its own buffer, for inputs a captured graph reads at a fixed address. Fails rather
    /// than copy when the buffer is shared or larger than the array (writing would change
    /// other arrays, and a copy would move the address).
    pub fn overwrite(&mut self, src: &Array) -> Result<()> {
        self.settle()?;
        let range = self.byte_range();
        let whole = range.start == 0 && range.end == self.storage.len();
        if src.dtype != self.dtype || src.shape != self.shape || self.quant.is_some() {
            return Err(Error::Shape(format!(
                "overwrite: a {} {:?} array with a {} {:?} one",
                self.dtype, self.shape, src.dtype, src.shape
            )));
        }
        if !whole || Arc::get_mut(&mut self.storage).is_none() {
            return Err(Error::Shape(format!(
                "overwrite: the {:?} array shares its buffer",
                self.shape
            )));
        }
        match (
            Arc::get_mut(&mut self.storage).expect("checked unique"),
            src.device(),
        ) {
            (Storage::Cuda(b), Device::Cpu) => b.device().write(b.ptr(), src.host_bytes()?),
            (Storage::Cuda(b), Device::Cuda(_)) => {
                b.device().copy(b.ptr(), src.device_ptr()?, range.len())
            }
            (Storage::Wgpu(b), Device::Wgpu(_)) => {
                b.copy_from(0, src.wgpu_buffer()?, src.wgpu_offset()?, range.len())
            }
            (device @ (Storage::Cuda(_) | Storage::Wgpu(_)), _) => {
                let host = src.to_device(Device::Cpu)?;
                match device {
                    Storage::Cuda(b) => b.device().write(b.ptr(), host.host_bytes()?),
                    Storage::Wgpu(b) => b.write(0, host.host_bytes()?),
                    _ => unreachable!("matched a device buffer"),
                }
            }
            (host, from) => {
                let dst = host
                    .bytes_mut()
                    .ok_or_else(|| Error::Unsupported("overwriting a mapped array".into()))?;
                match from {
                    Device::Cpu => dst.copy_from_slice(src.host_bytes()?),
                    Device::Cuda(_) | Device::Wgpu(_) => src.download(dst)?,
                }
                Ok(())
            }
        }
    }

    pub fn as_i32(&self) -> Result<&[i32]> {
        self.expect_dtype(DType::I32)?;
        Ok(bytemuck::cast_slice(self.host_bytes()?))
    }

    /// f16 values; mapped checkpoint data may be unaligned, so this can fail where
    /// [`Array::to_f32_vec`] works.
    pub fn as_f16(&self) -> Result<&[f16]> {
        self.expect_dtype(DType::F16)?;
        bytemuck::try_cast_slice(self.host_bytes()?)
            .map_err(|e| Error::Unsupported(format!("f16 view: {e}")))
    }

    pub fn as_f16_mut(&mut self) -> Result<&mut [f16]> {
        self.expect_dtype(DType::F16)?;
        Ok(bytemuck::cast_slice_mut(self.host_bytes_mut()?))
    }

    /// All values converted to f32 (dense dtypes; quantized ones are dequantized), copied
    /// to the host first when the array is on a GPU.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        if self.device() != Device::Cpu {
            return self.to_device(Device::Cpu)?.to_f32_vec();
        }
        let bytes = self.host_bytes()?;
        Ok(match self.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::I32 => bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                .collect(),
            DType::U32 => bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                .collect(),
            DType::U8 => bytes.iter().map(|&b| b as f32).collect(),
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => {
                let mut out = vec![0.0; self.numel()];
                crate::backends::cpu::quant::dequantize(self.dtype, bytes, &mut out);
                out
            }
            DType::Affine { .. } | DType::Mxfp4 => {
                let mut out = vec![0.0; self.numel()];
                let view = crate::backends::cpu::grouped::GroupedView::of(self)?;
                view.dequantize_rows(0..view.rows, &mut out);
                out
            }
        })
    }

    /// An array whose value a lazy recording computes when first read.
    pub(crate) fn from_pending(pending: Arc<Pending>, shape: &[usize]) -> Array {
        Array {
            storage: Arc::new(Storage::Pending(pending)),
            offset: 0,
            dtype: DType::F32,
            shape: shape.to_vec(),
            quant: None,
        }
    }

    /// The recorded value behind this array, while it is one.
    pub(crate) fn pending(&self) -> Option<&Arc<Pending>> {
        match &*self.storage {
            Storage::Pending(p) => Some(p),
            _ => None,
        }
    }

    /// This array with its value computed: itself, or for a recorded value the array its
    /// recording computed (the recording runs on the first read).
    pub(crate) fn ready(&self) -> Result<&Array> {
        match &*self.storage {
            Storage::Pending(p) => p.value(),
            _ => Ok(self),
        }
    }

    /// Replaces a recorded value by its computed array (before a write).
    fn settle(&mut self) -> Result<()> {
        if let Storage::Pending(p) = &*self.storage {
            *self = p.value()?.clone();
        }
        Ok(())
    }

    /// Whether both are the same view of the same memory.
    pub(crate) fn same_view(&self, other: &Array) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
            && self.offset == other.offset
            && self.dtype == other.dtype
            && self.shape == other.shape
    }

    pub(crate) fn expect_dtype(&self, dtype: DType) -> Result<()> {
        if self.dtype == dtype {
            Ok(())
        } else {
            Err(Error::DType {
                expected: dtype,
                found: self.dtype,
            })
        }
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Array({}, {:?}, {:?})",
            self.dtype,
            self.shape,
            self.device()
        )
    }
}

/// Bytes taken by an array of `dtype` and `shape`, checking block alignment and overflow.
pub fn byte_len(dtype: DType, shape: &[usize]) -> Result<usize> {
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Shape(format!("shape {shape:?} overflows")))?;
    if dtype.is_quantized() && shape.last().is_none_or(|&d| d % dtype.block_len() != 0) {
        return Err(Error::Shape(format!(
            "{dtype} needs a last axis that is a multiple of {}, got {shape:?}",
            dtype.block_len()
        )));
    }
    dtype
        .bytes_for(numel)
        .ok_or_else(|| Error::Shape(format!("shape {shape:?} overflows")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_round_trip_and_reshape() {
        let a = Array::from_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        let b = a.reshape(&[3, 2]).unwrap();
        assert_eq!(b.as_f32().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(a.reshape(&[4, 2]).is_err());
        assert_eq!(a.host_bytes().unwrap().as_ptr() as usize % 64, 0);
    }

    #[test]
    fn writes_copy_shared_storage() {
        let a = Array::from_f32(&[1.0, 2.0], &[2]).unwrap();
        let mut b = a.clone();
        b.as_f32_mut().unwrap()[0] = 9.0;
        assert_eq!(a.as_f32().unwrap(), &[1.0, 2.0]);
        assert_eq!(b.as_f32().unwrap(), &[9.0, 2.0]);
    }

    #[test]
    fn quantized_shapes_are_checked() {
        assert!(Array::zeros(DType::Q4_0, &[2, 48]).is_err());
        assert_eq!(byte_len(DType::Q4_1, &[2, 64]).unwrap(), 80);
    }
}
