//! A network of nodes on libp2p over loopback with a gateway in front of the first one.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rakis_core::membership::Membership;
use rakis_core::testing::{HashEmbedder, ScriptedEngine};
use rakis_core::{
    Embedder, InferenceEngine, Node, NodeConfig, NodeHandle, NodeKey, StaticMembership,
};
use rakis_net::{Libp2pTransport, NetConfig};
use rakis_node::config::{GatewayConfig, RequestDefaults};
use rakis_node::launch::spawn_observer;
use rakis_node::{Gateway, Metrics, StatusBoard};

/// The model the scripted engines serve.
pub const MODEL: &str = "smollm2";
/// What they answer.
pub const ANSWER: &str = "The capital of France is Paris.";

/// A running test network.
pub struct TestNet {
    pub handles: Vec<NodeHandle>,
    pub transports: Vec<Arc<Libp2pTransport>>,
    pub keys: Vec<NodeKey>,
    pub members: StaticMembership,
    pub url: String,
    pub metrics: Arc<Metrics>,
    pub status: Arc<StatusBoard>,
    server: tokio::task::JoinHandle<()>,
}

impl TestNet {
    pub async fn shutdown(self) {
        self.server.abort();
        for h in &self.handles {
            let _ = h.shutdown().await;
        }
        for t in &self.transports {
            let _ = t.shutdown().await;
        }
    }
}

/// Request defaults of the tests: a quorum of every node, a short deadline.
pub fn defaults(n: usize) -> RequestDefaults {
    RequestDefaults {
        quorum: n as u32,
        deadline: Duration::from_millis(1500),
        settle_time: Duration::from_secs(20),
        ..RequestDefaults::default()
    }
}

/// Starts `n` nodes answering with `engine` (shared) and `embedder`, all members, and a gateway
/// in front of the first, configured by `gateway`.
pub async fn start(
    n: usize,
    engine: Arc<dyn InferenceEngine>,
    embedder: Arc<dyn Embedder>,
    gateway: GatewayConfig,
    defaults: RequestDefaults,
) -> TestNet {
    start_each(vec![engine; n], embedder, gateway, defaults).await
}

/// [`start`] with one engine per node.
pub async fn start_each(
    engines: Vec<Arc<dyn InferenceEngine>>,
    embedder: Arc<dyn Embedder>,
    gateway: GatewayConfig,
    defaults: RequestDefaults,
) -> TestNet {
    start_with(
        engines,
        embedder,
        gateway,
        defaults,
        Duration::from_millis(800),
    )
    .await
}

/// The scripted engine of the tests (8 workers).
pub fn scripted_engine() -> Arc<dyn InferenceEngine> {
    Arc::new(ScriptedEngine::constant(MODEL, ANSWER).with_workers(8))
}

