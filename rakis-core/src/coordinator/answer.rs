//! Taking requests, and this node's own answer: generation, embedding, storing, committing.

use rand::RngCore;
use tracing::{debug, info, warn};

use super::quorum::{OwnState, Quorum, Reembedding};
use super::*;
use crate::embedder::EmbedError;
use crate::engine::{EngineError, Generation, GenerationJob};
use crate::events::NodeEvent;
use crate::protocol::{CommitMsg, InferenceRequest, Message, Origin};
use crate::store::{OwnOutput, StoreOp};
use crate::{BinaryEmbedding, Commit, InferenceId, NodeId, RequestId, Salt};

impl Coordinator {
    /// Returns whether the request was new and valid.
    pub(super) fn on_request(
        &mut self,
        now: u64,
        request: InferenceRequest,
        from: Option<NodeId>,
        out: &mut Vec<Action>,
    ) -> bool {
        self.on_request_at(now, request, from, false, out)
    }

    pub(super) fn on_request_at(
        &mut self,
        now: u64,
        request: InferenceRequest,
        from: Option<NodeId>,
        relayed: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let id = request.id();
        if self.quorums.contains_key(&id) {
            return false;
        }
        if let Err(e) = request.validate() {
            warn!(request = %id.short(), error = %e, "dropping invalid request");
            return false;
        }
        if let (Some(from), Origin::Peer) = (from, &request.origin) {
            if request.requester != Some(from) {
                warn!(request = %id.short(), "dropping peer request not signed by its requester");
                return false;
            }
        }
        // A chain request's origin (its block hash seeds the committee) is not covered by its
        // id: with a membership, a node takes chain requests only from its own chain reading,
        // so that a peer's copy with a chosen block hash cannot choose the committee.
        if let (Some(from), Origin::Chain { .. }, Some(_)) =
            (from, &request.origin, &self.membership)
        {
            debug!(request = %id.short(), from = %from.short(), "ignoring a chain request relayed by a peer");
            out.push(Action::ignored(
                id,
                from,
                IgnoreReason::ChainRequestFromPeer,
            ));
            return false;
        }
        if let Some(from) = from {
            if let Some(reason) = self.over_requester_limits(now, &request) {
                warn!(request = %id.short(), from = %from.short(), %reason, "refusing a peer's request");
                out.push(Action::ignored(
                    id,
                    request.requester.unwrap_or(from),
                    reason,
                ));
                return false;
            }
        }
        // A relayed request is still useful to verify until its reveal window closes.
        let last_useful = if relayed {
            request
                .deadline_ms()
                .saturating_add(self.config.reveal_window_ms)
                .saturating_add(self.config.verify_grace_ms)
        } else {
            request.deadline_ms()
        };
        if now > last_useful {
            debug!(request = %id.short(), "ignoring request past its deadline");
            return false;
        }
        if self.quorums.len() >= self.config.max_open_requests {
            self.forget_closed(now);
        }
        if self.quorums.len() >= self.config.max_open_requests {
            warn!(request = %id.short(), "too many open requests; refusing");
            return false;
        }
        let committee = match self.committee_for(&request) {
            Ok(c) => c,
            Err(reason) => {
                warn!(request = %id.short(), %reason, "dropping a request this node cannot place in an epoch");
                out.push(Action::ignored(
                    id,
                    request.requester.unwrap_or(self.node),
                    reason,
                ));
                return false;
            }
        };
        let mut q = self.new_quorum(request.clone(), committee);
        if from.is_some() && !self.state_budget_allows(now, &request, q.reserved) {
            warn!(request = %id.short(), reserved = self.reserved_bytes, needs = q.reserved, "state budget spent; refusing a peer's request");
            out.push(Action::ignored(
                id,
                request.requester.or(from).unwrap_or(self.node),
                IgnoreReason::StateBudget,
            ));
            return false;
        }
        // Only the request's committee answers (everyone, in an open network).
        let answer =
            self.model_for(&request).is_some() && self.config.workers > 0 && q.admits(&self.node);
        if answer {
            q.own = OwnState::Queued;
            self.queue.insert((q.deadline, id));
        }
        info!(request = %id.short(), answer, deadline = q.deadline, "request received");
        self.reserved_bytes += q.reserved;
        self.quorums.insert(id, q);
        out.push(Action::Persist(StoreOp::Request(request)));
        out.push(Action::Emit(NodeEvent::RequestReceived {
            request_id: id,
            will_answer: answer,
        }));
        if let Some(orphans) = self.orphans.take(&id) {
            debug!(request = %id.short(), messages = orphans.len(), "replaying messages that came before the request");
            if self.deferred.is_some() {
                // Inside a batch: after the batch's own commits.
                self.released.extend(orphans);
            } else {
                self.on_synced(now, orphans, out);
            }
        }
        true
    }

