//! State sync between nodes: each node logs the original wire bytes of every request, commit,
//! reveal and result it saw, and relays them to a peer that asks ([`Message::SyncRequest`]); the
//! asker verifies each relayed message on its own signature and judges it by its signed time.
//!
//! Sync travels over the direct channel only, both ways, and is answered only to the asker
//! (never broadcast), only for requests the node logged; a response is taken only from a peer
//! this node asked for that request, within [`SYNC_RESPONSE_WINDOW_MS`]. Unsolicited responses
//! are dropped before their relayed messages' signatures are checked.

use tracing::{debug, warn};

use super::driver::Driver;
use crate::coordinator::Input;
use crate::coordinator::{insert_evicting_oldest, SyncedMessage, RECONCILE_RETRY_MS};
use crate::envelope::{EnvelopeError, MAX_MESSAGE_SIZE};
use crate::protocol::Message;
use crate::{NodeId, RequestId};

/// Log of wire messages per request, bounded in requests, in messages and bytes per request
/// (what one sync response can carry), and in bytes in all (the oldest request goes first).
#[derive(Default)]
pub(super) struct SyncLog {
    entries: std::collections::HashMap<RequestId, (usize, Vec<Vec<u8>>)>,
    order: std::collections::VecDeque<RequestId>,
    bytes: usize,
}

impl SyncLog {
    const MAX_REQUESTS: usize = 1_024;
    pub(super) const MAX_PER_REQUEST: usize = 512;
    /// Bytes logged per request: one sync response's worth.
    const MAX_BYTES_PER_REQUEST: usize = MAX_MESSAGE_SIZE;
    /// Bytes logged in all.
    pub(super) const MAX_BYTES: usize = 64 * 1024 * 1024;

    pub(super) fn record(&mut self, id: RequestId, bytes: &[u8]) {
        if !self.entries.contains_key(&id) {
            if self.order.len() >= Self::MAX_REQUESTS {
                self.evict_oldest();
            }
            self.order.push_back(id);
            self.entries.insert(id, (0, Vec::new()));
        }
        let Some((used, list)) = self.entries.get_mut(&id) else {
            return;
        };
        if list.len() >= Self::MAX_PER_REQUEST
            || *used + bytes.len() > Self::MAX_BYTES_PER_REQUEST
            || list.iter().any(|b| b == bytes)
        {
            return;
        }
        *used += bytes.len();
        list.push(bytes.to_vec());
        self.bytes += bytes.len();
        while self.bytes > Self::MAX_BYTES && self.order.len() > 1 {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(old) = self.order.pop_front() {
            if let Some((used, _)) = self.entries.remove(&old) {
                self.bytes -= used;
            }
        }
    }

    /// Bytes logged in all.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages for `id`, as many as fit in one wire message.
    fn response(&self, id: &RequestId) -> Vec<Vec<u8>> {
        let budget = MAX_MESSAGE_SIZE - 16 * 1024;
        let mut used = 0;
        let mut out = Vec::new();
        for b in self.entries.get(id).into_iter().flat_map(|(_, list)| list) {
            if used + b.len() + 8 > budget {
                break;
            }
            used += b.len() + 8;
            out.push(b.clone());
        }
        out
    }
}

/// How long after asking a peer for a request's messages its response is taken.
pub(super) const SYNC_RESPONSE_WINDOW_MS: u64 = 15_000;
/// Most outstanding sync requests remembered (the oldest is forgotten first).
const MAX_SYNC_EXPECTED: usize = 4_096;

impl Driver {
    /// Asks `peer` for the messages of `id` over the direct channel; a peer this node is not
    /// connected to (the signer of a gossiped message, say) is replaced by a connected one.
    pub(super) fn ask_sync(&mut self, peer: NodeId, id: RequestId) {
        let connected = self.transport.peers();
        let target = if connected.contains(&peer) {
            peer
        } else {
            use rand::seq::SliceRandom;
            match connected.choose(&mut rand::thread_rng()) {
                Some(p) => *p,
                None => {
                    debug!(request = %id.short(), "no connected peer to ask for sync");
                    return;
                }
            }
        };
        let now = self.clock.now_ms();
        if self.send(target, Message::SyncRequest { request_id: id }) {
            insert_evicting_oldest(
                &mut self.sync_expected,
                (target, id),
                now,
                MAX_SYNC_EXPECTED,
            );
        }
    }

    /// Answers a peer's sync request with the wire messages logged for the request (at most
    /// once per [`RECONCILE_RETRY_MS`] per peer and request).
    pub(super) fn answer_sync(&mut self, peer: NodeId, id: RequestId, now: u64) {
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
        );
    }

    /// Verifies each relayed message on its own signature and feeds them as one batch, when
    /// this node asked `from` for `id` (an unsolicited response is dropped unread).
    pub(super) async fn on_sync_response(
        &mut self,
        from: NodeId,
        id: RequestId,
        envelopes: Vec<Vec<u8>>,
        now: u64,
    ) {
        match self.sync_expected.remove(&(from, id)) {
            Some(asked) if now <= asked.saturating_add(SYNC_RESPONSE_WINDOW_MS) => {}
            _ => {
                self.dropped += 1;
                debug!(request = %id.short(), peer = %from.short(), "dropping a sync response this node did not ask for");
                return;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_in_bytes_per_request_and_in_all() {
        let mut log = SyncLog::default();
        let big = vec![7u8; 200 * 1024];
        // Per request: one sync response's worth (512 KiB): two of 200 KiB, not three.
        for i in 0..3u8 {
            let mut b = big.clone();
            b[0] = i;
            log.record(RequestId([1; 32]), &b);
        }
        assert_eq!(log.bytes(), 2 * big.len());
        // In all: 64 MiB, the oldest requests forgotten first.
        for r in 0..400u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&r.to_be_bytes());
            log.record(RequestId(id), &big);
        }
        assert!(log.bytes() <= SyncLog::MAX_BYTES, "{}", log.bytes());
        assert!(log.response(&RequestId([1; 32])).is_empty());
        let mut last = [0u8; 32];
        last[..4].copy_from_slice(&399u32.to_be_bytes());
        assert_eq!(log.response(&RequestId(last)).len(), 1);
    }
}
