//! The coordinator state machine driven on a virtual clock: no runtime, no sleeps.
//! Several coordinators exchange messages through a simulated network with fixed latency.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rakis_core::coordinator::{Action, Coordinator, CoordinatorConfig, Input, SyncedMessage};
use rakis_core::protocol::{CommitMsg, RevealMsg};
use rakis_core::store::apply_to_records;
use rakis_core::store::{QuorumRecord, StoreOp};
use rakis_core::testing::{self, HashEmbedder, QuorumFixture, ScriptedEngine};
use rakis_core::{
    Decision, FailureReason, InferenceRequest, Message, NodeEvent, NodeKey, Phase, QuorumFailure,
    RejectReason,
};

const MODEL: &str = "smollm2-135m";
const LATENCY_MS: u64 = 10;
const GENERATION_MS: u64 = 100;

struct SimNode {
    coord: Coordinator,
    engine: Option<ScriptedEngine>,
    embedder: HashEmbedder,
    stored: Vec<StoreOp>,
    events: Vec<NodeEvent>,
    sent: Vec<Message>,
    /// Every action in order, for ordering checks.
    actions: Vec<Action>,
    fail_own_persist: bool,
    /// Messages this node sent or received, with their signer and send time (what a real
    /// driver keeps as wire bytes to answer sync requests).
    log: Vec<SyncedMessage>,
}

enum Pending {
    Deliver {
        to: usize,
        from: usize,
        message: Message,
    },
    Input {
        to: usize,
        input: Input,
    },
}

struct Sim {
    now: u64,
    nodes: Vec<SimNode>,
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    pending: BTreeMap<u64, Pending>,
    /// Nodes whose outgoing messages are dropped (cut off from the network).
    muted: Vec<usize>,
    /// Reveals on these (from, to) links are lost.
    lost_reveals: Vec<(usize, usize)>,
    /// Stopped nodes: they receive nothing and their timers do not fire.
    down: Vec<usize>,
    /// Sync requests made.
    sync_requests: usize,
    /// Rewrites of what a node broadcasts (a node lying in its messages).
    tamper: BTreeMap<usize, Rewrite>,
}

/// A rewrite of an outgoing message.
type Rewrite = Box<dyn Fn(&mut Message)>;

/// The network id of the simulated nodes (their statements are signed for it).
const SIM_NET: &str = "coordinator-sim";

/// The evidence node `i` sent to its sinks.
fn reports(n: &SimNode) -> Vec<&rakis_core::Misbehaviour> {
    n.actions
        .iter()
        .filter_map(|a| match a {
            Action::Report(m) => Some(&**m),
            _ => None,
        })
        .collect()
}

impl Sim {
    fn new(n: usize, answers: impl Fn(usize) -> Option<String>) -> Sim {
        Sim::configured(n, answers, |_, _| {})
    }

    /// [`Sim::new`] with each node's configuration adjusted by `configure`.
    fn configured(
        n: usize,
        answers: impl Fn(usize) -> Option<String>,
        configure: impl Fn(usize, &mut CoordinatorConfig),
    ) -> Sim {
        let nodes = (0..n)
            .map(|i| {
                let engine = answers(i).map(|a| ScriptedEngine::constant(MODEL, &a));
                let mut config = CoordinatorConfig {
                    network_id: SIM_NET.into(),
                    served_models: engine
                        .as_ref()
                        .map(|_| vec![MODEL.to_string()])
                        .unwrap_or_default(),
                    workers: 1,
                    embedding_model: Some(
                        rakis_core::consensus::DEFAULT_EMBEDDING_MODEL.to_string(),
                    ),
                    reveal_window_ms: 1_000,
                    verify_grace_ms: 1_000,
                    ..CoordinatorConfig::default()
                };
                configure(i, &mut config);
                SimNode {
                    coord: Coordinator::with_rng_seed(
                        NodeKey::from_seed(i as u64),
                        config,
                        i as u64,
                    ),
                    engine,
                    embedder: HashEmbedder::default_model(),
                    stored: Vec::new(),
                    events: Vec::new(),
                    sent: Vec::new(),
                    actions: Vec::new(),
                    fail_own_persist: false,
                    log: Vec::new(),
                }
            })
            .collect();
        Sim {
            now: 1_000_000,
            nodes,
            seq: 0,
            heap: BinaryHeap::new(),
            pending: BTreeMap::new(),
            muted: Vec::new(),
            lost_reveals: Vec::new(),
            down: Vec::new(),
            sync_requests: 0,
            tamper: BTreeMap::new(),
        }
    }

