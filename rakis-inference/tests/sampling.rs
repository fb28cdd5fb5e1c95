//! Verifiable sampling with the real SmolLM2-135M: honest answers replay, lies do not.
//!
//! `honest_answers_replay_and_lies_do_not` runs in the README test command (a few answers);
//! `sampling_check_table` is the measurement behind the defaults of
//! `rakis_consensus::sampling::ReplayPolicy` (docs/consensus.md):
//!
//! ```bash
//! cargo test --release -p rakis-inference --test sampling -- --ignored --nocapture
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;

use rakis_core::consensus::sampling::{Ending, Replay, ReplayPolicy};
use rakis_core::{ChatMessage, FinishReason, Hash32};
use rakis_inference::{GenerationOutput, SamplingParams, TextGenerator, WeightFormat};

fn generator(weights: WeightFormat) -> TextGenerator {
    TextGenerator::load(&common::smollm_gguf(), weights, None, None).unwrap()
}

fn never() -> bool {
    false
}

const QUESTIONS: &[&str] = &[
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Which planet is closest to the Sun?",
    "In which year did the Second World War end?",
    "What is the largest ocean on Earth?",
    "Who painted the Mona Lisa?",
    "How many days are in a leap year?",
    "What is the chemical symbol for gold?",
    "Which country has the largest population?",
    "How many continents are there?",
    "Who was the first person to walk on the Moon?",
    "What is the capital of Japan?",
    "How many minutes are in an hour?",
    "What language is spoken in Brazil?",
    "What is the tallest mountain in the world?",
    "Who discovered penicillin?",
    "How many sides does a hexagon have?",
    "What is the capital of Italy?",
];

/// A question as the tests ask it (short factual answers, in English).
fn question(q: &str) -> String {
    format!("{q} Answer in one sentence.")
}

/// Names a fact swap puts in place of another.
const NAMES: &[&str] = &[
    "Lyon", "Berlin", "Madrid", "Einstein", "Newton", "Venus", "Mars", "Atlantic", "Picasso",
    "Osaka", "Milan", "Spanish", "India", "Everest", "Fleming", "Dickens",
];

fn sampling(temperature: f32, top_p: f32, seed: u8, max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature,
        top_p,
        seed: Hash32([seed; 32]),
        max_tokens,
    }
}

fn ending(out: &GenerationOutput) -> Ending {
    match out.finish {
        FinishReason::Eos => Ending::Stop,
        _ => Ending::Limit,
    }
}

