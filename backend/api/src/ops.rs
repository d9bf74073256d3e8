//! Operations endpoints outside `/api/v1`: metrics, liveness, readiness.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ApiError, Json};
use crate::state::AppState;

/// `GET /metrics`: the backend's metrics, then the API's.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = state.ctx.fleet.metrics();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    state.metrics.render(&mut out);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response()
}

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the store answers and ingest is connected to its broker.
pub(crate) async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Err(e) = state.ctx.store.ping().await {
        // The cause stays in the log: this endpoint is unauthenticated.
        tracing::warn!(error = %e, "readiness: store ping failed");
        return Err(ApiError::Unavailable(
            "store not ready: the database did not answer".into(),
        ));
    }
    if !state.ctx.fleet.ready() {
        return Err(ApiError::Unavailable(
            "fleet not ready: ingest is not connected to the broker".into(),
        ));
    }
    Ok(Json(json!({ "status": "ready" })))
}
