//! The operator's configuration file (`rakis.toml`): one section per part of the node, every
//! field with a default except what only the operator can know.
//!
//! [`RakisConfig::load`] reads it strictly: an unknown field (a typo) or a value of the wrong
//! type is one [`ConfigFileError`] that names the field by its path (`gateway.listen`,
//! `net.listen_addresses[0]`) and the file. Relative paths in the file are relative to the file's
//! folder, so a node runs the same from any working directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rakis_chain::ChainConfig;
use rakis_core::{NodeConfig, StaticMembership};
use rakis_inference::{EmbedderConfig, EngineConfig, ModelSource, WeightFormat};
use rakis_net::NetConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration of a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RakisConfig {
    /// The node key file (created by `rakis init`; JSON, mode 0600).
    #[serde(default = "RakisConfig::default_key_file")]
    pub key_file: PathBuf,
    /// The environment variable holding the key file's passphrase (unset: not encrypted).
    #[serde(default)]
    pub key_passphrase_env: Option<String>,
    /// The node's database (open requests, commitments, results). Without it the node is
    /// volatile: a restart forgets the requests it committed to.
    #[serde(default = "RakisConfig::default_store")]
    pub store: Option<PathBuf>,
    /// The protocol's timings and bounds.
    #[serde(default)]
    pub node: NodeConfig,
    /// The peer-to-peer network.
    #[serde(default)]
    pub net: NetConfig,
    /// The language model this node answers with (none: the node verifies and relays only).
    #[serde(default)]
    pub engine: Option<EngineSection>,
    /// The embedding model this node verifies with (none: a light client, which trusts only
    /// results certified by a request's committee).
    #[serde(default)]
    pub embedder: Option<EmbedderSection>,
    /// Who may answer requests (every node of a network lists the same members).
    #[serde(default)]
    pub membership: Option<StaticMembership>,
    /// Run without a membership: every key that commits counts, which free keys can abuse.
    /// For tests only; `membership` is the production choice.
    #[serde(default)]
    pub open_network: bool,
    /// Where results are written: EVM oracles and/or a ledger file (none: not persisted).
    #[serde(default)]
    pub chains: Option<ChainConfig>,
    /// Defaults of the requests this node makes for its gateway and `rakis ask`.
    #[serde(default)]
    pub requests: RequestDefaults,
    /// The HTTP gateway (OpenAI-compatible API, metrics, status page).
    #[serde(default)]
    pub gateway: GatewayConfig,
}

/// Where the language model comes from and how it runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// The model's name in requests (`accepted_models`, the API's `model`).
    pub model_name: String,
    /// A local folder or GGUF file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Hugging Face repository (when `path` is not given).
    #[serde(default)]
    pub hub: Option<String>,
    /// The GGUF file inside the folder or repository.
    #[serde(default)]
    pub file: String,
    /// Generation workers (threads, each with its own KV cache).
    #[serde(default = "EngineSection::default_workers")]
    pub workers: usize,
    /// Jobs that may wait for a worker.
    #[serde(default = "EngineSection::default_queue_capacity")]
    pub queue_capacity: usize,
    /// Most answers a worker decodes together (concurrent requests share each step's read
    /// of the weights).
    #[serde(default = "EngineSection::default_batch")]
    pub batch: usize,
    /// How weights are kept (`"q8_0"`, `"as_stored"`, or `"f32"`: the format other engines
    /// can replay, for a committee that mixes engines or CPUs; docs/consensus.md).
    #[serde(default)]
    pub weights: WeightFormat,
}

impl EngineSection {
    fn default_workers() -> usize {
        1
    }
    fn default_queue_capacity() -> usize {
        16
    }
    fn default_batch() -> usize {
        4
    }

    /// Where to load the model from.
    pub fn source(&self) -> Result<ModelSource, ConfigFileError> {
        source(self.path.as_deref(), self.hub.as_deref(), "engine")
    }

    /// The engine's configuration.
    pub fn engine_config(&self) -> EngineConfig {
        let mut c = EngineConfig::new(&self.model_name);
        c.workers = self.workers.max(1);
        c.queue_capacity = self.queue_capacity.max(1);
        c.batch = self.batch.max(1);
        c.weights = self.weights;
        c
    }
}

/// Where the embedding model comes from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderSection {
    /// The model's name, as requests' security frames name it
    /// (`sentence-transformers/all-MiniLM-L6-v2`, the default frame's).
    pub model_name: String,
    /// A local folder with `config.json`, `tokenizer.json` and `model.safetensors`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Hugging Face repository (when `path` is not given).
    #[serde(default)]
    pub hub: Option<String>,
    /// Texts embedded at once.
    #[serde(default = "EmbedderSection::default_batch_size")]
    pub batch_size: usize,
}

