//! The serde configuration of [`Libp2pTransport`](crate::Libp2pTransport).

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::error::NetError;

/// A token bucket: `per_second` tokens flow in, at most `burst` are kept.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained rate, in messages per second.
    pub per_second: f64,
    /// Largest burst, in messages.
    pub burst: u32,
}

/// Settings of a [`Libp2pTransport`](crate::Libp2pTransport).
///
/// Every field has a default (`#[serde(default)]`), so a configuration file names only what
/// it changes:
///
/// ```
/// let config: rakis_net::NetConfig = serde_json::from_str(r#"{
///     "network_id": "rakis-testnet",
///     "listen_addresses": ["/ip4/0.0.0.0/tcp/4100"],
///     "mdns": false
/// }"#).unwrap();
/// assert_eq!(config.network_id, "rakis-testnet");
/// assert_eq!(config.heartbeat, rakis_net::NetConfig::default().heartbeat);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetConfig {
    /// The network's id: it names the gossip topics and the protocols, and every message must
    /// carry it. Must equal the node's `NodeConfig::network_id`.
    pub network_id: String,
    /// Addresses to listen on (`/ip4/../tcp/..` and `/ip4/../udp/../quic-v1`); port 0 picks a
    /// free port.
    pub listen_addresses: Vec<Multiaddr>,
    /// Peers dialled at start and redialled whenever the connection is lost; each address ends
    /// with `/p2p/<peer id>`.
    pub bootstrap_peers: Vec<Multiaddr>,
    /// Local-network discovery with mDNS.
    pub mdns: bool,
    /// Most established connections, all peers together.
    pub max_connections: u32,
    /// Most established connections to one peer.
    pub max_connections_per_peer: u32,
    /// Most connections being set up at once (incoming and outgoing each).
    pub max_pending_connections: u32,
    /// Per-signer limit on received messages: gossip counts against the node that signed the
    /// message (whoever relayed it), direct messages against the sender. A message over the
    /// limit is ignored (not forwarded, not delivered, not penalised by gossipsub) and counted;
    /// repeated violations block the signer. Relays are never blocked for what they forward.
    pub rate_limit: RateLimit,
    /// Per-relay limit on gossip received from one connected peer, whoever signed it: a bound
    /// on the signature checks one connection can cause (many signers' messages arrive through
    /// one relay, so it is set well above `rate_limit`). Over it, messages are ignored; the
    /// relay is not penalised.
    pub relay_rate_limit: RateLimit,
    /// Messages over the rate limit that one peer may cause within
    /// [`violation_window`](Self::violation_window) before it is disconnected and blocked.
    pub max_rate_violations: u32,
    /// The window over which rate-limit violations are counted.
    #[serde(with = "humantime_serde")]
    pub violation_window: Duration,
    /// Invalid messages (bad signature, wrong network, wrong topic, undecodable, too large)
    /// one peer may send before it is disconnected and blocked. Honest peers validate before
    /// forwarding, so they send none.
    pub max_invalid_messages: u32,
    /// How long a blocked peer stays blocked.
    #[serde(with = "humantime_serde")]
    pub block_duration: Duration,
    /// Gossip whose timestamp is further than this from the local clock is ignored (neither
    /// delivered nor forwarded); replays within it are caught by the duplicate cache, which
    /// remembers message ids for twice this long. Should equal the node's
    /// `NodeConfig::max_clock_skew`.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Gossipsub heartbeat (mesh maintenance, gossip emission).
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How often lost bootstrap peers are redialled and the DHT is refreshed.
    #[serde(with = "humantime_serde")]
    pub reconnect_interval: Duration,
    /// Timeout of one direct message (request-response) including its acknowledgement.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a connection without any protocol activity is kept open.
    #[serde(with = "humantime_serde")]
    pub idle_connection_timeout: Duration,
    /// Capacity of the event channel to the node; events beyond it are dropped and counted.
    pub event_buffer: usize,
    /// Most bytes of messages waiting in the event channel for the node to read them; messages
    /// beyond it are dropped and counted, so that a node that falls behind holds a bounded
    /// amount of memory whatever its peers send.
    pub event_buffer_bytes: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            network_id: "rakis-mainnet".into(),
            listen_addresses: vec![
                "/ip4/0.0.0.0/tcp/4001".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/4001/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap_peers: Vec::new(),
            mdns: true,
            max_connections: 128,
            max_connections_per_peer: 2,
            max_pending_connections: 32,
            rate_limit: RateLimit {
                per_second: 200.0,
                burst: 400,
            },
            relay_rate_limit: RateLimit {
                per_second: 2_000.0,
                burst: 4_000,
            },
            max_rate_violations: 500,
            violation_window: Duration::from_secs(10),
            max_invalid_messages: 5,
            block_duration: Duration::from_secs(3600),
            max_clock_skew: Duration::from_millis(rakis_core::envelope::DEFAULT_MAX_CLOCK_SKEW_MS),
            heartbeat: Duration::from_secs(1),
            reconnect_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            idle_connection_timeout: Duration::from_secs(60),
            event_buffer: 16_384,
            event_buffer_bytes: 64 * 1024 * 1024,
        }
    }
}

