//! [`NodeHandle`]: the cloneable handle a host holds to a running node, and the
//! [`RequestBuilder`] it submits requests with.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::error::NodeError;
use crate::clock::Clock;
use crate::coordinator::{KnownPeer, Phase, QuorumStatus};
use crate::events::NodeEvent;
use crate::protocol::{Certificate, ChatMessage, InferenceRequest, RevealMsg};
use crate::{ConsensusOutcome, InferenceId, NodeId, RequestId, SecurityFrame};

/// What a handle asks of the driver.
pub(super) enum Command {
    Submit(
        InferenceRequest,
        oneshot::Sender<Result<RequestId, NodeError>>,
    ),
    Status(RequestId, oneshot::Sender<Option<QuorumStatus>>),
    Certificate(RequestId, oneshot::Sender<Option<Certificate>>),
    Reveal(
        RequestId,
        NodeId,
        InferenceId,
        oneshot::Sender<Option<RevealMsg>>,
    ),
    Requests(oneshot::Sender<Vec<RequestId>>),
    Peers(oneshot::Sender<BTreeMap<NodeId, KnownPeer>>),
    Stats(oneshot::Sender<NodeStats>),
    Shutdown(oneshot::Sender<()>),
}

/// Counters of a running node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Requests tracked.
    pub requests: usize,
    /// Incoming messages dropped before use (bad signature, network, size, replay, a sync
    /// response nobody asked for...).
    pub dropped_messages: u64,
    /// Bytes of wire messages kept to answer peers' sync requests (at most 64 MiB).
    pub sync_log_bytes: usize,
    /// Direct sends awaiting a peer's acknowledgement (at most 64, 4 per peer).
    pub sends_in_flight: usize,
    /// Direct sends not made because earlier ones to the same peer (or in all) were still
    /// unacknowledged.
    pub sends_dropped: u64,
    /// Generation jobs running or queued on this node (its queue depth).
    pub generation_load: u32,
}

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    node: NodeId,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<NodeEvent>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeHandle({})", self.node.short())
    }
}

impl NodeHandle {
    pub(super) fn new(
        node: NodeId,
        commands: mpsc::Sender<Command>,
        events: broadcast::Sender<NodeEvent>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        NodeHandle {
            node,
            commands,
            events,
            clock,
        }
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The node's clock reading (ms since epoch).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::ShutDown)?;
        rx.await.map_err(|_| NodeError::ShutDown)
    }

