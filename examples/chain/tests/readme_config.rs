//! The configuration file shown in README.md reads into the parts' configurations.

use rakis_chain::ChainConfig;
use rakis_core::{NodeConfig, StaticMembership};
use rakis_inference::{EmbedderConfig, EngineConfig};
use rakis_net::NetConfig;

/// The struct the README's assembly example reads (kept identical to it).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Config {
    node: NodeConfig,
    net: NetConfig,
    engine: EngineConfig,
    embedder: EmbedderConfig,
    membership: StaticMembership,
    #[serde(default)]
    chains: ChainConfig,
}

#[test]
fn the_readme_configuration_file_is_valid() {
    let readme = include_str!("../../../README.md");
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in README.md");
    let config: Config = toml::from_str(block).expect("README's rakis.toml parses");
    config
        .net
        .validate()
        .expect("a valid network configuration");
    assert_eq!(config.net.network_id, "my-net");
    assert_eq!(config.net.bootstrap_peers.len(), 1);
    assert_eq!(config.node.max_open_requests, 1000);
    assert_eq!(config.engine.workers, 2);
    assert_eq!(config.chains.evm.len(), 1);
    assert_eq!(config.membership.epoch().len(), 2);
    assert!(config.chains.ledger.is_some());
}
