//! Kernels, one folder per device. Only ops code calls into here.

pub mod cpu;
pub mod cuda;