impl EmbedderSection {
    fn default_batch_size() -> usize {
        32
    }

    /// Where to load the model from.
    pub fn source(&self) -> Result<ModelSource, ConfigFileError> {
        source(self.path.as_deref(), self.hub.as_deref(), "embedder")
    }

    /// The embedder's configuration.
    pub fn embedder_config(&self) -> EmbedderConfig {
        let mut c = EmbedderConfig::new(&self.model_name);
        c.batch_size = self.batch_size.max(1);
        c
    }
}

fn source(
    path: Option<&Path>,
    hub: Option<&str>,
    section: &str,
) -> Result<ModelSource, ConfigFileError> {
    match (path, hub) {
        (Some(p), None) => Ok(ModelSource::local(p)),
        (None, Some(h)) => Ok(ModelSource::hub(h)),
        (Some(_), Some(_)) => Err(ConfigFileError::invalid(
            format!("{section}.path"),
            "give either `path` or `hub`, not both",
        )),
        (None, None) => Err(ConfigFileError::invalid(
            format!("{section}.path"),
            "missing: give a local `path` or a Hugging Face `hub` repository",
        )),
    }
}

/// What the requests this node makes look like when the caller does not say.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestDefaults {
    /// Commits needed before the deadline (the committee is this plus spares).
    pub quorum: u32,
    /// Time from the request until commits close.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// The longest deadline a caller may ask for (`rakis.deadline_ms`); keep it within the
    /// peers' `node.max_request_time` (10 min by default), beyond which they refuse requests.
    #[serde(with = "humantime_serde")]
    pub max_deadline: Duration,
    /// How long after the deadline to wait for the agreed, certified result (reveal window,
    /// re-embedding, replay, signatures).
    #[serde(with = "humantime_serde")]
    pub settle_time: Duration,
    /// Most tokens generated when a request does not say.
    pub max_tokens: u32,
    /// The largest `max_tokens` a caller may ask for.
    pub max_tokens_limit: u32,
    /// Sampling temperature when a request does not say.
    pub temperature: f32,
    /// Nucleus mass when a request does not say.
    pub top_p: f32,
    /// The model requested when a caller names none (`rakis ask`); unset: the engine's.
    pub model: Option<String>,
}

impl Default for RequestDefaults {
    fn default() -> Self {
        RequestDefaults {
            quorum: 1,
            deadline: Duration::from_secs(20),
            max_deadline: Duration::from_secs(120),
            settle_time: Duration::from_secs(30),
            max_tokens: 128,
            max_tokens_limit: 1024,
            temperature: 0.7,
            top_p: 0.95,
            model: None,
        }
    }
}

/// One API key of the gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// A name for logs and metrics (never the key itself).
    pub name: String,
    /// The bearer token clients send (`Authorization: Bearer …`).
    pub key: String,
    /// Requests per minute for this key (default: the gateway's `requests_per_minute`).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

/// The HTTP gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Serve the gateway at all.
    pub enabled: bool,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer keys; empty: no authentication, allowed only on a loopback address unless
    /// `allow_anonymous` says otherwise.
    pub api_keys: Vec<ApiKey>,
    /// Serve without keys on a non-loopback address (behind a proxy that authenticates).
    pub allow_anonymous: bool,
    /// Requests per minute per key (per client address without keys); 0: unlimited.
    pub requests_per_minute: u32,
    /// Requests served at once (waiting for the network included); more get 429.
    pub max_in_flight: usize,
    /// Requests submitted to the network at once; the others wait (at most `queue_timeout`,
    /// then 429). Keep it below the peers' `node.max_open_per_requester` (64 by
    /// default): beyond it, peers refuse this node's requests and they fail for want of
    /// commits.
    pub max_submitted: usize,
    /// How long a request may wait for a slot with the network.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Serve `/metrics` (Prometheus text format).
    pub metrics: bool,
    /// Serve the status page (`/` and `/status.json`).
    pub status_page: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_keys: Vec::new(),
            allow_anonymous: false,
            requests_per_minute: 600,
            max_in_flight: 256,
            max_submitted: 48,
            queue_timeout: Duration::from_secs(60),
            max_body_bytes: 1 << 20,
            metrics: true,
            status_page: true,
        }
    }
}

impl RakisConfig {
    fn default_key_file() -> PathBuf {
        PathBuf::from("node.key")
    }
    fn default_store() -> Option<PathBuf> {
        Some(PathBuf::from("node.redb"))
    }

