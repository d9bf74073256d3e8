//! The embedded store: one SQLite file in the backend's data directory.
//!
//! One writer connection (behind a mutex) and a small pool of read-only
//! connections; every call runs on tokio's blocking pool. WAL mode lets the
//! readers see the last committed state while the writer works. See the
//! crate docs for the schema, durability and backups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use async_trait::async_trait;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::Semaphore;

mod bundles;
mod hunts;

use crate::model::{
    AgentRecord, Alert, AlertFilter, AlertId, AlertPage, AlertUpdate, AuditEntry, AuditFilter,
    CountBucket, Cursor, Device, DeviceId, EnrollmentToken, HeartbeatInfo, HeartbeatOutcome,
    NewAlert, NewDevice, Note, RetentionReport, Role, Session, StoreStats, TokenRefusal, User,
    PLATFORM_LINUX,
};
use crate::query::{
    self, AlertIn, Dialect, Param, RawAlert, RawDevice, ALERT_COLUMNS, DEVICE_COLUMNS,
};
use crate::{InsertReport, Store, StoreError};

/// Read-only connections in the pool.
const READERS: usize = 4;
/// Alerts deleted per retention transaction, so ingest can run in between.
const RETENTION_CHUNK: i64 = 10_000;
/// How often the checkpointer thread copies the WAL into the database.
/// With `synchronous=NORMAL` a checkpoint fsyncs the WAL first, so this is
/// also the bound on what a power cut can lose. Doing it off the writer
/// keeps the copy and both fsyncs out of ingest commits.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// The writer checkpoints by itself only when the WAL has grown to 256 MiB
/// (the checkpointer thread is starved or blocked).
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 65_536;
/// Alerts the background indexer adds to the search index per
/// transaction: small enough that an ingest commit waits at most tens of
/// milliseconds for the writer, large enough to amortize the segment flush.
const INDEX_CHUNK: i64 = 8_192;

/// The stored status of a new alert.
const NEW_STATUS: i16 = query::status_code(crate::model::AlertStatus::New);

/// Schema migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    hostname       TEXT NOT NULL,
    public_key     BLOB NOT NULL,
    cert_serial    TEXT NOT NULL,
    agent_version  TEXT NOT NULL,
    enrolled_ms    INTEGER NOT NULL,
    revoked_ms     INTEGER,
    last_seen_ms   INTEGER,
    last_alert_seq INTEGER NOT NULL DEFAULT 0,
    heartbeat      TEXT
);
CREATE TABLE alerts (
    row          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    level        INTEGER NOT NULL,
    source       INTEGER NOT NULL,
    rule_id      TEXT NOT NULL,
    rule_title   TEXT NOT NULL,
    techniques   TEXT NOT NULL,
    image        TEXT,
    command_line TEXT,
    path         TEXT,
    event        TEXT NOT NULL,
    status       INTEGER NOT NULL DEFAULT 0,
    assignee     TEXT,
    updated_ms   INTEGER NOT NULL
);
-- Every index ends in the rowid (`row`) implicitly, so each one is in
-- list order (timestamp_ms DESC, row DESC) for its equality prefix.
CREATE INDEX alerts_time   ON alerts (timestamp_ms);
CREATE INDEX alerts_device ON alerts (device_id, timestamp_ms);
CREATE INDEX alerts_level  ON alerts (level, timestamp_ms);
CREATE INDEX alerts_rule   ON alerts (rule_id, timestamp_ms);
CREATE INDEX alerts_status ON alerts (status, timestamp_ms);
CREATE INDEX alerts_source ON alerts (source, timestamp_ms);
CREATE TABLE alert_techniques (
    technique    TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    row          INTEGER NOT NULL,
    PRIMARY KEY (technique, timestamp_ms, row)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE alerts_fts USING fts5 (
    image, command_line, path,
    content = '', contentless_delete = 1, tokenize = 'trigram'
);
CREATE TABLE notes (
    id       INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    author   TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    text     TEXT NOT NULL
);
CREATE INDEX notes_alert ON notes (alert_id, at_ms);
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_ms    INTEGER NOT NULL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE TABLE enrollment_tokens (
    id         INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    label      TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms    INTEGER,
    used_by    TEXT
);
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_actor ON audit_log (actor, id);
",
    r"
-- Planner statistics written by hand for a 10M-alert store, so plans do not
-- depend on when (or whether) ANALYZE last ran: an equality on a device or
-- rule is far more selective than one on a level, status or source, and
-- the technique key index drives technique filters.
ANALYZE sqlite_schema;
DELETE FROM sqlite_stat1 WHERE tbl IN ('alerts', 'alert_techniques');
INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
    ('alerts', NULL, '10000000'),
    ('alerts', 'sqlite_autoindex_alerts_1', '10000000 1'),
    ('alerts', 'alerts_time', '10000000 2'),
    ('alerts', 'alerts_device', '10000000 3000 2'),
    ('alerts', 'alerts_level', '10000000 2000000 2'),
    ('alerts', 'alerts_rule', '10000000 100000 2'),
    ('alerts', 'alerts_status', '10000000 4000000 2'),
    ('alerts', 'alerts_source', '10000000 4000000 2'),
    ('alert_techniques', 'sqlite_autoindex_alert_techniques_1', '20000000 400000 2 1');
ANALYZE sqlite_schema;
",
    r"
-- The search index is filled behind ingest (see `index_search`): it holds
-- the alerts with row <= indexed_row. Everything stored so far is indexed.
CREATE TABLE search_state (
    id          INTEGER PRIMARY KEY CHECK (id = 0),
    indexed_row INTEGER NOT NULL
);
INSERT INTO search_state (id, indexed_row) SELECT 0, coalesce(max(row), 0) FROM alerts;
",
    bundles::MIGRATION,
    r"
-- Alert counts per minute and per hour (span_ms), level, status and
-- source, kept by every transaction that adds, deletes or re-triages
-- alerts, so `alert_counts` reads whole hours and minutes from here and
-- scans only the sub-minute ends of its range. Rows at zero are deleted.
CREATE TABLE alert_rollup (
    span_ms  INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    level    INTEGER NOT NULL,
    status   INTEGER NOT NULL,
    source   INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (span_ms, start_ms, level, status, source)
) WITHOUT ROWID;
-- The alerts already stored (the bound is `query::ROLLUP_MIN_MS`).
INSERT INTO alert_rollup (span_ms, start_ms, level, status, source, count)
SELECT 60000, timestamp_ms - (((timestamp_ms % 60000) + 60000) % 60000) AS m,
       level, status, source, count(*)
FROM alerts WHERE timestamp_ms >= -9223372036854000000
GROUP BY m, level, status, source;
INSERT INTO alert_rollup (span_ms, start_ms, level, status, source, count)
SELECT 3600000, start_ms - (((start_ms % 3600000) + 3600000) % 3600000) AS h,
       level, status, source, sum(count)
FROM alert_rollup WHERE span_ms = 60000
GROUP BY h, level, status, source;
",
    // Windows/macOS agents streaming to `GET /api/v1/agents/stream`: the
    // device each was enrolled as, its platform and its secret's hash.
    r"
CREATE TABLE agents (
    device_id    TEXT PRIMARY KEY,
    platform     TEXT NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_ms   INTEGER NOT NULL
);
",
    hunts::MIGRATION,
];

