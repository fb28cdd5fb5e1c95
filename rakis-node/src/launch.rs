//! From a [`RakisConfig`] to a running node with the real parts: the key file, the candle
//! models, libp2p, the redb store, the chains or ledger, and the gateway with its metrics and
//! status page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rakis_core::membership::Membership;
use rakis_core::{
    Embedder, IdentityError, InferenceEngine, Node, NodeError, NodeEvent, NodeHandle, NodeKey,
    RedbStore, StoreError,
};
use rakis_inference::{CandleEmbedder, CandleEngine, InferenceError};
use rakis_net::{Libp2pTransport, NetError};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::config::{ConfigFileError, RakisConfig};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::status::{PeerRow, StatusBoard};

/// What a launch reports while it works (models take seconds to load).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Progress {
    /// The key is loaded.
    Key {
        /// The node's id.
        node: rakis_core::NodeId,
    },
    /// A model is being loaded.
    LoadingModel {
        /// Its name.
        name: String,
    },
    /// A model is ready.
    ModelReady {
        /// Its name.
        name: String,
        /// How long it took.
        took: Duration,
    },
    /// The transport listens.
    Listening {
        /// Its addresses, with the peer id.
        addresses: Vec<String>,
    },
}

/// A running node and what serves it.
pub struct Launched {
    /// The node.
    pub handle: NodeHandle,
    /// Its driver (returns when the node shut down).
    pub task: JoinHandle<()>,
    /// Its libp2p transport.
    pub transport: Arc<Libp2pTransport>,
    /// The gateway in front of it.
    pub gateway: Gateway,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// Its status page's board.
    pub status: Arc<StatusBoard>,
    observer: JoinHandle<()>,
}

impl std::fmt::Debug for Launched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launched")
            .field("node", &self.handle.node_id())
            .finish_non_exhaustive()
    }
}

