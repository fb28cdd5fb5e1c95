//! The [`Membership`] part: who may answer a request, with what weight, and the committee of
//! each request.
//!
//! Keys are free, so a network that counts every key that commits can be swamped: a few free keys
//! that commit and never reveal raise the threshold until every request fails, and enough of them
//! committing one text win outright. A membership bounds who counts: in each [`Epoch`], a set of
//! members with weights (stake); each request is served by a [`Committee`] drawn from the epoch,
//! weighted by stake, that every node computes the same way from the request and the epoch.
//! Commits, reveals and signed results of nodes outside the committee are ignored, and the
//! consensus threshold is computed over the committee's size, never over whoever showed up.
//!
//! Implementations: [`StaticMembership`] (a fixed list of members from configuration, for
//! private networks and tests) and, in `rakis-chain`, the oracle's staked registry
//! (`ChainMembership`). A node with
//! no membership at all must be built with
//! [`NodeBuilder::open_network`](crate::NodeBuilder::open_network), an explicit choice.
//!
//! # The committee
//!
//! A request's committee has `committee_size(quorum)` members (the quorum plus spares, at most
//! the epoch's member count), drawn without replacement, each draw weighted by stake:
//!
//! ```text
//! seed   = SHA-256("rakis/committee/v1" ‖ 0x00 ‖ epoch digest ‖ request id ‖ beacon)
//! draw k = SHA-256(seed ‖ k as u32 BE)[0..16] as u128 mod (weight of the members not drawn yet)
//!          → the member whose cumulative weight (members sorted by node id) covers it
//! ```
//!
//! Integers only, so every node on every platform draws the same committee. `beacon` is
//! randomness fixed after the request was made when its origin provides one
//! ([`InferenceRequest::committee_beacon`]): for a chain request, the hash of the block that holds
//! it, which its requester cannot know when it picks the request's content, and which a node
//! takes only from its own reading of the chain. For requests between peers it is empty, so a
//! requester can grind its request id to choose its committee. That only lets it fool itself: a
//! peer's request is answered to that peer, and light clients trust only results of their own
//! requests certified by the committee (docs/security.md, "Grinding the committee").

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::protocol::InferenceRequest;
use crate::{Hash32, NodeId};

/// Domain tag of the epoch digest.
pub const EPOCH_TAG: &str = "rakis/epoch/v1";
/// Domain tag of the committee seed.
pub const COMMITTEE_TAG: &str = "rakis/committee/v1";
/// Domain tag of the configuration digest.
pub const CONFIG_TAG: &str = "rakis/config/v1";

/// What a signed result of `request` is bound to, so that a signature counts only where it was
/// meant to (as Chainlink OCR's config digest):
///
/// ```text
/// SHA-256("rakis/config/v1" ‖ 0x00 ‖ chain id (u64 BE) ‖ contract (20 bytes) ‖ epoch digest)
/// ```
///
/// with the chain id and contract of a chain request's origin (zero for a peer's request) and
/// the digest of the epoch its committee was drawn from (zero without a committee). An oracle
/// contract recomputes it from its own chain id, address and stored epoch: a signature made for
/// another chain, contract or member set does not verify there.
pub fn config_digest(request: &InferenceRequest, committee: Option<&Committee>) -> Hash32 {
    let (chain_id, contract) = match &request.origin {
        crate::protocol::Origin::Chain {
            chain_id, contract, ..
        } => (*chain_id, contract.0),
        crate::protocol::Origin::Peer => (0, [0; 20]),
    };
    let epoch = committee.map(|c| c.epoch_digest.0).unwrap_or([0; 32]);
    let mut h = Sha256::new();
    h.update(CONFIG_TAG.as_bytes());
    h.update([0]);
    h.update(chain_id.to_be_bytes());
    h.update(contract);
    h.update(epoch);
    Hash32(h.finalize().into())
}

/// Who may answer requests created in a span of time: its members, each with a weight (stake).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "EpochSpec", into = "EpochSpec")]
pub struct Epoch {
    number: u64,
    members: BTreeMap<NodeId, u64>,
    total_weight: u128,
    digest: Hash32,
}

/// The serialized form of an [`Epoch`] (its digest and total are derived, never trusted).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochSpec {
    number: u64,
    members: Vec<MemberSpec>,
}

/// One member in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// The member's node id (its compressed public key, hex).
    pub node: NodeId,
    /// Its weight (stake); at least 1.
    pub weight: u64,
}

