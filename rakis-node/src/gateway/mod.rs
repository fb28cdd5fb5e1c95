//! The OpenAI-compatible verified gateway: an axum [`Router`] any host can serve or mount in its
//! own router (as `examples/embed_in_app` mounts its routes).
//!
//! | Route | What |
//! |---|---|
//! | `POST /v1/chat/completions` | a request to the network; answered once its committee certified one answer (`stream: true`: as server-sent events in the OpenAI chunk format) |
//! | `GET /v1/models` | the models this node and its peers serve |
//! | `POST /v1/embeddings` | the node's embedder (`encoding_format` `float` or `base64`) |
//! | `GET /metrics` | Prometheus text format ([`crate::metrics`]) |
//! | `GET /`, `GET /status.json` | the status page ([`crate::status`]) |
//! | `GET /healthz` | the node's id, peers and open requests |
//!
//! Every answer carries a [`Verification`] in a `rakis` field (OpenAI clients ignore it): the
//! request, the committee, the accepted nodes, the signatures and the result digest, which
//! `rakis verify` checks offline. Errors have the OpenAI shape (`{"error": {"message", "type",
//! "param", "code"}}`): 400 for a bad request (the field in `param`), 401 without a valid key,
//! 404 for a model the network does not serve, 429 when a key's rate or the gateway's capacity
//! is spent, 504 when the network did not agree by the deadline, 503 when the node cannot serve.
//!
//! ```no_run
//! # async fn doc(handle: rakis_core::NodeHandle) -> Result<(), Box<dyn std::error::Error>> {
//! use rakis_node::gateway::Gateway;
//! use rakis_node::config::{GatewayConfig, RequestDefaults};
//!
//! let gateway = Gateway::builder(handle)
//!     .models(["smollm2"])
//!     .defaults(RequestDefaults::default())
//!     .config(&GatewayConfig::default())
//!     .build();
//! // Mount it beside the host's own routes.
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hi" }))
//!     .merge(gateway.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
//! # Ok(()) }
//! ```

pub mod error;
pub mod openai;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use rakis_core::membership::Membership;
use rakis_core::{ChatMessage, Embedder, InferenceRequest, NodeHandle, NodeId, Role};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

pub use self::error::ApiError;
use self::openai::*;
use crate::config::{GatewayConfig, RequestDefaults};
use crate::metrics::Metrics;
use crate::status::StatusBoard;
pub use crate::verification::{Completion, ModelInfo, Verification};

/// Texts one embeddings request may carry.
pub const MAX_EMBEDDING_INPUTS: usize = 64;
/// Characters of one text to embed (the model reads at most 256 tokens of it).
pub const MAX_EMBEDDING_CHARS: usize = 8_192;
/// Embedding requests served at once: the embedder is the one the node verifies reveals with,
/// and the API must not starve consensus of it.
pub const MAX_EMBEDDING_REQUESTS: usize = 2;
/// Client addresses whose rates are remembered before idle ones are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// The gateway: cheap to clone, one per node.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("node", &self.inner.node.node_id())
            .field("models", &self.inner.models)
            .finish_non_exhaustive()
    }
}

struct Inner {
    node: NodeHandle,
    membership: Option<Arc<dyn Membership>>,
    embedder: Option<Arc<dyn Embedder>>,
    models: Vec<String>,
    defaults: RequestDefaults,
    auth: Auth,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    submitted: Arc<Semaphore>,
    queue_timeout: Duration,
    embedding: Arc<Semaphore>,
    max_body_bytes: usize,
    metrics: Option<Arc<Metrics>>,
    status: Option<Arc<StatusBoard>>,
}