    /// A request for `prompt` from this node, with the default sampling and security frame,
    /// to complete with the builder's methods and [`RequestBuilder::submit`]:
    ///
    /// ```no_run
    /// # async fn f(handle: rakis_core::NodeHandle) -> Result<(), rakis_core::NodeError> {
    /// use std::time::Duration;
    /// let id = handle
    ///     .request("What is the capital of France?")
    ///     .models(["smollm2"])
    ///     .quorum(3)
    ///     .deadline(Duration::from_secs(10))
    ///     .submit()
    ///     .await?;
    /// let outcome = handle.wait_for_outcome(id, Duration::from_secs(60)).await?;
    /// # Ok(()) }
    /// ```
    pub fn request(&self, prompt: impl Into<String>) -> RequestBuilder<'_> {
        RequestBuilder {
            handle: self,
            request: InferenceRequest::new(prompt, Vec::new(), self.node, self.now_ms()),
        }
    }

    /// Submits a request: validated, broadcast to the network and handled locally.
    pub async fn submit(&self, request: InferenceRequest) -> Result<RequestId, NodeError> {
        self.ask(|tx| Command::Submit(request, tx)).await?
    }

    /// Status of one request. A request that closed before the node restarted is read from the
    /// store.
    pub async fn status(&self, id: RequestId) -> Result<Option<QuorumStatus>, NodeError> {
        self.ask(|tx| Command::Status(id, tx)).await
    }

    /// The outcome of a request, once computed.
    pub async fn outcome(&self, id: RequestId) -> Result<Option<Arc<ConsensusOutcome>>, NodeError> {
        Ok(self.status(id).await?.and_then(|s| s.outcome))
    }

    /// Ids of the requests the node tracks.
    pub async fn requests(&self) -> Result<Vec<RequestId>, NodeError> {
        self.ask(Command::Requests).await
    }

    /// Peers that announced their status.
    pub async fn peers(&self) -> Result<BTreeMap<NodeId, KnownPeer>, NodeError> {
        self.ask(Command::Peers).await
    }

    /// Counters.
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        self.ask(Command::Stats).await
    }

    /// A new subscription to the node's events.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// What the status says of the end of a request: its outcome once agreed, its failure once
    /// failed, nothing while it is open.
    fn settled(status: Option<QuorumStatus>) -> Option<Result<Arc<ConsensusOutcome>, NodeError>> {
        let status = status?;
        if let Phase::Failed(f) = status.phase {
            return Some(Err(NodeError::RequestFailed(f)));
        }
        match status.outcome {
            Some(o) if o.selected().is_some() => Some(Ok(o)),
            _ => None,
        }
    }

    /// Waits until the request completes (returns its outcome) or fails (returns
    /// [`NodeError::RequestFailed`] with the typed reason), at most `timeout` (tokio time). A
    /// subscriber that falls behind the event stream reads the request's status instead, so a
    /// failure is never missed.
    pub async fn wait_for_outcome(
        &self,
        id: RequestId,
        timeout: Duration,
    ) -> Result<Arc<ConsensusOutcome>, NodeError> {
        let mut events = self.subscribe();
        if let Some(end) = Self::settled(self.status(id).await?) {
            return end;
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Completed {
                        request_id,
                        outcome,
                    }) if request_id == id => return Ok(outcome),
                    Ok(NodeEvent::Failed { request_id, reason }) if request_id == id => {
                        return Err(NodeError::RequestFailed(reason))
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(end) = Self::settled(self.status(id).await?) {
                            return end;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(NodeError::ShutDown),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| NodeError::Timeout)?
    }

    /// Waits until the request's committee certifies a result, and returns the certificate:
    /// signed results of at least the committee's signature threshold of distinct members over
    /// one digest, checked again here against the request's epoch. What a light client (a node
    /// that does not verify) should trust: never the first signed result, whose signer chooses
    /// what it says. Fails with [`NodeError::NoCommittee`] in an open network, and with
    /// [`NodeError::RequestFailed`] when the request fails here.
    pub async fn wait_for_certified_result(
        &self,
        id: RequestId,
        timeout: Duration,
    ) -> Result<Certificate, NodeError> {
        let mut events = self.subscribe();
        let wait = async {
            loop {
                if let Some(end) = self.certified(id).await? {
                    return end;
                }
                loop {
                    match events.recv().await {
                        Ok(NodeEvent::Certified { request_id, .. }) if request_id == id => break,
                        Ok(NodeEvent::Failed { request_id, reason }) if request_id == id => {
                            return Err(NodeError::RequestFailed(reason))
                        }
                        Ok(_) => {}
                        // Behind the stream: read the state again.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(NodeError::ShutDown)
                        }
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| NodeError::Timeout)?
    }

    /// The certificate of `id` if there is one; `Some(Err)` when the request cannot have one
    /// (no committee) or failed.
    async fn certified(
        &self,
        id: RequestId,
    ) -> Result<Option<Result<Certificate, NodeError>>, NodeError> {
        let Some(status) = self.status(id).await? else {
            return Ok(None);
        };
        if status.committee.is_none() {
            return Ok(Some(Err(NodeError::NoCommittee)));
        }
        if let Some(c) = self.ask(|tx| Command::Certificate(id, tx)).await? {
            return Ok(Some(Ok(c)));
        }
        if let Phase::Failed(f) = status.phase {
            return Ok(Some(Err(NodeError::RequestFailed(f))));
        }
        Ok(None)
    }

    /// The reveal of `node`'s answer `inference` to request `id`, if this node holds it (for
    /// the selected answer of a result: its token ids and ending give its length and why it
    /// stopped).
    pub async fn reveal(
        &self,
        id: RequestId,
        node: NodeId,
        inference: InferenceId,
    ) -> Result<Option<RevealMsg>, NodeError> {
        self.ask(|tx| Command::Reveal(id, node, inference, tx))
            .await
    }

    /// Stops the node gracefully: pending writes finish, then the driver returns.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.ask(Command::Shutdown).await
    }
}

/// A request being prepared by [`NodeHandle::request`]; [`RequestBuilder::submit`] validates
/// and submits it.
#[derive(Debug)]
#[must_use = "a request is only sent by `submit`"]
pub struct RequestBuilder<'a> {
    handle: &'a NodeHandle,
    request: InferenceRequest,
}

impl RequestBuilder<'_> {
    /// The models whose answers are accepted (at least one).
    pub fn models<S: Into<String>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        self.request.accepted_models = models.into_iter().map(Into::into).collect();
        self
    }
    /// A system message before the prompt.
    pub fn system(mut self, text: impl Into<String>) -> Self {
        self.request.messages.insert(0, ChatMessage::system(text));
        self
    }
    /// Sampling temperature (0 = greedy; default 0.7).
    pub fn temperature(mut self, t: f32) -> Self {
        self.request.temperature = t;
        self
    }
    /// Nucleus mass (default 0.95).
    pub fn top_p(mut self, p: f32) -> Self {
        self.request.top_p = p;
        self
    }
    /// Most tokens generated (default 256).
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.request.max_tokens = n;
        self
    }
    /// Commits needed before the deadline (default 5).
    pub fn quorum(mut self, q: u32) -> Self {
        self.request.frame.quorum = q;
        self
    }
    /// Time from now until commits close (default 60 s).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.request.frame.max_time_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self
    }
    /// The whole security frame.
    pub fn frame(mut self, frame: SecurityFrame) -> Self {
        self.request.frame = frame;
        self
    }
    /// The request as built, validated, without submitting it.
    pub fn build(self) -> Result<InferenceRequest, NodeError> {
        self.request.validate()?;
        Ok(self.request)
    }
    /// Validates and submits the request; returns its id.
    pub async fn submit(self) -> Result<RequestId, NodeError> {
        let handle = self.handle;
        handle.submit(self.build()?).await
    }
}
