//! The Picket fleet backend's HTTP API (skeleton: the interface the backend
//! binary wires; the implementation fills in the router).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use picket_store::model::{Alert, Device, DeviceId};
use picket_store::Store;
use serde::Serialize;

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
}

/// Fleet actions the API triggers but the backend binary implements
/// (the CA and the broker live there).
#[async_trait]
pub trait Fleet: Send + Sync + std::fmt::Debug {
    /// Handles an enrollment: `request` is an EnrollRequest frame
    /// (docs/WIRE.md); the answer is an EnrollResponse frame signed by the
    /// backend, accepted or rejected.
    async fn enroll(&self, request: &[u8]) -> Vec<u8>;
    /// The fleet CA certificate (PEM), which devices pin.
    fn ca_pem(&self) -> String;
    /// Revokes a device: the store marks it, the broker drops its
    /// connection, and its certificate and payloads are refused from now on.
    async fn revoke(&self, device: &DeviceId, actor: &str) -> Result<Device, String>;
    /// Prometheus text exposition of the backend's metrics.
    fn metrics(&self) -> String;
    /// Whether ingest is connected to its broker (readiness).
    fn ready(&self) -> bool;
}

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long a login session lasts.
    pub session_ttl: Duration,
    /// A device is offline after this long without a heartbeat or batch.
    pub offline_after: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            offline_after: Duration::from_secs(3 * 60),
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

/// The API router (`/api/v1/...`, `/metrics`, `/healthz`, `/readyz`).
pub fn router(ctx: ApiContext) -> axum::Router {
    let _ = ctx;
    axum::Router::new()
}
