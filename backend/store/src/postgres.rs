//! The PostgreSQL store: `tokio-postgres` behind a `deadpool` pool.
//!
//! Every pooled connection gets the store's `search_path` at startup, so
//! one database can hold several isolated stores (the tests use one schema
//! each). Ingest sends a whole batch as arrays in one `INSERT ... SELECT
//! FROM unnest(...) ON CONFLICT DO NOTHING RETURNING`: one round trip and
//! one plan for 256 alerts. See the crate docs for schema and backups.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

mod bundles;
mod hunts;

use crate::model::{
    AgentRecord, Alert, AlertFilter, AlertId, AlertPage, AlertUpdate, AuditEntry, AuditFilter,
    CountBucket, Cursor, Device, DeviceId, EnrollmentToken, HeartbeatInfo, HeartbeatOutcome,
    NewAlert, NewDevice, Note, RetentionReport, Role, Session, StoreStats, TokenRefusal, User,
    PLATFORM_LINUX,
};
use crate::query::{self, AlertIn, Dialect, Param, RawAlert, RawDevice, ALERT_COLUMNS};
use crate::{InsertReport, Store, StoreError};

/// The stored status of a new alert.
const NEW_STATUS: i16 = query::status_code(crate::model::AlertStatus::New);
/// Connections in the pool.
const POOL_SIZE: usize = 8;
/// Alerts deleted per retention transaction.
const RETENTION_CHUNK: i64 = 10_000;
/// Advisory lock key serializing `CREATE EXTENSION` across stores.
const EXTENSION_LOCK: i64 = 0x7069_636b_6574_0001;

/// Schema migrations; `{trgm}` is replaced by the schema holding `pg_trgm`.
/// `picket_schema_version` holds the number applied.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE devices (
    id             text PRIMARY KEY,
    hostname       text NOT NULL,
    public_key     bytea NOT NULL,
    cert_serial    text NOT NULL,
    agent_version  text NOT NULL,
    enrolled_ms    bigint NOT NULL,
    revoked_ms     bigint,
    last_seen_ms   bigint,
    last_alert_seq bigint NOT NULL DEFAULT 0,
    heartbeat      json
);
CREATE TABLE alerts (
    row          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text NOT NULL UNIQUE,
    device_id    text NOT NULL,
    seq          bigint NOT NULL,
    timestamp_ms bigint NOT NULL,
    received_ms  bigint NOT NULL,
    level        smallint NOT NULL,
    source       smallint NOT NULL,
    rule_id      text NOT NULL,
    rule_title   text NOT NULL,
    techniques   text NOT NULL,
    image        text,
    command_line text,
    path         text,
    event        json NOT NULL,
    status       smallint NOT NULL DEFAULT 0,
    assignee     text,
    updated_ms   bigint NOT NULL
);
CREATE INDEX alerts_time   ON alerts (timestamp_ms, row);
CREATE INDEX alerts_device ON alerts (device_id, timestamp_ms, row);
CREATE INDEX alerts_level  ON alerts (level, timestamp_ms, row);
CREATE INDEX alerts_rule   ON alerts (rule_id, timestamp_ms, row);
CREATE INDEX alerts_status ON alerts (status, timestamp_ms, row);
CREATE INDEX alerts_source ON alerts (source, timestamp_ms, row);
CREATE INDEX alerts_text ON alerts USING gin (
    (coalesce(image, '') || E'\x1f' || coalesce(command_line, '') || E'\x1f' || coalesce(path, ''))
    {trgm}.gin_trgm_ops
);
CREATE TABLE alert_techniques (
    technique    text NOT NULL,
    timestamp_ms bigint NOT NULL,
    row          bigint NOT NULL,
    PRIMARY KEY (technique, timestamp_ms, row)
);
CREATE TABLE notes (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id text NOT NULL,
    author   text NOT NULL,
    at_ms    bigint NOT NULL,
    text     text NOT NULL
);
CREATE INDEX notes_alert ON notes (alert_id, at_ms);
CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    role          text NOT NULL,
    password_hash text NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    created_ms    bigint NOT NULL
);
CREATE TABLE sessions (
    token_hash text PRIMARY KEY,
    user_id    bigint NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE TABLE enrollment_tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash text NOT NULL UNIQUE,
    label      text NOT NULL,
    created_by text NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    used_ms    bigint,
    used_by    text
);
CREATE TABLE audit_log (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms  bigint NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail json NOT NULL
);
CREATE INDEX audit_actor ON audit_log (actor, id);
",
    bundles::MIGRATION,
    r"
-- Alert counts per minute and per hour (span_ms), level, status and
-- source, kept by every transaction that adds, deletes or re-triages
-- alerts, so `alert_counts` reads whole hours and minutes from here and
-- scans only the sub-minute ends of its range. Rows at zero are deleted.
CREATE TABLE alert_rollup (
    span_ms  bigint NOT NULL,
    start_ms bigint NOT NULL,
    level    smallint NOT NULL,
    status   smallint NOT NULL,
    source   smallint NOT NULL,
    count    bigint NOT NULL,
    PRIMARY KEY (span_ms, start_ms, level, status, source)
);
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
    created_ms   bigint NOT NULL
);
",
    hunts::MIGRATION,
];

/// The PostgreSQL store. Cheap to clone (shared pool).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    schema: Option<String>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.schema)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// A Postgres error with its cause chain (tokio-postgres' own `Display`
/// says only "db error").
fn pg_msg(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(" (");
            s.push_str(d);
            s.push(')');
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn be(op: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{op}: {}", pg_msg(&e)))
}

fn is_unique(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

fn to_sql(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(i) => i as &(dyn ToSql + Sync),
            Param::Text(t) => t as &(dyn ToSql + Sync),
        })
        .collect()
}

fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && s.len() <= 63
}

