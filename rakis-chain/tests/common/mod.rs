//! What the anvil tests share: keys, requests, signed results and decoded reverts.

#![allow(dead_code)]

use std::time::Duration;

use alloy::primitives::{Address as EvmAddress, Bytes, FixedBytes, U256};
use rakis_chain::contracts::RakisOracle;
use rakis_chain::dev::{AnvilOptions, LocalChain};
use rakis_chain::evm::{evm_address, members_bytes, payees_bytes, request_params};
use rakis_chain::{EvmChain, OracleRevert};
use rakis_core::membership::{config_digest, Epoch};
use rakis_core::protocol::ConsensusResultMsg;
use rakis_core::{InferenceRequest, NodeKey, RequestId, SecurityFrame};

pub const MODEL: &str = "smollm2-135m";
pub const ANSWER: &str = "The capital of France is Paris.";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,rakis_chain=info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn node_key(i: usize) -> NodeKey {
    NodeKey::from_seed(9_000 + i as u64)
}

pub fn chain_params(prompt: &str, quorum: u32, max_time_ms: u64) -> RakisOracle::RequestParams {
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

/// A local chain whose first epoch has `n` members (`node_key(0..n)`), governing requests now,
/// and a connection paying with anvil account 1.
pub async fn chain_with_members(n: usize) -> (LocalChain, EvmChain, Vec<NodeKey>) {
    let chain = LocalChain::start(AnvilOptions::default()).await.unwrap();
    let keys: Vec<NodeKey> = (0..n).map(node_key).collect();
    chain.register_and_start_epoch(&keys).await.unwrap();
    let evm = chain.connect(1).await.unwrap();
    (chain, evm, keys)
}

/// Sends a call and waits for its receipt, which must report success.
pub async fn mined<P, C>(
    call: alloy::contract::SolCallBuilder<P, C>,
) -> alloy::rpc::types::TransactionReceipt
where
    P: alloy::providers::Provider,
    C: alloy::sol_types::SolCall,
{
    let receipt = call.send().await.unwrap().get_receipt().await.unwrap();
    assert!(receipt.status(), "the transaction reverted on chain");
    receipt
}

/// Makes a request with `params` and no callback, paying twice what the oracle requires now.
pub async fn request(evm: &EvmChain, params: &RakisOracle::RequestParams) -> RequestId {
    let need = evm.required_payment(params.maxTokens, 0).await.unwrap();
    evm.request_inference(params, EvmAddress::ZERO, 0, need * 2)
        .await
        .unwrap()
}

/// Waits until the oracle stores a result for `id`.
pub async fn wait_fulfilled(evm: &EvmChain, id: &RequestId, within: Duration) -> String {
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

/// A request made directly and the results its committee's members among `keys` sign for it
/// (all of `keys` accepted, the payees).
#[derive(Clone)]
pub struct Signed {
    pub request: InferenceRequest,
    pub epoch: std::sync::Arc<Epoch>,
    pub results: Vec<ConsensusResultMsg>,
}

pub async fn request_and_sign(
    evm: &EvmChain,
    keys: &[NodeKey],
    quorum: u32,
    max_time_ms: u64,
) -> Signed {
    let id = request(evm, &chain_params("Say hello.", quorum, max_time_ms)).await;
    sign(evm, id, keys).await
}

/// The results `keys` sign for request `id` (bound to its configuration and epoch).
pub async fn sign(evm: &EvmChain, id: RequestId, keys: &[NodeKey]) -> Signed {
    let request = evm
        .request(&id)
        .await
        .unwrap()
        .expect("the request's event");
    let stored = evm.request_state(&id).await.unwrap();
    let epoch = evm.epoch(stored.epoch).await.unwrap();
    let committee = epoch.committee(&request);
    let config = config_digest(&request, Some(&committee));
    let results =
        rakis_core::testing::QuorumFixture::new(keys.len(), 1).results_for(id, keys, config);
    Signed {
        request,
        epoch,
        results,
    }
}

/// The submission of `results[0]` with every result's signature, sorted by signer address.
pub fn submission(epoch: &Epoch, results: &[ConsensusResultMsg]) -> RakisOracle::Submission {
    let mut sigs: Vec<(EvmAddress, Bytes)> = results
        .iter()
        .map(|r| {
            let a = rakis_core::identity::address_of_node(&r.signer).unwrap();
            (evm_address(&a), Bytes::from(r.signature.0.to_vec()))
        })
        .collect();
    sigs.sort();
    RakisOracle::Submission {
        output: results[0].output.clone(),
        jointHash: FixedBytes(results[0].joint_hash.0),
        payees: Bytes::from(payees_bytes(&results[0])),
        members: Bytes::from(members_bytes(epoch)),
        weights: epoch.members().map(|(_, w)| w).collect(),
        signatures: sigs.into_iter().map(|(_, s)| s).collect(),
    }
}

/// The oracle's custom error for a call (simulated with `eth_call`, nothing is sent).
pub async fn revert_of<C: alloy::sol_types::SolCall>(
    call: alloy::contract::SolCallBuilder<&alloy::providers::DynProvider, C>,
) -> OracleRevert {
    match call.call_raw().await {
        Ok(_) => panic!("the oracle accepted the call"),
        Err(e) => match e.as_decoded_interface_error::<RakisOracle::RakisOracleErrors>() {
            Some(d) => OracleRevert::from_decoded(d),
            None => panic!("undecoded error: {e}"),
        },
    }
}

/// The `ResultSubmitted` event of `id`.
pub async fn submitted_event(evm: &EvmChain, id: &RequestId) -> RakisOracle::ResultSubmitted {
    use alloy::providers::Provider;
    use alloy::sol_types::SolEvent;
    let filter = alloy::rpc::types::Filter::new()
        .address(evm.oracle_address())
        .event_signature(RakisOracle::ResultSubmitted::SIGNATURE_HASH)
        .topic1(FixedBytes(id.0))
        .from_block(0);
    let logs = evm.provider().get_logs(&filter).await.unwrap();
    assert_eq!(logs.len(), 1);
    logs[0]
        .log_decode::<RakisOracle::ResultSubmitted>()
        .unwrap()
        .inner
        .data
}

/// Moves the chain's clock `seconds` ahead and mines a block.
pub async fn advance_time(evm: &EvmChain, seconds: u64) {
    use alloy::providers::Provider;
    let _: serde_json::Value = evm
        .provider()
        .raw_request("evm_increaseTime".into(), (seconds,))
        .await
        .unwrap();
    let _: serde_json::Value = evm
        .provider()
        .raw_request("evm_mine".into(), ())
        .await
        .unwrap();
}

/// Mines `blocks` blocks at once, without moving the clock.
pub async fn mine(evm: &EvmChain, blocks: u64) {
    use alloy::providers::Provider;
    let _: serde_json::Value = evm
        .provider()
        .raw_request("anvil_mine".into(), (U256::from(blocks), U256::ZERO))
        .await
        .unwrap();
}

/// `results` with their signatures replaced by `keys`' (one each, same digests): what keys
/// that were not asked would sign to pass the result off.
pub fn resign(results: &[ConsensusResultMsg], keys: &[NodeKey]) -> Vec<ConsensusResultMsg> {
    results
        .iter()
        .zip(keys)
        .map(|(r, k)| {
            let mut r = r.clone();
            r.signer = k.node_id();
            r.signature = k.sign_digest(&rakis_core::identity::eth_signed_message_hash(
                &r.result_digest.0,
            ));
            r
        })
        .collect()
}
