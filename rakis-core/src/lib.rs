//! # rakis-core
//!
//! The protocol core of Rakis: protocol types, node identity and signed envelopes, the traits of
//! the pluggable parts, the coordination state machine, and the [`Node`] that drives it.
//!
//! A host assembles a node from parts — a [`Transport`], an [`InferenceEngine`], an
//! [`Embedder`], a [`CommitStore`], any number of [`ChainSink`]s and [`RequestSource`]s — and
//! gets a cloneable [`NodeHandle`] plus a driver to run.
//!
//! ```
//! use std::time::Duration;
//! use rakis_core::testing::{HashEmbedder, MemoryHub, ScriptedEngine};
//! use rakis_core::{Node, NodeConfig, NodeKey, StaticMembership};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One in-process network; real deployments use `rakis-net` (libp2p) instead.
//! let hub = MemoryHub::default();
//! // Who may answer: three members of equal weight (each request's committee is drawn from
//! // them; a chain-backed registry is the production choice).
//! let keys: Vec<NodeKey> = (0..3).map(|_| NodeKey::generate()).collect();
//! let members = StaticMembership::equal(keys.iter().map(|k| k.node_id()))?;
//! let mut handles = Vec::new();
//! for key in keys {
//!     let node = Node::builder()
//!         .config(NodeConfig::local_test().with_network_id("doc-net"))
//!         .membership(members.clone())
//!         .transport(hub.join(key.node_id()))
//!         .key(key)
//!         .engine(ScriptedEngine::constant("smollm2-135m", "The capital of France is Paris."))
//!         .embedder(HashEmbedder::default_model())
//!         .build()?;
//!     let (handle, _task) = node.spawn();
//!     handles.push(handle);
//! }
//!
//! let id = handles[0]
//!     .request("What is the capital of France?")
//!     .models(["smollm2-135m"])
//!     .quorum(3)
//!     .deadline(Duration::from_millis(300))
//!     .submit()
//!     .await?;
//! let outcome = handles[0].wait_for_outcome(id, Duration::from_secs(30)).await?;
//! assert_eq!(outcome.selected().unwrap().output, "The capital of France is Paris.");
//! # for h in &handles { h.shutdown().await?; }
//! # Ok(())
//! # }
//! ```
//!
//! ## Where things are
//! * Assembly: [`Node`], [`NodeBuilder`], [`NodeHandle`], [`NodeConfig`] ([`node`]).
//! * The parts, each trait in a module with its types and its error: [`transport`],
//!   [`engine`], [`embedder`], [`store`] (and the durable `RedbStore`, feature `redb`),
//!   [`chain`], [`membership`] (who may answer, and each request's committee). Every part trait is implemented for `&T`, `Arc<T>` and `Box<T>`.
//! * Requests and messages: [`protocol`]; signing and the wire format: [`envelope`];
//!   node keys: [`identity`]; evidence of misbehaviour: [`misbehaviour`].
//! * The pure state machine: [`coordinator`]; what it tells the host: [`events`].
//! * The consensus math: [`consensus`] (the `rakis-consensus` crate).
//! * [`testing`] (feature `test-utils`): in-memory hub, scripted engine, hash embedder,
//!   fixtures.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rustdoc::broken_intra_doc_links
)]
pub mod chain;
pub mod clock;
pub mod coordinator;
pub mod embedder;
pub mod engine;
pub mod envelope;
pub mod error;
pub mod events;
pub mod identity;
pub mod membership;
pub mod misbehaviour;
pub mod node;
pub mod protocol;
pub mod store;
#[cfg(feature = "test-utils")]
pub mod testing;
pub mod transport;
pub mod vrf;

// Assembly: a node from parts.
pub use node::{
    ConfigError, Node, NodeBuilder, NodeConfig, NodeError, NodeHandle, NodeStats, RequestBuilder,
    Retention,
};
// The parts.
pub use chain::{ChainError, ChainSink, RequestSource, SubmitReceipt};
pub use embedder::{EmbedError, Embedder};
pub use engine::{
    EngineError, FinishReason, Generation, GenerationJob, InferenceEngine, ModelWeights, Score,
    ScoreJob,
};
pub use membership::{Committee, Epoch, Membership, StaticMembership};
pub use misbehaviour::Misbehaviour;
#[cfg(feature = "redb")]
pub use store::redb::RedbStore;
pub use store::{CommitStore, MemoryStore, StoreError};
pub use transport::{Transport, TransportError, TransportEvent};
// Identity, requests, what a node reports.
pub use clock::{Clock, SystemClock, TokioClock};
pub use coordinator::{KnownPeer, Phase, QuorumFailure, QuorumStatus};
pub use events::{IgnoreReason, NodeEvent};
pub use identity::{Address, IdentityError, NodeKey, Signature};
pub use protocol::{ChatMessage, InferenceRequest, Message, Origin, RequestError, Role};
// The consensus types every host meets (the rest: `consensus::…`).
pub use rakis_consensus::{
    self as consensus, BinaryEmbedding, ConsensusError, ConsensusOutcome, Decision, FailureReason,
    Hash32, InferenceId, NodeId, RejectReason, RequestId, SecurityFrame, Selection,
};
// Used throughout the crate under short paths.
pub(crate) use rakis_consensus::{
    commitment, evaluate, verify_reveal, AcceptedReveal, Commit, Commitment, ConsensusParams,
    Rejection, Reveal, Salt, Submission,
};
