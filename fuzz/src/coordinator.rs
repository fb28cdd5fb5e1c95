//! The coordinator driven by an arbitrary sequence of operations: local requests, messages
//! (built from real fixtures, tampered, or decoded from fuzz bytes), relayed batches, answers to
//! its generation, embedding and storage jobs (successful or failed, in any order), and a
//! virtual clock. After every input the invariants below are checked.
//!
//! Invariants:
//! * every action about a request (jobs, writes, broadcasts, events other than refusals) is
//!   about a tracked request;
//! * the coordinator tracks at most `max_open_requests` requests;
//! * per request, this node broadcasts at most one commit (before the deadline), one reveal
//!   (which opens that commit), one signed result (which verifies), and runs at most one
//!   generation job; every own output it asks to store opens with its own key;
//! * it never asks itself for a sync;
//! * a completed request stays completed with the same result.

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Arbitrary, Unstructured};
use rakis_core::coordinator::EmbedPurpose;
use rakis_core::protocol::{CommitMsg, PeerStatus};
use rakis_core::testing::{HashEmbedder, QuorumFixture};
use rakis_core::{FinishReason, Generation, GenerationJob, NodeEvent};
use rakis_core::{EmbedError, EngineError, Hash32, InferenceRequest, Message, NodeId, NodeKey, Phase, RejectReason, RequestId};
use rakis_core::coordinator::{Action, Coordinator, CoordinatorConfig, Input, SyncedMessage};
use rakis_core::store::{OwnOutput};

use crate::seeds::{fixtures, natural_signer, FIXTURE_NODES};

/// The model the fixtures' requests accept.
const MODEL: &str = "smollm2-135m";
/// Most operations run per input.
const MAX_OPS: usize = 128;

/// How the fuzzed node is configured.
#[derive(Arbitrary, Debug)]
pub struct Setup {
    /// Serves the fixtures' model.
    pub answers: bool,
    /// Has an embedder (verifies).
    pub embeds: bool,
    /// Generation workers (taken modulo 3).
    pub workers: u8,
    /// Most tracked requests (taken as 1 + value modulo 4).
    pub max_open: u8,
}

/// A message built from the fixtures.
#[derive(Arbitrary, Debug)]
pub enum Msg {
    /// A fixture request (0, 1), or one requested by the fuzzed node itself (2).
    Request {
        /// Which.
        req: u8,
    },
    /// A fixture request with one field changed.
    MutatedRequest {
        /// Which.
        req: u8,
        /// Which field.
        field: u8,
        /// Its new value.
        value: u64,
    },
    /// A fixture node's commit.
    Commit {
        /// Which fixture.
        fx: u8,
        /// Which node.
        node: u8,
    },
    /// A fixture node's commit naming another model.
    CommitOtherModel {
        /// Which fixture.
        fx: u8,
        /// Which node.
        node: u8,
    },
    /// A fixture node's reveal.
    Reveal {
        /// Which fixture.
        fx: u8,
        /// Which node.
        node: u8,
    },
    /// A fixture node's reveal with one field changed.
    TamperedReveal {
        /// Which fixture.
        fx: u8,
        /// Which node.
        node: u8,
        /// Which field.
        what: u8,
    },
    /// A fixture node's signed result.
    Result {
        /// Which fixture.
        fx: u8,
        /// Which node.
        node: u8,
    },
    /// A fixture node's signed result with its output changed.
    ForgedResult {
        /// Which fixture.
        fx: u8,
        /// Which node.
        node: u8,
    },
    /// A rejection announcement.
    Rejected {
        /// Which fixture.
        fx: u8,
        /// Which node.
        node: u8,
    },
    /// A peer status.
    Status {
        /// Its load.
        load: u32,
    },
    /// A sync request.
    Sync {
        /// Which fixture.
        fx: u8,
    },
    /// A message decoded from fuzz bytes (dropped when they do not decode).
    Decoded(Vec<u8>),
}

