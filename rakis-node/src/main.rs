//! `rakis`: run a Rakis node from a configuration file, ask the network, verify answers.
//!
//! ```text
//! rakis init                      # writes rakis.toml and node.key here
//! rakis run                       # starts the node and its gateway (Ctrl-C stops it)
//! rakis ask "What is the capital of France?" --save answer.json
//! rakis verify answer.json        # checks the committee's signatures offline
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rakis_core::{ChatMessage, NodeKey};
use rakis_node::config::default_file;
use rakis_node::{launch, Progress, RakisConfig, Verification};

#[derive(Parser)]
#[command(
    name = "rakis",
    version,
    about = "Run a node of the Rakis verified-inference network, ask it, verify its answers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented configuration file (rakis.toml) and a new node key (node.key).
    Init {
        /// The folder to write them in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Overwrite an existing configuration (the key is never overwritten).
        #[arg(long)]
        force: bool,
        /// Where the models are (`scripts/fetch-models.sh` puts them in .cache/models); without
        /// it and without .cache/models here, the file names Hugging Face repositories.
        #[arg(long, env = "RAKIS_MODELS_DIR")]
        models_dir: Option<PathBuf>,
    },
    /// Start the node the configuration describes, with its gateway; SIGINT or SIGTERM stop it.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "rakis.toml")]
        config: PathBuf,
    },
    /// Ask the network through a node's gateway and check the answer's certificate.
    Ask(AskArgs),
    /// Check a saved answer (`rakis ask --save`, or any gateway answer) against the committee
    /// of this configuration's members: every signature valid, by a distinct committee member,
    /// enough of them, over the answer's text.
    Verify {
        /// The saved answer (JSON).
        file: PathBuf,
        /// The configuration whose members are trusted.
        #[arg(long, short, default_value = "rakis.toml")]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,rakis_node=info".into()),
        )
        .try_init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            dir,
            force,
            models_dir,
        } => init(&dir, force, models_dir),
        Command::Run { config } => run(&config).await,
        Command::Ask(args) => ask(args).await,
        Command::Verify { file, config } => verify(&file, &config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn init(dir: &Path, force: bool, models_dir: Option<PathBuf>) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    let config_path = dir.join("rakis.toml");
    let key_path = dir.join("node.key");
    if config_path.exists() && !force {
        return Err(format!(
            "{} exists (use --force to overwrite it)",
            config_path.display()
        )
        .into());
    }
    let key = if key_path.exists() {
        eprintln!("keeping the existing key {}", key_path.display());
        NodeKey::load(&key_path, None)?
    } else {
        let key = NodeKey::generate();
        key.save(&key_path, None)?;
        key
    };
    let local = models_dir
        .or_else(|| {
            let here = PathBuf::from(".cache/models");
            here.join("SmolLM2-135M-Instruct").is_dir().then_some(here)
        })
        .map(|d| std::path::absolute(&d).unwrap_or(d));
    std::fs::write(
        &config_path,
        default_file(&key.node_id().to_string(), local.as_deref()),
    )?;
    println!("wrote {} and {}", config_path.display(), key_path.display());
    println!("node id {}", key.node_id());
    match &local {
        Some(d) => println!("models from {}", d.display()),
        None => println!("models from the Hugging Face hub (downloaded at the first run)"),
    }
    println!("next: rakis run --config {}", config_path.display());
    Ok(())
}

/// How long in-flight HTTP requests may finish after a stop signal.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

async fn run(config_path: &Path) -> Result<(), BoxError> {
    let config = RakisConfig::load(config_path)?;
    // The gateway's address is taken before minutes of model loading: a port in use fails now.
    let listener = if config.gateway.enabled {
        Some(tokio::net::TcpListener::bind(config.gateway.listen).await?)
    } else {
        None
    };
    let node = launch(&config, |p| match p {
        Progress::Key { node } => eprintln!("node {node}"),
        Progress::LoadingModel { name } => eprintln!("loading {name}…"),
        Progress::ModelReady { name, took } => {
            eprintln!("{name} ready in {:.1} s", took.as_secs_f32())
        }
        Progress::Listening { addresses } => {
            for a in addresses {
                eprintln!("listening on {a}");
            }
        }
        _ => {}
    })
    .await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = if let Some(listener) = listener {
        let addr = listener.local_addr()?;
        eprintln!("gateway on http://{addr} (POST /v1/chat/completions, GET /v1/models, POST /v1/embeddings, /metrics, status page at /)");
        let app = node
            .gateway
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let mut stop = stop_rx.clone();
        Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        }))
    } else {
        None
    };
    eprintln!("running; Ctrl-C or SIGTERM stops the node");
    shutdown_signal().await;
    eprintln!(
        "stopping: new connections refused, requests in flight have {} s (a second signal stops at once)…",
        DRAIN.as_secs()
    );
    let _ = stop_tx.send(true);
    if let Some(server) = server {
        tokio::select! {
            _ = server => {},
            _ = tokio::time::sleep(DRAIN) => eprintln!("requests still in flight were cut off"),
            _ = shutdown_signal() => {
                eprintln!("stopped at once");
                std::process::exit(130);
            }
        }
    }
    eprintln!("finishing pending writes…");
    node.shutdown().await?;
    eprintln!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[derive(clap::Args)]
