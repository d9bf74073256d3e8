//! The backend's domain model: what the store keeps and the API serves.
//!
//! Times are milliseconds since the Unix epoch (`*_ms`, `i64`), ids of
//! devices and alerts are lowercase hex (32 digits, as on the wire topics).

use serde::{Deserialize, Serialize};

/// A device id: 32 lowercase hex digits (the wire's 16-byte device id).
pub type DeviceId = String;
/// An alert id: 32 lowercase hex digits (the wire's 16-byte alert id).
pub type AlertId = String;

/// Alert severity, ordered (Sigma levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Sigma `informational`.
    Informational = 0,
    /// Sigma `low`.
    Low = 1,
    /// Sigma `medium`.
    Medium = 2,
    /// Sigma `high`.
    High = 3,
    /// Sigma `critical`.
    Critical = 4,
}

impl Level {
    /// The stored integer (0 informational ..= 4 critical).
    #[must_use]
    pub const fn as_i16(self) -> i16 {
        self as i16
    }

    /// From the stored integer.
    #[must_use]
    pub const fn from_i16(v: i16) -> Option<Self> {
        Some(match v {
            0 => Self::Informational,
            1 => Self::Low,
            2 => Self::Medium,
            3 => Self::High,
            4 => Self::Critical,
            _ => return None,
        })
    }
}

/// Where an alert is in the triage workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Not looked at yet.
    New,
    /// Someone is on it.
    Acknowledged,
    /// Closed.
    Resolved,
}

/// Where alerts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSource {
    /// A Linux appliance's own detection (picketd).
    Appliance,
    /// Backend-side detection on a Windows agent stream.
    Windows,
    /// Backend-side detection on a macOS agent stream.
    Macos,
    /// Backend-side detection on an uploaded log (hunt).
    Upload,
}

/// An alert as ingested, before the store adds workflow state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAlert {
    /// Unique alert id (de-duplication key).
    pub id: AlertId,
    /// The device that raised it.
    pub device_id: DeviceId,
    /// Per-device sequence number.
    pub seq: u64,
    /// When the event happened (device clock).
    pub timestamp_ms: i64,
    /// When the backend stored it.
    pub received_ms: i64,
    /// Severity.
    pub level: Level,
    /// Where it came from.
    pub source: AlertSource,
    /// Sigma rule id.
    pub rule_id: String,
    /// Sigma rule title.
    pub rule_title: String,
    /// ATT&CK technique ids (`T1059`, `T1059.004`).
    pub techniques: Vec<String>,
    /// Process image, when the event has one (searchable).
    pub image: Option<String>,
    /// Command line, when the event has one (searchable).
    pub command_line: Option<String>,
    /// File path or target, when the event has one (searchable).
    pub path: Option<String>,
    /// The whole event as JSON (what the UI shows in detail).
    pub event: serde_json::Value,
}

/// A stored alert: the ingested alert plus its triage state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The alert as ingested.
    #[serde(flatten)]
    pub alert: NewAlert,
    /// Triage status.
    pub status: AlertStatus,
    /// Assigned user name.
    pub assignee: Option<String>,
    /// Last workflow change.
    pub updated_ms: i64,
}

/// A note on an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Author user name.
    pub author: String,
    /// When it was written.
    pub at_ms: i64,
    /// The text.
    pub text: String,
}

/// A workflow change; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertUpdate {
    /// New status.
    pub status: Option<AlertStatus>,
    /// New assignee; `Some(None)` unassigns.
    pub assignee: Option<Option<String>>,
}

/// Which alerts to list (every field narrows; all `None` lists everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFilter {
    /// One device.
    pub device_id: Option<DeviceId>,
    /// At least this severity.
    pub min_level: Option<Level>,
    /// One rule id.
    pub rule_id: Option<String>,
    /// One ATT&CK technique id; a parent (`T1059`) also matches its
    /// sub-techniques (`T1059.004`).
    pub technique: Option<String>,
    /// One status.
    pub status: Option<AlertStatus>,
    /// One source.
    pub source: Option<AlertSource>,
    /// `timestamp_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// `timestamp_ms < until_ms`.
    pub until_ms: Option<i64>,
    /// Case-insensitive substring of the command line, image or path.
    pub text: Option<String>,
    /// The alerts of one hunting job ([`crate::hunt`]); `None` lists the
    /// fleet's alerts, which never include a job's.
    #[serde(default)]
    pub hunt_id: Option<i64>,
}

/// A position in the alert list (newest first): opaque to API clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// `timestamp_ms` of the last alert returned.
    pub timestamp_ms: i64,
    /// Store-internal row number of the last alert returned (tie-break).
    pub row: i64,
}

