//! Oversized and garbage wire bytes at the envelope and `Inbox` level (the simulator hands
//! messages to coordinators without envelopes, so these threats are covered here). Backs the
//! "oversized / garbage messages" row of docs/security.md; the `envelope` fuzz target checks the
//! same properties on arbitrary input.

use rakis_core::envelope::EnvelopeError;
use rakis_core::envelope::{open, seal, Inbox, MAX_MESSAGE_SIZE, WIRE_VERSION};
use rakis_core::protocol::PeerStatus;
use rakis_core::{InferenceRequest, Message, NodeKey};

const NET: &str = "net";
const NOW: u64 = 1_700_000_000_000;

fn status() -> Message {
    Message::PeerStatus(PeerStatus {
        models: vec!["m".into()],
        embedding_model: None,
        workers: 1,
        load: 0,
    })
}

#[test]
fn oversized_messages_are_refused_on_both_sides() {
    let key = NodeKey::from_seed(1);
    // The sender cannot seal one: a prompt past the wire limit.
    let big = InferenceRequest::new(
        "x".repeat(MAX_MESSAGE_SIZE),
        vec!["m".into()],
        key.node_id(),
        NOW,
    );
    assert!(matches!(
        seal(&key, NET, NOW, Message::Request(big)),
        Err(EnvelopeError::TooLarge { .. })
    ));
    // The receiver refuses one before decoding anything, and remembers nothing.
    let mut inbox = Inbox::new(NET, 30_000);
    let mut bytes = seal(&key, NET, NOW, status()).unwrap();
    bytes.resize(MAX_MESSAGE_SIZE + 1, 0);
    assert!(matches!(
        inbox.accept(&bytes, NOW),
        Err(EnvelopeError::TooLarge { size, max: MAX_MESSAGE_SIZE }) if size == MAX_MESSAGE_SIZE + 1
    ));
    assert!(matches!(
        inbox.accept_relayed(&bytes, NOW),
        Err(EnvelopeError::TooLarge { .. })
    ));
    assert_eq!(inbox.remembered(), 0);
}

#[test]
fn garbage_is_refused_with_typed_errors_and_changes_nothing() {
    let key = NodeKey::from_seed(1);
    let mut inbox = Inbox::new(NET, 30_000);
    let valid = seal(&key, NET, NOW, status()).unwrap();
    inbox.accept(&valid, NOW).unwrap();
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![WIRE_VERSION],
        vec![WIRE_VERSION; MAX_MESSAGE_SIZE],
        vec![0xff; 1_000],
        // A length prefix announcing far more than there is.
        vec![WIRE_VERSION, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3],
    ];
    for len in 0..valid.len() {
        cases.push(valid[..len].to_vec());
    }
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..500 {
        let mut b = valid.clone();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let i = (seed % b.len() as u64) as usize;
        b[i] ^= (seed >> 32) as u8 | 1;
        cases.push(b);
    }
    for bytes in &cases {
        let before = inbox.remembered();
        match inbox.accept(bytes, NOW) {
            // A change that leaves the signed body intact would be the same message, already
            // accepted: a duplicate. Nothing else can pass.
            Ok(v) => panic!("accepted {v:?}"),
            Err(
                EnvelopeError::Malformed(_)
                | EnvelopeError::Empty
                | EnvelopeError::UnsupportedVersion(_)
                | EnvelopeError::BadSignature(_)
                | EnvelopeError::WrongNetwork { .. }
                | EnvelopeError::ClockSkew { .. }
                | EnvelopeError::Duplicate,
            ) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
        assert_eq!(
            inbox.remembered(),
            before,
            "a refused message was remembered"
        );
    }
}

/// Trailing bytes after a valid envelope are ignored by the decoder: the message is the same,
/// with the same id (the hash of the signed body), so the Inbox drops it as a duplicate.
#[test]
fn trailing_bytes_do_not_make_a_new_message() {
    let key = NodeKey::from_seed(1);
    let valid = seal(&key, NET, NOW, status()).unwrap();
    let mut longer = valid.clone();
    longer.extend_from_slice(b"trailing garbage");
    assert_eq!(
        open(&longer, NET).unwrap().id,
        open(&valid, NET).unwrap().id
    );
    let mut inbox = Inbox::new(NET, 30_000);
    inbox.accept(&valid, NOW).unwrap();
    assert!(matches!(
        inbox.accept(&longer, NOW),
        Err(EnvelopeError::Duplicate)
    ));
}
