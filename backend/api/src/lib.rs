//! The Picket fleet backend's HTTP API: REST under `/api/v1`, an OpenAPI 3.1
//! document, a WebSocket stream of live events, and `/metrics`, `/healthz`,
//! `/readyz` for operations.
//!
//! # Architecture
//!
//! ```text
//!  browser / CLI / Prometheus / devices (enroll)
//!          │ HTTP
//!  ┌───────▼──────────────────────────────────────────────────────┐
//!  │ router(ctx)  — built from the route table (routes.rs)        │
//!  │   request metrics · default body limit (64 KiB) · JSON 404/405│
//!  │   Auth<Role> extractor: session → user → role check (→ CSRF)  │
//!  │   handlers: auth · devices · alerts · fleet · admin · ops     │
//!  │   stream: broadcast::Receiver<LiveEvent> → WebSocket          │
//!  └───────┬──────────────────────────────┬───────────────────────┘
//!          │ Store (picket-store)          │ Fleet (picket-backend)
//!     SQLite / PostgreSQL            CA, broker, enroll, revoke, metrics
//! ```
//!
//! The backend binary builds an [`ApiContext`] (store, [`Fleet`]
//! implementation, the live-event broadcast sender, [`ApiConfig`]) and
//! serves [`router`] (or [`router_with_ui`], which sends every path outside
//! `/api/`, `/metrics`, `/healthz`, `/readyz` to a static-file service for the
//! web UI). [`routes()`] lists every endpoint with its minimum role; the
//! router and the OpenAPI document are both generated from that one table.
//!
//! # Authentication
//!
//! Users have a role; passwords are argon2id PHC strings ([`PasswordParams`]:
//! by default 19 MiB, 2 passes, 1 lane — the OWASP minimum, ~25 ms on one
//! core of the 2-core backend box; at most two hashes run at once).
//! `POST /api/v1/auth/login` answers a random 256-bit token (hex) and sets it
//! as the `picket_session` cookie (HttpOnly, SameSite=Strict, Path=/, Secure
//! unless [`ApiConfig::cookie_secure`] is off). The store keeps only
//! [`picket_store::token_hash`] of it, with an expiry of
//! [`ApiConfig::session_ttl`]. Requests authenticate with
//! `Authorization: Bearer <token>` or the cookie; the WebSocket stream also
//! accepts `?token=`. Logins for unknown users verify against a dummy hash of
//! the same cost, so the answer does not reveal who exists. Disabled users
//! cannot log in and their sessions are ended.
//!
//! No credentials → 401; a too small role → 403; both with
//! `{"error": "...", "code": "..."}` ([`ApiError`]).
//!
//! | role | may |
//! |---|---|
//! | viewer | read devices, alerts, counts, hunting jobs and their timelines; the stream; `auth/me`, logout |
//! | analyst | viewer + triage: `PATCH /alerts/{id}`, notes |
//! | operator | analyst + enrollment tokens, device revocation, hunting jobs (upload, cancel, delete) |
//! | admin | operator + users and the audit log |
//!
//! Agents (`/api/v1/agents/stream`) authenticate with their agent secret
//! instead (see the `agents` module and `docs/AGENT-STREAM.md`).
//!
//! Public: setup (only while no user exists), login, enroll, agent enroll, `fleet/ca.pem`,
//! `fleet/command-key`, `openapi.json`, `/metrics`, `/healthz`, `/readyz`.
//!
//! # CSRF
//!
//! Bearer-token requests need nothing more: a browser never attaches them by
//! itself. A request authenticated **by the cookie** with a state-changing
//! method (anything but GET/HEAD/OPTIONS) must carry the header
//! `X-Picket-Csrf: 1` ([`CSRF_HEADER`]), else 403 `csrf`: a cross-site page
//! cannot set a custom header without a CORS preflight, which this API never
//! grants. In addition, a cookie-authenticated request whose `Origin` header
//! names another host is refused, which also covers the WebSocket handshake
//! (not subject to CORS). SameSite=Strict is the first line; these are the
//! second. A reverse proxy in front must therefore keep the `Host` header.
//!
//! # Errors and limits
//!
//! Every failure is an [`ApiError`] rendered as JSON: bad JSON, unknown
//! fields, bad query values and ids are 400 naming the field; unknown ids
//! 404; bodies over [`DEFAULT_BODY_LIMIT`] (64 KiB; enroll:
//! [`ENROLL_BODY_LIMIT`], 16 KiB; hunt uploads: the backend's
//! `[hunts] max_upload_bytes`, streamed to disk, see the `hunts` module) 413; internal failures a plain 500 whose
//! cause is only logged.
//!
//! # Live stream
//!
//! `GET /api/v1/stream` relays `ApiContext::live` to WebSocket clients (see
//! the `stream` module docs for the message types). Upgraded connections
//! outlive `axum::serve`'s graceful shutdown; they end when the runtime does
//! or when every `live` sender is dropped.
//!
//! # Example
//!
//! ```no_run
//! # async fn serve(ctx: picket_api::ApiContext) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! axum::serve(listener, picket_api::router(ctx)).await
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use picket_store::hunt::{Hunt, HuntDetail};
use picket_store::model::{AgentRecord, Alert, Device, DeviceId, Level};
use picket_store::rollout::{Rollout, RolloutAction, RolloutProgress, RolloutSpec, StoredBundle};
use picket_store::Store;
use serde::Serialize;

