//! Storage for the Picket fleet backend.
//!
//! - [`model`]: the domain types the API serves.
//! - [`Store`]: the one trait the backend's ingest, API and retention use.
//!   Every method is a short transaction; the ingest path calls
//!   [`Store::insert_alerts`] with whole batches.
//! - [`sqlite::SqliteStore`]: the embedded default, one file in the data
//!   directory. [`postgres::PgStore`]: PostgreSQL for larger fleets.
//! - [`open`] with a [`StoreSpec`] picks one from the configuration.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use picket_store::model::{AlertFilter, Role};
//! use picket_store::StoreSpec;
//!
//! let dir = tempfile::tempdir()?;
//! let store = picket_store::open(&StoreSpec::Sqlite(dir.path().join("picket.db"))).await?;
//! store.create_user("admin", "$argon2id$...", Role::Admin, 0).await?;
//! let page = store.alerts(&AlertFilter::default(), None, 50).await?;
//! assert!(page.alerts.is_empty() && page.next.is_none());
//! # Ok(()) }
//! ```
//!
//! # Architecture
//!
//! **Threads and connections.** SQLite: one writer connection behind a
//! mutex and four read-only connections (WAL mode: readers never wait for
//! the writer). Every call runs on tokio's blocking pool
//! (`spawn_blocking`), never on the async workers. Writes are serialized;
//! reads run in parallel with them. Postgres: a `deadpool` pool of eight
//! `tokio-postgres` connections, fully async.
//!
//! **Schema** (same tables and columns in both; see `README.md`):
//! `alerts` (one row per alert; `row` is an ascending integer key, the tie
//! break of the list order; the whole event is kept as JSON in `event`),
//! `alert_techniques` (technique key, `timestamp_ms`, `row`),
//! `alert_rollup` (alert counts per minute and hour, see below), `notes`,
//! `devices` (the last heartbeat as JSON), `users`, `sessions` (token
//! hashes only), `enrollment_tokens` (hashes only), `agents` (Windows/macOS
//! agents: device id, platform, secret hash), `audit_log`, and for rule bundles `bundles`, `rollouts`, `bundle_assignments`, `bundle_states`, `device_groups` (module [`rollout`]). SQLite adds
//! `alerts_fts`, a contentless FTS5 table with the `trigram` tokenizer over
//! image, command line and path. Alerts of devices that are not enrolled
//! are stored anyway (no foreign keys): the ingest only passes enrolled
//! devices, and retention deletes alerts without joins.
//!
//! **Indexes and list order.** Lists are newest first by
//! `(timestamp_ms DESC, row DESC)` with keyset cursors, so a page costs the
//! same at any depth. Each equality filter has an index that ends in that
//! order: `(timestamp_ms, row)`, `(device_id, …)`, `(level, …)`,
//! `(rule_id, …)`, `(status, …)`, `(source, …)`; a page walks one index
//! and stops after `limit + 1` rows. A minimum level runs one such query per
//! level and merges the pages. Techniques are stored as keys for the
//! technique *and each parent* (`T1059.004` also under `T1059`), so a parent
//! filter is one equality on the `(technique, timestamp_ms, row)` key.
//! Text search (case-insensitive substring): SQLite asks the trigram index
//! how many rows match (counting at most 3,000); a rare needle collects
//! its matches and sorts them, a common one walks the list order and tests
//! each row (`LIKE`, or `picket_icontains` for non-ASCII needles). Needles
//! under 3 characters are always tested row by row. Postgres uses a
//! `pg_trgm` GIN index over the same three columns with `ILIKE` and leaves
//! the choice to its
//! planner. SQLite gets fixed planner statistics (written by migration 2)
//! so its plans do not depend on when `ANALYZE` last ran.
//!
//! **Alert counts.** `alert_rollup` holds the number of alerts per
//! minute and per hour, level, status and source. The transaction that
//! inserts, deletes (retention) or re-triages alerts updates it: the
//! changes are added up in Rust first, then one upsert per key (in key
//! order, so concurrent Postgres writers cannot deadlock on it); rows that
//! reach zero are deleted. [`Store::alert_counts`] answers from it when the
//! filter is only a time range, minimum level, status and/or source and
//! the bucket is a whole number of minutes: whole hours from the hourly
//! rows, whole minutes at the range's ends from the per-minute rows, and
//! the sub-minute ends by a scan, all in one read snapshot. Other filters
//! (device, rule, technique, text) scan the range through their index.
//! The migration that adds the table fills it from the stored alerts.
//!
//! **Migrations** run at open/connect. SQLite counts them in
//! `PRAGMA user_version`; Postgres in the `picket_schema_version` table,
//! under an advisory lock so several backends may start at once. A
//! database newer than the build is refused, never downgraded.
//!
//! **Search index freshness (SQLite).** Ingest does not feed the trigram
//! index itself: a background indexer thread adds stored alerts to it in
//! transactions of 8,192 rows whenever the writer is free, and records how
//! far it got (`search_state.indexed_row`, in the same transaction). The
//! index may lag ingest by at most [`sqlite::SqliteOptions::search_lag_alerts`]
//! alerts (100,000 by default): beyond that, the inserting transaction
//! indexes the excess itself. Searches are always complete and current: in
//! one read snapshot they use the index up to the watermark and test the
//! un-indexed tail (at most the lag bound) row by row. Trigram indexing is
//! ~40 % of the insert CPU, so a burst of up to that many alerts runs at
//! the speed of the plain tables and the index catches up after it.
//!
//! **Durability.** SQLite runs `journal_mode=WAL`, `synchronous=NORMAL`:
//! a commit is in the WAL but not fsynced. A checkpointer thread (its own
//! connection, `PASSIVE`, so it never blocks ingest or readers) starts a
//! checkpoint every 200 ms, fsyncing the WAL first and then copying it into
//! the database. A process crash loses nothing that was committed; a power
//! cut or kernel panic can lose the commits made since the last checkpoint
//! began (~200 ms of ingest, up to one checkpoint pass — seconds — under
//! full-rate ingest; the writer checkpoints by itself once the WAL reaches
//! 256 MiB) but never corrupts the file. Alerts the uplink acknowledged in
//! that window are then gone (the device dropped them from its spool);
//! where that matters, open with [`sqlite::SqliteOptions::durable`]
//! (`synchronous=FULL`: an fsync per commit, so pass bigger batches).
//! Postgres durability is the server's (`synchronous_commit`).
//!
//! **Backups.** SQLite: [`sqlite::SqliteStore::backup_to`] (`VACUUM INTO`,
//! consistent, online), or `sqlite3 picket.db ".backup backup.db"` from a
//! shell; copying the file alone while the backend runs is *not* safe
//! without its `-wal` file. Postgres: `pg_dump` (with `--schema` when the
//! store uses one).
//!
//! **Retention** deletes by event time (`timestamp_ms`) and then the
//! oldest beyond a count, in transactions of 10,000 alerts so ingest keeps
//! flowing, with their notes, technique keys, search entries and counts;
//! it also drops expired sessions.
//!
//! **Ingest.** One transaction per [`Store::insert_alerts`] call with
//! cached statements (SQLite: the alert row, its technique keys, the
//! device's sequence number, the count rollup; the text index follows
//! behind, see above) or one `INSERT … SELECT FROM unnest(…) ON CONFLICT
//! DO NOTHING RETURNING` per batch (Postgres), then the technique keys,
//! sequence numbers and rollup as one statement each. Larger batches amortize the commit: the ingest
//! passes what it has queued (up to `commit_max_alerts`) in one call. See
//! `README.md` for measured rates.

