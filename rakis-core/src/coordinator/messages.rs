//! Messages of other nodes: requests, commits, reveals (checked against their commitments and
//! re-embedded), rejections and signed results.

use std::sync::Arc;

use tracing::{debug, info, warn};

use super::quorum::{OwnState, Quorum, Reembedding, Scoring};
use super::*;
use crate::consensus::sampling::SamplingFault;
use crate::events::{IgnoreReason, NodeEvent};
use crate::misbehaviour::Misbehaviour;
use crate::protocol::{CommitMsg, ConsensusResultMsg, Message, RevealMsg};
use crate::store::StoreOp;
use crate::{InferenceId, NodeId, RejectReason, Rejection};

/// Events reported per request for messages of nodes outside its committee (the rest are only
/// counted).
const MAX_OUTSIDER_EVENTS: u32 = 16;
/// Most committers an inventory may list (larger ones are ignored).
const MAX_INVENTORY_ITEMS: usize = 4_096;

impl Coordinator {
    pub(super) fn on_message(
        &mut self,
        now: u64,
        from: NodeId,
        message: Message,
        out: &mut Vec<Action>,
    ) {
        match message {
            Message::Request(r) => {
                self.on_request(now, r, Some(from), out);
            }
            Message::Commit(c) => self.on_commit(now, from, c, None, out),
            Message::Reveal(r) => self.on_reveal(now, from, r, None, out),
            Message::RevealRejected {
                request_id,
                node,
                reason,
                ..
            } => {
                if self.quorums.contains_key(&request_id) {
                    out.push(Action::Emit(NodeEvent::PeerRejectedReveal {
                        request_id,
                        by: from,
                        node,
                        reason,
                    }));
                }
            }
            Message::ConsensusResult(r) => self.on_peer_result(now, from, r, out),
            Message::Inventory { request_id, items } => {
                self.on_inventory(now, from, request_id, items, out)
            }
            Message::PeerStatus(s) => {
                self.peers.insert(
                    from,
                    KnownPeer {
                        status: s,
                        last_seen_ms: now,
                    },
                );
            }
            // Peer lists are the transport's business; sync messages are answered by the
            // driver, which holds the original wire bytes.
            Message::KnownPeers(_) | Message::SyncRequest { .. } | Message::SyncResponse { .. } => {
            }
        }
    }

    /// A commit, live (`sent_at = None`: judged by the local clock) or relayed by a sync
    /// (judged by its signed send time).
    pub(super) fn on_commit(
        &mut self,
        now: u64,
        from: NodeId,
        c: CommitMsg,
        sent_at: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let id = c.commit.request_id;
        if c.commit.node != from {
            warn!(request = %id.short(), "commit not signed by its committer; dropped");
            return;
        }
        let Some(q) = self.quorums.get_mut(&id) else {
            debug!(request = %id.short(), "commit for unknown request");
            if sent_at.is_none() {
                self.keep_orphan(now, from, id, Message::Commit(c), out);
                self.ask_sync(now, from, id, out);
            }
            return;
        };
        if !q.admits(&from) {
            Self::ignore_outsider(q, from, out);
            return;
        }
        let timely = match sent_at {
            None => now <= q.deadline && matches!(q.phase, Phase::Open | Phase::Committing),
            Some(t) => {
                t <= q.deadline
                    && q.outcome.is_none()
                    && match &q.phase {
                        Phase::Open | Phase::Committing | Phase::Revealing | Phase::Verifying => {
                            true
                        }
                        // A quorum that failed only for commits this node missed reopens
                        // while the reveal window is open.
                        Phase::Failed(QuorumFailure::QuorumNotReached { .. }) => {
                            now <= q.reveal_deadline
                        }
                        _ => false,
                    }
            }
        };
        if !timely {
            debug!(request = %id.short(), node = %from.short(), "commit after the deadline ignored");
            return;
        }
        if !q.request.accepted_models.contains(&c.model) {
            warn!(request = %id.short(), model = %c.model, "commit for a model the request does not accept");
            return;
        }
        if q.committee.is_none()
            && !q.commits.contains_key(&from)
            && q.commits.len() >= MAX_OPEN_COMMITTERS
        {
            // An open network has no committee to bound its committers: a node tracks the
            // first ones only (free keys could otherwise make it hold any number).
            out.push(Action::ignored(id, from, IgnoreReason::TooManyCommitters));
            return;
        }
        let list = q.commits.entry(from).or_default();
        if list
            .iter()
            .any(|k| k.commit == c.commit && k.model == c.model)
            || list.len() >= 2
        {
            return;
        }
        // The statement makes the commit provable: one without a valid one is refused (a
        // node keeps only commits it could hold against their committer).
        let signed = c.signed_commit();
        if let Err(e) = signed.verify(&self.network) {
            warn!(request = %id.short(), node = %from.short(), error = %e, "commit without a valid statement signature; dropped");
            if list.is_empty() {
                q.commits.remove(&from);
            }
            out.push(Action::ignored(id, from, IgnoreReason::InvalidStatement));
            return;
        }
        let equivocation =
            list.iter()
                .find(|k| k.commit != c.commit)
                .map(|first| Misbehaviour::Equivocation {
                    network: self.network,
                    first: first.signed_commit(),
                    second: signed,
                });
        list.push(c.clone());
        if let Some(evidence) = equivocation {
            Self::report(q, evidence, out);
        }
        match q.phase {
            Phase::Open => q.phase = Phase::Committing,
            Phase::Failed(QuorumFailure::QuorumNotReached { .. })
                if q.committed() >= q.request.frame.quorum =>
            {
                info!(request = %id.short(), "missed commits arrived by sync: the quorum reopens");
                q.phase = Phase::Committing;
            }
            _ => {}
        }
        let committed = q.committed();
        let reopened = q.phase == Phase::Committing && now > q.deadline;
        if let Some(d) = self.deferred.as_mut() {
            d.insert(id);
        }
        out.push(Action::Persist(StoreOp::Commit(c)));
        out.push(Action::Emit(NodeEvent::CommitSeen {
            request_id: id,
            node: from,
            committed,
        }));
        if reopened {
            // Reveals parked while the quorum looked failed.
            if let Some(parked) = self.orphans.take(&id) {
                if self.deferred.is_some() {
                    self.released.extend(parked);
                } else {
                    self.on_synced(now, parked, out);
                }
            }
        }
    }

