//! The adversary simulator with the real all-MiniLM-L6-v2 embedder in place of the bag-of-words
//! `HashEmbedder`: what a real sentence model separates and what it cannot.
//!
//! The table in docs/security.md ("with all-MiniLM-L6-v2") comes from
//! `cargo test -p rakis-inference --release --test sim_minilm -- --ignored --nocapture`.

#![allow(clippy::print_stdout)]

mod common;

use std::sync::Arc;

use rakis_inference::{CandleEmbedder, EmbedderConfig, ModelSource, MINILM};
use rakis_sim::{Behaviour, Corpus, Lie, RequestStatus, Scenario};

fn minilm() -> Arc<CandleEmbedder> {
    Arc::new(
        CandleEmbedder::load(
            &ModelSource::local(common::minilm_dir()),
            EmbedderConfig::new(MINILM),
        )
        .unwrap(),
    )
}

/// Five nodes, quorum 5, the frame `(distance, share)`, `rounds` requests, MiniLM embeddings.
fn scenario(
    e: &Arc<CandleEmbedder>,
    distance: f64,
    share: f64,
    rounds: usize,
    seed: u64,
) -> Scenario {
    let e = e.clone();
    Scenario::new(5)
        .security(5, distance, share)
        .requests(rounds, 700)
        .seed(seed)
        .embedder(move |text| {
            e.embed_binary_sync(&[text.to_string()])
                .map(|mut v| v.pop().expect("one embedding"))
        })
}

#[test]
fn with_minilm_garbage_off_topic_and_freeriders_never_enter_the_ball() {
    let e = minilm();
    for (what, advs) in [
        ("garbage", vec![(4, Behaviour::Garbage)]),
        ("off-topic", vec![(4, Behaviour::OffTopic)]),
        (
            "freeriders",
            vec![(3, Behaviour::Freerider), (4, Behaviour::Freerider)],
        ),
    ] {
        let mut s = scenario(&e, 0.30, 0.6, 40, 7);
        for (i, b) in advs {
            s = s.behaviour(i, b);
        }
        let r = s.run();
        assert_eq!(r.adversary_accepted, 0, "{what}: {}", r.summary());
        assert_eq!(r.wrong_results, 0, "{what}");
        // Honest wording varies: some rounds fail rather than agree, none accept the adversary.
        let honest = r
            .requests
            .iter()
            .filter(|q| matches!(q.status, RequestStatus::Completed { honest: true, .. }))
            .count();
        assert!(
            honest >= 30,
            "{what}: only {honest} of 40 agreed\n{}",
            r.summary()
        );
    }
}

#[test]
fn with_minilm_three_colluders_of_five_still_win() {
    let e = minilm();
    let colluders: Vec<_> = (2..5)
        .map(|i| {
            (
                i,
                Behaviour::Collude {
                    group: 1,
                    lie: Lie::OffTopic,
                },
            )
        })
        .collect();
    let mut s = scenario(&e, 0.30, 0.6, 20, 9).corpus(Corpus::default());
    for (i, b) in colluders {
        s = s.behaviour(i, b);
    }
    let r = s.run();
    // Identical texts have identical embeddings whatever the model: the largest ball is theirs.
    assert_eq!(r.wrong_results, 20, "{}", r.summary());
}

/// The measurement behind the MiniLM table in docs/security.md.
#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn minilm_security_table() {
    const N: usize = 200;
    let e = minilm();
    let frames = [(0.20, 0.6), (0.30, 0.6), (0.40, 0.6), (0.30, 0.8)];
    let colluders = |k: usize, lie: Lie| -> Vec<(usize, Behaviour)> {
        (5 - k..5)
            .map(|i| (i, Behaviour::Collude { group: 1, lie }))
            .collect()
    };
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
        ("colluders fact swap 2/5", colluders(2, Lie::FactSwap)),
        ("colluders off-topic 3/5", colluders(3, Lie::OffTopic)),
    ];
    println!("| case | distance | share | adversary in ball | wrong result | failed |");
    println!("|---|---|---|---|---|---|");
    for (name, advs) in &cases {
        for &(d, p) in &frames {
            let mut s = scenario(&e, d, p, N, 1234);
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
