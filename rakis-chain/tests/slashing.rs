//! Slashing with on-chain evidence, end to end on a real anvil node: two registered members of
//! a request's committee misbehave — one signs two commitments, the other reveals an answer
//! that does not open its commitment — and the honest nodes, which only run their drivers,
//! notice, send the evidence to the oracle and take their stake.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::sol_types::SolEvent;
use common::*;
use rakis_chain::contracts::RakisOracle;
use rakis_chain::dev::{AnvilOptions, LocalChain};
use rakis_chain::evm::evm_address;
use rakis_chain::{EvmChain, EvmError, OracleRevert};
use rakis_core::consensus::{commitment, network_digest, Commit, Commitment, Reveal, Salt};
use rakis_core::envelope::seal;
use rakis_core::protocol::{CommitMsg, RevealMsg};
use rakis_core::testing::{HashEmbedder, HubConfig, MemoryHub, ScriptedEngine};
use rakis_core::{
    Embedder, InferenceId, InferenceRequest, Message, Node, NodeConfig, NodeEvent, NodeHandle,
    NodeKey, Transport,
};

const NET: &str = "slashing-net";

async fn broadcast(t: &impl Transport, key: &NodeKey, message: Message) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    t.broadcast(seal(key, NET, now, message).unwrap())
        .await
        .unwrap();
}

fn commit_of(key: &NodeKey, request: &InferenceRequest, commitment: Commitment) -> CommitMsg {
    CommitMsg::signed(
        key,
        &network_digest(NET),
        Commit {
            request_id: request.id(),
            node: key.node_id(),
            inference_id: InferenceId([0x51; 32]),
            commitment,
        },
        MODEL,
    )
}

