//! Authentication: password hashing, sessions, the role-checking extractor,
//! the CSRF rule, and the login/logout/me/setup handlers.

use std::fmt;
use std::marker::PhantomData;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use picket_store::model::{AuditEntry, Role, Session, User};
use picket_store::{token_hash, Store};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Json};
use crate::state::AppState;
use crate::{now_ms, PasswordParams};

/// Name of the session cookie the login sets (HttpOnly, SameSite=Strict).
pub const SESSION_COOKIE: &str = "picket_session";
/// Header a cookie-authenticated state-changing request must carry with the
/// value `1` (the CSRF defence; see the crate docs).
pub const CSRF_HEADER: &str = "x-picket-csrf";

const MIN_PASSWORD_LEN: usize = 8;
// argon2 cost is linear in the input only through one BLAKE2b pass, but an
// unbounded password is still a free memory/CPU lever for an attacker.
const MAX_PASSWORD_LEN: usize = 1024;
const MAX_NAME_LEN: usize = 64;
const MAX_TOKEN_LEN: usize = 256;

/// A fresh random secret: 32 bytes from the OS RNG, as 64 lowercase hex digits.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let mut out = String::with_capacity(64);
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

fn argon2(params: &PasswordParams) -> Result<Argon2<'static>, ApiError> {
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| ApiError::Internal(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, p))
}

/// Hashes a password into an argon2id PHC string (blocking: call from a
/// blocking thread).
///
/// # Errors
/// [`ApiError::Internal`] when the parameters are invalid.
pub fn hash_password(password: &str, params: &PasswordParams) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(params)?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("argon2: {e}")))
}

/// Whether `password` matches the PHC string (the parameters come from the
/// string). A malformed stored hash never matches.
#[must_use]
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

async fn hash_blocking(
    state: Option<&AppState>,
    password: String,
    params: PasswordParams,
) -> Result<String, ApiError> {
    let _permit = match state {
        Some(s) => Some(s.hash_permit().await?),
        None => None,
    };
    tokio::task::spawn_blocking(move || hash_password(&password, &params))
        .await
        .map_err(|e| ApiError::Internal(format!("hash task: {e}")))?
}

async fn verify_blocking(
    state: &AppState,
    password: String,
    phc: String,
) -> Result<bool, ApiError> {
    let _permit = state.hash_permit().await?;
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(|e| ApiError::Internal(format!("verify task: {e}")))
}

/// Checks a user name: 1–64 characters of `A-Z a-z 0-9 . _ @ -`.
pub(crate) fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ApiError::bad(format!(
            "user name must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err(ApiError::bad(
            "user name may only contain letters, digits, '.', '_', '@' and '-'",
        ));
    }
    Ok(())
}

