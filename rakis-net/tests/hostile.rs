//! Hostile peers on real libp2p (127.0.0.1) that try to stall or load honest nodes rather than
//! fool them: a peer that never acknowledges direct messages while luring nodes into asking it
//! for sync, and a peer that sends sync requests on gossip and sync responses nobody asked for.

// The tests take turns (`one_at_a_time`): they measure this process's memory and deadlines.
#![allow(clippy::await_holding_lock)]
// Each test prints its finality figures (`--nocapture`), which docs/security.md quotes.
#![allow(clippy::print_stdout)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rakis_core::consensus::{Commit, Commitment};
use rakis_core::envelope::{open, seal};
use rakis_core::protocol::CommitMsg;
use rakis_core::{InferenceId, Message, NodeHandle, NodeKey, RequestId, Transport};
use rakis_net::{NetConfig, TopicKind};

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the other tests of this file off while one runs.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `n` requests one after another from node 0 (quorum 3, `deadline`), checks that every
/// node ends each with the same result, and returns, for every node and request, how many ms
/// after the request's deadline the node had its outcome (sorted).
async fn finality_after_deadline(nodes: &[NodeHandle], n: u64, deadline: Duration) -> Vec<i64> {
    let mut late = Vec::new();
    for k in 0..n {
        let mut r = rakis_core::testing::request(
            MODEL,
            nodes[0].node_id(),
            nodes[0].now_ms(),
            3,
            deadline.as_millis() as u64,
        );
        r.nonce = k;
        let due = r.deadline_ms() as i64;
        let id = nodes[0].submit(r).await.unwrap();
        let waits = nodes.iter().map(|h| async move {
            h.wait_for_outcome(id, deadline + Duration::from_secs(20))
                .await
                .map(|o| (now_ms() as i64, o.joint_hash()))
        });
        let all = futures::future::join_all(waits).await;
        let mut joint = Vec::new();
        for (i, done) in all.into_iter().enumerate() {
            let (at, j) = done.unwrap_or_else(|e| panic!("request {k} at node {i}: {e}"));
            late.push(at - due);
            joint.push(j);
        }
        assert!(
            joint.windows(2).all(|w| w[0] == w[1]),
            "request {k}: {joint:?}"
        );
    }
    late.sort_unstable();
    late
}

/// Honest requests complete on time: p99 finality within 1 s after the deadline.
fn assert_on_time(late: &[i64]) {
    println!("finality after the deadline (ms): {late:?}");
    let p99 = late[(late.len() * 99).div_ceil(100) - 1];
    assert!(
        p99 <= 1_000,
        "finality after the deadline (ms, every node and request): {late:?}"
    );
}

/// No honest node blocked another (only `attackers` may be blocked), nor counted an invalid
/// message from it.
async fn assert_no_honest_peer_blocked(
    transports: &[Arc<rakis_net::Libp2pTransport>],
    attackers: &[rakis_core::NodeId],
) {
    for (i, t) in transports.iter().enumerate() {
        for e in t.peer_book().await.unwrap() {
            if !attackers.contains(&e.node) {
                assert!(!e.blocked && e.invalid_messages == 0, "node {i}: {e:?}");
            }
        }
    }
}

