//! EVM chains through alloy: results submitted to the Rakis oracle contract, requests read from
//! its events.

use std::sync::Arc;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address as EvmAddress, Bytes, FixedBytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, Log};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use rakis_core::error::SharedError;
use rakis_core::identity::{address_of_node, eth_signed_message_hash, keccak256};
use rakis_core::protocol::{ChatMessage, ConsensusResultMsg, InferenceRequest, Origin};
use rakis_core::SubmitReceipt;
use rakis_core::{
    Address, ChainError, ChainSink, Hash32, NodeKey, RequestId, RequestSource, SecurityFrame,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::contracts::RakisOracle::{self, RakisOracleInstance, RequestParams};
use crate::error::{classify, EvmError, OracleRevert};

/// Configuration of one EVM chain (serde: durations read as `"1s"`, `"500ms"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvmConfig {
    /// JSON-RPC endpoint (`http://` or `https://`).
    pub rpc_url: String,
    /// Address of the deployed [`RakisOracle`].
    pub oracle: EvmAddress,
    /// Expected chain id; connecting fails when the endpoint serves another chain. `None`:
    /// whatever the endpoint reports.
    pub chain_id: Option<u64>,
    /// How often the request source polls for new blocks.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Blocks a request event must be buried under before the node takes it (0 on a dev chain;
    /// more where blocks can be reorganised).
    pub confirmations: u64,
    /// At start, how many blocks back the source looks for requests (0: only new ones). A node
    /// that restarts within a request's deadline finds the request again this way.
    pub lookback_blocks: u64,
    /// How long a submission keeps retrying through RPC failures before giving up.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// How long to wait for a receipt before checking the chain again and resending.
    #[serde(with = "humantime_serde")]
    pub receipt_timeout: Duration,
    /// Nodes that agreed take turns: the node ranked `k` for a request waits `k × stagger`
    /// and submits only when nobody has yet, so that one transaction usually suffices.
    #[serde(with = "humantime_serde")]
    pub stagger: Duration,
    /// How long a node waits for the signatures of every accepted node before it submits with
    /// the ones it has (at least the number the request requires): the payment is shared
    /// among the nodes whose signatures are in the submission.
    #[serde(with = "humantime_serde")]
    pub attestation_wait: Duration,
    /// Also record results of requests this contract did not make (made on another chain, or
    /// by a peer): the oracle stores them as *foreign* results, without payment or callback.
    pub record_foreign: bool,
}

impl Default for EvmConfig {
    fn default() -> Self {
        EvmConfig {
            rpc_url: "http://127.0.0.1:8545".into(),
            oracle: EvmAddress::ZERO,
            chain_id: None,
            poll_interval: Duration::from_secs(1),
            confirmations: 0,
            lookback_blocks: 0,
            retry_for: Duration::from_secs(120),
            receipt_timeout: Duration::from_secs(30),
            stagger: Duration::from_secs(2),
            attestation_wait: Duration::from_secs(10),
            record_foreign: false,
        }
    }
}

impl EvmConfig {
    /// A configuration for `oracle` behind `rpc_url`, with the defaults otherwise.
    pub fn new(rpc_url: impl Into<String>, oracle: EvmAddress) -> Self {
        EvmConfig {
            rpc_url: rpc_url.into(),
            oracle,
            ..EvmConfig::default()
        }
    }

    /// For a local development chain (anvil): fast polling, no confirmations, short waits.
    pub fn local_dev(rpc_url: impl Into<String>, oracle: EvmAddress) -> Self {
        EvmConfig {
            poll_interval: Duration::from_millis(200),
            retry_for: Duration::from_secs(60),
            receipt_timeout: Duration::from_secs(5),
            stagger: Duration::from_millis(300),
            attestation_wait: Duration::from_secs(3),
            ..EvmConfig::new(rpc_url, oracle)
        }
    }
}

/// The oracle's deployment parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OracleDeployment {
    /// Lowest number of node signatures any result needs.
    pub min_signatures_floor: u32,
    /// Seconds after a request's deadline during which results are accepted.
    pub submission_window_s: u64,
    /// Lowest payment per request, in wei.
    pub min_payment_wei: u128,
}

impl Default for OracleDeployment {
    /// Floor 2, a one-hour submission window, no minimum payment.
    fn default() -> Self {
        OracleDeployment {
            min_signatures_floor: 2,
            submission_window_s: 3_600,
            min_payment_wei: 0,
        }
    }
}

