//! A local development chain: an anvil node with the oracle deployed (feature `anvil`). Used
//! by the tests and the `chain_oracle` example; handy for trying a node against a real EVM.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rakis_chain::EvmError> {
//! use rakis_chain::dev::{AnvilOptions, LocalChain};
//!
//! let chain = LocalChain::start(AnvilOptions::default()).await?;
//! let evm = chain.connect(0).await?; // an EvmChain paying with anvil's first account
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address as EvmAddress, FixedBytes};
use alloy::signers::local::PrivateKeySigner;

use alloy::providers::Provider;
use rakis_core::error::SharedError;
use rakis_core::NodeKey;

use crate::error::{classify, EvmError};
use crate::evm::{EvmChain, EvmConfig, OracleDeployment};

/// Where the anvil binary is: `$RAKIS_ANVIL`; else `node_modules/.bin/anvil` under
/// `$RAKIS_TOOLS_DIR` or under `.cache/tools` of the current directory or one of its parents
/// (where `scripts/fetch-tools.sh` installs it); else `anvil` on the `PATH`.
pub fn anvil_path() -> PathBuf {
    if let Some(p) = std::env::var_os("RAKIS_ANVIL") {
        return PathBuf::from(p);
    }
    let bin = Path::new("node_modules/.bin/anvil");
    if let Some(dir) = std::env::var_os("RAKIS_TOOLS_DIR") {
        return PathBuf::from(dir).join(bin);
    }
    if let Ok(mut dir) = std::env::current_dir() {
        loop {
            let candidate = dir.join(".cache/tools").join(bin);
            if candidate.is_file() {
                return candidate;
            }
            if !dir.pop() {
                break;
            }
        }
    }
    PathBuf::from("anvil")
}

/// How to start anvil.
#[derive(Clone, Debug)]
pub struct AnvilOptions {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Port (`None`: any free port).
    pub port: Option<u16>,
    /// A state file loaded at start and written periodically and at exit (restarts keep the
    /// chain).
    pub state: Option<PathBuf>,
    /// Seconds between blocks (`None`: a block per transaction).
    pub block_time: Option<f64>,
}

impl Default for AnvilOptions {
    fn default() -> Self {
        AnvilOptions {
            chain_id: 31_337,
            port: None,
            state: None,
            block_time: None,
        }
    }
}

/// Starts anvil (see [`anvil_path`]).
pub fn spawn_anvil(options: &AnvilOptions) -> Result<AnvilInstance, EvmError> {
    let path = anvil_path();
    let mut anvil = Anvil::at(&path).chain_id(options.chain_id);
    if let Some(port) = options.port {
        anvil = anvil.port(port);
    }
    if let Some(state) = &options.state {
        anvil = anvil
            .arg("--state")
            .arg(state)
            .arg("--state-interval")
            .arg("1");
    }
    if let Some(t) = options.block_time {
        anvil = anvil.block_time_f64(t);
    }
    anvil.try_spawn().map_err(|e| {
        EvmError::Config(format!(
            "cannot start anvil at {} ({e}); run scripts/fetch-tools.sh or set RAKIS_ANVIL",
            path.display()
        ))
    })
}

/// The private key of anvil's `i`-th funded account.
pub fn anvil_signer(anvil: &AnvilInstance, i: usize) -> Result<PrivateKeySigner, EvmError> {
    let key = anvil
        .nth_key(i)
        .ok_or_else(|| EvmError::Config(format!("anvil has no account {i}")))?;
    PrivateKeySigner::from_bytes(&FixedBytes::from_slice(&key.to_bytes()))
        .map_err(|e| EvmError::Config(e.to_string()))
}

/// A running anvil node with a deployed oracle. Anvil stops when this is dropped.
#[derive(Debug)]
pub struct LocalChain {
    /// The anvil process.
    pub anvil: AnvilInstance,
    /// The oracle's address.
    pub oracle: EvmAddress,
}

impl LocalChain {
    /// Starts anvil and deploys the oracle with [`OracleDeployment::local_dev`] from account 0.
    pub async fn start(options: AnvilOptions) -> Result<Self, EvmError> {
        Self::start_with(options, &OracleDeployment::local_dev()).await
    }

    /// Starts anvil and deploys the oracle with `deployment` from account 0.
    pub async fn start_with(
        options: AnvilOptions,
        deployment: &OracleDeployment,
    ) -> Result<Self, EvmError> {
        let anvil = spawn_anvil(&options)?;
        let oracle =
            EvmChain::deploy_oracle(&anvil.endpoint(), anvil_signer(&anvil, 0)?, deployment)
                .await?;
        Ok(LocalChain { anvil, oracle })
    }

    /// The JSON-RPC endpoint.
    pub fn rpc_url(&self) -> String {
        self.anvil.endpoint()
    }

    /// A development configuration for this chain's oracle ([`EvmConfig::local_dev`]).
    pub fn config(&self) -> EvmConfig {
        EvmConfig {
            chain_id: Some(self.anvil.chain_id()),
            ..EvmConfig::local_dev(self.rpc_url(), self.oracle)
        }
    }

    /// The signer of funded account `i`.
    pub fn signer(&self, i: usize) -> Result<PrivateKeySigner, EvmError> {
        anvil_signer(&self.anvil, i)
    }

    /// Connects to the oracle, paying with funded account `i`.
    pub async fn connect(&self, i: usize) -> Result<EvmChain, EvmError> {
        EvmChain::connect(self.config(), self.signer(i)?).await
    }

    /// Registers each of `keys` with the oracle's minimum stake, staked by funded account 0
    /// (the oracle's owner), starts an epoch with every active node and waits until it governs
    /// new requests; returns its number.
    pub async fn register_and_start_epoch(&self, keys: &[NodeKey]) -> Result<u64, EvmError> {
        let owner = self.connect(0).await?;
        let stake = owner.oracle().minStake().call().await.map_err(classify)?;
        let stake = u128::try_from(stake).map_err(|e| EvmError::Config(e.to_string()))?;
        for key in keys {
            owner.register_node(key, stake).await?;
        }
        self.start_epoch().await
    }

    /// Starts an epoch with the active nodes and waits (mining blocks) until it governs new
    /// requests; returns its number.
    pub async fn start_epoch(&self) -> Result<u64, EvmError> {
        let owner = self.connect(0).await?;
        let number = owner.advance_epoch().await?;
        let starts_at = owner
            .oracle()
            .epochOf(number)
            .call()
            .await
            .map_err(classify)?
            .startsAt;
        loop {
            let _: serde_json::Value = owner
                .provider()
                .raw_request("evm_mine".into(), ())
                .await
                .map_err(|e| EvmError::Rpc(SharedError::new(e)))?;
            let block = owner
                .provider()
                .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
                .await
                .map_err(|e| EvmError::Rpc(SharedError::new(e)))?
                .ok_or_else(|| EvmError::Config("no latest block".into()))?;
            if block.header.timestamp >= starts_at {
                return Ok(number);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}
