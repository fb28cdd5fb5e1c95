//! The gateway under a burst: 200 concurrent chat completions (one HTTP client each) against
//! the gateway of a 3-node network on libp2p over loopback (scripted engines that answer at
//! once, the hash embedder), all in this process. Each criterion iteration is one burst;
//! criterion reports the time until the last of the 200 has its answer. Printed at the end:
//! per-request latency p50/p99/max over every answered request of every burst, and how many
//! were answered (200) or refused (429, 504).
//!
//! The request deadline is 3 s and the nodes' reveal window 2 s, so an answered request takes
//! at least ~3.5 s (commits close, reveals, certification); what the burst measures is how the
//! gateway queues (`max_submitted` requests with the network at once) and what the nodes
//! sustain.
//!
//! Run: `cargo bench -p rakis-node --bench gateway`

#![allow(clippy::print_stdout, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::Criterion;

const BURST: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = rt.block_on(common::busy_network());
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let counts: Arc<Mutex<[usize; 3]>> = Arc::default();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(30))
        .configure_from_args();
    c.bench_function("gateway/200_concurrent", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (url, latencies, counts) = (net.url.clone(), latencies.clone(), counts.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for reply in common::burst(&url, BURST).await {
                        let mut n = counts.lock().unwrap();
                        match reply.status {
                            200 => {
                                n[0] += 1;
                                latencies.lock().unwrap().push(reply.took);
                            }
                            429 => n[1] += 1,
                            504 => n[2] += 1,
                            other => panic!("status {other}"),
                        }
                    }
                    total += start.elapsed();
                }
                total
            }
        })
    });
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let n = *counts.lock().unwrap();
    println!(
        "gateway/200_concurrent: answered {} (200), refused {} (429) + {} (504); latency of answered p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        n[0],
        n[1],
        n[2],
        percentile(&l, 0.5).as_secs_f64(),
        percentile(&l, 0.99).as_secs_f64(),
        l.last().copied().unwrap_or_default().as_secs_f64()
    );
    rt.block_on(net.shutdown());
}
