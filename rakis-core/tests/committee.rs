//! Committees: who may answer, enforced by whole nodes on the in-memory hub (tokio's paused
//! clock). Each attack is run twice: against an open network, where it succeeds (the reason
//! committees exist), and against nodes with a membership, where it changes nothing.

use std::time::Duration;

use rakis_core::protocol::{Certificate, CertificateError};
use rakis_core::testing::{self, HashEmbedder, MemoryHub, ScriptedEngine};
use rakis_core::{
    Decision, FailureReason, InferenceId, InferenceRequest, Node, NodeBuilder, NodeEvent,
    NodeHandle, NodeKey, QuorumFailure, RequestId, StaticMembership, TokioClock,
};
use rakis_core::{IgnoreReason, NodeError};

const MODEL: &str = "smollm2-135m";
const NET: &str = "committee-net";
const BASE_MS: u64 = 1_700_000_000_000;
const HONEST: &str = "The capital of France is Paris.";
const LIE: &str = "Lyon is the capital city of the French republic, everybody knows.";

fn builder(hub: &MemoryHub, key: &NodeKey) -> NodeBuilder {
    Node::builder()
        .network_id(NET)
        .transport(hub.join(key.node_id()))
        .key(key.clone())
        .clock(TokioClock::starting_at(BASE_MS))
}

/// An answering node; `membership` `None` runs it as an open network.
fn answering(
    hub: &MemoryHub,
    seed: u64,
    answer: &str,
    membership: Option<&StaticMembership>,
) -> NodeHandle {
    let key = NodeKey::from_seed(seed);
    let b = builder(hub, &key)
        .engine(ScriptedEngine::constant(MODEL, answer).with_delay(Duration::from_millis(50)))
        .embedder(HashEmbedder::default_model())
        .rng_seed(seed);
    let b = match membership {
        Some(m) => b.membership(m.clone()),
        None => b.open_network(),
    };
    b.build().unwrap().spawn().0
}

fn keys(seeds: std::ops::Range<u64>) -> Vec<NodeKey> {
    seeds.map(NodeKey::from_seed).collect()
}

fn membership_of(keys: &[NodeKey]) -> StaticMembership {
    StaticMembership::equal(keys.iter().map(|k| k.node_id())).unwrap()
}

fn request(h: &NodeHandle, quorum: u32) -> InferenceRequest {
    testing::request(MODEL, h.node_id(), h.now_ms(), quorum, 1_000)
}