    /// Why a request from a peer exceeds what this node takes of one requester, if it does: a
    /// deadline too far ahead, or too many open requests of the same requester.
    fn over_requester_limits(&self, now: u64, request: &InferenceRequest) -> Option<IgnoreReason> {
        if request.deadline_ms() > now.saturating_add(self.config.max_request_time_ms) {
            return Some(IgnoreReason::DeadlineTooFar);
        }
        let requester = Requester::of(request);
        let open = self
            .quorums
            .values()
            .filter(|q| !matches!(q.phase, Phase::Completed | Phase::Failed(_)))
            .filter(|q| Requester::of(&q.request) == requester)
            .count();
        (open >= self.config.max_open_per_requester).then_some(IgnoreReason::RequesterOverLimit)
    }

    /// Whether a peer's request reserving `reserved` bytes fits the state budget: in all, and
    /// for its requester, at most a quarter of it (so that one requester cannot fill it). Closed
    /// requests are forgotten first when it does not.
    fn state_budget_allows(
        &mut self,
        now: u64,
        request: &InferenceRequest,
        reserved: usize,
    ) -> bool {
        let requester = Requester::of(request);
        let fits = |c: &Self| {
            let mine: usize = c
                .quorums
                .values()
                .filter(|q| Requester::of(&q.request) == requester)
                .map(|q| q.reserved)
                .sum();
            c.reserved_bytes + reserved <= c.config.max_state_bytes
                && mine + reserved <= c.config.max_state_bytes / 4
        };
        if fits(self) {
            return true;
        }
        self.forget_closed(now);
        fits(self)
    }

    /// The queued request to answer next: the one of the requester served least in the current
    /// fairness window, earliest deadline first among equals. A requester that floods the node
    /// gets its turn after every other requester's, never instead of them.
    fn next_queued(&mut self, now: u64) -> Option<(u64, RequestId)> {
        if now >= self.served_since.saturating_add(FAIRNESS_WINDOW_MS) {
            self.served.clear();
            self.served_since = now;
        }
        let pick = self
            .queue
            .iter()
            .min_by_key(|(deadline, id)| {
                let served = self
                    .quorums
                    .get(id)
                    .and_then(|q| self.served.get(&Requester::of(&q.request)))
                    .copied()
                    .unwrap_or(0);
                (served, *deadline)
            })
            .copied()?;
        self.queue.remove(&pick);
        Some(pick)
    }

    /// Forgets closed (completed or failed) requests that nothing can bring back any more: past
    /// the time until which a relayed copy of the request is still taken (see `on_request_at`),
    /// and not holding a generation worker. Their records stay in the store. Without this,
    /// closed requests would count against `max_open_requests` for ever.
    pub(super) fn forget_closed(&mut self, now: u64) {
        let horizon = self
            .config
            .reveal_window_ms
            .saturating_add(self.config.verify_grace_ms);
        let before = self.quorums.len();
        let mut released = 0;
        self.quorums.retain(|_, q| {
            let forget = matches!(q.phase, Phase::Completed | Phase::Failed(_))
                && q.own != OwnState::Generating
                && now > q.deadline.saturating_add(horizon);
            if forget {
                released += q.reserved;
            }
            !forget
        });
        self.reserved_bytes -= released;
        let forgotten = before - self.quorums.len();
        if forgotten > 0 {
            debug!(forgotten, "closed requests forgotten to make room");
        }
    }

    pub(super) fn schedule(&mut self, now: u64, out: &mut Vec<Action>) {
        while self.busy < self.config.workers {
            let Some((deadline, id)) = self.next_queued(now) else {
                break;
            };
            let Some(model) = self
                .quorums
                .get(&id)
                .and_then(|q| self.model_for(&q.request))
            else {
                continue;
            };
            let q = self
                .quorums
                .get_mut(&id)
                .expect("queued request is tracked");
            if !matches!(q.phase, Phase::Open | Phase::Committing)
                || now.saturating_add(self.generation_estimate_ms) > deadline
            {
                q.own = OwnState::Skipped;
                out.push(Action::Emit(NodeEvent::AnswerSkipped {
                    request_id: id,
                    reason: format!(
                        "cannot finish before the deadline (estimate {} ms, {} ms left)",
                        self.generation_estimate_ms,
                        deadline.saturating_sub(now)
                    ),
                }));
                continue;
            }
            q.own = OwnState::Generating;
            self.busy += 1;
            *self.served.entry(Requester::of(&q.request)).or_default() += 1;
            // The VRF output of this node's key over the request: a seed it cannot choose.
            let (_, seed) = self.key.sampling_seed(&q.id);
            out.push(Action::Generate(GenerationJob::for_request(
                &q.request, &model, seed,
            )));
        }
    }

    pub(super) fn skip(q: &mut Quorum, reason: String, out: &mut Vec<Action>) {
        q.own = OwnState::Skipped;
        out.push(Action::Emit(NodeEvent::AnswerSkipped {
            request_id: q.id,
            reason,
        }));
    }