    /// A reveal, live (`sent_at = None`) or relayed by a sync (judged by its signed send time).
    pub(super) fn on_reveal(
        &mut self,
        now: u64,
        from: NodeId,
        r: RevealMsg,
        sent_at: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let id = r.reveal.request_id;
        if !self.quorums.contains_key(&id) {
            if sent_at.is_none() && r.reveal.node == from {
                self.keep_orphan(now, from, id, Message::Reveal(r), out);
                self.ask_sync(now, from, id, out);
            }
            return;
        }
        if let Some(q) = self.quorums.get(&id) {
            if r.reveal.output.len() > q.request.max_output_bytes() {
                warn!(request = %id.short(), node = %from.short(), bytes = r.reveal.output.len(), "reveal longer than the request allows; dropped");
                out.push(Action::ignored(id, from, IgnoreReason::OutputTooLong));
                return;
            }
        }
        // The sender may have passed the deadline a moment before this node's timer fired.
        self.advance(now, id, out);
        if let Some(q) = self.quorums.get_mut(&id) {
            if sent_at.is_none()
                && matches!(q.phase, Phase::Open | Phase::Committing)
                && r.reveal.node == from
                && q.commits.contains_key(&from)
            {
                debug!(request = %id.short(), node = %from.short(), "early reveal buffered");
                q.early_reveals.entry(from).or_insert(r);
                return;
            }
        }
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        if !q.admits(&from) {
            Self::ignore_outsider(q, from, out);
            return;
        }
        if r.reveal.node != from {
            warn!(request = %id.short(), "reveal not signed by its revealer; dropped");
            return;
        }
        let at = sent_at.unwrap_or(now);
        let phase_ok = match sent_at {
            None => q.phase == Phase::Revealing,
            Some(_) => {
                matches!(q.phase, Phase::Revealing | Phase::Verifying) && q.outcome.is_none()
            }
        };
        if !phase_ok || at <= q.deadline || at > q.reveal_deadline {
            // A node that failed the quorum for lack of commits it may have missed keeps the
            // reveal and asks the revealer for the commits.
            let park = sent_at.is_none()
                && r.reveal.node == from
                && now <= q.reveal_deadline
                && matches!(
                    q.phase,
                    Phase::Failed(QuorumFailure::QuorumNotReached { .. })
                );
            if park {
                self.keep_orphan(now, from, id, Message::Reveal(r), out);
                self.ask_sync(now, from, id, out);
                return;
            }
            debug!(request = %id.short(), node = %from.short(), "reveal outside the reveal window ignored");
            return;
        }
        if !q.commits.contains_key(&from) {
            debug!(request = %id.short(), node = %from.short(), "reveal without commit ignored");
            if sent_at.is_none() {
                self.ask_sync(now, from, id, out);
            }
            return;
        }
        let list = q.reveals.entry(from).or_default();
        if list.contains(&r) || list.len() >= 2 {
            return;
        }
        let signed = r.signed_reveal();
        if let Err(e) = signed.verify(&self.network) {
            warn!(request = %id.short(), node = %from.short(), error = %e, "reveal without a valid statement signature; dropped");
            if list.is_empty() {
                q.reveals.remove(&from);
            }
            out.push(Action::ignored(id, from, IgnoreReason::InvalidStatement));
            return;
        }
        list.push(r.clone());
        // A reveal that does not open the committer's only commitment is provable.
        if let [commit] = q.commits.get(&from).map(Vec::as_slice).unwrap_or_default() {
            if signed.statement.commitment() != commit.commit.commitment {
                let evidence = Misbehaviour::FalseReveal {
                    network: self.network,
                    commit: commit.signed_commit(),
                    reveal: signed,
                };
                Self::report(q, evidence, out);
            }
        }
        out.push(Action::Persist(StoreOp::Reveal(r.clone())));
        out.push(Action::Emit(NodeEvent::RevealSeen {
            request_id: id,
            node: from,
            model: r.model.clone(),
            output: r.reveal.output.clone(),
            embedding: r.reveal.embedding.clone(),
        }));
        Self::check_reveal(q, &self.config, &r, out);
        self.try_finalize(id, false, out);
    }