/// One operation.
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// A request submitted locally.
    Local {
        /// Which (as [`Msg::Request`]).
        req: u8,
    },
    /// A message from its natural signer, or from node `spoof` (fixture nodes, then the fuzzed
    /// node itself, then a stranger).
    Deliver {
        /// The message.
        msg: Msg,
        /// Another signer.
        spoof: Option<u8>,
    },
    /// A relayed batch: (message, spoofed signer, send time relative to now).
    Synced(Vec<(Msg, Option<u8>, i16)>),
    /// Time passes by `ms`, then a tick.
    Tick {
        /// How long.
        ms: u16,
    },
    /// Time jumps to the coordinator's next wakeup, then a tick.
    Wake,
    /// A pending generation job finishes.
    Generated {
        /// Which pending job.
        job: u8,
        /// Whether it succeeded.
        ok: bool,
        /// Which text it produced.
        text: u8,
    },
    /// A pending embedding job finishes.
    Embedded {
        /// Which pending job.
        job: u8,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A pending own-output write finishes.
    Persisted {
        /// Which pending write.
        job: u8,
        /// Whether it succeeded.
        ok: bool,
    },
}

/// The whole fuzz input.
#[derive(Arbitrary, Debug)]
pub struct Case {
    /// The node's configuration.
    pub setup: Setup,
    /// The operations.
    pub ops: Vec<Op>,
}

/// Decodes a [`Case`] from `data` and runs it.
pub fn check(data: &[u8]) {
    if let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(data)) {
        let _ = run(&case);
    }
}

/// Per-request record of what the node did.
#[derive(Default)]
struct Seen {
    commit: Option<CommitMsg>,
    reveals: u32,
    results: u32,
    generations: u32,
    completed: Option<Hash32>,
}

struct Harness {
    coord: Coordinator,
    me: NodeId,
    max_open: usize,
    now: u64,
    embedder: HashEmbedder,
    generations: Vec<GenerationJob>,
    embeds: Vec<(RequestId, EmbedPurpose, String)>,
    persists: Vec<OwnOutput>,
    seen: BTreeMap<RequestId, Seen>,
    own_request: InferenceRequest,
}

fn self_key() -> NodeKey {
    NodeKey::from_seed(100)
}

fn stranger() -> NodeId {
    NodeKey::from_seed(200).node_id()
}

/// Runs one case; returns how many requests ended completed (for tests of the harness).
pub fn run(case: &Case) -> usize {
    let key = self_key();
    let me = key.node_id();
    let max_open = 1 + usize::from(case.setup.max_open % 4);
    let config = CoordinatorConfig {
        // The fixtures' statements are signed for their network.
        network_id: rakis_core::testing::QuorumFixture::NETWORK_ID.into(),
        served_models: if case.setup.answers {
            vec![MODEL.into()]
        } else {
            Vec::new()
        },
        workers: usize::from(case.setup.workers % 3),
        embedding_model: case
            .setup
            .embeds
            .then(|| rakis_core::consensus::DEFAULT_EMBEDDING_MODEL.to_string()),
        reveal_window_ms: 1_000,
        verify_grace_ms: 1_000,
        max_open_requests: max_open,
        ..CoordinatorConfig::default()
    };
    let mut own_request = fixtures()[0].request.clone();
    own_request.requester = Some(me);
    own_request.nonce = 3;
    let mut h = Harness {
        coord: Coordinator::with_rng_seed(key, config, 7),
        me,
        max_open,
        now: QuorumFixture::CREATED_AT_MS,
        embedder: HashEmbedder::default_model(),
        generations: Vec::new(),
        embeds: Vec::new(),
        persists: Vec::new(),
        seen: BTreeMap::new(),
        own_request,
    };
    for op in case.ops.iter().take(MAX_OPS) {
        h.op(op);
    }
    h.seen.values().filter(|s| s.completed.is_some()).count()
}

fn pick<T>(list: &[T], i: u8) -> &T {
    &list[usize::from(i) % list.len()]
}

impl Harness {
    fn request(&self, req: u8) -> InferenceRequest {
        match req % 3 {
            2 => self.own_request.clone(),
            i => fixtures()[usize::from(i)].request.clone(),
        }
    }

