//! The chain example of Rakis (`cargo run --example chain_oracle`: anvil, the oracle contract, a
//! consumer contract, nodes with the real models, end to end), and the README's code blocks,
//! compiled as doc tests (they assemble a node from every crate, the chain included).
//!
//! The other examples and their shared helpers are in `rakis-examples`; this package is apart
//! so that they build without the chain stack.

/// The README's code blocks, compiled (and run, unless marked `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
