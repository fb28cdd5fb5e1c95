//! Errors of the consensus crate.

use thiserror::Error;

/// Everything that can go wrong when consensus inputs are malformed.
///
/// A rejected *reveal* is not an error: it is recorded as a
/// [`RejectReason`](crate::RejectReason) in the [`ConsensusOutcome`](crate::ConsensusOutcome).
/// These errors are for inputs that make a computation meaningless.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConsensusError {
    /// An embedding had no values.
    #[error("embedding is empty")]
    EmptyEmbedding,
    /// An embedding value was NaN or infinite.
    #[error("embedding value at index {index} is not finite")]
    NonFiniteValue {
        /// Position of the offending value.
        index: usize,
    },
    /// Two embeddings that must have the same dimension did not.
    #[error("dimension mismatch: expected {expected}, got {actual}")]
    DimensionMismatch {
        /// Dimension that was expected.
        expected: u32,
        /// Dimension that was found.
        actual: u32,
    },
    /// A Matryoshka truncation asked for zero dimensions or more than the vector has.
    #[error("cannot truncate an embedding of {dim} dimensions to {requested}")]
    InvalidTruncation {
        /// Dimension of the full vector.
        dim: usize,
        /// Requested number of leading dimensions.
        requested: usize,
    },
    /// A dimension larger than the wire format allows (`u32`) or than [`MAX_DIMENSION`](crate::MAX_DIMENSION).
    #[error("dimension {0} is larger than the maximum supported")]
    DimensionTooLarge(usize),
    /// Packed words did not match the declared dimension (wrong count or bits set past the end).
    #[error("packed embedding is malformed: {0}")]
    MalformedPacked(&'static str),
    /// A bit index outside the embedding.
    #[error("bit index {index} is outside an embedding of {dim} bits")]
    BitOutOfRange {
        /// Requested bit.
        index: usize,
        /// Dimension of the embedding.
        dim: u32,
    },
    /// A security-frame parameter is outside its valid range.
    #[error("invalid security frame: {0}")]
    InvalidFrame(String),
    /// A hex string could not be decoded into a fixed-size value.
    #[error("invalid hex value: {0}")]
    InvalidHex(String),
}
