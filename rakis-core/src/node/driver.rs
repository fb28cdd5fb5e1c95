//! Node assembly: the builder, the cloneable handle and the async driver around the
//! [`Coordinator`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// How long after a sink asked for more signatures the node submits again (it also does as
/// soon as another node's matching result arrives).
pub const SIGNATURE_RETRY: Duration = Duration::from_secs(1);
/// How many times a sink may ask for more signatures before the submission is given up.
pub const MAX_SIGNATURE_RETRIES: u32 = 300;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::clock::{Clock, SystemClock};
use crate::coordinator::{Action, Coordinator, CoordinatorConfig, Input, KnownPeer, QuorumStatus};
use crate::envelope::{seal, Inbox, DEFAULT_MAX_CLOCK_SKEW_MS};
use crate::error::{EngineError, NodeError, StoreError};
use crate::events::NodeEvent;
use crate::identity::NodeKey;
use crate::protocol::{ConsensusResultMsg, InferenceRequest, Message};
use crate::store::{MemoryStore, StoreOp, SubmissionState};
use crate::traits::{
    ChainSink, CommitStore, Embedder, InferenceEngine, RequestSource, Transport, TransportEvent,
};
use crate::{ConsensusOutcome, NodeId, RequestId};

/// Network-wide and node-local settings.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The network's id: messages of other networks are dropped.
    pub network_id: String,
    /// Reveal window after each deadline (all nodes of a network should agree on it).
    pub reveal_window: Duration,
    /// Time allowed for re-embeddings after the reveal window.
    pub verify_grace: Duration,
    /// Largest accepted difference between a message's timestamp and the local clock.
    pub max_clock_skew: Duration,
    /// How often the node announces its status to peers (`None`: never).
    pub status_interval: Option<Duration>,
    /// Capacity of the event channel (slow subscribers miss events past it).
    pub event_capacity: usize,
    /// Re-embedding tolerance override in bits.
    pub reembed_tolerance_bits: Option<u32>,
    /// Expected generation time before any was measured.
    pub initial_generation_estimate: Duration,
    /// How long closed requests are kept in the store (`None`: for ever).
    pub retention: Option<Retention>,
}

/// Retention policy of the node's store: closed (completed or failed) requests whose deadline
/// is older than `max_age` are deleted, checked every `interval` (and once at start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Age, counted from the request's deadline, after which a closed request is deleted.
    pub max_age: Duration,
    /// How often the store is pruned.
    pub interval: Duration,
}

impl Default for Retention {
    /// Seven days, pruned hourly.
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(7 * 24 * 3600),
            interval: Duration::from_secs(3600),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            network_id: "rakis-mainnet".into(),
            reveal_window: Duration::from_millis(crate::coordinator::DEFAULT_REVEAL_WINDOW_MS),
            verify_grace: Duration::from_millis(crate::coordinator::DEFAULT_VERIFY_GRACE_MS),
            max_clock_skew: Duration::from_millis(DEFAULT_MAX_CLOCK_SKEW_MS),
            status_interval: Some(Duration::from_secs(30)),
            event_capacity: 1024,
            reembed_tolerance_bits: None,
            initial_generation_estimate: Duration::ZERO,
            retention: Some(Retention::default()),
        }
    }
}

/// Assembles a node from parts. See the crate docs for an example.
pub struct NodeBuilder {
    key: Option<NodeKey>,
    config: NodeConfig,
    transport: Option<Arc<dyn Transport>>,
    engine: Option<Arc<dyn InferenceEngine>>,
    embedder: Option<Arc<dyn Embedder>>,
    store: Option<Arc<dyn CommitStore>>,
    sinks: Vec<Arc<dyn ChainSink>>,
    sources: Vec<Arc<dyn RequestSource>>,
    clock: Arc<dyn Clock>,
    rng_seed: Option<u64>,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        NodeBuilder {
            key: None,
            config: NodeConfig::default(),
            transport: None,
            engine: None,
            embedder: None,
            store: None,
            sinks: Vec::new(),
            sources: Vec::new(),
            clock: Arc::new(SystemClock),
            rng_seed: None,
        }
    }
}

