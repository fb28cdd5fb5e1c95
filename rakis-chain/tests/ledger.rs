//! The ledger as a node's sink (the default without a chain), on a real file: entries are
//! written once per request, the whole chain verifies, and a tampered entry is detected.

use std::time::Duration;

use rakis_chain::ledger::verify_file;
use rakis_chain::{ChainConfig, LedgerError, LedgerSink};
use rakis_core::testing::{HashEmbedder, HubConfig, MemoryHub, QuorumFixture, ScriptedEngine};
use rakis_core::{InferenceRequest, Node, NodeConfig, NodeEvent, NodeKey, SecurityFrame};

const MODEL: &str = "smollm2-135m";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_a_chain_write_their_results_to_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let hub = MemoryHub::new(HubConfig::default());
    let mut nodes = Vec::new();
    let mut ledgers = Vec::new();
    for i in 0..3u64 {
        let key = NodeKey::from_seed(700 + i);
        // No chain configured: the ledger is the sink.
        let persistence = ChainConfig {
            ledger: Some(dir.path().join(format!("node{i}.ledger"))),
            ..ChainConfig::default()
        }
        .connect(&rakis_chain::evm::signer_from_node_key(&key))
        .await
        .unwrap();
        assert!(persistence.chains.is_empty());
        ledgers.push(persistence.ledger.clone().unwrap());
        let builder = Node::builder()
            .open_network()
            .key(key.clone())
            .config(NodeConfig {
                reveal_window: Duration::from_millis(500),
                status_interval: None,
                ..NodeConfig::default()
            })
            .transport(hub.join(key.node_id()))
            .engine(ScriptedEngine::constant(MODEL, "Paris."))
            .embedder(HashEmbedder::default_model());
        nodes.push(persistence.attach(builder).build().unwrap().spawn().0);
    }
    let mut events = nodes[2].subscribe();
    let mut ids = Vec::new();
    for prompt in ["Capital of France?", "Capital of France, again?"] {
        let mut r = InferenceRequest::new(
            prompt,
            vec![MODEL.into()],
            nodes[0].node_id(),
            nodes[0].now_ms(),
        );
        r.frame = SecurityFrame {
            quorum: 3,
            max_time_ms: 1_500,
            ..SecurityFrame::default()
        };
        ids.push(nodes[0].submit(r).await.unwrap());
    }
    for id in &ids {
        for n in &nodes {
            n.wait_for_outcome(*id, Duration::from_secs(20))
                .await
                .unwrap();
        }
    }
    // Each node writes each result once.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while ledgers.iter().any(|l| l.summary().entries < 2) {
        assert!(
            tokio::time::Instant::now() < until,
            "results not in every ledger"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The event follows the ledger write (the driver reports the sink's answer after it
    // returns): wait for it rather than read what happens to be there already.
    let mut submitted = 0;
    while submitted < 2 {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(NodeEvent::Submitted { sink, .. })) => {
                assert!(sink.starts_with("ledger:"));
                submitted += 1;
            }
            Ok(Ok(_)) => {}
            other => panic!("{submitted} of 2 Submitted events, then {other:?}"),
        }
    }
    for (l, n) in ledgers.iter().zip(&nodes) {
        let summary = l.verify().unwrap();
        assert_eq!(summary.entries, 2);
        for id in &ids {
            let rec = l.entry(id).unwrap().unwrap();
            assert_eq!(rec.entry.output, "Paris.");
            assert!(!rec.entry.signatures.is_empty());
        }
        n.shutdown().await.unwrap();
    }
}

/// Writes three entries and returns the file's bytes and the offsets of each entry's output.
fn ledger_with_three_entries(path: &std::path::Path) -> Vec<u8> {
    let sink = LedgerSink::open(path).unwrap();
    for nonce in 0..3 {
        let f = QuorumFixture::new(3, nonce);
        sink.append(&f.request, &f.results[0], &f.results[1..], 1_000 + nonce)
            .unwrap();
    }
    assert_eq!(sink.verify().unwrap().entries, 3);
    drop(sink);
    std::fs::read(path).unwrap()
}

#[test]
fn a_tampered_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.ledger");
    let bytes = ledger_with_three_entries(&path);
    let f = QuorumFixture::new(3, 1);
    let output = f.results[0].output.as_bytes();
    // The second entry's output (the first occurrence after the first entry's).
    let first = find(&bytes, output, 0).unwrap();
    let second = find(&bytes, output, first + output.len()).unwrap();

    // Changing one letter of the output of entry 1 (same length, still decodes).
    let mut tampered = bytes.clone();
    tampered[second] ^= 0x20;
    std::fs::write(&path, &tampered).unwrap();
    match verify_file(&path) {
        Err(LedgerError::Tampered { index, .. }) => assert_eq!(index, 1),
        other => panic!("tampering not detected: {other:?}"),
    }
    // Opening refuses it too, and leaves the file as it is.
    assert!(matches!(
        LedgerSink::open(&path),
        Err(LedgerError::Tampered { index: 1, .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), tampered);

    // The untouched bytes verify again.
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(verify_file(&path).unwrap().entries, 3);
}

#[test]
fn a_record_cut_off_by_a_crash_is_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.ledger");
    let bytes = ledger_with_three_entries(&path);
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(
        verify_file(&path),
        Err(LedgerError::TruncatedTail { index: 2, .. })
    ));
    let sink = LedgerSink::open(&path).unwrap();
    assert_eq!(sink.summary().entries, 2);
    assert_eq!(sink.verify().unwrap().entries, 2);
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}
