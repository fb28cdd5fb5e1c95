//! The committed contract artifacts equal a fresh compile of the Solidity sources with the
//! pinned solcjs (installed by `scripts/fetch-tools.sh`), and the node computes the digests the
//! contract computes.

use std::path::{Path, PathBuf};
use std::process::Command;

use alloy::primitives::Address as EvmAddress;
use alloy::providers::Provider;
use rakis_chain::dev::{AnvilOptions, LocalChain};
use rakis_chain::evm::{request_from_event, request_params, EventLocation};
use rakis_core::{
    ChatMessage, Hash32, InferenceRequest, NodeKey, Origin, RequestError, SecurityFrame,
};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn solc_dir() -> PathBuf {
    let tools = std::env::var_os("RAKIS_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("../.cache/tools"));
    tools.join("node_modules/solc")
}

#[test]
fn committed_artifacts_equal_a_fresh_compile() {
    let solc = solc_dir();
    assert!(
        solc.join("package.json").is_file(),
        "solcjs not found at {} (run scripts/fetch-tools.sh)",
        solc.display()
    );
    let out = Command::new("node")
        .arg(crate_dir().join("contracts/compile.mjs"))
        .arg(&solc)
        .arg(crate_dir().join("artifacts"))
        .arg("--check")
        .output()
        .expect("node (Node.js) is needed to compile the contracts");
    assert!(
        out.status.success(),
        "the committed artifacts differ from a fresh compile; run \
         `node rakis-chain/contracts/compile.mjs .cache/tools/node_modules/solc rakis-chain/artifacts`\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn artifacts_name_the_pinned_compiler() {
    for file in ["RakisOracle.json", "SampleConsumer.json"] {
        let text =
            std::fs::read_to_string(Path::new(&crate_dir()).join("artifacts").join(file)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["compiler"].as_str().unwrap().starts_with("solc 0.8.37"));
        assert!(v["bytecode"]["object"].as_str().unwrap().len() > 1_000);
    }
}

fn sample_requests() -> Vec<InferenceRequest> {
    let requester = NodeKey::from_seed(1).node_id();
    let mut out = Vec::new();
    let prompts = [
        "What is the capital of France?",
        "Écris un haïku sur la mer — 海",
        "x",
    ];
    for (i, prompt) in prompts.iter().enumerate() {
        let mut r = InferenceRequest::new(*prompt, vec!["smollm2-135m".into()], requester, 0);
        r.temperature = [0.0, 0.7, 2.0][i];
        r.top_p = [1.0, 0.95, 0.001][i];
        // The oracle stores outputs: at most 32 KiB, 64 bytes per token.
        r.max_tokens = [1, 256, 512][i];
        r.accepted_models = (0..=i).map(|k| format!("model-{k}/v{i}")).collect();
        r.frame = SecurityFrame {
            quorum: [1, 5, 64][i],
            max_time_ms: [1, 60_000, 86_400_000][i],
            sec_distance: [0.0, 0.3, 1.0][i],
            sec_percentage: [0.000001, 0.6, 1.0][i],
            embedding_model: ["e", "sentence-transformers/all-MiniLM-L6-v2", "m/é"][i].into(),
        };
        out.push(r);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_and_the_node_compute_the_same_request_ids() {
    let chain = LocalChain::start(AnvilOptions::default()).await.unwrap();
    chain
        .register_and_start_epoch(&[NodeKey::from_seed(5)])
        .await
        .unwrap();
    let evm = chain.connect(1).await.unwrap();
    for r in sample_requests() {
        let params = request_params(&r);
        // The parameter digest, as a view call.
        let on_chain = evm
            .oracle()
            .paramsDigest(params.clone())
            .call()
            .await
            .unwrap();
        let mut chain_req = r.clone();
        chain_req.requester = None;
        chain_req.origin = Origin::Chain {
            chain_id: 31_337,
            contract: rakis_core::Address(chain.oracle.0 .0),
            tx_hash: Hash32([0; 32]),
            log_index: 0,
            block_hash: Hash32([0; 32]),
        };
        assert_eq!(on_chain.0, chain_req.chain_params_digest().0, "{params:?}");
        // The whole id, through a real request and its event.
        let pay = evm.required_payment(params.maxTokens, 0).await.unwrap() * 2;
        let id = evm
            .request_inference(&params, EvmAddress::ZERO, 0, pay)
            .await
            .unwrap();
        let logs = evm
            .provider()
            .get_logs(
                &alloy::rpc::types::Filter::new()
                    .address(chain.oracle)
                    .event_signature(<rakis_chain::contracts::RakisOracle::InferenceRequested as alloy::sol_types::SolEvent>::SIGNATURE_HASH)
                    .topic1(alloy::primitives::FixedBytes(id.0))
                    .from_block(0),
            )
            .await
            .unwrap();
        assert_eq!(logs.len(), 1);
        let ev = logs[0]
            .log_decode::<rakis_chain::contracts::RakisOracle::InferenceRequested>()
            .unwrap();
        let req = request_from_event(
            31_337,
            chain.oracle,
            &ev.inner.data,
            EventLocation {
                tx_hash: Hash32(logs[0].transaction_hash.unwrap().0),
                log_index: logs[0].log_index.unwrap(),
                block_hash: Hash32(logs[0].block_hash.unwrap().0),
            },
        )
        .unwrap();
        assert_eq!(req.id(), id);
        assert_eq!(
            req.messages,
            vec![ChatMessage::user(r.messages[0].content.clone())]
        );
        assert_eq!(req.frame, r.frame);
        assert_eq!(req.temperature, r.temperature);
    }
}

#[test]
fn chain_requests_with_inexact_fields_are_invalid() {
    let mut r = sample_requests().remove(1);
    r.requester = None;
    r.origin = Origin::Chain {
        chain_id: 1,
        contract: rakis_core::Address([1; 20]),
        tx_hash: Hash32([0; 32]),
        log_index: 0,
        block_hash: Hash32([0; 32]),
    };
    assert!(r.validate().is_ok());
    let mut t = r.clone();
    t.temperature = 0.7001;
    assert!(matches!(t.validate(), Err(RequestError::ChainSampling)));
    let mut d = r.clone();
    d.frame.sec_distance = 0.3000001;
    assert!(matches!(d.validate(), Err(RequestError::ChainFrame)));
    let mut m = r.clone();
    m.messages.push(ChatMessage::system("be brief"));
    assert!(matches!(m.validate(), Err(RequestError::ChainMessages)));
}