impl PgStore {
    /// Connects to `url` (`postgres://user:pass@host/db`), using the
    /// server's default `search_path`, and brings the schema up to date.
    ///
    /// # Errors
    /// Bad URL, unreachable server, failed migration.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_inner(url, None).await
    }

    /// Like [`PgStore::connect`], but keeps every table in `schema`
    /// (created if missing; lowercase letters, digits and `_`).
    ///
    /// # Errors
    /// As [`PgStore::connect`], or an invalid schema name.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        if !valid_schema(schema) {
            return Err(StoreError::Backend(format!(
                "connect: invalid schema name {schema:?} (want [a-z_][a-z0-9_]*)"
            )));
        }
        Self::connect_inner(url, Some(schema.to_owned())).await
    }

    async fn connect_inner(url: &str, schema: Option<String>) -> Result<Self, StoreError> {
        let store = Self::pool(url, schema)?;
        store.migrate_to(MIGRATIONS.len()).await?;
        Ok(store)
    }

    /// The store over a new pool, before any migration.
    fn pool(url: &str, schema: Option<String>) -> Result<Self, StoreError> {
        const OP: &str = "connect";
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            StoreError::Backend(format!("{OP}: {}", pg_msg(&e)))
        })?;
        if let Some(s) = &schema {
            // `public` stays on the path: that is where pg_trgm lives.
            cfg.options(format!("-c search_path={s},public"));
        }
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Backend(format!("{OP}: pool: {e}")))?;
        Ok(Self { pool, schema })
    }

    /// The schema the store keeps its tables in, if one was given.
    #[must_use]
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    async fn client(&self, op: &str) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(format!("{op}: no connection: {e}")))
    }

    /// Applies the migrations up to `target` (their number).
    async fn migrate_to(&self, target: usize) -> Result<(), StoreError> {
        const OP: &str = "migrate";
        let mut c = self.client(OP).await?;
        if let Some(s) = &self.schema {
            c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .await
                .or_else(|e| if is_unique(&e) { Ok(()) } else { Err(e) })
                .map_err(be(OP))?;
        }
        // CREATE EXTENSION IF NOT EXISTS races with itself: serialize it.
        let tx = c.transaction().await.map_err(be(OP))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EXTENSION_LOCK])
            .await
            .map_err(be(OP))?;
        tx.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
            .await
            .map_err(|e| {
                StoreError::Backend(format!(
                    "{OP}: the pg_trgm extension is needed (postgresql-contrib): {}",
                    pg_msg(&e)
                ))
            })?;
        let trgm: String = tx
            .query_one(
                "SELECT n.nspname::text FROM pg_extension e \
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'",
                &[],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;

        let tx = c.transaction().await.map_err(be(OP))?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema())); \
             CREATE TABLE IF NOT EXISTS picket_schema_version (version integer NOT NULL)",
        )
        .await
        .map_err(be(OP))?;
        let version: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM picket_schema_version",
                &[],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(be(OP))?;
        let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
        if version > known {
            return Err(StoreError::Backend(format!(
                "{OP}: schema version {version} is newer than this build knows ({known})"
            )));
        }
        for (i, m) in MIGRATIONS
            .iter()
            .enumerate()
            .take(target)
            .skip(usize::try_from(version).unwrap_or(0))
        {
            let n = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.batch_execute(&m.replace("{trgm}", &trgm))
                .await
                .map_err(|e| StoreError::Backend(format!("{OP}: migration {n}: {}", pg_msg(&e))))?;
            tx.execute(
                "INSERT INTO picket_schema_version (version) VALUES ($1)",
                &[&n],
            )
            .await
            .map_err(be(OP))?;
        }
        tx.commit().await.map_err(be(OP))?;
        Ok(())
    }

    async fn query_alerts(
        c: &tokio_postgres::Transaction<'_>,
        op: &str,
        built: query::Built,
    ) -> Result<Vec<(i64, Alert)>, StoreError> {
        let stmt = c.prepare(&built.sql).await.map_err(be(op))?;
        let rows = c
            .query(&stmt, &to_sql(&built.params))
            .await
            .map_err(be(op))?;
        rows.iter()
            .map(|r| raw_alert(r).map_err(be(op))?.decode(op))
            .collect()
    }
}

fn raw_alert(r: &Row) -> Result<RawAlert, tokio_postgres::Error> {
    Ok(RawAlert {
        row: r.try_get(0)?,
        id: r.try_get(1)?,
        device_id: r.try_get(2)?,
        seq: r.try_get(3)?,
        timestamp_ms: r.try_get(4)?,
        received_ms: r.try_get(5)?,
        level: i64::from(r.try_get::<_, i16>(6)?),
        source: i64::from(r.try_get::<_, i16>(7)?),
        rule_id: r.try_get(8)?,
        rule_title: r.try_get(9)?,
        techniques: r.try_get(10)?,
        image: r.try_get(11)?,
        command_line: r.try_get(12)?,
        path: r.try_get(13)?,
        event: Ok(r.try_get(14)?),
        status: i64::from(r.try_get::<_, i16>(15)?),
        assignee: r.try_get(16)?,
        updated_ms: r.try_get(17)?,
    })
}

const DEVICE_SELECT: &str = "SELECT id, hostname, public_key, cert_serial, enrolled_ms, \
     revoked_ms, last_seen_ms, last_alert_seq, heartbeat::text, \
     (SELECT platform FROM agents WHERE agents.device_id = devices.id) FROM devices";

fn raw_device(r: &Row) -> Result<RawDevice, tokio_postgres::Error> {
    Ok(RawDevice {
        id: r.try_get(0)?,
        hostname: r.try_get(1)?,
        public_key: r.try_get(2)?,
        cert_serial: r.try_get(3)?,
        enrolled_ms: r.try_get(4)?,
        revoked_ms: r.try_get(5)?,
        last_seen_ms: r.try_get(6)?,
        last_alert_seq: r.try_get(7)?,
        heartbeat: r.try_get(8)?,
        platform: r.try_get(9)?,
    })
}

fn device_row(op: &str, r: &Row) -> Result<Device, StoreError> {
    raw_device(r).map_err(be(op))?.decode(op)
}

const USER_COLUMNS: &str = "id, name, role, password_hash, disabled, created_ms";

