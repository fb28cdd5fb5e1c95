//! Errors of the chain layer.

use rakis_core::ChainError;

use crate::contracts::RakisOracle::RakisOracleErrors;

/// Why the oracle contract rejected a call: its custom errors, decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// Any other revert of the oracle, by name.
    #[error("{0}")]
    Other(String),
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
            E::InvalidRequest(x) => OracleRevert::Other(format!("invalid request: {}", x.reason)),
            E::PaymentTooLow(x) => {
                OracleRevert::Other(format!("payment too low: {} < {}", x.paid, x.required))
            }
            E::InvalidRegistration(x) => {
                OracleRevert::Other(format!("invalid registration of {}", x.node))
            }
            E::NotExpired(x) => OracleRevert::Other(format!("not expired before {}", x.expiresAt)),
            E::InsufficientGas(x) => OracleRevert::Other(format!(
                "insufficient gas for the callback: {} < {}",
                x.left, x.needed
            )),
            E::NothingToWithdraw(x) => {
                OracleRevert::Other(format!("nothing to withdraw for {}", x.node))
            }
            E::TransferFailed(x) => OracleRevert::Other(format!("transfer of {} failed", x.amount)),
            E::NotOwner(_) => OracleRevert::Other("only the owner may do this".into()),
        }
    }
}

/// Errors of [`EvmChain`](crate::EvmChain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// The RPC endpoint failed or could not be reached.
    #[error("rpc: {0}")]
    Rpc(String),
    /// The oracle reverted; the decoded reason.
    #[error("oracle reverted: {0}")]
    Reverted(#[from] OracleRevert),
    /// A transaction was mined but failed.
    #[error("transaction {0} failed on chain")]
    TransactionFailed(String),
    /// An event could not be turned into a request.
    #[error("bad request event: {0}")]
    BadEvent(String),
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
        last: String,
    },
}

impl From<EvmError> for ChainError {
    fn from(e: EvmError) -> Self {
        match e {
            EvmError::Reverted(OracleRevert::AlreadyFulfilled) => ChainError::AlreadySubmitted,
            EvmError::Reverted(r) => ChainError::Reverted(r.to_string()),
            EvmError::Rpc(m) => ChainError::Unavailable(m),
            EvmError::NotEnoughSignatures { have, need } => {
                ChainError::NotEnoughSignatures { have, need }
            }
            other => ChainError::Other(other.to_string()),
        }
    }
}

/// Classifies an alloy contract error: a decoded revert of the oracle, or an RPC failure.
pub(crate) fn classify(e: alloy::contract::Error) -> EvmError {
    if let Some(decoded) = e.as_decoded_interface_error::<RakisOracleErrors>() {
        return EvmError::Reverted(OracleRevert::from_decoded(decoded));
    }
    if let Some(data) = e.as_revert_data() {
        return EvmError::Reverted(OracleRevert::Other(format!(
            "undecoded revert 0x{}",
            alloy::hex::encode(data)
        )));
    }
    EvmError::Rpc(e.to_string())
}

/// Errors of the [`LedgerSink`](crate::LedgerSink).
#[derive(Debug, thiserror::Error)]
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
    InvalidResult(String),
}

impl From<LedgerError> for ChainError {
    fn from(e: LedgerError) -> Self {
        ChainError::Other(e.to_string())
    }
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An EVM chain.
    #[error(transparent)]
    Evm(#[from] EvmError),
    /// The ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}
