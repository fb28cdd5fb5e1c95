//! The async driver: runs the [`Coordinator`] against the parts. It executes the coordinator's
//! actions (broadcast, persist, run a job, emit an event), feeds it the transport's messages, the
//! jobs' results and the clock, and answers the handle's commands. Jobs, chain submissions and
//! store pruning run in tasks beside the loop; their results come back as [`DriverInput`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::config::NodeConfig;
use super::error::NodeError;
use super::handle::{Command, NodeHandle, NodeStats};
use super::sync::SyncLog;
use crate::chain::{ChainError, ChainSink, RequestSource};
use crate::clock::Clock;
use crate::coordinator::{Action, Coordinator, Input};
use crate::embedder::{EmbedError, Embedder};
use crate::engine::{EngineError, InferenceEngine};
use crate::envelope::{seal_remembered, Inbox};
use crate::events::NodeEvent;
use crate::identity::NodeKey;
use crate::protocol::{ConsensusResultMsg, InferenceRequest, Message, RequestError};
use crate::store::{CommitStore, StoreError, StoreOp};
use crate::transport::{Transport, TransportEvent};
use crate::{NodeId, RequestId};

/// Most closed-request ids remembered by `Driver::closed_before`.
const MAX_CLOSED_CACHED: usize = 4_096;
/// How often the driver forgets what it keeps for requests the coordinator no longer tracks.
const HOUSEKEEPING: Duration = Duration::from_secs(10);
/// Most direct sends awaiting their acknowledgement at once, in all and per peer. A send waits
/// beside the loop (up to the transport's request timeout); beyond these bounds further sends
/// are dropped, so a peer that never acknowledges holds a few tasks, never the node.
pub(super) const MAX_SENDS_IN_FLIGHT: usize = 64;
/// See [`MAX_SENDS_IN_FLIGHT`].
pub(super) const MAX_SENDS_PER_PEER: usize = 4;

/// The parts and settings a [`NodeBuilder`](super::NodeBuilder) hands to the driver.
pub(super) struct Parts {
    pub(super) key: NodeKey,
    pub(super) network_id: String,
    pub(super) config: NodeConfig,
    pub(super) coordinator: Coordinator,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) engine: Option<Arc<dyn InferenceEngine>>,
    pub(super) embedder: Option<Arc<dyn Embedder>>,
    pub(super) store: Arc<dyn CommitStore>,
    pub(super) sinks: Vec<Arc<dyn ChainSink>>,
    pub(super) sources: Vec<Arc<dyn RequestSource>>,
    pub(super) clock: Arc<dyn Clock>,
}

/// The node's event loop and what it owns.
pub(super) struct Driver {
    pub(super) key: NodeKey,
    pub(super) config: NodeConfig,
    pub(super) network_id: String,
    pub(super) coordinator: Coordinator,
    pub(super) inbox: Inbox,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) engine: Option<Arc<dyn InferenceEngine>>,
    pub(super) embedder: Option<Arc<dyn Embedder>>,
    pub(super) store: Arc<dyn CommitStore>,
    pub(super) sinks: Vec<Arc<dyn ChainSink>>,
    pub(super) sources: Vec<Arc<dyn RequestSource>>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) events: broadcast::Sender<NodeEvent>,
    pub(super) jobs_tx: mpsc::UnboundedSender<DriverInput>,
    pub(super) jobs_rx: mpsc::UnboundedReceiver<DriverInput>,
    pub(super) peer_results: BTreeMap<RequestId, Vec<ConsensusResultMsg>>,
    /// Submissions started in this run and not finished: (request, sink name).
    pub(super) submitting: BTreeSet<(RequestId, String)>,
    /// Submissions a sink refused for too few signatures, retried as attestations arrive and
    /// every [`SIGNATURE_RETRY`]: how many times each was refused.
    pub(super) awaiting_signatures: BTreeMap<(RequestId, String), u32>,
    pub(super) dropped: u64,
    /// Original wire bytes of the request, commits, reveals and results seen per request, to
    /// answer sync requests of peers that joined late or were cut off.
    pub(super) sync_log: SyncLog,
    /// Requests found closed in the store though not tracked (see `closed_before`).
    pub(super) closed: BTreeSet<RequestId>,
    /// Tasks beside the loop (jobs, submissions, request readers, pruning): aborted when the
    /// node stops.
    pub(super) tasks: tokio::task::JoinSet<()>,
    /// When this node last answered a sync request, per (peer, request).
    pub(super) sync_answered: BTreeMap<(NodeId, RequestId), u64>,
    /// Sync requests this node sent and not yet answered, per (peer, request): when asked. A
    /// sync response is taken only from a peer asked for that request.
    pub(super) sync_expected: BTreeMap<(NodeId, RequestId), u64>,
    /// Direct sends awaiting acknowledgement, per peer (see [`MAX_SENDS_IN_FLIGHT`]).
    pub(super) sending: BTreeMap<NodeId, usize>,
    /// Direct sends not made for want of a free slot.
    pub(super) sends_dropped: u64,
}

