//! Signed envelopes and the versioned wire encoding.
//!
//! ```text
//! wire bytes = version (1 byte, = 1) ‖ postcard(SignedEnvelope { body, signature })
//! body       = postcard(Envelope { network_id, sender, timestamp_ms, nonce, message })
//! signature  = sign(SHA-256("rakis/envelope/v1" ‖ 0x00 ‖ body))   (65-byte recoverable ECDSA)
//! ```
//! The signature covers the exact body bytes, so verification never re-encodes. A message is
//! identified (for duplicate detection) by `SHA-256(body)`.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::SharedError;
use crate::identity::{recover_signer, NodeKey, Signature};
use crate::protocol::Message;
use crate::{Hash32, NodeId};

/// Version byte of the wire encoding.
pub const WIRE_VERSION: u8 = 1;
/// Hard maximum size of one encoded message, in bytes.
pub const MAX_MESSAGE_SIZE: usize = 512 * 1024;
/// Default bound on clock skew between a message's timestamp and the receiver's clock.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 30_000;
const ENVELOPE_TAG: &[u8] = b"rakis/envelope/v1\0";

/// The signed content of every message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The network this message belongs to.
    pub network_id: String,
    /// The sender's node id.
    pub sender: NodeId,
    /// Sender's clock at sending, ms since epoch.
    pub timestamp_ms: u64,
    /// A random number making each envelope unique.
    pub nonce: u64,
    /// The message.
    pub message: Message,
}

#[derive(Serialize, Deserialize)]
struct SignedEnvelope<'a> {
    #[serde(borrow)]
    body: &'a [u8],
    signature: Signature,
}

fn envelope_digest(body: &[u8]) -> [u8; 32] {
    let mut pre = Vec::with_capacity(ENVELOPE_TAG.len() + body.len());
    pre.extend_from_slice(ENVELOPE_TAG);
    pre.extend_from_slice(body);
    rakis_consensus::sha256(&pre).0
}

/// [`seal`], remembering the signature in `verified` (the node's own messages: its transport,
/// which checks what it sends, finds it checked already).
pub fn seal_remembered(
    key: &NodeKey,
    network_id: &str,
    timestamp_ms: u64,
    message: Message,
    verified: &VerifiedSignatures,
) -> Result<Vec<u8>, EnvelopeError> {
    let bytes = seal(key, network_id, timestamp_ms, message)?;
    verified.remember_own(&bytes, key.node_id());
    Ok(bytes)
}

/// Signs and encodes a message for the wire, with a random nonce.
pub fn seal(
    key: &NodeKey,
    network_id: &str,
    timestamp_ms: u64,
    message: Message,
) -> Result<Vec<u8>, EnvelopeError> {
    seal_with_nonce(key, network_id, timestamp_ms, rand::random(), message)
}

/// [`seal`] with a given nonce: two envelopes with equal content and nonce are the same
/// message (one id), so the caller keeps nonces unique (the simulator draws them from its
/// seeded generator, to replay a run byte for byte).
pub fn seal_with_nonce(
    key: &NodeKey,
    network_id: &str,
    timestamp_ms: u64,
    nonce: u64,
    message: Message,
) -> Result<Vec<u8>, EnvelopeError> {
    let env = Envelope {
        network_id: network_id.to_string(),
        sender: key.node_id(),
        timestamp_ms,
        nonce,
        message,
    };
    let body = postcard::to_allocvec(&env).map_err(EnvelopeError::malformed)?;
    let signature = key.sign_digest(&envelope_digest(&body));
    let mut out = vec![WIRE_VERSION];
    out.extend(
        postcard::to_allocvec(&SignedEnvelope {
            body: &body,
            signature,
        })
        .map_err(EnvelopeError::malformed)?,
    );
    if out.len() > MAX_MESSAGE_SIZE {
        return Err(EnvelopeError::TooLarge {
            size: out.len(),
            max: MAX_MESSAGE_SIZE,
        });
    }
    Ok(out)
}

/// A decoded envelope whose signature has been checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// The envelope.
    pub envelope: Envelope,
    /// `SHA-256(body)`: the message's identity.
    pub id: Hash32,
}

