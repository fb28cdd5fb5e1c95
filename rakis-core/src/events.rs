//! Events a node emits to its host.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::coordinator::QuorumFailure;
use crate::protocol::ConsensusResultMsg;
use crate::{
    BinaryEmbedding, ConsensusOutcome, Hash32, InferenceId, NodeId, RejectReason, RequestId,
};

/// Something that happened on the node, in protocol order for each request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A valid request became known.
    RequestReceived {
        /// The request.
        request_id: RequestId,
        /// Whether this node will try to answer it.
        will_answer: bool,
    },
    /// This node skipped answering (no free worker before the deadline, engine error...).
    AnswerSkipped {
        /// The request.
        request_id: RequestId,
        /// Why.
        reason: String,
    },
    /// This node generated its answer.
    Generated {
        /// The request.
        request_id: RequestId,
        /// Tokens generated.
        tokens: u32,
        /// Speed.
        tokens_per_sec: f32,
    },
    /// This node committed (its output and salt are stored).
    Committed {
        /// The request.
        request_id: RequestId,
        /// Its inference id.
        inference_id: InferenceId,
    },
    /// A commit of another node was accepted.
    CommitSeen {
        /// The request.
        request_id: RequestId,
        /// The committer.
        node: NodeId,
        /// Distinct committers so far.
        committed: u32,
    },
    /// The deadline passed with enough commits: reveals are open.
    RevealOpened {
        /// The request.
        request_id: RequestId,
        /// Distinct committers.
        committed: u32,
    },
    /// A reveal was received and checked against its commitment.
    RevealSeen {
        /// The request.
        request_id: RequestId,
        /// The revealer.
        node: NodeId,
        /// The model it says produced the output.
        model: String,
        /// The revealed output (not yet verified: see `RevealRejected` and the outcome).
        output: String,
        /// The revealed binary embedding (its Hamming distance to the agreed ball's centre is
        /// what a status page draws).
        embedding: BinaryEmbedding,
    },
    /// This node rejected a reveal.
    RevealRejected {
        /// The request.
        request_id: RequestId,
        /// The revealer.
        node: NodeId,
        /// Why.
        reason: RejectReason,
    },
    /// Another node announced that it rejected a reveal.
    PeerRejectedReveal {
        /// The request.
        request_id: RequestId,
        /// Who rejected.
        by: NodeId,
        /// Whose reveal.
        node: NodeId,
        /// Why.
        reason: RejectReason,
    },
    /// This node computed consensus and agreed on a result.
    Completed {
        /// The request.
        request_id: RequestId,
        /// The outcome.
        outcome: Arc<ConsensusOutcome>,
    },
    /// The quorum failed.
    Failed {
        /// The request.
        request_id: RequestId,
        /// Why.
        reason: QuorumFailure,
    },
    /// Another node's signed result arrived.
    PeerResult {
        /// The request.
        request_id: RequestId,
        /// The result.
        result: Arc<ConsensusResultMsg>,
    },
    /// Another node computed a different result than this node.
    Disagreement {
        /// The request.
        request_id: RequestId,
        /// The other node.
        node: NodeId,
        /// This node's result digest.
        ours: Hash32,
        /// The other node's result digest.
        theirs: Hash32,
    },
    /// A result was written to a chain sink.
    Submitted {
        /// The request.
        request_id: RequestId,
        /// The sink.
        sink: String,
        /// The sink's reference.
        reference: String,
    },
    /// Writing a result to a chain sink failed.
    SubmitFailed {
        /// The request.
        request_id: RequestId,
        /// The sink.
        sink: String,
        /// The error.
        error: String,
    },
    /// A committer signed conflicting statements for a request (two commitments, or a reveal
    /// that does not open its commitment); the evidence goes to the chain sinks
    /// ([`ChainSink::report`](crate::ChainSink::report)).
    Misbehaved {
        /// The request.
        request_id: RequestId,
        /// The committer.
        node: NodeId,
        /// What it did ([`Misbehaviour::kind`](crate::Misbehaviour::kind)).
        kind: &'static str,
    },
    /// Evidence of misbehaviour was sent to a chain sink (`reference`: its transaction), or
    /// the sink refused it (`error`).
    MisbehaviourReported {
        /// The request.
        request_id: RequestId,
        /// The committer.
        node: NodeId,
        /// The sink.
        sink: String,
        /// The sink's reference, or why it failed.
        result: Result<String, String>,
    },
    /// A message of another node was ignored (the first few per request are reported; the
    /// rest are only counted).
    Ignored {
        /// The request.
        request_id: RequestId,
        /// The node whose message it was.
        node: NodeId,
        /// Why.
        reason: IgnoreReason,
    },
    /// The request's committee certified a result: at least its signature threshold of
    /// distinct members signed one result digest. The signed results are the certificate a
    /// light client checks (see [`NodeHandle::wait_for_certified_result`](crate::NodeHandle::wait_for_certified_result)).
    Certified {
        /// The request.
        request_id: RequestId,
        /// The members' signed results, all over the certified digest.
        signatures: Vec<ConsensusResultMsg>,
    },
}

