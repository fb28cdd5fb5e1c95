//! Redundant delivery over several transports at once.
//!
//! The original Rakis ran four P2P networks side by side so that a message lost or censored on
//! one still arrived through another. [`RedundantTransport`] does the same over any set of
//! [`Transport`]s (two libp2p networks, libp2p plus an in-memory hub, ...): it broadcasts and
//! sends on every inner transport and delivers each distinct received message once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use rakis_core::{NodeId, Transport, TransportError, TransportEvent};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

/// Default number of message digests remembered for duplicate suppression.
pub const DEFAULT_DEDUP_CAPACITY: usize = 65_536;

/// A [`Transport`] over several inner transports.
///
/// * `broadcast` goes out on every inner transport; it succeeds when at least one succeeds.
/// * `send` goes to the peer on every inner transport that can reach it; it succeeds when at
///   least one succeeds.
/// * `events` merges the inner event streams. A message (identified by the SHA-256 of its
///   bytes) is delivered once, from whichever transport brought it first; the last
///   `dedup_capacity` digests are remembered, so memory stays bounded. A peer is reported
///   connected when its first inner connection appears and disconnected when its last one goes.
/// * `peers` is the union of the inner transports' peers.
///
/// ```
/// use std::sync::Arc;
/// use rakis_core::testing::MemoryHub;
/// use rakis_core::{NodeKey, Transport};
/// use rakis_net::RedundantTransport;
///
/// let (a, b) = (MemoryHub::default(), MemoryHub::default());
/// let key = NodeKey::generate();
/// let both = RedundantTransport::new(vec![
///     Arc::new(a.join(key.node_id())) as Arc<dyn Transport>,
///     Arc::new(b.join(key.node_id())),
/// ]);
/// assert_eq!(both.transports(), 2);
/// ```
pub struct RedundantTransport {
    inner: Vec<Arc<dyn Transport>>,
    dedup_capacity: usize,
    taken: Mutex<bool>,
}

impl std::fmt::Debug for RedundantTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedundantTransport")
            .field("transports", &self.inner.len())
            .field("dedup_capacity", &self.dedup_capacity)
            .finish()
    }
}

impl RedundantTransport {
    /// A combinator over `transports`, remembering [`DEFAULT_DEDUP_CAPACITY`] digests.
    pub fn new(transports: Vec<Arc<dyn Transport>>) -> Self {
        Self::with_dedup_capacity(transports, DEFAULT_DEDUP_CAPACITY)
    }

    /// A combinator remembering the digests of the last `capacity` messages (at least 1).
    pub fn with_dedup_capacity(transports: Vec<Arc<dyn Transport>>, capacity: usize) -> Self {
        RedundantTransport {
            inner: transports,
            dedup_capacity: capacity.max(1),
            taken: Mutex::new(false),
        }
    }

    /// Number of inner transports.
    pub fn transports(&self) -> usize {
        self.inner.len()
    }
}

