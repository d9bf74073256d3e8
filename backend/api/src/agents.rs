//! Windows and macOS agents: `POST /api/v1/agents/enroll` and the
//! `GET /api/v1/agents/stream` WebSocket (protocol: `docs/AGENT-STREAM.md`).
//!
//! Enrollment spends a one-time enrollment token, records the agent as a
//! device (random 32-hex id, no key or certificate) and answers a random
//! 256-bit agent secret once; the store keeps only its
//! [`picket_store::token_hash`] in the `agents` table with the platform.
//! The platform is also shown in the device inventory: enrollment records a
//! first heartbeat whose `modules` hold `{"name": "agent", "state":
//! "windows"|"macos"}` and whose `agent_version` is the agent's.
//!
//! The stream authenticates with `Authorization: Bearer <agent secret>`
//! (revoked devices: 403; a stream open when its device is revoked is
//! closed at once, pushed by the live feed's `revoked` event). Each text
//! message (at most [`AGENT_MESSAGE_LIMIT`] bytes) holds JSON lines; the
//! backend's [`Fleet::agent_lines`](crate::Fleet::agent_lines) maps,
//! evaluates and stores them, and the answer is one `result` message per
//! message, sent after the alerts are stored: the agent's next message is
//! only read after that, so a slow store slows the agent down through TCP.
//!
//! Limits ([`AgentStreamLimits`]): at most `max_streams` streams (503
//! beyond); a stream silent for `idle_timeout` is closed (1008 `idle
//! timeout`), one whose answer cannot be written within `write_timeout` is
//! dropped, an oversized frame or message is closed with 1009. Each stream
//! holds at most one message and its answer, so memory is bounded by
//! `max_streams` × ([`AGENT_MESSAGE_LIMIT`] + its answer). Every close is
//! counted by reason (`picket_agent_streams_closed_total`).

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use picket_store::model::{
    AgentRecord, Device, HeartbeatInfo, ModuleStatus, NewDevice, TokenRefusal,
};
use picket_store::token_hash;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};

use crate::auth::{random_token, write_audit};
use crate::error::{ApiError, Json};
use crate::state::AppState;
use crate::{now_ms, LiveEvent};

/// Largest text message the agent stream accepts (several lines of up to
/// `picket_agents::MAX_LINE_BYTES` each); larger frames end the connection.
pub const AGENT_MESSAGE_LIMIT: usize = 4 << 20;
/// Most lines (blank ones included) one message may hold; a message with
/// more is answered with an `error` and not processed.
pub const AGENT_MAX_LINES: usize = 10_000;
const MAX_HOSTNAME_LEN: usize = 253;
const MAX_VERSION_LEN: usize = 64;

/// `POST /agents/enroll` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentEnroll {
    token: String,
    hostname: String,
    platform: String,
    agent_version: String,
}

/// The answer to an agent enrollment: the only time the secret is shown.
#[derive(Debug, Serialize)]
pub(crate) struct AgentEnrolled {
    device_id: String,
    platform: String,
    secret: String,
}

fn random_device_id() -> String {
    random_token()[..32].to_owned()
}

/// `POST /api/v1/agents/enroll`
pub(crate) async fn enroll(
    State(state): State<AppState>,
    Json(body): Json<AgentEnroll>,
) -> Result<(StatusCode, Json<AgentEnrolled>), ApiError> {
    if body.platform != "windows" && body.platform != "macos" {
        return Err(ApiError::bad("`platform` must be \"windows\" or \"macos\""));
    }
    let hostname = body.hostname.trim();
    if hostname.is_empty() || hostname.len() > MAX_HOSTNAME_LEN {
        return Err(ApiError::bad(format!(
            "`hostname` must be 1 to {MAX_HOSTNAME_LEN} bytes"
        )));
    }
    if body.agent_version.len() > MAX_VERSION_LEN {
        return Err(ApiError::bad(format!(
            "`agent_version` must be at most {MAX_VERSION_LEN} bytes"
        )));
    }
    let store = &state.ctx.store;
    let id = random_device_id();
    let now = now_ms();
    if let Err(refusal) = store.use_token(&token_hash(&body.token), &id, now).await? {
        state.metrics.auth_failure("agent_enroll");
        return Err(ApiError::Unauthorized(
            match refusal {
                TokenRefusal::Invalid => "unknown enrollment token",
                TokenRefusal::Expired => "the enrollment token has expired",
                TokenRefusal::Used => "the enrollment token was already used",
            }
            .into(),
        ));
    }
    store
        .insert_device(NewDevice {
            id: id.clone(),
            hostname: hostname.to_owned(),
            public_key: Vec::new(),
            cert_serial: String::new(),
            agent_version: body.agent_version.clone(),
            enrolled_ms: now,
        })
        .await?;
    let secret = random_token();
    store
        .insert_agent(&AgentRecord {
            device_id: id.clone(),
            platform: body.platform.clone(),
            secret_hash: token_hash(&secret),
            created_ms: now,
        })
        .await?;
    store
        .record_heartbeat(
            &id,
            platform_heartbeat(&body.platform, &body.agent_version, now),
        )
        .await?;
    write_audit(
        &**store,
        "agent",
        "agent.enroll",
        &id,
        serde_json::json!({ "hostname": hostname, "platform": body.platform }),
    )
    .await;
    if let Some(d) = store.device(&id).await? {
        let _ = state.ctx.live.send(LiveEvent::Device {
            device: Box::new(d),
            online: false,
            change: "enrolled",
        });
    }
    Ok((
        StatusCode::CREATED,
        Json(AgentEnrolled {
            device_id: id,
            platform: body.platform,
            secret,
        }),
    ))
}

