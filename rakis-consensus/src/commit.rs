//! Commitments, reveals and the checks a verifier runs on each reveal.

use serde::{Deserialize, Serialize};

use crate::hashing::{output_hash, Hasher};
use crate::{BinaryEmbedding, Commitment, Hash32, InferenceId, NodeId, RequestId, Salt};

/// Domain tag of commitments.
pub const COMMIT_TAG: &str = "rakis/commit/v1";

/// Computes a commitment.
///
/// ```text
/// commitment = SHA-256( "rakis/commit/v1" ‖ 0x00
///                       ‖ request_id      (32 bytes)
///                       ‖ node_id         (33 bytes, compressed secp256k1 key)
///                       ‖ inference_id    (32 bytes)
///                       ‖ SHA-256(output) (32 bytes, output as UTF-8)
///                       ‖ dim             (u32 big-endian)
///                       ‖ embedding       (ceil(dim/8) canonical bytes)
///                       ‖ salt            (32 bytes) )
/// ```
pub fn commitment(
    request_id: &RequestId,
    node: &NodeId,
    inference_id: &InferenceId,
    output: &str,
    embedding: &BinaryEmbedding,
    salt: &Salt,
) -> Commitment {
    commitment_with_hash(
        request_id,
        node,
        inference_id,
        &output_hash(output),
        embedding,
        salt,
    )
}

/// [`commitment`] when the output's SHA-256 is already known.
pub fn commitment_with_hash(
    request_id: &RequestId,
    node: &NodeId,
    inference_id: &InferenceId,
    output_hash: &Hash32,
    embedding: &BinaryEmbedding,
    salt: &Salt,
) -> Commitment {
    let h = Hasher::new(COMMIT_TAG)
        .bytes(&request_id.0)
        .bytes(&node.0)
        .bytes(&inference_id.0)
        .bytes(&output_hash.0)
        .u32(embedding.dim())
        .bytes(&embedding.to_bytes())
        .bytes(&salt.0)
        .finish();
    Commitment(h.0)
}

/// A node's commitment to its answer for one request. Carries no output.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Commit {
    /// The request answered.
    pub request_id: RequestId,
    /// The committing node.
    pub node: NodeId,
    /// The committer's id for this inference.
    pub inference_id: InferenceId,
    /// The commitment digest.
    pub commitment: Commitment,
}

/// The opening of a [`Commit`], sent after the deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reveal {
    /// The request answered.
    pub request_id: RequestId,
    /// The revealing node.
    pub node: NodeId,
    /// The committer's id for this inference.
    pub inference_id: InferenceId,
    /// The generated text.
    pub output: String,
    /// The committer's binary embedding of `output`.
    pub embedding: BinaryEmbedding,
    /// The committer's secret salt.
    pub salt: Salt,
    /// Name of the embedding model used (must equal the security frame's).
    pub embedding_model: String,
}

impl Reveal {
    /// The commitment this reveal opens.
    pub fn commitment(&self) -> Commitment {
        commitment(
            &self.request_id,
            &self.node,
            &self.inference_id,
            &self.output,
            &self.embedding,
            &self.salt,
        )
    }

    /// SHA-256 of the output.
    pub fn output_hash(&self) -> Hash32 {
        output_hash(&self.output)
    }
}

/// Why a reveal (or a node's commits) was not accepted into the quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The reveal does not open the node's commitment.
    #[error("reveal does not match its commitment")]
    CommitmentMismatch,
    /// The revealed embedding is farther from the verifier's re-embedding than the tolerance.
    #[error("revealed embedding is {distance} bits from the re-embedding (tolerance {tolerance})")]
    EmbeddingBeyondTolerance {
        /// Hamming distance found.
        distance: u32,
        /// Tolerance in bits.
        tolerance: u32,
    },
    /// The revealed embedding has another dimension than the verifier's model gives.
    #[error("embedding dimension {actual}, expected {expected}")]
    DimensionMismatch {
        /// The verifier's dimension.
        expected: u32,
        /// The revealed dimension.
        actual: u32,
    },
    /// The reveal names another embedding model than the security frame.
    #[error("embedding model {actual:?}, expected {expected:?}")]
    EmbeddingModelMismatch {
        /// The frame's model.
        expected: String,
        /// The revealed model.
        actual: String,
    },
    /// The node sent two different commitments for one request.
    #[error("node equivocated: two different commitments for one request")]
    Equivocation {
        /// The lower of two of its commitments.
        first: Commitment,
        /// The higher of two of its commitments.
        second: Commitment,
    },
    /// Another reveal already used this inference id, or the node already revealed.
    #[error("duplicate inference id")]
    DuplicateInferenceId,
    /// No commit exists for this reveal.
    #[error("no commit for this reveal")]
    MissingCommit,
    /// The reveal belongs to another request.
    #[error("reveal is for another request")]
    RequestMismatch,
    /// The verifier's replay of the committer's sampling failed (the second check).
    #[error("unfaithful sampling: {0}")]
    UnfaithfulSampling(crate::sampling::SamplingFault),
}