pub mod hunt;
pub mod model;
pub mod postgres;
mod query;
pub mod rollout;
pub mod sqlite;

use async_trait::async_trait;
use model::{
    AgentRecord, Alert, AlertFilter, AlertId, AlertPage, AlertUpdate, AuditEntry, AuditFilter,
    CountBucket, Cursor, Device, DeviceId, EnrollmentToken, HeartbeatInfo, HeartbeatOutcome,
    NewAlert, NewDevice, Note, RetentionReport, Role, Session, StoreStats, TokenRefusal, User,
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
pub trait Store: BundleStore + hunt::HuntStore + Send + Sync + std::fmt::Debug {
    // ---- devices ----
    /// Records a newly enrolled device.
    async fn insert_device(&self, device: NewDevice) -> Result<Device, StoreError>;
    /// One device.
    async fn device(&self, id: &str) -> Result<Option<Device>, StoreError>;
    /// All devices, by id.
    async fn devices(&self) -> Result<Vec<Device>, StoreError>;
    /// Records the identity a re-enrolled device was issued: its public key
    /// and the serial of its new certificate, so that revocation names the
    /// certificate in use. A revoked device is left as it is; the device is
    /// returned either way (check `revoked_ms`).
    async fn set_device_identity(
        &self,
        id: &str,
        public_key: &[u8],
        cert_serial: &str,
    ) -> Result<Device, StoreError>;
    /// Marks a device revoked at `at_ms` (idempotent: keeps the first time).
    async fn revoke_device(&self, id: &str, at_ms: i64) -> Result<Device, StoreError>;
    /// Stores a heartbeat and sets `last_seen_ms`, if it is newer than
    /// the device's last recorded heartbeat
    /// ([`HeartbeatInfo::is_newer_than`](model::HeartbeatInfo::is_newer_than));
    /// otherwise changes nothing and says so. The check and the write are
    /// one transaction, so backends sharing a database agree.
    async fn record_heartbeat(
        &self,
        id: &str,
        hb: HeartbeatInfo,
    ) -> Result<HeartbeatOutcome, StoreError>;
    /// Sets `last_seen_ms` (an alert batch arrived).
    async fn touch_device(&self, id: &str, at_ms: i64) -> Result<(), StoreError>;

    // ---- endpoint agents ----
    /// Records a Windows/macOS agent's secret hash and platform for an
    /// enrolled device (one record per device).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the device or the hash already has one.
    async fn insert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;
    /// The agent whose secret hashes to `secret_hash`.
    async fn agent_by_secret(&self, secret_hash: &str) -> Result<Option<AgentRecord>, StoreError>;

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
    /// Counts of alerts matching `filter` per `bucket_ms` and level,
    /// by bucket start then level, without empty buckets. Read from the
    /// count rollup when `filter` is only a time range, minimum level,
    /// status and/or source and `bucket_ms` is a whole number of minutes
    /// (see the crate docs); otherwise a scan of the range.
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

/// Rule bundles, rollouts and device states (module [`rollout`]); a
/// supertrait of [`Store`], so every store has them.
#[async_trait]
pub trait BundleStore: Send + Sync {
    /// Keeps a pushed bundle and its bytes.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the version exists.
    async fn insert_bundle(
        &self,
        bundle: &rollout::StoredBundle,
        bytes: &[u8],
    ) -> Result<(), StoreError>;
    /// Every bundle, newest first (without bytes).
    async fn bundles(&self) -> Result<Vec<rollout::StoredBundle>, StoreError>;
    /// A bundle's signed bytes.
    async fn bundle_bytes(&self, version: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Inserts (`id == 0`; returns the new id) or replaces a rollout.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when replacing an unknown id.
    async fn save_rollout(&self, rollout: &rollout::Rollout) -> Result<i64, StoreError>;
    /// Every rollout, newest first.
    async fn rollouts(&self) -> Result<Vec<rollout::Rollout>, StoreError>;
    /// Sets (or, with `version == 0`, clears) the version announced to
    /// devices, one transaction.
    async fn assign_bundles(&self, assignments: &[rollout::Assignment]) -> Result<(), StoreError>;
    /// Every device's assignment.
    async fn assignments(&self) -> Result<Vec<rollout::Assignment>, StoreError>;
    /// Records what devices acknowledged, one transaction.
    async fn record_bundle_states(
        &self,
        states: &[rollout::DeviceBundleState],
    ) -> Result<(), StoreError>;
    /// Device states, for one version and/or one device.
    async fn bundle_states(
        &self,
        version: Option<u64>,
        device: Option<&str>,
    ) -> Result<Vec<rollout::DeviceBundleState>, StoreError>;
    /// Sets a device's groups (bundle targets name groups).
    async fn set_device_groups(&self, device: &str, groups: &[String]) -> Result<(), StoreError>;
    /// Every device's groups (devices without groups are left out).
    async fn device_groups(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>, StoreError>;
}

/// Which store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL URL (`postgres://user:pass@host:5432/db`).
    Postgres(String),
}

impl StoreSpec {
    /// `postgres://` or `postgresql://` URLs are Postgres; anything else is
    /// a SQLite file path.
    #[must_use]
    pub fn parse(url_or_path: &str) -> Self {
        if url_or_path.starts_with("postgres://") || url_or_path.starts_with("postgresql://") {
            Self::Postgres(url_or_path.to_owned())
        } else {
            Self::Sqlite(url_or_path.into())
        }
    }
}

/// Opens the store `spec` names, running its migrations.
///
/// # Errors
/// The database cannot be opened or migrated.
pub async fn open(spec: &StoreSpec) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match spec {
        StoreSpec::Sqlite(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(path))
                .await
                .map_err(|e| StoreError::Backend(format!("open: task failed: {e}")))??;
            Ok(std::sync::Arc::new(store))
        }
        StoreSpec::Postgres(url) => Ok(std::sync::Arc::new(postgres::PgStore::connect(url).await?)),
    }
}