/// The alloy signer of a node key: a node that pays its own gas, or withdraws its rewards,
/// signs transactions with the key whose address the oracle knows.
pub fn signer_from_node_key(key: &NodeKey) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&FixedBytes(key.secret_bytes()))
        .expect("a node key is a valid secp256k1 secret")
}

/// The EVM address of a Rakis address.
pub fn evm_address(a: &Address) -> EvmAddress {
    EvmAddress::from(a.0)
}

/// Connects a provider with `signer`'s wallet. Gas, nonce and chain id come from alloy's
/// fillers; the nonce is asked of the node for every transaction (alloy's simple nonce
/// manager), never cached: a send that fails (a revert found while estimating gas, an RPC
/// outage, a node restarted without its pool) must not leave a gap that blocks every later
/// transaction. Sends from one [`EvmChain`] are serialised for the same reason.
fn provider(rpc_url: &str, signer: PrivateKeySigner) -> Result<DynProvider, EvmError> {
    let url = rpc_url
        .parse()
        .map_err(|e| EvmError::Config(format!("rpc url {rpc_url:?}: {e}")))?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased())
}

/// A connection to one EVM chain's Rakis oracle: a [`ChainSink`] that submits results and a
/// [`RequestSource`] that reads the contract's requests. Cheap to clone.
#[derive(Clone)]
pub struct EvmChain {
    inner: Arc<Inner>,
}

struct Inner {
    config: EvmConfig,
    chain_id: u64,
    oracle: RakisOracleInstance<DynProvider>,
    provider: DynProvider,
    sender: EvmAddress,
    /// Held while a transaction is filled and sent (the nonce is read from the pool).
    send_lock: tokio::sync::Mutex<()>,
    /// When each result was first offered with fewer signatures than accepted nodes.
    first_offered: std::sync::Mutex<std::collections::HashMap<RequestId, tokio::time::Instant>>,
}

impl std::fmt::Debug for EvmChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmChain")
            .field("chain_id", &self.inner.chain_id)
            .field("oracle", &self.inner.config.oracle)
            .field("sender", &self.inner.sender)
            .finish()
    }
}