/// Bearer keys and rate limits.
struct Auth {
    /// SHA-256 of each key → its name and limiter.
    keys: HashMap<[u8; 32], (String, Option<DefaultDirectRateLimiter>)>,
    /// Without keys: a limit per client address.
    anonymous: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

fn quota(per_minute: u32) -> Option<Quota> {
    NonZeroU32::new(per_minute).map(Quota::per_minute)
}

/// Assembles a [`Gateway`].
#[must_use]
pub struct GatewayBuilder {
    node: NodeHandle,
    membership: Option<Arc<dyn Membership>>,
    embedder: Option<Arc<dyn Embedder>>,
    models: Vec<String>,
    defaults: RequestDefaults,
    config: GatewayConfig,
    metrics: Option<Arc<Metrics>>,
    status: Option<Arc<StatusBoard>>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder").finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// The network's membership (the node's): answers are then certified by each request's
    /// committee. Without, the gateway serves an open network's uncertified outcomes.
    pub fn membership(mut self, m: Arc<dyn Membership>) -> Self {
        self.membership = Some(m);
        self
    }
    /// The embedder behind `/v1/embeddings`.
    pub fn embedder(mut self, e: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(e);
        self
    }
    /// Models this node serves itself (its peers' are learnt from their status).
    pub fn models<S: Into<String>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }
    /// Request defaults.
    pub fn defaults(mut self, d: RequestDefaults) -> Self {
        self.defaults = d;
        self
    }
    /// Keys, limits and what is served.
    pub fn config(mut self, c: &GatewayConfig) -> Self {
        self.config = c.clone();
        self
    }
    /// Metrics to serve at `/metrics` and to count requests in.
    pub fn metrics(mut self, m: Arc<Metrics>) -> Self {
        self.metrics = Some(m);
        self
    }
    /// The status page's board.
    pub fn status(mut self, s: Arc<StatusBoard>) -> Self {
        self.status = Some(s);
        self
    }

    /// The gateway.
    pub fn build(self) -> Gateway {
        let c = &self.config;
        let keys = c
            .api_keys
            .iter()
            .map(|k| {
                let limiter = quota(k.requests_per_minute.unwrap_or(c.requests_per_minute))
                    .map(RateLimiter::direct);
                (
                    Sha256::digest(k.key.as_bytes()).into(),
                    (k.name.clone(), limiter),
                )
            })
            .collect();
        let anonymous = if c.api_keys.is_empty() {
            quota(c.requests_per_minute).map(RateLimiter::keyed)
        } else {
            None
        };
        Gateway {
            inner: Arc::new(Inner {
                node: self.node,
                membership: self.membership,
                embedder: self.embedder,
                models: self.models,
                defaults: self.defaults,
                auth: Auth { keys, anonymous },
                in_flight: Arc::new(Semaphore::new(c.max_in_flight.max(1))),
                max_in_flight: c.max_in_flight.max(1),
                submitted: Arc::new(Semaphore::new(c.max_submitted.max(1))),
                queue_timeout: c.queue_timeout,
                embedding: Arc::new(Semaphore::new(MAX_EMBEDDING_REQUESTS)),
                max_body_bytes: c.max_body_bytes,
                metrics: if c.metrics { self.metrics } else { None },
                status: if c.status_page { self.status } else { None },
            }),
        }
    }
}

impl Gateway {
    /// Starts assembling a gateway in front of `node`.
    pub fn builder(node: NodeHandle) -> GatewayBuilder {
        GatewayBuilder {
            node,
            membership: None,
            embedder: None,
            models: Vec::new(),
            defaults: RequestDefaults::default(),
            config: GatewayConfig::default(),
            metrics: None,
            status: None,
        }
    }

