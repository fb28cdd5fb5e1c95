//! Committees on real libp2p: nodes outside the membership commit, reveal and sign over the same
//! gossip mesh as the members; the members ignore them and a light client trusts only the
//! committee's certificate.

mod common;

use std::time::Duration;

use common::*;
use rakis_core::envelope::seal;
use rakis_core::{Message, Node, NodeConfig, NodeEvent, NodeKey, StaticMembership, Transport};
use rakis_net::NetConfig;

const LIE: &str = "Lyon is the capital city of the French republic, everybody knows.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_on_the_mesh_are_ignored_and_a_light_client_takes_only_the_certificate() {
    let net = "committee-p2p";
    let member_keys = keys(4_000, 5);
    let outsider_keys = keys(4_100, 4);
    let client_key = NodeKey::from_seed(4_200);
    let all: Vec<NodeKey> = member_keys
        .iter()
        .chain(&outsider_keys)
        .chain([&client_key])
        .cloned()
        .collect();
    let transports = start_mesh(&all, |_| NetConfig::local_test(net)).await;
    let members = StaticMembership::equal(member_keys.iter().map(|k| k.node_id())).unwrap();

    let honest: Vec<_> = (0..5)
        .map(|i| {
            spawn_member(
                net,
                member_keys[i].clone(),
                transports[i].clone(),
                ANSWERS[i],
                &members,
            )
        })
        .collect();
    // Outsiders: full nodes of an open network that answer a lie (they commit, reveal and sign).
    let _outsiders: Vec<_> = (0..4)
        .map(|i| {
            spawn_node(
                net,
                outsider_keys[i].clone(),
                transports[5 + i].clone(),
                LIE,
            )
        })
        .collect();
    let client = Node::builder()
        .config(NodeConfig::local_test())
        .membership(members.clone())
        .key(client_key.clone())
        .transport(transports[9].clone())
        .build()
        .unwrap()
        .spawn()
        .0;
    let mut events = honest[0].subscribe();

    let request = rakis_core::testing::request(MODEL, client.node_id(), client.now_ms(), 5, 2_000);
    let id = client.submit(request.clone()).await.unwrap();
    // Forged results reach the client first: one from an outsider, and one per outsider key.
    for key in &outsider_keys {
        let bytes = seal(
            key,
            net,
            now_ms(),
            Message::ConsensusResult(rakis_core::testing::forged_result(key, id, LIE)),
        )
        .unwrap();
        transports[5].broadcast(bytes).await.unwrap();
    }

    let certificate = client
        .wait_for_certified_result(id, Duration::from_secs(30))
        .await
        .unwrap();
    certificate.verify(&request, members.epoch()).unwrap();
    let result = certificate.result().unwrap();
    assert!(
        ANSWERS.contains(&result.output.as_str()),
        "{}",
        result.output
    );
    assert!(certificate
        .signatures
        .iter()
        .all(|r| members.epoch().is_member(&r.signer)));
    for h in &honest {
        let o = h
            .wait_for_outcome(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(o.committed, 5, "only the members' commits count");
        assert!(o
            .accepted
            .iter()
            .all(|a| members.epoch().is_member(&a.node)));
        assert_eq!(o.selected().unwrap().output, result.output);
    }
    // The members said why they ignored the outsiders' commits, reveals and results.
    let mut ignored = std::collections::BTreeSet::new();
    while let Ok(e) = events.try_recv() {
        if let NodeEvent::Ignored { node, .. } = e {
            ignored.insert(node);
        }
    }
    for key in &outsider_keys {
        assert!(
            ignored.contains(&key.node_id()),
            "{} not reported",
            key.node_id().short()
        );
    }
}
