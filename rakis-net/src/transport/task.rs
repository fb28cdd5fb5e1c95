//! The task that owns the swarm: commands from the handle, swarm events, maintenance.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use libp2p::gossipsub::{self};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use rakis_core::error::SharedError;
use rakis_core::{TransportError, TransportEvent};
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use super::{strip_p2p, Command, NetStats, Reply, Shared};
use crate::behaviour::{Behaviour, BehaviourEvent, Protocols};
use crate::config::NetConfig;
use crate::error::NetError;
use crate::identity::node_id_of;
use crate::peer_book::PeerBook;
use crate::topics::Topics;
use rakis_core::NodeId;

/// What to do with one received message.
pub(super) enum Verdict {
    Accept(Vec<u8>),
    Reject(String),
    Ignore(&'static str),
}

/// The swarm and everything the transport knows; runs in its own task.
pub(super) struct Task {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) config: NetConfig,
    pub(super) local: PeerId,
    pub(super) topics: Topics,
    pub(super) protocols: Protocols,
    pub(super) book: PeerBook,
    pub(super) events: mpsc::Sender<TransportEvent>,
    pub(super) shared: Arc<Shared>,
    pub(super) pending: HashMap<OutboundRequestId, Reply<Result<(), TransportError>>>,
    pub(super) bootstrap: Vec<(PeerId, Multiaddr)>,
    /// Peers that turned out to belong to another network: never redialled.
    pub(super) foreign: HashSet<PeerId>,
    pub(super) stats: NetStats,
    pub(super) bootstrapped_dht: bool,
    /// Signatures checked here, shared with the node's inbox.
    pub(super) verified: Arc<rakis_core::envelope::VerifiedSignatures>,
    /// Test hook (feature `test-utils`): direct messages are taken and never acknowledged, their
    /// response channels held open, as a peer that stalls its senders would.
    #[cfg(feature = "test-utils")]
    pub(super) withheld: Option<Vec<libp2p::request_response::ResponseChannel<crate::codec::Ack>>>,
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Task {
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut maintenance = tokio::time::interval(self.config.reconnect_interval);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        maintenance.tick().await;
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => {
                        debug!("transport handle dropped");
                        break;
                    }
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    Some(c) => self.on_command(c),
                },
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                _ = maintenance.tick() => self.maintain(),
            }
        }
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(TransportError::Closed));
        }
        self.shared.peers.write().expect("peers lock").clear();
        info!("network stopped");
    }

    /// Hands an event to the node; `false` when the node's queue is full (in events or in
    /// bytes) and it was dropped.
    pub(super) fn emit(&mut self, ev: TransportEvent) -> bool {
        use std::sync::atomic::Ordering;
        let size = match &ev {
            TransportEvent::Message { bytes, .. } => bytes.len(),
            _ => 0,
        };
        let queued = self.shared.queued_bytes.load(Ordering::Relaxed);
        if size > 0 && queued.saturating_add(size) > self.config.event_buffer_bytes {
            self.stats.dropped_events += 1;
            if self.stats.dropped_events.is_power_of_two() {
                warn!(
                    dropped = self.stats.dropped_events,
                    queued_bytes = queued,
                    "the node is behind on transport events (bytes bound): dropping"
                );
            }
            return false;
        }
        self.shared.queued_bytes.fetch_add(size, Ordering::Relaxed);
        match self.events.try_send(ev) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                self.stats.dropped_events += 1;
                if self.stats.dropped_events.is_power_of_two() {
                    warn!(
                        dropped = self.stats.dropped_events,
                        "the node is not reading transport events: dropping"
                    );
                }
                false
            }
            // Nobody listens (the node stopped): nothing to deliver to.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                true
            }
        }
    }

    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish {
                topic,
                bytes,
                reply,
            } => {
                let topic = self.topics.get(topic).clone();
                let result = match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                    Ok(_) => {
                        self.stats.published += 1;
                        Ok(())
                    }
                    // Already published: the network has it.
                    Err(gossipsub::PublishError::Duplicate) => Ok(()),
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                        Err(TransportError::NoPeers)
                    }
                    Err(e) => Err(TransportError::Other(SharedError::new(e))),
                };
                let _ = reply.send(result);
            }
            Command::Send { peer, bytes, reply } => {
                let now = Instant::now();
                if peer == self.local {
                    let _ = reply.send(Err(TransportError::Unreachable {
                        peer: peer.to_string(),
                        reason: SharedError::msg("cannot send to self"),
                    }));
                } else if self.book.get(&peer).is_some_and(|r| r.is_blocked(now)) {
                    let _ = reply.send(Err(TransportError::Unreachable {
                        peer: peer.to_string(),
                        reason: SharedError::msg("blocked by this node"),
                    }));
                } else {
                    let id = self.swarm.behaviour_mut().direct.send_request(&peer, bytes);
                    self.pending.insert(id, reply);
                }
            }
            Command::Dial { addr, reply } => {
                let opts = match addr.iter().last() {
                    Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer)
                        .addresses(vec![strip_p2p(&addr)])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build(),
                    _ => DialOpts::unknown_peer_id().address(addr.clone()).build(),
                };
                let result = match self.swarm.dial(opts) {
                    // Already connected or being dialled: nothing to do.
                    Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
                    Err(e) => Err(NetError::Dial {
                        address: addr.to_string(),
                        reason: SharedError::new(e),
                    }),
                };
                let _ = reply.send(result);
            }
            Command::PeerBook(reply) => {
                let now = Instant::now();
                let connected: Vec<PeerId> = self
                    .book
                    .iter()
                    .filter(|(_, r)| r.connected)
                    .map(|(p, _)| *p)
                    .collect();
                for p in connected {
                    let score = self.swarm.behaviour().gossipsub.peer_score(&p);
                    if let Some(r) = self.book.get_mut(&p) {
                        if score.is_some() {
                            r.score = score;
                        }
                    }
                }
                let _ = reply.send(self.book.snapshot(now));
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats.clone());
            }
            Command::TopicPeers(reply) => {
                let wanted: Vec<gossipsub::TopicHash> =
                    self.topics.all().map(|(_, t)| t.hash()).collect();
                let mut out: Vec<NodeId> = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .filter(|(_, subscribed)| wanted.iter().all(|w| subscribed.contains(&w)))
                    .filter(|(p, _)| self.book.get(p).is_some_and(|r| r.ready))
                    .filter_map(|(p, _)| node_id_of(p))
                    .collect();
                out.sort();
                let _ = reply.send(out);
            }
            #[cfg(feature = "test-utils")]
            Command::WithholdAcknowledgements => self.withheld = Some(Vec::new()),
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    pub(super) fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(ev)) => self.on_gossip(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Direct(ev)) => self.on_direct(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(ev)) => self.on_identify(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(ev)) => self.on_mdns(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ev)) => self.on_ping(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Limits(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Blocked(never)) => match never {},
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let now = Instant::now();
                if self.foreign.contains(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let Some(record) = self.book.entry(peer_id, &self.config, now) else {
                    debug!(peer = %peer_id, "not a Rakis peer (no secp256k1 key): disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                };
                record.connected = true;
                record.last_seen = Some(now);
                if endpoint.is_dialer() {
                    record.add_address(strip_p2p(endpoint.get_remote_address()));
                }
                debug!(peer = %record.node.short(), connections = num_established.get(), "connection established");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                if num_established > 0 {
                    return;
                }
                let Some(record) = self.book.get_mut(&peer_id) else {
                    return;
                };
                record.connected = false;
                let node = record.node;
                debug!(peer = %node.short(), cause = ?cause, "disconnected");
                if std::mem::take(&mut record.ready) {
                    self.shared.peers.write().expect("peers lock").remove(&node);
                    self.emit(TransportEvent::PeerDisconnected(node));
                } else if !record.confirmed
                    && record.blocked_until.is_none()
                    && record.status.is_none()
                    && record.invalid_messages == 0
                    && record.rate_limited == 0
                {
                    // Gone before proving it belongs to this network, and nothing held
                    // against it: nothing worth keeping.
                    self.book.remove(&peer_id);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                debug!(%address, "listening");
                let mut listen = self.shared.listen.write().expect("listen lock");
                if !listen.contains(&address) {
                    listen.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.shared
                    .listen
                    .write()
                    .expect("listen lock")
                    .retain(|a| *a != address);
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, %error, "outgoing connection failed")
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                debug!(%error, "incoming connection failed")
            }
            other => trace!(event = ?other, "swarm event"),
        }
    }

    /// Dials every bootstrap peer that is neither connected, blocked nor foreign.
    pub(super) fn redial_bootstrap(&mut self) {
        let now = Instant::now();
        for (peer, addr) in self.bootstrap.clone() {
            if self.swarm.is_connected(&peer)
                || self.foreign.contains(&peer)
                || self.book.get(&peer).is_some_and(|r| r.is_blocked(now))
            {
                continue;
            }
            // The DHT learns the address from identify once the peer proves to be of this
            // network.
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => debug!(peer = %peer, %addr, "dialling bootstrap peer"),
                Err(e) => debug!(peer = %peer, error = %e, "could not dial bootstrap peer"),
            }
        }
    }

    /// Periodic work: lift expired blocks, redial lost bootstrap peers.
    pub(super) fn maintain(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .book
            .iter_mut()
            .filter(|(_, r)| r.blocked_until.is_some_and(|t| t <= now))
            .map(|(p, r)| {
                r.blocked_until = None;
                r.invalid_messages = 0;
                *p
            })
            .collect();
        for p in expired {
            info!(peer = %p, "block expired");
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
        }
        self.redial_bootstrap();
    }
}
