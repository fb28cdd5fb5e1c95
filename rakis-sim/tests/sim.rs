//! Byzantine bounds, asserted with the deterministic simulator (`rakis_sim`): the real
//! coordinators of every node, adversaries plugged per node, a simulated network.
//!
//! Run the measurement behind `docs/security.md` with
//! `cargo test -p rakis-sim --release --test sim -- --ignored --nocapture`.

// The ignored measurements print their tables.
#![allow(clippy::print_stdout)]

use rakis_sim::{
    Behaviour, Committee, Corpus, Lie, NetworkConfig, Partition, Report, RequestStatus, Scenario,
};

/// Rounds per measurement (one request per round).
const ROUNDS: usize = 40;
/// Requests are spaced so that each node's single worker is free for the next one.
const INTERVAL_MS: u64 = 700;

/// `n` nodes, quorum `n`, the given distance and share, `rounds` sequential requests.
fn quorum(n: usize, distance: f64, share: f64, rounds: usize, seed: u64) -> Scenario {
    Scenario::new(n)
        .security(n as u32, distance, share)
        .requests(rounds, INTERVAL_MS)
        .seed(seed)
}

fn default_frame(n: usize, rounds: usize, seed: u64) -> Scenario {
    quorum(n, 0.30, 0.6, rounds, seed)
}

/// Every request completed with one honest result shared by every honest node.
fn assert_all_honest(r: &Report, what: &str) {
    for q in &r.requests {
        assert!(
            matches!(q.status, RequestStatus::Completed { honest: true, .. }),
            "{what}: request {} ended {:?}\n{}",
            q.index,
            q.status,
            r.summary()
        );
        assert!(
            !q.adversary_accepted,
            "{what}: request {} accepted an adversary",
            q.index
        );
    }
    assert_eq!(r.wrong_results, 0, "{what}");
    assert_eq!(r.inconsistent, 0, "{what}");
}

/// Share of rounds in which the adversary entered an honest node's accepted set.
fn entered(r: &Report) -> f64 {
    r.adversary_accepted as f64 / r.requests.len() as f64
}

#[test]
fn honest_network_agrees_on_an_honest_answer() {
    let r = Scenario::new(5)
        .corpus(Corpus::deterministic())
        .requests(ROUNDS, INTERVAL_MS)
        .seed(1)
        .run();
    assert_all_honest(&r, "all honest");
    assert_eq!(r.completed, ROUNDS);
    assert!(r.result_latency.max_ms <= 1_000 + 200, "{}", r.summary());
    // Request, 5 commits, 5 reveals, 5 inventories and 5 results, each to 4 peers.
    assert_eq!(r.messages_per_request(), 84.0, "{}", r.summary());
}

#[test]
fn same_seed_same_report_other_seed_other_run() {
    let s = default_frame(5, 10, 3).behaviour(4, Behaviour::Garbage);
    let a = s.run();
    let b = s.run();
    assert_eq!(a.summary(), b.summary());
    let ids = |r: &Report| r.requests.iter().map(|q| q.request_id).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    let c = s.clone().seed(4).run();
    assert_ne!(ids(&a), ids(&c));
}

/// Adversaries the embedding separates from honest answers, within the tolerance of the default
/// frame (2 of 5: the honest 3 reach the threshold `ceil(0.6 × 5) = 3` alone), never win and
/// never split the honest nodes.
#[test]
fn adversaries_within_tolerance_never_win() {
    let cases = [
        Behaviour::Garbage,
        Behaviour::Freerider,
        Behaviour::RevealMismatch,
        Behaviour::WithholdReveal,
        Behaviour::Equivocate,
        Behaviour::WrongEmbedding,
        Behaviour::Collude {
            group: 1,
            lie: Lie::Garbage,
        },
    ];
    for b in cases {
        let r = default_frame(5, 12, 11)
            .corpus(Corpus::deterministic())
            .behaviours([3, 4], b.clone())
            .run();
        assert_all_honest(&r, &format!("{b:?}"));
        // With honest wording variance (temperature > 0) some rounds fail, none goes wrong.
        let r = default_frame(5, 12, 12).behaviours([1, 3], b.clone()).run();
        assert_eq!(r.wrong_results, 0, "{b:?}: {}", r.summary());
        assert_eq!(r.adversary_accepted, 0, "{b:?}: {}", r.summary());
        assert_eq!(r.inconsistent, 0, "{b:?}: {}", r.summary());
    }
}