    /// Reads and checks the file at `path`; relative paths in it become relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|e| e.in_file(path))?;
        let base = path.parent().unwrap_or(Path::new(""));
        config.resolve_paths(base);
        config.validate().map_err(|e| e.in_file(path))?;
        Ok(config)
    }

    /// Parses a configuration from TOML text (paths stay as written; see [`Self::load`]).
    pub fn parse(text: &str) -> Result<Self, ConfigFileError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigFileError::Parse {
            file: None,
            field: String::new(),
            message: e.message().to_string(),
        })?;
        let mut unknown: Vec<String> = Vec::new();
        let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let ignoring = serde_ignored::Deserializer::new(de, &mut note);
        let config: RakisConfig =
            serde_path_to_error::deserialize(ignoring).map_err(|e| ConfigFileError::Parse {
                file: None,
                field: e.path().to_string(),
                message: e.inner().message().to_string(),
            })?;
        if let Some(field) = unknown.into_iter().next() {
            return Err(ConfigFileError::Parse {
                file: None,
                field,
                message: "unknown field".into(),
            });
        }
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let at = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        at(&mut self.key_file);
        if let Some(s) = self.store.as_mut() {
            at(s);
        }
        if let Some(p) = self.engine.as_mut().and_then(|e| e.path.as_mut()) {
            at(p);
        }
        if let Some(p) = self.embedder.as_mut().and_then(|e| e.path.as_mut()) {
            at(p);
        }
        if let Some(chains) = self.chains.as_mut() {
            // Without chains the ledger is used anyway: next to this file, not wherever the
            // node was started.
            if chains.ledger.is_none() && chains.evm.is_empty() {
                chains.ledger = Some(PathBuf::from("rakis-ledger.bin"));
            }
            if let Some(l) = chains.ledger.as_mut() {
                at(l);
            }
        }
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        if self.membership.is_none() && !self.open_network {
            return Err(ConfigFileError::invalid(
                "membership",
                "missing: list the network's members (`rakis init` lists this node), or set \
                 `open_network = true` for a test network",
            ));
        }
        if self.membership.is_some() && self.open_network {
            return Err(ConfigFileError::invalid(
                "open_network",
                "a network with a `membership` is not open; remove one of them",
            ));
        }
        if let Some(e) = &self.engine {
            e.source()?;
            if e.file.is_empty() && e.hub.is_some() {
                return Err(ConfigFileError::invalid(
                    "engine.file",
                    "missing: name the GGUF file in the hub repository",
                ));
            }
        }
        if let Some(e) = &self.embedder {
            e.source()?;
        }
        let r = &self.requests;
        if r.quorum == 0 {
            return Err(ConfigFileError::invalid(
                "requests.quorum",
                "must be at least 1",
            ));
        }
        if r.deadline.is_zero() {
            return Err(ConfigFileError::invalid(
                "requests.deadline",
                "must be positive",
            ));
        }
        if r.deadline > r.max_deadline {
            return Err(ConfigFileError::invalid(
                "requests.deadline",
                format!("must be at most max_deadline ({:?})", r.max_deadline),
            ));
        }
        if let Some(m) = &self.membership {
            if r.quorum as usize > m.epoch().len() {
                return Err(ConfigFileError::invalid(
                    "requests.quorum",
                    format!(
                        "{} is more than the {} members: no request could reach it",
                        r.quorum,
                        m.epoch().len()
                    ),
                ));
            }
        }
        if r.max_tokens_limit > rakis_core::protocol::MAX_TOKENS_LIMIT {
            return Err(ConfigFileError::invalid(
                "requests.max_tokens_limit",
                format!("at most {}", rakis_core::protocol::MAX_TOKENS_LIMIT),
            ));
        }
        if r.max_tokens == 0 || r.max_tokens > r.max_tokens_limit {
            return Err(ConfigFileError::invalid(
                "requests.max_tokens",
                format!("must be 1 to max_tokens_limit ({})", r.max_tokens_limit),
            ));
        }
        if !(0.0..=2.0).contains(&r.temperature) {
            return Err(ConfigFileError::invalid(
                "requests.temperature",
                "must be in 0..=2",
            ));
        }
        if !(r.top_p > 0.0 && r.top_p <= 1.0) {
            return Err(ConfigFileError::invalid(
                "requests.top_p",
                "must be in (0, 1]",
            ));
        }
        let g = &self.gateway;
        if g.enabled && g.api_keys.is_empty() && !g.listen.ip().is_loopback() && !g.allow_anonymous
        {
            return Err(ConfigFileError::invalid(
                "gateway.api_keys",
                format!(
                    "the gateway listens on {} (not loopback) without keys: add `[[gateway.api_keys]]` \
                     or set `allow_anonymous = true`",
                    g.listen
                ),
            ));
        }
        for (i, k) in g.api_keys.iter().enumerate() {
            if k.key.len() < 16 {
                return Err(ConfigFileError::invalid(
                    format!("gateway.api_keys[{i}].key"),
                    "too short: use at least 16 characters",
                ));
            }
            if g.api_keys[..i]
                .iter()
                .any(|o| o.key == k.key || o.name == k.name)
            {
                return Err(ConfigFileError::invalid(
                    format!("gateway.api_keys[{i}]"),
                    "a key or name listed twice",
                ));
            }
        }
        if g.max_in_flight == 0 {
            return Err(ConfigFileError::invalid(
                "gateway.max_in_flight",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid configuration (syntax, type, unknown field).
    #[error("{}{}{message}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default(), if field.is_empty() { String::new() } else { format!("field `{field}`: ") })]
    Parse {
        /// The file, when read from one.
        file: Option<PathBuf>,
        /// The field's path (`gateway.listen`), empty for a syntax error.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but cannot work.
    #[error("{}field `{field}`: {message}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Invalid {
        /// The file, when read from one.
        file: Option<PathBuf>,
        /// The field's path.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigFileError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigFileError::Invalid {
            file: None,
            field: field.into(),
            message: message.into(),
        }
    }

    fn in_file(self, path: &Path) -> Self {
        match self {
            ConfigFileError::Parse { field, message, .. } => ConfigFileError::Parse {
                file: Some(path.to_path_buf()),
                field,
                message,
            },
            ConfigFileError::Invalid { field, message, .. } => ConfigFileError::Invalid {
                file: Some(path.to_path_buf()),
                field,
                message,
            },
            other => other,
        }
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigFileError::Parse { field, .. } | ConfigFileError::Invalid { field, .. }
                if !field.is_empty() =>
            {
                Some(field)
            }
            _ => None,
        }
    }
}