impl NodeBuilder {
    /// The node key (default: a fresh random key).
    pub fn key(mut self, key: NodeKey) -> Self {
        self.key = Some(key);
        self
    }
    /// The whole configuration.
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }
    /// The network id.
    pub fn network_id(mut self, id: impl Into<String>) -> Self {
        self.config.network_id = id.into();
        self
    }
    /// The transport (required).
    pub fn transport(mut self, t: impl Transport + 'static) -> Self {
        self.transport = Some(Arc::new(t));
        self
    }
    /// The transport, already shared.
    pub fn transport_arc(mut self, t: Arc<dyn Transport>) -> Self {
        self.transport = Some(t);
        self
    }
    /// The inference engine (optional: without one the node verifies or only observes).
    pub fn engine(mut self, e: impl InferenceEngine + 'static) -> Self {
        self.engine = Some(Arc::new(e));
        self
    }
    /// The inference engine, already shared.
    pub fn engine_arc(mut self, e: Arc<dyn InferenceEngine>) -> Self {
        self.engine = Some(e);
        self
    }
    /// The embedder (needed to commit and to verify).
    pub fn embedder(mut self, e: impl Embedder + 'static) -> Self {
        self.embedder = Some(Arc::new(e));
        self
    }
    /// The embedder, already shared.
    pub fn embedder_arc(mut self, e: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(e);
        self
    }
    /// The store (default: a volatile [`MemoryStore`]; for a durable node, a
    /// [`RedbStore`](crate::store::redb::RedbStore) on a file, feature `redb`).
    pub fn store(mut self, s: impl CommitStore + 'static) -> Self {
        self.store = Some(Arc::new(s));
        self
    }
    /// The store, already shared.
    pub fn store_arc(mut self, s: Arc<dyn CommitStore>) -> Self {
        self.store = Some(s);
        self
    }
    /// Adds a chain sink; results go to every sink.
    pub fn chain_sink(mut self, s: impl ChainSink + 'static) -> Self {
        self.sinks.push(Arc::new(s));
        self
    }
    /// Adds a shared chain sink.
    pub fn chain_sink_arc(mut self, s: Arc<dyn ChainSink>) -> Self {
        self.sinks.push(s);
        self
    }
    /// Adds a source of chain-originated requests.
    pub fn request_source(mut self, s: impl RequestSource + 'static) -> Self {
        self.sources.push(Arc::new(s));
        self
    }
    /// Adds a shared source of chain-originated requests.
    pub fn request_source_arc(mut self, s: Arc<dyn RequestSource>) -> Self {
        self.sources.push(s);
        self
    }
    /// The clock (default: [`SystemClock`]).
    pub fn clock(mut self, c: impl Clock + 'static) -> Self {
        self.clock = Arc::new(c);
        self
    }
    /// Seeds salts, inference ids and sampling seeds (deterministic tests only).
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// Validates the combination of parts and builds the node.
    pub fn build(self) -> Result<Node, NodeError> {
        let transport = self
            .transport
            .ok_or_else(|| NodeError::Config("a transport is required".into()))?;
        if self.config.network_id.trim().is_empty() {
            return Err(NodeError::Config("network id is empty".into()));
        }
        if let Some(engine) = &self.engine {
            if self.embedder.is_none() {
                return Err(NodeError::Config(
                    "an engine without an embedder cannot commit: add an embedder".into(),
                ));
            }
            if engine.workers() == 0 {
                return Err(NodeError::Config("the engine has no workers".into()));
            }
            if engine.models().is_empty() {
                return Err(NodeError::Config("the engine serves no model".into()));
            }
        }
        if let Some(r) = &self.config.retention {
            if r.interval.is_zero() {
                return Err(NodeError::Config(
                    "the retention interval must not be zero".into(),
                ));
            }
        }
        if let Some(e) = &self.embedder {
            if e.dim() == 0 || e.model().trim().is_empty() {
                return Err(NodeError::Config(
                    "the embedder has no dimension or no model name".into(),
                ));
            }
        }
        let key = self.key.unwrap_or_else(NodeKey::generate);
        let store: Arc<dyn CommitStore> = match self.store {
            Some(s) => s,
            None => {
                warn!("no store configured: node state is volatile");
                Arc::new(MemoryStore::new())
            }
        };
        let cconfig = CoordinatorConfig {
            served_models: self.engine.as_ref().map(|e| e.models()).unwrap_or_default(),
            workers: self.engine.as_ref().map(|e| e.workers()).unwrap_or(0),
            embedding_model: self.embedder.as_ref().map(|e| e.model()),
            reveal_window_ms: self.config.reveal_window.as_millis() as u64,
            verify_grace_ms: self.config.verify_grace.as_millis() as u64,
            initial_generation_estimate_ms: self.config.initial_generation_estimate.as_millis()
                as u64,
            reembed_tolerance_bits: self.config.reembed_tolerance_bits,
            ..CoordinatorConfig::default()
        };
        let coordinator = match self.rng_seed {
            Some(seed) => Coordinator::with_rng_seed(key.clone(), cconfig, seed),
            None => Coordinator::new(key.clone(), cconfig),
        };
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let (events_tx, _) = broadcast::channel(self.config.event_capacity.max(16));
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let handle = NodeHandle {
            node: key.node_id(),
            commands: commands_tx,
            events: events_tx.clone(),
            clock: self.clock.clone(),
        };
        let driver = Driver {
            inbox: Inbox::new(
                self.config.network_id.clone(),
                self.config.max_clock_skew.as_millis() as u64,
            ),
            key,
            config: self.config,
            coordinator,
            transport,
            engine: self.engine,
            embedder: self.embedder,
            store,
            sinks: self.sinks,
            sources: self.sources,
            clock: self.clock,
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
        };
        Ok(Node { handle, driver })
    }
}