fn user_row(op: &str, r: &Row, at: usize) -> Result<User, StoreError> {
    let id: i64 = r.try_get(at).map_err(be(op))?;
    let name: String = r.try_get(at + 1).map_err(be(op))?;
    let role: String = r.try_get(at + 2).map_err(be(op))?;
    let role = Role::parse(&role).ok_or_else(|| {
        StoreError::Backend(format!("{op}: user {id} ({name}): unknown role {role:?}"))
    })?;
    Ok(User {
        id,
        name,
        role,
        password_hash: r.try_get(at + 3).map_err(be(op))?,
        disabled: r.try_get(at + 4).map_err(be(op))?,
        created_ms: r.try_get(at + 5).map_err(be(op))?,
    })
}

const TOKEN_COLUMNS: &str =
    "id, token_hash, label, created_by, created_ms, expires_ms, used_ms, used_by";

fn token_row(op: &str, r: &Row) -> Result<EnrollmentToken, StoreError> {
    let get = || -> Result<EnrollmentToken, tokio_postgres::Error> {
        Ok(EnrollmentToken {
            id: r.try_get(0)?,
            token_hash: r.try_get(1)?,
            label: r.try_get(2)?,
            created_by: r.try_get(3)?,
            created_ms: r.try_get(4)?,
            expires_ms: r.try_get(5)?,
            used_ms: r.try_get(6)?,
            used_by: r.try_get(7)?,
        })
    };
    get().map_err(be(op))
}

async fn get_device(
    c: &impl tokio_postgres::GenericClient,
    op: &str,
    id: &str,
) -> Result<Option<Device>, StoreError> {
    c.query_opt(&format!("{DEVICE_SELECT} WHERE id = $1"), &[&id])
        .await
        .map_err(be(op))?
        .map(|r| device_row(op, &r))
        .transpose()
}

async fn get_alert(
    c: &impl tokio_postgres::GenericClient,
    op: &str,
    id: &str,
) -> Result<Option<Alert>, StoreError> {
    c.query_opt(
        &format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = $1"),
        &[&id],
    )
    .await
    .map_err(be(op))?
    .map(|r| raw_alert(&r).map_err(be(op))?.decode(op).map(|(_, a)| a))
    .transpose()
}

async fn get_user(
    c: &impl tokio_postgres::GenericClient,
    op: &str,
    id: i64,
) -> Result<Option<User>, StoreError> {
    c.query_opt(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
        &[&id],
    )
    .await
    .map_err(be(op))?
    .map(|r| user_row(op, &r, 0))
    .transpose()
}

