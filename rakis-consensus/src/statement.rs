//! Statements: what a committer's commit and reveal say, as digests a chain can check.
//!
//! A node signs (EIP-191, as result digests) the statement of each commit and reveal it
//! sends, beside the message's envelope signature. Envelopes are encoded for the network and
//! cannot be read by a contract; statements are fixed byte layouts over SHA-256, so that two
//! of them prove misbehaviour anywhere, on chain included:
//!
//! - two commit statements of one node for one request and network with different
//!   commitments (or inference ids): **equivocation**;
//! - a commit statement and a reveal statement of one node for one request and network where
//!   the reveal's fields do not hash to the committed commitment: a **false reveal**.
//!
//! An honest node signs one commit and one matching reveal per request and network, so
//! neither can be made against it. The network is part of both statements: a request replayed
//! into another network that the same key serves gives statements of another network, never a
//! conflicting pair.

use serde::{Deserialize, Serialize};

use crate::commit::{commitment_with_hash, Commit, Reveal};
use crate::hashing::Hasher;
use crate::{BinaryEmbedding, Commitment, Hash32, InferenceId, NodeId, RequestId, Salt};

/// Domain tag of [`network_digest`].
pub const NETWORK_TAG: &str = "rakis/network/v1";
/// Domain tag of [`commit_statement`].
pub const COMMIT_STATEMENT_TAG: &str = "rakis/commit-statement/v1";
/// Domain tag of [`RevealStatement::digest`].
pub const REVEAL_STATEMENT_TAG: &str = "rakis/reveal-statement/v1";

/// The digest that names a network in statements.
///
/// ```text
/// SHA-256("rakis/network/v1" ‖ 0x00 ‖ network_id (UTF-8))
/// ```
pub fn network_digest(network_id: &str) -> Hash32 {
    Hasher::new(NETWORK_TAG)
        .bytes(network_id.as_bytes())
        .finish()
}

/// The statement a committer signs with its commit.
///
/// ```text
/// SHA-256("rakis/commit-statement/v1" ‖ 0x00 ‖ network[32] ‖ request_id[32] ‖ node_id[33]
///         ‖ inference_id[32] ‖ commitment[32])
/// ```
pub fn commit_statement(network: &Hash32, commit: &Commit) -> Hash32 {
    Hasher::new(COMMIT_STATEMENT_TAG)
        .bytes(&network.0)
        .bytes(&commit.request_id.0)
        .bytes(&commit.node.0)
        .bytes(&commit.inference_id.0)
        .bytes(&commit.commitment.0)
        .finish()
}

/// What a reveal states, without its output text (its SHA-256 stands for it, as in the
/// commitment): small enough for a chain to check against a commitment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealStatement {
    /// The request answered.
    pub request_id: RequestId,
    /// The revealing node.
    pub node: NodeId,
    /// The inference id revealed.
    pub inference_id: InferenceId,
    /// SHA-256 of the revealed output.
    pub output_hash: Hash32,
    /// The revealed binary embedding.
    pub embedding: BinaryEmbedding,
    /// The revealed salt.
    pub salt: Salt,
}

impl RevealStatement {
    /// The statement of `reveal`.
    pub fn of(reveal: &Reveal) -> Self {
        RevealStatement {
            request_id: reveal.request_id,
            node: reveal.node,
            inference_id: reveal.inference_id,
            output_hash: reveal.output_hash(),
            embedding: reveal.embedding.clone(),
            salt: reveal.salt,
        }
    }

    /// The commitment these fields open ([`commitment_with_hash`]).
    pub fn commitment(&self) -> Commitment {
        commitment_with_hash(
            &self.request_id,
            &self.node,
            &self.inference_id,
            &self.output_hash,
            &self.embedding,
            &self.salt,
        )
    }

    /// The digest a revealer signs.
    ///
    /// ```text
    /// SHA-256("rakis/reveal-statement/v1" ‖ 0x00 ‖ network[32] ‖ request_id[32] ‖ node_id[33]
    ///         ‖ inference_id[32] ‖ SHA-256(output)[32] ‖ dim:u32 ‖ canonical_bytes ‖ salt[32])
    /// ```
    pub fn digest(&self, network: &Hash32) -> Hash32 {
        Hasher::new(REVEAL_STATEMENT_TAG)
            .bytes(&network.0)
            .bytes(&self.request_id.0)
            .bytes(&self.node.0)
            .bytes(&self.inference_id.0)
            .bytes(&self.output_hash.0)
            .u32(self.embedding.dim())
            .bytes(&self.embedding.to_bytes())
            .bytes(&self.salt.0)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::commitment;

    fn reveal() -> Reveal {
        let embedding = BinaryEmbedding::from_bits(&[true, false, true]).unwrap();
        Reveal {
            request_id: RequestId([1; 32]),
            node: NodeId([2; 33]),
            inference_id: InferenceId([3; 32]),
            output: "Paris".into(),
            embedding,
            salt: Salt([4; 32]),
            embedding_model: "m".into(),
        }
    }

    #[test]
    fn a_statement_opens_the_commitment_of_its_reveal() {
        let r = reveal();
        let s = RevealStatement::of(&r);
        assert_eq!(
            s.commitment(),
            commitment(
                &r.request_id,
                &r.node,
                &r.inference_id,
                &r.output,
                &r.embedding,
                &r.salt
            )
        );
    }

    #[test]
    fn statements_differ_by_network_and_field() {
        let r = reveal();
        let s = RevealStatement::of(&r);
        let (a, b) = (network_digest("a"), network_digest("b"));
        assert_ne!(s.digest(&a), s.digest(&b));
        let mut t = s.clone();
        t.salt = Salt([5; 32]);
        assert_ne!(s.digest(&a), t.digest(&a));
        let c = Commit {
            request_id: r.request_id,
            node: r.node,
            inference_id: r.inference_id,
            commitment: s.commitment(),
        };
        assert_ne!(commit_statement(&a, &c), commit_statement(&b, &c));
        assert_ne!(commit_statement(&a, &c), s.digest(&a));
    }
}
