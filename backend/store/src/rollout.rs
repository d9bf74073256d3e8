//! Rule bundles, rollouts and every device's state for them: what the
//! backend keeps so a push survives a restart and the rules page can show
//! where a rollout stands.
//!
//! - [`StoredBundle`]: a signed bundle as pushed (its bytes are kept apart,
//!   [`crate::Store::bundle_bytes`]), with the summary the API lists.
//! - [`Rollout`]: one bundle version going out in stages
//!   ([`RolloutSpec`]), its state and history ([`RolloutStatus`]).
//! - [`Assignment`]: the version a device is told to run (announced,
//!   retained, on its announce topic).
//! - [`DeviceBundleState`]: what a device last acknowledged for a version.
//!
//! The rollout logic itself (stages, thresholds, promotion) lives in the
//! backend; the store only keeps its records.

use serde::{Deserialize, Serialize};

use crate::model::DeviceId;

/// One rule of a bundle, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRule {
    /// Sigma rule id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Level (`low`, `high`, ...), empty when the rule has none.
    pub level: String,
    /// File inside the bundle.
    pub path: String,
    /// ATT&CK technique ids from its tags.
    #[serde(default)]
    pub techniques: Vec<String>,
}

/// A pushed bundle (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBundle {
    /// Manifest version (monotonically increasing across the fleet).
    pub version: u64,
    /// SHA-256 of the signed bundle file (hex), as announced to devices.
    pub sha256: String,
    /// Size of the signed bundle file, bytes.
    pub size: u64,
    /// Manifest creation time, Unix seconds.
    pub created_unix: u64,
    /// Manifest expiry, Unix seconds.
    pub expires_unix: u64,
    /// Manifest targets, as the bundle states them (`"all"`,
    /// `{"group": …}`, `{"device": …}`).
    pub targets: serde_json::Value,
    /// The rules it carries.
    pub rules: Vec<BundleRule>,
    /// Public keys (hex) whose signatures it carries.
    pub signers: Vec<String>,
    /// Who pushed it.
    pub uploaded_by: String,
    /// When.
    pub uploaded_ms: i64,
}

/// What a rollout does when a threshold is crossed (AWS IoT Jobs' abort
/// criteria model: a failure percentage after a minimum of executions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdAction {
    /// Stop assigning, keep what was assigned; resume or promote by hand.
    Pause,
    /// Stop, and take the announcement back from devices that have not
    /// activated the bundle yet.
    Abort,
}

/// How a rollout proceeds; see the backend's rollout module for the rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Cumulative percentages of the targeted devices, ascending, the last
    /// one 100 (`[100]`: everything at once).
    pub stages: Vec<u8>,
    /// Move to the next stage by itself once the current one is healthy.
    #[serde(default = "yes")]
    pub auto_promote: bool,
    /// A stage is healthy once this percentage of its devices runs the
    /// bundle...
    #[serde(default = "default_promote_percent")]
    pub promote_at_percent: u8,
    /// ...and at least this many seconds have passed since it started.
    #[serde(default)]
    pub bake_secs: u64,
    /// Failed devices, as a percentage of the devices that finished
    /// (active or failed), above which the rollout stops...
    #[serde(default = "default_failure_percent")]
    pub max_failure_percent: f64,
    /// ...once at least this many finished.
    #[serde(default = "default_min_finished")]
    pub min_finished: u32,
    /// Alert rate of devices since they activated the bundle, per device,
    /// above which (as a multiple of the rate of the devices not running
    /// it) the rollout stops; `None` turns the check off...
    #[serde(default = "default_alert_ratio")]
    pub max_alert_rate_ratio: Option<f64>,
    /// ...once the activated devices raised at least this many alerts.
    #[serde(default = "default_min_alerts")]
    pub min_alerts: u64,
    /// What crossing a threshold does.
    #[serde(default = "default_action")]
    pub on_threshold: ThresholdAction,
}

const fn yes() -> bool {
    true
}
const fn default_promote_percent() -> u8 {
    90
}
const fn default_failure_percent() -> f64 {
    10.0
}
const fn default_min_finished() -> u32 {
    5
}
#[expect(
    clippy::unnecessary_wraps,
    reason = "serde default for an optional setting"
)]
const fn default_alert_ratio() -> Option<f64> {
    Some(5.0)
}
const fn default_min_alerts() -> u64 {
    50
}
const fn default_action() -> ThresholdAction {
    ThresholdAction::Pause
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            stages: vec![100],
            auto_promote: true,
            promote_at_percent: default_promote_percent(),
            bake_secs: 0,
            max_failure_percent: default_failure_percent(),
            min_finished: default_min_finished(),
            max_alert_rate_ratio: default_alert_ratio(),
            min_alerts: default_min_alerts(),
            on_threshold: default_action(),
        }
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutState {
    /// Assigning stage by stage.
    Running,
    /// Stopped by a threshold or an operator; resume or promote to go on.
    Paused,
    /// Every stage assigned and the last one healthy.
    Completed,
    /// Stopped for good; devices that had not activated it were told to
    /// keep their previous bundle.
    Aborted,
    /// A rollout of a newer bundle took over.
    Superseded,
}

