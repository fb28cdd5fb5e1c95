//! Property tests of the consensus math: order independence, the geometry of the accepted set,
//! honest-majority guarantees, the embedding and kernel primitives, and robustness on garbage.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use rakis_consensus::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const REQ: RequestId = RequestId([0xAA; 32]);
const OTHER_REQ: RequestId = RequestId([0xBB; 32]);

/// Small deterministic generator (xorshift64*) for choices derived from one proptest seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for c in out.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
    fn bits(&mut self, dim: usize) -> Vec<bool> {
        (0..dim).map(|_| self.next() & 1 == 1).collect()
    }
}

/// `base` with exactly `k` distinct positions flipped.
fn flip(base: &[bool], k: usize, rng: &mut Rng) -> Vec<bool> {
    let mut idx: Vec<usize> = (0..base.len()).collect();
    let mut out = base.to_vec();
    for t in 0..k.min(base.len()) {
        let j = t + rng.below(base.len() - t);
        idx.swap(t, j);
        out[idx[t]] = !out[idx[t]];
    }
    out
}

fn to_emb(bits: &[bool]) -> BinaryEmbedding {
    BinaryEmbedding::from_bits(bits).unwrap()
}

fn naive_hamming(a: &[bool], b: &[bool]) -> u32 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as u32
}

fn emb_bits(e: &BinaryEmbedding) -> Vec<bool> {
    (0..e.dim() as usize).map(|i| e.bit(i).unwrap()).collect()
}

fn commit_for(r: &Reveal) -> Commit {
    Commit {
        request_id: r.request_id,
        node: r.node,
        inference_id: r.inference_id,
        commitment: r.commitment(),
    }
}

fn sub(r: Reveal) -> Submission {
    let own = r.embedding.clone();
    Submission {
        reveal: r,
        reembedding: Some(own),
        sampling_fault: None,
    }
}

fn params(distance_ppm: u32, percentage_ppm: u32) -> ConsensusParams {
    ConsensusParams {
        distance_ppm,
        percentage_ppm,
        embedding_model: DEFAULT_EMBEDDING_MODEL.to_string(),
        reembed_tolerance_bits: None,
        committee_size: None,
        selection_order: None,
        config_digest: Hash32([0; 32]),
    }
}

fn kind(r: &RejectReason) -> &'static str {
    match r {
        RejectReason::CommitmentMismatch => "CommitmentMismatch",
        RejectReason::EmbeddingBeyondTolerance { .. } => "EmbeddingBeyondTolerance",
        RejectReason::DimensionMismatch { .. } => "DimensionMismatch",
        RejectReason::EmbeddingModelMismatch { .. } => "EmbeddingModelMismatch",
        RejectReason::Equivocation { .. } => "Equivocation",
        RejectReason::DuplicateInferenceId => "DuplicateInferenceId",
        RejectReason::MissingCommit => "MissingCommit",
        RejectReason::RequestMismatch => "RequestMismatch",
        _ => "other",
    }
}

/// The same commits and submissions, shuffled, with some of them repeated.
fn shuffled_with_duplicates(
    commits: &[Commit],
    subs: &[Submission],
    seed: u64,
) -> (Vec<Commit>, Vec<Submission>) {
    let mut rng = Rng::new(seed);
    let mut c = commits.to_vec();
    let mut s = subs.to_vec();
    for _ in 0..rng.below(4) {
        if !commits.is_empty() {
            c.push(commits[rng.below(commits.len())].clone());
        }
        if !subs.is_empty() {
            s.push(subs[rng.below(subs.len())].clone());
        }
    }
    rng.shuffle(&mut c);
    rng.shuffle(&mut s);
    (c, s)
}

// ---------------------------------------------------------------------------------------------
// Scenarios with a known answer: nodes around a base point, each with at most one fault whose
// effect on verification is known in advance.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// Commits, never reveals.
    Unrevealed,
    /// Reveals another output than it committed to.
    Tampered,
    /// Names another embedding model.
    WrongModel,
    /// The verifier has no re-embedding.
    NoReembedding,
    /// The re-embedding is `tolerance + 1` bits away.
    ReembedFar,
    /// The re-embedding is exactly `tolerance` bits away (still verified).
    ReembedNear,
    /// The re-embedding has another dimension.
    ReembedDim,
    /// Two commitments.
    Equivocate,
    /// Reveals without committing.
    NoCommit,
    /// Reveals its opening and another answer.
    DoubleReveal,
    /// Reveals under another inference id than it committed.
    WrongInferenceId,
    /// Also sends a reveal for another request (its reveal here stays valid).
    OtherRequest,
    /// Uses the previous node's inference id when that node is fault-free (both rejected).
    ShareId,
    /// Commits to and reveals an embedding of dimension `dim + 64`, re-embedded alike.
    OtherDim,
}

fn arb_fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        12 => Just(Fault::None),
        1 => Just(Fault::Unrevealed),
        1 => Just(Fault::Tampered),
        1 => Just(Fault::WrongModel),
        1 => Just(Fault::NoReembedding),
        1 => Just(Fault::ReembedFar),
        1 => Just(Fault::ReembedNear),
        1 => Just(Fault::ReembedDim),
        1 => Just(Fault::Equivocate),
        1 => Just(Fault::NoCommit),
        1 => Just(Fault::DoubleReveal),
        1 => Just(Fault::WrongInferenceId),
        1 => Just(Fault::OtherRequest),
        1 => Just(Fault::ShareId),
        1 => Just(Fault::OtherDim),
    ]
}

