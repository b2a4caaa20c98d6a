//! Minerva models: checkpoint formats, tokenizers and chat templates, and the architectures
//! written against the core ops API.

pub mod formats;
