//! Errors of the inference layer.

use thiserror::Error;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, Error)]
pub enum InferenceError {
    /// A model file is missing.
    #[error("model file not found: {0}")]
    MissingFile(String),
    /// Reading a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The hub could not provide a file (offline, unknown repo, network).
    #[error("model hub: {0}")]
    Hub(String),
    /// The GGUF describes an architecture this engine cannot run.
    #[error("unsupported model architecture {0:?} (supported: llama-family GGUF)")]
    UnsupportedArchitecture(String),
    /// The tokenizer cannot be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template is invalid or failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// A config file is malformed.
    #[error("config {file}: {message}")]
    Config {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// An error inside candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The prompt is unusable.
    #[error("invalid prompt: {0}")]
    InvalidPrompt(String),
    /// The prompt does not fit the context.
    #[error("prompt of {tokens} tokens does not fit the context of {context}")]
    PromptTooLong {
        /// Prompt tokens.
        tokens: usize,
        /// Context length.
        context: usize,
    },
    /// The deadline passed.
    #[error("deadline passed")]
    DeadlineExceeded,
    /// The engine's workers are gone.
    #[error("engine stopped")]
    Stopped,
}

impl InferenceError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        InferenceError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<InferenceError> for rakis_core::EngineError {
    fn from(e: InferenceError) -> Self {
        use rakis_core::EngineError as E;
        match e {
            InferenceError::InvalidPrompt(m) => E::InvalidPrompt(m),
            InferenceError::PromptTooLong { tokens, context } => {
                E::PromptTooLong { tokens, context }
            }
            InferenceError::DeadlineExceeded => E::DeadlineExceeded,
            other => E::Other(other.to_string()),
        }
    }
}

impl From<InferenceError> for rakis_core::EmbedError {
    fn from(e: InferenceError) -> Self {
        rakis_core::EmbedError::Other(e.to_string())
    }
}