/// Signatures one node has checked already, so that each message's signature is recovered once
/// per node: the transport checks it before forwarding, and the node's [`Inbox`] (and a relayed
/// copy in a sync response) find it here. A hit needs the same body and the same signature
/// bytes, so it gives exactly the signer a recovery would. Bounded (least recently used first
/// out); shared by a node's transport and inbox through
/// [`Transport::verified_signatures`](crate::Transport::verified_signatures).
pub struct VerifiedSignatures {
    checked: Mutex<lru::LruCache<Hash32, (Signature, NodeId)>>,
}

impl std::fmt::Debug for VerifiedSignatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedSignatures").finish_non_exhaustive()
    }
}

impl Default for VerifiedSignatures {
    /// Room for 16,384 signatures (about 3 MiB).
    fn default() -> Self {
        Self::with_capacity(16_384)
    }
}

impl VerifiedSignatures {
    /// Room for `capacity` signatures (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        VerifiedSignatures {
            checked: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    fn signer(&self, id: &Hash32, signature: &Signature) -> Option<NodeId> {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        match checked.get(id) {
            Some((sig, signer)) if sig == signature => Some(*signer),
            _ => None,
        }
    }

    fn remember(&self, id: Hash32, signature: Signature, signer: NodeId) {
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(id, (signature, signer));
    }

    /// Remembers a message this node sealed itself (its signature is this node's). Only for
    /// bytes just sealed with that node's key: see [`seal_remembered`].
    fn remember_own(&self, bytes: &[u8], own: NodeId) {
        if let Some(Ok(signed)) = bytes
            .split_first()
            .map(|(_, rest)| postcard::from_bytes::<SignedEnvelope<'_>>(rest))
        {
            self.remember(rakis_consensus::sha256(signed.body), signed.signature, own);
        }
    }

    /// Signatures held.
    pub fn len(&self) -> usize {
        self.checked.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decodes wire bytes and checks size, version, encoding, signature and network id. Stateless:
/// transports call it to validate before forwarding. Replays and skew are checked by [`Inbox`].
pub fn open(bytes: &[u8], network_id: &str) -> Result<Verified, EnvelopeError> {
    open_with(bytes, network_id, None)
}

/// [`open`], recovering the signature only when `verified` does not hold it already (and
/// remembering it there).
pub fn open_cached(
    bytes: &[u8],
    network_id: &str,
    verified: &VerifiedSignatures,
) -> Result<Verified, EnvelopeError> {
    open_with(bytes, network_id, Some(verified))
}

fn open_with(
    bytes: &[u8],
    network_id: &str,
    verified: Option<&VerifiedSignatures>,
) -> Result<Verified, EnvelopeError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(EnvelopeError::TooLarge {
            size: bytes.len(),
            max: MAX_MESSAGE_SIZE,
        });
    }
    let (&version, rest) = bytes.split_first().ok_or(EnvelopeError::Empty)?;
    if version != WIRE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    let signed: SignedEnvelope<'_> =
        postcard::from_bytes(rest).map_err(EnvelopeError::malformed)?;
    let envelope: Envelope = postcard::from_bytes(signed.body).map_err(EnvelopeError::malformed)?;
    let id = rakis_consensus::sha256(signed.body);
    let signer = match verified.and_then(|v| v.signer(&id, &signed.signature)) {
        Some(signer) => signer,
        None => {
            let signer = recover_signer(&envelope_digest(signed.body), &signed.signature)
                .map_err(|_| EnvelopeError::BadSignature(envelope.sender.short()))?;
            if let Some(v) = verified {
                v.remember(id, signed.signature, signer);
            }
            signer
        }
    };
    if signer != envelope.sender {
        return Err(EnvelopeError::BadSignature(envelope.sender.short()));
    }
    check_network(&envelope, network_id)?;
    Ok(Verified { id, envelope })
}

/// Refuses an envelope of another network.
fn check_network(envelope: &Envelope, network_id: &str) -> Result<(), EnvelopeError> {
    if envelope.network_id != network_id {
        return Err(EnvelopeError::WrongNetwork {
            expected: network_id.to_string(),
            got: envelope.network_id.clone(),
        });
    }
    Ok(())
}

/// The receiving side: [`open`] plus clock-skew bounds and replay/duplicate suppression.
///
/// Message ids are remembered for twice the skew bound; anything older than the skew bound is
/// rejected by its timestamp, so every replay is caught with bounded memory.
#[derive(Debug)]
pub struct Inbox {
    network_id: String,
    max_skew_ms: u64,
    seen: HashMap<Hash32, u64>,
    order: VecDeque<(u64, Hash32)>,
    verified: std::sync::Arc<VerifiedSignatures>,
}

impl Inbox {
    /// An inbox for `network_id` with the given skew bound.
    pub fn new(network_id: impl Into<String>, max_skew_ms: u64) -> Self {
        Inbox {
            network_id: network_id.into(),
            max_skew_ms,
            seen: HashMap::new(),
            order: VecDeque::new(),
            verified: Default::default(),
        }
    }