/// How [`SqliteStore::open_with`] opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// `synchronous=FULL` (fsync at every commit: nothing committed is lost
    /// on a power cut) instead of the default `NORMAL` (see the crate docs).
    pub durable: bool,
    /// Writer page cache in MiB (readers get half each).
    pub cache_mib: u32,
    /// How many stored alerts the text-search index may lag behind ingest
    /// (0: index in the inserting transaction). Searches are complete
    /// either way: the un-indexed tail is scanned.
    pub search_lag_alerts: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durable: false,
            cache_mib: 128,
            search_lag_alerts: 100_000,
        }
    }
}

impl SqliteOptions {
    /// The defaults with `synchronous=FULL`.
    #[must_use]
    pub fn durable() -> Self {
        Self {
            durable: true,
            ..Self::default()
        }
    }
}

/// The SQLite store. Cheap to clone (shared connections).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    search_lag: i64,
    /// Wakes the background indexer (dropping it stops the thread).
    indexer: Option<std::sync::mpsc::SyncSender<()>>,
    /// Writes waiting for the writer connection: the indexer yields to them.
    waiting: std::sync::atomic::AtomicUsize,
}

/// Maps a SQLite error to [`StoreError::Backend`] naming the operation.
fn be(op: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{op}: {e}"))
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

fn to_values(params: Vec<Param>) -> Vec<Value> {
    params
        .into_iter()
        .map(|p| match p {
            Param::Int(i) => Value::Integer(i),
            Param::Text(t) => Value::Text(t),
        })
        .collect()
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings
    /// its schema up to date. Blocking: call it before serving, or from
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// The file cannot be opened, is not a Picket database, or has a schema
    /// newer than this build.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// [`SqliteStore::open`] with options.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let op = format!("open {}", path.display());
        let writer = Connection::open(&path).map_err(be(&op))?;
        configure(&writer, &op, Conn::Writer, options)?;
        migrate(&writer, &op)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(be(&op))?;
            configure(&r, &op, Conn::Reader, options)?;
            readers.push(r);
        }
        let search_lag = i64::from(options.search_lag_alerts);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let inner = Arc::new(Inner {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(readers),
            permits: Arc::new(Semaphore::new(READERS)),
            search_lag,
            indexer: (search_lag > 0).then_some(tx),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        });
        {
            let weak = Arc::downgrade(&inner);
            let c = Connection::open(&inner.path).map_err(be(&op))?;
            c.busy_timeout(std::time::Duration::from_secs(10))
                .map_err(be(&op))?;
            std::thread::Builder::new()
                .name("picket-checkpointer".into())
                .spawn(move || checkpoint_loop(&weak, &c))
                .map_err(|e| StoreError::Backend(format!("{op}: checkpointer: {e}")))?;
        }
        if search_lag > 0 {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("picket-search-indexer".into())
                .spawn(move || indexer_loop(&weak, &rx))
                .map_err(|e| StoreError::Backend(format!("{op}: search indexer: {e}")))?;
        }
        Ok(Self { inner })
    }

    /// Brings the text-search index up to date with every stored alert
    /// (the background indexer does this by itself within moments; tests
    /// and tools call it to measure or check the indexed path).
    ///
    /// # Errors
    /// The database failed.
    pub async fn sync_search_index(&self) -> Result<(), StoreError> {
        const OP: &str = "sync_search_index";
        self.write(OP, |c| {
            while index_search(c, INDEX_CHUNK).map_err(be(OP))? > 0 {}
            Ok(())
        })
        .await
    }

    /// How many stored alerts are not in the text-search index yet.
    ///
    /// # Errors
    /// The database failed.
    pub async fn search_lag(&self) -> Result<u64, StoreError> {
        const OP: &str = "search_lag";
        self.read(OP, |c| {
            let lag: i64 = c
                .query_row(
                    "SELECT coalesce((SELECT max(row) FROM alerts), 0) - \
                     (SELECT indexed_row FROM search_state)",
                    [],
                    |r| r.get(0),
                )
                .map_err(be(OP))?;
            Ok(u64::try_from(lag).unwrap_or(0))
        })
        .await
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writes a consistent copy of the database to `dest` (`VACUUM INTO`)
    /// while the store keeps serving; `dest` must not exist.
    ///
    /// # Errors
    /// The copy failed (e.g. `dest` exists or the disk is full).
    pub async fn backup_to(&self, dest: impl AsRef<Path>) -> Result<(), StoreError> {
        const OP: &str = "backup_to";
        let dest = dest.as_ref().to_string_lossy().into_owned();
        let src = self.inner.path.clone();
        // A connection of its own: the pooled readers are query-only and
        // the writer must keep ingesting while the copy runs.
        tokio::task::spawn_blocking(move || {
            let c = Connection::open(&src).map_err(be(OP))?;
            c.busy_timeout(std::time::Duration::from_secs(10))
                .map_err(be(OP))?;
            c.execute("VACUUM INTO ?1", params![dest])
                .map(drop)
                .map_err(be(OP))
        })
        .await
        .map_err(|e| StoreError::Backend(format!("{OP}: task failed: {e}")))?
    }

    /// Runs `f` on the writer connection on the blocking pool.
    async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            inner.waiting.fetch_add(1, Ordering::SeqCst);
            let mut c = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
            inner.waiting.fetch_sub(1, Ordering::SeqCst);
            let r = f(&mut c);
            drop(c);
            if let Some(tx) = &inner.indexer {
                // Full means a wake-up is already pending.
                let _ = tx.try_send(());
            }
            r
        })
        .await
        .map_err(|e| StoreError::Backend(format!("{op}: task failed: {e}")))?
    }

    /// Runs `f` on a pooled read-only connection on the blocking pool.
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Backend(format!("{op}: reader pool closed: {e}")))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let conn = inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(mut conn) = conn else {
                return Err(StoreError::Backend(format!(
                    "{op}: no reader connection free"
                )));
            };
            let r = f(&mut conn);
            inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            drop(permit);
            r
        })
        .await
        .map_err(|e| StoreError::Backend(format!("{op}: task failed: {e}")))?
    }
}

/// Which connection [`configure`] sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Writer,
    Reader,
}

