//! The core error type: shape and dtype mismatches between op arguments, and device
//! failures.

use crate::DType;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("shape error: {0}")]
    Shape(String),
    #[error("dtype error: expected {expected}, found {found}")]
    DType { expected: DType, found: DType },
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No usable GPU, a driver or compiler problem, out of device memory, or arrays on
    /// different devices.
    #[error("device error: {0}")]
    Device(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
