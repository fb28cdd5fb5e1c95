//! Provable misbehaviour: signed statements of commits and reveals, and the evidence two of
//! them make.
//!
//! Every commit and reveal carries, beside its envelope signature, the sender's signature over
//! its *statement* ([`rakis_consensus::statement`]): a fixed byte layout a contract can hash.
//! A node that sees one committer sign two different commitments for one request, or a reveal
//! that does not open the committer's signed commitment, holds a [`Misbehaviour`] anyone can
//! check ([`Misbehaviour::verify`]) — a chain included: `rakis_chain::EvmChain` sends it to the
//! oracle contract, which slashes the committer's stake and rewards the reporter.

use serde::{Deserialize, Serialize};

use crate::consensus::statement::{commit_statement, RevealStatement};
use crate::identity::{eth_signed_message_hash, recover_signer, IdentityError, NodeKey, Signature};
use crate::{Commit, Hash32, NodeId, RequestId};

/// Half the order of secp256k1: a signature with a higher `s` is the malleable twin of a
/// lower one, and EVM contracts refuse it.
const HALF_ORDER: [u8; 32] = [
    0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0x5D, 0x57, 0x6E, 0x73, 0x57, 0xA4, 0x50, 0x1D, 0xDF, 0xE9, 0x2F, 0x46, 0x68, 0x1B, 0x20, 0xA0,
];

/// Signs a statement digest as a chain checks it: EIP-191 over the digest.
pub fn sign_statement(key: &NodeKey, digest: &Hash32) -> Signature {
    key.sign_digest(&eth_signed_message_hash(&digest.0))
}

/// Checks that `signature` is `node`'s over the statement `digest` (EIP-191), with a low `s`
/// as a chain requires: a statement a node accepts is one a contract accepts too.
pub fn verify_statement(
    node: &NodeId,
    digest: &Hash32,
    signature: &Signature,
) -> Result<(), IdentityError> {
    if signature.0[32..64] > HALF_ORDER[..] {
        return Err(IdentityError::BadSignature);
    }
    if recover_signer(&eth_signed_message_hash(&digest.0), signature)? == *node {
        Ok(())
    } else {
        Err(IdentityError::BadSignature)
    }
}

/// A commit with its committer's signature over its statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommit {
    /// The commit.
    pub commit: Commit,
    /// The committer's signature over [`commit_statement`].
    pub signature: Signature,
}

impl SignedCommit {
    /// Checks the signature for `network` (a [`network_digest`](crate::consensus::network_digest)).
    pub fn verify(&self, network: &Hash32) -> Result<(), IdentityError> {
        verify_statement(
            &self.commit.node,
            &commit_statement(network, &self.commit),
            &self.signature,
        )
    }
}

/// A reveal's statement with its revealer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReveal {
    /// What the reveal states.
    pub statement: RevealStatement,
    /// The revealer's signature over [`RevealStatement::digest`].
    pub signature: Signature,
}

impl SignedReveal {
    /// Checks the signature for `network`.
    pub fn verify(&self, network: &Hash32) -> Result<(), IdentityError> {
        verify_statement(
            &self.statement.node,
            &self.statement.digest(network),
            &self.signature,
        )
    }
}

/// Evidence that a committer broke the protocol, checkable by anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Misbehaviour {
    /// Two signed commits of one node for one request that differ.
    Equivocation {
        /// The network both were signed for.
        network: Hash32,
        /// One commit.
        first: SignedCommit,
        /// Another.
        second: SignedCommit,
    },
    /// A signed reveal that does not open the node's signed commitment.
    FalseReveal {
        /// The network both were signed for.
        network: Hash32,
        /// The commit.
        commit: SignedCommit,
        /// The reveal.
        reveal: SignedReveal,
    },
}

impl Misbehaviour {
    /// The node that misbehaved.
    pub fn node(&self) -> NodeId {
        match self {
            Misbehaviour::Equivocation { first, .. } => first.commit.node,
            Misbehaviour::FalseReveal { commit, .. } => commit.commit.node,
        }
    }

    /// The request it misbehaved on.
    pub fn request_id(&self) -> RequestId {
        match self {
            Misbehaviour::Equivocation { first, .. } => first.commit.request_id,
            Misbehaviour::FalseReveal { commit, .. } => commit.commit.request_id,
        }
    }

    /// A short name of the kind (`equivocation`, `false-reveal`).
    pub fn kind(&self) -> &'static str {
        match self {
            Misbehaviour::Equivocation { .. } => "equivocation",
            Misbehaviour::FalseReveal { .. } => "false-reveal",
        }
    }

    /// Checks the evidence as a contract does: one node and one request, both signatures
    /// valid, and the two statements in conflict.
    pub fn verify(&self) -> Result<(), MisbehaviourError> {
        match self {
            Misbehaviour::Equivocation {
                network,
                first,
                second,
            } => {
                let (a, b) = (&first.commit, &second.commit);
                if a.node != b.node || a.request_id != b.request_id {
                    return Err(MisbehaviourError::NotOneNodeAndRequest);
                }
                if a.commitment == b.commitment && a.inference_id == b.inference_id {
                    return Err(MisbehaviourError::NoConflict);
                }
                first
                    .verify(network)
                    .map_err(MisbehaviourError::Signature)?;
                second.verify(network).map_err(MisbehaviourError::Signature)
            }
            Misbehaviour::FalseReveal {
                network,
                commit,
                reveal,
            } => {
                let (c, r) = (&commit.commit, &reveal.statement);
                if c.node != r.node || c.request_id != r.request_id {
                    return Err(MisbehaviourError::NotOneNodeAndRequest);
                }
                if r.commitment() == c.commitment {
                    return Err(MisbehaviourError::NoConflict);
                }
                commit
                    .verify(network)
                    .map_err(MisbehaviourError::Signature)?;
                reveal.verify(network).map_err(MisbehaviourError::Signature)
            }
        }
    }
}