/// Applies the rollup changes of a transaction in one upsert, in key
/// order (so concurrent writers lock the rows in one order and cannot
/// deadlock); rows that reach zero go.
async fn apply_rollup(
    tx: &deadpool_postgres::Transaction<'_>,
    delta: &query::RollupDelta,
) -> Result<(), tokio_postgres::Error> {
    let changes = delta.changes();
    if changes.is_empty() {
        return Ok(());
    }
    let spans: Vec<i64> = changes.iter().map(|(k, _)| k.span_ms).collect();
    let starts: Vec<i64> = changes.iter().map(|(k, _)| k.start_ms).collect();
    let levels: Vec<i16> = changes.iter().map(|(k, _)| k.level).collect();
    let statuses: Vec<i16> = changes.iter().map(|(k, _)| k.status).collect();
    let sources: Vec<i16> = changes.iter().map(|(k, _)| k.source).collect();
    let ns: Vec<i64> = changes.iter().map(|(_, n)| *n).collect();
    let up = tx
        .prepare_cached(
            "INSERT INTO alert_rollup (span_ms, start_ms, level, status, source, count) \
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int2[], $4::int2[], $5::int2[], \
             $6::int8[]) AS d(span_ms, start_ms, level, status, source, count) \
             ORDER BY span_ms, start_ms, level, status, source \
             ON CONFLICT (span_ms, start_ms, level, status, source) \
             DO UPDATE SET count = alert_rollup.count + excluded.count",
        )
        .await?;
    tx.execute(&up, &[&spans, &starts, &levels, &statuses, &sources, &ns])
        .await?;
    if ns.iter().any(|n| *n < 0) {
        let del = tx
            .prepare_cached(
                "DELETE FROM alert_rollup r USING unnest($1::int8[], $2::int8[], $3::int2[], \
                 $4::int2[], $5::int2[]) AS d(span_ms, start_ms, level, status, source) \
                 WHERE r.span_ms = d.span_ms AND r.start_ms = d.start_ms AND r.level = d.level \
                 AND r.status = d.status AND r.source = d.source AND r.count <= 0",
            )
            .await?;
        tx.execute(&del, &[&spans, &starts, &levels, &statuses, &sources])
            .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn insert_device(&self, device: NewDevice) -> Result<Device, StoreError> {
        const OP: &str = "insert_device";
        let c = self.client(OP).await?;
        let r = c
            .execute(
                "INSERT INTO devices (id, hostname, public_key, cert_serial, agent_version, enrolled_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &device.id,
                    &device.hostname,
                    &device.public_key,
                    &device.cert_serial,
                    &device.agent_version,
                    &device.enrolled_ms,
                ],
            )
            .await;
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
            Err(e) if is_unique(&e) => Err(StoreError::Conflict {
                what: "device",
                id: device.id,
            }),
            Err(e) => Err(be(OP)(e)),
        }
    }

    async fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let c = self.client("device").await?;
        get_device(&**c, "device", id).await
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        const OP: &str = "devices";
        let c = self.client(OP).await?;
        c.query(&format!("{DEVICE_SELECT} ORDER BY id"), &[])
            .await
            .map_err(be(OP))?
            .iter()
            .map(|r| device_row(OP, r))
            .collect()
    }

    async fn set_device_identity(
        &self,
        id: &str,
        public_key: &[u8],
        cert_serial: &str,
    ) -> Result<Device, StoreError> {
        const OP: &str = "set_device_identity";
        let c = self.client(OP).await?;
        c.execute(
            "UPDATE devices SET public_key = $2, cert_serial = $3 \
             WHERE id = $1 AND revoked_ms IS NULL",
            &[&id, &public_key, &cert_serial],
        )
        .await
        .map_err(be(OP))?;
        get_device(&**c, OP, id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "device",
                id: id.to_owned(),
            })
    }

    async fn revoke_device(&self, id: &str, at_ms: i64) -> Result<Device, StoreError> {
        const OP: &str = "revoke_device";
        let c = self.client(OP).await?;
        c.execute(
            "UPDATE devices SET revoked_ms = coalesce(revoked_ms, $2) WHERE id = $1",
            &[&id, &at_ms],
        )
        .await
        .map_err(be(OP))?;
        get_device(&**c, OP, id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "device",
                id: id.to_owned(),
            })
    }

    async fn record_heartbeat(
        &self,
        id: &str,
        hb: HeartbeatInfo,
    ) -> Result<HeartbeatOutcome, StoreError> {
        const OP: &str = "record_heartbeat";
        let json = serde_json::to_value(&hb)
            .map_err(|e| StoreError::Backend(format!("{OP}: device {id}: {e}")))?;
        let mut c = self.client(OP).await?;
        let tx = c.transaction().await.map_err(be(OP))?;
        // The row lock orders concurrent heartbeats of one device (several
        // ingest replicas): each is checked against the one before it.
        let Some(row) = tx
            .query_opt(
                "SELECT heartbeat::text FROM devices WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(be(OP))?
        else {
            return Err(StoreError::NotFound {
                what: "device",
                id: id.to_owned(),
            });
        };
        let last: Option<String> = row.try_get(0).map_err(be(OP))?;
        // A damaged stored heartbeat must not block the device's
        // heartbeats forever: it counts as none.
        if let Some(last) = last.and_then(|j| serde_json::from_str::<HeartbeatInfo>(&j).ok()) {
            if !hb.is_newer_than(&last) {
                return Ok(HeartbeatOutcome::Stale(Box::new(last)));
            }
        }
        tx.execute(
            "UPDATE devices SET heartbeat = $2, last_seen_ms = greatest(last_seen_ms, $3) \
             WHERE id = $1",
            &[&id, &tokio_postgres::types::Json(&json), &hb.received_ms],
        )
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        Ok(HeartbeatOutcome::Recorded)
    }

    async fn insert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        const OP: &str = "insert_agent";
        let c = self.client(OP).await?;
        match c
            .execute(
                "INSERT INTO agents (device_id, platform, secret_hash, created_ms) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    &agent.device_id,
                    &agent.platform,
                    &agent.secret_hash,
                    &agent.created_ms,
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique(&e) => Err(StoreError::Conflict {
                what: "agent",
                id: agent.device_id.clone(),
            }),
            Err(e) => Err(be(OP)(e)),
        }
    }

    async fn agent_by_secret(&self, secret_hash: &str) -> Result<Option<AgentRecord>, StoreError> {
        const OP: &str = "agent_by_secret";
        let c = self.client(OP).await?;
        let row = c
            .query_opt(
                "SELECT device_id, platform, secret_hash, created_ms FROM agents \
                 WHERE secret_hash = $1",
                &[&secret_hash],
            )
            .await
            .map_err(be(OP))?;
        row.map(|r| {
            Ok(AgentRecord {
                device_id: r.try_get(0).map_err(be(OP))?,
                platform: r.try_get(1).map_err(be(OP))?,
                secret_hash: r.try_get(2).map_err(be(OP))?,
                created_ms: r.try_get(3).map_err(be(OP))?,
            })
        })
        .transpose()
    }

    async fn touch_device(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        const OP: &str = "touch_device";
        let c = self.client(OP).await?;
        let stmt = c
            .prepare_cached(
                "UPDATE devices SET last_seen_ms = greatest(last_seen_ms, $2) WHERE id = $1",
            )
            .await
            .map_err(be(OP))?;
        let n = c.execute(&stmt, &[&id, &at_ms]).await.map_err(be(OP))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "device",
                id: id.to_owned(),
            });
        }
        Ok(())
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
        let mut c = self.client(OP).await?;
        // REPEATABLE READ: every per-level query sees one snapshot.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(be(OP))?;
        let mut pages = Vec::new();
        for l in query::level_plan(filter) {
            let q = query::list_query(
                Dialect::Postgres,
                filter,
                l,
                after,
                fetch,
                query::TextPlan::Scan,
            );
            pages.push(Self::query_alerts(&tx, OP, q).await?);
        }
        tx.commit().await.map_err(be(OP))?;
        let limit = limit as usize;
        Ok(query::into_page(
            query::merge_pages(pages, limit + 1),
            limit,
        ))
    }

    async fn alert(&self, id: &AlertId) -> Result<Option<Alert>, StoreError> {
        let c = self.client("alert").await?;
        get_alert(&**c, "alert", id).await
    }

    async fn update_alert(
        &self,
        id: &AlertId,
        update: &AlertUpdate,
        at_ms: i64,
    ) -> Result<Alert, StoreError> {
        const OP: &str = "update_alert";
        let status = update.status.map(query::status_code);
        let (set_assignee, assignee) = match &update.assignee {
            Some(a) => (true, a.clone()),
            None => (false, None),
        };
        let not_found = || StoreError::NotFound {
            what: "alert",
            id: id.clone(),
        };
        let mut c = self.client(OP).await?;
        let tx = c.transaction().await.map_err(be(OP))?;
        let Some(before) = tx
            .query_opt(
                "SELECT timestamp_ms, level, status, source, hunt_id IS NOT NULL FROM alerts \
                 WHERE id = $1 FOR UPDATE",
                &[id],
            )
            .await
            .map_err(be(OP))?
        else {
            return Err(not_found());
        };
        let (ts, level, old_status, source, of_hunt): (i64, i16, i16, i16, bool) = (
            before.try_get(0).map_err(be(OP))?,
            before.try_get(1).map_err(be(OP))?,
            before.try_get(2).map_err(be(OP))?,
            before.try_get(3).map_err(be(OP))?,
            before.try_get(4).map_err(be(OP))?,
        );
        tx.execute(
            "UPDATE alerts SET status = coalesce($2, status), \
             assignee = CASE WHEN $3 THEN $4 ELSE assignee END, updated_ms = $5 \
             WHERE id = $1",
            &[id, &status, &set_assignee, &assignee, &at_ms],
        )
        .await
        .map_err(be(OP))?;
        // A hunting job's alerts are not in the rollup.
        if let Some(new_status) = status.filter(|s| *s != old_status && !of_hunt) {
            let mut rollup = query::RollupDelta::default();
            rollup.add(ts, level, old_status, source, -1);
            rollup.add(ts, level, new_status, source, 1);
            apply_rollup(&tx, &rollup).await.map_err(be(OP))?;
        }
        let alert = get_alert(&*tx, OP, id).await?;
        tx.commit().await.map_err(be(OP))?;
        alert.ok_or_else(not_found)
    }

    async fn add_note(&self, id: &AlertId, note: &Note) -> Result<(), StoreError> {
        const OP: &str = "add_note";
        let c = self.client(OP).await?;
        let n = c
            .execute(
                "INSERT INTO notes (alert_id, author, at_ms, text) \
                 SELECT $1::text, $2::text, $3::int8, $4::text WHERE EXISTS (SELECT 1 FROM alerts WHERE id = $1)",
                &[id, &note.author, &note.at_ms, &note.text],
            )
            .await
            .map_err(be(OP))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "alert",
                id: id.clone(),
            });
        }
        Ok(())
    }

    async fn notes(&self, id: &AlertId) -> Result<Vec<Note>, StoreError> {
        const OP: &str = "notes";
        let c = self.client(OP).await?;
        c.query(
            "SELECT author, at_ms, text FROM notes WHERE alert_id = $1 ORDER BY at_ms, id",
            &[id],
        )
        .await
        .map_err(be(OP))?
        .iter()
        .map(|r| {
            Ok(Note {
                author: r.try_get(0)?,
                at_ms: r.try_get(1)?,
                text: r.try_get(2)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(be(OP))
    }

    async fn alert_counts(
        &self,
        filter: &AlertFilter,
        bucket_ms: i64,
    ) -> Result<Vec<CountBucket>, StoreError> {
        const OP: &str = "alert_counts";
        query::check_bucket(bucket_ms)?;
        let scan = |f: &AlertFilter| {
            query::count_query(Dialect::Postgres, f, bucket_ms, query::TextPlan::Scan)
        };
        let built: Vec<query::Built> = match query::count_plan(filter, bucket_ms) {
            None => vec![scan(filter)],
            Some(parts) => parts
                .into_iter()
                .map(|part| match part {
                    query::CountPart::Rollup { span_ms, lo, hi } => {
                        query::rollup_query(Dialect::Postgres, filter, span_ms, lo, hi, bucket_ms)
                    }
                    query::CountPart::Scan { lo, hi } => scan(&AlertFilter {
                        since_ms: lo,
                        until_ms: hi,
                        ..filter.clone()
                    }),
                })
                .collect(),
        };
        let mut c = self.client(OP).await?;
        // REPEATABLE READ: the rollup and the scanned ends are one snapshot.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(be(OP))?;
        let mut rows = Vec::new();
        for b in built {
            for r in tx.query(&b.sql, &to_sql(&b.params)).await.map_err(be(OP))? {
                let bucket: i64 = r.try_get(0).map_err(be(OP))?;
                let l: i16 = r.try_get(1).map_err(be(OP))?;
                let n: i64 = r.try_get(2).map_err(be(OP))?;
                rows.push((bucket, i64::from(l), n));
            }
        }
        tx.commit().await.map_err(be(OP))?;
        query::merge_counts(rows)
    }

    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
        at_ms: i64,
    ) -> Result<User, StoreError> {
        const OP: &str = "create_user";
        let c = self.client(OP).await?;
        match c
            .query_one(
                &format!(
                    "INSERT INTO users (name, role, password_hash, disabled, created_ms) \
                     VALUES ($1, $2, $3, false, $4) RETURNING {USER_COLUMNS}"
                ),
                &[&name, &role.as_str(), &password_hash, &at_ms],
            )
            .await
        {
            Ok(r) => user_row(OP, &r, 0),
            Err(e) if is_unique(&e) => Err(StoreError::Conflict {
                what: "user",
                id: name.to_owned(),
            }),
            Err(e) => Err(be(OP)(e)),
        }
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        const OP: &str = "user_by_name";
        let c = self.client(OP).await?;
        c.query_opt(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"),
            &[&name],
        )
        .await
        .map_err(be(OP))?
        .map(|r| user_row(OP, &r, 0))
        .transpose()
    }

    async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        let c = self.client("user").await?;
        get_user(&**c, "user", id).await
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        const OP: &str = "users";
        let c = self.client(OP).await?;
        c.query(
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"),
            &[],
        )
        .await
        .map_err(be(OP))?
        .iter()
        .map(|r| user_row(OP, r, 0))
        .collect()
    }

    async fn update_user(
        &self,
        id: i64,
        role: Option<Role>,
        password_hash: Option<&str>,
        disabled: Option<bool>,
    ) -> Result<User, StoreError> {
        const OP: &str = "update_user";
        let c = self.client(OP).await?;
        c.query_opt(
            &format!(
                "UPDATE users SET role = coalesce($2, role), \
                 password_hash = coalesce($3, password_hash), disabled = coalesce($4, disabled) \
                 WHERE id = $1 RETURNING {USER_COLUMNS}"
            ),
            &[&id, &role.map(Role::as_str), &password_hash, &disabled],
        )
        .await
        .map_err(be(OP))?
        .map(|r| user_row(OP, &r, 0))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound {
            what: "user",
            id: id.to_string(),
        })
    }

    async fn user_count(&self) -> Result<u64, StoreError> {
        const OP: &str = "user_count";
        let c = self.client(OP).await?;
        let n: i64 = c
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(be(OP))?;
        query::to_u64(OP, "count", n)
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        const OP: &str = "create_session";
        let c = self.client(OP).await?;
        match c
            .execute(
                "INSERT INTO sessions (token_hash, user_id, created_ms, expires_ms) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    &session.token_hash,
                    &session.user_id,
                    &session.created_ms,
                    &session.expires_ms,
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique(&e) => Err(StoreError::Conflict {
                what: "session",
                id: format!("for user {}", session.user_id),
            }),
            Err(e) => Err(be(OP)(e)),
        }
    }

    async fn session(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<(Session, User)>, StoreError> {
        const OP: &str = "session";
        let c = self.client(OP).await?;
        let Some(r) = c
            .query_opt(
                "SELECT s.token_hash, s.user_id, s.created_ms, s.expires_ms, \
                 u.id, u.name, u.role, u.password_hash, u.disabled, u.created_ms \
                 FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.token_hash = $1 AND s.expires_ms > $2",
                &[&token_hash, &now_ms],
            )
            .await
            .map_err(be(OP))?
        else {
            return Ok(None);
        };
        let session = Session {
            token_hash: r.try_get(0).map_err(be(OP))?,
            user_id: r.try_get(1).map_err(be(OP))?,
            created_ms: r.try_get(2).map_err(be(OP))?,
            expires_ms: r.try_get(3).map_err(be(OP))?,
        };
        Ok(Some((session, user_row(OP, &r, 4)?)))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        const OP: &str = "delete_session";
        let c = self.client(OP).await?;
        c.execute("DELETE FROM sessions WHERE token_hash = $1", &[&token_hash])
            .await
            .map(drop)
            .map_err(be(OP))
    }

    async fn delete_user_sessions(&self, user_id: i64) -> Result<(), StoreError> {
        const OP: &str = "delete_user_sessions";
        let c = self.client(OP).await?;
        c.execute("DELETE FROM sessions WHERE user_id = $1", &[&user_id])
            .await
            .map(drop)
            .map_err(be(OP))
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
        let c = self.client(OP).await?;
        match c
            .query_one(
                &format!(
                    "INSERT INTO enrollment_tokens (token_hash, label, created_by, created_ms, \
                     expires_ms) VALUES ($1, $2, $3, $4, $5) RETURNING {TOKEN_COLUMNS}"
                ),
                &[&token_hash, &label, &created_by, &created_ms, &expires_ms],
            )
            .await
        {
            Ok(r) => token_row(OP, &r),
            Err(e) if is_unique(&e) => Err(StoreError::Conflict {
                what: "enrollment token",
                id: label.to_owned(),
            }),
            Err(e) => Err(be(OP)(e)),
        }
    }

    async fn tokens(&self) -> Result<Vec<EnrollmentToken>, StoreError> {
        const OP: &str = "tokens";
        let c = self.client(OP).await?;
        c.query(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY created_ms DESC, id DESC"
            ),
            &[],
        )
        .await
        .map_err(be(OP))?
        .iter()
        .map(|r| token_row(OP, r))
        .collect()
    }

    async fn use_token(
        &self,
        token_hash: &str,
        device: &DeviceId,
        now_ms: i64,
    ) -> Result<Result<EnrollmentToken, TokenRefusal>, StoreError> {
        const OP: &str = "use_token";
        let c = self.client(OP).await?;
        // A concurrent caller blocks on the row lock and then re-checks
        // `used_ms IS NULL` against the committed row (READ COMMITTED), so
        // exactly one UPDATE wins.
        let used = c
            .query_opt(
                &format!(
                    "UPDATE enrollment_tokens SET used_ms = $3, used_by = $2 \
                     WHERE token_hash = $1 AND used_ms IS NULL AND expires_ms > $3 \
                     RETURNING {TOKEN_COLUMNS}"
                ),
                &[&token_hash, device, &now_ms],
            )
            .await
            .map_err(be(OP))?;
        if let Some(r) = used {
            return Ok(Ok(token_row(OP, &r)?));
        }
        let state = c
            .query_opt(
                "SELECT used_ms FROM enrollment_tokens WHERE token_hash = $1",
                &[&token_hash],
            )
            .await
            .map_err(be(OP))?;
        Ok(Err(match state {
            None => TokenRefusal::Invalid,
            Some(r) => match r.try_get::<_, Option<i64>>(0).map_err(be(OP))? {
                Some(_) => TokenRefusal::Used,
                None => TokenRefusal::Expired,
            },
        }))
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        const OP: &str = "audit";
        let c = self.client(OP).await?;
        c.execute(
            "INSERT INTO audit_log (at_ms, actor, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &entry.at_ms,
                &entry.actor,
                &entry.action,
                &entry.target,
                &tokio_postgres::types::Json(&entry.detail),
            ],
        )
        .await
        .map(drop)
        .map_err(be(OP))
    }

    async fn audit_log(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        const OP: &str = "audit_log";
        let built = query::audit_query(Dialect::Postgres, filter, i64::from(limit));
        let c = self.client(OP).await?;
        c.query(&built.sql, &to_sql(&built.params))
            .await
            .map_err(be(OP))?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    detail: r.try_get(5)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(be(OP))
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
                let n = self.delete_oldest(cutoff, RETENTION_CHUNK).await?;
                report.expired += n;
                if n < RETENTION_CHUNK as u64 {
                    break;
                }
            }
        }
        if let Some(max) = max_alerts {
            let c = self.client(OP).await?;
            let total: i64 = c
                .query_one("SELECT count(*) FROM alerts WHERE hunt_id IS NULL", &[])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(be(OP))?;
            drop(c);
            let mut excess = query::to_u64(OP, "alert count", total)?.saturating_sub(max);
            while excess > 0 {
                let chunk = excess.min(RETENTION_CHUNK as u64);
                let n = self
                    .delete_oldest(i64::MAX, query::to_i64(OP, "chunk", chunk)?)
                    .await?;
                report.trimmed += n;
                excess -= chunk;
                if n < chunk {
                    break;
                }
            }
        }
        let c = self.client(OP).await?;
        c.execute("DELETE FROM sessions WHERE expires_ms <= $1", &[&now_ms])
            .await
            .map_err(be(OP))?;
        Ok(report)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        const OP: &str = "stats";
        let c = self.client(OP).await?;
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM alerts), (SELECT count(*) FROM devices), \
                 (SELECT sum(pg_total_relation_size(c.oid))::int8 FROM pg_class c \
                  JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE n.nspname = current_schema() AND c.relkind = 'r')",
                &[],
            )
            .await
            .map_err(be(OP))?;
        let alerts: i64 = r.try_get(0).map_err(be(OP))?;
        let devices: i64 = r.try_get(1).map_err(be(OP))?;
        let bytes: Option<i64> = r.try_get(2).map_err(be(OP))?;
        Ok(StoreStats {
            alerts: query::to_u64(OP, "alert count", alerts)?,
            devices: query::to_u64(OP, "device count", devices)?,
            bytes: bytes.and_then(|b| u64::try_from(b).ok()),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let c = self.client("ping").await?;
        c.batch_execute("SELECT 1").await.map_err(be("ping"))
    }
}

