//! Persistence costs: a result submitted to the oracle on a real anvil node (latency and gas,
//! by number of signatures), and a ledger append (fsync).
//!
//! `cargo bench -p rakis-chain --bench chain` (needs `scripts/fetch-tools.sh`).

#![allow(missing_docs, clippy::print_stdout)]

use std::time::{Duration, Instant};

use alloy::primitives::Address as EvmAddress;
use alloy::providers::Provider;
use criterion::{criterion_group, criterion_main, Criterion};
use rakis_chain::dev::{AnvilOptions, LocalChain};
use rakis_chain::evm::request_params;
use rakis_chain::{EvmChain, EvmConfig, LedgerSink, OracleDeployment};
use rakis_core::protocol::ConsensusResultMsg;
use rakis_core::testing::QuorumFixture;
use rakis_core::{InferenceRequest, NodeKey, RequestId, SecurityFrame};

/// A chain request for `quorum` nodes and the results `keys` sign for it.
async fn signed_request(evm: &EvmChain, keys: &[NodeKey]) -> (RequestId, Vec<ConsensusResultMsg>) {
    let mut r = InferenceRequest::new("Say hello.", vec!["m".into()], keys[0].node_id(), 0);
    r.temperature = 0.0;
    r.top_p = 1.0;
    r.frame = SecurityFrame {
        quorum: keys.len() as u32,
        max_time_ms: 60_000,
        ..SecurityFrame::default()
    };
    let id = evm
        .request_inference(&request_params(&r), EvmAddress::ZERO, 0, 1_000)
        .await
        .unwrap();
    let results = QuorumFixture::new(keys.len(), 1).results_for(id, keys);
    (id, results)
}

fn oracle(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let chain = rt
        .block_on(LocalChain::start_with(
            AnvilOptions::default(),
            &OracleDeployment {
                min_signatures_floor: 1,
                ..OracleDeployment::default()
            },
        ))
        .unwrap();
    let evm = rt
        .block_on(EvmChain::connect(
            EvmConfig {
                stagger: Duration::ZERO,
                attestation_wait: Duration::ZERO,
                ..chain.config()
            },
            chain.signer(1).unwrap(),
        ))
        .unwrap();
    let keys: Vec<NodeKey> = (0..9).map(|i| NodeKey::from_seed(50 + i)).collect();
    for k in &keys {
        rt.block_on(evm.register_node(k)).unwrap();
    }
    let mut group = c.benchmark_group("oracle_submit");
    group.sample_size(20);
    for n in [3usize, 5, 9] {
        // Gas of one submission (printed once per size).
        let (id, results) = rt.block_on(signed_request(&evm, &keys[..n]));
        let tx: alloy::primitives::TxHash = rt
            .block_on(evm.submit_result(&results[0], &results[1..]))
            .unwrap()
            .parse()
            .unwrap();
        let receipt = rt
            .block_on(evm.provider().get_transaction_receipt(tx))
            .unwrap()
            .unwrap();
        println!(
            "submitResult with {n} signatures: {} gas (request {})",
            receipt.gas_used,
            id.short()
        );
        group.bench_function(format!("{n}_signatures"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (_, results) = rt.block_on(signed_request(&evm, &keys[..n]));
                    let t = Instant::now();
                    rt.block_on(evm.submit_result(&results[0], &results[1..]))
                        .unwrap();
                    total += t.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

fn ledger(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sink = LedgerSink::open(dir.path().join("bench.ledger")).unwrap();
    let mut nonce = 0u64;
    c.bench_function("ledger_append_fsync", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // A fresh request each time (built outside the timing).
                nonce += 1;
                let f = QuorumFixture::new(3, nonce);
                let t = Instant::now();
                sink.append(&f.request, &f.results[0], &f.results[1..], 0)
                    .unwrap();
                total += t.elapsed();
            }
            total
        })
    });
}

criterion_group!(benches, oracle, ledger);
criterion_main!(benches);
