//! A checkpoint's tensors as `Array`s, whatever file format holds them.

use std::path::Path;

use minerva_core::{Array, DType};

use crate::error::{ModelError, Result};
use crate::formats::gguf::GgufFile;
use crate::formats::safetensors::SafetensorsModel;
use crate::formats::TensorInfo;

pub enum Checkpoint {
    Gguf(GgufFile),
    Safetensors(SafetensorsModel),
}

impl Checkpoint {
    /// The file to name in errors (the GGUF file, or the first safetensors file).
    pub fn path(&self) -> &Path {
        match self {
            Checkpoint::Gguf(g) => g.path(),
            Checkpoint::Safetensors(s) => s.files().first().map_or(Path::new("?"), |(p, _)| p),
        }
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        match self {
            Checkpoint::Gguf(g) => g.tensor(name),
            Checkpoint::Safetensors(s) => s.tensor(name),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.info(name).is_some()
    }

    fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.info(name).ok_or_else(|| ModelError::MissingTensor {
            path: self.path().to_path_buf(),
            name: name.to_string(),
        })
    }

    fn tensor_error(&self, name: &str, message: String) -> ModelError {
        ModelError::Tensor {
            path: self.path().to_path_buf(),
            name: name.to_string(),
            message,
        }
    }

    fn check_shape(&self, info: &TensorInfo, shape: &[usize]) -> Result<()> {
        if info.shape != shape {
            return Err(self.tensor_error(
                &info.name,
                format!("has shape {:?}, expected {shape:?}", info.shape),
            ));
        }
        Ok(())
    }

    /// A weight matrix of `shape`, borrowed from the mapping in its stored dtype (dense or
    /// block-quantized). f32 data that is not 4-byte aligned in the file is copied.
    pub fn matrix(&self, name: &str, shape: [usize; 2]) -> Result<Array> {
        let info = self.require(name)?;
        self.check_shape(info, &shape)?;
        match info.dtype {
            DType::F16 | DType::BF16 | DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => {}
            DType::F32 if info.offset % 4 == 0 => {}
            DType::F32 => return self.vector_like(info, &shape),
            other => {
                return Err(self.tensor_error(
                    name,
                    format!("has dtype {other}, which is not a weight type"),
                ))
            }
        }
        Ok(Array::from_mapped(
            info.map.clone(),
            info.offset,
            info.dtype,
            &shape,
        )?)
    }

    /// A small tensor (norm weight, bias) as an owned f32 array of `shape`.
    pub fn f32_tensor(&self, name: &str, shape: &[usize]) -> Result<Array> {
        let info = self.require(name)?;
        self.check_shape(info, shape)?;
        self.vector_like(info, shape)
    }

    /// `f32_tensor` when the tensor exists, `None` when it does not.
    pub fn optional_f32(&self, name: &str, shape: &[usize]) -> Result<Option<Array>> {
        if self.contains(name) {
            self.f32_tensor(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    fn vector_like(&self, info: &TensorInfo, shape: &[usize]) -> Result<Array> {
        if matches!(info.dtype, DType::I32 | DType::U8 | DType::U32) {
            return Err(self.tensor_error(
                &info.name,
                format!("has dtype {}, expected floats", info.dtype),
            ));
        }
        let mapped = Array::from_mapped(info.map.clone(), info.offset, info.dtype, shape)?;
        Ok(Array::from_f32(&mapped.to_f32_vec()?, shape)?)
    }
}