/// Two late committers out of five leave three timely commits: the quorum of 5 is not reached.
/// One late committer out of six is ignored.
#[test]
fn late_commits_are_ignored() {
    let r = default_frame(5, 6, 13)
        .corpus(Corpus::deterministic())
        .behaviours([3, 4], Behaviour::LateCommit { after_ms: 50 })
        .run();
    assert_eq!(
        r.failures.get("quorum not reached"),
        Some(&6),
        "{}",
        r.summary()
    );
    let r = quorum(6, 0.30, 0.6, 8, 5)
        .security(5, 0.30, 0.6)
        .corpus(Corpus::deterministic())
        .behaviour(5, Behaviour::LateCommit { after_ms: 30 })
        .run();
    assert_all_honest(&r, "late commit");
}

/// Beyond the tolerance (3 of 5 that do not collude) the request fails: it never accepts an
/// adversarial answer.
#[test]
fn beyond_tolerance_the_request_fails() {
    let mixes: [[Behaviour; 3]; 3] = [
        [
            Behaviour::Garbage,
            Behaviour::Garbage,
            Behaviour::WithholdReveal,
        ],
        [
            Behaviour::Freerider,
            Behaviour::Freerider,
            Behaviour::Equivocate,
        ],
        [
            Behaviour::RevealMismatch,
            Behaviour::WrongEmbedding,
            Behaviour::Garbage,
        ],
    ];
    for mix in mixes {
        let mut s = default_frame(5, 10, 21).corpus(Corpus::deterministic());
        for (i, b) in mix.iter().enumerate() {
            s = s.behaviour(2 + i, b.clone());
        }
        let r = s.run();
        assert_eq!(r.failed, 10, "{mix:?}: {}", r.summary());
        assert_eq!(r.wrong_results, 0, "{mix:?}");
        assert_eq!(r.adversary_accepted, 0, "{mix:?}");
    }
}

/// Freeriders copy a reveal they saw; the copy never opens their commitment.
#[test]
fn freeriders_never_pass_verification() {
    for seed in 0..3 {
        let r = default_frame(5, 15, 100 + seed)
            .behaviours([1, 4], Behaviour::Freerider)
            .corpus(Corpus::deterministic())
            .run();
        assert_all_honest(&r, "freeriders");
    }
    // Even when they are the majority, nothing is accepted.
    let r = default_frame(5, 10, 7)
        .behaviours([0, 1, 2], Behaviour::Freerider)
        .run();
    assert_eq!(r.failed, 10, "{}", r.summary());
    assert_eq!(r.adversary_accepted, 0);
}

/// Known limit: a freerider that copies an answer already revealed for the same prompt (an earlier
/// request) commits honest-looking text and passes. Embedding consensus cannot tell a cached
/// answer from a fresh one; only unique prompts or likelihood evidence can.
#[test]
fn copying_an_earlier_public_answer_passes() {
    let r = default_frame(5, 12, 9)
        .corpus(Corpus::deterministic())
        .behaviour(4, Behaviour::CopyPriorAnswer)
        .run();
    // The first round of each of the 6 prompts: nothing to copy yet, random words.
    let later: Vec<_> = r.requests.iter().filter(|q| q.index >= 6).collect();
    assert!(
        later.iter().all(|q| q.adversary_accepted),
        "{}",
        r.summary()
    );
    assert!(r.requests.iter().take(6).all(|q| !q.adversary_accepted));
}

/// Known limit: colluders with identical text who reach the threshold win, whatever they say.
#[test]
fn three_colluders_of_five_always_win() {
    for lie in [Lie::OffTopic, Lie::Garbage, Lie::FactSwap] {
        let r = default_frame(5, ROUNDS, 31)
            .behaviours([0, 2, 4], Behaviour::Collude { group: 9, lie })
            .run();
        assert_eq!(r.completed, ROUNDS, "{lie:?}: {}", r.summary());
        assert_eq!(r.adversary_accepted, ROUNDS, "{lie:?}: {}", r.summary());
        if lie == Lie::FactSwap {
            // The lie is close to the honest answers: all five share the ball and the selection
            // picks a colluder's text in about 3 of 5 rounds (20 of 40 here).
            assert!(r.wrong_results > 0, "{lie:?}: {}", r.summary());
        } else {
            // Selected in nearly every round: now and then an honest answer sits inside the
            // colluders' ball and is drawn instead (docs/security.md: 98 %).
            assert!(
                r.wrong_results >= ROUNDS * 9 / 10,
                "{lie:?}: {}",
                r.summary()
            );
        }
    }
    // Two colluders on random words never win.
    let r = default_frame(5, ROUNDS, 31)
        .behaviours(
            [0, 2],
            Behaviour::Collude {
                group: 9,
                lie: Lie::Garbage,
            },
        )
        .run();
    assert_eq!(r.adversary_accepted, 0, "{}", r.summary());
}

