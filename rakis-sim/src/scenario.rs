//! Scenarios as code: nodes, behaviours, requests, security frame, network and seed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::answers::Corpus;
use rakis_core::engine::{Generation, GenerationJob, Score, ScoreJob};
use rakis_core::{BinaryEmbedding, EmbedError, EngineError, SecurityFrame};

/// What an adversarial answer function gets.
#[derive(Clone, Debug)]
pub struct AnswerCtx {
    /// Index of the request in the scenario.
    pub request: usize,
    /// Index of the prompt in the corpus.
    pub prompt: usize,
    /// The answering node.
    pub node: usize,
    /// The generation seed the coordinator drew.
    pub seed: u64,
}

/// A custom answer function.
pub type AnswerFn = Arc<dyn Fn(&AnswerCtx) -> String + Send + Sync>;

/// How one node behaves. Every node runs the real [`Coordinator`](rakis_core::coordinator::Coordinator); adversaries differ in
/// what they generate, what they embed, and what the simulator does with their outgoing messages.
#[derive(Clone)]
pub enum Behaviour {
    /// Follows the protocol with an honest answer.
    Honest,
    /// Freerider: has no model output. It must commit before any reveal, so it commits random
    /// words; at reveal time it waits for another node's reveal and reveals a copy of that
    /// output and embedding (with its own salt and inference id).
    Freerider,
    /// Freerider that copies an answer revealed for the same prompt in an earlier request (one it
    /// received), committing it as its own; random words when it saw none.
    CopyPriorAnswer,
    /// An honest-looking answer to another prompt.
    OffTopic,
    /// Random words.
    Garbage,
    /// The honest answer cut to its first `percent` % of words.
    Truncated {
        /// Share of words kept.
        percent: u32,
    },
    /// The honest answer with its key fact swapped for a wrong one.
    FactSwap,
    /// Reveals an output different from the committed one.
    RevealMismatch,
    /// Commits but never reveals.
    WithholdReveal,
    /// Broadcasts two different commitments.
    Equivocate,
    /// Equivocates by splitting: sends one commitment to the committee members with an even node
    /// index and another to those with an odd one, then reveals the first. The simulator does not
    /// relay messages inside a committee, so each side sees one commitment only (as when the
    /// commits are sent just before the deadline and relayed copies arrive too late).
    EquivocateSplit,
    /// Commits (and reveals) an honest answer with the embedding of another text.
    WrongEmbedding,
    /// Holds its commit back and broadcasts it `after_ms` after the deadline.
    LateCommit {
        /// Delay after the deadline.
        after_ms: u64,
    },
    /// A sybil group: every member answers the same text per request.
    Collude {
        /// The group (members of one group share the text).
        group: u32,
        /// What they say.
        lie: Lie,
    },
    /// Follows the protocol honestly, and re-broadcasts every message it receives (with its
    /// original signer, as a relayed signed envelope) `delay_ms` later.
    Replay {
        /// Delay before the replay.
        delay_ms: u64,
    },
    /// Answers with a custom function (otherwise honest protocol behaviour).
    Custom(AnswerFn),
    /// Selection steering by salt grinding: answers honestly, but before committing tries
    /// `tries` salts and commits with the one under which the selection would pick it, computed
    /// over the commitments it has seen so far. The other committers' salts are secret until
    /// they reveal, so it has to guess them (as zeros): the grind cannot see what decides.
    GrindSalt {
        /// Salts tried per request.
        tries: u32,
    },
    /// Selection steering by choosing who reveals: the members of `group` answer honestly and
    /// hold their reveals until half of the reveal window has passed. By then they have seen
    /// every honest reveal (salts included), so they can compute the selection for every subset
    /// of their own reveals; they publish the largest subset under which a member is selected
    /// (every reveal when none is), and withhold the others.
    SteerSelection {
        /// The group (members of one group act together).
        group: u32,
    },
    /// Answers honestly, and floods the network with valid requests of its own:
    /// `per_second` requests per second with a deadline `max_time_ms` after creation, sent to
    /// every node, from the start until the last scenario request's deadline.
    Flood {
        /// Requests per second.
        per_second: u32,
        /// Deadline of each flood request, after its creation.
        max_time_ms: u64,
    },
}

impl Behaviour {
    /// Whether the node is honest (its results count in the report).
    pub fn is_honest(&self) -> bool {
        matches!(self, Behaviour::Honest)
    }