impl PgStore {
    /// Stores alerts in one transaction; with `hunt`, as that hunting
    /// job's: `hunt_id` set, not in the rollup, device sequence numbers
    /// untouched.
    async fn insert_alert_rows(
        &self,
        op: &'static str,
        alerts: &[NewAlert],
        hunt: Option<i64>,
    ) -> Result<InsertReport, StoreError> {
        if alerts.is_empty() {
            return Ok(InsertReport::default());
        }
        let rows = alerts
            .iter()
            .map(AlertIn::prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let col = |f: fn(&AlertIn) -> String| rows.iter().map(f).collect::<Vec<String>>();
        let ids = col(|a| a.id.clone());
        let devices = col(|a| a.device_id.clone());
        let seqs: Vec<i64> = rows.iter().map(|a| a.seq).collect();
        let ts: Vec<i64> = rows.iter().map(|a| a.timestamp_ms).collect();
        let rcv: Vec<i64> = rows.iter().map(|a| a.received_ms).collect();
        let levels: Vec<i16> = rows.iter().map(|a| a.level).collect();
        let sources: Vec<i16> = rows.iter().map(|a| a.source).collect();
        let rule_ids = col(|a| a.rule_id.clone());
        let titles = col(|a| a.rule_title.clone());
        let techniques = col(|a| a.techniques.clone());
        let images: Vec<Option<&str>> = rows.iter().map(|a| a.image.as_deref()).collect();
        let cmds: Vec<Option<&str>> = rows.iter().map(|a| a.command_line.as_deref()).collect();
        let paths: Vec<Option<&str>> = rows.iter().map(|a| a.path.as_deref()).collect();
        let events = col(|a| a.event.clone());

        let mut c = self.client(op).await?;
        let tx = c.transaction().await.map_err(be(op))?;
        let ins = tx
            .prepare_cached(
                "INSERT INTO alerts (id, device_id, seq, timestamp_ms, received_ms, level, source, \
                 rule_id, rule_title, techniques, image, command_line, path, event, updated_ms, \
                 hunt_id) \
                 SELECT u.id, u.device_id, u.seq, u.ts, u.rcv, u.level, u.source, u.rule_id, \
                 u.rule_title, u.techniques, u.image, u.command_line, u.path, u.event::json, u.rcv, \
                 $15::int8 \
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], \
                 $6::int2[], $7::int2[], $8::text[], $9::text[], $10::text[], $11::text[], \
                 $12::text[], $13::text[], $14::text[]) AS u(id, device_id, seq, ts, rcv, level, \
                 source, rule_id, rule_title, techniques, image, command_line, path, event) \
                 ON CONFLICT (id) DO NOTHING RETURNING row, id",
            )
            .await
            .map_err(be(op))?;
        let inserted = tx
            .query(
                &ins,
                &[
                    &ids,
                    &devices,
                    &seqs,
                    &ts,
                    &rcv,
                    &levels,
                    &sources,
                    &rule_ids,
                    &titles,
                    &techniques,
                    &images,
                    &cmds,
                    &paths,
                    &events,
                    &hunt,
                ],
            )
            .await
            .map_err(be(op))?;

        let by_id: HashMap<&str, &AlertIn> = rows.iter().map(|a| (a.id.as_str(), a)).collect();
        let (mut k_tech, mut k_ts, mut k_row) = (Vec::new(), Vec::new(), Vec::new());
        let mut rollup = query::RollupDelta::default();
        for r in &inserted {
            let row: i64 = r.try_get(0).map_err(be(op))?;
            let id: &str = r.try_get(1).map_err(be(op))?;
            if let Some(a) = by_id.get(id) {
                if hunt.is_none() {
                    rollup.add(a.timestamp_ms, a.level, NEW_STATUS, a.source, 1);
                }
                for k in &a.keys {
                    k_tech.push(k.as_str());
                    k_ts.push(a.timestamp_ms);
                    k_row.push(row);
                }
            }
        }
        if !k_tech.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO alert_techniques (technique, timestamp_ms, row) \
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[]) ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(be(op))?;
            tx.execute(&stmt, &[&k_tech, &k_ts, &k_row])
                .await
                .map_err(be(op))?;
        }