/// What the tasks beside the loop send back to it.
pub(super) enum DriverInput {
    Coordinator(Input),
    ChainRequest(InferenceRequest),
    Submitted {
        request_id: RequestId,
        sink: String,
        result: Result<String, ChainError>,
    },
    RetrySubmission {
        request_id: RequestId,
    },
    /// A sink answered evidence of misbehaviour.
    Reported {
        request_id: RequestId,
        node: NodeId,
        sink: String,
        result: Result<String, String>,
    },
    /// A direct send to `peer` ended (acknowledged, refused or timed out).
    Sent {
        peer: NodeId,
    },
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("node", &self.coordinator.node_id())
            .field("network", &self.network_id)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// The driver and the handle to it.
    pub(super) fn new(parts: Parts) -> (NodeHandle, Driver) {
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let (events_tx, _) = broadcast::channel(parts.config.event_capacity.max(16));
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let handle = NodeHandle::new(
            parts.key.node_id(),
            commands_tx,
            events_tx.clone(),
            parts.clock.clone(),
        );
        let skew = u64::try_from(parts.config.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        let driver = Driver {
            inbox: match parts.transport.verified_signatures() {
                Some(v) => Inbox::new(parts.network_id.clone(), skew).with_verified_signatures(v),
                None => Inbox::new(parts.network_id.clone(), skew),
            },
            key: parts.key,
            network_id: parts.network_id,
            config: parts.config,
            coordinator: parts.coordinator,
            transport: parts.transport,
            engine: parts.engine,
            embedder: parts.embedder,
            store: parts.store,
            sinks: parts.sinks,
            sources: parts.sources,
            clock: parts.clock,
            commands: commands_rx,
            events: events_tx,
            jobs_tx,
            jobs_rx,
            peer_results: BTreeMap::new(),
            awaiting_signatures: BTreeMap::new(),
            submitting: BTreeSet::new(),
            dropped: 0,
            sync_log: SyncLog::default(),
            sync_answered: BTreeMap::new(),
            sync_expected: BTreeMap::new(),
            sending: BTreeMap::new(),
            sends_dropped: 0,
            tasks: tokio::task::JoinSet::new(),
            closed: BTreeSet::new(),
        };
        (handle, driver)
    }

    pub(super) async fn run(mut self) {
        let node = self.coordinator.node_id();
        let span = info_span!("node", id = %node.short());
        async move {
            info!(network = %self.network_id, "node starting");
            self.recover().await;
            let mut incoming = self.transport.events();
            // Readers of the request sources: tasks of the node, like its jobs and submissions.
            for source in &self.sources {
                let mut stream = source.requests();
                let tx = self.jobs_tx.clone();
                self.tasks.spawn(async move {
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(r) => {
                                if tx.send(DriverInput::ChainRequest(r)).is_err() {
                                    break;
                                }
                            }
                            Err(e) => warn!(error = %e, "request source error"),
                        }
                    }
                });
            }
            if self.config.status_interval.is_some() {
                self.broadcast(Message::PeerStatus(self.coordinator.peer_status()))
                    .await;
            }
            let mut status_timer = self.config.status_interval.map(|i| {
                let mut t = tokio::time::interval(i);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
            housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut retention_timer = self.config.retention.map(|r| {
                let mut t = tokio::time::interval(r.interval);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            loop {
                let wake = self.coordinator.next_wakeup().map(|t| {
                    let now = self.clock.now_ms();
                    Duration::from_millis(t.saturating_sub(now))
                });
                let sleep = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600)));
                tokio::select! {
                    cmd = self.commands.recv() => match cmd {
                        None => break,
                        Some(Command::Shutdown(done)) => {
                            info!("node shutting down");
                            let _ = done.send(());
                            break;
                        }
                        Some(c) => self.on_command(c).await,
                    },
                    ev = incoming.next() => match ev {
                        Some(TransportEvent::Message { bytes, .. }) => self.on_bytes(&bytes).await,
                        Some(TransportEvent::PeerConnected(p)) => debug!(peer = %p.short(), "peer connected"),
                        Some(TransportEvent::PeerDisconnected(p)) => debug!(peer = %p.short(), "peer disconnected"),
                        None => {
                            warn!("transport closed its event stream");
                            incoming = futures::stream::pending().boxed();
                        }
                    },
                    Some(job) = self.jobs_rx.recv() => self.on_driver_input(job).await,
                    _ = sleep, if wake.is_some() => self.feed(Input::Tick).await,
                    _ = async { status_timer.as_mut().expect("guarded").tick().await }, if status_timer.is_some() => {
                        self.broadcast(Message::PeerStatus(self.coordinator.peer_status())).await;
                    }
                    _ = async { retention_timer.as_mut().expect("guarded").tick().await }, if retention_timer.is_some() => {
                        self.prune();
                    }
                    _ = housekeeping.tick() => self.forget_settled(),
                    // Finished tasks are reaped as they end.
                    Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                }
            }
            // Nothing the node started outlives it: request readers, jobs, chain submissions.
            self.tasks.shutdown().await;
            info!("node stopped");
        }
        .instrument(span)
        .await
    }

