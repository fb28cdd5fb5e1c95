//! The combined libp2p behaviour and its construction from a [`NetConfig`].

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::gossipsub::{
    self, MessageAuthenticity, MessageId, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
    ValidationMode,
};
use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, connection_limits, identify, kad, mdns, ping, request_response,
    StreamProtocol,
};
use rakis_core::envelope::MAX_MESSAGE_SIZE;
use sha2::{Digest, Sha256};

use crate::codec::DirectCodec;
use crate::config::NetConfig;
use crate::topics::Topics;

/// Gossip score below which gossipsub ignores everything a peer sends; a peer scored this low
/// is also blocked by the transport.
pub(crate) const GRAYLIST_THRESHOLD: f64 = -80.0;

/// Room for gossipsub's framing around the largest envelope.
const GOSSIP_FRAMING: usize = 16 * 1024;

/// Every protocol of a Rakis node.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) direct: request_response::Behaviour<DirectCodec>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) ping: ping::Behaviour,
}

/// Protocol names, all namespaced by network id.
#[derive(Clone, Debug)]
pub(crate) struct Protocols {
    /// Identify's protocol version: peers announcing another one belong to another network.
    pub(crate) identify_version: String,
    pub(crate) kad: StreamProtocol,
    pub(crate) direct: StreamProtocol,
}

impl Protocols {
    pub(crate) fn new(network_id: &str) -> Result<Self, String> {
        let proto = |name: &str| {
            StreamProtocol::try_from_owned(format!("/rakis/{network_id}/{name}"))
                .map_err(|e| e.to_string())
        };
        Ok(Protocols {
            identify_version: format!("/rakis/{network_id}/1.0.0"),
            kad: proto("kad/1.0.0")?,
            direct: proto("direct/1.0.0")?,
        })
    }
}

/// Message ids are content addresses: SHA-256 of the topic and the data. Binding the topic
/// means a copy of a valid message replayed on the wrong topic (and rejected there) cannot
/// shadow the genuine one.
pub(crate) fn message_id(message: &gossipsub::Message) -> MessageId {
    let mut h = Sha256::new();
    h.update(message.topic.as_str().as_bytes());
    h.update([0u8]);
    h.update(&message.data);
    MessageId::from(h.finalize().to_vec())
}

/// Gossipsub peer-scoring parameters: invalid messages (P4) weigh heavily and decay slowly;
/// mesh-delivery deficits (P3) are off because protocol traffic is bursty and quiet honest
/// peers must not be penalised; first deliveries (P2) and time in mesh (P1) earn a little.
/// Loopback addresses are exempt from the IP-colocation penalty (local test networks).
pub(crate) fn score_params(topics: &Topics) -> (PeerScoreParams, PeerScoreThresholds) {
    let mut params = PeerScoreParams {
        ip_colocation_factor_whitelist: HashSet::from([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]),
        ..PeerScoreParams::default()
    };
    for (_, topic) in topics.all() {
        params.topics.insert(
            topic.hash(),
            TopicScoreParams {
                topic_weight: 1.0,
                time_in_mesh_weight: 0.01,
                time_in_mesh_quantum: Duration::from_secs(1),
                time_in_mesh_cap: 100.0,
                first_message_deliveries_weight: 1.0,
                first_message_deliveries_decay: 0.5,
                first_message_deliveries_cap: 10.0,
                mesh_message_deliveries_weight: 0.0,
                mesh_failure_penalty_weight: 0.0,
                invalid_message_deliveries_weight: -10.0,
                invalid_message_deliveries_decay: 0.99,
                ..TopicScoreParams::default()
            },
        );
    }
    let thresholds = PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: GRAYLIST_THRESHOLD,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    (params, thresholds)
}

