//! The oracle's staked registry: nodes register with stake and leave with a delay; the member
//! set is fixed per epoch on chain, and [`ChainMembership`] serves those epochs to a node as its
//! [`Membership`], so that nodes and the contract draw the same committee for every request.
//!
//! ```no_run
//! # async fn demo(evm: rakis_chain::EvmChain, key: rakis_core::NodeKey) -> Result<(), rakis_chain::EvmError> {
//! evm.register_node(&key, 1_000_000_000_000_000_000).await?; // 1 ether of stake
//! evm.advance_epoch().await?; // anyone may start the next epoch with the active nodes
//! let node = rakis_core::Node::builder()
//!     .membership(evm.membership()) // epochs read from the chain, refreshed as it is polled
//!     .request_source(evm.clone())
//!     .chain_sink(evm);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use alloy::primitives::{Address as EvmAddress, Bytes, FixedBytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use rakis_core::error::SharedError;
use rakis_core::identity::{eth_signed_message_hash, keccak256, public_key_xy};
use rakis_core::membership::{Epoch, Membership};
use rakis_core::{NodeId, NodeKey, RequestId};
use tracing::{debug, info};

use crate::contracts::RakisOracle;
use crate::error::{classify, EvmError};
use crate::evm::{evm_address, members_bytes, EvmChain};

/// Domain tag of a registration proof.
pub const REGISTER_TAG: &str = "rakis/register/v2";
/// Most blocks asked for in one `eth_getLogs`.
const LOG_RANGE: u64 = 9_999;

/// The epochs of one oracle's registry as this node read them from the chain: a
/// [`Membership`] whose [`epoch_at`](Membership::epoch_at) answers from a cache that the
/// oracle's request source refreshes before it hands out requests (so a request is never
/// judged by an epoch older than the one the contract gave it). Cheap to clone; clones share
/// the cache. Get one with [`EvmChain::membership`].
#[derive(Clone, Debug, Default)]
pub struct ChainMembership {
    inner: Arc<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    state: RwLock<CacheState>,
    /// Held while logs are read, so that two refreshes do not interleave.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct CacheState {
    /// Epochs by number: the second each starts governing requests, the block of its
    /// `EpochStarted` event, and its members.
    epochs: BTreeMap<u64, (u64, u64, Arc<Epoch>)>,
}

impl ChainMembership {
    /// Epoch `number`, if read.
    pub fn epoch(&self, number: u64) -> Option<Arc<Epoch>> {
        let state = self.inner.state.read().expect("membership lock");
        state.epochs.get(&number).map(|(_, _, e)| e.clone())
    }

    /// The epochs read so far, as (number, start in unix seconds).
    pub fn epochs(&self) -> Vec<(u64, u64)> {
        let state = self.inner.state.read().expect("membership lock");
        state.epochs.iter().map(|(n, (s, _, _))| (*n, *s)).collect()
    }
}

impl ChainMembership {
    /// Forgets the epochs started at block `block` or later (after a reorganisation: they are
    /// read again from the chain as it is now).
    pub(crate) fn rewind(&self, block: u64) {
        let mut state = self.inner.state.write().expect("membership lock");
        state.epochs.retain(|_, (_, at, _)| *at < block);
    }
}

impl Membership for ChainMembership {
    /// The epoch with the latest start at or before `created_at_ms`, as the contract chooses
    /// for a request made then.
    fn epoch_at(&self, created_at_ms: u64) -> Option<Arc<Epoch>> {
        let state = self.inner.state.read().expect("membership lock");
        state
            .epochs
            .values()
            .filter(|(start, _, _)| start.saturating_mul(1_000) <= created_at_ms)
            .max_by_key(|(start, _, _)| *start)
            .map(|(_, _, e)| e.clone())
    }
}

/// A registered node as the oracle stores it.
pub type NodeRecord = RakisOracle::Node;

impl EvmChain {
    /// This oracle's epochs as a [`Membership`] for a node (shared with the request source,
    /// which keeps it up to date).
    pub fn membership(&self) -> ChainMembership {
        self.inner().membership.clone()
    }

