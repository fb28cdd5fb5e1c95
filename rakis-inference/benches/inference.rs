//! Embedding and generation throughput on the real models, 2 threads.
//!
//! `bash scripts/fetch-models.sh && cargo bench -p rakis-inference --bench inference`
//!
//! Workloads match the peers' benchmark scripts: 256 sentences of 20–60 words
//! (`benches/data/sentences.json`, made by `scripts/fixtures/make_sentences.py`) at
//! batch 1 and 32; a 32-token prompt read in one pass, then 128 greedy single-token decodes
//! with EOS ignored.
#![allow(missing_docs)]

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
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let batch: Vec<String> = all[..32].to_vec();
    g.throughput(Throughput::Elements(32));
    g.bench_function("batch32", |b| b.iter(|| e.embed_sync(&batch).unwrap()));
    let singles: Vec<String> = all[32..64].to_vec();
    g.bench_function("batch1", |b| {
        b.iter(|| {
            for s in &singles {
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
        group.finish();
    }
}

criterion_group!(benches, bench_embedding, bench_generation);
criterion_main!(benches);
