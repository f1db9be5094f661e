//! Configuration reloads: `SIGHUP` and `POST /v1/admin/reload` (admin key).
//!
//! The file `eddy serve` was started with is read again and validated; an
//! invalid file changes nothing and the answer (400) names the file and the
//! key. A valid one goes to the engine as an input, applied between
//! batches: its stages, declared patterns and alert rules take effect
//! (unchanged ones keep their state; a changed pattern keeps the partial
//! matches whose steps still exist; a changed alert rule keeps its
//! instances unless what it watches or its labels changed). Other sections need a restart, and the answer says
//! which differ.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::Access;
use super::error::ApiError;
use super::{AppState, api};
use crate::config::Config;
use crate::engine::Reconfigure;

/// The sections a reload does not apply, by name, that differ between
/// `running` and `new`.
fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            v.push(name);
        }
    };
    check("plugins_dir", running.plugins_dir != new.plugins_dir);
    check("pipeline", running.pipeline != new.pipeline);
    check("runtime", running.runtime != new.runtime);
    check("server", running.server != new.server);
    check("ingest", running.ingest != new.ingest);
    check("streams", running.streams != new.streams);
    check("auth", running.auth != new.auth);
    check("time", running.time != new.time);
    check("windows", running.windows != new.windows);
    check("live", running.live != new.live);
    check("notify", running.notify != new.notify);
    v
}

/// Read, validate and apply the configuration file again.
pub async fn reload(state: &AppState) -> Result<Value, ApiError> {
    let Some(path) = state.config_path.clone() else {
        return Err(ApiError::bad_request(
            "no_config_file",
            "eddy runs its embedded default configuration (started without --config): there is no file to reload",
        ));
    };
    let origin = path.display().to_string();
    let read = {
        let path: PathBuf = path.clone();
        tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await
    };
    let text = match read {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return Err(ApiError::bad_request(
                "config_unreadable",
                format!("{origin}: {e}; the running configuration is kept"),
            ));
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reload_failed",
                e.to_string(),
            ));
        }
    };
    let r = Reconfigure::parse(&origin, &text).map_err(|e| {
        ApiError::bad_request(
            "invalid_config",
            format!("{e}; the running configuration is kept"),
        )
    })?;
    let restart = needs_restart(&state.config, &r.config);
    match state.queue.reconfigure(r).await {
        Some(Ok(changes)) => {
            tracing::info!(file = %origin, changes = changes.len(), "configuration reloaded");
            Ok(json!({
                "file": origin,
                "changes": changes,
                "needs_restart": restart,
            }))
        }
        Some(Err(message)) => Err(ApiError::bad_request(
            "reload_failed",
            format!("{origin}: {message}; the running configuration is kept"),
        )),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the engine has stopped",
        )),
    }
}

/// `POST /v1/admin/reload`.
#[utoipa::path(
    post,
    path = "/v1/admin/reload",
    operation_id = "reloadConfig",
    tag = "plugins",
    summary = "Reload the configuration file",
    description = "Read the file eddy serve was started with (--config / EDDY_CONFIG) again, as \
                   SIGHUP does. An invalid file changes nothing: 400 `invalid_config` naming the \
                   file and key. A valid one is applied between batches: its stages and declared \
                   patterns take effect (unchanged ones keep their state; a changed pattern keeps \
                   the partial matches whose steps still exist; every change is announced on the \
                   `plugins` channel with kind `reconfigured`). Other sections need a restart; \
                   `needs_restart` lists those that differ. Needs an admin key when admin keys \
                   are configured.",
    responses(
        (status = 200, description = "`{file, changes: [...], needs_restart: [...]}`",
         body = api::Object),
        (status = 400, description = "`no_config_file` (embedded default), `config_unreadable`, \
                                      `invalid_config` or `reload_failed` (a stage plugin refused \
                                      its configuration); the running configuration is kept",
         body = api::Error),
        api::ReadDenied,
        (status = 422, description = "A plugin failed to load", body = api::Error),
        (status = 503, description = "The server is shutting down", body = api::Error),
    )
)]
pub async fn admin_reload(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.keys.check_request(Access::Admin, &headers, &q)?;
        reload(&state).await
    };
    match result.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            tracing::warn!(error = %e.message, "configuration reload refused");
            e.into_response()
        }
    }
}

/// Reload on every `SIGHUP` until the server stops.
pub fn spawn_sighup(state: AppState) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /v1/admin/reload");
                return;
            }
        };
        while hup.recv().await.is_some() {
            if let Err(e) = reload(&state).await {
                tracing::warn!(error = %e.message, "configuration reload on SIGHUP refused");
            }
        }
    });
    #[cfg(not(unix))]
    let _ = state;
}
