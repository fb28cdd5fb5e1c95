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

use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::embedder::EmbedError;
use crate::engine::{EngineError, Generation, GenerationJob};
use crate::events::{IgnoreReason, NodeEvent};
use crate::identity::NodeKey;
use crate::membership::{Committee, Membership};
use crate::protocol::{ConsensusResultMsg, InferenceRequest, Message, PeerStatus};
use crate::store::{OwnOutput, StoreOp};
use crate::{BinaryEmbedding, ConsensusOutcome, FailureReason, Hash32, NodeId, RequestId};

mod answer;
mod messages;
mod orphans;
mod quorum;
mod restore;
mod sync;
mod timeline;

pub use orphans::{MAX_ORPHAN_BYTES, MAX_ORPHAN_BYTES_PER_SENDER};
use quorum::{OwnState, Quorum};
pub(crate) use sync::insert_evicting_oldest;

/// Default length of the reveal window after the deadline.
pub const DEFAULT_REVEAL_WINDOW_MS: u64 = 5_000;
/// Default time allowed for re-embeddings after the reveal window closes.
pub const DEFAULT_VERIFY_GRACE_MS: u64 = 60_000;
/// Default reconcile window.
pub const DEFAULT_RECONCILE_WINDOW_MS: u64 = 3_000;
/// While reconciling, how often the inventory is sent again and what is missing asked for
/// again (and how often a node answers one peer's sync requests for one request).
pub const RECONCILE_RETRY_MS: u64 = 500;
/// Default most requests tracked at once.
pub const DEFAULT_MAX_OPEN_REQUESTS: usize = 10_000;
/// Default most open (not yet closed) requests of one requester taken from peers.
pub const DEFAULT_MAX_OPEN_PER_REQUESTER: usize = 64;
/// Default longest time from now to the deadline of a request taken from peers (10 minutes).
pub const DEFAULT_MAX_REQUEST_TIME_MS: u64 = 600_000;
/// The window over which generations started per requester are counted for fair scheduling.
pub const FAIRNESS_WINDOW_MS: u64 = 60_000;
/// Most committers a node tracks per request in an open network (a committee bounds them
/// otherwise).
pub const MAX_OPEN_COMMITTERS: usize = 64;
/// Default budget for the state of tracked requests taken from peers (256 MiB).
pub const DEFAULT_MAX_STATE_BYTES: usize = 256 * 1024 * 1024;
/// What one committer may make a node hold for one request besides its outputs: commit,
/// inventory, embeddings, signatures, bookkeeping.
const COMMITTER_OVERHEAD_BYTES: usize = 4 * 1024;

/// Static configuration of a coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorConfig {
    /// The network's id, as its envelopes name it: the statements this node signs with its
    /// commits and reveals are bound to it ([`crate::misbehaviour`]).
    pub network_id: String,
    /// Models this node generates with.
    pub served_models: Vec<String>,
    /// The weights of each served model (as its engine reports them): declared in this node's
    /// reveals; reveals of that model declaring other weights fail the second check.
    #[serde(default)]
    pub model_weights: BTreeMap<String, crate::engine::ModelWeights>,
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
    /// How much honest numerical difference the replay of a committer's sampling tolerates.
    pub sampling_policy: crate::consensus::sampling::ReplayPolicy,
    /// How long a node that is ready to decide waits for the other committers' inventories and
    /// for what they list (a decision over the same inputs on every honest node).
    pub reconcile_window_ms: u64,
    /// Most requests tracked at once; further requests are refused. Closed requests are forgotten
    /// to make room once a relayed copy of them would no longer be taken (`reveal_window_ms +
    /// verify_grace_ms` after their deadline); their records stay in the store.
    pub max_open_requests: usize,
    /// Most open (not yet completed or failed) requests of one requester that the node takes
    /// from peers; further ones are refused ([`IgnoreReason::RequesterOverLimit`]). Requests
    /// of the node's host and of its chain readers are not counted against it.
    pub max_open_per_requester: usize,
    /// Longest time from now to the deadline of a request taken from peers; a request with a
    /// later deadline is refused ([`IgnoreReason::DeadlineTooFar`]).
    pub max_request_time_ms: u64,
    /// Budget, in bytes, for the state of the tracked requests: each request reserves the most
    /// its prompt, its committers' commits, reveals and results and this node's own answer can
    /// make the node hold (outputs bounded by
    /// [`max_output_bytes`](InferenceRequest::max_output_bytes), committers by the committee or
    /// [`MAX_OPEN_COMMITTERS`]); a request from a peer that would pass the budget, or give its
    /// requester more than a quarter of it, is refused ([`IgnoreReason::StateBudget`]) once
    /// closed requests have been forgotten.
    pub max_state_bytes: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            network_id: String::new(),
            served_models: Vec::new(),
            model_weights: BTreeMap::new(),
            workers: 1,
            embedding_model: None,
            reveal_window_ms: DEFAULT_REVEAL_WINDOW_MS,
            verify_grace_ms: DEFAULT_VERIFY_GRACE_MS,
            reconcile_window_ms: DEFAULT_RECONCILE_WINDOW_MS,
            initial_generation_estimate_ms: 0,
            reembed_tolerance_bits: None,
            sampling_policy: Default::default(),
            max_open_requests: DEFAULT_MAX_OPEN_REQUESTS,
            max_open_per_requester: DEFAULT_MAX_OPEN_PER_REQUESTER,
            max_request_time_ms: DEFAULT_MAX_REQUEST_TIME_MS,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
        }
    }
}

