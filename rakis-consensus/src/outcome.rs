//! From commits and reveals to one [`ConsensusOutcome`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cluster::PackedPoints;
use crate::commit::{check_reembedding, Commit, RejectReason, Reveal};
use crate::hashing::Hasher;
use crate::{
    BinaryEmbedding, Commitment, ConsensusError, ConsensusParams, Hash32, InferenceId, NodeId,
    RequestId,
};

/// Domain tag of the accepted-set ("joint") hash.
pub const ACCEPTED_TAG: &str = "rakis/accepted/v1";
/// Domain tag of the selection seed.
pub const SELECT_TAG: &str = "rakis/select/v1";
/// Domain tag of the result digest (what nodes sign and chains check).
pub const RESULT_TAG: &str = "rakis/result/v2";

/// A reveal together with the verifier's own embedding of its output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The reveal as received.
    pub reveal: Reveal,
    /// The verifier's binary embedding of `reveal.output`; `None` when it did not embed it
    /// (a reveal that otherwise verifies is then rejected, see [`evaluate`]).
    pub reembedding: Option<BinaryEmbedding>,
    /// Why the verifier's replay of the committer's sampling failed; `None` when it passed or
    /// the verifier could not replay it (it does not serve the model).
    #[serde(default)]
    pub sampling_fault: Option<crate::sampling::SamplingFault>,
}

/// A reveal that passed every check and sits in the winning ball.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedReveal {
    /// The node.
    pub node: NodeId,
    /// Its inference id.
    pub inference_id: InferenceId,
    /// Its commitment.
    pub commitment: Commitment,
    /// SHA-256 of its output.
    pub output_hash: Hash32,
    /// Hamming distance to the ball's centre.
    pub distance_to_center: u32,
}

/// A reveal (or a node's commits) that was rejected, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The node.
    pub node: NodeId,
    /// The inference id of the rejected reveal.
    pub inference_id: InferenceId,
    /// Why.
    pub reason: RejectReason,
}

/// The output chosen from the accepted set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Node whose output was chosen.
    pub node: NodeId,
    /// Its inference id.
    pub inference_id: InferenceId,
    /// SHA-256 of the chosen output.
    pub output_hash: Hash32,
    /// The chosen output text.
    pub output: String,
    /// Position of the choice in the accepted set (sorted by commitment).
    pub index: u32,
}

/// Why consensus failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum FailureReason {
    /// Nobody committed.
    #[error("no commits")]
    NoCommits,
    /// Commits exist but no reveal passed verification.
    #[error("no verified reveal")]
    NoVerifiedReveals,
    /// The largest ball holds fewer points than the threshold.
    #[error("largest ball holds {best} of the {needed} needed")]
    BelowThreshold {
        /// Points in the largest ball.
        best: u32,
        /// Points needed.
        needed: u32,
    },
}

/// The decision of one consensus computation.
// One value per request: its size does not matter, and boxing would change the public API.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// A ball met the threshold.
    Agreed {
        /// Commitment of the ball's centre.
        center: Commitment,
        /// The selected output.
        selected: Selection,
        /// Hash of the accepted set (see [`joint_hash`]).
        joint_hash: Hash32,
        /// What the result is bound to ([`ConsensusParams::config_digest`]).
        config_digest: Hash32,
        /// Digest signed by nodes and checked by chains (see [`result_digest`]).
        result_digest: Hash32,
    },
    /// No ball met the threshold.
    Failed(FailureReason),
}

/// Everything one node concludes about one request. Identical on every honest node given the
/// same commits and reveals, whatever order they arrived in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusOutcome {
    /// The request.
    pub request_id: RequestId,
    /// Distinct nodes that committed.
    pub committed: u32,
    /// Distinct reveals submitted.
    pub submitted: u32,
    /// Reveals that passed verification (commitment, model, re-embedding).
    pub verified: u32,
    /// Ball radius in bits (0 when no reveal was verified).
    pub radius_bits: u32,
    /// Points needed inside the ball.
    pub threshold: u32,
    /// Points in the largest ball.
    pub best_ball: u32,
    /// The winning ball's members, sorted by commitment (empty on failure).
    pub accepted: Vec<AcceptedReveal>,
    /// Rejected reveals, sorted by node, inference id, then reason.
    pub rejected: Vec<Rejection>,
    /// The decision.
    pub decision: Decision,
}

