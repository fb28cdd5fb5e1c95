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
use rakis_chain::{EvmChain, EvmConfig, LedgerSink};
use rakis_core::membership::{committee_size, config_digest};
use rakis_core::protocol::ConsensusResultMsg;
use rakis_core::testing::QuorumFixture;
use rakis_core::{InferenceRequest, NodeKey, SecurityFrame};

/// A chain request whose committee has `size` members (all of `keys`' epoch, quorum chosen
/// so), past its deadline, and the results its committee signs for it.
async fn signed_request(
    evm: &EvmChain,
    keys: &[NodeKey],
    size: usize,
) -> (InferenceRequest, Vec<ConsensusResultMsg>) {
    let quorum = (1..=size as u32)
        .find(|q| committee_size(*q).min(keys.len()) == size)
        .expect("a quorum for the size");
    let mut r = InferenceRequest::new("Say hello.", vec!["m".into()], keys[0].node_id(), 0);
    r.temperature = 0.0;
    r.top_p = 1.0;
    r.max_tokens = 32;
    r.frame = SecurityFrame {
        quorum,
        max_time_ms: 1_000,
        ..SecurityFrame::default()
    };
    let params = request_params(&r);
    let pay = evm.required_payment(params.maxTokens, 0).await.unwrap() * 2;
    let id = evm
        .request_inference(&params, EvmAddress::ZERO, 0, pay)
        .await
        .unwrap();
    let request = evm.request(&id).await.unwrap().unwrap();
    let stored = evm.request_state(&id).await.unwrap();
    let epoch = evm.epoch(stored.epoch).await.unwrap();
    let committee = epoch.committee(&request);
    let signers: Vec<NodeKey> = keys
        .iter()
        .filter(|k| committee.contains(&k.node_id()))
        .cloned()
        .collect();
    let config = config_digest(&request, Some(&committee));
    let results = QuorumFixture::new(signers.len(), 1).results_for(id, &signers, config);
    // Past the deadline.
    let _: serde_json::Value = evm
        .provider()
        .raw_request("evm_increaseTime".into(), (2u64,))
        .await
        .unwrap();
    (request, results)
}

/// Gas of the two kinds of slashing (printed): evidence against two registered nodes with a
/// 384-bit embedding in the reveal, as all-MiniLM-L6-v2 gives.
async fn slashing_gas(chain: &LocalChain, evm: &EvmChain) {
    use rakis_core::consensus::{commit_statement, network_digest, Commit, Commitment};
    use rakis_core::consensus::{
        BinaryEmbedding, InferenceId, RequestId, Reveal, RevealStatement, Salt,
    };
    use rakis_core::misbehaviour::{sign_statement, Misbehaviour, SignedCommit, SignedReveal};
    let owner = chain.connect(0).await.unwrap();
    let stake: u128 = owner
        .oracle()
        .minStake()
        .call()
        .await
        .unwrap()
        .try_into()
        .unwrap();
    let network = network_digest("bench");
    let commit = |key: &NodeKey, c: u8| {
        let commit = Commit {
            request_id: RequestId([9; 32]),
            node: key.node_id(),
            inference_id: InferenceId([1; 32]),
            commitment: Commitment([c; 32]),
        };
        SignedCommit {
            signature: sign_statement(key, &commit_statement(&network, &commit)),
            commit,
        }
    };
    let gas = |tx: String| async move {
        let tx: alloy::primitives::TxHash = tx.parse().unwrap();
        evm.provider()
            .get_transaction_receipt(tx)
            .await
            .unwrap()
            .unwrap()
            .gas_used
    };
    let (a, b) = (NodeKey::from_seed(70), NodeKey::from_seed(71));
    for k in [&a, &b] {
        owner.register_node(k, stake).await.unwrap();
    }
    let equivocation = Misbehaviour::Equivocation {
        network,
        first: commit(&a, 1),
        second: commit(&a, 2),
    };
    let tx = evm
        .report_misbehaviour(&equivocation)
        .await
        .unwrap()
        .unwrap();
    println!("slashEquivocation: {} gas", gas(tx).await);
    let bits: Vec<bool> = (0..384).map(|i| i % 3 == 0).collect();
    let statement = RevealStatement::of(&Reveal {
        request_id: RequestId([9; 32]),
        node: b.node_id(),
        inference_id: InferenceId([1; 32]),
        output: "The capital of France is Lyon.".into(),
        embedding: BinaryEmbedding::from_bits(&bits).unwrap(),
        salt: Salt([5; 32]),
        embedding_model: "all-MiniLM-L6-v2".into(),
    });
    let false_reveal = Misbehaviour::FalseReveal {
        network,
        commit: commit(&b, 3),
        reveal: SignedReveal {
            signature: sign_statement(&b, &statement.digest(&network)),
            statement,
        },
    };
    let tx = evm
        .report_misbehaviour(&false_reveal)
        .await
        .unwrap()
        .unwrap();
    println!(
        "slashFalseReveal (384-bit embedding): {} gas",
        gas(tx).await
    );
}

fn oracle(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let chain = rt
        .block_on(LocalChain::start(AnvilOptions::default()))
        .unwrap();
    let evm = rt
        .block_on(EvmChain::connect(
            EvmConfig {
                stagger: Duration::ZERO,
                ..chain.config()
            },
            chain.signer(1).unwrap(),
        ))
        .unwrap();
    let keys: Vec<NodeKey> = (0..9).map(|i| NodeKey::from_seed(50 + i)).collect();
    rt.block_on(chain.register_and_start_epoch(&keys)).unwrap();
    rt.block_on(slashing_gas(&chain, &evm));
    let mut group = c.benchmark_group("oracle_submit");
    group.sample_size(20);
    for n in [3usize, 5, 9] {
        // Gas of one submission (printed once per size).
        let (request, results) = rt.block_on(signed_request(&evm, &keys, n));
        let tx: alloy::primitives::TxHash = rt
            .block_on(evm.submit_result(&request, &results[0], &results[1..]))
            .unwrap()
            .parse()
            .unwrap();
        let receipt = rt
            .block_on(evm.provider().get_transaction_receipt(tx))
            .unwrap()
            .unwrap();
        println!(
            "submitResult with {n} signatures (committee of {n}, 9 members): {} gas (request {})",
            receipt.gas_used,
            request.id().short()
        );
        group.bench_function(format!("{n}_signatures"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (request, results) = rt.block_on(signed_request(&evm, &keys, n));
                    let t = Instant::now();
                    rt.block_on(evm.submit_result(&request, &results[0], &results[1..]))
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