impl NetConfig {
    /// A preset for tests and local experiments on one machine: listen on 127.0.0.1 (TCP, a
    /// free port), no mDNS, a fast heartbeat (100 ms) and a fast redial (1 s).
    pub fn local_test(network_id: impl Into<String>) -> Self {
        NetConfig {
            network_id: network_id.into(),
            listen_addresses: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
            mdns: false,
            heartbeat: Duration::from_millis(100),
            reconnect_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            ..NetConfig::default()
        }
    }

    /// Adds bootstrap peers (builder style).
    pub fn with_bootstrap(mut self, peers: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.bootstrap_peers.extend(peers);
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), NetError> {
        let bad = |m: String| Err(NetError::Config(m));
        if self.network_id.trim().is_empty() {
            return bad("network id is empty".into());
        }
        if self
            .network_id
            .chars()
            .any(|c| c.is_whitespace() || c == '/')
        {
            return bad(format!(
                "network id {:?} must not contain whitespace or '/'",
                self.network_id
            ));
        }
        if self.listen_addresses.is_empty() {
            return bad("no listen address".into());
        }
        for addr in &self.bootstrap_peers {
            bootstrap_peer_id(addr)?;
        }
        if !(self.rate_limit.per_second > 0.0 && self.rate_limit.per_second.is_finite()) {
            return bad("rate_limit.per_second must be positive".into());
        }
        if self.rate_limit.burst == 0 {
            return bad("rate_limit.burst must be at least 1".into());
        }
        if !(self.relay_rate_limit.per_second > 0.0 && self.relay_rate_limit.per_second.is_finite())
            || self.relay_rate_limit.burst == 0
        {
            return bad("relay_rate_limit must be positive".into());
        }
        if self.max_connections == 0 || self.max_connections_per_peer == 0 {
            return bad("connection limits must be at least 1".into());
        }
        if self.heartbeat.is_zero() || self.reconnect_interval.is_zero() {
            return bad("heartbeat and reconnect interval must be positive".into());
        }
        if self.request_timeout.is_zero() {
            return bad("request timeout must be positive".into());
        }
        if self.max_clock_skew.is_zero() {
            return bad("max_clock_skew must be positive".into());
        }
        if self.event_buffer == 0 {
            return bad("event_buffer must be at least 1".into());
        }
        if self.event_buffer_bytes < rakis_core::envelope::MAX_MESSAGE_SIZE {
            return bad("event_buffer_bytes must hold at least one message (512 KiB)".into());
        }
        Ok(())
    }
}

/// The peer id at the end of a bootstrap address (`.../p2p/<peer id>`).
pub(crate) fn bootstrap_peer_id(addr: &Multiaddr) -> Result<PeerId, NetError> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(peer),
        _ => Err(NetError::Config(format!(
            "bootstrap address {addr} does not end with /p2p/<peer id>"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_local_test_are_valid_and_roundtrip_through_json() {
        for c in [NetConfig::default(), NetConfig::local_test("t")] {
            c.validate().unwrap();
            let json = serde_json::to_string(&c).unwrap();
            let back: NetConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, c);
        }
        let t = NetConfig::local_test("t");
        assert!(!t.mdns);
        assert_eq!(t.network_id, "t");
        assert_eq!(t.listen_addresses[0].to_string(), "/ip4/127.0.0.1/tcp/0");
        assert!(t.heartbeat < NetConfig::default().heartbeat);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let bad_id = NetConfig::local_test("has space");
        assert!(matches!(bad_id.validate(), Err(NetError::Config(_))));
        assert!(NetConfig::local_test("a/b").validate().is_err());
        assert!(NetConfig::local_test("").validate().is_err());
        let no_p2p =
            NetConfig::local_test("t").with_bootstrap(["/ip4/127.0.0.1/tcp/1".parse().unwrap()]);
        let err = no_p2p.validate().unwrap_err().to_string();
        assert!(err.contains("/p2p/"), "{err}");
        let mut zero_rate = NetConfig::local_test("t");
        zero_rate.rate_limit.per_second = 0.0;
        assert!(zero_rate.validate().is_err());
        let mut no_listen = NetConfig::local_test("t");
        no_listen.listen_addresses.clear();
        assert!(no_listen.validate().is_err());
    }

    #[test]
    fn bootstrap_peer_id_is_read_from_the_address() {
        let peer = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")
            .parse()
            .unwrap();
        assert_eq!(bootstrap_peer_id(&addr).unwrap(), peer);
    }
}
