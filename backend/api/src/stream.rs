//! `GET /api/v1/stream`: the live WebSocket feed of [`LiveEvent`]s.
//!
//! Every message the server sends is a JSON text message with a `type`:
//! `alert`, `device` and `hunt` (a [`LiveEvent`]; `hunt` is a hunting
//! job's state and progress; alerts carry `rule_author` like
//! the REST views), `lagged` (`{"type":"lagged","skipped":N}`: the client
//! fell behind the broadcast buffer and missed N events; the connection
//! stays open), `filter` (the acknowledged filter) and `error` (a bad client
//! message). The server pings every `ApiConfig::ws_ping_interval` and drops
//! a client that stays silent for two intervals.
//!
//! A client may narrow the feed with a text message
//! `{"type":"filter","min_level":"high","device":"<id>"}` (both optional;
//! `{"type":"filter"}` clears it). `min_level` applies to alerts only.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use picket_store::model::{DeviceId, Level};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{authenticate, require, Principal};
use crate::error::ApiError;
use crate::state::AppState;
use crate::LiveEvent;

impl From<WebSocketUpgradeRejection> for ApiError {
    fn from(r: WebSocketUpgradeRejection) -> Self {
        let status = r.status();
        let message = format!("WebSocket upgrade failed: {}", r.body_text());
        match status.as_u16() {
            426 => Self::UpgradeRequired(message),
            405 => Self::MethodNotAllowed(message),
            _ => Self::BadRequest(message),
        }
    }
}

const MAX_CLIENT_MESSAGE: usize = 16 * 1024;

/// Authentication for the stream: like every endpoint, plus `?token=`
/// because browsers cannot set headers on a WebSocket handshake.
#[derive(Debug)]
pub(crate) struct StreamAuth(Principal);

impl FromRequestParts<AppState> for StreamAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = authenticate(state, parts, true).await?;
        require(state, &p, picket_store::model::Role::Viewer)?;
        Ok(Self(p))
    }
}

/// `GET /api/v1/stream`
pub(crate) async fn stream(
    State(state): State<AppState>,
    StreamAuth(p): StreamAuth,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Clients only send small filter messages; axum's 64 MiB default
    // would let one client pin that much memory.
    let ws = ws?
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE);
    let user = p.user.name;
    Ok(ws.on_upgrade(move |socket| run(socket, state, user)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    min_level: Option<Level>,
    device: Option<DeviceId>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Filter {
    min_level: Option<Level>,
    device: Option<DeviceId>,
}

impl Filter {
    fn passes(&self, ev: &LiveEvent) -> bool {
        match ev {
            LiveEvent::Alert(a) => {
                self.min_level.is_none_or(|l| a.alert.level >= l)
                    && self.device.as_ref().is_none_or(|d| *d == a.alert.device_id)
            }
            LiveEvent::Device { device, .. } => {
                self.device.as_ref().is_none_or(|d| *d == device.id)
            }
            // Jobs belong to no device: a device filter leaves them out.
            LiveEvent::Hunt(_) => self.device.is_none(),
        }
    }
}

fn render(ev: &LiveEvent) -> Option<String> {
    let mut v = serde_json::to_value(ev).ok()?;
    if let LiveEvent::Alert(a) = ev {
        let author = a.alert.event.get("rule_author").cloned();
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "rule_author".into(),
                author.unwrap_or(serde_json::Value::Null),
            );
        }
    }
    serde_json::to_string(&v).ok()
}

async fn send_json(socket: &mut WebSocket, v: &serde_json::Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn run(mut socket: WebSocket, state: AppState, user: String) {
    let _client = state.metrics.ws_client();
    let mut rx = state.ctx.live.subscribe();
    let mut ping = tokio::time::interval(state.ctx.config.ws_ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut silent_ticks = 0u8;
    let mut filter = Filter::default();
    tracing::debug!(user, "stream client connected");
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if filter.passes(&ev) {
                        if let Some(text) = render(&ev) {
                            if socket.send(Message::Text(text.into())).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                Err(RecvError::Lagged(skipped)) => {
                    let msg = serde_json::json!({ "type": "lagged", "skipped": skipped });
                    if !send_json(&mut socket, &msg).await {
                        break;
                    }
                }
                Err(RecvError::Closed) => {
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
            },
            msg = socket.recv() => {
                silent_ticks = 0;
                match msg {
                    None | Some(Err(_) | Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(text))) => {
                        let reply = match serde_json::from_str::<ClientMessage>(&text) {
                            Ok(m) if m.kind == "filter" => {
                                filter = Filter { min_level: m.min_level, device: m.device };
                                serde_json::json!({ "type": "filter", "filter": filter })
                            }
                            Ok(m) => serde_json::json!({
                                "type": "error",
                                "error": format!("unknown message type {:?}", m.kind),
                            }),
                            Err(e) => serde_json::json!({
                                "type": "error",
                                "error": format!("invalid message: {e}"),
                            }),
                        };
                        if !send_json(&mut socket, &reply).await {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                }
            },
            _ = ping.tick() => {
                if silent_ticks >= 2 {
                    tracing::debug!(user, "stream client silent, closing");
                    break;
                }
                silent_ticks += 1;
                if socket.send(Message::Ping(axum::body::Bytes::new())).await.is_err() {
                    break;
                }
            }
        }
    }
    tracing::debug!(user, "stream client disconnected");
}