/// The heartbeat enrollment records: the agent's version, and its platform
/// as its one module.
fn platform_heartbeat(platform: &str, agent_version: &str, now: i64) -> HeartbeatInfo {
    HeartbeatInfo {
        seq: 0,
        sent_at_ms: now,
        received_ms: now,
        uptime_secs: 0,
        agent_version: agent_version.to_owned(),
        rule_bundle_version: None,
        spool_depth: 0,
        spool_bytes: 0,
        spool_evictions_total: 0,
        lost_kernel_records_total: 0,
        modules: vec![ModuleStatus {
            name: "agent".into(),
            state: platform.to_owned(),
            error: None,
        }],
        cpu_permille: 0,
        rss_bytes: 0,
    }
}

/// An authenticated, not revoked agent.
#[derive(Debug)]
pub(crate) struct AgentAuth(AgentRecord, Device);

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_owned());
        let Some(secret) = secret else {
            state.metrics.auth_failure("agent_missing");
            return Err(ApiError::Unauthorized(
                "agent stream needs `Authorization: Bearer <agent secret>`".into(),
            ));
        };
        let store = &state.ctx.store;
        let Some(agent) = store.agent_by_secret(&token_hash(&secret)).await? else {
            state.metrics.auth_failure("agent_invalid");
            return Err(ApiError::Unauthorized("unknown agent secret".into()));
        };
        let device = store.device(&agent.device_id).await?.ok_or_else(|| {
            ApiError::Internal(format!("agent {} has no device", agent.device_id))
        })?;
        if device.revoked_ms.is_some() {
            state.metrics.auth_failure("agent_revoked");
            return Err(ApiError::Forbidden {
                code: "revoked",
                message: format!("device {} is revoked", device.id),
            });
        }
        Ok(Self(agent, device))
    }
}

/// Timeouts and caps of the agent stream (`[agents]` in the backend's
/// config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentStreamLimits {
    /// A stream that sends nothing (no message, Ping included) for this
    /// long is closed with Close 1008 `idle timeout`.
    pub idle_timeout: Duration,
    /// A stream whose answer cannot be written within this (the agent does
    /// not read, its TCP window stays full) is dropped.
    pub write_timeout: Duration,
    /// Agent streams open at once; one more is refused with 503 before the
    /// upgrade.
    pub max_streams: usize,
}

impl Default for AgentStreamLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(30),
            max_streams: 10_000,
        }
    }
}

/// Why the backend ended an agent stream: the Close frame's code and reason,
/// and the `picket_agent_streams_closed_total` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseWhy {
    /// The agent closed (or the connection dropped).
    Client,
    /// Nothing received for `idle_timeout`.
    Idle,
    /// An answer could not be written within `write_timeout`.
    SlowReader,
    /// A frame or message over [`AGENT_MESSAGE_LIMIT`].
    TooBig,
    /// The device was revoked while the stream was open.
    Revoked,
    /// A WebSocket protocol violation or I/O error.
    Protocol,
    /// The backend is shutting down or failed to look the device up.
    Server,
}