/// Known limit, measured (not tuned): an honest answer with its key fact swapped, and an honest
/// answer cut to 20 %, enter the accepted ball of the default frame in a large share of rounds.
/// The figures are in docs/security.md; the bands here only catch a change of behaviour.
#[test]
fn subtle_lies_enter_the_ball() {
    let fact = default_frame(5, ROUNDS, 41)
        .behaviour(4, Behaviour::FactSwap)
        .run();
    let cut = default_frame(5, ROUNDS, 41)
        .behaviour(4, Behaviour::Truncated { percent: 20 })
        .run();
    let off = default_frame(5, ROUNDS, 41)
        .behaviour(4, Behaviour::OffTopic)
        .run();
    let (f, c, o) = (entered(&fact), entered(&cut), entered(&off));
    assert!(f >= 0.5, "fact swap entered {f}: {}", fact.summary());
    assert!(c <= f, "truncation {c} vs fact swap {f}");
    // The bag-of-words stand-in embedder puts some off-topic answers (sharing "the", "is",
    // "of" …) inside the radius; MiniLM did not (closest at 0.359 in the reference).
    assert!(o <= 0.15, "off-topic entered {o}: {}", off.summary());
}

#[test]
fn replayed_messages_change_nothing() {
    for delay in [5, 400, 2_500] {
        let r = default_frame(5, 10, 51)
            .corpus(Corpus::deterministic())
            .behaviour(4, Behaviour::Replay { delay_ms: delay })
            .run();
        assert_all_honest(&r, &format!("replay +{delay} ms"));
    }
}

/// An equivocator that sends one commitment to half the committee and another to the other
/// half: each half holds one valid commitment. Before deciding, the nodes exchange inventories;
/// each half sees the other commitment listed, fetches it, and every honest node rejects the
/// equivocator: one result. (Without inventories, one half accepted its reveal and the other
/// rejected it: honest nodes signed different results in 10 of 10 requests.)
#[test]
fn split_equivocation_does_not_split_honest_results() {
    let r = default_frame(5, 10, 91)
        .corpus(Corpus::deterministic())
        .behaviour(4, Behaviour::EquivocateSplit)
        .run();
    assert_eq!(r.wrong_results, 0, "{}", r.summary());
    assert_eq!(r.inconsistent, 0, "{}", r.summary());
    assert_eq!(r.completed, 10, "{}", r.summary());
    // Broadcast to everyone, the two commitments prove equivocation everywhere.
    let r = default_frame(5, 10, 91)
        .corpus(Corpus::deterministic())
        .behaviour(4, Behaviour::Equivocate)
        .run();
    assert_all_honest(&r, "equivocate");
}

/// With independent per-delivery loss (no gossip repair), honest nodes miss different reveals;
/// the inventories they exchange before deciding show what each misses, and each fetches it:
/// one accepted set, one result digest. (Without inventories: different digests in most
/// requests.) Never a wrong result.
#[test]
fn loss_does_not_split_accepted_sets() {
    let r = quorum(7, 0.30, 0.6, 20, 61)
        .security(5, 0.30, 0.6)
        .corpus(Corpus::deterministic())
        .network(NetworkConfig {
            loss: 0.05,
            ..NetworkConfig::default()
        })
        .run();
    assert!(r.lost > 0);
    assert_eq!(r.wrong_results, 0, "{}", r.summary());
    assert_eq!(r.inconsistent, 0, "{}", r.summary());
    assert_eq!(r.completed, 20, "{}", r.summary());
}

#[test]
fn partitions_fail_or_agree_but_never_accept_a_wrong_answer() {
    // Healed before the deadline: everything completes.
    let healed = quorum(5, 0.30, 0.6, 1, 71)
        .corpus(Corpus::deterministic())
        .network(NetworkConfig {
            partitions: vec![Partition {
                from_ms: 0,
                until_ms: 1_000,
                groups: vec![vec![0, 1, 2], vec![3, 4]],
            }],
            ..NetworkConfig::default()
        })
        .run();
    // Commits of the cut nodes are lost: the request cannot reach a quorum of 5 unless sync
    // recovers them.
    assert_eq!(healed.wrong_results, 0);
    // Cut for the whole request: the quorum of 5 is never reached on either side.
    let cut = quorum(5, 0.30, 0.6, 3, 71)
        .corpus(Corpus::deterministic())
        .network(NetworkConfig {
            partitions: vec![Partition {
                from_ms: 0,
                until_ms: 60_000,
                groups: vec![vec![0, 1, 2], vec![3, 4]],
            }],
            ..NetworkConfig::default()
        })
        .run();
    assert_eq!(cut.failed, 3, "{}", cut.summary());
    assert_eq!(cut.wrong_results, 0);
    // Quorum 3 of 5: the majority side completes, the minority fails; never a wrong result.
    let majority = quorum(5, 0.30, 0.6, 3, 71)
        .security(3, 0.30, 0.6)
        .corpus(Corpus::deterministic())
        .network(NetworkConfig {
            partitions: vec![Partition {
                from_ms: 0,
                until_ms: 60_000,
                groups: vec![vec![0, 1, 2], vec![3, 4]],
            }],
            ..NetworkConfig::default()
        })
        .run();
    assert_eq!(majority.inconsistent, 3, "{}", majority.summary());
    assert_eq!(majority.wrong_results, 0);
}

