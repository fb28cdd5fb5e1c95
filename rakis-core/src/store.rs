//! What a [`CommitStore`](crate::CommitStore) keeps: typed writes and per-request records.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use serde::{Deserialize, Serialize};

use crate::coordinator::QuorumFailure;
use crate::error::StoreError;
use crate::protocol::{CommitMsg, ConsensusResultMsg, InferenceRequest, RevealMsg};
use crate::traits::CommitStore;
use crate::{
    BinaryEmbedding, Commitment, ConsensusOutcome, InferenceId, Rejection, RequestId, Salt,
};

/// The node's own answer, kept (with its salt) before its commit leaves the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnOutput {
    /// The request answered.
    pub request_id: RequestId,
    /// The inference id chosen.
    pub inference_id: InferenceId,
    /// The model that generated it.
    pub model: String,
    /// The generated text.
    pub output: String,
    /// Its binary embedding.
    pub embedding: BinaryEmbedding,
    /// The embedding model's name.
    pub embedding_model: String,
    /// The secret salt.
    pub salt: Salt,
    /// The commitment.
    pub commitment: Commitment,
}

/// Where a result stands on one chain sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubmissionState {
    /// Not yet written.
    Pending,
    /// Written; the sink's reference.
    Submitted(String),
    /// Gave up; the last error.
    Failed(String),
}

/// One write to the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StoreOp {
    /// A request became known.
    Request(InferenceRequest),
    /// The node's own output and salt (must be durable before the commit is broadcast).
    OwnOutput(OwnOutput),
    /// A commit (own or received).
    Commit(CommitMsg),
    /// A reveal (own or received).
    Reveal(RevealMsg),
    /// A rejected reveal.
    Rejection {
        /// The request.
        request_id: RequestId,
        /// The rejection.
        rejection: Rejection,
    },
    /// The node's own result; `signed` is its signed statement when consensus was reached.
    Outcome {
        /// The request.
        request_id: RequestId,
        /// The outcome.
        outcome: ConsensusOutcome,
        /// The signed result, when agreed.
        signed: Option<ConsensusResultMsg>,
    },
    /// The quorum failed.
    Failed {
        /// The request.
        request_id: RequestId,
        /// Why.
        reason: QuorumFailure,
    },
    /// A result computed and signed by another node.
    PeerResult(ConsensusResultMsg),
    /// Per-chain submission state.
    Submission {
        /// The request.
        request_id: RequestId,
        /// The sink's name.
        sink: String,
        /// Its state.
        state: SubmissionState,
    },
}

impl StoreOp {
    /// The request this write belongs to.
    pub fn request_id(&self) -> RequestId {
        match self {
            StoreOp::Request(r) => r.id(),
            StoreOp::OwnOutput(o) => o.request_id,
            StoreOp::Commit(c) => c.commit.request_id,
            StoreOp::Reveal(r) => r.reveal.request_id,
            StoreOp::Rejection { request_id, .. }
            | StoreOp::Outcome { request_id, .. }
            | StoreOp::Failed { request_id, .. }
            | StoreOp::Submission { request_id, .. } => *request_id,
            StoreOp::PeerResult(r) => r.request_id,
        }
    }
}

/// Everything stored about one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuorumRecord {
    /// The request.
    pub request: InferenceRequest,
    /// The node's own output, if it answered.
    pub own: Option<OwnOutput>,
    /// Commits seen (deduplicated).
    pub commits: Vec<CommitMsg>,
    /// Reveals seen (deduplicated).
    pub reveals: Vec<RevealMsg>,
    /// Rejections recorded.
    pub rejections: Vec<Rejection>,
    /// The node's outcome.
    pub outcome: Option<ConsensusOutcome>,
    /// The node's signed result.
    pub signed: Option<ConsensusResultMsg>,
    /// Failure, if the quorum failed.
    pub failure: Option<QuorumFailure>,
    /// Results signed by other nodes.
    pub peer_results: Vec<ConsensusResultMsg>,
    /// Submission state per sink.
    pub submissions: BTreeMap<String, SubmissionState>,
}