    /// The routes, ready to serve (with `into_make_service_with_connect_info::<SocketAddr>()`
    /// so that anonymous clients are limited per address) or to merge into a host's router.
    pub fn router(&self) -> Router {
        let mut router = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(list_models))
            .route("/v1/embeddings", post(embeddings))
            .route("/healthz", get(health));
        if self.inner.metrics.is_some() {
            router = router.route("/metrics", get(metrics));
        }
        if self.inner.status.is_some() {
            router = router
                .route("/", get(status_page))
                .route("/status.json", get(status_json));
        }
        // Every route is behind the keys when there are keys: the status page shows answers,
        // and the metrics what the node serves.
        router
            .route_layer(middleware::from_fn_with_state(self.clone(), authorize))
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), count))
            .layer(DefaultBodyLimit::max(self.inner.max_body_bytes))
            .with_state(self.clone())
    }

    /// Models the network serves: this node's and those its peers announced, with how many
    /// nodes serve each.
    pub async fn available_models(&self) -> BTreeMap<String, usize> {
        let mut models: BTreeMap<String, usize> = BTreeMap::new();
        for m in &self.inner.models {
            *models.entry(m.clone()).or_default() += 1;
        }
        if let Ok(peers) = self.inner.node.peers().await {
            for peer in peers.values() {
                for m in &peer.status.models {
                    *models.entry(m.clone()).or_default() += 1;
                }
            }
        }
        models
    }

    /// The request a chat completion asks for, validated.
    async fn inference_request(
        &self,
        body: &ChatCompletionRequest,
    ) -> Result<InferenceRequest, ApiError> {
        let d = &self.inner.defaults;
        if body.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request(
                "the network agrees on one answer: `n` must be 1",
                Some("n".into()),
            ));
        }
        if body.messages.is_empty() {
            return Err(ApiError::bad_request(
                "`messages` must hold at least one message",
                Some("messages".into()),
            ));
        }
        let mut messages = Vec::with_capacity(body.messages.len());
        for (i, m) in body.messages.iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ApiError::bad_request(
                        format!(
                            "role `{other}` is not supported (system, developer, user, assistant)"
                        ),
                        Some(format!("messages[{i}].role")),
                    ))
                }
            };
            let content = match &m.content {
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            _ => {
                                return Err(ApiError::bad_request(
                                    format!(
                                        "content part `{}` is not supported: text only",
                                        p.kind
                                    ),
                                    Some(format!("messages[{i}].content")),
                                ))
                            }
                        }
                    }
                    text
                }
                None => {
                    return Err(ApiError::bad_request(
                        "a message needs `content`",
                        Some(format!("messages[{i}].content")),
                    ))
                }
            };
            messages.push(ChatMessage { role, content });
        }
        let temperature = body.temperature.unwrap_or(d.temperature);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad_request(
                format!("{temperature} is not in 0..=2"),
                Some("temperature".into()),
            ));
        }
        let top_p = body.top_p.unwrap_or(d.top_p);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_request(
                format!("{top_p} is not in (0, 1]"),
                Some("top_p".into()),
            ));
        }
        let (field, max_tokens) = match (body.max_completion_tokens, body.max_tokens) {
            (Some(n), _) => ("max_completion_tokens", n),
            (None, Some(n)) => ("max_tokens", n),
            (None, None) => ("max_tokens", d.max_tokens),
        };
        if max_tokens == 0 || max_tokens > d.max_tokens_limit {
            return Err(ApiError::bad_request(
                format!("must be 1 to {}", d.max_tokens_limit),
                Some(field.into()),
            ));
        }
        let options = body.rakis.clone().unwrap_or_default();
        let quorum = options.quorum.unwrap_or(d.quorum);
        let members = self
            .inner
            .membership
            .as_ref()
            .and_then(|m| m.epoch_at(self.inner.node.now_ms()))
            .map(|e| e.len());
        if quorum == 0 || members.is_some_and(|n| quorum as usize > n) {
            return Err(ApiError::bad_request(
                format!(
                    "must be 1 to the network's {} members",
                    members.unwrap_or(usize::MAX)
                ),
                Some("rakis.quorum".into()),
            ));
        }
        let max_ms = u64::try_from(d.max_deadline.as_millis()).unwrap_or(u64::MAX);
        let deadline_ms = options
            .deadline_ms
            .unwrap_or(u64::try_from(d.deadline.as_millis()).unwrap_or(u64::MAX));
        if deadline_ms == 0 || deadline_ms > max_ms {
            return Err(ApiError::bad_request(
                format!("must be 1 to {max_ms} ms"),
                Some("rakis.deadline_ms".into()),
            ));
        }
        let available = self.available_models().await;
        if !available.contains_key(&body.model) {
            let names: Vec<String> = available.keys().cloned().collect();
            return Err(ApiError::model_not_found(&body.model, &names));
        }
        let node = &self.inner.node;
        let mut request =
            InferenceRequest::new("", vec![body.model.clone()], node.node_id(), node.now_ms());
        request.messages = messages;
        request.temperature = temperature;
        request.top_p = top_p;
        request.max_tokens = max_tokens;
        request.frame.quorum = quorum;
        request.frame.max_time_ms = deadline_ms;
        // The embedding model this node verifies with (the frame's default otherwise).
        if let Some(e) = &self.inner.embedder {
            request.frame.embedding_model = e.model();
        }
        request
            .validate()
            .map_err(|e| ApiError::bad_request(e.to_string(), None))?;
        Ok(request)
    }

    /// Submits `request` and waits until it is certified (or decided, in an open network).
    /// At most `max_submitted` requests are with the network at once; this one waits for a
    /// slot at most `queue_timeout` (then 429), and its deadline starts when it is submitted. Returns the answer and its verification (whose request is the one
    /// submitted).
    pub async fn settle(
        &self,
        request: &InferenceRequest,
    ) -> Result<(String, Verification), ApiError> {
        let wait = self.inner.queue_timeout;
        let _slot = tokio::time::timeout(wait, self.inner.submitted.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::queue_full(wait))?
            .map_err(|_| ApiError::unavailable("the gateway is shutting down"))?;
        let node = &self.inner.node;
        // Made now: its deadline counts from its submission, not from its arrival.
        let mut request = request.clone();
        request.created_at_ms = node.now_ms();
        let request = &request;
        let id = node
            .submit(request.clone())
            .await
            .map_err(ApiError::from_node)?;
        let timeout =
            Duration::from_millis(request.frame.max_time_ms) + self.inner.defaults.settle_time;
        let model_name = request.accepted_models.first().cloned().unwrap_or_default();
        let Some(membership) = &self.inner.membership else {
            let outcome = node
                .wait_for_outcome(id, timeout)
                .await
                .map_err(ApiError::from_node)?;
            let selected = outcome.selected().ok_or_else(|| {
                ApiError::no_agreement("the network did not agree", "no_agreement")
            })?;
            let digest = match &outcome.decision {
                rakis_core::Decision::Agreed { result_digest, .. } => Some(*result_digest),
                rakis_core::Decision::Failed(_) => None,
            };
            return Ok((
                selected.output.clone(),
                Verification {
                    request_id: id,
                    certified: false,
                    result_digest: digest,
                    committee: Vec::new(),
                    accepted: outcome.accepted.iter().map(|a| a.node).collect(),
                    // An open network certifies nothing: nobody's signature is claimed.
                    signers: Vec::new(),
                    replayed_by: Vec::new(),
                    selected_node: Some(selected.node),
                    completion: self
                        .completion(id, selected.node, selected.inference_id)
                        .await,
                    model: ModelInfo {
                        name: model_name,
                        weights_sha256: None,
                        quantization: None,
                    },
                    request: request.clone(),
                    certificate: None,
                },
            ));
        };
        let certificate = node
            .wait_for_certified_result(id, timeout)
            .await
            .map_err(ApiError::from_node)?;
        // Checked again here, against this node's own view of the epoch.
        let epoch = membership
            .epoch_at(request.created_at_ms)
            .ok_or_else(|| ApiError::unavailable("this node does not know the request's epoch"))?;
        let digest = certificate
            .verify(request, &epoch)
            .map_err(|e| ApiError::unavailable(format!("the certificate does not hold: {e}")))?;
        let result = certificate
            .result()
            .ok_or_else(|| ApiError::unavailable("an empty certificate"))?;
        let weights = certificate
            .signatures
            .iter()
            .find_map(|r| r.weights.clone());
        let verification = Verification {
            request_id: id,
            certified: true,
            result_digest: Some(digest),
            committee: certificate.committee.members.clone(),
            accepted: result.accepted.iter().map(|a| a.node).collect(),
            signers: certificate.signatures.iter().map(|r| r.signer).collect(),
            replayed_by: certificate
                .signatures
                .iter()
                .filter(|r| r.replayed)
                .map(|r| r.signer)
                .collect(),
            selected_node: Some(result.selected_node),
            completion: self
                .completion(id, result.selected_node, result.selected_inference)
                .await,
            model: ModelInfo {
                name: model_name,
                weights_sha256: weights.as_ref().map(|w| w.sha256),
                quantization: weights.map(|w| w.quantization),
            },
            request: request.clone(),
            certificate: Some(certificate.clone()),
        };
        Ok((result.output.clone(), verification))
    }

    /// The selected answer's length and ending, from its reveal.
    async fn completion(
        &self,
        id: rakis_core::RequestId,
        node: NodeId,
        inference: rakis_core::InferenceId,
    ) -> Option<Completion> {
        let reveal = self.inner.node.reveal(id, node, inference).await.ok()??;
        // Engines that reveal no token ids (scripted ones) say nothing about length.
        if reveal.token_ids.is_empty() {
            return None;
        }
        Some(Completion {
            tokens: reveal.token_ids.len() as u32,
            finish_reason: match reveal.ending {
                rakis_core::consensus::sampling::Ending::Limit => "length",
                _ => "stop",
            }
            .to_string(),
        })
    }

    fn node_id(&self) -> NodeId {
        self.inner.node.node_id()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn json_error(e: JsonRejection) -> ApiError {
    let mut error = ApiError::bad_request(e.body_text(), None);
    // Too large (413) and not JSON (415) keep their status; every other rejection is a 400.
    if matches!(e.status().as_u16(), 413 | 415) {
        error.status = e.status();
    }
    error
}

/// A route that does not exist, in the OpenAI shape.
async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::NOT_FOUND,
        ..ApiError::bad_request(format!("no route {}", uri.path()), None)
    }
}

