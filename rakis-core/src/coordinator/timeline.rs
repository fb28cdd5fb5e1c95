//! The timeline of a request: deadline, reveal window, verification grace, consensus.

use std::sync::Arc;

use tracing::{info, warn};

use super::quorum::{OwnState, Quorum, Reembedding, Scoring};
use super::*;
use crate::events::NodeEvent;
use crate::protocol::{ConsensusResultMsg, Message, RevealMsg};
use crate::store::StoreOp;
use crate::{evaluate, Commit, ConsensusParams, Decision, RequestId, Reveal, Submission};

impl Coordinator {
    pub(super) fn on_tick(&mut self, now: u64, out: &mut Vec<Action>) {
        self.orphans.expire(now);
        let ids: Vec<RequestId> = self.quorums.keys().copied().collect();
        for id in ids {
            self.advance(now, id, out);
        }
    }

    /// Moves one request along its timeline if one of its instants has passed.
    pub(super) fn advance(&mut self, now: u64, id: RequestId, out: &mut Vec<Action>) {
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        match q.phase {
            Phase::Open | Phase::Committing if now > q.deadline => {
                let committed = q.committed();
                let needed = q.request.frame.quorum;
                if committed < needed {
                    let reason = QuorumFailure::QuorumNotReached { committed, needed };
                    info!(request = %id.short(), %reason, "quorum failed");
                    q.early_reveals.clear();
                    Self::fail(q, reason, out);
                    return;
                }
                q.phase = Phase::Revealing;
                out.push(Action::Emit(NodeEvent::RevealOpened {
                    request_id: id,
                    committed,
                }));
                let own = match &q.own {
                    OwnState::Committed(own) if now <= q.reveal_deadline => Some(own),
                    OwnState::Committed(_) => {
                        warn!(request = %id.short(), "the reveal window closed before this node could reveal");
                        None
                    }
                    _ => None,
                };
                if let Some(own) = own {
                    let reveal = RevealMsg::signed(
                        &self.key,
                        &self.network,
                        Reveal {
                            request_id: id,
                            node: self.node,
                            inference_id: own.inference_id,
                            output: own.output.clone(),
                            embedding: own.embedding.clone(),
                            salt: own.salt,
                            embedding_model: own.embedding_model.clone(),
                        },
                        own.model.clone(),
                        Vec::new(),
                    )
                    .with_tokens(own.token_ids.clone(), own.ending)
                    .with_weights(self.config.model_weights.get(&own.model).cloned());
                    q.reveals.insert(self.node, vec![reveal.clone()]);
                    q.reembeddings.insert(
                        (self.node, own.commitment),
                        Reembedding::Done(Some(own.embedding.clone())),
                    );
                    out.push(Action::Persist(StoreOp::Reveal(reveal.clone())));
                    out.push(Action::Broadcast(Message::Reveal(reveal)));
                }
                let early = std::mem::take(&mut q.early_reveals);
                for (from, r) in early {
                    self.on_reveal(now, from, r, None, out);
                }
                // Reveals may also be complete at once (quorum of one).
                self.try_finalize(id, false, out);
            }
            Phase::Revealing if now > q.reveal_deadline => {
                q.phase = Phase::Verifying;
                self.try_finalize(id, false, out);
            }
            // Reconciling: decide once the window ended, or ask again for what is missing.
            Phase::Revealing | Phase::Verifying if q.reconcile_deadline.is_some() => {
                self.try_finalize(id, false, out);
            }
            Phase::Verifying if now > q.reveal_deadline + self.config.verify_grace_ms => {
                self.try_finalize(id, true, out);
            }
            _ => {}
        }
    }

    /// Broadcasts this node's inventory of `q` when its result would count (a committee member,
    /// or anyone in an open network), at most once per [`RECONCILE_RETRY_MS`].
    pub(super) fn send_inventory(q: &mut Quorum, me: &NodeId, now: u64, out: &mut Vec<Action>) {
        let due = q
            .inventory_sent_at
            .is_none_or(|t| now >= t.saturating_add(RECONCILE_RETRY_MS));
        if q.admits(me) && due {
            q.inventory_sent_at = Some(now);
            out.push(Action::Broadcast(Message::Inventory {
                request_id: q.id,
                items: q.inventory(),
            }));
        }
    }

    /// Ends a request as failed: the phase, the stored failure and the event.
    pub(super) fn fail(q: &mut Quorum, reason: QuorumFailure, out: &mut Vec<Action>) {
        q.phase = Phase::Failed(reason.clone());
        out.push(Action::Persist(StoreOp::Failed {
            request_id: q.id,
            reason: reason.clone(),
        }));
        out.push(Action::Emit(NodeEvent::Failed {
            request_id: q.id,
            reason,
        }));
    }

