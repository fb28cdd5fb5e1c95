//! # rakis-chain
//!
//! The persistence layer of Rakis. Results leave the network here and land on chains, exactly
//! once, with the signatures of the nodes that agreed; contracts ask the network for inference.
pub mod contracts;
pub mod error;
pub mod evm;

pub use error::{EvmError, LedgerError, OracleRevert};
pub use evm::{EvmChain, EvmConfig, OracleDeployment};
pub mod ledger;
pub use ledger::LedgerSink;
#[cfg(feature = "anvil")]
pub mod dev;
