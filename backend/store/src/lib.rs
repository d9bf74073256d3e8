//! Storage for the Picket fleet backend.
//!
//! (Architecture overview: to be completed by the implementation — see the
//! module list below.)
//!
//! - [`model`]: the domain types the API serves.
//! - [`Store`]: the one trait the backend's ingest, API and retention use.
//!   Every method is a short transaction; the ingest path calls
//!   [`Store::insert_alerts`] with whole batches.

pub mod model;

use async_trait::async_trait;
use model::{
    Alert, AlertFilter, AlertId, AlertPage, AlertUpdate, AuditEntry, AuditFilter, CountBucket,
    Cursor, Device, DeviceId, EnrollmentToken, HeartbeatInfo, NewAlert, NewDevice, Note,
    RetentionReport, Role, Session, StoreStats, TokenRefusal, User,
};

/// The stored form of a secret token (session or enrollment): SHA-256, hex.
/// The store never keeps a token itself.
#[must_use]
pub fn token_hash(token: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The thing named does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of thing (`device`, `alert`, `user`).
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A unique key is taken (user name, device id).
    #[error("{what} {id} already exists")]
    Conflict {
        /// Kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The database failed (connection, I/O, constraint, corruption).
    #[error("database error: {0}")]
    Backend(String),
}

/// Result of [`Store::insert_alerts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertReport {
    /// New alerts stored.
    pub inserted: u64,
    /// Alerts whose id was already stored (redeliveries), skipped.
    pub duplicates: u64,
}

/// The backend's storage. Implementations: SQLite in the data directory
/// (embedded, the default) and PostgreSQL.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    // ---- devices ----
    /// Records a newly enrolled device.
    async fn insert_device(&self, device: NewDevice) -> Result<Device, StoreError>;
    /// One device.
    async fn device(&self, id: &str) -> Result<Option<Device>, StoreError>;
    /// All devices, by id.
    async fn devices(&self) -> Result<Vec<Device>, StoreError>;
    /// Marks a device revoked at `at_ms` (idempotent: keeps the first time).
    async fn revoke_device(&self, id: &str, at_ms: i64) -> Result<Device, StoreError>;
    /// Stores a heartbeat and sets `last_seen_ms`.
    async fn record_heartbeat(&self, id: &str, hb: HeartbeatInfo) -> Result<(), StoreError>;
    /// Sets `last_seen_ms` (an alert batch arrived).
    async fn touch_device(&self, id: &str, at_ms: i64) -> Result<(), StoreError>;

    // ---- alerts ----
    /// Stores a batch in one transaction; ids already stored are skipped.
    /// Also advances each device's `last_alert_seq`.
    async fn insert_alerts(&self, alerts: &[NewAlert]) -> Result<InsertReport, StoreError>;
    /// Alerts matching `filter`, newest first (`timestamp_ms`, then row),
    /// starting after `after`, at most `limit`.
    async fn alerts(
        &self,
        filter: &AlertFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<AlertPage, StoreError>;
    /// One alert.
    async fn alert(&self, id: &AlertId) -> Result<Option<Alert>, StoreError>;
    /// Changes an alert's workflow state.
    async fn update_alert(
        &self,
        id: &AlertId,
        update: &AlertUpdate,
        at_ms: i64,
    ) -> Result<Alert, StoreError>;
    /// Adds a note to an alert.
    async fn add_note(&self, id: &AlertId, note: &Note) -> Result<(), StoreError>;
    /// An alert's notes, oldest first.
    async fn notes(&self, id: &AlertId) -> Result<Vec<Note>, StoreError>;
    /// Counts of alerts matching `filter` per `bucket_ms` and level.
    async fn alert_counts(
        &self,
        filter: &AlertFilter,
        bucket_ms: i64,
    ) -> Result<Vec<CountBucket>, StoreError>;

    // ---- users and sessions ----
    /// Creates a user.
    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
        at_ms: i64,
    ) -> Result<User, StoreError>;
    /// A user by name.
    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError>;
    /// A user by id.
    async fn user(&self, id: i64) -> Result<Option<User>, StoreError>;
    /// All users.
    async fn users(&self) -> Result<Vec<User>, StoreError>;
    /// Changes a user's role, password or disabled flag (`None` keeps it).
    async fn update_user(
        &self,
        id: i64,
        role: Option<Role>,
        password_hash: Option<&str>,
        disabled: Option<bool>,
    ) -> Result<User, StoreError>;
    /// Number of users (0 means setup has not happened).
    async fn user_count(&self) -> Result<u64, StoreError>;
    /// Stores a session.
    async fn create_session(&self, session: &Session) -> Result<(), StoreError>;
    /// A live session (not expired at `now_ms`) and its user.
    async fn session(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<(Session, User)>, StoreError>;
    /// Ends a session.
    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError>;
    /// Ends every session of a user.
    async fn delete_user_sessions(&self, user_id: i64) -> Result<(), StoreError>;

    // ---- enrollment tokens ----
    /// Stores a new token.
    async fn create_token(
        &self,
        token_hash: &str,
        label: &str,
        created_by: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<EnrollmentToken, StoreError>;
    /// All tokens, newest first.
    async fn tokens(&self) -> Result<Vec<EnrollmentToken>, StoreError>;
    /// Atomically marks a token used by `device`, if it is valid at `now_ms`.
    async fn use_token(
        &self,
        token_hash: &str,
        device: &DeviceId,
        now_ms: i64,
    ) -> Result<Result<EnrollmentToken, TokenRefusal>, StoreError>;

    // ---- audit ----
    /// Appends an audit entry (its `id` is assigned by the store).
    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Audit entries matching `filter`, newest first, at most `limit`.
    async fn audit_log(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    // ---- housekeeping ----
    /// Removes alerts (and their notes) older than `max_age_ms` before
    /// `now_ms`, then the oldest ones beyond `max_alerts`.
    async fn apply_retention(
        &self,
        now_ms: i64,
        max_age_ms: Option<i64>,
        max_alerts: Option<u64>,
    ) -> Result<RetentionReport, StoreError>;
    /// Totals.
    async fn stats(&self) -> Result<StoreStats, StoreError>;
    /// Whether the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}
