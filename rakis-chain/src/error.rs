//! Errors of the chain layer.

use rakis_core::error::SharedError;
use rakis_core::ChainError;

use crate::contracts::RakisOracle::RakisOracleErrors;

/// Why the oracle contract rejected a call: its custom errors, decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OracleRevert {
    /// A result of this request is already stored.
    #[error("a result of this request is already stored")]
    AlreadyFulfilled,
    /// The request's submission window has closed.
    #[error("the request expired at {expired_at} (unix seconds)")]
    RequestExpired {
        /// End of the submission window.
        expired_at: u64,
    },
    /// The request was refunded.
    #[error("the request was refunded")]
    AlreadyRefunded,
    /// Fewer signatures than the request requires.
    #[error("too few signatures: {provided} of {required}")]
    TooFewSignatures {
        /// Signatures given.
        provided: u64,
        /// Signatures required.
        required: u64,
    },
    /// A signature does not recover to the node listed beside it.
    #[error("signature {index} is not by {expected}")]
    InvalidSignature {
        /// Position in the list.
        index: u64,
        /// The listed node.
        expected: String,
    },
    /// Signers must be listed strictly ascending (no duplicates).
    #[error("signers not strictly ascending at position {index} (duplicate or unsorted)")]
    SignersNotSorted {
        /// Position in the list.
        index: u64,
    },
    /// A signer is not a registered node.
    #[error("node {node} is not registered")]
    NodeNotRegistered {
        /// The signer.
        node: String,
    },
    /// Lists of different lengths.
    #[error("{nodes} nodes but {signatures} signatures")]
    LengthMismatch {
        /// Nodes listed.
        nodes: u64,
        /// Signatures listed.
        signatures: u64,
    },
    /// The request does not exist.
    #[error("unknown request")]
    UnknownRequest,
    /// The request's parameters are invalid.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// The contract's reason.
        reason: String,
    },
    /// The payment does not cover the request.
    #[error("payment too low: {paid} < {required} wei")]
    PaymentTooLow {
        /// Wei paid.
        paid: String,
        /// Wei required.
        required: String,
    },
    /// The registration proof is invalid.
    #[error("invalid registration of {node}")]
    InvalidRegistration {
        /// The node.
        node: String,
    },
    /// A refund before the submission window closed.
    #[error("not expired before {expires_at} (unix seconds)")]
    NotExpired {
        /// End of the submission window.
        expires_at: u64,
    },
    /// Too little gas left for the consumer's callback.
    #[error("insufficient gas for the callback: {left} < {needed}")]
    InsufficientGas {
        /// Gas left.
        left: u64,
        /// Gas needed.
        needed: u64,
    },
    /// A withdrawal with no balance.
    #[error("nothing to withdraw for {node}")]
    NothingToWithdraw {
        /// The node.
        node: String,
    },
    /// A transfer of ether failed.
    #[error("transfer of {amount} wei failed")]
    TransferFailed {
        /// Wei.
        amount: String,
    },
    /// Only the owner may do this.
    #[error("only the owner may do this")]
    NotOwner,
    /// A revert the client could not decode (raw revert data).
    #[error("undecoded revert 0x{0}")]
    Undecoded(String),
}

impl OracleRevert {
    /// Maps the ABI-decoded custom error of the oracle.
    pub fn from_decoded(e: RakisOracleErrors) -> Self {
        use RakisOracleErrors as E;
        let small = |v: alloy::primitives::U256| u64::try_from(v).unwrap_or(u64::MAX);
        match e {
            E::AlreadyFulfilled(_) => OracleRevert::AlreadyFulfilled,
            E::RequestExpired(x) => OracleRevert::RequestExpired {
                expired_at: x.expiredAt,
            },
            E::AlreadyRefunded(_) => OracleRevert::AlreadyRefunded,
            E::TooFewSignatures(x) => OracleRevert::TooFewSignatures {
                provided: small(x.provided),
                required: small(x.required),
            },
            E::InvalidSignature(x) => OracleRevert::InvalidSignature {
                index: small(x.index),
                expected: x.expected.to_string(),
            },
            E::SignersNotSorted(x) => OracleRevert::SignersNotSorted {
                index: small(x.index),
            },
            E::NodeNotRegistered(x) => OracleRevert::NodeNotRegistered {
                node: x.node.to_string(),
            },
            E::LengthMismatch(x) => OracleRevert::LengthMismatch {
                nodes: small(x.nodes),
                signatures: small(x.signatures),
            },
            E::UnknownRequest(_) => OracleRevert::UnknownRequest,
            E::InvalidRequest(x) => OracleRevert::InvalidRequest { reason: x.reason },
            E::PaymentTooLow(x) => OracleRevert::PaymentTooLow {
                paid: x.paid.to_string(),
                required: x.required.to_string(),
            },
            E::InvalidRegistration(x) => OracleRevert::InvalidRegistration {
                node: x.node.to_string(),
            },
            E::NotExpired(x) => OracleRevert::NotExpired {
                expires_at: x.expiresAt,
            },
            E::InsufficientGas(x) => OracleRevert::InsufficientGas {
                left: small(x.left),
                needed: small(x.needed),
            },
            E::NothingToWithdraw(x) => OracleRevert::NothingToWithdraw {
                node: x.node.to_string(),
            },
            E::TransferFailed(x) => OracleRevert::TransferFailed {
                amount: x.amount.to_string(),
            },
            E::NotOwner(_) => OracleRevert::NotOwner,
        }
    }
}

