//! The event loop: a virtual clock, one seeded RNG, a time-ordered event queue, and the real
//! coordinators of every node.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, trace};

use crate::report::Report;
use crate::scenario::{Behaviour, Committee, Scenario};
use rakis_core::consensus::Salt;
use rakis_core::coordinator::EmbedPurpose;
use rakis_core::coordinator::{Action, Coordinator, CoordinatorConfig, Input, SyncedMessage};
use rakis_core::engine::{FinishReason, Generation};
use rakis_core::envelope::{open, seal_with_nonce, Inbox, Verified, DEFAULT_MAX_CLOCK_SKEW_MS};
use rakis_core::events::NodeEvent;
use rakis_core::membership::{Epoch, StaticMembership};
use rakis_core::protocol::RevealMsg;
use rakis_core::store::OwnOutput;
use rakis_core::testing::HashEmbedder;
use rakis_core::{
    BinaryEmbedding, Decision, Hash32, InferenceRequest, Message, NodeId, NodeKey, QuorumFailure,
    RequestId,
};

/// The model every simulated answering node serves.
pub const MODEL: &str = "sim-model";
/// Virtual time at the start of a run (ms since the Unix epoch).
pub const START_MS: u64 = 1_700_000_000_000;
/// Time an embedding job takes.
const EMBED_MS: u64 = 1;
/// The simulated network's id.
pub(crate) const NETWORK: &str = "rakis-sim";

/// One signed message on the simulated wire: sealed once by its sender (a real signed
/// envelope, timestamped with the sender's clock) and opened once (its signature checked); every
/// receiver passes it through its own [`Inbox`] (network, skew, duplicates), as a node's driver
/// does. Opening is a pure function of the bytes, so checking the signature once per envelope
/// instead of once per receiver changes no outcome.
pub(crate) struct Wire {
    /// Length of the wire bytes.
    len: usize,
    /// The opened envelope.
    v: Verified,
}

impl Wire {
    fn message(&self) -> &Message {
        &self.v.envelope.message
    }
}

