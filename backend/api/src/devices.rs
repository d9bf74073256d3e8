//! Device inventory and revocation.

use axum::extract::State;
use picket_store::model::Device;
use serde::Serialize;

use crate::auth::{write_audit, Auth, Operator, Viewer};
use crate::error::{ApiError, Json, Path};
use crate::now_ms;
use crate::params::hex_id;
use crate::state::AppState;

/// A device as the API shows it: the stored device (with its platform)
/// plus `online`.
#[derive(Debug, Serialize)]
pub(crate) struct DeviceView {
    #[serde(flatten)]
    device: Device,
    online: bool,
}

impl DeviceView {
    fn new(state: &AppState, device: Device) -> Self {
        let online = is_online(&device, now_ms(), state.ctx.config.offline_after);
        Self { device, online }
    }
}

/// Whether a device counts as online at `now_ms`: not revoked and seen
/// within `offline_after`.
#[must_use]
pub fn is_online(device: &Device, now_ms: i64, offline_after: std::time::Duration) -> bool {
    let window = i64::try_from(offline_after.as_millis()).unwrap_or(i64::MAX);
    device.revoked_ms.is_none()
        && device
            .last_seen_ms
            .is_some_and(|seen| now_ms.saturating_sub(seen) <= window)
}

/// `GET /api/v1/devices`
pub(crate) async fn list(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let devices = state.ctx.store.devices().await?;
    Ok(Json(
        devices
            .into_iter()
            .map(|d| DeviceView::new(&state, d))
            .collect(),
    ))
}

async fn load(state: &AppState, id: &str) -> Result<Device, ApiError> {
    hex_id("device", id)?;
    state
        .ctx
        .store
        .device(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {id} not found")))
}

/// `GET /api/v1/devices/{id}`
pub(crate) async fn get(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let device = load(&state, &id).await?;
    Ok(Json(DeviceView::new(&state, device)))
}

/// `POST /api/v1/devices/{id}/revoke`
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Auth(p, _): Auth<Operator>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let before = load(&state, &id).await?;
    let device = state
        .ctx
        .fleet
        .revoke(&id, &p.user.name)
        .await
        .map_err(|e| ApiError::Internal(format!("revoking device {id}: {e}")))?;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        "device.revoke",
        &id,
        serde_json::json!({
            "hostname": device.hostname,
            "already_revoked": before.revoked_ms.is_some(),
        }),
    )
    .await;
    Ok(Json(DeviceView::new(&state, device)))
}