impl EvmChain {
    /// Connects to the oracle of `config`; transactions are signed by `signer` (which pays the
    /// gas). Checks the chain id and that a contract is deployed at the oracle address.
    pub async fn connect(config: EvmConfig, signer: PrivateKeySigner) -> Result<Self, EvmError> {
        let sender = signer.address();
        let provider = provider(&config.rpc_url, signer)?;
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|e| EvmError::Rpc(SharedError::new(e)))?;
        if let Some(expected) = config.chain_id {
            if expected != chain_id {
                return Err(EvmError::WrongChain {
                    expected,
                    actual: chain_id,
                });
            }
        }
        let code = provider
            .get_code_at(config.oracle)
            .await
            .map_err(|e| EvmError::Rpc(SharedError::new(e)))?;
        if code.is_empty() {
            return Err(EvmError::NoContract(config.oracle.to_string()));
        }
        let oracle = RakisOracle::new(config.oracle, provider.clone());
        info!(chain_id, oracle = %config.oracle, %sender, "connected to EVM chain");
        Ok(EvmChain {
            inner: Arc::new(Inner {
                config,
                chain_id,
                oracle,
                provider,
                sender,
                send_lock: tokio::sync::Mutex::new(()),
                first_offered: Default::default(),
            }),
        })
    }

    /// Deploys a new oracle with `signer` and returns its address.
    pub async fn deploy_oracle(
        rpc_url: &str,
        signer: PrivateKeySigner,
        params: &OracleDeployment,
    ) -> Result<EvmAddress, EvmError> {
        let provider = provider(rpc_url, signer)?;
        let contract = RakisOracle::deploy(
            provider,
            params.min_signatures_floor,
            params.submission_window_s,
            U256::from(params.min_payment_wei),
        )
        .await
        .map_err(classify)?;
        Ok(*contract.address())
    }

    /// The chain id the endpoint serves.
    pub fn chain_id(&self) -> u64 {
        self.inner.chain_id
    }

    /// The oracle's address.
    pub fn oracle_address(&self) -> EvmAddress {
        self.inner.config.oracle
    }

    /// The address that signs and pays for transactions.
    pub fn sender(&self) -> EvmAddress {
        self.inner.sender
    }

    /// The contract binding, for calls this type does not wrap.
    pub fn oracle(&self) -> &RakisOracleInstance<DynProvider> {
        &self.inner.oracle
    }

    /// The provider (with the signer's wallet).
    pub fn provider(&self) -> &DynProvider {
        &self.inner.provider
    }

    /// The configuration.
    pub fn config(&self) -> &EvmConfig {
        &self.inner.config
    }

    /// Registers `key`'s address as a node of the oracle (the key signs the registration; this
    /// chain's signer sends and pays for the transaction). Registering twice is harmless.
    pub async fn register_node(&self, key: &NodeKey) -> Result<(), EvmError> {
        let node = evm_address(&key.address());
        let mut pre = b"rakis/register/v1".to_vec();
        pre.extend(self.inner.chain_id.to_be_bytes());
        pre.extend(self.inner.config.oracle.0);
        pre.extend(node.0);
        let digest = keccak256(&pre);
        let signature = key.sign_digest(&eth_signed_message_hash(&digest));
        let pending = self
            .send(
                self.inner
                    .oracle
                    .registerNode(node, Bytes::from(signature.0.to_vec())),
            )
            .await?;
        self.confirm(pending).await?;
        Ok(())
    }

    /// Whether `node` is a registered node.
    pub async fn is_registered(&self, node: EvmAddress) -> Result<bool, EvmError> {
        self.inner
            .oracle
            .registered(node)
            .call()
            .await
            .map_err(classify)
    }

    /// Asks the network for inference through the oracle, paying `payment_wei`; returns the
    /// Rakis request id. `callback`: a contract implementing `IRakisConsumer`, or zero.
    pub async fn request_inference(
        &self,
        request: &RequestParams,
        callback: EvmAddress,
        callback_gas: u32,
        payment_wei: u128,
    ) -> Result<RequestId, EvmError> {
        let pending = self
            .send(
                self.inner
                    .oracle
                    .requestInference(request.clone(), callback, callback_gas)
                    .value(U256::from(payment_wei)),
            )
            .await?;
        let receipt = self.confirm(pending).await?;
        receipt
            .inner
            .logs()
            .iter()
            .find_map(|log| {
                log.log_decode::<RakisOracle::InferenceRequested>()
                    .ok()
                    .map(|l| RequestId(l.inner.data.requestId.0))
            })
            .ok_or_else(|| EvmError::BadEvent("no InferenceRequested event in the receipt".into()))
    }

    /// The stored output of a fulfilled request (`None` when not fulfilled).
    pub async fn result_of(&self, id: &RequestId) -> Result<Option<String>, EvmError> {
        let oracle = &self.inner.oracle;
        let key = FixedBytes(id.0);
        if !oracle.isFulfilled(key).call().await.map_err(classify)? {
            return Ok(None);
        }
        Ok(Some(oracle.resultOf(key).call().await.map_err(classify)?))
    }

    /// Rewards owed to `node`, in wei.
    pub async fn reward_of(&self, node: EvmAddress) -> Result<U256, EvmError> {
        self.inner
            .oracle
            .rewards(node)
            .call()
            .await
            .map_err(classify)
    }

    /// Withdraws the rewards of this chain's signer (which must be a node's key, see
    /// [`signer_from_node_key`]) to `to`.
    pub async fn withdraw(&self, to: EvmAddress) -> Result<String, EvmError> {
        let pending = self.send(self.inner.oracle.withdraw(to)).await?;
        let receipt = self.confirm(pending).await?;
        Ok(receipt.transaction_hash.to_string())
    }

    /// Number of `ResultSubmitted` events the oracle emitted for `id` (1 once a result is
    /// stored: a second submission reverts without an event).
    pub async fn result_events(&self, id: &RequestId) -> Result<usize, EvmError> {
        let filter = Filter::new()
            .address(self.inner.config.oracle)
            .event_signature(RakisOracle::ResultSubmitted::SIGNATURE_HASH)
            .topic1(FixedBytes(id.0))
            .from_block(0);
        let logs = self
            .inner
            .provider
            .get_logs(&filter)
            .await
            .map_err(|e| EvmError::Rpc(SharedError::new(e)))?;
        Ok(logs.len())
    }

    /// Fills and sends a transaction, one at a time per chain (the nonce is read from the
    /// node's pool); a revert found while estimating gas comes back decoded.
    async fn send<C: alloy::sol_types::SolCall>(
        &self,
        call: alloy::contract::SolCallBuilder<&DynProvider, C>,
    ) -> Result<alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>, EvmError>
    {
        let _send = self.inner.send_lock.lock().await;
        call.send().await.map_err(classify)
    }

    async fn confirm(
        &self,
        pending: alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
    ) -> Result<alloy::rpc::types::TransactionReceipt, EvmError> {
        let receipt = pending
            .with_timeout(Some(self.inner.config.receipt_timeout))
            .get_receipt()
            .await
            .map_err(|e| EvmError::Rpc(SharedError::new(e)))?;
        if !receipt.status() {
            return Err(EvmError::TransactionFailed(
                receipt.transaction_hash.to_string(),
            ));
        }
        Ok(receipt)
    }

    /// Submits `result` with the signatures of `attestations` that match it, retrying through
    /// RPC failures for [`EvmConfig::retry_for`]; returns the transaction hash.
    ///
    /// Exactly once: before every attempt the oracle is asked whether the result is stored,
    /// and a stored result answers [`OracleRevert::AlreadyFulfilled`]. A revert is decoded and
    /// returned at once, without retrying.
    pub async fn submit_result(
        &self,
        result: &ConsensusResultMsg,
        attestations: &[ConsensusResultMsg],
    ) -> Result<String, EvmError> {
        let (nodes, signatures) = signatures_for(result, attestations);
        let id = FixedBytes(result.request_id.0);
        let config = &self.inner.config;
        let all = result
            .accepted
            .iter()
            .map(|a| a.node)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if nodes.len() < all {
            let first = *self
                .inner
                .first_offered
                .lock()
                .expect("lock")
                .entry(result.request_id)
                .or_insert_with(tokio::time::Instant::now);
            if first.elapsed() < config.attestation_wait {
                return Err(EvmError::NotEnoughSignatures {
                    have: nodes.len(),
                    need: all,
                });
            }
        }
        self.inner
            .first_offered
            .lock()
            .expect("lock")
            .remove(&result.request_id);
        let own = address_of_node(&result.signer)
            .map(|a| evm_address(&a))
            .ok();
        let rank = own
            .and_then(|a| nodes.iter().position(|n| *n == a))
            .map(|p| (p + result.request_id.0[0] as usize) % nodes.len().max(1))
            .unwrap_or(0);
        if rank > 0 && !config.stagger.is_zero() {
            let wait = config.stagger * rank as u32;
            debug!(
                rank,
                wait = ?wait,
                "waiting for the nodes ranked before this one"
            );
            tokio::time::sleep(wait).await;
        }
        let give_up = tokio::time::Instant::now() + config.retry_for;
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(250);
        loop {
            attempts += 1;
            match self.try_submit(id, result, &nodes, &signatures).await {
                Ok(tx) => {
                    info!(%tx, signatures = nodes.len(), "result stored on chain");
                    return Ok(tx);
                }
                Err(
                    e @ (EvmError::Reverted(_)
                    | EvmError::Config(_)
                    | EvmError::NotEnoughSignatures { .. }),
                ) => return Err(e),
                Err(e) => {
                    if tokio::time::Instant::now() >= give_up {
                        return Err(EvmError::GaveUp {
                            attempts,
                            last: Box::new(e),
                        });
                    }
                    warn!(attempt = attempts, error = %e, "submission failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn try_submit(
        &self,
        id: FixedBytes<32>,
        result: &ConsensusResultMsg,
        nodes: &[EvmAddress],
        signatures: &[Bytes],
    ) -> Result<String, EvmError> {
        let oracle = &self.inner.oracle;
        if oracle.isFulfilled(id).call().await.map_err(classify)? {
            return Err(EvmError::Reverted(OracleRevert::AlreadyFulfilled));
        }
        let stored = oracle.requestOf(id).call().await.map_err(classify)?;
        let required = if stored.requester == EvmAddress::ZERO {
            oracle.minSignaturesFloor().call().await.map_err(classify)?
        } else {
            stored.minSignatures
        };
        // Signers the oracle does not know would revert the whole submission: leave them out.
        let mut use_nodes = Vec::with_capacity(nodes.len());
        let mut use_sigs = Vec::with_capacity(nodes.len());
        for (n, s) in nodes.iter().zip(signatures) {
            if oracle.registered(*n).call().await.map_err(classify)? {
                use_nodes.push(*n);
                use_sigs.push(s.clone());
            } else {
                debug!(node = %n, "signer not registered on this chain; left out");
            }
        }
        if use_nodes.len() < required as usize {
            return Err(EvmError::NotEnoughSignatures {
                have: use_nodes.len(),
                need: required as usize,
            });
        }
        let pending = self
            .send(oracle.submitResult(
                id,
                result.output.clone(),
                FixedBytes(result.joint_hash.0),
                use_nodes,
                use_sigs,
            ))
            .await?;
        let tx = pending.tx_hash().to_string();
        debug!(%tx, "result transaction sent");
        self.confirm(pending).await?;
        Ok(tx)
    }

    /// The stream of requests the oracle emits, polled every
    /// [`EvmConfig::poll_interval`]. RPC failures are reported once per outage and polling
    /// goes on; the stream ends when it is dropped.
    pub fn request_stream(&self) -> BoxStream<'static, Result<InferenceRequest, ChainError>> {
        let (mut tx, rx) = futures::channel::mpsc::channel(64);
        let chain = self.clone();
        let span = info_span!("evm_requests", chain_id = chain.inner.chain_id);
        tokio::spawn(
            async move {
                let mut next: Option<u64> = None;
                let mut failing = false;
                let interval = chain
                    .inner
                    .config
                    .poll_interval
                    .max(Duration::from_millis(10));
                loop {
                    // The node stopped reading (it shut down): stop polling, quietly.
                    if tx.is_closed() {
                        return;
                    }
                    match chain.poll(&mut next).await {
                        Ok(found) => {
                            failing = false;
                            for item in found {
                                if tx.send(item.map_err(ChainError::from)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(_) if tx.is_closed() => return,
                        Err(e) => {
                            if !failing {
                                warn!(error = %e, "cannot read requests from the chain");
                                if tx.send(Err(e.into())).await.is_err() {
                                    return;
                                }
                            }
                            failing = true;
                        }
                    }
                    tokio::time::sleep(interval).await;
                }
            }
            .instrument(span),
        );
        rx.boxed()
    }

    /// Reads the request events of blocks not seen yet.
    async fn poll(
        &self,
        next: &mut Option<u64>,
    ) -> Result<Vec<Result<InferenceRequest, EvmError>>, EvmError> {
        let config = &self.inner.config;
        let head = self
            .inner
            .provider
            .get_block_number()
            .await
            .map_err(|e| EvmError::Rpc(SharedError::new(e)))?;
        let safe = head.saturating_sub(config.confirmations);
        let from = *next.get_or_insert_with(|| (safe + 1).saturating_sub(config.lookback_blocks));
        if safe < from {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        let mut start = from;
        while start <= safe {
            let end = safe.min(start + 9_999);
            let filter = Filter::new()
                .address(config.oracle)
                .event_signature(RakisOracle::InferenceRequested::SIGNATURE_HASH)
                .from_block(start)
                .to_block(end);
            let logs = self
                .inner
                .provider
                .get_logs(&filter)
                .await
                .map_err(|e| EvmError::Rpc(SharedError::new(e)))?;
            for log in logs {
                found.push(self.request_from_log(&log));
            }
            start = end + 1;
        }
        *next = Some(safe + 1);
        Ok(found)
    }

    fn request_from_log(&self, log: &Log) -> Result<InferenceRequest, EvmError> {
        let decoded = log
            .log_decode::<RakisOracle::InferenceRequested>()
            .map_err(|e| EvmError::BadEvent(e.to_string()))?;
        let tx_hash = log
            .transaction_hash
            .ok_or_else(|| EvmError::BadEvent("log without a transaction hash".into()))?;
        let log_index = log
            .log_index
            .ok_or_else(|| EvmError::BadEvent("log without an index".into()))?;
        let block_hash = log
            .block_hash
            .ok_or_else(|| EvmError::BadEvent("log without a block hash".into()))?;
        let request = request_from_event(
            self.inner.chain_id,
            log.address(),
            &decoded.inner.data,
            EventLocation {
                tx_hash: Hash32(tx_hash.0),
                log_index,
                block_hash: Hash32(block_hash.0),
            },
        )?;
        info!(request = %request.id().short(), tx = %tx_hash, "request read from the chain");
        Ok(request)
    }
}

/// Where an event sits on the chain, as this node read it (see [`Origin::Chain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLocation {
    /// Hash of the emitting transaction.
    pub tx_hash: Hash32,
    /// Index of the log in its block.
    pub log_index: u64,
    /// Hash of the block that holds it (the committee's beacon).
    pub block_hash: Hash32,
}

/// Turns an `InferenceRequested` event into the request the nodes run, and checks that the id
/// the contract computed equals the node's ([`InferenceRequest::id`]).
pub fn request_from_event(
    chain_id: u64,
    contract: EvmAddress,
    event: &RakisOracle::InferenceRequested,
    at: EventLocation,
) -> Result<InferenceRequest, EvmError> {
    let p = &event.params;
    let request = InferenceRequest {
        messages: vec![ChatMessage::user(p.prompt.clone())],
        accepted_models: p.acceptedModels.clone(),
        temperature: p.temperatureMilli as f32 / 1000.0,
        top_p: p.topPMilli as f32 / 1000.0,
        max_tokens: p.maxTokens,
        frame: SecurityFrame {
            quorum: p.quorum,
            max_time_ms: p.maxTimeMs,
            sec_distance: p.secDistancePpm as f64 / 1e6,
            sec_percentage: p.secPercentagePpm as f64 / 1e6,
            embedding_model: p.embeddingModel.clone(),
        },
        origin: Origin::Chain {
            chain_id,
            contract: Address(contract.0 .0),
            tx_hash: at.tx_hash,
            log_index: at.log_index,
            block_hash: at.block_hash,
        },
        created_at_ms: event.createdAtMs,
        requester: None,
        nonce: event.nonce,
    };
    request.validate()?;
    if request.id().0 != event.requestId.0 {
        return Err(EvmError::BadEvent(format!(
            "the contract's request id {} differs from the node's {}",
            event.requestId,
            request.id()
        )));
    }
    Ok(request)
}

/// The oracle's parameters for `request` (its prompt must be one user message).
pub fn request_params(request: &InferenceRequest) -> RequestParams {
    let (t, p, d, s) = request.chain_integers();
    RequestParams {
        prompt: request
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        acceptedModels: request.accepted_models.clone(),
        maxTokens: request.max_tokens,
        temperatureMilli: t,
        topPMilli: p,
        quorum: request.frame.quorum,
        maxTimeMs: request.frame.max_time_ms,
        secDistancePpm: d,
        secPercentagePpm: s,
        embeddingModel: request.frame.embedding_model.clone(),
    }
}

/// The signatures that support `result` ([`ConsensusResultMsg::supporting_signatures`]), from
/// nodes of the accepted set only, sorted by address as the oracle requires.
pub fn signatures_for(
    result: &ConsensusResultMsg,
    attestations: &[ConsensusResultMsg],
) -> (Vec<EvmAddress>, Vec<Bytes>) {
    let accepted: std::collections::BTreeSet<_> = result.accepted.iter().map(|a| a.node).collect();
    let by_address: std::collections::BTreeMap<_, _> = result
        .supporting_signatures(attestations)
        .into_iter()
        .filter(|(node, _)| accepted.contains(node))
        .filter_map(|(node, sig)| {
            let address = address_of_node(&node).ok()?;
            Some((evm_address(&address), Bytes::from(sig.0.to_vec())))
        })
        .collect();
    by_address.into_iter().unzip()
}

#[async_trait]
impl ChainSink for EvmChain {
    fn name(&self) -> String {
        format!(
            "evm:{}:{:#x}",
            self.inner.chain_id, self.inner.config.oracle
        )
    }

    /// Requests its oracle made, and with [`EvmConfig::record_foreign`] every request.
    fn accepts(&self, request: &InferenceRequest) -> bool {
        match &request.origin {
            Origin::Chain {
                chain_id, contract, ..
            } if *chain_id == self.inner.chain_id
                && evm_address(contract) == self.inner.config.oracle =>
            {
                true
            }
            _ => self.inner.config.record_foreign,
        }
    }

    async fn submit(
        &self,
        _request: &InferenceRequest,
        result: &ConsensusResultMsg,
        attestations: &[ConsensusResultMsg],
    ) -> Result<SubmitReceipt, ChainError> {
        let tx = self.submit_result(result, attestations).await?;
        Ok(SubmitReceipt {
            sink: self.name(),
            reference: tx,
        })
    }

    async fn is_submitted(&self, request_id: &RequestId) -> Result<bool, ChainError> {
        self.inner
            .oracle
            .isFulfilled(FixedBytes(request_id.0))
            .call()
            .await
            .map_err(|e| ChainError::from(classify(e)))
    }
}

impl RequestSource for EvmChain {
    fn requests(&self) -> BoxStream<'static, Result<InferenceRequest, ChainError>> {
        self.request_stream()
    }
}
