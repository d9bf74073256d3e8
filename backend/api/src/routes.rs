//! The route table: every endpoint, who may call it and how the OpenAPI
//! document describes it. The router is built from this table, so a route
//! cannot exist without its entry (and so without its OpenAPI operation).

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{any, delete, get, patch, post, put, MethodRouter};
use axum::Router;
use picket_store::model::Role;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{
    admin, agents, alerts, auth, devices, fleet, hunts, metrics, openapi, ops, rules, stream,
};

/// Default request body limit (JSON endpoints).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Anyone, unauthenticated.
    Public,
    /// An authenticated user with at least this role.
    Role(Role),
    /// A Windows or macOS agent with its agent secret
    /// (`Authorization: Bearer <agent secret>`), not revoked.
    Agent,
}

/// One endpoint of the API (see [`routes`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RouteInfo {
    /// HTTP method (`GET`, `POST`, `PATCH`).
    pub method: &'static str,
    /// Path template as the router has it (`/api/v1/alerts/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// One line description.
    pub summary: &'static str,
    /// OpenAPI tag.
    pub tag: &'static str,
}

/// A request body, for the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body {
    None,
    /// JSON of the named component schema.
    Json(&'static str),
    /// `application/octet-stream`.
    Binary,
    /// `multipart/form-data` of a hunting job upload.
    HuntUpload,
}

