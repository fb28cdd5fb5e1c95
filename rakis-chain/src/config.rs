//! Assembling the persistence layer from configuration: every configured EVM chain, and the
//! embedded ledger when no chain is configured (or when asked for).

use std::path::PathBuf;
use std::sync::Arc;

use alloy::signers::local::PrivateKeySigner;
use rakis_core::{ChainSink, NodeBuilder};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::evm::{EvmChain, EvmConfig};
use crate::ledger::LedgerSink;

/// Where results go and where chain requests come from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChainConfig {
    /// EVM chains: each one's oracle is a sink and a request source.
    pub evm: Vec<EvmConfig>,
    /// The ledger file. With no chain configured the ledger is used whatever this says (at
    /// `rakis-ledger.bin` in the working directory when unset); with chains, only when set.
    pub ledger: Option<PathBuf>,
}

/// The connected parts, ready to be added to a node.
#[derive(Clone, Default)]
pub struct Persistence {
    /// The connected chains.
    pub chains: Vec<EvmChain>,
    /// The ledger, when used.
    pub ledger: Option<LedgerSink>,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("chains", &self.chains)
            .field("ledger", &self.ledger)
            .finish()
    }
}

impl ChainConfig {
    /// Connects every chain (transactions signed by `signer`) and opens the ledger.
    pub async fn connect(&self, signer: &PrivateKeySigner) -> Result<Persistence, Error> {
        let mut chains = Vec::with_capacity(self.evm.len());
        for config in &self.evm {
            chains.push(EvmChain::connect(config.clone(), signer.clone()).await?);
        }
        let ledger = match (&self.ledger, chains.is_empty()) {
            (Some(path), _) => Some(LedgerSink::open(path)?),
            (None, true) => Some(LedgerSink::open("rakis-ledger.bin")?),
            (None, false) => None,
        };
        Ok(Persistence { chains, ledger })
    }
}

impl Persistence {
    /// Every sink: the chains, then the ledger.
    pub fn sinks(&self) -> Vec<Arc<dyn ChainSink>> {
        let mut out: Vec<Arc<dyn ChainSink>> = self
            .chains
            .iter()
            .map(|c| Arc::new(c.clone()) as Arc<dyn ChainSink>)
            .collect();
        if let Some(l) = &self.ledger {
            out.push(Arc::new(l.clone()));
        }
        out
    }

    /// Adds every sink and every chain's request source to a node under assembly.
    pub fn attach(&self, mut builder: NodeBuilder) -> NodeBuilder {
        for sink in self.sinks() {
            builder = builder.chain_sink(sink);
        }
        for chain in &self.chains {
            builder = builder.request_source(chain.clone());
        }
        builder
    }
}