    /// Checks a kept reveal against the revealer's commits: a reveal that opens none is
    /// rejected; one that opens a commit is re-embedded (when this node verifies with the
    /// reveal's embedding model), or takes the own embedding when it is the own reveal; its
    /// sampling is replayed when this node serves the reveal's model with the weights the
    /// reveal declares (`config` says which models, weights and embedding model).
    pub(super) fn check_reveal(
        q: &mut Quorum,
        config: &super::CoordinatorConfig,
        r: &RevealMsg,
        out: &mut Vec<Action>,
    ) {
        let serves_model = config.served_models.contains(&r.model);
        let own_weights = config.model_weights.get(&r.model);
        let id = q.id;
        let from = r.reveal.node;
        let Some(commits) = q.commits.get(&from) else {
            return;
        };
        let opened = commits
            .iter()
            .find(|c| crate::verify_reveal(&c.commit, &r.reveal).is_ok())
            .map(|c| c.commit.commitment);
        let Some(commitment) = opened else {
            let reason = commits
                .iter()
                .map(|c| crate::verify_reveal(&c.commit, &r.reveal))
                .find_map(|res| res.err())
                .unwrap_or(RejectReason::CommitmentMismatch);
            Self::announce_rejection(q, from, r.reveal.inference_id, reason, out);
            return;
        };
        // This node's own reveal (a restored one) needs neither a replay nor a re-embedding.
        let own = match &q.own {
            OwnState::Committed(o) if o.commitment == commitment => Some(o.embedding.clone()),
            _ => None,
        };
        // The second check: the committer's sampling, replayed by a node serving its model
        // with the seed its VRF proof gives (a proof that does not hold is refused by all).
        if let (None, std::collections::btree_map::Entry::Vacant(slot)) =
            (&own, q.scores.entry((from, commitment)))
        {
            match crate::vrf::sampling_seed(&from, &id, &r.seed_proof) {
                Err(_) => {
                    warn!(request = %id.short(), node = %from.short(), "sampling seed proof does not hold");
                    slot.insert(Scoring::Failed(SamplingFault::BadSeedProof));
                }
                // A model name stands for one set of weights: a reveal declaring others is
                // not an answer of this model (and replaying it here would prove nothing).
                Ok(_)
                    if serves_model
                        && own_weights.is_some_and(|w| r.weights.as_ref() != Some(w)) =>
                {
                    warn!(request = %id.short(), node = %from.short(), "reveal declares other weights");
                    slot.insert(Scoring::Failed(SamplingFault::OtherWeights));
                }
                Ok(seed) if serves_model => {
                    slot.insert(Scoring::Pending);
                    out.push(Action::Score {
                        node: from,
                        commitment,
                        job: crate::engine::ScoreJob {
                            request_id: id,
                            model: r.model.clone(),
                            messages: q.request.messages.clone(),
                            text: r.reveal.output.clone(),
                            token_ids: r.token_ids.clone(),
                            temperature: q.request.temperature,
                            top_p: q.request.top_p,
                            max_tokens: q.request.max_tokens,
                            seed,
                            ending: r.ending,
                            deadline_ms: q.reveal_deadline.saturating_add(config.verify_grace_ms),
                        },
                    });
                }
                Ok(_) => {}
            }
        }
        if config.embedding_model.as_deref() != Some(r.reveal.embedding_model.as_str()) {
            return;
        }
        match own {
            Some(e) => {
                q.reembeddings
                    .insert((from, commitment), Reembedding::Done(Some(e)));
            }
            None => {
                q.reembeddings
                    .insert((from, commitment), Reembedding::Pending);
                out.push(Action::Embed {
                    request_id: id,
                    purpose: EmbedPurpose::Reembed {
                        node: from,
                        commitment,
                    },
                    text: r.reveal.output.clone(),
                });
            }
        }
    }

