//! The [`ChainSink`] and [`RequestSource`] parts: results written to chains (or a ledger), and
//! requests read from them.
//!
//! Implementations: `rakis_chain::EvmChain` (the Solidity oracle through alloy; both parts) and
//! `rakis_chain::LedgerSink` (an embedded hash-chained ledger file).

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::SharedError;
use crate::misbehaviour::Misbehaviour;
use crate::protocol::{ConsensusResultMsg, InferenceRequest};
use crate::RequestId;

/// Receipt of a result written to a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReceipt {
    /// Which sink.
    pub sink: String,
    /// Chain-specific reference (transaction hash, ledger index).
    pub reference: String,
}

/// Writes results to a chain (or ledger).
///
/// Implemented for `&T`, `Arc<T>` and `Box<T>` of any sink.
#[async_trait]
#[auto_impl::auto_impl(&, Box, Arc)]
pub trait ChainSink: Send + Sync {
    /// A stable name of this sink (for example `evm:31337`), used to track per-chain state.
    fn name(&self) -> String;
    /// Whether this sink records results of `request` (default: every request). An oracle
    /// contract's sink takes only the requests its contract made; a node neither marks nor
    /// submits results to a sink that declines.
    fn accepts(&self, request: &InferenceRequest) -> bool {
        let _ = request;
        true
    }
    /// Submits the node's own signed `result` of `request`, with the matching results other
    /// nodes signed (`attestations`, same result digest). Must be idempotent: a result already
    /// written returns [`ChainError::AlreadySubmitted`] or the earlier receipt. A sink that needs
    /// more signatures than it was given answers [`ChainError::NotEnoughSignatures`]; the node
    /// then submits again as more attestations arrive.
    async fn submit(
        &self,
        request: &InferenceRequest,
        result: &ConsensusResultMsg,
        attestations: &[ConsensusResultMsg],
    ) -> Result<SubmitReceipt, ChainError>;
    /// Whether the result of `request_id` is already written.
    async fn is_submitted(&self, request_id: &RequestId) -> Result<bool, ChainError>;
    /// Sends verified evidence of a committer's misbehaviour to the chain, which punishes the
    /// committer (the oracle contract slashes its stake and rewards the reporter). `Ok(None)`:
    /// this sink does not punish (the default) or the committer has nothing at stake there;
    /// evidence already acted on answers `Ok(None)` too.
    async fn report(&self, evidence: &Misbehaviour) -> Result<Option<SubmitReceipt>, ChainError> {
        let _ = evidence;
        Ok(None)
    }
}

/// A source of chain-originated requests (for example contract events).
///
/// Implemented for `&T`, `Arc<T>` and `Box<T>` of any source.
#[auto_impl::auto_impl(&, Box, Arc)]
pub trait RequestSource: Send + Sync {
    /// The stream of requests, each with `Origin::Chain`.
    fn requests(&self) -> BoxStream<'static, Result<InferenceRequest, ChainError>>;
}

/// Errors of a [`ChainSink`] or a [`RequestSource`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The chain rejected the transaction (the decoded reason as the source, for example a
    /// `rakis_chain::OracleRevert`).
    #[error("reverted: {0}")]
    Reverted(#[source] SharedError),
    /// The RPC endpoint could not be reached.
    #[error("rpc unavailable: {0}")]
    Unavailable(#[source] SharedError),
    /// The result is already on the chain.
    #[error("already submitted")]
    AlreadySubmitted,
    /// The sink needs more node signatures than it was given (the node submits again when more
    /// attestations arrive).
    #[error("not enough signatures: {have} of {need}")]
    NotEnoughSignatures {
        /// Usable signatures given.
        have: usize,
        /// Signatures the chain requires.
        need: usize,
    },
    /// Any other failure of the sink (its own error as the source).
    #[error("chain: {0}")]
    Other(#[source] SharedError),
}