    pub(super) fn on_generated(
        &mut self,
        now: u64,
        id: RequestId,
        result: Result<Generation, EngineError>,
        out: &mut Vec<Action>,
    ) {
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        if q.own != OwnState::Generating {
            return;
        }
        self.busy = self.busy.saturating_sub(1);
        match result {
            Ok(g) => {
                if g.tokens_per_sec > 0.0 {
                    let took = (g.tokens as f32 / g.tokens_per_sec * 1000.0) as u64;
                    self.generation_estimate_ms = (self.generation_estimate_ms * 3 + took) / 4;
                }
                out.push(Action::Emit(NodeEvent::Generated {
                    request_id: id,
                    tokens: g.tokens,
                    tokens_per_sec: g.tokens_per_sec,
                }));
                if now > q.deadline {
                    Self::skip(q, "generation finished after the deadline".into(), out);
                    return;
                }
                if g.text.len() > q.request.max_output_bytes() {
                    // Peers would refuse it (`IgnoreReason::OutputTooLong`).
                    Self::skip(
                        q,
                        format!(
                            "output of {} bytes is longer than the request allows",
                            g.text.len()
                        ),
                        out,
                    );
                    return;
                }
                out.push(Action::Embed {
                    request_id: id,
                    purpose: EmbedPurpose::Own,
                    text: g.text.clone(),
                });
                q.own = OwnState::Embedding { generation: g };
            }
            Err(e) => Self::skip(q, format!("generation failed: {e}"), out),
        }
    }

    pub(super) fn on_embedded(
        &mut self,
        now: u64,
        id: RequestId,
        purpose: EmbedPurpose,
        result: Result<BinaryEmbedding, EmbedError>,
        out: &mut Vec<Action>,
    ) {
        let embedding_model = self.config.embedding_model.clone().unwrap_or_default();
        let Some(q) = self.quorums.get_mut(&id) else {
            return;
        };
        match purpose {
            EmbedPurpose::Own => {
                let OwnState::Embedding { generation } = &q.own else {
                    return;
                };
                let embedding = match result {
                    Ok(e) => e,
                    Err(e) => return Self::skip(q, format!("embedding failed: {e}"), out),
                };
                if now > q.deadline {
                    return Self::skip(q, "embedding finished after the deadline".into(), out);
                }
                let mut salt = [0u8; 32];
                self.rng.fill_bytes(&mut salt);
                let mut inference_id = [0u8; 32];
                self.rng.fill_bytes(&mut inference_id);
                let salt = Salt(salt);
                let inference_id = InferenceId(inference_id);
                let commitment = crate::commitment(
                    &id,
                    &self.node,
                    &inference_id,
                    &generation.text,
                    &embedding,
                    &salt,
                );
                let own = OwnOutput {
                    request_id: id,
                    inference_id,
                    model: generation.model.clone(),
                    output: generation.text.clone(),
                    embedding,
                    embedding_model,
                    salt,
                    commitment,
                    token_ids: generation.token_ids.clone(),
                    ending: match generation.finish {
                        crate::FinishReason::Eos => crate::consensus::sampling::Ending::Stop,
                        _ => crate::consensus::sampling::Ending::Limit,
                    },
                };
                q.own = OwnState::Persisting(own.clone());
                out.push(Action::PersistOwnOutput(own));
            }
            EmbedPurpose::Reembed { node, commitment } => {
                if let Some(state) = q.reembeddings.get_mut(&(node, commitment)) {
                    if *state == Reembedding::Pending {
                        if let Err(e) = &result {
                            warn!(request = %id.short(), node = %node.short(), error = %e, "re-embedding failed");
                        }
                        *state = Reembedding::Done(result.ok());
                    }
                }
                self.try_finalize(id, false, out);
            }
        }
    }

    pub(super) fn on_own_persisted(
        &mut self,
        now: u64,
        id: RequestId,
        result: Result<(), String>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let node = self.node;
        let Some(q) = self.quorums.get_mut(&id) else {
            return out;
        };
        let OwnState::Persisting(own) = &q.own else {
            return out;
        };
        let own = own.clone();
        if let Err(e) = result {
            Self::skip(q, format!("could not store own output: {e}"), &mut out);
            return out;
        }
        if now > q.deadline || !matches!(q.phase, Phase::Open | Phase::Committing) {
            Self::skip(q, "own output stored after the deadline".into(), &mut out);
            return out;
        }
        let msg = CommitMsg::signed(
            &self.key,
            &self.network,
            Commit {
                request_id: id,
                node,
                inference_id: own.inference_id,
                commitment: own.commitment,
            },
            own.model.clone(),
        );
        q.commits.entry(node).or_default().push(msg.clone());
        q.phase = Phase::Committing;
        q.own = OwnState::Committed(own.clone());
        info!(request = %id.short(), commitment = %own.commitment.short(), "committed");
        out.push(Action::Persist(StoreOp::Commit(msg.clone())));
        out.push(Action::Broadcast(Message::Commit(msg)));
        out.push(Action::Emit(NodeEvent::Committed {
            request_id: id,
            inference_id: own.inference_id,
        }));
        out
    }
}
