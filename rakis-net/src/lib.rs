//! # rakis-net
//!
//! The P2P layer of Rakis: the default [`Transport`](rakis_core::Transport) on libp2p
//! ([`Libp2pTransport`], feature `libp2p`, on by default) and redundant delivery over several
//! transports at once ([`RedundantTransport`], always available).
//!
//! ## The libp2p transport
//!
//! * **Identity**: the node's secp256k1 [`NodeKey`](rakis_core::NodeKey) is the libp2p key, so
//!   the peer id and the node id convert into each other ([`peer_id_of`], [`node_id_of`]).
//! * **Transports**: TCP (noise, yamux) and QUIC.
//! * **Broadcasts**: gossipsub on five topics namespaced by network id,
//!   `rakis/<network_id>/{requests,commits,reveals,results,presence}`; the topic follows the
//!   message kind. Messages are anonymous at the gossipsub level (the envelope carries the
//!   signature) and content-addressed. Every received message is validated before it is
//!   forwarded: it must open as an envelope of this network (size, version, signature, network
//!   id) and its kind must belong to its topic; invalid ones are rejected and lower the
//!   sender's gossipsub peer score.
//! * **Direct messages**: request-response on `/rakis/<network_id>/direct/1.0.0`; the receiver
//!   validates and acknowledges, so [`Transport::send`](rakis_core::Transport::send) returns
//!   once the peer accepted the bytes.
//! * **Discovery**: identify (peers announcing another network are disconnected), Kademlia
//!   with bootstrap peers (identify-reported listen addresses feed it), optional mDNS.
//! * **Protection**: connection limits, a token bucket per signer on received messages (and a
//!   forwarding bound per relay, never penalised), at most `event_buffer_bytes` of unread
//!   messages, sync messages refused on gossip, disconnection and blocking of peers that send
//!   invalid messages or keep flooding, periodic
//!   redial of lost bootstrap peers; a peer book ([`Libp2pTransport::peer_book`]) records what
//!   is known of each peer, including the models and capacity of its `PeerStatus`.
//!
//! ## Assembling a node
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use rakis_core::testing::{HashEmbedder, ScriptedEngine};
//! use rakis_core::{Node, NodeKey, StaticMembership, Transport};
//! use rakis_net::{Libp2pTransport, NetConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = "doc-net";
//! let (first_key, key) = (NodeKey::generate(), NodeKey::generate());
//! // A first node, listening on a free port of 127.0.0.1.
//! let first = Libp2pTransport::start(first_key.clone(), NetConfig::local_test(network)).await?;
//! // A second node that bootstraps from the first; the node takes the network id from its
//! // transport, and answers in committees drawn from the network's two members.
//! let config = NetConfig::local_test(network).with_bootstrap(first.listen_addrs());
//! let transport = Arc::new(Libp2pTransport::start(key.clone(), config).await?);
//! let members = StaticMembership::equal([first_key.node_id(), key.node_id()])?;
//! let node = Node::builder()
//!     .membership(members)
//!     .transport(transport.clone())
//!     .key(key)
//!     .engine(ScriptedEngine::constant("smollm2-135m", "Paris."))
//!     .embedder(HashEmbedder::default_model())
//!     .build()?;
//! let (handle, _task) = node.spawn();
//! transport.wait_for_topic_peers(1, Duration::from_secs(10)).await?;
//! assert_eq!(transport.peers(), vec![first.node_id()]);
//! # handle.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Real deployments use [`NetConfig::default`] (TCP and QUIC on port 4001, mDNS on) with
//! bootstrap peers; the node takes its network id from the transport.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rustdoc::broken_intra_doc_links
)]

#[cfg(feature = "libp2p")]
mod behaviour;
#[cfg(feature = "libp2p")]
mod codec;
#[cfg(feature = "libp2p")]
pub mod config;
#[cfg(feature = "libp2p")]
pub mod error;
#[cfg(feature = "libp2p")]
pub mod identity;
#[cfg(feature = "libp2p")]
pub mod peer_book;
#[cfg(feature = "libp2p")]
mod rate;
pub mod redundant;
#[cfg(feature = "libp2p")]
pub mod topics;
#[cfg(feature = "libp2p")]
mod transport;

#[cfg(feature = "libp2p")]
pub use config::{NetConfig, RateLimit};
#[cfg(feature = "libp2p")]
pub use error::NetError;
#[cfg(feature = "libp2p")]
pub use identity::{keypair_of, node_id_of, peer_id_of};
#[cfg(feature = "libp2p")]
pub use libp2p::{Multiaddr, PeerId};
#[cfg(feature = "libp2p")]
pub use peer_book::PeerEntry;
pub use redundant::RedundantTransport;
#[cfg(feature = "libp2p")]
pub use topics::TopicKind;
#[cfg(feature = "libp2p")]
pub use transport::{Libp2pTransport, NetStats};
