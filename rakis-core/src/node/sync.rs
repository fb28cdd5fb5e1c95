//! State sync between nodes: each node logs the original wire bytes of every request, commit,
//! reveal and result it saw, and relays them to a peer that asks ([`Message::SyncRequest`]); the
//! asker verifies each relayed message on its own signature and judges it by its signed time.

use tracing::{debug, warn};

use super::driver::Driver;
use crate::coordinator::Input;
use crate::coordinator::{SyncedMessage, RECONCILE_RETRY_MS};
use crate::envelope::{EnvelopeError, MAX_MESSAGE_SIZE};
use crate::protocol::Message;
use crate::{NodeId, RequestId};

/// Bounded log of wire messages per request.
#[derive(Default)]
pub(super) struct SyncLog {
    entries: std::collections::HashMap<RequestId, Vec<Vec<u8>>>,
    order: std::collections::VecDeque<RequestId>,
}

impl SyncLog {
    const MAX_REQUESTS: usize = 1_024;
    pub(super) const MAX_PER_REQUEST: usize = 512;

    pub(super) fn record(&mut self, id: RequestId, bytes: &[u8]) {
        if !self.entries.contains_key(&id) {
            if self.order.len() >= Self::MAX_REQUESTS {
                if let Some(old) = self.order.pop_front() {
                    self.entries.remove(&old);
                }
            }
            self.order.push_back(id);
        }
        let list = self.entries.entry(id).or_default();
        if list.len() < Self::MAX_PER_REQUEST && !list.iter().any(|b| b == bytes) {
            list.push(bytes.to_vec());
        }
    }

    /// Messages for `id`, as many as fit in one wire message.
    fn response(&self, id: &RequestId) -> Vec<Vec<u8>> {
        let budget = MAX_MESSAGE_SIZE - 16 * 1024;
        let mut used = 0;
        let mut out = Vec::new();
        for b in self.entries.get(id).into_iter().flatten() {
            if used + b.len() + 8 > budget {
                break;
            }
            used += b.len() + 8;
            out.push(b.clone());
        }
        out
    }
}

impl Driver {
    /// Answers a peer's sync request with the wire messages logged for the request (at most
    /// once per [`RECONCILE_RETRY_MS`] per peer and request).
    pub(super) async fn answer_sync(&mut self, peer: NodeId, id: RequestId, now: u64) {
        let key = (peer, id);
        if let Some(last) = self.sync_answered.get(&key) {
            if now < last.saturating_add(RECONCILE_RETRY_MS) {
                return;
            }
        }
        let envelopes = self.sync_log.response(&id);
        if envelopes.is_empty() {
            return;
        }
        if self.sync_answered.len() >= 4_096 {
            self.sync_answered.clear();
        }
        self.sync_answered.insert(key, now);
        debug!(request = %id.short(), peer = %peer.short(), messages = envelopes.len(), "answering a sync request");
        self.send(
            peer,
            Message::SyncResponse {
                request_id: id,
                envelopes,
            },
        )
        .await;
    }

    /// Verifies each relayed message on its own signature and feeds them as one batch.
    pub(super) async fn on_sync_response(
        &mut self,
        from: NodeId,
        id: RequestId,
        envelopes: Vec<Vec<u8>>,
        now: u64,
    ) {
        let mut batch = Vec::new();
        for bytes in envelopes.iter().take(SyncLog::MAX_PER_REQUEST) {
            match self.inbox.accept_relayed(bytes, now) {
                Ok(v)
                    if v.envelope.message.request_id() == Some(id)
                        && v.envelope.message.is_syncable() =>
                {
                    self.sync_log.record(id, bytes);
                    batch.push(SyncedMessage {
                        from: v.envelope.sender,
                        message: v.envelope.message,
                        sent_at_ms: v.envelope.timestamp_ms,
                    });
                }
                Ok(_) => {
                    self.dropped += 1;
                    warn!(peer = %from.short(), "sync response relayed a message of another request or kind");
                }
                Err(EnvelopeError::Duplicate) => {}
                Err(e) => {
                    self.dropped += 1;
                    warn!(peer = %from.short(), error = %e, "sync response relayed an invalid message");
                }
            }
        }
        debug!(request = %id.short(), peer = %from.short(), relayed = batch.len(), "sync response");
        if !batch.is_empty() {
            self.feed(Input::Synced(batch)).await;
        }
    }
}