    fn signer(&self, i: u8) -> NodeId {
        let keys = &fixtures()[0].keys;
        match usize::from(i) % (FIXTURE_NODES + 2) {
            k if k < FIXTURE_NODES => keys[k].node_id(),
            k if k == FIXTURE_NODES => self.me,
            _ => stranger(),
        }
    }

    /// The message, or `None` when fuzz bytes do not decode.
    fn message(&self, msg: &Msg) -> Option<Message> {
        let fx = |i: u8| pick(fixtures(), i);
        Some(match msg {
            Msg::Request { req } => Message::Request(self.request(*req)),
            Msg::MutatedRequest { req, field, value } => {
                let mut r = self.request(*req);
                match field % 6 {
                    0 => r.created_at_ms = *value,
                    1 => r.frame.max_time_ms = *value,
                    2 => r.frame.quorum = *value as u32,
                    3 => r.max_tokens = *value as u32,
                    4 => r.temperature = f32::from_bits(*value as u32),
                    _ => r.accepted_models = vec![format!("model-{}", value % 3)],
                }
                Message::Request(r)
            }
            Msg::Commit { fx: f, node } => Message::Commit(pick(&fx(*f).commits, *node).clone()),
            Msg::CommitOtherModel { fx: f, node } => {
                let mut c = pick(&fx(*f).commits, *node).clone();
                c.model = "other-model".into();
                Message::Commit(c)
            }
            Msg::Reveal { fx: f, node } => Message::Reveal(pick(&fx(*f).reveals, *node).clone()),
            Msg::TamperedReveal { fx: f, node, what } => {
                let mut r = pick(&fx(*f).reveals, *node).clone();
                match what % 5 {
                    0 => r.reveal.output.push('!'),
                    1 => r.reveal.salt.0[0] ^= 1,
                    2 => r.reveal.inference_id.0[0] ^= 1,
                    3 => r.reveal.embedding_model = "other-embedder".into(),
                    _ => r.reveal.output = "Lyon is the capital of France.".into(),
                }
                Message::Reveal(r)
            }
            Msg::Result { fx: f, node } => {
                Message::ConsensusResult(pick(&fx(*f).results, *node).clone())
            }
            Msg::ForgedResult { fx: f, node } => {
                let mut r = pick(&fx(*f).results, *node).clone();
                r.output = "Lyon".into();
                r.output_hash = rakis_core::consensus::output_hash(&r.output);
                Message::ConsensusResult(r)
            }
            Msg::Rejected { fx: f, node } => {
                let r = pick(&fx(*f).reveals, *node);
                Message::RevealRejected {
                    request_id: r.reveal.request_id,
                    node: r.reveal.node,
                    inference_id: r.reveal.inference_id,
                    reason: RejectReason::CommitmentMismatch,
                }
            }
            Msg::Status { load } => Message::PeerStatus(PeerStatus {
                models: vec![MODEL.into()],
                embedding_model: None,
                workers: 1,
                load: *load,
            }),
            Msg::Sync { fx: f } => Message::SyncRequest {
                request_id: fx(*f).request.id(),
            },
            Msg::Decoded(bytes) => postcard::from_bytes(bytes).ok()?,
        })
    }

