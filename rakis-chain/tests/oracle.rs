//! The oracle contract and `EvmChain` against a real anvil node (installed by
//! `scripts/fetch-tools.sh`): requests from a consumer contract, consensus by real node drivers,
//! results submitted once with the nodes' signatures, rewards, decoded reverts, an anvil restart
//! in the middle of a submission, and two chains receiving one result.

use std::time::Duration;

use alloy::primitives::{Address as EvmAddress, Bytes, FixedBytes, U256};
use alloy::providers::Provider;
use futures::StreamExt;
use rakis_chain::contracts::{RakisOracle, SampleConsumer};
use rakis_chain::dev::{spawn_anvil, AnvilOptions, LocalChain};
use rakis_chain::evm::{evm_address, request_params, signatures_for, signer_from_node_key};
use rakis_chain::{EvmChain, EvmConfig, EvmError, OracleDeployment, OracleRevert};
use rakis_core::protocol::ConsensusResultMsg;
use rakis_core::testing::{HashEmbedder, HubConfig, MemoryHub, ScriptedEngine};
use rakis_core::{
    ChainError, ChainSink, InferenceRequest, Node, NodeConfig, NodeEvent, NodeHandle, NodeKey,
    RequestId, RequestSource, SecurityFrame,
};

const MODEL: &str = "smollm2-135m";
const ANSWER: &str = "The capital of France is Paris.";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,rakis_chain=info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn node_key(i: usize) -> NodeKey {
    NodeKey::from_seed(9_000 + i as u64)
}

/// Starts `n` nodes on one in-memory network. Node `i` reads requests from the first chain and
/// submits to every chain, paying with anvil account `i + 1` of each; its key is registered
/// on every chain.
async fn start_nodes(chains: &[&LocalChain], n: usize) -> Vec<NodeHandle> {
    let hub = MemoryHub::new(HubConfig {
        delay: Duration::from_millis(5),
        ..HubConfig::default()
    });
    let mut handles = Vec::new();
    for i in 0..n {
        let key = node_key(i);
        let mut builder = Node::builder()
            .open_network()
            .key(key.clone())
            .config(NodeConfig {
                reveal_window: Duration::from_millis(1_500),
                status_interval: None,
                ..NodeConfig::default()
            })
            .transport(hub.join(key.node_id()))
            .engine(ScriptedEngine::constant(MODEL, ANSWER))
            .embedder(HashEmbedder::default_model());
        for (c, chain) in chains.iter().enumerate() {
            // Chains after the first record results of requests made elsewhere (the oracle
            // calls them foreign).
            let evm = EvmChain::connect(
                EvmConfig {
                    record_foreign: c > 0,
                    ..chain.config()
                },
                chain.signer(i + 1).unwrap(),
            )
            .await
            .unwrap();
            evm.register_node(&key).await.unwrap();
            if c == 0 {
                builder = builder.request_source(evm.clone());
            }
            builder = builder.chain_sink(evm);
        }
        handles.push(builder.build().unwrap().spawn().0);
    }
    handles
}

fn chain_params(prompt: &str, quorum: u32, max_time_ms: u64) -> RakisOracle::RequestParams {
    let mut r = InferenceRequest::new(prompt, vec![MODEL.into()], node_key(0).node_id(), 0);
    r.temperature = 0.0;
    r.top_p = 1.0;
    r.max_tokens = 32;
    r.frame = SecurityFrame {
        quorum,
        max_time_ms,
        ..SecurityFrame::default()
    };
    request_params(&r)
}