    /// Whether the node's committed answer and embedding are honest (honest nodes, and replayers,
    /// which only add relayed copies of other messages). Any other node in an honest node's
    /// accepted set counts as an adversary accepted.
    pub fn answers_honestly(&self) -> bool {
        matches!(
            self,
            Behaviour::Honest
                | Behaviour::Replay { .. }
                | Behaviour::GrindSalt { .. }
                | Behaviour::SteerSelection { .. }
                | Behaviour::Flood { .. }
        )
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Behaviour::Honest => "honest",
            Behaviour::Freerider => "freerider",
            Behaviour::CopyPriorAnswer => "copy-prior-answer",
            Behaviour::OffTopic => "off-topic",
            Behaviour::Garbage => "garbage",
            Behaviour::Truncated { .. } => "truncated",
            Behaviour::FactSwap => "fact-swap",
            Behaviour::RevealMismatch => "reveal-mismatch",
            Behaviour::WithholdReveal => "withhold-reveal",
            Behaviour::Equivocate => "equivocate",
            Behaviour::EquivocateSplit => "equivocate-split",
            Behaviour::WrongEmbedding => "wrong-embedding",
            Behaviour::LateCommit { .. } => "late-commit",
            Behaviour::Collude { .. } => "collude",
            Behaviour::Replay { .. } => "replay",
            Behaviour::Custom(_) => "custom",
            Behaviour::GrindSalt { .. } => "grind-salt",
            Behaviour::SteerSelection { .. } => "steer-selection",
            Behaviour::Flood { .. } => "flood",
        }
    }
}

impl fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behaviour::Truncated { percent } => write!(f, "Truncated({percent}%)"),
            Behaviour::LateCommit { after_ms } => write!(f, "LateCommit(+{after_ms} ms)"),
            Behaviour::Collude { group, lie } => write!(f, "Collude({group}, {lie:?})"),
            Behaviour::Replay { delay_ms } => write!(f, "Replay(+{delay_ms} ms)"),
            Behaviour::GrindSalt { tries } => write!(f, "GrindSalt({tries})"),
            Behaviour::SteerSelection { group } => write!(f, "SteerSelection({group})"),
            Behaviour::Flood {
                per_second,
                max_time_ms,
            } => write!(f, "Flood({per_second}/s, {max_time_ms} ms)"),
            other => f.write_str(other.name()),
        }
    }
}

/// The text a colluding group agrees on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// An honest-looking answer to another prompt.
    OffTopic,
    /// Random words.
    Garbage,
    /// An honest answer with its key fact swapped.
    FactSwap,
}

/// Which nodes take part in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committee {
    /// An open network: every node receives every message of every request and may answer
    /// (full broadcast; for small N).
    All,
    /// Committees drawn from a membership, as nodes built with a
    /// [`Membership`](rakis_core::membership::Membership) draw them: every node but the
    /// [outsiders](Scenario::outsiders) is a member (weight 1 unless
    /// [`Scenario::weight`] says otherwise), each request is served by
    /// [`Epoch::committee`](rakis_core::membership::Epoch::committee) (quorum plus spares: 7 for
    /// quorum 5, 10 for quorum 7), and every member's coordinator ignores whoever is not in it.
    /// A request's messages reach its committee and its requester (a random honest member);
    /// outsiders hear the request and the members' commits and reveals, and send what they
    /// make to the committee.
    Drawn,
}

/// A partition: while active, messages between nodes of different groups are lost (nodes in
/// no group form one group of their own).
#[derive(Clone, Debug)]
pub struct Partition {
    /// Start, ms after the simulation start.
    pub from_ms: u64,
    /// End, ms after the simulation start.
    pub until_ms: u64,
    /// The groups (node indices).
    pub groups: Vec<Vec<usize>>,
}

/// Network conditions.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Base one-way latency.
    pub latency_ms: u64,
    /// Uniform extra latency in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Probability that one delivery is lost.
    pub loss: f64,
    /// Partitions.
    pub partitions: Vec<Partition>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            latency_ms: 20,
            jitter_ms: 30,
            loss: 0.0,
            partitions: Vec::new(),
        }
    }
}

/// The embedding function of a simulation: text → binary embedding (for example a real
/// model's `embed_binary_sync`). Results are cached per text by the simulator.
#[derive(Clone)]
pub struct SimEmbedder(pub Arc<EmbedFn>);

/// The function behind a [`SimEmbedder`].
pub type EmbedFn = dyn Fn(&str) -> Result<BinaryEmbedding, EmbedError> + Send + Sync;

/// A [`SimModel`] in a [`Scenario`].
#[derive(Clone)]
pub(crate) struct SimModelRef(pub(crate) Arc<dyn SimModel>);

impl std::fmt::Debug for SimModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimModel(..)")
    }
}

impl std::fmt::Debug for SimEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimEmbedder(..)")
    }
}

