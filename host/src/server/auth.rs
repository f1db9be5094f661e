//! API keys: write (ingest), read (subscriptions and REST reads), admin
//! (plugin operations; also grants read and write).
//!
//! A key is presented as `Authorization: Bearer KEY`, or — for clients that
//! cannot set headers, such as a browser's `WebSocket` and `EventSource` —
//! as the query parameter `api_key`. PostHog clients put it in the body
//! (`api_key` / `token`), which the capture handlers pass in here. An empty
//! key list leaves that kind of access open.

use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;
use crate::config::AuthConfig;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Ingest events.
    Write,
    /// Subscribe, read REST views.
    Read,
    /// Reload and roll back plugins.
    Admin,
}

impl Access {
    fn noun(self) -> &'static str {
        match self {
            Access::Write => "write (ingest)",
            Access::Read => "read",
            Access::Admin => "admin",
        }
    }
}

/// The configured keys.
#[derive(Clone, Default)]
pub struct Keys {
    config: AuthConfig,
}

impl Keys {
    /// Keys from `[auth]`.
    pub fn new(config: AuthConfig) -> Self {
        Self { config }
    }

    /// Whether `access` needs a key at all.
    pub fn required(&self, access: Access) -> bool {
        !self.list(access).is_empty()
    }

    fn list(&self, access: Access) -> &[String] {
        match access {
            Access::Write => &self.config.write_keys,
            Access::Read => &self.config.read_keys,
            Access::Admin => &self.config.admin_keys,
        }
    }

    /// Allow or refuse `access` with the key presented, if any.
    pub fn check(&self, access: Access, presented: Option<&str>) -> Result<(), ApiError> {
        if !self.required(access) {
            return Ok(());
        }
        let Some(key) = presented.filter(|k| !k.is_empty()) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                format!(
                    "{} access needs an API key: send `Authorization: Bearer KEY` or the \
                     `api_key` query parameter",
                    access.noun()
                ),
            ));
        };
        let matches = |list: &[String]| list.iter().any(|k| constant_time_eq(k, key));
        if matches(self.list(access)) || matches(&self.config.admin_keys) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this API key does not grant {} access", access.noun()),
            ))
        }
    }
}

impl Keys {
    /// [`Keys::check`] with the key a request presents: its bearer token,
    /// else its `api_key` query parameter.
    pub fn check_request(
        &self,
        access: Access,
        headers: &HeaderMap,
        query: &std::collections::HashMap<String, String>,
    ) -> Result<(), ApiError> {
        self.check(
            access,
            presented_key(headers, query.get("api_key").map(String::as_str)),
        )
    }
}

/// The key in `Authorization: Bearer KEY`, else in the `api_key` query
/// parameter.
pub fn presented_key<'a>(headers: &'a HeaderMap, query_key: Option<&'a str>) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or(query_key)
}

/// Compare without an early exit, so response time does not reveal how much
/// of a guessed key was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(AuthConfig {
            write_keys: vec!["write-key-1".into()],
            read_keys: vec![],
            admin_keys: vec!["admin-key-1".into()],
        })
    }

    #[test]
    fn open_unless_keys_are_configured() {
        let k = keys();
        assert!(k.check(Access::Read, None).is_ok(), "no read keys: open");
        let missing = k.check(Access::Write, None).unwrap_err();
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        let wrong = k.check(Access::Write, Some("nope-nope")).unwrap_err();
        assert_eq!(wrong.status, StatusCode::FORBIDDEN);
        assert!(k.check(Access::Write, Some("write-key-1")).is_ok());
        assert!(k.check(Access::Write, Some("admin-key-1")).is_ok());
        let not_admin = k.check(Access::Admin, Some("write-key-1")).unwrap_err();
        assert_eq!(not_admin.status, StatusCode::FORBIDDEN);
        assert!(Keys::default().check(Access::Admin, None).is_ok());
    }

    #[test]
    fn key_from_header_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h, Some("q")), Some("q"));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented_key(&h, Some("q")), Some("abc"));
    }
}
