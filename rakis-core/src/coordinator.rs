//! The coordination state machine. No I/O, no clock, no async: it takes [`Input`]s with the
//! current time and returns [`Action`]s for the driver to execute.
//!
//! Per request: `Open → Committing → Revealing → Verifying → Completed | Failed(reason)`.
//!
//! Timing rules (all against the receiving node's clock):
//! * commits are accepted while `now <= deadline` (`deadline = created_at + max_time_ms`);
//! * at `deadline + 1` the quorum closes: with at least `quorum` distinct committers it moves to
//!   `Revealing` and committers reveal, otherwise it fails with
//!   [`QuorumFailure::QuorumNotReached`] and nobody reveals;
//! * reveals are accepted while `deadline < now <= deadline + reveal_window_ms`;
//! * consensus is computed when every committer has revealed and every re-embedding is done, or
//!   when the reveal window closes (then after pending re-embeddings, at most
//!   `verify_grace_ms` later).
//!
//! After a restart, [`Coordinator::restore`] rebuilds each stored request and brings it up to the
//! current time with the same rules (see its docs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::error::{EmbedError, EngineError};
use crate::events::NodeEvent;
use crate::identity::NodeKey;
use crate::protocol::{
    CommitMsg, ConsensusResultMsg, InferenceRequest, Message, Origin, PeerStatus, RevealMsg,
};
use crate::store::{OwnOutput, QuorumRecord, StoreOp};
use crate::traits::{Generation, GenerationJob};
use crate::{
    evaluate, BinaryEmbedding, Commit, ConsensusOutcome, ConsensusParams, Decision, FailureReason,
    Hash32, InferenceId, NodeId, RejectReason, Rejection, RequestId, Reveal, Salt, Submission,
};

/// Default length of the reveal window after the deadline.
pub const DEFAULT_REVEAL_WINDOW_MS: u64 = 5_000;
/// Default time allowed for re-embeddings after the reveal window closes.
pub const DEFAULT_VERIFY_GRACE_MS: u64 = 60_000;

/// Static configuration of a coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorConfig {
    /// Models this node generates with.
    pub served_models: Vec<String>,
    /// Generation workers.
    pub workers: usize,
    /// The embedding model, when the node embeds (needed to commit and to verify).
    pub embedding_model: Option<String>,
    /// Reveal window after the deadline.
    pub reveal_window_ms: u64,
    /// Time allowed for re-embeddings after the reveal window.
    pub verify_grace_ms: u64,
    /// Expected generation time before any was measured; requests whose deadline is nearer
    /// than the current estimate are skipped.
    pub initial_generation_estimate_ms: u64,
    /// Re-embedding tolerance override in bits (default: scaled 8 per 384 bits).
    pub reembed_tolerance_bits: Option<u32>,
    /// Most requests tracked at once; further requests are refused. Closed requests are forgotten
    /// to make room once a relayed copy of them would no longer be taken (`reveal_window_ms +
    /// verify_grace_ms` after their deadline); their records stay in the store.
    pub max_open_requests: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            served_models: Vec::new(),
            workers: 1,
            embedding_model: None,
            reveal_window_ms: DEFAULT_REVEAL_WINDOW_MS,
            verify_grace_ms: DEFAULT_VERIFY_GRACE_MS,
            initial_generation_estimate_ms: 0,
            reembed_tolerance_bits: None,
            max_open_requests: 10_000,
        }
    }
}

/// Why a quorum failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum QuorumFailure {
    /// Too few commits before the deadline.
    #[error("quorum not reached: {committed} of {needed} commits")]
    QuorumNotReached {
        /// Distinct committers.
        committed: u32,
        /// Quorum needed.
        needed: u32,
    },
    /// Consensus found no large enough agreement.
    #[error("consensus failed: {0}")]
    Consensus(FailureReason),
    /// The consensus inputs were invalid.
    #[error("invalid consensus input: {0}")]
    Invalid(String),
}

/// Lifecycle phase of one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Known, no commit yet.
    Open,
    /// Commits arriving, before the deadline.
    Committing,
    /// After the deadline with a quorum: reveals arriving.
    Revealing,
    /// Reveal window closed: waiting for re-embeddings or results.
    Verifying,
    /// Consensus reached.
    Completed,
    /// Failed.
    Failed(QuorumFailure),
}

/// What an embedding was for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmbedPurpose {
    /// This node's own output.
    Own,
    /// Re-embedding another node's revealed output.
    Reembed {
        /// The revealer.
        node: NodeId,
        /// The commitment the reveal opened.
        commitment: crate::Commitment,
    },
}

/// An input to the state machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A request submitted locally or read from a chain (the node broadcasts it).
    LocalRequest(InferenceRequest),
    /// A verified message from `from` (the envelope's signer).
    Message {
        /// The signer of the envelope.
        from: NodeId,
        /// The message.
        message: Message,
    },
    /// A generation job finished.
    Generated {
        /// The request.
        request_id: RequestId,
        /// The result.
        result: Result<Generation, EngineError>,
    },
    /// An embedding job finished.
    Embedded {
        /// The request.
        request_id: RequestId,
        /// What for.
        purpose: EmbedPurpose,
        /// The result.
        result: Result<BinaryEmbedding, EmbedError>,
    },
    /// The own output was durably stored (answer to [`Action::PersistOwnOutput`]).
    OwnOutputPersisted {
        /// The request.
        request_id: RequestId,
        /// `Err` with the store's error when it failed: the node then does not commit.
        result: Result<(), String>,
    },
    /// Time passed (the driver calls this at [`Coordinator::next_wakeup`]).
    Tick,
    /// Messages relayed by a peer in answer to a sync request (each one verified on its own
    /// signature by the driver). Judged by their signed send time: a commit signed before the
    /// deadline counts even when it arrives late. Processed as one batch: consensus is not
    /// computed before the whole batch is in.
    Synced(Vec<SyncedMessage>),
}

/// One message relayed by a sync response.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncedMessage {
    /// The signer of the original envelope.
    pub from: NodeId,
    /// The message.
    pub message: Message,
    /// The original envelope's timestamp (the signer's clock when it sent the message).
    pub sent_at_ms: u64,
}

