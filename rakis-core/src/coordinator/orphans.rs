//! Messages about requests not known yet (gossip gives no order; a late joiner hears reveals
//! first), kept until the request arrives, and reveals parked while a quorum looks failed.
//!
//! Anyone can send messages about requests that do not exist, so the store is bounded in
//! requests, in messages per request, in time, and in bytes: per sender (so that one key cannot
//! take the room of the others) and in all.

use std::collections::BTreeMap;

use super::SyncedMessage;
use crate::protocol::Message;
use crate::{NodeId, RequestId};

/// Most requests with orphan messages kept.
pub(super) const MAX_REQUESTS: usize = 256;
/// Most orphan messages kept per request.
pub(super) const MAX_PER_REQUEST: usize = 64;
/// How long orphan messages are kept.
pub(super) const TTL_MS: u64 = 120_000;
/// Most bytes (encoded) of orphan messages kept from one sender.
pub const MAX_ORPHAN_BYTES_PER_SENDER: usize = 1024 * 1024;
/// Most bytes (encoded) of orphan messages kept in all.
pub const MAX_ORPHAN_BYTES: usize = 16 * 1024 * 1024;

/// The bounded store of orphan messages.
#[derive(Debug, Default)]
pub(super) struct Orphans {
    by_request: BTreeMap<RequestId, Vec<(SyncedMessage, usize)>>,
    by_sender: BTreeMap<NodeId, usize>,
    bytes: usize,
}

impl Orphans {
    /// Keeps `message` of `from` about `id`; returns whether it was kept (it is not when a
    /// bound is reached).
    pub(super) fn keep(&mut self, now: u64, from: NodeId, id: RequestId, message: Message) -> bool {
        if !self.by_request.contains_key(&id) && self.by_request.len() >= MAX_REQUESTS {
            return false;
        }
        if self
            .by_request
            .get(&id)
            .is_some_and(|l| l.len() >= MAX_PER_REQUEST)
        {
            return false;
        }
        let size =
            postcard::serialize_with_flavor(&message, postcard::ser_flavors::Size::default())
                .unwrap_or(usize::MAX);
        let sender = self.by_sender.get(&from).copied().unwrap_or(0);
        if sender.saturating_add(size) > MAX_ORPHAN_BYTES_PER_SENDER
            || self.bytes.saturating_add(size) > MAX_ORPHAN_BYTES
        {
            return false;
        }
        *self.by_sender.entry(from).or_default() += size;
        self.bytes += size;
        self.by_request.entry(id).or_default().push((
            SyncedMessage {
                from,
                message,
                sent_at_ms: now,
            },
            size,
        ));
        true
    }

    /// Takes the messages kept about `id`.
    pub(super) fn take(&mut self, id: &RequestId) -> Option<Vec<SyncedMessage>> {
        let list = self.by_request.remove(id)?;
        Some(
            list.into_iter()
                .map(|(m, size)| {
                    self.release(&m.from, size);
                    m
                })
                .collect(),
        )
    }

    /// Forgets the requests whose first message is older than [`TTL_MS`].
    pub(super) fn expire(&mut self, now: u64) {
        let old: Vec<RequestId> = self
            .by_request
            .iter()
            .filter(|(_, list)| {
                list.first()
                    .is_none_or(|(m, _)| m.sent_at_ms.saturating_add(TTL_MS) <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.take(&id);
        }
    }

    fn release(&mut self, from: &NodeId, size: usize) {
        self.bytes -= size;
        if let Some(b) = self.by_sender.get_mut(from) {
            *b -= size;
            if *b == 0 {
                self.by_sender.remove(from);
            }
        }
    }

    /// Bytes kept in all.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::Commit;
    use crate::protocol::CommitMsg;
    use crate::{InferenceId, NodeKey};

    fn commit(from: NodeId, id: RequestId, model_bytes: usize) -> Message {
        Message::Commit(CommitMsg {
            commit: Commit {
                request_id: id,
                node: from,
                inference_id: InferenceId([1; 32]),
                commitment: crate::consensus::Commitment([2; 32]),
            },
            model: "m".repeat(model_bytes),
            statement: crate::Signature([0; 65]),
        })
    }

    #[test]
    fn bounded_per_sender_and_in_all_and_released_when_taken() {
        let mut o = Orphans::default();
        let a = NodeKey::from_seed(1).node_id();
        let id = |i: u8| RequestId([i; 32]);
        // One sender: three 300 KiB messages fit its 1 MiB, a fourth does not.
        for i in 0..3 {
            assert!(o.keep(0, a, id(i), commit(a, id(i), 300 * 1024)));
        }
        assert!(!o.keep(0, a, id(3), commit(a, id(3), 300 * 1024)));
        let held = o.bytes();
        assert!(held > 900 * 1024 && held <= MAX_ORPHAN_BYTES_PER_SENDER);
        // In all: 16 MiB, whoever sends.
        let mut kept = 0;
        for s in 0..40u64 {
            let from = NodeKey::from_seed(100 + s).node_id();
            for i in 0..3u8 {
                let r = RequestId([10 + (s as u8) * 3 + i; 32]);
                kept += usize::from(o.keep(0, from, r, commit(from, r, 300 * 1024)));
            }
        }
        assert!(
            kept < 120 && o.bytes() <= MAX_ORPHAN_BYTES,
            "{kept} kept, {} bytes",
            o.bytes()
        );
        // Taking a request's messages releases their bytes; expiry releases the rest.
        let before = o.bytes();
        assert_eq!(o.take(&id(0)).map(|l| l.len()), Some(1));
        assert!(o.bytes() < before);
        o.expire(TTL_MS);
        assert_eq!(o.bytes(), 0);
    }
}
