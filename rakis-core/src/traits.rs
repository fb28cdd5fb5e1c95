//! The five pluggable parts of a node. All are object-safe, async and `Send + Sync`: a node
//! holds them as `Arc<dyn Trait>`.

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::{ChainError, EmbedError, EngineError, StoreError, TransportError};
use crate::protocol::{ChatMessage, ConsensusResultMsg, InferenceRequest};
use crate::store::{QuorumRecord, StoreOp};
use crate::{BinaryEmbedding, NodeId, RequestId};

/// Something that happened on the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// Wire bytes arrived (a signed envelope; the node verifies it).
    Message {
        /// The transport-level peer it came from, when known (not necessarily the signer:
        /// gossip forwards other nodes' messages).
        from: Option<NodeId>,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A peer connected.
    PeerConnected(NodeId),
    /// A peer disconnected.
    PeerDisconnected(NodeId),
}

/// Carries wire bytes between nodes.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends bytes to every peer of the network.
    async fn broadcast(&self, bytes: Vec<u8>) -> Result<(), TransportError>;
    /// Sends bytes to one peer.
    async fn send(&self, peer: &NodeId, bytes: Vec<u8>) -> Result<(), TransportError>;
    /// The stream of incoming events. Called once by the node; later calls may return an
    /// empty stream.
    fn events(&self) -> BoxStream<'static, TransportEvent>;
    /// Peers currently connected.
    fn peers(&self) -> Vec<NodeId>;
}

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
    /// Sampling seed.
    pub seed: u64,
    /// Wall-clock deadline (ms since epoch); engines stop and fail after it.
    pub deadline_ms: u64,
}

impl GenerationJob {
    /// The job for `request` on `model`.
    pub fn for_request(request: &InferenceRequest, model: &str, seed: u64) -> Self {
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
    /// Generation speed.
    pub tokens_per_sec: f32,
    /// Why it stopped.
    pub finish: FinishReason,
}

/// A request to score an existing output (likelihood verification; see the architecture's
/// planned second check).
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreJob {
    /// The model to score with.
    pub model: String,
    /// The chat prompt.
    pub messages: Vec<ChatMessage>,
    /// The output to score.
    pub output: String,
    /// Nucleus mass the output was sampled with.
    pub top_p: f32,
    /// Temperature it was sampled with.
    pub temperature: f32,
}

/// The result of scoring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Output tokens read.
    pub tokens: u32,
    /// Tokens that fall outside the sampling nucleus.
    pub outside_nucleus: u32,
    /// Mean log-probability of the output tokens.
    pub mean_logprob: f32,
    /// Whether the model would end the answer where it ends.
    pub ends_plausibly: bool,
}

/// Runs LLM generation.
#[async_trait]
pub trait InferenceEngine: Send + Sync {
    /// Models this engine serves.
    fn models(&self) -> Vec<String>;
    /// Number of jobs it can run at once.
    fn workers(&self) -> usize;
    /// Generates text for a job.
    async fn generate(&self, job: GenerationJob) -> Result<Generation, EngineError>;
    /// Scores an output (likelihood verification). Engines that cannot score keep the default.
    async fn score(&self, job: ScoreJob) -> Result<Score, EngineError> {
        Err(EngineError::Unsupported(format!(
            "scoring with {} is not supported by this engine",
            job.model
        )))
    }
}

/// Embeds texts with a sentence model.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// The model's name, as written in security frames.
    fn model(&self) -> String;
    /// Embedding dimension.
    fn dim(&self) -> u32;
    /// Float embeddings, one per text.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// Binary embeddings, one per text. The default quantizes [`Embedder::embed`]; models with
    /// dead dimensions override it to mask them.
    async fn embed_binary(&self, texts: Vec<String>) -> Result<Vec<BinaryEmbedding>, EmbedError> {
        self.embed(texts)
            .await?
            .iter()
            .map(|v| BinaryEmbedding::quantize(v).map_err(EmbedError::from))
            .collect()
    }
}

/// Durable node state. Every write is durable when the call returns.
///
/// A write is applied atomically or not at all: a write refused with an error (for example
/// [`StoreError::Conflict`]) changes no stored state. The three required methods are what a
/// node needs to run and to recover its open quorums; the provided ones (retention, size,
/// pending chain submissions) answer [`StoreError::Unsupported`] unless a store implements them.
#[async_trait]
pub trait CommitStore: Send + Sync {
    /// Applies one write.
    async fn apply(&self, op: StoreOp) -> Result<(), StoreError>;
    /// Everything known about one request.
    async fn quorum(&self, request_id: &RequestId) -> Result<Option<QuorumRecord>, StoreError>;
    /// Every request whose quorum has not completed or failed (for recovery after a restart).
    async fn open_quorums(&self) -> Result<Vec<QuorumRecord>, StoreError>;
    /// Every closed request whose signed result is still
    /// [`Pending`](crate::store::SubmissionState::Pending) on some sink (the node stopped while
    /// submitting it): a restarted node submits it to those sinks only.
    async fn unsettled_results(&self) -> Result<Vec<QuorumRecord>, StoreError> {
        Err(StoreError::Unsupported(
            "this store does not track pending chain submissions".into(),
        ))
    }
    /// Retention: deletes every closed (completed or failed) request whose deadline is before
    /// `closed_before_ms` (ms since epoch) and returns how many were deleted. Open requests are
    /// kept whatever their age.
    async fn prune(&self, closed_before_ms: u64) -> Result<u64, StoreError> {
        let _ = closed_before_ms;
        Err(StoreError::Unsupported(
            "this store has no retention policy".into(),
        ))
    }
    /// How many bytes the store occupies (for a file: its size on disk).
    async fn size_bytes(&self) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported(
            "this store does not report its size".into(),
        ))
    }
}

/// Receipt of a result written to a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReceipt {
    /// Which sink.
    pub sink: String,
    /// Chain-specific reference (transaction hash, ledger index).
    pub reference: String,
}

/// Writes results to a chain (or ledger).
#[async_trait]
pub trait ChainSink: Send + Sync {
    /// A stable name of this sink (for example `evm:31337`), used to track per-chain state.
    fn name(&self) -> String;
    /// Whether this sink records results of `request` (default: every request). An oracle
    /// contract's sink takes only the requests its contract made; a node neither marks nor
    /// submits results to a sink that declines.
    fn accepts(&self, request: &InferenceRequest) -> bool {
        let _ = request;
        true
    }
    /// Submits the node's own signed `result` of `request`, with the matching results other
    /// nodes signed (`attestations`, same result digest). Must be idempotent: a result already
    /// written returns [`ChainError::AlreadySubmitted`] or the earlier receipt. A sink that needs
    /// more signatures than it was given answers [`ChainError::NotEnoughSignatures`]; the node
    /// then submits again as more attestations arrive.
    async fn submit(
        &self,
        request: &InferenceRequest,
        result: &ConsensusResultMsg,
        attestations: &[ConsensusResultMsg],
    ) -> Result<SubmitReceipt, ChainError>;
    /// Whether the result of `request_id` is already written.
    async fn is_submitted(&self, request_id: &RequestId) -> Result<bool, ChainError>;
}

/// A source of chain-originated requests (for example contract events).
pub trait RequestSource: Send + Sync {
    /// The stream of requests, each with `Origin::Chain`.
    fn requests(&self) -> BoxStream<'static, Result<InferenceRequest, ChainError>>;
}
