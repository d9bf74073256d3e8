//! Rule bundles and rollouts in PostgreSQL (migration 2; see `crate::rollout`).

use std::collections::BTreeMap;

use async_trait::async_trait;

use tokio_postgres::types::Json;

use super::{be, is_unique, PgStore};
use crate::rollout::{
    version_from_db, version_to_db, Assignment, BundleStateKind, DeviceBundleState, Rollout,
    StoredBundle,
};
use crate::{BundleStore, StoreError};

pub(super) const MIGRATION: &str = r"
CREATE TABLE bundles (
    version     bigint PRIMARY KEY,
    summary     jsonb NOT NULL,
    bytes       bytea NOT NULL,
    uploaded_ms bigint NOT NULL
);
CREATE TABLE rollouts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version    bigint NOT NULL,
    state      text NOT NULL,
    body       jsonb NOT NULL,
    updated_ms bigint NOT NULL
);
CREATE TABLE bundle_assignments (
    device_id        text PRIMARY KEY,
    version          bigint NOT NULL,
    rollout_id       bigint NOT NULL,
    previous_version bigint,
    assigned_ms      bigint NOT NULL
);
CREATE TABLE bundle_states (
    device_id       text NOT NULL,
    version         bigint NOT NULL,
    state           text NOT NULL,
    chunks_received bigint NOT NULL,
    error           text,
    updated_ms      bigint NOT NULL,
    PRIMARY KEY (device_id, version)
);
CREATE INDEX bundle_states_version ON bundle_states (version, device_id);
CREATE TABLE device_groups (
    device_id text PRIMARY KEY,
    groups    jsonb NOT NULL
);
";

fn json_err(op: &str) -> impl Fn(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{op}: stored JSON unreadable: {e}"))
}

#[async_trait]
impl BundleStore for PgStore {
    async fn insert_bundle(&self, bundle: &StoredBundle, bytes: &[u8]) -> Result<(), StoreError> {
        const OP: &str = "insert_bundle";
        let c = self.client(OP).await?;
        let version = version_to_db(bundle.version);
        match c
            .execute(
                "INSERT INTO bundles (version, summary, bytes, uploaded_ms) VALUES ($1, $2, $3, $4)",
                &[&version, &Json(bundle), &bytes, &bundle.uploaded_ms],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique(&e) => Err(StoreError::Conflict {
                what: "bundle version",
                id: version.to_string(),
            }),
            Err(e) => Err(be(OP)(e)),
        }
    }

    async fn bundles(&self) -> Result<Vec<StoredBundle>, StoreError> {
        const OP: &str = "bundles";
        let c = self.client(OP).await?;
        c.query("SELECT summary FROM bundles ORDER BY version DESC", &[])
            .await
            .map_err(be(OP))?
            .iter()
            .map(|r| {
                let Json(v): Json<serde_json::Value> = r.try_get(0).map_err(be(OP))?;
                serde_json::from_value(v).map_err(json_err(OP))
            })
            .collect()
    }

    async fn bundle_bytes(&self, version: u64) -> Result<Option<Vec<u8>>, StoreError> {
        const OP: &str = "bundle_bytes";
        let c = self.client(OP).await?;
        c.query_opt(
            "SELECT bytes FROM bundles WHERE version = $1",
            &[&version_to_db(version)],
        )
        .await
        .map_err(be(OP))?
        .map(|r| r.try_get(0).map_err(be(OP)))
        .transpose()
    }

