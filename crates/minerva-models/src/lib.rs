//! Minerva models: checkpoint formats, tokenizers and chat templates, and the architectures
//! written against the core ops API.

pub mod arch;
pub mod blocks;
pub mod chat_template;
pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod error;
pub mod formats;
pub mod harmony;
pub mod kv;
pub mod loader;
pub mod local_models;
pub mod messages;
pub mod model_cache;
pub mod synthetic;
pub mod tokenizer;

pub use arch::{CausalLm, Logits, ModelInfo};
pub use error::{ModelError, Result};
pub use kv::KvCache;
pub use loader::{load_model, ModelFiles};
