//! Errors of the inference layer.

use rakis_core::error::SharedError;
use thiserror::Error;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, Error)]
#[non_exhaustive]
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
    /// A file is not in the hub cache and `HF_HUB_OFFLINE` is set.
    #[error("{file} is not cached and HF_HUB_OFFLINE is set")]
    HubOffline {
        /// `repo/file`.
        file: String,
    },
    /// The hub could not provide a file (unknown repo or file, network), or this build has no
    /// hub support (feature `hub`).
    #[error("model hub, {file}: {source}")]
    Hub {
        /// `repo/file`.
        file: String,
        /// The hub client's error.
        #[source]
        source: SharedError,
    },
    /// The GGUF describes an architecture this engine cannot run.
    #[error("unsupported model architecture {0:?} (supported: llama-family GGUF)")]
    UnsupportedArchitecture(String),
    /// The tokenizer cannot be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(#[source] SharedError),
    /// The chat template is invalid or failed to render.
    #[error("chat template: {0}")]
    Template(#[source] minijinja::Error),
    /// A model or config file is malformed.
    #[error("{file}: {source}")]
    Config {
        /// The file.
        file: String,
        /// What is wrong with it.
        #[source]
        source: SharedError,
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
    /// A model's weights lack a tensor, hold one of another shape, or describe a model this
    /// crate cannot run.
    #[error("model weights: {0}")]
    Weights(String),
    /// A text cannot be embedded as given (too long for the model's positions, or a token
    /// outside its vocabulary).
    #[error("text to embed: {0}")]
    InvalidText(String),
    /// The deadline passed.
    #[error("deadline passed")]
    DeadlineExceeded,
    /// The engine's workers are gone.
    #[error("engine stopped")]
    Stopped,
}

impl InferenceError {
    /// A tokenizer failure with a message of ours.
    pub(crate) fn tokenizer(message: impl std::fmt::Display) -> Self {
        InferenceError::Tokenizer(SharedError::msg(message))
    }

    /// A tokenizer library error.
    pub(crate) fn tokenizers(e: tokenizers::Error) -> Self {
        InferenceError::Tokenizer(SharedError::from_boxed(e))
    }

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
            other => E::Other(SharedError::new(other)),
        }
    }
}

impl From<InferenceError> for rakis_core::EmbedError {
    fn from(e: InferenceError) -> Self {
        rakis_core::EmbedError::Other(SharedError::new(e))
    }
}
