//! Envelope verification: [`open`] on raw bytes, and an [`Inbox`] fed a sequence of raw,
//! mutated, truncated, extended, replayed and valid messages at moving local times.

use arbitrary::{Arbitrary, Unstructured};
use rakis_core::envelope::{open, Inbox, MAX_MESSAGE_SIZE};
use rakis_core::envelope::EnvelopeError;

use crate::seeds::{key_of, sample_wire, SEAL_AT_MS};
use crate::NETWORK;

/// Skew bound of the fuzzed inbox.
pub const MAX_SKEW_MS: u64 = 5_000;

/// One step fed to the inbox.
#[derive(Arbitrary, Debug)]
pub enum Step {
    /// Arbitrary bytes.
    Raw {
        /// The bytes.
        bytes: Vec<u8>,
        /// Take them as a relayed (sync) message.
        relayed: bool,
    },
    /// A valid sample message with some bytes overwritten.
    Mutated {
        /// Which sample.
        sample: u8,
        /// (position, xor mask) pairs.
        edits: Vec<(u16, u8)>,
        /// Take them as a relayed (sync) message.
        relayed: bool,
    },
    /// A valid sample message cut short.
    Truncated {
        /// Which sample.
        sample: u8,
        /// Bytes kept.
        len: u16,
    },
    /// A valid sample message with bytes appended.
    Extended {
        /// Which sample.
        sample: u8,
        /// The tail.
        tail: Vec<u8>,
    },
    /// A valid sample message as sealed.
    Valid {
        /// Which sample.
        sample: u8,
        /// Take it as a relayed (sync) message.
        relayed: bool,
    },
    /// A valid sample message padded past the size limit.
    Oversized {
        /// Which sample.
        sample: u8,
    },
    /// A message remembered as the inbox's own.
    RememberOwn {
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Local time moves by this many ms (negative: a clock stepped back).
    Clock {
        /// The step.
        delta_ms: i32,
    },
}

/// Runs the raw-bytes check and the inbox sequence decoded from `data`.
pub fn check(data: &[u8]) {
    raw(data);
    let Ok(steps) = Vec::<Step>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    inbox(&steps);
}

/// [`open`] on raw bytes never panics, and accepts only what a fixture key signed.
fn raw(data: &[u8]) {
    if let Ok(v) = open(data, NETWORK) {
        assert!(
            key_of(&v.envelope.sender).is_some(),
            "accepted a message from {:?} that no fixture key signed",
            v.envelope.sender
        );
    }
}

fn inbox(steps: &[Step]) {
    let samples = sample_wire();
    let pick = |i: u8| &samples[i as usize % samples.len()];
    let mut inbox = Inbox::new(NETWORK, MAX_SKEW_MS);
    let mut now = SEAL_AT_MS;
    for step in steps.iter().take(16) {
        let (bytes, relayed, original): (Vec<u8>, bool, Option<&Vec<u8>>) = match step {
            Step::Raw { bytes, relayed } => (bytes.clone(), *relayed, None),
            Step::Mutated {
                sample,
                edits,
                relayed,
            } => {
                let mut b = pick(*sample).clone();
                for &(pos, mask) in edits {
                    let n = b.len();
                    b[pos as usize % n] ^= mask;
                }
                (b, *relayed, Some(pick(*sample)))
            }
            Step::Truncated { sample, len } => {
                let b = pick(*sample);
                (b[..(*len as usize).min(b.len())].to_vec(), false, Some(b))
            }
            Step::Extended { sample, tail } => {
                let mut b = pick(*sample).clone();
                b.extend_from_slice(tail);
                (b, false, Some(pick(*sample)))
            }
            Step::Valid { sample, relayed } => {
                (pick(*sample).clone(), *relayed, Some(pick(*sample)))
            }
            Step::Oversized { sample } => {
                let mut b = pick(*sample).clone();
                b.resize(MAX_MESSAGE_SIZE + 1, 0);
                let r = inbox.accept(&b, now);
                assert!(
                    matches!(r, Err(EnvelopeError::TooLarge { .. })),
                    "oversized message: {r:?}"
                );
                continue;
            }
            Step::RememberOwn { bytes } => {
                inbox.remember_own(bytes, now);
                continue;
            }
            Step::Clock { delta_ms } => {
                now = now.saturating_add_signed(i64::from(*delta_ms));
                continue;
            }
        };
        let before = inbox.remembered();
        let result = if relayed {
            inbox.accept_relayed(&bytes, now)
        } else {
            inbox.accept(&bytes, now)
        };
        match result {
            Ok(v) => {
                let opened = open(&bytes, NETWORK).expect("an accepted message opens");
                assert_eq!(opened.id, v.id);
                assert!(
                    key_of(&v.envelope.sender).is_some(),
                    "unsigned message accepted"
                );
                if !relayed {
                    let skew = v.envelope.timestamp_ms.abs_diff(now);
                    assert!(skew <= MAX_SKEW_MS, "skew {skew} accepted");
                }
                if let Some(original) = original {
                    // Mutations never yield another accepted message: at most the same one
                    // in other bytes (then the id, the hash of the signed body, is the same).
                    let o = open(original, NETWORK).expect("samples open");
                    assert_eq!(
                        o.id, v.id,
                        "a mutated message was accepted as a new message"
                    );
                    assert_eq!(o.envelope, v.envelope);
                }
                // The same bytes again: live, a duplicate; relayed, the same message returned
                // again (the coordinator judges relayed copies by signed time) and nothing new
                // remembered.
                let remembered = inbox.remembered();
                if !relayed {
                    assert!(matches!(
                        inbox.accept(&bytes, now),
                        Err(EnvelopeError::Duplicate)
                    ));
                }
                let again = inbox
                    .accept_relayed(&bytes, now)
                    .expect("a relayed copy of an accepted message");
                assert_eq!(again.id, v.id);
                assert_eq!(inbox.remembered(), remembered);
            }
            Err(_) => assert!(
                inbox.remembered() <= before,
                "a refused message was remembered ({before} -> {})",
                inbox.remembered()
            ),
        }
    }
}
