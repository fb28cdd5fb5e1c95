//! The node's configuration: serde (TOML, JSON…), with documented defaults and presets.
//!
//! Times are [`Duration`]s, written in files as human-readable strings (`"5s"`, `"500ms"`,
//! `"7days"`). Protocol messages and the [`Coordinator`](crate::coordinator::Coordinator) count in
//! milliseconds since the epoch (`*_ms`), as they appear on the wire.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::coordinator::{
    DEFAULT_RECONCILE_WINDOW_MS, DEFAULT_REVEAL_WINDOW_MS, DEFAULT_VERIFY_GRACE_MS,
};
use crate::envelope::DEFAULT_MAX_CLOCK_SKEW_MS;

/// The network id of [`NodeConfig::default`] when neither the configuration nor the transport
/// names one.
pub const DEFAULT_NETWORK_ID: &str = "rakis-mainnet";

/// Network-wide and node-local settings.
///
/// Every field has a default, so a file names only what it changes:
///
/// ```
/// use std::time::Duration;
/// let config: rakis_core::NodeConfig = toml::from_str(r#"
///     network_id = "rakis-testnet"
///     reveal_window = "3s"
///     max_open_requests = 500
///     [retention]
///     max_age = "2days"
///     interval = "1h"
/// "#).unwrap();
/// assert_eq!(config.reveal_window, Duration::from_secs(3));
/// assert_eq!(config.retention.unwrap().max_age, Duration::from_secs(2 * 24 * 3600));
/// assert_eq!(config.verify_grace, rakis_core::NodeConfig::default().verify_grace);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The network's id: messages of other networks are dropped. `None` (the default) takes the
    /// transport's network (a libp2p transport is bound to one), else
    /// [`DEFAULT_NETWORK_ID`]. A value that differs from the transport's is refused by
    /// [`NodeBuilder::build`](crate::NodeBuilder::build).
    pub network_id: Option<String>,
    /// Reveal window after each deadline (all nodes of a network should agree on it).
    #[serde(with = "humantime_serde")]
    pub reveal_window: Duration,
    /// Time allowed for re-embeddings after the reveal window.
    #[serde(with = "humantime_serde")]
    pub verify_grace: Duration,
    /// How long a node ready to decide waits for the other committers' inventories and fetches
    /// what they list (usually a round trip; the whole window only when a committer is silent).
    #[serde(with = "humantime_serde")]
    pub reconcile_window: Duration,
    /// Largest accepted difference between a message's timestamp and the local clock.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// How often the node announces its status to peers (`None`: never).
    #[serde(with = "humantime_serde")]
    pub status_interval: Option<Duration>,
    /// Capacity of the event channel (slow subscribers miss events past it).
    pub event_capacity: usize,
    /// Re-embedding tolerance override in bits (default: 8 per 384 bits of the embedding).
    pub reembed_tolerance_bits: Option<u32>,
    /// How much honest numerical difference the replay of a committer's sampling tolerates
    /// (band, positions beyond it; defaults measured, docs/consensus.md).
    #[serde(default)]
    pub sampling_policy: crate::consensus::sampling::ReplayPolicy,
    /// Expected generation time before any was measured: requests whose deadline is nearer are
    /// not answered.
    #[serde(with = "humantime_serde")]
    pub initial_generation_estimate: Duration,
    /// Most requests tracked at once; further requests are refused (closed ones are forgotten
    /// first, their records stay in the store).
    pub max_open_requests: usize,
    /// Most open requests of one requester taken from peers (fairness: one requester cannot
    /// fill the node); the host's own and its chain readers' requests are not limited.
    pub max_open_per_requester: usize,
    /// Longest time from now to the deadline of a request taken from peers.
    #[serde(with = "humantime_serde")]
    pub max_request_time: Duration,
    /// Budget, in bytes, for the state of tracked requests: each reserves the most it can make
    /// the node hold; a peer's request that would pass it is refused.
    pub max_state_bytes: usize,
    /// How long closed requests are kept in the store (`None`: for ever).
    pub retention: Option<Retention>,
}

/// Retention policy of the node's store: closed (completed or failed) requests whose deadline
/// is older than `max_age` are deleted, checked every `interval` (and once at start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Age, counted from the request's deadline, after which a closed request is deleted.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How often the store is pruned.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for Retention {
    /// Seven days, pruned hourly.
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(7 * 24 * 3600),
            interval: Duration::from_secs(3600),
        }
    }
}

impl Default for NodeConfig {
    /// Production defaults: a 5 s reveal window, 60 s for re-embeddings, 30 s of clock skew,
    /// status every 30 s, 10,000 open requests (64 per requester, deadlines at most 10 minutes
    /// ahead), closed requests kept 7 days.
    fn default() -> Self {
        NodeConfig {
            network_id: None,
            reveal_window: Duration::from_millis(DEFAULT_REVEAL_WINDOW_MS),
            verify_grace: Duration::from_millis(DEFAULT_VERIFY_GRACE_MS),
            reconcile_window: Duration::from_millis(DEFAULT_RECONCILE_WINDOW_MS),
            max_clock_skew: Duration::from_millis(DEFAULT_MAX_CLOCK_SKEW_MS),
            status_interval: Some(Duration::from_secs(30)),
            event_capacity: 1024,
            reembed_tolerance_bits: None,
            sampling_policy: Default::default(),
            initial_generation_estimate: Duration::ZERO,
            max_open_requests: crate::coordinator::DEFAULT_MAX_OPEN_REQUESTS,
            max_open_per_requester: crate::coordinator::DEFAULT_MAX_OPEN_PER_REQUESTER,
            max_request_time: Duration::from_millis(
                crate::coordinator::DEFAULT_MAX_REQUEST_TIME_MS,
            ),
            max_state_bytes: crate::coordinator::DEFAULT_MAX_STATE_BYTES,
            retention: Some(Retention::default()),
        }
    }
}

impl NodeConfig {
    /// A preset for tests, demos and several nodes on one machine: a 2 s reveal window, no
    /// status announcements, no retention.
    pub fn local_test() -> Self {
        NodeConfig {
            reveal_window: Duration::from_secs(2),
            status_interval: None,
            retention: None,
            ..NodeConfig::default()
        }
    }

    /// Sets the network id.
    pub fn with_network_id(mut self, id: impl Into<String>) -> Self {
        self.network_id = Some(id.into());
        self
    }
}
