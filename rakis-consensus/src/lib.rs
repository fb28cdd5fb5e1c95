//! # rakis-consensus
//!
//! The consensus math of Rakis: pure Rust, no I/O, no async, no clock. The node
//! (`rakis-core`), the simulator and any outside verifier call it.
//!
//! A request's nodes each answer it, embed their answer, quantize the embedding to bits and
//! broadcast a [`Commit`]. After the deadline they broadcast a [`Reveal`]. Every node then,
//! independently, runs [`evaluate`]: it checks each reveal against its commitment and against
//! its own re-embedding of the output, finds the largest Hamming ball of verified embeddings,
//! and, when the ball is large enough, selects one output with a seed nobody can grind.
//!
//! ## Worked example
//!
//! ```
//! use rakis_consensus::*;
//!
//! let request = RequestId([7; 32]);
//! let params = ConsensusParams::from_frame(&SecurityFrame::default()).unwrap();
//! let model = &params.embedding_model;
//!
//! // Three nodes answer; two agree (nearly identical embeddings), one is off-topic.
//! let answers = [
//!     (1u8, "Paris is the capital of France.", [1.0f32; 64]),
//!     (2u8, "The capital of France is Paris.", {
//!         let mut v = [1.0f32; 64];
//!         v[0] = -1.0;
//!         v
//!     }),
//!     (3u8, "Bananas are yellow.", [-1.0f32; 64]),
//! ];
//! let mut commits = Vec::new();
//! let mut submissions = Vec::new();
//! for (n, text, vector) in answers {
//!     let embedding = BinaryEmbedding::quantize(&vector).unwrap();
//!     let reveal = Reveal {
//!         request_id: request,
//!         node: NodeId([n; 33]),
//!         inference_id: InferenceId([n; 32]),
//!         output: text.to_string(),
//!         embedding: embedding.clone(),
//!         salt: Salt([n.wrapping_mul(31); 32]),
//!         embedding_model: model.clone(),
//!     };
//!     commits.push(Commit {
//!         request_id: request,
//!         node: reveal.node,
//!         inference_id: reveal.inference_id,
//!         commitment: reveal.commitment(),
//!     });
//!     // A verifier re-embeds the output itself; here it gets the same bits.
//!     submissions.push(Submission { reveal, reembedding: Some(embedding), sampling_fault: None });
//! }
//!
//! let outcome = evaluate(&request, &params, &commits, &submissions).unwrap();
//! assert_eq!(outcome.committed, 3);
//! assert_eq!(outcome.radius_bits, 19); // floor(0.30 × 64)
//! assert_eq!(outcome.threshold, 2); // ceil(0.6 × 3)
//! assert_eq!(outcome.accepted.len(), 2);
//! let selected = outcome.selected().unwrap();
//! assert!(selected.output.contains("Paris"));
//! ```
//!
//! ## Specification
//!
//! Everything below is normative: another implementation that follows it computes the same
//! digests and the same outcome. SHA-256 is the only hash. Integers are big-endian unless
//! stated otherwise. Every digest starts with an ASCII domain tag followed by one `0x00` byte.
//!
//! ### Binary embedding
//! `dim` bits; bit `i` = 1 iff float value `i` > 0 (NaN and ±∞ are rejected; `-0.0` and `0.0`
//! give 0). Packed into `ceil(dim/64)` `u64` words, bit `i` at bit `i % 64` of word `i / 64`,
//! unused high bits zero. *Canonical bytes*: the words little-endian, cut to `ceil(dim/8)`
//! bytes (bit `i` at bit `i % 8` of byte `i / 8`). Distance is Hamming distance (popcount of
//! XOR); normalized distance divides by `dim`. Optional Matryoshka truncation keeps the first
//! `k` float values before quantizing.
//!
//! ### Commitment ([`commitment`])
//! ```text
//! SHA-256("rakis/commit/v1" ‖ 0x00 ‖ request_id[32] ‖ node_id[33] ‖ inference_id[32]
//!         ‖ SHA-256(output UTF-8)[32] ‖ dim:u32 ‖ canonical_bytes[ceil(dim/8)] ‖ salt[32])
//! ```
//! `node_id` is the compressed SEC1 secp256k1 public key; `salt` is 32 random bytes chosen by
//! the committer. The commitment binds output, embedding, request, node and inference id.
//!
//! ### Verification of a reveal ([`evaluate`])
//! A reveal is verified when: its request id matches; its node committed exactly one
//! commitment for the request (two different ones = equivocation); the reveal carries the
//! committed inference id (ids are scoped by node: another committer using the same id rejects
//! nobody); it names the frame's embedding model; it opens the commitment; the node revealed
//! only once; and its embedding is within `tolerance` bits of the verifier's own
//! re-embedding of the output ([`check_reembedding`]; default `ceil(dim/48)`, i.e. 8 of 384).
//! Verified embeddings must share one dimension.
//!
//! ### Statements ([`statement`])
//! ```text
//! network = SHA-256("rakis/network/v1" ‖ 0x00 ‖ network_id UTF-8)
//! commit  = SHA-256("rakis/commit-statement/v1" ‖ 0x00 ‖ network ‖ request_id ‖ node_id
//!                   ‖ inference_id ‖ commitment)
//! reveal  = SHA-256("rakis/reveal-statement/v1" ‖ 0x00 ‖ network ‖ request_id ‖ node_id
//!                   ‖ inference_id ‖ SHA-256(output) ‖ dim:u32 ‖ canonical_bytes ‖ salt)
//! ```
//! A committer signs both (EIP-191 over the digest, as the result digest). Two commit
//! statements of one node, request and network that differ prove equivocation; a reveal
//! statement whose fields do not hash to the node's signed commitment proves a false reveal.
//!
//! ### Integer parameters ([`ConsensusParams`])
//! `distance_ppm = round(sec_distance × 10⁶)`, `percentage_ppm = round(sec_percentage × 10⁶)`;
//! `radius = floor(distance_ppm × dim / 10⁶)`;
//! `threshold = max(1, ceil(percentage_ppm × committed / 10⁶))`, where `committed` counts
//! distinct nodes that committed (unrevealed and rejected commits count against the quorum).
//!
//! ### Clustering
//! Verified reveals are ordered by commitment bytes, ascending. For each one, count the verified
//! embeddings within `radius` (itself included). The centre is the first with the highest
//! count. Ties are *not* broken by tightness: colluders with identical answers form the
//! tightest ball and would take the centre. Consensus is reached when the count is `>=
//! threshold`; the accepted set is the ball's members.
//!
//! ### Joint hash, selection, result digest
//! ```text
//! joint  = SHA-256("rakis/accepted/v1" ‖ 0x00 ‖ request_id ‖ n:u32 ‖ commitment_1 ‖ … ‖ commitment_n)
//! seed   = SHA-256("rakis/select/v1"   ‖ 0x00 ‖ request_id ‖ n:u32 ‖ (commitment_i ‖ salt_i) …)
//! index  = (u64_be(seed[0..8]) × n) >> 64
//! payees = SHA-256(node_1 ‖ … ‖ node_m)      distinct accepted node ids, ascending
//! digest = SHA-256("rakis/result/v2"   ‖ 0x00 ‖ request_id ‖ SHA-256(selected output) ‖ joint
//!                  ‖ payees ‖ config)
//! ```
//! `config` is [`ConsensusParams::config_digest`]: what the request's rules are bound to (the
//! chain, contract and member set, computed by `rakis-core`; zero for none). A signature over
//! the digest thus names the nodes a chain pays and counts only under that configuration.
//! with the accepted set sorted by commitment. The seed depends on every accepted salt, which
//! each committer fixed before seeing anyone else's, so no participant can steer the index by
//! choosing ids. **Residual risk:** the last node to reveal sees the others' salts first and
//! may *withhold* its reveal if the resulting choice does not suit it. Withholding removes the
//! node from the accepted set (its commit still counts against the quorum), so it buys at most
//! one re-draw per colluding committer and costs it its reward.
//!
//! **With a committee** ([`ConsensusParams::selection_order`], the committee in its draw order):
//! the selected output is the accepted reveal whose node comes first in that order, and
//! `index` its position in the accepted set. The order is fixed by the epoch, the request and
//! its beacon before anyone commits, so neither salts nor withheld reveals move it: withholding
//! only removes the withholder.
//!
//! ### Serialization
//! All public types implement serde. Fixed-size values (ids, digests, salts) are lowercase hex
//! in human-readable formats and raw bytes in binary ones; embeddings are `{dim, bits}` with
//! `bits` the canonical bytes.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rustdoc::broken_intra_doc_links
)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod cluster;
pub mod commit;
pub mod embedding;
pub mod error;
pub mod frame;
pub mod hashing;
pub mod outcome;
pub mod sampling;
pub mod statement;

pub use cluster::PackedPoints;
pub use commit::{
    check_reembedding, commitment, commitment_with_hash, default_reembed_tolerance, verify_reveal,
    Commit, RejectReason, Reveal, COMMIT_TAG,
};
pub use embedding::{hamming_words, radius_bits, BinaryEmbedding, MAX_DIMENSION};
pub use error::ConsensusError;
pub use frame::{
    ConsensusParams, SecurityFrame, DEFAULT_EMBEDDING_MODEL, DEFAULT_MAX_TIME_MS, DEFAULT_QUORUM,
    DEFAULT_SEC_DISTANCE, DEFAULT_SEC_PERCENTAGE,
};
pub use hashing::{
    output_hash, sha256, Commitment, Hash32, HexBytes, InferenceId, NodeId, RequestId, Salt,
};
pub use outcome::{
    evaluate, joint_hash, payees, payees_digest, result_digest, selection_index, AcceptedReveal,
    ConsensusOutcome, Decision, FailureReason, Rejection, Selection, Submission,
};
pub use statement::{commit_statement, network_digest, RevealStatement};