/// Why a quorum failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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

/// An input to the state machine. Exhaustive by design, like [`Action`]: a driver feeds every
/// kind.
#[derive(Clone, Debug)]
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
    /// A replay of a committer's sampling finished (answer to [`Action::Score`]).
    Scored {
        /// The request.
        request_id: RequestId,
        /// The committer.
        node: NodeId,
        /// The commitment its reveal opens.
        commitment: crate::Commitment,
        /// The replay, or the engine's error (`Unsupported`: this engine cannot replay).
        result: Result<crate::engine::Score, crate::EngineError>,
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
///
/// Exhaustive by design (not `#[non_exhaustive]`): a driver must execute every action, so a
/// new kind of action is a breaking change that a driver's `match` reports.
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
    /// Replay a committer's sampling with the engine; answer with [`Input::Scored`].
    Score {
        /// The committer.
        node: NodeId,
        /// The commitment its reveal opens.
        commitment: crate::Commitment,
        /// The job.
        job: crate::engine::ScoreJob,
    },
    /// Send evidence of a committer's misbehaviour to the chain sinks (it has been verified).
    Report(Box<crate::misbehaviour::Misbehaviour>),
    /// Ask `peer` directly for what it saw of a request ([`Message::SyncRequest`]).
    RequestSync {
        /// Whom to ask.
        peer: NodeId,
        /// The request.
        request_id: RequestId,
    },
}

impl Action {
    /// The event that reports a refused message or request ([`NodeEvent::Ignored`]).
    pub(crate) fn ignored(request_id: RequestId, node: NodeId, reason: IgnoreReason) -> Self {
        Action::Emit(NodeEvent::Ignored {
            request_id,
            node,
            reason,
        })
    }
}

/// Minimum time between two sync requests for one request (a node that missed a request asks
/// the sender of the next message it hears about it; when the ask or its answer is lost, it asks
/// again this soon: at 2 s, a member that missed a request and one sync at 5 % loss often
/// heard of it again only after the reveal window).
pub const SYNC_RETRY_MS: u64 = 500;
/// Most requests for which sync attempts are remembered.
const MAX_SYNC_TRACKED: usize = 4_096;

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
    /// The request's committee (`None` in an open network).
    pub committee: Option<Committee>,
    /// The result digest that the committee's signature threshold certified, once one did.
    pub certified: Option<Hash32>,
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
    /// The digest of the network id that statements are signed for.
    network: crate::Hash32,
    config: CoordinatorConfig,
    /// Who may answer (`None`: an open network, where every key counts).
    membership: Option<Arc<dyn Membership>>,
    /// The time of the input being handled.
    now: u64,
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
    /// Messages about requests not known yet, replayed when the request arrives. Bounded.
    orphans: orphans::Orphans,
    /// Orphans released inside a batch, fed after the batch.
    released: Vec<SyncedMessage>,
    /// Generations started per requester since `served_since` (fair scheduling: the queued
    /// request of the least-served requester goes first).
    served: BTreeMap<Requester, u32>,
    served_since: u64,
    /// Bytes reserved by the tracked requests (see [`CoordinatorConfig::max_state_bytes`]).
    reserved_bytes: usize,
}

/// Who asked for a request, for fairness: the requesting node, or the contract that emitted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Requester {
    Node(NodeId),
    Contract(u64, crate::Address),
    /// A peer request without a requester (validation refuses them).
    Unknown,
}