    /// Reloads what the node was doing before it stopped: open requests, and closed ones whose
    /// result had not reached every sink.
    async fn recover(&mut self) {
        let mut records = match self.store.open_quorums().await {
            Ok(records) => records,
            Err(e) => {
                error!(error = %e, "could not read open requests from the store");
                Vec::new()
            }
        };
        let unsettled = match self.store.unsettled_results().await {
            Ok(records) => records,
            Err(StoreError::Unsupported(why)) => {
                debug!(%why, "pending chain submissions are not tracked by the store");
                Vec::new()
            }
            Err(e) => {
                error!(error = %e, "could not read pending chain submissions from the store");
                Vec::new()
            }
        };
        let settle: Vec<RequestId> = unsettled.iter().map(|r| r.request.id()).collect();
        records.extend(unsettled);
        let now = self.clock.now_ms();
        for rec in records {
            let id = rec.request.id();
            // Results signed by others before the restart still attest ours on the sinks.
            if !rec.peer_results.is_empty() {
                self.peer_results
                    .entry(id)
                    .or_default()
                    .extend(rec.peer_results.iter().cloned());
            }
            let actions = self.coordinator.restore(rec, now);
            self.execute(actions).await;
        }
        for id in settle {
            self.submit_to_sinks(id).await;
        }
        self.feed(Input::Tick).await;
    }

    /// Forgets the signed results of others kept for requests that the coordinator no longer
    /// tracks and that no sink still waits on (they attest this node's result to its sinks).
    fn forget_settled(&mut self) {
        let before = self.peer_results.len();
        let waiting: BTreeSet<RequestId> = self
            .submitting
            .iter()
            .map(|(id, _)| *id)
            .chain(self.awaiting_signatures.keys().map(|(id, _)| *id))
            .collect();
        let coordinator = &self.coordinator;
        self.peer_results
            .retain(|id, _| waiting.contains(id) || coordinator.tracks(id));
        let forgotten = before - self.peer_results.len();
        if forgotten > 0 {
            debug!(forgotten, "signed results of closed requests forgotten");
        }
    }