    pub(super) fn announce_rejection(
        q: &mut Quorum,
        node: NodeId,
        inference_id: InferenceId,
        reason: RejectReason,
        out: &mut Vec<Action>,
    ) {
        if !q.announced.insert((node, inference_id)) {
            return;
        }
        info!(request = %q.id.short(), node = %node.short(), %reason, "reveal rejected");
        out.push(Action::Persist(StoreOp::Rejection {
            request_id: q.id,
            rejection: Rejection {
                node,
                inference_id,
                reason: reason.clone(),
            },
        }));
        out.push(Action::Broadcast(Message::RevealRejected {
            request_id: q.id,
            node,
            inference_id,
            reason: reason.clone(),
        }));
        out.push(Action::Emit(NodeEvent::RevealRejected {
            request_id: q.id,
            node,
            reason,
        }));
    }

    pub(super) fn on_peer_result(
        &mut self,
        now: u64,
        from: NodeId,
        r: ConsensusResultMsg,
        out: &mut Vec<Action>,
    ) {
        let id = r.request_id;
        if r.signer != from {
            warn!(request = %id.short(), "result not signed by its sender; dropped");
            return;
        }
        // A result for a request this node does not know, or failed for lack of commits it
        // may have missed: ask the signer for what it saw.
        let missed = match self.quorums.get(&id) {
            None => true,
            Some(q) => matches!(
                q.phase,
                Phase::Failed(QuorumFailure::QuorumNotReached { .. })
            ),
        };
        if missed {
            self.ask_sync(now, from, id, out);
        }
        let Some(q) = self.quorums.get_mut(&id) else {
            self.keep_orphan(now, from, id, Message::ConsensusResult(r), out);
            return;
        };
        if !q.admits(&from) {
            Self::ignore_outsider(q, from, out);
            return;
        }
        if r.output.len() > q.request.max_output_bytes() {
            warn!(request = %id.short(), node = %from.short(), "result longer than the request allows; dropped");
            out.push(Action::ignored(id, from, IgnoreReason::OutputTooLong));
            return;
        }
        if let Err(e) = r.verify() {
            warn!(request = %id.short(), node = %from.short(), error = %e, "invalid result dropped");
            return;
        }
        if q.peer_results.contains_key(&from) {
            return;
        }
        q.peer_results.insert(from, r.result_digest);
        out.push(Action::Persist(StoreOp::PeerResult(r.clone())));
        Self::attest(q, r.clone(), out);
        if let Some(ours) = q.signed.as_ref().map(|s| s.result_digest) {
            if ours != r.result_digest {
                warn!(request = %id.short(), node = %from.short(), "peer computed a different result");
                out.push(Action::Emit(NodeEvent::Disagreement {
                    request_id: id,
                    node: from,
                    ours,
                    theirs: r.result_digest,
                }));
            }
        }
        out.push(Action::Emit(NodeEvent::PeerResult {
            request_id: id,
            result: Arc::new(r),
        }));
    }

