//! The canonical sampler over a real vocabulary's size: building the top-p distribution of
//! 49,152 logits (SmolLM2's vocabulary) and drawing / checking a token, as every generated and
//! every replayed position does.
//!
//! `cargo bench -p rakis-consensus --bench sampling`

// `criterion_group!` defines public functions without documentation.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use rakis_consensus::sampling::{Distribution, SamplerSpec};

/// Logits shaped like a small model's: most tokens far below a few dozen candidates.
fn logits(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let noise = (s % 10_000) as f32 / 10_000.0;
            if i % 997 == 0 {
                14.0 + 4.0 * noise
            } else {
                -4.0 + 12.0 * noise
            }
        })
        .collect()
}

fn bench_sampling(c: &mut Criterion) {
    let l = logits(49_152, 7);
    let spec = SamplerSpec {
        temperature: 0.7,
        top_p: 0.95,
    };
    let mut g = c.benchmark_group("sampler_49152");
    g.bench_function("distribution", |b| {
        b.iter(|| Distribution::new(std::hint::black_box(&l), spec))
    });
    let d = Distribution::new(&l, spec);
    let token = d.sample(0.37).unwrap();
    g.bench_function("sample", |b| {
        b.iter(|| d.sample(std::hint::black_box(0.37)))
    });
    g.bench_function("check", |b| {
        b.iter(|| d.check(std::hint::black_box(&l), 0.37, token))
    });
    g.finish();
}

criterion_group!(benches, bench_sampling);
criterion_main!(benches);