/// Committees drawn from a membership of 200 (every member's coordinator draws the same 7 for
/// quorum 5 and ignores everyone else): only the committee and the requester hear a request.
#[test]
fn drawn_committees_scale() {
    let r = Scenario::new(200)
        .security(5, 0.30, 0.6)
        .committee(Committee::Drawn)
        .corpus(Corpus::deterministic())
        .requests(20, 50)
        .seed(81)
        .run();
    assert_all_honest(&r, "drawn");
    let mut distinct = std::collections::BTreeSet::new();
    for q in &r.requests {
        assert_eq!(q.committee.len(), 7);
        distinct.extend(q.committee.iter().copied());
    }
    // 20 committees of 7 drawn from 200 members spread over most of them.
    assert!(distinct.len() > 80, "{}", distinct.len());
    // Each delivery goes to a committee member or the requester: at most 7 receivers each.
    assert!(r.messages_per_request() < 40.0 * 7.0, "{}", r.summary());
    assert_eq!(r.inbox_dropped, 0, "{}", r.summary());
}

fn colluders(k: usize, lie: Lie) -> Vec<(usize, Behaviour)> {
    (5 - k..5)
        .map(|i| (i, Behaviour::Collude { group: 1, lie }))
        .collect()
}

/// The measurement behind the table in docs/security.md.
#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn security_table() {
    const N: usize = 200;
    let frames = [
        (0.20, 0.6),
        (0.30, 0.6),
        (0.40, 0.6),
        (0.20, 0.8),
        (0.30, 0.8),
        (0.40, 0.8),
    ];
    let cases: Vec<(&str, Vec<(usize, Behaviour)>)> = vec![
        ("all honest", vec![]),
        ("fact swap 1/5", vec![(4, Behaviour::FactSwap)]),
        (
            "truncated 20% 1/5",
            vec![(4, Behaviour::Truncated { percent: 20 })],
        ),
        (
            "truncated 50% 1/5",
            vec![(4, Behaviour::Truncated { percent: 50 })],
        ),
        ("off-topic 1/5", vec![(4, Behaviour::OffTopic)]),
        ("garbage 1/5", vec![(4, Behaviour::Garbage)]),
        (
            "freerider 2/5",
            vec![(3, Behaviour::Freerider), (4, Behaviour::Freerider)],
        ),
        ("colluders fact swap 2/5", colluders(2, Lie::FactSwap)),
        ("colluders off-topic 2/5", colluders(2, Lie::OffTopic)),
        ("colluders off-topic 3/5", colluders(3, Lie::OffTopic)),
    ];
    println!("| case | distance | share | adversary in ball | wrong result | failed |");
    println!("|---|---|---|---|---|---|");
    for (name, advs) in &cases {
        for &(d, p) in &frames {
            let mut s = quorum(5, d, p, N, 1234);
            for (i, b) in advs {
                s = s.behaviour(*i, b.clone());
            }
            let (in_ball, wrong, failed) = s.run().rates_percent();
            println!(
                "| {name} | {d:.2} | {p:.1} | {in_ball:.0} % | {wrong:.0} % | {failed:.0} % |"
            );
        }
    }
}

/// The benchmark's network: 1,000 members, committees drawn from the membership (quorum 5 →
/// 7 members, quorum 7 → 10), one off-topic member in ten, signed envelopes through every
/// inbox, 20–50 ms latency, independent loss per delivery, 100 requests 100 ms apart.
fn thousand_members(quorum: u32, loss: f64) -> Scenario {
    drawn_committees(quorum, loss).behaviours((0..1_000).step_by(10), Behaviour::OffTopic)
}