        let mut max_seq: BTreeMap<&str, i64> = BTreeMap::new();
        for a in rows.iter().filter(|_| hunt.is_none()) {
            let s = max_seq.entry(a.device_id.as_str()).or_insert(a.seq);
            *s = (*s).max(a.seq);
        }
        let (d_ids, d_seqs): (Vec<&str>, Vec<i64>) = max_seq.into_iter().unzip();
        // Lock the device rows in id order so concurrent batches touching
        // the same devices cannot deadlock.
        let stmt = tx
            .prepare_cached(
                "WITH v AS (SELECT * FROM unnest($1::text[], $2::int8[]) AS v(id, s)), \
                 l AS (SELECT d.id FROM devices d JOIN v ON v.id = d.id \
                       WHERE v.s > d.last_alert_seq ORDER BY d.id FOR UPDATE OF d) \
                 UPDATE devices d SET last_alert_seq = greatest(d.last_alert_seq, v.s) \
                 FROM v WHERE d.id = v.id AND d.id IN (SELECT id FROM l)",
            )
            .await
            .map_err(be(op))?;
        tx.execute(&stmt, &[&d_ids, &d_seqs])
            .await
            .map_err(be(op))?;
        // Last: the rollup's current rows are the ones concurrent batches
        // share, so their locks are held for the shortest time.
        apply_rollup(&tx, &rollup).await.map_err(be(op))?;
        tx.commit().await.map_err(be(op))?;
        let inserted = inserted.len() as u64;
        Ok(InsertReport {
            inserted,
            duplicates: rows.len() as u64 - inserted,
        })
    }
}