    fn push(&mut self, at: u64, p: Pending) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.pending.insert(self.seq, p);
    }

    fn feed(&mut self, i: usize, input: Input) {
        if self.down.contains(&i) {
            return;
        }
        let actions = self.nodes[i].coord.handle(self.now, input);
        self.apply(i, actions);
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            self.nodes[i].actions.push(a.clone());
            match a {
                Action::Broadcast(mut m) => {
                    if let Some(rewrite) = self.tamper.get(&i) {
                        rewrite(&mut m);
                    }
                    self.nodes[i].sent.push(m.clone());
                    let me = self.nodes[i].coord.node_id();
                    self.nodes[i].log.push(SyncedMessage {
                        from: me,
                        message: m.clone(),
                        sent_at_ms: self.now,
                    });
                    if self.muted.contains(&i) {
                        continue;
                    }
                    for to in 0..self.nodes.len() {
                        if matches!(m, Message::Reveal(_)) && self.lost_reveals.contains(&(i, to)) {
                            continue;
                        }
                        if to != i {
                            self.push(
                                self.now + LATENCY_MS,
                                Pending::Deliver {
                                    to,
                                    from: i,
                                    message: m.clone(),
                                },
                            );
                        }
                    }
                }
                Action::Generate(job) => {
                    let result = self.nodes[i].engine.as_ref().expect("engine").run(&job);
                    let input = Input::Generated {
                        request_id: job.request_id,
                        result,
                    };
                    self.push(self.now + GENERATION_MS, Pending::Input { to: i, input });
                }
                Action::Embed {
                    request_id,
                    purpose,
                    text,
                } => {
                    let result = self.nodes[i].embedder.embed_binary_one(&text);
                    self.push(
                        self.now + 1,
                        Pending::Input {
                            to: i,
                            input: Input::Embedded {
                                request_id,
                                purpose,
                                result,
                            },
                        },
                    );
                }
                Action::Persist(op) => self.nodes[i].stored.push(op),
                Action::PersistOwnOutput(own) => {
                    let result = if self.nodes[i].fail_own_persist {
                        Err("disk full".to_string())
                    } else {
                        self.nodes[i].stored.push(StoreOp::OwnOutput(own.clone()));
                        Ok(())
                    };
                    let next = self.nodes[i].coord.handle(
                        self.now,
                        Input::OwnOutputPersisted {
                            request_id: own.request_id,
                            result,
                        },
                    );
                    self.apply(i, next);
                }
                Action::Emit(e) => self.nodes[i].events.push(e),
                // Kept in `actions`: the tests look at the evidence there.
                Action::Report(_) => {}
                // Scripted engines cannot score.
                Action::Score {
                    node,
                    commitment,
                    job,
                } => self.push(
                    self.now + 1,
                    Pending::Input {
                        to: i,
                        input: Input::Scored {
                            request_id: job.request_id,
                            node,
                            commitment,
                            result: Err(rakis_core::EngineError::Unsupported("scripted".into())),
                        },
                    },
                ),
                Action::RequestSync { peer, request_id } => {
                    let Some(j) = self.nodes.iter().position(|n| n.coord.node_id() == peer) else {
                        continue;
                    };
                    self.sync_requests += 1;
                    if self.muted.contains(&i) || self.muted.contains(&j) || self.down.contains(&j)
                    {
                        continue;
                    }
                    let batch: Vec<SyncedMessage> = self.nodes[j]
                        .log
                        .iter()
                        .filter(|m| {
                            m.message.request_id() == Some(request_id)
                                && matches!(
                                    m.message,
                                    Message::Request(_)
                                        | Message::Commit(_)
                                        | Message::Reveal(_)
                                        | Message::ConsensusResult(_)
                                )
                        })
                        .cloned()
                        .collect();
                    self.push(
                        self.now + 2 * LATENCY_MS,
                        Pending::Input {
                            to: i,
                            input: Input::Synced(batch),
                        },
                    );
                }
            }
        }
    }

    /// Runs until nothing is pending and no timer is due before `until`.
    fn run_until(&mut self, until: u64) {
        loop {
            let next_msg = self.heap.peek().map(|Reverse((t, _))| *t);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.down.contains(i))
                .filter_map(|(_, n)| n.coord.next_wakeup())
                .min();
            let next = match (next_msg, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_msg == Some(next) {
                let Reverse((_, seq)) = self.heap.pop().expect("peeked");
                // Jobs of a node that crashed were dropped with it.
                let Some(pending) = self.pending.remove(&seq) else {
                    continue;
                };
                match pending {
                    Pending::Deliver { to, from, message } => {
                        let from = self.nodes[from].coord.node_id();
                        if !self.down.contains(&to) {
                            self.nodes[to].log.push(SyncedMessage {
                                from,
                                message: message.clone(),
                                sent_at_ms: self.now - LATENCY_MS,
                            });
                        }
                        self.feed(to, Input::Message { from, message });
                    }
                    Pending::Input { to, input } => self.feed(to, input),
                }
            } else {
                for i in 0..self.nodes.len() {
                    if !self.down.contains(&i)
                        && self.nodes[i]
                            .coord
                            .next_wakeup()
                            .is_some_and(|t| t <= self.now)
                    {
                        self.feed(i, Input::Tick);
                    }
                }
            }
        }
    }

    /// What node `i` stored, as the records a store would hold.
    fn records(&self, i: usize) -> Vec<QuorumRecord> {
        let mut records = BTreeMap::new();
        for op in &self.nodes[i].stored {
            apply_to_records(&mut records, op.clone()).expect("the coordinator writes valid ops");
        }
        records.into_values().collect()
    }

    /// Node `i` stops at once (its running jobs are lost) and restarts from what it stored, as
    /// the driver does: open requests are restored at the current time. Returns the actions of
    /// the restore.
    fn crash_and_restore(&mut self, i: usize) -> Vec<Action> {
        self.pending
            .retain(|_, p| !matches!(p, Pending::Input { to, .. } if *to == i));
        self.down.retain(|d| *d != i);
        let config = self.nodes[i].coord.config().clone();
        let key = NodeKey::from_seed(i as u64);
        self.nodes[i].coord = Coordinator::with_rng_seed(key, config, 1_000 + i as u64);
        let mut all = Vec::new();
        for record in self.records(i) {
            if record.is_closed() {
                continue;
            }
            let actions = self.nodes[i].coord.restore(record, self.now);
            all.extend(actions.clone());
            self.apply(i, actions);
        }
        all
    }

    fn request(&self, from: usize, quorum: u32) -> InferenceRequest {
        let mut r = testing::request(
            MODEL,
            self.nodes[from].coord.node_id(),
            self.now,
            quorum,
            1_000,
        );
        r.nonce = 7;
        r
    }
}

fn honest(_: usize) -> Option<String> {
    Some("The capital of France is Paris.".to_string())
}

#[test]
fn five_nodes_agree_on_one_result() {
    let mut sim = Sim::new(5, |i| {
        Some(if i % 2 == 0 {
            "The capital of France is Paris.".to_string()
        } else {
            "Paris is the capital city of France.".to_string()
        })
    });
    let req = sim.request(0, 3);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(u64::MAX);

    let mut digests = Vec::new();
    for n in &sim.nodes {
        let status = n.coord.status(&id).unwrap();
        assert_eq!(status.phase, Phase::Completed, "{:?}", n.events);
        assert_eq!(status.committed, 5);
        let outcome = status.outcome.unwrap();
        assert_eq!(outcome.accepted.len(), 5);
        let Decision::Agreed {
            joint_hash,
            selected,
            result_digest,
            ..
        } = &outcome.decision
        else {
            panic!("not agreed")
        };
        digests.push((*joint_hash, selected.output.clone(), *result_digest));
        assert!(n
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::Completed { request_id, .. } if *request_id == id)));
        assert!(!n
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::Disagreement { .. })));
        // Every node heard the four others' signed results, all equal to its own.
        assert_eq!(status.peer_results.len(), 4);
        assert!(status
            .peer_results
            .values()
            .all(|d| *d == digests.last().unwrap().2));
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

/// A model name stands for one set of weights: a committer that runs the model with other
/// weights (a cheaper quantization, another file) and says so is rejected by the nodes serving
/// the model (`OtherWeights`), before any replay; the results name the selected answer's weights.
#[test]
fn a_reveal_declaring_other_weights_fails_the_second_check() {
    let weights = |q: &str| rakis_core::ModelWeights {
        sha256: rakis_core::Hash32([7; 32]),
        quantization: q.into(),
    };
    let mut sim = Sim::configured(4, honest, |i, c| {
        let q = if i == 3 { "Q2_K" } else { "Q4_1" };
        c.model_weights.insert(MODEL.into(), weights(q));
    });
    let req = sim.request(0, 3);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(u64::MAX);
    let other = sim.nodes[3].coord.node_id();
    for n in &sim.nodes[..3] {
        let status = n.coord.status(&id).unwrap();
        assert_eq!(status.phase, Phase::Completed, "{:?}", n.events);
        let outcome = status.outcome.unwrap();
        assert!(outcome.rejected.iter().any(|r| r.node == other
            && r.reason
                == RejectReason::UnfaithfulSampling(
                    rakis_core::consensus::sampling::SamplingFault::OtherWeights
                )));
        assert!(!outcome.accepted.iter().any(|a| a.node == other));
        let signed = n
            .sent
            .iter()
            .find_map(|s| match s {
                Message::ConsensusResult(r) => Some(r.clone()),
                _ => None,
            })
            .expect("a signed result");
        assert_eq!(signed.weights, Some(weights("Q4_1")));
    }
}