/// [`thousand_members`] without its off-topic members: for attacks whose outcome the
/// bag-of-words `HashEmbedder` must not blur (it puts an off-topic answer inside the ball at
/// radius 0.30 in some rounds, docs/security.md).
fn drawn_committees(quorum: u32, loss: f64) -> Scenario {
    Scenario::new(1_000)
        .security(quorum, 0.30, 0.6)
        .committee(Committee::Drawn)
        .network(NetworkConfig {
            loss,
            ..NetworkConfig::default()
        })
        .requests(100, 100)
        .seed(2026)
}

/// docs/security.md, "one result": 1,000 members × 100 requests with committees of 7 drawn from
/// the membership, at 1 % and 5 % loss per delivery: in every request the honest members that
/// signed a result signed one digest (target: ≥ 99 of 100), and in at least 99 of 100 every
/// honest member ended the same way (all completed, or all failed).
#[test]
fn one_result_at_1000_members_under_loss() {
    for loss in [0.01, 0.05] {
        let r = thousand_members(5, loss).run();
        assert!(r.lost > 0);
        assert_eq!(r.split_digests, 0, "loss {loss}: {}", r.summary());
        // A member that missed too much may fail where the rest complete (it signs nothing):
        // at most 1 request in 100.
        assert!(r.inconsistent <= 1, "loss {loss}: {}", r.summary());
        assert!(r.completed >= 80, "loss {loss}: {}", r.summary());
        for q in &r.requests {
            assert_eq!(q.committee.len(), 7);
        }
    }
}

/// docs/security.md, "one result": 1,000 members × 100 requests, committees of 7, 1 % loss, and
/// hostile members: one in twenty equivocates by splitting its committee (a commitment to each
/// half), one in twenty runs its clock 2 s ahead and one in twenty 2 s behind (the whole
/// deadline). Honest members never sign different digests, and no request selects a wrong
/// answer. No off-topic members: the off-topic answer the `HashEmbedder` lets into a ball now and
/// then (1 of 100 requests here when they were in) is not this attack's doing, and the members
/// 2 s behind were all off-topic then, so no honest member ran behind.
#[test]
fn equivocators_and_skewed_clocks_never_split_a_committee() {
    let mut s = drawn_committees(5, 0.01)
        .corpus(Corpus::deterministic())
        .behaviours((0..1_000).step_by(20), Behaviour::EquivocateSplit);
    for i in (5..1_000).step_by(20) {
        s = s.clock_offset(i, 2_000);
    }
    for i in (10..1_000).step_by(20) {
        s = s.clock_offset(i, -2_000);
    }
    let r = s.run();
    let skewed = r
        .requests
        .iter()
        .filter(|q| q.committee.iter().any(|i| i % 20 == 5 || i % 20 == 10))
        .count();
    let equivocating = r
        .requests
        .iter()
        .filter(|q| !q.adversaries.is_empty())
        .count();
    assert!(skewed > 30 && equivocating > 20, "{skewed} {equivocating}");
    assert_eq!(r.split_digests, 0, "{}", r.summary());
    assert_eq!(r.wrong_results, 0, "{}", r.summary());
    println!("{}", r.summary());
    // The skewed members themselves may not finish (ahead, a request looks expired on arrival;
    // behind, they decide after the others): the rest complete.
    assert!(r.completed + r.inconsistent >= 90, "{}", r.summary());
}

/// docs/security.md, "late copies": commits sent in the last tens of milliseconds before a 2 s
/// deadline reach some members in time and others just after it (20–50 ms latency). Each
/// member's inventory lists what it holds; a member that ignored a commit on arrival fetches it
/// again by sync, and its Inbox hands the relayed copy (a duplicate of the envelope it heard)
/// to the coordinator, which judges it by its signed time. Every member ends with the same
/// committed set: 27 of 60 complete, the rest fail alike (too few commits in time anywhere),
/// none splits. (With an Inbox that drops relayed duplicates, the members that heard a commit
/// late never take it: 0 of 60 complete and 3 end with honest members signing different
/// digests.)
#[test]
fn commits_heard_late_by_some_members_are_repaired() {
    let r = Scenario::new(7)
        .security(5, 0.30, 0.6)
        .committee(Committee::Drawn)
        .corpus(Corpus::deterministic())
        .generation(1_880, 120)
        .requests(60, 3_000)
        .seed(406)
        .run();
    assert_eq!(r.split_digests, 0, "{}", r.summary());
    assert_eq!(r.inconsistent, 0, "{}", r.summary());
    assert_eq!(r.wrong_results, 0, "{}", r.summary());
    assert!(r.sync_requests > 0, "{}", r.summary());
    // Generation ends 1.88–2.0 s into the 2 s deadline: in about half the requests fewer than 5
    // commits are in time anywhere, and every member fails alike.
    assert!(r.completed >= 20, "{}", r.summary());
}

