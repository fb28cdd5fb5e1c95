//! A light client: a node with no model that submits a request to a running Rakis network and
//! waits for the agreed result, checking the signed results the answering nodes send back.
//!
//! ```text
//! # terminal 1: a network that keeps running
//! cargo run --release --example local_network -- --serve
//! # terminal 2: the command it prints, for example
//! cargo run --release --example submit_request -- --network rakis-local-1234 \
//!     --peer /ip4/127.0.0.1/tcp/40001/p2p/16Uiu2HAm… --prompt "Name a primary colour."
//! ```
//!
//! Without `--peer`, it first starts a network of `--nodes N` (3) nodes in this process, then
//! submits to it over libp2p as a separate light node.
//!
//! Options: `--peer MULTIADDR` (repeatable), `--network ID`, `--prompt TEXT`, `--quorum Q` (3),
//! `--max-tokens N` (48), `--deadline-ms MS` (10000), `--nodes N`.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Duration;

use rakis_core::{InferenceRequest, NodeEvent, NodeKey, SecurityFrame};
use rakis_examples::{load_models, start_network, start_node, Args, BoxError, MODEL};
use rakis_net::Multiaddr;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    rakis_examples::init_logging();
    let args = Args::from_env();
    let quorum: u32 = args.num("quorum", 3)?;
    let max_tokens: u32 = args.num("max-tokens", 48)?;
    let deadline_ms: u64 = args.num("deadline-ms", 10_000)?;
    let prompt = args.get(
        "prompt",
        "What is the capital of Italy? Answer in one sentence.",
    );
    let mut peers: Vec<Multiaddr> = args
        .all("peer")
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--peer: {e}"))?;
    let mut network = args.get("network", "rakis-local");

    // No network given: start one here (the light client still talks to it over libp2p).
    let mut own_network = Vec::new();
    if peers.is_empty() {
        let n: usize = args.num("nodes", 3)?;
        network = format!("rakis-light-{}", std::process::id());
        println!(
            "[setup] no --peer given: starting a {n}-node network in this process ({network})"
        );
        let models = load_models(2)?;
        own_network = start_network(n, &network, &models, |_, b| b).await?;
        peers = own_network
            .iter()
            .flat_map(|n| n.transport.listen_addrs())
            .collect();
    }

    // The light client: a key, a transport, no engine, no embedder.
    let client = start_node(
        "client",
        NodeKey::generate(),
        &network,
        peers.clone(),
        None,
        |b| b,
    )
    .await?;
    println!(
        "[client] light node {} dialling {} peer(s) on network {network}",
        client.handle.node_id().short(),
        peers.len()
    );
    client
        .transport
        .wait_for_topic_peers(1, Duration::from_secs(30))
        .await?;

    let mut request = InferenceRequest::new(
        prompt.clone(),
        vec![MODEL.into()],
        client.handle.node_id(),
        client.handle.now_ms(),
    );
    request.temperature = 0.0;
    request.max_tokens = max_tokens;
    request.frame = SecurityFrame {
        quorum,
        max_time_ms: deadline_ms,
        ..SecurityFrame::default()
    };
    let mut events = client.handle.subscribe();
    let id = client.handle.submit(request).await?;
    println!(
        "[client] submitted {} {:?}; waiting for signed results…",
        id.short(),
        prompt
    );

    // Collect the nodes' signed results (each checked: signature, output hash, digest) until
    // `quorum`-many of them name the same result digest.
    let until = tokio::time::Instant::now() + Duration::from_millis(deadline_ms + 60_000);
    let mut by_digest: BTreeMap<_, Vec<_>> = BTreeMap::new();
    loop {
        let ev = tokio::time::timeout_at(until, events.recv())
            .await
            .map_err(|_| "no agreed result in time")??;
        match ev {
            NodeEvent::PeerResult { request_id, result } if request_id == id => {
                result
                    .verify()
                    .map_err(|e| format!("a node sent a bad result: {e}"))?;
                println!(
                    "[client] node {} signed result digest {} ({} accepted answers)",
                    result.signer.short(),
                    result.result_digest.short(),
                    result.accepted.len()
                );
                let signers = by_digest.entry(result.result_digest).or_default();
                signers.push(result.clone());
                if signers.len() >= quorum.min(result.accepted.len() as u32) as usize {
                    println!(
                        "[client] agreed by {} nodes: {:?}",
                        signers.len(),
                        result.output
                    );
                    break;
                }
            }
            NodeEvent::Failed { request_id, reason } if request_id == id => {
                return Err(format!("the request failed: {reason}").into());
            }
            _ => {}
        }
    }
    client.handle.shutdown().await?;
    for n in &own_network {
        n.handle.shutdown().await?;
    }
    Ok(())
}