fn configure(
    c: &Connection,
    op: &str,
    kind: Conn,
    options: SqliteOptions,
) -> Result<(), StoreError> {
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(be(op))?;
    c.set_prepared_statement_cache_capacity(64);
    c.create_scalar_function(
        "picket_icontains",
        4,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let needle = ctx.get_raw(0).as_str().map_err(|e| {
                rusqlite::Error::UserFunctionError(format!("picket_icontains: {e}").into())
            })?;
            let hay = |i| ctx.get_raw(i).as_str_or_null().ok().flatten();
            Ok(query::icontains(needle, &[hay(1), hay(2), hay(3)]))
        },
    )
    .map_err(be(op))?;
    let cache_kib = i64::from(options.cache_mib) * 1024;
    if kind == Conn::Reader {
        c.execute_batch(&format!(
            "PRAGMA cache_size = -{}; PRAGMA query_only = 1;",
            cache_kib / 2
        ))
        .map_err(be(op))?;
    } else {
        let mode: String = c
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(be(op))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "{op}: cannot enable WAL mode (journal_mode is {mode})"
            )));
        }
        // NORMAL in WAL mode: commits are not fsynced, the WAL is at each
        // checkpoint. A power cut can lose the last commits since then but
        // never corrupts the file; a process crash loses nothing.
        let sync = if options.durable { "FULL" } else { "NORMAL" };
        c.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA cache_size = -{cache_kib}; \
             PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = 67108864; \
             PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES};"
        ))
        .map_err(be(op))?;
    }
    Ok(())
}

fn migrate(c: &Connection, op: &str) -> Result<(), StoreError> {
    migrate_to(c, op, MIGRATIONS.len())
}

/// Applies the migrations up to `target` (their number).
fn migrate_to(c: &Connection, op: &str, target: usize) -> Result<(), StoreError> {
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(be(op))?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > known {
        return Err(StoreError::Backend(format!(
            "{op}: schema version {version} is newer than this build knows ({known})"
        )));
    }
    for (i, m) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target)
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = c.unchecked_transaction().map_err(be(op))?;
        tx.execute_batch(m)
            .map_err(|e| StoreError::Backend(format!("{op}: migration {}: {e}", i + 1)))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(be(op))?;
        tx.commit().map_err(be(op))?;
    }
    Ok(())
}

fn raw_alert(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAlert> {
    let event: String = r.get(14)?;
    Ok(RawAlert {
        row: r.get(0)?,
        id: r.get(1)?,
        device_id: r.get(2)?,
        seq: r.get(3)?,
        timestamp_ms: r.get(4)?,
        received_ms: r.get(5)?,
        level: r.get(6)?,
        source: r.get(7)?,
        rule_id: r.get(8)?,
        rule_title: r.get(9)?,
        techniques: r.get(10)?,
        image: r.get(11)?,
        command_line: r.get(12)?,
        path: r.get(13)?,
        event: serde_json::from_str(&event).map_err(|e| e.to_string()),
        status: r.get(15)?,
        assignee: r.get(16)?,
        updated_ms: r.get(17)?,
    })
}

fn raw_device(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDevice> {
    Ok(RawDevice {
        id: r.get(0)?,
        hostname: r.get(1)?,
        public_key: r.get(2)?,
        cert_serial: r.get(3)?,
        enrolled_ms: r.get(4)?,
        revoked_ms: r.get(5)?,
        last_seen_ms: r.get(6)?,
        last_alert_seq: r.get(7)?,
        heartbeat: r.get(8)?,
        platform: r.get(9)?,
    })
}

const USER_COLUMNS: &str = "id, name, role, password_hash, disabled, created_ms";

fn raw_user(
    r: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<(i64, String, String, String, bool, i64)> {
    Ok((
        r.get(at)?,
        r.get(at + 1)?,
        r.get(at + 2)?,
        r.get(at + 3)?,
        r.get(at + 4)?,
        r.get(at + 5)?,
    ))
}

fn decode_user(op: &str, u: (i64, String, String, String, bool, i64)) -> Result<User, StoreError> {
    let (id, name, role, password_hash, disabled, created_ms) = u;
    let role = Role::parse(&role).ok_or_else(|| {
        StoreError::Backend(format!("{op}: user {id} ({name}): unknown role {role:?}"))
    })?;
    Ok(User {
        id,
        name,
        role,
        password_hash,
        disabled,
        created_ms,
    })
}

const TOKEN_COLUMNS: &str =
    "id, token_hash, label, created_by, created_ms, expires_ms, used_ms, used_by";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnrollmentToken> {
    Ok(EnrollmentToken {
        id: r.get(0)?,
        token_hash: r.get(1)?,
        label: r.get(2)?,
        created_by: r.get(3)?,
        created_ms: r.get(4)?,
        expires_ms: r.get(5)?,
        used_ms: r.get(6)?,
        used_by: r.get(7)?,
    })
}

fn get_device(c: &Connection, op: &str, id: &str) -> Result<Option<Device>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"
    ))
    .and_then(|mut s| s.query_row(params![id], raw_device).optional())
    .map_err(be(op))?
    .map(|d| d.decode(op))
    .transpose()
}

fn get_alert(c: &Connection, op: &str, id: &str) -> Result<Option<Alert>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = ?1"
    ))
    .and_then(|mut s| s.query_row(params![id], raw_alert).optional())
    .map_err(be(op))?
    .map(|a| a.decode(op).map(|(_, a)| a))
    .transpose()
}

fn get_user(c: &Connection, op: &str, id: i64) -> Result<Option<User>, StoreError> {
    c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
        .and_then(|mut s| s.query_row(params![id], |r| raw_user(r, 0)).optional())
        .map_err(be(op))?
        .map(|u| decode_user(op, u))
        .transpose()
}

/// The search watermark: alerts with `row` up to it are in `alerts_fts`.
fn indexed_row(c: &Connection, op: &str) -> Result<i64, StoreError> {
    c.prepare_cached("SELECT indexed_row FROM search_state")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(be(op))
}

