//! 200 concurrent chat completions through the gateway of a 3-node network on libp2p over
//! loopback (scripted engines): none is lost; each is answered with a verification that holds,
//! or refused with 429 or 504. (Latencies: `cargo bench -p rakis-node --bench gateway`.)

#![allow(clippy::print_stderr)]

mod common;

use common::Reply;
use rakis_node::Verification;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_are_answered_or_refused() {
    let net = common::busy_network().await;
    let replies = common::burst(&net.url, 200).await;
    let mut answered = 0;
    let mut refused = 0;
    let mut ids = std::collections::BTreeSet::new();
    let mut codes = std::collections::BTreeMap::new();
    for Reply { status, body, .. } in replies {
        match status {
            200 => {
                let (v, answer) = Verification::from_json(&body).unwrap();
                v.check(net.members.epoch(), answer.as_deref()).unwrap();
                assert!(ids.insert(v.request_id), "two answers for one request");
                answered += 1;
            }
            429 | 504 => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                *codes
                    .entry(v["error"]["code"].as_str().unwrap_or("").to_string())
                    .or_insert(0) += 1;
                refused += 1
            }
            other => panic!("status {other}: {body}"),
        }
    }
    eprintln!("200 concurrent: {answered} answered, {refused} refused: {codes:?}");
    assert_eq!(answered + refused, 200);
    // On a quiet 2-core machine all 200 are answered (20 s, debug build); a starved one
    // refuses some with 504, which is allowed, but most must get through.
    assert!(answered >= 150, "only {answered} of 200 answered");
    net.shutdown().await;
}
