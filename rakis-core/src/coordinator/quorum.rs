//! The state of one request inside the coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Phase;
use crate::engine::Generation;
use crate::membership::Committee;
use crate::protocol::{
    CommitMsg, ConsensusResultMsg, InferenceRequest, InventoryItem, RevealMsg, SamplingVerdict,
};
use crate::store::OwnOutput;
use crate::{BinaryEmbedding, ConsensusOutcome, Hash32, InferenceId, NodeId, RequestId};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum OwnState {
    /// Not answering (no model served, or not an embedder).
    NotAnswering,
    Queued,
    Generating,
    Embedding {
        generation: Generation,
    },
    Persisting(OwnOutput),
    Committed(OwnOutput),
    Skipped,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Reembedding {
    Pending,
    Done(Option<BinaryEmbedding>),
}

/// Where the replay of one reveal's sampling stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Scoring {
    /// Asked of the engine.
    Pending,
    /// Replayed here, and it held.
    Passed,
    /// Judged here as a fault (by replay, or before it: a bad seed proof, other weights).
    Failed(crate::consensus::sampling::SamplingFault),
    /// The engine could not replay it (an error, or it does not support scoring).
    Unchecked,
}

impl Scoring {
    /// The verdict this node states in its inventory: only what it judged itself.
    pub(super) fn verdict(&self) -> Option<SamplingVerdict> {
        match self {
            Scoring::Passed => Some(SamplingVerdict::Passed),
            Scoring::Failed(f) => Some(SamplingVerdict::Failed(f.clone())),
            Scoring::Pending | Scoring::Unchecked => None,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Quorum {
    /// Bytes this request reserves of the node's state budget.
    pub(super) reserved: usize,
    pub(super) request: InferenceRequest,
    pub(super) id: RequestId,
    pub(super) deadline: u64,
    pub(super) reveal_deadline: u64,
    pub(super) phase: Phase,
    /// Distinct commits per node (at most two kept: enough to prove equivocation).
    pub(super) commits: BTreeMap<NodeId, Vec<CommitMsg>>,
    /// Committers whose misbehaviour this node has reported for this request.
    pub(super) reported: BTreeSet<NodeId>,
    /// Distinct reveals per node (at most two kept).
    pub(super) reveals: BTreeMap<NodeId, Vec<RevealMsg>>,
    /// Replays of committers' sampling keyed by (node, opened commitment): only for reveals
    /// of models this node serves.
    pub(super) scores: BTreeMap<(NodeId, crate::Commitment), Scoring>,
    /// Re-embeddings keyed by (node, opened commitment).
    pub(super) reembeddings: BTreeMap<(NodeId, crate::Commitment), Reembedding>,
    /// Rejections already announced.
    pub(super) announced: BTreeSet<(NodeId, InferenceId)>,
    /// Reveals that arrived before this node's own deadline passed (the sender's clock ran
    /// ahead): replayed when the quorum starts revealing. At most one per committer.
    pub(super) early_reveals: BTreeMap<NodeId, RevealMsg>,
    pub(super) own: OwnState,
    pub(super) outcome: Option<Arc<ConsensusOutcome>>,
    pub(super) signed: Option<ConsensusResultMsg>,
    pub(super) peer_results: BTreeMap<NodeId, Hash32>,
    /// The signed results of committee members, by result digest (for certification).
    pub(super) attestations: BTreeMap<Hash32, BTreeMap<NodeId, ConsensusResultMsg>>,
    /// The request's committee (`None` in an open network: anyone's commit counts).
    pub(super) committee: Option<Committee>,
    /// The digest that gathered the committee's signature threshold, once one did.
    pub(super) certified: Option<Hash32>,
    /// Messages of nodes outside the committee ignored so far (reported for the first few).
    pub(super) outsiders: u32,
    /// When this node sent its inventory (it was ready to decide), and until when it waits for
    /// the others' inventories and what they list.
    pub(super) reconcile_deadline: Option<u64>,
    /// When this node last broadcast its inventory.
    pub(super) inventory_sent_at: Option<u64>,
    /// The inventories received, by sender.
    pub(super) inventories: BTreeMap<NodeId, Vec<InventoryItem>>,
}

impl Quorum {
    pub(super) fn committed(&self) -> u32 {
        self.commits.len() as u32
    }

    /// This node's inventory: every committer's commitments, and whether a reveal opening one
    /// is held.
    pub(super) fn inventory(&self) -> Vec<InventoryItem> {
        self.commits
            .iter()
            .map(|(node, list)| InventoryItem {
                node: *node,
                commitments: list.iter().map(|c| c.commit.commitment).collect(),
                revealed: self.reveals.contains_key(node),
                sampling: self.reveals.get(node).and_then(|rs| {
                    rs.iter().find_map(|r| {
                        self.scores
                            .get(&(*node, r.reveal.commitment()))
                            .and_then(Scoring::verdict)
                    })
                }),
            })
            .collect()
    }

    /// The second check of a reveal this node did not judge itself (it does not serve the
    /// model, or its replay failed to run or did not finish): decided by the sampling verdicts
    /// in the inventories of the other committers (the members that serve the model), each a
    /// signed statement of its sender. The reveal fails when more than half of the other
    /// committers found a fault; otherwise the embedding check alone decides. So liars that
    /// are a minority of the committers can neither reject an honest reveal (even where the
    /// honest ones could not replay it) nor clear a lie that the honest majority caught; the
    /// committer's verdict on itself does not count. The fault of the first failing committer,
    /// in node-id order, is the reason given.
    pub(super) fn committee_sampling_fault(
        &self,
        committer: &NodeId,
        commitment: &crate::Commitment,
    ) -> Option<crate::consensus::sampling::SamplingFault> {
        let voters = self.commits.keys().filter(|n| *n != committer).count();
        let mut failed = Vec::new();
        for (sender, items) in &self.inventories {
            if sender == committer || !self.commits.contains_key(sender) {
                continue;
            }
            let verdict = items
                .iter()
                .find(|i| i.node == *committer && i.commitments.contains(commitment))
                .and_then(|i| i.sampling.as_ref());
            if let Some(SamplingVerdict::Failed(f)) = verdict {
                failed.push(f);
            }
        }
        (2 * failed.len() > voters).then(|| failed[0].clone())
    }

    /// The first thing `inventories` list that this node lacks, and who listed it: a commitment,
    /// or the reveal of a committer with one commitment.
    pub(super) fn missing(&self) -> Option<NodeId> {
        for (sender, items) in &self.inventories {
            for item in items {
                let mine = self.commits.get(&item.node);
                let has = |c: &crate::consensus::Commitment| {
                    mine.is_some_and(|l| l.iter().any(|m| m.commit.commitment == *c))
                };
                if !item.commitments.iter().all(has) {
                    return Some(*sender);
                }
                let single = mine.is_some_and(|l| l.len() == 1);
                if item.revealed && single && !self.reveals.contains_key(&item.node) {
                    return Some(*sender);
                }
            }
        }
        None
    }

    /// Whether every committer (but this node and equivocators) sent its inventory, and this
    /// node holds everything the inventories list.
    pub(super) fn reconciled(&self, me: &NodeId) -> bool {
        let all_heard = self
            .commits
            .iter()
            .filter(|(n, l)| *n != me && l.len() == 1)
            .all(|(n, _)| self.inventories.contains_key(n));
        all_heard && self.missing().is_none()
    }

    /// Whether `node` may take part (commit, reveal, sign the result): a committee member, or
    /// anyone in an open network.
    pub(super) fn admits(&self, node: &NodeId) -> bool {
        self.committee.as_ref().is_none_or(|c| c.contains(node))
    }
}
