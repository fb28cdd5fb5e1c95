//! Real libp2p swarms on 127.0.0.1: broadcasts, direct messages, discovery, QUIC, redial.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::stream::BoxStream;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use rakis_core::transport::Refusal;
use rakis_core::{Transport, TransportError, TransportEvent};
use rakis_net::{Libp2pTransport, Multiaddr, NetConfig, TopicKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_a_broadcast_reaches_every_node_once() {
    let net = "bcast";
    let keys = keys(100, 5);
    let nodes = start_mesh(&keys, |_| NetConfig::local_test(net)).await;
    let mut events: Vec<_> = nodes.iter().map(|t| t.events()).collect();
    for (i, t) in nodes.iter().enumerate() {
        let mut others: Vec<_> = nodes
            .iter()
            .filter(|o| o.node_id() != t.node_id())
            .map(|o| o.node_id())
            .collect();
        others.sort();
        assert_eq!(peers_of(t.as_ref()), others, "node {i}");
    }

    // Every node broadcasts one message; every other node gets all four, once each.
    let messages: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| status_message(k, net, i as u32))
        .collect();
    for (t, m) in nodes.iter().zip(&messages) {
        t.broadcast(m.clone()).await.unwrap();
    }
    for (i, ev) in events.iter_mut().enumerate() {
        let wanted: BTreeSet<Vec<u8>> = messages
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, m)| m.clone())
            .collect();
        let mut got = receive_all(ev, &wanted).await;
        got.extend(collect_messages(ev, Duration::from_millis(300)).await);
        assert_eq!(got.len(), 4, "node {i} got duplicates or its own message");
        assert!(!got.contains(&messages[i]));
    }
    for t in &nodes {
        let s = t.stats().await.unwrap();
        assert_eq!(s.published, 1);
        assert_eq!(s.delivered, 4);
        assert_eq!(s.rejected, 0);
    }
    // The peer book learned each sender's models from its PeerStatus.
    let book = nodes[0].peer_book().await.unwrap();
    assert_eq!(book.len(), 4);
    for e in &book {
        assert!(e.connected && !e.blocked);
        assert_eq!(e.models, vec![MODEL.to_string()]);
        assert!(!e.addresses.is_empty());
        assert!(e.score.is_some());
    }
    for t in &nodes {
        t.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_reach_their_peer_and_invalid_bytes_are_refused() {
    let net = "direct";
    let keys = keys(200, 3);
    let nodes = start_mesh(&keys, |_| NetConfig::local_test(net)).await;
    let mut to = nodes[2].events();
    let bytes = status_message(&keys[0], net, 7);
    nodes[0]
        .send(&keys[2].node_id(), bytes.clone())
        .await
        .unwrap();
    let got = loop {
        match tokio::time::timeout(PATIENCE, to.next()).await.unwrap() {
            Some(TransportEvent::Message { from, bytes }) => break (from, bytes),
            Some(_) => continue,
            None => panic!("stream ended"),
        }
    };
    assert_eq!(got, (Some(keys[0].node_id()), bytes.clone()));
    assert_eq!(nodes[0].stats().await.unwrap().direct_sent, 1);
    // Only node 2 got it.
    let mut other = nodes[1].events();
    assert!(collect_messages(&mut other, Duration::from_millis(300))
        .await
        .is_empty());

    // Locally refused: bytes that do not open, a message of another network, sending to self.
    let mut garbage = status_message(&keys[0], net, 1);
    let last = garbage.len() - 1;
    garbage[last] ^= 0xff;
    assert!(matches!(
        nodes[0].broadcast(garbage.clone()).await,
        Err(TransportError::InvalidMessage(_))
    ));
    assert!(nodes[0]
        .send(&keys[1].node_id(), status_message(&keys[0], "other", 1))
        .await
        .is_err());
    assert!(matches!(
        nodes[0].send(&keys[0].node_id(), bytes.clone()).await,
        Err(TransportError::Unreachable { .. })
    ));
    // The receiver rejects invalid direct bytes, and says so.
    let err = nodes[0]
        .send_unchecked(&keys[1].node_id(), garbage)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            TransportError::Refused {
                reason: Refusal::InvalidMessage,
                ..
            }
        ),
        "{err}"
    );
    let book = nodes[1].peer_book().await.unwrap();
    let sender = book.iter().find(|e| e.node == keys[0].node_id()).unwrap();
    assert_eq!(sender.invalid_messages, 1);
    assert!(!sender.blocked);
    // A peer nobody knows cannot be reached.
    let stranger = rakis_core::NodeKey::from_seed(299).node_id();
    assert!(matches!(
        nodes[0].send(&stranger, bytes).await,
        Err(TransportError::Unreachable { .. })
    ));
    for t in &nodes {
        t.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_bootstrapped_from_one_node_find_each_other_through_the_dht() {
    let net = "dht";
    let keys = keys(300, 3);
    let hub = Arc::new(
        Libp2pTransport::start(keys[0].clone(), NetConfig::local_test(net))
            .await
            .unwrap(),
    );
    let mut leaves = Vec::new();
    for k in &keys[1..] {
        let c = NetConfig::local_test(net).with_bootstrap(hub.listen_addrs());
        leaves.push(Libp2pTransport::start(k.clone(), c).await.unwrap());
    }
    // Each leaf only knew the hub; the DHT (fed by identify) introduces them to each other.
    for l in &leaves {
        l.wait_for_topic_peers(2, PATIENCE).await.unwrap();
    }
    assert!(leaves[0].peers().contains(&keys[2].node_id()));
    assert!(leaves[1].peers().contains(&keys[1].node_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_dialled_by_hand_talk_over_quic() {
    let net = "quic";
    let keys = keys(400, 2);
    let quic = || NetConfig {
        listen_addresses: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        ..NetConfig::local_test(net)
    };
    let a = Libp2pTransport::start(keys[0].clone(), quic())
        .await
        .unwrap();
    let b = Libp2pTransport::start(keys[1].clone(), quic())
        .await
        .unwrap();
    let addr = a.listen_addrs()[0].clone();
    assert!(addr.to_string().contains("/quic-v1/p2p/"), "{addr}");
    // Dialling itself is refused at once.
    let err = b.dial(b.listen_addrs()[0].clone()).await.unwrap_err();
    assert!(matches!(err, rakis_net::NetError::Dial { .. }), "{err}");
    b.dial(addr).await.unwrap();
    a.wait_for_topic_peers(1, PATIENCE).await.unwrap();
    b.wait_for_topic_peers(1, PATIENCE).await.unwrap();
    let mut events = b.events();
    let m = status_message(&keys[0], net, 1);
    a.broadcast(m.clone()).await.unwrap();
    let d = status_message(&keys[0], net, 2);
    a.send(&keys[1].node_id(), d.clone()).await.unwrap();
    let got = receive_all(&mut events, &BTreeSet::from([m, d])).await;
    assert_eq!(got.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bootstrap_peer_is_redialled_when_it_comes_back() {
    let net = "redial";
    let keys = keys(500, 2);
    let first = Libp2pTransport::start(keys[0].clone(), NetConfig::local_test(net))
        .await
        .unwrap();
    let addr: Multiaddr = first.listen_addrs()[0].clone();
    let second = Libp2pTransport::start(
        keys[1].clone(),
        NetConfig::local_test(net).with_bootstrap([addr.clone()]),
    )
    .await
    .unwrap();
    let mut events = second.events();
    assert_eq!(
        next_peer_event(&mut events).await,
        TransportEvent::PeerConnected(keys[0].node_id())
    );
    first.shutdown().await.unwrap();
    drop(first);
    assert_eq!(
        next_peer_event(&mut events).await,
        TransportEvent::PeerDisconnected(keys[0].node_id())
    );
    assert!(second.peers().is_empty());
    // The bootstrap node restarts on the same address; the redial (every second in the test
    // preset) reconnects without help.
    let listen: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    let _back = Libp2pTransport::start(
        keys[0].clone(),
        NetConfig {
            listen_addresses: vec![listen],
            ..NetConfig::local_test(net)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        next_peer_event(&mut events).await,
        TransportEvent::PeerConnected(keys[0].node_id())
    );
    second.wait_for_topic_peers(1, PATIENCE).await.unwrap();
}

async fn next_peer_event(events: &mut BoxStream<'static, TransportEvent>) -> TransportEvent {
    loop {
        match tokio::time::timeout(PATIENCE, events.next()).await.unwrap() {
            Some(TransportEvent::Message { .. }) => continue,
            Some(ev) => return ev,
            None => panic!("stream ended"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_on_the_wrong_topic_is_rejected_and_stale_gossip_ignored() {
    let net = "checks";
    let keys = keys(600, 2);
    let nodes = start_mesh(&keys, |_| NetConfig::local_test(net)).await;
    let mut events = nodes[1].events();
    // A valid PeerStatus on the commits topic: the kind does not match the topic.
    let misplaced = status_message(&keys[0], net, 1);
    nodes[0]
        .publish_unchecked(TopicKind::Commits, misplaced)
        .await
        .unwrap();
    // A valid message signed an hour ago: beyond the clock-skew bound.
    let stale = rakis_core::envelope::seal(
        &keys[0],
        net,
        now_ms() - 3_600_000,
        rakis_core::Message::PeerStatus(rakis_core::protocol::PeerStatus {
            models: vec![],
            embedding_model: None,
            workers: 0,
            load: 0,
        }),
    )
    .unwrap();
    nodes[0].broadcast(stale).await.unwrap();
    let fresh = status_message(&keys[0], net, 2);
    nodes[0].broadcast(fresh.clone()).await.unwrap();
    let mut got = receive_all(&mut events, &BTreeSet::from([fresh.clone()])).await;
    got.extend(collect_messages(&mut events, Duration::from_millis(200)).await);
    assert_eq!(got, vec![fresh]);
    let s = nodes[1].stats().await.unwrap();
    assert_eq!((s.rejected, s.stale, s.delivered), (1, 1, 1), "{s:?}");
    let book = nodes[1].peer_book().await.unwrap();
    assert_eq!(
        book[0].invalid_messages, 1,
        "only the misplaced message counts"
    );
    assert!(!book[0].blocked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_cap_the_number_of_peers() {
    let net = "limits";
    let keys = keys(700, 4);
    let hub = Libp2pTransport::start(
        keys[0].clone(),
        NetConfig {
            max_connections: 2,
            ..NetConfig::local_test(net)
        },
    )
    .await
    .unwrap();
    let mut leaves = Vec::new();
    for k in &keys[1..] {
        let c = NetConfig::local_test(net).with_bootstrap(hub.listen_addrs());
        leaves.push(Libp2pTransport::start(k.clone(), c).await.unwrap());
    }
    hub.wait_for_topic_peers(2, PATIENCE).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(hub.peers().len(), 2);
    let refused = leaves
        .iter()
        .filter(|l| !l.peers().contains(&keys[0].node_id()));
    assert_eq!(refused.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_with_mdns_on_and_tcp_and_quic_listeners_starts() {
    let config = NetConfig {
        listen_addresses: vec![
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        ],
        mdns: true,
        ..NetConfig::default()
    };
    let t = Libp2pTransport::start(rakis_core::NodeKey::from_seed(800), config)
        .await
        .unwrap();
    let addrs: Vec<String> = t.listen_addrs().iter().map(|a| a.to_string()).collect();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert!(addrs.iter().any(|a| a.contains("/tcp/")));
    assert!(addrs.iter().any(|a| a.contains("/quic-v1/")));
    assert!(addrs
        .iter()
        .all(|a| a.ends_with(&format!("/p2p/{}", t.peer_id()))));
    assert_eq!(
        rakis_net::node_id_of(&t.peer_id()),
        Some(rakis_core::NodeKey::from_seed(800).node_id())
    );
    t.shutdown().await.unwrap();
    assert!(matches!(t.stats().await, Err(rakis_net::NetError::Closed)));
}
