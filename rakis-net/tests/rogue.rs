//! A rogue peer (a real swarm) sends invalid signatures or floods: the honest nodes reject
//! it, score it down, block it, and still reach consensus.

mod common;

use std::time::Duration;

use common::*;
use rakis_core::envelope::open;
use rakis_core::{NodeKey, Transport};
use rakis_net::{NetConfig, PeerEntry, RateLimit, TopicKind};

/// Waits until every honest transport has blocked `rogue`; returns their entries for it.
async fn wait_until_blocked(honest: &Honest, rogue: &NodeKey) -> Vec<PeerEntry> {
    let wait = async {
        loop {
            let mut entries = Vec::new();
            for t in &honest.transports {
                let book = t.peer_book().await.unwrap();
                if let Some(e) = book.into_iter().find(|e| e.node == rogue.node_id()) {
                    if e.blocked {
                        entries.push(e);
                    }
                }
            }
            if entries.len() == honest.transports.len() {
                return entries;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("the rogue was not blocked by every honest node")
}

async fn check_honest_peers_untouched(honest: &Honest, rogue: &NodeKey) {
    for (i, t) in honest.transports.iter().enumerate() {
        let book = t.peer_book().await.unwrap();
        for e in book.iter().filter(|e| e.node != rogue.node_id()) {
            assert!(!e.blocked, "honest peer blocked at node {i}: {e:?}");
            assert_eq!(e.invalid_messages, 0);
        }
        assert!(!t.peers().contains(&rogue.node_id()));
        assert_eq!(t.peers().len(), 4, "node {i} lost honest peers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_signatures_are_rejected_scored_down_and_blocked() {
    let net = "rogue-sig";
    let (honest, rogue, rogue_key) = network(net, 3_000, || NetConfig::local_test(net)).await;

    // Well-formed envelopes whose signature was tampered with, on every topic.
    for i in 0..10u32 {
        let mut bytes = status_message(&rogue_key, net, i);
        let at = bytes.len() - 10;
        bytes[at] ^= 0x55;
        assert!(open(&bytes, net).is_err());
        let topic = TopicKind::ALL[i as usize % TopicKind::ALL.len()];
        let _ = rogue.publish_unchecked(topic, bytes).await;
    }

    let entries = wait_until_blocked(&honest, &rogue_key).await;
    for e in &entries {
        assert!(e.invalid_messages >= 1, "{e:?}");
        assert!(e.score.is_some_and(|s| s < 0.0), "not scored down: {e:?}");
    }
    let wait_disconnected = async {
        while !rogue.peers().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait_disconnected)
        .await
        .expect("the rogue is still connected");
    check_honest_peers_untouched(&honest, &rogue_key).await;
    // Nothing invalid reached a node: the transport stopped it.
    for n in &honest.nodes {
        assert_eq!(n.stats().await.unwrap().dropped_messages, 0);
    }

    agree_on_one_request(&honest.nodes, 3, Duration::from_secs(3)).await;
    for n in &honest.nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_rate_limited_and_blocked() {
    let net = "rogue-flood";
    let limited = || NetConfig {
        rate_limit: RateLimit {
            per_second: 50.0,
            burst: 100,
        },
        max_rate_violations: 300,
        ..NetConfig::local_test(net)
    };
    let (honest, rogue, rogue_key) = network(net, 4_000, limited).await;

    // Validly signed messages, far faster than the limit.
    for i in 0..3_000u32 {
        if rogue
            .broadcast(status_message(&rogue_key, net, i))
            .await
            .is_err()
        {
            break; // every honest peer has dropped the rogue
        }
    }

    let entries = wait_until_blocked(&honest, &rogue_key).await;
    for e in &entries {
        assert!(e.rate_limited > 300, "{e:?}");
        assert_eq!(e.invalid_messages, 0);
    }
    for t in &honest.transports {
        let s = t.stats().await.unwrap();
        assert!(s.rate_limited > 300);
        assert!(s.delivered < 1_000, "the flood got through: {s:?}");
    }
    check_honest_peers_untouched(&honest, &rogue_key).await;

    agree_on_one_request(&honest.nodes, 3, Duration::from_secs(3)).await;
    for n in &honest.nodes {
        n.shutdown().await.unwrap();
    }
}