impl CloseWhy {
    fn label(self) -> &'static str {
        match self {
            CloseWhy::Client => "client",
            CloseWhy::Idle => "idle_timeout",
            CloseWhy::SlowReader => "slow_reader",
            CloseWhy::TooBig => "message_too_big",
            CloseWhy::Revoked => "revoked",
            CloseWhy::Protocol => "protocol_error",
            CloseWhy::Server => "server_error",
        }
    }

    /// The Close frame sent, if one can be (RFC 6455 §7.4.1).
    fn frame(self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            CloseWhy::Idle => (close_code::POLICY, "idle timeout"),
            CloseWhy::TooBig => (
                close_code::SIZE,
                "message too big: at most 4 MiB per message",
            ),
            CloseWhy::Revoked => (close_code::POLICY, "device revoked"),
            CloseWhy::Protocol => (close_code::PROTOCOL, "protocol error"),
            CloseWhy::Server => (close_code::ERROR, "server error"),
            // The agent left, or does not read: nothing more is written.
            CloseWhy::Client | CloseWhy::SlowReader => return None,
        };
        Some(CloseFrame {
            code,
            reason: reason.into(),
        })
    }
}

/// The open agent streams by device, so that a revocation reaches them at
/// once: one task (started with the first stream) watches the live feed for
/// `revoked` device events and wakes that device's streams; each stream
/// waits on its own [`Notify`] instead of on the feed, so alerts broadcast
/// by other streams cost it nothing.
/// Device id → (stream id, its revocation signal).
type StreamsByDevice = HashMap<String, Vec<(u64, Arc<Notify>)>>;

#[derive(Debug)]
pub(crate) struct OpenAgents {
    streams: std::sync::Mutex<StreamsByDevice>,
    next: AtomicU64,
    watching: std::sync::Once,
}

impl Default for OpenAgents {
    fn default() -> Self {
        Self {
            streams: std::sync::Mutex::default(),
            next: AtomicU64::new(0),
            watching: std::sync::Once::new(),
        }
    }
}

/// A stream's entry in [`OpenAgents`], removed on drop.
struct Registration {
    open: Arc<OpenAgents>,
    device: String,
    id: u64,
    revoked: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut streams = self
            .open
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = streams.get_mut(&self.device) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                streams.remove(&self.device);
            }
        }
    }
}