/// Remembers the digests of recent messages, forgetting the oldest beyond a capacity.
#[derive(Debug)]
pub(crate) struct RecentDigests {
    capacity: usize,
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl RecentDigests {
    pub(crate) fn new(capacity: usize) -> Self {
        RecentDigests {
            capacity: capacity.max(1),
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `digest`; returns `false` when it was already remembered.
    pub(crate) fn insert(&mut self, digest: [u8; 32]) -> bool {
        if !self.set.insert(digest) {
            return false;
        }
        self.order.push_back(digest);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

/// The merge state of [`RedundantTransport::events`].
struct Merge {
    seen: RecentDigests,
    /// Number of inner transports on which each peer is connected.
    links: HashMap<NodeId, usize>,
}

impl Merge {
    fn on_event(&mut self, ev: TransportEvent) -> Option<TransportEvent> {
        match ev {
            TransportEvent::Message { from, bytes } => {
                let digest: [u8; 32] = Sha256::digest(&bytes).into();
                if self.seen.insert(digest) {
                    Some(TransportEvent::Message { from, bytes })
                } else {
                    None
                }
            }
            TransportEvent::PeerConnected(p) => {
                let n = self.links.entry(p).or_insert(0);
                *n += 1;
                (*n == 1).then_some(TransportEvent::PeerConnected(p))
            }
            TransportEvent::PeerDisconnected(p) => match self.links.get_mut(&p) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    None
                }
                Some(_) => {
                    self.links.remove(&p);
                    Some(TransportEvent::PeerDisconnected(p))
                }
                // A disconnection without a known connection: pass it on once.
                None => Some(TransportEvent::PeerDisconnected(p)),
            },
            // Kinds of event this merge does not know: passed on as they are.
            other => Some(other),
        }
    }
}

fn any_ok(results: Vec<Result<(), TransportError>>) -> Result<(), TransportError> {
    let mut last = TransportError::NoPeers;
    let mut ok = false;
    for r in results {
        match r {
            Ok(()) => ok = true,
            Err(e) => last = e,
        }
    }
    if ok {
        Ok(())
    } else {
        Err(last)
    }
}

#[async_trait]
impl Transport for RedundantTransport {
    async fn broadcast(&self, bytes: Vec<u8>) -> Result<(), TransportError> {
        let results =
            futures::future::join_all(self.inner.iter().map(|t| t.broadcast(bytes.clone()))).await;
        for (i, r) in results.iter().enumerate() {
            if let Err(e) = r {
                debug!(transport = i, error = %e, "broadcast failed on one transport");
            }
        }
        any_ok(results)
    }

    async fn send(&self, peer: &NodeId, bytes: Vec<u8>) -> Result<(), TransportError> {
        let results =
            futures::future::join_all(self.inner.iter().map(|t| t.send(peer, bytes.clone()))).await;
        any_ok(results)
    }

    fn events(&self) -> BoxStream<'static, TransportEvent> {
        {
            let mut taken = self.taken.lock().expect("events lock");
            if *taken {
                warn!("RedundantTransport::events called twice: the second stream is empty");
                return stream::empty().boxed();
            }
            *taken = true;
        }
        let streams: Vec<_> = self.inner.iter().map(|t| t.events()).collect();
        let mut merge = Merge {
            seen: RecentDigests::new(self.dedup_capacity),
            links: HashMap::new(),
        };
        stream::select_all(streams)
            .filter_map(move |ev| futures::future::ready(merge.on_event(ev)))
            .boxed()
    }

    fn peers(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.inner.iter().flat_map(|t| t.peers()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// The network of the first inner transport bound to one.
    fn network_id(&self) -> Option<String> {
        self.inner.iter().find_map(|t| t.network_id())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rakis_core::testing::MemoryHub;
    use rakis_core::NodeKey;

    use super::*;

    fn node(hubs: &[&MemoryHub], key: &NodeKey) -> RedundantTransport {
        RedundantTransport::new(
            hubs.iter()
                .map(|h| Arc::new(h.join(key.node_id())) as Arc<dyn Transport>)
                .collect(),
        )
    }

    async fn next_message(events: &mut BoxStream<'static, TransportEvent>) -> Option<Vec<u8>> {
        loop {
            match tokio::time::timeout(Duration::from_millis(200), events.next()).await {
                Ok(Some(TransportEvent::Message { bytes, .. })) => return Some(bytes),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    #[tokio::test]
    async fn a_broadcast_over_two_hubs_arrives_once() {
        let (a, b) = (MemoryHub::default(), MemoryHub::default());
        let (ka, kb) = (NodeKey::from_seed(1), NodeKey::from_seed(2));
        let sender = node(&[&a, &b], &ka);
        let receiver = node(&[&a, &b], &kb);
        let mut events = receiver.events();
        sender.broadcast(b"one".to_vec()).await.unwrap();
        sender.broadcast(b"two".to_vec()).await.unwrap();
        assert_eq!(next_message(&mut events).await.unwrap(), b"one");
        assert_eq!(next_message(&mut events).await.unwrap(), b"two");
        assert_eq!(
            next_message(&mut events).await,
            None,
            "a duplicate got through"
        );
        // Both hubs delivered both messages: the duplicates were really there.
        assert_eq!(a.stats().0 + b.stats().0, 4);
    }

    #[tokio::test]
    async fn delivery_survives_the_partition_of_one_hub() {
        let (a, b) = (MemoryHub::default(), MemoryHub::default());
        let (ka, kb) = (NodeKey::from_seed(1), NodeKey::from_seed(2));
        let sender = node(&[&a, &b], &ka);
        let receiver = node(&[&a, &b], &kb);
        let mut events = receiver.events();
        a.partition(&[vec![ka.node_id()], vec![kb.node_id()]]);
        sender.broadcast(b"through b".to_vec()).await.unwrap();
        sender
            .send(&kb.node_id(), b"direct through b".to_vec())
            .await
            .unwrap();
        assert_eq!(next_message(&mut events).await.unwrap(), b"through b");
        assert_eq!(
            next_message(&mut events).await.unwrap(),
            b"direct through b"
        );
        b.partition(&[vec![ka.node_id()], vec![kb.node_id()]]);
        assert!(matches!(
            sender.send(&kb.node_id(), b"nowhere".to_vec()).await,
            Err(TransportError::Unreachable { .. })
        ));
    }

    #[tokio::test]
    async fn peers_are_merged_and_connection_events_deduplicated() {
        let (a, b) = (MemoryHub::default(), MemoryHub::default());
        let (ka, kb, kc) = (
            NodeKey::from_seed(1),
            NodeKey::from_seed(2),
            NodeKey::from_seed(3),
        );
        let observer = node(&[&a, &b], &ka);
        let mut events = observer.events();
        let _b_both = node(&[&a, &b], &kb);
        let _c_only_b = b.join(kc.node_id());
        let mut expected = vec![kb.node_id(), kc.node_id()];
        expected.sort();
        assert_eq!(observer.peers(), expected);
        let mut connected = Vec::new();
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(100), events.next()).await
        {
            connected.push(ev);
        }
        assert_eq!(
            connected,
            vec![
                TransportEvent::PeerConnected(kb.node_id()),
                TransportEvent::PeerConnected(kc.node_id()),
            ]
        );
        // kb leaves one hub: still connected through the other.
        a.leave(&kb.node_id());
        assert!(
            tokio::time::timeout(Duration::from_millis(100), events.next())
                .await
                .is_err(),
            "a partial disconnection was reported"
        );
        b.leave(&kb.node_id());
        assert_eq!(
            events.next().await,
            Some(TransportEvent::PeerDisconnected(kb.node_id()))
        );
        // The second call of events() gets an empty stream.
        assert_eq!(observer.events().next().await, None);
    }

    #[test]
    fn recent_digests_forget_the_oldest_beyond_capacity() {
        let mut d = RecentDigests::new(2);
        assert!(d.insert([1; 32]));
        assert!(!d.insert([1; 32]));
        assert!(d.insert([2; 32]));
        assert!(d.insert([3; 32]));
        assert_eq!(d.len(), 2);
        // [1] was forgotten, [3] is remembered.
        assert!(d.insert([1; 32]));
        assert!(!d.insert([1; 32]));
        assert!(d.insert([2; 32]));
    }

    #[test]
    fn broadcast_fails_only_when_every_transport_fails() {
        let results = vec![Err(TransportError::NoPeers), Ok(())];
        assert!(matches!(any_ok(results), Ok(())));
        assert!(matches!(
            any_ok(vec![
                Err(TransportError::NoPeers),
                Err(TransportError::Closed)
            ]),
            Err(TransportError::Closed)
        ));
        assert!(matches!(any_ok(vec![]), Err(TransportError::NoPeers)));
    }
}
