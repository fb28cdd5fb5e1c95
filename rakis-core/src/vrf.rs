//! A verifiable random function of the node key: ECVRF with try-and-increment hash-to-curve on
//! secp256k1 and SHA-256, in the form of RFC 9381 (suite string `0xFE`, through the pure-Rust
//! `vrf_fun` crate). For a given input a node has exactly one output, which only it can compute
//! and anyone can check against its node id. The seed of a committer's sampling is its VRF output
//! over the request id ([`sampling_seed`]): it cannot choose the seed (no re-sampling until the
//! model happens to say what it wants), and nobody can predict it before the node reveals it.
//!
//! Proving or checking costs about as much as an ECDSA signature (`cargo bench -p rakis-core
//! --bench vrf`): every node checks the proof of every reveal it receives, on its event loop.

use secp256kfun::{KeyPair, Point, Scalar};
use vrf_fun::rfc9381::tai;

use crate::identity::{IdentityError, NodeKey};
use crate::{Hash32, NodeId, RequestId};

rakis_consensus::fixed_bytes!(
    /// An ECVRF proof: `Gamma` (33 bytes, compressed) ‖ `c` (16 bytes) ‖ `s` (32 bytes), the
    /// encoding of RFC 9381.
    VrfProof,
    81
);

/// Domain tag of the sampling seed's VRF input (v2: the RFC 9381 form, suite `0xFE`; v1 was
/// draft-05's form through OpenSSL, 12 times slower).
pub const SAMPLING_SEED_TAG: &[u8] = b"rakis/sampling-seed/v2\0";

/// The VRF input of a request's sampling seed: `"rakis/sampling-seed/v2" ‖ 0x00 ‖ request_id`.
pub fn sampling_input(request_id: &RequestId) -> Vec<u8> {
    let mut alpha = SAMPLING_SEED_TAG.to_vec();
    alpha.extend_from_slice(&request_id.0);
    alpha
}

impl NodeKey {
    /// The VRF proof and output of this key over `alpha`.
    pub fn vrf_prove(&self, alpha: &[u8]) -> (VrfProof, Hash32) {
        // A `NodeKey` holds a valid secp256k1 secret: non-zero and below the group order.
        let secret = Scalar::from_bytes_mod_order(self.secret_bytes())
            .non_zero()
            .expect("a secp256k1 signing key is non-zero");
        let keypair = KeyPair::new(secret);
        let proof = tai::prove::<sha2::Sha256>(&keypair, alpha);
        let bytes = postcard::to_allocvec(&proof).expect("a proof encodes to bytes");
        let proof = VrfProof(
            bytes
                .as_slice()
                .try_into()
                .expect("an RFC 9381 secp256k1 proof is 81 bytes"),
        );
        let output = proof_to_output(&proof);
        (proof, output)
    }

    /// This node's sampling seed for a request, with its proof.
    pub fn sampling_seed(&self, request_id: &RequestId) -> (VrfProof, Hash32) {
        self.vrf_prove(&sampling_input(request_id))
    }
}

/// The output of a proof (RFC 9381 `ECVRF_proof_to_hash`):
/// `SHA-256(0xFE ‖ 0x03 ‖ Gamma ‖ 0x00)`.
/// Meaningful only for a proof that holds: [`vrf_verify`] checks it first.
fn proof_to_output(proof: &VrfProof) -> Hash32 {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update([0xFE, 0x03]);
    h.update(&proof.0[..33]);
    h.update([0x00]);
    Hash32(h.finalize().into())
}

/// Checks `proof` against `node` and `alpha`; returns the VRF output.
pub fn vrf_verify(node: &NodeId, alpha: &[u8], proof: &VrfProof) -> Result<Hash32, IdentityError> {
    let public = Point::from_bytes(node.0).ok_or(IdentityError::BadSignature)?;
    // The encoding is canonical: a compressed point on the curve, scalars below the order.
    let proof: vrf_fun::VrfProof =
        postcard::from_bytes(&proof.0).map_err(|_| IdentityError::BadSignature)?;
    let verified =
        tai::verify::<sha2::Sha256>(public, alpha, &proof).ok_or(IdentityError::BadSignature)?;
    Ok(Hash32(tai::output::<sha2::Sha256>(verified)))
}

/// The sampling seed `node` proves for `request_id` with `proof`.
pub fn sampling_seed(
    node: &NodeId,
    request_id: &RequestId,
    proof: &VrfProof,
) -> Result<Hash32, IdentityError> {
    vrf_verify(node, &sampling_input(request_id), proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_output_per_key_and_input_checkable_by_anyone() {
        let key = NodeKey::from_seed(1);
        let id = RequestId([3; 32]);
        let (proof, seed) = key.sampling_seed(&id);
        // The prover's output (hashed from its own Gamma) is the one a verifier derives.
        assert_eq!(sampling_seed(&key.node_id(), &id, &proof).unwrap(), seed);
        // Proving again gives the same output (deterministic nonce, unique output).
        assert_eq!(key.sampling_seed(&id).1, seed);
        // Another request, another key: other outputs; the proof holds for neither.
        assert_ne!(key.sampling_seed(&RequestId([4; 32])).1, seed);
        assert!(sampling_seed(&key.node_id(), &RequestId([4; 32]), &proof).is_err());
        let other = NodeKey::from_seed(2);
        assert!(sampling_seed(&other.node_id(), &id, &proof).is_err());
        // A tampered proof fails.
        let mut bad = proof;
        bad.0[40] ^= 1;
        assert!(sampling_seed(&key.node_id(), &id, &bad).is_err());
        // A proof whose point is off the curve, or whose response is not below the order, is
        // refused before any arithmetic.
        let mut off = proof;
        off.0[0] = 0x07;
        assert!(sampling_seed(&key.node_id(), &id, &off).is_err());
        let mut big = proof;
        big.0[49..].fill(0xFF);
        assert!(sampling_seed(&key.node_id(), &id, &big).is_err());
    }

    /// The seed of a fixed key and request never changes: every node of a network (and every
    /// version of this crate) must draw the same sampling seed from the same proof.
    #[test]
    fn the_sampling_seed_is_fixed_by_key_and_request() {
        let (proof, seed) = NodeKey::from_seed(1).sampling_seed(&RequestId([3; 32]));
        assert_eq!(
            hex::encode(seed.0),
            "405f3424770093b0d18870953a5d9adee36aa488b671ff1d52954e1a5ce47d5d"
        );
        assert_eq!(
            hex::encode(proof.0),
            concat!(
                "028160df665b2cb09dbe2af53c093c0bbf76f87e7f694f3368b3f2c288d82b6668",
                "1cec3a5bad74b03484f076b40a604da7",
                "c58457898da053f3633236be9b31f7dbda3a4d6029972daec41cf7575303a8ca"
            )
        );
    }
}
