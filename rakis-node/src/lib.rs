//! # rakis-node
//!
//! The node an operator runs: `rakis init` writes a commented configuration file and a key,
//! `rakis run` starts the node it describes with the real parts (candle models, libp2p, a redb
//! store, chains or a ledger) and serves an OpenAI-compatible, verified HTTP API with Prometheus
//! metrics and a status page; `rakis ask` and `rakis verify` are a light client from the
//! command line.
//!
//! The same pieces are a library for hosts that embed a node:
//!
//! * [`config`]: the configuration file ([`RakisConfig`]), read strictly, errors naming the
//!   field.
//! * [`launch()`]: a running node from a configuration ([`Launched`]).
//! * [`gateway`]: the axum [`Router`](axum::Router) of the API ([`Gateway`]), mountable in a
//!   host's own router.
//! * [`verification`]: the verification object every answer carries and its offline check.
//! * [`metrics`] and [`status`]: what an operator watches.
//!
//! ```no_run
//! # async fn doc() -> Result<(), Box<dyn std::error::Error>> {
//! use rakis_node::{launch, RakisConfig};
//!
//! let config = RakisConfig::load("rakis.toml".as_ref())?;
//! let node = launch(&config, |p| tracing::info!(?p, "starting")).await?;
//! let listener = tokio::net::TcpListener::bind(config.gateway.listen).await?;
//! let app = node.gateway.router();
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

pub mod config;
pub mod gateway;
pub mod launch;
pub mod metrics;
pub mod status;
pub mod verification;

pub use config::{ConfigFileError, RakisConfig};
pub use gateway::{ApiError, Gateway};
pub use launch::{launch, LaunchError, Launched, Progress};
pub use metrics::Metrics;
pub use status::StatusBoard;
pub use verification::{Verification, VerifyError};
