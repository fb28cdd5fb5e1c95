//! Several Rakis nodes in one process, on real libp2p over loopback, with the real models
//! (SmolLM2-135M-Instruct answers, all-MiniLM-L6-v2 verifies): one request through commit,
//! reveal and consensus, told step by step.
//!
//! ```text
//! cargo run --release --example local_network
//! cargo run --release --example local_network -- --nodes 5 --quorum 4 --prompt "Why is the sky blue?"
//! ```
//!
//! Options: `--nodes N` (3), `--quorum Q` (= nodes), `--prompt TEXT`, `--max-tokens N` (48),
//! `--temperature T` (0.7), `--deadline-ms MS` (10000), `--serve` (keep the network running and
//! print how to reach it with the `submit_request` example).

#![allow(clippy::print_stdout)]

use std::time::Duration;

use rakis_core::{InferenceRequest, SecurityFrame};
use rakis_examples::{
    load_models, names, narrate, print_outcome, start_network, Args, BoxError, MODEL,
};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    rakis_examples::init_logging();
    let args = Args::from_env();
    let n: usize = args.num("nodes", 3)?;
    let quorum: u32 = args.num("quorum", n as u32)?;
    let prompt = args.get(
        "prompt",
        "What is the capital of France? Answer in one sentence.",
    );
    let max_tokens: u32 = args.num("max-tokens", 48)?;
    let temperature: f32 = args.num("temperature", 0.7)?;
    let deadline_ms: u64 = args.num("deadline-ms", 10_000)?;
    if n == 0 || quorum == 0 || quorum as usize > n {
        return Err("need at least one node and 1 <= quorum <= nodes".into());
    }
    let network = format!("rakis-local-{}", std::process::id());
    println!("Rakis local network: {n} nodes on libp2p over 127.0.0.1 (network {network})");

    // One copy of each model, shared by the nodes of this process (2 generation threads).
    let models = load_models(2)?;
    // Each node: a libp2p transport, the engine, the embedder (see rakis_examples::start_node
    // for the assembly: Node::builder().key(..).config(..).transport(..).engine(..).embedder(..)).
    let nodes = start_network(n, &network, &models, |_, b| b).await?;
    let names = names(&nodes);
    let narration = narrate(&nodes);

    let mut request = InferenceRequest::new(
        prompt.clone(),
        vec![MODEL.into()],
        nodes[0].handle.node_id(),
        nodes[0].handle.now_ms(),
    );
    request.temperature = temperature;
    request.max_tokens = max_tokens;
    request.frame = SecurityFrame {
        quorum,
        max_time_ms: deadline_ms,
        ..SecurityFrame::default()
    };
    println!(
        "[request] {:?}\n[request] quorum {quorum}, commit deadline {:.0} s, ball radius {:.2} of the bits, {:.0} % of the committers inside, temperature {temperature}",
        prompt,
        deadline_ms as f64 / 1000.0,
        request.frame.sec_distance,
        request.frame.sec_percentage * 100.0
    );
    let id = nodes[0].handle.submit(request).await?;
    println!("[request] {} broadcast by node A", id.short());

    // Every node computes consensus on its own; they must agree.
    let mut outcomes = Vec::new();
    for node in &nodes {
        let outcome = node
            .handle
            .wait_for_outcome(id, Duration::from_millis(deadline_ms + 60_000))
            .await?;
        outcomes.push(outcome);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    print_outcome(&outcomes[0], &names);
    narration.print_phases();
    let digests: Vec<_> = outcomes.iter().map(|o| o.decision.clone()).collect();
    if digests.windows(2).all(|w| w[0] == w[1]) {
        println!("[result] all {n} nodes computed the same result and signed it");
    } else {
        return Err("the nodes computed different results".into());
    }

    if args.flag("serve") {
        let addr = nodes[0].transport.listen_addrs()[0].clone();
        let members: String = nodes
            .iter()
            .map(|n| format!(" --member {}", n.handle.node_id()))
            .collect();
        println!(
            "\n[serve] the network keeps running. In another terminal:\n  cargo run --release --example submit_request -- --network {network} --peer {addr}{members}\n[serve] Ctrl-C to stop."
        );
        tokio::signal::ctrl_c().await?;
    }
    narration.stop();
    for node in &nodes {
        node.handle.shutdown().await?;
    }
    Ok(())
}
