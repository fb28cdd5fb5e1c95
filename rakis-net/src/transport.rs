//! [`Libp2pTransport`]: the handle, and the task that owns the swarm.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{identify, kad, mdns, noise, ping, tcp, yamux, Multiaddr, PeerId, Swarm};
use rakis_core::envelope::open;
use rakis_core::error::SharedError;
use rakis_core::protocol::Message;
use rakis_core::transport::Refusal;
use rakis_core::{NodeId, NodeKey, Transport, TransportError, TransportEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, info_span, trace, warn, Instrument};

use crate::behaviour::{Behaviour, BehaviourEvent, Protocols, GRAYLIST_THRESHOLD};
use crate::codec::Ack;
use crate::config::{bootstrap_peer_id, NetConfig};
use crate::error::NetError;
use crate::identity::{keypair_of, node_id_of, peer_id_of};
use crate::peer_book::{PeerBook, PeerEntry};
use crate::topics::{TopicKind, Topics};

/// Most peers of other networks remembered (the set is cleared when full).
const MAX_FOREIGN_PEERS: usize = 4_096;
/// How long [`Libp2pTransport::start`] waits for its listeners to bind.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of a running transport.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    /// Messages this node published on gossip.
    pub published: u64,
    /// Messages delivered to the node (gossip and direct).
    pub delivered: u64,
    /// Received messages rejected as invalid (and penalised).
    pub rejected: u64,
    /// Received messages ignored because their peer exceeded its rate limit.
    pub rate_limited: u64,
    /// Received gossip ignored because its timestamp is beyond the clock-skew bound.
    pub stale: u64,
    /// Direct messages sent and acknowledged.
    pub direct_sent: u64,
    /// Events dropped because the node did not read them fast enough.
    pub dropped_events: u64,
    /// Peers blocked so far.
    pub blocks: u64,
    /// Peers met that belong to another network (disconnected, never redialled).
    pub foreign_peers: u64,
}

type Reply<T> = oneshot::Sender<T>;

enum Command {
    Publish {
        topic: TopicKind,
        bytes: Vec<u8>,
        reply: Reply<Result<(), TransportError>>,
    },
    Send {
        peer: PeerId,
        bytes: Vec<u8>,
        reply: Reply<Result<(), TransportError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: Reply<Result<(), NetError>>,
    },
    PeerBook(Reply<Vec<PeerEntry>>),
    Stats(Reply<NetStats>),
    TopicPeers(Reply<Vec<NodeId>>),
    Shutdown(Reply<()>),
}

/// State shared between the handle and the task.
#[derive(Default)]
struct Shared {
    /// Connected peers of this network (identify confirmed).
    peers: RwLock<BTreeSet<NodeId>>,
    /// Bound listen addresses (without the `/p2p/` suffix).
    listen: RwLock<Vec<Multiaddr>>,
}

/// The default [`Transport`] of Rakis: libp2p with gossipsub for broadcasts and
/// request-response for direct messages, over TCP and QUIC with noise and yamux.
///
/// The swarm runs in its own tokio task; this handle talks to it over channels. Dropping the
/// handle (or calling [`shutdown`](Self::shutdown)) stops the task and closes every connection.
///
/// What it does with received messages:
/// * gossip is validated before it is forwarded: it must open as a Rakis envelope of this
///   network ([`rakis_core::envelope::open`]: size, version, decoding, signature, network id)
///   and its kind must belong to the topic it came on. Invalid gossip is rejected, which lowers
///   the propagation source's gossipsub score; gossip older or newer than the clock-skew bound
///   is ignored (not forwarded, not delivered, not penalised);
/// * each peer has a token bucket (see [`NetConfig::rate_limit`]); messages over it are
///   ignored and counted;
/// * a peer that sends [`NetConfig::max_invalid_messages`] invalid messages, drops below the
///   graylist score, or exceeds its rate limit [`NetConfig::max_rate_violations`] times within
///   a window is disconnected and blocked for [`NetConfig::block_duration`];
/// * only accepted messages reach the node, as [`TransportEvent::Message`] whose `from` is the
///   peer that handed the message over (for gossip, the propagation source; the signer is in
///   the envelope).
pub struct Libp2pTransport {
    node: NodeId,
    peer_id: PeerId,
    network_id: String,
    commands: mpsc::Sender<Command>,
    events: Mutex<Option<mpsc::Receiver<TransportEvent>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Libp2pTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libp2pTransport")
            .field("node", &self.node.short())
            .field("peer_id", &self.peer_id)
            .field("network_id", &self.network_id)
            .finish()
    }
}

fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

impl Libp2pTransport {
    /// Starts the transport: builds the swarm with the node's key, binds every listen address
    /// (waiting until each is bound), subscribes to the network's topics, dials the bootstrap
    /// peers and spawns the swarm task. Must be called within a tokio runtime.
    pub async fn start(key: NodeKey, config: NetConfig) -> Result<Self, NetError> {
        config.validate()?;
        let keypair = keypair_of(&key)?;
        let peer_id = keypair.public().to_peer_id();
        let node = key.node_id();
        let topics = Topics::new(&config.network_id);
        let protocols = Protocols::new(&config.network_id).map_err(NetError::Config)?;

        let behaviour_config = config.clone();
        let behaviour_topics = topics.clone();
        let behaviour_protocols = protocols.clone();
        let idle = config.idle_connection_timeout;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NetError::Build(e.to_string()))?
            .with_quic()
            .with_behaviour(move |kp| {
                Behaviour::new(
                    kp,
                    &behaviour_config,
                    &behaviour_topics,
                    &behaviour_protocols,
                )
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            })
            .map_err(|e| NetError::Build(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();

        for (_, topic) in topics.all() {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(topic)
                .map_err(|e| NetError::Build(format!("subscribing to {topic}: {e}")))?;
        }

        let shared = Arc::new(Shared::default());
        let mut listeners: HashMap<ListenerId, Multiaddr> = HashMap::new();
        for addr in &config.listen_addresses {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    address: addr.to_string(),
                    reason: e.to_string(),
                })?;
            listeners.insert(id, addr.clone());
        }
        let mut bound: HashSet<ListenerId> = HashSet::new();
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while bound.len() < listeners.len() {
            let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .map_err(|_| NetError::Timeout("binding the listen addresses".into()))?;
            match ev {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    bound.insert(listener_id);
                    shared.listen.write().expect("listen lock").push(address);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } => {
                    return Err(NetError::Listen {
                        address: listeners
                            .get(&listener_id)
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                        reason: format!("{reason:?}"),
                    })
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    return Err(NetError::Listen {
                        address: listeners
                            .get(&listener_id)
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                        reason: error.to_string(),
                    })
                }
                other => trace!(event = ?other, "swarm event while binding"),
            }
        }

        let mut bootstrap = Vec::new();
        for addr in &config.bootstrap_peers {
            let peer = bootstrap_peer_id(addr)?;
            if peer == peer_id {
                continue;
            }
            bootstrap.push((peer, strip_p2p(addr)));
        }

        let (commands_tx, commands_rx) = mpsc::channel(1024);
        let (events_tx, events_rx) = mpsc::channel(config.event_buffer);
        let span = info_span!("net", node = %node.short(), network = %config.network_id);
        let network_id = config.network_id.clone();
        let mut task = Task {
            swarm,
            config,
            local: peer_id,
            topics,
            protocols,
            book: PeerBook::default(),
            events: events_tx,
            shared: shared.clone(),
            pending: HashMap::new(),
            bootstrap,
            foreign: HashSet::new(),
            stats: NetStats::default(),
            bootstrapped_dht: false,
        };
        {
            let _enter = span.enter();
            info!(peer_id = %peer_id, listen = ?shared.listen.read().expect("listen lock"), "network started");
            task.redial_bootstrap();
        }
        tokio::spawn(task.run(commands_rx).instrument(span));

        Ok(Libp2pTransport {
            node,
            peer_id,
            network_id,
            commands: commands_tx,
            events: Mutex::new(Some(events_rx)),
            shared,
        })
    }

    /// This node's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The network id.
    pub fn network_id(&self) -> &str {
        &self.network_id
    }

    /// The bound listen addresses, each ending with `/p2p/<peer id>`: usable as bootstrap
    /// addresses of other nodes.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared
            .listen
            .read()
            .expect("listen lock")
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(self.peer_id)))
            .collect()
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Closed)?;
        rx.await.map_err(|_| NetError::Closed)
    }

    /// Dials an address (with or without `/p2p/<peer id>`). Returns once the dial has started
    /// (dialling a connected peer does nothing); the connection shows up as
    /// [`TransportEvent::PeerConnected`]. Fails at once for this node's own peer id or a
    /// blocked peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// A snapshot of the peer book: every peer seen, with addresses, last contact, gossip
    /// score, invalid and rate-limited message counts, block state and the models and
    /// capacity from its last `PeerStatus`.
    pub async fn peer_book(&self) -> Result<Vec<PeerEntry>, NetError> {
        self.ask(Command::PeerBook).await
    }

    /// Counters.
    pub async fn stats(&self) -> Result<NetStats, NetError> {
        self.ask(Command::Stats).await
    }

    /// Connected peers of this network (identify confirmed) subscribed to every topic: the
    /// peers a broadcast reaches directly.
    pub async fn topic_peers(&self) -> Result<Vec<NodeId>, NetError> {
        self.ask(Command::TopicPeers).await
    }

    /// Waits until at least `n` connected peers are subscribed to every topic, polling every
    /// 50 ms, at most `timeout`.
    pub async fn wait_for_topic_peers(&self, n: usize, timeout: Duration) -> Result<(), NetError> {
        let wait = async {
            loop {
                if self.topic_peers().await?.len() >= n {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| NetError::Timeout(format!("waiting for {n} peers on the gossip topics")))?
    }

    /// Stops the swarm task and closes every connection.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        self.ask(Command::Shutdown).await
    }

    async fn publish(&self, topic: TopicKind, bytes: Vec<u8>) -> Result<(), TransportError> {
        self.ask(|reply| Command::Publish {
            topic,
            bytes,
            reply,
        })
        .await
        .map_err(|_| TransportError::Closed)?
    }

    async fn send_bytes(&self, peer: &NodeId, bytes: Vec<u8>) -> Result<(), TransportError> {
        let peer = peer_id_of(peer).map_err(|e| TransportError::Unreachable {
            peer: peer.to_string(),
            reason: SharedError::new(e),
        })?;
        self.ask(|reply| Command::Send { peer, bytes, reply })
            .await
            .map_err(|_| TransportError::Closed)?
    }

    /// Publishes `bytes` on `topic` without checking them: lets tests play a peer that sends
    /// invalid messages. Feature `test-utils` only.
    #[cfg(feature = "test-utils")]
    pub async fn publish_unchecked(
        &self,
        topic: TopicKind,
        bytes: Vec<u8>,
    ) -> Result<(), TransportError> {
        self.publish(topic, bytes).await
    }

    /// Sends `bytes` to `peer` without checking them. Feature `test-utils` only.
    #[cfg(feature = "test-utils")]
    pub async fn send_unchecked(
        &self,
        peer: &NodeId,
        bytes: Vec<u8>,
    ) -> Result<(), TransportError> {
        self.send_bytes(peer, bytes).await
    }
}

