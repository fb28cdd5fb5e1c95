//! Errors of the chain layer.

use rakis_core::error::SharedError;
use rakis_core::ChainError;

use crate::contracts::RakisOracle::RakisOracleErrors;

/// Why the oracle contract rejected a call: its custom errors, decoded (one variant per custom
/// error of `contracts/RakisOracle.sol`; addresses and amounts as text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OracleRevert {
    /// Only the owner may do this.
    #[error("only the owner may do this")]
    NotOwner,
    /// The deployment parameters are inconsistent.
    #[error("invalid oracle configuration: {reason}")]
    InvalidConfig {
        /// The contract's reason.
        reason: String,
    },
    /// The request's parameters are invalid.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// The contract's reason.
        reason: String,
    },
    /// The payment does not cover the request and its gas.
    #[error("payment too low: {paid} < {required} wei")]
    PaymentTooLow {
        /// Wei paid.
        paid: String,
        /// Wei required.
        required: String,
    },
    /// The registration proof is invalid (or was made for an earlier registration).
    #[error("invalid registration of {node}")]
    InvalidRegistration {
        /// The node.
        node: String,
    },
    /// Less stake than the minimum.
    #[error("stake too low: {staked} < {required} wei")]
    StakeTooLow {
        /// Wei staked.
        staked: String,
        /// Wei required.
        required: String,
    },
    /// The node is registered (or its stake not yet withdrawn).
    #[error("node {node} is already registered")]
    AlreadyRegistered {
        /// The node.
        node: String,
    },
    /// The node was ejected and may not register again.
    #[error("node {node} is banned")]
    NodeBanned {
        /// The node.
        node: String,
    },
    /// Only the node's staker may do this.
    #[error("{caller} is not the staker of {node}")]
    NotStaker {
        /// The node.
        node: String,
        /// Who called.
        caller: String,
    },
    /// The node is not active (or has no stake).
    #[error("node {node} is not active")]
    NotActive {
        /// The node.
        node: String,
    },
    /// The stake is still bonded.
    #[error("the stake of {node} is bonded until {unbond_at} (unix seconds)")]
    StakeLocked {
        /// The node.
        node: String,
        /// When it unbonds.
        unbond_at: u64,
    },
    /// The next epoch may not start yet.
    #[error("the next epoch may start at {next} (unix seconds)")]
    EpochTooSoon {
        /// Earliest start.
        next: u64,
    },
    /// The member list of a new epoch is not the active nodes, ascending.
    #[error("invalid epoch members: {reason}")]
    InvalidMembers {
        /// The contract's reason.
        reason: String,
    },
    /// No epoch governs requests yet.
    #[error("no epoch has started")]
    NoEpoch,
    /// The request does not exist (results of requests made elsewhere are refused).
    #[error("unknown request")]
    UnknownRequest,
    /// A result of this request is already stored.
    #[error("a result of this request is already stored")]
    AlreadyFulfilled,
    /// The request's deadline has not passed.
    #[error("too early: the deadline is {deadline} (unix seconds)")]
    TooEarly {
        /// The deadline.
        deadline: u64,
    },
    /// The request's submission window has closed.
    #[error("the request expired at {expired_at} (unix seconds)")]
    RequestExpired {
        /// End of the submission window.
        expired_at: u64,
    },
    /// A refund before the submission window closed.
    #[error("not expired before {expires_at} (unix seconds)")]
    NotExpired {
        /// End of the submission window.
        expires_at: u64,
    },
    /// The request was refunded.
    #[error("the request was refunded")]
    AlreadyRefunded,
    /// The output is longer than the request allows.
    #[error("output of {bytes} bytes exceeds {max}")]
    OutputTooLong {
        /// Output bytes.
        bytes: u64,
        /// The request's maximum.
        max: u64,
    },
    /// The member list given is not the request's epoch.
    #[error("the member list is not epoch {epoch}")]
    EpochMismatch {
        /// The request's epoch.
        epoch: u64,
    },
    /// The block hash of the request is no longer available and was not recorded.
    #[error("the request's committee beacon is no longer available")]
    BeaconUnavailable,
    /// The payee list is not ascending committee members.
    #[error("bad payee at position {index}")]
    BadPayees {
        /// Position in the list.
        index: u64,
    },
    /// Signers must be listed strictly ascending (no duplicates).
    #[error("signers not strictly ascending at position {index} (duplicate or unsorted)")]
    SignersNotSorted {
        /// Position in the list.
        index: u64,
    },
    /// A signature that recovers to nobody.
    #[error("signature {index} is malformed")]
    InvalidSignature {
        /// Position in the list.
        index: u64,
    },
    /// A signer without bonded stake (never registered, withdrawn, or ejected).
    #[error("signer {node} has no bonded stake")]
    NotBonded {
        /// The signer.
        node: String,
    },
    /// A signer outside the request's committee.
    #[error("signer {node} is not in the request's committee")]
    NotInCommittee {
        /// The signer.
        node: String,
    },
    /// Fewer signatures than the committee requires.
    #[error("too few signatures: {provided} of {required}")]
    TooFewSignatures {
        /// Signatures given.
        provided: u64,
        /// Signatures required.
        required: u64,
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
    #[error("nothing to withdraw for {account}")]
    NothingToWithdraw {
        /// The account.
        account: String,
    },
    /// A transfer of ether failed.
    #[error("transfer of {amount} wei to {to} failed")]
    TransferFailed {
        /// The recipient.
        to: String,
        /// Wei.
        amount: String,
    },
    /// Slashing evidence names a node id that never registered (or is not 33 bytes).
    #[error("unknown node 0x{node_id}")]
    UnknownNode {
        /// The node id, hex.
        node_id: String,
    },
    /// The accused node has no stake left (slashed already, or withdrawn).
    #[error("nothing to slash: {node} has no stake")]
    NothingToSlash {
        /// The node's address.
        node: String,
    },
    /// Slashing evidence that proves nothing.
    #[error("invalid evidence: {reason}")]
    InvalidEvidence {
        /// Why.
        reason: String,
    },
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
            E::NotOwner(_) => OracleRevert::NotOwner,
            E::InvalidConfig(x) => OracleRevert::InvalidConfig { reason: x.reason },
            E::InvalidRequest(x) => OracleRevert::InvalidRequest { reason: x.reason },
            E::PaymentTooLow(x) => OracleRevert::PaymentTooLow {
                paid: x.paid.to_string(),
                required: x.required.to_string(),
            },
            E::InvalidRegistration(x) => OracleRevert::InvalidRegistration {
                node: x.node.to_string(),
            },
            E::StakeTooLow(x) => OracleRevert::StakeTooLow {
                staked: x.staked.to_string(),
                required: x.required.to_string(),
            },
            E::AlreadyRegistered(x) => OracleRevert::AlreadyRegistered {
                node: x.node.to_string(),
            },
            E::NodeBanned(x) => OracleRevert::NodeBanned {
                node: x.node.to_string(),
            },
            E::NotStaker(x) => OracleRevert::NotStaker {
                node: x.node.to_string(),
                caller: x.caller.to_string(),
            },
            E::NotActive(x) => OracleRevert::NotActive {
                node: x.node.to_string(),
            },
            E::StakeLocked(x) => OracleRevert::StakeLocked {
                node: x.node.to_string(),
                unbond_at: x.unbondAt,
            },
            E::EpochTooSoon(x) => OracleRevert::EpochTooSoon { next: x.next },
            E::InvalidMembers(x) => OracleRevert::InvalidMembers { reason: x.reason },
            E::NoEpoch(_) => OracleRevert::NoEpoch,
            E::UnknownRequest(_) => OracleRevert::UnknownRequest,
            E::AlreadyFulfilled(_) => OracleRevert::AlreadyFulfilled,
            E::TooEarly(x) => OracleRevert::TooEarly {
                deadline: x.deadline,
            },
            E::RequestExpired(x) => OracleRevert::RequestExpired {
                expired_at: x.expiredAt,
            },
            E::NotExpired(x) => OracleRevert::NotExpired {
                expires_at: x.expiresAt,
            },
            E::AlreadyRefunded(_) => OracleRevert::AlreadyRefunded,
            E::OutputTooLong(x) => OracleRevert::OutputTooLong {
                bytes: small(x.bytesLen),
                max: small(x.max),
            },
            E::EpochMismatch(x) => OracleRevert::EpochMismatch { epoch: x.epoch },
            E::BeaconUnavailable(_) => OracleRevert::BeaconUnavailable,
            E::BadPayees(x) => OracleRevert::BadPayees {
                index: small(x.index),
            },
            E::SignersNotSorted(x) => OracleRevert::SignersNotSorted {
                index: small(x.index),
            },
            E::InvalidSignature(x) => OracleRevert::InvalidSignature {
                index: small(x.index),
            },
            E::NotBonded(x) => OracleRevert::NotBonded {
                node: x.node.to_string(),
            },
            E::NotInCommittee(x) => OracleRevert::NotInCommittee {
                node: x.node.to_string(),
            },
            E::TooFewSignatures(x) => OracleRevert::TooFewSignatures {
                provided: small(x.provided),
                required: small(x.required),
            },
            E::InsufficientGas(x) => OracleRevert::InsufficientGas {
                left: small(x.left),
                needed: small(x.needed),
            },
            E::NothingToWithdraw(x) => OracleRevert::NothingToWithdraw {
                account: x.account.to_string(),
            },
            E::TransferFailed(x) => OracleRevert::TransferFailed {
                to: x.to.to_string(),
                amount: x.amount.to_string(),
            },
            E::UnknownNode(x) => OracleRevert::UnknownNode {
                node_id: hex::encode(&x.nodeId),
            },
            E::NothingToSlash(x) => OracleRevert::NothingToSlash {
                node: x.node.to_string(),
            },
            E::InvalidEvidence(x) => OracleRevert::InvalidEvidence { reason: x.reason },
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
    /// No version of the transaction was mined and confirmed within the receipt timeout.
    #[error("transaction {tx} not mined ({versions} versions sent)")]
    NotMined {
        /// The latest version's hash.
        tx: String,
        /// Versions sent (the same nonce, rising fees).
        versions: usize,
    },
    /// A transaction was mined but failed.
    #[error("transaction {0} failed on chain")]
    TransactionFailed(String),
    /// An event could not be turned into a request.
    #[error("bad request event: {0}")]
    BadEvent(String),
    /// An event describes a request that a node refuses.
    #[error("the event's request is invalid: {0}")]
    InvalidRequest(#[from] rakis_core::RequestError),
    /// Fewer usable signatures (valid, of bonded committee members) than the request needs.
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
