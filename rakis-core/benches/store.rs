//! Durable store write throughput: every write is one redb transaction synced to disk, so these
//! numbers are mostly the file system's sync latency. Run with
//! `cargo bench -p rakis-core --bench store`; the database lives in a temporary directory
//! (set `TMPDIR` to measure another disk).
//!
//! * `store/commit_record`: one commit written to a request that holds only the request.
//! * `store/full_quorum`: the 13 writes of one quorum of 5 (request, own output, 5 commits,
//!   5 reveals, outcome); criterion's throughput is writes/s, quorums/s is 13 times less.

// `criterion_group!` defines public functions without documentation.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rakis_core::store::StoreOp;
use rakis_core::testing::QuorumFixture;
use rakis_core::{CommitStore, RedbStore};

fn bench_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbStore::open(dir.path().join("bench.redb")).expect("a new store");
    // Distinct requests: a fixture's own quorum is only written once per store.
    let mut nonce = 0u64;
    let template = QuorumFixture::new(5, 0);

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function("commit_record", |b| {
        b.iter_batched(
            || {
                nonce += 1;
                let mut request = template.request.clone();
                request.nonce = nonce;
                let mut commit = template.commits[1].clone();
                commit.commit.request_id = request.id();
                rt.block_on(store.apply(StoreOp::Request(request)))
                    .expect("request stored");
                commit
            },
            |commit| {
                rt.block_on(store.apply(StoreOp::Commit(commit)))
                    .expect("commit stored")
            },
            BatchSize::SmallInput,
        )
    });

    let ops_per_quorum = template.ops().len() as u64;
    group.throughput(Throughput::Elements(ops_per_quorum));
    group.bench_function("full_quorum", |b| {
        b.iter_batched(
            || {
                nonce += 1;
                QuorumFixture::new(5, nonce).ops()
            },
            |ops| {
                for op in ops {
                    rt.block_on(store.apply(op)).expect("write stored");
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
