//! A host application that embeds a Rakis node: the backend of a game, with its own HTTP API
//! (axum). Players talk to a non-player character; each line the character says is generated
//! by the network and agreed by its nodes before the game shows it.
//!
//! ```text
//! cargo run --release --example embed_in_app                 # serves on 127.0.0.1:8080
//! curl -s localhost:8080/npc/Mira/ask -H 'content-type: application/json' \
//!      -d '{"question":"What is the capital of France?"}'
//! cargo run --release --example embed_in_app -- --self-test  # starts, asks once, exits
//! ```
//!
//! The game reads one configuration file with its own settings and its node's (`--config
//! FILE`; the defaults are [`DEFAULT_CONFIG`]). The app's node joins a network; here the network
//! is two more nodes started in this process (`--peers N`, default 2), as other players'
//! machines would be.
//!
//! Options: `--config FILE`, `--listen ADDR` (overrides the file), `--peers N` (2),
//! `--deadline-ms MS` (overrides the file's `answer_deadline`), `--self-test`.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use rakis_core::{MemoryStore, Node, NodeConfig, NodeError, NodeHandle, NodeKey, QuorumFailure};
use rakis_examples::{load_models, members_of, start_network_with_keys, Args, BoxError, MODEL};
use rakis_net::{Libp2pTransport, NetConfig};
use serde::{Deserialize, Serialize};

/// The game's configuration file: its HTTP API, and the Rakis node it embeds.
pub const DEFAULT_CONFIG: &str = r#"
listen = "127.0.0.1:8080"
# How long the network has to commit to a character's line.
answer_deadline = "8s"

[node]
reveal_window = "2s"
status_interval = "30s"

[net]
network_id = "rakis-game"
listen_addresses = ["/ip4/127.0.0.1/tcp/0"]
mdns = false
heartbeat = "100ms"
"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GameConfig {
    listen: String,
    #[serde(with = "humantime_serde")]
    answer_deadline: Duration,
    node: NodeConfig,
    net: NetConfig,
}

/// What the game's handlers share.
#[derive(Clone)]
struct App {
    node: NodeHandle,
    transport: Arc<Libp2pTransport>,
    quorum: u32,
    deadline: Duration,
}

#[derive(Deserialize)]
struct Ask {
    question: String,
}

#[derive(Serialize, Deserialize, Debug)]
struct Answer {
    npc: String,
    answer: String,
    request_id: String,
    /// Nodes whose answers formed the agreed ball.
    agreed_by: usize,
    /// Nodes that committed an answer.
    committed: u32,
}

#[derive(Serialize)]
struct Problem {
    error: String,
}

type Reply<T> = Result<Json<T>, (StatusCode, Json<Problem>)>;

fn problem(status: StatusCode, e: impl std::fmt::Display) -> (StatusCode, Json<Problem>) {
    (
        status,
        Json(Problem {
            error: e.to_string(),
        }),
    )
}

/// `POST /npc/{name}/ask`: the character answers through the network.
async fn ask(
    State(app): State<Arc<App>>,
    Path(npc): Path<String>,
    Json(body): Json<Ask>,
) -> Reply<Answer> {
    if body.question.trim().is_empty() || body.question.len() > 2_000 {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "ask a question of 1 to 2000 bytes",
        ));
    }
    let id = app
        .node
        .request(body.question)
        .system(format!(
            "You are {npc}, the keeper of a tavern in a small fantasy town. Answer in one short sentence."
        ))
        .models([MODEL])
        .temperature(0.0)
        .max_tokens(40)
        .quorum(app.quorum)
        .deadline(app.deadline)
        .submit()
        .await
        .map_err(|e| match e {
            NodeError::InvalidRequest(_) => problem(StatusCode::BAD_REQUEST, e),
            other => problem(StatusCode::SERVICE_UNAVAILABLE, other),
        })?;
    let outcome = app
        .node
        .wait_for_outcome(id, app.deadline + Duration::from_secs(30))
        .await
        .map_err(|e| match e {
            NodeError::Timeout => problem(StatusCode::GATEWAY_TIMEOUT, e),
            // Too few players' nodes answered in time: worth a retry later.
            NodeError::RequestFailed(QuorumFailure::QuorumNotReached { .. }) => {
                problem(StatusCode::SERVICE_UNAVAILABLE, e)
            }
            other => problem(StatusCode::BAD_GATEWAY, other),
        })?;
    let selected = outcome
        .selected()
        .ok_or_else(|| problem(StatusCode::SERVICE_UNAVAILABLE, "the network did not agree"))?;
    Ok(Json(Answer {
        npc,
        answer: selected.output.clone(),
        request_id: id.to_string(),
        agreed_by: outcome.accepted.len(),
        committed: outcome.committed,
    }))
}

