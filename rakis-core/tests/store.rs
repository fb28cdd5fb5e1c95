//! The durable store on real database files: durability across reopening, refused writes,
//! foreign and damaged files, locking, retention, and a property test that interrupts writes at
//! any point (a storage backend that "crashes" after a number of writes, mid-write) and checks
//! that the reopened file holds a state the coordinator restores.
#![cfg(feature = "redb")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use rakis_core::consensus::{Rejection, DEFAULT_EMBEDDING_MODEL};
use rakis_core::coordinator::CoordinatorConfig;
use rakis_core::coordinator::{Action, Coordinator};
use rakis_core::store::redb::backends::FileBackend;
use rakis_core::store::redb::StorageBackend;
use rakis_core::store::{apply_to_records, SubmissionState};
use rakis_core::store::{QuorumRecord, StoreOp};
use rakis_core::testing::QuorumFixture;
use rakis_core::{
    CommitStore, ConsensusOutcome, Decision, FailureReason, Message, NodeKey, Phase, QuorumFailure,
    RedbStore, RejectReason, RequestId, StoreError,
};

const MODEL: &str = "smollm2-135m";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

async fn apply_all(store: &RedbStore, ops: Vec<StoreOp>) {
    for op in ops {
        store.apply(op).await.unwrap();
    }
}

#[tokio::test]
async fn every_write_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let f = QuorumFixture::new(5, 1);
    let id = f.request.id();
    let mut expected = BTreeMap::new();
    {
        let store = RedbStore::open(&path).unwrap();
        for op in f.ops() {
            apply_to_records(&mut expected, op.clone()).unwrap();
            store.apply(op).await.unwrap();
        }
        let peer = StoreOp::PeerResult(f.results[1].clone());
        let submitted = StoreOp::Submission {
            request_id: id,
            sink: "evm:1".into(),
            state: SubmissionState::Submitted("0xfeed".into()),
        };
        for op in [peer, submitted] {
            apply_to_records(&mut expected, op.clone()).unwrap();
            store.apply(op).await.unwrap();
        }
        // Dropped here without any closing step.
    }
    let store = RedbStore::open_async(&path).await.unwrap();
    let record = store.quorum(&id).await.unwrap().unwrap();
    assert_eq!(record, expected[&id]);
    assert_eq!(record.commits.len(), 5);
    assert_eq!(record.reveals.len(), 5);
    assert_eq!(record.outcome.as_ref(), Some(&f.outcome));
    assert!(record.is_closed());
    assert!(store.open_quorums().await.unwrap().is_empty());
    assert_eq!(
        store.all_quorums().await.unwrap(),
        expected.into_values().collect::<Vec<_>>()
    );
    assert!(store.quorum(&RequestId([9; 32])).await.unwrap().is_none());
}

#[tokio::test]
async fn open_and_unsettled_requests_are_listed_for_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    let open = QuorumFixture::new(3, 1);
    let done = QuorumFixture::new(3, 2);
    apply_all(&store, open.ops()[..4].to_vec()).await;
    let pending = |state| StoreOp::Submission {
        request_id: done.request.id(),
        sink: "evm:1".into(),
        state,
    };
    let mut ops = done.ops();
    ops.insert(ops.len() - 1, pending(SubmissionState::Pending));
    apply_all(&store, ops).await;
    let ids = |v: Vec<QuorumRecord>| v.iter().map(|r| r.request.id()).collect::<Vec<_>>();
    assert_eq!(
        ids(store.open_quorums().await.unwrap()),
        vec![open.request.id()]
    );
    assert_eq!(
        ids(store.unsettled_results().await.unwrap()),
        vec![done.request.id()]
    );
    store
        .apply(pending(SubmissionState::Submitted("0x1".into())))
        .await
        .unwrap();
    assert!(store.unsettled_results().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_write_changes_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let f = QuorumFixture::new(3, 1);
    let id = f.request.id();
    let store = RedbStore::open(&path).unwrap();
    apply_all(&store, f.ops()[..3].to_vec()).await;
    let before = store.all_quorums().await.unwrap();
    let mut other = f.own.clone();
    other.output = "Lyon.".into();
    assert!(matches!(
        store.apply(StoreOp::OwnOutput(other)).await,
        Err(StoreError::Conflict(_))
    ));
    let unknown = QuorumFixture::new(3, 2);
    assert!(matches!(
        store.apply(StoreOp::Commit(unknown.commits[0].clone())).await,
        Err(StoreError::Conflict(m)) if m.contains("unknown request")
    ));
    assert_eq!(store.all_quorums().await.unwrap(), before);
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.all_quorums().await.unwrap(), before);
    assert_eq!(store.quorum(&id).await.unwrap().unwrap().own, Some(f.own));
}