/// Checks that `reveal` opens `commit`: same request, node and inference id, and the
/// recomputed commitment equals the committed one.
pub fn verify_reveal(commit: &Commit, reveal: &Reveal) -> Result<(), RejectReason> {
    if commit.request_id != reveal.request_id {
        return Err(RejectReason::RequestMismatch);
    }
    if commit.node != reveal.node || commit.inference_id != reveal.inference_id {
        return Err(RejectReason::MissingCommit);
    }
    if reveal.commitment() != commit.commitment {
        return Err(RejectReason::CommitmentMismatch);
    }
    Ok(())
}

/// Default re-embedding tolerance: 8 bits per 384 dimensions, rounded up (`ceil(dim / 48)`).
///
/// Measured on all-MiniLM-L6-v2: float64, padded batches, 1 vs 2 threads and an independent
/// forward pass flipped 0 of 384 bits; simulated noise of σ = 1e-4 flipped up to 7.
pub fn default_reembed_tolerance(dim: u32) -> u32 {
    dim.div_ceil(48)
}

/// Accepts a revealed embedding when its Hamming distance to the verifier's own embedding of
/// the revealed output is `<= tolerance_bits`.
pub fn check_reembedding(
    revealed: &BinaryEmbedding,
    own: &BinaryEmbedding,
    tolerance_bits: u32,
) -> Result<u32, RejectReason> {
    if revealed.dim() != own.dim() {
        return Err(RejectReason::DimensionMismatch {
            expected: own.dim(),
            actual: revealed.dim(),
        });
    }
    let distance = crate::embedding::hamming_words(revealed.words(), own.words());
    if distance > tolerance_bits {
        return Err(RejectReason::EmbeddingBeyondTolerance {
            distance,
            tolerance: tolerance_bits,
        });
    }
    Ok(distance)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_reveal() -> Reveal {
        Reveal {
            request_id: RequestId([1; 32]),
            node: NodeId([2; 33]),
            inference_id: InferenceId([3; 32]),
            output: "Paris".into(),
            embedding: BinaryEmbedding::from_bytes(16, &[0xAB, 0xCD]).unwrap(),
            salt: Salt([4; 32]),
            embedding_model: "m".into(),
        }
    }

    #[test]
    fn commitment_known_digest() {
        // Reproduce the layout by hand with a plain SHA-256 over the concatenated bytes;
        // the literal digest was computed independently with Python's hashlib.
        let r = sample_reveal();
        let mut bytes = b"rakis/commit/v1\0".to_vec();
        bytes.extend([1u8; 32]);
        bytes.extend([2u8; 33]);
        bytes.extend([3u8; 32]);
        bytes.extend(crate::hashing::sha256(b"Paris").0);
        bytes.extend(16u32.to_be_bytes());
        bytes.extend([0xAB, 0xCD]);
        bytes.extend([4u8; 32]);
        assert_eq!(r.commitment().0, crate::hashing::sha256(&bytes).0);
        assert_eq!(
            r.commitment().to_hex(),
            "1fe4762c29deb6e5a8228d166bfc9dca395e59fe52d2cd22dfc1c40bf9b35f94"
        );
    }

    #[test]
    fn verify_reveal_accepts_opening_and_rejects_changes() {
        let r = sample_reveal();
        let c = Commit {
            request_id: r.request_id,
            node: r.node,
            inference_id: r.inference_id,
            commitment: r.commitment(),
        };
        assert_eq!(verify_reveal(&c, &r), Ok(()));
        let mut bad = r.clone();
        bad.output.push('!');
        assert_eq!(
            verify_reveal(&c, &bad),
            Err(RejectReason::CommitmentMismatch)
        );
        let mut bad = r.clone();
        bad.salt.0[0] ^= 1;
        assert_eq!(
            verify_reveal(&c, &bad),
            Err(RejectReason::CommitmentMismatch)
        );
        let mut bad = r.clone();
        bad.embedding = BinaryEmbedding::from_bytes(16, &[0xAB, 0xCC]).unwrap();
        assert_eq!(
            verify_reveal(&c, &bad),
            Err(RejectReason::CommitmentMismatch)
        );
        let mut bad = r.clone();
        bad.request_id.0[0] = 9;
        assert_eq!(verify_reveal(&c, &bad), Err(RejectReason::RequestMismatch));
        let mut bad = r;
        bad.node.0[0] = 9;
        assert_eq!(verify_reveal(&c, &bad), Err(RejectReason::MissingCommit));
    }

    #[test]
    fn reembedding_tolerance() {
        assert_eq!(default_reembed_tolerance(384), 8);
        assert_eq!(default_reembed_tolerance(768), 16);
        assert_eq!(default_reembed_tolerance(100), 3);
        let a = BinaryEmbedding::from_words(64, vec![0]).unwrap();
        let b = BinaryEmbedding::from_words(64, vec![0xFF]).unwrap();
        assert_eq!(check_reembedding(&a, &b, 8), Ok(8));
        assert_eq!(
            check_reembedding(&a, &b, 7),
            Err(RejectReason::EmbeddingBeyondTolerance {
                distance: 8,
                tolerance: 7
            })
        );
        let c = BinaryEmbedding::from_words(65, vec![0, 0]).unwrap();
        assert_eq!(
            check_reembedding(&c, &a, 8),
            Err(RejectReason::DimensionMismatch {
                expected: 64,
                actual: 65
            })
        );
    }
}
