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
use rakis_core::identity::address_of_node;
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
    /// Blocks a request event must be buried under before the node takes it, and blocks the
    /// node waits on top of its own submission before it reports it stored (3 by default; 0 on
    /// a dev chain). Deeper reorganisations are noticed and the blocks read again.
    pub confirmations: u64,
    /// At start, how many blocks back the source looks for requests (0: only new ones). A node
    /// that restarts within a request's deadline finds the request again this way.
    pub lookback_blocks: u64,
    /// How long a submission keeps retrying through RPC failures before giving up.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// Longest wait for a transaction to be mined and confirmed (across its fee bumps).
    #[serde(with = "humantime_serde")]
    pub receipt_timeout: Duration,
    /// A transaction not in a block this long after it was sent is sent again with the same
    /// nonce and higher fees (0: never).
    #[serde(with = "humantime_serde")]
    pub replace_after: Duration,
    /// Nodes that agreed take turns: the node ranked `k` for a request waits `k × stagger`
    /// and submits only when nobody has yet, so that one transaction usually suffices.
    #[serde(with = "humantime_serde")]
    pub stagger: Duration,
    /// The block the oracle was deployed in: where looking a request up by id
    /// ([`EvmChain::request`]) starts.
    pub deployed_at_block: u64,
}

impl Default for EvmConfig {
    fn default() -> Self {
        EvmConfig {
            rpc_url: "http://127.0.0.1:8545".into(),
            oracle: EvmAddress::ZERO,
            chain_id: None,
            poll_interval: Duration::from_secs(1),
            confirmations: 3,
            lookback_blocks: 0,
            retry_for: Duration::from_secs(120),
            receipt_timeout: Duration::from_secs(180),
            replace_after: Duration::from_secs(30),
            stagger: Duration::from_secs(2),
            deployed_at_block: 0,
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
            confirmations: 0,
            poll_interval: Duration::from_millis(200),
            retry_for: Duration::from_secs(60),
            receipt_timeout: Duration::from_secs(5),
            replace_after: Duration::from_secs(2),
            stagger: Duration::from_millis(300),
            ..EvmConfig::new(rpc_url, oracle)
        }
    }
}

/// The oracle's deployment parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OracleDeployment {
    /// Lowest stake a node registers with, in wei (at least 1 gwei: weights are stake in gwei).
    pub min_stake_wei: u128,
    /// Seconds a leaving node's stake stays bonded and slashable; must outlast an epoch, the
    /// longest request (7 days) and its submission window.
    pub unbonding_period_s: u64,
    /// Shortest time between two epochs, in seconds.
    pub epoch_spacing_s: u64,
    /// Seconds after a request's deadline during which results are accepted.
    pub submission_window_s: u64,
    /// Lowest payment per request besides its gas, in wei.
    pub min_payment_wei: u128,
}

impl Default for OracleDeployment {
    /// 1 ether of stake, hourly epochs, a one-hour submission window, unbonding after 8 days,
    /// no minimum payment besides gas.
    fn default() -> Self {
        OracleDeployment {
            min_stake_wei: 1_000_000_000_000_000_000,
            unbonding_period_s: 8 * 24 * 3_600,
            epoch_spacing_s: 3_600,
            submission_window_s: 3_600,
            min_payment_wei: 0,
        }
    }
}

