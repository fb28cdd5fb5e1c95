//! # rakis-chain
//!
//! The persistence layer of Rakis: EVM chains through alloy and an embedded ledger, behind
//! [`ChainSink`](rakis_core::ChainSink). **Not implemented yet** (tracked in issue 7).