#[tokio::test]
async fn retention_prunes_closed_requests_older_than_the_cutoff_and_sizes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    let closed_old = QuorumFixture::new(3, 1);
    let open_old = QuorumFixture::new(3, 2);
    let mut closed_new = QuorumFixture::new(3, 3);
    closed_new.request.created_at_ms += 3_600_000;
    apply_all(&store, closed_old.ops()).await;
    apply_all(&store, open_old.ops()[..3].to_vec()).await;
    apply_all(
        &store,
        vec![
            StoreOp::Request(closed_new.request.clone()),
            StoreOp::Failed {
                request_id: closed_new.request.id(),
                reason: QuorumFailure::QuorumNotReached {
                    committed: 0,
                    needed: 3,
                },
            },
        ],
    )
    .await;
    let size = store.size_bytes().await.unwrap();
    let on_disk = std::fs::metadata(store.path().unwrap()).unwrap().len();
    assert_eq!(size, on_disk);
    assert!(size > 0);

    let cutoff = QuorumFixture::CREATED_AT_MS + 60_000;
    assert_eq!(store.prune(cutoff).await.unwrap(), 1);
    assert!(store
        .quorum(&closed_old.request.id())
        .await
        .unwrap()
        .is_none());
    assert!(store
        .quorum(&open_old.request.id())
        .await
        .unwrap()
        .is_some());
    assert!(store
        .quorum(&closed_new.request.id())
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.prune(cutoff).await.unwrap(), 0);
    // The open request is kept whatever its age; the recent one goes when its time comes.
    assert_eq!(store.prune(u64::MAX).await.unwrap(), 1);
    assert_eq!(store.all_quorums().await.unwrap().len(), 1);
    assert_eq!(store.open_quorums().await.unwrap().len(), 1);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("notes.txt", b"my notes, not a database\n".to_vec()),
        ("short", vec![b'r', b'e']),
        ("noise", (0..70_000u32).map(|i| (i * 7 + 3) as u8).collect()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = RedbStore::open(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupted(m) if m.contains(name)),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was modified");
    }
}

#[test]
fn a_redb_database_of_another_program_is_refused_and_its_data_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    let table: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("scores");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(table).unwrap().insert("alice", 42).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupted(m) if m.contains("another program") && m.contains("scores")),
        "{err}"
    );
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(table).unwrap();
    assert_eq!(t.get("alice").unwrap().unwrap().value(), 42);
    assert!(txn
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("rakis.meta"))
        .is_err());
}

fn set_meta(path: &Path, key: &str, value: &[u8]) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("rakis.meta"))
        .unwrap()
        .insert(key, value)
        .unwrap();
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_newer_schema_or_a_wrong_marker_is_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let f = QuorumFixture::new(3, 1);
    apply_all(&RedbStore::open(&path).unwrap(), f.ops()).await;
    set_meta(&path, "schema", &99u32.to_le_bytes());
    let bytes = std::fs::read(&path).unwrap();
    assert!(matches!(
        RedbStore::open(&path).unwrap_err(),
        StoreError::UnsupportedSchema(99)
    ));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // Schema 1 (commits without statement signatures) cannot be migrated: refused.
    set_meta(&path, "schema", &1u32.to_le_bytes());
    assert!(matches!(
        RedbStore::open(&path).unwrap_err(),
        StoreError::UnsupportedSchema(1)
    ));
    set_meta(
        &path,
        "schema",
        &rakis_core::store::redb::SCHEMA_VERSION.to_le_bytes(),
    );
    set_meta(&path, "format", b"someone-else");
    assert!(matches!(
        RedbStore::open(&path).unwrap_err(),
        StoreError::Corrupted(m) if m.contains("format marker")
    ));
    set_meta(&path, "format", b"rakis-store");
    let store = RedbStore::open(&path).unwrap();
    assert!(store.quorum(&f.request.id()).await.unwrap().is_some());
}