/// An assembled node: a handle plus the driver that must be run.
pub struct Node {
    handle: NodeHandle,
    driver: Driver,
}

impl Node {
    /// Starts building a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// A handle to the node (cloneable).
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Runs the node until [`NodeHandle::shutdown`] or until every handle is dropped.
    ///
    /// It first recovers from the store: open requests are restored (see
    /// [`Coordinator::restore`]) and results still pending on a chain sink are submitted to the
    /// sinks that have not got them.
    pub async fn run(self) {
        self.driver.run().await
    }

    /// Spawns the driver on the current tokio runtime and returns the handle and its task.
    pub fn spawn(self) -> (NodeHandle, tokio::task::JoinHandle<()>) {
        let handle = self.handle.clone();
        let task = tokio::spawn(self.driver.run());
        (handle, task)
    }
}

enum Command {
    Submit(
        InferenceRequest,
        oneshot::Sender<Result<RequestId, NodeError>>,
    ),
    Status(RequestId, oneshot::Sender<Option<QuorumStatus>>),
    Requests(oneshot::Sender<Vec<RequestId>>),
    Peers(oneshot::Sender<BTreeMap<NodeId, KnownPeer>>),
    Stats(oneshot::Sender<NodeStats>),
    Shutdown(oneshot::Sender<()>),
}

/// Counters of a running node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Requests tracked.
    pub requests: usize,
    /// Incoming messages dropped before use (bad signature, network, size, replay...).
    pub dropped_messages: u64,
}

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    node: NodeId,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<NodeEvent>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeHandle({})", self.node.short())
    }
}