/// Nodes 0–3 serve the model (node 3 with other weights, which its reveal declares, so the
/// others' second check rejects it); node 4 only embeds.
fn one_liar_and_one_node_without_the_model() -> Sim {
    let weights = |q: &str| rakis_core::ModelWeights {
        sha256: rakis_core::Hash32([7; 32]),
        quantization: q.into(),
    };
    Sim::configured(
        5,
        |i| honest(i).filter(|_| i < 4),
        move |i, c| {
            if i < 4 {
                let q = if i == 3 { "Q2_K" } else { "Q4_1" };
                c.model_weights.insert(MODEL.into(), weights(q));
            }
        },
    )
}

/// A node of the committee that does not serve the request's model cannot replay anyone's
/// sampling: it takes the second check from the verdicts in the inventories of the members
/// that do. Without them it accepted the answer its peers rejected and signed another result.
#[test]
fn a_node_that_does_not_serve_the_model_takes_the_committees_sampling_verdicts() {
    let mut sim = one_liar_and_one_node_without_the_model();
    let req = sim.request(0, 3);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(u64::MAX);
    let liar = sim.nodes[3].coord.node_id();
    let digest = |n: &SimNode| match &n.coord.status(&id).unwrap().outcome.unwrap().decision {
        Decision::Agreed { result_digest, .. } => *result_digest,
        d => panic!("{d:?}"),
    };
    let outcome = sim.nodes[4].coord.status(&id).unwrap().outcome.unwrap();
    assert!(
        outcome.rejected.iter().any(|r| r.node == liar
            && r.reason
                == RejectReason::UnfaithfulSampling(
                    rakis_core::consensus::sampling::SamplingFault::OtherWeights
                )),
        "{:?}",
        outcome.rejected
    );
    assert_eq!(outcome.accepted.len(), 3);
    assert_eq!(digest(&sim.nodes[4]), digest(&sim.nodes[0]));
}

/// Verdicts are votes of the committers: one liar can neither clear its own reveal (its
/// verdict on itself does not count) nor reject an honest one, even where no honest committer
/// could replay it (a first version, "more faults than passes", let it).
#[test]
fn a_lying_sampling_verdict_does_not_sway_a_node_that_does_not_serve_the_model() {
    let mut sim = one_liar_and_one_node_without_the_model();
    let victim = sim.nodes[0].coord.node_id();
    let fault = rakis_core::consensus::sampling::SamplingFault::OutsideNucleus { position: 0 };
    // The liar says its own reveal passed and node 0's failed.
    sim.tamper.insert(
        3,
        Box::new(move |m| {
            if let Message::Inventory { items, .. } = m {
                for item in items {
                    item.sampling = Some(if item.node == victim {
                        rakis_core::protocol::SamplingVerdict::Failed(fault.clone())
                    } else {
                        rakis_core::protocol::SamplingVerdict::Passed
                    });
                }
            }
        }),
    );
    let req = sim.request(0, 3);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(u64::MAX);
    let liar = sim.nodes[3].coord.node_id();
    // The scripted engines cannot replay: on nodes 1 and 4 the victim has no verdict but the
    // liar's, one of three other committers.
    for n in [&sim.nodes[1], &sim.nodes[4]] {
        let outcome = n.coord.status(&id).unwrap().outcome.unwrap();
        let accepted: Vec<_> = outcome.accepted.iter().map(|a| a.node).collect();
        assert!(accepted.contains(&victim), "{:?}", outcome.rejected);
        assert!(!accepted.contains(&liar), "{accepted:?}");
    }
}

#[test]
fn quorum_not_reached_fails_everywhere_without_reveals() {
    let mut sim = Sim::new(4, honest);
    let req = sim.request(0, 5);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(u64::MAX);
    for n in &sim.nodes {
        let st = n.coord.status(&id).unwrap();
        assert_eq!(
            st.phase,
            Phase::Failed(QuorumFailure::QuorumNotReached {
                committed: 4,
                needed: 5
            })
        );
        assert!(n.sent.iter().all(|m| !matches!(m, Message::Reveal(_))));
        assert!(n
            .stored
            .iter()
            .any(|op| matches!(op, StoreOp::Failed { .. })));
    }
}

#[test]
fn own_output_is_stored_before_the_commit_leaves() {
    let mut sim = Sim::new(3, honest);
    let req = sim.request(0, 3);
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(u64::MAX);
    for n in &sim.nodes {
        let persist = n
            .actions
            .iter()
            .position(|a| matches!(a, Action::PersistOwnOutput(_)))
            .unwrap();
        let commit = n
            .actions
            .iter()
            .position(|a| matches!(a, Action::Broadcast(Message::Commit(_))))
            .unwrap();
        assert!(persist < commit);
        let StoreOp::OwnOutput(own) = n
            .stored
            .iter()
            .find(|op| matches!(op, StoreOp::OwnOutput(_)))
            .unwrap()
        else {
            unreachable!()
        };
        let Message::Commit(c) = n
            .sent
            .iter()
            .find(|m| matches!(m, Message::Commit(_)))
            .unwrap()
        else {
            unreachable!()
        };
        assert_eq!(own.commitment, c.commit.commitment);
    }
}

#[test]
fn a_node_that_cannot_store_its_output_does_not_commit() {
    let mut sim = Sim::new(3, honest);
    sim.nodes[1].fail_own_persist = true;
    let req = sim.request(0, 2);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(u64::MAX);
    assert!(sim.nodes[1]
        .sent
        .iter()
        .all(|m| !matches!(m, Message::Commit(_))));
    assert!(sim.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, NodeEvent::AnswerSkipped { .. })));
    let st = sim.nodes[0].coord.status(&id).unwrap();
    assert_eq!(st.committed, 2);
    assert_eq!(st.phase, Phase::Completed);
}