/// `GET /healthz`: the embedded node's view of the network.
async fn health(State(app): State<Arc<App>>) -> Reply<serde_json::Value> {
    let stats = app
        .node
        .stats()
        .await
        .map_err(|e| problem(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let peers = app
        .transport
        .topic_peers()
        .await
        .map_err(|e| problem(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(serde_json::json!({
        "node": app.node.node_id().to_string(),
        "requests": stats.requests,
        "dropped_messages": stats.dropped_messages,
        "gossip_peers": peers.len(),
    })))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    rakis_examples::init_logging();
    let args = Args::from_env();
    let mut config: GameConfig = match args.all("config").pop() {
        Some(path) => toml::from_str(&std::fs::read_to_string(path)?)?,
        None => toml::from_str(DEFAULT_CONFIG)?,
    };
    let peers: usize = args.num("peers", 2)?;
    if let Some(ms) = args.all("deadline-ms").pop() {
        config.answer_deadline = Duration::from_millis(ms.parse()?);
    }
    let self_test = args.flag("self-test");
    let listen = if self_test {
        "127.0.0.1:0".to_string()
    } else {
        args.get("listen", &config.listen)
    };

    // The network the game's node joins (other players' nodes, here in this process).
    let models = load_models(2)?;
    // Its members: the other players' nodes and the game's own.
    let network = config.net.network_id.clone();
    let key = NodeKey::generate();
    let peer_keys: Vec<NodeKey> = (0..peers).map(|_| NodeKey::generate()).collect();
    let members = members_of(&[peer_keys.clone(), vec![key.clone()]].concat())?;
    let others = start_network_with_keys(peer_keys, &network, &members, &models, |_, b| b).await?;
    let bootstrap = others.iter().flat_map(|n| n.transport.listen_addrs());

    // The game's own node, assembled from the configuration: it answers too, and it is the
    // app's handle on the network. The models are shared with the other nodes of this process.
    let transport =
        Arc::new(Libp2pTransport::start(key.clone(), config.net.with_bootstrap(bootstrap)).await?);
    let node = Node::builder()
        .config(config.node)
        .membership(members)
        .key(key)
        .transport(transport.clone())
        .engine(models.engine.clone())
        .embedder(models.embedder.clone())
        .store(MemoryStore::default())
        .build()?;
    let (handle, _task) = node.spawn();
    transport
        .wait_for_topic_peers(peers, Duration::from_secs(30))
        .await?;
    let app = Arc::new(App {
        node: handle.clone(),
        transport,
        quorum: (peers + 1) as u32,
        deadline: config.answer_deadline,
    });
    let router = Router::new()
        .route("/npc/{name}/ask", post(ask))
        .route("/healthz", get(health))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    println!("[game] HTTP API on http://{addr} (POST /npc/{{name}}/ask, GET /healthz)");

    if self_test {
        let client = reqwest::Client::new();
        let health: serde_json::Value = client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await?
            .json()
            .await?;
        println!("[self-test] GET /healthz → {health}");
        let question = "What is the capital of France?";
        println!("[self-test] POST /npc/Mira/ask {{\"question\": {question:?}}}");
        let response = client
            .post(format!("http://{addr}/npc/Mira/ask"))
            .json(&serde_json::json!({ "question": question }))
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        println!("[self-test] {status} {text}");
        if !status.is_success() {
            return Err(format!("the API answered {status}").into());
        }
        let answer: Answer = serde_json::from_str(&text)?;
        if answer.answer.is_empty() || answer.agreed_by == 0 {
            return Err("empty answer".into());
        }
        let bad = client
            .post(format!("http://{addr}/npc/Mira/ask"))
            .json(&serde_json::json!({ "question": "  " }))
            .send()
            .await?;
        println!("[self-test] an empty question → {}", bad.status());
        if bad.status() != reqwest::StatusCode::BAD_REQUEST {
            return Err("an empty question was not refused".into());
        }
    } else {
        println!(
            "[game] try: curl -s http://{addr}/npc/Mira/ask -H 'content-type: application/json' -d '{{\"question\":\"What is the capital of France?\"}}'"
        );
        println!("[game] Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
    }
    server.abort();
    handle.shutdown().await?;
    for n in &others {
        n.handle.shutdown().await?;
    }
    Ok(())
}