/// A commit of `key` for a request nobody made: each one makes a node ask its signer for sync.
fn orphan_commit(key: &NodeKey, net: &str, i: u64) -> Vec<u8> {
    let mut id = [0x0Fu8; 32];
    id[..8].copy_from_slice(&i.to_be_bytes());
    let commit = CommitMsg::signed(
        key,
        &rakis_core::consensus::network_digest(net),
        Commit {
            request_id: RequestId(id),
            node: key.node_id(),
            inference_id: InferenceId([7; 32]),
            commitment: Commitment([i as u8; 32]),
        },
        MODEL,
    );
    seal(key, net, now_ms(), Message::Commit(commit)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_acknowledges_stalls_no_node() {
    let _turn = one_at_a_time();
    let before = rss_bytes();
    let net = "hostile-silent";
    let (honest, rogue, rogue_key) = network(net, 5_000, || NetConfig::local_test(net)).await;
    let rogue = Arc::new(rogue);
    // The rogue takes every direct message and never acknowledges it (the honest side waits
    // up to its 5 s request timeout), and gossips three commits a second for requests nobody
    // made, each of which makes every node ask the rogue for that request's messages.
    rogue.withhold_acknowledgements().await.unwrap();
    let lure = {
        let (rogue, key) = (rogue.clone(), rogue_key.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let _ = rogue.broadcast(orphan_commit(&key, net, i)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let late = finality_after_deadline(&honest.nodes, 5, Duration::from_secs(2)).await;
    lure.abort();
    assert_on_time(&late);
    assert_no_honest_peer_blocked(&honest.transports, &[rogue_key.node_id()]).await;
    // The rogue was asked (the lure works) and holds a bounded number of sends per node.
    for n in &honest.nodes {
        let s = n.stats().await.unwrap();
        assert!(
            (1..=4).contains(&s.sends_in_flight),
            "sends awaiting the rogue: {}",
            s.sends_in_flight
        );
    }
    assert_within_one_node_ceiling(before);
    for n in &honest.nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_travels_only_on_the_direct_channel_and_only_when_asked() {
    let _turn = one_at_a_time();
    let before = rss_bytes();
    let net = "hostile-sync";
    let (honest, rogue, rogue_key) = network(net, 6_000, || NetConfig::local_test(net)).await;
    let mut rogue_events = rogue.events();
    let request = rakis_core::testing::request(
        MODEL,
        honest.nodes[0].node_id(),
        honest.nodes[0].now_ms(),
        3,
        1_500,
    );
    let id = honest.nodes[0].submit(request).await.unwrap();
    for n in &honest.nodes {
        n.wait_for_outcome(id, Duration::from_secs(20))
            .await
            .unwrap();
    }
    let sync_request = || {
        seal(
            &rogue_key,
            net,
            now_ms(),
            Message::SyncRequest { request_id: id },
        )
        .unwrap()
    };
    let responses_to_rogue = |bytes: &[Vec<u8>]| {
        bytes
            .iter()
            .filter(|b| {
                matches!(
                    open(b, net).map(|v| v.envelope.message),
                    Ok(Message::SyncResponse { .. })
                )
            })
            .count()
    };

    // On gossip, a sync request would make every node answer (up to 512 KiB each): the
    // transports reject it and nobody answers.
    rogue
        .publish_unchecked(TopicKind::Presence, sync_request())
        .await
        .unwrap();
    let got = collect_messages(&mut rogue_events, Duration::from_secs(2)).await;
    assert_eq!(
        responses_to_rogue(&got),
        0,
        "a gossiped sync request was answered"
    );
    for t in &honest.transports {
        let rogue_entry = t
            .peer_book()
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.node == rogue_key.node_id())
            .expect("the rogue is known");
        assert_eq!(rogue_entry.invalid_messages, 1, "{rogue_entry:?}");
    }

    // Asked over the direct channel, a node answers the asker, and only it.
    rogue
        .send(&honest.nodes[1].node_id(), sync_request())
        .await
        .unwrap();
    let got = collect_messages(&mut rogue_events, Duration::from_secs(2)).await;
    assert_eq!(responses_to_rogue(&got), 1);
    // A hundred more direct asks, back to back: answered at most once per 500 ms.
    let asking = std::time::Instant::now();
    for _ in 0..100 {
        let _ = rogue.send(&honest.nodes[1].node_id(), sync_request()).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let most = asking.elapsed().as_millis() as usize / 500 + 2;
    let got = collect_messages(&mut rogue_events, Duration::from_secs(2)).await;
    let answered = responses_to_rogue(&got);
    assert!(
        (1..=most).contains(&answered),
        "{answered} answers to 100 asks in {:?}",
        asking.elapsed()
    );

    // A sync response nobody asked for is dropped whole, before the signatures of the 400
    // messages it relays are checked (each used to be opened and counted as dropped).
    let relayed: Vec<Vec<u8>> = (0..400)
        .map(|i| status_message(&rogue_key, net, i))
        .collect();
    let unsolicited = seal(
        &rogue_key,
        net,
        now_ms(),
        Message::SyncResponse {
            request_id: id,
            envelopes: relayed,
        },
    )
    .unwrap();
    for n in &honest.nodes {
        let dropped_before = n.stats().await.unwrap().dropped_messages;
        rogue.send(&n.node_id(), unsolicited.clone()).await.unwrap();
        tokio::time::timeout(PATIENCE, async {
            while n.stats().await.unwrap().dropped_messages == dropped_before {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the unsolicited response was not seen");
        assert_eq!(
            n.stats().await.unwrap().dropped_messages,
            dropped_before + 1
        );
    }
    // No honest peer was harmed, and honest requests complete on time.
    assert_no_honest_peer_blocked(&honest.transports, &[rogue_key.node_id()]).await;
    assert_on_time(&finality_after_deadline(&honest.nodes, 3, Duration::from_secs(2)).await);
    assert_within_one_node_ceiling(before);
    for n in &honest.nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_valid_requests_from_one_requester_gets_only_its_share() {
    let _turn = one_at_a_time();
    let before = rss_bytes();
    let net = "hostile-flood";
    // Nodes that take 200 ms per request: 5 requests a second each.
    let (honest, rogue, rogue_key) = network_generating(
        net,
        7_000,
        || NetConfig::local_test(net),
        Duration::from_millis(200),
    )
    .await;
    let rogue = Arc::new(rogue);
    let mut events = honest.nodes[1].subscribe();
    // Ten valid requests a second from one requester, each with a 2 s deadline like the honest
    // ones: twice what a node generates. Earliest-deadline-first scheduling put every honest
    // request behind the flood's backlog (all five failed: 0 of 3 commits anywhere); the fair
    // order answers the least-served requester first.
    let flood = {
        let (rogue, key) = (rogue.clone(), rogue_key.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let mut r = rakis_core::testing::request(MODEL, key.node_id(), now_ms(), 3, 2_000);
                r.nonce = i;
                let bytes = seal(&key, net, now_ms(), Message::Request(r)).unwrap();
                let _ = rogue.broadcast(bytes).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late = finality_after_deadline(&honest.nodes, 5, Duration::from_secs(2)).await;
    flood.abort();
    assert_on_time(&late);
    assert_no_honest_peer_blocked(&honest.transports, &[rogue_key.node_id()]).await;
    // The flood was taken too, up to its share of the node's state budget (a quarter): the
    // nodes were loaded, not idle, and the rest was refused.
    let flooded = honest.nodes[1].requests().await.unwrap().len();
    assert!(flooded > 15, "{flooded} requests tracked");
    let mut refused = 0;
    loop {
        match events.try_recv() {
            Ok(rakis_core::NodeEvent::Ignored { node, .. }) => {
                assert_eq!(node, rogue_key.node_id());
                refused += 1;
            }
            Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    assert!(refused > 0, "nothing of the flood was refused");
    assert_within_one_node_ceiling(before);
    for n in &honest.nodes {
        n.shutdown().await.unwrap();
    }
}

/// Resident memory of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The documented ceiling of one node's protocol state (docs/security.md).
const NODE_CEILING: u64 = 512 * 1024 * 1024;

/// Asserts that the process (five honest nodes and the attackers) grew by less than one node's
/// documented ceiling since `before`.
fn assert_within_one_node_ceiling(before: u64) {
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < NODE_CEILING,
        "resident memory grew by {} MiB",
        grown >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_about_unknown_requests_fill_no_memory() {
    let _turn = one_at_a_time();
    let net = "hostile-fill";
    let (honest, rogue, rogue_key) = network(net, 8_000, || NetConfig::local_test(net)).await;
    // Signed results of 400 KiB for requests nobody made, 40 a second for 6 s (240 distinct
    // requests, 96 MiB): each is valid and kept, at every node, until its request arrives.
    let text = "x".repeat(400 * 1024);
    let before = rss_bytes();
    let mut peak = before;
    for i in 0..240u64 {
        let mut id = [0xF1u8; 32];
        id[..8].copy_from_slice(&i.to_be_bytes());
        let result = rakis_core::testing::forged_result(&rogue_key, RequestId(id), &text);
        let bytes = seal(&rogue_key, net, now_ms(), Message::ConsensusResult(result)).unwrap();
        rogue.broadcast(bytes).await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
        peak = peak.max(rss_bytes());
    }
    // Every node has read them by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    peak = peak.max(rss_bytes());
    let grown = peak.saturating_sub(before);
    // Five nodes, each keeping at most 1 MiB of orphans from one sender.
    assert!(
        grown < 200 * 1024 * 1024,
        "resident memory grew by {} MiB",
        grown / (1024 * 1024)
    );
    assert_no_honest_peer_blocked(&honest.transports, &[rogue_key.node_id()]).await;
    assert_on_time(&finality_after_deadline(&honest.nodes, 3, Duration::from_secs(2)).await);
    for n in &honest.nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_relay_between_flooders_and_the_others_is_not_blocked() {
    let _turn = one_at_a_time();
    let before = rss_bytes();
    // Honest nodes limit every signer to 50 messages/s and block after 100 violations in 10 s.
    // Three flooders keep a single connection each, to node 4, and flood through it: node 4
    // takes 50 messages a second of each and, as gossip does, forwards them to the others:
    // 150 a second arrive from node 4. Counted against the relay (as before), that blocked
    // node 4 everywhere; counted against each signer, nobody honest is blamed.
    let net = "hostile-relay";
    let limited = || NetConfig {
        rate_limit: rakis_net::RateLimit {
            per_second: 50.0,
            burst: 100,
        },
        max_rate_violations: 100,
        ..NetConfig::local_test(net)
    };
    let keys = keys(9_000, 5);
    let transports = start_mesh(&keys, |_| limited()).await;
    let nodes = spawn_nodes(net, &keys, &transports, GENERATION);
    let relay = transports[4].clone();
    let mut floods = Vec::new();
    let mut flooders = Vec::new();
    for f in 0..3u64 {
        let key = NodeKey::from_seed(9_090 + f);
        let rogue = rakis_net::Libp2pTransport::start(
            key.clone(),
            NetConfig {
                max_connections: 1,
                ..NetConfig::local_test(net).with_bootstrap(relay.listen_addrs())
            },
        )
        .await
        .unwrap();
        rogue.wait_for_topic_peers(1, PATIENCE).await.unwrap();
        flooders.push(key.node_id());
        floods.push(tokio::spawn(async move {
            for i in 0..3_000u32 {
                if rogue.broadcast(status_message(&key, net, i)).await.is_err() {
                    break; // the relay blocked this flooder
                }
                if i % 20 == 19 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            rogue
        }));
    }
    let _rogues = futures::future::join_all(floods).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_no_honest_peer_blocked(&transports, &flooders).await;
    for (i, t) in transports.iter().enumerate() {
        let peers = t.peers();
        for (j, k) in keys.iter().enumerate() {
            assert!(
                j == i || peers.contains(&k.node_id()),
                "node {i} lost node {j}"
            );
        }
    }
    assert_on_time(&finality_after_deadline(&nodes, 3, Duration::from_secs(2)).await);
    assert_within_one_node_ceiling(before);
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}