    /// Applies the retention policy in the background (the store may take a while).
    fn prune(&mut self) {
        let Some(retention) = self.config.retention else {
            return;
        };
        let max_age = u64::try_from(retention.max_age.as_millis()).unwrap_or(u64::MAX);
        let before = self.clock.now_ms().saturating_sub(max_age);
        let store = self.store.clone();
        self.tasks.spawn(
            async move {
                match store.prune(before).await {
                    Ok(pruned) => {
                        let size = store.size_bytes().await.ok();
                        if pruned > 0 {
                            info!(pruned, size_bytes = ?size, "retention: closed requests deleted");
                        } else {
                            debug!(size_bytes = ?size, "retention: nothing to delete");
                        }
                    }
                    Err(StoreError::Unsupported(why)) => debug!(%why, "no retention"),
                    Err(e) => warn!(error = %e, "retention failed"),
                }
            }
            .in_current_span(),
        );
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(request, reply) => {
                let id = request.id();
                let result = match request.validate() {
                    Err(e) => Err(NodeError::InvalidRequest(e)),
                    Ok(()) if self.clock.now_ms() > request.deadline_ms() => {
                        Err(NodeError::InvalidRequest(RequestError::DeadlinePassed))
                    }
                    Ok(()) => {
                        self.feed(Input::LocalRequest(request)).await;
                        Ok(id)
                    }
                };
                let _ = reply.send(result);
            }
            Command::Status(id, reply) => {
                let status = match self.coordinator.status(&id) {
                    Some(s) => Some(s),
                    // Closed before a restart: not restored, but its outcome is in the store.
                    None => match self.store.quorum(&id).await {
                        Ok(Some(record)) => self.coordinator.record_status(&record),
                        Ok(None) => None,
                        Err(e) => {
                            warn!(request = %id.short(), error = %e, "could not read the request from the store");
                            None
                        }
                    },
                };
                let _ = reply.send(status);
            }
            Command::Certificate(id, reply) => {
                let _ = reply.send(self.coordinator.certificate(&id));
            }
            Command::Reveal(id, node, inference, reply) => {
                let _ = reply.send(self.coordinator.reveal(&id, &node, &inference));
            }
            Command::Requests(reply) => {
                let _ = reply.send(self.coordinator.request_ids());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.coordinator.peers().clone());
            }
            Command::Stats(reply) => {
                let _ = reply.send(NodeStats {
                    requests: self.coordinator.request_ids().len(),
                    dropped_messages: self.dropped,
                    sync_log_bytes: self.sync_log.bytes(),
                    sends_in_flight: self.sending.values().sum(),
                    sends_dropped: self.sends_dropped,
                    generation_load: self.coordinator.peer_status().load,
                });
            }
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    async fn on_bytes(&mut self, bytes: &[u8]) {
        let now = self.clock.now_ms();
        match self.inbox.accept(bytes, now) {
            Ok(v) => {
                let from = v.envelope.sender;
                debug!(kind = v.envelope.message.kind(), from = %from.short(), "message");
                match v.envelope.message {
                    Message::SyncRequest { request_id } => self.answer_sync(from, request_id, now),
                    Message::SyncResponse {
                        request_id,
                        envelopes,
                    } => {
                        self.on_sync_response(from, request_id, envelopes, now)
                            .await
                    }
                    message => {
                        if let Some(id) = message.request_id() {
                            if self.closed_before(&id).await {
                                debug!(request = %id.short(), "message about a request this node closed before it restarted");
                                return;
                            }
                        }
                        let log_id = message.request_id().filter(|_| message.is_syncable());
                        self.feed(Input::Message { from, message }).await;
                        // Logged for sync answers once the node tracks the request: messages
                        // about requests nobody made (orphans) fill no log.
                        if let Some(id) = log_id {
                            if self.coordinator.tracks(&id) {
                                self.sync_log.record(id, bytes);
                            }
                        }
                    }
                }
            }
            Err(e) => {
                self.dropped += 1;
                warn!(error = %e, "dropped incoming message");
            }
        }
    }

    /// Whether `id` is a request this node does not track but closed earlier (before a restart:
    /// closed requests are not reloaded). Its late messages are dropped rather than taken for
    /// a new request, which would compute it again. Answers are cached.
    async fn closed_before(&mut self, id: &RequestId) -> bool {
        if self.coordinator.tracks(id) {
            return false;
        }
        if self.closed.contains(id) {
            return true;
        }
        let closed = matches!(self.store.quorum(id).await, Ok(Some(r)) if r.is_closed());
        if closed {
            if self.closed.len() >= MAX_CLOSED_CACHED {
                self.closed.clear();
            }
            self.closed.insert(*id);
        }
        closed
    }

