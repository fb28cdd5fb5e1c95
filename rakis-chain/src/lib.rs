//! # rakis-chain
//!
//! The persistence layer of Rakis. Results leave the network here and land on chains, exactly
//! once, with the signatures of the nodes that agreed; contracts ask the network for inference.
//!
//! * [`contracts`]: the Solidity oracle (`contracts/RakisOracle.sol`) and a sample consumer,
//!   compiled offline with solcjs into the committed `artifacts/`, bound with alloy's `sol!`.
//! * [`EvmChain`]: one chain's oracle through alloy — a [`ChainSink`](rakis_core::ChainSink)
//!   that submits results (retried through RPC failures, never twice, reverts decoded into
//!   [`OracleRevert`]) and a [`RequestSource`](rakis_core::RequestSource) that turns the
//!   oracle's `InferenceRequested` events into requests.
//! * [`registry`]: the oracle's staked registry — nodes stake to register, the member set is
//!   fixed per epoch on chain, and [`ChainMembership`] serves those epochs to a node as its
//!   membership, so nodes and the contract draw the same committee for every request.
//! * [`LedgerSink`]: an embedded, append-only, hash-chained ledger file, the default when no
//!   chain is configured; [`ledger::verify_file`] checks every entry.
//! * [`ChainConfig`]: several chains at once (cross-chain): a result goes to every configured
//!   chain, and each node's store tracks the submission per chain.
//! * [`dev`] (feature `anvil`): a local anvil node with the oracle deployed.
//!
//! ## How a chain request becomes an on-chain result
//!
//! 1. A contract calls `RakisOracle.requestInference(params, callback, callbackGas)` with a
//!    payment. The oracle computes the Rakis request id
//!    ([`chain_request_id`](rakis_core::protocol::chain_request_id): SHA-256 over fixed-width
//!    fields, so the node computes the same id) and emits `InferenceRequested`.
//! 2. Every node's [`EvmChain`] source reads the event, rebuilds the
//!    [`InferenceRequest`](rakis_core::InferenceRequest) (origin: chain id, contract, tx hash,
//!    log index) and checks that its id equals the contract's.
//! 3. The nodes commit, reveal and agree; each signs the result digest (EIP-191).
//! 4. The sinks submit `submitResult(id, {output, jointHash, payees, members, weights,
//!    signatures})`. The oracle checks the member list against the request's epoch, draws the
//!    request's committee as the nodes do (seeded by the hash of the block that holds the
//!    request), and requires signatures of more than two thirds of that committee (and at
//!    least its share) by bonded members, over a digest bound to this chain, contract, epoch
//!    and the payees ([`config_digest`](rakis_core::membership::config_digest)). It stores the
//!    result once, reimburses the submitter's gas from the payment, credits the rest to the
//!    payees and calls the consumer back with exactly its gas. Unfulfilled requests are
//!    credited back after their submission window; everything is pulled with `withdraw`.
//!
//! ## Assembly
//!
//! ```no_run
//! use rakis_chain::{ChainConfig, EvmConfig};
//! use rakis_core::{Node, NodeKey};
//!
//! # async fn demo(oracle: alloy::primitives::Address) -> Result<(), Box<dyn std::error::Error>> {
//! let key = NodeKey::load_or_generate("node.key".as_ref(), None)?;
//! let chains = ChainConfig {
//!     evm: vec![EvmConfig::new("https://rpc.example.org", oracle)],
//!     ledger: Some("results.ledger".into()),
//! };
//! // The node key pays for its own transactions here; any funded key works.
//! let persistence = chains
//!     .connect(&rakis_chain::evm::signer_from_node_key(&key))
//!     .await?;
//! for chain in &persistence.chains {
//!     chain.register_node(&key, 1_000_000_000_000_000_000).await?; // once per chain, 1 ether
//! }
//! // The committee rule of the first chain's registry.
//! let membership = persistence.chains[0].membership();
//! let builder = persistence.attach(Node::builder().key(key).membership(membership));
//! // … add a transport, an engine, an embedder and a store, then `build()` and `spawn()`.
//! # let _ = builder;
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rustdoc::broken_intra_doc_links
)]

pub mod config;
pub mod contracts;
#[cfg(feature = "anvil")]
pub mod dev;
pub mod error;
pub mod evm;
pub mod ledger;
pub mod registry;
pub mod slashing;
mod tx;

pub use config::{ChainConfig, Persistence};
pub use error::{Error, EvmError, LedgerError, OracleRevert};
pub use evm::{EvmChain, EvmConfig, OracleDeployment};
pub use ledger::LedgerSink;
pub use registry::ChainMembership;