/// The answer with one fact swapped: its first number (a run of digits) changed, else its
/// first capitalised word after the first one replaced by a name; `None` when it has neither
/// (the text returned always differs from the answer).
fn fact_swap(text: &str, pick: usize) -> Option<(String, &'static str)> {
    let words: Vec<&str> = text.split(' ').collect();
    for (i, w) in words.iter().enumerate() {
        let Some(start) = w.find(|c: char| c.is_ascii_digit()) else {
            continue;
        };
        let run: String = w[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let Ok(n) = run.parse::<u64>() else {
            continue;
        };
        let changed = format!(
            "{}{}{}",
            &w[..start],
            n + 1 + (pick as u64 % 7),
            &w[start + run.len()..]
        );
        let mut out = words.clone();
        out[i] = &changed;
        return Some((out.join(" "), "number"));
    }
    for (i, w) in words.iter().enumerate().skip(1) {
        let core: String = w.chars().take_while(|c| c.is_alphabetic()).collect();
        if core.len() > 2 && core.chars().next().is_some_and(char::is_uppercase) {
            let name = NAMES[pick % NAMES.len()];
            if name == core {
                continue;
            }
            let changed = format!("{name}{}", &w[core.len()..]);
            let mut out = words.clone();
            out[i] = &changed;
            return Some((out.join(" "), "name"));
        }
    }
    None
}

/// Verdicts of a replay for a range of bands (positions beyond each band, outside, end).
#[derive(Default)]
struct Tally {
    n: u32,
    /// Per band: runs with 0, ≤ 1, ≤ 2 positions beyond it and a good end.
    pass_0: BTreeMap<u32, u32>,
    pass_1: BTreeMap<u32, u32>,
    pass_2: BTreeMap<u32, u32>,
}

const BANDS_PPM: &[u32] = &[0, 1_000, 5_000, 10_000, 20_000, 50_000];

impl Tally {
    fn add(&mut self, r: &Replay, greedy: bool) {
        self.n += 1;
        for &b in BANDS_PPM {
            let band = f64::from(b) / 1e6;
            let policy = |k: u32| ReplayPolicy {
                band,
                greedy_band: band * 25.0,
                beyond_per_100: 0,
                min_beyond: k,
            };
            for (k, map) in [
                (0, &mut self.pass_0),
                (1, &mut self.pass_1),
                (2, &mut self.pass_2),
            ] {
                if r.judge(&policy(k), greedy).is_ok() {
                    *map.entry(b).or_default() += 1;
                }
            }
        }
    }

    fn line(&self, name: &str) -> String {
        let mut s = format!("| {name} | {} |", self.n);
        for &b in BANDS_PPM {
            s += &format!(
                " {}/{}/{} |",
                self.pass_0.get(&b).copied().unwrap_or(0),
                self.pass_1.get(&b).copied().unwrap_or(0),
                self.pass_2.get(&b).copied().unwrap_or(0)
            );
        }
        s
    }
}

#[test]
fn honest_answers_replay_and_lies_do_not() {
    let mut g = generator(WeightFormat::Q8_0);
    let policy = ReplayPolicy::default();
    let messages = vec![ChatMessage::user(question(QUESTIONS[0]))];
    for (t, p) in [(0.0, 1.0), (0.7, 0.9), (1.0, 1.0)] {
        let s = sampling(t, p, 3, 40);
        let out = g.generate(&messages, s, None, &never).unwrap();
        let honest = g
            .replay(&messages, &out.token_ids, s, ending(&out))
            .unwrap();
        assert_eq!(honest.same, honest.tokens, "T {t}: {honest:?}");
        honest.judge(&policy, t == 0.0).unwrap();
        // Cut to half, claiming the model stopped there.
        let half = &out.token_ids[..out.token_ids.len() / 2];
        let cut = g.replay(&messages, half, s, Ending::Stop).unwrap();
        assert!(
            cut.judge(&policy, t == 0.0).is_err(),
            "T {t}: truncation passed: {cut:?}"
        );
        // Another seed than the one that drew it.
        if t > 0.0 {
            let other = g
                .replay(
                    &messages,
                    &out.token_ids,
                    sampling(t, p, 4, 40),
                    ending(&out),
                )
                .unwrap();
            assert!(
                other.judge(&policy, false).is_err(),
                "T {t}: another seed passed"
            );
        }
    }
    // Paris → Lyon (greedy: the answer names Paris).
    let s = sampling(0.0, 1.0, 3, 40);
    let out = g.generate(&messages, s, None, &never).unwrap();
    let text = g.decode(&out.token_ids).unwrap();
    assert!(text.contains("Paris"), "{text}");
    let lie = g.encode(&text.replacen("Paris", "Lyon", 1)).unwrap();
    let r = g.replay(&messages, &lie, s, ending(&out)).unwrap();
    assert!(r.judge(&policy, true).is_err(), "Lyon passed: {r:?}");
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn sampling_check_table() {
    let mut q8 = generator(WeightFormat::Q8_0);
    let mut q4 = generator(WeightFormat::AsStored);
    let configs = [
        (0.0f32, 1.0f32),
        (0.7, 0.9),
        (0.7, 1.0),
        (1.0, 0.9),
        (1.0, 1.0),
    ];
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut swaps = BTreeMap::new();
    let started = std::time::Instant::now();
    let (mut gen_secs, mut replay_secs, mut gen_tokens) = (0.0, 0.0, 0usize);
    let n: usize = std::env::var("RAKIS_TABLE_QUESTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(QUESTIONS.len());
    for (qi, q) in QUESTIONS.iter().enumerate().take(n) {
        let messages = vec![ChatMessage::user(question(q))];
        let pirate = vec![
            ChatMessage::system("Answer like a pirate, in a long sentence."),
            ChatMessage::user(question(q)),
        ];
        for (ci, &(t, p)) in configs.iter().enumerate() {
            for seed in [1u8, 2] {
                let greedy = t == 0.0;
                if greedy && seed == 2 {
                    continue;
                }
                let s = sampling(t, p, seed.wrapping_add(qi as u8 * 7), 48);
                for (gname, gen) in [("q8", &mut q8), ("q4", &mut q4)] {
                    let t0 = std::time::Instant::now();
                    let out = gen.generate(&messages, s, None, &never).unwrap();
                    gen_secs += t0.elapsed().as_secs_f64();
                    gen_tokens += out.token_ids.len();
                    let end = ending(&out);
                    // The same engine and format: bit for bit.
                    let t1 = std::time::Instant::now();
                    let same = gen.replay(&messages, &out.token_ids, s, end).unwrap();
                    replay_secs += t1.elapsed().as_secs_f64();
                    tallies
                        .entry(if gname == "q8" {
                            "honest, same format (q8)"
                        } else {
                            "honest, same format (q4)"
                        })
                        .or_default()
                        .add(&same, greedy);
                    // Lies against the same engine.
                    let ids = &out.token_ids;
                    for (frac, name) in [(5, "truncated to 20 %"), (2, "truncated to 50 %")] {
                        if ids.len() >= 4 {
                            let cut = &ids[..ids.len() / frac];
                            let r = gen.replay(&messages, cut, s, Ending::Stop).unwrap();
                            tallies.entry(name).or_default().add(&r, greedy);
                        }
                    }
                    if !greedy {
                        let other = sampling(t, p, seed.wrapping_add(100), 48);
                        let r = gen.replay(&messages, ids, other, end).unwrap();
                        tallies.entry("another seed").or_default().add(&r, false);
                        let colder = sampling(t * 0.5, p, s.seed.0[0], 48);
                        let r = gen.replay(&messages, ids, colder, end).unwrap();
                        tallies
                            .entry("another temperature (half)")
                            .or_default()
                            .add(&r, false);
                    }
                    let text = gen.decode(ids).unwrap();
                    if let Some((lie, kind)) = fact_swap(&text, qi + ci + usize::from(seed)) {
                        let lie_ids = gen.encode(&lie).unwrap();
                        let r = gen.replay(&messages, &lie_ids, s, end).unwrap();
                        let key = if kind == "number" {
                            "fact swap: number"
                        } else {
                            "fact swap: name"
                        };
                        tallies.entry(key).or_default().add(&r, greedy);
                        *swaps.entry(kind).or_insert(0) += 1;
                    }
                    // Another system prompt (another "model"), claimed for the plain prompt.
                    let pirate_out = gen.generate(&pirate, s, None, &never).unwrap();
                    let r = gen
                        .replay(&messages, &pirate_out.token_ids, s, ending(&pirate_out))
                        .unwrap();
                    tallies
                        .entry("another system prompt")
                        .or_default()
                        .add(&r, greedy);
                }
                // Cross-format: q4's answer verified by q8, and q8's by q4.
                let out4 = q4.generate(&messages, s, None, &never).unwrap();
                let r = q8
                    .replay(&messages, &out4.token_ids, s, ending(&out4))
                    .unwrap();
                tallies
                    .entry("honest, q4 verified by q8")
                    .or_default()
                    .add(&r, greedy);
                let out8 = q8.generate(&messages, s, None, &never).unwrap();
                let r = q4
                    .replay(&messages, &out8.token_ids, s, ending(&out8))
                    .unwrap();
                tallies
                    .entry("honest, q8 verified by q4")
                    .or_default()
                    .add(&r, greedy);
            }
        }
        eprintln!(
            "question {qi} done after {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let mut header = "| case | runs |".to_string();
    for &b in BANDS_PPM {
        header += &format!(" band {:.3} |", f64::from(b) / 1e6);
    }
    println!("passing runs (0 / ≤1 / ≤2 positions beyond the band; greedy: band × 25 in logits)");
    println!("{header}");
    for (name, t) in &tallies {
        println!("{}", t.line(name));
    }
    println!("fact swaps: {swaps:?}");
    println!(
        "generation {gen_tokens} tokens in {gen_secs:.1} s ({:.1} tok/s); same-engine replays {replay_secs:.1} s ({:.2} of generation time)",
        gen_tokens as f64 / gen_secs,
        replay_secs / gen_secs
    );
}

/// Through the `InferenceEngine` trait: the engine scores on its workers what it generated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_scores_what_it_generated() {
    use rakis_core::{GenerationJob, InferenceEngine, RequestId, ScoreJob};
    let engine = rakis_inference::CandleEngine::from_generator(
        generator(WeightFormat::Q8_0),
        rakis_inference::EngineConfig::new("smollm2"),
    );
    let messages = vec![ChatMessage::user(question(QUESTIONS[2]))];
    let seed = Hash32([9; 32]);
    let job = GenerationJob {
        request_id: RequestId([1; 32]),
        model: "smollm2".into(),
        messages: messages.clone(),
        temperature: 0.7,
        top_p: 0.9,
        max_tokens: 32,
        seed,
        deadline_ms: u64::MAX,
    };
    let generation = engine.generate(job).await.unwrap();
    let score = |token_ids: Vec<u32>, seed| ScoreJob {
        request_id: RequestId([1; 32]),
        model: "smollm2".into(),
        messages: messages.clone(),
        text: generation.text.clone(),
        token_ids,
        temperature: 0.7,
        top_p: 0.9,
        max_tokens: 32,
        seed,
        ending: match generation.finish {
            FinishReason::Eos => Ending::Stop,
            _ => Ending::Limit,
        },
        deadline_ms: u64::MAX,
    };
    let r = engine
        .score(score(generation.token_ids.clone(), seed))
        .await
        .unwrap();
    assert_eq!(r.same, r.tokens);
    r.judge(&ReplayPolicy::default(), false).unwrap();
    let other = engine
        .score(score(generation.token_ids.clone(), Hash32([10; 32])))
        .await
        .unwrap();
    assert!(other.judge(&ReplayPolicy::default(), false).is_err());
    // The text must be the ids' decoding.
    let mut job = score(generation.token_ids.clone(), seed);
    job.text.push_str(" And Lyon.");
    let r = engine.score(job).await.unwrap();
    assert_eq!(
        r.judge(&ReplayPolicy::default(), false),
        Err(rakis_core::consensus::sampling::SamplingFault::TextMismatch)
    );
    let mut job = score(generation.token_ids, seed);
    job.model = "another".into();
    assert!(matches!(
        engine.score(job).await,
        Err(rakis_core::EngineError::UnknownModel(_))
    ));
}
