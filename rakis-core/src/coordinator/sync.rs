//! Asking peers for missed messages, orphans (messages before their request), relayed batches.

use std::collections::BTreeSet;

use tracing::debug;

use super::*;
use crate::protocol::Message;
use crate::{NodeId, RequestId};

/// Records `key` at time `at` in `map`, first forgetting the oldest entry when `map` holds
/// `max` already.
pub(crate) fn insert_evicting_oldest<K: Ord + Copy>(
    map: &mut BTreeMap<K, u64>,
    key: K,
    at: u64,
    max: usize,
) {
    if map.len() >= max {
        if let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
            map.remove(&oldest);
        }
    }
    map.insert(key, at);
}

impl Coordinator {
    /// Asks `peer` for what it saw of `id`, at most once per [`SYNC_RETRY_MS`] per request.
    pub(super) fn ask_sync(
        &mut self,
        now: u64,
        peer: NodeId,
        id: RequestId,
        out: &mut Vec<Action>,
    ) {
        self.ask_sync_every(now, peer, id, SYNC_RETRY_MS, out)
    }

    /// [`ask_sync`](Self::ask_sync) at most once per `gap` ms for the request.
    pub(super) fn ask_sync_every(
        &mut self,
        now: u64,
        peer: NodeId,
        id: RequestId,
        gap: u64,
        out: &mut Vec<Action>,
    ) {
        if peer == self.node {
            return;
        }
        if let Some(last) = self.sync_asked.get(&id) {
            if now < last.saturating_add(gap) {
                return;
            }
        }
        insert_evicting_oldest(&mut self.sync_asked, id, now, MAX_SYNC_TRACKED);
        debug!(request = %id.short(), peer = %peer.short(), "asking a peer for the request's messages");
        out.push(Action::RequestSync {
            peer,
            request_id: id,
        });
    }

    pub(super) fn on_synced(&mut self, now: u64, batch: Vec<SyncedMessage>, out: &mut Vec<Action>) {
        let outer = self.deferred.is_none();
        if outer {
            self.deferred = Some(BTreeSet::new());
        }
        self.relay_batch(now, batch, out);
        if outer {
            while !self.released.is_empty() {
                let more = std::mem::take(&mut self.released);
                self.relay_batch(now, more, out);
            }
            let touched = self.deferred.take().unwrap_or_default();
            for id in touched {
                self.advance(now, id, out);
                self.try_finalize(id, false, out);
            }
        }
    }

    /// Feeds relayed messages in protocol order (request, commits, reveals, results).
    pub(super) fn relay_batch(
        &mut self,
        now: u64,
        mut batch: Vec<SyncedMessage>,
        out: &mut Vec<Action>,
    ) {
        let rank = |m: &Message| match m {
            Message::Request(_) => 0,
            Message::Commit(_) => 1,
            Message::Reveal(_) => 2,
            _ => 3,
        };
        batch.sort_by_key(|m| rank(&m.message));
        for m in batch {
            match m.message {
                Message::Request(r) => {
                    self.on_request_at(now, r, Some(m.from), true, out);
                }
                Message::Commit(c) => self.on_commit(now, m.from, c, Some(m.sent_at_ms), out),
                Message::Reveal(r) => self.on_reveal(now, m.from, r, Some(m.sent_at_ms), out),
                Message::ConsensusResult(r) => self.on_peer_result(now, m.from, r, out),
                _ => {}
            }
        }
    }

    /// Keeps a live message about an unknown request until the request arrives (bounded: see
    /// [`orphans`](super::orphans)). With a membership, only members' messages are kept: an
    /// outsider's would be ignored once the request is known.
    pub(super) fn keep_orphan(
        &mut self,
        now: u64,
        from: NodeId,
        id: RequestId,
        message: Message,
        out: &mut Vec<Action>,
    ) {
        if let Some(m) = &self.membership {
            if !m.epoch_at(now).is_some_and(|e| e.is_member(&from)) {
                debug!(request = %id.short(), from = %from.short(), "not keeping an outsider's message about an unknown request");
                out.push(Action::ignored(id, from, IgnoreReason::NotInCommittee));
                return;
            }
        }
        if !self.orphans.keep(now, from, id, message) {
            debug!(request = %id.short(), from = %from.short(), "orphan store full for this sender or in all; message dropped");
        }
    }
}