/// An effect for the driver to execute, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Sign and broadcast a message.
    Broadcast(Message),
    /// Run a generation job; answer with [`Input::Generated`].
    Generate(GenerationJob),
    /// Embed a text; answer with [`Input::Embedded`].
    Embed {
        /// The request.
        request_id: RequestId,
        /// What for.
        purpose: EmbedPurpose,
        /// The text.
        text: String,
    },
    /// Durably store a write.
    Persist(StoreOp),
    /// Durably store the own output, then answer with [`Input::OwnOutputPersisted`]. The
    /// commit is broadcast only after that answer.
    PersistOwnOutput(OwnOutput),
    /// Emit an event to the host.
    Emit(NodeEvent),
    /// Ask `peer` directly for what it saw of a request ([`Message::SyncRequest`]).
    RequestSync {
        /// Whom to ask.
        peer: NodeId,
        /// The request.
        request_id: RequestId,
    },
}

/// Minimum time between two sync requests for one request.
pub const SYNC_RETRY_MS: u64 = 2_000;
/// Most requests for which sync attempts are remembered.
const MAX_SYNC_TRACKED: usize = 4_096;

#[derive(Clone, Debug, PartialEq)]
enum OwnState {
    /// Not answering (no model served, or not an embedder).
    NotAnswering,
    Queued,
    Generating,
    Embedding {
        generation: Generation,
    },
    Persisting(OwnOutput),
    Committed(OwnOutput),
    Skipped,
}

#[derive(Clone, Debug, PartialEq)]
enum Reembedding {
    Pending,
    Done(Option<BinaryEmbedding>),
}

#[derive(Clone, Debug)]
struct Quorum {
    request: InferenceRequest,
    id: RequestId,
    deadline: u64,
    reveal_deadline: u64,
    phase: Phase,
    /// Distinct commits per node (at most two kept: enough to prove equivocation).
    commits: BTreeMap<NodeId, Vec<CommitMsg>>,
    /// Distinct reveals per node (at most two kept).
    reveals: BTreeMap<NodeId, Vec<RevealMsg>>,
    /// Re-embeddings keyed by (node, opened commitment).
    reembeddings: BTreeMap<(NodeId, crate::Commitment), Reembedding>,
    /// Rejections already announced.
    announced: BTreeSet<(NodeId, InferenceId)>,
    /// Reveals that arrived before this node's own deadline passed (the sender's clock ran
    /// ahead): replayed when the quorum starts revealing. At most one per committer.
    early_reveals: BTreeMap<NodeId, RevealMsg>,
    own: OwnState,
    outcome: Option<Arc<ConsensusOutcome>>,
    signed: Option<ConsensusResultMsg>,
    peer_results: BTreeMap<NodeId, Hash32>,
}

impl Quorum {
    fn committed(&self) -> u32 {
        self.commits.len() as u32
    }
}

/// A snapshot of one request's state, for hosts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuorumStatus {
    /// The request id.
    pub request_id: RequestId,
    /// The phase.
    pub phase: Phase,
    /// Commit deadline.
    pub deadline_ms: u64,
    /// End of the reveal window.
    pub reveal_deadline_ms: u64,
    /// Distinct committers.
    pub committed: u32,
    /// Nodes that revealed.
    pub revealed: u32,
    /// Whether this node committed.
    pub own_committed: bool,
    /// The outcome, once computed.
    pub outcome: Option<Arc<ConsensusOutcome>>,
    /// Results announced by other nodes: signer → result digest.
    pub peer_results: BTreeMap<NodeId, Hash32>,
}

/// A peer's last announced status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// What it serves.
    pub status: PeerStatus,
    /// When this node heard it (ms since epoch).
    pub last_seen_ms: u64,
}

/// The coordination state machine of one node.
pub struct Coordinator {
    key: NodeKey,
    node: NodeId,
    config: CoordinatorConfig,
    rng: rand::rngs::StdRng,
    quorums: BTreeMap<RequestId, Quorum>,
    queue: BTreeSet<(u64, RequestId)>,
    busy: usize,
    generation_estimate_ms: u64,
    peers: BTreeMap<NodeId, KnownPeer>,
    /// Last time a sync was asked for each request.
    sync_asked: BTreeMap<RequestId, u64>,
    /// While a synced batch is processed: requests whose consensus waits for the batch's end.
    deferred: Option<BTreeSet<RequestId>>,
    /// Messages about requests not known yet (gossip gives no order; a late joiner hears
    /// reveals first), replayed when the request arrives. Bounded.
    orphans: BTreeMap<RequestId, Vec<SyncedMessage>>,
    /// Orphans released inside a batch, fed after the batch.
    released: Vec<SyncedMessage>,
}

/// Most requests with orphan messages kept.
const MAX_ORPHAN_REQUESTS: usize = 256;
/// Most orphan messages kept per request.
const MAX_ORPHANS_PER_REQUEST: usize = 64;
/// How long orphan messages are kept.
const ORPHAN_TTL_MS: u64 = 120_000;

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("node", &self.node)
            .field("requests", &self.quorums.len())
            .field("busy", &self.busy)
            .finish()
    }
}

impl Coordinator {
    /// A coordinator with randomness from the operating system.
    pub fn new(key: NodeKey, config: CoordinatorConfig) -> Self {
        Self::with_rng_seed(key, config, rand::rngs::OsRng.next_u64())
    }

