//! Whole nodes (driver + coordinator + parts) on the in-memory hub, on tokio's paused clock:
//! virtual time, no real sleeps.

use std::time::Duration;

use futures::StreamExt;
use rakis_core::consensus::{Commit, Reveal, Salt};
use rakis_core::envelope::{open, seal, MAX_MESSAGE_SIZE};
use rakis_core::protocol::{CommitMsg, RevealMsg};
use rakis_core::testing::{self, HashEmbedder, MemoryHub, ScriptedEngine};
use rakis_core::{
    ConfigError, InferenceId, InferenceRequest, Message, Node, NodeError, NodeEvent, NodeHandle,
    NodeKey, QuorumFailure, RejectReason, RequestError, TokioClock, Transport, TransportEvent,
};
use tokio::sync::broadcast;

const MODEL: &str = "smollm2-135m";
const NET: &str = "test-net";
const BASE_MS: u64 = 1_700_000_000_000;

fn spawn_node(hub: &MemoryHub, seed: u64, answer: &str) -> NodeHandle {
    let key = NodeKey::from_seed(seed);
    let node = Node::builder()
        .open_network()
        .network_id(NET)
        .transport(hub.join(key.node_id()))
        .key(key)
        .engine(ScriptedEngine::constant(MODEL, answer).with_delay(Duration::from_millis(50)))
        .embedder(HashEmbedder::default_model())
        .clock(TokioClock::starting_at(BASE_MS))
        .rng_seed(seed)
        .build()
        .unwrap();
    node.spawn().0
}

fn request(h: &NodeHandle, quorum: u32) -> InferenceRequest {
    testing::request(MODEL, h.node_id(), h.now_ms(), quorum, 1_000)
}

fn drain(rx: &mut broadcast::Receiver<NodeEvent>) -> Vec<NodeEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn hub() -> MemoryHub {
    MemoryHub::jittery(1)
}

#[tokio::test(start_paused = true)]
async fn five_nodes_one_request_quorum_three_reach_the_same_result() {
    let hub = hub();
    let answers = [
        "The capital of France is Paris.",
        "Paris is the capital of France.",
        "The capital of France is Paris, of course.",
        "The capital of France is Paris.",
        "France's capital is Paris.",
    ];
    let nodes: Vec<NodeHandle> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| spawn_node(&hub, i as u64, a))
        .collect();
    let mut subs: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
    let id = nodes[0].submit(request(&nodes[0], 3)).await.unwrap();

    let mut results = Vec::new();
    for n in &nodes {
        let outcome = n
            .wait_for_outcome(id, Duration::from_secs(30))
            .await
            .unwrap();
        let sel = outcome.selected().unwrap();
        results.push((outcome.joint_hash().unwrap(), sel.output.clone(), sel.node));
        assert_eq!(outcome.committed, 5);
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    // Let the signed results propagate, then check the events.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for rx in &mut subs {
        let events = drain(rx);
        assert!(events
            .iter()
            .any(|e| matches!(e, NodeEvent::Completed { request_id, .. } if *request_id == id)));
        assert!(events
            .iter()
            .any(|e| matches!(e, NodeEvent::Committed { .. })));
        assert!(!events
            .iter()
            .any(|e| matches!(e, NodeEvent::Disagreement { .. })));
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, NodeEvent::PeerResult { .. }))
                .count(),
            4
        );
    }
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn quorum_not_reached_fails_on_every_node_and_nobody_reveals() {
    let hub = hub();
    let nodes: Vec<NodeHandle> = (0..3).map(|i| spawn_node(&hub, i, "Paris.")).collect();
    let mut subs: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
    let id = nodes[0].submit(request(&nodes[0], 4)).await.unwrap();
    for n in &nodes {
        let err = n
            .wait_for_outcome(id, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                NodeError::RequestFailed(QuorumFailure::QuorumNotReached {
                    committed: 3,
                    needed: 4
                })
            ),
            "{err}"
        );
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    for rx in &mut subs {
        let events = drain(rx);
        assert!(!events.iter().any(|e| matches!(
            e,
            NodeEvent::RevealSeen { .. } | NodeEvent::RevealOpened { .. }
        )));
    }
}

