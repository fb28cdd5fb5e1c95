//! Real protocol messages: the fixtures the coordinator target builds its inputs from, and the
//! seed corpus of the decoding and envelope targets.

use std::sync::OnceLock;

use rakis_core::envelope::seal;
use rakis_core::protocol::{PeerInfo, PeerStatus};
use rakis_core::testing::QuorumFixture;
use rakis_core::{Message, NodeKey, RejectReason};

use crate::NETWORK;

/// Nodes of each fixture quorum.
pub const FIXTURE_NODES: usize = 3;
/// Timestamp of the sealed seed envelopes (the fixtures' creation time).
pub const SEAL_AT_MS: u64 = QuorumFixture::CREATED_AT_MS;

/// Two complete quorums of [`FIXTURE_NODES`] nodes (`NodeKey::from_seed(0..3)`) on two
/// different requests, built once.
pub fn fixtures() -> &'static [QuorumFixture; 2] {
    static F: OnceLock<[QuorumFixture; 2]> = OnceLock::new();
    F.get_or_init(|| {
        [
            QuorumFixture::new(FIXTURE_NODES, 1),
            QuorumFixture::new(FIXTURE_NODES, 2),
        ]
    })
}

/// One message of every kind, from the first fixture.
pub fn sample_messages() -> Vec<Message> {
    let f = &fixtures()[0];
    let id = f.request.id();
    let mut out = vec![Message::Request(f.request.clone())];
    out.extend(f.commits.iter().cloned().map(Message::Commit));
    out.extend(f.reveals.iter().cloned().map(Message::Reveal));
    out.extend(f.results.iter().cloned().map(Message::ConsensusResult));
    out.push(Message::RevealRejected {
        request_id: id,
        node: f.keys[1].node_id(),
        inference_id: f.reveals[1].reveal.inference_id,
        reason: RejectReason::CommitmentMismatch,
    });
    out.push(Message::PeerStatus(PeerStatus {
        models: vec!["smollm2-135m".into()],
        embedding_model: Some(rakis_core::consensus::DEFAULT_EMBEDDING_MODEL.into()),
        workers: 2,
        load: 1,
    }));
    out.push(Message::KnownPeers(vec![PeerInfo {
        node: f.keys[2].node_id(),
        addresses: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        last_seen_ms: SEAL_AT_MS,
    }]));
    out.push(Message::SyncRequest { request_id: id });
    let envelopes = f
        .commits
        .iter()
        .zip(&f.keys)
        .map(|(c, k)| seal(k, NETWORK, SEAL_AT_MS, Message::Commit(c.clone())))
        .collect::<Result<Vec<_>, _>>()
        .expect("small messages seal");
    out.push(Message::SyncResponse {
        request_id: id,
        envelopes,
    });
    out
}

/// The signer a message naturally comes from (its committer, revealer, result signer or
/// requester); the first fixture key otherwise.
pub fn natural_signer(message: &Message) -> rakis_core::NodeId {
    let fallback = fixtures()[0].keys[0].node_id();
    match message {
        Message::Request(r) => r.requester.unwrap_or(fallback),
        Message::Commit(c) => c.commit.node,
        Message::Reveal(r) => r.reveal.node,
        Message::ConsensusResult(r) => r.signer,
        _ => fallback,
    }
}

/// The key of a fixture node id, if it is one.
pub fn key_of(node: &rakis_core::NodeId) -> Option<&'static NodeKey> {
    fixtures()[0].keys.iter().find(|k| k.node_id() == *node)
}

/// Every sample message sealed by its natural signer at [`SEAL_AT_MS`] for [`NETWORK`], built
/// once (sealing draws a random nonce: the bytes differ from one process to the next).
pub fn sample_wire() -> &'static [Vec<u8>] {
    static W: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    W.get_or_init(|| {
        sample_messages()
            .into_iter()
            .map(|m| {
                let key =
                    key_of(&natural_signer(&m)).expect("fixture messages come from fixture keys");
                seal(key, NETWORK, SEAL_AT_MS, m).expect("small messages seal")
            })
            .collect()
    })
}
