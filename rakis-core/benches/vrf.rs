//! The sampling seed's VRF beside the ECDSA signature every message carries: a node proves one
//! seed per request it answers and checks one proof per reveal it receives, on its event loop.
//! Run with `cargo bench -p rakis-core --bench vrf`.
//!
//! * `keys/vrf_prove`, `keys/vrf_verify`: [`NodeKey::sampling_seed`] and [`vrf::sampling_seed`].
//! * `keys/ecdsa_sign`, `keys/ecdsa_recover`: [`NodeKey::sign_digest`] and
//!   [`rakis_core::identity::recover_signer`], the cost of a message's signature.

// `criterion_group!` defines public functions without documentation.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use rakis_core::{vrf, NodeKey, RequestId};

fn bench_keys(c: &mut Criterion) {
    let key = NodeKey::from_seed(1);
    let node = key.node_id();
    let id = RequestId([3; 32]);
    let (proof, _) = key.sampling_seed(&id);
    let digest = [7u8; 32];
    let signature = key.sign_digest(&digest);

    let mut group = c.benchmark_group("keys");
    group.bench_function("vrf_prove", |b| b.iter(|| key.sampling_seed(&id)));
    group.bench_function("vrf_verify", |b| {
        b.iter(|| vrf::sampling_seed(&node, &id, &proof).expect("the proof holds"))
    });
    group.bench_function("ecdsa_sign", |b| b.iter(|| key.sign_digest(&digest)));
    group.bench_function("ecdsa_recover", |b| {
        b.iter(|| rakis_core::identity::recover_signer(&digest, &signature).expect("it holds"))
    });
    group.finish();
}

criterion_group!(benches, bench_keys);
criterion_main!(benches);