impl ConsensusOutcome {
    /// The selection, when consensus was reached.
    pub fn selected(&self) -> Option<&Selection> {
        match &self.decision {
            Decision::Agreed { selected, .. } => Some(selected),
            Decision::Failed(_) => None,
        }
    }

    /// The joint hash, when consensus was reached.
    pub fn joint_hash(&self) -> Option<Hash32> {
        match &self.decision {
            Decision::Agreed { joint_hash, .. } => Some(*joint_hash),
            Decision::Failed(_) => None,
        }
    }
}

/// Hash of an accepted set:
///
/// ```text
/// SHA-256( "rakis/accepted/v1" ‖ 0x00 ‖ request_id (32) ‖ n (u32 BE)
///          ‖ commitment_1 ‖ … ‖ commitment_n )   commitments sorted ascending, bytewise
/// ```
pub fn joint_hash(request_id: &RequestId, sorted_commitments: &[Commitment]) -> Hash32 {
    let mut h = Hasher::new(ACCEPTED_TAG);
    h.bytes(&request_id.0).u32(sorted_commitments.len() as u32);
    for c in sorted_commitments {
        h.bytes(&c.0);
    }
    h.finish()
}

/// Selection seed: `SHA-256("rakis/select/v1" ‖ 0x00 ‖ request_id ‖ n (u32 BE) ‖ (commitment_i ‖ salt_i)…)`
/// over the accepted set sorted by commitment. The index chosen is
/// `(u64::from_be_bytes(seed[0..8]) * n) >> 64` (128-bit product).
pub fn selection_index(
    request_id: &RequestId,
    sorted: &[(Commitment, crate::Salt)],
) -> (Hash32, u32) {
    let mut h = Hasher::new(SELECT_TAG);
    h.bytes(&request_id.0).u32(sorted.len() as u32);
    for (c, s) in sorted {
        h.bytes(&c.0).bytes(&s.0);
    }
    let seed = h.finish();
    let r = u64::from_be_bytes(seed.0[..8].try_into().expect("8 bytes"));
    let idx = ((r as u128 * sorted.len() as u128) >> 64) as u32;
    (seed, idx)
}

/// The nodes a chain pays for a result: the distinct nodes of the accepted set, ascending,
/// packed (`node_1 ‖ … ‖ node_n`, 33 bytes each), as an oracle contract takes them.
pub fn payees(accepted: &[AcceptedReveal]) -> Vec<u8> {
    let nodes: BTreeSet<&NodeId> = accepted.iter().map(|a| &a.node).collect();
    nodes.into_iter().flat_map(|n| n.0).collect()
}

/// `SHA-256` of the [`payees`]. No tag: a contract hashes the list it is given as it is.
pub fn payees_digest(accepted: &[AcceptedReveal]) -> Hash32 {
    crate::sha256(&payees(accepted))
}

/// Result digest:
/// `SHA-256("rakis/result/v2" ‖ 0x00 ‖ request_id ‖ output_hash ‖ joint_hash ‖ payees ‖ config)`,
/// with `payees` the [`payees_digest`] of the accepted set and `config` the
/// [`ConsensusParams::config_digest`].
pub fn result_digest(
    request_id: &RequestId,
    output_hash: &Hash32,
    joint_hash: &Hash32,
    payees: &Hash32,
    config: &Hash32,
) -> Hash32 {
    Hasher::new(RESULT_TAG)
        .bytes(&request_id.0)
        .bytes(&output_hash.0)
        .bytes(&joint_hash.0)
        .bytes(&payees.0)
        .bytes(&config.0)
        .finish()
}

/// Sort key of a submission, see [`submission_key`].
type SubmissionKey<'a> = (
    NodeId,
    InferenceId,
    Commitment,
    &'a str,
    bool,
    Option<(u32, &'a [u64])>,
    Option<&'a crate::sampling::SamplingFault>,
);

/// Canonical order of submissions: node, inference id, commitment, embedding model, then the
/// re-embedding (present before missing, then by dimension and words).
fn submission_key<'a>(s: &'a Submission, commitment: &Commitment) -> SubmissionKey<'a> {
    (
        s.reveal.node,
        s.reveal.inference_id,
        *commitment,
        &s.reveal.embedding_model,
        s.reembedding.is_none(),
        s.reembedding.as_ref().map(|e| (e.dim(), e.words())),
        s.sampling_fault.as_ref(),
    )
}

