//! End to end on a real EVM chain: anvil, the Rakis oracle contract, a consumer contract that
//! asks a question, nodes with the real models, staked in the oracle's registry, that read the
//! request from the chain, agree as the request's committee, and write the answer back; the
//! consumer is called back, the submitter is reimbursed its gas and the nodes are paid.
//!
//! ```text
//! bash scripts/fetch-tools.sh          # anvil and solc from npm, once
//! cargo run --release --example chain_oracle
//! cargo run --release --example chain_oracle -- --nodes 4 --prompt "What is 2 + 2?"
//! ```
//!
//! Options: `--nodes N` (3), `--prompt TEXT`, `--deadline-ms MS` (10000).

#![allow(clippy::print_stdout)]

use std::time::Duration;

use alloy::primitives::{utils::format_ether, Address as EvmAddress, FixedBytes, U256};
use alloy::providers::Provider;
use rakis_chain::contracts::SampleConsumer;
use rakis_chain::dev::{AnvilOptions, LocalChain};
use rakis_chain::evm::{evm_address, signer_from_node_key};
use rakis_chain::EvmChain;
use rakis_core::{NodeKey, RequestId};
use rakis_examples::{
    load_models, members_of, narrate, start_network_with_keys, Args, BoxError, MODEL,
};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    rakis_examples::init_logging();
    let args = Args::from_env();
    let n: usize = args.num("nodes", 3)?;
    let prompt = args.get(
        "prompt",
        "What is the capital of France? Answer in one sentence.",
    );
    let deadline_ms: u64 = args.num("deadline-ms", 10_000)?;
    if !(1..=8).contains(&n) {
        return Err("--nodes must be 1 to 8 (anvil funds 10 accounts)".into());
    }

    // 1. A local chain with the oracle (1 ether of stake per node, epochs a second apart).
    let chain = LocalChain::start(AnvilOptions::default()).await?;
    println!(
        "[chain] anvil at {} (chain id {}), RakisOracle deployed at {}",
        chain.rpc_url(),
        chain.anvil.chain_id(),
        chain.oracle
    );

    // 2. Nodes: staked in the registry (by anvil's account 0) and members of the first epoch;
    //    each reads requests from the oracle, takes its committees from the registry's epochs,
    //    and submits results, paying gas with a funded anvil account.
    let models = load_models(2)?;
    let network = format!("rakis-oracle-{}", std::process::id());
    let keys: Vec<NodeKey> = (0..n).map(|_| NodeKey::generate()).collect();
    let epoch = chain.register_and_start_epoch(&keys).await?;
    let mut chains = Vec::with_capacity(n);
    for (i, key) in keys.iter().enumerate() {
        let evm = EvmChain::connect(chain.config(), chain.signer(i + 1)?).await?;
        println!(
            "[node {}] {} staked as {}, member of epoch {epoch}",
            (b'A' + i as u8) as char,
            key.node_id().short(),
            evm_address(&key.address())
        );
        chains.push(evm);
    }
    let members = members_of(&keys)?;
    let nodes = start_network_with_keys(keys.clone(), &network, &members, &models, |i, b| {
        b.membership(chains[i].membership())
            .request_source(chains[i].clone())
            .chain_sink(chains[i].clone())
    })
    .await?;
    let narration = narrate(&nodes);

    // 3. A user deploys the consumer contract and asks, paying 0.01 ether.
    let user = chain.connect(9).await?;
    let consumer = SampleConsumer::deploy(user.provider().clone(), chain.oracle).await?;
    println!("[user] SampleConsumer deployed at {}", consumer.address());
    let payment = U256::from(10_000_000_000_000_000u128);
    let receipt = consumer
        .ask(prompt.clone(), MODEL.into(), n as u32, deadline_ms)
        .value(payment)
        .send()
        .await?
        .get_receipt()
        .await?;
    let id = RequestId(consumer.lastRequest().call().await?.0);
    println!(
        "[user] asked {prompt:?} in tx {} → Rakis request {}",
        receipt.transaction_hash,
        id.short()
    );

    // 4. Wait for the consumer's callback.
    let until = tokio::time::Instant::now() + Duration::from_millis(deadline_ms + 90_000);
    let answer = loop {
        let a = consumer.answers(FixedBytes(id.0)).call().await?;
        if !a.is_empty() {
            break a;
        }
        if tokio::time::Instant::now() > until {
            return Err("no answer reached the consumer contract in time".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("[consumer] rakisCallback received: {answer:?}");
    println!(
        "[chain] ResultSubmitted events for the request: {}",
        user.result_events(&id).await?
    );

    // 5. Rewards: the submitter's gas back, the rest shared by the accepted nodes the
    //    committee signed for; node A withdraws.
    for (node, key) in nodes.iter().zip(&keys) {
        let reward = user.credit_of(evm_address(&key.address())).await?;
        println!("[rewards] node {}: {} ETH", node.name, format_ether(reward));
    }
    let node_a = evm_address(&keys[0].address());
    let gas_money = alloy::rpc::types::TransactionRequest::default()
        .to(node_a)
        .value(U256::from(1_000_000_000_000_000u128));
    user.provider()
        .send_transaction(gas_money)
        .await?
        .get_receipt()
        .await?;
    let as_a = EvmChain::connect(chain.config(), signer_from_node_key(&keys[0])).await?;
    let wallet = EvmAddress::repeat_byte(0xa1);
    as_a.withdraw(wallet).await?;
    println!(
        "[rewards] node A withdrew to {wallet}: balance now {} ETH",
        format_ether(user.provider().get_balance(wallet).await?)
    );

    narration.stop();
    for node in &nodes {
        node.handle.shutdown().await?;
    }
    Ok(())
}
