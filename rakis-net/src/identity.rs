//! Node ids and libp2p peer ids.
//!
//! A Rakis node id is the 33-byte compressed secp256k1 public key of the node key. The libp2p
//! identity is the same key, so a peer id is the identity multihash of the protobuf-encoded
//! secp256k1 public key, and the two convert into each other without any lookup.

use libp2p::identity::{self, secp256k1, Keypair, PublicKey};
use libp2p::PeerId;
use rakis_core::error::SharedError;
use rakis_core::{NodeId, NodeKey};

use crate::error::NetError;

/// Multihash code of the identity hash (peer ids of small keys inline the key).
const IDENTITY_MULTIHASH: u64 = 0x00;

/// The libp2p keypair of a node key (the same secp256k1 key).
pub fn keypair_of(key: &NodeKey) -> Result<Keypair, NetError> {
    let secret = secp256k1::SecretKey::try_from_bytes(key.secret_bytes())
        .map_err(|e| NetError::Identity(SharedError::new(e)))?;
    Ok(Keypair::from(secp256k1::Keypair::from(secret)))
}

/// The libp2p peer id of a node id. Fails when the node id is not a valid public key.
pub fn peer_id_of(node: &NodeId) -> Result<PeerId, NetError> {
    let public = secp256k1::PublicKey::try_from_bytes(&node.0)
        .map_err(|e| NetError::Identity(SharedError::new(e)))?;
    Ok(PeerId::from_public_key(&PublicKey::from(public)))
}

/// The node id of a libp2p peer id; `None` for peers whose key is not secp256k1 (they are not
/// Rakis nodes).
pub fn node_id_of(peer: &PeerId) -> Option<NodeId> {
    let hash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if hash.code() != IDENTITY_MULTIHASH {
        return None;
    }
    let public: identity::secp256k1::PublicKey = PublicKey::try_decode_protobuf(hash.digest())
        .ok()?
        .try_into_secp256k1()
        .ok()?;
    Some(NodeId(public.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_and_node_ids_convert_both_ways() {
        for seed in 0..20 {
            let key = NodeKey::from_seed(seed);
            let kp = keypair_of(&key).unwrap();
            let peer = kp.public().to_peer_id();
            assert_eq!(peer_id_of(&key.node_id()).unwrap(), peer);
            assert_eq!(node_id_of(&peer), Some(key.node_id()));
        }
    }

    #[test]
    fn foreign_and_invalid_ids_do_not_convert() {
        // A peer id that hashes its key (SHA-256) instead of inlining it.
        let hashed =
            PeerId::from_multihash(libp2p::multihash::Multihash::wrap(0x12, &[7; 32]).unwrap())
                .unwrap();
        assert_eq!(node_id_of(&hashed), None);
        assert_eq!(node_id_of(&PeerId::random()), None);
        assert!(peer_id_of(&NodeId([0; 33])).is_err());
    }
}
