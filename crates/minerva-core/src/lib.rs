//! Minerva core: the `Array` type, the ops API that model code calls, and the backends that
//! implement the ops.

pub mod backends;
pub mod dtype;

pub use dtype::DType;