impl TryFrom<EpochSpec> for Epoch {
    type Error = MembershipError;
    fn try_from(spec: EpochSpec) -> Result<Self, Self::Error> {
        Epoch::new(
            spec.number,
            spec.members.into_iter().map(|m| (m.node, m.weight)),
        )
    }
}

impl From<Epoch> for EpochSpec {
    fn from(e: Epoch) -> Self {
        EpochSpec {
            number: e.number,
            members: e
                .members
                .into_iter()
                .map(|(node, weight)| MemberSpec { node, weight })
                .collect(),
        }
    }
}

impl Epoch {
    /// An epoch of `members` (node id, weight). Refuses an empty set, a zero weight and a node
    /// listed twice.
    pub fn new(
        number: u64,
        members: impl IntoIterator<Item = (NodeId, u64)>,
    ) -> Result<Self, MembershipError> {
        let mut map = BTreeMap::new();
        for (node, weight) in members {
            if weight == 0 {
                return Err(MembershipError::ZeroWeight(node));
            }
            if map.insert(node, weight).is_some() {
                return Err(MembershipError::Duplicate(node));
            }
        }
        if map.is_empty() {
            return Err(MembershipError::Empty);
        }
        let total_weight = map.values().map(|w| *w as u128).sum();
        let mut h = Sha256::new();
        h.update(EPOCH_TAG.as_bytes());
        h.update([0]);
        h.update(number.to_be_bytes());
        h.update((map.len() as u64).to_be_bytes());
        for (node, weight) in &map {
            h.update(node.0);
            h.update(weight.to_be_bytes());
        }
        Ok(Epoch {
            number,
            members: map,
            total_weight,
            digest: Hash32(h.finalize().into()),
        })
    }

    /// The epoch's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The digest that names this exact member set: `SHA-256("rakis/epoch/v1" ‖ 0x00 ‖ number
    /// ‖ n ‖ (node ‖ weight)…)`, members sorted by node id, integers big-endian.
    pub fn digest(&self) -> Hash32 {
        self.digest
    }

    /// A member's weight.
    pub fn weight(&self, node: &NodeId) -> Option<u64> {
        self.members.get(node).copied()
    }

    /// Whether `node` is a member.
    pub fn is_member(&self, node: &NodeId) -> bool {
        self.members.contains_key(node)
    }

    /// The members and their weights, sorted by node id.
    pub fn members(&self) -> impl Iterator<Item = (&NodeId, u64)> + '_ {
        self.members.iter().map(|(n, w)| (n, *w))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the epoch has no member (never true for a constructed epoch).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The committee of `request` (see the module docs).
    pub fn committee(&self, request: &InferenceRequest) -> Committee {
        let size = committee_size(request.frame.quorum).min(self.members.len());
        let mut h = Sha256::new();
        h.update(COMMITTEE_TAG.as_bytes());
        h.update([0]);
        h.update(self.digest.0);
        h.update(request.id().0);
        if let Some(beacon) = request.committee_beacon() {
            h.update(beacon.0);
        }
        let seed: [u8; 32] = h.finalize().into();
        let mut left: Vec<(NodeId, u64)> = self.members.iter().map(|(n, w)| (*n, *w)).collect();
        let mut remaining = self.total_weight;
        let mut drawn = Vec::with_capacity(size);
        for k in 0..size as u32 {
            let mut d = Sha256::new();
            d.update(seed);
            d.update(k.to_be_bytes());
            let r: [u8; 32] = d.finalize().into();
            let target = u128::from_be_bytes(r[..16].try_into().expect("16 bytes")) % remaining;
            let mut acc = 0u128;
            let at = left
                .iter()
                .position(|(_, w)| {
                    acc += *w as u128;
                    acc > target
                })
                .expect("target below the remaining weight");
            let (node, weight) = left.remove(at);
            remaining -= weight as u128;
            drawn.push(node);
        }
        Committee {
            epoch: self.number,
            epoch_digest: self.digest,
            members: drawn,
        }
    }
}

/// The committee size for a quorum: the quorum plus spares (40 % of it, at least one), so that
/// a request completes when a few members are slow or down. Quorum 5 → 7, quorum 7 → 10.
pub fn committee_size(quorum: u32) -> usize {
    let q = quorum as usize;
    q + (q * 2).div_ceil(5).max(1)
}

/// The members that serve one request, in draw order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committee {
    /// The epoch it was drawn from.
    pub epoch: u64,
    /// That epoch's digest.
    pub epoch_digest: Hash32,
    /// The members, in draw order (the first is the request's first leader where one is
    /// needed).
    pub members: Vec<NodeId>,
}

