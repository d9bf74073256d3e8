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
//! closed at its next message). Each text message (at most
//! [`AGENT_MESSAGE_LIMIT`] bytes) holds JSON lines; the backend's
//! [`Fleet::agent_lines`](crate::Fleet::agent_lines) maps, evaluates and
//! stores them, and the answer is one `result` message per message, sent
//! after the alerts are stored: the agent's next message is only read
//! after that, so a slow store slows the agent down through TCP.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
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

use crate::auth::{random_token, write_audit};
use crate::error::{ApiError, Json};
use crate::state::AppState;
use crate::{now_ms, LiveEvent};

/// Largest text message the agent stream accepts (several lines of up to
/// `picket_agents::MAX_LINE_BYTES` each); larger frames end the connection.
pub const AGENT_MESSAGE_LIMIT: usize = 4 << 20;
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

/// The heartbeat enrollment records so the inventory shows the platform.
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

/// `GET /api/v1/agents/stream`
pub(crate) async fn stream(
    State(state): State<AppState>,
    AgentAuth(agent, _device): AgentAuth,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws?
        .max_message_size(AGENT_MESSAGE_LIMIT)
        .max_frame_size(AGENT_MESSAGE_LIMIT);
    Ok(ws.on_upgrade(move |socket| run(socket, state, agent)))
}

async fn run(mut socket: WebSocket, state: AppState, agent: AgentRecord) {
    let _client = state.metrics.ws_client();
    tracing::debug!(device = %agent.device_id, "agent stream connected");
    // One message at a time: the reply (after the store insert) is sent
    // before the next message is read, which is the back-pressure.
    while let Some(msg) = socket.recv().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => {
                let reply = serde_json::json!({
                    "type": "error",
                    "error": "binary messages are not accepted: send JSON lines as text",
                });
                if socket
                    .send(Message::Text(reply.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        // Revocation also ends a stream that is already open: checked once
        // per message (one indexed read) rather than pushed to connections.
        match state.ctx.store.device(&agent.device_id).await {
            Ok(Some(d)) if d.revoked_ms.is_none() => {}
            other => {
                let why = match other {
                    Err(e) => format!("device lookup failed: {e}"),
                    _ => format!("device {} is revoked", agent.device_id),
                };
                let reply = serde_json::json!({ "type": "error", "error": why });
                let _ = socket.send(Message::Text(reply.to_string().into())).await;
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        }
        let reply = match state.ctx.fleet.agent_lines(&agent, text.as_str()).await {
            Ok(report) => serde_json::json!({ "type": "result", "result": report }),
            Err(e) => {
                tracing::warn!(device = %agent.device_id, error = %e, "agent batch failed");
                serde_json::json!({ "type": "error", "error": e.to_string() })
            }
        };
        if socket
            .send(Message::Text(reply.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    tracing::debug!(device = %agent.device_id, "agent stream disconnected");
}