/// Verifies every reveal against the commits and clusters the verified ones.
///
/// `commits` may hold several commits per node (all are kept to detect equivocation) and
/// commits of other requests (ignored). Identical reveals count once; when one reveal comes
/// with several different re-embeddings, a present one is used before a missing one, then the
/// lowest by dimension and words. The computation does not depend on the order of `commits`
/// or `submissions`.
///
/// Checks, per reveal, in this order (first failure is the reason):
/// request id → a commit exists → the node did not equivocate → it is the committed
/// inference id (ids are scoped by node; a copy of another committer's id rejects nobody) → the embedding model → the commitment
/// opens → a single reveal per node for this request → the re-embedding (missing =
/// [`RejectReason::EmbeddingBeyondTolerance`] with distance `u32::MAX`) → the dimension
/// matches the other verified reveals (first reveal by commitment order fixes it).
///
/// Then the largest ball of radius `radius_bits(dim)` centred on a verified reveal is found,
/// ties going to the centre with the lowest commitment; consensus is reached when it holds
/// at least `threshold(committed)` points.
pub fn evaluate(
    request_id: &RequestId,
    params: &ConsensusParams,
    commits: &[Commit],
    submissions: &[Submission],
) -> Result<ConsensusOutcome, ConsensusError> {
    // Commits per node, deduplicated; inference ids per node.
    let mut by_node: BTreeMap<NodeId, BTreeSet<(Commitment, InferenceId)>> = BTreeMap::new();
    for c in commits.iter().filter(|c| c.request_id == *request_id) {
        by_node
            .entry(c.node)
            .or_default()
            .insert((c.commitment, c.inference_id));
    }
    let committed = by_node.len() as u32;
    // Inference ids are scoped by node: two committers using the same id is no reason to
    // reject either. Ids are visible in the commit phase, so a global uniqueness rule would let
    // anyone knock out an honest node by copying its id into a commit of its own.

    // Deduplicate identical submissions and order them canonically. The key orders reveals
    // completely (the embedding model is not in the commitment), so that copies of one reveal
    // are adjacent whatever lies between them in the input; of copies with different
    // re-embeddings, the one kept is chosen by `submission_key`, not by input order.
    let mut subs: Vec<(&Submission, Commitment)> = submissions
        .iter()
        .map(|s| (s, s.reveal.commitment()))
        .collect();
    subs.sort_by(|a, b| submission_key(a.0, &a.1).cmp(&submission_key(b.0, &b.1)));
    subs.dedup_by(|a, b| a.0.reveal == b.0.reveal);
    let submitted = subs.len() as u32;

    let mut rejected = Vec::new();
    let mut verified: Vec<(Commitment, &Submission)> = Vec::new();
    // Distinct reveals per node for this request (reveals of other requests are rejected
    // below and do not count as a second reveal).
    let mut revealed_nodes: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (s, _) in subs
        .iter()
        .filter(|(s, _)| s.reveal.request_id == *request_id)
    {
        *revealed_nodes.entry(s.reveal.node).or_default() += 1;
    }
    for (s, opened) in &subs {
        let r = &s.reveal;
        let reason = (|| {
            if r.request_id != *request_id {
                return Err(RejectReason::RequestMismatch);
            }
            let set = by_node.get(&r.node).ok_or(RejectReason::MissingCommit)?;
            if set.len() > 1 {
                let first = set.first().expect("non-empty").0;
                let second = set.last().expect("non-empty").0;
                if first != second {
                    return Err(RejectReason::Equivocation { first, second });
                }
                // Same commitment under two inference ids: also equivocation of ids.
                return Err(RejectReason::DuplicateInferenceId);
            }
            let (commitment, inference_id) = *set.first().expect("non-empty");
            if inference_id != r.inference_id {
                return Err(RejectReason::MissingCommit);
            }
            if r.embedding_model != params.embedding_model {
                return Err(RejectReason::EmbeddingModelMismatch {
                    expected: params.embedding_model.clone(),
                    actual: r.embedding_model.clone(),
                });
            }
            if *opened != commitment {
                return Err(RejectReason::CommitmentMismatch);
            }
            if revealed_nodes[&r.node] > 1 {
                // Several different reveals from one node, one of which opens the commit:
                // only one reveal per node is allowed; reject them all, order-independently.
                return Err(RejectReason::DuplicateInferenceId);
            }
            if let Some(fault) = &s.sampling_fault {
                return Err(RejectReason::UnfaithfulSampling(fault.clone()));
            }
            let own = s
                .reembedding
                .as_ref()
                .ok_or(RejectReason::EmbeddingBeyondTolerance {
                    distance: u32::MAX,
                    tolerance: params.tolerance_bits(r.embedding.dim()),
                })?;
            check_reembedding(&r.embedding, own, params.tolerance_bits(own.dim()))?;
            Ok(commitment)
        })();
        match reason {
            Ok(c) => verified.push((c, s)),
            Err(reason) => rejected.push(Rejection {
                node: r.node,
                inference_id: r.inference_id,
                reason,
            }),
        }
    }

    // Canonical order of verified points: by commitment (nobody controls it).
    verified.sort_by_key(|(c, _)| *c);
    if let Some(dim) = verified.first().map(|(_, s)| s.reveal.embedding.dim()) {
        verified.retain(|(_, s)| {
            let d = s.reveal.embedding.dim();
            if d != dim {
                rejected.push(Rejection {
                    node: s.reveal.node,
                    inference_id: s.reveal.inference_id,
                    reason: RejectReason::DimensionMismatch {
                        expected: dim,
                        actual: d,
                    },
                });
            }
            d == dim
        });
    }
    rejected.sort_by(|a, b| {
        (a.node, a.inference_id, format!("{:?}", a.reason)).cmp(&(
            b.node,
            b.inference_id,
            format!("{:?}", b.reason),
        ))
    });

    let threshold = params.threshold(committed);
    let mut outcome = ConsensusOutcome {
        request_id: *request_id,
        committed,
        submitted,
        verified: verified.len() as u32,
        radius_bits: 0,
        threshold,
        best_ball: 0,
        accepted: Vec::new(),
        rejected,
        decision: Decision::Failed(FailureReason::NoCommits),
    };
    if committed == 0 {
        return Ok(outcome);
    }
    if verified.is_empty() {
        outcome.decision = Decision::Failed(FailureReason::NoVerifiedReveals);
        return Ok(outcome);
    }

    let points = PackedPoints::new(verified.iter().map(|(_, s)| &s.reveal.embedding))?;
    let radius = params.radius_bits(points.dim());
    outcome.radius_bits = radius;
    let (center, best) = points.largest_ball(radius).expect("non-empty");
    outcome.best_ball = best;
    if best < threshold {
        outcome.decision = Decision::Failed(FailureReason::BelowThreshold {
            best,
            needed: threshold,
        });
        return Ok(outcome);
    }

    let distances = points.distances_from(center);
    let members: Vec<usize> = (0..verified.len())
        .filter(|&j| distances[j] <= radius)
        .collect();
    outcome.accepted = members
        .iter()
        .map(|&j| {
            let (c, s) = verified[j];
            AcceptedReveal {
                node: s.reveal.node,
                inference_id: s.reveal.inference_id,
                commitment: c,
                output_hash: s.reveal.output_hash(),
                distance_to_center: distances[j],
            }
        })
        .collect();
    let commitments: Vec<Commitment> = members.iter().map(|&j| verified[j].0).collect();
    let joint = joint_hash(request_id, &commitments);
    let salted: Vec<_> = members
        .iter()
        .map(|&j| (verified[j].0, verified[j].1.reveal.salt))
        .collect();
    let index = match &params.selection_order {
        // The accepted node drawn first into the committee (nodes outside the order last; ties
        // cannot occur, one reveal per node).
        Some(order) => {
            let rank = |j: usize| {
                let node = verified[members[j]].1.reveal.node;
                order.iter().position(|n| *n == node).unwrap_or(usize::MAX)
            };
            (0..members.len())
                .min_by_key(|&j| (rank(j), j))
                .unwrap_or(0) as u32
        }
        None => selection_index(request_id, &salted).1,
    };
    let chosen = verified[members[index as usize]].1;
    let output_hash = chosen.reveal.output_hash();
    outcome.decision = Decision::Agreed {
        center: verified[center].0,
        selected: Selection {
            node: chosen.reveal.node,
            inference_id: chosen.reveal.inference_id,
            output_hash,
            output: chosen.reveal.output.clone(),
            index,
        },
        joint_hash: joint,
        config_digest: params.config_digest,
        result_digest: result_digest(
            request_id,
            &output_hash,
            &joint,
            &payees_digest(&outcome.accepted),
            &params.config_digest,
        ),
    };
    Ok(outcome)
}
