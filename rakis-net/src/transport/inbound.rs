//! What peers send: gossip and direct messages validated, rate-limited and acknowledged;
//! identify, Kademlia, mDNS and ping events; misbehaving peers blocked.

use std::time::Instant;

use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::request_response::{self};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{identify, kad, mdns, ping, PeerId};
use rakis_core::envelope::open_cached;
use rakis_core::error::SharedError;
use rakis_core::protocol::Message;
use rakis_core::transport::Refusal;
use rakis_core::{TransportError, TransportEvent};
use tracing::{debug, info, trace, warn};

use super::task::{now_ms, Task, Verdict};
use super::{strip_p2p, MAX_FOREIGN_PEERS};
use crate::behaviour::GRAYLIST_THRESHOLD;
use crate::codec::Ack;
use crate::identity::node_id_of;
use crate::identity::peer_id_of;
use crate::topics::TopicKind;

impl Task {
    /// Counts one gossip message against the forwarding limit of `relay`, the connected peer it
    /// came from; `false` when over it. Never penalises the relay.
    fn within_relay_rate(&mut self, relay: PeerId, now: Instant) -> bool {
        let Some(record) = self.book.entry(relay, &self.config, now) else {
            return false;
        };
        record.last_seen = Some(now);
        if record.relay_bucket.try_take(now) {
            return true;
        }
        self.stats.rate_limited += 1;
        false
    }

    /// Counts one message against `peer`'s rate limit; `false` when it is over the limit (and
    /// blocks the peer after repeated violations).
    pub(super) fn within_rate(&mut self, peer: PeerId, now: Instant) -> bool {
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
    pub(super) fn on_invalid(&mut self, peer: PeerId, reason: &str, now: Instant) {
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

    pub(super) fn block(&mut self, peer: PeerId, reason: &str, now: Instant) {
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

    pub(super) fn on_gossip(&mut self, ev: gossipsub::Event) {
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

    pub(super) fn check_gossip(&mut self, source: PeerId, message: gossipsub::Message) -> Verdict {
        let now = Instant::now();
        if !self.within_relay_rate(source, now) {
            return Verdict::Ignore("relay over its forwarding limit");
        }
        let Some(kind) = self.topics.kind_of(&message.topic) else {
            return Verdict::Reject(format!("unknown topic {}", message.topic));
        };
        let verified = match open_cached(&message.data, &self.config.network_id, &self.verified) {
            Ok(v) => v,
            Err(e) => return Verdict::Reject(e.to_string()),
        };
        let env = verified.envelope;
        // The rate limit belongs to the signer, wherever the message entered: a flood stops at
        // the first honest hop, and the relays that carried some of it are not blamed.
        if let Ok(signer) = peer_id_of(&env.sender) {
            if signer != self.local {
                if self.book.get(&signer).is_some_and(|r| r.is_blocked(now)) {
                    return Verdict::Ignore("signer blocked");
                }
                if !self.within_rate(signer, now) {
                    return Verdict::Ignore("signer over its rate limit");
                }
            }
        }
        if matches!(
            env.message,
            Message::SyncRequest { .. } | Message::SyncResponse { .. }
        ) {
            // Sync is answered to its asker alone, over the direct channel: on gossip it would
            // make every node answer, or relay up to 512 KiB to every node.
            return Verdict::Reject(format!(
                "{} travels on the direct channel only",
                env.message.kind()
            ));
        }
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

    pub(super) fn on_direct(&mut self, ev: request_response::Event<Vec<u8>, Ack>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    #[cfg(feature = "test-utils")]
                    if let Some(withheld) = &mut self.withheld {
                        withheld.push(channel);
                        return;
                    }
                    let now = Instant::now();
                    let ack = if !self.within_rate(peer, now) {
                        Ack::RateLimited
                    } else {
                        match open_cached(&request, &self.config.network_id, &self.verified) {
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

    pub(super) fn on_identify(&mut self, ev: identify::Event) {
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

    pub(super) fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::RoutingUpdated { peer, .. } => trace!(peer = %peer, "dht routing updated"),
            other => trace!(event = ?other, "dht event"),
        }
    }

    pub(super) fn on_mdns(&mut self, ev: mdns::Event) {
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

    pub(super) fn on_ping(&mut self, ev: ping::Event) {
        if let Ok(rtt) = ev.result {
            if let Some(r) = self.book.get_mut(&ev.peer) {
                r.rtt = Some(rtt);
                r.last_seen = Some(Instant::now());
            }
        }
    }
}
