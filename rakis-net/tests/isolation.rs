//! Two networks whose nodes know each other's addresses never exchange messages.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rakis_core::Transport;
use rakis_net::{Libp2pTransport, NetConfig, TopicKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_networks_sharing_addresses_never_deliver_each_others_messages() {
    let alpha_keys = keys(2_000, 3);
    let beta_keys = keys(2_100, 3);
    let alpha = start_mesh(&alpha_keys, |_| NetConfig::local_test("alpha")).await;
    // Every beta node is told about every alpha node too, and dials them.
    let alpha_addrs: Vec<_> = alpha.iter().flat_map(|t| t.listen_addrs()).collect();
    let beta = start_mesh(&beta_keys, |_| {
        NetConfig::local_test("beta").with_bootstrap(alpha_addrs.clone())
    })
    .await;
    let mut alpha_events: Vec<_> = alpha.iter().map(|t| t.events()).collect();
    let mut beta_events: Vec<_> = beta.iter().map(|t| t.events()).collect();

    let alpha_ids: BTreeSet<_> = alpha_keys.iter().map(|k| k.node_id()).collect();
    let beta_ids: BTreeSet<_> = beta_keys.iter().map(|k| k.node_id()).collect();
    // Cross-network connections are dropped once identify tells the networks apart.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for t in &alpha {
        assert!(t.peers().iter().all(|p| alpha_ids.contains(p)));
        assert_eq!(t.topic_peers().await.unwrap().len(), 2);
    }
    for t in &beta {
        assert!(t.peers().iter().all(|p| beta_ids.contains(p)));
        // It did meet the alpha nodes it was told about, and set them aside.
        assert!(t.stats().await.unwrap().foreign_peers >= 1);
    }
    for t in alpha.iter().chain(&beta) {
        let book = t.peer_book().await.unwrap();
        let own = if alpha.iter().any(|a| a.node_id() == t.node_id()) {
            &alpha_ids
        } else {
            &beta_ids
        };
        assert!(
            book.iter().all(|e| own.contains(&e.node)),
            "{}: {book:?}",
            t.node_id().short()
        );
    }

    // Node i broadcasts message i.
    let alpha_msgs: Vec<Vec<u8>> = alpha_keys
        .iter()
        .map(|k| status_message(k, "alpha", 1))
        .collect();
    let beta_msgs: Vec<Vec<u8>> = beta_keys
        .iter()
        .map(|k| status_message(k, "beta", 2))
        .collect();
    for (t, m) in alpha.iter().zip(&alpha_msgs) {
        t.broadcast(m.clone()).await.unwrap();
    }
    for (t, m) in beta.iter().zip(&beta_msgs) {
        t.broadcast(m.clone()).await.unwrap();
    }
    // A beta message pushed onto alpha's own topic by an alpha member is rejected there.
    let smuggled = status_message(&beta_keys[0], "beta", 3);
    alpha[0]
        .publish_unchecked(TopicKind::Presence, smuggled.clone())
        .await
        .unwrap();
    // A direct message across networks finds no common protocol.
    assert!(beta[0]
        .send(
            &alpha_keys[1].node_id(),
            status_message(&beta_keys[0], "beta", 4)
        )
        .await
        .is_err());

    for (i, ev) in alpha_events.iter_mut().enumerate() {
        let expected: BTreeSet<Vec<u8>> = alpha_msgs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, m)| m.clone())
            .collect();
        let mut got = receive_all(ev, &expected).await;
        got.extend(collect_messages(ev, Duration::from_millis(300)).await);
        assert_eq!(got.len(), expected.len(), "alpha node {i}: extra messages");
    }
    for (i, ev) in beta_events.iter_mut().enumerate() {
        let expected: BTreeSet<Vec<u8>> = beta_msgs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, m)| m.clone())
            .collect();
        let mut got = receive_all(ev, &expected).await;
        got.extend(collect_messages(ev, Duration::from_millis(100)).await);
        assert_eq!(got.len(), expected.len(), "beta node {i}: extra messages");
    }
    for t in &alpha[1..] {
        assert_eq!(t.stats().await.unwrap().rejected, 1, "the smuggled message");
    }
    let all: Vec<&Arc<Libp2pTransport>> = alpha.iter().chain(&beta).collect();
    for t in all {
        t.shutdown().await.unwrap();
    }
}

/// One network id: a node takes it from its libp2p transport, and a configuration that names
/// another network is refused with a typed error instead of a node whose every message its own
/// transport would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_takes_the_network_of_its_transport_and_refuses_another() {
    use rakis_core::testing::{HashEmbedder, ScriptedEngine};
    use rakis_core::{ConfigError, Node, NodeConfig, NodeError};

    let keys = keys(2_200, 3);
    let mesh = start_mesh(&keys, |_| NetConfig::local_test("gamma")).await;
    let wrong = Node::builder()
        .config(NodeConfig::local_test().with_network_id("delta"))
        .key(keys[0].clone())
        .transport(mesh[0].clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &wrong,
            NodeError::Config(ConfigError::NetworkMismatch { configured, transport })
                if configured == "delta" && transport == "gamma"
        ),
        "{wrong}"
    );
    // No network id in the configuration: the nodes agree on a request over "gamma".
    let members = rakis_core::StaticMembership::equal(keys.iter().map(|k| k.node_id())).unwrap();
    let nodes: Vec<_> = keys
        .iter()
        .zip(&mesh)
        .map(|(key, t)| {
            Node::builder()
                .config(NodeConfig::local_test())
                .membership(members.clone())
                .key(key.clone())
                .transport(t.clone())
                .engine(ScriptedEngine::constant(MODEL, ANSWERS[0]))
                .embedder(HashEmbedder::default_model())
                .build()
                .unwrap()
                .spawn()
                .0
        })
        .collect();
    let agreed = agree_on_one_request(&nodes, 3, Duration::from_secs(2)).await;
    assert_eq!(agreed, 3);
}