/// Checks a password's length (8–1024 bytes).
pub(crate) fn validate_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::bad(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::bad(format!(
            "password must be at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// Creates a user with an argon2id-hashed password (default
/// [`PasswordParams`]) and writes a `user.create` audit entry with actor
/// `system`. This is what `picket-backend create-admin` calls.
///
/// # Errors
/// [`ApiError::BadRequest`] for an invalid name or a too short/long
/// password, [`ApiError::Conflict`] when the name is taken, storage errors.
pub async fn create_user(
    store: &dyn Store,
    name: &str,
    password: &str,
    role: Role,
) -> Result<User, ApiError> {
    create_user_as(
        store,
        None,
        &PasswordParams::default(),
        name,
        password,
        role,
        "system",
    )
    .await
}

pub(crate) async fn create_user_as(
    store: &dyn Store,
    state: Option<&AppState>,
    params: &PasswordParams,
    name: &str,
    password: &str,
    role: Role,
    actor: &str,
) -> Result<User, ApiError> {
    validate_name(name)?;
    validate_password(password)?;
    if store.user_by_name(name).await?.is_some() {
        return Err(ApiError::Conflict(format!("user {name} already exists")));
    }
    let phc = hash_blocking(state, password.to_owned(), *params).await?;
    let user = store.create_user(name, &phc, role, now_ms()).await?;
    write_audit(
        store,
        actor,
        "user.create",
        name,
        serde_json::json!({ "role": role, "id": user.id }),
    )
    .await;
    Ok(user)
}

/// Appends an audit entry. A failure is logged, not returned: the action
/// itself already happened and the client should see its result.
pub(crate) async fn write_audit(
    store: &dyn Store,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) {
    let entry = AuditEntry {
        id: 0,
        at_ms: now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail,
    };
    if let Err(e) = store.audit(&entry).await {
        tracing::error!(error = %e, action, target, "writing the audit log failed");
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub user: User,
    pub token_hash: String,
}

/// Where the credentials came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Bearer,
    Cookie,
    Query,
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn query_token(parts: &Parts) -> Option<String> {
    parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_owned())
    })
}

fn unauthorized(state: &AppState, reason: &'static str, msg: &str) -> ApiError {
    state.metrics.auth_failure(reason);
    ApiError::Unauthorized(msg.to_owned())
}

/// Authenticates a request: `Authorization: Bearer`, else the session
/// cookie, else (only when `allow_query` — the WebSocket stream, which
/// browsers cannot give headers) `?token=`.
pub(crate) async fn authenticate(
    state: &AppState,
    parts: &Parts,
    allow_query: bool,
) -> Result<Principal, ApiError> {
    let (token, source) = if let Some(h) = parts.headers.get(AUTHORIZATION) {
        let value = h.to_str().unwrap_or_default();
        match value.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => {
                (t.trim().to_owned(), TokenSource::Bearer)
            }
            _ => {
                return Err(unauthorized(
                    state,
                    "bad_scheme",
                    "unsupported Authorization header: use `Bearer <token>`",
                ))
            }
        }
    } else if let Some(t) = cookie_token(&parts.headers) {
        (t, TokenSource::Cookie)
    } else if let Some(t) = allow_query.then(|| query_token(parts)).flatten() {
        (t, TokenSource::Query)
    } else {
        return Err(unauthorized(
            state,
            "missing",
            "authentication required: log in at /api/v1/auth/login",
        ));
    };
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(unauthorized(state, "invalid", "invalid or expired session"));
    }
    let hash = token_hash(&token);
    let now = now_ms();
    let Some((session, user)) = state.ctx.store.session(&hash, now).await? else {
        return Err(unauthorized(state, "invalid", "invalid or expired session"));
    };
    if session.expires_ms <= now {
        return Err(unauthorized(state, "invalid", "invalid or expired session"));
    }
    if user.disabled {
        return Err(unauthorized(state, "disabled", "account disabled"));
    }
    if source == TokenSource::Cookie && !is_safe(&parts.method) && !has_csrf_header(&parts.headers)
    {
        state.metrics.auth_failure("csrf");
        return Err(ApiError::Forbidden {
            code: "csrf",
            message: format!(
                "cookie-authenticated {} requests must carry the header `X-Picket-Csrf: 1`",
                parts.method
            ),
        });
    }
    if source == TokenSource::Cookie && !origin_matches_host(&parts.headers) {
        state.metrics.auth_failure("origin");
        return Err(ApiError::Forbidden {
            code: "csrf",
            message: "cross-origin request with a session cookie refused".to_owned(),
        });
    }
    Ok(Principal {
        user,
        token_hash: hash,
    })
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn has_csrf_header(headers: &HeaderMap) -> bool {
    headers
        .get(CSRF_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// A present `Origin` must name the host the request was sent to (browsers
/// always send it on WebSocket handshakes, which CORS does not cover).
fn origin_matches_host(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    origin_host.eq_ignore_ascii_case(host)
}

/// A minimum role, as a type, for [`Auth`].
pub(crate) trait MinRole: Send + Sync {
    const ROLE: Role;
}

macro_rules! min_role {
    ($name:ident, $role:expr) => {
        #[derive(Debug)]
        pub(crate) struct $name;
        impl MinRole for $name {
            const ROLE: Role = $role;
        }
    };
}
min_role!(Viewer, Role::Viewer);
min_role!(Analyst, Role::Analyst);
min_role!(Operator, Role::Operator);
min_role!(Admin, Role::Admin);

/// Extractor: an authenticated caller whose role is at least `R::ROLE`
/// (401 without a valid session, 403 with too small a role). It runs before
/// the body is parsed, so an unauthorized caller never learns whether its
/// body would have been valid.
pub(crate) struct Auth<R>(pub Principal, pub PhantomData<R>);

impl<R> fmt::Debug for Auth<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Auth").field(&self.0.user.name).finish()
    }
}

pub(crate) fn require(state: &AppState, p: &Principal, needed: Role) -> Result<(), ApiError> {
    if p.user.role.allows(needed) {
        Ok(())
    } else {
        state.metrics.auth_failure("forbidden");
        Err(ApiError::forbidden(format!(
            "this action needs the {} role or higher (you are {})",
            needed.as_str(),
            p.user.role.as_str()
        )))
    }
}