mod admin;
mod agents;
mod alerts;
mod auth;
mod devices;
mod error;
mod fleet;
mod hunts;
mod metrics;
mod openapi;
mod ops;
mod params;
mod routes;
mod rules;
mod state;
mod stream;

pub use agents::{AgentStreamLimits, AGENT_MESSAGE_LIMIT};
pub use alerts::{DEFAULT_LIMIT as DEFAULT_ALERT_LIMIT, MAX_LIMIT as MAX_ALERT_LIMIT};
pub use auth::{create_user, hash_password, verify_password, CSRF_HEADER, SESSION_COOKIE};
pub use devices::is_online;
pub use error::ApiError;
pub use fleet::ENROLL_BODY_LIMIT;
pub use hunts::{HuntUpload, HuntUploads, DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT};
pub use routes::{routes, Access, RouteInfo, DEFAULT_BODY_LIMIT};

/// What the WebSocket stream carries.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LiveEvent {
    /// A newly stored alert.
    Alert(Box<Alert>),
    /// A device changed: enrolled, revoked, came online, went offline, or a
    /// heartbeat changed what the inventory shows.
    Device {
        /// The device as it is now.
        device: Box<Device>,
        /// Whether it is online now.
        online: bool,
        /// What changed (`enrolled`, `revoked`, `online`, `offline`, `heartbeat`).
        change: &'static str,
    },
    /// A hunting job's state or progress changed (at most a few times a
    /// second per job).
    Hunt(Box<Hunt>),
}

/// What the backend made of one agent stream message
/// ([`Fleet::agent_lines`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AgentReport {
    /// Lines in the message (empty lines between records are skipped and
    /// not counted).
    pub lines: u64,
    /// The alerts raised and stored.
    pub alerts: Vec<AgentAlert>,
    /// The lines that could not be mapped.
    pub errors: Vec<AgentLineError>,
    /// The message's agent sequence number (its `{"seq": N}` first line),
    /// if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Alerts of a sequenced message that were already stored by an earlier
    /// send of it (a resend after a lost answer), not stored again.
    pub duplicates: u64,
}

/// An alert raised by an agent line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentAlert {
    /// 1-based line number inside the message.
    pub line: u64,
    /// The stored alert's id.
    pub id: String,
    /// The Sigma rule id.
    pub rule_id: String,
    /// The rule title.
    pub rule_title: String,
    /// The rule level.
    pub level: Level,
}