#[async_trait]
impl Transport for Libp2pTransport {
    async fn broadcast(&self, bytes: Vec<u8>) -> Result<(), TransportError> {
        // Peers would reject (and penalise us for) anything that does not open.
        let v = open(&bytes, &self.network_id).map_err(TransportError::InvalidMessage)?;
        let topic = TopicKind::for_message_kind(v.envelope.message.kind());
        self.publish(topic, bytes).await
    }

    async fn send(&self, peer: &NodeId, bytes: Vec<u8>) -> Result<(), TransportError> {
        open(&bytes, &self.network_id).map_err(TransportError::InvalidMessage)?;
        self.send_bytes(peer, bytes).await
    }

    fn events(&self) -> BoxStream<'static, TransportEvent> {
        match self.events.lock().expect("events lock").take() {
            Some(mut rx) => futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed(),
            None => {
                warn!("Libp2pTransport::events called twice: the second stream is empty");
                futures::stream::empty().boxed()
            }
        }
    }

    fn peers(&self) -> Vec<NodeId> {
        self.shared
            .peers
            .read()
            .expect("peers lock")
            .iter()
            .copied()
            .collect()
    }
}

/// What to do with one received message.
enum Verdict {
    Accept(Vec<u8>),
    Reject(String),
    Ignore(&'static str),
}

/// The swarm and everything the transport knows; runs in its own task.
struct Task {
    swarm: Swarm<Behaviour>,
    config: NetConfig,
    local: PeerId,
    topics: Topics,
    protocols: Protocols,
    book: PeerBook,
    events: mpsc::Sender<TransportEvent>,
    shared: Arc<Shared>,
    pending: HashMap<OutboundRequestId, Reply<Result<(), TransportError>>>,
    bootstrap: Vec<(PeerId, Multiaddr)>,
    /// Peers that turned out to belong to another network: never redialled.
    foreign: HashSet<PeerId>,
    stats: NetStats,
    bootstrapped_dht: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
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

    /// Hands an event to the node; `false` when the node's queue is full and it was dropped.
    fn emit(&mut self, ev: TransportEvent) -> bool {
        match self.events.try_send(ev) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
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
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        }
    }