/// Waits until the oracle stores a result for `id`.
async fn wait_fulfilled(evm: &EvmChain, id: &RequestId, within: Duration) -> String {
    let until = tokio::time::Instant::now() + within;
    loop {
        if let Some(out) = evm.result_of(id).await.unwrap() {
            return out;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no result on chain {} within {within:?}",
            evm.chain_id()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_contract_gets_the_agreed_output_and_nodes_are_paid() {
    init_tracing();
    let chain = LocalChain::start(AnvilOptions::default()).await.unwrap();
    let nodes = start_nodes(&[&chain], 3).await;
    let mut events = nodes[0].subscribe();

    // The consumer contract asks through the oracle, paying 0.3 ether.
    let user = chain.connect(9).await.unwrap();
    let consumer = SampleConsumer::deploy(user.provider().clone(), chain.oracle)
        .await
        .unwrap();
    let payment = U256::from(300_000_000_000_000_000u128);
    let receipt = consumer
        .ask(
            "What is the capital of France?".into(),
            MODEL.into(),
            3,
            4_000,
        )
        .value(payment)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    let id = RequestId(consumer.lastRequest().call().await.unwrap().0);

    // The nodes read the event (the contract's id is the node's: checked while reading),
    // agree, and one of them stores the result; the consumer is called back.
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

    // The payment is shared among the accepted nodes and withdrawable by their keys.
    let mut total = U256::ZERO;
    for i in 0..3 {
        let node = evm_address(&node_key(i).address());
        let reward = user.reward_of(node).await.unwrap();
        assert!(reward > U256::ZERO, "node {i} got no reward");
        total += reward;
    }
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
    let reward0 = user.reward_of(node0).await.unwrap();
    as_node.withdraw(to).await.unwrap();
    assert_eq!(user.provider().get_balance(to).await.unwrap(), reward0);
    assert_eq!(user.reward_of(node0).await.unwrap(), U256::ZERO);
    match as_node.withdraw(to).await {
        Err(EvmError::Reverted(OracleRevert::NothingToWithdraw { .. })) => {}
        other => panic!("second withdrawal: {other:?}"),
    }
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

/// A request made directly, and the results three registered nodes sign for it.
struct Signed {
    id: RequestId,
    results: Vec<ConsensusResultMsg>,
}

async fn request_and_sign(evm: &EvmChain, keys: &[NodeKey]) -> Signed {
    for k in keys {
        evm.register_node(k).await.unwrap();
    }
    let id = evm
        .request_inference(
            &chain_params("Say hello.", 3, 5_000),
            EvmAddress::ZERO,
            0,
            1_000,
        )
        .await
        .unwrap();
    // Sign the result as the nodes would: a fixture quorum's outcome, re-targeted at this id.
    let results = rakis_core::testing::QuorumFixture::new(keys.len(), 1).results_for(id, keys);
    Signed { id, results }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_duplicated_and_too_few_signatures_revert_with_decoded_reasons() {
    init_tracing();
    let chain = LocalChain::start_with(
        AnvilOptions::default(),
        &OracleDeployment {
            min_signatures_floor: 2,
            ..OracleDeployment::default()
        },
    )
    .await
    .unwrap();
    let evm = chain.connect(1).await.unwrap();
    let keys: Vec<NodeKey> = (0..3).map(node_key).collect();
    let s = request_and_sign(&evm, &keys).await;
    let r = &s.results[0];
    let (nodes, sigs) = signatures_for(r, &s.results[1..]);
    assert_eq!(nodes.len(), 3);
    let oracle = evm.oracle();
    let id = FixedBytes(s.id.0);
    let submit = |nodes: Vec<EvmAddress>, sigs: Vec<Bytes>, output: String| {
        let call = oracle.submitResult(id, output, FixedBytes(r.joint_hash.0), nodes, sigs);
        async move {
            match call.send().await {
                Ok(_) => panic!("the oracle accepted a bad submission"),
                Err(e) => match e.as_decoded_interface_error::<RakisOracle::RakisOracleErrors>() {
                    Some(d) => OracleRevert::from_decoded(d),
                    None => panic!("undecoded error: {e}"),
                },
            }
        }
    };

    // Too few: the request needs ceil(0.6 × 3) = 2.
    assert_eq!(
        submit(nodes[..1].to_vec(), sigs[..1].to_vec(), r.output.clone()).await,
        OracleRevert::TooFewSignatures {
            provided: 1,
            required: 2
        }
    );
    // Duplicated: one node's signature twice.
    assert_eq!(
        submit(
            vec![nodes[0], nodes[0]],
            vec![sigs[0].clone(), sigs[0].clone()],
            r.output.clone()
        )
        .await,
        OracleRevert::SignersNotSorted { index: 1 }
    );
    // Forged: another output under the same signatures.
    assert!(matches!(
        submit(nodes.clone(), sigs.clone(), "The capital is Lyon.".into()).await,
        OracleRevert::InvalidSignature { index: 0, .. }
    ));
    // Forged: a signature made by a key that is not the listed node.
    let mut swapped = sigs.clone();
    swapped.swap(0, 1);
    assert!(matches!(
        submit(nodes.clone(), swapped, r.output.clone()).await,
        OracleRevert::InvalidSignature { index: 0, .. }
    ));
    // Signed by a node that never registered.
    let outsider = node_key(50);
    let mut o = s.results[0].clone();
    o.signer = outsider.node_id();
    o.signature = outsider.sign_digest(&rakis_core::identity::eth_signed_message_hash(
        &o.result_digest.0,
    ));
    let outsider_addr = evm_address(&outsider.address());
    let mut pairs: Vec<(EvmAddress, Bytes)> = nodes
        .iter()
        .cloned()
        .zip(sigs.iter().cloned())
        .take(1)
        .collect();
    pairs.push((outsider_addr, Bytes::from(o.signature.0.to_vec())));
    pairs.sort();
    let (n2, s2): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    assert_eq!(
        submit(n2, s2, r.output.clone()).await,
        OracleRevert::NodeNotRegistered {
            node: outsider_addr.to_string()
        }
    );
    // Nothing was stored by any of these.
    assert!(!evm.is_submitted(&s.id).await.unwrap());

    // The sink itself refuses to send with too few usable signatures (typed, no transaction):
    // first it waits for every accepted node's signature…
    let req = InferenceRequest::new("x", vec![MODEL.into()], keys[0].node_id(), 0);
    assert!(matches!(
        evm.submit(&req, r, &[]).await.unwrap_err(),
        ChainError::NotEnoughSignatures { have: 1, need: 3 }
    ));
    // …then it settles for the number the request requires, never fewer.
    let hasty = EvmChain::connect(
        EvmConfig {
            attestation_wait: Duration::ZERO,
            ..chain.config()
        },
        chain.signer(2).unwrap(),
    )
    .await
    .unwrap();
    assert!(matches!(
        hasty.submit(&req, r, &[]).await.unwrap_err(),
        ChainError::NotEnoughSignatures { have: 1, need: 2 }
    ));
    // With enough, it lands (two of the three accepted nodes are paid); a second submission is
    // recognised as already there.
    let receipt = hasty.submit(&req, r, &s.results[1..2]).await.unwrap();
    assert!(receipt.reference.starts_with("0x"));
    assert!(evm.is_submitted(&s.id).await.unwrap());
    assert!(matches!(
        evm.submit(&req, r, &s.results[1..]).await.unwrap_err(),
        ChainError::AlreadySubmitted
    ));
    assert_eq!(
        submit(nodes.clone(), sigs.clone(), r.output.clone()).await,
        OracleRevert::AlreadyFulfilled
    );
    assert_eq!(evm.result_events(&s.id).await.unwrap(), 1);
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
            ..chain.config()
        },
        chain.signer(1).unwrap(),
    )
    .await
    .unwrap();
    let keys: Vec<NodeKey> = (0..3).map(node_key).collect();
    let s = request_and_sign(&evm, &keys).await;
    // Let the periodic state dump include the request and registrations.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let submitter = {
        let evm = evm.clone();
        let results = s.results.clone();
        tokio::spawn(async move { evm.submit_result(&results[0], &results[1..]).await })
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
    assert_eq!(
        check.result_of(&s.id).await.unwrap().as_deref(),
        Some(s.results[0].output.as_str())
    );
    assert_eq!(check.result_events(&s.id).await.unwrap(), 1);
    // Submitting again changes nothing.
    assert!(matches!(
        check.submit_result(&s.results[0], &s.results[1..]).await,
        Err(EvmError::Reverted(OracleRevert::AlreadyFulfilled))
    ));
    assert_eq!(check.result_events(&s.id).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chains_with_different_ids_both_receive_the_result() {
    init_tracing();
    let a = LocalChain::start(AnvilOptions {
        chain_id: 31_337,
        ..AnvilOptions::default()
    })
    .await
    .unwrap();
    let b = LocalChain::start(AnvilOptions {
        chain_id: 4_242,
        ..AnvilOptions::default()
    })
    .await
    .unwrap();
    let handles = start_nodes(&[&a, &b], 3).await;
    let user_a = a.connect(9).await.unwrap();
    let user_b = b.connect(9).await.unwrap();
    assert_ne!(user_a.chain_id(), user_b.chain_id());
    let id = user_a
        .request_inference(
            &chain_params("What is the capital of France?", 3, 4_000),
            EvmAddress::ZERO,
            0,
            0,
        )
        .await
        .unwrap();
    assert_eq!(
        wait_fulfilled(&user_a, &id, Duration::from_secs(60)).await,
        ANSWER
    );
    assert_eq!(
        wait_fulfilled(&user_b, &id, Duration::from_secs(60)).await,
        ANSWER
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(user_a.result_events(&id).await.unwrap(), 1);
    assert_eq!(user_b.result_events(&id).await.unwrap(), 1);
    // State per chain: each node's store tracks both sinks.
    let outcome = handles[0]
        .wait_for_outcome(id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(outcome.committed, 3);
    for h in &handles {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_source_reports_outages_and_resumes() {
    init_tracing();
    let chain = LocalChain::start(AnvilOptions::default()).await.unwrap();
    let evm = chain.connect(1).await.unwrap();
    let mut stream = evm.requests();
    let id = evm
        .request_inference(&chain_params("One.", 1, 60_000), EvmAddress::ZERO, 0, 0)
        .await
        .unwrap();
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