impl NodeHandle {
    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The node's clock reading (ms since epoch).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::ShutDown)?;
        rx.await.map_err(|_| NodeError::ShutDown)
    }

    /// Submits a request: validated, broadcast to the network and handled locally.
    pub async fn submit(&self, request: InferenceRequest) -> Result<RequestId, NodeError> {
        self.ask(|tx| Command::Submit(request, tx)).await?
    }

    /// Builds a request from this node with default settings and the given prompt, then
    /// submits it.
    pub async fn submit_prompt(
        &self,
        prompt: &str,
        accepted_models: Vec<String>,
    ) -> Result<RequestId, NodeError> {
        let request = InferenceRequest::new(prompt, accepted_models, self.node, self.now_ms());
        self.submit(request).await
    }

    /// Status of one request. A request that closed before the node restarted is read from the
    /// store.
    pub async fn status(&self, id: RequestId) -> Result<Option<QuorumStatus>, NodeError> {
        self.ask(|tx| Command::Status(id, tx)).await
    }

    /// The outcome of a request, once computed.
    pub async fn outcome(&self, id: RequestId) -> Result<Option<Arc<ConsensusOutcome>>, NodeError> {
        Ok(self.status(id).await?.and_then(|s| s.outcome))
    }

    /// Ids of the requests the node tracks.
    pub async fn requests(&self) -> Result<Vec<RequestId>, NodeError> {
        self.ask(Command::Requests).await
    }

    /// Peers that announced their status.
    pub async fn peers(&self) -> Result<BTreeMap<NodeId, KnownPeer>, NodeError> {
        self.ask(Command::Peers).await
    }

    /// Counters.
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        self.ask(Command::Stats).await
    }

    /// A new subscription to the node's events.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Waits until the request completes (returns its outcome) or fails (returns
    /// [`NodeError::RequestFailed`]), at most `timeout` (tokio time).
    pub async fn wait_for_outcome(
        &self,
        id: RequestId,
        timeout: Duration,
    ) -> Result<Arc<ConsensusOutcome>, NodeError> {
        let mut events = self.subscribe();
        if let Some(s) = self.status(id).await? {
            if let Some(o) = s.outcome {
                if o.selected().is_some() {
                    return Ok(o);
                }
            }
            if let crate::coordinator::Phase::Failed(f) = s.phase {
                return Err(NodeError::RequestFailed(f.to_string()));
            }
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Completed {
                        request_id,
                        outcome,
                    }) if request_id == id => return Ok(outcome),
                    Ok(NodeEvent::Failed { request_id, reason }) if request_id == id => {
                        return Err(NodeError::RequestFailed(reason.to_string()))
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(s) = self.status(id).await? {
                            if let Some(o) = s.outcome {
                                return Ok(o);
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(NodeError::ShutDown),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| NodeError::Timeout)?
    }

    /// Waits for the first signed result of another node (for nodes that do not verify).
    pub async fn wait_for_peer_result(
        &self,
        id: RequestId,
        timeout: Duration,
    ) -> Result<Arc<ConsensusResultMsg>, NodeError> {
        let mut events = self.subscribe();
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::PeerResult { request_id, result }) if request_id == id => {
                        return Ok(result)
                    }
                    Ok(NodeEvent::Failed { request_id, reason }) if request_id == id => {
                        return Err(NodeError::RequestFailed(reason.to_string()))
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(NodeError::ShutDown),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| NodeError::Timeout)?
    }

    /// Stops the node gracefully: pending writes finish, then the driver returns.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.ask(Command::Shutdown).await
    }
}

struct Driver {
    key: NodeKey,
    config: NodeConfig,
    coordinator: Coordinator,
    inbox: Inbox,
    transport: Arc<dyn Transport>,
    engine: Option<Arc<dyn InferenceEngine>>,
    embedder: Option<Arc<dyn Embedder>>,
    store: Arc<dyn CommitStore>,
    sinks: Vec<Arc<dyn ChainSink>>,
    sources: Vec<Arc<dyn RequestSource>>,
    clock: Arc<dyn Clock>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<NodeEvent>,
    jobs_tx: mpsc::UnboundedSender<DriverInput>,
    jobs_rx: mpsc::UnboundedReceiver<DriverInput>,
    peer_results: BTreeMap<RequestId, Vec<ConsensusResultMsg>>,
    /// Submissions started in this run and not finished: (request, sink name).
    submitting: BTreeSet<(RequestId, String)>,
    /// Submissions a sink refused for too few signatures, retried as attestations arrive and
    /// every [`SIGNATURE_RETRY`]: how many times each was refused.
    awaiting_signatures: BTreeMap<(RequestId, String), u32>,
    dropped: u64,
    /// Original wire bytes of the request, commits, reveals and results seen per request, to
    /// answer sync requests of peers that joined late or were cut off.
    sync_log: SyncLog,
    /// When this node last answered a sync request, per (peer, request).
    sync_answered: BTreeMap<(NodeId, RequestId), u64>,
}

/// Bounded log of wire messages per request.
#[derive(Default)]
struct SyncLog {
    entries: std::collections::HashMap<RequestId, Vec<Vec<u8>>>,
    order: std::collections::VecDeque<RequestId>,
}

impl SyncLog {
    const MAX_REQUESTS: usize = 1_024;
    const MAX_PER_REQUEST: usize = 512;