impl Behaviour {
    pub(crate) fn new(
        keypair: &Keypair,
        config: &NetConfig,
        topics: &Topics,
        protocols: &Protocols,
    ) -> Result<Self, String> {
        let peer_id = keypair.public().to_peer_id();
        let heartbeat = config.heartbeat;

        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(heartbeat)
            .heartbeat_initial_delay(heartbeat)
            // Rakis envelopes carry their own signature: gossipsub messages are anonymous
            // (no libp2p author, no sequence number) and content-addressed.
            .validation_mode(ValidationMode::Anonymous)
            .validate_messages()
            .message_id_fn(message_id)
            .max_transmit_size(MAX_MESSAGE_SIZE + GOSSIP_FRAMING)
            // Replays within the skew bound are caught by the cache, older ones by their
            // timestamp (as the node's inbox does).
            .duplicate_cache_time(2 * config.max_clock_skew)
            .build()
            .map_err(|e| format!("gossipsub config: {e}"))?;
        let mut gossipsub =
            gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossip_config)
                .map_err(|e| format!("gossipsub: {e}"))?;
        let (params, thresholds) = score_params(topics);
        gossipsub
            .with_peer_score(params, thresholds)
            .map_err(|e| format!("gossipsub peer scoring: {e}"))?;

        let direct = request_response::Behaviour::with_codec(
            DirectCodec,
            [(
                protocols.direct.clone(),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(config.request_timeout),
        );

        let identify = identify::Behaviour::new(
            identify::Config::new(protocols.identify_version.clone(), keypair.public())
                .with_agent_version(format!("rakis-net/{}", env!("CARGO_PKG_VERSION"))),
        );

        let mut kad_config = kad::Config::new(protocols.kad.clone());
        kad_config.set_periodic_bootstrap_interval(Some(config.reconnect_interval * 10));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Every Rakis node answers DHT queries (auto mode would wait for a confirmed
        // external address, which nodes on a LAN or loopback never get).
        kad.set_mode(Some(kad::Mode::Server));

        let mdns = if config.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| format!("mdns: {e}"))?,
            )
        } else {
            None
        };

        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_pending_connections))
            .with_max_pending_outgoing(Some(config.max_pending_connections));

        Ok(Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            blocked: allow_block_list::Behaviour::default(),
            gossipsub,
            direct,
            identify,
            kad,
            mdns: mdns.into(),
            ping: ping::Behaviour::new(ping::Config::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::TopicKind;

    #[test]
    fn message_ids_address_content_and_topic() {
        let msg = |topic: &str, data: &[u8]| gossipsub::Message {
            source: None,
            data: data.to_vec(),
            sequence_number: None,
            topic: gossipsub::TopicHash::from_raw(topic),
        };
        let a = message_id(&msg("rakis/n/commits", b"x"));
        assert_eq!(a, message_id(&msg("rakis/n/commits", b"x")));
        assert_ne!(a, message_id(&msg("rakis/n/commits", b"y")));
        assert_ne!(a, message_id(&msg("rakis/n/presence", b"x")));
    }

    #[test]
    fn score_parameters_are_accepted_by_gossipsub() {
        let topics = Topics::new("n");
        let (params, thresholds) = score_params(&topics);
        params.validate().unwrap();
        thresholds.validate().unwrap();
        assert_eq!(params.topics.len(), TopicKind::ALL.len());
        // A peer without earned score is graylisted by its third invalid message, one with the
        // best score it can earn on every topic by its fourth; one invalid message is not enough.
        let p = &params.topics[&topics.get(TopicKind::Requests).hash()];
        let best = TopicKind::ALL.len() as f64
            * (p.time_in_mesh_cap * p.time_in_mesh_weight
                + p.first_message_deliveries_cap * p.first_message_deliveries_weight);
        let invalid = |n: f64| n * n * p.invalid_message_deliveries_weight;
        assert!(invalid(3.0) < thresholds.graylist_threshold);
        assert!(best + invalid(4.0) < thresholds.graylist_threshold);
        assert!(invalid(1.0) > thresholds.graylist_threshold);
    }

    #[test]
    fn protocols_are_namespaced() {
        let p = Protocols::new("alpha").unwrap();
        assert_eq!(p.kad.as_ref(), "/rakis/alpha/kad/1.0.0");
        assert_eq!(p.direct.as_ref(), "/rakis/alpha/direct/1.0.0");
        assert_eq!(p.identify_version, "/rakis/alpha/1.0.0");
    }
}