#[test]
fn a_truncated_store_is_reported_corrupted_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    rt().block_on(apply_all(
        &RedbStore::open(&path).unwrap(),
        QuorumFixture::new(5, 1).ops(),
    ));
    let full = std::fs::read(&path).unwrap();
    let cut = &full[..full.len() / 3];
    std::fs::write(&path, cut).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupted(_)), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), cut);
}

#[test]
fn a_store_with_damaged_pages_gives_typed_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let f = QuorumFixture::new(5, 1);
    rt().block_on(apply_all(&RedbStore::open(&path).unwrap(), f.ops()));
    let mut bytes = std::fs::read(&path).unwrap();
    // Overwrite everything after the header page: every table page fails its checksum.
    for b in bytes.iter_mut().skip(4096) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    // redb may panic on such a file (its message shows in the output): the store turns the
    // panic into an error.
    match RedbStore::open(&path) {
        Err(e) => {
            assert!(matches!(e, StoreError::Corrupted(_)), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
        Ok(store) => {
            let read = rt().block_on(store.quorum(&f.request.id()));
            assert!(matches!(read, Err(StoreError::Corrupted(_))), "{read:?}");
        }
    }
}

#[test]
fn a_second_open_in_this_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let first = RedbStore::open(&path).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Locked(m) if m.contains("store.redb") && m.contains("already open")),
        "{err}"
    );
    // A clone shares the open database instead.
    let clone = first.clone();
    drop(first);
    assert!(matches!(RedbStore::open(&path), Err(StoreError::Locked(_))));
    drop(clone);
    RedbStore::open(&path).unwrap();
}

const HOLD_ENV: &str = "RAKIS_TEST_HOLD_STORE";
const READY: &str = "store-held";

/// Runs in two processes: the test starts this test binary again, filtered to this test, with
/// `HOLD_ENV` naming a store; that child holds the store open until its standard input closes.
#[test]
fn a_second_process_opening_the_store_is_locked() {
    if let Some(path) = std::env::var_os(HOLD_ENV) {
        let _store = RedbStore::open(path).unwrap();
        let mut out = std::io::stdout();
        writeln!(out, "{READY}").unwrap();
        out.flush().unwrap();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(RedbStore::open(&path).unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_second_process_opening_the_store_is_locked",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // libtest prints the test's name first, on the same line.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end: the child must be able to write its last lines.
        for line in stdout.lines().map_while(Result::ok) {
            if line.trim_end().ends_with(READY) {
                let _ = ready_tx.send(true);
            }
        }
        let _ = ready_tx.send(false);
    });
    let ready = ready_rx.recv_timeout(std::time::Duration::from_secs(60));
    if ready != Ok(true) {
        let _ = child.kill();
        panic!("the child process did not open the store: {ready:?}");
    }
    let err = RedbStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Locked(m) if m.contains("already open")),
        "{err}"
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    RedbStore::open(&path).unwrap();
}

// ---- Interrupted writes ----

/// A file backend that "crashes" on its `budget`-th write, sync or resize: that write reaches the
/// file half done, and every later one fails, as if the process had died there.
#[derive(Debug)]
struct CrashingBackend {
    file: FileBackend,
    budget: Arc<AtomicUsize>,
}

impl CrashingBackend {
    /// `Ok(true)`: go on; `Ok(false)`: this is the crashing call; `Err`: already crashed.
    fn spend(&self) -> std::io::Result<bool> {
        match self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
        {
            Ok(1) => Ok(false),
            Ok(_) => Ok(true),
            Err(_) => Err(std::io::Error::other("simulated crash")),
        }
    }
}

impl StorageBackend for CrashingBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.file.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.spend()? {
            self.file.set_len(len)
        } else {
            Err(std::io::Error::other("simulated crash"))
        }
    }

    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        if self.spend()? {
            self.file.sync_data(eventual)
        } else {
            Err(std::io::Error::other("simulated crash"))
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.spend()? {
            self.file.write(offset, data)
        } else {
            // A torn write: the first half reaches the file.
            self.file.write(offset, &data[..data.len() / 2])?;
            Err(std::io::Error::other("simulated crash"))
        }
    }
}

/// Every kind of write, for three requests: a full quorum of five, a small one, and one whose
/// request may never be stored (its writes are then refused). Each request's writes come in
/// protocol order.
fn op_pool() -> &'static [StoreOp] {
    static POOL: std::sync::OnceLock<Vec<StoreOp>> = std::sync::OnceLock::new();
    POOL.get_or_init(build_op_pool)
}