/// docs/security.md, "free keys": 1,000 keys outside the membership hear every request and the
/// members' commits and reveals, and send their own commits (one agreed lie), reveals,
/// inventories and signed results to each committee. In an open network that many agreeing keys
/// win outright; here every member ignores them: the same results as without them, request by
/// request, and no request fails.
#[test]
fn a_thousand_free_keys_change_no_result() {
    let network = |outsiders: usize| {
        Scenario::new(1_000 + outsiders)
            .security(5, 0.30, 0.6)
            .committee(Committee::Drawn)
            .corpus(Corpus::deterministic())
            .outsiders(1_000..1_000 + outsiders)
            .behaviours(
                1_000..1_000 + outsiders,
                Behaviour::Collude {
                    group: 9,
                    lie: Lie::OffTopic,
                },
            )
            .requests(4, 700)
            .seed(2027)
            .run()
    };
    let (clean, swamped) = (network(0), network(1_000));
    assert_all_honest(&clean, "no free keys");
    assert_all_honest(&swamped, "1,000 free keys");
    for (a, b) in clean.requests.iter().zip(&swamped.requests) {
        assert_eq!(a.committee, b.committee);
        assert_eq!(a.status, b.status, "request {}", a.index);
    }
    // They did send: about 1,000 commits, reveals, inventories and results to 7 members each.
    assert!(
        swamped.messages > clean.messages + 4 * 1_000 * 7 * 3,
        "{} vs {}",
        swamped.messages,
        clean.messages
    );
}

/// docs/security.md, "coalitions": colluders holding 2 of a committee's 7 seats never get a lie
/// that the embedding check sees selected nor accepted. (A lie inside the ball, such as a
/// swapped fact, is the sampling check's to catch: `subtle_lies_enter_the_ball`; the
/// simulator's bag-of-words embedder also lets some off-topic answers in, which all-MiniLM-L6-v2
/// does not: `rakis-inference/tests/sim_minilm.rs`.) Seven members, two of them one colluding group, 40 requests; then
/// 1,000 members of which one in five colludes (committees with 0 to 5 colluders), where every
/// request with at most 2 colluders ends with the honest answer.
#[test]
fn a_committee_minority_of_colluders_never_wins() {
    let small = Scenario::new(7)
        .security(5, 0.30, 0.6)
        .committee(Committee::Drawn)
        .corpus(Corpus::deterministic())
        .behaviours(
            [2, 5],
            Behaviour::Collude {
                group: 1,
                lie: Lie::Garbage,
            },
        )
        .requests(ROUNDS, INTERVAL_MS)
        .seed(77)
        .run();
    for q in &small.requests {
        assert_eq!(q.committee.len(), 7);
        assert_eq!(q.adversaries.len(), 2);
    }
    assert_all_honest(&small, "2 of 7 colluding");
    let r = thousand_members(5, 0.01)
        .corpus(Corpus::deterministic())
        .behaviours(
            (0..1_000).step_by(5),
            Behaviour::Collude {
                group: 1,
                lie: Lie::Garbage,
            },
        )
        .run();
    let minority: Vec<_> = r
        .requests
        .iter()
        .filter(|q| q.adversaries.len() <= 2)
        .collect();
    assert!(minority.len() > 70, "{}", minority.len());
    for q in minority {
        assert!(
            matches!(q.status, RequestStatus::Completed { honest: true, .. }),
            "request {} with {} colluders ended {:?}",
            q.index,
            q.adversaries.len(),
            q.status
        );
        assert!(!q.adversary_accepted && !q.wrong_result);
    }
}

/// The scale figures in docs/benchmarks.md: the benchmark's scenario with committees of 7 and
/// 10 at 0, 1 and 5 % loss, and full broadcasts for comparison.
#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn scale_report() {
    for quorum in [5, 7] {
        for loss in [0.0, 0.01, 0.05] {
            let s = thousand_members(quorum, loss);
            let t = std::time::Instant::now();
            let r = s.run();
            println!(
                "1,000 members, quorum {quorum} (committee {}), loss {loss}: {:?}\n  {}",
                r.requests[0].committee.len(),
                t.elapsed(),
                r.summary()
            );
            assert_eq!(r.requests.len(), 100);
        }
    }
    for n in [20, 50] {
        let t = std::time::Instant::now();
        let r = Scenario::new(n)
            .security(5, 0.30, 0.6)
            .requests(10, 700)
            .seed(2026)
            .run();
        println!(
            "full broadcast, {n} nodes: {:?}\n  {}",
            t.elapsed(),
            r.summary()
        );
        assert_eq!(r.requests.len(), 10);
    }
}

