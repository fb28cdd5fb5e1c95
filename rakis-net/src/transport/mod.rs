//! [`Libp2pTransport`]: the handle (this file), the task that owns the swarm (`task`) and what it
//! does with what peers send (`inbound`: validation, rate limits, blocking).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId};
use rakis_core::envelope::{open_cached, VerifiedSignatures};
use rakis_core::error::SharedError;
use rakis_core::{NodeId, NodeKey, Transport, TransportError, TransportEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, info_span, trace, warn, Instrument};

use crate::behaviour::{Behaviour, Protocols};
use crate::config::{bootstrap_peer_id, NetConfig};
use crate::error::NetError;
use crate::identity::{keypair_of, peer_id_of};
use crate::peer_book::{PeerBook, PeerEntry};
use crate::topics::{TopicKind, Topics};

mod inbound;
mod task;

use task::Task;

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
    #[cfg(feature = "test-utils")]
    WithholdAcknowledgements,
    Shutdown(Reply<()>),
}

/// State shared between the handle and the task.
#[derive(Default)]
struct Shared {
    /// Connected peers of this network (identify confirmed).
    peers: RwLock<BTreeSet<NodeId>>,
    /// Bound listen addresses (without the `/p2p/` suffix).
    listen: RwLock<Vec<Multiaddr>>,
    /// Bytes of messages in the event channel, not yet read by the node.
    queued_bytes: std::sync::atomic::AtomicUsize,
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
    /// Signatures checked by this transport (shared with its task and the node's inbox).
    verified: Arc<VerifiedSignatures>,
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
            .map_err(|e| NetError::Build(SharedError::new(e)))?
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
            .map_err(|e| NetError::Build(SharedError::new(e)))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();

        for (_, topic) in topics.all() {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(topic)
                .map_err(|e| NetError::Build(SharedError::new(e)))?;
        }

        let shared = Arc::new(Shared::default());
        let verified = Arc::new(VerifiedSignatures::default());
        let mut listeners: HashMap<ListenerId, Multiaddr> = HashMap::new();
        for addr in &config.listen_addresses {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    address: addr.to_string(),
                    reason: SharedError::new(e),
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
                        reason: match reason {
                            Err(e) => SharedError::new(e),
                            Ok(()) => SharedError::msg("the listener closed"),
                        },
                    })
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    return Err(NetError::Listen {
                        address: listeners
                            .get(&listener_id)
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                        reason: SharedError::new(error),
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
            verified: verified.clone(),
            #[cfg(feature = "test-utils")]
            withheld: None,
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
            verified,
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

    /// From now on, takes direct messages and never acknowledges them (holds their response
    /// channels open): lets tests play a peer that stalls whoever sends to it until the
    /// sender's request timeout. Feature `test-utils` only.
    #[cfg(feature = "test-utils")]
    pub async fn withhold_acknowledgements(&self) -> Result<(), TransportError> {
        self.commands
            .send(Command::WithholdAcknowledgements)
            .await
            .map_err(|_| TransportError::Closed)
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
        let v = open_cached(&bytes, &self.network_id, &self.verified)
            .map_err(TransportError::InvalidMessage)?;
        let topic = TopicKind::for_message_kind(v.envelope.message.kind());
        self.publish(topic, bytes).await
    }

    async fn send(&self, peer: &NodeId, bytes: Vec<u8>) -> Result<(), TransportError> {
        open_cached(&bytes, &self.network_id, &self.verified)
            .map_err(TransportError::InvalidMessage)?;
        self.send_bytes(peer, bytes).await
    }

    fn events(&self) -> BoxStream<'static, TransportEvent> {
        match self.events.lock().expect("events lock").take() {
            Some(mut rx) => {
                let shared = self.shared.clone();
                futures::stream::poll_fn(move |cx| {
                    let polled = rx.poll_recv(cx);
                    if let std::task::Poll::Ready(Some(TransportEvent::Message { bytes, .. })) =
                        &polled
                    {
                        shared
                            .queued_bytes
                            .fetch_sub(bytes.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                    polled
                })
                .boxed()
            }
            None => {
                warn!("Libp2pTransport::events called twice: the second stream is empty");
                futures::stream::empty().boxed()
            }
        }
    }

    fn verified_signatures(&self) -> Option<Arc<VerifiedSignatures>> {
        Some(self.verified.clone())
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

    /// The network of [`NetConfig::network_id`]: the topics and protocols are named after it.
    fn network_id(&self) -> Option<String> {
        Some(self.network_id.clone())
    }
}
