//! The simulator at scale: 1,000 members, 100 requests, each served by the committee of 7 that
//! every member draws from the membership (quorum 5 plus spares), default distance and share,
//! signed envelopes through every receiver's inbox, 20–50 ms latency, 1 % loss, one off-topic
//! node in ten. Run with
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
        .security(5, 0.30, 0.6)
        .committee(Committee::Drawn)
        .behaviours((0..1_000).step_by(10), Behaviour::OffTopic)
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
