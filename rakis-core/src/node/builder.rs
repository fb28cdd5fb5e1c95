//! [`NodeBuilder`]: assembles a node from parts and checks the combination.

use std::sync::Arc;

use tracing::warn;

use super::config::{NodeConfig, DEFAULT_NETWORK_ID};
use super::driver::{Driver, Parts};
use super::error::{ConfigError, NodeError};
use super::Node;
use crate::chain::{ChainSink, RequestSource};
use crate::clock::{Clock, SystemClock};
use crate::coordinator::{Coordinator, CoordinatorConfig};
use crate::embedder::Embedder;
use crate::engine::InferenceEngine;
use crate::identity::NodeKey;
use crate::membership::Membership;
use crate::store::{CommitStore, MemoryStore};
use crate::transport::Transport;

/// Assembles a node from parts. See the crate docs for an example.
///
/// Every part is taken as `impl Trait`: a part shared with other nodes or with the host is
/// given as an `Arc` (the traits are implemented for `Arc<T>` and `&T`).
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
    membership: Option<MembershipChoice>,
}

/// Who may answer the requests a node takes part in.
#[derive(Clone)]
enum MembershipChoice {
    Members(Arc<dyn Membership>),
    Open,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("config", &self.config)
            .field("transport", &self.transport.is_some())
            .field("engine", &self.engine.as_ref().map(|e| e.models()))
            .field("embedder", &self.embedder.as_ref().map(|e| e.model()))
            .field("store", &self.store.is_some())
            .field(
                "sinks",
                &self.sinks.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("sources", &self.sources.len())
            .field(
                "membership",
                &match &self.membership {
                    None => "unset".to_string(),
                    Some(MembershipChoice::Open) => "open network".to_string(),
                    Some(MembershipChoice::Members(m)) => format!("{m:?}"),
                },
            )
            .finish()
    }
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
            membership: None,
        }
    }
}