    fn record(&mut self, id: RequestId, bytes: &[u8]) {
        if !self.entries.contains_key(&id) {
            if self.order.len() >= Self::MAX_REQUESTS {
                if let Some(old) = self.order.pop_front() {
                    self.entries.remove(&old);
                }
            }
            self.order.push_back(id);
        }
        let list = self.entries.entry(id).or_default();
        if list.len() < Self::MAX_PER_REQUEST && !list.iter().any(|b| b == bytes) {
            list.push(bytes.to_vec());
        }
    }

    /// Messages for `id`, as many as fit in one wire message.
    fn response(&self, id: &RequestId) -> Vec<Vec<u8>> {
        let budget = crate::envelope::MAX_MESSAGE_SIZE - 16 * 1024;
        let mut used = 0;
        let mut out = Vec::new();
        for b in self.entries.get(id).into_iter().flatten() {
            if used + b.len() + 8 > budget {
                break;
            }
            used += b.len() + 8;
            out.push(b.clone());
        }
        out
    }
}

/// Whether a message kind belongs in the sync log.
fn syncable(m: &Message) -> bool {
    matches!(
        m,
        Message::Request(_) | Message::Commit(_) | Message::Reveal(_) | Message::ConsensusResult(_)
    )
}

enum DriverInput {
    Coordinator(Input),
    ChainRequest(InferenceRequest),
    Submitted {
        request_id: RequestId,
        sink: String,
        result: Result<String, crate::error::ChainError>,
    },
    RetrySubmission {
        request_id: RequestId,
    },
}

