//! Minerva engine: KV cache, sampling and the generation loop that applications embed.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use minerva_engine::{Engine, GenerateOptions};
//! use minerva_models::messages::{ChatMessage, ChatOptions};
//!
//! let engine = Engine::load("model.gguf".as_ref())?;
//! let prompt = engine.encode_chat(&[ChatMessage::new("user", "Hi!")], &ChatOptions::default())?;
//! let mut session = engine.session(None)?;
//! session.generate(&prompt, &GenerateOptions::default(), |text| {
//!     print!("{text}");
//!     ControlFlow::Continue(())
//! })?;
//! # Ok::<(), minerva_engine::EngineError>(())
//! ```

pub mod batch;
pub mod decode_step;
pub mod engine;
pub mod error;
pub mod generate;
pub mod kv_cache;
mod prefix_cache;
pub mod reply;
pub mod sampler;
mod stop;

pub use batch::{Batch, BatchConfig, GenId};
pub use decode_step::{BatchDecode, DecodeStep};
pub use engine::Engine;
pub use error::{EngineError, Result};
pub use generate::{
    forward, FinishReason, GenerateOptions, GenerationStats, SampledToken, Session, Step,
    TokenLogprobs,
};
pub use kv_cache::{KvConfig, PagedKvCache, SequenceCache};
pub use minerva_core::Device;
pub use minerva_core::KvDType;
pub use reply::Reply;
pub use sampler::{Sampler, SamplerConfig};