    /// A coordinator whose salts, inference ids and sampling seeds come from `seed`
    /// (deterministic simulations and tests).
    pub fn with_rng_seed(key: NodeKey, config: CoordinatorConfig, seed: u64) -> Self {
        Coordinator {
            node: key.node_id(),
            key,
            generation_estimate_ms: config.initial_generation_estimate_ms,
            config,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            quorums: BTreeMap::new(),
            queue: BTreeSet::new(),
            busy: 0,
            peers: BTreeMap::new(),
            sync_asked: BTreeMap::new(),
            deferred: None,
            orphans: BTreeMap::new(),
            released: Vec::new(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The status this node announces to peers.
    pub fn peer_status(&self) -> PeerStatus {
        PeerStatus {
            models: self.config.served_models.clone(),
            embedding_model: self.config.embedding_model.clone(),
            workers: self.config.workers as u32,
            load: (self.busy + self.queue.len()) as u32,
        }
    }

    /// Peers that announced their status.
    pub fn peers(&self) -> &BTreeMap<NodeId, KnownPeer> {
        &self.peers
    }

    /// The earliest time at which [`Input::Tick`] has something to do.
    pub fn next_wakeup(&self) -> Option<u64> {
        let can_verify = self.config.embedding_model.is_some();
        self.quorums
            .values()
            .filter_map(|q| match q.phase {
                Phase::Open | Phase::Committing => Some(q.deadline.saturating_add(1)),
                Phase::Revealing => Some(q.reveal_deadline.saturating_add(1)),
                // A node that cannot verify waits for the results of others: no timer is due
                // (it would fire again at once, for ever).
                Phase::Verifying if can_verify => Some(
                    q.reveal_deadline
                        .saturating_add(1)
                        .saturating_add(self.config.verify_grace_ms),
                ),
                Phase::Verifying | Phase::Completed | Phase::Failed(_) => None,
            })
            .min()
    }

    /// Status of one request.
    pub fn status(&self, id: &RequestId) -> Option<QuorumStatus> {
        self.quorums.get(id).map(Self::snapshot)
    }

    /// The status of a request from its stored record, for a request this coordinator does not
    /// track (for example one that closed before a restart, which is not restored). `None` when
    /// the record is unusable.
    pub fn record_status(&self, record: &QuorumRecord) -> Option<QuorumStatus> {
        self.rebuild(record.clone()).as_ref().map(Self::snapshot)
    }

    fn snapshot(q: &Quorum) -> QuorumStatus {
        QuorumStatus {
            request_id: q.id,
            phase: q.phase.clone(),
            deadline_ms: q.deadline,
            reveal_deadline_ms: q.reveal_deadline,
            committed: q.committed(),
            revealed: q.reveals.len() as u32,
            own_committed: matches!(q.own, OwnState::Committed(_)),
            outcome: q.outcome.clone(),
            peer_results: q.peer_results.clone(),
        }
    }

    /// Ids of every tracked request.
    pub fn request_ids(&self) -> Vec<RequestId> {
        self.quorums.keys().copied().collect()
    }

    /// The request, if known.
    pub fn request(&self, id: &RequestId) -> Option<&InferenceRequest> {
        self.quorums.get(id).map(|q| &q.request)
    }

    /// The own signed result of a completed request.
    pub fn signed_result(&self, id: &RequestId) -> Option<&ConsensusResultMsg> {
        self.quorums.get(id)?.signed.as_ref()
    }

    /// Restores a request from its stored record after a restart, and returns the actions that
    /// bring it up to `now_ms` (the driver executes them like any others).
    ///
    /// * A closed request (completed or failed) is reloaded as it was: its outcome is not
    ///   recomputed and nothing is broadcast.
    /// * The own output counts as committed only when its commit was stored (a commit is stored
    ///   before it is broadcast). An own output stored without its commit is committed now if the
    ///   deadline has not passed, and dropped otherwise. An own output whose commitment does not
    ///   open with this node's key (a store of another key) is ignored.
    /// * A node that had not stored an answer yet answers again while the deadline allows.
    /// * Restored reveals of other nodes are checked again: re-embedded (or rejected if they do not
    ///   open their commitment), exactly as when they arrived; rejections already stored are not
    ///   announced twice.
    /// * The request then follows the usual timeline against `now_ms`: past the deadline it
    ///   opens the reveal phase and the node reveals what it committed, but only while the
    ///   reveal window is open; past the window it goes on to consensus with what was stored.
    ///
    /// Restoring a request that is already tracked, or whose stored request is invalid, does
    /// nothing. Feeding [`Input::Tick`] afterwards is harmless.
    pub fn restore(&mut self, record: QuorumRecord, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let id = record.request.id();
        if self.quorums.contains_key(&id) {
            return out;
        }
        if self.quorums.len() >= self.config.max_open_requests {
            warn!(request = %id.short(), "too many open requests; not restoring");
            return out;
        }
        let Some(mut q) = self.rebuild(record) else {
            return out;
        };
        let open = !matches!(q.phase, Phase::Completed | Phase::Failed(_));
        if open {
            if q.own == OwnState::NotAnswering
                && self.config.workers > 0
                && now_ms <= q.deadline
                && self.model_for(&q.request).is_some()
            {
                q.own = OwnState::Queued;
                self.queue.insert((q.deadline, id));
            }
            let own_model = self.config.embedding_model.clone();
            let reveals: Vec<RevealMsg> = q.reveals.values().flatten().cloned().collect();
            for r in reveals {
                Self::check_reveal(&mut q, own_model.as_deref(), &r, &mut out);
            }
        }
        info!(request = %id.short(), phase = ?q.phase, committed = q.committed(), revealed = q.reveals.len(), "request restored");
        let persisting = open && matches!(q.own, OwnState::Persisting(_));
        self.quorums.insert(id, q);
        if persisting {
            out.extend(self.on_own_persisted(now_ms, id, Ok(())));
        }
        // Each step moves the phase forward (at most: revealing, verifying, consensus).
        for _ in 0..4 {
            let before = self.quorums.get(&id).map(|q| q.phase.clone());
            self.advance(now_ms, id, &mut out);
            if self.quorums.get(&id).map(|q| q.phase.clone()) == before {
                break;
            }
        }
        self.schedule(now_ms, &mut out);
        out
    }

    /// A request's state rebuilt from its stored record, without side effects. `None` when the
    /// stored request is invalid.
    fn rebuild(&self, record: QuorumRecord) -> Option<Quorum> {
        let QuorumRecord {
            request,
            own,
            commits,
            reveals,
            rejections,
            outcome,
            signed,
            failure,
            peer_results,
            submissions: _,
        } = record;
        let id = request.id();
        if let Err(e) = request.validate() {
            warn!(request = %id.short(), error = %e, "stored request is invalid; not restored");
            return None;
        }
        let mut q = self.new_quorum(request);
        for c in commits {
            if c.commit.request_id != id {
                continue;
            }
            let list = q.commits.entry(c.commit.node).or_default();
            if !list.contains(&c) && list.len() < 2 {
                list.push(c);
            }
        }
        if !q.commits.is_empty() {
            q.phase = Phase::Committing;
        }
        let own = own.filter(|o| {
            let mine = o.request_id == id
                && crate::commitment(
                    &id,
                    &self.node,
                    &o.inference_id,
                    &o.output,
                    &o.embedding,
                    &o.salt,
                ) == o.commitment;
            if !mine {
                warn!(request = %id.short(), "stored own output does not open with this node's key; ignored");
            }
            mine
        });
        q.own = match own {
            Some(o)
                if q.commits
                    .get(&self.node)
                    .is_some_and(|l| l.iter().any(|c| c.commit.commitment == o.commitment)) =>
            {
                OwnState::Committed(o)
            }
            // Stored but never broadcast: it may still be committed before the deadline.
            Some(o) => OwnState::Persisting(o),
            None => OwnState::NotAnswering,
        };
        for r in reveals {
            if r.reveal.request_id != id || !q.commits.contains_key(&r.reveal.node) {
                continue;
            }
            let list = q.reveals.entry(r.reveal.node).or_default();
            if !list.contains(&r) && list.len() < 2 {
                list.push(r);
            }
        }
        for rej in rejections {
            q.announced.insert((rej.node, rej.inference_id));
        }
        for p in peer_results {
            if p.request_id == id {
                q.peer_results.insert(p.signer, p.result_digest);
            }
        }
        if let Some(outcome) = outcome {
            q.phase = match &outcome.decision {
                Decision::Agreed { .. } => Phase::Completed,
                Decision::Failed(r) => Phase::Failed(QuorumFailure::Consensus(r.clone())),
            };
            q.outcome = Some(Arc::new(outcome));
            q.signed = signed;
        } else if let Some(f) = failure {
            q.phase = Phase::Failed(f);
        }
        Some(q)
    }

    /// Feeds one input at time `now_ms` and returns the actions to execute, in order.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::LocalRequest(request) => {
                if self.on_request(now_ms, request.clone(), None, &mut out) {
                    out.insert(0, Action::Broadcast(Message::Request(request)));
                }
            }
            Input::Message { from, message } => self.on_message(now_ms, from, message, &mut out),
            Input::Generated { request_id, result } => {
                self.on_generated(now_ms, request_id, result, &mut out)
            }
            Input::Embedded {
                request_id,
                purpose,
                result,
            } => self.on_embedded(now_ms, request_id, purpose, result, &mut out),
            Input::OwnOutputPersisted { request_id, result } => {
                out.extend(self.on_own_persisted(now_ms, request_id, result))
            }
            Input::Tick => self.on_tick(now_ms, &mut out),
            Input::Synced(batch) => self.on_synced(now_ms, batch, &mut out),
        }
        self.schedule(now_ms, &mut out);
        out
    }