/// A real language model in the simulator, called synchronously on the simulator's thread:
/// honest nodes answer with its generations (with the sampling seed each node's coordinator
/// drew), adversaries rewrite those answers (and encode the lie's token ids), and every node
/// that serves the model replays the reveals' sampling with it (the second check). The virtual
/// clock does not advance while it runs.
pub trait SimModel: Send + Sync {
    /// Generates the answer of `job` (its seed, temperature, top-p and token limit).
    fn generate(&self, job: &GenerationJob) -> Result<Generation, EngineError>;
    /// Replays a reveal's sampling ([`InferenceEngine::score`](rakis_core::InferenceEngine::score)).
    fn score(&self, job: &ScoreJob) -> Result<Score, EngineError>;
    /// The token ids of `text` (an adversary's rewritten answer).
    fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError>;
}

/// A simulation scenario. Build with [`Scenario::new`] and the builder methods, run with
/// [`Scenario::run`].
#[derive(Clone, Debug)]
pub struct Scenario {
    pub(crate) seed: u64,
    pub(crate) nodes: usize,
    pub(crate) verifier_nodes: usize,
    pub(crate) behaviours: BTreeMap<usize, Behaviour>,
    pub(crate) frame: SecurityFrame,
    pub(crate) requests: usize,
    pub(crate) request_interval_ms: u64,
    pub(crate) committee: Committee,
    pub(crate) network: NetworkConfig,
    pub(crate) generation_ms: u64,
    pub(crate) generation_jitter_ms: u64,
    pub(crate) reveal_window_ms: u64,
    pub(crate) verify_grace_ms: u64,
    pub(crate) corpus: Corpus,
    pub(crate) sync: bool,
    pub(crate) clock_offsets: BTreeMap<usize, i64>,
    pub(crate) max_open_requests: usize,
    pub(crate) max_open_per_requester: usize,
    pub(crate) embedder: Option<SimEmbedder>,
    pub(crate) model: Option<SimModelRef>,
    pub(crate) sampling: (f32, f32, u32),
    pub(crate) outsiders: std::collections::BTreeSet<usize>,
    pub(crate) weights: BTreeMap<usize, u64>,
}

impl Scenario {
    /// `nodes` honest answering nodes, one request, the default frame with quorum
    /// `min(nodes, 5)` and a 2 s deadline, full broadcast, 20–50 ms latency, seed 0.
    pub fn new(nodes: usize) -> Self {
        Scenario {
            seed: 0,
            nodes,
            verifier_nodes: 0,
            behaviours: BTreeMap::new(),
            frame: SecurityFrame {
                quorum: nodes.clamp(1, 5) as u32,
                max_time_ms: 2_000,
                ..SecurityFrame::default()
            },
            requests: 1,
            request_interval_ms: 100,
            committee: Committee::All,
            network: NetworkConfig::default(),
            generation_ms: 300,
            generation_jitter_ms: 200,
            reveal_window_ms: 1_000,
            verify_grace_ms: 1_000,
            corpus: Corpus::default(),
            sync: true,
            clock_offsets: BTreeMap::new(),
            max_open_requests: rakis_core::coordinator::CoordinatorConfig::default()
                .max_open_requests,
            max_open_per_requester: rakis_core::coordinator::CoordinatorConfig::default()
                .max_open_per_requester,
            embedder: None,
            model: None,
            sampling: (0.7, 0.95, 256),
            outsiders: Default::default(),
            weights: BTreeMap::new(),
        }
    }

    /// Embeds with `embed` instead of the built-in bag-of-words
    /// [`HashEmbedder`](rakis_core::testing::HashEmbedder): plug a real sentence model in (its
    /// name must be the frame's `embedding_model`) to measure what that model separates.
    pub fn embedder(
        mut self,
        embed: impl Fn(&str) -> Result<BinaryEmbedding, EmbedError> + Send + Sync + 'static,
    ) -> Self {
        self.embedder = Some(SimEmbedder(Arc::new(embed)));
        self
    }

    /// Answers with a real language model instead of the scripted corpus wording, and turns
    /// the second check on: nodes replay every reveal's sampling with `model` (its results
    /// are cached per score job: every node gets the same verdict for the same reveal). The
    /// corpus still gives the prompts and the adversaries' rewrites.
    pub fn model(mut self, model: Arc<dyn SimModel>) -> Self {
        self.model = Some(SimModelRef(model));
        self
    }

    /// The requests' sampling: temperature, top-p and token limit (default 0.7, 0.95, 256).
    pub fn sampling(mut self, temperature: f32, top_p: f32, max_tokens: u32) -> Self {
        self.sampling = (temperature, top_p, max_tokens);
        self
    }

