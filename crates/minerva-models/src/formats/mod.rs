//! Checkpoint file formats, read by mmap without copying tensor data.
//!
//! Every reader yields [`TensorInfo`]s that point into a shared [`memmap2::Mmap`]; the model
//! loader turns them into `Array`s that borrow the mapping.

pub mod gguf;
pub mod mlx_quantization;
pub mod safetensors;

use std::path::PathBuf;
use std::sync::Arc;

use minerva_core::DType;

/// Where one tensor lives: a byte range of a mapped file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Row-major shape, outermost axis first (for GGUF this is ggml's `ne` reversed).
    pub shape: Vec<usize>,
    /// The mapping of the file that holds the tensor.
    pub map: Arc<memmap2::Mmap>,
    /// Absolute byte offset of the tensor data inside `map`.
    pub offset: usize,
    /// Byte length of the tensor data (checked against dtype and shape when the file opens).
    pub nbytes: usize,
}

impl TensorInfo {
    /// The tensor's bytes, borrowed from the mapping.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.offset..self.offset + self.nbytes]
    }
}

/// Errors reading a checkpoint; each names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl FormatError {
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        FormatError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Maps `path` read-only. A missing or unreadable file is a [`FormatError::Io`] naming it.
pub(crate) fn map_file(path: &std::path::Path) -> Result<Arc<memmap2::Mmap>, FormatError> {
    let io = |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(FormatError::invalid(path, "not a regular file"));
    }
    // SAFETY: the file is opened read-only and the mapping is private to this process and
    // read-only. Another process truncating or rewriting the file while it is mapped would
    // change or invalidate bytes under us; like every mmap-based model loader we treat such
    // concurrent external modification of a checkpoint as outside the contract.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Arc::new(map))
}