    fn new_quorum(&self, request: InferenceRequest) -> Quorum {
        let deadline = request.deadline_ms();
        Quorum {
            id: request.id(),
            deadline,
            reveal_deadline: deadline.saturating_add(self.config.reveal_window_ms),
            request,
            phase: Phase::Open,
            commits: BTreeMap::new(),
            reveals: BTreeMap::new(),
            reembeddings: BTreeMap::new(),
            announced: BTreeSet::new(),
            early_reveals: BTreeMap::new(),
            own: OwnState::NotAnswering,
            outcome: None,
            signed: None,
            peer_results: BTreeMap::new(),
        }
    }

    /// The model this node would answer `request` with.
    fn model_for(&self, request: &InferenceRequest) -> Option<String> {
        if self.config.embedding_model.as_deref() != Some(request.frame.embedding_model.as_str()) {
            return None;
        }
        request
            .accepted_models
            .iter()
            .find(|m| self.config.served_models.contains(m))
            .cloned()
    }

    /// Returns whether the request was new and valid.
    fn on_request(
        &mut self,
        now: u64,
        request: InferenceRequest,
        from: Option<NodeId>,
        out: &mut Vec<Action>,
    ) -> bool {
        self.on_request_at(now, request, from, false, out)
    }

    fn on_request_at(
        &mut self,
        now: u64,
        request: InferenceRequest,
        from: Option<NodeId>,
        relayed: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let id = request.id();
        if self.quorums.contains_key(&id) {
            return false;
        }
        if let Err(e) = request.validate() {
            warn!(request = %id.short(), error = %e, "dropping invalid request");
            return false;
        }
        if let (Some(from), Origin::Peer) = (from, &request.origin) {
            if request.requester != Some(from) {
                warn!(request = %id.short(), "dropping peer request not signed by its requester");
                return false;
            }
        }
        // A relayed request is still useful to verify until its reveal window closes.
        let last_useful = if relayed {
            request
                .deadline_ms()
                .saturating_add(self.config.reveal_window_ms)
                .saturating_add(self.config.verify_grace_ms)
        } else {
            request.deadline_ms()
        };
        if now > last_useful {
            debug!(request = %id.short(), "ignoring request past its deadline");
            return false;
        }
        if self.quorums.len() >= self.config.max_open_requests {
            self.forget_closed(now);
        }
        if self.quorums.len() >= self.config.max_open_requests {
            warn!(request = %id.short(), "too many open requests; refusing");
            return false;
        }
        let mut q = self.new_quorum(request.clone());
        let answer = self.model_for(&request).is_some() && self.config.workers > 0;
        if answer {
            q.own = OwnState::Queued;
            self.queue.insert((q.deadline, id));
        }
        info!(request = %id.short(), answer, deadline = q.deadline, "request received");
        self.quorums.insert(id, q);
        out.push(Action::Persist(StoreOp::Request(request)));
        out.push(Action::Emit(NodeEvent::RequestReceived {
            request_id: id,
            will_answer: answer,
        }));
        if let Some(orphans) = self.orphans.remove(&id) {
            debug!(request = %id.short(), messages = orphans.len(), "replaying messages that came before the request");
            if self.deferred.is_some() {
                // Inside a batch: after the batch's own commits.
                self.released.extend(orphans);
            } else {
                self.on_synced(now, orphans, out);
            }
        }
        true
    }

    /// Forgets closed (completed or failed) requests that nothing can bring back any more: past
    /// the time until which a relayed copy of the request is still taken (see `on_request_at`),
    /// and not holding a generation worker. Their records stay in the store. Without this,
    /// closed requests would count against `max_open_requests` for ever.
    fn forget_closed(&mut self, now: u64) {
        let horizon = self
            .config
            .reveal_window_ms
            .saturating_add(self.config.verify_grace_ms);
        let before = self.quorums.len();
        self.quorums.retain(|_, q| {
            !(matches!(q.phase, Phase::Completed | Phase::Failed(_))
                && q.own != OwnState::Generating
                && now > q.deadline.saturating_add(horizon))
        });
        let forgotten = before - self.quorums.len();
        if forgotten > 0 {
            debug!(forgotten, "closed requests forgotten to make room");
        }
    }

