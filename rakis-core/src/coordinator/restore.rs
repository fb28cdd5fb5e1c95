//! Restoring requests from the store after a restart.

use std::sync::Arc;

use tracing::{info, warn};

use super::quorum::{OwnState, Quorum};
use super::*;
use crate::protocol::RevealMsg;
use crate::store::QuorumRecord;
use crate::Decision;

impl Coordinator {
    /// Restores a request from its stored record after a restart, and returns the actions that
    /// bring it up to `now_ms` (the driver executes them like any others).
    ///
    /// * A closed request (completed or failed) is reloaded as it was: its outcome is not
    ///   recomputed and nothing is broadcast.
    /// * The own output counts as committed only when its commit was stored (a commit is stored
    ///   before it is broadcast). An own output stored without its commit is committed now if the
    ///   deadline has not passed, and dropped otherwise. An own output whose commitment does not
    ///   open with this node's key (a store of another key) is ignored.
    /// * A node that had not stored an answer yet answers again while the deadline allows.
    /// * Restored reveals of other nodes are checked again: re-embedded (or rejected if they do not
    ///   open their commitment), exactly as when they arrived; rejections already stored are not
    ///   announced twice.
    /// * The request then follows the usual timeline against `now_ms`: past the deadline it
    ///   opens the reveal phase and the node reveals what it committed, but only while the
    ///   reveal window is open; past the window it goes on to consensus with what was stored.
    ///
    /// Restoring a request that is already tracked, or whose stored request is invalid, does
    /// nothing. Feeding [`Input::Tick`] afterwards is harmless.
    pub fn restore(&mut self, record: QuorumRecord, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let id = record.request.id();
        if self.quorums.contains_key(&id) {
            return out;
        }
        if self.quorums.len() >= self.config.max_open_requests {
            warn!(request = %id.short(), "too many open requests; not restoring");
            return out;
        }
        let Some(mut q) = self.rebuild(record) else {
            return out;
        };
        let open = !matches!(q.phase, Phase::Completed | Phase::Failed(_));
        if open {
            if q.own == OwnState::NotAnswering
                && self.config.workers > 0
                && now_ms <= q.deadline
                && self.model_for(&q.request).is_some()
                && q.admits(&self.node)
            {
                q.own = OwnState::Queued;
                self.queue.insert((q.deadline, id));
            }
            let reveals: Vec<RevealMsg> = q.reveals.values().flatten().cloned().collect();
            for r in reveals {
                Self::check_reveal(&mut q, &self.config, &r, &mut out);
            }
        }
        info!(request = %id.short(), phase = ?q.phase, committed = q.committed(), revealed = q.reveals.len(), "request restored");
        let persisting = open && matches!(q.own, OwnState::Persisting(_));
        self.reserved_bytes += q.reserved;
        self.quorums.insert(id, q);
        if persisting {
            out.extend(self.on_own_persisted(now_ms, id, Ok(())));
        }
        // Each step moves the phase forward (at most: revealing, verifying, consensus).
        for _ in 0..4 {
            let before = self.quorums.get(&id).map(|q| q.phase.clone());
            self.advance(now_ms, id, &mut out);
            if self.quorums.get(&id).map(|q| q.phase.clone()) == before {
                break;
            }
        }
        self.schedule(now_ms, &mut out);
        out
    }

    /// The status of a request from its stored record, for a request this coordinator does not
    /// track (for example one that closed before a restart, which is not restored). `None` when
    /// the record is unusable.
    pub fn record_status(&self, record: &QuorumRecord) -> Option<QuorumStatus> {
        self.rebuild(record.clone()).as_ref().map(Self::snapshot)
    }

    /// A request's state rebuilt from its stored record, without side effects. `None` when the
    /// stored request is invalid.
    pub(super) fn rebuild(&self, record: QuorumRecord) -> Option<Quorum> {
        let QuorumRecord {
            request,
            own,
            commits,
            reveals,
            rejections,
            outcome,
            signed,
            failure,
            peer_results,
            submissions: _,
        } = record;
        let id = request.id();
        if let Err(e) = request.validate() {
            warn!(request = %id.short(), error = %e, "stored request is invalid; not restored");
            return None;
        }
        let committee = match self.committee_for(&request) {
            Ok(c) => c,
            Err(reason) => {
                warn!(request = %id.short(), %reason, "stored request has no known epoch; not restored");
                return None;
            }
        };
        let mut q = self.new_quorum(request, committee);
        for c in commits {
            if c.commit.request_id != id {
                continue;
            }
            let list = q.commits.entry(c.commit.node).or_default();
            if !list.contains(&c) && list.len() < 2 {
                list.push(c);
            }
        }
        if !q.commits.is_empty() {
            q.phase = Phase::Committing;
        }
        let own = own.filter(|o| {
            let mine = o.request_id == id
                && crate::commitment(
                    &id,
                    &self.node,
                    &o.inference_id,
                    &o.output,
                    &o.embedding,
                    &o.salt,
                ) == o.commitment;
            if !mine {
                warn!(request = %id.short(), "stored own output does not open with this node's key; ignored");
            }
            mine
        });
        q.own = match own {
            Some(o)
                if q.commits
                    .get(&self.node)
                    .is_some_and(|l| l.iter().any(|c| c.commit.commitment == o.commitment)) =>
            {
                OwnState::Committed(o)
            }
            // Stored but never broadcast: it may still be committed before the deadline.
            Some(o) => OwnState::Persisting(o),
            None => OwnState::NotAnswering,
        };
        for r in reveals {
            if r.reveal.request_id != id || !q.commits.contains_key(&r.reveal.node) {
                continue;
            }
            let list = q.reveals.entry(r.reveal.node).or_default();
            if !list.contains(&r) && list.len() < 2 {
                list.push(r);
            }
        }
        for rej in rejections {
            q.announced.insert((rej.node, rej.inference_id));
        }
        for p in peer_results {
            if p.request_id == id && q.admits(&p.signer) {
                q.peer_results.insert(p.signer, p.result_digest);
                Self::attest(&mut q, p, &mut Vec::new());
            }
        }
        if let Some(outcome) = outcome {
            q.phase = match &outcome.decision {
                Decision::Agreed { .. } => Phase::Completed,
                Decision::Failed(r) => Phase::Failed(QuorumFailure::Consensus(r.clone())),
            };
            q.outcome = Some(Arc::new(outcome));
            if let Some(own) = signed.clone().filter(|_| q.admits(&self.node)) {
                Self::attest(&mut q, own, &mut Vec::new());
            }
            q.signed = signed;
        } else if let Some(f) = failure {
            q.phase = Phase::Failed(f);
        }
        Some(q)
    }
}