fn select_alerts(
    c: &Connection,
    op: &str,
    built: query::Built,
) -> Result<Vec<(i64, Alert)>, StoreError> {
    let mut stmt = c.prepare_cached(&built.sql).map_err(be(op))?;
    let values = to_values(built.params);
    let raws = stmt
        .query_map(rusqlite::params_from_iter(values.iter()), raw_alert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(be(op))?;
    raws.into_iter().map(|r| r.decode(op)).collect()
}

/// Adds up to `max` alerts past the search watermark to the text-search
/// index and moves the watermark; returns how many stored alerts remain
/// un-indexed. One `INSERT … SELECT`: no row leaves SQLite.
fn index_search(c: &Connection, max: i64) -> rusqlite::Result<i64> {
    let (w, top) = search_bounds(c)?;
    if top <= w {
        return Ok(0);
    }
    let upto = top.min(w.saturating_add(max));
    c.prepare_cached(
        "INSERT INTO alerts_fts (rowid, image, command_line, path) \
         SELECT row, image, command_line, path FROM alerts WHERE row > ?1 AND row <= ?2 \
         AND (image IS NOT NULL OR command_line IS NOT NULL OR path IS NOT NULL)",
    )?
    .execute(params![w, upto])?;
    c.prepare_cached("UPDATE search_state SET indexed_row = ?1")?
        .execute(params![upto])?;
    Ok(top - upto)
}

/// Applies the rollup changes of a transaction, one upsert per key;
/// rows that reach zero go.
fn apply_rollup(c: &Connection, delta: &query::RollupDelta) -> rusqlite::Result<()> {
    let changes = delta.changes();
    if changes.is_empty() {
        return Ok(());
    }
    let mut up = c.prepare_cached(
        "INSERT INTO alert_rollup (span_ms, start_ms, level, status, source, count) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (span_ms, start_ms, level, status, source) \
         DO UPDATE SET count = count + excluded.count RETURNING count",
    )?;
    let mut del = c.prepare_cached(
        "DELETE FROM alert_rollup WHERE span_ms = ?1 AND start_ms = ?2 AND level = ?3 \
         AND status = ?4 AND source = ?5",
    )?;
    for (k, n) in changes {
        let left: i64 = up.query_row(
            params![k.span_ms, k.start_ms, k.level, k.status, k.source, n],
            |r| r.get(0),
        )?;
        if left <= 0 {
            del.execute(params![k.span_ms, k.start_ms, k.level, k.status, k.source])?;
        }
    }
    Ok(())
}

/// The checkpointer: every [`CHECKPOINT_EVERY`], a `PASSIVE` checkpoint on
/// its own connection (it never blocks the writer or the readers; with
/// nothing new in the WAL it does nothing). Ends with the store.
fn checkpoint_loop(store: &Weak<Inner>, c: &Connection) {
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        if store.strong_count() == 0 {
            return;
        }
        // A failed checkpoint is retried next time; the writer's own
        // autocheckpoint bounds the WAL meanwhile.
        let _ = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}

/// The search watermark and the highest stored row.
fn search_bounds(c: &Connection) -> rusqlite::Result<(i64, i64)> {
    c.prepare_cached(
        "SELECT indexed_row, coalesce((SELECT max(row) FROM alerts), 0) FROM search_state",
    )?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// The background indexer: after writes (or every second), indexes what
/// ingest left behind in [`INDEX_CHUNK`] transactions, stepping aside
/// while another write waits for the connection. Ends with the store.
fn indexer_loop(store: &Weak<Inner>, wake: &std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        match wake.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        loop {
            let Some(inner) = store.upgrade() else { return };
            if inner.waiting.load(Ordering::SeqCst) > 0 {
                drop(inner);
                std::thread::sleep(std::time::Duration::from_millis(2));
                continue;
            }
            let left = {
                let mut c = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
                c.transaction_with_behavior(TransactionBehavior::Immediate)
                    .and_then(|tx| {
                        let left = index_search(&tx, INDEX_CHUNK)?;
                        tx.commit()?;
                        Ok(left)
                    })
            };
            match left {
                Ok(0) => break,
                Ok(_) => {}
                // Retried at the next wake-up; meanwhile ingest keeps the
                // lag bounded by itself and searches scan the tail.
                Err(_) => break,
            }
        }
    }
}

/// Deletes alerts (`row`, `id`, `timestamp_ms`, `techniques` JSON) with
/// their notes, technique keys and search entries, inside `tx`.
fn delete_victims(
    tx: &rusqlite::Transaction<'_>,
    op: &str,
    victims: &[(i64, String, i64, String)],
    indexed_row: i64,
) -> Result<(), StoreError> {
    {
        let mut del_alert = tx
            .prepare_cached("DELETE FROM alerts WHERE row = ?1")
            .map_err(be(op))?;
        let mut del_fts = tx
            .prepare_cached("DELETE FROM alerts_fts WHERE rowid = ?1")
            .map_err(be(op))?;
        let mut del_notes = tx
            .prepare_cached("DELETE FROM notes WHERE alert_id = ?1")
            .map_err(be(op))?;
        let mut del_key = tx
            .prepare_cached(
                "DELETE FROM alert_techniques WHERE technique = ?1 AND timestamp_ms = ?2 AND row = ?3",
            )
            .map_err(be(op))?;
        let mut del_keys_scan = tx
            .prepare_cached("DELETE FROM alert_techniques WHERE row = ?1")
            .map_err(be(op))?;
        for (row, id, ts, techniques) in victims {
            del_alert.execute(params![row]).map_err(be(op))?;
            if *row <= indexed_row {
                del_fts.execute(params![row]).map_err(be(op))?;
            }
            del_notes.execute(params![id]).map_err(be(op))?;
            match serde_json::from_str::<Vec<String>>(techniques) {
                Ok(t) => {
                    for k in query::technique_keys(&t) {
                        del_key.execute(params![k, ts, row]).map_err(be(op))?;
                    }
                }
                // A damaged row must not stop retention forever: find its
                // keys the slow way.
                Err(_) => {
                    del_keys_scan.execute(params![row]).map_err(be(op))?;
                }
            }
        }
    }
    Ok(())
}

/// After deleting rows: the newest row numbers may be handed out again, so
/// they must not count as indexed.
fn clamp_indexed_row(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE search_state SET indexed_row = \
         min(indexed_row, coalesce((SELECT max(row) FROM alerts), 0))",
        [],
    )
}

/// Deletes up to `limit` of the oldest alerts (older than `before_ms` if
/// given) with their notes, technique keys and search entries, in one
/// transaction. Returns how many went.
fn delete_oldest(
    c: &mut Connection,
    before_ms: Option<i64>,
    limit: i64,
) -> Result<u64, StoreError> {
    const OP: &str = "apply_retention";
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(be(OP))?;
    let indexed_row: i64 = tx
        .query_row("SELECT indexed_row FROM search_state", [], |r| r.get(0))
        .map_err(be(OP))?;
    let mut rollup = query::RollupDelta::default();
    let victims: Vec<(i64, String, i64, String)> = {
        let mut s = tx
            .prepare_cached(
                "SELECT row, id, timestamp_ms, techniques, level, status, source FROM alerts \
                 WHERE timestamp_ms < ?1 AND hunt_id IS NULL ORDER BY timestamp_ms, row LIMIT ?2",
            )
            .map_err(be(OP))?;
        s.query_map(params![before_ms.unwrap_or(i64::MAX), limit], |r| {
            let ts = r.get(2)?;
            rollup.add_stored(ts, r.get(4)?, r.get(5)?, r.get(6)?, -1);
            Ok((r.get(0)?, r.get(1)?, ts, r.get(3)?))
        })
        .and_then(Iterator::collect)
        .map_err(be(OP))?
    };
    delete_victims(&tx, OP, &victims, indexed_row)?;
    apply_rollup(&tx, &rollup).map_err(be(OP))?;
    clamp_indexed_row(&tx).map_err(be(OP))?;
    tx.commit().map_err(be(OP))?;
    Ok(victims.len() as u64)
}