    fn schedule(&mut self, now: u64, out: &mut Vec<Action>) {
        while self.busy < self.config.workers {
            let Some((deadline, id)) = self.queue.pop_first() else {
                break;
            };
            let Some(model) = self
                .quorums
                .get(&id)
                .and_then(|q| self.model_for(&q.request))
            else {
                continue;
            };
            let q = self
                .quorums
                .get_mut(&id)
                .expect("queued request is tracked");
            if !matches!(q.phase, Phase::Open | Phase::Committing)
                || now.saturating_add(self.generation_estimate_ms) > deadline
            {
                q.own = OwnState::Skipped;
                out.push(Action::Emit(NodeEvent::AnswerSkipped {
                    request_id: id,
                    reason: format!(
                        "cannot finish before the deadline (estimate {} ms, {} ms left)",
                        self.generation_estimate_ms,
                        deadline.saturating_sub(now)
                    ),
                }));
                continue;
            }
            q.own = OwnState::Generating;
            self.busy += 1;
            let seed = self.rng.gen();
            out.push(Action::Generate(GenerationJob::for_request(
                &q.request, &model, seed,
            )));
        }
    }

    /// Ends a request as failed: the phase, the stored failure and the event.
    fn fail(q: &mut Quorum, reason: QuorumFailure, out: &mut Vec<Action>) {
        q.phase = Phase::Failed(reason.clone());
        out.push(Action::Persist(StoreOp::Failed {
            request_id: q.id,
            reason: reason.clone(),
        }));
        out.push(Action::Emit(NodeEvent::Failed {
            request_id: q.id,
            reason,
        }));
    }

    fn skip(q: &mut Quorum, reason: String, out: &mut Vec<Action>) {
        q.own = OwnState::Skipped;
        out.push(Action::Emit(NodeEvent::AnswerSkipped {
            request_id: q.id,
            reason,
        }));
    }

    fn on_generated(
        &mut self,
        now: u64,
        id: RequestId,
        result: Result<Generation, EngineError>,
        out: &mut Vec<Action>,
    ) {
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        if q.own != OwnState::Generating {
            return;
        }
        self.busy = self.busy.saturating_sub(1);
        match result {
            Ok(g) => {
                if g.tokens_per_sec > 0.0 {
                    let took = (g.tokens as f32 / g.tokens_per_sec * 1000.0) as u64;
                    self.generation_estimate_ms = (self.generation_estimate_ms * 3 + took) / 4;
                }
                out.push(Action::Emit(NodeEvent::Generated {
                    request_id: id,
                    tokens: g.tokens,
                    tokens_per_sec: g.tokens_per_sec,
                }));
                if now > q.deadline {
                    Self::skip(q, "generation finished after the deadline".into(), out);
                    return;
                }
                out.push(Action::Embed {
                    request_id: id,
                    purpose: EmbedPurpose::Own,
                    text: g.text.clone(),
                });
                q.own = OwnState::Embedding { generation: g };
            }
            Err(e) => Self::skip(q, format!("generation failed: {e}"), out),
        }
    }

    fn on_embedded(
        &mut self,
        now: u64,
        id: RequestId,
        purpose: EmbedPurpose,
        result: Result<BinaryEmbedding, EmbedError>,
        out: &mut Vec<Action>,
    ) {
        let embedding_model = self.config.embedding_model.clone().unwrap_or_default();
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        match purpose {
            EmbedPurpose::Own => {
                let OwnState::Embedding { generation } = &q.own else {
                    return;
                };
                let embedding = match result {
                    Ok(e) => e,
                    Err(e) => return Self::skip(q, format!("embedding failed: {e}"), out),
                };
                if now > q.deadline {
                    return Self::skip(q, "embedding finished after the deadline".into(), out);
                }
                let mut salt = [0u8; 32];
                self.rng.fill_bytes(&mut salt);
                let mut inference_id = [0u8; 32];
                self.rng.fill_bytes(&mut inference_id);
                let salt = Salt(salt);
                let inference_id = InferenceId(inference_id);
                let commitment = crate::commitment(
                    &id,
                    &self.node,
                    &inference_id,
                    &generation.text,
                    &embedding,
                    &salt,
                );
                let own = OwnOutput {
                    request_id: id,
                    inference_id,
                    model: generation.model.clone(),
                    output: generation.text.clone(),
                    embedding,
                    embedding_model,
                    salt,
                    commitment,
                };
                q.own = OwnState::Persisting(own.clone());
                out.push(Action::PersistOwnOutput(own));
            }
            EmbedPurpose::Reembed { node, commitment } => {
                if let Some(state) = q.reembeddings.get_mut(&(node, commitment)) {
                    if *state == Reembedding::Pending {
                        if let Err(e) = &result {
                            warn!(request = %id.short(), node = %node.short(), error = %e, "re-embedding failed");
                        }
                        *state = Reembedding::Done(result.ok());
                    }
                }
                self.try_finalize(id, false, out);
            }
        }
    }

    fn on_own_persisted(
        &mut self,
        now: u64,
        id: RequestId,
        result: Result<(), String>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let node = self.node;
        let Some(q) = self.quorums.get_mut(&id) else {
            return out;
        };
        let OwnState::Persisting(own) = &q.own else {
            return out;
        };
        let own = own.clone();
        if let Err(e) = result {
            Self::skip(q, format!("could not store own output: {e}"), &mut out);
            return out;
        }
        if now > q.deadline || !matches!(q.phase, Phase::Open | Phase::Committing) {
            Self::skip(q, "own output stored after the deadline".into(), &mut out);
            return out;
        }
        let msg = CommitMsg {
            commit: Commit {
                request_id: id,
                node,
                inference_id: own.inference_id,
                commitment: own.commitment,
            },
            model: own.model.clone(),
        };
        q.commits.entry(node).or_default().push(msg.clone());
        q.phase = Phase::Committing;
        q.own = OwnState::Committed(own.clone());
        info!(request = %id.short(), commitment = %own.commitment.short(), "committed");
        out.push(Action::Persist(StoreOp::Commit(msg.clone())));
        out.push(Action::Broadcast(Message::Commit(msg)));
        out.push(Action::Emit(NodeEvent::Committed {
            request_id: id,
            inference_id: own.inference_id,
        }));
        out
    }

    fn on_message(&mut self, now: u64, from: NodeId, message: Message, out: &mut Vec<Action>) {
        match message {
            Message::Request(r) => {
                self.on_request(now, r, Some(from), out);
            }
            Message::Commit(c) => self.on_commit(now, from, c, None, out),
            Message::Reveal(r) => self.on_reveal(now, from, r, None, out),
            Message::RevealRejected {
                request_id,
                node,
                reason,
                ..
            } => {
                if self.quorums.contains_key(&request_id) {
                    out.push(Action::Emit(NodeEvent::PeerRejectedReveal {
                        request_id,
                        by: from,
                        node,
                        reason,
                    }));
                }
            }
            Message::ConsensusResult(r) => self.on_peer_result(now, from, r, out),
            Message::PeerStatus(s) => {
                self.peers.insert(
                    from,
                    KnownPeer {
                        status: s,
                        last_seen_ms: now,
                    },
                );
            }
            // Peer lists are the transport's business; sync messages are answered by the
            // driver, which holds the original wire bytes.
            Message::KnownPeers(_) | Message::SyncRequest { .. } | Message::SyncResponse { .. } => {
            }
        }
    }

