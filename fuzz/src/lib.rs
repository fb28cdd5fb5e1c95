//! Shared code of the rakis-core fuzz targets (see `fuzz_targets/` and `scripts/fuzz.sh`).
//!
//! * [`decode`]: wire decoding of [`Message`]s and envelope bodies.
//! * [`envelope`]: [`rakis_core::envelope::open`] and the [`Inbox`] on arbitrary bytes.
//! * [`coordinator`]: a [`rakis_core::coordinator::Coordinator`] driven by a small operation language.
//! * [`seeds`]: real encoded messages, the seed corpus (`examples/gen_seeds.rs`).
//!
//! Each check panics when an invariant breaks: a panic is what the fuzzer reports as a crash.
//!
//! [`Message`]: rakis_core::Message
//! [`Inbox`]: rakis_core::envelope::Inbox

pub mod coordinator;
pub mod decode;
pub mod envelope;
pub mod seeds;

/// The network id every fuzzed envelope is sealed for.
pub const NETWORK: &str = "rakis-fuzz";
