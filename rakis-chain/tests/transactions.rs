//! Seeing a transaction through on a real anvil node: a stuck transaction is sent again at its
//! nonce with higher fees (never as a second transaction), and a submission whose block a
//! reorganisation drops is sent again and lands exactly once.

mod common;

use std::time::Duration;

use alloy::primitives::Address as EvmAddress;
use alloy::providers::Provider;
use alloy::sol_types::SolEvent;
use common::*;
use rakis_chain::contracts::RakisOracle;
use rakis_chain::{EvmChain, EvmConfig};

async fn fulfilled(evm: &EvmChain, id: &rakis_core::RequestId) -> bool {
    rakis_core::ChainSink::is_submitted(evm, id).await.unwrap()
}

async fn automine(evm: &EvmChain, on: bool) {
    let _: serde_json::Value = evm
        .provider()
        .raw_request("evm_setAutomine".into(), (on,))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_transaction_is_replaced_at_its_nonce_not_duplicated() {
    init_tracing();
    let (chain, _, _) = chain_with_members(1).await;
    let evm = EvmChain::connect(
        EvmConfig {
            replace_after: Duration::from_millis(500),
            receipt_timeout: Duration::from_secs(30),
            ..chain.config()
        },
        chain.signer(1).unwrap(),
    )
    .await
    .unwrap();
    let provider = evm.provider().clone();
    let before = provider.get_transaction_count(evm.sender()).await.unwrap();
    let first_fee = provider
        .estimate_eip1559_fees()
        .await
        .unwrap()
        .max_fee_per_gas;
    let params = chain_params("Stuck for a while.", 1, 60_000);
    let pay = evm.required_payment(params.maxTokens, 0).await.unwrap() * 2;
    // No blocks: the request's transaction waits in the pool.
    automine(&evm, false).await;
    let task = tokio::spawn({
        let evm = evm.clone();
        async move {
            evm.request_inference(&params, EvmAddress::ZERO, 0, pay)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert!(!task.is_finished());
    let _: serde_json::Value = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let id = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the client saw its transaction mined")
        .unwrap()
        .unwrap();
    automine(&evm, true).await;

    // One nonce used, by a version that paid more than the first.
    let after = provider.get_transaction_count(evm.sender()).await.unwrap();
    assert_eq!(after, before + 1);
    let head = provider.get_block_number().await.unwrap();
    let logs = evm
        .logs(RakisOracle::InferenceRequested::SIGNATURE_HASH, 0, head)
        .await
        .unwrap();
    let log = logs
        .iter()
        .find(|l| {
            RakisOracle::InferenceRequested::decode_log(&l.inner)
                .is_ok_and(|e| e.data.requestId.0 == id.0)
        })
        .expect("the request's event");
    let mined = provider
        .get_transaction_by_hash(log.transaction_hash.unwrap())
        .await
        .unwrap()
        .unwrap();
    use alloy::consensus::Transaction as _;
    assert!(
        mined.inner.max_fee_per_gas() > first_fee,
        "the first version was mined: {} <= {first_fee}",
        mined.inner.max_fee_per_gas()
    );
    assert_eq!(mined.inner.nonce(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_dropped_by_a_reorganisation_lands_exactly_once() {
    init_tracing();
    let (chain, user, keys) = chain_with_members(3).await;
    // Two confirmations: the client waits two blocks on top of its submission.
    let evm = EvmChain::connect(
        EvmConfig {
            confirmations: 2,
            replace_after: Duration::from_millis(500),
            receipt_timeout: Duration::from_secs(30),
            ..chain.config()
        },
        chain.signer(1).unwrap(),
    )
    .await
    .unwrap();
    let provider = evm.provider().clone();
    let s = request_and_sign(&user, &keys, 3, 1_000).await;
    let id = s.request.id();
    advance_time(&evm, 2).await;
    let before = provider.get_transaction_count(evm.sender()).await.unwrap();
    let task = tokio::spawn({
        let evm = evm.clone();
        let s = s.clone();
        async move {
            evm.submit_result(&s.request, &s.results[0], &s.results[1..])
                .await
        }
    });
    // The submission is mined (automine), not yet confirmed...
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while !fulfilled(&evm, &id).await {
        assert!(tokio::time::Instant::now() < until, "never submitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... when a reorganisation replaces its block with an empty one.
    let _: serde_json::Value = provider
        .raw_request(
            "anvil_reorg".into(),
            (1u64, Vec::<serde_json::Value>::new()),
        )
        .await
        .unwrap();
    assert!(
        !fulfilled(&evm, &id).await,
        "the reorganisation kept the result"
    );
    // Blocks keep coming; the client notices, sends again at its nonce, and confirms.
    let tx = loop {
        if task.is_finished() {
            break task.await.unwrap().expect("the submission landed");
        }
        mine(&evm, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(tx.starts_with("0x"));
    assert!(fulfilled(&evm, &id).await);
    assert_eq!(evm.result_events(&id).await.unwrap(), 1);
    assert_eq!(
        provider.get_transaction_count(evm.sender()).await.unwrap(),
        before + 1
    );
}
