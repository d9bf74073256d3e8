//! The rollout controller: rule bundles from push to every device.
//!
//! ```text
//!  POST /bundles ─► check (format, signatures vs the fleet root, version) ─► store
//!  POST /rollouts ─► stages over the targeted devices (stable order) ──┐
//!                                                                     ▼
//!  tick ─► assign the stage ─► store ─► retained BundleAnnounce on each device's
//!    ▲                                  announce topic (signed, command key)
//!    │       device acks ◄─ picket/v1/devices/+/acks (verified, device key)
//!    │         Downloading{from} ─► chunks from `from` (QoS 1, signed per device)
//!    │         Verified / Active / Failed ─► store (batched)
//!    └─ thresholds: failures % of finished, alert rate since activation vs the
//!       devices not running it ─► pause or abort; healthy stage ─► next stage
//! ```
//!
//! **Targets and stages.** A rollout's devices are the enrolled, unrevoked
//! devices the bundle's manifest targets (by id or by the groups the
//! backend keeps per device), ordered by SHA-256 of the device id: the same
//! devices are the first ring of every rollout, and the order does not
//! depend on enrollment time. Stage *i* covers the first
//! `ceil(stages[i] % × targeted)` devices (at least one). A device enrolled
//! during a rollout falls into its place in that order.
//!
//! **Announcements are retained**, one per device topic, and published at
//! QoS 0 (never queued for an offline session), so a device that
//! reconnects after a week gets exactly one announcement: the newest
//! version assigned to it. Chunks are only sent when a device asks (its
//! `Downloading` acknowledgement carries how many leading chunks it has),
//! so an offline device never has old bundles queued for it. The embedded
//! broker keeps retained messages in memory: every assignment is announced
//! again whenever this controller (re)connects.
//!
//! **Thresholds** (the model is AWS IoT Jobs' abort criteria): once at
//! least `min_finished` assigned devices finished (active or failed), a
//! failure percentage above `max_failure_percent` trips; once the devices
//! that activated the bundle raised `min_alerts` alerts since, an alert rate
//! per device-hour above `max_alert_rate_ratio` × the rate of the targeted
//! devices not running it (those online now) trips (nothing to compare
//! with: no check). A trip
//! pauses or aborts (`on_threshold`); both are in the rollout's history and
//! the audit log (actor `rollout`). Alert counts come from the live stream
//! of stored alerts and start again at a restart.
//!
//! **Promotion**: a stage is healthy when `promote_at_percent` of its
//! devices run the bundle and `bake_secs` passed; with `auto_promote` the
//! next stage is assigned then, and after the last one the rollout is
//! completed. **Abort** takes the announcement back from devices that have
//! not activated the bundle (they are told their previous version again, or
//! the announcement is cleared). Devices that run it keep it: rollback
//! protection forbids going back to an older version, so undoing a bundle
//! is pushing its predecessor's rules as a new version
//! (`picketctl bundle build` with the old rules).
//!
//! A newer rollout supersedes an open one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use picket_api::{FleetError, LiveEvent};
use picket_bundle::{SignedBundle, SignedRoot, Target, TrustStore};
use picket_proto::ed25519_dalek::SigningKey;
use picket_proto::topic::{self, Channel};
use picket_proto::{BundleAnnounce, BundleChunk, BundleState, DeviceId, Frame, Message};
use picket_store::model::AuditEntry;
use picket_store::rollout::{
    AlertRateCheck, Assignment, BundleRule, BundleStateKind, DeviceBundleState, Rollout,
    RolloutAction, RolloutEvent, RolloutProgress, RolloutSpec, RolloutState, RolloutStatus,
    StoredBundle, ThresholdAction,
};
use picket_store::Store;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, Transport};
use sha2::Digest as _;
use tokio::sync::{broadcast, mpsc, watch};

use crate::ingest::{now_ms, DeviceRegistry, IngestSource, Lookup};

/// Bytes per chunk (the protocol's maximum).
pub const CHUNK_LEN: usize = picket_proto::MAX_BUNDLE_CHUNK_LEN;
/// Largest bundle accepted (what a device downloads).
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;
const ACTOR: &str = "rollout";
const MAX_FAILURES_LISTED: usize = 100;

/// A bundle file, ready to announce and send.
#[derive(Debug)]
struct BundleFile {
    bytes: Vec<u8>,
    announce: BundleAnnounce,
    /// Its manifest (targets), decoded once: the tick reads it every time.
    manifest: Option<picket_bundle::Manifest>,
}

impl BundleFile {
    fn new(version: u64, bytes: Vec<u8>) -> Self {
        let sha256: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let chunk_count = u32::try_from(bytes.len().div_ceil(CHUNK_LEN)).unwrap_or(u32::MAX);
        let manifest = SignedBundle::decode(&bytes)
            .ok()
            .and_then(|s| s.unverified_manifest().ok());
        Self {
            manifest,
            announce: BundleAnnounce {
                version,
                sha256,
                total_len: bytes.len() as u64,
                chunk_len: u32::try_from(CHUNK_LEN).unwrap_or(u32::MAX),
                chunk_count,
            },
            bytes,
        }
    }
}