impl OracleDeployment {
    /// For a development chain: epochs a second apart, otherwise the defaults.
    pub fn local_dev() -> Self {
        OracleDeployment {
            epoch_spacing_s: 1,
            ..OracleDeployment::default()
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

pub(crate) struct Inner {
    config: EvmConfig,
    chain_id: u64,
    oracle: RakisOracleInstance<DynProvider>,
    provider: DynProvider,
    sender: EvmAddress,
    /// Held while a transaction is filled and sent (the nonce is read from the pool).
    send_lock: tokio::sync::Mutex<()>,
    /// The registry's epochs read so far (shared with [`EvmChain::membership`]).
    pub(crate) membership: crate::registry::ChainMembership,
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
        let chain = EvmChain {
            inner: Arc::new(Inner {
                config,
                chain_id,
                oracle,
                provider,
                sender,
                send_lock: tokio::sync::Mutex::new(()),
                membership: Default::default(),
            }),
        };
        // The registry's epochs so far (a node's membership answers from them at once).
        chain.refresh_epochs().await?;
        Ok(chain)
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
            U256::from(params.min_stake_wei),
            params.unbonding_period_s,
            params.epoch_spacing_s,
            params.submission_window_s,
            U256::from(params.min_payment_wei),
        )
        .await
        .map_err(classify)?;
        Ok(*contract.address())
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
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

    /// The lock that sends one transaction at a time (nonces in order).
    pub(crate) fn send_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.send_lock
    }

    /// The configuration.
    pub fn config(&self) -> &EvmConfig {
        &self.inner.config
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

    /// The lowest payment the oracle takes now for a request of `max_tokens` tokens with a
    /// callback of `callback_gas`: its minimum plus the gas of submitting the result (the
    /// largest output stored, the callback) at the current base fee. Pay a margin: the base fee
    /// moves between blocks.
    pub async fn required_payment(
        &self,
        max_tokens: u32,
        callback_gas: u32,
    ) -> Result<u128, EvmError> {
        let oracle = &self.inner.oracle;
        let per_token = u64::try_from(
            oracle
                .OUTPUT_BYTES_PER_TOKEN()
                .call()
                .await
                .map_err(classify)?,
        )
        .unwrap_or(u64::MAX);
        let cap = u64::try_from(oracle.MAX_OUTPUT_BYTES().call().await.map_err(classify)?)
            .unwrap_or(u64::MAX);
        let max_output = (max_tokens as u64).saturating_mul(per_token).min(cap) as u32;
        let wei = oracle
            .requiredPayment(max_output, callback_gas)
            .call()
            .await
            .map_err(classify)?;
        u128::try_from(wei).map_err(|e| EvmError::Config(e.to_string()))
    }

    /// A request this oracle made, rebuilt from its `InferenceRequested` event (as the request
    /// source reads it); `None` when the chain has no such event.
    pub async fn request(&self, id: &RequestId) -> Result<Option<InferenceRequest>, EvmError> {
        let logs = self
            .request_logs(RakisOracle::InferenceRequested::SIGNATURE_HASH, id)
            .await?;
        logs.first().map(|l| self.request_from_log(l)).transpose()
    }

    /// What the oracle stores for request `id` (requester zero: not made here).
    pub async fn request_state(&self, id: &RequestId) -> Result<RakisOracle::Request, EvmError> {
        self.inner
            .oracle
            .requestOf(FixedBytes(id.0))
            .call()
            .await
            .map_err(classify)
    }

    /// The oracle's logs of event `signature` about request `id` (its first indexed field)
    /// since [`EvmConfig::deployed_at_block`].
    async fn request_logs(
        &self,
        signature: alloy::primitives::B256,
        id: &RequestId,
    ) -> Result<Vec<Log>, EvmError> {
        let filter = Filter::new()
            .address(self.inner.config.oracle)
            .event_signature(signature)
            .topic1(FixedBytes(id.0))
            .from_block(self.inner.config.deployed_at_block);
        self.inner
            .provider
            .get_logs(&filter)
            .await
            .map_err(|e| EvmError::Rpc(SharedError::new(e)))
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

    /// What the oracle owes `account` (rewards, refunds, returned stake), in wei.
    pub async fn credit_of(&self, account: EvmAddress) -> Result<U256, EvmError> {
        self.inner
            .oracle
            .credits(account)
            .call()
            .await
            .map_err(classify)
    }

    /// Withdraws what the oracle owes this chain's signer (a node key's signer for rewards, see
    /// [`signer_from_node_key`]; a staker's for returned stake; a requester's for refunds) to
    /// `to`.
    pub async fn withdraw(&self, to: EvmAddress) -> Result<String, EvmError> {
        let pending = self.send(self.inner.oracle.withdraw(to)).await?;
        let receipt = self.confirm(pending).await?;
        Ok(receipt.transaction_hash.to_string())
    }

    /// Credits the payment of an expired, unfulfilled request back to its requester.
    pub async fn refund(&self, id: &RequestId) -> Result<(), EvmError> {
        let pending = self
            .send(self.inner.oracle.refund(FixedBytes(id.0)))
            .await?;
        self.confirm(pending).await?;
        Ok(())
    }

    /// Number of `ResultSubmitted` events the oracle emitted for `id` (1 once a result is
    /// stored: a second submission reverts without an event).
    pub async fn result_events(&self, id: &RequestId) -> Result<usize, EvmError> {
        Ok(self
            .request_logs(RakisOracle::ResultSubmitted::SIGNATURE_HASH, id)
            .await?
            .len())
    }

    /// Submits `result` of `request` (a request this oracle made) with the signatures of
    /// `attestations` that match it, retrying through RPC failures for
    /// [`EvmConfig::retry_for`]; returns the transaction hash.
    ///
    /// Only signatures the contract counts are sent: valid ones over the result's digest by
    /// bonded members of the request's committee (drawn from the epoch the contract stored for
    /// it). With fewer than the committee's threshold the answer is
    /// [`EvmError::NotEnoughSignatures`] and nothing is sent. Exactly once: before every attempt
    /// the oracle is asked whether the result is stored, and a stored result answers
    /// [`OracleRevert::AlreadyFulfilled`]. A revert is decoded and returned at once, without
    /// retrying, except [`OracleRevert::TooEarly`] (this node's clock ahead of the chain's).
    pub async fn submit_result(
        &self,
        request: &InferenceRequest,
        result: &ConsensusResultMsg,
        attestations: &[ConsensusResultMsg],
    ) -> Result<String, EvmError> {
        let id = request.id();
        if result.request_id != id {
            return Err(EvmError::Config(format!(
                "result of {} offered for request {}",
                result.request_id.short(),
                id.short()
            )));
        }
        let config = &self.inner.config;
        let give_up = tokio::time::Instant::now() + config.retry_for;
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(250);
        let mut staggered = false;
        loop {
            attempts += 1;
            let attempt = async {
                let prepared = self
                    .prepare_submission(request, result, attestations)
                    .await?;
                if !staggered {
                    staggered = true;
                    self.stagger(result, &prepared).await;
                }
                self.try_submit(&id, prepared).await
            };
            match attempt.await {
                Ok(tx) => {
                    info!(%tx, "result stored on chain");
                    return Ok(tx);
                }
                Err(EvmError::Reverted(OracleRevert::TooEarly { deadline }))
                    if tokio::time::Instant::now() < give_up =>
                {
                    debug!(
                        deadline,
                        "the chain's clock has not reached the deadline yet"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(
                    e @ (EvmError::Reverted(_)
                    | EvmError::Config(_)
                    | EvmError::BadEvent(_)
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

    /// Nodes that agreed take turns: the node ranked `k` among the signers waits
    /// `k × stagger`, so that one transaction usually suffices.
    async fn stagger(&self, result: &ConsensusResultMsg, prepared: &PreparedSubmission) {
        let own = address_of_node(&result.signer)
            .map(|a| evm_address(&a))
            .ok();
        let n = prepared.signers.len().max(1);
        let rank = own
            .and_then(|a| prepared.signers.iter().position(|s| *s == a))
            .map(|p| (p + result.request_id.0[0] as usize) % n)
            .unwrap_or(0);
        let stagger = self.inner.config.stagger;
        if rank > 0 && !stagger.is_zero() {
            let wait = stagger * rank as u32;
            debug!(rank, wait = ?wait, "waiting for the nodes ranked before this one");
            tokio::time::sleep(wait).await;
        }
    }

    /// Reads what the contract stored for the request and assembles what it will count.
    async fn prepare_submission(
        &self,
        request: &InferenceRequest,
        result: &ConsensusResultMsg,
        attestations: &[ConsensusResultMsg],
    ) -> Result<PreparedSubmission, EvmError> {
        let oracle = &self.inner.oracle;
        let stored = self.request_state(&result.request_id).await?;
        if stored.requester == EvmAddress::ZERO {
            // Requests made elsewhere are refused by the contract: send nothing.
            return Err(EvmError::Reverted(OracleRevert::UnknownRequest));
        }
        if stored.fulfilled {
            return Err(EvmError::Reverted(OracleRevert::AlreadyFulfilled));
        }
        let epoch = self.epoch(stored.epoch).await?;
        let committee = epoch.committee(request);
        let need = committee.signature_threshold(request.frame.percentage_ppm());
        let mut signed = Vec::new();
        for (node, signature) in result.supporting_signatures(attestations) {
            if !committee.contains(&node) {
                continue;
            }
            let Ok(address) = address_of_node(&node) else {
                continue;
            };
            let address = evm_address(&address);
            let record = oracle.nodeOf(address).call().await.map_err(classify)?;
            if record.stake == 0 || record.banned {
                debug!(node = %address, "signer has no bonded stake; left out");
                continue;
            }
            signed.push((address, Bytes::from(signature.0.to_vec())));
        }
        signed.sort();
        if signed.len() < need {
            return Err(EvmError::NotEnoughSignatures {
                have: signed.len(),
                need,
            });
        }
        let (signers, signatures): (Vec<_>, Vec<_>) = signed.into_iter().unzip();
        Ok(PreparedSubmission {
            signers,
            submission: RakisOracle::Submission {
                output: result.output.clone(),
                jointHash: FixedBytes(result.joint_hash.0),
                payees: Bytes::from(payees_bytes(result)),
                members: Bytes::from(members_bytes(&epoch)),
                weights: epoch.members().map(|(_, w)| w).collect(),
                signatures,
            },
        })
    }

    async fn try_submit(
        &self,
        id: &RequestId,
        prepared: PreparedSubmission,
    ) -> Result<String, EvmError> {
        let oracle = &self.inner.oracle;
        let key = FixedBytes(id.0);
        if oracle.isFulfilled(key).call().await.map_err(classify)? {
            return Err(EvmError::Reverted(OracleRevert::AlreadyFulfilled));
        }
        let pending = self
            .send(oracle.submitResult(key, prepared.submission))
            .await?;
        debug!(tx = %pending.tx_hash(), signatures = prepared.signers.len(), "result transaction sent");
        let receipt = self.confirm(pending).await?;
        Ok(receipt.transaction_hash.to_string())
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
                let mut cursor = Cursor::default();
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
                    let polled = chain.poll(&mut cursor).await;
                    chain.keep_beacons(&mut cursor).await;
                    match polled {
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

    /// Reads the request events of blocks not seen yet. When the last block read is no longer
    /// on the chain (a reorganisation deeper than [`EvmConfig::confirmations`]), the blocks
    /// since [`REORG_REWIND`] before it are read again: requests the new branch holds are
    /// handed out (again: the node knows the ones it has by id).
    async fn poll(
        &self,
        cursor: &mut Cursor,
    ) -> Result<Vec<Result<InferenceRequest, EvmError>>, EvmError> {
        let config = &self.inner.config;
        let head = self
            .inner
            .provider
            .get_block_number()
            .await
            .map_err(|e| EvmError::Rpc(SharedError::new(e)))?;
        cursor.head = Some(head);
        if let Some((number, hash)) = cursor.last {
            if self.block_hash(number).await? != Some(hash) {
                let back = number.saturating_sub(REORG_REWIND);
                warn!(
                    block = number,
                    rewind_to = back,
                    "the chain reorganised: reading again"
                );
                cursor.next = Some(back.max(config.deployed_at_block));
                cursor.last = None;
                self.inner.membership.rewind(back);
            }
        }
        let safe = head.saturating_sub(config.confirmations);
        let next = &mut cursor.next;
        let from = *next.get_or_insert_with(|| (safe + 1).saturating_sub(config.lookback_blocks));
        if safe < from {
            return Ok(Vec::new());
        }
        // Epochs first: a request is judged by the epoch the contract gave it, which started
        // in an earlier block or earlier in the same one.
        self.refresh_epochs().await?;
        let mut found = Vec::new();
        for log in self
            .logs(RakisOracle::InferenceRequested::SIGNATURE_HASH, from, safe)
            .await?
        {
            let request = self.request_from_log(&log);
            if let (Ok(r), Some(block)) = (&request, log.block_number) {
                if cursor.beacons.len() < MAX_TRACKED_BEACONS {
                    cursor.beacons.push((r.id(), block));
                }
            }
            found.push(request);
        }
        cursor.next = Some(safe + 1);
        cursor.last = self.block_hash(safe).await?.map(|h| (safe, h));
        Ok(found)
    }

    /// Records the beacon of every watched request that has no result yet and nears the end
    /// of the span in which the chain returns its block's hash, so that its committee can still
    /// be checked when its result comes. Failures are logged; the request is tried again at the
    /// next poll while the hash is available.
    async fn keep_beacons(&self, cursor: &mut Cursor) {
        let Some(head) = cursor.head else {
            return;
        };
        if cursor.beacons.is_empty() {
            return;
        }
        let sender = self.inner.sender.0[0];
        let mut keep = Vec::with_capacity(cursor.beacons.len());
        for (id, block) in std::mem::take(&mut cursor.beacons) {
            let age = head.saturating_sub(block);
            if age >= 256 {
                continue;
            }
            let after = RECORD_BEACON_AFTER + ((id.0[0] ^ sender) % 32) as u64;
            if age < after {
                keep.push((id, block));
                continue;
            }
            let stored = match self.request_state(&id).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(request = %id.short(), error = %e, "cannot read the request");
                    keep.push((id, block));
                    continue;
                }
            };
            if stored.fulfilled || stored.refunded || stored.beacon != FixedBytes::ZERO {
                continue;
            }
            match self.record_beacon(&id).await {
                Ok(()) => info!(request = %id.short(), "committee beacon recorded"),
                Err(e) => {
                    debug!(request = %id.short(), error = %e, "cannot record the beacon");
                    keep.push((id, block));
                }
            }
        }
        cursor.beacons = keep;
    }

    /// The hash of block `number` on the chain as it is now (`None`: no such block).
    async fn block_hash(&self, number: u64) -> Result<Option<alloy::primitives::B256>, EvmError> {
        Ok(self
            .inner
            .provider
            .get_block_by_number(number.into())
            .await
            .map_err(|e| EvmError::Rpc(SharedError::new(e)))?
            .map(|b| b.header.hash))
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

/// How far before a block that left the chain the request source reads again.
pub const REORG_REWIND: u64 = 64;

/// Where the request source is: the next block to read, and the last block read with its hash
/// (to notice a reorganisation).
#[derive(Debug, Default)]
struct Cursor {
    next: Option<u64>,
    last: Option<(u64, alloy::primitives::B256)>,
    /// Requests read (id, block) whose committee beacon may need recording.
    beacons: Vec<(RequestId, u64)>,
    /// The chain's head at the last poll.
    head: Option<u64>,
}

/// Blocks after a request's block from which its beacon is recorded when it has no result yet
/// (the chain returns the hashes of the last 256 blocks only), plus up to 31 more that differ
/// from one sender to the next so that usually one node pays for it.
pub const RECORD_BEACON_AFTER: u64 = 192;
/// Most requests whose beacon the source watches.
const MAX_TRACKED_BEACONS: usize = 4_096;

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

/// A submission assembled for the contract, with its signers (ascending).
struct PreparedSubmission {
    signers: Vec<EvmAddress>,
    submission: RakisOracle::Submission,
}

/// The payees of a result as the contract takes them: the distinct accepted node ids,
/// ascending, 33 bytes each (what [`payees_digest`](rakis_core::consensus::payees_digest)
/// hashes).
pub fn payees_bytes(result: &ConsensusResultMsg) -> Vec<u8> {
    rakis_core::consensus::payees(&result.accepted)
}

/// An epoch's member ids as the contract takes them: ascending, 33 bytes each (their weights
/// are [`Epoch::members`](rakis_core::membership::Epoch::members) in the same order).
pub fn members_bytes(epoch: &rakis_core::membership::Epoch) -> Vec<u8> {
    epoch.members().flat_map(|(n, _)| n.0).collect()
}

#[async_trait]
impl ChainSink for EvmChain {
    fn name(&self) -> String {
        format!(
            "evm:{}:{:#x}",
            self.inner.chain_id, self.inner.config.oracle
        )
    }

    /// Requests its oracle made: the contract refuses results of requests made elsewhere.
    fn accepts(&self, request: &InferenceRequest) -> bool {
        matches!(
            &request.origin,
            Origin::Chain { chain_id, contract, .. }
                if *chain_id == self.inner.chain_id
                    && evm_address(contract) == self.inner.config.oracle
        )
    }

    async fn submit(
        &self,
        request: &InferenceRequest,
        result: &ConsensusResultMsg,
        attestations: &[ConsensusResultMsg],
    ) -> Result<SubmitReceipt, ChainError> {
        let tx = self.submit_result(request, result, attestations).await?;
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

    /// Evidence goes to the oracle, which slashes the node's stake there (see
    /// [`EvmChain::report_misbehaviour`]).
    async fn report(
        &self,
        evidence: &rakis_core::Misbehaviour,
    ) -> Result<Option<SubmitReceipt>, ChainError> {
        Ok(self
            .report_misbehaviour(evidence)
            .await?
            .map(|reference| SubmitReceipt {
                sink: self.name(),
                reference,
            }))
    }
}

impl RequestSource for EvmChain {
    fn requests(&self) -> BoxStream<'static, Result<InferenceRequest, ChainError>> {
        self.request_stream()
    }
}
