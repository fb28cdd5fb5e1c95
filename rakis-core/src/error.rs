//! Error types of rakis-core, one per concern.

use thiserror::Error;

pub use rakis_consensus::ConsensusError;

/// Key handling errors.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    /// The secret key bytes are not a valid secp256k1 scalar.
    #[error("invalid secret key")]
    InvalidSecretKey,
    /// A node id is not a valid compressed public key.
    #[error("node id is not a valid secp256k1 public key")]
    InvalidNodeId,
    /// A signature is malformed or was not made by the claimed key.
    #[error("bad signature")]
    BadSignature,
    /// The key file is encrypted and no passphrase was given.
    #[error("the key file is encrypted: a passphrase is required")]
    PassphraseRequired,
    /// The passphrase does not decrypt the key file.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The key file is malformed.
    #[error("key file: {0}")]
    KeyFile(String),
    /// Reading or writing the key file failed.
    #[error("key file i/o: {0}")]
    Io(String),
}

/// Why an incoming message was dropped before use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// Larger than [`MAX_MESSAGE_SIZE`](crate::wire::MAX_MESSAGE_SIZE).
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Size received.
        size: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// Unknown wire version byte.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// Bytes that do not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The signature does not match the sender.
    #[error("bad signature from claimed sender {0}")]
    BadSignature(String),
    /// The message belongs to another network.
    #[error("message for network {got:?}, this node is on {expected:?}")]
    WrongNetwork {
        /// This node's network.
        expected: String,
        /// The message's network.
        got: String,
    },
    /// The timestamp is too far from this node's clock.
    #[error("timestamp {timestamp_ms} is {skew_ms} ms from local time (max {max_ms})")]
    ClockSkew {
        /// The message's timestamp.
        timestamp_ms: u64,
        /// Absolute difference from local time.
        skew_ms: u64,
        /// Allowed skew.
        max_ms: u64,
    },
    /// The same message was already received (replay or duplicate delivery).
    #[error("duplicate or replayed message")]
    Duplicate,
}

/// Errors of a [`Transport`](crate::Transport).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    /// The transport is shut down.
    #[error("transport closed")]
    Closed,
    /// The destination peer is unknown or unreachable.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No peer to send to.
    #[error("no peers")]
    NoPeers,
    /// Any other failure.
    #[error("transport: {0}")]
    Other(String),
}

/// Errors of an [`InferenceEngine`](crate::InferenceEngine).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
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
    /// Any other failure.
    #[error("engine: {0}")]
    Other(String),
}

/// Errors of an [`Embedder`](crate::Embedder).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EmbedError {
    /// Empty input.
    #[error("nothing to embed")]
    Empty,
    /// The model produced an unusable vector.
    #[error("embedding: {0}")]
    Consensus(#[from] ConsensusError),
    /// Any other failure.
    #[error("embedder: {0}")]
    Other(String),
}

/// Errors of a [`CommitStore`](crate::CommitStore).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The store file is already open: by another process, or by another store of this process.
    #[error("store file is already in use: {0}")]
    Locked(String),
    /// The store file is corrupted or not a Rakis store.
    #[error("store is corrupted or foreign: {0}")]
    Corrupted(String),
    /// The store's schema version is not supported.
    #[error("unsupported store schema version {0}")]
    UnsupportedSchema(u32),
    /// A record contradicts one already stored (for example a second own output).
    #[error("conflict: {0}")]
    Conflict(String),
    /// I/O failure.
    #[error("store i/o: {0}")]
    Io(String),
    /// The store does not implement this operation.
    #[error("unsupported by this store: {0}")]
    Unsupported(String),
}

/// Errors of a [`ChainSink`](crate::ChainSink) or a request source.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainError {
    /// The chain rejected the transaction; the decoded reason.
    #[error("reverted: {0}")]
    Reverted(String),
    /// The RPC endpoint could not be reached.
    #[error("rpc unavailable: {0}")]
    Unavailable(String),
    /// The result is already on the chain.
    #[error("already submitted")]
    AlreadySubmitted,
    /// The sink needs more node signatures than it was given (the node submits again when more
    /// attestations arrive).
    #[error("not enough signatures: {have} of {need}")]
    NotEnoughSignatures {
        /// Usable signatures given.
        have: usize,
        /// Signatures the chain requires.
        need: usize,
    },
    /// Any other failure.
    #[error("chain: {0}")]
    Other(String),
}

/// Errors of node assembly and of the node handle.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeError {
    /// The builder was given an invalid combination of parts.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// A request is invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The node has shut down.
    #[error("node is shut down")]
    ShutDown,
    /// The awaited request failed.
    #[error("request failed: {0}")]
    RequestFailed(String),
    /// Waiting timed out.
    #[error("timed out")]
    Timeout,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}