#[test]
fn a_reveal_that_differs_from_its_commit_is_rejected_by_all_with_the_reason_broadcast() {
    let mut sim = Sim::new(5, honest);
    // Node 4 is cut off at reveal time; we then forge its reveal by hand.
    let req = sim.request(0, 5);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    // Run until just before the deadline: everyone committed.
    let deadline = sim.nodes[0].coord.status(&id).unwrap().deadline_ms;
    sim.run_until(deadline);
    sim.muted.push(4);
    sim.run_until(deadline + 5);
    // Node 4 revealed (muted); change its output and deliver the forged reveal to the others.
    let Message::Reveal(mut forged) = sim.nodes[4]
        .sent
        .iter()
        .find(|m| matches!(m, Message::Reveal(_)))
        .cloned()
        .unwrap()
    else {
        unreachable!()
    };
    forged.reveal.output = "The capital of France is Lyon.".into();
    // Unsigned again, the forged reveal is the sender's own in no way: dropped, not evidence.
    let unsigned = forged.clone();
    // Signed by node 4 (a liar signs its lie): provable.
    let forged = RevealMsg::signed(
        &NodeKey::from_seed(4),
        &rakis_core::consensus::network_digest(SIM_NET),
        forged.reveal,
        forged.model,
        forged.evidence,
    );
    let from = sim.nodes[4].coord.node_id();
    let actions = sim.nodes[0].coord.handle(
        sim.now + 1,
        Input::Message {
            from,
            message: Message::Reveal(unsigned),
        },
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Emit(NodeEvent::Ignored {
            reason: rakis_core::IgnoreReason::InvalidStatement,
            ..
        })
    )));
    for to in 0..4 {
        sim.push(
            sim.now + 1,
            Pending::Deliver {
                to,
                from: 4,
                message: Message::Reveal(forged.clone()),
            },
        );
    }
    sim.run_until(u64::MAX);
    let mut joint = Vec::new();
    for i in 0..4 {
        let n = &sim.nodes[i];
        assert!(n.sent.iter().any(|m| matches!(m,
            Message::RevealRejected { node, reason: RejectReason::CommitmentMismatch, .. } if *node == from)));
        let outcome = n.coord.status(&id).unwrap().outcome.unwrap();
        assert_eq!(outcome.accepted.len(), 4);
        assert!(outcome.accepted.iter().all(|a| a.node != from));
        joint.push(outcome.joint_hash().unwrap());
        // Each honest node holds evidence a chain accepts, once.
        let evidence = reports(n);
        assert_eq!(evidence.len(), 1, "node {i}");
        assert!(matches!(
            evidence[0],
            rakis_core::Misbehaviour::FalseReveal { .. }
        ));
        assert_eq!(evidence[0].node(), from);
        evidence[0].verify().unwrap();
    }
    assert!(joint.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn a_commit_after_the_deadline_is_ignored() {
    let mut sim = Sim::new(3, honest);
    let req = sim.request(0, 3);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    let deadline = sim.nodes[0].coord.status(&id).unwrap().deadline_ms;
    sim.muted.push(2);
    sim.run_until(deadline + 20);
    // Node 2's commit arrives late at node 0.
    let Message::Commit(c) = sim.nodes[2]
        .sent
        .iter()
        .find(|m| matches!(m, Message::Commit(_)))
        .cloned()
        .unwrap()
    else {
        unreachable!()
    };
    let before = sim.nodes[0].stored.len();
    sim.feed(
        0,
        Input::Message {
            from: sim.nodes[2].coord.node_id(),
            message: Message::Commit(c),
        },
    );
    assert_eq!(sim.nodes[0].stored.len(), before);
    let st = sim.nodes[0].coord.status(&id).unwrap();
    assert_eq!(st.committed, 2);
    assert_eq!(
        st.phase,
        Phase::Failed(QuorumFailure::QuorumNotReached {
            committed: 2,
            needed: 3
        })
    );
}

#[test]
fn messages_not_signed_by_their_subject_change_nothing() {
    let mut sim = Sim::new(3, honest);
    let req = sim.request(0, 3);
    let id = req.id();
    // A request relayed by someone who is not its requester is refused.
    sim.feed(
        1,
        Input::Message {
            from: sim.nodes[2].coord.node_id(),
            message: Message::Request(req.clone()),
        },
    );
    assert!(sim.nodes[1].coord.status(&id).is_none());
    assert!(sim.nodes[1].stored.is_empty());
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(sim.now + 500);
    // Node 2's commit replayed as if from node 1: dropped.
    let Message::Commit(c) = sim.nodes[2]
        .sent
        .iter()
        .find(|m| matches!(m, Message::Commit(_)))
        .cloned()
        .unwrap()
    else {
        unreachable!()
    };
    let before = sim.nodes[0].stored.len();
    let mut c2 = c.clone();
    c2.commit.commitment.0[0] ^= 1;
    sim.feed(
        0,
        Input::Message {
            from: sim.nodes[1].coord.node_id(),
            message: Message::Commit(c2),
        },
    );
    assert_eq!(sim.nodes[0].stored.len(), before);
}

#[test]
fn equivocating_committer_is_rejected() {
    let mut sim = Sim::new(4, honest);
    let req = sim.request(0, 4);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(sim.now + 500);
    // Node 3 sends a second, different commit.
    let Message::Commit(c) = sim.nodes[3]
        .sent
        .iter()
        .find(|m| matches!(m, Message::Commit(_)))
        .cloned()
        .unwrap()
    else {
        unreachable!()
    };
    let mut c2 = c.commit.clone();
    c2.commitment.0[5] ^= 0xFF;
    let c2 = CommitMsg::signed(
        &NodeKey::from_seed(3),
        &rakis_core::consensus::network_digest(SIM_NET),
        c2,
        c.model.clone(),
    );
    for to in 0..3 {
        sim.push(
            sim.now + 1,
            Pending::Deliver {
                to,
                from: 3,
                message: Message::Commit(c2.clone()),
            },
        );
    }
    sim.run_until(u64::MAX);
    for i in 0..3 {
        let outcome = sim.nodes[i].coord.status(&id).unwrap().outcome.unwrap();
        assert!(outcome
            .rejected
            .iter()
            .any(|r| matches!(r.reason, RejectReason::Equivocation { .. })));
        assert_eq!(outcome.accepted.len(), 3);
        assert_eq!(outcome.committed, 4);
        let evidence = reports(&sim.nodes[i]);
        assert_eq!(evidence.len(), 1, "node {i}");
        assert!(matches!(
            evidence[0],
            rakis_core::Misbehaviour::Equivocation { .. }
        ));
        evidence[0].verify().unwrap();
    }
    // Nobody but the equivocator is reported (it learnt of its second commit by sync, and
    // holds the same evidence against its own key).
    let equivocator = sim.nodes[3].coord.node_id();
    assert!(sim
        .nodes
        .iter()
        .flat_map(reports)
        .all(|m| m.node() == equivocator));
}

#[test]
fn scheduling_takes_soonest_deadline_first_and_skips_hopeless_requests() {
    let key = NodeKey::from_seed(9);
    let config = CoordinatorConfig {
        served_models: vec![MODEL.into()],
        workers: 1,
        embedding_model: Some(rakis_core::consensus::DEFAULT_EMBEDDING_MODEL.into()),
        initial_generation_estimate_ms: 300,
        ..CoordinatorConfig::default()
    };
    let mut c = Coordinator::with_rng_seed(key, config, 1);
    let now = 10_000;
    let mk = |max_time_ms: u64, nonce: u64| {
        let mut r = InferenceRequest::new(
            "hi",
            vec![MODEL.into()],
            NodeKey::from_seed(1).node_id(),
            now,
        );
        r.nonce = nonce;
        r.frame.max_time_ms = max_time_ms;
        r
    };
    let late = mk(5_000, 1);
    let soon = mk(2_000, 2);
    let hopeless = mk(100, 3);
    let from = NodeKey::from_seed(1).node_id();
    // The first request occupies the only worker.
    let a1 = c.handle(
        now,
        Input::Message {
            from,
            message: Message::Request(late.clone()),
        },
    );
    assert!(a1
        .iter()
        .any(|a| matches!(a, Action::Generate(j) if j.request_id == late.id())));
    let a2 = c.handle(
        now,
        Input::Message {
            from,
            message: Message::Request(hopeless.clone()),
        },
    );
    let a3 = c.handle(
        now,
        Input::Message {
            from,
            message: Message::Request(soon.clone()),
        },
    );
    assert!(!a2
        .iter()
        .chain(&a3)
        .any(|a| matches!(a, Action::Generate(_))));
    // When the worker frees up, the soonest deadline that can still finish runs; the hopeless
    // one is skipped.
    let done = c.handle(
        now + 10,
        Input::Generated {
            request_id: late.id(),
            result: ScriptedEngine::constant(MODEL, "x").run(
                &rakis_core::GenerationJob::for_request(&late, MODEL, rakis_core::Hash32([0; 32])),
            ),
        },
    );
    let gen: Vec<_> = done
        .iter()
        .filter_map(|a| match a {
            Action::Generate(j) => Some(j.request_id),
            _ => None,
        })
        .collect();
    assert_eq!(gen, vec![soon.id()]);
    assert!(done.iter().any(|a| matches!(a, Action::Emit(NodeEvent::AnswerSkipped { request_id, .. }) if *request_id == hopeless.id())));
}

#[test]
fn a_node_that_missed_a_reveal_fetches_it_before_deciding() {
    // Node 4 never hears node 0's reveal. Before deciding, the nodes exchange inventories; node
    // 4 sees that the others hold node 0's reveal, fetches it (a sync with one of them) and
    // decides over the same five reveals: one result, no disagreement. (Before inventories,
    // node 4 decided over four reveals and signed another result digest than the other four.)
    let mut sim = Sim::new(5, honest);
    sim.lost_reveals.push((0, 4));
    let req = sim.request(0, 3);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(u64::MAX);
    let majority = sim.nodes[1].coord.status(&id).unwrap().outcome.unwrap();
    let lonely = sim.nodes[4].coord.status(&id).unwrap().outcome.unwrap();
    assert_eq!(majority.accepted.len(), 5);
    assert_eq!(lonely.accepted.len(), 5);
    assert_eq!(majority.joint_hash(), lonely.joint_hash());
    assert!(sim.sync_requests >= 1);
    for n in &sim.nodes {
        assert!(!n
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::Disagreement { .. })));
    }
}

