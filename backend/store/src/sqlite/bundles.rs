//! Rule bundles and rollouts in SQLite (migration 4; see `crate::rollout`).

use std::collections::BTreeMap;

use async_trait::async_trait;

use rusqlite::{params, OptionalExtension as _};

use super::{be, is_constraint, SqliteStore};
use crate::rollout::{
    version_from_db, version_to_db, Assignment, BundleStateKind, DeviceBundleState, Rollout,
    StoredBundle,
};
use crate::{BundleStore, StoreError};

pub(super) const MIGRATION: &str = r"
CREATE TABLE bundles (
    version     INTEGER PRIMARY KEY,
    summary     TEXT NOT NULL,
    bytes       BLOB NOT NULL,
    uploaded_ms INTEGER NOT NULL
);
CREATE TABLE rollouts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    version    INTEGER NOT NULL,
    state      TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE bundle_assignments (
    device_id        TEXT PRIMARY KEY,
    version          INTEGER NOT NULL,
    rollout_id       INTEGER NOT NULL,
    previous_version INTEGER,
    assigned_ms      INTEGER NOT NULL
);
CREATE TABLE bundle_states (
    device_id       TEXT NOT NULL,
    version         INTEGER NOT NULL,
    state           TEXT NOT NULL,
    chunks_received INTEGER NOT NULL,
    error           TEXT,
    updated_ms      INTEGER NOT NULL,
    PRIMARY KEY (device_id, version)
);
CREATE INDEX bundle_states_version ON bundle_states (version, device_id);
CREATE TABLE device_groups (
    device_id TEXT PRIMARY KEY,
    groups    TEXT NOT NULL
);
";

fn json_err(op: &str) -> impl Fn(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{op}: stored JSON unreadable: {e}"))
}

#[async_trait]
impl BundleStore for SqliteStore {
    async fn insert_bundle(&self, bundle: &StoredBundle, bytes: &[u8]) -> Result<(), StoreError> {
        const OP: &str = "insert_bundle";
        let summary = serde_json::to_string(bundle).map_err(json_err(OP))?;
        let (version, uploaded_ms, bytes) = (
            version_to_db(bundle.version),
            bundle.uploaded_ms,
            bytes.to_vec(),
        );
        self.write(OP, move |c| {
            match c.execute(
                "INSERT INTO bundles (version, summary, bytes, uploaded_ms) VALUES (?1, ?2, ?3, ?4)",
                params![version, summary, bytes, uploaded_ms],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(StoreError::Conflict {
                    what: "bundle version",
                    id: version.to_string(),
                }),
                Err(e) => Err(be(OP)(e)),
            }
        })
        .await
    }

    async fn bundles(&self) -> Result<Vec<StoredBundle>, StoreError> {
        const OP: &str = "bundles";
        self.read(OP, |c| {
            let mut s = c
                .prepare_cached("SELECT summary FROM bundles ORDER BY version DESC")
                .map_err(be(OP))?;
            let rows: Vec<String> = s
                .query_map([], |r| r.get(0))
                .and_then(Iterator::collect)
                .map_err(be(OP))?;
            rows.iter()
                .map(|j| serde_json::from_str(j).map_err(json_err(OP)))
                .collect()
        })
        .await
    }

    async fn bundle_bytes(&self, version: u64) -> Result<Option<Vec<u8>>, StoreError> {
        const OP: &str = "bundle_bytes";
        let v = version_to_db(version);
        self.read(OP, move |c| {
            c.query_row("SELECT bytes FROM bundles WHERE version = ?1", [v], |r| {
                r.get(0)
            })
            .optional()
            .map_err(be(OP))
        })
        .await
    }

