//! The second check end to end: four nodes on libp2p over 127.0.0.1 with the real models
//! (SmolLM2-135M, all-MiniLM-L6-v2). One of them lies consistently — it commits to a
//! fact-swapped answer ("Lyon" for "Paris") and reveals it with the token ids of the lie — so
//! its commitment opens and its embedding lands in the honest ball; what catches it is the
//! replay of its sampling by the others.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rakis_core::{
    ConsensusOutcome, Embedder, EngineError, Generation, GenerationJob, InferenceEngine,
    InferenceRequest, Node, NodeConfig, NodeHandle, NodeKey, RejectReason, SecurityFrame,
};
use rakis_inference::{
    CandleEmbedder, CandleEngine, EmbedderConfig, EngineConfig, ModelSource, TextGenerator,
    WeightFormat, MINILM,
};
use rakis_net::{Libp2pTransport, NetConfig};

/// Generates honestly, then swaps Paris for Lyon and gives the lie's token ids.
struct FactSwapper {
    inner: Arc<dyn InferenceEngine>,
    tokenizer: Mutex<TextGenerator>,
}

#[async_trait]
impl InferenceEngine for FactSwapper {
    fn models(&self) -> Vec<String> {
        self.inner.models()
    }

    fn workers(&self) -> usize {
        self.inner.workers()
    }

    async fn generate(&self, job: GenerationJob) -> Result<Generation, EngineError> {
        let g = self.inner.generate(job).await?;
        let text = g.text.replacen("Paris", "Lyon", 1);
        let token_ids = self
            .tokenizer
            .lock()
            .unwrap()
            .encode(&text)
            .map_err(|e| EngineError::Other(rakis_core::error::SharedError::new(e)))?;
        Ok(Generation {
            text,
            token_ids,
            ..g
        })
    }

    async fn score(&self, job: rakis_core::ScoreJob) -> Result<rakis_core::Score, EngineError> {
        self.inner.score(job).await
    }
}

const NET: &str = "verified-sampling";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_swapped_answer_is_rejected_for_its_sampling_and_an_honest_one_selected() {
    let engine: Arc<dyn InferenceEngine> = Arc::new(CandleEngine::from_generator(
        TextGenerator::load(&common::smollm_gguf(), WeightFormat::Q8_0, None, None).unwrap(),
        EngineConfig {
            workers: 2,
            ..EngineConfig::new("smollm2")
        },
    ));
    let liar: Arc<dyn InferenceEngine> = Arc::new(FactSwapper {
        inner: engine.clone(),
        tokenizer: Mutex::new(
            TextGenerator::load(&common::smollm_gguf(), WeightFormat::AsStored, None, None)
                .unwrap(),
        ),
    });
    let embedder: Arc<dyn Embedder> = Arc::new(
        CandleEmbedder::load(
            &ModelSource::local(common::minilm_dir()),
            EmbedderConfig::new(MINILM),
        )
        .unwrap(),
    );
    let keys: Vec<NodeKey> = (0..4).map(|i| NodeKey::from_seed(700 + i)).collect();
    let mut transports = Vec::new();
    let first = Libp2pTransport::start(keys[0].clone(), NetConfig::local_test(NET))
        .await
        .unwrap();
    let bootstrap = first.listen_addrs();
    transports.push(first);
    for k in &keys[1..] {
        transports.push(
            Libp2pTransport::start(
                k.clone(),
                NetConfig::local_test(NET).with_bootstrap(bootstrap.clone()),
            )
            .await
            .unwrap(),
        );
    }
    for t in &transports {
        t.wait_for_topic_peers(3, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let mut handles: Vec<NodeHandle> = Vec::new();
    for (i, (key, transport)) in keys.iter().zip(transports).enumerate() {
        let node = Node::builder()
            .open_network()
            .network_id(NET)
            .config(NodeConfig {
                reveal_window: Duration::from_secs(10),
                verify_grace: Duration::from_secs(30),
                status_interval: None,
                ..NodeConfig::default()
            })
            .transport(transport)
            .key(key.clone())
            .engine(if i == 3 { liar.clone() } else { engine.clone() })
            .embedder(embedder.clone())
            .build()
            .unwrap();
        handles.push(node.spawn().0);
    }
    let mut request = InferenceRequest::new(
        "What is the capital of France? Answer in one sentence.",
        vec!["smollm2".into()],
        handles[0].node_id(),
        handles[0].now_ms(),
    );
    request.temperature = 0.0;
    request.max_tokens = 24;
    request.frame = SecurityFrame {
        quorum: 4,
        max_time_ms: 60_000,
        ..SecurityFrame::default()
    };
    let id = handles[0].submit(request).await.unwrap();
    let liar_id = keys[3].node_id();
    for h in &handles[..3] {
        let outcome: Arc<ConsensusOutcome> = h
            .wait_for_outcome(id, Duration::from_secs(240))
            .await
            .unwrap();
        let selected = outcome.selected().expect("agreed");
        assert!(selected.output.contains("Paris"), "{}", selected.output);
        assert_eq!(outcome.accepted.len(), 3, "{outcome:?}");
        assert!(outcome.accepted.iter().all(|a| a.node != liar_id));
        let reason = &outcome
            .rejected
            .iter()
            .find(|r| r.node == liar_id)
            .expect("the liar is rejected")
            .reason;
        // Not for its commitment or its embedding: those hold for a consistent lie.
        assert!(
            matches!(reason, RejectReason::UnfaithfulSampling(_)),
            "{reason:?}"
        );
    }
    for h in &handles {
        h.shutdown().await.unwrap();
    }
}
