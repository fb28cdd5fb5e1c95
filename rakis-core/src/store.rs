//! The [`CommitStore`] part: durable node state. What a store keeps (typed writes and
//! per-request records), the volatile [`MemoryStore`], and (feature `redb`, on by default) the
//! durable [`RedbStore`](self::redb::RedbStore) on an embedded database file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use serde::{Deserialize, Serialize};

use crate::coordinator::QuorumFailure;
use crate::error::SharedError;
use crate::protocol::{CommitMsg, ConsensusResultMsg, InferenceRequest, RevealMsg};
use crate::{
    BinaryEmbedding, Commitment, ConsensusOutcome, InferenceId, Rejection, RequestId, Salt,
};

#[cfg(feature = "redb")]
pub mod redb;

/// Durable node state. Every write is durable when the call returns.
///
/// A write is applied atomically or not at all: a write refused with an error (for example
/// [`StoreError::Conflict`]) changes no stored state. The three required methods are what a
/// node needs to run and to recover its open quorums; the provided ones (retention, size,
/// pending chain submissions) answer [`StoreError::Unsupported`] unless a store implements them.
///
/// Implemented for `&T`, `Arc<T>` and `Box<T>` of any store.
#[async_trait]
#[auto_impl::auto_impl(&, Box, Arc)]
pub trait CommitStore: Send + Sync {
    /// Applies one write.
    async fn apply(&self, op: StoreOp) -> Result<(), StoreError>;
    /// Everything known about one request.
    async fn quorum(&self, request_id: &RequestId) -> Result<Option<QuorumRecord>, StoreError>;
    /// Every request whose quorum has not completed or failed (for recovery after a restart).
    async fn open_quorums(&self) -> Result<Vec<QuorumRecord>, StoreError>;
    /// Every closed request whose signed result is still
    /// [`Pending`](SubmissionState::Pending) on some sink (the node stopped while
    /// submitting it): a restarted node submits it to those sinks only.
    async fn unsettled_results(&self) -> Result<Vec<QuorumRecord>, StoreError> {
        Err(StoreError::Unsupported(
            "this store does not track pending chain submissions".into(),
        ))
    }
    /// Retention: deletes every closed (completed or failed) request whose deadline is before
    /// `closed_before_ms` (ms since epoch) and returns how many were deleted. Open requests are
    /// kept whatever their age.
    async fn prune(&self, closed_before_ms: u64) -> Result<u64, StoreError> {
        let _ = closed_before_ms;
        Err(StoreError::Unsupported(
            "this store has no retention policy".into(),
        ))
    }
    /// How many bytes the store occupies (for a file: its size on disk).
    async fn size_bytes(&self) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported(
            "this store does not report its size".into(),
        ))
    }
}

/// Errors of a [`CommitStore`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
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
    /// I/O or database failure (the underlying error as the source).
    #[error("store i/o, {context}: {source}")]
    Io {
        /// What the store was doing, and on which file.
        context: String,
        /// The underlying error.
        #[source]
        source: SharedError,
    },
    /// The store does not implement this operation.
    #[error("unsupported by this store: {0}")]
    Unsupported(String),
}

impl StoreError {
    /// An [`StoreError::Io`] while doing `context`.
    pub fn io(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Io {
            context: context.into(),
            source: SharedError::new(source),
        }
    }
}

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
    /// The generated token ids (empty from engines without a tokenizer).
    #[serde(default)]
    pub token_ids: Vec<u32>,
    /// How generation ended.
    pub ending: crate::consensus::sampling::Ending,
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

    /// Whether the node's signed result is still [`SubmissionState::Pending`] on some sink (its
    /// submission started and did not finish: the node may have stopped meanwhile).
    pub fn has_pending_submission(&self) -> bool {
        self.signed.is_some()
            && self
                .submissions
                .values()
                .any(|s| *s == SubmissionState::Pending)
    }

    /// Whether a restarted node has work left on this request: the quorum is still open, or its
    /// result is still pending on a sink.
    pub fn needs_recovery(&self) -> bool {
        !self.is_closed() || self.has_pending_submission()
    }

    /// Applies a write for this record's request. Writes are idempotent; a write that would
    /// replace the own output with a different one is refused with [`StoreError::Conflict`]
    /// and changes nothing. A sink's [`SubmissionState::Submitted`] is final: a later state for
    /// the same sink is ignored (a result on a chain stays there).
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
                if !matches!(
                    self.submissions.get(&sink),
                    Some(SubmissionState::Submitted(_))
                ) {
                    self.submissions.insert(sink, state);
                }
            }
        }
        Ok(())
    }
}

/// The record that results from applying `op` to `existing` (the stored record of
/// `op.request_id()`, if any): [`StoreOp::Request`] creates it, any other write for an unknown
/// request is refused with [`StoreError::Conflict`]. `existing` is never modified, so a refused
/// write changes nothing. Store implementations share this logic.
pub fn apply_to_record(
    existing: Option<&QuorumRecord>,
    op: StoreOp,
) -> Result<QuorumRecord, StoreError> {
    match (existing, op) {
        (None, StoreOp::Request(r)) => Ok(QuorumRecord::new(r)),
        (None, op) => Err(StoreError::Conflict(format!(
            "unknown request {}",
            op.request_id().short()
        ))),
        (Some(rec), op) => {
            let mut next = rec.clone();
            next.apply(op)?;
            Ok(next)
        }
    }
}