#[derive(Clone, Debug)]
struct NodeSpec {
    /// Near the base point (up to dim/8 flips) or anywhere.
    near: bool,
    /// Share of the maximum number of flips, per mille.
    flips_permille: u32,
    fault: Fault,
}

#[derive(Clone, Debug)]
struct ScenarioSpec {
    dim: usize,
    distance_ppm: u32,
    percentage_ppm: u32,
    nodes: Vec<NodeSpec>,
    seed: u64,
}

fn arb_scenario() -> impl Strategy<Value = ScenarioSpec> {
    let node = (prop::bool::weighted(0.7), 0u32..=1000, arb_fault()).prop_map(
        |(near, flips_permille, fault)| NodeSpec {
            near,
            flips_permille,
            fault,
        },
    );
    (
        8usize..=300,
        50_000u32..=450_000,
        100_000u32..=1_000_000,
        prop::collection::vec(node, 0..=12),
        any::<u64>(),
    )
        .prop_map(
            |(dim, distance_ppm, percentage_ppm, nodes, seed)| ScenarioSpec {
                dim,
                distance_ppm,
                percentage_ppm,
                nodes,
                seed,
            },
        )
}

/// A scenario turned into inputs, with what `evaluate` must conclude.
struct Built {
    params: ConsensusParams,
    commits: Vec<Commit>,
    subs: Vec<Submission>,
    committed: u32,
    submitted: u32,
    /// The reveals that must be verified.
    valid: Vec<Reveal>,
    /// Expected rejections: node, inference id, kind of reason.
    rejections: Vec<(NodeId, InferenceId, &'static str)>,
}

fn build(spec: &ScenarioSpec) -> Built {
    let mut rng = Rng::new(spec.seed);
    let params = params(spec.distance_ppm, spec.percentage_ppm);
    let dim = spec.dim;
    let base = rng.bits(dim);
    let tolerance = default_reembed_tolerance(dim as u32) as usize;
    let mut commits = Vec::new();
    let mut subs = Vec::new();
    let mut committed = 0;
    let mut candidates: Vec<Reveal> = Vec::new();
    let mut rejections = Vec::new();
    let mut ids: Vec<InferenceId> = Vec::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let max = if n.near { dim / 8 } else { dim };
        let k = max * n.flips_permille as usize / 1000;
        let bits = if n.fault == Fault::OtherDim {
            rng.bits(dim + 64)
        } else {
            flip(&base, k, &mut rng)
        };
        let node = NodeId([i as u8 + 1; 33]);
        let shares = n.fault == Fault::ShareId && i > 0 && spec.nodes[i - 1].fault == Fault::None;
        let inference_id = if shares {
            ids[i - 1]
        } else {
            InferenceId([i as u8 + 1; 32])
        };
        ids.push(inference_id);
        let r = Reveal {
            request_id: REQ,
            node,
            inference_id,
            output: format!("output {i} ({k} flips)"),
            embedding: to_emb(&bits),
            salt: Salt(rng.bytes32()),
            embedding_model: DEFAULT_EMBEDDING_MODEL.to_string(),
        };
        let reject = |reason| (node, inference_id, reason);
        if n.fault != Fault::NoCommit {
            commits.push(commit_for(&r));
            committed += 1;
        }
        let mut s = sub(r.clone());
        match n.fault {
            Fault::None | Fault::OtherDim => {
                subs.push(s);
                candidates.push(r);
            }
            Fault::ShareId => {
                // Inference ids are scoped by node: sharing one with another committer (here
                // the previous node's id, copied from its commit) rejects nobody.
                subs.push(s);
                candidates.push(r);
            }
            Fault::Unrevealed => {}
            Fault::Tampered => {
                s.reveal.output.push_str(" (edited)");
                subs.push(s);
                rejections.push(reject("CommitmentMismatch"));
            }
            Fault::WrongModel => {
                s.reveal.embedding_model = "some/other-model".into();
                subs.push(s);
                rejections.push(reject("EmbeddingModelMismatch"));
            }
            Fault::NoReembedding => {
                s.reembedding = None;
                subs.push(s);
                rejections.push(reject("EmbeddingBeyondTolerance"));
            }
            Fault::ReembedFar | Fault::ReembedNear => {
                let far = n.fault == Fault::ReembedFar;
                s.reembedding = Some(to_emb(&flip(&bits, tolerance + far as usize, &mut rng)));
                subs.push(s);
                if far {
                    rejections.push(reject("EmbeddingBeyondTolerance"));
                } else {
                    candidates.push(r);
                }
            }
            Fault::ReembedDim => {
                s.reembedding = Some(to_emb(&rng.bits(dim + 1)));
                subs.push(s);
                rejections.push(reject("DimensionMismatch"));
            }
            Fault::Equivocate => {
                let mut other = r.clone();
                other.salt = Salt(rng.bytes32());
                commits.push(commit_for(&other));
                subs.push(s);
                rejections.push(reject("Equivocation"));
            }
            Fault::NoCommit => {
                subs.push(s);
                rejections.push(reject("MissingCommit"));
            }
            Fault::DoubleReveal => {
                let mut other = s.clone();
                other.reveal.output.push_str(" (second answer)");
                subs.push(s);
                subs.push(other);
                rejections.push(reject("DuplicateInferenceId"));
                rejections.push(reject("CommitmentMismatch"));
            }
            Fault::WrongInferenceId => {
                s.reveal.inference_id = InferenceId([0xE0 ^ (i as u8 + 1); 32]);
                rejections.push((node, s.reveal.inference_id, "MissingCommit"));
                subs.push(s);
            }
            Fault::OtherRequest => {
                let mut other = s.clone();
                other.reveal.request_id = OTHER_REQ;
                other.reveal.inference_id = InferenceId([0xD0 ^ (i as u8 + 1); 32]);
                rejections.push((node, other.reveal.inference_id, "RequestMismatch"));
                subs.push(other);
                subs.push(s);
                candidates.push(r);
            }
        }
    }
    // The first candidate by commitment fixes the dimension.
    candidates.sort_by_key(|r| r.commitment());
    let dim0 = candidates.first().map(|r| r.embedding.dim());
    let mut valid = Vec::new();
    for r in candidates {
        if Some(r.embedding.dim()) == dim0 {
            valid.push(r);
        } else {
            rejections.push((r.node, r.inference_id, "DimensionMismatch"));
        }
    }
    rejections.sort();
    Built {
        params,
        submitted: subs.len() as u32,
        commits,
        subs,
        committed,
        valid,
        rejections,
    }
}

