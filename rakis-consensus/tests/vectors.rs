//! Hand-computed vectors for the digests of the specification (crate docs) and for full
//! `evaluate` runs on small scenarios whose radius, threshold, ball counts, centre and accepted
//! set are worked out by hand in the comments.
//!
//! Every literal digest below was computed independently with Python's `hashlib` by
//! `tests/vectors.py`, which rebuilds the byte layouts from the specification without calling
//! this crate (`python3 rakis-consensus/tests/vectors.py` prints them all).

use rakis_consensus::*;

fn h32(s: &str) -> Hash32 {
    s.parse().unwrap()
}

fn cm(s: &str) -> Commitment {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Digest vectors
// ---------------------------------------------------------------------------------------------

const R11: RequestId = RequestId([0x11; 32]);

#[test]
fn joint_hash_vectors() {
    // Python: sha256(b"rakis/accepted/v1\0" + request + n.to_bytes(4, "big") + commitments...)
    assert_eq!(
        joint_hash(&R11, &[]),
        h32("3984a9063ef15e85161e6ecee350ff69f2306a9f9345c697321c34292f51028a")
    );
    assert_eq!(
        joint_hash(&R11, &[Commitment([0x01; 32])]),
        h32("8b0bc633f55f7e2f6fc67afb683997863b8b2b2308cbad5266caadc238c94469")
    );
    let three = [
        Commitment([0x01; 32]),
        Commitment([0x02; 32]),
        Commitment([0xFE; 32]),
    ];
    assert_eq!(
        joint_hash(&R11, &three),
        h32("e88ccc722e9821b79021a62de265b2adcaf2eb23e6b8190050939ca507b7bfe7")
    );
    // The request id is bound.
    assert_ne!(
        joint_hash(&RequestId([0x12; 32]), &three),
        joint_hash(&R11, &three)
    );
}

#[test]
fn selection_index_vectors() {
    // Python: seed = sha256(b"rakis/select/v1\0" + request + n (u32 BE) + (commitment + salt)...)
    //         index = (int.from_bytes(seed[:8], "big") * n) >> 64
    let one = [(Commitment([0x01; 32]), Salt([0xA1; 32]))];
    let (seed, index) = selection_index(&R11, &one);
    assert_eq!(
        seed,
        h32("d374dbd962d3377a54b8e550b693a26a34303d62e13226885f824e455af7485d")
    );
    assert_eq!(index, 0);

    let three = [
        (Commitment([0x01; 32]), Salt([0xA1; 32])),
        (Commitment([0x02; 32]), Salt([0xA2; 32])),
        (Commitment([0xFE; 32]), Salt([0xA3; 32])),
    ];
    let (seed, index) = selection_index(&R11, &three);
    assert_eq!(
        seed,
        h32("9b1ed0015c080094ba8e7457b7921b3b309c0285f0f3827a31308f9ddefc994b")
    );
    // u64_be(seed[0..8]) = 11177600029437722772; × 3 = 1.818 × 2^64 → index 1.
    assert_eq!(
        u64::from_be_bytes(seed.0[..8].try_into().unwrap()),
        11177600029437722772
    );
    assert_eq!(index, 1);

    let seven: Vec<_> = (1..8u8)
        .map(|i| (Commitment([i; 32]), Salt([0x80 + i; 32])))
        .collect();
    let (seed, index) = selection_index(&R11, &seven);
    assert_eq!(
        seed,
        h32("566fcc456c43af5d05e765548b3daa1714d52a10d870ad3bfcd9bd0f94108dc6")
    );
    assert_eq!(index, 2);

    // Every salt enters the seed.
    let mut other = three;
    other[2].1 .0[31] ^= 1;
    assert_ne!(
        selection_index(&R11, &other).0,
        selection_index(&R11, &three).0
    );
}

#[test]
fn result_digest_vector() {
    let oh = output_hash("Paris");
    assert_eq!(
        oh,
        h32("5dd272b4f316b776a7b8e3d0894b37e1e42be3d5d3b204b8a5836cc50597a6b1")
    );
    let joint = joint_hash(
        &R11,
        &[
            Commitment([0x01; 32]),
            Commitment([0x02; 32]),
            Commitment([0xFE; 32]),
        ],
    );
    // The distinct accepted nodes, ascending: node 3 twice and node 2 give node 2 ‖ node 3.
    let reveal = |n: u8| AcceptedReveal {
        node: node(n),
        inference_id: inf(n),
        commitment: Commitment([n; 32]),
        output_hash: oh,
        distance_to_center: 0,
    };
    let payees = payees_digest(&[reveal(3), reveal(2), reveal(3)]);
    // Python: sha256(bytes([2]) * 33 + bytes([3]) * 33)
    assert_eq!(
        payees,
        h32("a4e094c3c78552aa4776cb35ee20304fa0217b141c0ce735deed962cef6d3351")
    );
    // Python: sha256(b"rakis/result/v2\0" + request + sha256(b"Paris") + joint + payees
    //                + bytes([0x22]) * 32)
    assert_eq!(
        result_digest(&R11, &oh, &joint, &payees, &Hash32([0x22; 32])),
        h32("075cc6c4b7f3a78e85eb45f817845a6633d7cbbf6034a13e7cee304cc10a51b4")
    );
}

#[test]
fn commitment_vector_130_bits_utf8_output() {
    // 130 bits, set: 0, 63, 64, 129 (crosses two word boundaries; 17 canonical bytes).
    let e = BinaryEmbedding::from_words(130, vec![1 | 1 << 63, 1, 1 << 1]).unwrap();
    let c = commitment(
        &R11,
        &NodeId([0x02; 33]),
        &InferenceId([0x03; 32]),
        "héllo",
        &e,
        &Salt([0x04; 32]),
    );
    // Python: commitment(...) in tests/vectors.py, output hashed as UTF-8.
    assert_eq!(
        c,
        cm("d4990863193367903c5824aabd0c65df07f7b970ec866f16a5eb79db0ab47044")
    );
}

#[test]
fn statement_vectors() {
    // Python: network(), commit_statement(), reveal_statement() in tests/vectors.py.
    let net = network_digest("rakis-testnet");
    assert_eq!(
        net,
        h32("d94282964cb26e8bb4950d1f73c5388a716653e16448b550dfabcb9b73aaf254")
    );
    let commit = Commit {
        request_id: R11,
        node: NodeId([0x02; 33]),
        inference_id: InferenceId([0x03; 32]),
        commitment: Commitment([0x01; 32]),
    };
    assert_eq!(
        commit_statement(&net, &commit),
        h32("7d93e2d67424257782870e7c83a3c5f746b1200de144ec0e02e175f13c0cf4f5")
    );
    let reveal = Reveal {
        request_id: R11,
        node: NodeId([0x02; 33]),
        inference_id: InferenceId([0x03; 32]),
        output: "héllo".into(),
        embedding: BinaryEmbedding::from_words(130, vec![1 | 1 << 63, 1, 1 << 1]).unwrap(),
        salt: Salt([0x04; 32]),
        embedding_model: "any".into(),
    };
    let statement = RevealStatement::of(&reveal);
    assert_eq!(
        statement.digest(&net),
        h32("134739ca00a5a463dc7fd8c484345cf5b157e9e2a362d41689e909bfb83bce72")
    );
    // The statement opens the same commitment as the reveal (commit130 above).
    assert_eq!(
        statement.commitment(),
        cm("d4990863193367903c5824aabd0c65df07f7b970ec866f16a5eb79db0ab47044")
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario helpers: 64-bit embeddings; node n has id [n; 33], inference id [0x30 + n; 32] and
// output "answer n". The default frame gives radius floor(0.30 × 64) = 19 bits and a
// re-embedding tolerance of ceil(64 / 48) = 2 bits.
// ---------------------------------------------------------------------------------------------

const REQ: RequestId = RequestId([0xAA; 32]);
const OTHER_REQ: RequestId = RequestId([0xBB; 32]);

/// No bit set.
const A: u64 = 0;
/// Bits 0..=9: d(A, B) = 10.
const B: u64 = 0x0000_0000_0000_03FF;
/// Bits 10..=28: d(A, C) = 19 (exactly the radius), d(B, C) = 29.
const C: u64 = 0x0000_0000_1FFF_FC00;
/// Bits 44..=63: d(A, D) = 20 (one past the radius), d(B, D) = 30, d(C, D) = 39.
const D: u64 = 0xFFFF_F000_0000_0000;
/// Bits 20..=43: d(A, E) = 24, d(B, E) = 34, d(D, E) = 44.
const E: u64 = 0x0000_0FFF_FFF0_0000;

fn node(n: u8) -> NodeId {
    NodeId([n; 33])
}

fn inf(n: u8) -> InferenceId {
    InferenceId([0x30 + n; 32])
}

fn out(n: u8) -> String {
    format!("answer {n}")
}

fn emb(word: u64) -> BinaryEmbedding {
    BinaryEmbedding::from_words(64, vec![word]).unwrap()
}

fn reveal_with(req: RequestId, n: u8, embedding: BinaryEmbedding, salt: u8) -> Reveal {
    Reveal {
        request_id: req,
        node: node(n),
        inference_id: inf(n),
        output: out(n),
        embedding,
        salt: Salt([salt; 32]),
        embedding_model: DEFAULT_EMBEDDING_MODEL.to_string(),
    }
}

fn reveal(req: RequestId, n: u8, word: u64, salt: u8) -> Reveal {
    reveal_with(req, n, emb(word), salt)
}

fn commit_for(r: &Reveal) -> Commit {
    Commit {
        request_id: r.request_id,
        node: r.node,
        inference_id: r.inference_id,
        commitment: r.commitment(),
    }
}

/// An honest submission: the verifier's re-embedding equals the revealed embedding.
fn sub(r: Reveal) -> Submission {
    let own = r.embedding.clone();
    Submission {
        reveal: r,
        reembedding: Some(own),
        sampling_fault: None,
    }
}

fn default_params() -> ConsensusParams {
    ConsensusParams::from_frame(&SecurityFrame::default()).unwrap()
}

fn rejection(n: u8, reason: RejectReason) -> Rejection {
    Rejection {
        node: node(n),
        inference_id: inf(n),
        reason,
    }
}

fn accepted(r: &Reveal, distance_to_center: u32) -> AcceptedReveal {
    AcceptedReveal {
        node: r.node,
        inference_id: r.inference_id,
        commitment: r.commitment(),
        output_hash: output_hash(&r.output),
        distance_to_center,
    }
}

// ---------------------------------------------------------------------------------------------
// Main scenario: five nodes A, B, C, D, D (nodes 4 and 5 collude with identical embeddings),
// salts [0x50 + n; 32], default frame.
//
//   radius = floor(300_000 × 64 / 10⁶) = 19;  threshold = ceil(600_000 × 5 / 10⁶) = 3.
//   Balls (distance <= 19, itself included):
//     A: {A, B (10), C (19)} = 3     (D at 20 is outside)
//     B: {A, B}              = 2     (C at 29, D at 30)
//     C: {A, C}              = 2     (B at 29, D at 39)
//     D: {D, D}              = 2     (A at 20)
//   Centre A (unique maximum), best ball 3 >= 3: Agreed, accepted {A, B, C}.
//   Commitment order (Python): node 2 < node 4 < node 1 < node 3 < node 5, so the accepted set
//   sorted by commitment is [node 2, node 1, node 3] and the selection index 1 picks node 1.
// ---------------------------------------------------------------------------------------------

const MAIN_COMMITMENTS: [&str; 5] = [
    "b605224d3a1336706a4babe450e803990a742ec76078e2004bf7bcd095d677d2",
    "9fbb4fbea3aa8e4bd28e40c22c733500a0e55f2a41d31c7bd1318f6d7a1ca0bf",
    "bb08fc8de1ff95daae7735008d9bf273bd0d9fe9fd8b3becded455b4919c3b98",
    "a0403b9de71e82addfeae55c9c36289a6733e1bc5263caf4cc082e4f82ea70cc",
    "f12a69fa21704d13762e8fba247a2ea8bf3f7021d8e0875c29802ed6d5c9a736",
];
const MAIN_JOINT: &str = "a335e14ef3a93eb5c5ab701e806ba035b2347dc3f755bc09fb12f60775f0a9ee";
const MAIN_DIGEST: &str = "1856bad0ba012a37bfa2f7513248f60fa87b60779de777957d4aa04bd28d17b7";

fn main_reveals() -> Vec<Reveal> {
    [(1, A), (2, B), (3, C), (4, D), (5, D)]
        .into_iter()
        .map(|(n, w)| reveal(REQ, n, w, 0x50 + n))
        .collect()
}

fn main_scenario() -> (Vec<Commit>, Vec<Submission>) {
    let reveals = main_reveals();
    (
        reveals.iter().map(commit_for).collect(),
        reveals.into_iter().map(sub).collect(),
    )
}

/// Asserts the decision of the main scenario: centre node 1, accepted [node 2, node 1, node 3],
/// node 1 selected, and the Python digests.
fn assert_main_agreement(o: &ConsensusOutcome) {
    let r = main_reveals();
    assert_eq!(o.radius_bits, 19);
    assert_eq!(o.best_ball, 3);
    assert_eq!(
        o.accepted,
        vec![accepted(&r[1], 10), accepted(&r[0], 0), accepted(&r[2], 19)]
    );
    assert_eq!(
        o.decision,
        Decision::Agreed {
            center: cm(MAIN_COMMITMENTS[0]),
            selected: Selection {
                node: node(1),
                inference_id: inf(1),
                output_hash: output_hash("answer 1"),
                output: "answer 1".into(),
                index: 1,
            },
            joint_hash: h32(MAIN_JOINT),
            config_digest: Hash32([0; 32]),
            result_digest: h32(MAIN_DIGEST),
        }
    );
}

#[test]
fn main_scenario_by_hand() {
    let reveals = main_reveals();
    for (r, hex) in reveals.iter().zip(MAIN_COMMITMENTS) {
        assert_eq!(r.commitment(), cm(hex), "node {:?}", r.node);
    }
    // Distances as stated in the constants' docs.
    let d = |x: u64, y: u64| emb(x).hamming(&emb(y)).unwrap();
    assert_eq!(
        [
            d(A, B),
            d(A, C),
            d(A, D),
            d(B, C),
            d(B, D),
            d(C, D),
            d(D, D)
        ],
        [10, 19, 20, 29, 30, 39, 0]
    );
    let packed = PackedPoints::new(reveals.iter().map(|r| &r.embedding)).unwrap();
    assert_eq!(packed.ball_counts(19), vec![3, 2, 2, 2, 2]);

    let (commits, subs) = main_scenario();
    let o = evaluate(&REQ, &default_params(), &commits, &subs).unwrap();
    assert_eq!(o.request_id, REQ);
    assert_eq!(o.committed, 5);
    assert_eq!(o.submitted, 5);
    assert_eq!(o.verified, 5);
    assert_eq!(o.threshold, 3);
    assert_eq!(o.rejected, vec![]);
    assert_main_agreement(&o);
    assert_eq!(o.selected().unwrap().output, "answer 1");
    assert_eq!(o.joint_hash(), Some(h32(MAIN_JOINT)));
}

#[test]
fn main_scenario_is_the_same_in_any_order_and_with_duplicates() {
    let (commits, subs) = main_scenario();
    let reference = evaluate(&REQ, &default_params(), &commits, &subs).unwrap();
    let mut c2: Vec<Commit> = commits.iter().rev().cloned().collect();
    c2.extend(commits.iter().take(3).cloned());
    let mut s2: Vec<Submission> = subs.iter().rev().cloned().collect();
    s2.insert(2, subs[4].clone());
    s2.push(subs[0].clone());
    let o = evaluate(&REQ, &default_params(), &c2, &s2).unwrap();
    assert_eq!(o, reference);
    assert_eq!(o.submitted, 5);
}

#[test]
fn outcome_serde_roundtrip() {
    let (commits, subs) = main_scenario();
    let mut subs = subs;
    subs[3].reveal.output.push('!'); // one rejection in the outcome too
    let o = evaluate(&REQ, &default_params(), &commits, &subs).unwrap();
    assert_eq!(o.rejected.len(), 1);
    let json = serde_json::to_string(&o).unwrap();
    assert!(json.contains(MAIN_JOINT), "digests are hex in JSON: {json}");
    assert_eq!(serde_json::from_str::<ConsensusOutcome>(&json).unwrap(), o);
    let bin = postcard::to_allocvec(&o).unwrap();
    assert_eq!(postcard::from_bytes::<ConsensusOutcome>(&bin).unwrap(), o);
}

// ---------------------------------------------------------------------------------------------
// Ties are broken by the lowest commitment, not by tightness.
//
// Five nodes: A (node 1), B (node 2), D and D (nodes 3 and 4, colluders with identical
// embeddings), E (node 5). Frame: sec_percentage 0.4, so threshold = ceil(0.4 × 5) = 2.
//   Balls: A {A, B} = 2, B {A, B} = 2, D {D, D} = 2 (distance 0: the tightest), E {E} = 1.
// Four candidates tie at 2; the centre is the one with the lowest commitment. Salts of nodes 1
// and 2 were searched in Python so that node 2 (B) is lowest among the four in one case and a
// colluder is lowest in the other; nodes 3, 4, 5 have salts [0x60 + n; 32].
// ---------------------------------------------------------------------------------------------

const TIE_REQ: RequestId = RequestId([0xCC; 32]);

fn tie_reveals(salt1: u8, salt2: u8) -> Vec<Reveal> {
    vec![
        reveal(TIE_REQ, 1, A, salt1),
        reveal(TIE_REQ, 2, B, salt2),
        reveal(TIE_REQ, 3, D, 0x63),
        reveal(TIE_REQ, 4, D, 0x64),
        reveal(TIE_REQ, 5, E, 0x65),
    ]
}

fn tie_params() -> ConsensusParams {
    ConsensusParams::from_frame(&SecurityFrame {
        sec_percentage: 0.4,
        ..SecurityFrame::default()
    })
    .unwrap()
}

fn run_tie(reveals: &[Reveal]) -> ConsensusOutcome {
    let commits: Vec<Commit> = reveals.iter().map(commit_for).collect();
    let subs: Vec<Submission> = reveals.iter().cloned().map(sub).collect();
    let o = evaluate(&TIE_REQ, &tie_params(), &commits, &subs).unwrap();
    assert_eq!(o.committed, 5);
    assert_eq!(o.verified, 5);
    assert_eq!(o.radius_bits, 19);
    assert_eq!(o.threshold, 2);
    assert_eq!(o.best_ball, 2);
    let packed = PackedPoints::new(reveals.iter().map(|r| &r.embedding)).unwrap();
    assert_eq!(packed.ball_counts(19), vec![2, 2, 2, 2, 1]);
    o
}

#[test]
fn tie_goes_to_lowest_commitment_even_against_a_tighter_colluder_ball() {
    let r = tie_reveals(0x00, 0x01);
    let expected = [
        "7d47960db10eb85fbecfba3534f34ab6dba7ae9a440d3be32bacb5fbf8125550",
        "1465c73c965de03f1641e9b502ce4adf07848e35096658d8a13e1112a1240e0f",
        "b35fa609d1800e10b54160f8a9a6ba5191a3402ffdedeb53f5bb6d2f198468f0",
        "fe8c79ba2aab0ed44646b97c79d5574b51622780f10acc7d5f5c35d4f523912e",
        "93fe50c6f787ad7d9e54074ceea568d649663bfcd5dba6369507ff93626cda3d",
    ];
    for (r, hex) in r.iter().zip(expected) {
        assert_eq!(r.commitment(), cm(hex));
    }
    // Order: node 2 < node 1 < node 5 < node 3 < node 4. Node 2 (B) is the first of the tied
    // candidates: centre B, ball {A (10), B (0)}. The colluders' ball is tighter and loses.
    let o = run_tie(&r);
    assert_eq!(o.accepted, vec![accepted(&r[1], 0), accepted(&r[0], 10)]);
    assert_eq!(
        o.decision,
        Decision::Agreed {
            center: cm(expected[1]),
            selected: Selection {
                node: node(1),
                inference_id: inf(1),
                output_hash: output_hash("answer 1"),
                output: "answer 1".into(),
                index: 1,
            },
            joint_hash: h32("53cf8bd9cf9e7974bf06f6556762559dc87c1b0beaab3596f59f7514acfb7150"),
            config_digest: Hash32([0; 32]),
            result_digest: h32("5924e191d56aff35ab3ce74d56bf233b6ccbee17915d569d5c1bf33e7de8fa8f"),
        }
    );
}

#[test]
fn tie_goes_to_lowest_commitment_when_it_is_a_colluder() {
    let r = tie_reveals(0x03, 0x00);
    assert_eq!(
        r[0].commitment(),
        cm("e65bc3a830091cc3cae3cab73e99afd5b129dec03a0e91c9473f91e1b5451949")
    );
    assert_eq!(
        r[1].commitment(),
        cm("dcfcc89cb54e9f06e0f95e355c8ad7016e83bad861e129c8de6f1f00b8059ef6")
    );
    // Order: node 5 (count 1) < node 3 < node 2 < node 1 < node 4: node 3 is the first tied
    // candidate; centre D, ball {node 3, node 4}, both at distance 0.
    let o = run_tie(&r);
    assert_eq!(o.accepted, vec![accepted(&r[2], 0), accepted(&r[3], 0)]);
    assert_eq!(
        o.decision,
        Decision::Agreed {
            center: cm("b35fa609d1800e10b54160f8a9a6ba5191a3402ffdedeb53f5bb6d2f198468f0"),
            selected: Selection {
                node: node(4),
                inference_id: inf(4),
                output_hash: output_hash("answer 4"),
                output: "answer 4".into(),
                index: 1,
            },
            joint_hash: h32("8b228438dd5017c1b873b1ca209475fc69f32a60ce01e49661a82c2c91893148"),
            config_digest: Hash32([0; 32]),
            result_digest: h32("bc02a7baf6e8852b32d8c5a542b0f483f2a5be6346089a77cedad84c92663c75"),
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Rejections, each on top of the main scenario. Rejecting a colluder (node 4 or 5) leaves A's
// ball {A, B, C} = 3 >= 3 intact, so the decision and every digest stay those of the main
// scenario; rejecting a member of A's ball leaves at most 2 in any ball: BelowThreshold{2, 3}.
// ---------------------------------------------------------------------------------------------

fn eval(commits: &[Commit], subs: &[Submission]) -> ConsensusOutcome {
    evaluate(&REQ, &default_params(), commits, subs).unwrap()
}

fn below(best: u32, needed: u32) -> Decision {
    Decision::Failed(FailureReason::BelowThreshold { best, needed })
}

#[test]
fn commitment_mismatch() {
    let (commits, mut subs) = main_scenario();
    subs[3].reveal.output = "answer 4, edited after committing".into();
    let o = eval(&commits, &subs);
    assert_eq!(
        o.rejected,
        vec![rejection(4, RejectReason::CommitmentMismatch)]
    );
    assert_eq!((o.committed, o.submitted, o.verified), (5, 5, 4));
    assert_main_agreement(&o);

    // A changed salt or embedding does not open the commitment either; rejecting node 2 (a
    // member of A's ball) leaves A {A, C} = 2, D {D, D} = 2 < 3.
    let (commits, mut subs) = main_scenario();
    subs[1].reveal.salt.0[0] ^= 1;
    subs[2].reveal.embedding = emb(C ^ 1);
    subs[2].reembedding = Some(emb(C ^ 1));
    let o = eval(&commits, &subs);
    assert_eq!(
        o.rejected,
        vec![
            rejection(2, RejectReason::CommitmentMismatch),
            rejection(3, RejectReason::CommitmentMismatch)
        ]
    );
    assert_eq!(o.verified, 3);
    // A {A} = 1 now (B and C rejected), D {D, D} = 2.
    assert_eq!(o.best_ball, 2);
    assert_eq!(o.decision, below(2, 3));
    assert!(o.accepted.is_empty());
    assert_eq!(o.radius_bits, 19);
}

#[test]
fn embedding_beyond_tolerance() {
    // Tolerance ceil(64 / 48) = 2 bits. Node 2's re-embedding is 2 bits off (accepted, the
    // boundary), node 3's is 3 bits off (rejected), node 5 was not re-embedded (rejected with
    // distance u32::MAX).
    let (commits, mut subs) = main_scenario();
    subs[1].reembedding = Some(emb(B ^ (0b11 << 62)));
    subs[2].reembedding = Some(emb(C ^ 0b111));
    subs[4].reembedding = None;
    let o = eval(&commits, &subs);
    assert_eq!(
        o.rejected,
        vec![
            rejection(
                3,
                RejectReason::EmbeddingBeyondTolerance {
                    distance: 3,
                    tolerance: 2
                }
            ),
            rejection(
                5,
                RejectReason::EmbeddingBeyondTolerance {
                    distance: u32::MAX,
                    tolerance: 2
                }
            ),
        ]
    );
    assert_eq!(o.verified, 3);
    // Verified A, B, D: A {A, B} = 2, D {D} = 1.
    assert_eq!(o.decision, below(2, 3));

    // With an explicit tolerance of 3 bits node 3 passes; only node 5 is rejected, which is
    // outside A's ball, so the main decision holds (the re-embedding enters no digest).
    let params = default_params().with_reembed_tolerance(3);
    let o = evaluate(&REQ, &params, &commits, &subs).unwrap();
    assert_eq!(
        o.rejected,
        vec![rejection(
            5,
            RejectReason::EmbeddingBeyondTolerance {
                distance: u32::MAX,
                tolerance: 3
            }
        )]
    );
    assert_main_agreement(&o);
}

#[test]
fn dimension_mismatch_with_the_reembedding() {
    // The verifier's model gives 128 bits, node 5 revealed 64.
    let (commits, mut subs) = main_scenario();
    subs[4].reembedding = Some(BinaryEmbedding::from_words(128, vec![D, 0]).unwrap());
    let o = eval(&commits, &subs);
    assert_eq!(
        o.rejected,
        vec![rejection(
            5,
            RejectReason::DimensionMismatch {
                expected: 128,
                actual: 64
            }
        )]
    );
    assert_main_agreement(&o);
}

/// Main scenario where node 5 committed, revealed and was re-embedded with 128 bits.
fn mixed_dims(salt5: u8) -> (Vec<Commit>, Vec<Submission>, Reveal) {
    let (mut commits, mut subs) = main_scenario();
    let r5 = reveal_with(
        REQ,
        5,
        BinaryEmbedding::from_words(128, vec![D, 0]).unwrap(),
        salt5,
    );
    commits[4] = commit_for(&r5);
    subs[4] = sub(r5.clone());
    (commits, subs, r5)
}

#[test]
fn dimension_mismatch_between_verified_reveals() {
    // Salt 0x00: node 5's commitment (Python) is the highest, so the lowest verified reveal
    // (node 2, 64 bits) fixes the dimension and node 5 is rejected.
    let (commits, subs, r5) = mixed_dims(0x00);
    assert_eq!(
        r5.commitment(),
        cm("db6d619d5be1fa6a2e68374da6b67d5297937fa7ec9819ea37c63fab7e24f4b6")
    );
    let o = eval(&commits, &subs);
    assert_eq!(
        o.rejected,
        vec![rejection(
            5,
            RejectReason::DimensionMismatch {
                expected: 64,
                actual: 128
            }
        )]
    );
    assert_eq!(o.verified, 4);
    assert_main_agreement(&o);

    // Salt 0x03: node 5's commitment is the lowest: 128 bits is the dimension and the four
    // 64-bit reveals are rejected (the documented rule: first reveal by commitment fixes it).
    // One point left: radius floor(0.3 × 128) = 38, ball 1 < 3.
    let (commits, subs, r5) = mixed_dims(0x03);
    assert_eq!(
        r5.commitment(),
        cm("6f4381324108c64eefc63f73e4ed8d2aab1a680dfba2729ddd4b6000c1a08fd9")
    );
    let o = eval(&commits, &subs);
    let dm = RejectReason::DimensionMismatch {
        expected: 128,
        actual: 64,
    };
    assert_eq!(
        o.rejected,
        (1..=4)
            .map(|n| rejection(n, dm.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!((o.verified, o.radius_bits, o.best_ball), (1, 38, 1));
    assert_eq!(o.decision, below(1, 3));
}

#[test]
fn embedding_model_mismatch() {
    let (commits, mut subs) = main_scenario();
    subs[3].reveal.embedding_model = "other/model".into();
    let o = eval(&commits, &subs);
    assert_eq!(
        o.rejected,
        vec![rejection(
            4,
            RejectReason::EmbeddingModelMismatch {
                expected: DEFAULT_EMBEDDING_MODEL.into(),
                actual: "other/model".into()
            }
        )]
    );
    assert_main_agreement(&o);

    // The frame's model is what counts: a frame naming another model rejects everyone.
    let params = ConsensusParams::from_frame(&SecurityFrame {
        embedding_model: "other/model".into(),
        ..SecurityFrame::default()
    })
    .unwrap();
    let (commits, subs) = main_scenario();
    let o = evaluate(&REQ, &params, &commits, &subs).unwrap();
    assert_eq!(o.rejected.len(), 5);
    assert_eq!(o.verified, 0);
    assert_eq!(
        o.decision,
        Decision::Failed(FailureReason::NoVerifiedReveals)
    );
}

#[test]
fn equivocation() {
    // Node 4 commits twice (a second answer), then reveals the first.
    let (mut commits, subs) = main_scenario();
    let mut other = main_reveals()[3].clone();
    other.output = "answer 4 (second thoughts)".into();
    commits.push(commit_for(&other));
    let (c1, c2) = (commits[3].commitment, other.commitment());
    let o = eval(&commits, &subs);
    assert_eq!(o.committed, 5, "an equivocating node is one committed node");
    assert_eq!(
        o.rejected,
        vec![rejection(
            4,
            RejectReason::Equivocation {
                first: c1.min(c2),
                second: c1.max(c2)
            }
        )]
    );
    assert_main_agreement(&o);

    // An equivocating member of A's ball: node 1. Left: B {B} = 1, C {C} = 1, D {D, D} = 2.
    let (mut commits, subs) = main_scenario();
    let mut other = main_reveals()[0].clone();
    other.salt = Salt([0xEE; 32]);
    commits.push(commit_for(&other));
    let (c1, c2) = (commits[0].commitment, other.commitment());
    let o = eval(&commits, &subs);
    assert_eq!(
        o.rejected,
        vec![rejection(
            1,
            RejectReason::Equivocation {
                first: c1.min(c2),
                second: c1.max(c2)
            }
        )]
    );
    assert_eq!(o.decision, below(2, 3));
}

#[test]
fn duplicate_inference_id() {
    // Node 5 commits under node 4's inference id (copied from node 4's commit). Ids are scoped
    // by node, so nobody is rejected: the copy cannot knock node 4 out.
    let (mut commits, mut subs) = main_scenario();
    let mut r5 = main_reveals()[4].clone();
    r5.inference_id = inf(4);
    commits[4] = commit_for(&r5);
    subs[4] = sub(r5);
    let o = eval(&commits, &subs);
    assert_eq!(o.rejected, vec![]);
    assert_eq!(o.verified, 5);
    assert_eq!(o.best_ball, 3);
    let members: Vec<NodeId> = o.accepted.iter().map(|a| a.node).collect();
    let mut expected: Vec<NodeId> = vec![node(1), node(2), node(3)];
    expected.sort_by_key(|n| {
        o.accepted
            .iter()
            .find(|a| a.node == *n)
            .map(|a| a.commitment)
            .expect("member")
    });
    assert_eq!(members, expected);

    // Node 4 reveals twice (its opening and another answer): only one reveal per node, so
    // both are rejected; the other one does not open the commitment either.
    let (commits, mut subs) = main_scenario();
    let mut second = subs[3].clone();
    second.reveal.output = "answer 4, again".into();
    subs.push(second);
    let o = eval(&commits, &subs);
    assert_eq!(o.submitted, 6);
    assert_eq!(
        o.rejected,
        vec![
            rejection(4, RejectReason::CommitmentMismatch),
            rejection(4, RejectReason::DuplicateInferenceId),
        ]
    );
    assert_main_agreement(&o);

    // The same commitment sent under two inference ids.
    let (mut commits, subs) = main_scenario();
    let mut copy = commits[3].clone();
    copy.inference_id = InferenceId([0x99; 32]);
    commits.push(copy);
    let o = eval(&commits, &subs);
    assert_eq!(
        o.rejected,
        vec![rejection(4, RejectReason::DuplicateInferenceId)]
    );
    assert_main_agreement(&o);
}

#[test]
fn missing_commit() {
    // Node 6 reveals without having committed; node 4 reveals under another inference id than
    // the one it committed.
    let (commits, mut subs) = main_scenario();
    subs.push(sub(reveal(REQ, 6, A, 0x56)));
    let mut r4 = main_reveals()[3].clone();
    r4.inference_id = InferenceId([0x99; 32]);
    subs[3] = sub(r4);
    let o = eval(&commits, &subs);
    assert_eq!((o.committed, o.submitted, o.verified), (5, 6, 4));
    assert_eq!(
        o.rejected,
        vec![
            Rejection {
                node: node(4),
                inference_id: InferenceId([0x99; 32]),
                reason: RejectReason::MissingCommit
            },
            rejection(6, RejectReason::MissingCommit),
        ]
    );
    assert_main_agreement(&o);
}

#[test]
fn request_mismatch() {
    // Node 6 sends a reveal for another request; node 4, which answered both requests, also
    // sends its reveal of the other request. Reveals of another request are rejected and do
    // not count as a second reveal of this one: node 4's opening here is still verified.
    let (commits, mut subs) = main_scenario();
    subs.push(sub(reveal(OTHER_REQ, 6, A, 0x56)));
    let mut elsewhere = reveal(OTHER_REQ, 4, E, 0x74);
    elsewhere.inference_id = InferenceId([0x74; 32]);
    subs.push(sub(elsewhere));
    let o = eval(&commits, &subs);
    assert_eq!(
        o.rejected,
        vec![
            Rejection {
                node: node(4),
                inference_id: InferenceId([0x74; 32]),
                reason: RejectReason::RequestMismatch
            },
            rejection(6, RejectReason::RequestMismatch),
        ]
    );
    assert_eq!((o.committed, o.submitted, o.verified), (5, 7, 5));
    assert_main_agreement(&o);

    // Commits of another request are ignored (neither counted nor equivocation).
    let (mut commits, subs) = main_scenario();
    let mut foreign = commits[0].clone();
    foreign.request_id = OTHER_REQ;
    foreign.commitment = Commitment([0; 32]);
    commits.push(foreign);
    commits.push(commit_for(&reveal(OTHER_REQ, 7, A, 0x57)));
    let o = eval(&commits, &subs);
    assert_eq!(o.committed, 5);
    assert_eq!(o.rejected, vec![]);
    assert_main_agreement(&o);
}

#[test]
fn unrevealed_commits_count_against_the_quorum() {
    // Nodes 6 and 7 commit and never reveal: committed 7, threshold ceil(0.6 × 7) = 5 > 3.
    let (mut commits, subs) = main_scenario();
    commits.push(commit_for(&reveal(REQ, 6, A, 0x56)));
    commits.push(commit_for(&reveal(REQ, 7, A, 0x57)));
    let o = eval(&commits, &subs);
    assert_eq!((o.committed, o.submitted, o.verified), (7, 5, 5));
    assert_eq!(o.threshold, 5);
    assert_eq!(o.best_ball, 3);
    assert_eq!(o.rejected, vec![]);
    assert!(o.accepted.is_empty());
    assert_eq!(o.decision, below(3, 5));
    assert_eq!(o.selected(), None);
    assert_eq!(o.joint_hash(), None);

    // One unrevealed commit: threshold ceil(0.6 × 6) = 4 > 3, still short.
    let o = eval(&commits[..6], &subs);
    assert_eq!(o.threshold, 4);
    assert_eq!(o.decision, below(3, 4));

    // A committed node whose reveal is rejected counts as well: nodes 4 and 5 rejected,
    // committed 5, threshold 3, A's ball 3: agreed.
    let (commits, mut subs) = main_scenario();
    subs[3].reveal.salt = Salt([0; 32]);
    subs[4].reveal.salt = Salt([0; 32]);
    let o = eval(&commits, &subs);
    assert_eq!((o.committed, o.verified, o.threshold), (5, 3, 3));
    assert_main_agreement(&o);
}

#[test]
fn no_commits() {
    let (commits, subs) = main_scenario();
    for commits in [
        vec![],
        commits
            .iter()
            .map(|c| Commit {
                request_id: OTHER_REQ,
                ..c.clone()
            })
            .collect(),
    ] {
        let o = eval(&commits, &subs);
        assert_eq!((o.committed, o.submitted, o.verified), (0, 5, 0));
        assert_eq!((o.threshold, o.radius_bits, o.best_ball), (1, 0, 0));
        assert_eq!(
            o.rejected,
            (1..=5)
                .map(|n| rejection(n, RejectReason::MissingCommit))
                .collect::<Vec<_>>()
        );
        assert!(o.accepted.is_empty());
        assert_eq!(o.decision, Decision::Failed(FailureReason::NoCommits));
    }
    let o = eval(&[], &[]);
    assert_eq!(o.decision, Decision::Failed(FailureReason::NoCommits));
    assert_eq!((o.committed, o.submitted), (0, 0));
}

#[test]
fn no_verified_reveals() {
    let (commits, subs) = main_scenario();
    let o = eval(&commits, &[]);
    assert_eq!((o.committed, o.submitted, o.verified), (5, 0, 0));
    assert_eq!((o.threshold, o.radius_bits, o.best_ball), (3, 0, 0));
    assert_eq!(
        o.decision,
        Decision::Failed(FailureReason::NoVerifiedReveals)
    );

    let mut bad = subs;
    for s in &mut bad {
        s.reveal.output.push('?');
    }
    let o = eval(&commits, &bad);
    assert_eq!(o.verified, 0);
    assert_eq!(
        o.rejected,
        (1..=5)
            .map(|n| rejection(n, RejectReason::CommitmentMismatch))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        o.decision,
        Decision::Failed(FailureReason::NoVerifiedReveals)
    );
}

#[test]
fn same_reveal_with_different_reembeddings_is_order_independent() {
    // The verifier hands over the same reveal twice with two different re-embeddings of its
    // output (one within tolerance, one beyond it, one missing). Whatever the order, the
    // outcome must be the same, and it must be the outcome of one of the two re-embeddings
    // given alone (the reveal is one reveal, not two).
    let (commits, subs) = main_scenario();
    let variants = [Some(emb(C ^ 0b1)), Some(emb(C ^ 0b1111)), None];
    let with = |x: usize, y: Option<usize>| {
        let mut s = subs.clone();
        s[2].reembedding = variants[x].clone();
        if let Some(y) = y {
            let mut dup = subs[2].clone();
            dup.reembedding = variants[y].clone();
            s.push(dup);
        }
        eval(&commits, &s)
    };
    let alone: Vec<ConsensusOutcome> = (0..3).map(|x| with(x, None)).collect();
    assert_main_agreement(&alone[0]);
    assert_eq!(alone[1].decision, below(2, 3));
    assert_eq!(alone[2].decision, below(2, 3));
    for (x, y) in [(0, 1), (0, 2), (1, 2)] {
        let xy = with(x, Some(y));
        let yx = with(y, Some(x));
        assert_eq!(
            xy, yx,
            "re-embeddings {x} and {y}: order changed the outcome"
        );
        assert_eq!(xy.submitted, 5);
        assert!(
            xy == alone[x] || xy == alone[y],
            "re-embeddings {x} and {y}: {xy:?}"
        );
    }
}

#[test]
fn copies_of_a_reveal_are_one_reveal_whatever_lies_between_them() {
    // The embedding model is not part of the commitment, so node 4's reveal and a variant of it
    // naming another model share node, inference id and commitment. Two copies of the reveal
    // with the variant between them are still one reveal: node 4 revealed twice (two distinct
    // reveals), the variant names the wrong model, and the outcome is the same in any order.
    let (commits, subs) = main_scenario();
    let mut variant = subs[3].clone();
    variant.reveal.embedding_model = "other/model".into();
    let expected_rejections = vec![
        rejection(4, RejectReason::DuplicateInferenceId),
        rejection(
            4,
            RejectReason::EmbeddingModelMismatch {
                expected: DEFAULT_EMBEDDING_MODEL.into(),
                actual: "other/model".into(),
            },
        ),
    ];
    for tail in [
        [subs[3].clone(), variant.clone(), subs[3].clone()],
        [subs[3].clone(), subs[3].clone(), variant.clone()],
        [variant.clone(), subs[3].clone(), subs[3].clone()],
    ] {
        let mut s = subs.clone();
        s.remove(3);
        s.extend(tail);
        let o = eval(&commits, &s);
        assert_eq!(o.submitted, 6, "{:?}", o.rejected);
        assert_eq!(o.rejected, expected_rejections);
        assert_eq!(o.verified, 4);
        assert_main_agreement(&o);
    }
}