/// A success response, for the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resp {
    /// JSON of the named component schema.
    Json(&'static str),
    /// A JSON array of the named component schema.
    JsonArray(&'static str),
    /// Text of the given media type.
    Text(&'static str),
    /// `application/octet-stream`.
    Binary,
    /// No body.
    Empty,
    /// A WebSocket upgrade (101).
    WebSocket,
    /// The agent stream's WebSocket upgrade (101).
    AgentSocket,
}

#[derive(Debug)]
pub(crate) struct Route {
    pub info: RouteInfo,
    /// Query parameters: name and description.
    pub query: &'static [(&'static str, &'static str)],
    pub body: Body,
    pub ok: (u16, Resp),
    pub handler: fn() -> MethodRouter<AppState>,
}

const fn info(
    method: &'static str,
    path: &'static str,
    access: Access,
    tag: &'static str,
    summary: &'static str,
) -> RouteInfo {
    RouteInfo {
        method,
        path,
        access,
        summary,
        tag,
    }
}

const VIEWER: Access = Access::Role(Role::Viewer);
const ANALYST: Access = Access::Role(Role::Analyst);
const OPERATOR: Access = Access::Role(Role::Operator);
const ADMIN: Access = Access::Role(Role::Admin);
const PUBLIC: Access = Access::Public;
const AGENT: Access = Access::Agent;

const ALERT_LIST_PARAMS: &[(&str, &str)] = &[
    ("device", "Device id (32 hex digits)."),
    (
        "level",
        "Minimum level: informational, low, medium, high, critical (or 0-4).",
    ),
    ("rule", "Sigma rule id."),
    (
        "technique",
        "ATT&CK technique id; a parent also matches its sub-techniques.",
    ),
    ("status", "new, acknowledged or resolved."),
    ("source", "appliance, windows, macos or upload."),
    (
        "since",
        "Event time >= this: milliseconds since the epoch or RFC 3339.",
    ),
    (
        "until",
        "Event time < this: milliseconds since the epoch or RFC 3339.",
    ),
    (
        "q",
        "Case-insensitive text in the command line, image or path.",
    ),
    ("cursor", "The `next` of the previous page."),
    ("limit", "Page size, 1 to 500 (default 50)."),
    (
        "hunt",
        "A hunting job id: that job's alerts (without it, only the fleet's).",
    ),
];

const ALERT_COUNT_PARAMS: &[(&str, &str)] = &[
    ("device", "Device id (32 hex digits)."),
    (
        "level",
        "Minimum level: informational, low, medium, high, critical (or 0-4).",
    ),
    ("rule", "Sigma rule id."),
    (
        "technique",
        "ATT&CK technique id; a parent also matches its sub-techniques.",
    ),
    ("status", "new, acknowledged or resolved."),
    ("source", "appliance, windows, macos or upload."),
    (
        "since",
        "Event time >= this: milliseconds since the epoch or RFC 3339.",
    ),
    (
        "until",
        "Event time < this: milliseconds since the epoch or RFC 3339.",
    ),
    (
        "q",
        "Case-insensitive text in the command line, image or path.",
    ),
    (
        "bucket",
        "Bucket width: 30s, 5m, 1h, 1d or milliseconds; 1s to 31d (default 1h).",
    ),
    (
        "hunt",
        "A hunting job id: that job's alerts (without it, only the fleet's).",
    ),
];

const AUDIT_PARAMS: &[(&str, &str)] = &[
    ("actor", "One actor (user name or `system`)."),
    ("action", "Actions starting with this prefix (`user.`)."),
    (
        "before",
        "Entries with an id below this (the `next` of the previous page).",
    ),
    (
        "since",
        "Entries at or after this time: milliseconds or RFC 3339.",
    ),
    (
        "limit",
        "At most this many entries, 1 to 1000 (default 100).",
    ),
];

const TIMELINE_PARAMS: &[(&str, &str)] = &[
    ("offset", "Matches to skip (default 0)."),
    ("limit", "Page size, 1 to 1000 (default 100)."),
];

const STREAM_PARAMS: &[(&str, &str)] = &[(
    "token",
    "Session token, for clients that cannot set headers on the handshake.",
)];

pub(crate) static ROUTES: &[Route] = &[
    Route {
        info: info("POST", "/api/v1/setup", PUBLIC, "auth",
            "Create the first admin; only while there are no users (409 after)."),
        query: &[],
        body: Body::Json("Credentials"),
        ok: (201, Resp::Json("User")),
        handler: || post(auth::setup),
    },
    Route {
        info: info("POST", "/api/v1/auth/login", PUBLIC, "auth",
            "Log in: returns a bearer token and sets the session cookie."),
        query: &[],
        body: Body::Json("Credentials"),
        ok: (200, Resp::Json("LoginResponse")),
        handler: || post(auth::login),
    },
    Route {
        info: info("POST", "/api/v1/auth/logout", VIEWER, "auth",
            "End the current session and clear the cookie."),
        query: &[],
        body: Body::None,
        ok: (204, Resp::Empty),
        handler: || post(auth::logout),
    },
    Route {
        info: info("GET", "/api/v1/auth/me", VIEWER, "auth", "The logged-in user."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("User")),
        handler: || get(auth::me),
    },
    Route {
        info: info("GET", "/api/v1/devices", VIEWER, "devices",
            "All devices, with `online` computed from `last_seen_ms`."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::JsonArray("Device")),
        handler: || get(devices::list),
    },
    Route {
        info: info("GET", "/api/v1/devices/{id}", VIEWER, "devices", "One device."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("Device")),
        handler: || get(devices::get),
    },
    Route {
        info: info("POST", "/api/v1/devices/{id}/revoke", OPERATOR, "devices",
            "Revoke a device: its certificate and payloads are refused from now on."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("Device")),
        handler: || post(devices::revoke),
    },
    Route {
        info: info("GET", "/api/v1/devices/{id}/bundles", VIEWER, "bundles",
            "A device's rule bundles: the version it is told to run, what it acknowledged for each version, its groups."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("DeviceBundles")),
        handler: || get(rules::device_bundles),
    },
    Route {
        info: info("PUT", "/api/v1/devices/{id}/groups", OPERATOR, "bundles",
            "Set a device's groups (rule bundles target groups)."),
        query: &[],
        body: Body::Json("Groups"),
        ok: (200, Resp::Json("Groups")),
        handler: || put(rules::set_groups),
    },
    Route {
        info: info("GET", "/api/v1/alerts", VIEWER, "alerts",
            "Alerts, newest first, filtered, one page at a time."),
        query: ALERT_LIST_PARAMS,
        body: Body::None,
        ok: (200, Resp::Json("AlertList")),
        handler: || get(alerts::list),
    },
    Route {
        info: info("GET", "/api/v1/alerts/counts", VIEWER, "alerts",
            "Alert counts per time bucket and level."),
        query: ALERT_COUNT_PARAMS,
        body: Body::None,
        ok: (200, Resp::Json("AlertCounts")),
        handler: || get(alerts::counts),
    },
    Route {
        info: info("GET", "/api/v1/alerts/{id}", VIEWER, "alerts",
            "One alert with its notes."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("AlertDetail")),
        handler: || get(alerts::get),
    },
    Route {
        info: info("PATCH", "/api/v1/alerts/{id}", ANALYST, "alerts",
            "Change an alert's status and/or assignee (`null` unassigns)."),
        query: &[],
        body: Body::Json("AlertPatch"),
        ok: (200, Resp::Json("Alert")),
        handler: || patch(alerts::update),
    },
    Route {
        info: info("POST", "/api/v1/alerts/{id}/notes", ANALYST, "alerts",
            "Add a note to an alert."),
        query: &[],
        body: Body::Json("NewNote"),
        ok: (201, Resp::Json("Note")),
        handler: || post(alerts::add_note),
    },
    Route {
        info: info("POST", "/api/v1/bundles", OPERATOR, "bundles",
            "Push a signed rule bundle (at most 16 MiB): checked against the fleet root and kept; a rollout announces it."),
        query: &[],
        body: Body::Binary,
        ok: (201, Resp::Json("Bundle")),
        handler: || post(rules::push).layer(DefaultBodyLimit::max(rules::BUNDLE_BODY_LIMIT)),
    },
    Route {
        info: info("GET", "/api/v1/bundles", VIEWER, "bundles",
            "Rule bundles, newest first, with device counts per state."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::JsonArray("BundleView")),
        handler: || get(rules::list),
    },
    Route {
        info: info("GET", "/api/v1/bundles/{version}", VIEWER, "bundles",
            "One bundle: manifest, rules, every device's state for it."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("BundleDetail")),
        handler: || get(rules::get),
    },
    Route {
        info: info("GET", "/api/v1/bundles/{version}/file", OPERATOR, "bundles",
            "The signed bundle file as pushed."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Binary),
        handler: || get(rules::file),
    },
    Route {
        info: info("GET", "/api/v1/rules/{id}", VIEWER, "bundles",
            "A rule's Sigma text: from the newest pushed bundle carrying it, else picketd's built-in rules."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("RuleText")),
        handler: || get(rules::rule_text),
    },
    Route {
        info: info("POST", "/api/v1/rollouts", OPERATOR, "bundles",
            "Start a staged rollout of a pushed bundle; a newer rollout supersedes an open one."),
        query: &[],
        body: Body::Json("NewRollout"),
        ok: (201, Resp::Json("Rollout")),
        handler: || post(rules::create_rollout),
    },
    Route {
        info: info("GET", "/api/v1/rollouts", VIEWER, "bundles", "Rollouts, newest first."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::JsonArray("Rollout")),
        handler: || get(rules::list_rollouts),
    },
    Route {
        info: info("GET", "/api/v1/rollouts/{id}", VIEWER, "bundles",
            "A rollout with its stage sizes, device states, failure rate and alert-rate check."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("RolloutProgress")),
        handler: || get(rules::get_rollout),
    },
    Route {
        info: info("POST", "/api/v1/rollouts/{id}/{action}", OPERATOR, "bundles",
            "pause, resume, promote (assign the next stage now) or abort (devices that have not activated it keep their previous bundle)."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("Rollout")),
        handler: || post(rules::act),
    },
    Route {
        info: info("POST", "/api/v1/hunts", OPERATOR, "hunts",
            "Upload EVTX files as a hunting job (multipart/form-data: `name`, one or more `file` parts; at most `[hunts] max_upload_bytes`, 413 beyond); the backend runs its agent rule set over them in the background."),
        query: &[],
        body: Body::HuntUpload,
        ok: (201, Resp::Json("HuntDetail")),
        handler: || post(hunts::create).layer(DefaultBodyLimit::disable()),
    },
    Route {
        info: info("GET", "/api/v1/hunts", VIEWER, "hunts",
            "Hunting jobs, newest first, with their state and progress."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::JsonArray("Hunt")),
        handler: || get(hunts::list),
    },
    Route {
        info: info("GET", "/api/v1/hunts/{id}", VIEWER, "hunts",
            "A hunting job: progress and every file's state (a file that is not EVTX or cannot be read is `failed` with the reason)."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("HuntDetail")),
        handler: || get(hunts::get),
    },
    Route {
        info: info("DELETE", "/api/v1/hunts/{id}", OPERATOR, "hunts",
            "Delete a hunting job (cancelling it if it runs), its files and its alerts."),
        query: &[],
        body: Body::None,
        ok: (204, Resp::Empty),
        handler: || delete(hunts::delete),
    },
    Route {
        info: info("GET", "/api/v1/hunts/{id}/timeline", VIEWER, "hunts",
            "A hunting job's matches in event-time order: time, computer, channel, event id, record id, file, rule (id, title, level, author), techniques."),
        query: TIMELINE_PARAMS,
        body: Body::None,
        ok: (200, Resp::Json("HuntTimeline")),
        handler: || get(hunts::timeline),
    },
    Route {
        info: info("POST", "/api/v1/hunts/{id}/cancel", OPERATOR, "hunts",
            "Cancel a queued or running hunting job; what it found so far is kept (409 when it has finished)."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("Hunt")),
        handler: || post(hunts::cancel),
    },
    Route {
        info: info("POST", "/api/v1/enrollment-tokens", OPERATOR, "enrollment",
            "Create a one-time enrollment token; the answer is the only time its value is shown."),
        query: &[],
        body: Body::Json("NewToken"),
        ok: (201, Resp::Json("CreatedToken")),
        handler: || post(fleet::create_token),
    },
    Route {
        info: info("GET", "/api/v1/enrollment-tokens", OPERATOR, "enrollment",
            "Enrollment tokens, newest first (never their values)."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::JsonArray("EnrollmentToken")),
        handler: || get(fleet::list_tokens),
    },
    Route {
        info: info("POST", "/api/v1/enroll", PUBLIC, "enrollment",
            "Device enrollment: an EnrollRequest frame in (at most 16 KiB), an EnrollResponse frame out."),
        query: &[],
        body: Body::Binary,
        ok: (200, Resp::Binary),
        handler: || post(fleet::enroll).layer(DefaultBodyLimit::max(fleet::ENROLL_BODY_LIMIT)),
    },
    Route {
        info: info("POST", "/api/v1/agents/enroll", PUBLIC, "agents",
            "Windows/macOS agent enrollment: spends an enrollment token, records the agent as a device and answers its secret (shown only here)."),
        query: &[],
        body: Body::Json("AgentEnroll"),
        ok: (201, Resp::Json("AgentEnrolled")),
        handler: || post(agents::enroll),
    },
    Route {
        info: info("GET", "/api/v1/agents/stream", AGENT, "agents",
            "WebSocket for agent events: text messages of JSON lines in, one `result` message (alerts raised, line errors) per message out (docs/AGENT-STREAM.md)."),
        query: &[],
        body: Body::None,
        ok: (101, Resp::AgentSocket),
        handler: || get(agents::stream),
    },
    Route {
        info: info("GET", "/api/v1/fleet/ca.pem", PUBLIC, "enrollment",
            "The fleet CA certificate (PEM) that devices pin."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Text("application/x-pem-file")),
        handler: || get(fleet::ca_pem),
    },
    Route {
        info: info("GET", "/api/v1/fleet/command-key", PUBLIC, "enrollment",
            "The backend's ed25519 command key (public half) as 64 hex digits, which devices pin."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Text("text/plain")),
        handler: || get(fleet::command_key),
    },
    Route {
        info: info("GET", "/api/v1/users", ADMIN, "users", "All users."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::JsonArray("User")),
        handler: || get(admin::list_users),
    },
    Route {
        info: info("POST", "/api/v1/users", ADMIN, "users", "Create a user."),
        query: &[],
        body: Body::Json("NewUser"),
        ok: (201, Resp::Json("User")),
        handler: || post(admin::create_user),
    },
    Route {
        info: info("PATCH", "/api/v1/users/{id}", ADMIN, "users",
            "Change a user's role, password or disabled flag; disabling or a new password ends its sessions."),
        query: &[],
        body: Body::Json("UserPatch"),
        ok: (200, Resp::Json("User")),
        handler: || patch(admin::update_user),
    },
    Route {
        info: info("GET", "/api/v1/audit", ADMIN, "audit",
            "The audit log, newest first."),
        query: AUDIT_PARAMS,
        body: Body::None,
        ok: (200, Resp::Json("AuditPage")),
        handler: || get(admin::audit_log),
    },
    Route {
        info: info("GET", "/api/v1/openapi.json", PUBLIC, "meta",
            "This OpenAPI 3.1 document."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("OpenApi")),
        handler: || get(openapi::serve),
    },
    Route {
        info: info("GET", "/api/v1/stream", VIEWER, "stream",
            "WebSocket feed of live events (JSON text messages: alert, device, lagged, filter, error)."),
        query: STREAM_PARAMS,
        body: Body::None,
        ok: (101, Resp::WebSocket),
        handler: || get(stream::stream),
    },
    Route {
        info: info("GET", "/metrics", PUBLIC, "ops",
            "Prometheus metrics: the backend's, then the API's own."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Text("text/plain")),
        handler: || get(ops::metrics),
    },
    Route {
        info: info("GET", "/healthz", PUBLIC, "ops", "Liveness: 200 while the process answers."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("Status")),
        handler: || get(ops::healthz),
    },
    Route {
        info: info("GET", "/readyz", PUBLIC, "ops",
            "Readiness: 200 when the store answers and ingest is connected, else 503 with the reason."),
        query: &[],
        body: Body::None,
        ok: (200, Resp::Json("Status")),
        handler: || get(ops::readyz),
    },
];

/// Every endpoint of the API, in the order the docs list them.
#[must_use]
pub fn routes() -> Vec<RouteInfo> {
    ROUTES.iter().map(|r| r.info).collect()
}

async fn api_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    api_not_found(uri).await
}

/// The router without its fallback: the table's routes, JSON 404s under
/// `/api/`, JSON 405s, the default body limit and request metrics.
pub(crate) fn build(state: &AppState) -> Router<AppState> {
    ROUTES
        .iter()
        .fold(Router::new(), |r, route| {
            r.route(route.info.path, (route.handler)())
        })
        .route("/api/{*rest}", any(api_not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(from_fn_with_state(state.clone(), metrics::count_requests))
}
