//! The status page rendered in a real headless Chromium: 4 nodes on libp2p over loopback, one
//! of which answers something else than the others; after one request through the gateway,
//! the page's rendered DOM shows the request's embedding ball with 3 accepted points at the
//! centre and the odd answer outside, and a screenshot is written
//! (`target/tmp/status-page.png`).

#![allow(clippy::print_stderr)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use rakis_core::testing::{HashEmbedder, ScriptedEngine};
use rakis_core::InferenceEngine;
use rakis_node::config::GatewayConfig;
use serde_json::{json, Value};

/// A headless Chromium: `RAKIS_CHROMIUM`, else `chromium-headless-shell` or `chromium` on the
/// path (`scripts/setup.sh` installs the first on Debian).
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("RAKIS_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in [
        "chromium-headless-shell",
        "chromium",
        "chromium-browser",
        "google-chrome",
    ] {
        if let Some(dir) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .find(|d| d.join(name).is_file())
        {
            return dir.join(name);
        }
    }
    panic!("no headless Chromium found: run scripts/setup.sh (or set RAKIS_CHROMIUM)");
}

async fn chromium_run(args: &[&str]) -> String {
    let out = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_each_requests_ball_in_a_real_browser() {
    let honest: Arc<dyn InferenceEngine> =
        Arc::new(ScriptedEngine::constant(common::MODEL, common::ANSWER));
    let odd: Arc<dyn InferenceEngine> = Arc::new(ScriptedEngine::constant(
        common::MODEL,
        "Bananas are berries, but strawberries are not.",
    ));
    let engines = vec![honest.clone(), honest.clone(), honest, odd];
    let net = common::start_each(
        engines,
        Arc::new(HashEmbedder::default_model()),
        GatewayConfig::default(),
        common::defaults(4),
    )
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", net.url))
        .json(&json!({"model": common::MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let id = answer["rakis"]["request_id"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let dom = chromium_run(&["--dump-dom", &net.url]).await;
    assert!(
        dom.contains(&net.handles[0].node_id().to_string()),
        "the node id is not on the page"
    );
    let card_start = dom
        .find(&format!("class=\"request\" data-request=\"{id}\""))
        .expect("the request's card is on the page");
    let card = &dom[card_start..];
    let card = &card[..card.find("</div>").unwrap()];
    assert!(card.contains("data-outcome=\"agreed\""));
    assert!(card.contains("<svg class=\"ball\""), "{card}");
    assert_eq!(
        card.matches("data-status=\"accepted\"").count(),
        3,
        "{card}"
    );
    assert_eq!(card.matches("data-status=\"outside\"").count(), 1, "{card}");
    assert_eq!(card.matches("data-distance=\"0\"").count(), 3, "{card}");
    assert!(card.contains(common::ANSWER));
    // Four peers of the gateway's node announced their status... three, itself excluded.
    assert_eq!(dom.matches("class=\"peer\"").count(), 3, "peers table");

    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&png);
    chromium_run(&[
        &format!("--screenshot={}", png.display()),
        "--window-size=1100,700",
        &net.url,
    ])
    .await;
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        bytes.len() > 10_000,
        "a blank screenshot ({} bytes)",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());
    net.shutdown().await;
}