    /// Takes signatures already checked from `verified` (typically the transport's: see
    /// [`VerifiedSignatures`]), and remembers there the ones it checks.
    pub fn with_verified_signatures(
        mut self,
        verified: std::sync::Arc<VerifiedSignatures>,
    ) -> Self {
        self.verified = verified;
        self
    }

    /// The signatures this inbox checked or took.
    pub fn verified_signatures(&self) -> &std::sync::Arc<VerifiedSignatures> {
        &self.verified
    }

    /// Checks one incoming message at local time `now_ms`. On error nothing is remembered.
    pub fn accept(&mut self, bytes: &[u8], now_ms: u64) -> Result<Verified, EnvelopeError> {
        let v = open_cached(bytes, &self.network_id, &self.verified)?;
        self.admit_live(v, now_ms)
    }

    /// Checks a message relayed inside a [`Message::SyncResponse`]: like [`Inbox::accept`] but
    /// without the clock-skew bound (relayed messages are old by nature; the coordinator
    /// judges their timestamps against the request's deadlines), and a copy of a message
    /// received before is returned again rather than refused: a commit that arrived live a
    /// moment after the local deadline was ignored then, and its relayed copy, judged by its
    /// signed time, is what repairs it (the coordinator ignores what it already holds).
    pub fn accept_relayed(&mut self, bytes: &[u8], now_ms: u64) -> Result<Verified, EnvelopeError> {
        let v = open_cached(bytes, &self.network_id, &self.verified)?;
        self.admit_relayed(v, now_ms)
    }

    /// [`Inbox::accept`] for an envelope that was opened (its signature checked) by the
    /// caller already: the simulator opens each envelope once and delivers it to many
    /// inboxes. Checks the network id, skew and duplicates.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn accept_opened(&mut self, v: Verified, now_ms: u64) -> Result<Verified, EnvelopeError> {
        check_network(&v.envelope, &self.network_id)?;
        self.admit_live(v, now_ms)
    }

