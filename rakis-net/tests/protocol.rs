//! The whole protocol between five rakis-core nodes over real libp2p swarms.

mod common;

use std::time::Duration;

use common::*;
use rakis_net::NetConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_reach_one_agreed_result_over_libp2p() {
    let net = "protocol";
    let keys = keys(1_000, 5);
    let transports = start_mesh(&keys, |_| NetConfig::local_test(net)).await;
    let nodes = spawn_nodes(net, &keys, &transports, GENERATION);

    let committed = agree_on_one_request(&nodes, 3, Duration::from_secs(3)).await;
    assert_eq!(
        committed, 5,
        "every node should commit well before the deadline"
    );

    for (i, t) in transports.iter().enumerate() {
        let s = t.stats().await.unwrap();
        assert_eq!(s.rejected, 0, "node {i}");
        assert!(s.delivered > 0);
        // The peer book learned the others' models from their PeerStatus broadcasts.
        let book = t.peer_book().await.unwrap();
        assert_eq!(book.len(), 4, "node {i}");
        assert!(
            book.iter().all(|e| e.models == vec![MODEL.to_string()]),
            "{book:?}"
        );
    }
    for n in &nodes {
        assert_eq!(n.stats().await.unwrap().dropped_messages, 0);
        n.shutdown().await.unwrap();
    }
}