impl Cursor {
    /// The cursor as an opaque URL-safe token.
    #[must_use]
    pub fn encode(&self) -> String {
        format!("{:x}.{:x}", self.timestamp_ms, self.row)
    }

    /// Parses [`Cursor::encode`]'s output.
    ///
    /// # Errors
    /// A message naming the bad token.
    pub fn decode(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid cursor {s:?}");
        let (t, r) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            timestamp_ms: i64::from_str_radix(t, 16).map_err(|_| bad())?,
            row: i64::from_str_radix(r, 16).map_err(|_| bad())?,
        })
    }
}

/// One page of alerts, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertPage {
    /// The alerts.
    pub alerts: Vec<Alert>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<Cursor>,
}

/// Alert counts per time bucket and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountBucket {
    /// Bucket start (a multiple of the bucket width).
    pub start_ms: i64,
    /// Severity.
    pub level: Level,
    /// Alerts in the bucket with that level.
    pub count: u64,
}

/// A module's state as the device last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleStatus {
    /// Module name.
    pub name: String,
    /// `disabled`, `starting`, `running`, `degraded` or `failed`.
    pub state: String,
    /// The module's last error.
    pub error: Option<String>,
}

/// The latest heartbeat's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatInfo {
    /// Heartbeat sequence number (device-local, restarts with picketd).
    pub seq: u64,
    /// When the device sent it (device clock, ms since the epoch); 0 in
    /// heartbeats stored before it was recorded.
    #[serde(default)]
    pub sent_at_ms: i64,
    /// When the backend received it.
    pub received_ms: i64,
    /// Agent uptime (picketd's run; restarts at 0 with `seq`).
    pub uptime_secs: u64,
    /// Agent version.
    pub agent_version: String,
    /// Active rule bundle version.
    pub rule_bundle_version: Option<u64>,
    /// Alerts waiting in the device's spool.
    pub spool_depth: u64,
    /// Bytes in the device's spool.
    pub spool_bytes: u64,
    /// Alerts evicted from the spool since it was created.
    pub spool_evictions_total: u64,
    /// Kernel records lost since picketd started.
    pub lost_kernel_records_total: u64,
    /// Module states.
    pub modules: Vec<ModuleStatus>,
    /// CPU use, permille of one core.
    pub cpu_permille: u32,
    /// Resident memory.
    pub rss_bytes: u64,
}

/// How far a heartbeat's uptime may run ahead of the backend's clock
/// between two heartbeats of one agent run (delivery delays, whole-second
/// uptimes).
pub const HEARTBEAT_UPTIME_SLACK_MS: i64 = 60_000;

impl HeartbeatInfo {
    /// Whether this heartbeat (just received) is newer than `last`, the
    /// last one recorded for the device; one that is not is a replay (or a
    /// copy delivered twice) and must change nothing.
    ///
    /// Newer means either
    /// - the same agent run, later: a higher `seq`, an uptime that did not
    ///   go back and did not advance more than the backend's own clock
    ///   between the two receipts (plus [`HEARTBEAT_UPTIME_SLACK_MS`]).
    ///   This holds whatever the device's wall clock does; or
    /// - a later device time (`sent_at_ms`): how a restarted agent (its
    ///   `seq` and uptime start again) is told from a replay of an older
    ///   run's heartbeat.
    ///
    /// So a heartbeat of an earlier run is refused unless the device's clock
    /// was set back since it was sent.
    #[must_use]
    pub fn is_newer_than(&self, last: &HeartbeatInfo) -> bool {
        let uptime_gain_ms = (i128::from(self.uptime_secs) - i128::from(last.uptime_secs)) * 1_000;
        let clock_gain_ms = i128::from(self.received_ms) - i128::from(last.received_ms);
        let same_run_later = self.seq > last.seq
            && uptime_gain_ms >= 0
            && uptime_gain_ms <= clock_gain_ms + i128::from(HEARTBEAT_UPTIME_SLACK_MS);
        same_run_later || self.sent_at_ms > last.sent_at_ms
    }
}

/// What [`Store::record_heartbeat`](crate::Store::record_heartbeat) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Stored: the first heartbeat of the device, or newer than the last
    /// one ([`HeartbeatInfo::is_newer_than`]).
    Recorded,
    /// Not newer than the last recorded heartbeat (shown): nothing changed.
    Stale(Box<HeartbeatInfo>),
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Device id.
    pub id: DeviceId,
    /// Host name given at enrollment.
    pub hostname: String,
    /// Ed25519 public key (32 bytes) every payload is checked against.
    pub public_key: Vec<u8>,
    /// Serial of the device certificate (hex).
    pub cert_serial: String,
    /// Enrollment time.
    pub enrolled_ms: i64,
    /// Set once revoked: from then on its certificate and payloads are refused.
    pub revoked_ms: Option<i64>,
    /// Last heartbeat or alert batch.
    pub last_seen_ms: Option<i64>,
    /// Highest alert sequence number stored.
    pub last_alert_seq: u64,
    /// The latest heartbeat.
    pub heartbeat: Option<HeartbeatInfo>,
    /// [`PLATFORM_LINUX`] for an appliance (picketd), else the platform an
    /// endpoint agent enrolled with (`windows`, `macos`: the `agents`
    /// table).
    #[serde(default = "linux")]
    pub platform: String,
}