fn build_op_pool() -> Vec<StoreOp> {
    let big = QuorumFixture::new(5, 1);
    let small = QuorumFixture::new(3, 2);
    let stray = QuorumFixture::new(3, 3);
    let id = big.request.id();
    let mut pool = big.ops();
    let mut other_own = big.own.clone();
    other_own.output = "Lyon.".into();
    let mut forged = big.reveals[3].clone();
    forged.reveal.output = "The capital of France is Lyon.".into();
    pool.extend([
        StoreOp::OwnOutput(other_own),
        StoreOp::Reveal(forged),
        StoreOp::Rejection {
            request_id: id,
            rejection: Rejection {
                node: big.keys[3].node_id(),
                inference_id: big.reveals[3].reveal.inference_id,
                reason: RejectReason::CommitmentMismatch,
            },
        },
        StoreOp::Failed {
            request_id: id,
            reason: QuorumFailure::QuorumNotReached {
                committed: 2,
                needed: 5,
            },
        },
        StoreOp::PeerResult(big.results[1].clone()),
        StoreOp::PeerResult(big.results[2].clone()),
        StoreOp::Submission {
            request_id: id,
            sink: "a".into(),
            state: SubmissionState::Pending,
        },
        StoreOp::Submission {
            request_id: id,
            sink: "a".into(),
            state: SubmissionState::Submitted("tx".into()),
        },
        StoreOp::Submission {
            request_id: id,
            sink: "b".into(),
            state: SubmissionState::Failed("reverted".into()),
        },
    ]);
    pool.extend(small.ops());
    let failed = ConsensusOutcome {
        accepted: Vec::new(),
        decision: Decision::Failed(FailureReason::BelowThreshold { best: 1, needed: 2 }),
        ..small.outcome.clone()
    };
    pool.push(StoreOp::Outcome {
        request_id: small.request.id(),
        outcome: failed,
        signed: None,
    });
    pool.push(StoreOp::Request(stray.request.clone()));
    pool.push(StoreOp::Commit(stray.commits[0].clone()));
    pool.push(StoreOp::OwnOutput(stray.own.clone()));
    pool
}

fn restoring_coordinator() -> Coordinator {
    let config = CoordinatorConfig {
        served_models: vec![MODEL.into()],
        workers: 1,
        embedding_model: Some(DEFAULT_EMBEDDING_MODEL.into()),
        reveal_window_ms: 1_000,
        verify_grace_ms: 1_000,
        ..CoordinatorConfig::default()
    };
    Coordinator::with_rng_seed(NodeKey::from_seed(0), config, 7)
}

