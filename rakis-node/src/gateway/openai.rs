//! The OpenAI wire format: what clients send and what they are sent back. Unknown request
//! fields are ignored (clients send many), and Rakis' own additions travel in a `rakis`
//! extension field, which OpenAI clients ignore.

use serde::{Deserialize, Serialize};

use super::Verification;

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model (one the network serves: `GET /v1/models`).
    pub model: String,
    /// The conversation.
    pub messages: Vec<InputMessage>,
    /// Sampling temperature (0–2).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Most tokens to generate (older name).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Choices wanted (only 1: the network agrees on one answer).
    #[serde(default)]
    pub n: Option<u32>,
    /// Rakis' own knobs (the OpenAI client sends them with `extra_body`).
    #[serde(default)]
    pub rakis: Option<RakisOptions>,
}

/// Per-request security settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RakisOptions {
    /// Commits needed before the deadline.
    #[serde(default)]
    pub quorum: Option<u32>,
    /// Milliseconds until commits close.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

/// One message of the conversation.
#[derive(Clone, Debug, Deserialize)]
pub struct InputMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Text, or text parts.
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content: a string or a list of parts (only text parts are understood).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<ContentPart>),
}

/// One part of a message.
#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    /// `text` (others are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default)]
    pub text: Option<String>,
}

/// A chat completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-<request id>`.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: String,
    /// The one agreed answer.
    pub choices: Vec<Choice>,
    /// How the answer was verified.
    pub rakis: Verification,
}

/// The answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Choice {
    /// 0.
    pub index: u32,
    /// The assistant's message.
    pub message: OutputMessage,
    /// `stop`.
    pub finish_reason: String,
}

/// The assistant's message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutputMessage {
    /// `assistant`.
    pub role: String,
    /// The agreed text.
    pub content: String,
}

/// One server-sent event of a streamed completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// As the completion's.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: String,
    /// One delta.
    pub choices: Vec<ChunkChoice>,
    /// On the last chunk: how the answer was verified.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rakis: Option<Verification>,
}

/// A delta of the answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// 0.
    pub index: u32,
    /// What is added.
    pub delta: Delta,
    /// `stop` on the last chunk.
    pub finish_reason: Option<String>,
}

/// Text added by a chunk.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, on the first chunk.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub role: Option<String>,
    /// Text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content: Option<String>,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

/// A model the network serves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Model {
    /// Its name in requests.
    pub id: String,
    /// `model`.
    pub object: String,
    /// 0 (not known).
    pub created: u64,
    /// `rakis`.
    pub owned_by: String,
    /// Nodes known to serve it (this node included).
    pub rakis_nodes: usize,
}

/// `POST /v1/embeddings`.
#[derive(Clone, Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// The embedding model (this node's).
    pub model: String,
    /// A text or texts.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32, what the OpenAI Python client asks).
    #[serde(default)]
    pub encoding_format: Option<String>,
}

/// Texts to embed.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// The embeddings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbeddingList {
    /// `list`.
    pub object: String,
    /// One per input, in order.
    pub data: Vec<EmbeddingData>,
    /// The model.
    pub model: String,
}

/// One embedding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbeddingData {
    /// `embedding`.
    pub object: String,
    /// Its input's position.
    pub index: usize,
    /// Floats, or their base64 bytes.
    pub embedding: serde_json::Value,
}

/// The OpenAI error body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// For people.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`, `timeout_error`,
    /// `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A stable code for programs.
    pub code: Option<String>,
}