#[test]
fn a_reveal_from_a_node_whose_clock_runs_ahead_is_kept_until_the_deadline() {
    let mut sim = Sim::new(3, honest);
    let req = sim.request(0, 3);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    let deadline = sim.nodes[0].coord.status(&id).unwrap().deadline_ms;
    sim.run_until(deadline - 50);
    assert_eq!(sim.nodes[1].coord.status(&id).unwrap().committed, 3);
    // Node 0's clock is 100 ms ahead: it passes the deadline and reveals while the others
    // are still before theirs.
    let ahead = sim.nodes[0].coord.handle(deadline + 1, Input::Tick);
    let reveal = ahead
        .iter()
        .find_map(|a| match a {
            Action::Broadcast(Message::Reveal(r)) => Some(r.clone()),
            _ => None,
        })
        .expect("node 0 reveals");
    let from = sim.nodes[0].coord.node_id();
    for to in 1..3 {
        sim.feed(
            to,
            Input::Message {
                from,
                message: Message::Reveal(reveal.clone()),
            },
        );
        assert_eq!(
            sim.nodes[to].coord.status(&id).unwrap().phase,
            Phase::Committing
        );
    }
    sim.apply(0, ahead);
    sim.run_until(u64::MAX);
    for n in &sim.nodes {
        let o = n.coord.status(&id).unwrap().outcome.unwrap();
        assert_eq!(o.accepted.len(), 3, "{:?}", o.rejected);
    }
}

// ---- Recovery: `Coordinator::restore` after a crash ----

fn sent_reveals(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Broadcast(Message::Reveal(_))))
        .count()
}

fn sent_commits(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Broadcast(Message::Commit(_))))
        .count()
}

#[test]
fn a_node_restarted_between_commit_and_reveal_reveals_and_reaches_the_same_result() {
    let mut sim = Sim::new(5, honest);
    let req = sim.request(0, 5);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    let deadline = sim.nodes[0].coord.status(&id).unwrap().deadline_ms;
    sim.run_until(deadline - 10);
    assert_eq!(sim.nodes[2].coord.status(&id).unwrap().committed, 5);

    let restored = sim.crash_and_restore(2);
    // It committed before the crash: no second commit, no second generation.
    assert_eq!(sent_commits(&restored), 0);
    assert!(!restored.iter().any(|a| matches!(a, Action::Generate(_))));
    let st = sim.nodes[2].coord.status(&id).unwrap();
    assert!(st.own_committed);
    assert_eq!((st.phase, st.committed), (Phase::Committing, 5));

    sim.run_until(u64::MAX);
    // The restarted node revealed once, at its deadline.
    assert_eq!(sent_reveals(&sim.nodes[2].actions), 1);
    let mut joint = Vec::new();
    for n in &sim.nodes {
        let st = n.coord.status(&id).unwrap();
        assert_eq!(st.phase, Phase::Completed);
        let o = st.outcome.unwrap();
        assert_eq!(o.accepted.len(), 5, "{:?}", o.rejected);
        joint.push(o.joint_hash().unwrap());
    }
    assert!(joint.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn restored_reveals_of_others_are_re_embedded_not_rejected() {
    let mut sim = Sim::new(5, honest);
    let req = sim.request(0, 5);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    let deadline = sim.nodes[0].coord.status(&id).unwrap().deadline_ms;
    // Everyone revealed at `deadline + 1`; the reveals reached node 2, whose re-embeddings
    // (due 1 ms later) die with it.
    sim.run_until(deadline + 1 + LATENCY_MS);
    assert_eq!(sim.nodes[2].coord.status(&id).unwrap().revealed, 5);
    assert!(sim.nodes[2].coord.status(&id).unwrap().outcome.is_none());

    let restored = sim.crash_and_restore(2);
    let reembeds = restored
        .iter()
        .filter(|a| matches!(a, Action::Embed { .. }))
        .count();
    assert_eq!(reembeds, 4, "the four reveals of others are re-embedded");
    assert!(!restored
        .iter()
        .any(|a| matches!(a, Action::Broadcast(Message::RevealRejected { .. }))));
    // The reveal window is still open: the own reveal goes out again (peers deduplicate it).
    assert_eq!(sent_reveals(&restored), 1);

    sim.run_until(u64::MAX);
    let mut joint = Vec::new();
    for n in &sim.nodes {
        let o = n.coord.status(&id).unwrap().outcome.unwrap();
        assert_eq!(o.accepted.len(), 5, "{:?}", o.rejected);
        assert!(o.rejected.is_empty());
        joint.push(o.joint_hash().unwrap());
        assert!(!n
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::Disagreement { .. })));
    }
    assert!(joint.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn a_node_restarted_after_the_reveal_window_does_not_reveal_and_decides_from_what_it_stored() {
    let mut sim = Sim::new(3, honest);
    let req = sim.request(0, 3);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    let st = sim.nodes[0].coord.status(&id).unwrap();
    sim.run_until(st.deadline_ms - 5);
    // Node 2 stops after committing and stays down past the reveal window.
    sim.down.push(2);
    sim.run_until(st.reveal_deadline_ms + 10);
    let restored = sim.crash_and_restore(2);
    assert_eq!(sent_reveals(&restored), 0);
    assert_eq!(sent_commits(&restored), 0);
    // It stored no reveal. It sends its inventory and waits the reconcile window for the
    // others' (they decided long ago and send none); then its consensus fails, and is stored.
    assert!(restored
        .iter()
        .any(|a| matches!(a, Action::Broadcast(Message::Inventory { .. }))));
    sim.run_until(
        st.reveal_deadline_ms + 10 + rakis_core::coordinator::DEFAULT_RECONCILE_WINDOW_MS + 10,
    );
    assert_eq!(
        sim.nodes[2].coord.status(&id).unwrap().phase,
        Phase::Failed(QuorumFailure::Consensus(FailureReason::NoVerifiedReveals))
    );
    assert!(sim.nodes[2]
        .actions
        .iter()
        .any(|a| matches!(a, Action::Persist(StoreOp::Failed { .. }))));
    sim.run_until(u64::MAX);
    assert_eq!(sent_reveals(&sim.nodes[2].actions), 0);
    for n in &sim.nodes[..2] {
        let o = n.coord.status(&id).unwrap().outcome.unwrap();
        assert_eq!((o.committed, o.accepted.len()), (3, 2));
    }
}

#[test]
fn a_restored_completed_request_is_neither_recomputed_nor_announced() {
    let mut sim = Sim::new(3, honest);
    let req = sim.request(0, 3);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(u64::MAX);
    let record = sim
        .records(1)
        .into_iter()
        .find(|r| r.request.id() == id)
        .unwrap();
    assert!(record.is_closed());
    let before = sim.nodes[1].coord.status(&id).unwrap();

    let mut fresh = Coordinator::with_rng_seed(
        NodeKey::from_seed(1),
        sim.nodes[1].coord.config().clone(),
        9,
    );
    assert_eq!(
        fresh.record_status(&record).unwrap().phase,
        Phase::Completed
    );
    let actions = fresh.restore(record.clone(), sim.now + 60_000);
    assert!(actions.is_empty(), "{actions:?}");
    let after = fresh.status(&id).unwrap();
    assert_eq!(after.phase, Phase::Completed);
    assert_eq!(after.outcome, before.outcome);
    assert_eq!(after.peer_results, before.peer_results);
    assert_eq!(fresh.signed_result(&id), record.signed.as_ref());
    assert_eq!(fresh.next_wakeup(), None);
    assert!(fresh.handle(sim.now + 120_000, Input::Tick).is_empty());
}

fn solo(key: u64) -> Coordinator {
    let config = CoordinatorConfig {
        served_models: vec![MODEL.into()],
        workers: 1,
        embedding_model: Some(rakis_core::consensus::DEFAULT_EMBEDDING_MODEL.into()),
        reveal_window_ms: 1_000,
        verify_grace_ms: 1_000,
        ..CoordinatorConfig::default()
    };
    Coordinator::with_rng_seed(NodeKey::from_seed(key), config, key)
}

#[test]
fn an_own_output_stored_without_its_commit_is_committed_only_before_the_deadline() {
    let f = QuorumFixture::new(3, 1);
    let id = f.request.id();
    let mut record = QuorumRecord::new(f.request.clone());
    record.own = Some(f.own.clone());
    let created = f.request.created_at_ms;

    let mut c = solo(0);
    let actions = c.restore(record.clone(), created + 500);
    let commits: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::Commit(c)) => Some(c.commit.commitment),
            _ => None,
        })
        .collect();
    assert_eq!(commits, vec![f.own.commitment]);
    let persist = actions
        .iter()
        .position(|a| matches!(a, Action::Persist(StoreOp::Commit(_))))
        .unwrap();
    let broadcast = actions
        .iter()
        .position(|a| matches!(a, Action::Broadcast(Message::Commit(_))))
        .unwrap();
    assert!(persist < broadcast);
    assert!(c.status(&id).unwrap().own_committed);

    let mut late = solo(0);
    let actions = late.restore(record, f.request.deadline_ms() + 1);
    assert_eq!(sent_commits(&actions), 0);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Emit(NodeEvent::AnswerSkipped { .. }))));
    assert_eq!(
        late.status(&id).unwrap().phase,
        Phase::Failed(QuorumFailure::QuorumNotReached {
            committed: 0,
            needed: 3
        })
    );
}