/// A line that could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentLineError {
    /// 1-based line number inside the message.
    pub line: u64,
    /// The `picket_agents::AgentError`, as text.
    pub error: String,
    /// Its kind (`picket_agents::AgentError::reason`: `unknown_format`,
    /// `malformed_json`, ...), also the label of
    /// `picket_agent_line_errors_total`.
    pub reason: &'static str,
}

/// Why a fleet action was refused; each maps to its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The request is wrong (400), e.g. a bundle that does not verify.
    #[error("{0}")]
    BadRequest(String),
    /// No such bundle or rollout (404).
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with what exists (409), e.g. a version not newer.
    #[error("{0}")]
    Conflict(String),
    /// Not possible in this backend or not now (503).
    #[error("{0}")]
    Unavailable(String),
    /// Something failed inside (500; logged).
    #[error("{0}")]
    Internal(String),
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::BadRequest(m) => Self::BadRequest(m),
            FleetError::NotFound(m) => Self::NotFound(m),
            FleetError::Conflict(m) => Self::Conflict(m),
            FleetError::Unavailable(m) => Self::Unavailable(m),
            FleetError::Internal(m) => Self::Internal(m),
        }
    }
}

/// Fleet actions the API triggers but the backend binary implements
/// (the CA, the broker and the rollout controller live there).
#[async_trait]
pub trait Fleet: Send + Sync + std::fmt::Debug {
    /// Handles an enrollment: `request` is an EnrollRequest frame
    /// (docs/WIRE.md); the answer is an EnrollResponse frame signed by the
    /// backend, accepted or rejected.
    async fn enroll(&self, request: &[u8]) -> Vec<u8>;
    /// The fleet CA certificate (PEM), which devices pin.
    fn ca_pem(&self) -> String;
    /// The backend's ed25519 command key (public half): it signs enrollment
    /// responses, rule bundles and commands; devices pin it at enrollment.
    /// Served at `GET /api/v1/fleet/command-key` as 64 hex digits.
    fn command_public_key(&self) -> [u8; 32];
    /// Revokes a device: the store marks it, the broker drops its
    /// connection, and its certificate and payloads are refused from now on.
    async fn revoke(&self, device: &DeviceId, actor: &str) -> Result<Device, String>;
    /// Prometheus text exposition of the backend's metrics.
    fn metrics(&self) -> String;
    /// Whether ingest is connected to its broker (readiness).
    fn ready(&self) -> bool;

    /// Checks a pushed rule bundle (format, signatures against the fleet
    /// root, version) and keeps it; devices hear of it through a rollout.
    async fn push_bundle(&self, bytes: &[u8], actor: &str) -> Result<StoredBundle, FleetError> {
        let _ = (bytes, actor);
        Err(FleetError::Unavailable(
            "rule bundles are not available in this backend".into(),
        ))
    }

    /// Starts rolling out a stored bundle version.
    async fn start_rollout(
        &self,
        version: u64,
        spec: RolloutSpec,
        actor: &str,
    ) -> Result<Rollout, FleetError> {
        let _ = (version, spec, actor);
        Err(FleetError::Unavailable(
            "rollouts are not available in this backend".into(),
        ))
    }

    /// Pauses, resumes, promotes or aborts a rollout.
    async fn rollout_action(
        &self,
        id: i64,
        action: RolloutAction,
        actor: &str,
    ) -> Result<Rollout, FleetError> {
        let _ = (id, action, actor);
        Err(FleetError::Unavailable(
            "rollouts are not available in this backend".into(),
        ))
    }

    /// Maps, evaluates and stores one agent stream message (JSON lines):
    /// each line through `picket_agents::map_line` and the backend's agent
    /// rules, each match stored and broadcast as an alert of the agent's
    /// device; returns when the alerts are stored.
    async fn agent_lines(
        &self,
        agent: &AgentRecord,
        text: &str,
    ) -> Result<AgentReport, FleetError> {
        let _ = (agent, text);
        Err(FleetError::Unavailable(
            "agent streams are not available in this backend".into(),
        ))
    }

    /// Where hunting job uploads are written and how big they may be;
    /// `None`: this backend has no hunting jobs (`POST /hunts` is 503).
    fn hunt_uploads(&self) -> Option<HuntUploads> {
        None
    }

