//! Errors of node assembly and of the node handle.

use crate::coordinator::QuorumFailure;
use crate::protocol::RequestError;
use crate::store::StoreError;
use crate::transport::TransportError;

/// Errors of node assembly ([`NodeBuilder::build`](crate::NodeBuilder::build)) and of the
/// [`NodeHandle`](crate::NodeHandle).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The builder was given an invalid combination of parts or settings.
    #[error("invalid node configuration: {0}")]
    Config(#[from] ConfigError),
    /// A request is invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(#[from] RequestError),
    /// The node has shut down.
    #[error("node is shut down")]
    ShutDown,
    /// The awaited request failed.
    #[error("request failed: {0}")]
    RequestFailed(QuorumFailure),
    /// Waiting timed out.
    #[error("timed out")]
    Timeout,
    /// The request has no committee (an open network): its results cannot be certified.
    #[error("the request has no committee (open network): its results cannot be certified")]
    NoCommittee,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Why [`NodeBuilder::build`](crate::NodeBuilder::build) refused a combination of parts or
/// settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No transport was given.
    #[error("a transport is required")]
    MissingTransport,
    /// Neither a membership nor an open network was chosen.
    #[error("choose who may answer: a membership (NodeBuilder::membership) or, for tests, NodeBuilder::open_network")]
    NoMembership,
    /// The network id is empty.
    #[error("the network id is empty")]
    EmptyNetworkId,
    /// The configuration names another network than the transport is bound to.
    #[error("the configuration names network {configured:?} but the transport is bound to {transport:?}")]
    NetworkMismatch {
        /// The configuration's network id.
        configured: String,
        /// The transport's network id.
        transport: String,
    },
    /// An engine was given without an embedder: it could not commit.
    #[error("an engine without an embedder cannot commit: add an embedder")]
    EngineWithoutEmbedder,
    /// The engine has no workers.
    #[error("the engine has no workers")]
    NoWorkers,
    /// The engine serves no model.
    #[error("the engine serves no model")]
    NoModels,
    /// The embedder has no dimension or no model name.
    #[error("the embedder has no dimension or no model name")]
    BadEmbedder,
    /// A setting is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The setting, as named in the configuration file.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}
