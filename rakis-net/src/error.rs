//! Errors of the libp2p transport.

use rakis_core::error::SharedError;
use thiserror::Error;

/// Why the libp2p transport could not start or carry out a request.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum NetError {
    /// The configuration is invalid.
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// The node key cannot be used as a libp2p identity.
    #[error("invalid identity: {0}")]
    Identity(#[source] SharedError),
    /// Building the libp2p transports or behaviours failed.
    #[error("could not build the libp2p swarm: {0}")]
    Build(#[source] SharedError),
    /// Listening on an address failed.
    #[error("could not listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: String,
        /// Why (libp2p's error).
        #[source]
        reason: SharedError,
    },
    /// Dialling an address failed at once.
    #[error("could not dial {address}: {reason}")]
    Dial {
        /// The address.
        address: String,
        /// Why (libp2p's error).
        #[source]
        reason: SharedError,
    },
    /// Waiting for something took too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The transport's task has stopped.
    #[error("the network task has stopped")]
    Closed,
}