/// Share of completed requests whose selected output is from one of `nodes`.
fn selected_share(r: &Report, nodes: &[usize]) -> f64 {
    let picked = r
        .requests
        .iter()
        .filter(|q| matches!(q.status, RequestStatus::Completed { selected, .. } if nodes.contains(&selected)))
        .count();
    picked as f64 / r.completed.max(1) as f64
}

/// Selection steering by salt grinding (before the commit, since the commitment binds the salt):
/// the selection seed hashes every accepted salt, and the others' salts are secret until they
/// reveal, so the grinder is selected at the fair rate 1/5. Measured: 0.195 (64 salts per
/// request) against 0.200 for an honest node 4, over 200 requests.
#[test]
fn salt_grinding_does_not_steer_selection() {
    let honest = default_frame(5, 200, 301)
        .corpus(Corpus::deterministic())
        .run();
    let grind = default_frame(5, 200, 301)
        .corpus(Corpus::deterministic())
        .behaviour(4, Behaviour::GrindSalt { tries: 64 })
        .run();
    assert_all_honest(&grind, "grind");
    let (h, g) = (selected_share(&honest, &[4]), selected_share(&grind, &[4]));
    // Binomial(200, 0.2): standard deviation 0.028.
    assert!(
        (0.12..=0.28).contains(&g),
        "grinder selected {g} (honest {h})"
    );
}

/// Known limit: steering by withholding reveals. A lone node gains nothing (withholding drops it
/// from the accepted set), but a group that reveals last sees every salt first and publishes only
/// the subset of its reveals under which one of its members is selected. Two of five are selected
/// in 0.655 of 200 requests instead of the fair 0.4 (three of five: 0.975 instead of 0.6). The
/// withheld commits still count against the threshold; results arrive ~500 ms later.
#[test]
fn withholding_reveals_steers_selection_for_a_group() {
    let steer = |nodes: Vec<usize>| {
        let r = default_frame(5, 200, 302)
            .corpus(Corpus::deterministic())
            .behaviours(nodes.clone(), Behaviour::SteerSelection { group: 1 })
            .run();
        assert_all_honest(&r, "steering");
        assert_eq!(r.completed, 200, "{}", r.summary());
        selected_share(&r, &nodes)
    };
    let one = steer(vec![4]);
    assert!(one <= 0.28, "a lone steerer selected {one}");
    let two = steer(vec![3, 4]);
    assert!(two >= 0.55, "two steerers selected {two} (fair 0.4)");
}

/// docs/security.md, "withholding": the same under committees, 2 of 7 members steering (fair
/// share 2/7 = 0.286), 200 requests. A committee selects the accepted member drawn first into
/// it, an order fixed before anyone commits, so withholding only removes the withholders:
/// measured 0.29 against 0.275 for the same two members following the protocol. (With the
/// salt-seeded selection under committees: 0.505.) Withheld reveals still cost time: the
/// others fetch them by sync and results come later (mean 1.26 s after the deadline).
#[test]
fn withholding_gain_under_committees() {
    let run = |steer: bool| {
        let mut s = Scenario::new(7)
            .security(5, 0.30, 0.6)
            .committee(Committee::Drawn)
            .corpus(Corpus::deterministic())
            .requests(200, INTERVAL_MS)
            .seed(303);
        if steer {
            s = s.behaviours([2, 5], Behaviour::SteerSelection { group: 1 });
        }
        let r = s.run();
        assert_eq!(r.split_digests, 0, "{}", r.summary());
        assert_eq!(r.wrong_results, 0, "{}", r.summary());
        (selected_share(&r, &[2, 5]), r)
    };
    let (fair, _) = run(false);
    let (steered, r) = run(true);
    assert_eq!(r.completed, 200, "{}", r.summary());
    // Binomial(200, 2/7): standard deviation 0.032.
    assert!((0.2..=0.37).contains(&fair), "fair {fair}");
    assert!(
        steered <= 0.37 && steered - fair <= 0.07,
        "steering selected {steered} (fair {fair})"
    );
}

