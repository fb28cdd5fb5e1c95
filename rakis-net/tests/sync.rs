//! Catching up over real libp2p: a node that joins after the commits, and a node cut off
//! while the commits fly, both reach the result of the others through state sync.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use futures::stream::BoxStream;
use futures::StreamExt;
use rakis_core::testing::{self, HashEmbedder};
use rakis_core::{
    InferenceRequest, Node, NodeConfig, NodeEvent, NodeHandle, NodeId, NodeKey, Transport,
    TransportError, TransportEvent,
};
use rakis_net::{Libp2pTransport, NetConfig};

/// Cuts a node off the network while closed: nothing leaves, nothing arrives. The libp2p
/// connections stay up underneath, as in a partition that drops traffic.
struct Gate {
    inner: Arc<Libp2pTransport>,
    open: Arc<AtomicBool>,
}

#[async_trait]
impl Transport for Gate {
    async fn broadcast(&self, bytes: Vec<u8>) -> Result<(), TransportError> {
        if self.open.load(Ordering::SeqCst) {
            self.inner.broadcast(bytes).await
        } else {
            Ok(())
        }
    }
    async fn send(&self, peer: &NodeId, bytes: Vec<u8>) -> Result<(), TransportError> {
        if self.open.load(Ordering::SeqCst) {
            self.inner.send(peer, bytes).await
        } else {
            Err(TransportError::Unreachable {
                peer: peer.to_string(),
                reason: rakis_core::error::SharedError::msg("direct messages are cut in this test"),
            })
        }
    }
    fn events(&self) -> BoxStream<'static, TransportEvent> {
        let open = self.open.clone();
        self.inner
            .events()
            .filter(move |_| futures::future::ready(open.load(Ordering::SeqCst)))
            .boxed()
    }
    fn peers(&self) -> Vec<NodeId> {
        self.inner.peers()
    }
}

fn verifier(network: &str, key: NodeKey, transport: Arc<dyn Transport>) -> NodeHandle {
    Node::builder()
        .open_network()
        .config(NodeConfig {
            network_id: Some(network.into()),
            reveal_window: Duration::from_secs(2),
            status_interval: None,
            ..NodeConfig::default()
        })
        .transport(transport)
        .key(key)
        .embedder(HashEmbedder::default_model())
        .build()
        .unwrap()
        .spawn()
        .0
}

fn request(from: &NodeHandle, quorum: u32) -> InferenceRequest {
    testing::request(MODEL, from.node_id(), from.now_ms(), quorum, 3_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_after_the_commits_catches_up_and_computes_the_same_result() {
    let net = "sync-late";
    let keys = keys(3_000, 5);
    let transports = start_mesh(&keys[..4], |_| NetConfig::local_test(net)).await;
    let nodes: Vec<NodeHandle> = keys[..4]
        .iter()
        .zip(&transports)
        .map(|(k, t)| spawn_node(net, k.clone(), t.clone(), ANSWERS[0]))
        .collect();
    let id = nodes[0].submit(request(&nodes[0], 4)).await.unwrap();
    // Let every node commit, then bring the fifth node up.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(nodes[1].status(id).await.unwrap().unwrap().committed, 4);
    let mut config = NetConfig::local_test(net);
    for t in &transports {
        config.bootstrap_peers.extend(t.listen_addrs());
    }
    let late_t = Arc::new(
        Libp2pTransport::start(keys[4].clone(), config)
            .await
            .unwrap(),
    );
    late_t.wait_for_topic_peers(4, PATIENCE).await.unwrap();
    let late = verifier(net, keys[4].clone(), late_t);
    assert!(late.status(id).await.unwrap().is_none());
    let outcome = late
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    let theirs = nodes[0]
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.joint_hash(), theirs.joint_hash());
    assert_eq!(outcome.committed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_rejoins_and_agrees() {
    let net = "sync-partition";
    let keys = keys(4_000, 5);
    let transports = start_mesh(&keys, |_| NetConfig::local_test(net)).await;
    let nodes: Vec<NodeHandle> = keys[..4]
        .iter()
        .zip(&transports)
        .map(|(k, t)| spawn_node(net, k.clone(), t.clone(), ANSWERS[0]))
        .collect();
    let open = Arc::new(AtomicBool::new(true));
    let gate: Arc<dyn Transport> = Arc::new(Gate {
        inner: transports[4].clone(),
        open: open.clone(),
    });
    let watcher = verifier(net, keys[4].clone(), gate);
    let mut events = watcher.subscribe();
    let id = nodes[0].submit(request(&nodes[0], 4)).await.unwrap();
    // The watcher hears the request, then is cut off while the commits fly.
    let seen = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(NodeEvent::RequestReceived { request_id, .. }) = events.recv().await {
                if request_id == id {
                    break;
                }
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "the watcher never heard the request");
    open.store(false, Ordering::SeqCst);
    let deadline = watcher.status(id).await.unwrap().unwrap().deadline_ms;
    while watcher.now_ms() < deadline.saturating_sub(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(watcher.status(id).await.unwrap().unwrap().committed < 4);
    open.store(true, Ordering::SeqCst);
    // It fails the quorum at its deadline (no commit seen); the reveals make it ask for the
    // commits, and the quorum reopens.
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(NodeEvent::Completed {
                request_id,
                outcome,
            }) = events.recv().await
            {
                if request_id == id {
                    break outcome;
                }
            }
        }
    })
    .await
    .expect("the watcher recovered by sync");
    let theirs = nodes[0]
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.joint_hash(), theirs.joint_hash());
}