/// The platform of appliances: picketd runs on Linux gateways.
pub const PLATFORM_LINUX: &str = "linux";

fn linux() -> String {
    PLATFORM_LINUX.to_owned()
}

/// What enrollment records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDevice {
    /// Device id.
    pub id: DeviceId,
    /// Host name.
    pub hostname: String,
    /// Ed25519 public key.
    pub public_key: Vec<u8>,
    /// Certificate serial (hex).
    pub cert_serial: String,
    /// Agent version at enrollment.
    pub agent_version: String,
    /// Enrollment time.
    pub enrolled_ms: i64,
}

/// A Windows or macOS agent's credential record (`agents` table): the
/// device it streams as, its platform and the hash of its secret
/// ([`crate::token_hash`]; the secret itself is shown once, at enrollment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The device the agent was enrolled as.
    pub device_id: DeviceId,
    /// `windows` or `macos`.
    pub platform: String,
    /// SHA-256 of the agent secret, hex.
    pub secret_hash: String,
    /// Enrollment time.
    pub created_ms: i64,
}

/// A user role, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users, tokens, revocation and the audit log.
    Admin,
    /// Fleet operations: enrollment tokens, rule bundles, device actions, triage.
    Operator,
    /// Triage: acknowledge, assign, resolve, notes.
    Analyst,
    /// Read only.
    Viewer,
}

impl Role {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Analyst => "analyst",
            Self::Viewer => "viewer",
        }
    }

    /// From the stored name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Self::Admin,
            "operator" => Self::Operator,
            "analyst" => Self::Analyst,
            "viewer" => Self::Viewer,
            _ => return None,
        })
    }

    /// Whether this role includes everything `needed` may do.
    #[must_use]
    pub fn allows(self, needed: Self) -> bool {
        self <= needed
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Store id.
    pub id: i64,
    /// Login name (unique).
    pub name: String,
    /// Role.
    pub role: Role,
    /// argon2 PHC string; never serialized to clients.
    #[serde(skip_serializing, default)]
    pub password_hash: String,
    /// Disabled users cannot log in; their sessions end.
    pub disabled: bool,
    /// Creation time.
    pub created_ms: i64,
}

/// A login session (the store keeps a hash of the token, never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 of the bearer token, hex.
    pub token_hash: String,
    /// The user.
    pub user_id: i64,
    /// Creation time.
    pub created_ms: i64,
    /// Expiry.
    pub expires_ms: i64,
}

/// A one-time enrollment token (the store keeps a hash, never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// Store id.
    pub id: i64,
    /// SHA-256 of the token, hex.
    #[serde(skip_serializing, default)]
    pub token_hash: String,
    /// Operator's label ("site 12 gateway").
    pub label: String,
    /// Who created it.
    pub created_by: String,
    /// Creation time.
    pub created_ms: i64,
    /// Expiry.
    pub expires_ms: i64,
    /// Set when a device used it.
    pub used_ms: Option<i64>,
    /// The device that used it.
    pub used_by: Option<DeviceId>,
}

/// Why a token could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenRefusal {
    /// No such token.
    Invalid,
    /// Past its expiry.
    Expired,
    /// Already used.
    Used,
}

/// One audit log entry: an operator action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Store id (ascending).
    pub id: i64,
    /// When.
    pub at_ms: i64,
    /// User name (or `system`).
    pub actor: String,
    /// What was done (`device.revoke`, `alert.update`, `user.create`, ...).
    pub action: String,
    /// What it was done to (device id, alert id, user name, ...).
    pub target: String,
    /// Details as JSON.
    pub detail: serde_json::Value,
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// One actor.
    pub actor: Option<String>,
    /// Actions starting with this prefix (`device.`).
    pub action_prefix: Option<String>,
    /// Entries with `id < before_id` (pagination).
    pub before_id: Option<i64>,
    /// `at_ms >= since_ms`.
    pub since_ms: Option<i64>,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// Alerts older than the age limit.
    pub expired: u64,
    /// Oldest alerts removed to get under the size limit.
    pub trimmed: u64,
}

/// Storage totals for metrics and the README's sizing table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Stored alerts.
    pub alerts: u64,
    /// Enrolled devices (revoked included).
    pub devices: u64,
    /// Bytes on disk (database size), when the backend can tell.
    pub bytes: Option<u64>,
}
