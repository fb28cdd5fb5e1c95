//! What the transport knows about each peer.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rakis_core::protocol::PeerStatus;
use rakis_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::config::NetConfig;
use crate::rate::{TokenBucket, WindowCounter};

/// Most entries kept; beyond it the least recently seen disconnected peers are forgotten.
pub(crate) const MAX_PEER_BOOK_ENTRIES: usize = 4_096;
/// Most addresses kept per peer.
const MAX_ADDRESSES: usize = 16;

/// One peer as the transport sees it (a snapshot; see
/// [`Libp2pTransport::peer_book`](crate::Libp2pTransport::peer_book)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The peer's node id.
    pub node: NodeId,
    /// Its libp2p peer id, as text.
    pub peer_id: String,
    /// Known addresses (multiaddrs, as text).
    pub addresses: Vec<String>,
    /// Whether a connection is open now.
    pub connected: bool,
    /// Milliseconds since the transport last heard from it (a message, a ping, a connection).
    pub last_seen_ms_ago: Option<u64>,
    /// Last measured ping round trip, in milliseconds.
    pub rtt_ms: Option<u64>,
    /// Its gossipsub peer score (negative after invalid messages), when known.
    pub score: Option<f64>,
    /// Invalid messages received from it.
    pub invalid_messages: u64,
    /// Messages dropped because it exceeded its rate limit.
    pub rate_limited: u64,
    /// Whether it is blocked now.
    pub blocked: bool,
    /// Models it serves, from its last `PeerStatus` message.
    pub models: Vec<String>,
    /// Its embedding model, from its last `PeerStatus` message.
    pub embedding_model: Option<String>,
    /// Generation workers, from its last `PeerStatus` message.
    pub workers: u32,
    /// Jobs running or queued, from its last `PeerStatus` message.
    pub load: u32,
}

/// The mutable record behind a [`PeerEntry`].
#[derive(Debug)]
pub(crate) struct PeerRecord {
    pub(crate) node: NodeId,
    pub(crate) addresses: BTreeSet<Multiaddr>,
    pub(crate) connected: bool,
    /// Connected and of our network (identify confirmed it): reported to the node.
    pub(crate) ready: bool,
    /// Identify confirmed, at least once, that it belongs to our network.
    pub(crate) confirmed: bool,
    pub(crate) last_seen: Option<Instant>,
    pub(crate) rtt: Option<Duration>,
    pub(crate) score: Option<f64>,
    pub(crate) invalid_messages: u64,
    pub(crate) rate_limited: u64,
    pub(crate) blocked_until: Option<Instant>,
    pub(crate) status: Option<PeerStatus>,
    /// Messages signed by this peer (whoever relayed them).
    pub(crate) bucket: TokenBucket,
    /// Gossip relayed by this peer (whoever signed it).
    pub(crate) relay_bucket: TokenBucket,
    pub(crate) violations: WindowCounter,
}

impl PeerRecord {
    fn new(node: NodeId, config: &NetConfig, now: Instant) -> Self {
        PeerRecord {
            node,
            addresses: BTreeSet::new(),
            connected: false,
            ready: false,
            confirmed: false,
            last_seen: None,
            rtt: None,
            score: None,
            invalid_messages: 0,
            rate_limited: 0,
            blocked_until: None,
            status: None,
            bucket: TokenBucket::new(config.rate_limit, now),
            relay_bucket: TokenBucket::new(config.relay_rate_limit, now),
            violations: WindowCounter::new(config.violation_window, now),
        }
    }

    pub(crate) fn add_address(&mut self, addr: Multiaddr) {
        if self.addresses.len() < MAX_ADDRESSES {
            self.addresses.insert(addr);
        }
    }

    pub(crate) fn is_blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| t > now)
    }

    fn snapshot(&self, peer: &PeerId, now: Instant) -> PeerEntry {
        let status = self.status.as_ref();
        PeerEntry {
            node: self.node,
            peer_id: peer.to_string(),
            addresses: self.addresses.iter().map(|a| a.to_string()).collect(),
            connected: self.connected,
            last_seen_ms_ago: self
                .last_seen
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            rtt_ms: self.rtt.map(|d| d.as_millis() as u64),
            score: self.score,
            invalid_messages: self.invalid_messages,
            rate_limited: self.rate_limited,
            blocked: self.is_blocked(now),
            models: status.map(|s| s.models.clone()).unwrap_or_default(),
            embedding_model: status.and_then(|s| s.embedding_model.clone()),
            workers: status.map(|s| s.workers).unwrap_or(0),
            load: status.map(|s| s.load).unwrap_or(0),
        }
    }
}

