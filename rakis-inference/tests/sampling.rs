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

/// The question set (shared with the llama.cpp fixture, which lists it): the first
/// `numeric_questions` have a number for an answer.
fn questions() -> (Vec<String>, String) {
    let f = common::fixture(LLAMA_Q4_1);
    let qs = f["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap().to_string())
        .collect();
    (qs, f["suffix"].as_str().unwrap().to_string())
}

/// A question as the tests ask it (short factual answers, in English; the fixture's suffix).
fn question(q: &str) -> String {
    format!("{q} Answer in one sentence.")
}

/// "What is the capital of France?" (greedy answers name Paris).
const FRANCE: &str = "What is the capital of France?";

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
    /// The largest distance of a position drawn otherwise, over every run (logits).
    max_near: f64,
}

/// Logit tolerances swept, in millionths of a logit.
const BANDS_PPM: &[u32] = &[
    5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 300_000, 500_000,
];

impl Tally {
    fn add(&mut self, r: &Replay, greedy: bool) {
        self.n += 1;
        for &(_, d) in &r.near {
            self.max_near = self.max_near.max(d);
        }
        for &b in BANDS_PPM {
            let band = f64::from(b) / 1e6;
            let policy = |k: u32| ReplayPolicy {
                band,
                greedy_band: band,
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
        s + &format!(" {:.4} |", self.max_near)
    }
}

#[test]
fn honest_answers_replay_and_lies_do_not() {
    let mut g = generator(WeightFormat::Q8_0);
    let policy = ReplayPolicy::default();
    let messages = vec![ChatMessage::user(question(FRANCE))];
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

/// One answer of the llama.cpp fixture (`scripts/fixtures/make_sampling_fixtures.py`).
struct FixtureAnswer {
    messages: Vec<ChatMessage>,
    prompt_ids: Vec<u32>,
    sampling: SamplingParams,
    token_ids: Vec<u32>,
    ending: Ending,
    text: String,
}

fn fixture_answers_in(file: &str, key: &str) -> Vec<FixtureAnswer> {
    let f = common::fixture(file);
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .map(|a| a.iter().map(|x| x.as_u64().unwrap() as u32).collect())
            .unwrap_or_default()
    };
    f[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| FixtureAnswer {
            messages: r["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| match m["role"].as_str().unwrap() {
                    "system" => ChatMessage::system(m["content"].as_str().unwrap()),
                    _ => ChatMessage::user(m["content"].as_str().unwrap()),
                })
                .collect(),
            prompt_ids: ids(&r["prompt_ids"]),
            sampling: SamplingParams {
                temperature: r["temperature"].as_f64().unwrap() as f32,
                top_p: r["top_p"].as_f64().unwrap() as f32,
                seed: r["seed"].as_str().unwrap().parse().unwrap(),
                max_tokens: r["max_tokens"].as_u64().unwrap() as usize,
            },
            token_ids: ids(&r["token_ids"]),
            ending: match r["ending"].as_str() {
                Some("Limit") => Ending::Limit,
                _ => Ending::Stop,
            },
            text: r["text"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// Verdicts of the default policy per case, with a band sweep ([`Tally`]) beside them.
#[derive(Default)]
struct Verdicts {
    /// Case → (runs, runs the default policy accepts).
    cases: BTreeMap<String, (u32, u32)>,
    tallies: BTreeMap<String, Tally>,
    /// Honest runs rejected and lies accepted, for the report.
    surprises: Vec<String>,
}

impl Verdicts {
    /// Records a replay; returns whether the default policy accepts it.
    fn add(&mut self, case: &str, honest: bool, r: &Replay, greedy: bool, what: &str) -> bool {
        let verdict = r.judge(&ReplayPolicy::default(), greedy);
        let e = self.cases.entry(case.to_string()).or_default();
        e.0 += 1;
        e.1 += u32::from(verdict.is_ok());
        self.tallies
            .entry(case.to_string())
            .or_default()
            .add(r, greedy);
        if verdict.is_ok() != honest {
            self.surprises
                .push(format!("{case}: {what} → {verdict:?} {r:?}"));
        }
        verdict.is_ok()
    }

    /// (runs, accepted) over the cases whose name starts with `prefix`.
    fn sum(&self, prefix: &str) -> (u32, u32) {
        self.cases
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .fold((0, 0), |a, (_, v)| (a.0 + v.0, a.1 + v.1))
    }

    fn print(&self) {
        println!("| case | runs | accepted (default policy) |");
        println!("|---|---|---|");
        for (name, (n, ok)) in &self.cases {
            println!(
                "| {name} | {n} | {ok} ({:.1} %) |",
                100.0 * f64::from(*ok) / f64::from(*n)
            );
        }
        let mut header = "| case | runs |".to_string();
        for &b in BANDS_PPM {
            header += &format!(" {} |", f64::from(b) / 1e6);
        }
        header += " largest distance |";
        println!(
            "\ntolerance sweep: passing runs (0 / ≤1 / ≤2 positions beyond the tolerance, in logits)"
        );
        println!("{header}");
        for (name, t) in &self.tallies {
            println!("{}", t.line(name));
        }
        for s in &self.surprises {
            println!("surprise: {s}");
        }
    }
}

/// Replays a lie built from the text of an honest answer (one fact swapped), if the text has
/// a fact to swap; the case says which kind.
fn replay_fact_swap(
    g: &mut TextGenerator,
    v: &mut Verdicts,
    prompt: &[u32],
    text: &str,
    pick: usize,
    s: SamplingParams,
    end: Ending,
) {
    let Some((lie, kind)) = fact_swap(text, pick) else {
        return;
    };
    let lie_ids = g.encode(&lie).unwrap();
    let r = g.replay_ids(prompt, &lie_ids, s, end).unwrap();
    v.add(
        &format!("lie: fact swap ({kind})"),
        false,
        &r,
        s.temperature <= 0.0,
        &lie,
    );
}

/// The llama.cpp fixtures (`scripts/fixtures/make_sampling_fixtures.py`): SmolLM2's weights
/// computed in f32 (the GGUF dequantized, f32 KV cache), and as stored (Q4_1, 8-bit
/// activations, f16 KV cache; this file also holds the Gemma answers).
const LLAMA_F32: &str = "sampling_llama_cpp_f32.json";
const LLAMA_Q4_1: &str = "sampling_llama_cpp.json";

/// Replays llama.cpp's answers with `g`: the honest answers of fixture `honest.0` (case name
/// `honest.1`) and one fact swapped in each (`check_prompts`: asserting candle's prompt ids are
/// llama.cpp's), then Gemma's answers claimed as SmolLM2's.
fn replay_fixture(
    g: &mut TextGenerator,
    v: &mut Verdicts,
    honest: Option<(&str, &str)>,
    check_prompts: bool,
) {
    let answers = honest.map_or_else(Vec::new, |(file, _)| fixture_answers_in(file, "honest"));
    assert!(
        honest.is_none() || answers.len() >= 150,
        "{} answers",
        answers.len()
    );
    for (i, a) in answers.iter().enumerate() {
        if check_prompts {
            // The prompt as candle renders and tokenises it is llama.cpp's, id for id.
            let ours = g.encode(&g.render(&a.messages).unwrap()).unwrap();
            assert_eq!(ours, a.prompt_ids, "prompt of answer {i}");
        }
        let r = g
            .replay_ids(&a.prompt_ids, &a.token_ids, a.sampling, a.ending)
            .unwrap();
        v.add(
            honest.map_or("", |h| h.1),
            true,
            &r,
            a.sampling.temperature <= 0.0,
            &a.text,
        );
        let text = g.decode(&a.token_ids).unwrap();
        replay_fact_swap(g, v, &a.prompt_ids, &text, i, a.sampling, a.ending);
    }
    for a in fixture_answers_in(LLAMA_Q4_1, "other_model_answers") {
        let prompt = g.encode(&g.render(&a.messages).unwrap()).unwrap();
        let lie = g.encode(&a.text).unwrap();
        let r = g
            .replay_ids(&prompt, &lie, a.sampling, Ending::Stop)
            .unwrap();
        v.add(
            "lie: another model (Gemma 3 270M)",
            false,
            &r,
            a.sampling.temperature <= 0.0,
            &a.text,
        );
    }
}

/// [`replay_fixture`] of llama.cpp fixture `file` in a fresh candle generator of `weights`;
/// prints the verdicts and returns them.
fn replay_llama_cpp(
    weights: WeightFormat,
    file: &str,
    case: &str,
    check_prompts: bool,
) -> Verdicts {
    let mut g = generator(weights);
    let mut v = Verdicts::default();
    replay_fixture(&mut g, &mut v, Some((file, case)), check_prompts);
    v.print();
    v
}

/// The second engine: every llama.cpp answer of the fixture (SmolLM2's weights computed in f32,
/// the canonical sampler in Python) replays in candle on the same weights; the same answers with
/// one fact swapped, and answers of another model (Gemma 3 270M) claimed as SmolLM2's, do not.
#[test]
fn llama_cpp_answers_replay_in_candle_and_other_models_do_not() {
    let v = replay_llama_cpp(
        WeightFormat::F32,
        LLAMA_F32,
        "honest: llama.cpp F32, candle F32 verifies",
        true,
    );
    // The issue's bars across engines: ≤ 0.1 % of honest answers rejected (none of 150), lies
    // rejected ≥ 99 %.
    let (n, ok) = v.sum("honest");
    assert_eq!(ok, n, "{} of {n} honest llama.cpp answers rejected", n - ok);
    let (n, ok) = v.sum("lie");
    assert!(n >= 200, "{n} lies");
    assert!(
        f64::from(ok) <= 0.01 * f64::from(n),
        "{ok} of {n} lies accepted"
    );
}

/// The block format across engines (llama.cpp and candle on the Q4_1 file as stored, both
/// quantizing activations to 8 bits): the logits differ by tenths, so the default tolerance
/// rejects some honest answers and a wider one lets number swaps through — why a committee
/// that mixes engines serves the f32 format (docs/consensus.md). Prints the tolerance sweep.
#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn block_format_answers_across_engines() {
    replay_llama_cpp(
        WeightFormat::AsStored,
        LLAMA_Q4_1,
        "honest: llama.cpp Q4_1, candle Q4_1 verifies",
        false,
    );
}

/// One candle generation of the table, as a child process with another thread count writes it.
fn candle_runs(g: &mut TextGenerator, qs: &[String]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (qi, q) in qs.iter().enumerate() {
        let messages = vec![ChatMessage::user(question(q))];
        for (ci, &(t, p)) in CONFIGS.iter().enumerate() {
            let s = sampling(t, p, seed_byte(qi, ci), 48);
            let o = g.generate(&messages, s, None, &never).unwrap();
            out.push(serde_json::json!({
                "question": qi, "config": ci, "token_ids": o.token_ids,
                "ending": if ending(&o) == Ending::Stop { "Stop" } else { "Limit" },
            }));
        }
    }
    out
}

/// The table's sampling settings: temperatures 0, 0.7, 1.0 and top-p 0.9 / 1.0.
const CONFIGS: [(f32, f32); 5] = [(0.0, 1.0), (0.7, 0.9), (0.7, 1.0), (1.0, 0.9), (1.0, 1.0)];

fn seed_byte(qi: usize, ci: usize) -> u8 {
    (qi * CONFIGS.len() + ci + 1) as u8
}

fn questions_taken() -> Vec<String> {
    let n: usize = std::env::var("RAKIS_TABLE_QUESTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    questions().0.into_iter().take(n).collect()
}

/// Child of `sampling_check_table`: with `RAKIS_SAMPLING_OUT` set, generates the table's
/// candle answers in this process (whose thread count the parent chose with
/// `RAYON_NUM_THREADS`) for both weight formats and writes them there.
#[test]
#[ignore = "run by sampling_check_table in a child process"]
fn candle_answers_with_this_thread_count() {
    let Some(path) = std::env::var_os("RAKIS_SAMPLING_OUT") else {
        return;
    };
    let qs = questions_taken();
    let doc = serde_json::json!({
        "Q8_0": candle_runs(&mut generator(WeightFormat::Q8_0), &qs),
        "Q4_1": candle_runs(&mut generator(WeightFormat::AsStored), &qs),
        "F32": candle_runs(&mut generator(WeightFormat::F32), &qs),
    });
    std::fs::write(path, doc.to_string()).unwrap();
}

/// The measurement behind `ReplayPolicy::default()` and the proof of the second check: honest
/// answers of candle (Q8_0, Q4_1 as stored and F32; 1 and 2 threads) and of llama.cpp (the f32
/// fixture) pass;
/// fact swaps, truncations, another system prompt, another seed or temperature than declared and
/// another model's answers fail. A lie is counted only when it differs from what the declared
/// settings produce (an "other seed" answer identical to the declared seed's is no lie).
#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn sampling_check_table() {
    let qs = questions_taken();
    // Answers of a one-thread candle, generated by a child process.
    let child_out =
        std::env::temp_dir().join(format!("rakis-sampling-{}.json", std::process::id()));
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "candle_answers_with_this_thread_count",
            "--nocapture",
        ])
        .env("RAYON_NUM_THREADS", "1")
        .env("RAKIS_SAMPLING_OUT", &child_out)
        .status()
        .unwrap();
    assert!(status.success());
    let one_thread: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&child_out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&child_out);

    let mut v = Verdicts::default();
    let started = std::time::Instant::now();
    for (fmt, weights) in [
        ("Q8_0", WeightFormat::Q8_0),
        ("Q4_1", WeightFormat::AsStored),
        ("F32", WeightFormat::F32),
    ] {
        let mut g = generator(weights);
        let (mut gen_secs, mut replay_secs, mut gen_tokens) = (0.0, 0.0, 0usize);
        // One thread's answers, verified here (two threads).
        for run in one_thread[fmt].as_array().unwrap() {
            let (qi, ci) = (
                run["question"].as_u64().unwrap() as usize,
                run["config"].as_u64().unwrap() as usize,
            );
            let (t, p) = CONFIGS[ci];
            let s = sampling(t, p, seed_byte(qi, ci), 48);
            let ids: Vec<u32> = run["token_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let end = if run["ending"] == "Stop" {
                Ending::Stop
            } else {
                Ending::Limit
            };
            let messages = vec![ChatMessage::user(question(&qs[qi]))];
            let r = g.replay(&messages, &ids, s, end).unwrap();
            v.add(
                &format!("honest: candle {fmt} 1 thread, candle {fmt} 2 threads verifies"),
                true,
                &r,
                t == 0.0,
                &g.decode(&ids).unwrap(),
            );
        }
        for (qi, q) in qs.iter().enumerate() {
            let messages = vec![ChatMessage::user(question(q))];
            let prompt = g.encode(&g.render(&messages).unwrap()).unwrap();
            let pirate = vec![
                ChatMessage::system("Answer like a pirate, in a long sentence."),
                ChatMessage::user(question(q)),
            ];
            for (ci, &(t, p)) in CONFIGS.iter().enumerate() {
                let greedy = t == 0.0;
                let s = sampling(t, p, seed_byte(qi, ci), 48);
                let t0 = std::time::Instant::now();
                let out = g.generate(&messages, s, None, &never).unwrap();
                gen_secs += t0.elapsed().as_secs_f64();
                gen_tokens += out.token_ids.len();
                let end = ending(&out);
                let ids = &out.token_ids;
                let t1 = std::time::Instant::now();
                let r = g.replay_ids(&prompt, ids, s, end).unwrap();
                replay_secs += t1.elapsed().as_secs_f64();
                v.add(
                    &format!("honest: candle {fmt} 2 threads, candle {fmt} 2 threads verifies"),
                    true,
                    &r,
                    greedy,
                    &out.text,
                );
                // Truncations claiming the model stopped there.
                for (frac, name) in [(5, "20 %"), (2, "50 %")] {
                    let cut = &ids[..ids.len() / frac];
                    if ids.len() >= 2 {
                        let r = g.replay_ids(&prompt, cut, s, Ending::Stop).unwrap();
                        v.add(
                            &format!("lie: truncated to {name}"),
                            false,
                            &r,
                            greedy,
                            &g.decode(cut).unwrap(),
                        );
                    }
                }
                replay_fact_swap(&mut g, &mut v, &prompt, &out.text, qi + ci, s, end);
                // Another system prompt's answer (another "model"), claimed for this prompt.
                let po = g.generate(&pirate, s, None, &never).unwrap();
                if po.token_ids != *ids {
                    let r = g
                        .replay_ids(&prompt, &po.token_ids, s, ending(&po))
                        .unwrap();
                    v.add("lie: another system prompt", false, &r, greedy, &po.text);
                }
                if greedy {
                    continue;
                }
                // This answer claimed under another seed, and under half the temperature: lies
                // only where those settings produce something else.
                for (case, declared) in [
                    (
                        "lie: another seed than declared",
                        sampling(t, p, seed_byte(qi, ci).wrapping_add(128), 48),
                    ),
                    (
                        "lie: another temperature than declared (T/2)",
                        sampling(t * 0.5, p, seed_byte(qi, ci), 48),
                    ),
                ] {
                    let theirs = g.generate(&messages, declared, None, &never).unwrap();
                    if theirs.token_ids != *ids {
                        let r = g.replay_ids(&prompt, ids, declared, end).unwrap();
                        v.add(case, false, &r, false, &out.text);
                    }
                }
            }
            eprintln!(
                "{fmt}: question {qi} done after {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        // Another model's answers (Gemma 3 270M) claimed as this one's, and the second
        // engine's (llama.cpp's answers on the f32 weights: that format's verifier).
        let llama =
            (fmt == "F32").then_some((LLAMA_F32, "honest: llama.cpp F32, candle F32 verifies"));
        replay_fixture(&mut g, &mut v, llama, false);
        println!(
            "{fmt}: generation {gen_tokens} tokens in {gen_secs:.1} s ({:.1} tok/s); same-engine replays {replay_secs:.1} s ({:.2} of generation time)",
            gen_tokens as f64 / gen_secs,
            replay_secs / gen_secs
        );
    }
    v.print();
    let (hn, hok) = v.sum("honest");
    let (ln, lok) = v.sum("lie");
    println!(
        "honest: {hok}/{hn} accepted; lies: {} of {ln} rejected ({:.2} %)",
        ln - lok,
        100.0 * f64::from(ln - lok) / f64::from(ln)
    );
    // The proof's bars: no honest answer fails (candle in every format, 1 and 2 threads;
    // llama.cpp on the f32 weights); lies are rejected ≥ 99 %.
    assert_eq!(hok, hn, "honest answers rejected");
    assert!(
        f64::from(lok) <= 0.01 * f64::from(ln),
        "{lok} of {ln} lies accepted"
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
    let messages = vec![ChatMessage::user(question("Who wrote Romeo and Juliet?"))];
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

/// How far candle's logits lie from llama.cpp's on the same weights: the figures behind the
/// default tolerance (docs/consensus.md). Reads `RAKIS_LLAMA_LOGITS` (`PATH` of
/// `scripts/fixtures/dump_llama_cpp_logits.py --out PATH`: llama.cpp's decode-mode logits of
/// a fixture's first answers) and compares them, row for row, with what candle's replay
/// computes in `RAKIS_SAMPLING_WEIGHTS` (`f32`, or the GGUF as stored); prints the median and
/// largest of each row's largest difference over the vocabulary, and the same over the
/// tokens of the row's nucleus at T 1 / top-p 0.9.
#[test]
#[ignore = "measurement; needs llama.cpp's logits (RAKIS_LLAMA_LOGITS)"]
fn engine_logit_differences() {
    let Some(base) = std::env::var_os("RAKIS_LLAMA_LOGITS") else {
        return;
    };
    let base = std::path::PathBuf::from(base);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.with_extension("json")).unwrap())
            .unwrap();
    let theirs = candle_core::Tensor::read_npy(base.with_extension("npy")).unwrap();
    let weights = match std::env::var("RAKIS_SAMPLING_WEIGHTS").as_deref() {
        Ok("f32") => WeightFormat::F32,
        _ => WeightFormat::AsStored,
    };
    let mut g = generator(weights);
    let fixture = meta["fixture"].as_str().unwrap();
    let answers = fixture_answers_in(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(fixture)
            .to_str()
            .unwrap(),
        "honest",
    );
    let (mut all, mut nucleus) = (Vec::new(), Vec::new());
    let mut at = 0;
    for entry in meta["answers"].as_array().unwrap() {
        let a = &answers[entry["answer"].as_u64().unwrap() as usize];
        let n = entry["rows"].as_u64().unwrap() as usize;
        let first = g.forward_prompt(&a.prompt_ids).unwrap();
        let mut ours = vec![first.to_vec1::<f32>().unwrap()];
        if n > 1 {
            let rows = g
                .forward_rows(&a.token_ids[..n - 1], a.prompt_ids.len())
                .unwrap();
            ours.extend(rows.to_vec2::<f32>().unwrap());
        }
        for (k, mine) in ours.iter().enumerate() {
            let other = theirs.get(at + k).unwrap().to_vec1::<f32>().unwrap();
            let diff = |i: usize| f64::from((mine[i] - other[i]).abs());
            all.push((0..mine.len()).map(diff).fold(0.0, f64::max));
            // The tokens that matter to a draw: the nucleus of T 1, top-p 0.9 on our logits.
            let max = mine.iter().copied().fold(f32::MIN, f32::max);
            let mut by: Vec<usize> = (0..mine.len()).collect();
            by.sort_by(|&x, &y| mine[y].total_cmp(&mine[x]));
            let total: f64 = mine.iter().map(|&l| f64::from(l - max).exp()).sum();
            let (mut run, mut worst) = (0.0, 0.0f64);
            for &i in &by {
                worst = worst.max(diff(i));
                run += f64::from(mine[i] - max).exp();
                if run >= 0.9 * total {
                    break;
                }
            }
            nucleus.push(worst);
        }
        at += n;
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (a50, amax) = stats(&mut all);
    let (n50, nmax) = stats(&mut nucleus);
    println!(
        "{} rows ({:?} weights vs {}): largest |Δ| over the vocabulary: median {a50:.6}, max {amax:.6}; over the nucleus: median {n50:.6}, max {nmax:.6}",
        all.len(),
        weights,
        base.display()
    );
}
