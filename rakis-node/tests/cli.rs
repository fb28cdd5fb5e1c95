//! The `rakis` binary from a fresh folder, as the README shows: `rakis init` writes a
//! configuration and a key, `rakis run` starts a node with the real models (SmolLM2, MiniLM)
//! and its gateway, `rakis ask` gets a certified answer and saves it, `rakis verify` accepts it
//! and rejects it with a forged or a non-committee signature; SIGTERM stops the node cleanly;
//! a misspelt field is one error naming it.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rakis_core::identity::eth_signed_message_hash;
use rakis_core::NodeKey;
use rakis_node::Verification;
use tokio::io::{AsyncBufReadExt, BufReader};

const RAKIS: &str = env!("CARGO_BIN_EXE_rakis");

async fn rakis(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(RAKIS)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in the file");
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_run_ask_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let models = common::models_dir();
    let (ok, out, err) =
        rakis(&["init", "--dir", d, "--models-dir", models.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");
    let config = dir.path().join("rakis.toml");
    assert!(config.is_file() && dir.path().join("node.key").is_file());
    // A second init refuses to overwrite.
    let (ok, _, err) = rakis(&["init", "--dir", d]).await;
    assert!(!ok && err.contains("exists"), "{err}");
    let c = config.to_str().unwrap();

    // From a checkout where scripts/fetch-models.sh filled .cache/models (as the README
    // shows), without --models-dir: the file names those models.
    let checkout = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(checkout.path().join(".cache")).unwrap();
    std::os::unix::fs::symlink(&models, checkout.path().join(".cache/models")).unwrap();
    let out = tokio::process::Command::new(RAKIS)
        .arg("init")
        .current_dir(checkout.path())
        .env_remove("RAKIS_MODELS_DIR")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(checkout.path().join("rakis.toml")).unwrap();
    assert!(
        written.contains(".cache/models/SmolLM2-135M-Instruct"),
        "{written}"
    );
    assert!(!written.contains("hub = "), "{written}");

    // A misspelt field: one error that names it.
    let typo = dir.path().join("typo.toml");
    std::fs::copy(&config, &typo).unwrap();
    edit(&typo, "mdns = false", "mdsn = false");
    let (ok, _, err) = rakis(&["run", "--config", typo.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(err.contains("field `net.mdsn`: unknown field"), "{err}");

    // Free ports, a short deadline.
    edit(&config, "/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/tcp/0");
    edit(
        &config,
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:0\"",
    );
    edit(&config, "deadline = \"20s\"", "deadline = \"8s\"");
    let mut run = tokio::process::Command::new(RAKIS)
        .args(["run", "--config", c])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let url = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if let Some(rest) = line.strip_prefix("gateway on ") {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("rakis run ended:\n{log}");
    })
    .await
    .expect("the gateway did not start");
    assert!(log.contains("smollm2 ready in"), "{log}");
    // The rest of the node's output, kept for the end.
    let rest = tokio::spawn(async move {
        let mut log = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
        }
        log
    });

    let answer = dir.path().join("answer.json");
    let a = answer.to_str().unwrap();
    let (ok, out, err) = rakis(&[
        "ask",
        "What is the capital of France? Answer in one sentence.",
        "--config",
        c,
        "--gateway",
        &url,
        "--max-tokens",
        "24",
        "--temperature",
        "0",
        "--save",
        a,
    ])
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("Paris"), "{out}");
    assert!(
        err.contains("verified: 1 of the committee's 1 members"),
        "{err}"
    );
    let (ok, out, err) = rakis(&["verify", a, "--config", c]).await;
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("valid: request"), "{out}");

    // Forged: the member's signature replaced by another key's over the same digest.
    let (v, _) = Verification::from_json(&std::fs::read_to_string(&answer).unwrap()).unwrap();
    let outsider = NodeKey::generate();
    let mut forged = v.clone();
    let sig = &mut forged.certificate.as_mut().unwrap().signatures[0];
    sig.signature = outsider.sign_digest(&eth_signed_message_hash(&sig.result_digest.0));
    let forged_file = dir.path().join("forged.json");
    std::fs::write(&forged_file, serde_json::to_string(&forged).unwrap()).unwrap();
    let (ok, _, err) = rakis(&["verify", forged_file.to_str().unwrap(), "--config", c]).await;
    assert!(!ok);
    assert!(err.contains("the certificate does not hold"), "{err}");
    // A signer outside the committee, with a valid signature of its own.
    let mut outside = v.clone();
    let sig = &mut outside.certificate.as_mut().unwrap().signatures[0];
    sig.signer = outsider.node_id();
    sig.signature = outsider.sign_digest(&eth_signed_message_hash(&sig.result_digest.0));
    outside.signers = vec![outsider.node_id()];
    std::fs::write(&forged_file, serde_json::to_string(&outside).unwrap()).unwrap();
    let (ok, _, err) = rakis(&["verify", forged_file.to_str().unwrap(), "--config", c]).await;
    assert!(!ok);
    assert!(err.contains("is not in the committee"), "{err}");

    // SIGTERM: a graceful stop.
    let pid = run.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), run.wait())
        .await
        .expect("the node did not stop")
        .unwrap();
    let log = rest.await.unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(dir.path().join("node.redb").is_file());
    assert!(dir.path().join("results.ledger").is_file());
}