/// Every peer the transport knows, by peer id.
#[derive(Debug, Default)]
pub(crate) struct PeerBook {
    records: HashMap<PeerId, PeerRecord>,
}

impl PeerBook {
    /// The record of `peer`, created when missing; `None` for peers that are not Rakis nodes.
    pub(crate) fn entry(
        &mut self,
        peer: PeerId,
        config: &NetConfig,
        now: Instant,
    ) -> Option<&mut PeerRecord> {
        if !self.records.contains_key(&peer) {
            let node = crate::identity::node_id_of(&peer)?;
            if self.records.len() >= MAX_PEER_BOOK_ENTRIES {
                self.evict_one();
            }
            self.records
                .insert(peer, PeerRecord::new(node, config, now));
        }
        self.records.get_mut(&peer)
    }

    pub(crate) fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.records.get(peer)
    }

    pub(crate) fn get_mut(&mut self, peer: &PeerId) -> Option<&mut PeerRecord> {
        self.records.get_mut(peer)
    }

    pub(crate) fn remove(&mut self, peer: &PeerId) {
        self.records.remove(peer);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&PeerId, &PeerRecord)> {
        self.records.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&PeerId, &mut PeerRecord)> {
        self.records.iter_mut()
    }

    /// Forgets the least recently seen peer that is neither connected nor blocked.
    fn evict_one(&mut self) {
        let victim = self
            .records
            .iter()
            .filter(|(_, r)| !r.connected && r.blocked_until.is_none())
            .min_by_key(|(_, r)| r.last_seen)
            .map(|(p, _)| *p);
        if let Some(p) = victim {
            self.records.remove(&p);
        }
    }

    /// A snapshot of every entry, sorted by node id.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<PeerEntry> {
        let mut out: Vec<PeerEntry> = self
            .records
            .iter()
            .map(|(p, r)| r.snapshot(p, now))
            .collect();
        out.sort_by_key(|e| e.node);
        out
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use rakis_core::NodeKey;

    use super::*;
    use crate::identity::keypair_of;

    fn peer(seed: u64) -> PeerId {
        keypair_of(&NodeKey::from_seed(seed))
            .unwrap()
            .public()
            .to_peer_id()
    }

    #[test]
    fn entries_carry_status_and_counters() {
        let config = NetConfig::local_test("t");
        let now = Instant::now();
        let mut book = PeerBook::default();
        let p = peer(1);
        let r = book.entry(p, &config, now).unwrap();
        r.connected = true;
        r.last_seen = Some(now);
        r.invalid_messages = 2;
        r.add_address("/ip4/127.0.0.1/tcp/1".parse().unwrap());
        r.status = Some(PeerStatus {
            models: vec!["m".into()],
            embedding_model: Some("e".into()),
            workers: 3,
            load: 1,
        });
        r.blocked_until = Some(now + Duration::from_secs(10));
        let snap = book.snapshot(now + Duration::from_millis(5));
        assert_eq!(snap.len(), 1);
        let e = &snap[0];
        assert_eq!(e.node, NodeKey::from_seed(1).node_id());
        assert_eq!(e.peer_id, p.to_string());
        assert_eq!(e.addresses, vec!["/ip4/127.0.0.1/tcp/1".to_string()]);
        assert_eq!(e.models, vec!["m".to_string()]);
        assert_eq!(e.embedding_model.as_deref(), Some("e"));
        assert_eq!((e.workers, e.load, e.invalid_messages), (3, 1, 2));
        assert_eq!(e.last_seen_ms_ago, Some(5));
        assert!(e.blocked && e.connected);
        // Blocks expire.
        assert!(!book.snapshot(now + Duration::from_secs(11))[0].blocked);
    }

    #[test]
    fn non_rakis_peers_get_no_entry_and_the_book_is_bounded() {
        let config = NetConfig::local_test("t");
        let now = Instant::now();
        let mut book = PeerBook::default();
        assert!(book.entry(PeerId::random(), &config, now).is_none());
        for seed in 0..(MAX_PEER_BOOK_ENTRIES as u64 + 3) {
            book.entry(peer(seed), &config, now).unwrap();
        }
        assert_eq!(book.len(), MAX_PEER_BOOK_ENTRIES);
    }
}