    /// The seed of every random choice (network, committees, wording, salts).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The last `k` nodes only verify (an embedder, no engine).
    pub fn verifier_nodes(mut self, k: usize) -> Self {
        self.verifier_nodes = k.min(self.nodes);
        self
    }

    /// Node `i` behaves as `b`.
    pub fn behaviour(mut self, i: usize, b: Behaviour) -> Self {
        self.behaviours.insert(i, b);
        self
    }

    /// Every node of `nodes` behaves as `b`.
    pub fn behaviours(mut self, nodes: impl IntoIterator<Item = usize>, b: Behaviour) -> Self {
        for i in nodes {
            self.behaviours.insert(i, b.clone());
        }
        self
    }

    /// The security frame of every request.
    pub fn frame(mut self, frame: SecurityFrame) -> Self {
        self.frame = frame;
        self
    }

    /// Quorum, `sec_distance` and `sec_percentage` of the frame.
    pub fn security(mut self, quorum: u32, distance: f64, percentage: f64) -> Self {
        self.frame.quorum = quorum;
        self.frame.sec_distance = distance;
        self.frame.sec_percentage = percentage;
        self
    }

    /// `n` requests, one every `interval_ms`, cycling through the corpus's prompts.
    pub fn requests(mut self, n: usize, interval_ms: u64) -> Self {
        self.requests = n;
        self.request_interval_ms = interval_ms;
        self
    }

    /// Who takes part in each request.
    pub fn committee(mut self, c: Committee) -> Self {
        self.committee = c;
        self
    }

    /// Network conditions.
    pub fn network(mut self, n: NetworkConfig) -> Self {
        self.network = n;
        self
    }

    /// Generation time: `ms` plus uniform `0..=jitter_ms`.
    pub fn generation(mut self, ms: u64, jitter_ms: u64) -> Self {
        self.generation_ms = ms;
        self.generation_jitter_ms = jitter_ms;
        self
    }

    /// Reveal window and verification grace of every node.
    pub fn windows(mut self, reveal_window_ms: u64, verify_grace_ms: u64) -> Self {
        self.reveal_window_ms = reveal_window_ms;
        self.verify_grace_ms = verify_grace_ms;
        self
    }

    /// The answers.
    pub fn corpus(mut self, c: Corpus) -> Self {
        self.corpus = c;
        self
    }

    /// Whether sync requests are answered (default true).
    pub fn sync(mut self, on: bool) -> Self {
        self.sync = on;
        self
    }

    /// Node `i`'s clock runs `offset_ms` ahead of true time (behind when negative). The node
    /// stamps requests and judges every deadline with its own clock; message timestamps used by
    /// sync are the sender's clock.
    pub fn clock_offset(mut self, i: usize, offset_ms: i64) -> Self {
        self.clock_offsets.insert(i, offset_ms);
        self
    }

    /// Nodes outside the membership (free keys) under [`Committee::Drawn`]: they run an
    /// open-network coordinator, hear every request and the members' commits and reveals, and
    /// send their commits, reveals and signed results to each committee.
    pub fn outsiders(mut self, nodes: impl IntoIterator<Item = usize>) -> Self {
        self.outsiders.extend(nodes);
        self
    }

    /// Node `i`'s weight (stake) in the membership (default 1; at least 1).
    pub fn weight(mut self, i: usize, weight: u64) -> Self {
        self.weights.insert(i, weight.max(1));
        self
    }

    /// Node `i`'s weight in the membership.
    pub fn weight_of(&self, i: usize) -> u64 {
        self.weights.get(&i).copied().unwrap_or(1)
    }

    /// Every node's `max_open_requests` (default: the coordinator's default).
    pub fn max_open_requests(mut self, n: usize) -> Self {
        self.max_open_requests = n;
        self
    }

    /// Every node's `max_open_per_requester` (default: the coordinator's default).
    pub fn max_open_per_requester(mut self, n: usize) -> Self {
        self.max_open_per_requester = n;
        self
    }

    /// Node `i`'s clock offset.
    pub fn clock_offset_of(&self, i: usize) -> i64 {
        self.clock_offsets.get(&i).copied().unwrap_or(0)
    }

    /// The behaviour of node `i`.
    pub fn behaviour_of(&self, i: usize) -> &Behaviour {
        self.behaviours.get(&i).unwrap_or(&Behaviour::Honest)
    }

    /// Whether node `i` generates answers.
    pub fn answers(&self, i: usize) -> bool {
        i < self.nodes - self.verifier_nodes
    }

    /// Runs the scenario to the end and reports.
    pub fn run(&self) -> super::Report {
        super::engine::Simulation::new(self.clone()).run()
    }
}
