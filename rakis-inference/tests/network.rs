//! Three nodes with the real models (SmolLM2 + all-MiniLM-L6-v2) on the in-memory hub of
//! rakis-core: one request through commit, reveal and consensus.

mod common;

use std::sync::Arc;
use std::time::Duration;

use rakis_core::testing::MemoryHub;
use rakis_core::{Embedder, InferenceEngine, InferenceRequest, Node, NodeKey, SecurityFrame};
use rakis_inference::{
    CandleEmbedder, CandleEngine, EmbedderConfig, EngineConfig, ModelSource, MINILM,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_real_models_agree() {
    let engine: Arc<dyn InferenceEngine> = Arc::new(
        CandleEngine::load(
            &ModelSource::local(common::smollm_gguf()),
            "ignored",
            EngineConfig::new("smollm2"),
        )
        .unwrap(),
    );
    let embedder: Arc<dyn Embedder> = Arc::new(
        CandleEmbedder::load(
            &ModelSource::local(common::minilm_dir()),
            EmbedderConfig::new(MINILM),
        )
        .unwrap(),
    );
    let hub = MemoryHub::default();
    let mut handles = Vec::new();
    for i in 0..3 {
        let key = NodeKey::from_seed(100 + i);
        let node = Node::builder()
            .open_network()
            .network_id("real-models")
            .transport(hub.join(key.node_id()))
            .key(key)
            .engine(engine.clone())
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
    request.max_tokens = 32;
    // Three generations of 32 tokens share one engine; the deadline leaves room for a machine
    // that a parallel build slows several times (10 s failed then: no commit in time).
    request.frame = SecurityFrame {
        quorum: 3,
        max_time_ms: 30_000,
        ..SecurityFrame::default()
    };
    let id = handles[0].submit(request).await.unwrap();
    let mut joint = Vec::new();
    for h in &handles {
        let o = h
            .wait_for_outcome(id, Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(o.accepted.len(), 3);
        assert_eq!(
            o.selected().unwrap().output,
            "The capital of France is Paris."
        );
        joint.push(o.joint_hash());
    }
    assert!(joint.windows(2).all(|w| w[0] == w[1]));
}
