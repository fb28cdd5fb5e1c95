//! Wire decoding: arbitrary bytes as a postcard [`Message`] and as an [`Envelope`] body.

use rakis_core::envelope::{open, Envelope};
use rakis_core::Message;

use crate::NETWORK;

/// Decodes `data` as a message and as an envelope body. Whatever decodes must re-encode, decode
/// again to the same encoding, and survive every accessor and check a receiver runs on it.
pub fn check(data: &[u8]) {
    if let Ok(m) = postcard::from_bytes::<Message>(data) {
        exercise(&m);
        stable(&m);
    }
    if let Ok(env) = postcard::from_bytes::<Envelope>(data) {
        exercise(&env.message);
        stable(&env);
    }
}

/// Encode → decode → encode gives the same bytes (no value decodes to something that encodes
/// differently twice; floats are compared by their encoding, so NaN is fine).
fn stable<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let once = postcard::to_allocvec(value).expect("a decoded value encodes");
    let back: T = postcard::from_bytes(&once).expect("an encoded value decodes");
    let twice = postcard::to_allocvec(&back).expect("a decoded value encodes");
    assert_eq!(once, twice, "encoding is not stable");
}

/// What a receiver does with a decoded message before trusting it.
fn exercise(m: &Message) {
    let _ = m.kind();
    let _ = m.request_id();
    match m {
        Message::Request(r) => {
            let _ = r.validate();
            let _ = r.deadline_ms();
            let _ = r.id();
        }
        Message::ConsensusResult(r) => {
            let _ = r.verify();
        }
        Message::SyncResponse { envelopes, .. } => {
            for e in envelopes {
                let _ = open(e, NETWORK);
            }
        }
        Message::Reveal(r) => {
            let _ = r.reveal.commitment();
            let _ = r.reveal.output_hash();
        }
        _ => {}
    }
}
