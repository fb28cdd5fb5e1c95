//! Crash recovery of whole nodes on a real database file: a node's driver task is aborted
//! (dropped without shutdown) and the node is started again on the same file with the same key.
//! Nodes run on the in-memory hub and tokio's paused clock, as in `tests/node.rs`.
#![cfg(feature = "redb")]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use rakis_core::envelope::open;
use rakis_core::protocol::ConsensusResultMsg;
use rakis_core::store::SubmissionState;
use rakis_core::testing::{self, HashEmbedder, MemoryHub, ScriptedEngine};
use rakis_core::SubmitReceipt;
use rakis_core::{
    ChainError, ChainSink, CommitStore, EmbedError, Embedder, InferenceRequest, Message, Node,
    NodeEvent, NodeHandle, NodeId, NodeKey, RedbStore, RequestId, StoreError, TokioClock,
    Transport, TransportEvent,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

const MODEL: &str = "smollm2-135m";
const NET: &str = "test-net";
const BASE_MS: u64 = 1_700_000_000_000;
const SINK: &str = "recording";

fn hub() -> MemoryHub {
    MemoryHub::jittery(1)
}

/// A chain sink that records what it was asked to submit. It never reports a result as already
/// on chain, so any second submission by the node would show here. With `hang`, a submission
/// never finishes (the node stops while submitting).
#[derive(Clone, Default)]
struct RecordingSink {
    /// (request, number of attestations) of every finished submission.
    submitted: Arc<Mutex<Vec<(RequestId, usize)>>>,
    /// Submissions started, finished or not.
    attempts: Arc<AtomicUsize>,
    hang: bool,
}

#[async_trait]
impl ChainSink for RecordingSink {
    fn name(&self) -> String {
        SINK.into()
    }

    async fn submit(
        &self,
        _request: &InferenceRequest,
        result: &ConsensusResultMsg,
        attestations: &[ConsensusResultMsg],
    ) -> Result<SubmitReceipt, ChainError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.hang {
            futures::future::pending::<()>().await;
        }
        let mut submitted = self.submitted.lock().unwrap();
        submitted.push((result.request_id, attestations.len()));
        Ok(SubmitReceipt {
            sink: SINK.into(),
            reference: format!("tx-{}", submitted.len()),
        })
    }

    async fn is_submitted(&self, _: &RequestId) -> Result<bool, ChainError> {
        Ok(false)
    }
}

/// Counts generations, so a restarted node that generates again is caught.
fn counting_engine(answer: &'static str, calls: Arc<AtomicUsize>) -> ScriptedEngine {
    ScriptedEngine::new(MODEL, move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(answer.to_string())
    })
    .with_delay(Duration::from_millis(50))
}

struct Parts {
    store: Option<RedbStore>,
    sink: Option<RecordingSink>,
    calls: Arc<AtomicUsize>,
    /// Every embedding takes this long (tokio time).
    embed_delay: Duration,
}

impl Parts {
    fn new(store: Option<RedbStore>, sink: Option<RecordingSink>, calls: Arc<AtomicUsize>) -> Self {
        Parts {
            store,
            sink,
            calls,
            embed_delay: Duration::ZERO,
        }
    }
}

/// The hash embedder, slowed down.
struct SlowEmbedder(HashEmbedder, Duration);

#[async_trait]
impl Embedder for SlowEmbedder {
    fn model(&self) -> String {
        self.0.model()
    }

    fn dim(&self) -> u32 {
        self.0.dim()
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        tokio::time::sleep(self.1).await;
        self.0.embed(texts).await
    }
}

fn start(
    hub: &MemoryHub,
    clock: TokioClock,
    seed: u64,
    answer: &'static str,
    parts: Parts,
) -> (NodeHandle, JoinHandle<()>) {
    let key = NodeKey::from_seed(seed);
    let mut b = Node::builder()
        .open_network()
        .network_id(NET)
        .transport(hub.join(key.node_id()))
        .key(key)
        .engine(counting_engine(answer, parts.calls))
        .embedder(SlowEmbedder(
            HashEmbedder::default_model(),
            parts.embed_delay,
        ))
        .clock(clock)
        .rng_seed(seed);
    if let Some(store) = parts.store {
        b = b.store(store);
    }
    if let Some(sink) = parts.sink {
        b = b.chain_sink(sink);
    }
    b.build().unwrap().spawn()
}

fn plain(hub: &MemoryHub, clock: TokioClock, seed: u64, answer: &'static str) -> NodeHandle {
    start(
        hub,
        clock,
        seed,
        answer,
        Parts::new(None, None, Arc::default()),
    )
    .0
}

fn request(h: &NodeHandle, quorum: u32) -> InferenceRequest {
    testing::request(MODEL, h.node_id(), h.now_ms(), quorum, 1_000)
}

