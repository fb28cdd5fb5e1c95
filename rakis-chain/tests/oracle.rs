//! The oracle contract and `EvmChain` against a real anvil node (installed by
//! `scripts/fetch-tools.sh`): requests from a consumer contract, consensus by real node drivers
//! under the registry's committee rule, results submitted once with the committee's signatures,
//! payouts, and an anvil restart in the middle of a submission. The attacks on the old oracle
//! live in `tests/attacks.rs`.

mod common;

use std::time::Duration;

use alloy::primitives::{Address as EvmAddress, FixedBytes, U256};
use alloy::providers::Provider;
use common::*;
use futures::StreamExt;
use rakis_chain::contracts::SampleConsumer;
use rakis_chain::dev::{spawn_anvil, AnvilOptions, LocalChain};
use rakis_chain::evm::{evm_address, signer_from_node_key};
use rakis_chain::{EvmChain, EvmConfig, EvmError, OracleRevert};
use rakis_core::testing::{HashEmbedder, HubConfig, MemoryHub, ScriptedEngine};
use rakis_core::{
    ChainError, ChainSink, Node, NodeConfig, NodeEvent, NodeHandle, NodeKey, RequestSource,
};

/// Starts `n` nodes on one in-memory network, registered and members of the chain's first
/// epoch. Node `i` reads requests from the chain and submits to it, paying with anvil account
/// `i + 1`; its membership is the chain's registry.
async fn start_nodes(chain: &LocalChain, n: usize) -> Vec<NodeHandle> {
    let keys: Vec<NodeKey> = (0..n).map(node_key).collect();
    chain.register_and_start_epoch(&keys).await.unwrap();
    let hub = MemoryHub::new(HubConfig {
        delay: Duration::from_millis(5),
        ..HubConfig::default()
    });
    let mut handles = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let evm = EvmChain::connect(chain.config(), chain.signer(i + 1).unwrap())
            .await
            .unwrap();
        let node = Node::builder()
            .membership(evm.membership())
            .key(key.clone())
            .config(NodeConfig {
                reveal_window: Duration::from_millis(1_500),
                status_interval: None,
                ..NodeConfig::default()
            })
            .transport(hub.join(key.node_id()))
            .engine(ScriptedEngine::constant(MODEL, ANSWER))
            .embedder(HashEmbedder::default_model())
            .request_source(evm.clone())
            .chain_sink(evm)
            .build()
            .unwrap();
        handles.push(node.spawn().0);
    }
    handles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_contract_gets_the_agreed_output_and_nodes_are_paid() {
    init_tracing();
    let chain = LocalChain::start(AnvilOptions::default()).await.unwrap();
    let nodes = start_nodes(&chain, 3).await;
    let mut events = nodes[0].subscribe();

    // The consumer contract asks through the oracle, paying 0.3 ether.
    let user = chain.connect(9).await.unwrap();
    let consumer = SampleConsumer::deploy(user.provider().clone(), chain.oracle)
        .await
        .unwrap();
    let payment = U256::from(300_000_000_000_000_000u128);
    mined(
        consumer
            .ask(
                "What is the capital of France?".into(),
                MODEL.into(),
                3,
                4_000,
            )
            .value(payment),
    )
    .await;
    let id = rakis_core::RequestId(consumer.lastRequest().call().await.unwrap().0);

    // The nodes read the event (the contract's id is the node's: checked while reading),
    // agree as the committee, and one of them stores the result; the consumer is called back.
    let output = wait_fulfilled(&user, &id, Duration::from_secs(60)).await;
    assert_eq!(output, ANSWER);
    assert_eq!(consumer.lastAnswer().call().await.unwrap(), ANSWER);
    assert_eq!(
        consumer.answers(FixedBytes(id.0)).call().await.unwrap(),
        ANSWER
    );
    let outcome = nodes[0]
        .wait_for_outcome(id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(outcome.committed, 3);

    // Every node's driver reports the sink settled; exactly one ResultSubmitted event exists.
    for n in &nodes {
        let mut rx = n.subscribe();
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut settled = false;
        while !settled && tokio::time::Instant::now() < until {
            if let Ok(Ok(NodeEvent::Submitted { request_id, .. })) =
                tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
            {
                settled = request_id == id;
            }
            if !settled {
                // The event may have gone before we subscribed: the chain is the witness.
                settled = user.is_submitted(&id).await.unwrap();
            }
        }
        assert!(settled);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(user.result_events(&id).await.unwrap(), 1);
    let mut saw_submitted = false;
    while let Ok(ev) = events.try_recv() {
        if let NodeEvent::SubmitFailed { error, .. } = &ev {
            panic!("a submission failed: {error}");
        }
        saw_submitted |= matches!(ev, NodeEvent::Submitted { request_id, .. } if request_id == id);
    }
    assert!(saw_submitted);

    // The submitter got its gas back from the payment, the three accepted nodes the rest.
    let submitted = submitted_event(&user, &id).await;
    assert!(submitted.reimbursed > U256::ZERO);
    let mut total = submitted.reimbursed;
    let mut rewards = Vec::new();
    for i in 0..3 {
        let node = evm_address(&node_key(i).address());
        let reward = user.credit_of(node).await.unwrap();
        assert!(reward > U256::ZERO, "node {i} got no reward");
        rewards.push(reward);
        total += reward;
    }
    assert!(rewards
        .iter()
        .all(|r| rewards[0].abs_diff(*r) < U256::from(3)));
    assert_eq!(total, payment);
    let node0 = evm_address(&node_key(0).address());
    // Gas for the node key's own withdrawal.
    let tx = alloy::rpc::types::TransactionRequest::default()
        .to(node0)
        .value(U256::from(10_000_000_000_000_000u128));
    user.provider()
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let as_node = EvmChain::connect(chain.config(), signer_from_node_key(&node_key(0)))
        .await
        .unwrap();
    let to = EvmAddress::repeat_byte(0x42);
    as_node.withdraw(to).await.unwrap();
    assert_eq!(user.provider().get_balance(to).await.unwrap(), rewards[0]);
    assert_eq!(user.credit_of(node0).await.unwrap(), U256::ZERO);
    match as_node.withdraw(to).await {
        Err(EvmError::Reverted(OracleRevert::NothingToWithdraw { .. })) => {}
        other => panic!("second withdrawal: {other:?}"),
    }
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_sends_only_what_the_contract_counts() {
    init_tracing();
    let chain = LocalChain::start(AnvilOptions::default()).await.unwrap();
    let evm = EvmChain::connect(
        EvmConfig {
            stagger: Duration::ZERO,
            ..chain.config()
        },
        chain.signer(1).unwrap(),
    )
    .await
    .unwrap();
    let keys: Vec<NodeKey> = (0..5).map(node_key).collect();
    chain.register_and_start_epoch(&keys).await.unwrap();
    let s = request_and_sign(&evm, &keys, 3, 2_000).await;
    // A committee of 5 needs 4 signatures: with 3 the sink refuses (typed, no transaction).
    assert!(matches!(
        evm.submit(&s.request, &s.results[0], &s.results[1..3])
            .await
            .unwrap_err(),
        ChainError::NotEnoughSignatures { have: 3, need: 4 }
    ));
    // A signature by a key outside the committee is left out rather than sent.
    let outsider = resign(&s.results[3..4], &[node_key(40)]);
    assert!(matches!(
        evm.submit(
            &s.request,
            &s.results[0],
            &[&s.results[1..3], &outsider[..]].concat()
        )
        .await
        .unwrap_err(),
        ChainError::NotEnoughSignatures { have: 3, need: 4 }
    ));
    // Before the deadline the contract would refuse (TooEarly): the sink waits for the chain's
    // clock and then lands the result once.
    let receipt = evm
        .submit(&s.request, &s.results[0], &s.results[1..])
        .await
        .unwrap();
    assert!(receipt.reference.starts_with("0x"));
    assert!(evm.is_submitted(&s.request.id()).await.unwrap());
    assert!(matches!(
        evm.submit(&s.request, &s.results[0], &s.results[1..])
            .await
            .unwrap_err(),
        ChainError::AlreadySubmitted
    ));
    assert_eq!(evm.result_events(&s.request.id()).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anvil_restarted_during_a_submission_still_gets_the_result_exactly_once() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("anvil-state.json");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let options = AnvilOptions {
        port: Some(port),
        state: Some(state.clone()),
        // Transactions wait in the pool for the next block: anvil can be stopped while the
        // result transaction is sent but not mined.
        block_time: Some(2.0),
        ..AnvilOptions::default()
    };
    let chain = LocalChain::start(options.clone()).await.unwrap();
    let evm = EvmChain::connect(
        EvmConfig {
            retry_for: Duration::from_secs(90),
            receipt_timeout: Duration::from_secs(3),
            stagger: Duration::ZERO,
            ..chain.config()
        },
        chain.signer(1).unwrap(),
    )
    .await
    .unwrap();
    let keys: Vec<NodeKey> = (0..3).map(node_key).collect();
    chain.register_and_start_epoch(&keys).await.unwrap();
    let s = request_and_sign(&evm, &keys, 3, 1_000).await;
    // Past the deadline, and the periodic state dump includes the request and registrations.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let submitter = {
        let evm = evm.clone();
        let (request, results) = (s.request.clone(), s.results.clone());
        tokio::spawn(async move {
            evm.submit_result(&request, &results[0], &results[1..])
                .await
        })
    };
    // Wait until the result transaction sits in anvil's pool, then stop anvil before the block.
    let probe =
        alloy::providers::ProviderBuilder::new().connect_http(chain.rpc_url().parse().unwrap());
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pending: serde_json::Value =
            probe.raw_request("txpool_status".into(), ()).await.unwrap();
        if pending["pending"]
            .as_str()
            .map(|s| s != "0x0")
            .unwrap_or(false)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the submission never reached the pool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let LocalChain { anvil, oracle } = chain;
    drop(anvil);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !submitter.is_finished(),
        "the submission ended while anvil was down"
    );

    // Back on the same port with the saved state: the request is there, the result is not.
    let anvil = spawn_anvil(&options).unwrap();
    let tx = tokio::time::timeout(Duration::from_secs(120), submitter)
        .await
        .expect("the submission did not finish after the restart")
        .unwrap()
        .unwrap();
    assert!(tx.starts_with("0x"));
    let restarted = LocalChain { anvil, oracle };
    let check = restarted.connect(2).await.unwrap();
    let id = s.request.id();
    assert_eq!(
        check.result_of(&id).await.unwrap().as_deref(),
        Some(s.results[0].output.as_str())
    );
    assert_eq!(check.result_events(&id).await.unwrap(), 1);
    // Submitting again changes nothing.
    assert!(matches!(
        check
            .submit_result(&s.request, &s.results[0], &s.results[1..])
            .await,
        Err(EvmError::Reverted(OracleRevert::AlreadyFulfilled))
    ));
    assert_eq!(check.result_events(&id).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_source_reports_outages_and_resumes() {
    init_tracing();
    let (chain, evm, _) = chain_with_members(1).await;
    let mut stream = evm.requests();
    let id = request(&evm, &chain_params("One.", 1, 60_000)).await;
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.id(), id);
    match &first.origin {
        rakis_core::Origin::Chain {
            chain_id,
            contract,
            log_index,
            tx_hash,
            block_hash,
        } => {
            assert_eq!(*chain_id, 31_337);
            assert_eq!(evm_address(contract), chain.oracle);
            assert_eq!(*log_index, 0);
            // The committee's beacon is the hash of the block that holds the request.
            let receipt = evm
                .provider()
                .get_transaction_receipt(alloy::primitives::B256::from(tx_hash.0))
                .await
                .unwrap()
                .expect("the request's receipt");
            assert_eq!(block_hash.0, receipt.block_hash.expect("mined").0);
            assert_eq!(first.committee_beacon(), Some(*block_hash));
        }
        other => panic!("origin {other:?}"),
    }
    // The request source read the epoch before the request: the node's membership knows it.
    let epoch =
        rakis_core::membership::Membership::epoch_at(&evm.membership(), first.created_at_ms)
            .expect("the request's epoch");
    assert_eq!(epoch.number(), 0);
    assert!(epoch.is_member(&node_key(0).node_id()));
    // A wrong chain id or an address without code are refused at connect.
    let wrong = EvmChain::connect(
        EvmConfig {
            chain_id: Some(1),
            ..chain.config()
        },
        chain.signer(1).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        wrong,
        EvmError::WrongChain {
            expected: 1,
            actual: 31_337
        }
    ));
    let nothing = EvmChain::connect(
        EvmConfig::local_dev(chain.rpc_url(), EvmAddress::repeat_byte(7)),
        chain.signer(1).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(nothing, EvmError::NoContract(_)));
    // Anvil gone: the stream reports it (once) rather than ending.
    drop(chain);
    let err = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ChainError::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorganisation_that_replaces_a_request_is_read_again() {
    init_tracing();
    let (_chain, evm, _) = chain_with_members(1).await;
    let mut stream = evm.requests();
    // A request, read by the source; then the chain drops its block (a reorganisation to the
    // block before it) and another request lands at the same height on the new branch.
    let snapshot: alloy::primitives::U256 = evm
        .provider()
        .raw_request("evm_snapshot".into(), ())
        .await
        .unwrap();
    let first = request(&evm, &chain_params("First.", 1, 60_000)).await;
    let seen = next(&mut stream).await;
    assert_eq!(seen.id(), first);
    let height = evm.provider().get_block_number().await.unwrap();
    let reverted: bool = evm
        .provider()
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .unwrap();
    assert!(reverted);
    let second = request(&evm, &chain_params("Second.", 1, 60_000)).await;
    assert_eq!(evm.provider().get_block_number().await.unwrap(), height);
    // Before: the source had read that height and never looked at it again.
    let again = next(&mut stream).await;
    assert_eq!(again.id(), second);
    assert!(evm.request(&first).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_request_keeps_its_committee_beacon() {
    init_tracing();
    let (_chain, evm, keys) = chain_with_members(3).await;
    let mut stream = evm.requests();
    // Ten minutes to answer; the chain makes more than 256 blocks before the result comes.
    let s = request_and_sign(&evm, &keys, 3, 600_000).await;
    let id = s.request.id();
    assert_eq!(next(&mut stream).await.id(), id);
    mine(&evm, 230).await;
    // The request source records the block hash before the chain forgets it.
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stored = evm.request_state(&id).await.unwrap();
        if stored.beacon != FixedBytes::ZERO {
            let block = evm
                .provider()
                .get_block_by_number(stored.blockNumber.into())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored.beacon, block.header.hash);
            break;
        }
        assert!(tokio::time::Instant::now() < until, "no beacon recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mine(&evm, 100).await;
    advance_time(&evm, 601).await;
    // Without it: BeaconUnavailable, and the request could only be refunded.
    let tx = evm
        .submit_result(&s.request, &s.results[0], &s.results[1..])
        .await
        .unwrap();
    assert!(tx.starts_with("0x"));
}

/// The next request of a source (within 10 s).
async fn next(
    stream: &mut futures::stream::BoxStream<
        'static,
        Result<rakis_core::InferenceRequest, ChainError>,
    >,
) -> rakis_core::InferenceRequest {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a request within 10 s")
        .unwrap()
        .unwrap()
}