    async fn on_driver_input(&mut self, input: DriverInput) {
        match input {
            DriverInput::Coordinator(i) => self.feed(i).await,
            DriverInput::ChainRequest(r) => self.feed(Input::LocalRequest(r)).await,
            DriverInput::Sent { peer } => {
                if let Some(n) = self.sending.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        self.sending.remove(&peer);
                    }
                }
            }
            DriverInput::RetrySubmission { request_id } => {
                if self.awaits_signatures(&request_id) {
                    self.submit_to_sinks(request_id).await;
                }
            }
            DriverInput::Submitted {
                request_id,
                sink,
                result,
            } => self.on_submitted(request_id, sink, result).await,
            DriverInput::Reported {
                request_id,
                node,
                sink,
                result,
            } => {
                let _ = self.events.send(NodeEvent::MisbehaviourReported {
                    request_id,
                    node,
                    sink,
                    result,
                });
            }
        }
    }

    pub(super) async fn feed(&mut self, input: Input) {
        let now = self.clock.now_ms();
        let actions = self.coordinator.handle(now, input);
        self.execute(actions).await;
    }

    /// Signs a message and sends it to one peer over the direct channel, in a task beside the
    /// loop: the loop never waits for a peer's acknowledgement. Returns whether the send was
    /// started; it is not when the peer (or all peers together) already have
    /// [`MAX_SENDS_PER_PEER`] ([`MAX_SENDS_IN_FLIGHT`]) sends unacknowledged. Nothing falls
    /// back to a broadcast: what is sent directly concerns the peer alone.
    pub(super) fn send(&mut self, peer: NodeId, message: Message) -> bool {
        let kind = message.kind();
        let in_flight: usize = self.sending.values().sum();
        if self.sending.get(&peer).copied().unwrap_or(0) >= MAX_SENDS_PER_PEER
            || in_flight >= MAX_SENDS_IN_FLIGHT
        {
            debug!(kind, peer = %peer.short(), in_flight, "earlier direct sends still unacknowledged; not sending");
            self.sends_dropped += 1;
            return false;
        }
        let Some(bytes) = self.seal_own(message) else {
            return false;
        };
        *self.sending.entry(peer).or_default() += 1;
        let transport = self.transport.clone();
        let tx = self.jobs_tx.clone();
        self.tasks.spawn(
            async move {
                if let Err(e) = transport.send(&peer, bytes).await {
                    debug!(kind, peer = %peer.short(), error = %e, "direct send failed");
                }
                let _ = tx.send(DriverInput::Sent { peer });
            }
            .in_current_span(),
        );
        true
    }

    pub(super) async fn broadcast(&mut self, message: Message) {
        let kind = message.kind();
        let Some(bytes) = self.seal_own(message) else {
            return;
        };
        if let Err(e) = self.transport.broadcast(bytes).await {
            warn!(kind, error = %e, "broadcast failed");
        }
    }

    /// Signs a message of this node, remembers it (echoes are dropped) and logs it for sync
    /// answers when it belongs to a request.
    fn seal_own(&mut self, message: Message) -> Option<Vec<u8>> {
        let now = self.clock.now_ms();
        let kind = message.kind();
        let log_id = if message.is_syncable() {
            message.request_id()
        } else {
            None
        };
        // Remembered as checked: the transport, which checks what it sends, finds it there.
        match seal_remembered(
            &self.key,
            &self.network_id,
            now,
            message,
            self.inbox.verified_signatures(),
        ) {
            Ok(bytes) => {
                self.inbox.remember_own(&bytes, now);
                if let Some(id) = log_id {
                    self.sync_log.record(id, &bytes);
                }
                Some(bytes)
            }
            Err(e) => {
                error!(kind, error = %e, "could not seal message");
                None
            }
        }
    }

    /// Executes actions in order. Follow-up inputs (own output stored) are fed back at once.
    async fn execute(&mut self, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Broadcast(m) => self.broadcast(m).await,
                Action::Persist(op) => {
                    if let StoreOp::Outcome {
                        request_id,
                        signed: Some(_),
                        ..
                    } = &op
                    {
                        // Before the result is stored: a node that stops after this finds
                        // either an open request (it recomputes it) or a pending submission.
                        self.mark_pending(*request_id).await;
                    }
                    if let Err(e) = self.store.apply(op).await {
                        error!(error = %e, "store write failed");
                    }
                }
                Action::PersistOwnOutput(own) => {
                    let id = own.request_id;
                    let result = self
                        .store
                        .apply(StoreOp::OwnOutput(own))
                        .await
                        .map_err(|e| e.to_string());
                    let now = self.clock.now_ms();
                    let next = self.coordinator.handle(
                        now,
                        Input::OwnOutputPersisted {
                            request_id: id,
                            result,
                        },
                    );
                    for a in next.into_iter().rev() {
                        queue.push_front(a);
                    }
                }
                Action::Generate(job) => {
                    let Some(engine) = self.engine.clone() else {
                        continue;
                    };
                    let tx = self.jobs_tx.clone();
                    let id = job.request_id;
                    let left = job.deadline_ms.saturating_sub(self.clock.now_ms());
                    let span = info_span!("generate", request = %id.short(), model = %job.model);
                    self.tasks.spawn(
                        async move {
                            let result = match tokio::time::timeout(
                                Duration::from_millis(left),
                                engine.generate(job),
                            )
                            .await
                            {
                                Ok(r) => r,
                                Err(_) => Err(EngineError::DeadlineExceeded),
                            };
                            let _ = tx.send(DriverInput::Coordinator(Input::Generated {
                                request_id: id,
                                result,
                            }));
                        }
                        .instrument(span),
                    );
                }
                Action::Embed {
                    request_id,
                    purpose,
                    text,
                } => {
                    let Some(embedder) = self.embedder.clone() else {
                        continue;
                    };
                    let tx = self.jobs_tx.clone();
                    let span = info_span!("embed", request = %request_id.short());
                    self.tasks.spawn(
                        async move {
                            let result = embedder
                                .embed_binary(vec![text])
                                .await
                                .and_then(|mut v| v.pop().ok_or(EmbedError::Empty));
                            let _ = tx.send(DriverInput::Coordinator(Input::Embedded {
                                request_id,
                                purpose,
                                result,
                            }));
                        }
                        .instrument(span),
                    );
                }
                Action::Score {
                    node,
                    commitment,
                    job,
                } => {
                    let engine = self.engine.clone();
                    let tx = self.jobs_tx.clone();
                    let request_id = job.request_id;
                    let span =
                        info_span!("score", request = %request_id.short(), node = %node.short());
                    self.tasks.spawn(
                        async move {
                            let result = match engine {
                                Some(engine) => engine.score(job).await,
                                None => Err(crate::EngineError::Unsupported(
                                    "this node has no engine".into(),
                                )),
                            };
                            let _ = tx.send(DriverInput::Coordinator(Input::Scored {
                                request_id,
                                node,
                                commitment,
                                result,
                            }));
                        }
                        .instrument(span),
                    );
                }
                Action::RequestSync { peer, request_id } => self.ask_sync(peer, request_id),
                Action::Report(evidence) => self.report_to_sinks(*evidence),
                Action::Emit(ev) => {
                    match &ev {
                        NodeEvent::PeerResult { request_id, result } => {
                            self.peer_results
                                .entry(*request_id)
                                .or_default()
                                .push((**result).clone());
                            if self.awaits_signatures(request_id) {
                                self.submit_to_sinks(*request_id).await;
                            }
                        }
                        // A request with a committee goes to the sinks once certified (with
                        // the certificate's signatures); in an open network, once completed.
                        NodeEvent::Completed { request_id, .. }
                            if self.coordinator.certificate(request_id).is_some()
                                || self
                                    .coordinator
                                    .status(request_id)
                                    .is_some_and(|s| s.committee.is_none()) =>
                        {
                            self.submit_to_sinks(*request_id).await
                        }
                        NodeEvent::Certified { request_id, .. } => {
                            self.submit_to_sinks(*request_id).await
                        }
                        _ => {}
                    }
                    let _ = self.events.send(ev);
                }
            }
        }
    }
}