/// The commented configuration `rakis init` writes: a one-member network of this node, the
/// models from `models` (local folders when given, else the Hugging Face hub), the gateway on
/// loopback.
pub fn default_file(node_id: &str, local_models: Option<&Path>) -> String {
    let (engine_source, embedder_source) = match local_models {
        Some(dir) => (
            format!(
                "path = {}\nfile = \"SmolLM2-135M-Instruct.Q4_1.gguf\"",
                toml_string(&dir.join("SmolLM2-135M-Instruct").display().to_string())
            ),
            format!(
                "path = {}",
                toml_string(&dir.join("all-MiniLM-L6-v2").display().to_string())
            ),
        ),
        None => (
            "hub = \"HuggingFaceTB/SmolLM2-135M-Instruct-GGUF\"\nfile = \"smollm2-135m-instruct-q8_0.gguf\"".to_string(),
            "hub = \"sentence-transformers/all-MiniLM-L6-v2\"".to_string(),
        ),
    };
    format!(
        r#"# Rakis node configuration (written by `rakis init`). Durations: "500ms", "20s", "1h".
# Relative paths are relative to this file's folder. Every section is documented in
# docs/operations.md; unknown fields are refused.

# This node's key (its identity on the network and on chains). Keep it secret, keep a backup.
key_file = "node.key"
# Set to the name of an environment variable holding a passphrase to encrypt the key file.
# key_passphrase_env = "RAKIS_KEY_PASSPHRASE"

# The node's database: requests it committed to survive a restart.
store = "node.redb"

[node]
# Reveals are accepted this long after the commit deadline.
reveal_window = "2s"
status_interval = "10s"

[net]
# Nodes of one network share this id.
network_id = "rakis-local"
listen_addresses = ["/ip4/127.0.0.1/tcp/4001"]
# Other nodes to dial at start (multiaddrs with /p2p/<peer id>).
bootstrap_peers = []
mdns = false

# The language model this node answers with.
[engine]
model_name = "smollm2"
{engine_source}
workers = 1
# Answers a worker decodes together (concurrent requests share each step's read of the weights).
batch = 4
# How the weights are computed: "q8_0" (the default), "as_stored" (the file's format: for a
# Q4_1 file half the memory and the fastest to decode), or "f32". Members replay each other's
# sampling only when they compute alike: the 8-bit formats only on the same kernels, so a
# committee that mixes engines or CPUs serves "f32" (docs/consensus.md).
weights = "q8_0"

# The embedding model this node verifies answers with (requests name it in their security
# frame; nodes answer only requests whose embedding model they have).
[embedder]
model_name = "sentence-transformers/all-MiniLM-L6-v2"
{embedder_source}

# Who may answer: each request is served by a committee drawn from these members by weight.
# Every node of the network lists the same members; add the others' node ids here.
[membership]
number = 0
[[membership.members]]
node = "{node_id}"
weight = 1

# Results are appended to a hash-chained ledger file (add `[[chains.evm]]` for an oracle).
[chains]
ledger = "results.ledger"

# Defaults of the requests this node makes for its gateway and `rakis ask`.
[requests]
quorum = 1
deadline = "20s"
settle_time = "30s"
max_tokens = 128
temperature = 0.7
top_p = 0.95

# The OpenAI-compatible HTTP gateway, /metrics and the status page.
[gateway]
listen = "127.0.0.1:8080"
# Keys are required on any address but loopback:
# [[gateway.api_keys]]
# name = "my-app"
# key = "a-long-random-secret-token"
# requests_per_minute = 60
"#
    )
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        default_file(
            "02a1633cafcc01ebfb6d78e39f687a1f0995c62fc95f51ead10a02ee0be551b5dc",
            Some(Path::new("/models")),
        )
    }

    #[test]
    fn the_default_file_parses_and_validates() {
        let c = RakisConfig::parse(&sample()).unwrap();
        assert_eq!(c.engine.as_ref().unwrap().model_name, "smollm2");
        assert_eq!(c.membership.unwrap().epoch().len(), 1);
        assert_eq!(c.gateway.listen.port(), 8080);
        let hub = default_file(
            "02a1633cafcc01ebfb6d78e39f687a1f0995c62fc95f51ead10a02ee0be551b5dc",
            None,
        );
        let c = RakisConfig::parse(&hub).unwrap();
        assert!(matches!(
            c.engine.unwrap().source().unwrap(),
            ModelSource::Hub { .. }
        ));
    }

    #[test]
    fn an_unknown_field_is_named_with_its_path() {
        let text = sample().replace("mdns = false", "mdsn = false");
        let e = RakisConfig::parse(&text).unwrap_err();
        assert_eq!(e.field(), Some("net.mdsn"), "{e}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_path() {
        let text = sample().replace("listen = \"127.0.0.1:8080\"", "listen = \"eighty\"");
        let e = RakisConfig::parse(&text).unwrap_err();
        assert_eq!(e.field(), Some("gateway.listen"), "{e}");
        let text = sample().replace("quorum = 1", "quorum = -1");
        let e = RakisConfig::parse(&text).unwrap_err();
        assert_eq!(e.field(), Some("requests.quorum"), "{e}");
    }

    #[test]
    fn a_public_gateway_without_keys_is_refused() {
        let text = sample().replace("127.0.0.1:8080", "0.0.0.0:8080");
        let e = RakisConfig::parse(&text).unwrap_err();
        assert_eq!(e.field(), Some("gateway.api_keys"), "{e}");
        let text = text.replace(
            "# [[gateway.api_keys]]\n# name = \"my-app\"\n# key = \"a-long-random-secret-token\"",
            "[[gateway.api_keys]]\nname = \"my-app\"\nkey = \"a-long-random-secret-token\"",
        );
        RakisConfig::parse(&text).unwrap();
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        for (from, to, field) in [
            ("quorum = 1", "quorum = 2", "requests.quorum"),
            ("max_tokens = 128", "max_tokens = 128\nmax_tokens_limit = 9000", "requests.max_tokens_limit"),
            ("deadline = \"20s\"", "deadline = \"1h\"", "requests.deadline"),
            (
                "# [[gateway.api_keys]]\n# name = \"my-app\"\n# key = \"a-long-random-secret-token\"",
                "[[gateway.api_keys]]\nname = \"a\"\nkey = \"a-long-random-secret-token\"\n[[gateway.api_keys]]\nname = \"b\"\nkey = \"a-long-random-secret-token\"",
                "gateway.api_keys[1]",
            ),
        ] {
            let text = sample().replace(from, to);
            assert_ne!(text, sample(), "{from}");
            let e = RakisConfig::parse(&text).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
        }
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rakis.toml");
        std::fs::write(
            &path,
            default_file(
                "02a1633cafcc01ebfb6d78e39f687a1f0995c62fc95f51ead10a02ee0be551b5dc",
                None,
            ),
        )
        .unwrap();
        let c = RakisConfig::load(&path).unwrap();
        assert_eq!(c.key_file, dir.path().join("node.key"));
        assert_eq!(c.store.unwrap(), dir.path().join("node.redb"));
        assert_eq!(
            c.chains.unwrap().ledger.unwrap(),
            dir.path().join("results.ledger")
        );
    }
}
