//! Helpers shared by the integration tests: real libp2p swarms on 127.0.0.1.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use rakis_core::envelope::seal;
use rakis_core::protocol::PeerStatus;
use rakis_core::testing::{HashEmbedder, ScriptedEngine};
use rakis_core::{
    Message, Node, NodeConfig, NodeHandle, NodeKey, StaticMembership, Transport, TransportEvent,
};
use rakis_net::{Libp2pTransport, NetConfig};

pub const MODEL: &str = "smollm2-135m";
/// Generous bound for anything that should happen within a second or two.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Starts `keys.len()` transports; each bootstraps from every one started before it (a full
/// mesh), and the function returns once each sees all the others on every topic.
pub async fn start_mesh(
    keys: &[NodeKey],
    config: impl Fn(usize) -> NetConfig,
) -> Vec<Arc<Libp2pTransport>> {
    let mut out: Vec<Arc<Libp2pTransport>> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut c = config(i);
        for t in &out {
            c.bootstrap_peers.extend(t.listen_addrs());
        }
        out.push(Arc::new(
            Libp2pTransport::start(key.clone(), c).await.unwrap(),
        ));
    }
    for t in &out {
        t.wait_for_topic_peers(keys.len() - 1, PATIENCE)
            .await
            .unwrap();
    }
    out
}

/// Seeds `0..n` as node keys, offset by `base`.
pub fn keys(base: u64, n: usize) -> Vec<NodeKey> {
    (0..n as u64)
        .map(|i| NodeKey::from_seed(base + i))
        .collect()
}

/// A valid signed message of `key` on `network` (a distinct one each call).
pub fn status_message(key: &NodeKey, network: &str, load: u32) -> Vec<u8> {
    seal(
        key,
        network,
        now_ms(),
        Message::PeerStatus(PeerStatus {
            models: vec![MODEL.into()],
            embedding_model: None,
            workers: 1,
            load,
        }),
    )
    .unwrap()
}

/// Collects the message bytes arriving on `events` for `wait`.
pub async fn collect_messages(
    events: &mut BoxStream<'static, TransportEvent>,
    wait: Duration,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.next()).await {
        if let TransportEvent::Message { bytes, .. } = ev {
            out.push(bytes);
        }
    }
    out
}

/// Waits until `events` has brought every message of `wanted`, returning everything received.
pub async fn receive_all(
    events: &mut BoxStream<'static, TransportEvent>,
    wanted: &BTreeSet<Vec<u8>>,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let wait = async {
        while !wanted.iter().all(|w| got.contains(w)) {
            match events.next().await {
                Some(TransportEvent::Message { bytes, .. }) => got.push(bytes),
                Some(_) => {}
                None => panic!("event stream ended"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("not every message arrived");
    got
}

/// How long the scripted engine of the test nodes takes per request.
pub const GENERATION: Duration = Duration::from_millis(20);

/// A node answering `answer`, on `transport`, with a short reveal window and frequent status,
/// in an open network.
pub fn spawn_node(
    network: &str,
    key: NodeKey,
    transport: Arc<Libp2pTransport>,
    answer: &str,
) -> NodeHandle {
    build_node(network, key, transport, answer, None, GENERATION)
}

/// [`spawn_node`], with `members` deciding who may answer.
pub fn spawn_member(
    network: &str,
    key: NodeKey,
    transport: Arc<Libp2pTransport>,
    answer: &str,
    members: &StaticMembership,
) -> NodeHandle {
    build_node(network, key, transport, answer, Some(members), GENERATION)
}

fn build_node(
    network: &str,
    key: NodeKey,
    transport: Arc<Libp2pTransport>,
    answer: &str,
    members: Option<&StaticMembership>,
    generation: Duration,
) -> NodeHandle {
    let builder = Node::builder()
        .config(NodeConfig {
            network_id: Some(network.into()),
            reveal_window: Duration::from_secs(2),
            status_interval: Some(Duration::from_millis(500)),
            ..NodeConfig::default()
        })
        .transport(transport)
        .key(key)
        .engine(ScriptedEngine::constant(MODEL, answer).with_delay(generation))
        .embedder(HashEmbedder::default_model());
    let builder = match members {
        Some(m) => builder.membership(m.clone()),
        None => builder.open_network(),
    };
    builder.build().unwrap().spawn().0
}

pub const ANSWERS: [&str; 5] = [
    "The capital of France is Paris.",
    "Paris is the capital of France.",
    "The capital of France is Paris, of course.",
    "The capital of France is Paris.",
    "France's capital is Paris.",
];

/// Submits one request (quorum `quorum`, deadline `deadline`) from `nodes[0]` and checks that
/// every node reaches the same result; returns the number of committers.
pub async fn agree_on_one_request(nodes: &[NodeHandle], quorum: u32, deadline: Duration) -> u32 {
    let request = rakis_core::testing::request(
        MODEL,
        nodes[0].node_id(),
        nodes[0].now_ms(),
        quorum,
        deadline.as_millis() as u64,
    );
    let id = nodes[0].submit(request).await.unwrap();
    let mut results = Vec::new();
    for n in nodes {
        let outcome = n
            .wait_for_outcome(id, deadline + Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("node {}: {e}", n.node_id().short()));
        let sel = outcome.selected().expect("a selected output");
        results.push((
            outcome.joint_hash().unwrap(),
            sel.output.clone(),
            sel.node,
            outcome.committed,
        ));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    assert!(results[0].3 >= quorum);
    results[0].3
}

/// Peers of `t` as a sorted list.
pub fn peers_of(t: &dyn Transport) -> Vec<rakis_core::NodeId> {
    let mut p = t.peers();
    p.sort();
    p
}

/// The honest side of a network with a rogue peer.
pub struct Honest {
    pub transports: Vec<Arc<Libp2pTransport>>,
    pub nodes: Vec<NodeHandle>,
}

/// Five honest nodes (open network, [`GENERATION`] per request) plus a rogue transport
/// connected to all of them, every gossip mesh formed.
pub async fn network(
    net: &str,
    base: u64,
    config: impl Fn() -> NetConfig,
) -> (Honest, Libp2pTransport, NodeKey) {
    network_generating(net, base, config, GENERATION).await
}

/// [`network`] with nodes that take `generation` per request.
pub async fn network_generating(
    net: &str,
    base: u64,
    config: impl Fn() -> NetConfig,
    generation: Duration,
) -> (Honest, Libp2pTransport, NodeKey) {
    let keys = keys(base, 5);
    let transports = start_mesh(&keys, |_| config()).await;
    let rogue_key = NodeKey::from_seed(base + 99);
    let mut rc = NetConfig::local_test(net);
    for t in &transports {
        rc.bootstrap_peers.extend(t.listen_addrs());
    }
    let rogue = Libp2pTransport::start(rogue_key.clone(), rc).await.unwrap();
    rogue.wait_for_topic_peers(5, PATIENCE).await.unwrap();
    for t in &transports {
        t.wait_for_topic_peers(5, PATIENCE).await.unwrap();
    }
    let nodes = spawn_nodes(net, &keys, &transports, generation);
    (Honest { transports, nodes }, rogue, rogue_key)
}

/// One answering node per key on its transport (open network), answering [`ANSWERS`] in turn,
/// each taking `generation` per request.
pub fn spawn_nodes(
    net: &str,
    keys: &[NodeKey],
    transports: &[Arc<Libp2pTransport>],
    generation: Duration,
) -> Vec<NodeHandle> {
    keys.iter()
        .zip(transports)
        .zip(ANSWERS)
        .map(|((k, t), a)| build_node(net, k.clone(), t.clone(), a, None, generation))
        .collect()
}