impl RolloutState {
    /// Still assigning or may resume.
    #[must_use]
    pub const fn is_open(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    /// The lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
            Self::Superseded => "superseded",
        }
    }
}

/// One entry of a rollout's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEvent {
    /// When.
    pub at_ms: i64,
    /// Who (a user name, or `rollout` for the controller itself).
    pub actor: String,
    /// `created`, `stage`, `paused`, `resumed`, `promoted`, `aborted`,
    /// `completed`, `superseded`.
    pub action: String,
    /// Details (the threshold crossed, the stage reached).
    pub detail: String,
}

/// A rollout's moving parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RolloutStatus {
    /// Index into [`RolloutSpec::stages`] of the stage assigned last.
    pub stage: usize,
    /// When that stage was assigned.
    pub stage_started_ms: i64,
    /// Why it is paused or aborted.
    pub reason: Option<String>,
    /// What happened, oldest first.
    pub history: Vec<RolloutEvent>,
}

/// A rollout of one bundle version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Id (assigned by the store; 0 before it is saved).
    pub id: i64,
    /// The bundle version.
    pub version: u64,
    /// State.
    pub state: RolloutState,
    /// How it proceeds.
    pub spec: RolloutSpec,
    /// Stage, reason and history.
    pub status: RolloutStatus,
    /// Who started it.
    pub created_by: String,
    /// When.
    pub created_ms: i64,
    /// Last change.
    pub updated_ms: i64,
}

/// The bundle version a device is told to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Device.
    pub device_id: DeviceId,
    /// Version announced to it.
    pub version: u64,
    /// The rollout that assigned it.
    pub rollout_id: i64,
    /// The version assigned before (what an abort returns to; `None`: no
    /// bundle was assigned, the announcement is cleared).
    pub previous_version: Option<u64>,
    /// When.
    pub assigned_ms: i64,
}

/// A device's state for a bundle version, as it last acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleStateKind {
    /// Announced, nothing heard yet.
    Pending,
    /// Chunks arriving.
    Downloading,
    /// Verified, not yet running.
    Verified,
    /// Running.
    Active,
    /// Refused or failed; see the error.
    Failed,
}

impl BundleStateKind {
    /// The lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Downloading => "downloading",
            Self::Verified => "verified",
            Self::Active => "active",
            Self::Failed => "failed",
        }
    }

    /// From [`Self::as_str`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "downloading" => Self::Downloading,
            "verified" => Self::Verified,
            "active" => Self::Active,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// What a device last said about a bundle version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceBundleState {
    /// Device.
    pub device_id: DeviceId,
    /// Bundle version.
    pub version: u64,
    /// State.
    pub state: BundleStateKind,
    /// Chunks received (while downloading).
    pub chunks_received: u32,
    /// The device's error, when failed.
    pub error: Option<String>,
    /// When it was reported (backend clock).
    pub updated_ms: i64,
}

/// Converts a stored `i64` to a version (negative values never stored).
#[must_use]
pub(crate) fn version_from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Converts a version to the stored `i64` (versions above `i64::MAX` are
/// refused at upload, so this saturates only on a bug).
#[must_use]
pub(crate) fn version_to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An operator's action on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutAction {
    /// Stop assigning; keep what was assigned.
    Pause,
    /// Go on from a pause (the thresholds still apply).
    Resume,
    /// Assign the next stage now (also from a pause).
    Promote,
    /// Stop for good; devices that have not activated it keep their
    /// previous bundle.
    Abort,
}

impl RolloutAction {
    /// From the path segment (`pause`, `resume`, `promote`, `abort`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "promote" => Self::Promote,
            "abort" => Self::Abort,
            _ => return None,
        })
    }

    /// The lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote => "promote",
            Self::Abort => "abort",
        }
    }
}

/// The alert-rate check of a rollout, as last evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRateCheck {
    /// Alerts the devices raised since they activated the bundle.
    pub activated_alerts: u64,
    /// Their rate, alerts per device-hour.
    pub activated_per_device_hour: f64,
    /// The rate of the targeted devices not running it, same unit, since
    /// the rollout started (or the backend did).
    pub others_per_device_hour: f64,
    /// `activated / others` (`None`: nothing to compare with).
    pub ratio: Option<f64>,
}

/// Where a rollout stands, device by device, summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// The rollout.
    pub rollout: Rollout,
    /// Devices the bundle targets (not revoked).
    pub targeted: u64,
    /// Devices in each cumulative stage.
    pub stage_sizes: Vec<u64>,
    /// Devices told to run it so far.
    pub assigned: u64,
    /// Assigned devices by state (`pending`, `downloading`, `verified`,
    /// `active`, `failed`).
    pub states: std::collections::BTreeMap<String, u64>,
    /// Failed as a percentage of finished (active or failed).
    pub failure_percent: Option<f64>,
    /// The alert-rate check.
    pub alert_rate: Option<AlertRateCheck>,
    /// Failed devices with their errors (at most 100).
    pub failures: Vec<DeviceBundleState>,
}