/// A gateway request admitted among the `max_in_flight` served at once, counted in the
/// metrics while it lives (a client that disconnects drops it too).
struct Admitted {
    _permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Option<Arc<Metrics>>,
}

impl Gateway {
    /// Admits a request, or refuses it with 429 when `max_in_flight` are being served.
    fn admit(&self) -> Result<Admitted, ApiError> {
        let permit = self
            .inner
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::busy(self.inner.max_in_flight))?;
        let metrics = self.inner.metrics.clone();
        if let Some(m) = &metrics {
            m.in_flight_changed(1);
        }
        Ok(Admitted {
            _permit: permit,
            metrics,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.in_flight_changed(-1);
        }
    }
}

/// Checks the bearer key (when keys are configured) and the caller's rate.
async fn authorize(
    State(g): State<Gateway>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let auth = &g.inner.auth;
    let clock = DefaultClock::default();
    if !auth.keys.is_empty() {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token else {
            return ApiError::unauthorized("missing API key: send `Authorization: Bearer <key>`")
                .into_response();
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let Some((name, limiter)) = auth.keys.get(&digest) else {
            return ApiError::unauthorized("unknown API key").into_response();
        };
        if let Some(limiter) = limiter {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(clock.now()).as_secs() + 1;
                tracing::debug!(key = %name, "rate limited");
                return ApiError::rate_limited(wait).into_response();
            }
        }
    } else if let Some(limiter) = &auth.anonymous {
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if limiter.len() > MAX_TRACKED_CLIENTS {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Err(not_until) = limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(clock.now()).as_secs() + 1;
            return ApiError::rate_limited(wait).into_response();
        }
    }
    next.run(request).await
}