#[test]
fn an_own_output_of_another_key_is_not_restored_as_ours() {
    let f = QuorumFixture::new(3, 1);
    let id = f.request.id();
    let mut record = QuorumRecord::new(f.request.clone());
    record.own = Some(f.own.clone());
    record.commits = f.commits.clone();
    // The store belonged to node 0; node 7 restarts on it.
    let mut c = solo(7);
    let actions = c.restore(record, f.request.deadline_ms() + 10);
    assert_eq!(sent_commits(&actions), 0);
    assert_eq!(sent_reveals(&actions), 0);
    let st = c.status(&id).unwrap();
    assert!(!st.own_committed);
    assert_eq!((st.phase, st.committed), (Phase::Revealing, 3));
}

#[test]
fn a_node_restarted_before_it_answered_answers_while_the_deadline_allows() {
    let f = QuorumFixture::new(3, 1);
    let id = f.request.id();
    let record = QuorumRecord::new(f.request.clone());
    let mut c = solo(0);
    let actions = c.restore(record.clone(), f.request.created_at_ms + 100);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Generate(j) if j.request_id == id)));
    // Restoring what is already tracked does nothing.
    assert!(c
        .restore(record.clone(), f.request.created_at_ms + 100)
        .is_empty());

    let mut late = solo(0);
    let actions = late.restore(record, f.request.deadline_ms() + 1);
    assert!(!actions.iter().any(|a| matches!(a, Action::Generate(_))));
}

#[test]
fn an_invalid_stored_request_is_not_restored() {
    let f = QuorumFixture::new(3, 1);
    let mut request = f.request.clone();
    request.messages.clear();
    let mut c = solo(0);
    assert!(c
        .restore(QuorumRecord::new(request.clone()), f.request.created_at_ms)
        .is_empty());
    assert!(c.status(&request.id()).is_none());
    assert!(c.record_status(&QuorumRecord::new(request)).is_none());
}

#[test]
fn a_node_that_cannot_verify_has_no_timer_while_it_waits_for_results() {
    let f = QuorumFixture::new(3, 1);
    let mut record = QuorumRecord::new(f.request.clone());
    record.commits = f.commits.clone();
    let observer = CoordinatorConfig {
        reveal_window_ms: 1_000,
        ..CoordinatorConfig::default()
    };
    let mut c = Coordinator::with_rng_seed(NodeKey::from_seed(9), observer, 9);
    let st = f.request.deadline_ms() + 1_001;
    c.restore(record, st);
    assert_eq!(c.status(&f.request.id()).unwrap().phase, Phase::Verifying);
    // Before the fix the timer of a verifying quorum stayed due for ever (a busy loop).
    assert_eq!(c.next_wakeup(), None);
}

#[test]
fn a_verifier_cut_off_during_the_commits_catches_up_by_sync_and_agrees() {
    // Nodes 0..3 answer; node 4 only verifies. Node 4 hears the request, then is cut off
    // while the commits fly, and is back when the reveals come.
    let mut sim = Sim::new(5, |i| if i < 4 { honest(i) } else { None });
    let req = sim.request(0, 4);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(sim.now + 20);
    assert!(sim.nodes[4].coord.status(&id).is_some());
    let deadline = sim.nodes[0].coord.status(&id).unwrap().deadline_ms;
    // Cut node 4 off: drop every delivery to it until just before the deadline.
    let now = sim.now;
    sim.down.push(4);
    sim.run_until(deadline - 1);
    sim.down.retain(|d| *d != 4);
    assert_eq!(sim.nodes[4].coord.status(&id).unwrap().committed, 0);
    let _ = now;
    sim.run_until(u64::MAX);
    assert!(sim.sync_requests > 0);
    let lonely = sim.nodes[4].coord.status(&id).unwrap();
    assert_eq!(lonely.phase, Phase::Completed, "{:?}", sim.nodes[4].events);
    let theirs = sim.nodes[0].coord.status(&id).unwrap().outcome.unwrap();
    assert_eq!(lonely.outcome.unwrap().joint_hash(), theirs.joint_hash());
}