    /// Computes consensus when everything needed is there (or `force`).
    pub(super) fn try_finalize(&mut self, id: RequestId, force: bool, out: &mut Vec<Action>) {
        if let Some(d) = self.deferred.as_mut() {
            d.insert(id);
            return;
        }
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        if !matches!(q.phase, Phase::Revealing | Phase::Verifying) {
            return;
        }
        if self.config.embedding_model.is_none() {
            // A node without an embedder cannot verify: it waits for peers' signed results.
            return;
        }
        let pending = q.reembeddings.values().any(|s| *s == Reembedding::Pending)
            || q.scores.values().any(|s| *s == Scoring::Pending);
        let all_revealed = q.commits.keys().all(|n| q.reveals.contains_key(n));
        let ready = match q.phase {
            Phase::Revealing => all_revealed && !pending,
            Phase::Verifying => !pending || force,
            _ => false,
        };
        if !ready {
            return;
        }
        // Before deciding, honest nodes make sure they decide over the same inputs: each sends
        // what it holds (its inventory) and fetches what others list and it lacks, until every
        // committer's inventory is in and nothing listed is missing, or the reconcile window
        // ends. Only a node whose result would count sends one.
        let now = self.now;
        if q.reconcile_deadline.is_none() {
            q.reconcile_deadline = Some(now.saturating_add(self.config.reconcile_window_ms));
        }
        let reconcile_over = q.reconcile_deadline.is_some_and(|d| now > d);
        if !(force || reconcile_over || q.reconciled(&self.node)) {
            // Waiting: the inventory goes out again every RECONCILE_RETRY_MS (a lost copy must
            // not leave a peer deciding without it), and what is missing is asked for again.
            Self::send_inventory(q, &self.node, now, out);
            if let Some(peer) = q.missing() {
                self.ask_sync_every(now, peer, id, RECONCILE_RETRY_MS, out);
            }
            return;
        }
        // Deciding at once (everything already reconciled): the others still need this node's
        // inventory to decide over the same inputs.
        if q.inventory_sent_at.is_none() {
            Self::send_inventory(q, &self.node, now, out);
        }
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        let mut params = match ConsensusParams::from_frame(&q.request.frame) {
            Ok(p) => p,
            Err(e) => {
                Self::fail(q, QuorumFailure::Invalid(e.to_string()), out);
                return;
            }
        };
        if let Some(t) = self.config.reembed_tolerance_bits {
            params = params.with_reembed_tolerance(t);
        }
        // The threshold counts the committee, never whoever showed up; the selection follows
        // the committee's draw order, which nobody can steer by withholding a reveal.
        if let Some(c) = &q.committee {
            params = params
                .with_committee_size(c.len() as u32)
                .with_selection_order(c.members.clone());
        }
        params = params.with_config_digest(crate::membership::config_digest(
            &q.request,
            q.committee.as_ref(),
        ));
        let commits: Vec<Commit> = q
            .commits
            .values()
            .flatten()
            .map(|c| c.commit.clone())
            .collect();
        let submissions: Vec<Submission> = q
            .reveals
            .values()
            .flatten()
            .map(|r| {
                let opened = r.reveal.commitment();
                let reembedding = match q.reembeddings.get(&(r.reveal.node, opened)) {
                    Some(Reembedding::Done(e)) => e.clone(),
                    _ => None,
                };
                // The second check: this node's own judgement where it made one, else the
                // verdicts of the committee members that replayed it.
                let sampling_fault = match q.scores.get(&(r.reveal.node, opened)) {
                    Some(Scoring::Failed(f)) => Some(f.clone()),
                    Some(Scoring::Passed) => None,
                    // Never on others' word against this node's own answer.
                    _ if r.reveal.node == self.node => None,
                    Some(Scoring::Pending | Scoring::Unchecked) | None => {
                        q.committee_sampling_fault(&r.reveal.node, &opened)
                    }
                };
                Submission {
                    reveal: r.reveal.clone(),
                    reembedding,
                    sampling_fault,
                }
            })
            .collect();
        let outcome = match evaluate(&id, &params, &commits, &submissions) {
            Ok(o) => o,
            Err(e) => {
                Self::fail(q, QuorumFailure::Invalid(e.to_string()), out);
                return;
            }
        };
        for rej in &outcome.rejected {
            Self::announce_rejection(q, rej.node, rej.inference_id, rej.reason.clone(), out);
        }
        let outcome = Arc::new(outcome);
        q.outcome = Some(outcome.clone());
        match &outcome.decision {
            Decision::Agreed {
                result_digest,
                selected,
                ..
            } => {
                // What this node checked of the selected answer: its declared weights, and
                // whether its sampling replayed here.
                let chosen = q.reveals.get(&selected.node).and_then(|rs| {
                    rs.iter()
                        .find(|r| r.reveal.inference_id == selected.inference_id)
                });
                let weights = chosen.and_then(|r| r.weights.clone());
                let replayed = selected.node == self.node
                    || chosen.is_some_and(|r| {
                        q.scores.get(&(r.reveal.node, r.reveal.commitment()))
                            == Some(&Scoring::Passed)
                    });
                let signed = ConsensusResultMsg::sign(&self.key, &outcome)
                    .expect("an agreed outcome has a result to sign")
                    .with_checks(weights, replayed);
                info!(
                    request = %id.short(),
                    accepted = outcome.accepted.len(),
                    committed = outcome.committed,
                    result = %result_digest.short(),
                    "consensus reached"
                );
                q.phase = Phase::Completed;
                q.signed = Some(signed.clone());
                out.push(Action::Persist(StoreOp::Outcome {
                    request_id: id,
                    outcome: (*outcome).clone(),
                    signed: Some(signed.clone()),
                }));
                // Only the committee's signatures count: a node outside it keeps its result
                // to itself (it still verified, for its host).
                if q.admits(&self.node) {
                    Self::attest(q, signed.clone(), out);
                    out.push(Action::Broadcast(Message::ConsensusResult(signed)));
                }
                for (node, theirs) in &q.peer_results {
                    if theirs != result_digest {
                        out.push(Action::Emit(NodeEvent::Disagreement {
                            request_id: id,
                            node: *node,
                            ours: *result_digest,
                            theirs: *theirs,
                        }));
                    }
                }
                out.push(Action::Emit(NodeEvent::Completed {
                    request_id: id,
                    outcome,
                }));
            }
            Decision::Failed(reason) => {
                let reason = QuorumFailure::Consensus(reason.clone());
                info!(request = %id.short(), %reason, "consensus failed");
                out.push(Action::Persist(StoreOp::Outcome {
                    request_id: id,
                    outcome: (*outcome).clone(),
                    signed: None,
                }));
                Self::fail(q, reason, out);
            }
        }
    }
}
