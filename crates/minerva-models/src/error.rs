//! Errors of loading and running models; each names the file and the field or tensor at fault.

use std::path::PathBuf;

use crate::formats::FormatError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: missing tensor '{name}'")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor '{name}' {message}")]
    Tensor {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("{path}: unsupported architecture '{arch}' (supported: {supported})")]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        supported: &'static str,
    },
    #[error(transparent)]
    Op(#[from] minerva_core::Error),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("harmony: {0}")]
    Harmony(String),
    #[error(transparent)]
    Template(#[from] crate::chat_template::TemplateError),
}

impl ModelError {
    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ModelError::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