    async fn save_rollout(&self, rollout: &Rollout) -> Result<i64, StoreError> {
        const OP: &str = "save_rollout";
        let body = serde_json::to_string(rollout).map_err(json_err(OP))?;
        let (id, version, state, updated) = (
            rollout.id,
            version_to_db(rollout.version),
            rollout.state.as_str(),
            rollout.updated_ms,
        );
        self.write(OP, move |c| {
            if id == 0 {
                c.execute(
                    "INSERT INTO rollouts (version, state, body, updated_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![version, state, body, updated],
                )
                .map_err(be(OP))?;
                return Ok(c.last_insert_rowid());
            }
            let n = c
                .execute(
                    "UPDATE rollouts SET version = ?2, state = ?3, body = ?4, updated_ms = ?5 \
                     WHERE id = ?1",
                    params![id, version, state, body, updated],
                )
                .map_err(be(OP))?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: "rollout",
                    id: id.to_string(),
                });
            }
            Ok(id)
        })
        .await
    }

    async fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        const OP: &str = "rollouts";
        self.read(OP, |c| {
            let mut s = c
                .prepare_cached("SELECT id, body FROM rollouts ORDER BY id DESC")
                .map_err(be(OP))?;
            let rows: Vec<(i64, String)> = s
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(Iterator::collect)
                .map_err(be(OP))?;
            rows.into_iter()
                .map(|(id, body)| {
                    let mut r: Rollout = serde_json::from_str(&body).map_err(json_err(OP))?;
                    r.id = id;
                    Ok(r)
                })
                .collect()
        })
        .await
    }

    async fn assign_bundles(&self, assignments: &[Assignment]) -> Result<(), StoreError> {
        const OP: &str = "assign_bundles";
        let a = assignments.to_vec();
        self.write(OP, move |c| {
            let tx = c.transaction().map_err(be(OP))?;
            {
                let mut up = tx
                    .prepare_cached(
                        "INSERT INTO bundle_assignments \
                         (device_id, version, rollout_id, previous_version, assigned_ms) \
                         VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (device_id) DO UPDATE SET version = excluded.version, \
                         rollout_id = excluded.rollout_id, \
                         previous_version = excluded.previous_version, \
                         assigned_ms = excluded.assigned_ms",
                    )
                    .map_err(be(OP))?;
                let mut del = tx
                    .prepare_cached("DELETE FROM bundle_assignments WHERE device_id = ?1")
                    .map_err(be(OP))?;
                for x in &a {
                    if x.version == 0 {
                        del.execute([&x.device_id]).map_err(be(OP))?;
                    } else {
                        up.execute(params![
                            x.device_id,
                            version_to_db(x.version),
                            x.rollout_id,
                            x.previous_version.map(version_to_db),
                            x.assigned_ms
                        ])
                        .map_err(be(OP))?;
                    }
                }
            }
            tx.commit().map_err(be(OP))
        })
        .await
    }

    async fn assignments(&self) -> Result<Vec<Assignment>, StoreError> {
        const OP: &str = "assignments";
        self.read(OP, |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT device_id, version, rollout_id, previous_version, assigned_ms \
                     FROM bundle_assignments ORDER BY device_id",
                )
                .map_err(be(OP))?;
            s.query_map([], |r| {
                Ok(Assignment {
                    device_id: r.get(0)?,
                    version: version_from_db(r.get(1)?),
                    rollout_id: r.get(2)?,
                    previous_version: r.get::<_, Option<i64>>(3)?.map(version_from_db),
                    assigned_ms: r.get(4)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(be(OP))
        })
        .await
    }

    async fn record_bundle_states(&self, states: &[DeviceBundleState]) -> Result<(), StoreError> {
        const OP: &str = "record_bundle_states";
        let states = states.to_vec();
        self.write(OP, move |c| {
            let tx = c.transaction().map_err(be(OP))?;
            {
                let mut s = tx
                    .prepare_cached(
                        "INSERT INTO bundle_states \
                         (device_id, version, state, chunks_received, error, updated_ms) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT (device_id, version) DO UPDATE SET state = excluded.state, \
                         chunks_received = excluded.chunks_received, error = excluded.error, \
                         updated_ms = excluded.updated_ms",
                    )
                    .map_err(be(OP))?;
                for x in &states {
                    s.execute(params![
                        x.device_id,
                        version_to_db(x.version),
                        x.state.as_str(),
                        x.chunks_received,
                        x.error,
                        x.updated_ms
                    ])
                    .map_err(be(OP))?;
                }
            }
            tx.commit().map_err(be(OP))
        })
        .await
    }

    async fn bundle_states(
        &self,
        version: Option<u64>,
        device: Option<&str>,
    ) -> Result<Vec<DeviceBundleState>, StoreError> {
        const OP: &str = "bundle_states";
        let (version, device) = (version.map(version_to_db), device.map(str::to_owned));
        self.read(OP, move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT device_id, version, state, chunks_received, error, updated_ms \
                     FROM bundle_states \
                     WHERE (?1 IS NULL OR version = ?1) AND (?2 IS NULL OR device_id = ?2) \
                     ORDER BY version DESC, device_id",
                )
                .map_err(be(OP))?;
            let rows: Vec<(String, i64, String, u32, Option<String>, i64)> = s
                .query_map(params![version, device], |r| {
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
                .map(
                    |(device_id, v, state, chunks_received, error, updated_ms)| {
                        Ok(DeviceBundleState {
                            device_id,
                            version: version_from_db(v),
                            state: BundleStateKind::parse(&state).ok_or_else(|| {
                                StoreError::Backend(format!("{OP}: unknown state {state:?}"))
                            })?,
                            chunks_received,
                            error,
                            updated_ms,
                        })
                    },
                )
                .collect()
        })
        .await
    }

    async fn set_device_groups(&self, device: &str, groups: &[String]) -> Result<(), StoreError> {
        const OP: &str = "set_device_groups";
        let json = serde_json::to_string(groups).map_err(json_err(OP))?;
        let device = device.to_owned();
        self.write(OP, move |c| {
            if groups_empty(&json) {
                c.execute("DELETE FROM device_groups WHERE device_id = ?1", [&device])
            } else {
                c.execute(
                    "INSERT INTO device_groups (device_id, groups) VALUES (?1, ?2) \
                     ON CONFLICT (device_id) DO UPDATE SET groups = excluded.groups",
                    params![device, json],
                )
            }
            .map(drop)
            .map_err(be(OP))
        })
        .await
    }

    async fn device_groups(&self) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        const OP: &str = "device_groups";
        self.read(OP, |c| {
            let mut s = c
                .prepare_cached("SELECT device_id, groups FROM device_groups")
                .map_err(be(OP))?;
            let rows: Vec<(String, String)> = s
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(Iterator::collect)
                .map_err(be(OP))?;
            rows.into_iter()
                .map(|(d, g)| Ok((d, serde_json::from_str(&g).map_err(json_err(OP))?)))
                .collect()
        })
        .await
    }
}

fn groups_empty(json: &str) -> bool {
    json == "[]"
}
