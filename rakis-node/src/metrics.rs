//! Prometheus metrics of a node and its gateway (text format at `/metrics`), built with
//! `prometheus-client` as rust-libp2p's metrics are.
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `rakis_request_events_total` | counter | `event`: received, generated, committed, reveal_opened, revealed, completed, failed, skipped |
//! | `rakis_requests_total` | counter | `outcome`: agreed, quorum_not_reached, no_agreement, invalid |
//! | `rakis_reveal_rejections_total` | counter | `reason`: commitment_mismatch, embedding_beyond_tolerance, unfaithful_sampling, … |
//! | `rakis_phase_duration_seconds` | histogram | `phase`: generation (received → generated), commit (received → committed), commit_window (received → reveals open), reveal_to_decision (reveals open → decided), total (received → decided) |
//! | `rakis_generated_tokens_total` | counter | |
//! | `rakis_generation_tokens_per_second` | gauge | (the last generation's speed) |
//! | `rakis_peers` | gauge | (gossip peers) |
//! | `rakis_open_requests` | gauge | (requests the node tracks) |
//! | `rakis_generation_queue_depth` | gauge | (generation jobs running or queued) |
//! | `rakis_gateway_requests_total` | counter | `endpoint`, `status` |
//! | `rakis_gateway_request_duration_seconds` | histogram | `endpoint` |
//! | `rakis_gateway_in_flight` | gauge | |

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rakis_core::{NodeEvent, QuorumFailure, RejectReason, RequestId};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabel {
    endpoint: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 5 ms to ~80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// When a request reached each phase on this node.
#[derive(Clone, Copy, Debug)]
struct Timings {
    received: Instant,
    reveal_opened: Option<Instant>,
}

/// Requests whose phase times are remembered at most (the oldest are forgotten first).
const MAX_TIMED: usize = 10_000;

/// A node's metrics.
pub struct Metrics {
    registry: Registry,
    request_events: Family<EventLabel, Counter>,
    outcomes: Family<OutcomeLabel, Counter>,
    rejections: Family<ReasonLabel, Counter>,
    phases: HistogramFamily<PhaseLabel>,
    tokens: Counter,
    tokens_per_second: Gauge<f64, AtomicU64>,
    peers: Gauge,
    open_requests: Gauge,
    queue_depth: Gauge,
    http_requests: Family<HttpLabel, Counter>,
    http_duration: HistogramFamily<EndpointLabel>,
    in_flight: Gauge,
    timings: Mutex<HashMap<RequestId, Timings>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered under the `rakis_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rakis");
        let request_events = Family::<EventLabel, Counter>::default();
        registry.register(
            "request_events",
            "What happened to requests on this node, by event",
            request_events.clone(),
        );
        let outcomes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "requests",
            "Requests decided on this node, by outcome",
            outcomes.clone(),
        );
        let rejections = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "reveal_rejections",
            "Reveals this node rejected, by reason",
            rejections.clone(),
        );
        let phases: HistogramFamily<PhaseLabel> =
            Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register(
            "phase_duration_seconds",
            "Time spent in each phase of a request, seen from this node",
            phases.clone(),
        );
        let tokens = Counter::default();
        registry.register(
            "generated_tokens",
            "Tokens this node generated",
            tokens.clone(),
        );
        let tokens_per_second = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "generation_tokens_per_second",
            "Speed of this node's last generation",
            tokens_per_second.clone(),
        );
        let peers = Gauge::default();
        registry.register("peers", "Gossip peers of this node", peers.clone());
        let open_requests = Gauge::default();
        registry.register(
            "open_requests",
            "Requests this node tracks",
            open_requests.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "generation_queue_depth",
            "Generation jobs running or queued on this node",
            queue_depth.clone(),
        );
        let http_requests = Family::<HttpLabel, Counter>::default();
        registry.register(
            "gateway_requests",
            "Gateway HTTP requests, by endpoint and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<EndpointLabel> =
            Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register(
            "gateway_request_duration_seconds",
            "Gateway HTTP request durations, by endpoint",
            http_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "gateway_in_flight",
            "Gateway requests being served",
            in_flight.clone(),
        );
        Metrics {
            registry,
            request_events,
            outcomes,
            rejections,
            phases,
            tokens,
            tokens_per_second,
            peers,
            open_requests,
            queue_depth,
            http_requests,
            http_duration,
            in_flight,
            timings: Mutex::new(HashMap::new()),
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn count(&self, event: &str) {
        self.request_events
            .get_or_create(&EventLabel {
                event: event.to_string(),
            })
            .inc();
    }

    fn phase(&self, phase: &str, since: Instant, now: Instant) {
        self.phases
            .get_or_create(&PhaseLabel {
                phase: phase.to_string(),
            })
            .observe(now.saturating_duration_since(since).as_secs_f64());
    }

    /// Counts a node event (call with every event, in order, as it arrives).
    pub fn observe(&self, event: &NodeEvent, now: Instant) {
        let mut timings = self.timings.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            NodeEvent::RequestReceived { request_id, .. } => {
                self.count("received");
                if timings.len() >= MAX_TIMED {
                    if let Some(oldest) = timings
                        .iter()
                        .min_by_key(|(_, t)| t.received)
                        .map(|(id, _)| *id)
                    {
                        timings.remove(&oldest);
                    }
                }
                timings.insert(
                    *request_id,
                    Timings {
                        received: now,
                        reveal_opened: None,
                    },
                );
            }
            NodeEvent::AnswerSkipped { .. } => self.count("skipped"),
            NodeEvent::Generated {
                request_id,
                tokens,
                tokens_per_sec,
            } => {
                self.count("generated");
                self.tokens.inc_by(u64::from(*tokens));
                self.tokens_per_second.set(f64::from(*tokens_per_sec));
                if let Some(t) = timings.get(request_id) {
                    self.phase("generation", t.received, now);
                }
            }
            NodeEvent::Committed { request_id, .. } => {
                self.count("committed");
                if let Some(t) = timings.get(request_id) {
                    self.phase("commit", t.received, now);
                }
            }
            NodeEvent::RevealOpened { request_id, .. } => {
                self.count("reveal_opened");
                if let Some(t) = timings.get_mut(request_id) {
                    t.reveal_opened = Some(now);
                    self.phase("commit_window", t.received, now);
                }
            }
            NodeEvent::RevealSeen { .. } => self.count("revealed"),
            NodeEvent::RevealRejected { reason, .. } => {
                self.rejections
                    .get_or_create(&ReasonLabel {
                        reason: reject_label(reason).to_string(),
                    })
                    .inc();
            }
            NodeEvent::Completed { request_id, .. } => {
                self.count("completed");
                self.outcome("agreed");
                if let Some(t) = timings.remove(request_id) {
                    if let Some(open) = t.reveal_opened {
                        self.phase("reveal_to_decision", open, now);
                    }
                    self.phase("total", t.received, now);
                }
            }
            NodeEvent::Failed { request_id, reason } => {
                self.count("failed");
                self.outcome(failure_label(reason));
                if let Some(t) = timings.remove(request_id) {
                    if let Some(open) = t.reveal_opened {
                        self.phase("reveal_to_decision", open, now);
                    }
                    self.phase("total", t.received, now);
                }
            }
            _ => {}
        }
    }

    fn outcome(&self, outcome: &str) {
        self.outcomes
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Sets the gauges read from the node and its transport.
    pub fn set_node_gauges(&self, peers: usize, open_requests: usize, queue_depth: u32) {
        self.peers.set(peers as i64);
        self.open_requests.set(open_requests as i64);
        self.queue_depth.set(i64::from(queue_depth));
    }

    /// Counts a finished gateway request.
    pub fn http_request(&self, endpoint: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabel {
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.http_duration
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_string(),
            })
            .observe(seconds);
    }

    /// Counts gateway requests starting (`+1`) or ending (`-1`).
    pub fn in_flight_changed(&self, by: i64) {
        self.in_flight.inc_by(by);
    }
}

/// A short label for a rejection reason.
pub fn reject_label(reason: &RejectReason) -> &'static str {
    match reason {
        RejectReason::CommitmentMismatch => "commitment_mismatch",
        RejectReason::EmbeddingBeyondTolerance { .. } => "embedding_beyond_tolerance",
        RejectReason::DimensionMismatch { .. } => "dimension_mismatch",
        RejectReason::EmbeddingModelMismatch { .. } => "embedding_model_mismatch",
        RejectReason::Equivocation { .. } => "equivocation",
        RejectReason::DuplicateInferenceId => "duplicate_inference_id",
        RejectReason::MissingCommit => "missing_commit",
        RejectReason::RequestMismatch => "request_mismatch",
        RejectReason::UnfaithfulSampling(_) => "unfaithful_sampling",
        _ => "other",
    }
}

fn failure_label(reason: &QuorumFailure) -> &'static str {
    match reason {
        QuorumFailure::QuorumNotReached { .. } => "quorum_not_reached",
        QuorumFailure::Consensus(_) => "no_agreement",
        _ => "invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn events_become_counters_and_phase_histograms() {
        let m = Metrics::new();
        let id = RequestId([7; 32]);
        let t0 = Instant::now();
        m.observe(
            &NodeEvent::RequestReceived {
                request_id: id,
                will_answer: true,
            },
            t0,
        );
        m.observe(
            &NodeEvent::Generated {
                request_id: id,
                tokens: 12,
                tokens_per_sec: 30.0,
            },
            t0 + Duration::from_millis(400),
        );
        m.observe(
            &NodeEvent::Failed {
                request_id: id,
                reason: QuorumFailure::QuorumNotReached {
                    committed: 1,
                    needed: 3,
                },
            },
            t0 + Duration::from_secs(2),
        );
        m.set_node_gauges(2, 5, 1);
        m.http_request("/v1/chat/completions", 504, 2.1);
        let text = m.render();
        for line in [
            "rakis_request_events_total{event=\"received\"} 1",
            "rakis_requests_total{outcome=\"quorum_not_reached\"} 1",
            "rakis_generated_tokens_total 12",
            "rakis_generation_tokens_per_second 30.0",
            "rakis_peers 2",
            "rakis_generation_queue_depth 1",
            "rakis_phase_duration_seconds_count{phase=\"total\"} 1",
            "rakis_phase_duration_seconds_sum{phase=\"generation\"} 0.4",
            "rakis_gateway_requests_total{endpoint=\"/v1/chat/completions\",status=\"504\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