impl NodeBuilder {
    /// The node key (default: a fresh random key).
    pub fn key(mut self, key: NodeKey) -> Self {
        self.key = Some(key);
        self
    }
    /// The whole configuration (for example read from a file).
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }
    /// The network id, for transports that are not bound to a network (a libp2p transport is:
    /// the node takes its network from it).
    pub fn network_id(mut self, id: impl Into<String>) -> Self {
        self.config.network_id = Some(id.into());
        self
    }
    /// The transport (required).
    pub fn transport(mut self, t: impl Transport + 'static) -> Self {
        self.transport = Some(Arc::new(t));
        self
    }
    /// The inference engine (optional: without one the node verifies or only observes).
    pub fn engine(mut self, e: impl InferenceEngine + 'static) -> Self {
        self.engine = Some(Arc::new(e));
        self
    }
    /// The embedder (needed to commit and to verify).
    pub fn embedder(mut self, e: impl Embedder + 'static) -> Self {
        self.embedder = Some(Arc::new(e));
        self
    }
    /// The store (default: a volatile [`MemoryStore`]; for a durable node, a
    /// [`RedbStore`](crate::store::redb::RedbStore) on a file, feature `redb`).
    pub fn store(mut self, s: impl CommitStore + 'static) -> Self {
        self.store = Some(Arc::new(s));
        self
    }
    /// Adds a chain sink; results go to every sink.
    pub fn chain_sink(mut self, s: impl ChainSink + 'static) -> Self {
        self.sinks.push(Arc::new(s));
        self
    }
    /// Adds a source of chain-originated requests.
    pub fn request_source(mut self, s: impl RequestSource + 'static) -> Self {
        self.sources.push(Arc::new(s));
        self
    }
    /// Who may answer (required unless [`open_network`](Self::open_network) is chosen): each
    /// request is served by a committee drawn from the membership, only the committee's
    /// commits, reveals and signatures count, and the threshold is computed over the committee.
    /// See [`membership`](crate::membership).
    pub fn membership(mut self, m: impl Membership + 'static) -> Self {
        self.membership = Some(MembershipChoice::Members(Arc::new(m)));
        self
    }
    /// An open network: no membership, every key that commits counts (and the threshold
    /// follows whoever committed). Free keys can then stall every request or win it outright,
    /// and results cannot be certified for light clients: for tests and closed experiments
    /// only, an explicit choice (docs/security.md).
    pub fn open_network(mut self) -> Self {
        self.membership = Some(MembershipChoice::Open);
        self
    }
    /// The clock (default: [`SystemClock`]).
    pub fn clock(mut self, c: impl Clock + 'static) -> Self {
        self.clock = Arc::new(c);
        self
    }
    /// Seeds salts, inference ids and sampling seeds (deterministic tests only).
    #[cfg(feature = "test-utils")]
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// The network id the node will use: the configuration's, else the transport's, else
    /// [`DEFAULT_NETWORK_ID`]; the two must agree when both are given.
    fn resolve_network_id(&self, transport: &dyn Transport) -> Result<String, ConfigError> {
        let id = match (&self.config.network_id, transport.network_id()) {
            (Some(configured), Some(bound)) if *configured != bound => {
                return Err(ConfigError::NetworkMismatch {
                    configured: configured.clone(),
                    transport: bound,
                })
            }
            (Some(id), _) => id.clone(),
            (None, Some(bound)) => bound,
            (None, None) => DEFAULT_NETWORK_ID.to_string(),
        };
        if id.trim().is_empty() {
            return Err(ConfigError::EmptyNetworkId);
        }
        Ok(id)
    }

    /// Validates the combination of parts and settings, and builds the node.
    pub fn build(mut self) -> Result<Node, NodeError> {
        let transport = self.transport.take().ok_or(ConfigError::MissingTransport)?;
        let network_id = self.resolve_network_id(transport.as_ref())?;
        if let Some(engine) = &self.engine {
            if self.embedder.is_none() {
                return Err(ConfigError::EngineWithoutEmbedder.into());
            }
            if engine.workers() == 0 {
                return Err(ConfigError::NoWorkers.into());
            }
            if engine.models().is_empty() {
                return Err(ConfigError::NoModels.into());
            }
        }
        if let Some(e) = &self.embedder {
            if e.dim() == 0 || e.model().trim().is_empty() {
                return Err(ConfigError::BadEmbedder.into());
            }
        }
        if self.config.retention.is_some_and(|r| r.interval.is_zero()) {
            return Err(ConfigError::Invalid {
                field: "retention.interval",
                reason: "must not be zero",
            }
            .into());
        }
        if self.config.max_open_per_requester == 0 {
            return Err(ConfigError::Invalid {
                field: "max_open_per_requester",
                reason: "must be at least 1",
            }
            .into());
        }
        if self.config.max_state_bytes < 1024 * 1024 {
            return Err(ConfigError::Invalid {
                field: "max_state_bytes",
                reason: "must be at least 1 MiB",
            }
            .into());
        }
        if self.config.max_request_time.is_zero() {
            return Err(ConfigError::Invalid {
                field: "max_request_time",
                reason: "must not be zero",
            }
            .into());
        }
        if self.config.max_open_requests == 0 {
            return Err(ConfigError::Invalid {
                field: "max_open_requests",
                reason: "must be at least 1",
            }
            .into());
        }
        if self.config.status_interval.is_some_and(|i| i.is_zero()) {
            return Err(ConfigError::Invalid {
                field: "status_interval",
                reason: "must not be zero (leave it out for no announcements)",
            }
            .into());
        }
        let membership = match self.membership.take() {
            None => return Err(ConfigError::NoMembership.into()),
            Some(MembershipChoice::Open) => None,
            Some(MembershipChoice::Members(m)) => Some(m),
        };
        let key = self.key.unwrap_or_else(NodeKey::generate);
        let store: Arc<dyn CommitStore> = match self.store {
            Some(s) => s,
            None => {
                warn!("no store configured: node state is volatile");
                Arc::new(MemoryStore::new())
            }
        };
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let cconfig = CoordinatorConfig {
            network_id: network_id.clone(),
            served_models: self.engine.as_ref().map(|e| e.models()).unwrap_or_default(),
            model_weights: self
                .engine
                .as_ref()
                .map(|e| {
                    e.models()
                        .into_iter()
                        .filter_map(|m| e.weights(&m).map(|w| (m, w)))
                        .collect()
                })
                .unwrap_or_default(),
            workers: self.engine.as_ref().map(|e| e.workers()).unwrap_or(0),
            embedding_model: self.embedder.as_ref().map(|e| e.model()),
            reveal_window_ms: ms(self.config.reveal_window),
            verify_grace_ms: ms(self.config.verify_grace),
            reconcile_window_ms: ms(self.config.reconcile_window),
            initial_generation_estimate_ms: ms(self.config.initial_generation_estimate),
            reembed_tolerance_bits: self.config.reembed_tolerance_bits,
            sampling_policy: self.config.sampling_policy,
            max_open_requests: self.config.max_open_requests,
            max_open_per_requester: self.config.max_open_per_requester,
            max_request_time_ms: ms(self.config.max_request_time),
            max_state_bytes: self.config.max_state_bytes,
        };
        let mut coordinator = match self.rng_seed {
            Some(seed) => Coordinator::with_rng_seed(key.clone(), cconfig, seed),
            None => Coordinator::new(key.clone(), cconfig),
        };
        if let Some(m) = membership {
            coordinator = coordinator.with_membership(m);
        }
        self.config.network_id = Some(network_id.clone());
        let (handle, driver) = Driver::new(Parts {
            key,
            network_id,
            config: self.config,
            coordinator,
            transport,
            engine: self.engine,
            embedder: self.embedder,
            store,
            sinks: self.sinks,
            sources: self.sources,
            clock: self.clock,
        });
        Ok(Node { handle, driver })
    }
}
