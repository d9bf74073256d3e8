//! Enrollment: tokens (operator), the device-facing enroll endpoint and the
//! fleet CA certificate.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use picket_store::model::EnrollmentToken;
use picket_store::token_hash;
use serde::{Deserialize, Serialize};

use crate::auth::{random_token, write_audit, Auth, Operator};
use crate::error::{ApiError, Json};
use crate::now_ms;
use crate::state::AppState;

/// Largest EnrollRequest frame `POST /api/v1/enroll` accepts.
pub const ENROLL_BODY_LIMIT: usize = 16 * 1024;
const MIN_TOKEN_TTL_SECS: u64 = 60;
const MAX_TOKEN_TTL_SECS: u64 = 30 * 86_400;
const MAX_LABEL_LEN: usize = 128;

/// `POST /enrollment-tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    label: String,
    ttl_secs: u64,
}

/// A created token: the only answer that ever carries its value.
#[derive(Debug, Serialize)]
pub(crate) struct CreatedToken {
    token: String,
    #[serde(flatten)]
    stored: EnrollmentToken,
}

/// `POST /api/v1/enrollment-tokens`
pub(crate) async fn create_token(
    State(state): State<AppState>,
    Auth(p, _): Auth<Operator>,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > MAX_LABEL_LEN {
        return Err(ApiError::bad(format!(
            "`label` must be 1 to {MAX_LABEL_LEN} characters"
        )));
    }
    if !(MIN_TOKEN_TTL_SECS..=MAX_TOKEN_TTL_SECS).contains(&body.ttl_secs) {
        return Err(ApiError::bad(format!(
            "`ttl_secs` must be from {MIN_TOKEN_TTL_SECS} to {MAX_TOKEN_TTL_SECS}"
        )));
    }
    let token = random_token();
    let now = now_ms();
    let ttl_ms = i64::try_from(body.ttl_secs * 1000).unwrap_or(i64::MAX);
    let stored = state
        .ctx
        .store
        .create_token(
            &token_hash(&token),
            label,
            &p.user.name,
            now,
            now.saturating_add(ttl_ms),
        )
        .await?;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        "token.create",
        &stored.id.to_string(),
        serde_json::json!({ "label": label, "expires_ms": stored.expires_ms }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, stored })))
}

/// `GET /api/v1/enrollment-tokens` (hashes and values never leave).
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    _auth: Auth<Operator>,
) -> Result<Json<Vec<EnrollmentToken>>, ApiError> {
    Ok(Json(state.ctx.store.tokens().await?))
}

/// `POST /api/v1/enroll`: a binary EnrollRequest frame in, the backend's
/// EnrollResponse frame out. Unauthenticated: the frame carries the token
/// and is signed by the device key; `Fleet::enroll` checks both.
pub(crate) async fn enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        if ct.as_bytes() != b"application/octet-stream" {
            return Err(ApiError::UnsupportedMediaType(
                "enrollment requests must be `application/octet-stream`".into(),
            ));
        }
    }
    let body = body?;
    if body.is_empty() {
        return Err(ApiError::bad("empty body: expected an EnrollRequest frame"));
    }
    let answer = state.ctx.fleet.enroll(&body).await;
    Ok(([(CONTENT_TYPE, "application/octet-stream")], answer).into_response())
}

/// `GET /api/v1/fleet/ca.pem`
pub(crate) async fn ca_pem(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "application/x-pem-file")],
        state.ctx.fleet.ca_pem(),
    )
        .into_response()
}

/// `GET /api/v1/fleet/command-key`: the backend's ed25519 command key
/// (public half), 64 lowercase hex digits, which devices pin.
pub(crate) async fn command_key(State(state): State<AppState>) -> Response {
    let key = state.ctx.fleet.command_public_key();
    let mut hex = String::with_capacity(64);
    for b in key {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    ([(CONTENT_TYPE, "text/plain; charset=utf-8")], hex).into_response()
}