    /// Another node's inventory: kept (one per sender), and what it lists that this node lacks
    /// is fetched from it; the decision may then be due.
    pub(super) fn on_inventory(
        &mut self,
        now: u64,
        from: NodeId,
        id: RequestId,
        items: Vec<crate::protocol::InventoryItem>,
        out: &mut Vec<Action>,
    ) {
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        if !q.admits(&from) {
            Self::ignore_outsider(q, from, out);
            return;
        }
        if items.len() > MAX_INVENTORY_ITEMS {
            return;
        }
        if q.outcome.is_some() {
            // Decided already: the sender is still reconciling and may have lost this node's
            // inventory; send it again (at most every RECONCILE_RETRY_MS).
            Self::send_inventory(q, &self.node, now, out);
            return;
        }
        // The latest inventory of each sender (it may have fetched more since its last one).
        q.inventories.insert(from, items);
        if q.missing() == Some(from) {
            self.ask_sync(now, from, id, out);
        }
        self.try_finalize(id, false, out);
    }

    /// A message of a node outside the request's committee: ignored, and said so (for the first
    /// few of each request: an outsider cannot fill the event stream either).
    pub(super) fn ignore_outsider(q: &mut Quorum, node: NodeId, out: &mut Vec<Action>) {
        q.outsiders = q.outsiders.saturating_add(1);
        debug!(request = %q.id.short(), node = %node.short(), "message of a node outside the committee ignored");
        if q.outsiders <= MAX_OUTSIDER_EVENTS {
            out.push(Action::ignored(q.id, node, IgnoreReason::NotInCommittee));
        }
    }

    /// Counts a committee member's signed result towards certification: once the committee's
    /// signature threshold of distinct members signed one digest, the result is certified (a
    /// light client may trust it) and [`NodeEvent::Certified`] carries the signatures.
    pub(super) fn attest(q: &mut Quorum, r: ConsensusResultMsg, out: &mut Vec<Action>) {
        let Some(committee) = &q.committee else {
            return;
        };
        let needed = committee.signature_threshold(q.request.frame.percentage_ppm());
        let digest = r.result_digest;
        let signers = q.attestations.entry(digest).or_default();
        signers.entry(r.signer).or_insert(r);
        if q.certified.is_none() && signers.len() >= needed {
            q.certified = Some(digest);
            info!(request = %q.id.short(), result = %digest.short(), signers = signers.len(), "result certified by the committee");
            out.push(Action::Emit(NodeEvent::Certified {
                request_id: q.id,
                signatures: signers.values().cloned().collect(),
            }));
        }
    }

    /// Reports `evidence` (checked again before it leaves: only evidence a chain accepts is
    /// sent) once per committer and request.
    fn report(q: &mut Quorum, evidence: Misbehaviour, out: &mut Vec<Action>) {
        let node = evidence.node();
        if q.reported.contains(&node) {
            return;
        }
        if let Err(e) = evidence.verify() {
            warn!(request = %q.id.short(), node = %node.short(), error = %e, "evidence that does not hold; not reported");
            return;
        }
        q.reported.insert(node);
        warn!(request = %q.id.short(), node = %node.short(), kind = evidence.kind(), "committer misbehaved: reporting");
        out.push(Action::Emit(NodeEvent::Misbehaved {
            request_id: q.id,
            node,
            kind: evidence.kind(),
        }));
        out.push(Action::Report(Box::new(evidence)));
    }

    /// A replay of a committer's sampling came back: judged under the node's policy.
    pub(super) fn on_scored(
        &mut self,
        request_id: RequestId,
        node: NodeId,
        commitment: crate::Commitment,
        result: Result<crate::engine::Score, crate::EngineError>,
        out: &mut Vec<Action>,
    ) {
        let policy = self.config.sampling_policy;
        let Some(q) = self.quorums.get_mut(&request_id) else {
            return;
        };
        let greedy = q.request.temperature <= 0.0;
        let Some(state) = q.scores.get_mut(&(node, commitment)) else {
            return;
        };
        if *state != Scoring::Pending {
            return;
        }
        *state = match result {
            Ok(replay) => match replay.judge(&policy, greedy) {
                Err(fault) => {
                    warn!(request = %request_id.short(), node = %node.short(), %fault, "sampling does not replay");
                    Scoring::Failed(fault)
                }
                Ok(()) => {
                    debug!(request = %request_id.short(), node = %node.short(), tokens = replay.tokens, same = replay.same, "sampling replays");
                    Scoring::Passed
                }
            },
            Err(crate::EngineError::Unsupported(_)) => Scoring::Unchecked,
            Err(e) => {
                warn!(request = %request_id.short(), node = %node.short(), error = %e, "could not replay the sampling; the committee's verdicts decide");
                Scoring::Unchecked
            }
        };
        self.try_finalize(request_id, false, out);
    }
}
