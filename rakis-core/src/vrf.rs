//! A verifiable random function of the node key (ECVRF-SECP256K1-SHA256-TAI, draft-irtf-cfrg-vrf-05,
//! through the `vrf` crate): for a given input, a node has exactly one output, which only it can
//! compute and anyone can check against its node id. The seed of a committer's sampling is its
//! VRF output over the request id ([`sampling_seed`]): it cannot choose the seed (no
//! re-sampling until the model happens to say what it wants), and nobody can predict it before
//! the node reveals it.

use vrf::openssl::{CipherSuite, ECVRF};
use vrf::VRF as _;

use crate::identity::{IdentityError, NodeKey};
use crate::{Hash32, NodeId, RequestId};

rakis_consensus::fixed_bytes!(
    /// An ECVRF proof: `Gamma` (33 bytes, compressed) ‖ `c` (16 bytes) ‖ `s` (32 bytes).
    VrfProof,
    81
);

/// Domain tag of the sampling seed's VRF input.
pub const SAMPLING_SEED_TAG: &[u8] = b"rakis/sampling-seed/v1\0";

fn suite() -> Result<ECVRF, IdentityError> {
    ECVRF::from_suite(CipherSuite::SECP256K1_SHA256_TAI).map_err(|_| IdentityError::BadSignature)
}

/// The VRF input of a request's sampling seed: `"rakis/sampling-seed/v1" ‖ 0x00 ‖ request_id`.
pub fn sampling_input(request_id: &RequestId) -> Vec<u8> {
    let mut alpha = SAMPLING_SEED_TAG.to_vec();
    alpha.extend_from_slice(&request_id.0);
    alpha
}

impl NodeKey {
    /// The VRF proof and output of this key over `alpha`.
    pub fn vrf_prove(&self, alpha: &[u8]) -> (VrfProof, Hash32) {
        let mut v = suite().expect("the secp256k1 suite is available");
        let pi = v
            .prove(&self.secret_bytes(), alpha)
            .expect("proving with a valid secp256k1 key cannot fail");
        let beta = v
            .proof_to_hash(&pi)
            .expect("a proof just made has an output");
        (
            VrfProof(
                pi.as_slice()
                    .try_into()
                    .expect("secp256k1 proofs are 81 bytes"),
            ),
            Hash32(
                beta.as_slice()
                    .try_into()
                    .expect("SHA-256 outputs are 32 bytes"),
            ),
        )
    }

    /// This node's sampling seed for a request, with its proof.
    pub fn sampling_seed(&self, request_id: &RequestId) -> (VrfProof, Hash32) {
        self.vrf_prove(&sampling_input(request_id))
    }
}

/// Checks `proof` against `node` and `alpha`; returns the VRF output.
pub fn vrf_verify(node: &NodeId, alpha: &[u8], proof: &VrfProof) -> Result<Hash32, IdentityError> {
    let beta = suite()?
        .verify(&node.0, &proof.0, alpha)
        .map_err(|_| IdentityError::BadSignature)?;
    Ok(Hash32(
        beta.as_slice()
            .try_into()
            .map_err(|_| IdentityError::BadSignature)?,
    ))
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
    }
}
