//! Quantized block kernels (being written).
