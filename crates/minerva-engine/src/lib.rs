//! Minerva engine: KV cache, sampling and the generation loop that applications embed.

pub mod kv_cache;
pub mod sampler;

pub use kv_cache::ContiguousKvCache;
pub use sampler::{Sampler, SamplerConfig};