/// [`start_each`] with the nodes' reveal window.
pub async fn start_with(
    engines: Vec<Arc<dyn InferenceEngine>>,
    embedder: Arc<dyn Embedder>,
    gateway: GatewayConfig,
    defaults: RequestDefaults,
    reveal_window: Duration,
) -> TestNet {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let n = engines.len();
    let engine = engines[0].clone();
    let keys: Vec<NodeKey> = (0..n).map(|_| NodeKey::generate()).collect();
    let members = StaticMembership::equal(keys.iter().map(|k| k.node_id())).unwrap();
    let network = format!("gateway-test-{}", rand_suffix());
    let mut handles = Vec::new();
    let mut transports: Vec<Arc<Libp2pTransport>> = Vec::new();
    for (key, node_engine) in keys.iter().zip(engines) {
        let bootstrap: Vec<_> = transports.iter().flat_map(|t| t.listen_addrs()).collect();
        let transport = Arc::new(
            Libp2pTransport::start(
                key.clone(),
                NetConfig::local_test(&network).with_bootstrap(bootstrap),
            )
            .await
            .unwrap(),
        );
        let mut config = NodeConfig::local_test();
        config.reveal_window = reveal_window;
        config.status_interval = Some(Duration::from_millis(300));
        let node = Node::builder()
            .key(key.clone())
            .config(config)
            .membership(members.clone())
            .transport(transport.clone())
            .engine(node_engine)
            .embedder(embedder.clone())
            .build()
            .unwrap();
        handles.push(node.spawn().0);
        transports.push(transport);
    }
    for t in &transports {
        t.wait_for_topic_peers(n - 1, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(StatusBoard::new(handles[0].node_id()));
    spawn_observer(
        handles[0].clone(),
        metrics.clone(),
        status.clone(),
        Some(transports[0].clone()),
    );
    let gw = Gateway::builder(handles[0].clone())
        .membership(Arc::new(members.clone()) as Arc<dyn Membership>)
        .models(engine.models())
        .embedder(embedder)
        .defaults(defaults)
        .config(&gateway)
        .metrics(metrics.clone())
        .status(status.clone())
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = gw
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    TestNet {
        handles,
        transports,
        keys,
        members,
        url: format!("http://{addr}"),
        metrics,
        status,
        server,
    }
}

/// Three scripted nodes with the hash embedder.
pub async fn scripted(n: usize, gateway: GatewayConfig) -> TestNet {
    start(
        n,
        Arc::new(ScriptedEngine::constant(MODEL, ANSWER).with_workers(8)),
        Arc::new(HashEmbedder::default_model()),
        gateway,
        defaults(n),
    )
    .await
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The repository root.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The test models' folder (`RAKIS_MODELS_DIR`, or `.cache/models`), checked.
pub fn models_dir() -> std::path::PathBuf {
    let d = std::env::var_os("RAKIS_MODELS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/models"));
    assert!(
        d.join("all-MiniLM-L6-v2/model.safetensors").is_file()
            && d.join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
                .is_file(),
        "test models missing in {}: run scripts/setup.sh",
        d.display()
    );
    d
}

/// SmolLM2-135M-Instruct (2 workers, shared by the nodes) and all-MiniLM-L6-v2.
pub fn real_models() -> (Arc<dyn InferenceEngine>, Arc<dyn Embedder>) {
    use rakis_inference::{
        CandleEmbedder, CandleEngine, EmbedderConfig, EngineConfig, ModelSource,
    };
    let d = models_dir();
    let mut config = EngineConfig::new(MODEL);
    config.workers = 2;
    let engine = CandleEngine::load(
        &ModelSource::local(d.join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")),
        "ignored",
        config,
    )
    .unwrap();
    let embedder = CandleEmbedder::load(
        &ModelSource::local(d.join("all-MiniLM-L6-v2")),
        EmbedderConfig::new(rakis_inference::MINILM),
    )
    .unwrap();
    (Arc::new(engine), Arc::new(embedder))
}

/// Three scripted nodes with the timings of a busy real network rather than the other tests'
/// shortest ones (deadline 3 s, reveal window 2 s) and no rate limit on the gateway: the
/// network the burst test and benchmark fire at.
pub async fn busy_network() -> TestNet {
    let mut defaults = defaults(3);
    defaults.deadline = Duration::from_secs(3);
    start_with(
        vec![scripted_engine(); 3],
        Arc::new(HashEmbedder::default_model()),
        GatewayConfig {
            requests_per_minute: 0,
            ..GatewayConfig::default()
        },
        defaults,
        Duration::from_secs(2),
    )
    .await
}

/// One gateway answer of a burst.
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
    /// From sending to the whole body.
    pub took: Duration,
}

/// `n` concurrent chat completions (one HTTP client each, distinct questions) to the gateway
/// at `url`; panics when one gets no HTTP answer at all (lost).
pub async fn burst(url: &str, n: usize) -> Vec<Reply> {
    let client = reqwest::Client::new();
    let url = Arc::new(format!("{url}/v1/chat/completions"));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let t = std::time::Instant::now();
                let r = client
                    .post(url.as_str())
                    .json(&serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": format!("question {i}")}]}))
                    .send()
                    .await
                    .expect("a request was lost (no HTTP answer)");
                let status = r.status().as_u16();
                let body = r.text().await.expect("a request was lost (body cut)");
                Reply {
                    status,
                    body,
                    took: t.elapsed(),
                }
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(n);
    for t in tasks {
        replies.push(t.await.expect("a request task panicked"));
    }
    replies
}