impl OpenAgents {
    fn register(self: &Arc<Self>, state: &AppState, device: &str) -> Registration {
        self.watching.call_once(|| {
            tokio::spawn(watch_revocations(
                self.clone(),
                state.ctx.live.subscribe(),
                state.ctx.store.clone(),
            ));
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let revoked = Arc::new(Notify::new());
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(device.to_owned())
            .or_default()
            .push((id, revoked.clone()));
        Registration {
            open: self.clone(),
            device: device.to_owned(),
            id,
            revoked,
        }
    }

    fn revoke(&self, device: &str) {
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, n) in streams.get(device).into_iter().flatten() {
            // A permit is kept if the stream is busy with a message.
            n.notify_one();
        }
    }

    fn devices(&self) -> Vec<String> {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }
}

/// Wakes the streams of revoked devices; ends with the live feed.
async fn watch_revocations(
    open: Arc<OpenAgents>,
    mut live: broadcast::Receiver<LiveEvent>,
    store: Arc<dyn picket_store::Store>,
) {
    loop {
        match live.recv().await {
            Ok(LiveEvent::Device {
                device,
                change: "revoked",
                ..
            }) => open.revoke(&device.id),
            Ok(_) => {}
            // Events were missed: ask the store about every open device.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for id in open.devices() {
                    if matches!(store.device(&id).await, Ok(Some(d)) if d.revoked_ms.is_some()) {
                        open.revoke(&id);
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Holds one of the `max_streams` slots until dropped.
struct StreamSlot(AppState);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.metrics.agent_stream_ended();
    }
}

/// `GET /api/v1/agents/stream`
pub(crate) async fn stream(
    State(state): State<AppState>,
    AgentAuth(agent, _device): AgentAuth,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws?
        .max_message_size(AGENT_MESSAGE_LIMIT)
        .max_frame_size(AGENT_MESSAGE_LIMIT);
    let limits = state.ctx.config.agent_streams;
    if !state.metrics.agent_stream_started(limits.max_streams) {
        return Err(ApiError::Unavailable(format!(
            "too many agent streams (at most {}): retry later",
            limits.max_streams
        )));
    }
    let slot = StreamSlot(state.clone());
    Ok(ws.on_upgrade(move |socket| run(socket, slot, agent, limits)))
}

/// Whether a read error is tungstenite refusing an oversized frame or
/// message.
fn too_big(e: axum::Error) -> bool {
    e.into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

async fn run(
    mut socket: WebSocket,
    slot: StreamSlot,
    agent: AgentRecord,
    limits: AgentStreamLimits,
) {
    let state = slot.0.clone();
    let _client = state.metrics.ws_client();
    let registration = state.open_agents.register(&state, &agent.device_id);
    tracing::debug!(device = %agent.device_id, "agent stream connected");
    let why = serve(&mut socket, &state, &agent, limits, &registration.revoked).await;
    drop(registration);
    state.metrics.agent_stream_closed(why.label());
    // Best effort and bounded from here: the peer may be gone.
    if why == CloseWhy::Revoked {
        // Also as a message, for agents that only read messages.
        let reply = serde_json::json!({
            "type": "error",
            "error": format!("device {} is revoked", agent.device_id),
        });
        let _ = tokio::time::timeout(
            limits.write_timeout,
            socket.send(Message::Text(reply.to_string().into())),
        )
        .await;
    }
    if let Some(frame) = why.frame() {
        let _ = tokio::time::timeout(
            limits.write_timeout,
            socket.send(Message::Close(Some(frame))),
        )
        .await;
    }
    tracing::debug!(device = %agent.device_id, reason = why.label(), "agent stream closed");
    drop(slot);
}

/// The agent stream's loop; returns why it ended.
async fn serve(
    socket: &mut WebSocket,
    state: &AppState,
    agent: &AgentRecord,
    limits: AgentStreamLimits,
    revoked: &Notify,
) -> CloseWhy {
    // One message at a time: the reply (after the store insert) is sent
    // before the next message is read, which is the back-pressure; memory
    // per stream is one message (≤ AGENT_MESSAGE_LIMIT) and its answer.
    loop {
        // Idle is counted from the last frame received (or the upgrade).
        let idle_at = tokio::time::Instant::now() + limits.idle_timeout;
        let msg = tokio::select! {
            read = tokio::time::timeout_at(idle_at, socket.recv()) => match read {
                Err(_) => return CloseWhy::Idle,
                Ok(None) => return CloseWhy::Client,
                Ok(Some(Err(e))) => {
                    return if too_big(e) { CloseWhy::TooBig } else { CloseWhy::Protocol };
                }
                Ok(Some(Ok(m))) => m,
            },
            // Revocation is pushed: an idle stream is closed at once.
            () = revoked.notified() => return CloseWhy::Revoked,
        };
        let reply = match msg {
            Message::Text(text) => match answer(state, agent, text.as_str()).await {
                Ok(reply) => reply,
                Err(why) => return why,
            },
            Message::Binary(_) => serde_json::json!({
                "type": "error",
                "error": "binary messages are not accepted: send JSON lines as text",
            }),
            Message::Close(_) => return CloseWhy::Client,
            // Pings are answered by the WebSocket layer; they count as
            // activity for the idle timeout.
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match tokio::time::timeout(
            limits.write_timeout,
            socket.send(Message::Text(reply.to_string().into())),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return CloseWhy::Client,
            Err(_) => return CloseWhy::SlowReader,
        }
    }
}

/// Maps, evaluates and stores one text message; the answer to send, or why
/// the stream must end.
async fn answer(
    state: &AppState,
    agent: &AgentRecord,
    text: &str,
) -> Result<serde_json::Value, CloseWhy> {
    // Revocation is also checked per message (one indexed read): an event
    // missed on the live feed cannot let a revoked agent store alerts.
    match state.ctx.store.device(&agent.device_id).await {
        Ok(Some(d)) if d.revoked_ms.is_none() => {}
        Ok(_) => return Err(CloseWhy::Revoked),
        Err(e) => {
            tracing::warn!(device = %agent.device_id, error = %e, "agent device lookup failed");
            return Err(CloseWhy::Server);
        }
    }
    // Bounds the answer too (one error of a few hundred bytes per line at
    // worst), whatever the lines hold.
    let lines = text.split('\n').count();
    if lines > AGENT_MAX_LINES {
        state.metrics.agent_message_refused("too_many_lines");
        return Ok(serde_json::json!({
            "type": "error",
            "error": format!("{lines} lines in one message: at most {AGENT_MAX_LINES}"),
        }));
    }
    Ok(match state.ctx.fleet.agent_lines(agent, text).await {
        Ok(report) => {
            for e in &report.errors {
                state.metrics.agent_line_error(e.reason);
            }
            serde_json::json!({ "type": "result", "result": report })
        }
        Err(e) => {
            tracing::warn!(device = %agent.device_id, error = %e, "agent batch failed");
            serde_json::json!({ "type": "error", "error": e.to_string() })
        }
    })
}