impl Committee {
    /// Whether `node` serves the request.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.members.contains(node)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the committee is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Signatures of distinct members over one result digest that make the result valid:
    /// more than two thirds of the committee (`floor(2n/3) + 1`), and at least the ball's
    /// `ceil(share × n)`. Two conflicting results that both gather `q` of `n` signatures share
    /// `2q − n > n/3` signers, each of whom signed twice (provable equivocation): fewer than a
    /// third of colluders cannot certify two results, and the honest rest can still certify
    /// one. 5 of 7, 7 of 10, 4 of 5.
    pub fn signature_threshold(&self, share_ppm: u32) -> usize {
        let n = self.members.len() as u64;
        let by_share = (share_ppm.min(1_000_000) as u64 * n).div_ceil(1_000_000);
        by_share.max(2 * n / 3 + 1) as usize
    }
}

/// Who may answer requests: which nodes are eligible in an epoch, with what weight.
///
/// Object-safe and synchronous: the coordinator asks it while handling a request, so
/// implementations that read a chain keep the epochs cached and refresh them in the
/// background. Implemented for `&T`, `Arc<T>` and `Box<T>`.
#[auto_impl::auto_impl(&, Box, Arc)]
pub trait Membership: Send + Sync + std::fmt::Debug {
    /// The epoch that governs a request created at `created_at_ms` (ms since the epoch), or
    /// `None` when this node does not know it (a node then neither answers nor verifies the
    /// request, and says why).
    fn epoch_at(&self, created_at_ms: u64) -> Option<Arc<Epoch>>;
}

/// A fixed list of members, read from configuration: one epoch for all time. For private
/// networks and tests.
///
/// ```
/// let m: rakis_core::membership::StaticMembership = toml::from_str(r#"
///     number = 1
///     [[members]]
///     node = "02a1633cafcc01ebfb6d78e39f687a1f0995c62fc95f51ead10a02ee0be551b5dc"
///     weight = 10
/// "#).unwrap();
/// assert_eq!(m.epoch().len(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StaticMembership {
    epoch: Arc<Epoch>,
}

impl StaticMembership {
    /// A membership of one epoch (number 0) with `members` (node id, weight).
    pub fn new(members: impl IntoIterator<Item = (NodeId, u64)>) -> Result<Self, MembershipError> {
        Ok(StaticMembership {
            epoch: Arc::new(Epoch::new(0, members)?),
        })
    }

    /// Every node of `nodes` with weight 1.
    pub fn equal(nodes: impl IntoIterator<Item = NodeId>) -> Result<Self, MembershipError> {
        Self::new(nodes.into_iter().map(|n| (n, 1)))
    }

    /// The one epoch.
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }
}

impl Membership for StaticMembership {
    fn epoch_at(&self, _created_at_ms: u64) -> Option<Arc<Epoch>> {
        Some(self.epoch.clone())
    }
}