impl Launched {
    /// Stops the node gracefully: pending store and chain writes finish (open requests stay in
    /// the store and are resumed at the next start), then the transport closes.
    pub async fn shutdown(self) -> Result<(), LaunchError> {
        self.observer.abort();
        self.handle.shutdown().await.map_err(LaunchError::Node)?;
        let _ = self.task.await;
        self.transport.shutdown().await.map_err(LaunchError::Net)?;
        Ok(())
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The key file.
    #[error("key file {path}: {source} (create one with `rakis init`)")]
    Key {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: IdentityError,
    },
    /// The passphrase variable is not set.
    #[error("the key file is encrypted: set the environment variable {0}")]
    Passphrase(String),
    /// A model.
    #[error("model {name}: {source}")]
    Model {
        /// Which.
        name: String,
        /// Why.
        #[source]
        source: InferenceError,
    },
    /// The thread loading a model failed.
    #[error("model {name}: the loading thread failed: {message}")]
    Loader {
        /// Which.
        name: String,
        /// What it said.
        message: String,
    },
    /// The network.
    #[error("network: {0}")]
    Net(#[source] NetError),
    /// The store.
    #[error("store: {0}")]
    Store(#[source] StoreError),
    /// Chains or the ledger.
    #[error("chains: {0}")]
    Chain(#[source] rakis_chain::Error),
    /// Assembling or stopping the node.
    #[error("node: {0}")]
    Node(#[source] NodeError),
}

/// Loads model `name` with `load` on a blocking thread, reporting progress around it.
async fn load_model<T: Send + 'static>(
    name: &str,
    progress: &dyn Fn(Progress),
    load: impl FnOnce() -> Result<T, InferenceError> + Send + 'static,
) -> Result<T, LaunchError> {
    progress(Progress::LoadingModel {
        name: name.to_string(),
    });
    let t = Instant::now();
    let model = tokio::task::spawn_blocking(load)
        .await
        .map_err(|e| LaunchError::Loader {
            name: name.to_string(),
            message: e.to_string(),
        })?
        .map_err(|source| LaunchError::Model {
            name: name.to_string(),
            source,
        })?;
    progress(Progress::ModelReady {
        name: name.to_string(),
        took: t.elapsed(),
    });
    Ok(model)
}

/// Loads the key file named by `config`.
pub fn load_key(config: &RakisConfig) -> Result<NodeKey, LaunchError> {
    let passphrase = match &config.key_passphrase_env {
        Some(var) => Some(
            std::env::var(var)
                .ok()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| LaunchError::Passphrase(var.clone()))?,
        ),
        None => None,
    };
    NodeKey::load(&config.key_file, passphrase.as_deref()).map_err(|source| LaunchError::Key {
        path: config.key_file.clone(),
        source,
    })
}

/// Starts the node `config` describes, reporting progress to `progress`.
pub async fn launch(
    config: &RakisConfig,
    progress: impl Fn(Progress),
) -> Result<Launched, LaunchError> {
    let key = load_key(config)?;
    progress(Progress::Key {
        node: key.node_id(),
    });
    let engine: Option<Arc<dyn InferenceEngine>> = match &config.engine {
        Some(section) => {
            let source = section.source()?;
            let file = section.file.clone();
            let engine_config = section.engine_config();
            let engine = load_model(&section.model_name, &progress, move || {
                CandleEngine::load(&source, &file, engine_config)
            })
            .await?;
            Some(Arc::new(engine))
        }
        None => None,
    };
    let embedder: Option<Arc<dyn Embedder>> = match &config.embedder {
        Some(section) => {
            let source = section.source()?;
            let embedder_config = section.embedder_config();
            let embedder = load_model(&section.model_name, &progress, move || {
                CandleEmbedder::load(&source, embedder_config)
            })
            .await?;
            Some(Arc::new(embedder))
        }
        None => None,
    };
    let transport = Arc::new(
        Libp2pTransport::start(key.clone(), config.net.clone())
            .await
            .map_err(LaunchError::Net)?,
    );
    progress(Progress::Listening {
        addresses: transport
            .listen_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect(),
    });
    let mut builder = Node::builder()
        .key(key.clone())
        .config(config.node.clone())
        .transport(transport.clone());
    if let Some(e) = &engine {
        builder = builder.engine(e.clone());
    }
    if let Some(e) = &embedder {
        builder = builder.embedder(e.clone());
    }
    if let Some(path) = &config.store {
        builder = builder.store(RedbStore::open(path).map_err(LaunchError::Store)?);
    }
    if let Some(chains) = &config.chains {
        let persistence = chains
            .connect(&rakis_chain::evm::signer_from_node_key(&key))
            .await
            .map_err(LaunchError::Chain)?;
        builder = persistence.attach(builder);
    }
    let membership: Option<Arc<dyn Membership>> = config
        .membership
        .clone()
        .map(|m| Arc::new(m) as Arc<dyn Membership>);
    builder = match &membership {
        Some(m) => builder.membership(m.clone()),
        None => builder.open_network(),
    };
    let node = builder.build().map_err(LaunchError::Node)?;
    let (handle, task) = node.spawn();
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(StatusBoard::new(handle.node_id()));
    let observer = spawn_observer(
        handle.clone(),
        metrics.clone(),
        status.clone(),
        Some(transport.clone()),
    );
    let mut gateway = Gateway::builder(handle.clone())
        .models(engine.as_ref().map(|e| e.models()).unwrap_or_default())
        .defaults(config.requests.clone())
        .config(&config.gateway)
        .metrics(metrics.clone())
        .status(status.clone());
    if let Some(m) = membership {
        gateway = gateway.membership(m);
    }
    if let Some(e) = embedder {
        gateway = gateway.embedder(e);
    }
    Ok(Launched {
        handle,
        task,
        transport,
        gateway: gateway.build(),
        metrics,
        status,
        observer,
    })
}

/// Feeds `metrics` and `status` with the node's events, and every 2 s with its gauges (peers:
/// the transport's gossip peers when given, else the peers that announced a status).
pub fn spawn_observer(
    handle: NodeHandle,
    metrics: Arc<Metrics>,
    status: Arc<StatusBoard>,
    transport: Option<Arc<Libp2pTransport>>,
) -> JoinHandle<()> {
    let mut events = handle.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => {
                        metrics.observe(&event, Instant::now());
                        status.observe(&event);
                        if matches!(event, NodeEvent::Completed { .. } | NodeEvent::Failed { .. }) {
                            tick.reset_immediately();
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "metrics fell behind the node's events");
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let Ok(stats) = handle.stats().await else { return };
                    let known = handle.peers().await.unwrap_or_default();
                    let gossip = match &transport {
                        Some(t) => t.topic_peers().await.map(|p| p.len()).unwrap_or(0),
                        None => known.len(),
                    };
                    metrics.set_node_gauges(gossip, stats.requests, stats.generation_load);
                    let now = handle.now_ms();
                    status.set_peers(
                        known
                            .into_iter()
                            .map(|(node, p)| PeerRow {
                                node,
                                models: p.status.models,
                                load: p.status.load,
                                seen_s_ago: now.saturating_sub(p.last_seen_ms) / 1000,
                            })
                            .collect(),
                    );
                }
            }
        }
    })
}