    /// Registers `key`'s node with `stake_wei` of stake paid by this chain's signer, who
    /// becomes its staker (the key signs its consent, bound to this chain, contract, staker and
    /// the node's registration count). The node is a member from the next epoch.
    pub async fn register_node(&self, key: &NodeKey, stake_wei: u128) -> Result<(), EvmError> {
        let node = evm_address(&key.address());
        let record = self.node_record(node).await?;
        let mut pre = REGISTER_TAG.as_bytes().to_vec();
        pre.extend(self.chain_id().to_be_bytes());
        pre.extend(self.oracle_address().0);
        pre.extend(node.0);
        pre.extend(self.sender().0);
        pre.extend(record.nonce.to_be_bytes());
        let signature = key.sign_digest(&eth_signed_message_hash(&keccak256(&pre)));
        let public_key =
            public_key_xy(&key.node_id()).map_err(|e| EvmError::Config(e.to_string()))?;
        let pending = self
            .send(
                self.oracle()
                    .register(
                        Bytes::from(public_key.to_vec()),
                        Bytes::from(signature.0.to_vec()),
                    )
                    .value(U256::from(stake_wei)),
            )
            .await?;
        self.confirm(pending).await?;
        info!(%node, stake_wei, "node registered");
        Ok(())
    }

    /// The oracle's record of `node` (staker zero: never registered).
    pub async fn node_record(&self, node: EvmAddress) -> Result<NodeRecord, EvmError> {
        self.oracle().nodeOf(node).call().await.map_err(classify)
    }

    /// Whether `node` is active (a member from the next epoch on).
    pub async fn is_active(&self, node: EvmAddress) -> Result<bool, EvmError> {
        Ok(self.node_record(node).await?.active)
    }

    /// Takes `node` out of the next epochs (its staker only); the stake stays bonded for the
    /// unbonding period.
    pub async fn exit_node(&self, node: EvmAddress) -> Result<(), EvmError> {
        let pending = self.send(self.oracle().exit(node)).await?;
        self.confirm(pending).await?;
        Ok(())
    }

    /// Ejects `node` for good (the oracle's owner only): its signatures stop counting at once.
    pub async fn eject_node(&self, node: EvmAddress) -> Result<(), EvmError> {
        let pending = self.send(self.oracle().eject(node)).await?;
        self.confirm(pending).await?;
        Ok(())
    }

    /// Credits a left node's stake to its staker (this chain's signer) once unbonded.
    pub async fn withdraw_stake(&self, node: EvmAddress) -> Result<(), EvmError> {
        let pending = self.send(self.oracle().withdrawStake(node)).await?;
        self.confirm(pending).await?;
        Ok(())
    }

    /// Stores the committee beacon of a request whose deadline lies more than 256 blocks
    /// after it (the chain forgets older block hashes).
    pub async fn record_beacon(&self, id: &RequestId) -> Result<(), EvmError> {
        let pending = self
            .send(self.oracle().recordBeacon(FixedBytes(id.0)))
            .await?;
        self.confirm(pending).await?;
        Ok(())
    }

    /// The active nodes (the members of the next epoch), ascending by node id.
    pub async fn active_nodes(&self) -> Result<Vec<NodeId>, EvmError> {
        let ids = self
            .oracle()
            .activeNodeIds()
            .call()
            .await
            .map_err(classify)?;
        let mut out = node_ids(&ids)
            .ok_or_else(|| EvmError::BadEvent("active node ids of odd length".into()))?;
        out.sort();
        Ok(out)
    }

    /// Starts the next epoch with the active nodes; returns its number. Anyone may call it, at
    /// most once per the oracle's epoch spacing.
    pub async fn advance_epoch(&self) -> Result<u64, EvmError> {
        let ids = self.active_nodes().await?;
        let members: Vec<u8> = ids.iter().flat_map(|n| n.0).collect();
        let pending = self
            .send(self.oracle().advanceEpoch(Bytes::from(members)))
            .await?;
        let receipt = self.confirm(pending).await?;
        let number = receipt
            .inner
            .logs()
            .iter()
            .find_map(|log| {
                log.log_decode::<RakisOracle::EpochStarted>()
                    .ok()
                    .map(|l| l.inner.data.number)
            })
            .ok_or_else(|| EvmError::BadEvent("no EpochStarted event in the receipt".into()))?;
        self.refresh_epochs().await?;
        info!(epoch = number, members = ids.len(), "epoch started");
        Ok(number)
    }

