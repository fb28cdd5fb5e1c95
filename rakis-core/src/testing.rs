//! In-memory parts for tests and simulations (feature `test-utils`): a transport hub with loss,
//! delay and partitions, an in-memory store, a scripted engine and a deterministic embedder.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use crate::embedder::{EmbedError, Embedder};
use crate::engine::{EngineError, FinishReason, Generation, GenerationJob, InferenceEngine};
use crate::identity::NodeKey;
use crate::protocol::{CommitMsg, ConsensusResultMsg, InferenceRequest, RevealMsg};
pub use crate::store::MemoryStore;
use crate::store::{OwnOutput, StoreOp};
use crate::transport::{Transport, TransportError, TransportEvent};
use crate::{
    BinaryEmbedding, Commit, ConsensusOutcome, ConsensusParams, Hash32, InferenceId, NodeId,
    Reveal, Salt, SecurityFrame, Submission,
};

/// The question the tests ask.
pub const QUESTION: &str = "What is the capital of France?";

/// A request for [`QUESTION`] accepting `model`, made by `requester` at `now_ms`, that needs
/// `quorum` commits within `max_time_ms`: the request most tests submit.
pub fn request(
    model: &str,
    requester: NodeId,
    now_ms: u64,
    quorum: u32,
    max_time_ms: u64,
) -> InferenceRequest {
    let mut r = InferenceRequest::new(QUESTION, vec![model.to_string()], requester, now_ms);
    r.frame = SecurityFrame {
        quorum,
        max_time_ms,
        ..SecurityFrame::default()
    };
    r
}

/// A signed result of `text` for request `id` by `key` that is consistent in itself (hashes,
/// digest, signature) but selects no committed answer: what an attacker forges. Only the
/// committee rule tells it from an honest result.
pub fn forged_result(key: &NodeKey, id: crate::RequestId, text: &str) -> ConsensusResultMsg {
    let output_hash = crate::consensus::output_hash(text);
    let joint = crate::consensus::joint_hash(&id, &[]);
    let config = Hash32([0; 32]);
    let digest = crate::consensus::result_digest(
        &id,
        &output_hash,
        &joint,
        &crate::consensus::payees_digest(&[]),
        &config,
    );
    ConsensusResultMsg {
        request_id: id,
        output: text.into(),
        output_hash,
        selected_node: key.node_id(),
        selected_inference: InferenceId([1; 32]),
        accepted: Vec::new(),
        joint_hash: joint,
        config_digest: config,
        result_digest: digest,
        signer: key.node_id(),
        signature: key.sign_digest(&crate::identity::eth_signed_message_hash(&digest.0)),
        weights: None,
        replayed: false,
    }
}

impl MemoryHub {
    /// A hub whose deliveries take 5 ms plus up to 10 ms of seeded jitter (so that messages
    /// arrive in different orders at different nodes): the hub most node tests run on.
    pub fn jittery(seed: u64) -> Self {
        MemoryHub::new(HubConfig {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(10),
            seed,
            ..HubConfig::default()
        })
    }
}

/// Network conditions of a [`MemoryHub`].
#[derive(Clone, Debug, Default)]
pub struct HubConfig {
    /// Probability that one delivery is lost.
    pub loss: f64,
    /// Fixed delay of every delivery.
    pub delay: Duration,
    /// Extra random delay, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Seed of the loss and jitter draws.
    pub seed: u64,
}

struct HubInner {
    config: HubConfig,
    endpoints: BTreeMap<NodeId, mpsc::UnboundedSender<TransportEvent>>,
    /// Partition group of each node; nodes in different groups cannot reach each other.
    groups: HashMap<NodeId, u32>,
    rng: rand::rngs::StdRng,
    delivered: u64,
    dropped: u64,
}

/// An in-process network. Every [`MemoryTransport`] joined to a hub reaches the others.
#[derive(Clone)]
pub struct MemoryHub {
    inner: Arc<Mutex<HubInner>>,
}

impl std::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryHub")
    }
}

impl Default for MemoryHub {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl MemoryHub {
    /// A hub with the given conditions.
    pub fn new(config: HubConfig) -> Self {
        MemoryHub {
            inner: Arc::new(Mutex::new(HubInner {
                rng: rand::rngs::StdRng::seed_from_u64(config.seed),
                config,
                endpoints: BTreeMap::new(),
                groups: HashMap::new(),
                delivered: 0,
                dropped: 0,
            })),
        }
    }

