//! # rakis-core
//!
//! The protocol core of Rakis: protocol types, node identity and signed envelopes, the five
//! pluggable traits, the coordination state machine, and the [`Node`] that drives it.
//!
//! A host assembles a node from parts — a [`Transport`], an [`InferenceEngine`], an
//! [`Embedder`], a [`CommitStore`] and any number of [`ChainSink`]s — and gets a cloneable
//! [`NodeHandle`] plus a driver to run.
//!
//! ```
//! use std::time::Duration;
//! use rakis_core::testing::{HashEmbedder, MemoryHub, ScriptedEngine};
//! use rakis_core::{InferenceRequest, Node, NodeKey, SecurityFrame};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One in-process network; real deployments use `rakis-net` (libp2p) instead.
//! let hub = MemoryHub::default();
//! let mut handles = Vec::new();
//! for i in 0..3 {
//!     let key = NodeKey::generate();
//!     let node = Node::builder()
//!         .network_id("doc-net")
//!         .transport(hub.join(key.node_id()))
//!         .key(key)
//!         .engine(ScriptedEngine::constant("smollm2-135m", "The capital of France is Paris."))
//!         .embedder(HashEmbedder::default_model())
//!         .build()?;
//!     let (handle, _task) = node.spawn();
//!     handles.push(handle);
//! }
//!
//! let mut request = InferenceRequest::new(
//!     "What is the capital of France?",
//!     vec!["smollm2-135m".into()],
//!     handles[0].node_id(),
//!     handles[0].now_ms(),
//! );
//! request.frame = SecurityFrame { quorum: 3, max_time_ms: 300, ..SecurityFrame::default() };
//! let id = handles[0].submit(request).await?;
//! let outcome = handles[0].wait_for_outcome(id, Duration::from_secs(30)).await?;
//! assert_eq!(outcome.selected().unwrap().output, "The capital of France is Paris.");
//! # for h in &handles { h.shutdown().await?; }
//! # Ok(())
//! # }
//! ```
//!
//! ## Layers
//! * [`protocol`]: requests and messages; [`envelope`]: signing and the wire format.
//! * [`identity`]: secp256k1 node keys, Ethereum addresses, key files.
//! * [`traits`]: the pluggable parts; [`store`]: what a store keeps, and the durable
//!   `RedbStore` (feature `redb`, on by default).
//! * [`coordinator`]: the pure state machine; [`node`]: builder, handle and driver.
//! * [`testing`] (feature `test-utils`): in-memory hub, scripted engine, hash embedder.
//! * `sim` (feature `sim`): a deterministic simulator of many nodes with adversaries.
//!
//! The consensus math lives in `rakis-consensus` and is re-exported here.

pub mod clock;
pub mod coordinator;
pub mod envelope;
pub mod error;
pub mod events;
pub mod identity;
pub mod node;
pub mod protocol;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;
#[cfg(feature = "test-utils")]
pub mod testing;
pub mod traits;

pub use rakis_consensus::{
    self as consensus, commitment, evaluate, verify_reveal, AcceptedReveal, BinaryEmbedding,
    Commit, Commitment, ConsensusOutcome, ConsensusParams, Decision, FailureReason, Hash32,
    InferenceId, NodeId, RejectReason, Rejection, RequestId, Reveal, Salt, SecurityFrame,
    Selection, Submission, DEFAULT_EMBEDDING_MODEL,
};

pub use clock::{Clock, SystemClock, TokioClock};
pub use coordinator::{
    Action, Coordinator, CoordinatorConfig, Input, Phase, QuorumFailure, QuorumStatus,
    SyncedMessage,
};
pub use error::{
    ChainError, EmbedError, EngineError, EnvelopeError, IdentityError, NodeError, StoreError,
    TransportError,
};
pub use events::NodeEvent;
pub use identity::{Address, NodeKey, Signature};
pub use node::{Node, NodeBuilder, NodeConfig, NodeHandle, NodeStats, Retention};
pub use protocol::{ChatMessage, InferenceRequest, Message, Origin, Role};
#[cfg(feature = "redb")]
pub use store::redb::RedbStore;
pub use store::{MemoryStore, OwnOutput, QuorumRecord, StoreOp, SubmissionState};
pub use traits::{
    ChainSink, CommitStore, Embedder, Generation, GenerationJob, InferenceEngine, RequestSource,
    Transport, TransportEvent,
};
