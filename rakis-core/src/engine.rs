//! The [`InferenceEngine`] part: generates text with a local model.
//!
//! Implementations: `rakis_inference::CandleEngine` (quantized GGUF llama-family models) and,
//! for tests, [`ScriptedEngine`](crate::testing::ScriptedEngine) (feature `test-utils`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::consensus::sampling::{Ending, Replay};
use crate::error::SharedError;
use crate::protocol::{ChatMessage, InferenceRequest};
use crate::{Hash32, RequestId};

/// One generation job.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationJob {
    /// The request answered.
    pub request_id: RequestId,
    /// Model to run (one the engine serves).
    pub model: String,
    /// The chat prompt.
    pub messages: Vec<ChatMessage>,
    /// Temperature (0 = greedy).
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Token limit.
    pub max_tokens: u32,
    /// Sampling seed: the random number of output position `k` is
    /// [`position_random(seed, k)`](crate::consensus::sampling::position_random). A node uses
    /// its VRF output for the request ([`NodeKey::sampling_seed`](crate::NodeKey::sampling_seed)),
    /// which it cannot choose and others can check.
    pub seed: Hash32,
    /// Wall-clock deadline (ms since epoch); engines stop and fail after it.
    pub deadline_ms: u64,
}

impl GenerationJob {
    /// The job for `request` on `model`.
    pub fn for_request(request: &InferenceRequest, model: &str, seed: Hash32) -> Self {
        GenerationJob {
            request_id: request.id(),
            model: model.to_string(),
            messages: request.messages.clone(),
            temperature: request.temperature,
            top_p: request.top_p,
            max_tokens: request.max_tokens,
            seed,
            deadline_ms: request.deadline_ms(),
        }
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FinishReason {
    /// The model emitted end-of-sequence.
    Eos,
    /// `max_tokens` was reached.
    MaxTokens,
}

/// A finished generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// The model that produced it.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub tokens: u32,
    /// Ids of the generated tokens, without the end-of-turn token (empty when the engine has
    /// no tokenizer, as scripted engines).
    #[serde(default)]
    pub token_ids: Vec<u32>,
    /// Generation speed.
    pub tokens_per_sec: f32,
    /// Why it stopped.
    pub finish: FinishReason,
}

/// A request to replay a committer's sampling of an answer (the second check; see
/// [`crate::consensus::sampling`] and docs/consensus.md).
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreJob {
    /// The request answered.
    pub request_id: RequestId,
    /// The model the answer claims.
    pub model: String,
    /// The chat prompt.
    pub messages: Vec<ChatMessage>,
    /// The revealed text (it must be the decoding of `token_ids`).
    pub text: String,
    /// The answer's token ids (without the stop token).
    pub token_ids: Vec<u32>,
    /// Temperature the request asked for.
    pub temperature: f32,
    /// Nucleus mass the request asked for.
    pub top_p: f32,
    /// Token limit of the request.
    pub max_tokens: u32,
    /// The committer's sampling seed (its checked VRF output).
    pub seed: Hash32,
    /// How the committer says the answer ended.
    pub ending: Ending,
    /// Wall-clock deadline (ms since epoch) after which the engine gives up.
    pub deadline_ms: u64,
}

/// Which weights a model runs with: the SHA-256 of its weights file and the quantization its
/// engine computes with. A model name in the protocol stands for one such pair: the second
/// check replays a committer's sampling only with the same weights, and receipts name them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModelWeights {
    /// SHA-256 of the weights file (a GGUF file for `CandleEngine`).
    pub sha256: Hash32,
    /// The quantization the engine computes with (`"Q4_1"`, `"Q8_0"`, ...).
    pub quantization: String,
}

/// The result of scoring: how each position replays (judge it with
/// [`Replay::judge`](crate::consensus::sampling::Replay::judge)).
pub type Score = Replay;

/// Runs LLM generation.
///
/// Implemented for `&T`, `Arc<T>` and `Box<T>` of any engine, so one engine can be shared by
/// several nodes of a process.
#[async_trait]
#[auto_impl::auto_impl(&, Box, Arc)]
pub trait InferenceEngine: Send + Sync {
    /// Models this engine serves.
    fn models(&self) -> Vec<String>;
    /// Number of jobs it can run at once.
    fn workers(&self) -> usize;

    /// The weights `model` runs with (`None`: not known, as for scripted engines). Nodes
    /// declare them in their reveals and replay only reveals that declare their own.
    fn weights(&self, model: &str) -> Option<ModelWeights> {
        let _ = model;
        None
    }
    /// Generates text for a job.
    async fn generate(&self, job: GenerationJob) -> Result<Generation, EngineError>;
    /// Replays a committer's sampling of an answer with this engine's model. Engines that
    /// cannot keep the default (unsupported).
    async fn score(&self, job: ScoreJob) -> Result<Score, EngineError> {
        Err(EngineError::Unsupported(format!(
            "scoring with {} is not supported by this engine",
            job.model
        )))
    }
}

/// Errors of an [`InferenceEngine`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The model is not served by this engine.
    #[error("model not served: {0}")]
    UnknownModel(String),
    /// The prompt is empty or otherwise unusable.
    #[error("invalid prompt: {0}")]
    InvalidPrompt(String),
    /// The prompt does not fit the model's context.
    #[error("prompt of {tokens} tokens exceeds the context of {context}")]
    PromptTooLong {
        /// Prompt tokens.
        tokens: usize,
        /// Context size.
        context: usize,
    },
    /// The deadline passed before generation finished.
    #[error("deadline passed")]
    DeadlineExceeded,
    /// The job queue is full.
    #[error("engine busy")]
    Busy,
    /// The operation is not supported by this engine (for example scoring).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Any other failure of the engine (its own error as the source).
    #[error("engine: {0}")]
    Other(#[source] SharedError),
}