/// Applies `op` to a map of records (see [`apply_to_record`]).
pub fn apply_to_records(
    records: &mut BTreeMap<RequestId, QuorumRecord>,
    op: StoreOp,
) -> Result<(), StoreError> {
    let id = op.request_id();
    let next = apply_to_record(records.get(&id), op)?;
    records.insert(id, next);
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

    async fn unsettled_results(&self) -> Result<Vec<QuorumRecord>, StoreError> {
        Ok(self
            .records
            .lock()
            .expect("lock")
            .values()
            .filter(|r| r.is_closed() && r.has_pending_submission())
            .cloned()
            .collect())
    }

    async fn prune(&self, closed_before_ms: u64) -> Result<u64, StoreError> {
        let mut records = self.records.lock().expect("lock");
        let before = records.len();
        records.retain(|_, r| !(r.is_closed() && r.request.deadline_ms() < closed_before_ms));
        Ok((before - records.len()) as u64)
    }

    /// The size of the records in their stored (postcard) encoding.
    async fn size_bytes(&self) -> Result<u64, StoreError> {
        let records = self.records.lock().expect("lock");
        records.values().try_fold(0u64, |sum, r| {
            postcard::to_allocvec(r)
                .map(|b| sum + b.len() as u64)
                .map_err(|e| StoreError::io("encoding a record", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::InferenceRequest;
    use crate::NodeId;

    fn request(created_at_ms: u64, nonce: u64) -> InferenceRequest {
        let mut r = InferenceRequest::new(
            "What is the capital of France?",
            vec!["m".into()],
            NodeId([2; 33]),
            created_at_ms,
        );
        r.nonce = nonce;
        r
    }

    fn failed(id: RequestId) -> StoreOp {
        StoreOp::Failed {
            request_id: id,
            reason: QuorumFailure::QuorumNotReached {
                committed: 0,
                needed: 3,
            },
        }
    }

    #[test]
    fn a_submitted_result_stays_submitted() {
        let r = request(1_000, 1);
        let id = r.id();
        let mut rec = QuorumRecord::new(r);
        let sub = |state| StoreOp::Submission {
            request_id: id,
            sink: "evm:1".into(),
            state,
        };
        rec.apply(sub(SubmissionState::Pending)).unwrap();
        rec.apply(sub(SubmissionState::Submitted("0xabc".into())))
            .unwrap();
        rec.apply(sub(SubmissionState::Pending)).unwrap();
        rec.apply(sub(SubmissionState::Failed("rpc down".into())))
            .unwrap();
        assert_eq!(
            rec.submissions["evm:1"],
            SubmissionState::Submitted("0xabc".into())
        );
    }

    #[test]
    fn a_refused_write_leaves_the_record_as_it_was() {
        let r = request(1_000, 1);
        let id = r.id();
        let mut records = BTreeMap::new();
        assert!(matches!(
            apply_to_records(&mut records, failed(id)),
            Err(StoreError::Conflict(_))
        ));
        assert!(records.is_empty());
        apply_to_records(&mut records, StoreOp::Request(r.clone())).unwrap();
        let own = |output: &str| OwnOutput {
            request_id: id,
            inference_id: InferenceId([1; 32]),
            model: "m".into(),
            output: output.into(),
            embedding: BinaryEmbedding::quantize(&[1.0, -1.0]).unwrap(),
            embedding_model: "e".into(),
            salt: Salt([3; 32]),
            commitment: Commitment([4; 32]),
            token_ids: vec![7, 8],
            ending: crate::consensus::sampling::Ending::Stop,
        };
        apply_to_records(&mut records, StoreOp::OwnOutput(own("Paris"))).unwrap();
        let before = records.clone();
        assert!(matches!(
            apply_to_records(&mut records, StoreOp::OwnOutput(own("Lyon"))),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(records, before);
    }

    #[test]
    fn recovery_covers_open_quorums_and_pending_results_only() {
        let r = request(1_000, 1);
        let id = r.id();
        let mut rec = QuorumRecord::new(r);
        assert!(rec.needs_recovery());
        rec.apply(failed(id)).unwrap();
        assert!(!rec.needs_recovery());
        // A failed quorum has no signed result: a pending state alone does not keep it.
        rec.apply(StoreOp::Submission {
            request_id: id,
            sink: "s".into(),
            state: SubmissionState::Pending,
        })
        .unwrap();
        assert!(!rec.has_pending_submission());
        assert!(!rec.needs_recovery());
    }

    #[tokio::test]
    async fn memory_store_prunes_closed_quorums_older_than_the_cutoff() {
        let store = MemoryStore::new();
        let old_closed = request(1_000, 1);
        let old_open = request(1_000, 2);
        let new_closed = request(900_000, 3);
        for r in [&old_closed, &old_open, &new_closed] {
            store.apply(StoreOp::Request(r.clone())).await.unwrap();
        }
        store.apply(failed(old_closed.id())).await.unwrap();
        store.apply(failed(new_closed.id())).await.unwrap();
        let size = store.size_bytes().await.unwrap();
        assert!(size > 0);
        assert_eq!(store.prune(500_000).await.unwrap(), 1);
        assert!(store.quorum(&old_closed.id()).await.unwrap().is_none());
        assert!(store.quorum(&old_open.id()).await.unwrap().is_some());
        assert!(store.quorum(&new_closed.id()).await.unwrap().is_some());
        assert!(store.size_bytes().await.unwrap() < size);
        assert_eq!(store.prune(500_000).await.unwrap(), 0);
    }
}