impl Driver {
    async fn run(mut self) {
        let node = self.coordinator.node_id();
        let span = info_span!("node", id = %node.short());
        async move {
            info!(network = %self.config.network_id, "node starting");
            self.recover().await;
            let mut incoming = self.transport.events();
            // Readers of the request sources: they end with the node (aborted below).
            let mut readers = Vec::new();
            for source in &self.sources {
                let mut stream = source.requests();
                let tx = self.jobs_tx.clone();
                readers.push(tokio::spawn(async move {
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
                }));
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
                }
            }
            for reader in readers {
                reader.abort();
            }
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

    /// Applies the retention policy in the background (the store may take a while).
    fn prune(&self) {
        let Some(retention) = self.config.retention else {
            return;
        };
        let max_age = u64::try_from(retention.max_age.as_millis()).unwrap_or(u64::MAX);
        let before = self.clock.now_ms().saturating_sub(max_age);
        let store = self.store.clone();
        tokio::spawn(
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
                    Ok(()) if self.clock.now_ms() > request.deadline_ms() => Err(
                        NodeError::InvalidRequest("the request's deadline has passed".into()),
                    ),
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
                    Message::SyncRequest { request_id } => {
                        self.answer_sync(from, request_id, now).await
                    }
                    Message::SyncResponse {
                        request_id,
                        envelopes,
                    } => {
                        self.on_sync_response(from, request_id, envelopes, now)
                            .await
                    }
                    message => {
                        if let (true, Some(id)) = (syncable(&message), message.request_id()) {
                            self.sync_log.record(id, bytes);
                        }
                        self.feed(Input::Message { from, message }).await;
                    }
                }
            }
            Err(e) => {
                self.dropped += 1;
                warn!(error = %e, "dropped incoming message");
            }
        }
    }

    async fn on_driver_input(&mut self, input: DriverInput) {
        match input {
            DriverInput::Coordinator(i) => self.feed(i).await,
            DriverInput::ChainRequest(r) => self.feed(Input::LocalRequest(r)).await,
            DriverInput::RetrySubmission { request_id } => {
                if self.awaits_signatures(&request_id) {
                    self.submit_to_sinks(request_id).await;
                }
            }
            DriverInput::Submitted {
                request_id,
                sink,
                result,
            } => {
                self.submitting.remove(&(request_id, sink.clone()));
                if let Err(crate::error::ChainError::NotEnoughSignatures { have, need }) = &result {
                    let refusals = self
                        .awaiting_signatures
                        .remove(&(request_id, sink.clone()))
                        .unwrap_or(0)
                        + 1;
                    if refusals < MAX_SIGNATURE_RETRIES {
                        // Still pending: submitted again when another matching result arrives,
                        // or after a while (a sink may settle for fewer once it has waited).
                        debug!(request = %request_id.short(), %sink, have, need, "waiting for more signatures");
                        self.awaiting_signatures
                            .insert((request_id, sink), refusals);
                        let tx = self.jobs_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(SIGNATURE_RETRY).await;
                            let _ = tx.send(DriverInput::RetrySubmission { request_id });
                        });
                        return;
                    }
                    warn!(request = %request_id.short(), %sink, have, need, "gave up waiting for signatures");
                }
                self.awaiting_signatures.remove(&(request_id, sink.clone()));
                let state = match &result {
                    Ok(r) => SubmissionState::Submitted(r.clone()),
                    Err(e) => SubmissionState::Failed(e.to_string()),
                };
                if let Err(e) = self
                    .store
                    .apply(StoreOp::Submission {
                        request_id,
                        sink: sink.clone(),
                        state,
                    })
                    .await
                {
                    error!(error = %e, "could not store submission state");
                }
                let ev = match result {
                    Ok(reference) => NodeEvent::Submitted {
                        request_id,
                        sink,
                        reference,
                    },
                    Err(error) => NodeEvent::SubmitFailed {
                        request_id,
                        sink,
                        error: error.to_string(),
                    },
                };
                let _ = self.events.send(ev);
            }
        }
    }

    async fn feed(&mut self, input: Input) {
        let now = self.clock.now_ms();
        let actions = self.coordinator.handle(now, input);
        self.execute(actions).await;
    }

    /// Answers a peer's sync request with the wire messages logged for the request (at most
    /// once per [`SYNC_RETRY_MS`](crate::coordinator::SYNC_RETRY_MS) per peer and request).
    async fn answer_sync(&mut self, peer: NodeId, id: RequestId, now: u64) {
        let key = (peer, id);
        if let Some(last) = self.sync_answered.get(&key) {
            if now < last.saturating_add(crate::coordinator::SYNC_RETRY_MS) {
                return;
            }
        }
        let envelopes = self.sync_log.response(&id);
        if envelopes.is_empty() {
            return;
        }
        if self.sync_answered.len() >= 4_096 {
            self.sync_answered.clear();
        }
        self.sync_answered.insert(key, now);
        debug!(request = %id.short(), peer = %peer.short(), messages = envelopes.len(), "answering a sync request");
        self.send(
            peer,
            Message::SyncResponse {
                request_id: id,
                envelopes,
            },
        )
        .await;
    }

    /// Verifies each relayed message on its own signature and feeds them as one batch.
    async fn on_sync_response(
        &mut self,
        from: NodeId,
        id: RequestId,
        envelopes: Vec<Vec<u8>>,
        now: u64,
    ) {
        let mut batch = Vec::new();
        for bytes in envelopes.iter().take(SyncLog::MAX_PER_REQUEST) {
            match self.inbox.accept_relayed(bytes, now) {
                Ok(v)
                    if v.envelope.message.request_id() == Some(id)
                        && syncable(&v.envelope.message) =>
                {
                    self.sync_log.record(id, bytes);
                    batch.push(crate::coordinator::SyncedMessage {
                        from: v.envelope.sender,
                        message: v.envelope.message,
                        sent_at_ms: v.envelope.timestamp_ms,
                    });
                }
                Ok(_) => {
                    self.dropped += 1;
                    warn!(peer = %from.short(), "sync response relayed a message of another request or kind");
                }
                Err(crate::error::EnvelopeError::Duplicate) => {}
                Err(e) => {
                    self.dropped += 1;
                    warn!(peer = %from.short(), error = %e, "sync response relayed an invalid message");
                }
            }
        }
        debug!(request = %id.short(), peer = %from.short(), relayed = batch.len(), "sync response");
        if !batch.is_empty() {
            self.feed(Input::Synced(batch)).await;
        }
    }

    /// Signs and sends a message to one peer; falls back to a broadcast when the peer is not
    /// directly reachable.
    async fn send(&mut self, peer: NodeId, message: Message) {
        let kind = message.kind();
        let Some(bytes) = self.seal_own(message) else {
            return;
        };
        if let Err(e) = self.transport.send(&peer, bytes.clone()).await {
            debug!(kind, peer = %peer.short(), error = %e, "direct send failed; broadcasting");
            if let Err(e) = self.transport.broadcast(bytes).await {
                warn!(kind, error = %e, "broadcast failed");
            }
        }
    }

    async fn broadcast(&mut self, message: Message) {
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
        let log_id = if syncable(&message) {
            message.request_id()
        } else {
            None
        };
        match seal(&self.key, &self.config.network_id, now, message) {
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
                    tokio::spawn(
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
                    tokio::spawn(
                        async move {
                            let result = embedder
                                .embed_binary(vec![text])
                                .await
                                .and_then(|mut v| v.pop().ok_or(crate::error::EmbedError::Empty));
                            let _ = tx.send(DriverInput::Coordinator(Input::Embedded {
                                request_id,
                                purpose,
                                result,
                            }));
                        }
                        .instrument(span),
                    );
                }
                Action::RequestSync { peer, request_id } => {
                    self.send(peer, Message::SyncRequest { request_id }).await
                }
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
                        NodeEvent::Completed { request_id, .. } => {
                            self.submit_to_sinks(*request_id).await
                        }
                        _ => {}
                    }
                    let _ = self.events.send(ev);
                }
            }
        }
    }

    /// Records the result of `id` as pending on every sink, before the result itself is stored.
    async fn mark_pending(&mut self, id: RequestId) {
        let Some(request) = self.coordinator.request(&id) else {
            return;
        };
        let sinks: Vec<_> = self
            .sinks
            .iter()
            .filter(|s| s.accepts(request))
            .cloned()
            .collect();
        for sink in &sinks {
            let op = StoreOp::Submission {
                request_id: id,
                sink: sink.name(),
                state: SubmissionState::Pending,
            };
            if let Err(e) = self.store.apply(op).await {
                error!(request = %id.short(), sink = %sink.name(), error = %e, "could not store a pending submission");
            }
        }
    }

    /// Whether some sink waits for more signatures of `id`.
    fn awaits_signatures(&self, id: &RequestId) -> bool {
        self.awaiting_signatures
            .range((*id, String::new())..)
            .next()
            .is_some_and(|((r, _), _)| r == id)
    }

    /// Submits the signed result of `id` to every sink that has not got it: sinks whose stored
    /// state is [`SubmissionState::Submitted`], and submissions already running, are skipped.
    async fn submit_to_sinks(&mut self, id: RequestId) {
        let Some(signed) = self.coordinator.signed_result(&id).cloned() else {
            return;
        };
        let Some(request) = self.coordinator.request(&id).cloned() else {
            return;
        };
        if self.sinks.is_empty() {
            return;
        }
        let states = match self.store.quorum(&id).await {
            Ok(record) => record.map(|r| r.submissions).unwrap_or_default(),
            Err(e) => {
                // Sinks are idempotent: submitting again is safe, only wasteful.
                warn!(request = %id.short(), error = %e, "could not read submission states; submitting to every sink");
                BTreeMap::new()
            }
        };
        let attestations: Vec<ConsensusResultMsg> = self
            .peer_results
            .get(&id)
            .map(|v| {
                v.iter()
                    .filter(|r| r.result_digest == signed.result_digest)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let sinks: Vec<Arc<dyn ChainSink>> = self
            .sinks
            .iter()
            .filter(|sink| {
                if !sink.accepts(&request) {
                    return false;
                }
                let name = sink.name();
                if let Some(SubmissionState::Submitted(reference)) = states.get(&name) {
                    debug!(request = %id.short(), sink = %name, %reference, "result already submitted; skipped");
                    return false;
                }
                self.submitting.insert((id, name))
            })
            .cloned()
            .collect();
        for sink in sinks {
            let tx = self.jobs_tx.clone();
            let signed = signed.clone();
            let attestations = attestations.clone();
            let request = request.clone();
            let span = info_span!("submit", request = %id.short(), sink = %sink.name());
            tokio::spawn(
                async move {
                    let name = sink.name();
                    let result = match sink.is_submitted(&id).await {
                        Ok(true) => Ok("already submitted".to_string()),
                        _ => match sink.submit(&request, &signed, &attestations).await {
                            Ok(r) => Ok(r.reference),
                            Err(crate::error::ChainError::AlreadySubmitted) => {
                                Ok("already submitted".to_string())
                            }
                            Err(e) => Err(e),
                        },
                    };
                    let _ = tx.send(DriverInput::Submitted {
                        request_id: id,
                        sink: name,
                        result,
                    });
                }
                .instrument(span),
            );
        }
    }
}