/// Why a [`Misbehaviour`] proves nothing.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MisbehaviourError {
    /// The two statements are of different nodes or requests.
    #[error("the statements are of different nodes or requests")]
    NotOneNodeAndRequest,
    /// The two statements agree (the same commit twice, or a reveal that opens the commit).
    #[error("the statements do not conflict")]
    NoConflict,
    /// A signature is not the node's over its statement.
    #[error("statement signature: {0}")]
    Signature(#[source] IdentityError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::network_digest;
    use crate::{BinaryEmbedding, Commitment, InferenceId, Reveal, Salt};

    fn key() -> NodeKey {
        NodeKey::from_seed(7)
    }

    fn reveal(key: &NodeKey, output: &str) -> Reveal {
        Reveal {
            request_id: RequestId([1; 32]),
            node: key.node_id(),
            inference_id: InferenceId([2; 32]),
            output: output.into(),
            embedding: BinaryEmbedding::from_bits(&[true, false, true, true]).unwrap(),
            salt: Salt([3; 32]),
            embedding_model: "m".into(),
        }
    }

    fn signed_commit(key: &NodeKey, net: &Hash32, commitment: Commitment) -> SignedCommit {
        let commit = Commit {
            request_id: RequestId([1; 32]),
            node: key.node_id(),
            inference_id: InferenceId([2; 32]),
            commitment,
        };
        SignedCommit {
            signature: sign_statement(key, &commit_statement(net, &commit)),
            commit,
        }
    }

    fn signed_reveal(key: &NodeKey, net: &Hash32, r: &Reveal) -> SignedReveal {
        let statement = RevealStatement::of(r);
        SignedReveal {
            signature: sign_statement(key, &statement.digest(net)),
            statement,
        }
    }

    #[test]
    fn equivocation_is_proved_only_by_two_different_signed_commits() {
        let (k, net) = (key(), network_digest("n"));
        let a = signed_commit(&k, &net, Commitment([5; 32]));
        let b = signed_commit(&k, &net, Commitment([6; 32]));
        let ev = Misbehaviour::Equivocation {
            network: net,
            first: a.clone(),
            second: b.clone(),
        };
        ev.verify().unwrap();
        assert_eq!(ev.node(), k.node_id());
        // The same commit twice proves nothing.
        let same = Misbehaviour::Equivocation {
            network: net,
            first: a.clone(),
            second: a.clone(),
        };
        assert!(matches!(same.verify(), Err(MisbehaviourError::NoConflict)));
        // Another network's statement: the signatures do not hold for this one.
        let elsewhere = Misbehaviour::Equivocation {
            network: network_digest("other"),
            first: a.clone(),
            second: b.clone(),
        };
        assert!(matches!(
            elsewhere.verify(),
            Err(MisbehaviourError::Signature(_))
        ));
        // Someone else's signature cannot frame the node.
        let mut forged = b.clone();
        forged.signature = sign_statement(
            &NodeKey::from_seed(8),
            &commit_statement(&net, &forged.commit),
        );
        let framed = Misbehaviour::Equivocation {
            network: net,
            first: a,
            second: forged,
        };
        assert!(matches!(
            framed.verify(),
            Err(MisbehaviourError::Signature(_))
        ));
    }

    #[test]
    fn a_false_reveal_is_proved_and_an_honest_one_is_not() {
        let (k, net) = (key(), network_digest("n"));
        let honest = reveal(&k, "Paris");
        let commit = signed_commit(&k, &net, honest.commitment());
        let ok = Misbehaviour::FalseReveal {
            network: net,
            commit: commit.clone(),
            reveal: signed_reveal(&k, &net, &honest),
        };
        assert!(matches!(ok.verify(), Err(MisbehaviourError::NoConflict)));
        let lie = Misbehaviour::FalseReveal {
            network: net,
            commit,
            reveal: signed_reveal(&k, &net, &reveal(&k, "Lyon")),
        };
        lie.verify().unwrap();
        assert_eq!(lie.kind(), "false-reveal");
    }

    #[test]
    fn a_high_s_signature_is_refused() {
        let (k, net) = (key(), network_digest("n"));
        let c = signed_commit(&k, &net, Commitment([5; 32]));
        c.verify(&net).unwrap();
        // s' = n - s, v flipped: the same signature's malleable twin.
        use k256::elliptic_curve::ops::Neg;
        let sig = k256::ecdsa::Signature::from_slice(&c.signature.0[..64]).unwrap();
        let (r, s) = sig.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, s.as_ref().neg()).unwrap();
        let mut twin = c.signature;
        twin.0[..64].copy_from_slice(&high.to_bytes());
        twin.0[64] = if c.signature.0[64] == 27 { 28 } else { 27 };
        assert!(verify_statement(&k.node_id(), &commit_statement(&net, &c.commit), &twin).is_err());
    }
}