/// Free keys that commit and never reveal: each broadcasts a well-formed, signed commit.
async fn commit_and_vanish(hub: &MemoryHub, seeds: std::ops::Range<u64>, id: RequestId) {
    for key in keys(seeds) {
        let t = hub.join(key.node_id());
        let commit = rakis_core::protocol::CommitMsg::signed(
            &key,
            &rakis_core::consensus::network_digest(NET),
            rakis_core::consensus::Commit {
                request_id: id,
                node: key.node_id(),
                inference_id: InferenceId([7; 32]),
                commitment: rakis_core::consensus::Commitment([key.node_id().0[1]; 32]),
            },
            MODEL,
        );
        let bytes = rakis_core::envelope::seal(
            &key,
            NET,
            BASE_MS + 10,
            rakis_core::Message::Commit(commit),
        )
        .unwrap();
        rakis_core::Transport::broadcast(&t, bytes).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn free_keys_that_commit_and_never_reveal_fail_an_open_network_but_not_a_committee() {
    // The attack: 5 honest nodes, quorum 5, and 4 free keys that commit and vanish.
    // Open network: the threshold follows the 9 committers (ceil(0.6 × 9) = 6 > 5 honest).
    let hub = MemoryHub::jittery(1);
    let honest: Vec<NodeHandle> = (0..5).map(|i| answering(&hub, i, HONEST, None)).collect();
    let r = request(&honest[0], 5);
    let id = honest[0].submit(r).await.unwrap();
    commit_and_vanish(&hub, 100..104, id).await;
    let err = honest[1]
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            NodeError::RequestFailed(QuorumFailure::Consensus(FailureReason::BelowThreshold {
                best: 5,
                needed: 6
            }))
        ),
        "{err}"
    );

    // With a membership of the 5 honest nodes: the free keys are outside every committee.
    let hub = MemoryHub::jittery(2);
    let members = membership_of(&keys(0..5));
    let honest: Vec<NodeHandle> = (0..5)
        .map(|i| answering(&hub, i, HONEST, Some(&members)))
        .collect();
    let mut events = honest[1].subscribe();
    let r = request(&honest[0], 5);
    let id = honest[0].submit(r).await.unwrap();
    commit_and_vanish(&hub, 100..104, id).await;
    for h in &honest {
        let o = h
            .wait_for_outcome(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(o.committed, 5);
        assert_eq!(o.threshold, 3, "ceil(0.6 × 5), over the committee of 5");
        assert_eq!(o.selected().unwrap().output, HONEST);
    }
    let mut ignored = 0;
    while let Ok(e) = events.try_recv() {
        if let NodeEvent::Ignored {
            request_id,
            reason: IgnoreReason::NotInCommittee,
            ..
        } = e
        {
            assert_eq!(request_id, id);
            ignored += 1;
        }
    }
    assert_eq!(
        ignored, 4,
        "each free key's commit ignored, with its reason"
    );
}

#[tokio::test(start_paused = true)]
async fn eight_free_keys_agreeing_on_a_lie_win_an_open_network_but_not_a_committee() {
    // 5 honest nodes and 8 nodes of free keys that all answer the same lie, quorum 5.
    // Open network: the lie's ball of 8 meets ceil(0.6 × 13) = 8; the honest ball of 5 does not.
    let hub = MemoryHub::jittery(3);
    let honest: Vec<NodeHandle> = (0..5).map(|i| answering(&hub, i, HONEST, None)).collect();
    let _sybils: Vec<NodeHandle> = (100..108).map(|i| answering(&hub, i, LIE, None)).collect();
    let id = honest[0].submit(request(&honest[0], 5)).await.unwrap();
    let o = honest[0]
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        o.selected().unwrap().output,
        LIE,
        "the attack works on an open network"
    );

    // Membership of the honest five: the same sybils (still running, as open-network nodes that
    // commit and reveal their lie) change nothing.
    let hub = MemoryHub::jittery(4);
    let members = membership_of(&keys(0..5));
    let honest: Vec<NodeHandle> = (0..5)
        .map(|i| answering(&hub, i, HONEST, Some(&members)))
        .collect();
    let _sybils: Vec<NodeHandle> = (100..108).map(|i| answering(&hub, i, LIE, None)).collect();
    let id = honest[0].submit(request(&honest[0], 5)).await.unwrap();
    for h in &honest {
        let o = h
            .wait_for_outcome(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(o.selected().unwrap().output, HONEST);
        assert_eq!(o.committed, 5);
        assert!(o
            .accepted
            .iter()
            .all(|a| members.epoch().is_member(&a.node)));
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_drawn_committee_answers_and_the_threshold_counts_the_committee() {
    // 12 members, quorum 5: each request is served by a committee of 7 of them.
    let hub = MemoryHub::jittery(5);
    let all = keys(0..12);
    let members = membership_of(&all);
    let nodes: Vec<NodeHandle> = (0..12)
        .map(|i| answering(&hub, i, HONEST, Some(&members)))
        .collect();
    for n in 0..3 {
        let mut r = request(&nodes[0], 5);
        r.nonce = n;
        let committee = members.epoch().committee(&r);
        assert_eq!(committee.len(), 7);
        let id = nodes[0].submit(r).await.unwrap();
        let o = nodes[0]
            .wait_for_outcome(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(o.committed, 7);
        assert_eq!(o.threshold, 5, "ceil(0.6 × 7)");
        assert!(o.accepted.iter().all(|a| committee.contains(&a.node)));
        // Members outside the committee did not answer.
        for (i, h) in nodes.iter().enumerate() {
            let s = h.status(id).await.unwrap().unwrap();
            assert_eq!(s.own_committed, committee.contains(&all[i].node_id()));
        }
    }
}

async fn send_forged(hub: &MemoryHub, key: &NodeKey, id: RequestId, text: &str) {
    let t = hub.join(NodeKey::from_seed(999).node_id());
    let bytes = rakis_core::envelope::seal(
        key,
        NET,
        BASE_MS + 20,
        rakis_core::Message::ConsensusResult(testing::forged_result(key, id, text)),
    )
    .unwrap();
    rakis_core::Transport::broadcast(&t, bytes).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_light_client_trusts_only_a_result_certified_by_the_committee() {
    let hub = MemoryHub::jittery(6);
    let member_keys = keys(0..5);
    let members = membership_of(&member_keys);
    let nodes: Vec<NodeHandle> = (0..5)
        .map(|i| answering(&hub, i, HONEST, Some(&members)))
        .collect();
    // The light client: no model, the same membership, not a member.
    let client_key = NodeKey::from_seed(50);
    let client = builder(&hub, &client_key)
        .membership(members.clone())
        .build()
        .unwrap()
        .spawn()
        .0;
    let r = request(&client, 5);
    let id = client.submit(r.clone()).await.unwrap();
    // Before anyone else: a lie signed by one member, and one signed by five free keys.
    send_forged(&hub, &member_keys[3], id, LIE).await;
    for seed in 200..205 {
        send_forged(&hub, &NodeKey::from_seed(seed), id, LIE).await;
    }
    let cert = client
        .wait_for_certified_result(id, Duration::from_secs(30))
        .await
        .unwrap();
    let digest = cert.verify(&r, members.epoch()).unwrap();
    let result = cert.result().unwrap();
    assert_eq!(result.output, HONEST);
    assert_eq!(result.result_digest, digest);
    assert!(
        cert.signatures.len() >= 4,
        "{} signatures (4 of 5 needed)",
        cert.signatures.len()
    );
    let outcome = nodes[0]
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        matches!(&outcome.decision, Decision::Agreed { result_digest, .. } if *result_digest == digest)
    );

    // The certificate check on its own, as `rakis verify` or a contract would run it.
    let one = Certificate {
        committee: cert.committee.clone(),
        signatures: vec![testing::forged_result(&member_keys[3], id, LIE)],
    };
    assert!(matches!(
        one.verify(&r, members.epoch()),
        Err(CertificateError::TooFewSignatures { have: 1, need: 4 })
    ));
    let outsiders = Certificate {
        committee: cert.committee.clone(),
        signatures: (200..205)
            .map(|s| testing::forged_result(&NodeKey::from_seed(s), id, LIE))
            .collect(),
    };
    assert!(matches!(
        outsiders.verify(&r, members.epoch()),
        Err(CertificateError::NotInCommittee(_))
    ));
    let mut mixed = cert.clone();
    mixed
        .signatures
        .push(testing::forged_result(&member_keys[3], id, LIE));
    assert!(matches!(
        mixed.verify(&r, members.epoch()),
        Err(CertificateError::MixedDigests)
    ));
    // Enough committee members, but signing for another configuration (zero: no chain, no
    // epoch): such signatures count nowhere else either.
    let elsewhere = Certificate {
        committee: cert.committee.clone(),
        signatures: member_keys
            .iter()
            .filter(|k| cert.committee.contains(&k.node_id()))
            .map(|k| testing::forged_result(k, id, LIE))
            .collect(),
    };
    assert!(matches!(
        elsewhere.verify(&r, members.epoch()),
        Err(CertificateError::WrongConfig)
    ));
    let other_epoch = membership_of(&keys(0..6));
    assert!(matches!(
        cert.verify(&r, other_epoch.epoch()),
        Err(CertificateError::WrongCommittee)
    ));
}

#[tokio::test(start_paused = true)]
async fn an_open_network_has_no_certificate_to_give() {
    let hub = MemoryHub::jittery(7);
    let nodes: Vec<NodeHandle> = (0..3).map(|i| answering(&hub, i, HONEST, None)).collect();
    let id = nodes[0].submit(request(&nodes[0], 3)).await.unwrap();
    assert!(matches!(
        nodes[0]
            .wait_for_certified_result(id, Duration::from_secs(30))
            .await,
        Err(NodeError::NoCommittee)
    ));
}

/// A chain request as an oracle contract on chain 31337 emits it, in the block `block_hash`.
fn chain_request(now_ms: u64, quorum: u32, prompt: &str, block_hash: [u8; 32]) -> InferenceRequest {
    let mut r = testing::request(
        MODEL,
        NodeKey::from_seed(0).node_id(),
        now_ms,
        quorum,
        1_000,
    );
    r.messages = vec![rakis_core::ChatMessage::user(prompt)];
    r.requester = None;
    r.nonce = 1;
    r.origin = rakis_core::Origin::Chain {
        chain_id: 31_337,
        contract: rakis_core::Address([9; 20]),
        tx_hash: rakis_core::Hash32([1; 32]),
        log_index: 0,
        block_hash: rakis_core::Hash32(block_hash),
    };
    r.validate().unwrap();
    r
}

/// The node's own reading of the chain: `request` after `delay` (its polling interval).
struct OwnReading(InferenceRequest, Duration);

impl rakis_core::RequestSource for OwnReading {
    fn requests(
        &self,
    ) -> futures::stream::BoxStream<'static, Result<InferenceRequest, rakis_core::ChainError>> {
        use futures::StreamExt;
        let (r, delay) = (self.0.clone(), self.1);
        futures::stream::once(async move {
            tokio::time::sleep(delay).await;
            Ok(r)
        })
        .boxed()
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_cannot_choose_a_chain_requests_committee_by_relaying_it_first() {
    // 12 members, quorum 3: committees of 5. Every member reads the chain 300-520 ms after the
    // block; an attacker relays the same request (same id: the origin's location fields are not
    // covered) at once, with a block hash ground so that its committee is another one. Taking
    // the first copy heard, members would answer for the attacker's committee.
    let hub = MemoryHub::jittery(8);
    let all = keys(0..12);
    let members = membership_of(&all);
    let truth = chain_request(BASE_MS, 3, "Name the capital of France.", [0xB1; 32]);
    let true_committee = members.epoch().committee(&truth);
    let mut forged = truth.clone();
    let forged_committee = (0u8..=255)
        .find_map(|b| {
            if let rakis_core::Origin::Chain { block_hash, .. } = &mut forged.origin {
                *block_hash = rakis_core::Hash32([b; 32]);
            }
            let c = members.epoch().committee(&forged);
            let overlap = c
                .members
                .iter()
                .filter(|n| true_committee.contains(n))
                .count();
            (overlap <= 1).then_some(c)
        })
        .expect("a block hash whose committee barely overlaps the true one");
    assert_eq!(
        forged.id(),
        truth.id(),
        "the id does not cover the block hash"
    );
    let nodes: Vec<NodeHandle> = (0..12u64)
        .map(|i| {
            let key = NodeKey::from_seed(i);
            builder(&hub, &key)
                .engine(
                    ScriptedEngine::constant(MODEL, HONEST).with_delay(Duration::from_millis(50)),
                )
                .embedder(HashEmbedder::default_model())
                .rng_seed(i)
                .membership(members.clone())
                .request_source(OwnReading(
                    truth.clone(),
                    Duration::from_millis(300 + 20 * i),
                ))
                .build()
                .unwrap()
                .spawn()
                .0
        })
        .collect();
    let mut events = nodes[0].subscribe();
    // The attacker (a member, so that nothing else refuses it) relays its copy first.
    let t = hub.join(NodeKey::from_seed(999).node_id());
    let bytes = rakis_core::envelope::seal(
        &all[11],
        NET,
        BASE_MS + 5,
        rakis_core::Message::Request(forged.clone()),
    )
    .unwrap();
    rakis_core::Transport::broadcast(&t, bytes).await.unwrap();

    let id = truth.id();
    let answering_node = nodes
        .iter()
        .position(|h| true_committee.contains(&h.node_id()))
        .unwrap();
    let o = nodes[answering_node]
        .wait_for_outcome(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(o.committed, 5);
    assert!(o.accepted.iter().all(|a| true_committee.contains(&a.node)));
    for (i, h) in nodes.iter().enumerate() {
        let s = h.status(id).await.unwrap().unwrap();
        assert_eq!(
            s.own_committed,
            true_committee.contains(&all[i].node_id()),
            "node {i} answers as the block it read says, not as the relayed copy says"
        );
    }
    assert_ne!(forged_committee, true_committee);
    let mut refused = false;
    while let Ok(e) = events.try_recv() {
        if let NodeEvent::Ignored {
            request_id,
            node,
            reason: IgnoreReason::ChainRequestFromPeer,
        } = e
        {
            assert_eq!(request_id, id);
            refused |= node == all[11].node_id();
        }
    }
    assert!(refused, "the attacker's copy is refused with its reason");
}

#[test]
fn a_chain_requests_committee_cannot_be_ground_before_its_block() {
    // 30 members of which 6 collude; quorum 5, committees of 7, signatures needed 5 of 7. A
    // colluding requester varies its prompt until the committee is captured (5 or more
    // colluders, about 1 draw in 1,200).
    let all = keys(0..30);
    let members = membership_of(&all);
    let colluders: Vec<_> = all[..6].iter().map(|k| k.node_id()).collect();
    let captured = |r: &InferenceRequest| {
        let c = members.epoch().committee(r);
        c.members.iter().filter(|n| colluders.contains(n)).count() >= 5
    };
    // A peer request: the id is all the seed has, and grinding it finds a captured committee
    // (this fools only the requester: docs/security.md).
    let requester = NodeKey::from_seed(0).node_id();
    let peer_hit = (0..20_000u64).find(|n| {
        let mut r = testing::request(MODEL, requester, BASE_MS, 5, 1_000);
        r.nonce = *n;
        captured(&r)
    });
    assert!(
        peer_hit.is_some(),
        "grinding a peer request's id captures its committee"
    );
    // A chain request: the requester grinds against the block hash it expects (here, the
    // parent's), finds a prompt whose committee it would capture, and submits it...
    let guess = [0x42; 32];
    let prompt = (0..20_000)
        .map(|n| format!("Name the capital of France ({n})."))
        .find(|p| captured(&chain_request(BASE_MS, 5, p, guess)))
        .expect("a prompt captured under the guessed block hash");
    // ...but the committee is drawn with the hash of the block that holds the request, which
    // the requester does not know: over 4,000 such blocks the ground prompt is captured no
    // more often than any prompt (1 in 1,200: about 3).
    let blocks = 4_000u32;
    let hits = (0..blocks)
        .filter(|b| {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&b.to_be_bytes());
            hash[31] = 0x77;
            captured(&chain_request(BASE_MS, 5, &prompt, hash))
        })
        .count();
    assert!(hits <= 12, "captured under {hits} of {blocks} block hashes");
}
