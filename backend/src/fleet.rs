//! [`picket_api::Fleet`] for the running backend: enrollment through the
//! fleet CA, revocation everywhere it matters (store, ingest, TLS verifier,
//! live connections, `crl.pem`, WebSocket clients, audit log), metrics and
//! readiness.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use picket_api::{AgentReport, Fleet, FleetError, HuntUpload, HuntUploads, LiveEvent};
use picket_store::hunt::{Hunt, HuntDetail};
use picket_store::model::{AgentRecord, AuditEntry, Device, DeviceId};
use picket_store::rollout::{Rollout, RolloutAction, RolloutProgress, RolloutSpec, StoredBundle};
use picket_store::Store;
use tokio::sync::broadcast;

use crate::agents::AgentStreams;
use crate::enroll::{Decision, Enroller};
use crate::hunts::Hunts;
use crate::ingest::{now_ms, DeviceRegistry, IngestMetrics};
use crate::pki::{FleetCa, Revocations};
use crate::rollout::RolloutEngine;
use crate::tls_front::TlsFront;

/// The backend's fleet actions.
#[derive(Debug)]
pub struct BackendFleet {
    store: Arc<dyn Store>,
    ca: Arc<FleetCa>,
    revocations: Revocations,
    registry: Arc<DeviceRegistry>,
    metrics: Arc<IngestMetrics>,
    front: Option<TlsFront>,
    live: broadcast::Sender<LiveEvent>,
    enroller: Enroller,
    rollouts: Option<RolloutEngine>,
    agents: Option<AgentStreams>,
    https: Option<Arc<crate::https::HttpsStats>>,
    hunts: Option<Arc<Hunts>>,
}

impl BackendFleet {
    /// Wires the parts; `front` is `None` with an external broker.
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        ca: Arc<FleetCa>,
        revocations: Revocations,
        registry: Arc<DeviceRegistry>,
        metrics: Arc<IngestMetrics>,
        front: Option<TlsFront>,
        live: broadcast::Sender<LiveEvent>,
    ) -> Self {
        let enroller = Enroller::new(store.clone(), ca.clone());
        Self {
            store,
            ca,
            revocations,
            registry,
            metrics,
            front,
            live,
            enroller,
            rollouts: None,
            agents: None,
            https: None,
            hunts: None,
        }
    }

    /// With the rollout controller.
    #[must_use]
    pub fn with_rollouts(mut self, rollouts: Option<RolloutEngine>) -> Self {
        self.rollouts = rollouts;
        self
    }

    /// With the Windows/macOS agent streams.
    #[must_use]
    pub fn with_agents(mut self, agents: Option<AgentStreams>) -> Self {
        self.agents = agents;
        self
    }

    /// With the HTTPS listener's counters (`[http] tls` on).
    #[must_use]
    pub fn with_https(mut self, stats: Option<Arc<crate::https::HttpsStats>>) -> Self {
        self.https = stats;
        self
    }

    /// With hunting jobs.
    #[must_use]
    pub fn with_hunts(mut self, hunts: Option<Arc<Hunts>>) -> Self {
        self.hunts = hunts;
        self
    }

    fn hunts(&self) -> Result<&Hunts, FleetError> {
        self.hunts.as_deref().ok_or_else(|| {
            FleetError::Unavailable("hunting jobs are not available in this backend".into())
        })
    }

    /// The rollout controller (`None` when `bundles.controller` is off).
    #[must_use]
    pub fn rollouts(&self) -> Option<&RolloutEngine> {
        self.rollouts.as_ref()
    }

    fn engine(&self) -> Result<&RolloutEngine, FleetError> {
        self.rollouts.as_ref().ok_or_else(|| {
            FleetError::Unavailable(
                "this backend does not run the rollout controller (bundles.controller = false)"
                    .into(),
            )
        })
    }

    /// The fleet CA.
    #[must_use]
    pub fn ca(&self) -> &Arc<FleetCa> {
        &self.ca
    }

    /// Ingest's counters.
    #[must_use]
    pub fn ingest_metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    /// The device registry ingest checks payloads against.
    #[must_use]
    pub fn registry(&self) -> &Arc<DeviceRegistry> {
        &self.registry
    }

    /// The mTLS front, with the embedded broker.
    #[must_use]
    pub fn front(&self) -> Option<&TlsFront> {
        self.front.as_ref()
    }
}