    /// Joins `node` to the hub. A node joining again replaces its earlier endpoint.
    pub fn join(&self, node: NodeId) -> MemoryTransport {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.inner.lock().expect("hub lock");
        for (peer, ep) in &inner.endpoints {
            if *peer != node {
                let _ = ep.send(TransportEvent::PeerConnected(node));
            }
        }
        inner.endpoints.insert(node, tx);
        MemoryTransport {
            hub: self.clone(),
            node,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Removes `node` from the hub (its transport stops receiving).
    pub fn leave(&self, node: &NodeId) {
        let mut inner = self.inner.lock().expect("hub lock");
        inner.endpoints.remove(node);
        for ep in inner.endpoints.values() {
            let _ = ep.send(TransportEvent::PeerDisconnected(*node));
        }
    }

    /// Splits the network: each listed group only reaches its own members. Nodes not listed
    /// form one more group together.
    pub fn partition(&self, groups: &[Vec<NodeId>]) {
        let mut inner = self.inner.lock().expect("hub lock");
        inner.groups.clear();
        for (i, g) in groups.iter().enumerate() {
            for n in g {
                inner.groups.insert(*n, i as u32 + 1);
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.inner.lock().expect("hub lock").groups.clear();
    }

    /// Injects raw bytes to every node, as if sent by an outside peer (for robustness tests).
    pub fn inject(&self, bytes: Vec<u8>) {
        let inner = self.inner.lock().expect("hub lock");
        for ep in inner.endpoints.values() {
            let _ = ep.send(TransportEvent::Message {
                from: None,
                bytes: bytes.clone(),
            });
        }
    }

    /// Deliveries made and dropped so far.
    pub fn stats(&self) -> (u64, u64) {
        let inner = self.inner.lock().expect("hub lock");
        (inner.delivered, inner.dropped)
    }

    fn deliver(
        &self,
        from: NodeId,
        to: Option<NodeId>,
        bytes: Vec<u8>,
    ) -> Result<(), TransportError> {
        let mut inner = self.inner.lock().expect("hub lock");
        let my_group = inner.groups.get(&from).copied().unwrap_or(0);
        let targets: Vec<(NodeId, mpsc::UnboundedSender<TransportEvent>)> = inner
            .endpoints
            .iter()
            .filter(|(n, _)| **n != from && to.is_none_or(|t| t == **n))
            .filter(|(n, _)| inner.groups.get(*n).copied().unwrap_or(0) == my_group)
            .map(|(n, tx)| (*n, tx.clone()))
            .collect();
        if let Some(t) = to {
            if targets.is_empty() {
                return Err(TransportError::Unreachable {
                    peer: t.to_string(),
                    reason: crate::error::SharedError::msg("not on the hub, or partitioned away"),
                });
            }
        }
        for (_, tx) in targets {
            let loss = inner.config.loss;
            if loss > 0.0 && inner.rng.gen_bool(loss.min(1.0)) {
                inner.dropped += 1;
                continue;
            }
            inner.delivered += 1;
            let jitter = inner.config.jitter;
            let delay = inner.config.delay
                + if jitter.is_zero() {
                    Duration::ZERO
                } else {
                    jitter.mul_f64(inner.rng.gen::<f64>())
                };
            let ev = TransportEvent::Message {
                from: Some(from),
                bytes: bytes.clone(),
            };
            if delay.is_zero() {
                let _ = tx.send(ev);
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(ev);
                });
            }
        }
        Ok(())
    }
}

/// One node's endpoint on a [`MemoryHub`].
pub struct MemoryTransport {
    hub: MemoryHub,
    node: NodeId,
    rx: Mutex<Option<mpsc::UnboundedReceiver<TransportEvent>>>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn broadcast(&self, bytes: Vec<u8>) -> Result<(), TransportError> {
        self.hub.deliver(self.node, None, bytes)
    }

    async fn send(&self, peer: &NodeId, bytes: Vec<u8>) -> Result<(), TransportError> {
        self.hub.deliver(self.node, Some(*peer), bytes)
    }

    fn events(&self) -> BoxStream<'static, TransportEvent> {
        match self.rx.lock().expect("rx lock").take() {
            Some(rx) => tokio_stream_from(rx),
            None => futures::stream::empty().boxed(),
        }
    }

    fn peers(&self) -> Vec<NodeId> {
        let inner = self.hub.inner.lock().expect("hub lock");
        inner
            .endpoints
            .keys()
            .filter(|n| **n != self.node)
            .copied()
            .collect()
    }
}

fn tokio_stream_from(
    mut rx: mpsc::UnboundedReceiver<TransportEvent>,
) -> BoxStream<'static, TransportEvent> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

type Script = dyn Fn(&GenerationJob) -> Result<String, EngineError> + Send + Sync;

/// An engine that answers with a function of the job.
#[derive(Clone)]
pub struct ScriptedEngine {
    models: Vec<String>,
    workers: usize,
    delay: Duration,
    script: Arc<Script>,
}

impl std::fmt::Debug for ScriptedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedEngine")
            .field("models", &self.models)
            .finish()
    }
}