impl QuorumRecord {
    /// A record holding only the request.
    pub fn new(request: InferenceRequest) -> Self {
        QuorumRecord {
            request,
            own: None,
            commits: Vec::new(),
            reveals: Vec::new(),
            rejections: Vec::new(),
            outcome: None,
            signed: None,
            failure: None,
            peer_results: Vec::new(),
            submissions: BTreeMap::new(),
        }
    }

    /// Whether the quorum has ended (completed or failed).
    pub fn is_closed(&self) -> bool {
        self.outcome.is_some() || self.failure.is_some()
    }

    /// Applies a write for this record's request. Writes are idempotent; a write that would
    /// replace the own output with a different one is refused with [`StoreError::Conflict`]
    /// and changes nothing.
    pub fn apply(&mut self, op: StoreOp) -> Result<(), StoreError> {
        match op {
            StoreOp::Request(r) => {
                if r.id() != self.request.id() {
                    return Err(StoreError::Conflict("request id mismatch".into()));
                }
            }
            StoreOp::OwnOutput(o) => match &self.own {
                Some(existing) if *existing != o => {
                    return Err(StoreError::Conflict(
                        "a different own output is already stored".into(),
                    ))
                }
                _ => self.own = Some(o),
            },
            StoreOp::Commit(c) => {
                if !self.commits.contains(&c) {
                    self.commits.push(c);
                }
            }
            StoreOp::Reveal(r) => {
                if !self.reveals.contains(&r) {
                    self.reveals.push(r);
                }
            }
            StoreOp::Rejection { rejection, .. } => {
                if !self.rejections.contains(&rejection) {
                    self.rejections.push(rejection);
                }
            }
            StoreOp::Outcome {
                outcome, signed, ..
            } => {
                self.outcome = Some(outcome);
                self.signed = signed;
            }
            StoreOp::Failed { reason, .. } => self.failure = Some(reason),
            StoreOp::PeerResult(r) => {
                if !self.peer_results.iter().any(|p| p.signer == r.signer) {
                    self.peer_results.push(r);
                }
            }
            StoreOp::Submission { sink, state, .. } => {
                self.submissions.insert(sink, state);
            }
        }
        Ok(())
    }
}

/// Applies `op` to a map of records: creates the record on [`StoreOp::Request`], refuses
/// writes for unknown requests. Store implementations share this logic.
pub fn apply_to_records(
    records: &mut BTreeMap<RequestId, QuorumRecord>,
    op: StoreOp,
) -> Result<(), StoreError> {
    let id = op.request_id();
    if let StoreOp::Request(r) = &op {
        records
            .entry(id)
            .or_insert_with(|| QuorumRecord::new(r.clone()));
        return Ok(());
    }
    let rec = records
        .get_mut(&id)
        .ok_or_else(|| StoreError::Conflict(format!("unknown request {}", id.short())))?;
    let mut next = rec.clone();
    next.apply(op)?;
    *rec = next;
    Ok(())
}

/// A volatile [`CommitStore`] in memory: the default when no durable store is configured, and
/// the store of tests. Clones share the same state, so a "restarted" node can be given the
/// store of the old one. Nothing survives the process.
#[derive(Clone, Default)]
pub struct MemoryStore {
    records: Arc<Mutex<BTreeMap<RequestId, QuorumRecord>>>,
    writes: Arc<Mutex<u64>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of successful writes.
    pub fn writes(&self) -> u64 {
        *self.writes.lock().expect("lock")
    }

    /// Number of requests stored.
    pub fn len(&self) -> usize {
        self.records.lock().expect("lock").len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl CommitStore for MemoryStore {
    async fn apply(&self, op: StoreOp) -> Result<(), StoreError> {
        let mut records = self.records.lock().expect("lock");
        apply_to_records(&mut records, op)?;
        *self.writes.lock().expect("lock") += 1;
        Ok(())
    }

    async fn quorum(&self, request_id: &RequestId) -> Result<Option<QuorumRecord>, StoreError> {
        Ok(self.records.lock().expect("lock").get(request_id).cloned())
    }

    async fn open_quorums(&self) -> Result<Vec<QuorumRecord>, StoreError> {
        Ok(self
            .records
            .lock()
            .expect("lock")
            .values()
            .filter(|r| !r.is_closed())
            .cloned()
            .collect())
    }
}
