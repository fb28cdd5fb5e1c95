//! The OpenAI-compatible gateway in front of a 3-node network on libp2p over loopback (scripted
//! engines, hash embedder): answers with their verification, streaming, errors in the OpenAI
//! shape, keys and rate limits, metrics and the status page.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{scripted, ANSWER, MODEL};
use rakis_core::identity::eth_signed_message_hash;
use rakis_core::NodeKey;
use rakis_node::config::{ApiKey, GatewayConfig};
use rakis_node::verification::VerifyError;
use rakis_node::Verification;
use serde_json::{json, Value};

fn chat(content: &str) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": content}]})
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_json(url: &str) -> Value {
    let r = reqwest::get(url).await.unwrap();
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_completion_carries_a_verification_that_holds_offline() {
    let net = scripted(3, GatewayConfig::default()).await;
    let (status, body) = post(
        &format!("{}/v1/chat/completions", net.url),
        &chat("Capital of France?"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let text = body.to_string();
    let (v, answer) = Verification::from_json(&text).unwrap();
    assert!(v.certified);
    assert_eq!(v.committee.len(), 3);
    assert_eq!(v.accepted.len(), 3);
    assert!(v.signers.len() >= 3, "{:?}", v.signers);
    assert_eq!(body["id"], format!("chatcmpl-{}", v.request_id));
    let checked = v.check(net.members.epoch(), answer.as_deref()).unwrap();
    assert_eq!(checked.output, ANSWER);

    // Another text than the certified one.
    assert!(matches!(
        v.check(net.members.epoch(), Some("The capital of France is Lyon.")),
        Err(VerifyError::AnswerDiffers)
    ));
    // A signature by a key outside the committee, over the same digest.
    let outsider = NodeKey::generate();
    let mut forged = v.clone();
    let cert = forged.certificate.as_mut().unwrap();
    let mut extra = cert.signatures[0].clone();
    extra.signer = outsider.node_id();
    extra.signature = outsider.sign_digest(&eth_signed_message_hash(&extra.result_digest.0));
    cert.signatures[0] = extra;
    forged.signers[0] = outsider.node_id();
    assert!(matches!(
        forged.check(net.members.epoch(), None),
        Err(VerifyError::Certificate(_))
    ));
    // A member's result with a signature that is not its own.
    let mut forged = v.clone();
    let cert = forged.certificate.as_mut().unwrap();
    cert.signatures[1].signature = outsider.sign_digest(&eth_signed_message_hash(
        &cert.signatures[1].result_digest.0,
    ));
    assert!(matches!(
        forged.check(net.members.epoch(), None),
        Err(VerifyError::Certificate(_))
    ));
    // The certificate of the request sent, and not of another one.
    let sent = [rakis_core::ChatMessage::user("Capital of France?")];
    v.is_answer_to(&sent, MODEL, 3).unwrap();
    let other = [rakis_core::ChatMessage::user("Capital of Italy?")];
    assert!(matches!(
        v.is_answer_to(&other, MODEL, 3),
        Err(VerifyError::OtherRequest)
    ));
    assert!(matches!(
        v.is_answer_to(&sent, "other-model", 3),
        Err(VerifyError::OtherRequest)
    ));
    assert!(matches!(
        v.is_answer_to(&sent, MODEL, 4),
        Err(VerifyError::QuorumBelow { theirs: 3, ours: 4 })
    ));
    // Summary fields that say more than the certificate.
    let mut lying = v.clone();
    lying.replayed_by = lying.signers.clone();
    if v.replayed_by != lying.replayed_by {
        assert!(matches!(
            lying.check(net.members.epoch(), None),
            Err(VerifyError::SummaryDiffers)
        ));
    }
    let mut lying = v.clone();
    lying.signers.push(lying.signers[0]);
    assert!(matches!(
        lying.check(net.members.epoch(), None),
        Err(VerifyError::SummaryDiffers)
    ));
    let mut lying = v.clone();
    lying.model.name = "gpt-4o".into();
    assert!(matches!(
        lying.check(net.members.epoch(), None),
        Err(VerifyError::SummaryDiffers)
    ));
    let mut lying = v.clone();
    lying.certified = false;
    assert!(matches!(
        lying.check(net.members.epoch(), None),
        Err(VerifyError::NotCertified)
    ));
    // A completion without its text is not accepted as one.
    let mut bare = body.clone();
    bare["choices"][0]["message"]["content"] = Value::Null;
    assert!(matches!(
        Verification::from_json(&bare.to_string()),
        Err(VerifyError::Format(_))
    ));
    // Another member list than the checker trusts.
    let other =
        rakis_core::StaticMembership::equal((0..3).map(|_| NodeKey::generate().node_id())).unwrap();
    assert!(matches!(
        v.check(other.epoch(), None),
        Err(VerifyError::OtherEpoch { .. })
    ));
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sends_the_agreed_answer_as_chunks_then_done() {
    let net = scripted(3, GatewayConfig::default()).await;
    let mut body = chat("Capital of France?");
    body["stream"] = json!(true);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", net.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() >= 3);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, ANSWER);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    let v: Verification = serde_json::from_value(last["rakis"].clone()).unwrap();
    v.check(net.members.epoch(), Some(&content)).unwrap();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_shaped_errors() {
    let net = scripted(3, GatewayConfig::default()).await;
    let url = format!("{}/v1/chat/completions", net.url);
    let error = |v: &Value| {
        (
            v["error"]["type"].as_str().unwrap_or("").to_string(),
            v["error"]["param"].as_str().map(str::to_string),
            v["error"]["message"].as_str().unwrap_or("").to_string(),
        )
    };
    // Not JSON.
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(error(&v).0, "invalid_request_error");
    // Field by field.
    let mut n2 = chat("hi");
    n2["n"] = json!(2);
    let mut hot = chat("hi");
    hot["temperature"] = json!(3.5);
    let mut long = chat("hi");
    long["max_tokens"] = json!(1_000_000);
    let empty = json!({"model": MODEL, "messages": []});
    let tool = json!({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]});
    let mut far = chat("hi");
    far["rakis"] = json!({"deadline_ms": 3_600_000});
    let mut big = chat("hi");
    big["rakis"] = json!({"quorum": 4});
    for (body, param) in [
        (far, "rakis.deadline_ms"),
        (big, "rakis.quorum"),
        (n2, "n"),
        (hot, "temperature"),
        (long, "max_tokens"),
        (empty, "messages"),
        (tool, "messages[0].role"),
    ] {
        let (status, v) = post(&url, &body).await;
        assert_eq!(status, 400, "{v}");
        let (kind, p, message) = error(&v);
        assert_eq!(kind, "invalid_request_error");
        assert_eq!(p.as_deref(), Some(param), "{v}");
        assert!(!message.is_empty());
    }
    // A model nobody serves.
    let (status, v) = post(
        &url,
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains(MODEL));
    // A route that does not exist.
    let r = reqwest::Client::new()
        .get(format!("{}/v1/completions", net.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/completions"));
    // Too large a body.
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Too many texts to embed at once.
    let name = rakis_core::Embedder::model(&rakis_core::testing::HashEmbedder::default_model());
    let (status, v) = post(
        &format!("{}/v1/embeddings", net.url),
        &json!({"model": name, "input": vec!["x"; 65]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "input");
    // An embedding model this node does not have.
    let (status, v) = post(
        &format!("{}/v1/embeddings", net.url),
        &json!({"model": "text-embedding-3-small", "input": "hi"}),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_agreement_by_the_deadline_is_a_504() {
    // Engines slower than the deadline: nobody commits in time.
    let engine = std::sync::Arc::new(
        rakis_core::testing::ScriptedEngine::constant(MODEL, ANSWER)
            .with_delay(Duration::from_secs(3)),
    );
    let mut defaults = common::defaults(3);
    defaults.deadline = Duration::from_millis(400);
    defaults.settle_time = Duration::from_secs(10);
    let net = common::start(
        3,
        engine,
        std::sync::Arc::new(rakis_core::testing::HashEmbedder::default_model()),
        GatewayConfig::default(),
        defaults,
    )
    .await;
    let (status, v) = post(&format!("{}/v1/chat/completions", net.url), &chat("hi")).await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["type"], "timeout_error");
    assert_eq!(v["error"]["code"], "quorum_not_reached");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_when_configured_and_rates_are_limited_per_key() {
    let gateway = GatewayConfig {
        api_keys: vec![
            ApiKey {
                name: "app".into(),
                key: "app-secret-0123456789".into(),
                requests_per_minute: Some(2),
            },
            ApiKey {
                name: "other".into(),
                key: "other-secret-0123456789".into(),
                requests_per_minute: None,
            },
        ],
        ..GatewayConfig::default()
    };
    let net = scripted(3, gateway).await;
    let client = reqwest::Client::new();
    // GET `path` with the `authorization` header `auth` (none when `None`).
    let get = |path: &str, auth: Option<&str>| {
        let mut r = client.get(format!("{}{path}", net.url));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move { r.send().await.unwrap() }
    };
    const APP: Option<&str> = Some("Bearer app-secret-0123456789");
    const OTHER: Option<&str> = Some("Bearer other-secret-0123456789");
    let r = get("/v1/models", None).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = get("/v1/models", Some("Bearer wrong-key-0123456789")).await;
    assert_eq!(r.status(), 401);
    // Two a minute for this key: the third is refused with a Retry-After.
    for _ in 0..2 {
        assert_eq!(get("/v1/models", APP).await.status(), 200);
    }
    let r = get("/v1/models", APP).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31).contains(&wait), "{wait}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // Another key has its own budget.
    assert_eq!(get("/v1/models", OTHER).await.status(), 200);
    // Metrics and the status page (which shows answers) are behind the keys too.
    for path in ["/metrics", "/", "/status.json", "/healthz"] {
        assert_eq!(get(path, None).await.status(), 401, "{path}");
        assert_eq!(get(path, OTHER).await.status(), 200, "{path}");
    }
    // The scheme's case does not matter.
    let r = get("/v1/models", Some("bearer other-secret-0123456789")).await;
    assert_eq!(r.status(), 200);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_embeddings_metrics_and_the_status_page() {
    let net = scripted(3, GatewayConfig::default()).await;
    let client = reqwest::Client::new();
    // Peers announce their models within a status interval.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let v: Value = get_json(&format!("{}/v1/models", net.url)).await;
    assert_eq!(v["object"], "list");
    let smol = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == MODEL)
        .unwrap()
        .clone();
    assert_eq!(smol["object"], "model");
    assert_eq!(smol["rakis_nodes"], 3, "{v}");

    let embedder = rakis_core::testing::HashEmbedder::default_model();
    let name = rakis_core::Embedder::model(&embedder);
    let (status, v) = post(
        &format!("{}/v1/embeddings", net.url),
        &json!({"model": name, "input": ["Paris", "Lyon"]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let floats: Vec<f32> = serde_json::from_value(v["data"][1]["embedding"].clone()).unwrap();
    assert_eq!(floats, embedder.embed_one("Lyon").unwrap());
    let (status, v) = post(
        &format!("{}/v1/embeddings", net.url),
        &json!({"model": name, "input": "Paris", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, embedder.embed_one("Paris").unwrap());

    let (status, answer) = post(&format!("{}/v1/chat/completions", net.url), &chat("hi")).await;
    assert_eq!(status, 200);
    let id = answer["rakis"]["request_id"].as_str().unwrap().to_string();
    // The observer has seen the decision by the time the certificate is out; give it a tick.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = client
        .get(format!("{}/metrics", net.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "rakis_requests_total{outcome=\"agreed\"} 1",
        "rakis_request_events_total{event=\"committed\"} 1",
        "rakis_phase_duration_seconds_count{phase=\"total\"} 1",
        "rakis_gateway_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 1",
        "rakis_gateway_requests_total{endpoint=\"/v1/embeddings\",status=\"200\"} 2",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(metrics.contains("rakis_peers 2"), "{metrics}");

    let status: Value = get_json(&format!("{}/status.json", net.url)).await;
    let recent = &status["recent"][0];
    assert_eq!(recent["request_id"], id);
    assert_eq!(recent["outcome"], "agreed");
    let points = recent["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{recent}");
    for p in points {
        assert_eq!(p["status"], "accepted");
        // Identical answers: every point at the centre.
        assert_eq!(p["distance"], 0);
    }
    assert_eq!(points.iter().filter(|p| p["selected"] == true).count(), 1);
    let html = client
        .get(&net.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(&format!("data-request=\"{id}\"")));
    assert_eq!(html.matches("class=\"point accepted\"").count(), 3);
    net.shutdown().await;
}