/// What the publisher task sends.
#[derive(Debug)]
enum Outgoing {
    /// The retained announcement of `version` (0: clear it).
    Announce { device: DeviceId, version: u64 },
    /// Chunks of `version` from index `from`.
    Chunks {
        device: DeviceId,
        version: u64,
        from: u32,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RolloutMetrics {
    /// Acknowledgements accepted.
    pub acks: AtomicU64,
    /// Acknowledgements refused (unknown device, bad signature, bad frame).
    pub acks_refused: AtomicU64,
    /// Announcements published.
    pub announces: AtomicU64,
    /// Chunks published.
    pub chunks: AtomicU64,
    /// Thresholds tripped.
    pub trips: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    rollouts: Vec<Rollout>,
    assignments: HashMap<String, Assignment>,
    /// device → version → last state.
    states: HashMap<String, BTreeMap<u64, DeviceBundleState>>,
    /// device → (version, activated at, its alert count then).
    activated: HashMap<String, (u64, i64, u64)>,
    /// Alert counts at the start of the open rollout (or of this process).
    baseline: Option<(i64, i64, HashMap<String, u64>)>,
    /// The last evaluation of the open rollout, for progress.
    last_check: Option<(i64, Evaluation)>,
}

#[derive(Debug, Clone, Default)]
struct Evaluation {
    targeted: u64,
    stage_sizes: Vec<u64>,
    assigned: u64,
    states: BTreeMap<String, u64>,
    failure_percent: Option<f64>,
    alert_rate: Option<AlertRateCheck>,
    failures: Vec<DeviceBundleState>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    registry: Arc<DeviceRegistry>,
    command_key: SigningKey,
    root_file: PathBuf,
    out: mpsc::UnboundedSender<Outgoing>,
    state: tokio::sync::Mutex<State>,
    files: Mutex<HashMap<u64, Arc<BundleFile>>>,
    alert_counts: Mutex<HashMap<String, u64>>,
    state_writes: mpsc::UnboundedSender<DeviceBundleState>,
    metrics: RolloutMetrics,
}

/// The rollout controller; cheap to clone. See the module docs.
#[derive(Debug, Clone)]
pub struct RolloutEngine {
    inner: Arc<Inner>,
}

/// The tasks [`RolloutEngine::open`] leaves to the caller to spawn.
#[derive(Debug)]
pub struct RolloutTasks {
    out: mpsc::UnboundedReceiver<Outgoing>,
    state_writes: mpsc::UnboundedReceiver<DeviceBundleState>,
}

fn now_unix() -> u64 {
    u64::try_from(now_ms() / 1000).unwrap_or(0)
}

fn kind(s: BundleState) -> BundleStateKind {
    match s {
        BundleState::Pending => BundleStateKind::Pending,
        BundleState::Downloading => BundleStateKind::Downloading,
        BundleState::Verified => BundleStateKind::Verified,
        BundleState::Active => BundleStateKind::Active,
        BundleState::Failed => BundleStateKind::Failed,
    }
}

fn internal(e: impl std::fmt::Display) -> FleetError {
    FleetError::Internal(e.to_string())
}

/// Checks a rollout's settings; the message names the setting.
///
/// # Errors
/// What is wrong, for the operator.
pub fn check_spec(spec: &RolloutSpec) -> Result<(), String> {
    if spec.stages.is_empty() || spec.stages.len() > 20 {
        return Err("`stages` must list 1 to 20 cumulative percentages".into());
    }
    if spec.stages.iter().any(|p| !(1..=100).contains(p)) {
        return Err("`stages`: every percentage must be 1..=100".into());
    }
    if spec.stages.windows(2).any(|w| w[0] >= w[1]) {
        return Err("`stages` must be strictly ascending (cumulative percentages)".into());
    }
    if spec.stages.last() != Some(&100) {
        return Err("`stages` must end at 100".into());
    }
    if !(1..=100).contains(&spec.promote_at_percent) {
        return Err("`promote_at_percent` must be 1..=100".into());
    }
    if !(0.0..=100.0).contains(&spec.max_failure_percent) {
        return Err("`max_failure_percent` must be 0..=100".into());
    }
    if spec
        .max_alert_rate_ratio
        .is_some_and(|r| !r.is_finite() || r <= 0.0)
    {
        return Err("`max_alert_rate_ratio` must be a positive number or null".into());
    }
    if spec.bake_secs > 30 * 86_400 {
        return Err("`bake_secs` must be at most 30 days".into());
    }
    Ok(())
}

/// Stable rollout order key of a device.
fn order_key(device: &str) -> [u8; 32] {
    sha2::Sha256::digest(device.as_bytes()).into()
}

/// Devices in a cumulative stage of `percent` out of `n`.
fn stage_size(percent: u8, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    (n * usize::from(percent)).div_ceil(100).clamp(1, n)
}

/// The rules a bundle carries, as listed (a rule that does not parse is
/// listed by file with its error as title; devices refuse such a bundle).
fn rule_summary(files: &BTreeMap<String, Vec<u8>>) -> Vec<BundleRule> {
    let mut out = Vec::new();
    for (path, bytes) in files {
        if !picket_rules::RULE_EXTENSIONS
            .iter()
            .any(|e| path.ends_with(&format!(".{e}")))
        {
            continue;
        }
        let text = String::from_utf8_lossy(bytes);
        let loaded = picket_rules::RuleSet::from_sources(
            [(PathBuf::from(path), text.as_ref())],
            &picket_rules::EngineConfig::default(),
        );
        for r in loaded.rules.rules() {
            out.push(BundleRule {
                id: r.id.clone().unwrap_or_default(),
                title: r.title.clone(),
                level: r.level.map(|l| l.to_string()).unwrap_or_default(),
                path: path.clone(),
                techniques: r.techniques.clone(),
            });
        }
        for e in &loaded.errors {
            out.push(BundleRule {
                id: String::new(),
                title: format!("does not compile: {e}"),
                level: String::new(),
                path: path.clone(),
                techniques: Vec::new(),
            });
        }
    }
    out
}

impl RolloutEngine {
    /// Loads bundles, rollouts, assignments and device states from the
    /// store.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn open(
        store: Arc<dyn Store>,
        registry: Arc<DeviceRegistry>,
        command_key: SigningKey,
        root_file: PathBuf,
    ) -> Result<(Self, RolloutTasks), picket_store::StoreError> {
        let mut state = State {
            rollouts: store.rollouts().await?,
            ..State::default()
        };
        for a in store.assignments().await? {
            state.assignments.insert(a.device_id.clone(), a);
        }
        for s in store.bundle_states(None, None).await? {
            state
                .states
                .entry(s.device_id.clone())
                .or_default()
                .insert(s.version, s);
        }
        let (out_tx, out) = mpsc::unbounded_channel();
        let (writes_tx, state_writes) = mpsc::unbounded_channel();
        let engine = Self {
            inner: Arc::new(Inner {
                store,
                registry,
                command_key,
                root_file,
                out: out_tx,
                state: tokio::sync::Mutex::new(state),
                files: Mutex::new(HashMap::new()),
                alert_counts: Mutex::new(HashMap::new()),
                state_writes: writes_tx,
                metrics: RolloutMetrics::default(),
            }),
        };
        Ok((engine, RolloutTasks { out, state_writes }))
    }

    /// The controller's counters.
    #[must_use]
    pub fn metrics(&self) -> &RolloutMetrics {
        &self.inner.metrics
    }

    /// Prometheus text of [`Self::metrics`].
    #[must_use]
    pub fn metrics_text(&self) -> String {
        let m = &self.inner.metrics;
        let mut out = String::new();
        for (name, help, v) in [
            (
                "picket_rollout_acks_total",
                "Bundle acknowledgements accepted.",
                &m.acks,
            ),
            (
                "picket_rollout_acks_refused_total",
                "Bundle acknowledgements refused (unknown device, bad frame or signature).",
                &m.acks_refused,
            ),
            (
                "picket_rollout_announces_total",
                "Bundle announcements published.",
                &m.announces,
            ),
            (
                "picket_rollout_chunks_total",
                "Bundle chunks published.",
                &m.chunks,
            ),
            (
                "picket_rollout_trips_total",
                "Rollout thresholds crossed.",
                &m.trips,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }

    fn file(&self, version: u64, bytes: Option<Vec<u8>>) -> Option<Arc<BundleFile>> {
        let mut files = self
            .inner
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = files.get(&version) {
            return Some(f.clone());
        }
        let f = Arc::new(BundleFile::new(version, bytes?));
        files.insert(version, f.clone());
        Some(f)
    }

    async fn load_file(&self, version: u64) -> Result<Option<Arc<BundleFile>>, FleetError> {
        if let Some(f) = self.file(version, None) {
            return Ok(Some(f));
        }
        let bytes = self
            .inner
            .store
            .bundle_bytes(version)
            .await
            .map_err(internal)?;
        Ok(bytes.and_then(|b| self.file(version, Some(b))))
    }

    async fn audit(&self, actor: &str, action: &str, target: String, detail: serde_json::Value) {
        let entry = AuditEntry {
            id: 0,
            at_ms: now_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target,
            detail,
        };
        if let Err(e) = self.inner.store.audit(&entry).await {
            tracing::error!(error = %e, action, "writing the audit log failed");
        }
    }

    /// Checks and keeps a pushed bundle: it must decode, carry enough valid
    /// signatures of the fleet root's bundle keys, not be expired, and be
    /// newer than every bundle pushed before.
    ///
    /// # Errors
    /// [`FleetError::BadRequest`] naming the check that failed,
    /// [`FleetError::Conflict`] for a version not newer,
    /// [`FleetError::Unavailable`] without a fleet root.
    pub async fn push_bundle(&self, bytes: &[u8], actor: &str) -> Result<StoredBundle, FleetError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(FleetError::BadRequest(format!(
                "bundle is {} bytes; at most {MAX_BUNDLE_BYTES}",
                bytes.len()
            )));
        }
        let root_bytes = std::fs::read(&self.inner.root_file).map_err(|e| {
            FleetError::Unavailable(format!(
                "no fleet root to check bundles against: {} ({e}); put the root metadata \
                 (`picketctl root init`) there, see [bundles] root_file",
                self.inner.root_file.display()
            ))
        })?;
        let root = SignedRoot::decode(&root_bytes).map_err(|e| {
            FleetError::Unavailable(format!(
                "the fleet root {} is unreadable: {e}",
                self.inner.root_file.display()
            ))
        })?;
        let trust = TrustStore::new(root, None).map_err(|e| {
            FleetError::Unavailable(format!(
                "the fleet root {} does not verify: {e}",
                self.inner.root_file.display()
            ))
        })?;
        let signed = SignedBundle::decode(bytes)
            .map_err(|e| FleetError::BadRequest(format!("not a signed bundle: {e}")))?;
        let verified = trust
            .verify_any_target(&signed, now_unix())
            .map_err(|e| FleetError::BadRequest(format!("bundle refused: {e}")))?;
        let manifest = verified.manifest().clone();
        if manifest.version > i64::MAX as u64 {
            return Err(FleetError::BadRequest(format!(
                "bundle version {} is too large",
                manifest.version
            )));
        }
        let existing = self.inner.store.bundles().await.map_err(internal)?;
        if let Some(newest) = existing.first() {
            if manifest.version <= newest.version {
                return Err(FleetError::Conflict(format!(
                    "bundle version {} is not newer than the newest pushed ({}): devices refuse \
                     older versions",
                    manifest.version, newest.version
                )));
            }
        }
        let stored = StoredBundle {
            version: manifest.version,
            sha256: crate::hex(&sha2::Sha256::digest(bytes)),
            size: bytes.len() as u64,
            created_unix: manifest.created_unix,
            expires_unix: manifest.expires_unix,
            targets: serde_json::Value::Array(
                manifest
                    .targets
                    .iter()
                    .map(|t| match t {
                        Target::All => serde_json::json!("all"),
                        Target::Group(g) => serde_json::json!({ "group": g }),
                        Target::Device(d) => serde_json::json!({ "device": d }),
                    })
                    .collect(),
            ),
            rules: rule_summary(verified.files()),
            signers: verified.signers().iter().map(ToString::to_string).collect(),
            uploaded_by: actor.to_owned(),
            uploaded_ms: now_ms(),
        };
        self.inner
            .store
            .insert_bundle(&stored, bytes)
            .await
            .map_err(|e| match e {
                picket_store::StoreError::Conflict { .. } => FleetError::Conflict(format!(
                    "bundle version {} was pushed already",
                    stored.version
                )),
                e => internal(e),
            })?;
        let _ = self.file(stored.version, Some(bytes.to_vec()));
        tracing::info!(
            version = stored.version,
            bytes = stored.size,
            actor,
            "rule bundle pushed"
        );
        Ok(stored)
    }

    /// Starts a rollout; an open one of an older version is superseded.
    ///
    /// # Errors
    /// Unknown version, bad settings, or a version not newer than an
    /// existing rollout's.
    pub async fn start_rollout(
        &self,
        version: u64,
        spec: RolloutSpec,
        actor: &str,
    ) -> Result<Rollout, FleetError> {
        check_spec(&spec).map_err(FleetError::BadRequest)?;
        if self.load_file(version).await?.is_none() {
            return Err(FleetError::NotFound(format!(
                "bundle {version} not found: push it first"
            )));
        }
        let now = now_ms();
        let mut st = self.inner.state.lock().await;
        if let Some(newest) = st.rollouts.iter().map(|r| r.version).max() {
            if version <= newest {
                return Err(FleetError::Conflict(format!(
                    "a rollout of bundle {newest} exists; a new rollout needs a newer bundle"
                )));
            }
        }
        for old in st.rollouts.iter_mut().filter(|r| r.state.is_open()) {
            old.state = RolloutState::Superseded;
            old.updated_ms = now;
            old.status.history.push(RolloutEvent {
                at_ms: now,
                actor: actor.to_owned(),
                action: "superseded".into(),
                detail: format!("by a rollout of bundle {version}"),
            });
            self.inner.store.save_rollout(old).await.map_err(internal)?;
        }
        let mut rollout = Rollout {
            id: 0,
            version,
            state: RolloutState::Running,
            spec,
            status: RolloutStatus {
                stage: 0,
                stage_started_ms: now,
                reason: None,
                history: vec![RolloutEvent {
                    at_ms: now,
                    actor: actor.to_owned(),
                    action: "created".into(),
                    detail: String::new(),
                }],
            },
            created_by: actor.to_owned(),
            created_ms: now,
            updated_ms: now,
        };
        rollout.id = self
            .inner
            .store
            .save_rollout(&rollout)
            .await
            .map_err(internal)?;
        st.rollouts.insert(0, rollout.clone());
        st.baseline = Some((rollout.id, now, self.alert_snapshot()));
        st.last_check = None;
        // assign the first stage now rather than at the next tick
        self.evaluate(&mut st, now).await?;
        let rollout = st
            .rollouts
            .iter()
            .find(|r| r.id == rollout.id)
            .cloned()
            .ok_or_else(|| internal("rollout vanished"))?;
        tracing::info!(id = rollout.id, version, actor, "rollout started");
        Ok(rollout)
    }

    /// Pause, resume, promote or abort.
    ///
    /// # Errors
    /// Unknown rollout, or an action its state does not allow.
    pub async fn action(
        &self,
        id: i64,
        action: RolloutAction,
        actor: &str,
    ) -> Result<Rollout, FleetError> {
        let now = now_ms();
        let mut st = self.inner.state.lock().await;
        let idx = st
            .rollouts
            .iter()
            .position(|r| r.id == id)
            .ok_or_else(|| FleetError::NotFound(format!("rollout {id} not found")))?;
        let state = st.rollouts[idx].state;
        if !state.is_open() {
            return Err(FleetError::Conflict(format!(
                "rollout {id} is {}: nothing to {}",
                state.as_str(),
                action.as_str()
            )));
        }
        match action {
            RolloutAction::Pause => {
                if state == RolloutState::Paused {
                    return Err(FleetError::Conflict(format!(
                        "rollout {id} is paused already"
                    )));
                }
                let r = &mut st.rollouts[idx];
                r.state = RolloutState::Paused;
                r.status.reason = Some(format!("paused by {actor}"));
                push_event(r, now, actor, "paused", String::new());
            }
            RolloutAction::Resume => {
                if state == RolloutState::Running {
                    return Err(FleetError::Conflict(format!(
                        "rollout {id} is running already"
                    )));
                }
                let r = &mut st.rollouts[idx];
                r.state = RolloutState::Running;
                r.status.reason = None;
                push_event(r, now, actor, "resumed", String::new());
            }
            RolloutAction::Promote => {
                let r = &mut st.rollouts[idx];
                let last = r.spec.stages.len() - 1;
                if r.status.stage >= last {
                    return Err(FleetError::Conflict(format!(
                        "rollout {id} is at its last stage ({} %)",
                        r.spec.stages[last]
                    )));
                }
                r.status.stage += 1;
                r.status.stage_started_ms = now;
                r.state = RolloutState::Running;
                r.status.reason = None;
                let detail = format!(
                    "stage {} ({} %)",
                    r.status.stage + 1,
                    r.spec.stages[r.status.stage]
                );
                push_event(r, now, actor, "promoted", detail);
            }
            RolloutAction::Abort => {
                self.abort(&mut st, idx, now, actor, format!("aborted by {actor}"))
                    .await?;
            }
        }
        let r = st.rollouts[idx].clone();
        self.save(&r).await?;
        if r.state == RolloutState::Running {
            self.evaluate(&mut st, now).await?;
        }
        let r = st.rollouts[idx].clone();
        tracing::info!(
            id,
            action = action.as_str(),
            actor,
            state = r.state.as_str(),
            "rollout action"
        );
        Ok(r)
    }

    async fn save(&self, r: &Rollout) -> Result<(), FleetError> {
        self.inner
            .store
            .save_rollout(r)
            .await
            .map(drop)
            .map_err(internal)
    }

    /// Stops rollout `idx` and takes its announcement back from devices
    /// that have not activated it.
    async fn abort(
        &self,
        st: &mut State,
        idx: usize,
        now: i64,
        actor: &str,
        reason: String,
    ) -> Result<(), FleetError> {
        let (id, version) = (st.rollouts[idx].id, st.rollouts[idx].version);
        let mut reverted = Vec::new();
        for a in st.assignments.values() {
            if a.rollout_id != id || a.version != version {
                continue;
            }
            let active = st
                .states
                .get(&a.device_id)
                .and_then(|m| m.get(&version))
                .is_some_and(|s| s.state == BundleStateKind::Active);
            if !active {
                reverted.push(Assignment {
                    device_id: a.device_id.clone(),
                    version: a.previous_version.unwrap_or(0),
                    rollout_id: id,
                    previous_version: None,
                    assigned_ms: now,
                });
            }
        }
        self.inner
            .store
            .assign_bundles(&reverted)
            .await
            .map_err(internal)?;
        for a in &reverted {
            if a.version == 0 {
                st.assignments.remove(&a.device_id);
            } else {
                st.assignments.insert(a.device_id.clone(), a.clone());
            }
            if let Ok(d) = a.device_id.parse::<DeviceId>() {
                let _ = self.inner.out.send(Outgoing::Announce {
                    device: d,
                    version: a.version,
                });
            }
        }
        let r = &mut st.rollouts[idx];
        r.state = RolloutState::Aborted;
        r.status.reason = Some(reason.clone());
        push_event(
            r,
            now,
            actor,
            "aborted",
            format!(
                "{reason}; {} devices told to keep their previous bundle",
                reverted.len()
            ),
        );
        Ok(())
    }

    /// A rollout with its device counts.
    ///
    /// # Errors
    /// Unknown rollout.
    pub async fn progress(&self, id: i64) -> Result<RolloutProgress, FleetError> {
        let mut st = self.inner.state.lock().await;
        let rollout = st
            .rollouts
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| FleetError::NotFound(format!("rollout {id} not found")))?;
        let eval = match &st.last_check {
            // the tick keeps a running rollout's counts fresh; anything else
            // (paused, finished) is counted now
            Some((rid, e)) if *rid == id && rollout.state == RolloutState::Running => e.clone(),
            _ => {
                let targeted = self.targeted(rollout.version).await?;
                self.measure(&mut st, &rollout, &targeted, now_ms())
            }
        };
        Ok(RolloutProgress {
            rollout,
            targeted: eval.targeted,
            stage_sizes: eval.stage_sizes,
            assigned: eval.assigned,
            states: eval.states,
            failure_percent: eval.failure_percent,
            alert_rate: eval.alert_rate,
            failures: eval.failures,
        })
    }