impl NodeEvent {
    /// The request the event is about, if any.
    pub fn request_id(&self) -> Option<RequestId> {
        use NodeEvent::*;
        match self {
            RequestReceived { request_id, .. }
            | AnswerSkipped { request_id, .. }
            | Generated { request_id, .. }
            | Committed { request_id, .. }
            | CommitSeen { request_id, .. }
            | RevealOpened { request_id, .. }
            | RevealSeen { request_id, .. }
            | RevealRejected { request_id, .. }
            | PeerRejectedReveal { request_id, .. }
            | Completed { request_id, .. }
            | Failed { request_id, .. }
            | PeerResult { request_id, .. }
            | Disagreement { request_id, .. }
            | Submitted { request_id, .. }
            | SubmitFailed { request_id, .. }
            | Ignored { request_id, .. }
            | Misbehaved { request_id, .. }
            | MisbehaviourReported { request_id, .. }
            | Certified { request_id, .. } => Some(*request_id),
        }
    }
}

/// Why a node ignored a message ([`NodeEvent::Ignored`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// The sender is not in the request's committee: its commit, reveal or signed result does
    /// not count.
    #[error("the node is not in the request's committee")]
    NotInCommittee,
    /// This node's membership does not know the epoch of the request.
    #[error("the request's epoch is unknown to this node")]
    UnknownEpoch,
    /// A peer sent a chain request: in a network with a membership a node takes chain requests
    /// only from its own reading of the chain, since the block hash that seeds their committee
    /// is not covered by the request id.
    #[error("chain requests are taken from this node's own chain reading, not from peers")]
    ChainRequestFromPeer,
    /// The request's requester already has as many open requests at this node as it allows
    /// one requester (`max_open_per_requester`).
    #[error("the requester has too many open requests")]
    RequesterOverLimit,
    /// The request's deadline lies further ahead than this node takes (`max_request_time`).
    #[error("the request's deadline is too far ahead")]
    DeadlineTooFar,
    /// A reveal's or a result's output is longer than the request allows
    /// ([`InferenceRequest::max_output_bytes`](crate::InferenceRequest::max_output_bytes)).
    #[error("the output is longer than the request allows")]
    OutputTooLong,
    /// An open network's request already has as many committers as a node tracks
    /// ([`MAX_OPEN_COMMITTERS`](crate::coordinator::MAX_OPEN_COMMITTERS)).
    #[error("the request has as many committers as this node tracks")]
    TooManyCommitters,
    /// Taking the request would pass the node's budget for the state of the requests it
    /// tracks (`max_state_bytes`).
    #[error("this node's budget for request state is spent")]
    StateBudget,
    /// A commit or reveal whose statement signature is not its sender's (or has a high `s`):
    /// it could not be held against its sender, so it does not count.
    #[error("the statement signature is not the sender's")]
    InvalidStatement,
}
