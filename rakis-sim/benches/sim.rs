//! The simulator at scale: 1,000 nodes (900 answering, 100 verify-only), 100 requests, each
//! served by a sampled committee of 7 answerers and 3 verifiers, quorum 5, default distance and
//! share, 20–50 ms latency, 1 % loss, one off-topic node in ten. Run with
//! `cargo bench -p rakis-sim --bench sim`; the report of one run is logged first.

// `criterion_group!` defines public functions without documentation.
#![allow(missing_docs)]
// The report of one run is printed before criterion's figures.
#![allow(clippy::print_stderr)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rakis_sim::{Behaviour, Committee, NetworkConfig, Scenario};

fn scenario() -> Scenario {
    Scenario::new(1_000)
        .verifier_nodes(100)
        .security(5, 0.30, 0.6)
        .committee(Committee::Sampled {
            answerers: 7,
            verifiers: 3,
        })
        .behaviours((0..900).step_by(10), Behaviour::OffTopic)
        .network(NetworkConfig {
            loss: 0.01,
            ..NetworkConfig::default()
        })
        .requests(100, 100)
        .seed(2026)
}

fn bench_sim(c: &mut Criterion) {
    let s = scenario();
    let started = Instant::now();
    let report = s.run();
    eprintln!(
        "sim 1000 nodes x 100 requests: {:?}\n{}",
        started.elapsed(),
        report.summary()
    );
    let mut group = c.benchmark_group("sim");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("1000_nodes_100_requests", |b| b.iter(|| s.run()));
    group.finish();
}

criterion_group!(benches, bench_sim);
criterion_main!(benches);