impl SqliteStore {
    /// Stores alerts in one transaction; with `hunt`, as that hunting
    /// job's: `hunt_id` set, not in the rollup, device sequence numbers
    /// untouched.
    async fn insert_alert_rows(
        &self,
        op: &'static str,
        alerts: &[NewAlert],
        hunt: Option<i64>,
    ) -> Result<InsertReport, StoreError> {
        let op_name = op;
        if alerts.is_empty() {
            return Ok(InsertReport::default());
        }
        let rows = alerts
            .iter()
            .map(AlertIn::prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let search_lag = self.inner.search_lag;
        self.write(op, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be(op_name))?;
            let mut report = InsertReport::default();
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT INTO alerts (id, device_id, seq, timestamp_ms, received_ms, level, \
                         source, rule_id, rule_title, techniques, image, command_line, path, event, \
                         updated_ms, hunt_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                         ?13, ?14, ?5, ?15) ON CONFLICT (id) DO NOTHING",
                    )
                    .map_err(be(op_name))?;
                let mut key = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO alert_techniques (technique, timestamp_ms, row) \
                         VALUES (?1, ?2, ?3)",
                    )
                    .map_err(be(op_name))?;
                let mut max_seq: BTreeMap<&str, i64> = BTreeMap::new();
                let mut rollup = query::RollupDelta::default();
                for a in &rows {
                    let seq = max_seq.entry(a.device_id.as_str()).or_insert(a.seq);
                    *seq = (*seq).max(a.seq);
                    let n = ins
                        .execute(params![
                            a.id,
                            a.device_id,
                            a.seq,
                            a.timestamp_ms,
                            a.received_ms,
                            a.level,
                            a.source,
                            a.rule_id,
                            a.rule_title,
                            a.techniques,
                            a.image,
                            a.command_line,
                            a.path,
                            a.event,
                            hunt
                        ])
                        .map_err(be(op_name))?;
                    if n == 0 {
                        report.duplicates += 1;
                        continue;
                    }
                    report.inserted += 1;
                    if hunt.is_none() {
                        rollup.add(a.timestamp_ms, a.level, NEW_STATUS, a.source, 1);
                    }
                    let row = tx.last_insert_rowid();
                    for k in &a.keys {
                        key.execute(params![k, a.timestamp_ms, row]).map_err(be(op_name))?;
                    }
                }
                let mut dev = tx
                    .prepare_cached(
                        "UPDATE devices SET last_alert_seq = max(last_alert_seq, ?2) WHERE id = ?1",
                    )
                    .map_err(be(op_name))?;
                for (d, s) in max_seq.into_iter().filter(|_| hunt.is_none()) {
                    dev.execute(params![d, s]).map_err(be(op_name))?;
                }
                apply_rollup(&tx, &rollup).map_err(be(op_name))?;
            }
            // The search index may lag by `search_lag` alerts; beyond that
            // this transaction indexes the excess itself, so the lag (and
            // the tail a search scans) stays bounded whatever the indexer
            // thread manages.
            let (w, top) = search_bounds(&tx).map_err(be(op_name))?;
            let excess = top - w - search_lag;
            if excess > 0 {
                index_search(&tx, excess).map_err(be(op_name))?;
            }
            tx.commit().map_err(be(op_name))?;
            Ok(report)
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_device(&self, device: NewDevice) -> Result<Device, StoreError> {
        self.write("insert_device", move |c| {
            let r = c.execute(
                "INSERT INTO devices (id, hostname, public_key, cert_serial, agent_version, enrolled_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    device.id,
                    device.hostname,
                    device.public_key,
                    device.cert_serial,
                    device.agent_version,
                    device.enrolled_ms
                ],
            );
            match r {
                Ok(_) => Ok(Device {
                    id: device.id,
                    hostname: device.hostname,
                    public_key: device.public_key,
                    cert_serial: device.cert_serial,
                    enrolled_ms: device.enrolled_ms,
                    revoked_ms: None,
                    last_seen_ms: None,
                    last_alert_seq: 0,
                    heartbeat: None,
                    platform: PLATFORM_LINUX.to_owned(),
                }),
                Err(e) if is_constraint(&e) => Err(StoreError::Conflict {
                    what: "device",
                    id: device.id,
                }),
                Err(e) => Err(be("insert_device")(e)),
            }
        })
        .await
    }

    async fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let id = id.to_owned();
        self.read("device", move |c| get_device(c, "device", &id))
            .await
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.read("devices", |c| {
            const OP: &str = "devices";
            let mut s = c
                .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id"))
                .map_err(be(OP))?;
            let raws: Vec<RawDevice> = s
                .query_map([], raw_device)
                .and_then(Iterator::collect)
                .map_err(be(OP))?;
            raws.into_iter().map(|d| d.decode(OP)).collect()
        })
        .await
    }

    async fn set_device_identity(
        &self,
        id: &str,
        public_key: &[u8],
        cert_serial: &str,
    ) -> Result<Device, StoreError> {
        const OP: &str = "set_device_identity";
        let id = id.to_owned();
        let public_key = public_key.to_vec();
        let cert_serial = cert_serial.to_owned();
        self.write(OP, move |c| {
            c.execute(
                "UPDATE devices SET public_key = ?2, cert_serial = ?3 \
                 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, public_key, cert_serial],
            )
            .map_err(be(OP))?;
            get_device(c, OP, &id)?.ok_or(StoreError::NotFound { what: "device", id })
        })
        .await
    }

    async fn revoke_device(&self, id: &str, at_ms: i64) -> Result<Device, StoreError> {
        let id = id.to_owned();
        self.write("revoke_device", move |c| {
            const OP: &str = "revoke_device";
            c.execute(
                "UPDATE devices SET revoked_ms = coalesce(revoked_ms, ?2) WHERE id = ?1",
                params![id, at_ms],
            )
            .map_err(be(OP))?;
            get_device(c, OP, &id)?.ok_or(StoreError::NotFound { what: "device", id })
        })
        .await
    }

    async fn record_heartbeat(
        &self,
        id: &str,
        hb: HeartbeatInfo,
    ) -> Result<HeartbeatOutcome, StoreError> {
        const OP: &str = "record_heartbeat";
        let id = id.to_owned();
        let json = serde_json::to_string(&hb)
            .map_err(|e| StoreError::Backend(format!("{OP}: device {id}: {e}")))?;
        self.write(OP, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be(OP))?;
            let last: Option<Option<String>> = tx
                .query_row(
                    "SELECT heartbeat FROM devices WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(be(OP))?;
            let Some(last) = last else {
                return Err(StoreError::NotFound { what: "device", id });
            };
            // A damaged stored heartbeat must not block the device's
            // heartbeats forever: it counts as none.
            if let Some(last) = last.and_then(|j| serde_json::from_str::<HeartbeatInfo>(&j).ok()) {
                if !hb.is_newer_than(&last) {
                    return Ok(HeartbeatOutcome::Stale(Box::new(last)));
                }
            }
            tx.execute(
                "UPDATE devices SET heartbeat = ?2, \
                 last_seen_ms = max(coalesce(last_seen_ms, ?3), ?3) WHERE id = ?1",
                params![id, json, hb.received_ms],
            )
            .map_err(be(OP))?;
            tx.commit().map_err(be(OP))?;
            Ok(HeartbeatOutcome::Recorded)
        })
        .await
    }

    async fn insert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        const OP: &str = "insert_agent";
        let a = agent.clone();
        self.write(OP, move |c| {
            match c.execute(
                "INSERT INTO agents (device_id, platform, secret_hash, created_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![a.device_id, a.platform, a.secret_hash, a.created_ms],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(StoreError::Conflict {
                    what: "agent",
                    id: a.device_id,
                }),
                Err(e) => Err(be(OP)(e)),
            }
        })
        .await
    }

    async fn agent_by_secret(&self, secret_hash: &str) -> Result<Option<AgentRecord>, StoreError> {
        const OP: &str = "agent_by_secret";
        let h = secret_hash.to_owned();
        self.read(OP, move |c| {
            c.prepare_cached(
                "SELECT device_id, platform, secret_hash, created_ms FROM agents \
                 WHERE secret_hash = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![h], |r| {
                    Ok(AgentRecord {
                        device_id: r.get(0)?,
                        platform: r.get(1)?,
                        secret_hash: r.get(2)?,
                        created_ms: r.get(3)?,
                    })
                })
                .optional()
            })
            .map_err(be(OP))
        })
        .await
    }

    async fn touch_device(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        const OP: &str = "touch_device";
        let id = id.to_owned();
        self.write(OP, move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE devices SET last_seen_ms = max(coalesce(last_seen_ms, ?2), ?2) \
                     WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![id, at_ms]))
                .map_err(be(OP))?;
            if n == 0 {
                return Err(StoreError::NotFound { what: "device", id });
            }
            Ok(())
        })
        .await
    }

    async fn insert_alerts(&self, alerts: &[NewAlert]) -> Result<InsertReport, StoreError> {
        self.insert_alert_rows("insert_alerts", alerts, None).await
    }

    async fn alerts(
        &self,
        filter: &AlertFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<AlertPage, StoreError> {
        const OP: &str = "alerts";
        if limit == 0 {
            return Ok(AlertPage {
                alerts: Vec::new(),
                next: None,
            });
        }
        let fetch = i64::from(limit) + 1;
        let filter = filter.clone();
        let limit = limit as usize;
        self.read(OP, move |c| {
            // One read transaction: the probe and every per-level query see
            // one snapshot.
            let tx = c.transaction().map_err(be(OP))?;
            let indexed_row = indexed_row(&tx, OP)?;
            let text_plan = match filter.text.as_deref() {
                Some(t) if query::fts_usable(t) => {
                    let hits: i64 = tx
                        .prepare_cached(
                            "SELECT count(*) FROM (SELECT rowid FROM alerts_fts \
                             WHERE alerts_fts MATCH ?1 LIMIT ?2)",
                        )
                        .and_then(|mut s| {
                            s.query_row(
                                params![query::fts_phrase(t), query::TEXT_PROBE_LIMIT],
                                |r| r.get(0),
                            )
                        })
                        .map_err(be(OP))?;
                    if hits >= query::TEXT_PROBE_LIMIT {
                        query::TextPlan::Scan
                    } else {
                        query::TextPlan::Index { indexed_row }
                    }
                }
                _ => query::TextPlan::Index { indexed_row },
            };
            let mut pages = Vec::new();
            for l in query::level_plan(&filter) {
                let q = query::list_query(Dialect::Sqlite, &filter, l, after, fetch, text_plan);
                pages.push(select_alerts(&tx, OP, q)?);
            }
            drop(tx);
            Ok(query::into_page(
                query::merge_pages(pages, limit + 1),
                limit,
            ))
        })
        .await
    }

    async fn alert(&self, id: &AlertId) -> Result<Option<Alert>, StoreError> {
        let id = id.clone();
        self.read("alert", move |c| get_alert(c, "alert", &id))
            .await
    }

    async fn update_alert(
        &self,
        id: &AlertId,
        update: &AlertUpdate,
        at_ms: i64,
    ) -> Result<Alert, StoreError> {
        const OP: &str = "update_alert";
        let id = id.clone();
        let status = update.status.map(query::status_code);
        let (set_assignee, assignee) = match &update.assignee {
            Some(a) => (true, a.clone()),
            None => (false, None),
        };
        self.write(OP, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be(OP))?;
            let before: Option<(i64, i64, i64, i64, bool)> = tx
                .query_row(
                    "SELECT timestamp_ms, level, status, source, hunt_id IS NOT NULL \
                     FROM alerts WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .map_err(be(OP))?;
            let Some((ts, level, old_status, source, of_hunt)) = before else {
                return Err(StoreError::NotFound { what: "alert", id });
            };
            tx.execute(
                "UPDATE alerts SET status = coalesce(?2, status), \
                 assignee = CASE WHEN ?3 THEN ?4 ELSE assignee END, updated_ms = ?5 \
                 WHERE id = ?1",
                params![id, status, set_assignee, assignee, at_ms],
            )
            .map_err(be(OP))?;
            // A hunting job's alerts are not in the rollup.
            if let Some(new_status) = status.filter(|s| i64::from(*s) != old_status && !of_hunt) {
                let mut rollup = query::RollupDelta::default();
                rollup.add_stored(ts, level, old_status, source, -1);
                rollup.add_stored(ts, level, i64::from(new_status), source, 1);
                apply_rollup(&tx, &rollup).map_err(be(OP))?;
            }
            let alert = get_alert(&tx, OP, &id)?;
            tx.commit().map_err(be(OP))?;
            alert.ok_or(StoreError::NotFound { what: "alert", id })
        })
        .await
    }

    async fn add_note(&self, id: &AlertId, note: &Note) -> Result<(), StoreError> {
        const OP: &str = "add_note";
        let id = id.clone();
        let note = note.clone();
        self.write(OP, move |c| {
            let exists = c
                .query_row(
                    "SELECT 1 FROM alerts WHERE id = ?1",
                    params![id],
                    |_| Ok(()),
                )
                .optional()
                .map_err(be(OP))?;
            if exists.is_none() {
                return Err(StoreError::NotFound { what: "alert", id });
            }
            c.execute(
                "INSERT INTO notes (alert_id, author, at_ms, text) VALUES (?1, ?2, ?3, ?4)",
                params![id, note.author, note.at_ms, note.text],
            )
            .map_err(be(OP))?;
            Ok(())
        })
        .await
    }

    async fn notes(&self, id: &AlertId) -> Result<Vec<Note>, StoreError> {
        const OP: &str = "notes";
        let id = id.clone();
        self.read(OP, move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT author, at_ms, text FROM notes WHERE alert_id = ?1 ORDER BY at_ms, id",
                )
                .map_err(be(OP))?;
            s.query_map(params![id], |r| {
                Ok(Note {
                    author: r.get(0)?,
                    at_ms: r.get(1)?,
                    text: r.get(2)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(be(OP))
        })
        .await
    }

    async fn alert_counts(
        &self,
        filter: &AlertFilter,
        bucket_ms: i64,
    ) -> Result<Vec<CountBucket>, StoreError> {
        const OP: &str = "alert_counts";
        query::check_bucket(bucket_ms)?;
        let filter = filter.clone();
        self.read(OP, move |c| {
            // One read transaction: the rollup and the scanned ends are
            // one snapshot.
            let tx = c.transaction().map_err(be(OP))?;
            let indexed_row = indexed_row(&tx, OP)?;
            let text_plan = query::TextPlan::Index { indexed_row };
            let mut built = Vec::new();
            match query::count_plan(&filter, bucket_ms) {
                None => built.push(query::count_query(
                    Dialect::Sqlite,
                    &filter,
                    bucket_ms,
                    text_plan,
                )),
                Some(parts) => {
                    for part in parts {
                        built.push(match part {
                            query::CountPart::Rollup { span_ms, lo, hi } => query::rollup_query(
                                Dialect::Sqlite,
                                &filter,
                                span_ms,
                                lo,
                                hi,
                                bucket_ms,
                            ),
                            query::CountPart::Scan { lo, hi } => {
                                let f = AlertFilter {
                                    since_ms: lo,
                                    until_ms: hi,
                                    ..filter.clone()
                                };
                                query::count_query(Dialect::Sqlite, &f, bucket_ms, text_plan)
                            }
                        });
                    }
                }
            }
            let mut rows: Vec<(i64, i64, i64)> = Vec::new();
            for b in built {
                let mut s = tx.prepare_cached(&b.sql).map_err(be(OP))?;
                let values = to_values(b.params);
                let part = s
                    .query_map(rusqlite::params_from_iter(values.iter()), |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(be(OP))?;
                rows.extend(part);
            }
            query::merge_counts(rows)
        })
        .await
    }

    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
        at_ms: i64,
    ) -> Result<User, StoreError> {
        const OP: &str = "create_user";
        let name = name.to_owned();
        let password_hash = password_hash.to_owned();
        self.write(OP, move |c| {
            match c.execute(
                "INSERT INTO users (name, role, password_hash, disabled, created_ms) \
                 VALUES (?1, ?2, ?3, 0, ?4)",
                params![name, role.as_str(), password_hash, at_ms],
            ) {
                Ok(_) => Ok(User {
                    id: c.last_insert_rowid(),
                    name,
                    role,
                    password_hash,
                    disabled: false,
                    created_ms: at_ms,
                }),
                Err(e) if is_constraint(&e) => Err(StoreError::Conflict {
                    what: "user",
                    id: name,
                }),
                Err(e) => Err(be(OP)(e)),
            }
        })
        .await
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        const OP: &str = "user_by_name";
        let name = name.to_owned();
        self.read(OP, move |c| {
            c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))
                .and_then(|mut s| s.query_row(params![name], |r| raw_user(r, 0)).optional())
                .map_err(be(OP))?
                .map(|u| decode_user(OP, u))
                .transpose()
        })
        .await
    }

    async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        self.read("user", move |c| get_user(c, "user", id)).await
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        const OP: &str = "users";
        self.read(OP, |c| {
            let mut s = c
                .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
                .map_err(be(OP))?;
            let raws: Vec<_> = s
                .query_map([], |r| raw_user(r, 0))
                .and_then(Iterator::collect)
                .map_err(be(OP))?;
            raws.into_iter().map(|u| decode_user(OP, u)).collect()
        })
        .await
    }

    async fn update_user(
        &self,
        id: i64,
        role: Option<Role>,
        password_hash: Option<&str>,
        disabled: Option<bool>,
    ) -> Result<User, StoreError> {
        const OP: &str = "update_user";
        let password_hash = password_hash.map(str::to_owned);
        self.write(OP, move |c| {
            c.execute(
                "UPDATE users SET role = coalesce(?2, role), \
                 password_hash = coalesce(?3, password_hash), disabled = coalesce(?4, disabled) \
                 WHERE id = ?1",
                params![id, role.map(Role::as_str), password_hash, disabled],
            )
            .map_err(be(OP))?;
            get_user(c, OP, id)?.ok_or_else(|| StoreError::NotFound {
                what: "user",
                id: id.to_string(),
            })
        })
        .await
    }

    async fn user_count(&self) -> Result<u64, StoreError> {
        const OP: &str = "user_count";
        self.read(OP, |c| {
            let n: i64 = c
                .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
                .map_err(be(OP))?;
            query::to_u64(OP, "count", n)
        })
        .await
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        const OP: &str = "create_session";
        let s = session.clone();
        self.write(OP, move |c| {
            match c.execute(
                "INSERT INTO sessions (token_hash, user_id, created_ms, expires_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![s.token_hash, s.user_id, s.created_ms, s.expires_ms],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(StoreError::Conflict {
                    what: "session",
                    id: format!("for user {}", s.user_id),
                }),
                Err(e) => Err(be(OP)(e)),
            }
        })
        .await
    }

    async fn session(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<(Session, User)>, StoreError> {
        const OP: &str = "session";
        let token_hash = token_hash.to_owned();
        self.read(OP, move |c| {
            let row = c
                .prepare_cached(
                    "SELECT s.token_hash, s.user_id, s.created_ms, s.expires_ms, \
                     u.id, u.name, u.role, u.password_hash, u.disabled, u.created_ms \
                     FROM sessions s JOIN users u ON u.id = s.user_id \
                     WHERE s.token_hash = ?1 AND s.expires_ms > ?2",
                )
                .and_then(|mut s| {
                    s.query_row(params![token_hash, now_ms], |r| {
                        Ok((
                            Session {
                                token_hash: r.get(0)?,
                                user_id: r.get(1)?,
                                created_ms: r.get(2)?,
                                expires_ms: r.get(3)?,
                            },
                            raw_user(r, 4)?,
                        ))
                    })
                    .optional()
                })
                .map_err(be(OP))?;
            row.map(|(s, u)| Ok((s, decode_user(OP, u)?))).transpose()
        })
        .await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        const OP: &str = "delete_session";
        let token_hash = token_hash.to_owned();
        self.write(OP, move |c| {
            c.execute(
                "DELETE FROM sessions WHERE token_hash = ?1",
                params![token_hash],
            )
            .map(drop)
            .map_err(be(OP))
        })
        .await
    }

    async fn delete_user_sessions(&self, user_id: i64) -> Result<(), StoreError> {
        const OP: &str = "delete_user_sessions";
        self.write(OP, move |c| {
            c.execute("DELETE FROM sessions WHERE user_id = ?1", params![user_id])
                .map(drop)
                .map_err(be(OP))
        })
        .await
    }

    async fn create_token(
        &self,
        token_hash: &str,
        label: &str,
        created_by: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<EnrollmentToken, StoreError> {
        const OP: &str = "create_token";
        let t = EnrollmentToken {
            id: 0,
            token_hash: token_hash.to_owned(),
            label: label.to_owned(),
            created_by: created_by.to_owned(),
            created_ms,
            expires_ms,
            used_ms: None,
            used_by: None,
        };
        self.write(OP, move |c| {
            match c.execute(
                "INSERT INTO enrollment_tokens (token_hash, label, created_by, created_ms, expires_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.token_hash, t.label, t.created_by, t.created_ms, t.expires_ms],
            ) {
                Ok(_) => Ok(EnrollmentToken {
                    id: c.last_insert_rowid(),
                    ..t
                }),
                Err(e) if is_constraint(&e) => Err(StoreError::Conflict {
                    what: "enrollment token",
                    id: t.label,
                }),
                Err(e) => Err(be(OP)(e)),
            }
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<EnrollmentToken>, StoreError> {
        const OP: &str = "tokens";
        self.read(OP, |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY created_ms DESC, id DESC"
                ))
                .map_err(be(OP))?;
            s.query_map([], token_row)
                .and_then(Iterator::collect)
                .map_err(be(OP))
        })
        .await
    }

    async fn use_token(
        &self,
        token_hash: &str,
        device: &DeviceId,
        now_ms: i64,
    ) -> Result<Result<EnrollmentToken, TokenRefusal>, StoreError> {
        const OP: &str = "use_token";
        let token_hash = token_hash.to_owned();
        let device = device.clone();
        self.write(OP, move |c| {
            // One conditional UPDATE: the check and the mark cannot be
            // separated by another caller (and the writer is single anyway).
            let used = c
                .query_row(
                    &format!(
                        "UPDATE enrollment_tokens SET used_ms = ?3, used_by = ?2 \
                         WHERE token_hash = ?1 AND used_ms IS NULL AND expires_ms > ?3 \
                         RETURNING {TOKEN_COLUMNS}"
                    ),
                    params![token_hash, device, now_ms],
                    token_row,
                )
                .optional()
                .map_err(be(OP))?;
            if let Some(t) = used {
                return Ok(Ok(t));
            }
            let state: Option<(Option<i64>, i64)> = c
                .query_row(
                    "SELECT used_ms, expires_ms FROM enrollment_tokens WHERE token_hash = ?1",
                    params![token_hash],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(be(OP))?;
            Ok(Err(match state {
                None => TokenRefusal::Invalid,
                Some((Some(_), _)) => TokenRefusal::Used,
                Some((None, _)) => TokenRefusal::Expired,
            }))
        })
        .await
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        const OP: &str = "audit";
        let e = entry.clone();
        let detail = serde_json::to_string(&e.detail)
            .map_err(|err| StoreError::Backend(format!("{OP}: {}: {err}", e.action)))?;
        self.write(OP, move |c| {
            c.prepare_cached(
                "INSERT INTO audit_log (at_ms, actor, action, target, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![e.at_ms, e.actor, e.action, e.target, detail]))
            .map(drop)
            .map_err(be(OP))
        })
        .await
    }

    async fn audit_log(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        const OP: &str = "audit_log";
        let built = query::audit_query(Dialect::Sqlite, filter, i64::from(limit));
        self.read(OP, move |c| {
            let mut s = c.prepare_cached(&built.sql).map_err(be(OP))?;
            let values = to_values(built.params);
            let rows: Vec<(i64, i64, String, String, String, String)> = s
                .query_map(rusqlite::params_from_iter(values.iter()), |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .and_then(Iterator::collect)
                .map_err(be(OP))?;
            rows.into_iter()
                .map(|(id, at_ms, actor, action, target, detail)| {
                    let detail = serde_json::from_str(&detail).map_err(|e| {
                        StoreError::Backend(format!("{OP}: entry {id}: bad detail JSON: {e}"))
                    })?;
                    Ok(AuditEntry {
                        id,
                        at_ms,
                        actor,
                        action,
                        target,
                        detail,
                    })
                })
                .collect()
        })
        .await
    }

    async fn apply_retention(
        &self,
        now_ms: i64,
        max_age_ms: Option<i64>,
        max_alerts: Option<u64>,
    ) -> Result<RetentionReport, StoreError> {
        const OP: &str = "apply_retention";
        let mut report = RetentionReport::default();
        if let Some(age) = max_age_ms {
            let cutoff = now_ms.saturating_sub(age);
            loop {
                let n = self
                    .write(OP, move |c| delete_oldest(c, Some(cutoff), RETENTION_CHUNK))
                    .await?;
                report.expired += n;
                if n < RETENTION_CHUNK as u64 {
                    break;
                }
            }
        }
        if let Some(max) = max_alerts {
            let total: i64 = self
                .read(OP, |c| {
                    c.query_row(
                        "SELECT count(*) FROM alerts WHERE hunt_id IS NULL",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(be(OP))
                })
                .await?;
            let mut excess = query::to_u64(OP, "alert count", total)?.saturating_sub(max);
            while excess > 0 {
                let chunk = excess.min(RETENTION_CHUNK as u64);
                let chunk_i = query::to_i64(OP, "chunk", chunk)?;
                let n = self
                    .write(OP, move |c| delete_oldest(c, None, chunk_i))
                    .await?;
                report.trimmed += n;
                excess -= chunk;
                if n < chunk {
                    break;
                }
            }
        }
        self.write(OP, move |c| {
            c.execute(
                "DELETE FROM sessions WHERE expires_ms <= ?1",
                params![now_ms],
            )
            .map(drop)
            .map_err(be(OP))
        })
        .await?;
        Ok(report)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        const OP: &str = "stats";
        self.read(OP, |c| {
            let (alerts, devices, pages, page_size): (i64, i64, i64, i64) = c
                .query_row(
                    "SELECT (SELECT count(*) FROM alerts), (SELECT count(*) FROM devices), \
                     (SELECT page_count FROM pragma_page_count()), \
                     (SELECT page_size FROM pragma_page_size())",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .map_err(be(OP))?;
            Ok(StoreStats {
                alerts: query::to_u64(OP, "alert count", alerts)?,
                devices: query::to_u64(OP, "device count", devices)?,
                bytes: u64::try_from(pages.saturating_mul(page_size)).ok(),
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping", |c| {
            c.query_row("SELECT 1", [], |_| Ok(())).map_err(be("ping"))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database from before the count rollup gets it filled from the
    /// alerts it already holds (statuses included).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rollup_migration_backfills_stored_alerts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        let before = MIGRATIONS
            .iter()
            .position(|m| m.contains("CREATE TABLE alert_rollup"))
            .expect("rollup migration");
        {
            let c = Connection::open(&path).expect("open");
            configure(&c, "test", Conn::Writer, SqliteOptions::default()).expect("configure");
            migrate_to(&c, "test", before).expect("old schema");
            // 5,000 alerts 7.9 s apart from 3 hours before an hour edge
            // (11 hours), and a few before 1970.
            c.execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 4999) \
                 INSERT INTO alerts (id, device_id, seq, timestamp_ms, received_ms, level, \
                 source, rule_id, rule_title, techniques, event, status, updated_ms) \
                 SELECT printf('%032x', i), 'd', i, \
                 CASE WHEN i < 3 THEN -1000 * i - 1 ELSE 1699988400000 + i * 7919 END, \
                 0, i % 5, i % 4, 'r', 'R', '[]', '{}', i % 3, 0 FROM n",
            )
            .expect("old alerts");
        }
        let store = SqliteStore::open(&path).expect("migrate");
        crate::query::tests::assert_counts_match_scan(&store).await;
    }
}