/// Checks an outcome against the answer computed independently from the scenario.
fn check_against_model(b: &Built, o: &ConsensusOutcome) -> Result<(), TestCaseError> {
    prop_assert_eq!(o.request_id, REQ);
    prop_assert_eq!(o.committed, b.committed);
    prop_assert_eq!(o.submitted, b.submitted);
    prop_assert_eq!(o.verified as usize, b.valid.len());
    prop_assert_eq!(o.rejected.len() + o.verified as usize, o.submitted as usize);
    let mut got: Vec<_> = o
        .rejected
        .iter()
        .map(|r| (r.node, r.inference_id, kind(&r.reason)))
        .collect();
    got.sort();
    prop_assert_eq!(&got, &b.rejections);

    let pct = b.params.percentage_ppm as u64;
    let threshold = ((pct * b.committed as u64).div_ceil(1_000_000) as u32).max(1);
    prop_assert_eq!(o.threshold, threshold);
    if b.committed == 0 {
        prop_assert_eq!(&o.decision, &Decision::Failed(FailureReason::NoCommits));
        return Ok(());
    }
    if b.valid.is_empty() {
        prop_assert_eq!(
            &o.decision,
            &Decision::Failed(FailureReason::NoVerifiedReveals)
        );
        prop_assert!(o.accepted.is_empty());
        return Ok(());
    }

    // b.valid is sorted by commitment.
    let dim = b.valid[0].embedding.dim() as u64;
    let radius = (b.params.distance_ppm as u64 * dim / 1_000_000) as u32;
    prop_assert_eq!(o.radius_bits, radius);
    let points: Vec<Vec<bool>> = b.valid.iter().map(|r| emb_bits(&r.embedding)).collect();
    let dist = |i: usize, j: usize| naive_hamming(&points[i], &points[j]);
    let counts: Vec<u32> = (0..points.len())
        .map(|i| (0..points.len()).filter(|&j| dist(i, j) <= radius).count() as u32)
        .collect();
    let best = *counts.iter().max().unwrap();
    let center = counts.iter().position(|&c| c == best).unwrap();
    prop_assert_eq!(o.best_ball, best);
    if best < threshold {
        prop_assert_eq!(
            &o.decision,
            &Decision::Failed(FailureReason::BelowThreshold {
                best,
                needed: threshold
            })
        );
        prop_assert!(o.accepted.is_empty());
        return Ok(());
    }
    let members: Vec<AcceptedReveal> = (0..points.len())
        .filter(|&j| dist(center, j) <= radius)
        .map(|j| AcceptedReveal {
            node: b.valid[j].node,
            inference_id: b.valid[j].inference_id,
            commitment: b.valid[j].commitment(),
            output_hash: output_hash(&b.valid[j].output),
            distance_to_center: dist(center, j),
        })
        .collect();
    prop_assert_eq!(&o.accepted, &members);
    let Decision::Agreed {
        center: c,
        selected,
        joint_hash: joint,
        config_digest,
        result_digest: digest,
    } = &o.decision
    else {
        return Err(TestCaseError::fail(format!(
            "expected agreement: {:?}",
            o.decision
        )));
    };
    prop_assert_eq!(*c, b.valid[center].commitment());
    let sorted: Vec<Commitment> = members.iter().map(|m| m.commitment).collect();
    prop_assert_eq!(*joint, joint_hash(&REQ, &sorted));
    let salted: Vec<(Commitment, Salt)> = (0..points.len())
        .filter(|&j| dist(center, j) <= radius)
        .map(|j| (b.valid[j].commitment(), b.valid[j].salt))
        .collect();
    prop_assert_eq!(selected.index, selection_index(&REQ, &salted).1);
    let chosen = &members[selected.index as usize];
    prop_assert_eq!(selected.node, chosen.node);
    let reveal = b.valid.iter().find(|r| r.node == chosen.node).unwrap();
    prop_assert_eq!(&selected.output, &reveal.output);
    prop_assert_eq!(
        *digest,
        result_digest(
            &REQ,
            &output_hash(&reveal.output),
            joint,
            &payees_digest(&members),
            config_digest
        )
    );
    Ok(())
}

