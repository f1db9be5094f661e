//! Errors at the HTTP edge: one type, one JSON shape.
//!
//! Every 4xx and 5xx eddy sends has a body `{"error": "...", "code": "..."}`
//! — `error` is for people, `code` for programs — plus, where it helps,
//! more fields (the rejected events of a batch, `retry_after_s`, ...).

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `invalid_json`.
    pub code: &'static str,
    /// What went wrong and, where possible, what to do.
    pub message: String,
    /// Extra fields merged into the body.
    pub extra: Box<Map<String, Value>>,
    /// `Retry-After`, for 429 and 503.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with no extra fields.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Box::default(),
            retry_after: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Add a field to the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Set `Retry-After` (whole seconds, at least one).
    pub fn retry_after(mut self, after: Duration) -> Self {
        let secs = after.as_secs().max(1);
        self.retry_after = Some(Duration::from_secs(secs));
        self.with("retry_after_s", secs)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.message));
        body.insert("code".into(), json!(self.code));
        body.extend(*self.extra);
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        if let Some(after) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&after.as_secs().to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
