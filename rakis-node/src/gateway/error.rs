//! Errors of the gateway, in the OpenAI error shape with meaningful status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rakis_core::{NodeError, QuorumFailure};

use super::openai::{ErrorBody, ErrorDetail};

/// An error answer: status, OpenAI error type, message, field and code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The OpenAI error type.
    pub kind: &'static str,
    /// For people.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A stable code.
    pub code: Option<&'static str>,
    /// Seconds after which a retry may succeed (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: the request is wrong; `param` names the field.
    pub fn bad_request(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        ApiError {
            param: param.into(),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
        .code("invalid_request")
    }

    /// 401: no key, or an unknown one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message).code("invalid_api_key")
    }

    /// 404: a model the network does not serve.
    pub fn model_not_found(model: &str, available: &[String]) -> Self {
        ApiError {
            param: Some("model".into()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "the model `{model}` is not served by this network (available: {})",
                    if available.is_empty() {
                        "none yet".to_string()
                    } else {
                        available.join(", ")
                    }
                ),
            )
        }
        .code("model_not_found")
    }

    /// 429: this key's rate is spent.
    pub fn rate_limited(retry_after_s: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after_s),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("rate limit reached for this key; retry in {retry_after_s} s"),
            )
        }
        .code("rate_limit_exceeded")
    }

    /// 429: too many requests are being served at once.
    pub fn busy(max: usize) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("the gateway is serving its maximum of {max} requests; retry shortly"),
            )
        }
        .code("too_many_requests_in_flight")
    }

    /// 429: the request waited too long for a slot with the network.
    pub fn queue_full(waited: std::time::Duration) -> Self {
        ApiError {
            retry_after: Some(waited.as_secs().max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "the network is serving this gateway's maximum of requests; none freed up in {} ms",
                    waited.as_millis()
                ),
            )
        }
        .code("queue_full")
    }

    /// 504: the network did not agree by the deadline.
    pub fn no_agreement(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", message).code(code)
    }

    /// 503: the node cannot serve now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code("unavailable")
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The error of a node call made for a request.
    pub fn from_node(e: NodeError) -> Self {
        match e {
            // The node reached the request after its deadline: it is overloaded, the
            // request was fine.
            NodeError::InvalidRequest(rakis_core::RequestError::DeadlinePassed) => {
                Self::no_agreement(
                    "the node was too busy to submit the request before its deadline",
                    "deadline_exceeded",
                )
            }
            NodeError::InvalidRequest(r) => Self::bad_request(r.to_string(), None),
            NodeError::Timeout => Self::no_agreement(
                "the committee did not certify an answer in time",
                "certification_timeout",
            ),
            NodeError::RequestFailed(QuorumFailure::QuorumNotReached { committed, needed }) => {
                Self::no_agreement(
                    format!(
                        "too few nodes committed an answer by the deadline ({committed} of {needed})"
                    ),
                    "quorum_not_reached",
                )
            }
            NodeError::RequestFailed(f) => {
                Self::no_agreement(format!("the network did not agree: {f}"), "no_agreement")
            }
            other => Self::unavailable(other.to_string()),
        }
    }

    /// The OpenAI body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: self.param.clone(),
                code: self.code.map(str::to_string),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(s));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.kind,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}
