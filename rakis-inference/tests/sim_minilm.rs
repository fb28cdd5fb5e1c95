//! The adversary simulator with the real all-MiniLM-L6-v2 embedder in place of the bag-of-words
//! `HashEmbedder`: what a real sentence model separates and what it cannot.
//!
//! The table in docs/security.md ("with all-MiniLM-L6-v2") comes from
//! `cargo test -p rakis-inference --release --test sim_minilm -- --ignored --nocapture`.

#![allow(clippy::print_stdout)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rakis_core::consensus::sampling::ReplayPolicy;
use rakis_core::{EngineError, Generation, GenerationJob, Score, ScoreJob};
use rakis_inference::{
    CandleEmbedder, EmbedderConfig, ModelSource, TextGenerator, WeightFormat, MINILM,
};
use rakis_sim::{Behaviour, Corpus, Lie, RequestStatus, Scenario, SimModel};

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

/// SmolLM2-135M-Instruct in the simulator (synchronously, one generator): honest nodes answer
/// with it, liars rewrite its answers, nodes replay reveals with it. Generations and replays
/// are cached by job, so the cases of one table (same seed: same requests, keys and VRF seeds)
/// share them; `replays: false` answers every score job with `Unsupported` (the check off).
struct Smol {
    generator: Mutex<TextGenerator>,
    replays: bool,
    generated: Arc<Mutex<HashMap<String, Generation>>>,
    scored: Arc<Mutex<HashMap<String, Score>>>,
}

impl Smol {
    fn with_replays(&self, replays: bool) -> Smol {
        Smol {
            generator: Mutex::new(self.generator.lock().unwrap().clone()),
            replays,
            generated: self.generated.clone(),
            scored: self.scored.clone(),
        }
    }
}

/// The value under `key`, computed by `make` and kept on the first call.
fn cached<T: Clone>(
    cache: &Mutex<HashMap<String, T>>,
    key: String,
    make: impl FnOnce() -> Result<T, rakis_inference::InferenceError>,
) -> Result<T, EngineError> {
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return Ok(v.clone());
    }
    let v = make().map_err(EngineError::from)?;
    cache.lock().unwrap().insert(key, v.clone());
    Ok(v)
}

impl SimModel for Smol {
    fn generate(&self, job: &GenerationJob) -> Result<Generation, EngineError> {
        let key = format!(
            "{:?}",
            (
                &job.messages,
                &job.seed,
                job.temperature,
                job.top_p,
                job.max_tokens
            )
        );
        cached(&self.generated, key, || {
            self.generator
                .lock()
                .unwrap()
                .run_job(job, false, &|| false)
        })
    }

    fn score(&self, job: &ScoreJob) -> Result<Score, EngineError> {
        if !self.replays {
            return Err(EngineError::Unsupported("the check is off".into()));
        }
        let key = format!(
            "{:?}",
            ScoreJob {
                deadline_ms: 0,
                ..job.clone()
            }
        );
        let score = cached(&self.scored, key, || {
            self.generator.lock().unwrap().score(job)
        })?;
        // RAKIS_SIM_SHOW=1: every reveal that passes the replay while differing from what its
        // seed generates (a lie the check let through), with the honest answer beside it.
        if std::env::var_os("RAKIS_SIM_SHOW").is_some()
            && score
                .judge(&ReplayPolicy::default(), job.temperature <= 0.0)
                .is_ok()
        {
            let honest = self.generate(&GenerationJob {
                request_id: job.request_id,
                model: job.model.clone(),
                messages: job.messages.clone(),
                temperature: job.temperature,
                top_p: job.top_p,
                max_tokens: job.max_tokens,
                seed: job.seed,
                deadline_ms: 0,
            })?;
            if honest.token_ids != job.token_ids {
                println!(
                    "passed lie: {:?} ({:?}) against {:?} ({:?}); replay {score:?}",
                    job.text, job.ending, honest.text, honest.finish
                );
            }
        }
        Ok(score)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.generator
            .lock()
            .unwrap()
            .encode(text)
            .map_err(EngineError::from)
    }
}

/// The measurement behind the MiniLM table's rows with the second check (docs/security.md):
/// real SmolLM2 answers at temperature 0.7 / top-p 0.95 (up to 32 tokens), one liar of five,
/// each case with the check off and on. `RAKIS_SIM_ROUNDS` rounds (default 60).
#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn minilm_security_table_with_the_second_check() {
    let rounds: usize = std::env::var("RAKIS_SIM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let e = minilm();
    let smol = Smol {
        generator: Mutex::new(
            TextGenerator::load(&common::smollm_gguf(), WeightFormat::AsStored, None, None)
                .unwrap(),
        ),
        replays: true,
        generated: Default::default(),
        scored: Default::default(),
    };
    let cases: Vec<(&str, Option<Behaviour>)> = vec![
        ("all honest", None),
        ("fact swap 1/5", Some(Behaviour::FactSwap)),
        (
            "truncated 20% 1/5",
            Some(Behaviour::Truncated { percent: 20 }),
        ),
        (
            "truncated 50% 1/5",
            Some(Behaviour::Truncated { percent: 50 }),
        ),
    ];
    // RAKIS_SIM_CASES=2,4 runs only those cases (1-based); RAKIS_SIM_CHECK=on only the check on.
    let only: Option<Vec<usize>> = std::env::var("RAKIS_SIM_CASES")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect());
    let checks: Vec<bool> = match std::env::var("RAKIS_SIM_CHECK").as_deref() {
        Ok("on") => vec![true],
        Ok("off") => vec![false],
        _ => vec![false, true],
    };
    println!("| case (SmolLM2 answers) | second check | adversary in ball (rounds with a lie) | wrong result | failed | honest answers left out |");
    println!("|---|---|---|---|---|---|");
    for (c, (name, b)) in cases.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&(c + 1))) {
            continue;
        }
        for &replays in &checks {
            let mut s = scenario(&e, 0.30, 0.6, rounds, 1234)
                .model(Arc::new(smol.with_replays(replays)))
                .sampling(0.7, 0.95, 32);
            if let Some(b) = b {
                s = s.behaviour(4, b.clone());
            }
            let r = s.run();
            let (_, wrong, failed) = r.rates_percent();
            // Rounds where the liar's rewrite changed nothing (no fact in the model's answer, a
            // prefix as long as the answer) had no lie to catch.
            let lies: Vec<_> = r.requests.iter().filter(|q| !q.lie_unchanged).collect();
            let in_ball = lies.iter().filter(|q| q.adversary_accepted).count();
            println!(
                "| {name} | {} | {:.1} % ({in_ball} of {}) | {wrong:.1} % | {failed:.1} % | {:.1} % ({} of {}) |",
                if replays { "on" } else { "off" },
                100.0 * in_ball as f64 / lies.len().max(1) as f64,
                lies.len(),
                r.honest_left_out_percent(),
                r.honest_left_out.0,
                r.honest_left_out.1,
            );
        }
    }
}