impl ScriptedEngine {
    /// An engine serving `model` that always answers `text`.
    pub fn constant(model: &str, text: &str) -> Self {
        let text = text.to_string();
        Self::new(model, move |_| Ok(text.clone()))
    }

    /// An engine serving `model` that answers with `script(job)`.
    pub fn new(
        model: &str,
        script: impl Fn(&GenerationJob) -> Result<String, EngineError> + Send + Sync + 'static,
    ) -> Self {
        ScriptedEngine {
            models: vec![model.to_string()],
            workers: 1,
            delay: Duration::ZERO,
            script: Arc::new(script),
        }
    }

    /// Takes `delay` (tokio time) for each job.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the number of workers.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Runs the script synchronously (for state-machine simulations without a runtime).
    pub fn run(&self, job: &GenerationJob) -> Result<Generation, EngineError> {
        if !self.models.contains(&job.model) {
            return Err(EngineError::UnknownModel(job.model.clone()));
        }
        let text = (self.script)(job)?;
        let tokens = text.split_whitespace().count() as u32;
        Ok(Generation {
            model: job.model.clone(),
            prompt_tokens: job
                .messages
                .iter()
                .map(|m| m.content.split_whitespace().count() as u32)
                .sum(),
            tokens,
            token_ids: Vec::new(),
            tokens_per_sec: 0.0,
            finish: FinishReason::Eos,
            text,
        })
    }
}

#[async_trait]
impl InferenceEngine for ScriptedEngine {
    fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    fn workers(&self) -> usize {
        self.workers
    }

    async fn generate(&self, job: GenerationJob) -> Result<Generation, EngineError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.run(&job)
    }
}

/// A deterministic embedder: a bag of hashed words projected onto `dim` random ±1 directions.
/// Texts sharing most words get nearby embeddings; unrelated texts land about half the bits
/// apart. Not a language model: for tests and simulations.
#[derive(Clone, Debug)]
pub struct HashEmbedder {
    model: String,
    dim: u32,
}

impl HashEmbedder {
    /// An embedder named `model` with `dim` dimensions.
    pub fn new(model: &str, dim: u32) -> Self {
        HashEmbedder {
            model: model.to_string(),
            dim,
        }
    }

    /// The default-model-named embedder with 384 dimensions, usable with the default frame.
    pub fn default_model() -> Self {
        Self::new(crate::consensus::DEFAULT_EMBEDDING_MODEL, 384)
    }

    /// The float embedding of one text (synchronous).
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut v = vec![0f32; self.dim as usize];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            return Err(EmbedError::Empty);
        }
        for w in words {
            let seed = u64::from_le_bytes(
                rakis_consensus::sha256(w.as_bytes()).0[..8]
                    .try_into()
                    .expect("8 bytes"),
            );
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for x in v.iter_mut() {
                *x += if rng.gen::<bool>() { 1.0 } else { -1.0 };
            }
        }
        // Break exact zeros deterministically.
        for (i, x) in v.iter_mut().enumerate() {
            if *x == 0.0 {
                *x = if i % 2 == 0 { 0.5 } else { -0.5 };
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        Ok(v.into_iter().map(|x| x / norm).collect())
    }

    /// The binary embedding of one text (synchronous).
    pub fn embed_binary_one(&self, text: &str) -> Result<BinaryEmbedding, EmbedError> {
        Ok(BinaryEmbedding::quantize(&self.embed_one(text)?)?)
    }
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn model(&self) -> String {
        self.model.clone()
    }

    fn dim(&self) -> u32 {
        self.dim
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Err(EmbedError::Empty);
        }
        texts.iter().map(|t| self.embed_one(t)).collect()
    }
}

