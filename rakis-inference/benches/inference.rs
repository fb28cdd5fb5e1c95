//! Embedding and generation throughput on the real models, 2 threads.
//!
//! `bash scripts/fetch-models.sh && cargo bench -p rakis-inference --bench inference`
//!
//! Workloads match the peers' benchmark scripts: 256 sentences of 20–60 words
//! (`benches/data/sentences.json`, made by `scripts/fixtures/make_sentences.py`) at
//! batch 1 and 32; a 32-token prompt read in one pass, then 128 greedy single-token decodes
//! with EOS ignored; and the second check: replaying a 100-token sampled answer beside
//! generating it and beside reading the same tokens as one prompt
//! (`smollm2_q8_0_second_check`, and `smollm2_f32_second_check` in f32).
#![allow(missing_docs, clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rakis_inference::{
    CandleEmbedder, EmbedderConfig, ModelSource, TextGenerator, WeightFormat, MINILM,
};

fn sentences() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/data/sentences.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} unreadable: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

const PROMPT: &str = "The history of the city begins with a small settlement on the river, where farmers and traders met every season to exchange grain, salt, wool and stories about distant mountains and the sea.";

fn bench_embedding(c: &mut Criterion) {
    let e = CandleEmbedder::load(
        &ModelSource::local(common::models_dir().join("all-MiniLM-L6-v2")),
        EmbedderConfig::new(MINILM),
    )
    .unwrap();
    let all = sentences();
    let mut g = c.benchmark_group("minilm");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    // The peer's workload: all 256 sentences in one call, in batches of 32 (the embedder's
    // default) or one by one.
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function("batch32", |b| b.iter(|| e.embed_sync(&all).unwrap()));
    g.bench_function("batch1", |b| {
        b.iter(|| {
            for s in &all {
                e.embed_sync(std::slice::from_ref(s)).unwrap();
            }
        })
    });
    g.finish();
}

fn bench_generation(c: &mut Criterion) {
    let gguf = common::models_dir().join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    for (label, weights) in [
        ("q8_0", WeightFormat::Q8_0),
        ("q4_1", WeightFormat::AsStored),
    ] {
        let mut g = TextGenerator::load(&gguf, weights, None, None).unwrap();
        let ids: Vec<u32> = g.encode(PROMPT).unwrap()[..32].to_vec();
        let mut group = c.benchmark_group(format!("smollm2_{label}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(15));
        group.throughput(Throughput::Elements(32));
        group.bench_function("prompt32", |b| b.iter(|| g.forward_prompt(&ids).unwrap()));
        group.throughput(Throughput::Elements(128));
        // The prompt is read in the (untimed) setup of each iteration; only decoding is timed.
        group.bench_function("decode128", |b| {
            b.iter_batched_ref(
                || {
                    let mut g2 = g.clone();
                    let logits = g2.forward_prompt(&ids).unwrap();
                    (g2, logits)
                },
                |(g2, logits)| {
                    for i in 0..128 {
                        let next = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
                        *logits = g2.forward_token(next, ids.len() + i).unwrap();
                    }
                },
                BatchSize::PerIteration,
            )
        });
        // A busy node: four answers decoded together (one pass a step for the four), 128
        // tokens each; throughput counts the tokens of all four.
        group.throughput(Throughput::Elements(4 * 128));
        group.bench_function("decode128_4streams", |b| {
            b.iter_batched_ref(
                || {
                    (0..4)
                        .map(|i| {
                            let mut g2 = g.clone();
                            let logits = g2.forward_prompt(&ids[..32 - 4 * i]).unwrap();
                            (g2, logits)
                        })
                        .collect::<Vec<_>>()
                },
                |streams| {
                    for _ in 0..128 {
                        let next: Vec<u32> = streams
                            .iter()
                            .map(|(_, l)| l.argmax(0).unwrap().to_scalar::<u32>().unwrap())
                            .collect();
                        let mut gs: Vec<&mut TextGenerator> =
                            streams.iter_mut().map(|(g2, _)| g2).collect();
                        let rows = TextGenerator::forward_batch(&mut gs, &next).unwrap();
                        for (b, (_, l)) in streams.iter_mut().enumerate() {
                            *l = rows.get(b).unwrap();
                        }
                    }
                },
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }
}

/// The second check's cost: replaying a 100-token answer (one pass over prompt + answer,
/// every position checked against the canonical sampler) beside generating it, in the default
/// format (Q8_0) and in f32 (the format a committee of mixed engines serves).
fn bench_scoring(c: &mut Criterion) {
    use rakis_core::consensus::sampling::Ending;
    use rakis_core::{ChatMessage, Hash32};
    use rakis_inference::SamplingParams;
    let gguf = common::models_dir().join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    for (name, weights) in [("q8_0", WeightFormat::Q8_0), ("f32", WeightFormat::F32)] {
        let mut g = TextGenerator::load(&gguf, weights, None, None).unwrap();
        let messages = vec![ChatMessage::user(PROMPT)];
        let prompt = g.encode(&g.render(&messages).unwrap()).unwrap();
        let sampling = SamplingParams {
            temperature: 0.7,
            top_p: 0.95,
            seed: Hash32([7; 32]),
            max_tokens: 100,
        };
        // An answer of up to 100 tokens (the same one every time: the seed fixes it).
        let never = || false;
        let answer = g.generate_ids(&prompt, sampling, None, &never).unwrap();
        let ending = match answer.finish {
            rakis_core::FinishReason::Eos => Ending::Stop,
            _ => Ending::Limit,
        };
        println!(
            "{name}: answer of {} tokens ({:?})",
            answer.token_ids.len(),
            answer.finish
        );
        let mut group = c.benchmark_group(format!("smollm2_{name}_second_check"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20));
        group.throughput(Throughput::Elements(answer.token_ids.len() as u64));
        group.bench_function("generate100", |b| {
            b.iter(|| g.generate_ids(&prompt, sampling, None, &never).unwrap())
        });
        group.bench_function("replay100", |b| {
            b.iter(|| {
                g.replay_ids(&prompt, &answer.token_ids, sampling, ending)
                    .unwrap()
            })
        });
        // The same tokens read as one prompt (the output layer on the last row only): what
        // the replay pays beyond the prompt path is the output layer on every answer row and
        // the canonical sampler at every position.
        let all: Vec<u32> = prompt.iter().chain(&answer.token_ids).copied().collect();
        group.bench_function("prompt_of_the_same_tokens", |b| {
            b.iter(|| g.forward_prompt(&all).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, bench_embedding, bench_generation, bench_scoring);
criterion_main!(benches);