/// Checks that `record` restores without panic into a status consistent with it and with `now`.
fn check_restore(c: &mut Coordinator, record: &QuorumRecord, now: u64) {
    let id = record.request.id();
    let deadline = record.request.deadline_ms();
    let reveal_deadline = deadline + c.config().reveal_window_ms;
    let actions = c.restore(record.clone(), now);
    let st = c.status(&id).expect("a stored request is restored");
    assert_eq!(c.record_status(record).map(|s| s.request_id), Some(id));
    match (&record.outcome, &record.failure) {
        (Some(o), _) => {
            assert!(
                actions.is_empty(),
                "a closed request is not recomputed: {actions:?}"
            );
            let expected = match &o.decision {
                Decision::Agreed { .. } => Phase::Completed,
                Decision::Failed(r) => Phase::Failed(QuorumFailure::Consensus(r.clone())),
            };
            assert_eq!(st.phase, expected);
            assert_eq!(st.outcome.as_deref(), Some(o));
            assert_eq!(c.signed_result(&id), record.signed.as_ref());
        }
        (None, Some(f)) => {
            assert!(actions.is_empty(), "{actions:?}");
            assert_eq!(st.phase, Phase::Failed(f.clone()));
        }
        (None, None) => {
            let committers: std::collections::BTreeSet<_> =
                record.commits.iter().map(|c| c.commit.node).collect();
            assert!(st.committed as usize >= committers.len());
            if now <= deadline {
                assert!(
                    matches!(st.phase, Phase::Open | Phase::Committing),
                    "{:?}",
                    st.phase
                );
            }
            if st.own_committed {
                assert!(record.own.is_some());
            }
            for a in &actions {
                match a {
                    Action::Broadcast(Message::Commit(m)) => {
                        assert!(now <= deadline);
                        assert_eq!(
                            Some(m.commit.commitment),
                            record.own.as_ref().map(|o| o.commitment)
                        );
                    }
                    Action::Broadcast(Message::Reveal(r)) => {
                        assert!(
                            deadline < now && now <= reveal_deadline,
                            "reveal outside its window"
                        );
                        assert_eq!(r.reveal.node, c.node_id());
                        assert_eq!(
                            Some(r.reveal.commitment()),
                            record.own.as_ref().map(|o| o.commitment)
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(
        c.restore(record.clone(), now).is_empty(),
        "restoring twice does nothing"
    );
    // The coordinator carries on from there.
    c.handle(now + 10_000, rakis_core::coordinator::Input::Tick);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Writes: most of the pool in order, plus a few writes anywhere (repeats, out of order,
    /// for unknown requests). A committed write makes about six backend calls, so the crash
    /// lands anywhere in a run, or after it.
    #[test]
    fn interrupted_writes_leave_a_state_the_coordinator_restores(
        keep in prop::collection::vec(prop::bool::weighted(0.85), op_pool().len()),
        extras in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..6),
        crash_after in 1usize..260,
        restore_at in 0usize..4,
    ) {
        let pool = op_pool();
        let mut ops: Vec<StoreOp> = pool
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(op, _)| op.clone())
            .collect();
        for (op, at) in &extras {
            let at = at.index(ops.len() + 1);
            ops.insert(at, pool[op.index(pool.len())].clone());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        drop(RedbStore::open(&path).unwrap());
        let rt = rt();

        let mut acked: BTreeMap<RequestId, QuorumRecord> = BTreeMap::new();
        let mut interrupted: Option<BTreeMap<RequestId, QuorumRecord>> = None;
        {
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
            let budget = Arc::new(AtomicUsize::new(crash_after));
            let backend = CrashingBackend {
                file: FileBackend::new(file).unwrap(),
                budget: budget.clone(),
            };
            let crashed = || budget.load(Ordering::SeqCst) == 0;
            match RedbStore::open_with_backend(backend, "crashing") {
                // Crashed while opening: no op was written.
                Err(e) => prop_assert!(crashed(), "open failed without a crash: {}", e),
                Ok(store) => {
                    for op in ops {
                        let mut next = acked.clone();
                        let model = apply_to_records(&mut next, op.clone());
                        match rt.block_on(store.apply(op)) {
                            Ok(()) => {
                                prop_assert!(model.is_ok());
                                acked = next;
                            }
                            Err(StoreError::Conflict(_)) => prop_assert!(model.is_err()),
                            Err(e) => {
                                prop_assert!(crashed(), "write failed without a crash: {}", e);
                                // The crash: this write may or may not have landed.
                                interrupted = Some(next);
                                break;
                            }
                        }
                    }
                }
            }
            // The store is dropped here, crashed or not, without closing.
        }

        let store = RedbStore::open(&path).expect("a crashed store reopens");
        let found: BTreeMap<RequestId, QuorumRecord> = rt
            .block_on(store.all_quorums())
            .unwrap()
            .into_iter()
            .map(|r| (r.request.id(), r))
            .collect();
        prop_assert!(
            found == acked || interrupted.as_ref() == Some(&found),
            "the reopened store holds neither the acknowledged state nor that plus the interrupted write"
        );
        let open: Vec<RequestId> = rt.block_on(store.open_quorums()).unwrap().iter().map(|r| r.request.id()).collect();
        let expected_open: Vec<RequestId> = found.values().filter(|r| !r.is_closed()).map(|r| r.request.id()).collect();
        prop_assert_eq!(open, expected_open);
        let unsettled = rt.block_on(store.unsettled_results()).unwrap().len();
        prop_assert_eq!(unsettled, found.values().filter(|r| r.is_closed() && r.has_pending_submission()).count());

        let base = QuorumFixture::CREATED_AT_MS + 1_000; // every fixture's deadline
        let now = [base - 900, base + 500, base + 1_500, base + 5_000][restore_at];
        let mut c = restoring_coordinator();
        for record in found.values() {
            check_restore(&mut c, record, now);
        }
    }
}