    /// [`Inbox::accept_relayed`] for an envelope that was opened by the caller already.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn accept_relayed_opened(
        &mut self,
        v: Verified,
        now_ms: u64,
    ) -> Result<Verified, EnvelopeError> {
        check_network(&v.envelope, &self.network_id)?;
        self.admit_relayed(v, now_ms)
    }

    fn admit_live(&mut self, v: Verified, now_ms: u64) -> Result<Verified, EnvelopeError> {
        let ts = v.envelope.timestamp_ms;
        let skew = ts.abs_diff(now_ms);
        if skew > self.max_skew_ms {
            return Err(EnvelopeError::ClockSkew {
                timestamp_ms: ts,
                skew_ms: skew,
                max_ms: self.max_skew_ms,
            });
        }
        self.admit(v, now_ms)
    }

    fn admit_relayed(&mut self, v: Verified, now_ms: u64) -> Result<Verified, EnvelopeError> {
        self.expire(now_ms);
        if !self.seen.contains_key(&v.id) {
            self.remember(v.id, now_ms);
        }
        Ok(v)
    }

    /// Remembers a message this node sent itself so that echoes are dropped.
    /// The message was sealed here, so its signature is not checked again: only its id is
    /// taken.
    pub fn remember_own(&mut self, bytes: &[u8], now_ms: u64) {
        let id = bytes
            .split_first()
            .and_then(|(_, rest)| postcard::from_bytes::<SignedEnvelope<'_>>(rest).ok())
            .map(|signed| rakis_consensus::sha256(signed.body));
        if let Some(id) = id {
            self.remember(id, now_ms);
        }
    }

    /// Refuses a message already seen; otherwise remembers it. Forgets expired ids first.
    fn admit(&mut self, v: Verified, now_ms: u64) -> Result<Verified, EnvelopeError> {
        self.expire(now_ms);
        if self.seen.contains_key(&v.id) {
            return Err(EnvelopeError::Duplicate);
        }
        self.remember(v.id, now_ms);
        Ok(v)
    }

    fn remember(&mut self, id: Hash32, now_ms: u64) {
        self.seen.insert(id, now_ms);
        self.order.push_back((now_ms, id));
    }

    fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(2 * self.max_skew_ms);
        while let Some(&(t, id)) = self.order.front() {
            if t >= horizon {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
    }

    /// Number of remembered message ids.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

/// Why an incoming message was dropped before use.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Larger than [`MAX_MESSAGE_SIZE`].
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Size received.
        size: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// Unknown wire version byte.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// Bytes that do not decode (the decoder's error as the source).
    #[error("malformed message: {0}")]
    Malformed(#[source] SharedError),
    /// The signature does not match the sender.
    #[error("bad signature from claimed sender {0}")]
    BadSignature(String),
    /// The message belongs to another network.
    #[error("message for network {got:?}, this node is on {expected:?}")]
    WrongNetwork {
        /// This node's network.
        expected: String,
        /// The message's network.
        got: String,
    },
    /// The timestamp is too far from this node's clock.
    #[error("timestamp {timestamp_ms} is {skew_ms} ms from local time (max {max_ms})")]
    ClockSkew {
        /// The message's timestamp.
        timestamp_ms: u64,
        /// Absolute difference from local time.
        skew_ms: u64,
        /// Allowed skew.
        max_ms: u64,
    },
    /// The same message was already received (replay or duplicate delivery).
    #[error("duplicate or replayed message")]
    Duplicate,
}

impl EnvelopeError {
    fn malformed(e: postcard::Error) -> Self {
        EnvelopeError::Malformed(SharedError::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PeerStatus;

    fn status() -> Message {
        Message::PeerStatus(PeerStatus {
            models: vec!["m".into()],
            embedding_model: None,
            workers: 1,
            load: 0,
        })
    }

    #[test]
    fn seal_open_roundtrip() {
        let k = NodeKey::from_seed(1);
        let bytes = seal(&k, "net", 1_000, status()).unwrap();
        assert_eq!(bytes[0], WIRE_VERSION);
        let v = open(&bytes, "net").unwrap();
        assert_eq!(v.envelope.sender, k.node_id());
        assert_eq!(v.envelope.message, status());
    }

    #[test]
    fn rejects_tampering_network_version_size_and_garbage() {
        let k = NodeKey::from_seed(1);
        let bytes = seal(&k, "net", 1_000, status()).unwrap();
        assert!(matches!(
            open(&bytes, "other"),
            Err(EnvelopeError::WrongNetwork { .. })
        ));
        // Flip one byte inside the body: either decoding or the signature fails.
        for i in 3..bytes.len() - 66 {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(open(&t, "net").is_err(), "tampered byte {i} accepted");
        }
        let mut t = bytes.clone();
        t[0] = 9;
        assert!(matches!(
            open(&t, "net"),
            Err(EnvelopeError::UnsupportedVersion(9))
        ));
        assert!(matches!(open(&[], "net"), Err(EnvelopeError::Empty)));
        assert!(matches!(
            open(&[1, 2, 3], "net"),
            Err(EnvelopeError::Malformed(_))
        ));
        let big = vec![1u8; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(
            open(&big, "net"),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn signature_of_another_key_is_rejected() {
        // Re-sign a body that claims sender A with key B.
        let a = NodeKey::from_seed(1);
        let b = NodeKey::from_seed(2);
        let env = Envelope {
            network_id: "net".into(),
            sender: a.node_id(),
            timestamp_ms: 1,
            nonce: 1,
            message: status(),
        };
        let body = postcard::to_allocvec(&env).unwrap();
        let sig = b.sign_digest(&envelope_digest(&body));
        let mut bytes = vec![WIRE_VERSION];
        bytes.extend(
            postcard::to_allocvec(&SignedEnvelope {
                body: &body,
                signature: sig,
            })
            .unwrap(),
        );
        assert!(matches!(
            open(&bytes, "net"),
            Err(EnvelopeError::BadSignature(_))
        ));
    }

    #[test]
    fn a_checked_signature_is_taken_only_for_the_same_body_and_signature() {
        let a = NodeKey::from_seed(1);
        let b = NodeKey::from_seed(2);
        let verified = VerifiedSignatures::with_capacity(8);
        let bytes = seal(&a, "net", 1, status()).unwrap();
        let first = open_cached(&bytes, "net", &verified).unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(open_cached(&bytes, "net", &verified).unwrap(), first);
        assert_eq!(verified.len(), 1, "the second open found it");
        // The same body under another signature (B's, claiming A) is recovered, and refused.
        let signed: SignedEnvelope<'_> = postcard::from_bytes(&bytes[1..]).unwrap();
        let forged_sig = b.sign_digest(&envelope_digest(signed.body));
        let mut forged = vec![WIRE_VERSION];
        forged.extend(
            postcard::to_allocvec(&SignedEnvelope {
                body: signed.body,
                signature: forged_sig,
            })
            .unwrap(),
        );
        assert!(matches!(
            open_cached(&forged, "net", &verified),
            Err(EnvelopeError::BadSignature(_))
        ));
        // The network is checked on every open, cached or not.
        assert!(matches!(
            open_cached(&bytes, "other", &verified),
            Err(EnvelopeError::WrongNetwork { .. })
        ));
        // Own messages are remembered as sealed; bounded.
        for t in 0..20 {
            seal_remembered(&a, "net", t, status(), &verified).unwrap();
        }
        assert_eq!(verified.len(), 8);
    }

    #[test]
    fn inbox_drops_replays_and_skewed_messages() {
        let k = NodeKey::from_seed(1);
        let mut inbox = Inbox::new("net", 1_000);
        let bytes = seal(&k, "net", 10_000, status()).unwrap();
        inbox.accept(&bytes, 10_500).unwrap();
        assert!(matches!(
            inbox.accept(&bytes, 10_600),
            Err(EnvelopeError::Duplicate)
        ));
        // Long after, the id is forgotten but the timestamp is too old.
        assert!(matches!(
            inbox.accept(&bytes, 20_000),
            Err(EnvelopeError::ClockSkew { .. })
        ));
        let future = seal(&k, "net", 50_000, status()).unwrap();
        assert!(matches!(
            inbox.accept(&future, 20_000),
            Err(EnvelopeError::ClockSkew { .. })
        ));
        // A skew failure remembers nothing.
        let fresh = seal(&k, "net", 20_000, status()).unwrap();
        inbox.accept(&fresh, 20_000).unwrap();
        assert!(inbox.remembered() <= 2);
        let own = seal(&k, "net", 20_000, status()).unwrap();
        inbox.remember_own(&own, 20_000);
        assert!(matches!(
            inbox.accept(&own, 20_001),
            Err(EnvelopeError::Duplicate)
        ));
    }

    /// A message heard live is still returned when a peer relays it in a sync response (the
    /// coordinator judges the relayed copy by its signed time: the repair of a commit that
    /// arrived just after the local deadline), and a relayed message is remembered so that a
    /// later live copy is dropped.
    #[test]
    fn relayed_copies_of_live_messages_reach_the_coordinator() {
        let k = NodeKey::from_seed(1);
        let mut inbox = Inbox::new("net", 1_000);
        let live = seal(&k, "net", 10_000, status()).unwrap();
        inbox.accept(&live, 10_100).unwrap();
        let again = inbox.accept_relayed(&live, 10_900).unwrap();
        assert_eq!(again.id, open(&live, "net").unwrap().id);
        let relayed_first = seal(&k, "net", 10_200, status()).unwrap();
        inbox.accept_relayed(&relayed_first, 10_300).unwrap();
        assert!(matches!(
            inbox.accept(&relayed_first, 10_400),
            Err(EnvelopeError::Duplicate)
        ));
        let mut other = Inbox::new("other", 1_000);
        assert!(matches!(
            other.accept_opened(open(&live, "net").unwrap(), 10_100),
            Err(EnvelopeError::WrongNetwork { .. })
        ));
    }
}