/// A participant that is not a Node: it commits honestly, then reveals a different output.
async fn rogue(hub: MemoryHub, key: NodeKey, committed: &'static str, revealed: &'static str) {
    let transport = hub.join(key.node_id());
    let mut events = transport.events();
    let embedder = HashEmbedder::default_model();
    let clock = TokioClock::starting_at(BASE_MS);
    use rakis_core::Clock;
    while let Some(ev) = events.next().await {
        let TransportEvent::Message { bytes, .. } = ev else {
            continue;
        };
        let Ok(v) = open(&bytes, NET) else { continue };
        let Message::Request(req) = v.envelope.message else {
            continue;
        };
        let id = req.id();
        let embedding = embedder.embed_binary_one(committed).unwrap();
        let salt = Salt([9; 32]);
        let inference_id = InferenceId([8; 32]);
        let commitment = rakis_core::consensus::commitment(
            &id,
            &key.node_id(),
            &inference_id,
            committed,
            &embedding,
            &salt,
        );
        let network = rakis_core::consensus::network_digest(NET);
        let commit = CommitMsg::signed(
            &key,
            &network,
            Commit {
                request_id: id,
                node: key.node_id(),
                inference_id,
                commitment,
            },
            MODEL,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        transport
            .broadcast(seal(&key, NET, clock.now_ms(), Message::Commit(commit)).unwrap())
            .await
            .unwrap();
        let wait = req.deadline_ms() + 20 - clock.now_ms();
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let reveal = RevealMsg::signed(
            &key,
            &network,
            Reveal {
                request_id: id,
                node: key.node_id(),
                inference_id,
                output: revealed.into(),
                embedding: embedder.embed_binary_one(revealed).unwrap(),
                salt,
                embedding_model: embedder_model(),
            },
            MODEL,
            vec![],
        );
        transport
            .broadcast(seal(&key, NET, clock.now_ms(), Message::Reveal(reveal)).unwrap())
            .await
            .unwrap();
        return;
    }
}

fn embedder_model() -> String {
    rakis_core::consensus::DEFAULT_EMBEDDING_MODEL.to_string()
}

#[tokio::test(start_paused = true)]
async fn a_reveal_that_differs_from_its_commit_is_rejected_by_all_and_the_reason_is_broadcast() {
    let hub = hub();
    let nodes: Vec<NodeHandle> = (0..4)
        .map(|i| spawn_node(&hub, i, "The capital of France is Paris."))
        .collect();
    let rogue_key = NodeKey::from_seed(99);
    let rogue_id = rogue_key.node_id();
    tokio::spawn(rogue(
        hub.clone(),
        rogue_key,
        "The capital of France is Paris.",
        "The capital of France is Lyon.",
    ));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut subs: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
    let id = nodes[0].submit(request(&nodes[0], 5)).await.unwrap();
    let mut joint = Vec::new();
    for n in &nodes {
        let o = n
            .wait_for_outcome(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(o.committed, 5);
        assert_eq!(o.accepted.len(), 4);
        assert!(o.accepted.iter().all(|a| a.node != rogue_id));
        joint.push(o.joint_hash());
    }
    assert!(joint.windows(2).all(|w| w[0] == w[1]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for rx in &mut subs {
        let events = drain(rx);
        assert!(events.iter().any(|e| matches!(e,
            NodeEvent::RevealRejected { node, reason: RejectReason::CommitmentMismatch, .. } if *node == rogue_id)));
        // The three other honest nodes announced the same rejection.
        let announced = events
            .iter()
            .filter(|e| matches!(e, NodeEvent::PeerRejectedReveal { node, reason: RejectReason::CommitmentMismatch, .. } if *node == rogue_id))
            .count();
        assert_eq!(announced, 3);
    }
}

#[tokio::test(start_paused = true)]
async fn bad_messages_are_dropped_and_change_no_state() {
    let hub = hub();
    let node = spawn_node(&hub, 1, "Paris.");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let outsider = NodeKey::from_seed(50);
    let clock = TokioClock::starting_at(BASE_MS);
    use rakis_core::Clock;
    let mk = |nonce: u64| {
        let mut r = InferenceRequest::new(
            "Hello?",
            vec![MODEL.into()],
            outsider.node_id(),
            clock.now_ms(),
        );
        r.nonce = nonce;
        r.frame.quorum = 1;
        r
    };
    // Bad signature: flip a byte inside the signed body.
    let mut tampered = seal(&outsider, NET, clock.now_ms(), Message::Request(mk(1))).unwrap();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x40;
    hub.inject(tampered);
    // Wrong network.
    hub.inject(
        seal(
            &outsider,
            "other-net",
            clock.now_ms(),
            Message::Request(mk(2)),
        )
        .unwrap(),
    );
    // Oversized.
    hub.inject(vec![1u8; MAX_MESSAGE_SIZE + 1]);
    // Malformed.
    hub.inject(vec![1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x02]);
    // Too old (clock skew).
    hub.inject(
        seal(
            &outsider,
            NET,
            clock.now_ms() - 120_000,
            Message::Request(mk(3)),
        )
        .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stats = node.stats().await.unwrap();
    assert_eq!(stats.dropped_messages, 5);
    assert_eq!(stats.requests, 0);
    // A valid message is used once; its replay is dropped.
    let valid = seal(&outsider, NET, clock.now_ms(), Message::Request(mk(4))).unwrap();
    hub.inject(valid.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    hub.inject(valid);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stats = node.stats().await.unwrap();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.dropped_messages, 6);
}

#[tokio::test(start_paused = true)]
async fn builder_validates_the_combination_of_parts() {
    let hub = MemoryHub::default();
    let key = NodeKey::from_seed(1);
    let err = Node::builder()
        .open_network()
        .transport(hub.join(key.node_id()))
        .engine(ScriptedEngine::constant(MODEL, "x"))
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(&err, NodeError::Config(ConfigError::EngineWithoutEmbedder)),
        "{err}"
    );
    let err = Node::builder()
        .open_network()
        .embedder(HashEmbedder::default_model())
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(&err, NodeError::Config(ConfigError::MissingTransport)),
        "{err}"
    );
    // Who may answer is an explicit choice: a membership, or an open network.
    let err = Node::builder()
        .transport(hub.join(key.node_id()))
        .embedder(HashEmbedder::default_model())
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(&err, NodeError::Config(ConfigError::NoMembership)),
        "{err}"
    );
    let err = Node::builder()
        .open_network()
        .transport(hub.join(key.node_id()))
        .engine(ScriptedEngine::constant(MODEL, "x").with_workers(0))
        .embedder(HashEmbedder::default_model())
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(&err, NodeError::Config(ConfigError::NoWorkers)),
        "{err}"
    );
    // A verifier-only node (embedder, no engine) and an observer (neither) are valid.
    Node::builder()
        .open_network()
        .transport(hub.join(key.node_id()))
        .embedder(HashEmbedder::default_model())
        .build()
        .unwrap();
    Node::builder()
        .open_network()
        .transport(hub.join(key.node_id()))
        .build()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn invalid_submissions_are_refused_and_shutdown_is_graceful() {
    let hub = MemoryHub::default();
    let key = NodeKey::from_seed(1);
    let node = Node::builder()
        .open_network()
        .network_id(NET)
        .transport(hub.join(key.node_id()))
        .key(key)
        .clock(TokioClock::starting_at(BASE_MS))
        .build()
        .unwrap();
    let (h, task) = node.spawn();
    let mut r = request(&h, 1);
    r.messages.clear();
    assert!(matches!(
        h.submit(r).await,
        Err(NodeError::InvalidRequest(_))
    ));
    let mut r = request(&h, 1);
    r.created_at_ms -= 10_000;
    assert!(matches!(
        h.submit(r).await,
        Err(NodeError::InvalidRequest(RequestError::DeadlinePassed))
    ));
    assert!(h.requests().await.unwrap().is_empty());
    h.shutdown().await.unwrap();
    task.await.unwrap();
    assert!(matches!(
        h.status(rakis_core::RequestId([0; 32])).await,
        Err(NodeError::ShutDown)
    ));
}

mockall::mock! {
    pub Store {}
    #[async_trait::async_trait]
    impl rakis_core::CommitStore for Store {
        async fn apply(&self, op: rakis_core::store::StoreOp) -> Result<(), rakis_core::StoreError>;
        async fn quorum(&self, request_id: &rakis_core::RequestId) -> Result<Option<rakis_core::store::QuorumRecord>, rakis_core::StoreError>;
        async fn open_quorums(&self) -> Result<Vec<rakis_core::store::QuorumRecord>, rakis_core::StoreError>;
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_store_refuses_its_output_never_commits() {
    let hub = hub();
    let a = spawn_node(&hub, 1, "Paris.");
    let b = spawn_node(&hub, 2, "Paris.");
    let mut store = MockStore::new();
    store.expect_open_quorums().returning(|| Ok(vec![]));
    store.expect_quorum().returning(|_| Ok(None));
    store.expect_apply().returning(|op| match op {
        rakis_core::store::StoreOp::OwnOutput(_) => Err(rakis_core::StoreError::io(
            "writing the own output",
            std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full"),
        )),
        _ => Ok(()),
    });
    let key = NodeKey::from_seed(3);
    let c = Node::builder()
        .open_network()
        .network_id(NET)
        .transport(hub.join(key.node_id()))
        .key(key)
        .engine(ScriptedEngine::constant(MODEL, "Paris."))
        .embedder(HashEmbedder::default_model())
        .store(store)
        .clock(TokioClock::starting_at(BASE_MS))
        .build()
        .unwrap()
        .spawn()
        .0;
    let mut events = c.subscribe();
    let id = a.submit(request(&a, 3)).await.unwrap();
    let err = b
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            NodeError::RequestFailed(QuorumFailure::QuorumNotReached {
                committed: 2,
                needed: 3
            })
        ),
        "{err}"
    );
    let events = drain(&mut events);
    assert!(events.iter().any(
        |e| matches!(e, NodeEvent::AnswerSkipped { reason, .. } if reason.contains("disk full"))
    ));
    assert!(!events
        .iter()
        .any(|e| matches!(e, NodeEvent::Committed { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_node_misses_the_quorum_while_the_rest_agree() {
    let hub = hub();
    let nodes: Vec<NodeHandle> = (0..4).map(|i| spawn_node(&hub, i, "Paris.")).collect();
    hub.partition(&[vec![nodes[3].node_id()]]);
    let id = nodes[0].submit(request(&nodes[0], 3)).await.unwrap();
    for n in &nodes[..3] {
        let o = n
            .wait_for_outcome(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(o.committed, 3);
    }
    // The isolated node never even saw the request.
    assert!(nodes[3].status(id).await.unwrap().is_none());
    hub.heal();
    let (delivered, dropped) = hub.stats();
    assert!(delivered > 0);
    assert_eq!(dropped, 0);
}

/// A verifier-only node whose clock is `clock` (shared with the others: nodes started later
/// must not start their clock at `BASE_MS` again).
fn verifier(hub: &MemoryHub, seed: u64, clock: TokioClock) -> NodeHandle {
    let key = NodeKey::from_seed(seed);
    Node::builder()
        .open_network()
        .network_id(NET)
        .transport(hub.join(key.node_id()))
        .key(key)
        .embedder(HashEmbedder::default_model())
        .clock(clock)
        .build()
        .unwrap()
        .spawn()
        .0
}

#[tokio::test(start_paused = true)]
async fn a_node_that_joins_after_the_commits_catches_up_and_computes_the_same_result() {
    let hub = hub();
    let clock = TokioClock::starting_at(BASE_MS);
    let nodes: Vec<NodeHandle> = (0..4)
        .map(|i| spawn_node(&hub, i, "The capital of France is Paris."))
        .collect();
    let id = nodes[0].submit(request(&nodes[0], 4)).await.unwrap();
    // Commits are out after ~60 ms; the deadline is at 1,000 ms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(nodes[1].status(id).await.unwrap().unwrap().committed, 4);
    let late = verifier(&hub, 40, clock);
    let outcome = late
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    let theirs = nodes[0]
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.joint_hash(), theirs.joint_hash());
    assert_eq!(outcome.committed, 4);
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_node_rejoins_and_agrees() {
    let hub = hub();
    let nodes: Vec<NodeHandle> = (0..4)
        .map(|i| spawn_node(&hub, i, "The capital of France is Paris."))
        .collect();
    let watcher = verifier(&hub, 41, TokioClock::starting_at(BASE_MS));
    let id = nodes[0].submit(request(&nodes[0], 4)).await.unwrap();
    // The watcher hears the request, then is cut off while the commits fly.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(watcher.status(id).await.unwrap().is_some());
    hub.partition(&[vec![watcher.node_id()]]);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(watcher.status(id).await.unwrap().unwrap().committed, 0);
    hub.heal();
    // It fails the quorum at its deadline (it saw no commit); then the reveals make it ask
    // for the commits, and the quorum reopens.
    let mut events = watcher.subscribe();
    let failed = watcher.wait_for_outcome(id, Duration::from_secs(30)).await;
    assert!(
        matches!(
            &failed,
            Err(NodeError::RequestFailed(
                QuorumFailure::QuorumNotReached { .. }
            ))
        ),
        "{failed:?}"
    );
    let outcome = loop {
        match events.recv().await.unwrap() {
            NodeEvent::Completed {
                request_id,
                outcome,
            } if request_id == id => break outcome,
            _ => {}
        }
    };
    let theirs = nodes[2]
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.joint_hash(), theirs.joint_hash());
}

#[tokio::test(start_paused = true)]
async fn waiting_for_an_outcome_reports_every_failure_even_behind_the_event_stream() {
    // A light client (no engine) with the smallest event buffer; 40 requests of quorum 3 that
    // nobody answers all fail at the same instant: 40 failure events in one burst overrun the
    // waiters' 16-event buffers.
    let hub = hub();
    let key = NodeKey::from_seed(77);
    let node = Node::builder()
        .open_network()
        .network_id(NET)
        .transport(hub.join(key.node_id()))
        .key(key)
        .config(rakis_core::NodeConfig {
            event_capacity: 16,
            ..rakis_core::NodeConfig::local_test()
        })
        .clock(TokioClock::starting_at(BASE_MS))
        .build()
        .unwrap()
        .spawn()
        .0;
    let mut ids = Vec::new();
    for n in 0..40 {
        let mut r = request(&node, 3);
        r.nonce = n;
        ids.push(node.submit(r).await.unwrap());
    }
    let mut lagged = node.subscribe();
    let waits = ids
        .iter()
        .map(|id| node.wait_for_outcome(*id, Duration::from_secs(30)));
    let results = futures::future::join_all(waits).await;
    assert!(
        matches!(
            lagged.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ),
        "the burst overran the event buffer"
    );
    for (id, r) in ids.iter().zip(results) {
        assert!(
            matches!(r, Err(NodeError::RequestFailed(_))),
            "request {}: {r:?}",
            id.short()
        );
    }
}
