//! Clustering kernel benchmarks: N reveals × all pairs at 384 and 768 bits.
//!
//! `cargo bench -p rakis-consensus --bench cluster`

// `criterion_group!` defines public functions without documentation.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rakis_consensus::{BinaryEmbedding, PackedPoints};

fn points(n: usize, dim: usize, seed: u64) -> Vec<BinaryEmbedding> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..dim)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    if s & 1 == 1 {
                        1.0
                    } else {
                        -1.0
                    }
                })
                .collect();
            BinaryEmbedding::quantize(&v).unwrap()
        })
        .collect()
}

fn bench_largest_ball(c: &mut Criterion) {
    for dim in [384usize, 768] {
        let mut g = c.benchmark_group(format!("largest_ball/{dim}bits"));
        for n in [10usize, 100, 1_000, 10_000] {
            let pts = points(n, dim, 0x9E37_79B9_7F4A_7C15 ^ n as u64);
            let packed = PackedPoints::new(&pts).unwrap();
            let radius = (dim as u32 * 3) / 10;
            g.throughput(Throughput::Elements((n * (n - 1) / 2) as u64));
            if n == 10_000 {
                g.sample_size(10);
            }
            g.bench_with_input(BenchmarkId::new("dispatch", n), &packed, |b, p| {
                b.iter(|| p.largest_ball(radius))
            });
            if n == 1_000 {
                g.bench_with_input(BenchmarkId::new("portable", n), &packed, |b, p| {
                    b.iter(|| p.ball_counts_portable(radius))
                });
                g.bench_with_input(BenchmarkId::new("pack+cluster", n), &pts, |b, pts| {
                    b.iter(|| PackedPoints::new(pts).unwrap().largest_ball(radius))
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench_largest_ball);
criterion_main!(benches);