impl PgStore {
    /// Deletes up to `limit` of the oldest alerts with `timestamp_ms <
    /// before_ms`, with their notes and technique keys, in one transaction.
    async fn delete_oldest(&self, before_ms: i64, limit: i64) -> Result<u64, StoreError> {
        const OP: &str = "apply_retention";
        let mut c = self.client(OP).await?;
        let tx = c.transaction().await.map_err(be(OP))?;
        let victims = tx
            .query(
                "SELECT row, id, timestamp_ms, techniques, level, status, source FROM alerts \
                 WHERE timestamp_ms < $1 AND hunt_id IS NULL ORDER BY timestamp_ms, row LIMIT $2 \
                 FOR UPDATE",
                &[&before_ms, &limit],
            )
            .await
            .map_err(be(OP))?;
        let rollup = delete_victims(&tx, OP, &victims).await?;
        apply_rollup(&tx, &rollup).await.map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        Ok(victims.len() as u64)
    }
}

/// Deletes alerts (rows of `row, id, timestamp_ms, techniques, level,
/// status, source`) with their notes and technique keys inside `tx`;
/// returns the rollup change (applied by the caller when they counted).
async fn delete_victims(
    tx: &tokio_postgres::Transaction<'_>,
    op: &str,
    victims: &[Row],
) -> Result<query::RollupDelta, StoreError> {
    let (mut rows, mut ids) = (Vec::new(), Vec::new());
    let mut rollup = query::RollupDelta::default();
    let (mut k_tech, mut k_ts, mut k_row, mut scan_rows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in victims {
        let row: i64 = v.try_get(0).map_err(be(op))?;
        let id: String = v.try_get(1).map_err(be(op))?;
        let ts: i64 = v.try_get(2).map_err(be(op))?;
        let techniques: String = v.try_get(3).map_err(be(op))?;
        rollup.add(
            ts,
            v.try_get(4).map_err(be(op))?,
            v.try_get(5).map_err(be(op))?,
            v.try_get(6).map_err(be(op))?,
            -1,
        );
        match serde_json::from_str::<Vec<String>>(&techniques) {
            Ok(t) => {
                for k in query::technique_keys(&t) {
                    k_tech.push(k);
                    k_ts.push(ts);
                    k_row.push(row);
                }
            }
            // A damaged row must not stop retention forever.
            Err(_) => scan_rows.push(row),
        }
        rows.push(row);
        ids.push(id);
    }
    tx.execute("DELETE FROM alerts WHERE row = ANY($1)", &[&rows])
        .await
        .map_err(be(op))?;
    tx.execute("DELETE FROM notes WHERE alert_id = ANY($1)", &[&ids])
        .await
        .map_err(be(op))?;
    tx.execute(
        "DELETE FROM alert_techniques t USING unnest($1::text[], $2::int8[], $3::int8[]) \
         AS k(technique, timestamp_ms, row) WHERE t.technique = k.technique \
         AND t.timestamp_ms = k.timestamp_ms AND t.row = k.row",
        &[&k_tech, &k_ts, &k_row],
    )
    .await
    .map_err(be(op))?;
    if !scan_rows.is_empty() {
        tx.execute(
            "DELETE FROM alert_techniques WHERE row = ANY($1)",
            &[&scan_rows],
        )
        .await
        .map_err(be(op))?;
    }
    Ok(rollup)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database from before the count rollup gets it filled from the
    /// alerts it already holds (statuses included). Needs
    /// `PICKET_TEST_POSTGRES_URL` (skipped without it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rollup_migration_backfills_stored_alerts() {
        let Ok(url) = std::env::var("PICKET_TEST_POSTGRES_URL") else {
            eprintln!(
                "notice: PICKET_TEST_POSTGRES_URL unset, skipping the Postgres backfill test"
            );
            return;
        };
        let schema = format!("picket_unit_backfill_{}", std::process::id());
        let before = MIGRATIONS
            .iter()
            .position(|m| m.contains("CREATE TABLE alert_rollup"))
            .expect("rollup migration");
        let store = PgStore::pool(&url, Some(schema.clone())).expect("pool");
        store.migrate_to(before).await.expect("old schema");
        let c = store.client("test").await.expect("client");
        c.batch_execute(
            "INSERT INTO alerts (id, device_id, seq, timestamp_ms, received_ms, level, source, \
             rule_id, rule_title, techniques, event, status, updated_ms) \
             SELECT lpad(to_hex(i), 32, '0'), 'd', i, \
             CASE WHEN i < 3 THEN -1000 * i - 1 ELSE 1699988400000 + i * 7919 END, \
             0, i % 5, i % 4, 'r', 'R', '[]', '{}', i % 3, 0 FROM generate_series(0, 4999) AS i",
        )
        .await
        .expect("old alerts");
        drop(c);
        store.migrate_to(MIGRATIONS.len()).await.expect("migrate");
        crate::query::tests::assert_counts_match_scan(&store).await;
        let c = store.client("test").await.expect("client");
        c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("drop schema");
    }
}