#[test]
fn a_node_that_learns_of_a_request_only_from_reveals_syncs_and_computes_the_same_result() {
    let mut sim = Sim::new(5, |i| if i < 4 { honest(i) } else { None });
    let req = sim.request(0, 4);
    let id = req.id();
    // Node 4 is down from the start: it misses the request and the commits.
    sim.down.push(4);
    sim.feed(0, Input::LocalRequest(req));
    let deadline = sim.nodes[0].coord.status(&id).unwrap().deadline_ms;
    sim.run_until(deadline - 1);
    sim.down.retain(|d| *d != 4);
    assert!(sim.nodes[4].coord.status(&id).is_none());
    sim.run_until(u64::MAX);
    let late = sim.nodes[4].coord.status(&id).expect("learnt by sync");
    assert_eq!(late.phase, Phase::Completed, "{:?}", sim.nodes[4].events);
    let theirs = sim.nodes[1].coord.status(&id).unwrap().outcome.unwrap();
    assert_eq!(late.outcome.unwrap().joint_hash(), theirs.joint_hash());
}

#[test]
fn a_relayed_commit_signed_after_the_deadline_is_ignored() {
    let mut sim = Sim::new(3, honest);
    let req = sim.request(0, 3);
    let id = req.id();
    sim.feed(0, Input::LocalRequest(req));
    sim.run_until(sim.now + 300);
    let Message::Commit(c) = sim.nodes[2]
        .sent
        .iter()
        .find(|m| matches!(m, Message::Commit(_)))
        .cloned()
        .unwrap()
    else {
        unreachable!()
    };
    let deadline = sim.nodes[0].coord.status(&id).unwrap().deadline_ms;
    let mut late = c.clone();
    late.commit.commitment.0[0] ^= 1;
    let before = sim.nodes[1].stored.len();
    sim.feed(
        1,
        Input::Synced(vec![SyncedMessage {
            from: sim.nodes[2].coord.node_id(),
            message: Message::Commit(late),
            sent_at_ms: deadline + 1,
        }]),
    );
    assert_eq!(sim.nodes[1].stored.len(), before);
}

/// A peer's request from `from`, created at `at`, with the given nonce and deadline.
fn peer_request(
    from: rakis_core::NodeId,
    nonce: u64,
    at: u64,
    max_time_ms: u64,
) -> InferenceRequest {
    let mut r = InferenceRequest::new("Why is the sky blue?", vec![MODEL.into()], from, at);
    r.nonce = nonce;
    r.frame.max_time_ms = max_time_ms;
    r
}

/// The first refusal (`Ignored` event) among `actions`: whom it names and why.
fn refusal(actions: &[Action]) -> Option<(rakis_core::NodeId, rakis_core::IgnoreReason)> {
    actions.iter().find_map(|a| match a {
        Action::Emit(NodeEvent::Ignored { reason, node, .. }) => Some((*node, *reason)),
        _ => None,
    })
}

/// Regression (found by the flood scenario of the simulator): closed requests used to count
/// against `max_open_requests` for ever, so a node refused every request after that many in its
/// lifetime (10,000 by default; a flooder sending valid requests got there in minutes). Closed
/// requests are now forgotten when room is needed, once no relayed copy can revive them; open
/// requests never are.
#[test]
fn closed_requests_make_room_open_ones_do_not() {
    let key = NodeKey::from_seed(1);
    let peer = NodeKey::from_seed(2).node_id();
    let config = CoordinatorConfig {
        embedding_model: Some(rakis_core::consensus::DEFAULT_EMBEDDING_MODEL.to_string()),
        reveal_window_ms: 1_000,
        verify_grace_ms: 1_000,
        max_open_requests: 2,
        ..CoordinatorConfig::default()
    };
    let mut c = Coordinator::with_rng_seed(key, config, 1);
    let request =
        |nonce: u64, at: u64, max_time_ms: u64| peer_request(peer, nonce, at, max_time_ms);
    let deliver = |c: &mut Coordinator, now: u64, r: &InferenceRequest| {
        c.handle(
            now,
            Input::Message {
                from: peer,
                message: Message::Request(r.clone()),
            },
        );
        c.status(&r.id()).is_some()
    };
    let t0 = 1_700_000_000_000;
    // Two requests fail for want of commits at their deadline: closed.
    let (a, b) = (request(1, t0, 1_000), request(2, t0, 1_000));
    assert!(deliver(&mut c, t0, &a));
    assert!(deliver(&mut c, t0, &b));
    c.handle(t0 + 1_001, Input::Tick);
    assert!(matches!(c.status(&a.id()).unwrap().phase, Phase::Failed(_)));
    // Full, and a relayed copy could still revive the closed ones: refused.
    let early = request(3, t0 + 1_500, 1_000);
    assert!(!deliver(&mut c, t0 + 1_500, &early));
    // Past deadline + reveal window + grace, the closed requests make room.
    let now = t0 + 3_001;
    let d = request(4, now, 60_000);
    assert!(
        deliver(&mut c, now, &d),
        "a closed request kept the node full"
    );
    assert_eq!(c.request_ids().len(), 1);
    // Open requests are never forgotten: the node stays full until they close.
    assert!(deliver(&mut c, now, &request(5, now, 60_000)));
    assert!(!deliver(
        &mut c,
        now + 10_000,
        &request(6, now + 10_000, 60_000)
    ));
    assert_eq!(c.request_ids().len(), 2);
}