    /// Asks `peer` for what it saw of `id`, at most once per [`SYNC_RETRY_MS`] per request.
    fn ask_sync(&mut self, now: u64, peer: NodeId, id: RequestId, out: &mut Vec<Action>) {
        if peer == self.node {
            return;
        }
        if let Some(last) = self.sync_asked.get(&id) {
            if now < last.saturating_add(SYNC_RETRY_MS) {
                return;
            }
        }
        if self.sync_asked.len() >= MAX_SYNC_TRACKED {
            if let Some(oldest) = self
                .sync_asked
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| *k)
            {
                self.sync_asked.remove(&oldest);
            }
        }
        self.sync_asked.insert(id, now);
        debug!(request = %id.short(), peer = %peer.short(), "asking a peer for the request's messages");
        out.push(Action::RequestSync {
            peer,
            request_id: id,
        });
    }

    fn on_synced(&mut self, now: u64, batch: Vec<SyncedMessage>, out: &mut Vec<Action>) {
        let outer = self.deferred.is_none();
        if outer {
            self.deferred = Some(BTreeSet::new());
        }
        self.relay_batch(now, batch, out);
        if outer {
            while !self.released.is_empty() {
                let more = std::mem::take(&mut self.released);
                self.relay_batch(now, more, out);
            }
            let touched = self.deferred.take().unwrap_or_default();
            for id in touched {
                self.advance(now, id, out);
                self.try_finalize(id, false, out);
            }
        }
    }

    /// Feeds relayed messages in protocol order (request, commits, reveals, results).
    fn relay_batch(&mut self, now: u64, mut batch: Vec<SyncedMessage>, out: &mut Vec<Action>) {
        let rank = |m: &Message| match m {
            Message::Request(_) => 0,
            Message::Commit(_) => 1,
            Message::Reveal(_) => 2,
            _ => 3,
        };
        batch.sort_by_key(|m| rank(&m.message));
        for m in batch {
            match m.message {
                Message::Request(r) => {
                    self.on_request_at(now, r, Some(m.from), true, out);
                }
                Message::Commit(c) => self.on_commit(now, m.from, c, Some(m.sent_at_ms), out),
                Message::Reveal(r) => self.on_reveal(now, m.from, r, Some(m.sent_at_ms), out),
                Message::ConsensusResult(r) => self.on_peer_result(now, m.from, r, out),
                _ => {}
            }
        }
    }

    /// Keeps a live message about an unknown request until the request arrives.
    fn keep_orphan(&mut self, now: u64, from: NodeId, id: RequestId, message: Message) {
        if !self.orphans.contains_key(&id) && self.orphans.len() >= MAX_ORPHAN_REQUESTS {
            return;
        }
        let list = self.orphans.entry(id).or_default();
        if list.len() < MAX_ORPHANS_PER_REQUEST {
            list.push(SyncedMessage {
                from,
                message,
                sent_at_ms: now,
            });
        }
    }

    /// A commit, live (`sent_at = None`: judged by the local clock) or relayed by a sync
    /// (judged by its signed send time).
    fn on_commit(
        &mut self,
        now: u64,
        from: NodeId,
        c: CommitMsg,
        sent_at: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let id = c.commit.request_id;
        if c.commit.node != from {
            warn!(request = %id.short(), "commit not signed by its committer; dropped");
            return;
        }
        let Some(q) = self.quorums.get_mut(&id) else {
            debug!(request = %id.short(), "commit for unknown request");
            if sent_at.is_none() {
                self.keep_orphan(now, from, id, Message::Commit(c));
                self.ask_sync(now, from, id, out);
            }
            return;
        };
        let timely = match sent_at {
            None => now <= q.deadline && matches!(q.phase, Phase::Open | Phase::Committing),
            Some(t) => {
                t <= q.deadline
                    && q.outcome.is_none()
                    && match &q.phase {
                        Phase::Open | Phase::Committing | Phase::Revealing | Phase::Verifying => {
                            true
                        }
                        // A quorum that failed only for commits this node missed reopens
                        // while the reveal window is open.
                        Phase::Failed(QuorumFailure::QuorumNotReached { .. }) => {
                            now <= q.reveal_deadline
                        }
                        _ => false,
                    }
            }
        };
        if !timely {
            debug!(request = %id.short(), node = %from.short(), "commit after the deadline ignored");
            return;
        }
        if !q.request.accepted_models.contains(&c.model) {
            warn!(request = %id.short(), model = %c.model, "commit for a model the request does not accept");
            return;
        }
        let list = q.commits.entry(from).or_default();
        if list.contains(&c) || list.len() >= 2 {
            return;
        }
        list.push(c.clone());
        match q.phase {
            Phase::Open => q.phase = Phase::Committing,
            Phase::Failed(QuorumFailure::QuorumNotReached { .. })
                if q.committed() >= q.request.frame.quorum =>
            {
                info!(request = %id.short(), "missed commits arrived by sync: the quorum reopens");
                q.phase = Phase::Committing;
            }
            _ => {}
        }
        let committed = q.committed();
        let reopened = q.phase == Phase::Committing && now > q.deadline;
        if let Some(d) = self.deferred.as_mut() {
            d.insert(id);
        }
        out.push(Action::Persist(StoreOp::Commit(c)));
        out.push(Action::Emit(NodeEvent::CommitSeen {
            request_id: id,
            node: from,
            committed,
        }));
        if reopened {
            // Reveals parked while the quorum looked failed.
            if let Some(parked) = self.orphans.remove(&id) {
                if self.deferred.is_some() {
                    self.released.extend(parked);
                } else {
                    self.on_synced(now, parked, out);
                }
            }
        }
    }

    /// A reveal, live (`sent_at = None`) or relayed by a sync (judged by its signed send time).
    fn on_reveal(
        &mut self,
        now: u64,
        from: NodeId,
        r: RevealMsg,
        sent_at: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let id = r.reveal.request_id;
        if !self.quorums.contains_key(&id) {
            if sent_at.is_none() && r.reveal.node == from {
                self.keep_orphan(now, from, id, Message::Reveal(r));
                self.ask_sync(now, from, id, out);
            }
            return;
        }
        // The sender may have passed the deadline a moment before this node's timer fired.
        self.advance(now, id, out);
        if let Some(q) = self.quorums.get_mut(&id) {
            if sent_at.is_none()
                && matches!(q.phase, Phase::Open | Phase::Committing)
                && r.reveal.node == from
                && q.commits.contains_key(&from)
            {
                debug!(request = %id.short(), node = %from.short(), "early reveal buffered");
                q.early_reveals.entry(from).or_insert(r);
                return;
            }
        }
        let own_model = self.config.embedding_model.clone();
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        if r.reveal.node != from {
            warn!(request = %id.short(), "reveal not signed by its revealer; dropped");
            return;
        }
        let at = sent_at.unwrap_or(now);
        let phase_ok = match sent_at {
            None => q.phase == Phase::Revealing,
            Some(_) => {
                matches!(q.phase, Phase::Revealing | Phase::Verifying) && q.outcome.is_none()
            }
        };
        if !phase_ok || at <= q.deadline || at > q.reveal_deadline {
            // A node that failed the quorum for lack of commits it may have missed keeps the
            // reveal and asks the revealer for the commits.
            let park = sent_at.is_none()
                && r.reveal.node == from
                && now <= q.reveal_deadline
                && matches!(
                    q.phase,
                    Phase::Failed(QuorumFailure::QuorumNotReached { .. })
                );
            if park {
                self.keep_orphan(now, from, id, Message::Reveal(r));
                self.ask_sync(now, from, id, out);
                return;
            }
            debug!(request = %id.short(), node = %from.short(), "reveal outside the reveal window ignored");
            return;
        }
        if !q.commits.contains_key(&from) {
            debug!(request = %id.short(), node = %from.short(), "reveal without commit ignored");
            if sent_at.is_none() {
                self.ask_sync(now, from, id, out);
            }
            return;
        }
        let list = q.reveals.entry(from).or_default();
        if list.contains(&r) || list.len() >= 2 {
            return;
        }
        list.push(r.clone());
        out.push(Action::Persist(StoreOp::Reveal(r.clone())));
        out.push(Action::Emit(NodeEvent::RevealSeen {
            request_id: id,
            node: from,
            model: r.model.clone(),
            output: r.reveal.output.clone(),
        }));
        Self::check_reveal(q, own_model.as_deref(), &r, out);
        self.try_finalize(id, false, out);
    }

    /// Checks a kept reveal against the revealer's commits: a reveal that opens none is
    /// rejected; one that opens a commit is re-embedded (when this node verifies with the
    /// reveal's embedding model), or takes the own embedding when it is the own reveal.
    fn check_reveal(q: &mut Quorum, own_model: Option<&str>, r: &RevealMsg, out: &mut Vec<Action>) {
        let id = q.id;
        let from = r.reveal.node;
        let Some(commits) = q.commits.get(&from) else {
            return;
        };
        let opened = commits
            .iter()
            .find(|c| crate::verify_reveal(&c.commit, &r.reveal).is_ok())
            .map(|c| c.commit.commitment);
        let Some(commitment) = opened else {
            let reason = commits
                .iter()
                .map(|c| crate::verify_reveal(&c.commit, &r.reveal))
                .find_map(|res| res.err())
                .unwrap_or(RejectReason::CommitmentMismatch);
            Self::announce_rejection(q, from, r.reveal.inference_id, reason, out);
            return;
        };
        if own_model != Some(r.reveal.embedding_model.as_str()) {
            return;
        }
        let own_embedding = match &q.own {
            OwnState::Committed(o) if o.commitment == commitment => Some(o.embedding.clone()),
            _ => None,
        };
        match own_embedding {
            Some(e) => {
                q.reembeddings
                    .insert((from, commitment), Reembedding::Done(Some(e)));
            }
            None => {
                q.reembeddings
                    .insert((from, commitment), Reembedding::Pending);
                out.push(Action::Embed {
                    request_id: id,
                    purpose: EmbedPurpose::Reembed {
                        node: from,
                        commitment,
                    },
                    text: r.reveal.output.clone(),
                });
            }
        }
    }

    fn announce_rejection(
        q: &mut Quorum,
        node: NodeId,
        inference_id: InferenceId,
        reason: RejectReason,
        out: &mut Vec<Action>,
    ) {
        if !q.announced.insert((node, inference_id)) {
            return;
        }
        info!(request = %q.id.short(), node = %node.short(), %reason, "reveal rejected");
        out.push(Action::Persist(StoreOp::Rejection {
            request_id: q.id,
            rejection: Rejection {
                node,
                inference_id,
                reason: reason.clone(),
            },
        }));
        out.push(Action::Broadcast(Message::RevealRejected {
            request_id: q.id,
            node,
            inference_id,
            reason: reason.clone(),
        }));
        out.push(Action::Emit(NodeEvent::RevealRejected {
            request_id: q.id,
            node,
            reason,
        }));
    }

    fn on_peer_result(
        &mut self,
        now: u64,
        from: NodeId,
        r: ConsensusResultMsg,
        out: &mut Vec<Action>,
    ) {
        let id = r.request_id;
        if r.signer != from {
            warn!(request = %id.short(), "result not signed by its sender; dropped");
            return;
        }
        // A result for a request this node does not know, or failed for lack of commits it
        // may have missed: ask the signer for what it saw.
        let missed = match self.quorums.get(&id) {
            None => true,
            Some(q) => matches!(
                q.phase,
                Phase::Failed(QuorumFailure::QuorumNotReached { .. })
            ),
        };
        if missed {
            self.ask_sync(now, from, id, out);
        }
        let Some(q) = self.quorums.get_mut(&id) else {
            self.keep_orphan(now, from, id, Message::ConsensusResult(r));
            return;
        };
        if let Err(e) = r.verify() {
            warn!(request = %id.short(), node = %from.short(), error = %e, "invalid result dropped");
            return;
        }
        if q.peer_results.contains_key(&from) {
            return;
        }
        q.peer_results.insert(from, r.result_digest);
        out.push(Action::Persist(StoreOp::PeerResult(r.clone())));
        if let Some(ours) = q.signed.as_ref().map(|s| s.result_digest) {
            if ours != r.result_digest {
                warn!(request = %id.short(), node = %from.short(), "peer computed a different result");
                out.push(Action::Emit(NodeEvent::Disagreement {
                    request_id: id,
                    node: from,
                    ours,
                    theirs: r.result_digest,
                }));
            }
        }
        out.push(Action::Emit(NodeEvent::PeerResult {
            request_id: id,
            result: Arc::new(r),
        }));
    }

    fn on_tick(&mut self, now: u64, out: &mut Vec<Action>) {
        self.orphans.retain(|_, list| {
            list.first()
                .is_some_and(|m| m.sent_at_ms.saturating_add(ORPHAN_TTL_MS) > now)
        });
        let ids: Vec<RequestId> = self.quorums.keys().copied().collect();
        for id in ids {
            self.advance(now, id, out);
        }
    }

    /// Moves one request along its timeline if one of its instants has passed.
    fn advance(&mut self, now: u64, id: RequestId, out: &mut Vec<Action>) {
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        match q.phase {
            Phase::Open | Phase::Committing if now > q.deadline => {
                let committed = q.committed();
                let needed = q.request.frame.quorum;
                if committed < needed {
                    let reason = QuorumFailure::QuorumNotReached { committed, needed };
                    info!(request = %id.short(), %reason, "quorum failed");
                    q.early_reveals.clear();
                    Self::fail(q, reason, out);
                    return;
                }
                q.phase = Phase::Revealing;
                out.push(Action::Emit(NodeEvent::RevealOpened {
                    request_id: id,
                    committed,
                }));
                let own = match &q.own {
                    OwnState::Committed(own) if now <= q.reveal_deadline => Some(own),
                    OwnState::Committed(_) => {
                        warn!(request = %id.short(), "the reveal window closed before this node could reveal");
                        None
                    }
                    _ => None,
                };
                if let Some(own) = own {
                    let reveal = RevealMsg {
                        reveal: Reveal {
                            request_id: id,
                            node: self.node,
                            inference_id: own.inference_id,
                            output: own.output.clone(),
                            embedding: own.embedding.clone(),
                            salt: own.salt,
                            embedding_model: own.embedding_model.clone(),
                        },
                        model: own.model.clone(),
                        evidence: Vec::new(),
                    };
                    q.reveals.insert(self.node, vec![reveal.clone()]);
                    q.reembeddings.insert(
                        (self.node, own.commitment),
                        Reembedding::Done(Some(own.embedding.clone())),
                    );
                    out.push(Action::Persist(StoreOp::Reveal(reveal.clone())));
                    out.push(Action::Broadcast(Message::Reveal(reveal)));
                }
                let early = std::mem::take(&mut q.early_reveals);
                for (from, r) in early {
                    self.on_reveal(now, from, r, None, out);
                }
                // Reveals may also be complete at once (quorum of one).
                self.try_finalize(id, false, out);
            }
            Phase::Revealing if now > q.reveal_deadline => {
                q.phase = Phase::Verifying;
                self.try_finalize(id, false, out);
            }
            Phase::Verifying if now > q.reveal_deadline + self.config.verify_grace_ms => {
                self.try_finalize(id, true, out);
            }
            _ => {}
        }
    }

    /// Computes consensus when everything needed is there (or `force`).
    fn try_finalize(&mut self, id: RequestId, force: bool, out: &mut Vec<Action>) {
        if let Some(d) = self.deferred.as_mut() {
            d.insert(id);
            return;
        }
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        if !matches!(q.phase, Phase::Revealing | Phase::Verifying) {
            return;
        }
        if self.config.embedding_model.is_none() {
            // A node without an embedder cannot verify: it waits for peers' signed results.
            return;
        }
        let pending = q.reembeddings.values().any(|s| *s == Reembedding::Pending);
        let all_revealed = q.commits.keys().all(|n| q.reveals.contains_key(n));
        let ready = match q.phase {
            Phase::Revealing => all_revealed && !pending,
            Phase::Verifying => !pending || force,
            _ => false,
        };
        if !ready {
            return;
        }
        let mut params = match ConsensusParams::from_frame(&q.request.frame) {
            Ok(p) => p,
            Err(e) => {
                Self::fail(q, QuorumFailure::Invalid(e.to_string()), out);
                return;
            }
        };
        if let Some(t) = self.config.reembed_tolerance_bits {
            params = params.with_reembed_tolerance(t);
        }
        let commits: Vec<Commit> = q
            .commits
            .values()
            .flatten()
            .map(|c| c.commit.clone())
            .collect();
        let submissions: Vec<Submission> = q
            .reveals
            .values()
            .flatten()
            .map(|r| {
                let opened = r.reveal.commitment();
                let reembedding = match q.reembeddings.get(&(r.reveal.node, opened)) {
                    Some(Reembedding::Done(e)) => e.clone(),
                    _ => None,
                };
                Submission {
                    reveal: r.reveal.clone(),
                    reembedding,
                }
            })
            .collect();
        let outcome = match evaluate(&id, &params, &commits, &submissions) {
            Ok(o) => o,
            Err(e) => {
                Self::fail(q, QuorumFailure::Invalid(e.to_string()), out);
                return;
            }
        };
        for rej in &outcome.rejected {
            Self::announce_rejection(q, rej.node, rej.inference_id, rej.reason.clone(), out);
        }
        let outcome = Arc::new(outcome);
        q.outcome = Some(outcome.clone());
        match &outcome.decision {
            Decision::Agreed { result_digest, .. } => {
                let signed = ConsensusResultMsg::sign(&self.key, &outcome)
                    .expect("an agreed outcome has a result to sign");
                info!(
                    request = %id.short(),
                    accepted = outcome.accepted.len(),
                    committed = outcome.committed,
                    result = %result_digest.short(),
                    "consensus reached"
                );
                q.phase = Phase::Completed;
                q.signed = Some(signed.clone());
                out.push(Action::Persist(StoreOp::Outcome {
                    request_id: id,
                    outcome: (*outcome).clone(),
                    signed: Some(signed.clone()),
                }));
                out.push(Action::Broadcast(Message::ConsensusResult(signed)));
                for (node, theirs) in &q.peer_results {
                    if theirs != result_digest {
                        out.push(Action::Emit(NodeEvent::Disagreement {
                            request_id: id,
                            node: *node,
                            ours: *result_digest,
                            theirs: *theirs,
                        }));
                    }
                }
                out.push(Action::Emit(NodeEvent::Completed {
                    request_id: id,
                    outcome,
                }));
            }
            Decision::Failed(reason) => {
                let reason = QuorumFailure::Consensus(reason.clone());
                info!(request = %id.short(), %reason, "consensus failed");
                out.push(Action::Persist(StoreOp::Outcome {
                    request_id: id,
                    outcome: (*outcome).clone(),
                    signed: None,
                }));
                Self::fail(q, reason, out);
            }
        }
    }
}