    /// Epoch `number`: from the cache, else read from the chain.
    pub async fn epoch(&self, number: u64) -> Result<Arc<Epoch>, EvmError> {
        let membership = &self.inner().membership;
        if let Some(e) = membership.epoch(number) {
            return Ok(e);
        }
        self.refresh_epochs().await?;
        membership
            .epoch(number)
            .ok_or_else(|| EvmError::BadEvent(format!("epoch {number} is not on the chain")))
    }

    /// Reads the epochs the cache lacks: their number from the contract, each one's members
    /// from its `EpochStarted` event (in the block the contract names); each digest is
    /// recomputed from the members and must equal the contract's.
    pub(crate) async fn refresh_epochs(&self) -> Result<(), EvmError> {
        let membership = &self.inner().membership.inner;
        let _one = membership.refreshing.lock().await;
        let count = u64::try_from(self.oracle().epochCount().call().await.map_err(classify)?)
            .unwrap_or(u64::MAX);
        let missing: Vec<u64> = {
            let state = membership.state.read().expect("membership lock");
            (0..count)
                .filter(|n| !state.epochs.contains_key(n))
                .collect()
        };
        for number in missing {
            let info = self
                .oracle()
                .epochOf(number)
                .call()
                .await
                .map_err(classify)?;
            let filter = Filter::new()
                .address(self.oracle_address())
                .event_signature(RakisOracle::EpochStarted::SIGNATURE_HASH)
                .topic1(U256::from(number))
                .from_block(info.blockNumber)
                .to_block(info.blockNumber);
            let logs = self
                .provider()
                .get_logs(&filter)
                .await
                .map_err(|e| EvmError::Rpc(SharedError::new(e)))?;
            let log = logs.first().ok_or_else(|| {
                EvmError::BadEvent(format!("no EpochStarted event of epoch {number}"))
            })?;
            let e = log
                .log_decode::<RakisOracle::EpochStarted>()
                .map_err(|e| EvmError::BadEvent(e.to_string()))?
                .inner
                .data;
            let ids = node_ids(&e.members)
                .filter(|ids| ids.len() == e.weights.len())
                .ok_or_else(|| EvmError::BadEvent(format!("epoch {number}: member list")))?;
            let epoch = Epoch::new(number, ids.into_iter().zip(e.weights.iter().copied()))
                .map_err(|err| EvmError::BadEvent(format!("epoch {number}: {err}")))?;
            if epoch.digest().0 != info.digest.0 || epoch.digest().0 != e.digest.0 {
                return Err(EvmError::BadEvent(format!(
                    "epoch {number}: the contract's digest differs from the node's"
                )));
            }
            debug_assert_eq!(members_bytes(&epoch), e.members.to_vec());
            debug!(
                epoch = number,
                start = info.startsAt,
                members = epoch.len(),
                "epoch read from the chain"
            );
            membership
                .state
                .write()
                .expect("membership lock")
                .epochs
                .insert(number, (info.startsAt, info.blockNumber, Arc::new(epoch)));
        }
        Ok(())
    }

    /// The oracle's logs with event `signature` in blocks `from..=to`.
    pub async fn logs(
        &self,
        signature: alloy::primitives::B256,
        from: u64,
        to: u64,
    ) -> Result<Vec<alloy::rpc::types::Log>, EvmError> {
        let mut out = Vec::new();
        let mut start = from;
        while start <= to {
            let end = to.min(start + LOG_RANGE);
            let filter = Filter::new()
                .address(self.oracle_address())
                .event_signature(signature)
                .from_block(start)
                .to_block(end);
            out.extend(
                self.provider()
                    .get_logs(&filter)
                    .await
                    .map_err(|e| EvmError::Rpc(SharedError::new(e)))?,
            );
            start = end + 1;
        }
        Ok(out)
    }
}

/// Node ids packed as the contract packs them (33 bytes each); `None` for a length that is not
/// a multiple of 33.
fn node_ids(packed: &[u8]) -> Option<Vec<NodeId>> {
    if !packed.len().is_multiple_of(NodeId::LEN) {
        return None;
    }
    Some(
        packed
            .chunks(NodeId::LEN)
            .map(|c| NodeId::from_slice(c).expect("33-byte chunks"))
            .collect(),
    )
}