/// Flood: one node sends valid requests of its own to every node; the honest requests come from
/// the four other members (a membership of five, so every request's committee is all five).
/// Bounds that hold: no node tracks more than `max_open_requests`, and closed requests make room.
/// Fairness: each node answers first the queued request of the requester it served least in the
/// last minute, takes at most `max_open_per_requester` (64) open requests of one requester, and
/// refuses deadlines more than 10 minutes ahead. Measured: 2 flood requests/s with 2 s deadlines
/// left 5 of 40 honest requests completing under earliest-deadline-first scheduling (the same
/// run with the fair order disabled); now 40 of 40. Never a wrong result.
#[test]
fn a_flooder_gets_its_share_and_honest_requests_complete() {
    let flood = |per_second: u32, max_time_ms: u64, cap: usize| {
        let r = default_frame(5, 40, 303)
            .corpus(Corpus::deterministic())
            .committee(Committee::Drawn)
            .max_open_requests(cap)
            .behaviour(
                4,
                Behaviour::Flood {
                    per_second,
                    max_time_ms,
                },
            )
            .run();
        assert!(r.max_tracked_requests <= cap, "{}", r.summary());
        assert_eq!(r.wrong_results, 0, "{}", r.summary());
        assert_eq!(r.adversary_accepted, 0, "{}", r.summary());
        r
    };
    // Within every bound: the fair order serves the honest requesters first.
    let slow = flood(2, 2_000, 10_000);
    assert!(slow.flood_requests >= 50, "{}", slow.summary());
    assert_eq!(slow.completed, 40, "{}", slow.summary());
    // Deadlines an hour ahead: refused, so they fill nothing (a node tracks the 40 honest
    // requests at most).
    let long = flood(20, 3_600_000, 100);
    assert_eq!(long.completed, 40, "{}", long.summary());
    assert!(long.max_tracked_requests <= 40, "{}", long.summary());
    // Deadlines 9 minutes ahead (within the bound), 20/s against a cap of 100: the flooder
    // holds at most 64 open requests per node, the honest requests the rest.
    let held = flood(20, 540_000, 100);
    assert!(held.max_tracked_requests <= 100, "{}", held.summary());
    assert_eq!(held.completed, 40, "{}", held.summary());
    let fast = flood(50, 2_000, 300);
    assert!(fast.flood_requests > 1_000, "{}", fast.summary());
    assert!(fast.max_tracked_requests < 300, "{}", fast.summary());
    assert_eq!(fast.completed, 40, "{}", fast.summary());
}

/// Clock skew of one node of five (quorum 5). Every deadline is judged on the local clock.
/// * ±200 ms with commits well before the deadline: no effect (the slow node's result comes
///   200 ms later).
/// * Commits 1.6–1.95 s into a 2 s deadline: without skew 39 of 40 complete; a node 200 ms ahead
///   drops the commits of its last 200 ms and 18 of 40 complete; a node 200 ms behind changes
///   nothing (40 of 40).
/// * ±2 s (the whole deadline): ahead, the node takes every request for expired and the quorum
///   of 5 is never reached; behind, its reveal comes after the others' reveal window, and they
///   fetch it when its inventory lists it: one result in every request (before inventories,
///   honest nodes signed different results in every request).
///
/// Never a wrong result. (Every envelope passes the receiver's Inbox, whose skew bound is 30 s.)
#[test]
fn clock_skew_near_the_deadline() {
    let early = |offset: i64| {
        default_frame(5, 40, 304)
            .corpus(Corpus::deterministic())
            .clock_offset(4, offset)
            .run()
    };
    let late = |offset: i64| {
        quorum(5, 0.30, 0.6, 40, 304)
            .requests(40, 3_000)
            .corpus(Corpus::deterministic())
            .generation(1_600, 350)
            .clock_offset(4, offset)
            .run()
    };
    for off in [200, -200] {
        assert_all_honest(&early(off), &format!("skew {off} ms"));
    }
    let (none, ahead, behind) = (late(0), late(200), late(-200));
    assert!(none.completed >= 38, "{}", none.summary());
    assert!(ahead.completed <= 30, "{}", ahead.summary());
    assert_eq!(behind.completed, 40, "{}", behind.summary());
    let (far_ahead, far_behind) = (early(2_000), early(-2_000));
    assert_eq!(
        far_ahead.failures.get("quorum not reached"),
        Some(&40),
        "{}",
        far_ahead.summary()
    );
    // Behind by the whole deadline: its reveal comes after the others' window; they see it in
    // its inventory and fetch it (judged by its signed time): one result.
    assert_eq!(far_behind.inconsistent, 0, "{}", far_behind.summary());
    assert_eq!(far_behind.completed, 40, "{}", far_behind.summary());
    for r in [none, ahead, behind, far_ahead, far_behind] {
        assert_eq!(r.wrong_results, 0, "{}", r.summary());
    }
}
