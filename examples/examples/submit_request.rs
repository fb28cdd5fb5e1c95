//! A light client: a node with no model that submits a request to a running Rakis network and
//! waits for the result certified by the request's committee: signed results of more than two
//! thirds of the committee drawn from the network's members, over one digest, checked here.
//!
//! ```text
//! # terminal 1: a network that keeps running
//! cargo run --release --example local_network -- --serve
//! # terminal 2: the command it prints, for example
//! cargo run --release --example submit_request -- --network rakis-local-1234 \
//!     --peer /ip4/127.0.0.1/tcp/40001/p2p/16Uiu2HAm… --member 02ab… --member 03cd… \
//!     --prompt "Name a primary colour."
//! ```
//!
//! Without `--peer`, it first starts a network of `--nodes N` (3) nodes in this process, then
//! submits to it over libp2p as a separate light node.
//!
//! Options: `--peer MULTIADDR` (repeatable), `--member NODE_ID` (repeatable: the network's
//! members), `--network ID`, `--prompt TEXT`, `--quorum Q` (3), `--max-tokens N` (48),
//! `--deadline-ms MS` (10000), `--nodes N`.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use rakis_core::{NodeId, NodeKey, StaticMembership};
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
    let mut members = args
        .all("member")
        .iter()
        .map(|m| m.parse::<NodeId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--member: {e}"))?;

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
        members = own_network.iter().map(|n| n.handle.node_id()).collect();
    }
    if members.is_empty() {
        return Err("name the network's members (--member NODE_ID, repeated)".into());
    }
    let members = StaticMembership::equal(members)?;

    // The light client: a key, a transport, no engine, no embedder.
    let client = start_node(
        "client",
        NodeKey::generate(),
        &network,
        peers.clone(),
        &members,
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

    let id = client
        .handle
        .request(prompt.clone())
        .models([MODEL])
        .temperature(0.0)
        .max_tokens(max_tokens)
        .quorum(quorum)
        .deadline(Duration::from_millis(deadline_ms))
        .submit()
        .await?;
    println!(
        "[client] submitted {} {:?}; waiting for the committee's certificate…",
        id.short(),
        prompt
    );

    // Wait for more than two thirds of the request's committee to sign one result digest; the
    // handle checks each signature, the committee (drawn from the members) and the count.
    let certificate = client
        .handle
        .wait_for_certified_result(id, Duration::from_millis(deadline_ms + 60_000))
        .await?;
    for r in &certificate.signatures {
        println!(
            "[client] committee member {} signed result digest {} ({} accepted answers)",
            r.signer.short(),
            r.result_digest.short(),
            r.accepted.len()
        );
    }
    let result = certificate.result().ok_or("an empty certificate")?;
    println!(
        "[client] certified by {} of the committee's {} members: {:?}",
        certificate.signatures.len(),
        certificate.committee.len(),
        result.output
    );
    client.handle.shutdown().await?;
    for n in &own_network {
        n.handle.shutdown().await?;
    }
    Ok(())
}