impl<R: MinRole> FromRequestParts<AppState> for Auth<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = authenticate(state, parts, false).await?;
        require(state, &p, R::ROLE)?;
        Ok(Self(p, PhantomData))
    }
}

// ---- handlers ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Credentials {
    name: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
struct LoginResponse {
    token: String,
    expires_ms: i64,
    user: User,
}

fn session_cookie(
    state: &AppState,
    token: &str,
    max_age_secs: u64,
) -> Result<HeaderValue, ApiError> {
    let secure = if state.ctx.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .map_err(|e| ApiError::Internal(format!("cookie header: {e}")))
}

/// `POST /api/v1/auth/login`
pub(crate) async fn login(
    State(state): State<AppState>,
    Json(creds): Json<Credentials>,
) -> Result<Response, ApiError> {
    let store = &*state.ctx.store;
    let user = if creds.name.len() <= MAX_NAME_LEN {
        store.user_by_name(&creds.name).await?
    } else {
        None
    };
    let password_ok = if creds.password.len() > MAX_PASSWORD_LEN {
        false
    } else {
        // Without the user, verify against a dummy hash of the same cost so
        // the answer takes as long and does not reveal who exists.
        let phc = match &user {
            Some(u) => u.password_hash.clone(),
            None => state.dummy_hash().await?,
        };
        verify_blocking(&state, creds.password, phc).await? && user.is_some()
    };
    let user = match user {
        Some(u) if password_ok => u,
        _ => {
            state.metrics.auth_failure("bad_credentials");
            // The name is the caller's input: keep the log entry bounded.
            let target: String = creds.name.chars().take(MAX_NAME_LEN).collect();
            write_audit(
                store,
                "anonymous",
                "auth.login_failed",
                &target,
                serde_json::json!({ "reason": "bad_credentials" }),
            )
            .await;
            return Err(ApiError::Unauthorized("invalid name or password".into()));
        }
    };
    if user.disabled {
        state.metrics.auth_failure("disabled");
        write_audit(
            store,
            &user.name,
            "auth.login_failed",
            &user.name,
            serde_json::json!({ "reason": "disabled" }),
        )
        .await;
        return Err(ApiError::Forbidden {
            code: "account_disabled",
            message: "account disabled".into(),
        });
    }
    let token = random_token();
    let now = now_ms();
    let ttl = state.ctx.config.session_ttl;
    let expires_ms = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    store
        .create_session(&Session {
            token_hash: token_hash(&token),
            user_id: user.id,
            created_ms: now,
            expires_ms,
        })
        .await?;
    write_audit(
        store,
        &user.name,
        "auth.login",
        &user.name,
        serde_json::json!({ "expires_ms": expires_ms }),
    )
    .await;
    let cookie = session_cookie(&state, &token, ttl.as_secs())?;
    let body = LoginResponse {
        token,
        expires_ms,
        user,
    };
    Ok(([(SET_COOKIE, cookie)], Json(body)).into_response())
}

/// `POST /api/v1/auth/logout`
pub(crate) async fn logout(
    State(state): State<AppState>,
    Auth(p, _): Auth<Viewer>,
) -> Result<Response, ApiError> {
    state.ctx.store.delete_session(&p.token_hash).await?;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        "auth.logout",
        &p.user.name,
        serde_json::Value::Null,
    )
    .await;
    let cookie = session_cookie(&state, "", 0)?;
    Ok(([(SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response())
}

/// `GET /api/v1/auth/me`
pub(crate) async fn me(Auth(p, _): Auth<Viewer>) -> Json<User> {
    Json(p.user)
}

/// `POST /api/v1/setup`: the first admin, only while there are no users.
pub(crate) async fn setup(
    State(state): State<AppState>,
    Json(creds): Json<Credentials>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    // Serialises concurrent setups in this process so two cannot both see
    // zero users.
    let _guard = state.setup_lock.lock().await;
    if state.ctx.store.user_count().await? > 0 {
        return Err(ApiError::Conflict(
            "setup is done: users exist already; log in as an admin".into(),
        ));
    }
    let user = create_user_as(
        &*state.ctx.store,
        Some(&state),
        &state.ctx.config.password,
        &creds.name,
        &creds.password,
        Role::Admin,
        &creds.name,
    )
    .await?;
    write_audit(
        &*state.ctx.store,
        &user.name,
        "setup",
        &user.name,
        serde_json::json!({ "role": Role::Admin }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(user)))
}

pub(crate) async fn hash_for(state: &AppState, password: &str) -> Result<String, ApiError> {
    hash_blocking(Some(state), password.to_owned(), state.ctx.config.password).await
}