async fn wait_for(
    rx: &mut broadcast::Receiver<NodeEvent>,
    mut pred: impl FnMut(&NodeEvent) -> bool,
) -> NodeEvent {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("node stopped"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the event came in time")
}

/// Kills a node: its driver task is aborted, so it is dropped wherever it was, without shutdown.
async fn kill(task: JoinHandle<()>) {
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
}

/// Opens the store file of a killed node. A write the dead driver had already handed to the
/// blocking pool still finishes (and holds the file) for a moment: wait for it, a few ms of
/// real time at most.
async fn reopen(path: &Path) -> RedbStore {
    for _ in 0..400 {
        match RedbStore::open(path) {
            Ok(store) => return store,
            Err(StoreError::Locked(_)) => {
                std::thread::sleep(Duration::from_millis(5));
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("reopening the store: {e}"),
        }
    }
    panic!("the store file stayed locked after its node was killed");
}

/// Everything the hub carries from `node`, decoded.
fn spy(hub: &MemoryHub, node: NodeId) -> Arc<Mutex<Vec<Message>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let transport = hub.join(NodeKey::from_seed(4242).node_id());
    let mut events = transport.events();
    let out = seen.clone();
    tokio::spawn(async move {
        let _keep = transport;
        while let Some(ev) = events.next().await {
            if let TransportEvent::Message { bytes, .. } = ev {
                if let Ok(v) = open(&bytes, NET) {
                    if v.envelope.sender == node {
                        out.lock().unwrap().push(v.envelope.message);
                    }
                }
            }
        }
    });
    seen
}

#[tokio::test(start_paused = true)]
async fn a_node_killed_between_commit_and_reveal_restarts_on_its_file_reveals_and_agrees() {
    let hub = hub();
    let clock = TokioClock::starting_at(BASE_MS);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node3.redb");
    let others: Vec<NodeHandle> = [
        "The capital of France is Paris.",
        "Paris is the capital of France.",
        "The capital of France is Paris.",
    ]
    .iter()
    .enumerate()
    .map(|(i, a)| plain(&hub, clock, i as u64, a))
    .collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let answer = "France's capital is Paris.";
    let (victim, task) = start(
        &hub,
        clock,
        3,
        answer,
        Parts::new(Some(RedbStore::open(&path).unwrap()), None, calls.clone()),
    );
    let victim_id = victim.node_id();
    let mut events = victim.subscribe();
    let id = others[0].submit(request(&others[0], 4)).await.unwrap();

    // Committed, and every other commit seen (each event follows its durable write).
    wait_for(
        &mut events,
        |e| matches!(e, NodeEvent::Committed { request_id, .. } if *request_id == id),
    )
    .await;
    wait_for(&mut events, |e| {
        matches!(e, NodeEvent::CommitSeen { committed: 4, .. })
    })
    .await;
    assert!(
        victim.now_ms() < BASE_MS + 1_000,
        "killed before the deadline"
    );
    kill(task).await;

    // The file holds what it committed to.
    let store = reopen(&path).await;
    let record = store.quorum(&id).await.unwrap().unwrap();
    let own = record.own.clone().expect("own output stored");
    assert_eq!(record.commits.len(), 4);
    assert!(record
        .commits
        .iter()
        .any(|c| c.commit.node == victim_id && c.commit.commitment == own.commitment));
    assert!(record.reveals.is_empty());

    let (victim, _task) = start(
        &hub,
        clock,
        3,
        answer,
        Parts::new(Some(store), None, calls.clone()),
    );
    let mut joint = Vec::new();
    for n in others.iter().chain([&victim]) {
        let o = n
            .wait_for_outcome(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(o.committed, 4);
        // The others accepted the restarted node's reveal.
        assert!(
            o.accepted.iter().any(|a| a.node == victim_id),
            "{:?}",
            o.rejected
        );
        assert_eq!(o.accepted.len(), 4);
        joint.push(o.joint_hash().unwrap());
    }
    assert!(joint.windows(2).all(|w| w[0] == w[1]), "{joint:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the restarted node did not generate again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_killed_after_consensus_neither_recomputes_nor_resubmits() {
    let hub = hub();
    let clock = TokioClock::starting_at(BASE_MS);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node2.redb");
    let others: Vec<NodeHandle> = (0..2)
        .map(|i| plain(&hub, clock, i, "The capital of France is Paris."))
        .collect();
    let sink = RecordingSink::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let answer = "Paris is the capital of France.";
    let (victim, task) = start(
        &hub,
        clock,
        2,
        answer,
        Parts::new(
            Some(RedbStore::open(&path).unwrap()),
            Some(sink.clone()),
            calls.clone(),
        ),
    );
    let victim_id = victim.node_id();
    let mut events = victim.subscribe();
    let id = others[0].submit(request(&others[0], 3)).await.unwrap();
    let before = victim
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    wait_for(
        &mut events,
        |e| matches!(e, NodeEvent::Submitted { request_id, .. } if *request_id == id),
    )
    .await;
    kill(task).await;

    let store = reopen(&path).await;
    let record = store.quorum(&id).await.unwrap().unwrap();
    assert!(record.is_closed());
    assert_eq!(
        record.submissions[SINK],
        SubmissionState::Submitted("tx-1".into())
    );
    assert!(store.open_quorums().await.unwrap().is_empty());
    assert!(store.unsettled_results().await.unwrap().is_empty());

    let seen = spy(&hub, victim_id);
    let (victim, _task) = start(
        &hub,
        clock,
        2,
        answer,
        Parts::new(Some(store), Some(sink.clone()), calls.clone()),
    );
    let mut events = victim.subscribe();
    tokio::time::sleep(Duration::from_secs(10)).await;

    // The outcome is still known (from the file), identical, and was not computed again.
    let after = victim
        .wait_for_outcome(id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(after, before);
    let replayed: Vec<NodeEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(
        !replayed.iter().any(|e| matches!(
            e,
            NodeEvent::Completed { .. }
                | NodeEvent::Submitted { .. }
                | NodeEvent::Committed { .. }
                | NodeEvent::RevealOpened { .. }
        )),
        "{replayed:?}"
    );
    let sent = seen.lock().unwrap().clone();
    assert!(
        sent.iter().all(|m| matches!(m, Message::PeerStatus(_))),
        "{sent:?}"
    );
    assert!(!sent.is_empty(), "the spy hears the restarted node");
    assert_eq!(sink.submitted.lock().unwrap().len(), 1);
    assert_eq!(sink.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_node_killed_while_submitting_submits_once_after_restart() {
    let hub = hub();
    let clock = TokioClock::starting_at(BASE_MS);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node2.redb");
    let others: Vec<NodeHandle> = (0..2)
        .map(|i| plain(&hub, clock, i, "The capital of France is Paris."))
        .collect();
    let stuck = RecordingSink {
        hang: true,
        ..RecordingSink::default()
    };
    let answer = "Paris is the capital of France.";
    let (victim, task) = start(
        &hub,
        clock,
        2,
        answer,
        Parts::new(
            Some(RedbStore::open(&path).unwrap()),
            Some(stuck.clone()),
            Arc::default(),
        ),
    );
    let id = others[0].submit(request(&others[0], 3)).await.unwrap();
    let before = victim
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    // The two other signed results arrive; the submission hangs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stuck.attempts.load(Ordering::SeqCst), 1);
    kill(task).await;

    let store = reopen(&path).await;
    let unsettled = store.unsettled_results().await.unwrap();
    assert_eq!(unsettled.len(), 1);
    assert_eq!(unsettled[0].submissions[SINK], SubmissionState::Pending);
    assert_eq!(unsettled[0].peer_results.len(), 2);

    let sink = RecordingSink::default();
    let (victim, task) = start(
        &hub,
        clock,
        2,
        answer,
        Parts::new(Some(store), Some(sink.clone()), Arc::default()),
    );
    let mut events = victim.subscribe();
    wait_for(
        &mut events,
        |e| matches!(e, NodeEvent::Submitted { request_id, .. } if *request_id == id),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Submitted once, with the attestations gathered before the crash.
    assert_eq!(*sink.submitted.lock().unwrap(), vec![(id, 2)]);
    let after = victim
        .wait_for_outcome(id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(after, before);
    victim.shutdown().await.unwrap();
    task.await.unwrap();
    let store = reopen(&path).await;
    assert!(store.unsettled_results().await.unwrap().is_empty());
    assert_eq!(
        store.quorum(&id).await.unwrap().unwrap().submissions[SINK],
        SubmissionState::Submitted("tx-1".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_killed_while_verifying_reveals_re_embeds_them_after_restart_and_agrees() {
    let hub = hub();
    let clock = TokioClock::starting_at(BASE_MS);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node3.redb");
    let others: Vec<NodeHandle> = [
        "The capital of France is Paris.",
        "Paris is the capital of France.",
        "The capital of France is Paris.",
    ]
    .iter()
    .enumerate()
    .map(|(i, a)| plain(&hub, clock, i as u64, a))
    .collect();
    let answer = "France's capital is Paris.";
    // Re-embedding takes 300 ms on this node: it is killed with all reveals stored and none
    // verified yet.
    let mut slow = Parts::new(Some(RedbStore::open(&path).unwrap()), None, Arc::default());
    slow.embed_delay = Duration::from_millis(300);
    let (victim, task) = start(&hub, clock, 3, answer, slow);
    let mut events = victim.subscribe();
    let id = others[0].submit(request(&others[0], 4)).await.unwrap();
    for _ in 0..3 {
        wait_for(&mut events, |e| matches!(e, NodeEvent::RevealSeen { .. })).await;
    }
    assert!(victim.status(id).await.unwrap().unwrap().outcome.is_none());
    kill(task).await;

    let store = reopen(&path).await;
    assert_eq!(store.quorum(&id).await.unwrap().unwrap().reveals.len(), 4);
    let (victim, _task) = start(
        &hub,
        clock,
        3,
        answer,
        Parts::new(Some(store), None, Arc::default()),
    );
    let mine = victim
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(mine.accepted.len(), 4, "{:?}", mine.rejected);
    assert!(mine.rejected.is_empty());
    for n in &others {
        let theirs = n
            .wait_for_outcome(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(theirs.joint_hash(), mine.joint_hash());
    }
}