/// Why a member set is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// No member.
    #[error("an epoch needs at least one member")]
    Empty,
    /// A member of weight 0.
    #[error("member {0} has weight 0")]
    ZeroWeight(NodeId),
    /// A member listed twice.
    #[error("member {0} is listed twice")]
    Duplicate(NodeId),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    fn nodes(n: u64) -> Vec<NodeId> {
        (0..n).map(|i| NodeKey::from_seed(i).node_id()).collect()
    }

    fn request(nonce: u64, quorum: u32) -> InferenceRequest {
        let mut r = InferenceRequest::new("q", vec!["m".into()], nodes(1)[0], 1_000);
        r.nonce = nonce;
        r.frame.quorum = quorum;
        r
    }

    #[test]
    fn committees_are_deterministic_distinct_and_sized_by_the_quorum() {
        let epoch = Epoch::new(3, nodes(100).into_iter().map(|n| (n, 1))).unwrap();
        let c = epoch.committee(&request(1, 5));
        assert_eq!(c, epoch.committee(&request(1, 5)));
        assert_eq!(c.len(), 7);
        let mut sorted = c.members.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 7);
        assert_ne!(c, epoch.committee(&request(2, 5)));
        assert_eq!(epoch.committee(&request(1, 7)).len(), 10);
        // Never more than the members.
        let small = Epoch::new(0, nodes(3).into_iter().map(|n| (n, 1))).unwrap();
        assert_eq!(small.committee(&request(1, 5)).len(), 3);
    }

    #[test]
    fn draws_follow_the_weights() {
        // One member holds half the weight: it sits in nearly every committee of 7 out of 51.
        let mut members: Vec<(NodeId, u64)> = nodes(51).into_iter().map(|n| (n, 1)).collect();
        members[0].1 = 50;
        let heavy = members[0].0;
        let epoch = Epoch::new(0, members).unwrap();
        let with_heavy = (0..400)
            .filter(|i| epoch.committee(&request(*i, 5)).contains(&heavy))
            .count();
        assert!(with_heavy > 390, "{with_heavy} of 400");
        // Equal weights: each of 50 members sits in about 7 / 50 of the committees.
        let epoch = Epoch::new(0, nodes(50).into_iter().map(|n| (n, 1))).unwrap();
        let first = nodes(50)[0];
        let seats = (0..2_000)
            .filter(|i| epoch.committee(&request(*i, 5)).contains(&first))
            .count();
        assert!(
            (200..360).contains(&seats),
            "{seats} of 2000 (expected 280)"
        );
    }

    #[test]
    fn the_digest_names_the_member_set_and_bad_sets_are_refused() {
        let a = Epoch::new(0, nodes(3).into_iter().map(|n| (n, 1))).unwrap();
        let b = Epoch::new(0, nodes(3).into_iter().rev().map(|n| (n, 1))).unwrap();
        assert_eq!(a.digest(), b.digest());
        let c = Epoch::new(0, nodes(3).into_iter().map(|n| (n, 2))).unwrap();
        assert_ne!(a.digest(), c.digest());
        let d = Epoch::new(1, nodes(3).into_iter().map(|n| (n, 1))).unwrap();
        assert_ne!(a.digest(), d.digest());
        assert_eq!(Epoch::new(0, []), Err(MembershipError::Empty));
        let n = nodes(1)[0];
        assert_eq!(Epoch::new(0, [(n, 0)]), Err(MembershipError::ZeroWeight(n)));
        assert_eq!(
            Epoch::new(0, [(n, 1), (n, 2)]),
            Err(MembershipError::Duplicate(n))
        );
    }

    #[test]
    fn config_digest_vectors() {
        // Python: sha256(b"rakis/config/v1\0" + chain_id (8 BE) + contract (20) + epoch (32))
        let peer = request(1, 5);
        assert_eq!(
            config_digest(&peer, None).to_hex(),
            "e3ae57a7c89f333ff21c6b35abbc789777f7081e27a3a793783564ce1e7eadcd"
        );
        let mut chain = peer.clone();
        chain.requester = None;
        chain.origin = crate::protocol::Origin::Chain {
            chain_id: 31_337,
            contract: crate::Address([0xAB; 20]),
            tx_hash: Hash32([0; 32]),
            log_index: 0,
            block_hash: Hash32([1; 32]),
        };
        let committee = Committee {
            epoch: 0,
            epoch_digest: Hash32([0xCD; 32]),
            members: Vec::new(),
        };
        assert_eq!(
            config_digest(&chain, Some(&committee)).to_hex(),
            "3ba30a7d937b33342fa4555ee11199bc53aed0659706ffb0273e323bbbf7ff50"
        );
    }

    #[test]
    fn signature_thresholds() {
        let epoch = Epoch::new(0, nodes(20).into_iter().map(|n| (n, 1))).unwrap();
        let seven = epoch.committee(&request(1, 5));
        assert_eq!(seven.signature_threshold(600_000), 5);
        assert_eq!(seven.signature_threshold(100_000), 5);
        assert_eq!(seven.signature_threshold(1_000_000), 7);
        let ten = epoch.committee(&request(1, 7));
        assert_eq!(ten.signature_threshold(600_000), 7);
    }

    #[test]
    fn a_static_membership_reads_from_a_file_and_refuses_bad_ones() {
        let n = nodes(2);
        let text = format!(
            "number = 4\n[[members]]\nnode = \"{}\"\nweight = 3\n[[members]]\nnode = \"{}\"\nweight = 1\n",
            n[0], n[1]
        );
        let m: StaticMembership = toml::from_str(&text).unwrap();
        assert_eq!(m.epoch().number(), 4);
        assert_eq!(m.epoch().weight(&n[0]), Some(3));
        let zero = format!("number = 0\n[[members]]\nnode = \"{}\"\nweight = 0\n", n[0]);
        assert!(toml::from_str::<StaticMembership>(&zero).is_err());
    }
}