    fn from(&self, message: &Message, spoof: Option<u8>) -> NodeId {
        match spoof {
            Some(i) => self.signer(i),
            None => natural_signer(message),
        }
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::Local { req } => {
                let r = self.request(*req);
                self.feed(Input::LocalRequest(r));
            }
            Op::Deliver { msg, spoof } => {
                if let Some(message) = self.message(msg) {
                    let from = self.from(&message, *spoof);
                    self.feed(Input::Message { from, message });
                }
            }
            Op::Synced(items) => {
                let batch: Vec<SyncedMessage> = items
                    .iter()
                    .take(16)
                    .filter_map(|(msg, spoof, dt)| {
                        let message = self.message(msg)?;
                        Some(SyncedMessage {
                            from: self.from(&message, *spoof),
                            sent_at_ms: self.now.saturating_add_signed(i64::from(*dt)),
                            message,
                        })
                    })
                    .collect();
                self.feed(Input::Synced(batch));
            }
            Op::Tick { ms } => {
                self.now = self.now.saturating_add(u64::from(*ms));
                self.feed(Input::Tick);
            }
            Op::Wake => {
                if let Some(t) = self.coord.next_wakeup() {
                    self.now = self.now.max(t);
                }
                self.feed(Input::Tick);
            }
            Op::Generated { job, ok, text } => {
                let (request_id, model) = if self.generations.is_empty() {
                    (fixtures()[0].request.id(), MODEL.to_string())
                } else {
                    let j = self
                        .generations
                        .remove(usize::from(*job) % self.generations.len());
                    (j.request_id, j.model)
                };
                let speed = f32::from(*text) + 0.5;
                let result = if *ok {
                    let text = match text % 3 {
                        0 => "The capital of France is Paris.",
                        1 => "Paris is the capital of France.",
                        _ => "Bananas grow in tropical climates.",
                    };
                    Ok(Generation {
                        text: text.into(),
                        model,
                        prompt_tokens: 8,
                        tokens: 6,
                        token_ids: Vec::new(),
                        tokens_per_sec: speed,
                        finish: FinishReason::Eos,
                    })
                } else {
                    Err(EngineError::Busy)
                };
                self.feed(Input::Generated { request_id, result });
            }
            Op::Embedded { job, ok } => {
                let (request_id, purpose, text) = if self.embeds.is_empty() {
                    (
                        fixtures()[0].request.id(),
                        EmbedPurpose::Own,
                        "Paris".to_string(),
                    )
                } else {
                    self.embeds.remove(usize::from(*job) % self.embeds.len())
                };
                let result = if *ok {
                    self.embedder.embed_binary_one(&text)
                } else {
                    Err(EmbedError::Empty)
                };
                self.feed(Input::Embedded {
                    request_id,
                    purpose,
                    result,
                });
            }
            Op::Persisted { job, ok } => {
                let request_id = if self.persists.is_empty() {
                    fixtures()[0].request.id()
                } else {
                    self.persists
                        .remove(usize::from(*job) % self.persists.len())
                        .request_id
                };
                let result = if *ok {
                    Ok(())
                } else {
                    Err("fuzzed store failure".into())
                };
                self.feed(Input::OwnOutputPersisted { request_id, result });
            }
        }
    }

    fn feed(&mut self, input: Input) {
        let actions = self.coord.handle(self.now, input);
        self.check(&actions);
        // The fixtures' engine cannot score: every replay is answered at once.
        for a in actions {
            if let Action::Score {
                node,
                commitment,
                job,
            } = a
            {
                self.feed(Input::Scored {
                    request_id: job.request_id,
                    node,
                    commitment,
                    result: Err(EngineError::Unsupported("fixtures".into())),
                });
            }
        }
    }

    fn check(&mut self, actions: &[Action]) {
        let tracked: BTreeSet<RequestId> = self.coord.request_ids().into_iter().collect();
        assert!(
            tracked.len() <= self.max_open,
            "{} requests tracked, limit {}",
            tracked.len(),
            self.max_open
        );
        let known = |id: &RequestId, what: &str| {
            assert!(
                tracked.contains(id),
                "{what} about an unknown request: {actions:#?}"
            );
        };
        for a in actions {
            match a {
                Action::Broadcast(m) => {
                    if let Some(id) = m.request_id() {
                        known(&id, "broadcast");
                    }
                    self.check_broadcast(m);
                }
                Action::Generate(job) => {
                    known(&job.request_id, "generation job");
                    let s = self.seen.entry(job.request_id).or_default();
                    s.generations += 1;
                    assert!(s.generations <= 1, "a second generation job");
                    self.generations.push(job.clone());
                }
                Action::Embed {
                    request_id,
                    purpose,
                    text,
                } => {
                    known(request_id, "embedding job");
                    self.embeds
                        .push((*request_id, purpose.clone(), text.clone()));
                }
                Action::Persist(op) => known(&op.request_id(), "write"),
                Action::PersistOwnOutput(own) => {
                    known(&own.request_id, "own output write");
                    let opened = rakis_core::consensus::commitment(
                        &own.request_id,
                        &self.me,
                        &own.inference_id,
                        &own.output,
                        &own.embedding,
                        &own.salt,
                    );
                    assert_eq!(opened, own.commitment, "own output does not open");
                    self.persists.push(own.clone());
                }
                // A refusal (`Ignored`) may name a request the node did not take.
                Action::Emit(NodeEvent::Ignored { .. }) => {}
                Action::Emit(e) => {
                    if let Some(id) = e.request_id() {
                        known(&id, "event");
                    }
                }
                Action::RequestSync { peer, .. } => {
                    assert_ne!(*peer, self.me, "asked itself for a sync")
                }
                Action::Score { job, .. } => known(&job.request_id, "score job"),
                Action::Report(evidence) => {
                    known(&evidence.request_id(), "evidence");
                    assert!(evidence.verify().is_ok(), "evidence that proves nothing");
                }
            }
        }
        for id in &tracked {
            let status = self.coord.status(id).expect("tracked");
            let s = self.seen.entry(*id).or_default();
            let digest = match (&status.phase, status.outcome.as_deref()) {
                (Phase::Completed, Some(o)) => match &o.decision {
                    rakis_core::Decision::Agreed { result_digest, .. } => Some(*result_digest),
                    rakis_core::Decision::Failed(_) => None,
                },
                _ => None,
            };
            if let Some(before) = s.completed {
                assert_eq!(digest, Some(before), "a completed request changed");
            }
            s.completed = digest;
        }
    }

    fn check_broadcast(&mut self, m: &Message) {
        let me = self.me;
        match m {
            Message::Commit(c) => {
                assert_eq!(c.commit.node, me, "broadcast someone else's commit");
                let id = c.commit.request_id;
                let deadline = self.coord.request(&id).map(|r| r.deadline_ms());
                assert!(
                    deadline.is_some_and(|d| self.now <= d),
                    "commit after the deadline"
                );
                let s = self.seen.entry(id).or_default();
                assert!(s.commit.is_none(), "a second commit for one request");
                s.commit = Some(c.clone());
            }
            Message::Reveal(r) => {
                assert_eq!(r.reveal.node, me, "broadcast someone else's reveal");
                let s = self.seen.entry(r.reveal.request_id).or_default();
                s.reveals += 1;
                assert!(s.reveals <= 1, "a second reveal for one request");
                let commit = s.commit.as_ref().expect("a reveal without an own commit");
                rakis_core::consensus::verify_reveal(&commit.commit, &r.reveal)
                    .expect("the own reveal opens the own commit");
            }
            Message::ConsensusResult(r) => {
                assert_eq!(r.signer, me);
                r.verify().expect("the own result verifies");
                let s = self.seen.entry(r.request_id).or_default();
                s.results += 1;
                assert!(s.results <= 1, "a second result for one request");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operation language reaches the end of the protocol: the honest path of one request,
    /// with this node answering, committing, revealing, verifying and signing.
    #[test]
    fn the_honest_path_completes() {
        let deliver = |msg| Op::Deliver { msg, spoof: None };
        let mut ops = vec![
            deliver(Msg::Request { req: 0 }),
            Op::Generated {
                job: 0,
                ok: true,
                text: 0,
            },
            Op::Embedded { job: 0, ok: true },
            Op::Persisted { job: 0, ok: true },
        ];
        ops.extend((0..3).map(|node| deliver(Msg::Commit { fx: 0, node })));
        ops.push(Op::Wake);
        ops.extend((0..3).map(|node| deliver(Msg::Reveal { fx: 0, node })));
        ops.extend((0..3).map(|_| Op::Embedded { job: 0, ok: true }));
        let case = Case {
            setup: Setup {
                answers: true,
                embeds: true,
                workers: 1,
                max_open: 3,
            },
            ops,
        };
        assert_eq!(run(&case), 1);
    }
}
