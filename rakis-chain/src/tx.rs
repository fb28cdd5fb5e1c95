//! Sending a transaction and seeing it through: one nonce per transaction, fee bumps at the
//! same nonce while it is stuck, and confirmations on the canonical chain.
//!
//! A transaction that is not in a block [`EvmConfig::replace_after`] after it was sent is sent
//! again with the same nonce and fees raised by a quarter (at least twice the current base fee
//! plus the tip): the chain keeps exactly one of the versions, so a stuck submission never
//! becomes two. While waiting, every version's receipt is looked for; a receipt counts once
//! its block is [`EvmConfig::confirmations`] deep and still the block at its height (a
//! reorganisation that drops the block sends the transaction on waiting, and resending).
//!
//! [`EvmConfig::replace_after`]: crate::EvmConfig::replace_after
//! [`EvmConfig::confirmations`]: crate::EvmConfig::confirmations

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::TxHash;
use alloy::providers::Provider;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use rakis_core::error::SharedError;
use tracing::{debug, info, warn};

use crate::error::{classify, EvmError};
use crate::evm::EvmChain;

/// Gas added to an estimate besides its fifth: the estimate runs without a gas price, under
/// which the oracle credits no reimbursement (a storage write it then skips).
const GAS_MARGIN: u64 = 30_000;

/// A transaction sent, with every version of it (same nonce, rising fees).
#[derive(Debug)]
pub(crate) struct SentTx {
    request: TransactionRequest,
    nonce: u64,
    hashes: Vec<TxHash>,
}

impl SentTx {
    /// The hash of the latest version.
    pub(crate) fn tx_hash(&self) -> TxHash {
        *self.hashes.last().expect("a sent transaction has a hash")
    }
}

fn rpc(e: impl std::error::Error + Send + Sync + 'static) -> EvmError {
    EvmError::Rpc(SharedError::new(e))
}

/// `v` raised by a quarter (and by at least 1).
fn bump(v: u128) -> u128 {
    v.saturating_add(v / 4).saturating_add(1)
}

impl EvmChain {
    /// Fills and sends a transaction, one at a time per chain: gas estimated on the pending
    /// block (its clock, not the last block's, decides whether a result comes too early) plus
    /// a fifth and [`GAS_MARGIN`], the next nonce of the sender's pool, EIP-1559 fees. A
    /// revert found while estimating comes back decoded, and nothing is sent.
    pub(crate) async fn send<C: alloy::sol_types::SolCall>(
        &self,
        call: alloy::contract::SolCallBuilder<&alloy::providers::DynProvider, C>,
    ) -> Result<SentTx, EvmError> {
        let _send = self.send_lock().lock().await;
        let estimate = call
            .clone()
            .block(alloy::eips::BlockId::pending())
            .estimate_gas()
            .await
            .map_err(classify)?;
        let provider = self.provider();
        let nonce = provider
            .get_transaction_count(self.sender())
            .pending()
            .await
            .map_err(rpc)?;
        let fees = provider.estimate_eip1559_fees().await.map_err(rpc)?;
        let request = call
            .gas(estimate + estimate / 5 + GAS_MARGIN)
            .into_transaction_request()
            .with_from(self.sender())
            .with_nonce(nonce)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let pending = provider
            .send_transaction(request.clone())
            .await
            .map_err(|e| classify(alloy::contract::Error::TransportError(e)))?;
        let hash = *pending.tx_hash();
        debug!(%hash, nonce, "transaction sent");
        Ok(SentTx {
            request,
            nonce,
            hashes: vec![hash],
        })
    }

    /// Waits until one version of `sent` is [`EvmConfig::confirmations`](crate::EvmConfig)
    /// deep on the canonical chain, resending it at the same nonce with higher fees every
    /// [`EvmConfig::replace_after`](crate::EvmConfig) it is not in a block; fails after
    /// [`EvmConfig::receipt_timeout`](crate::EvmConfig), or when the transaction reverted.
    pub(crate) async fn confirm(&self, mut sent: SentTx) -> Result<TransactionReceipt, EvmError> {
        let config = self.config();
        let provider = self.provider();
        let start = tokio::time::Instant::now();
        let give_up = start + config.receipt_timeout;
        let mut replace_at = start + config.replace_after;
        let poll = config
            .poll_interval
            .clamp(Duration::from_millis(20), Duration::from_secs(2));
        loop {
            let mut included = false;
            for hash in sent.hashes.iter().rev() {
                let Some(receipt) = provider.get_transaction_receipt(*hash).await.map_err(rpc)?
                else {
                    continue;
                };
                included = true;
                let (Some(number), Some(block_hash)) = (receipt.block_number, receipt.block_hash)
                else {
                    break;
                };
                let head = provider.get_block_number().await.map_err(rpc)?;
                if head < number + config.confirmations {
                    break;
                }
                let canonical = provider
                    .get_block_by_number(number.into())
                    .await
                    .map_err(rpc)?
                    .map(|b| b.header.hash);
                if canonical != Some(block_hash) {
                    // The receipt is of a block the chain left: wait for the transaction to
                    // come back (or resend it).
                    warn!(%hash, number, "the transaction's block was replaced");
                    included = false;
                    break;
                }
                if !receipt.status() {
                    return Err(EvmError::TransactionFailed(hash.to_string()));
                }
                if sent.hashes.len() > 1 {
                    info!(%hash, versions = sent.hashes.len(), nonce = sent.nonce, "a replacement was mined");
                }
                return Ok(receipt);
            }
            let now = tokio::time::Instant::now();
            if now >= give_up {
                return Err(EvmError::NotMined {
                    tx: sent.tx_hash().to_string(),
                    versions: sent.hashes.len(),
                });
            }
            if !included && now >= replace_at && !config.replace_after.is_zero() {
                self.replace(&mut sent).await;
                replace_at = now + config.replace_after;
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Sends `sent` again at its nonce with higher fees (a quarter more, at least twice the
    /// current base fee plus the tip). A refusal (the nonce was used meanwhile, the pool wants
    /// a higher bump) is logged: the caller goes on looking for receipts.
    async fn replace(&self, sent: &mut SentTx) {
        let provider = self.provider();
        let tip = bump(sent.request.max_priority_fee_per_gas.unwrap_or(1));
        let base = provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .ok()
            .flatten()
            .and_then(|b| b.header.base_fee_per_gas)
            .map_or(0, u128::from);
        let max_fee = bump(sent.request.max_fee_per_gas.unwrap_or(0)).max(2 * base + tip);
        let request = sent
            .request
            .clone()
            .with_max_priority_fee_per_gas(tip)
            .with_max_fee_per_gas(max_fee);
        match provider.send_transaction(request.clone()).await {
            Ok(pending) => {
                let hash = *pending.tx_hash();
                info!(%hash, nonce = sent.nonce, max_fee, tip, "transaction not mined: sent again with higher fees");
                sent.request = request;
                sent.hashes.push(hash);
            }
            Err(e) => debug!(nonce = sent.nonce, error = %e, "replacement refused"),
        }
    }
}