fn reveal_of(key: &NodeKey, request: &InferenceRequest, output: &str, salt: Salt) -> RevealMsg {
    let embedder = HashEmbedder::default_model();
    RevealMsg::signed(
        key,
        &network_digest(NET),
        Reveal {
            request_id: request.id(),
            node: key.node_id(),
            inference_id: InferenceId([0x51; 32]),
            output: output.into(),
            embedding: embedder.embed_binary_one(output).unwrap(),
            salt,
            embedding_model: embedder.model(),
        },
        MODEL,
        vec![],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocation_and_a_false_reveal_observed_by_nodes_end_in_slashed_stake() {
    init_tracing();
    let chain = LocalChain::start(AnvilOptions::default()).await.unwrap();
    // Three honest members and two rogues: every request of quorum 5 has all five.
    let keys: Vec<NodeKey> = (0..5).map(node_key).collect();
    chain.register_and_start_epoch(&keys).await.unwrap();
    let (equivocator, liar) = (keys[3].clone(), keys[4].clone());
    let hub = MemoryHub::new(HubConfig {
        delay: Duration::from_millis(5),
        ..HubConfig::default()
    });
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for (i, key) in keys[..3].iter().enumerate() {
        let evm = EvmChain::connect(chain.config(), chain.signer(i + 1).unwrap())
            .await
            .unwrap();
        let node = Node::builder()
            .membership(evm.membership())
            .key(key.clone())
            .config(
                NodeConfig {
                    reveal_window: Duration::from_millis(1_500),
                    status_interval: None,
                    ..NodeConfig::default()
                }
                .with_network_id(NET),
            )
            .transport(hub.join(key.node_id()))
            .engine(ScriptedEngine::constant(MODEL, ANSWER))
            .embedder(HashEmbedder::default_model())
            .request_source(evm.clone())
            .chain_sink(evm)
            .build()
            .unwrap();
        nodes.push(node.spawn().0);
    }
    let mut events: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
    let rogue_equivocator = hub.join(equivocator.node_id());
    let rogue_liar = hub.join(liar.node_id());

    let user = chain.connect(9).await.unwrap();
    let stake = user.stake_of(&equivocator.node_id()).await.unwrap();
    assert!(stake > 0);
    let id = request(
        &user,
        &chain_params("What is the capital of France?", 5, 4_000),
    )
    .await;
    let req = user.request(&id).await.unwrap().unwrap();
    // Wait until the honest nodes took the request from the chain.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while seen < nodes.len() {
        assert!(
            tokio::time::Instant::now() < until,
            "the nodes never saw the request"
        );
        seen = 0;
        for n in &nodes {
            seen += usize::from(n.status(id).await.unwrap().is_some());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The equivocator signs two commitments; the liar commits to one answer.
    broadcast(
        &rogue_equivocator,
        &equivocator,
        Message::Commit(commit_of(&equivocator, &req, Commitment([1; 32]))),
    )
    .await;
    broadcast(
        &rogue_equivocator,
        &equivocator,
        Message::Commit(commit_of(&equivocator, &req, Commitment([2; 32]))),
    )
    .await;
    let salt = Salt([0x77; 32]);
    let committed = reveal_of(&liar, &req, ANSWER, salt);
    broadcast(
        &rogue_liar,
        &liar,
        Message::Commit(commit_of(&liar, &req, committed.reveal.commitment())),
    )
    .await;
    assert_eq!(
        committed.reveal.commitment(),
        commitment(
            &id,
            &liar.node_id(),
            &InferenceId([0x51; 32]),
            ANSWER,
            &committed.reveal.embedding,
            &salt
        )
    );
    // After the deadline, the liar reveals another answer than it committed to.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(
        req.deadline_ms() + 300 - now.min(req.deadline_ms()),
    ))
    .await;
    broadcast(
        &rogue_liar,
        &liar,
        Message::Reveal(reveal_of(
            &liar,
            &req,
            "The capital of France is Lyon.",
            salt,
        )),
    )
    .await;

    // The nodes report; the oracle takes both stakes.
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = (
            user.stake_of(&equivocator.node_id()).await.unwrap(),
            user.stake_of(&liar.node_id()).await.unwrap(),
        );
        if left == (0, 0) {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "stake left: {left:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Two NodeSlashed events, one per kind; each reporter (an honest node's payer) credited
    // a tenth of the stake, the rest burned.
    let head = user.provider().get_block_number().await.unwrap();
    let logs = user
        .logs(RakisOracle::NodeSlashed::SIGNATURE_HASH, 0, head)
        .await
        .unwrap();
    let slashed: Vec<RakisOracle::NodeSlashed> = logs
        .iter()
        .map(|l| RakisOracle::NodeSlashed::decode_log(&l.inner).unwrap().data)
        .collect();
    assert_eq!(slashed.len(), 2, "{slashed:?}");
    let by_node: BTreeMap<_, _> = slashed.iter().map(|e| (e.node, e)).collect();
    let e = by_node[&evm_address(&equivocator.address())];
    let l = by_node[&evm_address(&liar.address())];
    assert_eq!((e.kind, l.kind), (1, 2));
    let mut rewards: BTreeMap<_, U256> = BTreeMap::new();
    for ev in &slashed {
        assert_eq!(ev.requestId.0, id.0);
        assert_eq!(ev.stake, U256::from(stake));
        assert_eq!(ev.reward, U256::from(stake / 10));
        *rewards.entry(ev.reporter).or_default() += ev.reward;
    }
    let payers: Vec<_> = (1..=3)
        .map(|i| chain.signer(i).unwrap().address())
        .collect();
    for (reporter, reward) in rewards {
        assert!(payers.contains(&reporter), "reporter {reporter} is no node");
        assert_eq!(user.credit_of(reporter).await.unwrap(), reward);
    }
    assert_eq!(
        user.oracle().slashedTotal().call().await.unwrap(),
        U256::from(2 * (stake - stake / 10))
    );
    // Both are banned for good.
    let owner = chain.connect(0).await.unwrap();
    match owner.register_node(&liar, stake).await {
        Err(EvmError::Reverted(OracleRevert::NodeBanned { .. })) => {}
        other => panic!("a slashed node registered again: {other:?}"),
    }

    // Every honest node saw both; the reports that landed are in the nodes' events, and no
    // honest node was accused.
    let mut misbehaved = BTreeMap::new();
    let mut landed = 0;
    for rx in &mut events {
        while let Ok(ev) = rx.try_recv() {
            match ev {
                NodeEvent::Misbehaved { node, kind, .. } => {
                    *misbehaved.entry((node, kind)).or_insert(0) += 1;
                }
                NodeEvent::MisbehaviourReported { result: Ok(_), .. } => landed += 1,
                _ => {}
            }
        }
    }
    assert_eq!(
        misbehaved,
        BTreeMap::from([
            ((equivocator.node_id(), "equivocation"), 3),
            ((liar.node_id(), "false-reveal"), 3),
        ])
    );
    assert_eq!(landed, 2);
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}