    /// Takes over an upload folder (inside
    /// [`HuntUploads::staging_dir`]) holding `files` and queues a hunting
    /// job over them.
    async fn create_hunt(
        &self,
        name: &str,
        folder: &std::path::Path,
        files: Vec<HuntUpload>,
        actor: &str,
    ) -> Result<HuntDetail, FleetError> {
        let _ = (name, folder, files, actor);
        Err(FleetError::Unavailable(
            "hunting jobs are not available in this backend".into(),
        ))
    }

    /// Cancels a queued or running job (a finished one is answered as
    /// it is, 409).
    async fn cancel_hunt(&self, id: i64) -> Result<Hunt, FleetError> {
        let _ = id;
        Err(FleetError::Unavailable(
            "hunting jobs are not available in this backend".into(),
        ))
    }

    /// Deletes a job (cancelling it first if it runs), its files on disk
    /// and its alerts; answers the job as it was.
    async fn delete_hunt(&self, id: i64) -> Result<Hunt, FleetError> {
        let _ = id;
        Err(FleetError::Unavailable(
            "hunting jobs are not available in this backend".into(),
        ))
    }

    /// A rollout with its device counts.
    async fn rollout_progress(&self, id: i64) -> Result<RolloutProgress, FleetError> {
        let _ = id;
        Err(FleetError::Unavailable(
            "rollouts are not available in this backend".into(),
        ))
    }
}

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long a login session lasts.
    pub session_ttl: Duration,
    /// A device is offline after this long without a heartbeat or batch.
    pub offline_after: Duration,
    /// argon2id cost of new password hashes.
    pub password: PasswordParams,
    /// Whether the session cookie is marked `Secure` (HTTPS only). Turn off
    /// only for plain-HTTP development on a non-localhost address.
    pub cookie_secure: bool,
    /// How often the WebSocket stream pings; a client silent for two
    /// intervals is dropped.
    pub ws_ping_interval: Duration,
    /// Timeouts and the stream cap of `GET /api/v1/agents/stream`.
    pub agent_streams: AgentStreamLimits,
}

/// argon2id parameters for new password hashes (verification reads the
/// parameters from each stored PHC string, so changing these only affects
/// new or changed passwords).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB (`m`).
    pub memory_kib: u32,
    /// Passes (`t`).
    pub iterations: u32,
    /// Lanes (`p`).
    pub parallelism: u32,
}

impl Default for PasswordParams {
    /// The OWASP minimum for argon2id: m = 19 MiB, t = 2, p = 1. One lane
    /// because the backend box has two cores and ingest needs one.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            offline_after: Duration::from_secs(3 * 60),
            password: PasswordParams::default(),
            cookie_secure: true,
            ws_ping_interval: Duration::from_secs(30),
            agent_streams: AgentStreamLimits::default(),
        }
    }
}

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct ApiContext {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Fleet actions.
    pub fleet: Arc<dyn Fleet>,
    /// New alerts and device changes, for WebSocket clients.
    pub live: tokio::sync::broadcast::Sender<LiveEvent>,
    /// Settings.
    pub config: ApiConfig,
}

/// The API router (`/api/v1/...`, `/metrics`, `/healthz`, `/readyz`); any
/// other path is a JSON 404.
pub fn router(ctx: ApiContext) -> axum::Router {
    let state = state::AppState::new(ctx);
    routes::build(&state)
        .fallback(routes::not_found)
        .with_state(state)
}

/// [`router`] with the web UI: every path outside the API's (`/api/...`
/// stays a JSON 404) goes to `ui`, typically
/// `tower_http::services::ServeDir::new(dir).fallback(ServeFile::new(index))`.
pub fn router_with_ui<S>(ctx: ApiContext, ui: S) -> axum::Router
where
    S: tower_service::Service<axum::extract::Request, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let state = state::AppState::new(ctx);
    routes::build(&state).fallback_service(ui).with_state(state)
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