    /// The devices a bundle version targets, in rollout order.
    async fn targeted(&self, version: u64) -> Result<Vec<String>, FleetError> {
        let store = &self.inner.store;
        let file = self.load_file(version).await?;
        let manifest = file.as_ref().and_then(|f| f.manifest.as_ref());
        let devices = store.devices().await.map_err(internal)?;
        let groups = store.device_groups().await.map_err(internal)?;
        let mut out: Vec<([u8; 32], String)> = devices
            .into_iter()
            .filter(|d| d.revoked_ms.is_none())
            // Bundles are for appliances (picketd over MQTT); Windows and
            // macOS agents are evaluated at the backend with its agent rules
            // and would never acknowledge.
            .filter(|d| d.platform == picket_store::model::PLATFORM_LINUX)
            .filter(|d| {
                let g: Vec<&str> = groups
                    .get(&d.id)
                    .map(|v| v.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                manifest
                    .as_ref()
                    .is_some_and(|m| m.targets_device(&d.id, &g))
            })
            .map(|d| (order_key(&d.id), d.id))
            .collect();
        out.sort_unstable();
        Ok(out.into_iter().map(|(_, d)| d).collect())
    }

    fn is_online(&self, device: &str) -> bool {
        device
            .parse::<DeviceId>()
            .is_ok_and(|d| self.inner.registry.is_online(d))
    }

    fn alert_snapshot(&self) -> HashMap<String, u64> {
        self.inner
            .alert_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Counts a rollout's devices (no side effects but the baseline).
    fn measure(&self, st: &mut State, r: &Rollout, targeted: &[String], now: i64) -> Evaluation {
        let n = targeted.len();
        let stage_sizes: Vec<u64> = r
            .spec
            .stages
            .iter()
            .map(|p| stage_size(*p, n) as u64)
            .collect();
        let mut states: BTreeMap<String, u64> = BTreeMap::new();
        let mut failures = Vec::new();
        let mut assigned = 0_u64;
        for d in targeted {
            let Some(a) = st.assignments.get(d) else {
                continue;
            };
            if a.version != r.version {
                continue;
            }
            assigned += 1;
            let s = st.states.get(d).and_then(|m| m.get(&r.version));
            let k = s.map_or(BundleStateKind::Pending, |s| s.state);
            *states.entry(k.as_str().to_owned()).or_default() += 1;
            if let (BundleStateKind::Failed, Some(s)) = (k, s) {
                if failures.len() < MAX_FAILURES_LISTED {
                    failures.push(s.clone());
                }
            }
        }
        let active = states.get("active").copied().unwrap_or(0);
        let failed = states.get("failed").copied().unwrap_or(0);
        let failure_percent =
            (active + failed > 0).then(|| failed as f64 * 100.0 / (active + failed) as f64);

        // alert rate since activation vs the targeted devices not running it
        let counts = self.alert_snapshot();
        let (since, base) = match &st.baseline {
            Some((id, since, base)) if *id == r.id => (*since, base.clone()),
            _ if r.state.is_open() => {
                // after a restart: measure from now on
                st.baseline = Some((r.id, now, counts.clone()));
                (now, counts.clone())
            }
            _ => (now, counts.clone()),
        };
        let (mut act_alerts, mut act_ms, mut other_alerts, mut other_ms) =
            (0_u64, 0_i64, 0_u64, 0_i64);
        for d in targeted {
            let c = counts.get(d).copied().unwrap_or(0);
            match st.activated.get(d) {
                Some((v, at, c0)) if *v == r.version => {
                    act_alerts += c.saturating_sub(*c0);
                    act_ms += now.saturating_sub((*at).max(since));
                }
                // only devices that are online compare: an offline one
                // raises nothing and would make any rate look high
                _ if self.is_online(d) => {
                    other_alerts += c.saturating_sub(base.get(d).copied().unwrap_or(0));
                    other_ms += now.saturating_sub(since);
                }
                _ => {}
            }
        }
        let per_hour = |alerts: u64, ms: i64| {
            if ms <= 0 {
                0.0
            } else {
                alerts as f64 * 3_600_000.0 / ms as f64
            }
        };
        let alert_rate = (act_ms > 0).then(|| {
            let a = per_hour(act_alerts, act_ms);
            let o = per_hour(other_alerts, other_ms);
            AlertRateCheck {
                activated_alerts: act_alerts,
                activated_per_device_hour: a,
                others_per_device_hour: o,
                ratio: (other_ms > 0).then(|| if o > 0.0 { a / o } else { f64::INFINITY }),
            }
        });
        Evaluation {
            targeted: n as u64,
            stage_sizes,
            assigned,
            states,
            failure_percent,
            alert_rate,
            failures,
        }
    }

    /// One evaluation of the open rollout: assign its stage, check its
    /// thresholds, promote or complete it.
    async fn evaluate(&self, st: &mut State, now: i64) -> Result<(), FleetError> {
        let Some(idx) = st
            .rollouts
            .iter()
            .position(|r| r.state == RolloutState::Running)
        else {
            return Ok(());
        };
        let r = st.rollouts[idx].clone();
        let targeted = self.targeted(r.version).await?;
        let stage = r.status.stage.min(r.spec.stages.len() - 1);
        let cutoff = stage_size(r.spec.stages[stage], targeted.len());

        // assign the stage
        let mut new = Vec::new();
        for d in &targeted[..cutoff] {
            let current = st.assignments.get(d);
            if current.is_some_and(|a| a.version >= r.version) {
                continue;
            }
            new.push(Assignment {
                device_id: d.clone(),
                version: r.version,
                rollout_id: r.id,
                previous_version: current.map(|a| a.version),
                assigned_ms: now,
            });
        }
        if !new.is_empty() {
            self.inner
                .store
                .assign_bundles(&new)
                .await
                .map_err(internal)?;
            for a in new {
                if let Ok(d) = a.device_id.parse::<DeviceId>() {
                    let _ = self.inner.out.send(Outgoing::Announce {
                        device: d,
                        version: a.version,
                    });
                }
                st.assignments.insert(a.device_id.clone(), a);
            }
        }

        let eval = self.measure(st, &r, &targeted, now);
        let spec = &r.spec;
        let active = eval.states.get("active").copied().unwrap_or(0);
        let failed = eval.states.get("failed").copied().unwrap_or(0);
        let mut trip = None;
        if active + failed >= u64::from(spec.min_finished) {
            if let Some(p) = eval.failure_percent {
                if p > spec.max_failure_percent {
                    trip = Some(format!(
                        "{failed} of {} finished devices failed ({p:.1} % > {} %)",
                        active + failed,
                        spec.max_failure_percent
                    ));
                }
            }
        }
        if trip.is_none() {
            if let (Some(max), Some(a)) = (spec.max_alert_rate_ratio, &eval.alert_rate) {
                if a.activated_alerts >= spec.min_alerts {
                    if let Some(ratio) = a.ratio.filter(|x| *x > max) {
                        trip = Some(format!(
                            "alert rate since activation {:.1}/device-hour is {} the rate of the \
                             devices not running it ({:.1}/device-hour; limit {max}×)",
                            a.activated_per_device_hour,
                            if ratio.is_finite() {
                                format!("{ratio:.1}×")
                            } else {
                                "far above".to_owned()
                            },
                            a.others_per_device_hour
                        ));
                    }
                }
            }
        }
        st.last_check = Some((r.id, eval.clone()));
        if let Some(reason) = trip {
            self.inner.metrics.trips.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(id = r.id, version = r.version, %reason, "rollout threshold crossed");
            let action = match spec.on_threshold {
                ThresholdAction::Pause => {
                    let x = &mut st.rollouts[idx];
                    x.state = RolloutState::Paused;
                    x.status.reason = Some(reason.clone());
                    push_event(x, now, ACTOR, "paused", reason.clone());
                    "rollout.pause"
                }
                ThresholdAction::Abort => {
                    self.abort(st, idx, now, ACTOR, reason.clone()).await?;
                    "rollout.abort"
                }
            };
            let x = st.rollouts[idx].clone();
            self.save(&x).await?;
            self.audit(
                ACTOR,
                action,
                r.id.to_string(),
                serde_json::json!({ "version": r.version, "reason": reason, "stage": stage }),
            )
            .await;
            return Ok(());
        }

        // promotion
        let stage_devices = eval.stage_sizes.get(stage).copied().unwrap_or(0);
        let healthy = stage_devices > 0
            && active * 100 >= stage_devices * u64::from(spec.promote_at_percent)
            && now.saturating_sub(r.status.stage_started_ms)
                >= i64::try_from(spec.bake_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        if !healthy {
            return Ok(());
        }
        let last = spec.stages.len() - 1;
        if stage >= last {
            let x = &mut st.rollouts[idx];
            x.state = RolloutState::Completed;
            push_event(
                x,
                now,
                ACTOR,
                "completed",
                format!(
                    "{active} of {} devices run bundle {}",
                    eval.targeted, r.version
                ),
            );
        } else if spec.auto_promote {
            let x = &mut st.rollouts[idx];
            x.status.stage = stage + 1;
            x.status.stage_started_ms = now;
            let detail = format!("stage {} ({} %)", stage + 2, spec.stages[stage + 1]);
            push_event(x, now, ACTOR, "stage", detail);
        } else {
            return Ok(());
        }
        let x = st.rollouts[idx].clone();
        self.save(&x).await
    }

    /// One acknowledgement frame from `picket/v1/devices/{id}/acks`.
    pub async fn on_ack(&self, topic_name: &str, payload: &[u8]) {
        let refuse = |why: String| {
            self.inner
                .metrics
                .acks_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(topic = topic_name, "bundle acknowledgement refused: {why}");
        };
        let Some((device, Channel::Acks)) = topic::parse(topic_name) else {
            return refuse("not an acks topic".into());
        };
        let key = match self.inner.registry.lookup(device).await {
            Lookup::Active(k) => k,
            Lookup::Revoked => return refuse("device revoked".into()),
            Lookup::Unknown => return refuse("device not enrolled".into()),
        };
        let frame = match Frame::decode_exact(payload) {
            Ok(f) => f,
            Err(e) => return refuse(e.to_string()),
        };
        let ack = match frame.open_for(device, &key) {
            Ok(Message::BundleAck(a)) => a,
            Ok(_) => return refuse("not a BundleAck".into()),
            Err(e) => return refuse(e.to_string()),
        };
        self.inner.metrics.acks.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let id = device.to_string();
        let s = DeviceBundleState {
            device_id: id.clone(),
            version: ack.version,
            state: kind(ack.state),
            chunks_received: ack.chunks_received,
            error: ack.error.map(|e| e.as_str().to_owned()),
            updated_ms: now,
        };
        let mut st = self.inner.state.lock().await;
        let assigned = st.assignments.get(&id).map(|a| a.version);
        if s.state == BundleStateKind::Downloading && assigned == Some(ack.version) {
            let _ = self.inner.out.send(Outgoing::Chunks {
                device,
                version: ack.version,
                from: ack.chunks_received,
            });
        }
        if s.state == BundleStateKind::Active {
            let c = self
                .inner
                .alert_counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&id)
                .copied()
                .unwrap_or(0);
            let fresh = st
                .activated
                .get(&id)
                .is_none_or(|(v, _, _)| *v != ack.version);
            if fresh {
                st.activated.insert(id.clone(), (ack.version, now, c));
            }
        }
        if let Some(e) = &s.error {
            tracing::info!(device = %id, version = ack.version, error = %e, "device refused a bundle");
        }
        st.states
            .entry(id)
            .or_default()
            .insert(ack.version, s.clone());
        drop(st);
        let _ = self.inner.state_writes.send(s);
    }

    /// Counts stored alerts per device (the alert-rate check).
    fn count_alert(&self, device: &str) {
        *self
            .inner
            .alert_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(device.to_owned())
            .or_default() += 1;
    }

    /// Runs the controller until `shutdown`: the MQTT connection (acks in,
    /// announcements and chunks out), the evaluation tick, the state writer
    /// and the alert counter.
    pub async fn run(
        self,
        tasks: RolloutTasks,
        source: IngestSource,
        tick: Duration,
        live: broadcast::Receiver<LiveEvent>,
        shutdown: watch::Receiver<bool>,
    ) {
        let RolloutTasks { out, state_writes } = tasks;
        let mut set = tokio::task::JoinSet::new();
        set.spawn(self.clone().state_writer(state_writes, shutdown.clone()));
        set.spawn(self.clone().alert_counter(live, shutdown.clone()));
        set.spawn(self.clone().ticker(tick, shutdown.clone()));
        set.spawn(self.clone().mqtt(out, source, shutdown));
        while set.join_next().await.is_some() {}
    }

    async fn state_writer(
        self,
        mut rx: mpsc::UnboundedReceiver<DeviceBundleState>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let first = tokio::select! {
                s = rx.recv() => s,
                _ = shutdown.wait_for(|s| *s) => None,
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.inner.store.record_bundle_states(&batch).await {
                tracing::error!(error = %e, n = batch.len(), "recording bundle states failed");
            }
        }
    }

    async fn alert_counter(
        self,
        mut live: broadcast::Receiver<LiveEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let ev = tokio::select! {
                ev = live.recv() => ev,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match ev {
                Ok(LiveEvent::Alert(a)) => self.count_alert(&a.alert.device_id),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "rollout alert counter lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn ticker(self, tick: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let mut st = self.inner.state.lock().await;
            if let Err(e) = self.evaluate(&mut st, now_ms()).await {
                tracing::warn!(error = %e, "rollout evaluation failed");
            }
        }
    }

    async fn announce_all(&self) {
        let st = self.inner.state.lock().await;
        for a in st.assignments.values() {
            if let Ok(d) = a.device_id.parse::<DeviceId>() {
                let _ = self.inner.out.send(Outgoing::Announce {
                    device: d,
                    version: a.version,
                });
            }
        }
    }

    fn sign(&self, msg: &Message<'_>, device: DeviceId) -> Option<Vec<u8>> {
        match picket_proto::encode_frame_to_vec(msg, device, &self.inner.command_key) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(%device, "cannot encode a bundle frame: {e}");
                None
            }
        }
    }

    async fn publish_one(&self, client: &AsyncClient, o: Outgoing) {
        match o {
            Outgoing::Announce { device, version } => {
                let t = topic::topic(device, Channel::BundleAnnounce).to_string();
                let payload = if version == 0 {
                    Vec::new()
                } else {
                    let Ok(Some(f)) = self.load_file(version).await else {
                        tracing::error!(version, "bundle to announce is not stored");
                        return;
                    };
                    let Some(p) = self.sign(&Message::BundleAnnounce(f.announce), device) else {
                        return;
                    };
                    p
                };
                // QoS 0: a broker queues QoS 1 messages for an offline
                // persistent session, which would hand a returning device
                // every announcement it missed; a retained QoS 0 message
                // reaches it once, the newest, when it subscribes again.
                if client
                    .publish(t, QoS::AtMostOnce, true, payload)
                    .await
                    .is_ok()
                {
                    self.inner.metrics.announces.fetch_add(1, Ordering::Relaxed);
                }
            }
            Outgoing::Chunks {
                device,
                version,
                from,
            } => {
                let Ok(Some(f)) = self.load_file(version).await else {
                    return;
                };
                let t = topic::topic(device, Channel::BundleChunks).to_string();
                for (i, data) in f.bytes.chunks(CHUNK_LEN).enumerate().skip(from as usize) {
                    let Ok(data) = picket_proto::BoundedBytes::new(data) else {
                        return;
                    };
                    let msg = Message::BundleChunk(BundleChunk {
                        version,
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        data,
                    });
                    let Some(p) = self.sign(&msg, device) else {
                        return;
                    };
                    if client
                        .publish(t.clone(), QoS::AtLeastOnce, false, p)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    self.inner.metrics.chunks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn mqtt(
        self,
        mut out: mpsc::UnboundedReceiver<Outgoing>,
        source: IngestSource,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut options = MqttOptions::new(
            format!("picket-rollout-{}", &source.client_id),
            source.host.clone(),
            source.port,
        );
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        options.set_max_packet_size(source.max_packet_bytes, source.max_packet_bytes);
        if let Some(tls) = &source.tls {
            options.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let filter = format!("{}/+/{}", topic::DEVICES, Channel::Acks.suffix());
        let publisher = {
            let engine = self.clone();
            let client = client.clone();
            tokio::spawn(async move {
                while let Some(o) = out.recv().await {
                    engine.publish_one(&client, o).await;
                }
            })
        };
        loop {
            let ev = tokio::select! {
                ev = eventloop.poll() => ev,
                _ = shutdown.wait_for(|s| *s) => break,
            };
            match ev {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    if let Err(e) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                        tracing::warn!(error = %e, "rollout subscribe failed");
                    }
                    tracing::info!("rollout controller connected");
                    self.announce_all().await;
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    self.on_ack(&p.topic, &p.payload).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "rollout controller disconnected; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.wait_for(|s| *s) => break,
                    }
                }
            }
        }
        publisher.abort();
        let _ = client.disconnect().await;
    }
}

fn push_event(r: &mut Rollout, now: i64, actor: &str, action: &str, detail: String) {
    r.updated_ms = now;
    r.status.history.push(RolloutEvent {
        at_ms: now,
        actor: actor.to_owned(),
        action: action.to_owned(),
        detail,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_cover_at_least_one_device_and_all_at_100() {
        assert_eq!(stage_size(1, 0), 0);
        assert_eq!(stage_size(1, 10), 1);
        assert_eq!(stage_size(10, 100), 10);
        assert_eq!(stage_size(15, 10), 2);
        assert_eq!(stage_size(100, 7), 7);
    }

    #[test]
    fn spec_checks_name_the_setting() {
        let ok = RolloutSpec {
            stages: vec![1, 10, 100],
            ..RolloutSpec::default()
        };
        assert!(check_spec(&ok).is_ok());
        for (stages, word) in [
            (vec![], "stages"),
            (vec![10, 5, 100], "ascending"),
            (vec![10, 50], "end at 100"),
            (vec![0, 100], "1..=100"),
        ] {
            let e = check_spec(&RolloutSpec {
                stages,
                ..RolloutSpec::default()
            })
            .unwrap_err();
            assert!(e.contains(word), "{e}");
        }
        let e = check_spec(&RolloutSpec {
            max_alert_rate_ratio: Some(-1.0),
            ..RolloutSpec::default()
        })
        .unwrap_err();
        assert!(e.contains("max_alert_rate_ratio"), "{e}");
    }

    #[test]
    fn rollout_order_is_stable_and_not_enrollment_order() {
        let mut a = ["d1", "d2", "d3", "d4"].map(|d| (order_key(d), d));
        a.sort_unstable();
        let mut b = ["d4", "d3", "d2", "d1"].map(|d| (order_key(d), d));
        b.sort_unstable();
        assert_eq!(a, b);
    }
}
