//! Engine errors: what went wrong loading or running a model, in one line.

use minerva_models::chat_template::TemplateError;
use minerva_models::tokenizer::TokenizerError;
use minerva_models::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Op(#[from] minerva_core::Error),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {tokens} tokens but the context holds {context}")]
    PromptTooLong { tokens: usize, context: usize },
    #[error("no generation is in progress")]
    NotGenerating,
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