#[test]
fn one_requester_cannot_fill_the_node_nor_set_far_deadlines() {
    let key = NodeKey::from_seed(1);
    let (flooder, other) = (
        NodeKey::from_seed(2).node_id(),
        NodeKey::from_seed(3).node_id(),
    );
    let config = CoordinatorConfig {
        embedding_model: Some(rakis_core::consensus::DEFAULT_EMBEDDING_MODEL.to_string()),
        max_open_per_requester: 4,
        max_request_time_ms: 60_000,
        ..CoordinatorConfig::default()
    };
    let mut c = Coordinator::with_rng_seed(key, config, 1);
    let t0 = 1_700_000_000_000;
    let request = |from: rakis_core::NodeId, nonce: u64, max_time_ms: u64| {
        peer_request(from, nonce, t0, max_time_ms)
    };
    let deliver = |c: &mut Coordinator, r: &InferenceRequest| {
        let from = r.requester.unwrap();
        let actions = c.handle(
            t0,
            Input::Message {
                from,
                message: Message::Request(r.clone()),
            },
        );
        let refused = refusal(&actions).map(|(node, reason)| {
            assert_eq!(node, from);
            reason
        });
        (c.status(&r.id()).is_some(), refused)
    };
    // Four open requests of one requester are taken, the fifth is refused with its reason.
    for n in 0..4 {
        assert_eq!(deliver(&mut c, &request(flooder, n, 30_000)), (true, None));
    }
    assert_eq!(
        deliver(&mut c, &request(flooder, 4, 30_000)),
        (false, Some(rakis_core::IgnoreReason::RequesterOverLimit))
    );
    // Another requester is not held back by it.
    assert_eq!(deliver(&mut c, &request(other, 0, 30_000)), (true, None));
    // A deadline beyond the bound is refused whoever asks.
    assert_eq!(
        deliver(&mut c, &request(other, 1, 60_001)),
        (false, Some(rakis_core::IgnoreReason::DeadlineTooFar))
    );
    // Once the flooder's requests close (no commits by their deadline), it may ask again.
    c.handle(t0 + 30_001, Input::Tick);
    let mut later = request(flooder, 5, 30_000);
    later.created_at_ms = t0 + 30_001;
    let actions = c.handle(
        t0 + 30_001,
        Input::Message {
            from: flooder,
            message: Message::Request(later.clone()),
        },
    );
    assert!(c.status(&later.id()).is_some(), "{actions:?}");
    // The host's own requests are not limited.
    let mut own = request(flooder, 6, 3_600_000);
    own.requester = Some(c.node_id());
    c.handle(t0, Input::LocalRequest(own.clone()));
    assert!(c.status(&own.id()).is_some());
}

#[test]
fn the_least_served_requester_is_answered_first() {
    let key = NodeKey::from_seed(1);
    let (flooder, other) = (
        NodeKey::from_seed(2).node_id(),
        NodeKey::from_seed(3).node_id(),
    );
    let config = CoordinatorConfig {
        served_models: vec![MODEL.into()],
        workers: 1,
        embedding_model: Some(rakis_core::consensus::DEFAULT_EMBEDDING_MODEL.to_string()),
        ..CoordinatorConfig::default()
    };
    let mut c = Coordinator::with_rng_seed(key, config, 1);
    let t0 = 1_700_000_000_000;
    let request = |from: rakis_core::NodeId, nonce: u64, max_time_ms: u64| {
        peer_request(from, nonce, t0, max_time_ms)
    };
    let started = |actions: &[Action]| {
        actions.iter().find_map(|a| match a {
            Action::Generate(job) => Some(job.request_id),
            _ => None,
        })
    };
    // The flooder's first request takes the worker; five more queue, with the earliest
    // deadlines; then another requester's request with a later deadline.
    let first = request(flooder, 0, 10_000);
    let actions = c.handle(
        t0,
        Input::Message {
            from: flooder,
            message: Message::Request(first.clone()),
        },
    );
    assert_eq!(started(&actions), Some(first.id()));
    for n in 1..6 {
        c.handle(
            t0,
            Input::Message {
                from: flooder,
                message: Message::Request(request(flooder, n, 10_000)),
            },
        );
    }
    let honest = request(other, 0, 20_000);
    c.handle(
        t0,
        Input::Message {
            from: other,
            message: Message::Request(honest.clone()),
        },
    );
    // When the worker frees, the requester served least goes first, deadline notwithstanding.
    let actions = c.handle(
        t0 + 100,
        Input::Generated {
            request_id: first.id(),
            result: Err(rakis_core::EngineError::DeadlineExceeded),
        },
    );
    assert_eq!(started(&actions), Some(honest.id()));
}

#[test]
fn what_peers_can_make_a_node_hold_is_bounded_in_bytes() {
    let key = NodeKey::from_seed(1);
    let t0 = 1_700_000_000_000;
    let request = |seed: u64| peer_request(NodeKey::from_seed(seed).node_id(), seed, t0, 1_000);
    let each = Coordinator::reservation(&request(10), None);
    let config = CoordinatorConfig {
        embedding_model: Some(rakis_core::consensus::DEFAULT_EMBEDDING_MODEL.to_string()),
        reveal_window_ms: 1_000,
        verify_grace_ms: 1_000,
        max_state_bytes: 12 * each + each / 2,
        ..CoordinatorConfig::default()
    };
    let mut c = Coordinator::with_rng_seed(key, config, 1);
    let refusal = |actions: &[Action]| refusal(actions).map(|(_, reason)| reason);
    let deliver = |c: &mut Coordinator, now: u64, r: &InferenceRequest| {
        let actions = c.handle(
            now,
            Input::Message {
                from: r.requester.unwrap(),
                message: Message::Request(r.clone()),
            },
        );
        (c.status(&r.id()).is_some(), refusal(&actions))
    };
    // One requester may hold a quarter of the budget: three requests, not four.
    let mut same = request(30);
    assert_eq!(deliver(&mut c, t0, &same), (true, None));
    for n in 1..3 {
        same.nonce = 100 + n;
        assert_eq!(deliver(&mut c, t0, &same), (true, None));
    }
    same.nonce = 200;
    assert_eq!(
        deliver(&mut c, t0, &same),
        (false, Some(rakis_core::IgnoreReason::StateBudget))
    );
    // Twelve requests fit the budget in all; the thirteenth (another requester) does not.
    for s in 10..19 {
        assert_eq!(deliver(&mut c, t0, &request(s)), (true, None));
    }
    assert_eq!(c.reserved_bytes(), 12 * each);
    assert_eq!(
        deliver(&mut c, t0, &request(19)),
        (false, Some(rakis_core::IgnoreReason::StateBudget))
    );
    // An output longer than the request allows (256 tokens × 64 bytes) is refused.
    let first = request(10);
    let long = "word ".repeat(first.max_output_bytes() / 5 + 1);
    let liar = NodeKey::from_seed(50);
    let actions = c.handle(
        t0 + 10,
        Input::Message {
            from: liar.node_id(),
            message: Message::ConsensusResult(testing::forged_result(&liar, first.id(), &long)),
        },
    );
    assert_eq!(
        refusal(&actions),
        Some(rakis_core::IgnoreReason::OutputTooLong)
    );
    // An open network tracks at most 64 committers per request.
    for k in 0..65u64 {
        let node = NodeKey::from_seed(1_000 + k).node_id();
        let commit = rakis_core::protocol::CommitMsg::signed(
            &NodeKey::from_seed(1_000 + k),
            &rakis_core::consensus::network_digest(&c.config().network_id),
            rakis_core::consensus::Commit {
                request_id: first.id(),
                node,
                inference_id: rakis_core::InferenceId([k as u8; 32]),
                commitment: rakis_core::consensus::Commitment([k as u8; 32]),
            },
            MODEL,
        );
        let actions = c.handle(
            t0 + 20,
            Input::Message {
                from: node,
                message: Message::Commit(commit),
            },
        );
        let expected = (k == 64).then_some(rakis_core::IgnoreReason::TooManyCommitters);
        assert_eq!(refusal(&actions), expected, "committer {k}");
    }
    assert_eq!(c.status(&first.id()).unwrap().committed, 64);
    // Closed and past the time a relayed copy could revive them, requests free their bytes.
    c.handle(t0 + 1_001, Input::Tick);
    let mut later = request(14);
    later.created_at_ms = t0 + 3_001;
    assert_eq!(deliver(&mut c, t0 + 3_001, &later), (true, None));
    assert!(c.reserved_bytes() <= 12 * each);
}