/// A complete quorum built without any node: a request, `n` nodes answering it honestly, their
/// commits and reveals, node 0's own output, the agreed outcome and every node's signed result.
/// For store tests, simulations and benchmarks.
#[derive(Clone, Debug)]
pub struct QuorumFixture {
    /// The request (from node 0, quorum `n`, deadline 1 s after creation).
    pub request: InferenceRequest,
    /// The nodes' keys (`NodeKey::from_seed(i)`); node 0 is "this" node.
    pub keys: Vec<NodeKey>,
    /// Node 0's own output.
    pub own: OwnOutput,
    /// One commit per node.
    pub commits: Vec<CommitMsg>,
    /// One honest reveal per node.
    pub reveals: Vec<RevealMsg>,
    /// The outcome every node computes.
    pub outcome: ConsensusOutcome,
    /// The result signed by each node, node 0 first.
    pub results: Vec<ConsensusResultMsg>,
}

impl QuorumFixture {
    /// Creation time of the fixture's requests.
    pub const CREATED_AT_MS: u64 = 1_700_000_000_000;
    /// The network the commits' and reveals' statements are signed for.
    pub const NETWORK_ID: &'static str = "rakis-fixture";

    /// A quorum of `n` nodes (at least 1); `nonce` makes the request distinct.
    pub fn new(n: usize, nonce: u64) -> Self {
        let n = n.max(1);
        let embedder = HashEmbedder::default_model();
        let keys: Vec<NodeKey> = (0..n as u64).map(NodeKey::from_seed).collect();
        let mut request = InferenceRequest::new(
            "What is the capital of France?",
            vec!["smollm2-135m".into()],
            keys[0].node_id(),
            Self::CREATED_AT_MS,
        );
        request.nonce = nonce;
        request.frame = SecurityFrame {
            quorum: n as u32,
            max_time_ms: 1_000,
            ..SecurityFrame::default()
        };
        let id = request.id();
        let mut owns = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let output = if i % 2 == 0 {
                "The capital of France is Paris."
            } else {
                "Paris is the capital of France."
            };
            let embedding = embedder
                .embed_binary_one(output)
                .expect("a non-empty text embeds");
            let salt = Salt([i as u8 + 1; 32]);
            let inference_id = InferenceId([0x80 | i as u8; 32]);
            owns.push(OwnOutput {
                request_id: id,
                inference_id,
                model: "smollm2-135m".into(),
                output: output.into(),
                commitment: crate::commitment(
                    &id,
                    &key.node_id(),
                    &inference_id,
                    output,
                    &embedding,
                    &salt,
                ),
                embedding,
                embedding_model: embedder.model(),
                salt,
                token_ids: Vec::new(),
                ending: crate::consensus::sampling::Ending::Stop,
            });
        }
        let network = crate::consensus::network_digest(Self::NETWORK_ID);
        let commits: Vec<CommitMsg> = keys
            .iter()
            .zip(&owns)
            .map(|(key, o)| {
                CommitMsg::signed(
                    key,
                    &network,
                    Commit {
                        request_id: id,
                        node: key.node_id(),
                        inference_id: o.inference_id,
                        commitment: o.commitment,
                    },
                    o.model.clone(),
                )
            })
            .collect();
        let reveals: Vec<RevealMsg> = keys
            .iter()
            .zip(&owns)
            .map(|(key, o)| {
                RevealMsg::signed(
                    key,
                    &network,
                    Reveal {
                        request_id: id,
                        node: key.node_id(),
                        inference_id: o.inference_id,
                        output: o.output.clone(),
                        embedding: o.embedding.clone(),
                        salt: o.salt,
                        embedding_model: o.embedding_model.clone(),
                    },
                    o.model.clone(),
                    Vec::new(),
                )
            })
            .collect();
        let params =
            ConsensusParams::from_frame(&request.frame).expect("the default frame is valid");
        let plain: Vec<Commit> = commits.iter().map(|c| c.commit.clone()).collect();
        let submissions: Vec<Submission> = reveals
            .iter()
            .map(|r| Submission {
                reveal: r.reveal.clone(),
                reembedding: Some(r.reveal.embedding.clone()),
                sampling_fault: None,
            })
            .collect();
        let outcome = crate::evaluate(&id, &params, &plain, &submissions)
            .expect("the fixture's inputs are valid");
        let results = keys
            .iter()
            .map(|k| ConsensusResultMsg::sign(k, &outcome).expect("honest answers agree"))
            .collect();
        QuorumFixture {
            request,
            own: owns.swap_remove(0),
            keys,
            commits,
            reveals,
            outcome,
            results,
        }
    }

    /// This fixture's agreed outcome re-targeted at another request (for example one an oracle
    /// contract made) and bound to `config` (see
    /// [`config_digest`](crate::membership::config_digest)), with `keys`' nodes as the accepted
    /// set (in the set's order), signed by each of `keys`: the results those nodes would
    /// broadcast.
    pub fn results_for(
        &self,
        request_id: crate::RequestId,
        keys: &[NodeKey],
        config: Hash32,
    ) -> Vec<ConsensusResultMsg> {
        let mut outcome = self.outcome.clone();
        outcome.request_id = request_id;
        let commitments: Vec<_> = outcome.accepted.iter().map(|a| a.commitment).collect();
        for (a, k) in outcome.accepted.iter_mut().zip(keys) {
            a.node = k.node_id();
        }
        let payees = rakis_consensus::payees_digest(&outcome.accepted);
        if let crate::Decision::Agreed {
            joint_hash,
            config_digest,
            result_digest,
            selected,
            ..
        } = &mut outcome.decision
        {
            *joint_hash = rakis_consensus::joint_hash(&request_id, &commitments);
            *config_digest = config;
            *result_digest = rakis_consensus::result_digest(
                &request_id,
                &selected.output_hash,
                joint_hash,
                &payees,
                config_digest,
            );
        }
        keys.iter()
            .map(|k| ConsensusResultMsg::sign(k, &outcome).expect("the fixture agrees"))
            .collect()
    }

    /// The writes node 0 makes for the whole quorum, in protocol order: the request, its own
    /// output, every commit, every reveal, then its outcome with its signed result.
    pub fn ops(&self) -> Vec<StoreOp> {
        let id = self.request.id();
        let mut ops = vec![
            StoreOp::Request(self.request.clone()),
            StoreOp::OwnOutput(self.own.clone()),
        ];
        ops.extend(self.commits.iter().cloned().map(StoreOp::Commit));
        ops.extend(self.reveals.iter().cloned().map(StoreOp::Reveal));
        ops.push(StoreOp::Outcome {
            request_id: id,
            outcome: self.outcome.clone(),
            signed: Some(self.results[0].clone()),
        });
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quorum_fixture_is_internally_consistent() {
        let f = QuorumFixture::new(5, 1);
        assert_eq!(f.outcome.accepted.len(), 5);
        for (r, c) in f.reveals.iter().zip(&f.commits) {
            crate::verify_reveal(&c.commit, &r.reveal).unwrap();
        }
        for r in &f.results {
            r.verify().unwrap();
        }
        assert_eq!(f.ops().len(), 13);
        assert_ne!(f.request.id(), QuorumFixture::new(5, 2).request.id());
    }

    #[test]
    fn hash_embedder_places_paraphrases_near_and_unrelated_far() {
        let e = HashEmbedder::default_model();
        let a = e
            .embed_binary_one("The capital of France is Paris.")
            .unwrap();
        let b = e
            .embed_binary_one("Paris is the capital of France")
            .unwrap();
        let c = e
            .embed_binary_one("The capital of France is Paris, a large city.")
            .unwrap();
        let d = e
            .embed_binary_one("Bananas grow in tropical climates")
            .unwrap();
        assert_eq!(a.hamming(&b).unwrap(), 0);
        assert!(a.hamming(&c).unwrap() < 115, "{}", a.hamming(&c).unwrap());
        assert!(a.hamming(&d).unwrap() > 115, "{}", a.hamming(&d).unwrap());
        assert!(e.embed_one("  ...  ").is_err());
    }
}
