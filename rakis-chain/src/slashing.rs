//! Slashing: evidence of a committer's misbehaviour ([`Misbehaviour`]) sent to the oracle,
//! which checks the committer's statement signatures, takes its whole stake, bans it and
//! credits the sender [`SLASH_REWARD_PERCENT`] of the stake.
//!
//! A node does this by itself: the coordinator turns conflicting statements it receives into
//! evidence and the driver hands it to every sink ([`ChainSink::report`]); the oracle's sink
//! is [`EvmChain`]. Hosts may also call [`EvmChain::report_misbehaviour`] with evidence they
//! hold.
//!
//! [`ChainSink::report`]: rakis_core::ChainSink::report

use alloy::primitives::{Bytes, FixedBytes};
use rakis_core::identity::keccak256;
use rakis_core::misbehaviour::{Misbehaviour, SignedCommit, SignedReveal};
use tracing::{debug, info};

use crate::contracts::RakisOracle;
use crate::error::{classify, EvmError, OracleRevert};
use crate::evm::EvmChain;

/// Share of a slashed stake the reporter is credited, in percent (the contract's
/// `SLASH_REWARD_PERCENT`; the rest is burned).
pub const SLASH_REWARD_PERCENT: u64 = 10;

/// The contract's form of a signed commit.
pub fn signed_commit(c: &SignedCommit) -> RakisOracle::SignedCommit {
    RakisOracle::SignedCommit {
        requestId: FixedBytes(c.commit.request_id.0),
        inferenceId: FixedBytes(c.commit.inference_id.0),
        commitment: FixedBytes(c.commit.commitment.0),
        signature: Bytes::copy_from_slice(&c.signature.0),
    }
}

/// The contract's form of a signed reveal.
pub fn signed_reveal(r: &SignedReveal) -> RakisOracle::SignedReveal {
    let s = &r.statement;
    RakisOracle::SignedReveal {
        requestId: FixedBytes(s.request_id.0),
        inferenceId: FixedBytes(s.inference_id.0),
        outputHash: FixedBytes(s.output_hash.0),
        dim: s.embedding.dim(),
        embedding: Bytes::from(s.embedding.to_bytes()),
        salt: FixedBytes(s.salt.0),
        signature: Bytes::copy_from_slice(&r.signature.0),
    }
}

impl EvmChain {
    /// Stake (wei) the oracle holds for the node `node` (0 for a node that never registered,
    /// was slashed or took its stake back).
    pub async fn stake_of(&self, node: &rakis_core::NodeId) -> Result<u128, EvmError> {
        let address = self
            .oracle()
            .nodeById(FixedBytes(keccak256(&node.0)))
            .call()
            .await
            .map_err(classify)?;
        if address.is_zero() {
            return Ok(0);
        }
        Ok(self.node_record(address).await?.stake)
    }

    /// Sends `evidence` to the oracle and waits for its confirmations; returns the
    /// transaction hash, or `None` when the node has nothing at stake on this oracle (it never
    /// registered here, or someone slashed it first). The evidence is checked first
    /// ([`Misbehaviour::verify`]): evidence that proves nothing is refused without a
    /// transaction. Every honest node that saw the misbehaviour reports it: each waits
    /// 0–3 × [`EvmConfig::stagger`](crate::EvmConfig::stagger) (by its address and the
    /// request) and looks at the stake again, so that usually one transaction is sent.
    pub async fn report_misbehaviour(
        &self,
        evidence: &Misbehaviour,
    ) -> Result<Option<String>, EvmError> {
        evidence
            .verify()
            .map_err(|e| EvmError::Config(format!("evidence that proves nothing: {e}")))?;
        let node = evidence.node();
        let mut pre = self.sender().to_vec();
        pre.extend_from_slice(&evidence.request_id().0);
        let rank = u32::from(keccak256(&pre)[0] % 4);
        let stagger = self.config().stagger;
        if rank > 0 && !stagger.is_zero() {
            tokio::time::sleep(stagger * rank).await;
        }
        if self.stake_of(&node).await? == 0 {
            debug!(node = %node.short(), "nothing at stake on this oracle; not reported");
            return Ok(None);
        }
        let node_id = Bytes::copy_from_slice(&node.0);
        let oracle = self.oracle();
        let sent = match evidence {
            Misbehaviour::Equivocation {
                network,
                first,
                second,
            } => {
                self.send(oracle.slashEquivocation(
                    node_id,
                    FixedBytes(network.0),
                    signed_commit(first),
                    signed_commit(second),
                ))
                .await
            }
            Misbehaviour::FalseReveal {
                network,
                commit,
                reveal,
            } => {
                self.send(oracle.slashFalseReveal(
                    node_id,
                    FixedBytes(network.0),
                    signed_commit(commit),
                    signed_reveal(reveal),
                ))
                .await
            }
            other => {
                return Err(EvmError::Config(format!(
                    "this oracle cannot judge {} evidence",
                    other.kind()
                )))
            }
        };
        let pending = match sent {
            Ok(p) => p,
            // Another reporter was first.
            Err(EvmError::Reverted(OracleRevert::NothingToSlash { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        let receipt = self.confirm(pending).await?;
        let tx = receipt.transaction_hash.to_string();
        info!(node = %node.short(), kind = evidence.kind(), %tx, "misbehaviour reported: stake slashed");
        Ok(Some(tx))
    }
}