enum Ev {
    Submit(usize),
    Deliver {
        to: usize,
        wire: Arc<Wire>,
        replayed: bool,
    },
    Input {
        to: usize,
        input: Input,
    },
    Tick {
        to: usize,
    },
    /// A held-back broadcast (late commit).
    Send {
        from: usize,
        msg: Message,
    },
    /// A replayer re-broadcasts a message it received: the same signed envelope.
    Replay {
        by: usize,
        wire: Arc<Wire>,
    },
    SyncAsk {
        peer: usize,
        asker: usize,
        request_id: RequestId,
    },
    Synced {
        to: usize,
        batch: Vec<Arc<Wire>>,
    },
    /// A flooder sends its next request.
    Flood {
        from: usize,
    },
    /// A steering group decides which of its held reveals to publish.
    Steer {
        group: u32,
        request_id: RequestId,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // Earliest first in a max-heap.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct Node {
    coord: Coordinator,
    id: NodeId,
    /// The key that signs the node's envelopes.
    key: NodeKey,
    /// Network, skew and duplicate checks of everything the node receives.
    inbox: Inbox,
    /// Whether the node is in the membership (always, in an open network).
    member: bool,
    behaviour: Behaviour,
    tick_at: Option<u64>,
    /// What a driver keeps to answer sync requests: the signed envelopes sent or received, per
    /// request.
    log: HashMap<RequestId, Vec<Arc<Wire>>>,
    /// A freerider's reveal, waiting for someone else's to copy.
    held_reveal: HashMap<RequestId, RevealMsg>,
    /// Outputs this node saw revealed, per prompt (for `CopyPriorAnswer`).
    seen_answers: HashMap<usize, String>,
    /// The node's clock offset from true time (ms).
    offset: i64,
    /// The node's own outputs as its coordinator stored them (for salt grinding).
    own_outputs: HashMap<RequestId, OwnOutput>,
    /// A grinder's chosen salt per request.
    ground: HashMap<RequestId, Salt>,
    /// A steering node's reveals, held until its group decides.
    steer_held: HashMap<RequestId, RevealMsg>,
}

enum NodeResult {
    Completed {
        at: u64,
        digest: Hash32,
        selected: NodeId,
        output: String,
        accepted: Vec<NodeId>,
    },
    Failed(QuorumFailure),
}

struct Req {
    prompt: usize,
    id: RequestId,
    deadline: u64,
    committee: Vec<usize>,
    /// The node that made the request.
    requester: usize,
    results: BTreeMap<usize, NodeResult>,
}

pub(crate) struct Simulation {
    sc: Scenario,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    index: HashMap<NodeId, usize>,
    rng: StdRng,
    reqs: Vec<Req>,
    by_id: HashMap<RequestId, usize>,
    /// (request, text) of every answer produced by the honest answer function.
    honest_texts: HashSet<(usize, String)>,
    /// Requests where an adversary's rewrite of a model's answer changed nothing.
    unchanged_lies: HashSet<usize>,
    embedder: HashEmbedder,
    embed_cache: HashMap<String, Option<BinaryEmbedding>>,
    /// Replays by score job (its debug form without the deadline), with a [`crate::SimModel`].
    score_cache: HashMap<String, Result<rakis_core::Score, rakis_core::EngineError>>,
    all: Vec<usize>,
    messages: u64,
    sends: u64,
    bytes: u64,
    lost: u64,
    sync_requests: u64,
    events: u64,
    /// Deliveries the receiver's inbox dropped (duplicates, skew).
    dropped: u64,
    /// The membership's epoch, when committees are drawn from one.
    epoch: Option<Arc<Epoch>>,
    /// Nodes outside the membership.
    outsiders: Vec<usize>,
    /// Requests sent by flooders (routed to every node, not reported).
    flood_ids: HashSet<RequestId>,
    /// (request, group) decisions scheduled for steering groups.
    steer_scheduled: HashSet<(RequestId, u32)>,
}

fn mix(a: u64, b: u64) -> u64 {
    // splitmix64 of a combination: distinct, well-spread seeds per node and request.
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

mod adversary;
mod judge;

impl Simulation {
    pub(crate) fn new(sc: Scenario) -> Self {
        let key_of = |i: usize| NodeKey::from_seed(mix(sc.seed, i as u64));
        let membership = match sc.committee {
            Committee::All => None,
            Committee::Drawn => {
                let members = (0..sc.nodes)
                    .filter(|i| !sc.outsiders.contains(i))
                    .map(|i| (key_of(i).node_id(), sc.weight_of(i)));
                Some(Arc::new(
                    StaticMembership::new(members).expect("a scenario has members"),
                ))
            }
        };
        let nodes: Vec<Node> = (0..sc.nodes)
            .map(|i| {
                let key = key_of(i);
                let member = !sc.outsiders.contains(&i);
                let config = CoordinatorConfig {
                    network_id: NETWORK.into(),
                    served_models: if sc.answers(i) {
                        vec![MODEL.to_string()]
                    } else {
                        Vec::new()
                    },
                    workers: 1,
                    embedding_model: Some(sc.frame.embedding_model.clone()),
                    reveal_window_ms: sc.reveal_window_ms,
                    verify_grace_ms: sc.verify_grace_ms,
                    max_open_requests: sc.max_open_requests,
                    max_open_per_requester: sc.max_open_per_requester,
                    ..CoordinatorConfig::default()
                };
                let mut coord = Coordinator::with_rng_seed(
                    key.clone(),
                    config,
                    mix(sc.seed ^ 0xC0FFEE, i as u64),
                );
                if let (Some(m), true) = (&membership, member) {
                    coord = coord.with_membership(m.clone());
                }
                Node {
                    id: key.node_id(),
                    coord,
                    key,
                    inbox: Inbox::new(NETWORK, DEFAULT_MAX_CLOCK_SKEW_MS),
                    member,
                    behaviour: sc.behaviour_of(i).clone(),
                    tick_at: None,
                    log: HashMap::new(),
                    held_reveal: HashMap::new(),
                    seen_answers: HashMap::new(),
                    offset: sc.clock_offset_of(i),
                    own_outputs: HashMap::new(),
                    ground: HashMap::new(),
                    steer_held: HashMap::new(),
                }
            })
            .collect();
        let index = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        let outsiders = sc.outsiders.iter().copied().collect();
        let mut sim = Simulation {
            epoch: membership.map(|m| Arc::new(m.epoch().clone())),
            outsiders,
            dropped: 0,
            rng: StdRng::seed_from_u64(sc.seed),
            all: (0..sc.nodes).collect(),
            embedder: HashEmbedder::new(&sc.frame.embedding_model, 384),
            sc,
            now: START_MS,
            seq: 0,
            heap: BinaryHeap::new(),
            nodes,
            index,
            reqs: Vec::new(),
            by_id: HashMap::new(),
            honest_texts: HashSet::new(),
            unchanged_lies: HashSet::new(),
            embed_cache: HashMap::new(),
            score_cache: HashMap::new(),
            messages: 0,
            sends: 0,
            bytes: 0,
            lost: 0,
            sync_requests: 0,
            events: 0,
            flood_ids: HashSet::new(),
            steer_scheduled: HashSet::new(),
        };
        for k in 0..sim.sc.requests {
            let at = START_MS + k as u64 * sim.sc.request_interval_ms;
            sim.push(at, Ev::Submit(k));
        }
        for i in 0..sim.nodes.len() {
            if matches!(sim.nodes[i].behaviour, Behaviour::Flood { .. }) {
                sim.push(START_MS, Ev::Flood { from: i });
            }
        }
        sim
    }

    /// Node `i`'s clock.
    fn local(&self, i: usize) -> u64 {
        self.now.saturating_add_signed(self.nodes[i].offset)
    }

    /// The last scenario request's deadline (true time).
    fn last_deadline(&self) -> u64 {
        START_MS
            + self.sc.requests.saturating_sub(1) as u64 * self.sc.request_interval_ms
            + self.sc.frame.max_time_ms
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// The run's end: after the last request's verification grace, with a margin.
    fn horizon(&self) -> u64 {
        START_MS
            + self.sc.requests as u64 * self.sc.request_interval_ms
            + self.sc.frame.max_time_ms
            + 2 * (self.sc.reveal_window_ms + self.sc.verify_grace_ms)
            + 10_000
    }

    pub(crate) fn run(mut self) -> Report {
        let horizon = self.horizon();
        while let Some(s) = self.heap.pop() {
            if s.at > horizon {
                break;
            }
            self.now = s.at;
            self.events += 1;
            self.step(s.at, s.ev);
        }
        self.report()
    }

    fn step(&mut self, at: u64, ev: Ev) {
        match ev {
            Ev::Submit(k) => self.submit(k),
            Ev::Deliver { to, wire, replayed } => self.deliver(to, wire, replayed),
            Ev::Input { to, input } => self.feed(to, input, false),
            Ev::Tick { to } => {
                if self.nodes[to].tick_at == Some(at) {
                    self.nodes[to].tick_at = None;
                    self.feed(to, Input::Tick, true);
                }
            }
            Ev::Send { from, msg } => self.broadcast(from, msg),
            Ev::Replay { by, wire } => {
                let from = wire.v.envelope.sender;
                let targets = self.targets(wire.message(), by);
                self.sends += 1;
                for to in targets {
                    if to == by || self.nodes[to].id == from {
                        continue;
                    }
                    self.send_to(by, to, wire.len, |_| Ev::Deliver {
                        to,
                        wire: wire.clone(),
                        replayed: true,
                    });
                }
            }
            Ev::SyncAsk {
                peer,
                asker,
                request_id,
            } => {
                let batch = self.nodes[peer]
                    .log
                    .get(&request_id)
                    .cloned()
                    .unwrap_or_default();
                if batch.is_empty() {
                    return;
                }
                let size = batch.iter().map(|w| w.len + 8).sum();
                self.sends += 1;
                self.send_to(peer, asker, size, |_| Ev::Synced { to: asker, batch });
            }
            Ev::Synced { to, batch } => self.synced(to, batch),
            Ev::Flood { from } => self.flood(from),
            Ev::Steer { group, request_id } => self.steer(group, request_id),
        }
    }

    fn submit(&mut self, k: usize) {
        let prompt = k % self.sc.corpus.len();
        // The requester: in an open network the first honest node of the (whole) committee; with
        // a membership a random honest member (often not in the committee its request draws).
        let requester = match &self.epoch {
            None => self
                .all
                .iter()
                .copied()
                .find(|&i| self.nodes[i].behaviour.is_honest())
                .unwrap_or(0),
            Some(_) => {
                let honest: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].member && self.nodes[i].behaviour.is_honest())
                    .collect();
                // Drawn apart from the network's generator: the same requesters whatever else
                // the run sends.
                let pick = mix(self.sc.seed ^ 0x5EED, k as u64) % honest.len().max(1) as u64;
                honest.get(pick as usize).copied().unwrap_or(0)
            }
        };
        let mut request = InferenceRequest::new(
            self.sc.corpus.topic(prompt).prompt,
            vec![MODEL.to_string()],
            self.nodes[requester].id,
            self.local(requester),
        );
        request.nonce = mix(self.sc.seed, k as u64);
        if self.sc.model.is_some() {
            (request.temperature, request.top_p, request.max_tokens) = self.sc.sampling;
        }
        request.frame = self.sc.frame.clone();
        let id = request.id();
        let committee = match &self.epoch {
            None => self.all.clone(),
            Some(epoch) => epoch
                .committee(&request)
                .members
                .iter()
                .filter_map(|n| self.index.get(n).copied())
                .collect(),
        };
        debug!(request = %id.short(), k, committee = committee.len(), "submit");
        self.by_id.insert(id, self.reqs.len());
        self.reqs.push(Req {
            prompt,
            id,
            // In true time: the requester stamped the request with its own clock.
            deadline: request
                .deadline_ms()
                .saturating_add_signed(-self.nodes[requester].offset),
            committee,
            requester,
            results: BTreeMap::new(),
        });
        self.feed(requester, Input::LocalRequest(request), false);
    }

    /// Who receives a message of node `from`: the request's committee (and its requester);
    /// nodes outside the membership also hear the request and the members' commits and
    /// reveals (they listen on the same topics), and send what they make to the committee.
    fn targets(&self, msg: &Message, from: usize) -> Vec<usize> {
        let Some(id) = msg.request_id() else {
            return Vec::new();
        };
        match self.by_id.get(&id) {
            Some(&k) => {
                let r = &self.reqs[k];
                let mut t = r.committee.clone();
                if !t.contains(&r.requester) {
                    t.push(r.requester);
                }
                if self.nodes[from].member
                    && matches!(
                        msg,
                        Message::Request(_) | Message::Commit(_) | Message::Reveal(_)
                    )
                {
                    t.extend(self.outsiders.iter().copied());
                }
                t
            }
            None if self.flood_ids.contains(&id) => self.all.clone(),
            None => Vec::new(),
        }
    }

    /// Sends one delivery over the link `from → to`: lost, partitioned, or scheduled after the
    /// link's latency.
    fn send_to(&mut self, from: usize, to: usize, size: usize, ev: impl FnOnce(()) -> Ev) {
        let net = &self.sc.network;
        let rel = self.now - START_MS;
        let cut = net.partitions.iter().any(|p| {
            rel >= p.from_ms && rel < p.until_ms && {
                let g = |i: usize| p.groups.iter().position(|g| g.contains(&i));
                g(from) != g(to)
            }
        });
        if cut || (net.loss > 0.0 && self.rng.gen_bool(net.loss.min(1.0))) {
            self.lost += 1;
            return;
        }
        let delay = net.latency_ms
            + if net.jitter_ms > 0 {
                self.rng.gen_range(0..=net.jitter_ms)
            } else {
                0
            };
        self.messages += 1;
        self.bytes += size as u64;
        let ev = ev(());
        self.push(self.now + delay, ev);
    }

    fn feed(&mut self, i: usize, input: Input, after_tick: bool) {
        let now = self.local(i);
        let actions = self.nodes[i].coord.handle(now, input);
        self.apply(i, actions);
        if let Some(t) = self.nodes[i].coord.next_wakeup() {
            // The wakeup is on the node's clock.
            let t = t.saturating_add_signed(-self.nodes[i].offset);
            let t = if after_tick {
                t.max(self.now + 1)
            } else {
                t.max(self.now)
            };
            if self.nodes[i].tick_at.is_none_or(|x| t < x) {
                self.nodes[i].tick_at = Some(t);
                self.push(t, Ev::Tick { to: i });
            }
        }
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Broadcast(m) => self.outgoing(i, m),
                Action::Generate(job) => {
                    let (text, token_ids, finish) = self.answer(i, &job);
                    let took = self.sc.generation_ms
                        + if self.sc.generation_jitter_ms > 0 {
                            self.rng.gen_range(0..=self.sc.generation_jitter_ms)
                        } else {
                            0
                        };
                    let generation = Generation {
                        tokens: if token_ids.is_empty() {
                            text.split_whitespace().count() as u32
                        } else {
                            token_ids.len() as u32
                        },
                        text,
                        model: job.model.clone(),
                        prompt_tokens: 0,
                        token_ids,
                        tokens_per_sec: 0.0,
                        finish,
                    };
                    self.push(
                        self.now + took,
                        Ev::Input {
                            to: i,
                            input: Input::Generated {
                                request_id: job.request_id,
                                result: Ok(generation),
                            },
                        },
                    );
                }
                Action::Embed {
                    request_id,
                    purpose,
                    text,
                } => {
                    let text = match (&self.nodes[i].behaviour, &purpose) {
                        (Behaviour::WrongEmbedding, EmbedPurpose::Own) => {
                            let p = self.by_id.get(&request_id).map(|&k| self.reqs[k].prompt);
                            let mut rng = StdRng::seed_from_u64(mix(i as u64, 7));
                            self.sc.corpus.off_topic(p.unwrap_or(0), &mut rng)
                        }
                        _ => text,
                    };
                    let result = self.embed(&text);
                    self.push(
                        self.now + EMBED_MS,
                        Ev::Input {
                            to: i,
                            input: Input::Embedded {
                                request_id,
                                purpose,
                                result,
                            },
                        },
                    );
                }
                // With a model the replay is real (cached per job: the verdict is a function
                // of it); scripted answers have no token ids to replay.
                Action::Score {
                    node,
                    commitment,
                    job,
                } => {
                    let result = self.score(&job);
                    self.push(
                        self.now,
                        Ev::Input {
                            to: i,
                            input: Input::Scored {
                                request_id: job.request_id,
                                node,
                                commitment,
                                result,
                            },
                        },
                    )
                }
                Action::Persist(_) => {}
                Action::PersistOwnOutput(own) => {
                    self.nodes[i]
                        .own_outputs
                        .insert(own.request_id, own.clone());
                    let now = self.local(i);
                    let next = self.nodes[i].coord.handle(
                        now,
                        Input::OwnOutputPersisted {
                            request_id: own.request_id,
                            result: Ok(()),
                        },
                    );
                    self.apply(i, next);
                }
                Action::Emit(e) => self.record(i, e),
                // The simulator has no chain: `Misbehaved` events count what nodes saw.
                Action::Report(_) => {}
                Action::RequestSync { peer, request_id } => {
                    if !self.sc.sync {
                        continue;
                    }
                    let Some(&peer) = self.index.get(&peer) else {
                        continue;
                    };
                    self.sync_requests += 1;
                    self.sends += 1;
                    let size = encoded_len(&Message::SyncRequest { request_id });
                    self.send_to(i, peer, size, |_| Ev::SyncAsk {
                        peer,
                        asker: i,
                        request_id,
                    });
                }
            }
        }
    }

    fn score(
        &mut self,
        job: &rakis_core::ScoreJob,
    ) -> Result<rakis_core::Score, rakis_core::EngineError> {
        let Some(model) = &self.sc.model else {
            return Err(rakis_core::EngineError::Unsupported(
                "the simulator's scripted engine does not score".into(),
            ));
        };
        // The deadline is the only field that differs between nodes scoring one reveal.
        let key = format!(
            "{:?}",
            rakis_core::ScoreJob {
                deadline_ms: 0,
                ..job.clone()
            }
        );
        if let Some(s) = self.score_cache.get(&key) {
            return s.clone();
        }
        let s = model.0.score(job);
        self.score_cache.insert(key, s.clone());
        s
    }

    fn embed(&mut self, text: &str) -> Result<BinaryEmbedding, rakis_core::EmbedError> {
        if let Some(e) = self.embed_cache.get(text) {
            return e.clone().ok_or(rakis_core::EmbedError::Empty);
        }
        let e = match &self.sc.embedder {
            Some(f) => (f.0)(text).ok(),
            None => self.embedder.embed_binary_one(text).ok(),
        };
        self.embed_cache.insert(text.to_string(), e.clone());
        e.ok_or(rakis_core::EmbedError::Empty)
    }

    fn broadcast(&mut self, i: usize, m: Message) {
        self.broadcast_where(i, m, |_| true);
    }

    /// Broadcasts to the request's committee members `to` for which `only(to)` holds: one
    /// envelope, signed by node `i` with its clock.
    fn broadcast_where(&mut self, i: usize, m: Message, only: impl Fn(usize) -> bool) {
        let Some(id) = m.request_id() else {
            return;
        };
        let targets = self.targets(&m, i);
        let Some(wire) = self.seal(i, m) else {
            return;
        };
        self.log(i, id, &wire);
        self.sends += 1;
        for to in targets {
            if to == i || !only(to) {
                continue;
            }
            self.send_to(i, to, wire.len, |_| Ev::Deliver {
                to,
                wire: wire.clone(),
                replayed: false,
            });
        }
    }

    /// Node `i` signs `m` at its local time (and the inbox remembers its own envelope, so that
    /// echoes are dropped).
    fn seal(&mut self, i: usize, m: Message) -> Option<Arc<Wire>> {
        let now = self.local(i);
        // Nonces from a counter, not the network's generator: envelopes change no random draw.
        let nonce = mix(self.sc.seed ^ 0xE7E1, self.sends);
        let bytes = match seal_with_nonce(&self.nodes[i].key, NETWORK, now, nonce, m) {
            Ok(b) => b,
            Err(e) => {
                debug!(node = i, error = %e, "message not sealed");
                return None;
            }
        };
        let v = open(&bytes, NETWORK).expect("an envelope sealed here opens");
        self.nodes[i].inbox.remember_own(&bytes, now);
        Some(Arc::new(Wire {
            len: bytes.len(),
            v,
        }))
    }

    /// What node `i`'s driver logs for sync answers (each envelope once).
    fn log(&mut self, i: usize, id: RequestId, wire: &Arc<Wire>) {
        if !wire.message().is_syncable() {
            return;
        }
        let list = self.nodes[i].log.entry(id).or_default();
        if !list.iter().any(|w| w.v.id == wire.v.id) {
            list.push(wire.clone());
        }
    }

    fn deliver(&mut self, to: usize, wire: Arc<Wire>, replayed: bool) {
        let now = self.local(to);
        let v = match self.nodes[to].inbox.accept_opened(wire.v.clone(), now) {
            Ok(v) => v,
            Err(e) => {
                self.dropped += 1;
                trace!(node = to, error = %e, "delivery dropped by the inbox");
                return;
            }
        };
        let from = v.envelope.sender;
        if let Some(id) = v.envelope.message.request_id() {
            self.log(to, id, &wire);
        }
        if let Message::Reveal(r) = &v.envelope.message {
            let rid = r.reveal.request_id;
            if let Some(&k) = self.by_id.get(&rid) {
                let prompt = self.reqs[k].prompt;
                self.nodes[to]
                    .seen_answers
                    .insert(prompt, r.reveal.output.clone());
            }
            if let Some(mut own) = self.nodes[to].held_reveal.remove(&rid) {
                // The freerider copies the first reveal it sees.
                own.reveal.output = r.reveal.output.clone();
                own.reveal.embedding = r.reveal.embedding.clone();
                self.broadcast(to, Message::Reveal(own));
            }
        }
        if let (Behaviour::Replay { delay_ms }, false) = (&self.nodes[to].behaviour, replayed) {
            let at = self.now + delay_ms;
            self.push(at, Ev::Replay { by: to, wire });
        }
        self.feed(
            to,
            Input::Message {
                from,
                message: v.envelope.message,
            },
            false,
        );
    }

    /// A sync response: each relayed envelope through the inbox (relayed copies of messages
    /// heard before are kept: the coordinator judges them by their signed time), then one batch.
    fn synced(&mut self, to: usize, batch: Vec<Arc<Wire>>) {
        let now = self.local(to);
        let mut input = Vec::new();
        for wire in batch {
            let Ok(v) = self.nodes[to]
                .inbox
                .accept_relayed_opened(wire.v.clone(), now)
            else {
                self.dropped += 1;
                continue;
            };
            let Some(id) = v.envelope.message.request_id() else {
                continue;
            };
            self.log(to, id, &wire);
            input.push(SyncedMessage {
                from: v.envelope.sender,
                sent_at_ms: v.envelope.timestamp_ms,
                message: v.envelope.message,
            });
        }
        if !input.is_empty() {
            self.feed(to, Input::Synced(input), false);
        }
    }

    fn record(&mut self, i: usize, e: NodeEvent) {
        match e {
            NodeEvent::Completed {
                request_id,
                outcome,
            } => {
                let Some(&k) = self.by_id.get(&request_id) else {
                    return;
                };
                let (Decision::Agreed { result_digest, .. }, Some(sel)) =
                    (&outcome.decision, outcome.selected())
                else {
                    return;
                };
                let r = NodeResult::Completed {
                    at: self.now,
                    digest: *result_digest,
                    selected: sel.node,
                    output: sel.output.clone(),
                    accepted: outcome.accepted.iter().map(|a| a.node).collect(),
                };
                self.reqs[k].results.insert(i, r);
            }
            NodeEvent::Failed { request_id, reason } => {
                if let Some(&k) = self.by_id.get(&request_id) {
                    self.reqs[k].results.insert(i, NodeResult::Failed(reason));
                }
            }
            _ => {}
        }
    }
}

fn encoded_len(m: &Message) -> usize {
    postcard::experimental::serialized_size(m).unwrap_or(0)
}