    async fn save_rollout(&self, rollout: &Rollout) -> Result<i64, StoreError> {
        const OP: &str = "save_rollout";
        let c = self.client(OP).await?;
        let version = version_to_db(rollout.version);
        let state = rollout.state.as_str();
        if rollout.id == 0 {
            return c
                .query_one(
                    "INSERT INTO rollouts (version, state, body, updated_ms) \
                     VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&version, &state, &Json(rollout), &rollout.updated_ms],
                )
                .await
                .and_then(|r| r.try_get(0))
                .map_err(be(OP));
        }
        let n = c
            .execute(
                "UPDATE rollouts SET version = $2, state = $3, body = $4, updated_ms = $5 \
                 WHERE id = $1",
                &[
                    &rollout.id,
                    &version,
                    &state,
                    &Json(rollout),
                    &rollout.updated_ms,
                ],
            )
            .await
            .map_err(be(OP))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "rollout",
                id: rollout.id.to_string(),
            });
        }
        Ok(rollout.id)
    }

    async fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        const OP: &str = "rollouts";
        let c = self.client(OP).await?;
        c.query("SELECT id, body FROM rollouts ORDER BY id DESC", &[])
            .await
            .map_err(be(OP))?
            .iter()
            .map(|r| {
                let id: i64 = r.try_get(0).map_err(be(OP))?;
                let Json(v): Json<serde_json::Value> = r.try_get(1).map_err(be(OP))?;
                let mut out: Rollout = serde_json::from_value(v).map_err(json_err(OP))?;
                out.id = id;
                Ok(out)
            })
            .collect()
    }

    async fn assign_bundles(&self, assignments: &[Assignment]) -> Result<(), StoreError> {
        const OP: &str = "assign_bundles";
        let mut c = self.client(OP).await?;
        let tx = c.transaction().await.map_err(be(OP))?;
        let (mut set, mut clear) = (Vec::new(), Vec::new());
        for a in assignments {
            if a.version == 0 {
                clear.push(a.device_id.clone());
            } else {
                set.push(a);
            }
        }
        if !clear.is_empty() {
            tx.execute(
                "DELETE FROM bundle_assignments WHERE device_id = ANY($1)",
                &[&clear],
            )
            .await
            .map_err(be(OP))?;
        }
        if !set.is_empty() {
            let ids: Vec<&str> = set.iter().map(|a| a.device_id.as_str()).collect();
            let versions: Vec<i64> = set.iter().map(|a| version_to_db(a.version)).collect();
            let rollouts: Vec<i64> = set.iter().map(|a| a.rollout_id).collect();
            let previous: Vec<Option<i64>> = set
                .iter()
                .map(|a| a.previous_version.map(version_to_db))
                .collect();
            let at: Vec<i64> = set.iter().map(|a| a.assigned_ms).collect();
            tx.execute(
                "INSERT INTO bundle_assignments \
                 (device_id, version, rollout_id, previous_version, assigned_ms) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) \
                 ON CONFLICT (device_id) DO UPDATE SET version = excluded.version, \
                 rollout_id = excluded.rollout_id, previous_version = excluded.previous_version, \
                 assigned_ms = excluded.assigned_ms",
                &[&ids, &versions, &rollouts, &previous, &at],
            )
            .await
            .map_err(be(OP))?;
        }
        tx.commit().await.map_err(be(OP))
    }

    async fn assignments(&self) -> Result<Vec<Assignment>, StoreError> {
        const OP: &str = "assignments";
        let c = self.client(OP).await?;
        c.query(
            "SELECT device_id, version, rollout_id, previous_version, assigned_ms \
             FROM bundle_assignments ORDER BY device_id",
            &[],
        )
        .await
        .map_err(be(OP))?
        .iter()
        .map(|r| {
            Ok(Assignment {
                device_id: r.try_get(0).map_err(be(OP))?,
                version: version_from_db(r.try_get(1).map_err(be(OP))?),
                rollout_id: r.try_get(2).map_err(be(OP))?,
                previous_version: r
                    .try_get::<_, Option<i64>>(3)
                    .map_err(be(OP))?
                    .map(version_from_db),
                assigned_ms: r.try_get(4).map_err(be(OP))?,
            })
        })
        .collect()
    }

    async fn record_bundle_states(&self, states: &[DeviceBundleState]) -> Result<(), StoreError> {
        const OP: &str = "record_bundle_states";
        if states.is_empty() {
            return Ok(());
        }
        // One row per device and version: the last report wins.
        let mut last: BTreeMap<(&str, u64), &DeviceBundleState> = BTreeMap::new();
        for s in states {
            last.insert((s.device_id.as_str(), s.version), s);
        }
        let ids: Vec<&str> = last.values().map(|s| s.device_id.as_str()).collect();
        let versions: Vec<i64> = last.values().map(|s| version_to_db(s.version)).collect();
        let kinds: Vec<&str> = last.values().map(|s| s.state.as_str()).collect();
        let chunks: Vec<i64> = last
            .values()
            .map(|s| i64::from(s.chunks_received))
            .collect();
        let errors: Vec<Option<&str>> = last.values().map(|s| s.error.as_deref()).collect();
        let at: Vec<i64> = last.values().map(|s| s.updated_ms).collect();
        let c = self.client(OP).await?;
        c.execute(
            "INSERT INTO bundle_states \
             (device_id, version, state, chunks_received, error, updated_ms) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[]) \
             ON CONFLICT (device_id, version) DO UPDATE SET state = excluded.state, \
             chunks_received = excluded.chunks_received, error = excluded.error, \
             updated_ms = excluded.updated_ms",
            &[&ids, &versions, &kinds, &chunks, &errors, &at],
        )
        .await
        .map(drop)
        .map_err(be(OP))
    }

    async fn bundle_states(
        &self,
        version: Option<u64>,
        device: Option<&str>,
    ) -> Result<Vec<DeviceBundleState>, StoreError> {
        const OP: &str = "bundle_states";
        let c = self.client(OP).await?;
        let version = version.map(version_to_db);
        c.query(
            "SELECT device_id, version, state, chunks_received, error, updated_ms \
             FROM bundle_states \
             WHERE ($1::bigint IS NULL OR version = $1) AND ($2::text IS NULL OR device_id = $2) \
             ORDER BY version DESC, device_id",
            &[&version, &device],
        )
        .await
        .map_err(be(OP))?
        .iter()
        .map(|r| {
            let state: String = r.try_get(2).map_err(be(OP))?;
            let chunks: i64 = r.try_get(3).map_err(be(OP))?;
            Ok(DeviceBundleState {
                device_id: r.try_get(0).map_err(be(OP))?,
                version: version_from_db(r.try_get(1).map_err(be(OP))?),
                state: BundleStateKind::parse(&state)
                    .ok_or_else(|| StoreError::Backend(format!("{OP}: unknown state {state:?}")))?,
                chunks_received: u32::try_from(chunks).unwrap_or(u32::MAX),
                error: r.try_get(4).map_err(be(OP))?,
                updated_ms: r.try_get(5).map_err(be(OP))?,
            })
        })
        .collect()
    }

    async fn set_device_groups(&self, device: &str, groups: &[String]) -> Result<(), StoreError> {
        const OP: &str = "set_device_groups";
        let c = self.client(OP).await?;
        if groups.is_empty() {
            c.execute("DELETE FROM device_groups WHERE device_id = $1", &[&device])
                .await
        } else {
            c.execute(
                "INSERT INTO device_groups (device_id, groups) VALUES ($1, $2) \
                 ON CONFLICT (device_id) DO UPDATE SET groups = excluded.groups",
                &[&device, &Json(groups)],
            )
            .await
        }
        .map(drop)
        .map_err(be(OP))
    }

    async fn device_groups(&self) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        const OP: &str = "device_groups";
        let c = self.client(OP).await?;
        c.query("SELECT device_id, groups FROM device_groups", &[])
            .await
            .map_err(be(OP))?
            .iter()
            .map(|r| {
                let d: String = r.try_get(0).map_err(be(OP))?;
                let Json(g): Json<Vec<String>> = r.try_get(1).map_err(be(OP))?;
                Ok((d, g))
            })
            .collect()
    }
}