/// Counts every request by endpoint and status.
async fn count(State(g): State<Gateway>, request: Request, next: Next) -> Response {
    let Some(metrics) = g.inner.metrics.clone() else {
        return next.run(request).await;
    };
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let start = Instant::now();
    let response = next.run(request).await;
    metrics.http_request(
        &endpoint,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

async fn chat_completions(
    State(g): State<Gateway>,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(json_error)?;
    let _admitted = g.admit()?;
    let request = g.inference_request(&body).await?;
    let (text, verification) = g.settle(&request).await?;
    let id = format!("chatcmpl-{}", verification.request_id);
    let created = unix_now();
    let finish = verification
        .completion
        .as_ref()
        .map_or("stop", |c| c.finish_reason.as_str())
        .to_string();
    if !body.stream.unwrap_or(false) {
        return Ok(Json(ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model: body.model,
            choices: vec![Choice {
                index: 0,
                message: OutputMessage {
                    role: "assistant".into(),
                    content: text,
                },
                finish_reason: finish,
            }],
            rakis: verification,
        })
        .into_response());
    }
    // The network has agreed: the answer goes out as chunks of words, the verification on the
    // last one, then `[DONE]`.
    let chunk =
        |delta: Delta, finish: Option<&str>, rakis: Option<Verification>| ChatCompletionChunk {
            id: id.clone(),
            object: "chat.completion.chunk".into(),
            created,
            model: body.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(str::to_string),
            }],
            rakis,
        };
    let mut chunks = vec![chunk(
        Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        },
        None,
        None,
    )];
    for piece in text.split_inclusive(char::is_whitespace) {
        chunks.push(chunk(
            Delta {
                role: None,
                content: Some(piece.to_string()),
            },
            None,
            None,
        ));
    }
    chunks.push(chunk(
        Delta::default(),
        Some(finish.as_str()),
        Some(verification),
    ));
    let mut events: Vec<Result<Event, Infallible>> = chunks
        .iter()
        .map(|c| Ok(Event::default().data(serde_json::to_string(c).unwrap_or_default())))
        .collect();
    events.push(Ok(Event::default().data("[DONE]")));
    Ok(Sse::new(futures::stream::iter(events))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn list_models(State(g): State<Gateway>) -> Json<ModelList> {
    let mut models = g.available_models().await;
    if let Some(e) = &g.inner.embedder {
        models.entry(e.model()).or_insert(1);
    }
    Json(ModelList {
        object: "list".into(),
        data: models
            .into_iter()
            .map(|(id, nodes)| Model {
                id,
                object: "model".into(),
                created: 0,
                owned_by: "rakis".into(),
                rakis_nodes: nodes,
            })
            .collect(),
    })
}

async fn embeddings(
    State(g): State<Gateway>,
    body: Result<Json<EmbeddingRequest>, JsonRejection>,
) -> Result<Json<EmbeddingList>, ApiError> {
    let Json(body) = body.map_err(json_error)?;
    let Some(embedder) = g.inner.embedder.clone() else {
        return Err(ApiError::model_not_found(&body.model, &[]));
    };
    let name = embedder.model();
    if body.model != name {
        return Err(ApiError::model_not_found(&body.model, &[name]));
    }
    let texts = match body.input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(ts) => ts,
    };
    if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::bad_request(
            format!("give 1 to {MAX_EMBEDDING_INPUTS} texts"),
            Some("input".into()),
        ));
    }
    if let Some(i) = texts
        .iter()
        .position(|t| t.is_empty() || t.chars().count() > MAX_EMBEDDING_CHARS)
    {
        return Err(ApiError::bad_request(
            format!("text {i} is empty or longer than {MAX_EMBEDDING_CHARS} characters"),
            Some("input".into()),
        ));
    }
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                format!("encoding_format `{other}`: use `float` or `base64`"),
                Some("encoding_format".into()),
            ))
        }
    };
    let _admitted = g.admit()?;
    // A few at a time: the node verifies reveals with this embedder.
    let _embedding = tokio::time::timeout(
        Duration::from_secs(30),
        g.inner.embedding.clone().acquire_owned(),
    )
    .await
    .map_err(|_| ApiError::busy(MAX_EMBEDDING_REQUESTS))?
    .map_err(|_| ApiError::unavailable("the gateway is shutting down"))?;
    let vectors = embedder
        .embed(texts)
        .await
        .map_err(|e| ApiError::unavailable(format!("embedding failed: {e}")))?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding".into(),
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(v)
            },
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list".into(),
        data,
        model: name,
    }))
}

async fn health(State(g): State<Gateway>) -> Result<Json<serde_json::Value>, ApiError> {
    let stats = g
        .inner
        .node
        .stats()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let peers = g.inner.node.peers().await.map(|p| p.len()).unwrap_or(0);
    Ok(Json(serde_json::json!({
        "node": g.node_id().to_string(),
        "peers": peers,
        "open_requests": stats.requests,
        "generation_queue_depth": stats.generation_load,
        "gateway_in_flight": g
            .inner
            .max_in_flight
            .saturating_sub(g.inner.in_flight.available_permits()),
    })))
}

async fn metrics(State(g): State<Gateway>) -> Response {
    let text = g
        .inner
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn status_page(State(g): State<Gateway>) -> Html<String> {
    Html(
        g.inner
            .status
            .as_ref()
            .map(|s| s.render_html())
            .unwrap_or_default(),
    )
}

async fn status_json(State(g): State<Gateway>) -> Json<crate::status::Snapshot> {
    Json(
        g.inner
            .status
            .as_ref()
            .map(|s| s.snapshot())
            .unwrap_or_default(),
    )
}
