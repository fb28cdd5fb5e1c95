//! The [`Transport`] part: carries wire bytes between nodes.
//!
//! Implementations: `rakis_net::Libp2pTransport` (gossipsub and request-response over libp2p),
//! `rakis_net::RedundantTransport` (several transports at once) and, for tests,
//! [`MemoryHub`](crate::testing::MemoryHub) (feature `test-utils`).

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::SharedError;
use crate::NodeId;

/// Something that happened on the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
///
/// Implemented for `&T`, `Arc<T>` and `Box<T>` of any transport, so a shared transport is given
/// to the node builder as it is.
#[async_trait]
#[auto_impl::auto_impl(&, Box, Arc)]
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
    /// The network this transport is bound to, when it is bound to one (a libp2p transport
    /// names its topics and protocols after it). The node takes its network id from here; a
    /// node configuration naming another network is refused.
    fn network_id(&self) -> Option<String> {
        None
    }
    /// The signatures this transport checked when it validated incoming messages, when it
    /// shares them: the node's [`Inbox`](crate::envelope::Inbox) then recovers each message's
    /// signature once, not twice (see [`VerifiedSignatures`](crate::envelope::VerifiedSignatures)).
    fn verified_signatures(&self) -> Option<std::sync::Arc<crate::envelope::VerifiedSignatures>> {
        None
    }
}

/// Errors of a [`Transport`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The transport is shut down.
    #[error("transport closed")]
    Closed,
    /// The destination peer is unknown or unreachable.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer, as the transport names it.
        peer: String,
        /// Why (the transport's own error).
        #[source]
        reason: SharedError,
    },
    /// No peer to send to.
    #[error("no peers")]
    NoPeers,
    /// The peer refused the message: it found it invalid, or it is over its rate limit.
    #[error("peer {peer} refused the message: {reason}")]
    Refused {
        /// The peer, as the transport names it.
        peer: String,
        /// Why, as the peer said.
        reason: Refusal,
    },
    /// The message does not open as a signed envelope of this network: peers would refuse it,
    /// so it is not sent.
    #[error("refusing to send an invalid message: {0}")]
    InvalidMessage(#[source] crate::envelope::EnvelopeError),
    /// Any other failure of the transport.
    #[error("transport: {0}")]
    Other(#[source] SharedError),
}

/// Why a peer refused a direct message ([`TransportError::Refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The peer found the message invalid.
    #[error("invalid message")]
    InvalidMessage,
    /// The peer is over its rate limit for this sender, or overloaded.
    #[error("over its rate limit or overloaded")]
    Overloaded,
}
