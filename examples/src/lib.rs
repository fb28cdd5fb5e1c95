//! Runnable examples of Rakis (`cargo run --example NAME`) and the README's code, compiled as
//! doc tests.

/// The README's code blocks, compiled (and run, unless marked `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