impl Requester {
    pub(crate) fn of(request: &InferenceRequest) -> Self {
        match (&request.origin, request.requester) {
            (
                crate::protocol::Origin::Chain {
                    chain_id, contract, ..
                },
                _,
            ) => Requester::Contract(*chain_id, *contract),
            (_, Some(node)) => Requester::Node(node),
            (_, None) => Requester::Unknown,
        }
    }
}

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
            network: crate::consensus::network_digest(&config.network_id),
            generation_estimate_ms: config.initial_generation_estimate_ms,
            config,
            membership: None,
            now: 0,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            quorums: BTreeMap::new(),
            queue: BTreeSet::new(),
            busy: 0,
            peers: BTreeMap::new(),
            sync_asked: BTreeMap::new(),
            deferred: None,
            orphans: orphans::Orphans::default(),
            released: Vec::new(),
            served: BTreeMap::new(),
            served_since: 0,
            reserved_bytes: 0,
        }
    }

    /// Bounds who may answer each request: its committee, drawn from `membership` (see
    /// [`membership`](crate::membership)). Without one, the coordinator runs an open network:
    /// every key that commits counts.
    pub fn with_membership(mut self, membership: Arc<dyn Membership>) -> Self {
        self.membership = Some(membership);
        self
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
                // Reconciling: at the window's end, and to ask again for what is missing.
                Phase::Revealing | Phase::Verifying
                    if can_verify && q.reconcile_deadline.is_some() =>
                {
                    let end = q.reconcile_deadline.unwrap_or(0).saturating_add(1);
                    let resend = q
                        .inventory_sent_at
                        .map(|t| t.saturating_add(RECONCILE_RETRY_MS));
                    Some(resend.map_or(end, |r| r.min(end)))
                }
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
            committee: q.committee.clone(),
            certified: q.certified,
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

    /// The reveal of `node`'s answer `inference` to request `id`, as received (its token ids
    /// and ending say how long the answer is and why it stopped).
    pub fn reveal(
        &self,
        id: &RequestId,
        node: &NodeId,
        inference: &crate::InferenceId,
    ) -> Option<crate::protocol::RevealMsg> {
        self.quorums
            .get(id)?
            .reveals
            .get(node)?
            .iter()
            .find(|r| r.reveal.inference_id == *inference)
            .cloned()
    }

    /// The certificate of a request whose result the committee certified.
    pub fn certificate(&self, id: &RequestId) -> Option<crate::protocol::Certificate> {
        let q = self.quorums.get(id)?;
        let digest = q.certified?;
        Some(crate::protocol::Certificate {
            committee: q.committee.clone()?,
            signatures: q.attestations.get(&digest)?.values().cloned().collect(),
        })
    }

    /// Bytes reserved by the requests tracked now (at most `max_state_bytes` for requests from
    /// peers).
    pub fn reserved_bytes(&self) -> usize {
        self.reserved_bytes
    }

    /// The most a request can make this node hold, in bytes (see
    /// [`CoordinatorConfig::max_state_bytes`]).
    pub fn reservation(request: &InferenceRequest, committee: Option<&Committee>) -> usize {
        let committers = committee.map_or(MAX_OPEN_COMMITTERS, |c| c.len());
        let output = request.max_output_bytes();
        let prompt: usize = request.messages.iter().map(|m| m.content.len()).sum();
        let models: usize = request.accepted_models.iter().map(|m| m.len()).sum();
        // Per committer: its reveal, its signed result as an attestation, and the driver's copy
        // of that result for the sinks.
        prompt + models + output + committers * (3 * output + COMMITTER_OVERHEAD_BYTES)
    }

    /// Whether the coordinator tracks `id` (open, or closed and not forgotten yet).
    pub fn tracks(&self, id: &RequestId) -> bool {
        self.quorums.contains_key(id)
    }

    /// The own signed result of a completed request.
    pub fn signed_result(&self, id: &RequestId) -> Option<&ConsensusResultMsg> {
        self.quorums.get(id)?.signed.as_ref()
    }

    /// Feeds one input at time `now_ms` and returns the actions to execute, in order.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        self.now = now_ms;
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
            Input::Scored {
                request_id,
                node,
                commitment,
                result,
            } => self.on_scored(request_id, node, commitment, result, &mut out),
            Input::OwnOutputPersisted { request_id, result } => {
                out.extend(self.on_own_persisted(now_ms, request_id, result))
            }
            Input::Tick => self.on_tick(now_ms, &mut out),
            Input::Synced(batch) => self.on_synced(now_ms, batch, &mut out),
        }
        self.schedule(now_ms, &mut out);
        out
    }

    /// The committee of `request`: `Ok(None)` in an open network, `Err` when the membership
    /// does not know the request's epoch.
    fn committee_for(&self, request: &InferenceRequest) -> Result<Option<Committee>, IgnoreReason> {
        match &self.membership {
            None => Ok(None),
            Some(m) => m
                .epoch_at(request.created_at_ms)
                .map(|epoch| Some(epoch.committee(request)))
                .ok_or(IgnoreReason::UnknownEpoch),
        }
    }

    fn new_quorum(&self, request: InferenceRequest, committee: Option<Committee>) -> Quorum {
        let deadline = request.deadline_ms();
        Quorum {
            reserved: Self::reservation(&request, committee.as_ref()),
            id: request.id(),
            deadline,
            reveal_deadline: deadline.saturating_add(self.config.reveal_window_ms),
            request,
            phase: Phase::Open,
            commits: BTreeMap::new(),
            reveals: BTreeMap::new(),
            reported: BTreeSet::new(),
            reembeddings: BTreeMap::new(),
            scores: BTreeMap::new(),
            announced: BTreeSet::new(),
            early_reveals: BTreeMap::new(),
            own: OwnState::NotAnswering,
            outcome: None,
            signed: None,
            peer_results: BTreeMap::new(),
            attestations: BTreeMap::new(),
            committee,
            certified: None,
            outsiders: 0,
            reconcile_deadline: None,
            inventory_sent_at: None,
            inventories: BTreeMap::new(),
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
}