struct AskArgs {
    /// The question.
    prompt: String,
    /// The configuration (its members are the committee the answer is checked against;
    /// its gateway address is asked unless --gateway says otherwise).
    #[arg(long, short, default_value = "rakis.toml")]
    config: PathBuf,
    /// The gateway's URL (default: the configuration's `gateway.listen`).
    #[arg(long)]
    gateway: Option<String>,
    /// The model (default: the configuration's engine or `requests.model`).
    #[arg(long)]
    model: Option<String>,
    /// A system message.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature.
    #[arg(long)]
    temperature: Option<f32>,
    /// Write the whole answer (with its verification) to this file.
    #[arg(long)]
    save: Option<PathBuf>,
    /// The gateway's API key.
    #[arg(long, env = "RAKIS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

async fn ask(a: AskArgs) -> Result<(), BoxError> {
    let config = RakisConfig::load(&a.config)?;
    let url = a
        .gateway
        .unwrap_or_else(|| format!("http://{}", config.gateway.listen));
    let model = a
        .model
        .or_else(|| config.requests.model.clone())
        .or_else(|| config.engine.as_ref().map(|e| e.model_name.clone()))
        .ok_or("no model: give --model (the configuration names none)")?;
    // The conversation sent, in the OpenAI shape (a `ChatMessage` serializes as one), and
    // what the certified request must hold.
    let sent: Vec<ChatMessage> = a
        .system
        .iter()
        .map(|s| ChatMessage::system(s.as_str()))
        .chain(std::iter::once(ChatMessage::user(a.prompt.as_str())))
        .collect();
    let mut body = serde_json::json!({"model": model, "messages": sent});
    if let Some(n) = a.max_tokens {
        body["max_tokens"] = n.into();
    }
    if let Some(t) = a.temperature {
        body["temperature"] = t.into();
    }
    let client = reqwest::Client::new();
    let mut request = client
        .post(format!("{}/v1/chat/completions", url.trim_end_matches('/')))
        .json(&body);
    if let Some(k) = a.api_key {
        request = request.bearer_auth(k);
    }
    eprintln!("asking {url} ({model}); the network answers after its deadline…");
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or(text);
        return Err(format!("the gateway answered {status}: {message}").into());
    }
    if let Some(path) = &a.save {
        std::fs::write(path, &text)?;
    }
    let (verification, answer) = Verification::from_json(&text)?;
    // The certificate must be of the request sent, with at least this configuration's quorum.
    verification.is_answer_to(&sent, &model, config.requests.quorum)?;
    match &config.membership {
        Some(m) => {
            let checked = verification.check(m.epoch(), answer.as_deref())?;
            println!("{}", checked.output);
            eprintln!(
                "verified: {} of the committee's {} members signed it ({} needed); result digest {}",
                checked.signers.len(),
                checked.committee,
                checked.needed,
                checked.result_digest
            );
        }
        None => {
            println!("{}", answer.as_deref().unwrap_or(""));
            eprintln!("not verified: an open network has no committee to certify answers")
        }
    }
    if let Some(path) = &a.save {
        eprintln!(
            "saved to {} (check it again with `rakis verify`)",
            path.display()
        );
    }
    Ok(())
}

fn verify(file: &Path, config_path: &Path) -> Result<(), BoxError> {
    let config = RakisConfig::load(config_path)?;
    let membership = config
        .membership
        .as_ref()
        .ok_or("the configuration lists no members to check the committee against")?;
    let text = std::fs::read_to_string(file)?;
    let (verification, answer) = Verification::from_json(&text)?;
    let checked = verification.check(membership.epoch(), answer.as_deref())?;
    let r = &verification.request;
    println!(
        "valid: request {}, {} of the committee's {} members signed result digest {} ({} needed)",
        verification.request_id,
        checked.signers.len(),
        checked.committee,
        checked.result_digest,
        checked.needed
    );
    for s in &checked.signers {
        println!("  signed by {s}");
    }
    println!(
        "the request: model {:?}, quorum {}, temperature {}, max_tokens {}, made at {} ms",
        r.accepted_models, r.frame.quorum, r.temperature, r.max_tokens, r.created_at_ms
    );
    for m in &r.messages {
        println!("  {:?}: {}", m.role, m.content);
    }
    println!("the certified answer: {}", checked.output);
    println!(
        "(a requester can choose its request's committee by trying nonces: trust certificates of \
         requests you made, with a quorum you accept)"
    );
    Ok(())
}
