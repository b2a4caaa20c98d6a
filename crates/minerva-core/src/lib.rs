//! Minerva core: the `Array` type, the ops API that model code calls, and the backends that
//! implement the ops.
//!
//! Model code only calls [`ops`]; the backends under [`backends`] hold the kernels.

pub mod array;
pub mod backends;
pub mod device_stats;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod kv_pages;
pub mod ops;
pub mod replay;

pub use array::{Array, Device};
pub use device_stats::KernelTime;
pub use dtype::DType;
pub use error::{Error, Result};
pub use kv_pages::{KvDType, KvPages, PageTable};
pub use replay::Replay;