    fn on_command(&mut self, cmd: Command) {
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
                        reason: e.to_string(),
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
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
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

    /// Counts one message against `peer`'s rate limit; `false` when it is over the limit (and
    /// blocks the peer after repeated violations).
    fn within_rate(&mut self, peer: PeerId, now: Instant) -> bool {
        let Some(record) = self.book.entry(peer, &self.config, now) else {
            return false;
        };
        record.last_seen = Some(now);
        if record.bucket.try_take(now) {
            return true;
        }
        record.rate_limited += 1;
        self.stats.rate_limited += 1;
        let violations = record.violations.record(now);
        if violations > self.config.max_rate_violations {
            self.block(peer, "rate limit exceeded repeatedly", now);
        }
        false
    }

    /// Records an invalid message from `peer`; blocks it when it sent too many or its gossip
    /// score fell below the graylist threshold.
    fn on_invalid(&mut self, peer: PeerId, reason: &str, now: Instant) {
        self.stats.rejected += 1;
        let score = self.swarm.behaviour().gossipsub.peer_score(&peer);
        let Some(record) = self.book.entry(peer, &self.config, now) else {
            return;
        };
        record.invalid_messages += 1;
        if score.is_some() {
            record.score = score;
        }
        let invalid = record.invalid_messages;
        let node = record.node;
        warn!(peer = %node.short(), invalid, score = ?score, reason, "invalid message");
        if invalid >= u64::from(self.config.max_invalid_messages)
            || score.is_some_and(|s| s < GRAYLIST_THRESHOLD)
        {
            self.block(peer, "invalid messages", now);
        }
    }

    fn block(&mut self, peer: PeerId, reason: &str, now: Instant) {
        let until = now + self.config.block_duration;
        let Some(record) = self.book.entry(peer, &self.config, now) else {
            return;
        };
        if record.is_blocked(now) {
            return;
        }
        record.blocked_until = Some(until);
        warn!(peer = %record.node.short(), reason, "blocking peer");
        self.stats.blocks += 1;
        let b = self.swarm.behaviour_mut();
        b.blocked.block_peer(peer);
        b.kad.remove_peer(&peer);
    }

    fn on_gossip(&mut self, ev: gossipsub::Event) {
        match ev {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let verdict = self.check_gossip(propagation_source, message);
                let acceptance = match &verdict {
                    Verdict::Accept(_) => MessageAcceptance::Accept,
                    Verdict::Reject(_) => MessageAcceptance::Reject,
                    Verdict::Ignore(_) => MessageAcceptance::Ignore,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
                let now = Instant::now();
                match verdict {
                    Verdict::Accept(bytes) => {
                        let from = node_id_of(&propagation_source);
                        if self.emit(TransportEvent::Message { from, bytes }) {
                            self.stats.delivered += 1;
                        }
                    }
                    Verdict::Reject(reason) => self.on_invalid(propagation_source, &reason, now),
                    Verdict::Ignore(reason) => {
                        trace!(peer = %propagation_source, reason, "gossip ignored")
                    }
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                trace!(peer = %peer_id, %topic, "peer subscribed")
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                trace!(peer = %peer_id, %topic, "peer unsubscribed")
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                debug!(peer = %peer_id, "peer does not support gossipsub")
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => debug!(peer = %peer_id, ?failed_messages, "slow peer"),
        }
    }

    fn check_gossip(&mut self, source: PeerId, message: gossipsub::Message) -> Verdict {
        let now = Instant::now();
        if !self.within_rate(source, now) {
            return Verdict::Ignore("rate limited");
        }
        let Some(kind) = self.topics.kind_of(&message.topic) else {
            return Verdict::Reject(format!("unknown topic {}", message.topic));
        };
        let verified = match open(&message.data, &self.config.network_id) {
            Ok(v) => v,
            Err(e) => return Verdict::Reject(e.to_string()),
        };
        let env = verified.envelope;
        let expected = TopicKind::for_message_kind(env.message.kind());
        if expected != kind {
            return Verdict::Reject(format!(
                "{} message on the {} topic",
                env.message.kind(),
                kind.name()
            ));
        }
        let skew = env.timestamp_ms.abs_diff(now_ms());
        if skew > u64::try_from(self.config.max_clock_skew.as_millis()).unwrap_or(u64::MAX) {
            self.stats.stale += 1;
            return Verdict::Ignore("timestamp beyond the clock-skew bound");
        }
        if let Message::PeerStatus(status) = env.message {
            if let Ok(signer) = peer_id_of(&env.sender) {
                if let Some(r) = self.book.entry(signer, &self.config, now) {
                    r.status = Some(status);
                    r.last_seen = Some(now);
                }
            }
        }
        Verdict::Accept(message.data)
    }

    fn on_direct(&mut self, ev: request_response::Event<Vec<u8>, Ack>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let now = Instant::now();
                    let ack = if !self.within_rate(peer, now) {
                        Ack::RateLimited
                    } else {
                        match open(&request, &self.config.network_id) {
                            Ok(_) => {
                                let from = node_id_of(&peer);
                                if self.emit(TransportEvent::Message {
                                    from,
                                    bytes: request,
                                }) {
                                    self.stats.delivered += 1;
                                    Ack::Accepted
                                } else {
                                    Ack::RateLimited
                                }
                            }
                            Err(e) => {
                                self.on_invalid(peer, &format!("direct: {e}"), now);
                                Ack::Rejected
                            }
                        }
                    };
                    if self
                        .swarm
                        .behaviour_mut()
                        .direct
                        .send_response(channel, ack)
                        .is_err()
                    {
                        debug!(peer = %peer, "could not acknowledge a direct message");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let result = match response {
                        Ack::Accepted => {
                            self.stats.direct_sent += 1;
                            Ok(())
                        }
                        Ack::Rejected => Err(TransportError::Refused {
                            peer: peer.to_string(),
                            reason: Refusal::InvalidMessage,
                        }),
                        Ack::RateLimited => Err(TransportError::Refused {
                            peer: peer.to_string(),
                            reason: Refusal::Overloaded,
                        }),
                    };
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(result);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(peer = %peer, %error, "direct message failed");
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(TransportError::Unreachable {
                        peer: peer.to_string(),
                        reason: SharedError::new(error),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(peer = %peer, %error, "inbound direct message failed")
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_identify(&mut self, ev: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = ev else {
            return;
        };
        if info.protocol_version != self.protocols.identify_version {
            debug!(peer = %peer_id, version = %info.protocol_version, "peer of another network: disconnecting");
            if self.foreign.len() >= MAX_FOREIGN_PEERS {
                self.foreign.clear();
            }
            if self.foreign.insert(peer_id) {
                self.stats.foreign_peers += 1;
            }
            self.book.remove(&peer_id);
            let _ = self.swarm.disconnect_peer_id(peer_id);
            return;
        }
        let now = Instant::now();
        let serves_kad = info.protocols.contains(&self.protocols.kad);
        let Some(record) = self.book.entry(peer_id, &self.config, now) else {
            return;
        };
        record.last_seen = Some(now);
        for addr in &info.listen_addrs {
            record.add_address(strip_p2p(addr));
        }
        record.confirmed = true;
        let became_ready = record.connected && !record.ready;
        if became_ready {
            record.ready = true;
        }
        let node = record.node;
        if serves_kad {
            for addr in info.listen_addrs {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer_id, strip_p2p(&addr));
            }
        }
        if became_ready {
            self.shared.peers.write().expect("peers lock").insert(node);
            info!(peer = %node.short(), "peer connected");
            self.emit(TransportEvent::PeerConnected(node));
            if !self.bootstrapped_dht {
                self.bootstrapped_dht = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
            }
        }
    }

    fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::RoutingUpdated { peer, .. } => trace!(peer = %peer, "dht routing updated"),
            other => trace!(event = ?other, "dht event"),
        }
    }

    fn on_mdns(&mut self, ev: mdns::Event) {
        let mdns::Event::Discovered(found) = ev else {
            return;
        };
        let now = Instant::now();
        for (peer, addr) in found {
            if peer == self.local
                || self.foreign.contains(&peer)
                || self.swarm.is_connected(&peer)
                || self.book.get(&peer).is_some_and(|r| r.is_blocked(now))
            {
                continue;
            }
            debug!(peer = %peer, %addr, "discovered on the local network");
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(peer = %peer, error = %e, "could not dial a discovered peer");
            }
        }
    }

    fn on_ping(&mut self, ev: ping::Event) {
        if let Ok(rtt) = ev.result {
            if let Some(r) = self.book.get_mut(&ev.peer) {
                r.rtt = Some(rtt);
                r.last_seen = Some(Instant::now());
            }
        }
    }

    /// Dials every bootstrap peer that is neither connected, blocked nor foreign.
    fn redial_bootstrap(&mut self) {
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
    fn maintain(&mut self) {
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
