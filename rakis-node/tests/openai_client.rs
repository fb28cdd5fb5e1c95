//! The official `openai` Python package (installed into `.cache/python` by `scripts/setup.sh`)
//! talks to a 3-node network with the real models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) on
//! libp2p over loopback, through the gateway of one of them: a plain and a streamed chat
//! completion, whose `rakis` verification objects must hold against the committee here,
//! embeddings, the model list, and bad requests raised as the client's typed errors.

mod common;

use std::time::Duration;

use rakis_core::Embedder;
use rakis_node::config::GatewayConfig;
use rakis_node::Verification;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_gets_verified_answers() {
    let (engine, embedder) = common::real_models();
    let embedding_model = embedder.model();
    let mut defaults = common::defaults(3);
    // Three greedy generations of 24 tokens share one 2-worker engine; room for a slow machine.
    defaults.deadline = Duration::from_secs(20);
    defaults.settle_time = Duration::from_secs(60);
    let net = common::start(3, engine, embedder, GatewayConfig::default(), defaults).await;
    let root = common::workspace_root();
    let python = root.join(".cache/python");
    assert!(
        python.join("openai").is_dir(),
        "the openai package is missing in {}: run scripts/setup.sh",
        python.display()
    );
    let output = tokio::process::Command::new("python3")
        .arg(root.join("scripts/openai_client_check.py"))
        .args(["--base-url", &format!("{}/v1", net.url)])
        .args(["--model", common::MODEL])
        .args(["--embedding-model", &embedding_model])
        .env("PYTHONPATH", &python)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the client failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let epoch = net.members.epoch();

    let plain = &report["plain"];
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(plain["role"], "assistant");
    assert_eq!(plain["finish_reason"], "stop");
    let content = plain["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{content}");
    let v: Verification = serde_json::from_value(plain["rakis"].clone()).unwrap();
    let checked = v.check(epoch, Some(content)).unwrap();
    // Ended by the model, within the 24 tokens: its reveal's token ids say so.
    let completion = v.completion.as_ref().unwrap();
    assert_eq!(completion.finish_reason, "stop");
    assert!((1..24).contains(&completion.tokens), "{completion:?}");
    assert_eq!(checked.committee, 3);
    assert!(checked.signers.len() >= checked.needed);
    assert_eq!(plain["id"], format!("chatcmpl-{}", v.request_id));

    let stream = &report["stream"];
    assert!(stream["chunks"].as_u64().unwrap() >= 3, "{stream}");
    // Cut at its 4-token limit.
    assert_eq!(stream["finish_reason"], "length");
    let streamed = stream["content"].as_str().unwrap();
    let v: Verification = serde_json::from_value(stream["rakis"].clone()).unwrap();
    v.check(epoch, Some(streamed)).unwrap();
    let completion = v.completion.as_ref().unwrap();
    assert_eq!(
        (completion.tokens, completion.finish_reason.as_str()),
        (4, "length")
    );
    // Greedy decoding: the start of the same answer.
    assert!(
        content.starts_with(streamed.trim_end()),
        "{streamed:?} / {content:?}"
    );

    let emb = &report["embeddings"];
    assert_eq!(emb["count"], 2);
    assert_eq!(emb["dims"], serde_json::json!([384, 384]));
    let models: Vec<String> = serde_json::from_value(report["models"].clone()).unwrap();
    assert!(models.contains(&common::MODEL.to_string()), "{models:?}");

    let errors = &report["errors"];
    assert_eq!(errors["unknown_model"]["class"], "NotFoundError");
    assert_eq!(errors["unknown_model"]["code"], "model_not_found");
    assert_eq!(errors["n_2"]["class"], "BadRequestError");
    assert_eq!(errors["n_2"]["param"], "n");
    assert_eq!(errors["temperature_5"]["class"], "BadRequestError");
    assert_eq!(errors["temperature_5"]["param"], "temperature");
    net.shutdown().await;
}