#[async_trait]
impl Fleet for BackendFleet {
    async fn enroll(&self, request: &[u8]) -> Vec<u8> {
        let (device, decision) = self.enroller.decide(request, now_ms()).await;
        if matches!(decision, Decision::Accepted { .. }) {
            // Refused as unknown a moment ago, enrolled now.
            self.registry.forget_unknown(device);
            if let Ok(Some(d)) = self.store.device(&device.to_string()).await {
                let online = self.registry.is_online(device);
                let _ = self.live.send(LiveEvent::Device {
                    device: Box::new(d),
                    online,
                    change: "enrolled",
                });
            }
        }
        self.enroller.response_frame(device, &decision)
    }

    fn ca_pem(&self) -> String {
        self.ca.ca_pem().to_owned()
    }

    fn command_public_key(&self) -> [u8; 32] {
        self.ca.command_public_key()
    }

    async fn revoke(&self, device: &DeviceId, actor: &str) -> Result<Device, String> {
        let id = device
            .parse::<picket_proto::DeviceId>()
            .map_err(|_| format!("invalid device id {device:?}"))?;
        let at = now_ms();
        let d = self
            .store
            .revoke_device(device, at)
            .await
            .map_err(|e| e.to_string())?;
        // Payloads first (ingest), then new handshakes, then live connections.
        self.registry.revoke(id);
        self.revocations.revoke(id, Some(&d.cert_serial), at);
        let dropped = self.front.as_ref().map_or(0, |f| f.disconnect(&id));
        if let Err(e) = self.ca.write_crl(&self.revocations) {
            tracing::error!(error = %e, "rewriting crl.pem failed");
        }
        let _ = self
            .store
            .audit(&AuditEntry {
                id: 0,
                at_ms: at,
                actor: actor.to_owned(),
                action: "device.revoke".into(),
                target: device.clone(),
                detail: serde_json::json!({
                    "cert_serial": d.cert_serial,
                    "connections_dropped": dropped,
                }),
            })
            .await;
        let _ = self.live.send(LiveEvent::Device {
            device: Box::new(d.clone()),
            online: false,
            change: "revoked",
        });
        tracing::info!(device = %device, actor, dropped, "device revoked");
        Ok(d)
    }

    fn metrics(&self) -> String {
        let mut out = self.metrics.render();
        out.push_str(&format!(
            "# HELP picket_ingest_devices_online Devices online.\n\
             # TYPE picket_ingest_devices_online gauge\n\
             picket_ingest_devices_online {}\n",
            self.registry.online_count()
        ));
        if let Some(front) = &self.front {
            out.push_str(&front.metrics_text());
        }
        if let Some(r) = &self.rollouts {
            out.push_str(&r.metrics_text());
        }
        if let Some(a) = &self.agents {
            out.push_str(&a.metrics_text());
        }
        if let Some(h) = &self.https {
            out.push_str(&h.metrics_text());
        }
        out
    }

    fn ready(&self) -> bool {
        self.metrics.connected.load(Ordering::Relaxed)
    }

    async fn agent_lines(
        &self,
        agent: &AgentRecord,
        text: &str,
    ) -> Result<AgentReport, FleetError> {
        match &self.agents {
            Some(a) => a.lines(agent, text).await,
            None => Err(FleetError::Unavailable(
                "agent streams are not set up in this backend".into(),
            )),
        }
    }

    async fn push_bundle(&self, bytes: &[u8], actor: &str) -> Result<StoredBundle, FleetError> {
        self.engine()?.push_bundle(bytes, actor).await
    }

    async fn start_rollout(
        &self,
        version: u64,
        spec: RolloutSpec,
        actor: &str,
    ) -> Result<Rollout, FleetError> {
        self.engine()?.start_rollout(version, spec, actor).await
    }

    async fn rollout_action(
        &self,
        id: i64,
        action: RolloutAction,
        actor: &str,
    ) -> Result<Rollout, FleetError> {
        self.engine()?.action(id, action, actor).await
    }

    fn hunt_uploads(&self) -> Option<HuntUploads> {
        self.hunts.as_ref().map(|h| h.uploads())
    }

    async fn create_hunt(
        &self,
        name: &str,
        folder: &std::path::Path,
        files: Vec<HuntUpload>,
        actor: &str,
    ) -> Result<HuntDetail, FleetError> {
        self.hunts()?.create(name, folder, files, actor).await
    }

    async fn cancel_hunt(&self, id: i64) -> Result<Hunt, FleetError> {
        self.hunts()?.cancel(id).await
    }

    async fn delete_hunt(&self, id: i64) -> Result<Hunt, FleetError> {
        self.hunts()?.delete(id).await
    }

    async fn rollout_progress(&self, id: i64) -> Result<RolloutProgress, FleetError> {
        self.engine()?.progress(id).await
    }
}