/// Errors of [`EvmChain`](crate::EvmChain).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EvmError {
    /// The configuration is unusable (bad URL, missing address…).
    #[error("invalid chain configuration: {0}")]
    Config(String),
    /// The endpoint serves another chain than configured.
    #[error("the RPC endpoint serves chain {actual}, configured {expected}")]
    WrongChain {
        /// Configured chain id.
        expected: u64,
        /// Chain id the endpoint reported.
        actual: u64,
    },
    /// No contract code at the oracle address.
    #[error("no contract at {0}")]
    NoContract(String),
    /// The RPC endpoint failed or could not be reached (the client's error as the source).
    #[error("rpc: {0}")]
    Rpc(#[source] SharedError),
    /// The oracle reverted; the decoded reason.
    #[error("oracle reverted: {0}")]
    Reverted(#[from] OracleRevert),
    /// A transaction was mined but failed.
    #[error("transaction {0} failed on chain")]
    TransactionFailed(String),
    /// An event could not be turned into a request.
    #[error("bad request event: {0}")]
    BadEvent(String),
    /// An event describes a request that a node refuses.
    #[error("the event's request is invalid: {0}")]
    InvalidRequest(#[from] rakis_core::RequestError),
    /// Fewer usable signatures (valid, of registered accepted nodes) than the request needs.
    #[error("not enough signatures: {have} of {need}")]
    NotEnoughSignatures {
        /// Usable signatures.
        have: usize,
        /// Signatures required.
        need: usize,
    },
    /// Gave up after retrying for the configured time.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        last: Box<EvmError>,
    },
}

impl From<EvmError> for ChainError {
    fn from(e: EvmError) -> Self {
        match e {
            EvmError::Reverted(OracleRevert::AlreadyFulfilled) => ChainError::AlreadySubmitted,
            EvmError::Reverted(r) => ChainError::Reverted(SharedError::new(r)),
            e @ EvmError::Rpc(_) => ChainError::Unavailable(SharedError::new(e)),
            EvmError::NotEnoughSignatures { have, need } => {
                ChainError::NotEnoughSignatures { have, need }
            }
            other => ChainError::Other(SharedError::new(other)),
        }
    }
}

/// Classifies an alloy contract error: a decoded revert of the oracle, or an RPC failure.
pub(crate) fn classify(e: alloy::contract::Error) -> EvmError {
    if let Some(decoded) = e.as_decoded_interface_error::<RakisOracleErrors>() {
        return EvmError::Reverted(OracleRevert::from_decoded(decoded));
    }
    if let Some(data) = e.as_revert_data() {
        return EvmError::Reverted(OracleRevert::Undecoded(alloy::hex::encode(data)));
    }
    EvmError::Rpc(SharedError::new(e))
}

/// Errors of the [`LedgerSink`](crate::LedgerSink).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The file could not be read or written.
    #[error("ledger i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Another process (or another sink in this one) has the ledger open.
    #[error("the ledger {0} is open elsewhere")]
    Locked(String),
    /// The file is not a Rakis ledger, or of a newer format.
    #[error("not a Rakis ledger (or a newer format): {0}")]
    Format(String),
    /// An entry does not match the hash chain: the ledger was altered.
    #[error("entry {index} is tampered: {reason}")]
    Tampered {
        /// Index of the first bad entry.
        index: u64,
        /// What does not match.
        reason: String,
    },
    /// The file ends inside an entry (a write was cut off).
    #[error("the ledger ends inside entry {index} ({bytes} trailing bytes)")]
    TruncatedTail {
        /// Index the partial entry would have had.
        index: u64,
        /// Bytes of the partial entry.
        bytes: u64,
    },
    /// A result given to the ledger is not consistent or not signed by its signer.
    #[error("invalid result: {0}")]
    InvalidResult(#[source] rakis_core::protocol::ResultError),
}

impl From<LedgerError> for ChainError {
    fn from(e: LedgerError) -> Self {
        ChainError::Other(SharedError::new(e))
    }
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An EVM chain.
    #[error(transparent)]
    Evm(#[from] EvmError),
    /// The ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}
