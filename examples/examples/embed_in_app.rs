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
//! The app's own node joins a network; here the network is two more nodes started in this
//! process (`--peers N`, default 2), as other players' machines would be.
//!
//! Options: `--listen ADDR` (127.0.0.1:8080), `--peers N` (2), `--deadline-ms MS` (8000),
//! `--self-test`.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use rakis_core::{ChatMessage, InferenceRequest, NodeError, NodeHandle, NodeKey, SecurityFrame};
use rakis_examples::{load_models, start_network, start_node, Args, BoxError, MODEL};
use serde::{Deserialize, Serialize};

/// What the game's handlers share.
#[derive(Clone)]
struct App {
    node: NodeHandle,
    transport: Arc<rakis_net::Libp2pTransport>,
    quorum: u32,
    deadline_ms: u64,
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
    let mut request = InferenceRequest::new(
        body.question.clone(),
        vec![MODEL.into()],
        app.node.node_id(),
        app.node.now_ms(),
    );
    request.messages.insert(
        0,
        ChatMessage::system(format!(
            "You are {npc}, the keeper of a tavern in a small fantasy town. Answer in one short sentence."
        )),
    );
    request.temperature = 0.0;
    request.max_tokens = 40;
    request.frame = SecurityFrame {
        quorum: app.quorum,
        max_time_ms: app.deadline_ms,
        ..SecurityFrame::default()
    };
    let id = app
        .node
        .submit(request)
        .await
        .map_err(|e| problem(StatusCode::BAD_REQUEST, e))?;
    let outcome = app
        .node
        .wait_for_outcome(id, Duration::from_millis(app.deadline_ms + 30_000))
        .await
        .map_err(|e| match e {
            NodeError::Timeout => problem(StatusCode::GATEWAY_TIMEOUT, e),
            other => problem(StatusCode::SERVICE_UNAVAILABLE, other),
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
    let peers: usize = args.num("peers", 2)?;
    let deadline_ms: u64 = args.num("deadline-ms", 8_000)?;
    let self_test = args.flag("self-test");
    let listen = if self_test {
        "127.0.0.1:0".to_string()
    } else {
        args.get("listen", "127.0.0.1:8080")
    };

    // The network the game's node joins (other players' nodes, here in this process).
    let models = load_models(2)?;
    let network = format!("rakis-game-{}", std::process::id());
    let others = start_network(peers, &network, &models, |_, b| b).await?;
    let bootstrap = others
        .iter()
        .flat_map(|n| n.transport.listen_addrs())
        .collect();

    // The game's own node: it answers too, and it is the app's handle on the network.
    let own = start_node(
        "game",
        NodeKey::generate(),
        &network,
        bootstrap,
        Some(&models),
        |b| b,
    )
    .await?;
    own.transport
        .wait_for_topic_peers(peers, Duration::from_secs(30))
        .await?;
    let app = Arc::new(App {
        node: own.handle.clone(),
        transport: own.transport.clone(),
        quorum: (peers + 1) as u32,
        deadline_ms,
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
    own.handle.shutdown().await?;
    for n in &others {
        n.handle.shutdown().await?;
    }
    Ok(())
}
