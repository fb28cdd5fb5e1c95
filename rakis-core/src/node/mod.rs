//! Node assembly and running: the [`NodeBuilder`] takes the parts, [`Node::spawn`] runs the
//! driver around the [`Coordinator`](crate::coordinator::Coordinator) and returns a cloneable
//! [`NodeHandle`].
//!
//! | file | what |
//! |---|---|
//! | `config` | [`NodeConfig`] (serde, presets) and [`Retention`] |
//! | `builder` | [`NodeBuilder`]: parts in, checked, node out |
//! | `handle` | [`NodeHandle`] and [`RequestBuilder`]: what a host calls |
//! | `driver` | the event loop: coordinator actions executed through the parts |
//! | `sync` | state sync: logging and relaying the original signed messages |
//! | `submit` | results written to chain sinks, once each |
//! | `error` | [`NodeError`], [`ConfigError`] |

mod builder;
mod config;
mod driver;
mod error;
mod handle;
mod submit;
mod sync;

pub use builder::NodeBuilder;
pub use config::{NodeConfig, Retention, DEFAULT_NETWORK_ID};
pub use error::{ConfigError, NodeError};
pub use handle::{NodeHandle, NodeStats, RequestBuilder};
pub use submit::{MAX_SIGNATURE_RETRIES, SIGNATURE_RETRY};

use driver::Driver;

/// An assembled node: a handle plus the driver that must be run.
#[derive(Debug)]
pub struct Node {
    handle: NodeHandle,
    driver: Driver,
}

impl Node {
    /// Starts building a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// A handle to the node (cloneable).
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Runs the node until [`NodeHandle::shutdown`] or until every handle is dropped.
    ///
    /// It first recovers from the store: open requests are restored (see
    /// [`Coordinator::restore`](crate::coordinator::Coordinator::restore)) and results still
    /// pending on a chain sink are submitted to the sinks that have not got them.
    pub async fn run(self) {
        self.driver.run().await
    }

    /// Spawns the driver on the current tokio runtime and returns the handle and its task.
    pub fn spawn(self) -> (NodeHandle, tokio::task::JoinHandle<()>) {
        let handle = self.handle.clone();
        let task = tokio::spawn(self.driver.run());
        (handle, task)
    }
}