/// The geometric guarantees, checked from the outcome and the verified points alone.
fn check_geometry(valid: &[Reveal], o: &ConsensusOutcome) -> Result<(), TestCaseError> {
    let Decision::Agreed {
        center, selected, ..
    } = &o.decision
    else {
        prop_assert!(o.accepted.is_empty());
        return Ok(());
    };
    let by_commitment: BTreeMap<Commitment, &Reveal> =
        valid.iter().map(|r| (r.commitment(), r)).collect();
    let c = by_commitment[center];
    // The selected output is in the accepted set, at its index.
    let at = &o.accepted[selected.index as usize];
    prop_assert_eq!(
        (at.node, at.inference_id, at.output_hash),
        (selected.node, selected.inference_id, selected.output_hash)
    );
    prop_assert_eq!(output_hash(&selected.output), selected.output_hash);
    // Every accepted point is a verified point within the radius of the centre.
    let accepted: BTreeSet<Commitment> = o.accepted.iter().map(|a| a.commitment).collect();
    prop_assert_eq!(accepted.len(), o.accepted.len());
    for a in &o.accepted {
        let r = by_commitment.get(&a.commitment).copied();
        prop_assert!(r.is_some(), "accepted point was not verified");
        let d = r.unwrap().embedding.hamming(&c.embedding).unwrap();
        prop_assert_eq!(d, a.distance_to_center);
        prop_assert!(d <= o.radius_bits);
    }
    // Every verified point within the radius of the centre is accepted; the others are not.
    for r in valid {
        let inside = r.embedding.hamming(&c.embedding).unwrap() <= o.radius_bits;
        prop_assert_eq!(inside, accepted.contains(&r.commitment()));
    }
    prop_assert_eq!(o.best_ball as usize, o.accepted.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `evaluate` agrees with a model computed independently from the scenario, and the
    /// accepted set has the documented geometry.
    #[test]
    fn evaluate_matches_the_model(spec in arb_scenario()) {
        let b = build(&spec);
        let o = evaluate(&REQ, &b.params, &b.commits, &b.subs).unwrap();
        check_against_model(&b, &o)?;
        check_geometry(&b.valid, &o)?;
    }

    /// Shuffling commits and submissions, and repeating some of them, changes nothing:
    /// not the decision, not the rejected list, not the joint hash.
    #[test]
    fn input_order_and_repetition_never_change_the_outcome(
        spec in arb_scenario(),
        shuffle_seeds in prop::array::uniform3(any::<u64>()),
    ) {
        let b = build(&spec);
        let reference = evaluate(&REQ, &b.params, &b.commits, &b.subs).unwrap();
        for seed in shuffle_seeds {
            let (c, s) = shuffled_with_duplicates(&b.commits, &b.subs, seed);
            let o = evaluate(&REQ, &b.params, &c, &s).unwrap();
            prop_assert_eq!(o.joint_hash(), reference.joint_hash());
            prop_assert_eq!(&o.rejected, &reference.rejected);
            prop_assert_eq!(&o, &reference);
        }
    }

    /// The same reveal submitted twice with different re-embeddings (a verifier that embedded
    /// an output twice) is one reveal, and the outcome does not depend on which came first.
    #[test]
    fn conflicting_reembeddings_do_not_make_the_outcome_order_dependent(
        spec in arb_scenario(),
        which in any::<Index>(),
        flips in 0usize..40,
        missing in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let b = build(&spec);
        prop_assume!(!b.subs.is_empty());
        let i = which.index(b.subs.len());
        let mut rng = Rng::new(seed);
        let mut other = b.subs[i].clone();
        other.reembedding = if missing {
            None
        } else {
            let bits = emb_bits(&other.reveal.embedding);
            Some(to_emb(&flip(&bits, flips, &mut rng)))
        };
        let mut s1 = b.subs.clone();
        s1.insert(i + 1, other.clone());
        let mut s2 = b.subs.clone();
        s2.insert(i, other);
        let o1 = evaluate(&REQ, &b.params, &b.commits, &s1).unwrap();
        let o2 = evaluate(&REQ, &b.params, &b.commits, &s2).unwrap();
        prop_assert_eq!(o1.submitted, b.submitted);
        prop_assert_eq!(&o1, &o2);
        let (c3, s3) = shuffled_with_duplicates(&b.commits, &s1, seed);
        prop_assert_eq!(&evaluate(&REQ, &b.params, &c3, &s3).unwrap(), &o1);
    }
}

// ---------------------------------------------------------------------------------------------
// Honest majority
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct GroupSpec {
    dim: usize,
    distance_ppm: u32,
    honest: usize,
    adversaries: usize,
    /// Share of the largest percentage that still lets the honest group meet the threshold.
    percentage_permille: u32,
    /// Number of distinct adversary points (colluders share them).
    adversary_pool: usize,
    seed: u64,
}

fn arb_group() -> impl Strategy<Value = GroupSpec> {
    (1usize..=10)
        .prop_flat_map(|honest| {
            (
                16usize..=400,
                100_000u32..=400_000,
                Just(honest),
                0..honest,
                1u32..=1000,
                1usize..=4,
                any::<u64>(),
            )
        })
        .prop_map(
            |(dim, distance_ppm, honest, adversaries, percentage_permille, pool, seed)| GroupSpec {
                dim,
                distance_ppm,
                honest,
                adversaries,
                percentage_permille,
                adversary_pool: pool,
                seed,
            },
        )
}

struct Group {
    params: ConsensusParams,
    commits: Vec<Commit>,
    subs: Vec<Submission>,
    honest: Vec<Reveal>,
    adversaries: Vec<Reveal>,
    radius: usize,
}

/// Honest points within radius/2 of a base point; adversary points from `adversary_point`.
fn build_group(g: &GroupSpec, adversary_point: impl Fn(&[bool], &mut Rng) -> Vec<bool>) -> Group {
    let mut rng = Rng::new(g.seed);
    let total = (g.honest + g.adversaries) as u64;
    // Largest percentage with ceil(pct × total / 10⁶) <= honest, scaled down by the spec.
    let max_pct = g.honest as u64 * 1_000_000 / total;
    let pct = (max_pct * g.percentage_permille as u64 / 1000).max(1) as u32;
    let params = params(g.distance_ppm, pct);
    let radius = params.radius_bits(g.dim as u32) as usize;
    let base = rng.bits(g.dim);
    let pool: Vec<Vec<bool>> = (0..g.adversary_pool)
        .map(|_| adversary_point(&base, &mut rng))
        .collect();
    let mut honest = Vec::new();
    let mut adversaries = Vec::new();
    for i in 0..g.honest + g.adversaries {
        let is_honest = i < g.honest;
        let bits = if is_honest {
            let k = rng.below(radius / 2 + 1);
            flip(&base, k, &mut rng)
        } else {
            pool[rng.below(pool.len())].clone()
        };
        let r = Reveal {
            request_id: REQ,
            node: NodeId([i as u8 + 1; 33]),
            inference_id: InferenceId(rng.bytes32()),
            output: format!("{} {i}", if is_honest { "honest" } else { "adversary" }),
            embedding: to_emb(&bits),
            salt: Salt(rng.bytes32()),
            embedding_model: DEFAULT_EMBEDDING_MODEL.to_string(),
        };
        if is_honest {
            honest.push(r);
        } else {
            adversaries.push(r);
        }
    }
    let all: Vec<&Reveal> = honest.iter().chain(&adversaries).collect();
    let commits = all.iter().map(|r| commit_for(r)).collect();
    let subs = all.iter().map(|r| sub((*r).clone())).collect();
    Group {
        params,
        commits,
        subs,
        honest,
        adversaries,
        radius,
    }
}

fn nodes(rs: &[Reveal]) -> BTreeSet<NodeId> {
    rs.iter().map(|r| r.node).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Adversaries farther than the radius from every honest point: the honest group, and
    /// exactly the honest group, is accepted.
    #[test]
    fn honest_group_wins_against_distant_adversaries(g in arb_group()) {
        // An adversary point at k > radius + radius/2 flips from the base is more than
        // `radius` from every honest point (each within radius/2 of the base).
        let group = build_group(&g, |base, rng| {
            let radius = params(g.distance_ppm, 1).radius_bits(g.dim as u32) as usize;
            let min = radius + radius / 2 + 1;
            let k = min + rng.below(g.dim - min + 1);
            flip(base, k, rng)
        });
        let r = group.radius as u32;
        for h in &group.honest {
            for x in group.honest.iter() {
                prop_assert!(h.embedding.hamming(&x.embedding).unwrap() <= r);
            }
            for a in &group.adversaries {
                prop_assert!(h.embedding.hamming(&a.embedding).unwrap() > r);
            }
        }
        let o = evaluate(&REQ, &group.params, &group.commits, &group.subs).unwrap();
        prop_assert!(o.threshold as usize <= g.honest);
        prop_assert!(matches!(o.decision, Decision::Agreed { .. }), "{:?}", o.decision);
        let accepted: BTreeSet<NodeId> = o.accepted.iter().map(|a| a.node).collect();
        prop_assert_eq!(accepted, nodes(&group.honest));
        prop_assert!(nodes(&group.honest).contains(&o.selected().unwrap().node));
        check_geometry(&[group.honest, group.adversaries].concat(), &o)?;
    }

    /// Adversaries anywhere, near the honest group included: agreement is still reached, on
    /// a ball at least as large as the honest group that holds at least one honest point.
    #[test]
    fn honest_group_is_never_outvoted(g in arb_group()) {
        let group = build_group(&g, |base, rng| {
            let k = rng.below(g.dim + 1);
            flip(base, k, rng)
        });
        let o = evaluate(&REQ, &group.params, &group.commits, &group.subs).unwrap();
        prop_assert!(matches!(o.decision, Decision::Agreed { .. }), "{:?}", o.decision);
        prop_assert!(o.accepted.len() >= g.honest);
        let honest = nodes(&group.honest);
        prop_assert!(o.accepted.iter().any(|a| honest.contains(&a.node)));
        check_geometry(&[group.honest, group.adversaries].concat(), &o)?;
    }

    /// The joint hash and result digest do not depend on the order of the inputs.
    #[test]
    fn joint_hash_is_order_independent(g in arb_group(), seed in any::<u64>()) {
        let group = build_group(&g, |base, rng| {
            let k = rng.below(g.dim + 1);
            flip(base, k, rng)
        });
        let o = evaluate(&REQ, &group.params, &group.commits, &group.subs).unwrap();
        let mut rng = Rng::new(seed);
        let mut c = group.commits.clone();
        let mut s = group.subs.clone();
        rng.shuffle(&mut c);
        rng.shuffle(&mut s);
        let o2 = evaluate(&REQ, &group.params, &c, &s).unwrap();
        let Decision::Agreed { joint_hash: j1, result_digest: d1, .. } = o.decision else {
            return Err(TestCaseError::fail("no agreement"));
        };
        let Decision::Agreed { joint_hash: j2, result_digest: d2, .. } = o2.decision else {
            return Err(TestCaseError::fail("no agreement after shuffling"));
        };
        prop_assert_eq!(j1, j2);
        prop_assert_eq!(d1, d2);
        // And it is the hash of the accepted commitments in ascending order.
        let mut sorted: Vec<Commitment> = o.accepted.iter().map(|a| a.commitment).collect();
        sorted.sort();
        prop_assert_eq!(j1, joint_hash(&REQ, &sorted));
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings and the clustering kernel
// ---------------------------------------------------------------------------------------------

fn arb_bits() -> impl Strategy<Value = Vec<bool>> {
    (1usize..=800).prop_flat_map(|dim| prop::collection::vec(any::<bool>(), dim))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hamming_equals_naive_bit_count(
        (a, b) in (1usize..=800).prop_flat_map(|dim| (
            prop::collection::vec(any::<bool>(), dim),
            prop::collection::vec(any::<bool>(), dim),
        ))
    ) {
        let (ea, eb) = (to_emb(&a), to_emb(&b));
        let naive = naive_hamming(&a, &b);
        prop_assert_eq!(ea.hamming(&eb).unwrap(), naive);
        prop_assert_eq!(eb.hamming(&ea).unwrap(), naive);
        prop_assert_eq!(hamming_words(ea.words(), eb.words()), naive);
        prop_assert_eq!(
            ea.normalized_distance(&eb).unwrap(),
            naive as f64 / a.len() as f64
        );
        prop_assert_eq!(ea.count_ones() as usize, a.iter().filter(|x| **x).count());
    }

    #[test]
    fn quantize_to_bytes_from_bytes_roundtrip(
        values in (1usize..=800).prop_flat_map(|dim| prop::collection::vec(
            prop_oneof![
                -1e30f32..1e30,
                Just(0.0f32),
                Just(-0.0f32),
                Just(f32::MIN_POSITIVE),
                Just(-f32::MIN_POSITIVE),
                Just(f32::MAX),
            ],
            dim,
        ))
    ) {
        let e = BinaryEmbedding::quantize(&values).unwrap();
        prop_assert_eq!(e.dim() as usize, values.len());
        let bytes = e.to_bytes();
        prop_assert_eq!(bytes.len(), values.len().div_ceil(8));
        for (i, v) in values.iter().enumerate() {
            prop_assert_eq!(e.bit(i).unwrap(), *v > 0.0);
            prop_assert_eq!(bytes[i / 8] >> (i % 8) & 1 == 1, *v > 0.0);
        }
        // Padding bits of the last byte are zero.
        if values.len() % 8 != 0 {
            prop_assert_eq!(bytes[bytes.len() - 1] >> (values.len() % 8), 0);
        }
        let back = BinaryEmbedding::from_bytes(e.dim(), &bytes).unwrap();
        prop_assert_eq!(&back, &e);
        prop_assert_eq!(back.words(), e.words());
        let json = serde_json::to_string(&e).unwrap();
        prop_assert_eq!(&serde_json::from_str::<BinaryEmbedding>(&json).unwrap(), &e);
        let bin = postcard::to_allocvec(&e).unwrap();
        prop_assert_eq!(&postcard::from_bytes::<BinaryEmbedding>(&bin).unwrap(), &e);
    }

    #[test]
    fn from_bits_to_bytes_roundtrip(bits in arb_bits()) {
        let e = to_emb(&bits);
        prop_assert_eq!(emb_bits(&e), bits.clone());
        let back = BinaryEmbedding::from_bytes(e.dim(), &e.to_bytes()).unwrap();
        prop_assert_eq!(&back, &e);
        let words = BinaryEmbedding::from_words(e.dim(), e.words().to_vec()).unwrap();
        prop_assert_eq!(&words, &e);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn ball_counts_match_portable_and_naive(
        dim in 1usize..=800,
        n in 0usize..=40,
        radius_permille in 0u32..=1000,
        spread_permille in 0u32..=1000,
        seed in any::<u64>(),
    ) {
        // Points around a base point, so that balls hold more than their centre.
        let mut rng = Rng::new(seed);
        let base = rng.bits(dim);
        let spread = dim * spread_permille as usize / 1000;
        let points: Vec<Vec<bool>> = (0..n)
            .map(|_| {
                let k = rng.below(spread + 1);
                flip(&base, k, &mut rng)
            })
            .collect();
        let embs: Vec<BinaryEmbedding> = points.iter().map(|p| to_emb(p)).collect();
        let packed = PackedPoints::new(&embs).unwrap();
        prop_assert_eq!(packed.len(), n);
        let radius = (dim * radius_permille as usize / 1000) as u32;
        let naive: Vec<u32> = points
            .iter()
            .map(|a| points.iter().filter(|b| naive_hamming(a, b) <= radius).count() as u32)
            .collect();
        prop_assert_eq!(&packed.ball_counts(radius), &naive);
        prop_assert_eq!(&packed.ball_counts_portable(radius), &naive);
        for c in 0..n {
            let d = packed.distances_from(c);
            for j in 0..n {
                prop_assert_eq!(d[j], naive_hamming(&points[c], &points[j]));
            }
        }
        let best = naive.iter().copied().max();
        prop_assert_eq!(
            packed.largest_ball(radius),
            best.map(|b| (naive.iter().position(|&c| c == b).unwrap(), b))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Garbage in: a typed answer out, never a panic.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct GarbageReveal {
    other_request: bool,
    node: u8,
    inference: u8,
    output: u8,
    dim: usize,
    bits_seed: u64,
    salt: u8,
    model: u8,
    /// 0: none, 1: same as revealed, 2: random of the same dim, 3: random of any dim.
    reembedding: u8,
    reembedding_dim: usize,
    /// Commit to it (correct commitment), commit garbage, or not at all.
    commit: u8,
}

fn arb_dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(7),
        Just(64),
        Just(65),
        1usize..=200,
        Just(MAX_DIMENSION)
    ]
}

fn arb_garbage_reveal() -> impl Strategy<Value = GarbageReveal> {
    (
        (
            prop::bool::weighted(0.1),
            0u8..10,
            // Mostly the node's own id (255), sometimes one from a small shared pool.
            prop_oneof![3 => Just(255u8), 1 => 0u8..5],
            0u8..3,
            prop_oneof![9 => Just(64usize), 1 => arb_dim()],
        ),
        (
            // Few distinct seeds: identical reveals, and one reveal with several
            // re-embeddings, happen often.
            0u64..3,
            0u8..3,
            prop_oneof![8 => Just(0u8), 1 => Just(1), 1 => Just(2)],
            prop_oneof![1 => Just(0u8), 6 => Just(1), 1 => Just(2), 1 => Just(3)],
            arb_dim(),
            0u8..4,
        ),
    )
        .prop_map(
            |(
                (other_request, node, inference, output, dim),
                (bits_seed, salt, model, reembedding, reembedding_dim, commit),
            )| GarbageReveal {
                other_request,
                node,
                inference,
                output,
                dim,
                bits_seed,
                salt,
                model,
                reembedding,
                reembedding_dim,
                commit,
            },
        )
}

fn garbage_emb(dim: usize, seed: u64) -> BinaryEmbedding {
    to_emb(&Rng::new(seed).bits(dim))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn evaluate_never_panics_on_garbage(
        reveals in prop::collection::vec(arb_garbage_reveal(), 0..12),
        extra_commits in prop::collection::vec((any::<bool>(), 0u8..5, 0u8..5, 0u8..4), 0..4),
        distance_ppm in prop_oneof![Just(0u32), Just(1_000_000), any::<u32>(), 0u32..=500_000],
        percentage_ppm in prop_oneof![Just(0u32), Just(1_000_000), any::<u32>()],
        tolerance in prop::option::of(prop_oneof![Just(u32::MAX), 0u32..10]),
        model in prop_oneof![
            4 => Just(DEFAULT_EMBEDDING_MODEL.to_string()),
            1 => Just(String::new())
        ],
        seed in any::<u64>(),
    ) {
        let models = [DEFAULT_EMBEDDING_MODEL, "other", ""];
        let mut commits = Vec::new();
        let mut subs = Vec::new();
        for g in &reveals {
            let embedding = garbage_emb(g.dim, g.bits_seed);
            let r = Reveal {
                request_id: if g.other_request { OTHER_REQ } else { REQ },
                node: NodeId([g.node; 33]),
                inference_id: InferenceId([if g.inference == 255 { 0x80 | g.node } else { g.inference }; 32]),
                output: ["", "a", "ünïcode"][g.output as usize].to_string(),
                embedding: embedding.clone(),
                salt: Salt([g.salt; 32]),
                embedding_model: models[g.model as usize].to_string(),
            };
            match g.commit {
                0 | 1 => commits.push(commit_for(&r)),
                2 => commits.push(Commit {
                    commitment: Commitment([g.salt; 32]),
                    ..commit_for(&r)
                }),
                _ => {}
            }
            let reembedding = match g.reembedding {
                0 => None,
                1 => Some(embedding),
                2 => Some(garbage_emb(g.dim, g.bits_seed ^ 1)),
                _ => Some(garbage_emb(g.reembedding_dim, g.bits_seed)),
            };
            subs.push(Submission {
                reveal: r,
                reembedding,
                sampling_fault: None,
            });
        }
        for (other, node, inference, c) in extra_commits {
            commits.push(Commit {
                request_id: if other { OTHER_REQ } else { REQ },
                node: NodeId([node; 33]),
                inference_id: InferenceId([inference; 32]),
                commitment: Commitment([c; 32]),
            });
        }
        let params = ConsensusParams {
            distance_ppm,
            percentage_ppm,
            embedding_model: model,
            reembed_tolerance_bits: tolerance,
            committee_size: None,
            selection_order: None,
            config_digest: Hash32([0; 32]),
        };
        match evaluate(&REQ, &params, &commits, &subs) {
            Ok(o) => {
                prop_assert!(o.verified <= o.submitted);
                prop_assert!(o.submitted as usize <= subs.len());
                prop_assert_eq!(o.rejected.len() + o.verified as usize, o.submitted as usize);
                prop_assert!(o.threshold >= 1);
                match &o.decision {
                    Decision::Agreed { selected, .. } => {
                        prop_assert!(o.best_ball >= o.threshold);
                        prop_assert_eq!(o.best_ball as usize, o.accepted.len());
                        prop_assert!((selected.index as usize) < o.accepted.len());
                        prop_assert!(o.accepted.iter().all(|a| a.distance_to_center <= o.radius_bits));
                    }
                    Decision::Failed(_) => prop_assert!(o.accepted.is_empty()),
                }
                // Order independence holds on garbage too.
                let (c2, s2) = shuffled_with_duplicates(&commits, &subs, seed);
                prop_assert_eq!(&evaluate(&REQ, &params, &c2, &s2).unwrap(), &o);
            }
            // A typed error is an acceptable answer to malformed input.
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With a committee order, the selected output is the accepted node drawn first, and a
    /// group that withholds any subset of its reveals gets one of its members selected only
    /// when one of them is selected with every reveal published: withholding only removes the
    /// withholders (with salt-seeded selection, the subset chooses the seed).
    #[test]
    fn withholding_never_steers_the_committee_order_selection(
        seed in any::<u64>(),
        n in 5usize..11,
        group_mask in any::<u16>(),
        withhold_mask in any::<u16>(),
    ) {
        let mut rng = Rng::new(seed);
        let base = rng.bits(384);
        let reveals: Vec<Reveal> = (0..n)
            .map(|i| Reveal {
                request_id: REQ,
                node: NodeId([i as u8 + 1; 33]),
                inference_id: InferenceId(rng.bytes32()),
                output: format!("answer {i}"),
                embedding: to_emb(&flip(&base, rng.below(3), &mut rng)),
                salt: Salt(rng.bytes32()),
                embedding_model: DEFAULT_EMBEDDING_MODEL.to_string(),
            })
            .collect();
        let mut order: Vec<NodeId> = reveals.iter().map(|r| r.node).collect();
        rng.shuffle(&mut order);
        let p = params(300_000, 400_000)
            .with_committee_size(n as u32)
            .with_selection_order(order.clone());
        let commits: Vec<Commit> = reveals.iter().map(commit_for).collect();
        let in_group = |i: usize| group_mask & (1 << i) != 0;
        let select = |withheld: &dyn Fn(usize) -> bool| {
            let subs: Vec<Submission> = reveals
                .iter()
                .enumerate()
                .filter(|(i, _)| !withheld(*i))
                .map(|(_, r)| sub(r.clone()))
                .collect();
            let o = evaluate(&REQ, &p, &commits, &subs).unwrap();
            o.selected().map(|s| s.node)
        };
        let all = select(&|_| false);
        // The first in the order among the accepted (every reveal is accepted here).
        prop_assert_eq!(all, Some(order[0]));
        let steered = select(&|i| in_group(i) && withhold_mask & (1 << i) != 0);
        if let Some(node) = steered {
            let i = reveals.iter().position(|r| r.node == node).unwrap();
            if in_group(i) {
                let first = reveals.iter().position(|r| Some(r.node) == all).unwrap();
                prop_assert!(in_group(first), "withholding got the group selected");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The canonical sampler
// ---------------------------------------------------------------------------------------------

fn arb_logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-20.0f32..20.0, 1..64)
}

fn arb_spec() -> impl Strategy<Value = rakis_consensus::sampling::SamplerSpec> {
    (0.0f32..2.0, 0.05f32..1.2).prop_map(|(temperature, top_p)| {
        rakis_consensus::sampling::SamplerSpec { temperature, top_p }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// What the sampler draws, a verifier with the same logits and random number finds the
    /// same; the token is in the nucleus, and the nucleus holds at least the requested mass.
    #[test]
    fn a_draw_replays_exactly(logits in arb_logits(), spec in arb_spec(), u in 0.0f64..1.0) {
        use rakis_consensus::sampling::{check, Distribution, Draw};
        let d = Distribution::new(&logits, spec);
        let token = d.sample(u).unwrap();
        prop_assert_eq!(check(&logits, spec, u, token), Draw::Same);
        if !spec.is_greedy() {
            let (lo, hi) = d.interval(token).unwrap();
            prop_assert!(lo <= u && u < hi + 1e-12, "{} not in [{}, {})", u, lo, hi);
        }
    }

    /// The check's distance is a logit tolerance that holds: whatever token logits within
    /// `δ` of the verifier's draw with `u` (another engine, another weight format), the
    /// verifier finds it within `δ` (no nucleus cut; greedy: within `δ` as half the gap).
    #[test]
    fn logit_noise_within_the_tolerance_is_explained(
        logits in arb_logits(),
        u in 0.0f64..1.0,
        temperature in 0.0f32..2.0,
        delta in 0.0f32..1.0,
        noise in prop::collection::vec(-1.0f32..1.0, 64),
    ) {
        use rakis_consensus::sampling::{check, sample, SamplerSpec};
        let spec = SamplerSpec { temperature, top_p: 1.0 };
        let noisy: Vec<f32> = logits.iter().zip(&noise).map(|(l, n)| l + n * delta).collect();
        // The generator's logits are the noisy ones; the verifier holds the originals.
        let token = sample(&noisy, spec, u).unwrap();
        let draw = check(&logits, spec, u, token);
        prop_assert!(draw.within(f64::from(delta) + 1e-5), "{:?} beyond {}", draw, delta);
    }

    /// A lie needs a tolerance: a token whose interval lies away from `u` needs logits moved
    /// by more than a small tolerance, and the needed tolerance grows with the distance.
    #[test]
    fn a_claim_far_from_u_needs_a_large_tolerance(u in 0.05f64..0.45) {
        use rakis_consensus::sampling::{check, Draw, SamplerSpec};
        // Two equal tokens: u < 0.5 draws token 0; claiming token 1 needs 1 / (1 + e^{2δ}) ≤ u.
        let spec = SamplerSpec { temperature: 1.0, top_p: 1.0 };
        match check(&[0.0, 0.0], spec, u, 1) {
            Draw::Near { distance } => {
                let exact = 0.5 * ((1.0 - u) / u).ln();
                prop_assert!((distance - exact).abs() < 1e-9, "{} vs {}", distance, exact);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
