//! Hunting jobs in PostgreSQL (see `crate::hunt`).

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{be, delete_victims, PgStore};
use crate::hunt::{Hunt, HuntDetail, HuntFile, HuntFileState, HuntState, HuntStore, NewHunt};
use crate::model::{Alert, NewAlert};
use crate::query::{self, Param, ALERT_COLUMNS};
use crate::{InsertReport, StoreError};

pub(super) const MIGRATION: &str = r"
CREATE TABLE hunts (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    created_by   text NOT NULL,
    created_ms   bigint NOT NULL,
    state        text NOT NULL,
    started_ms   bigint,
    finished_ms  bigint,
    files_total  bigint NOT NULL,
    files_done   bigint NOT NULL,
    bytes_total  bigint NOT NULL,
    bytes_done   bigint NOT NULL,
    records_done bigint NOT NULL,
    matches      bigint NOT NULL,
    error        text
);
CREATE TABLE hunt_files (
    hunt_id bigint NOT NULL,
    idx     bigint NOT NULL,
    name    text NOT NULL,
    size    bigint NOT NULL,
    sha256  text NOT NULL,
    state   text NOT NULL,
    records bigint NOT NULL,
    matches bigint NOT NULL,
    error   text,
    PRIMARY KEY (hunt_id, idx)
);
-- A job's alerts; the fleet's (hunt_id NULL) are not in this index.
ALTER TABLE alerts ADD COLUMN hunt_id bigint;
CREATE INDEX alerts_hunt ON alerts (hunt_id, timestamp_ms, row) WHERE hunt_id IS NOT NULL;
";

const HUNT_COLUMNS: &str = "id, name, created_by, created_ms, state, started_ms, finished_ms, \
    files_total, files_done, bytes_total, bytes_done, records_done, matches, error";

fn hunt_row(op: &str, r: &Row) -> Result<Hunt, StoreError> {
    let n = |i: usize, what: &str| -> Result<u64, StoreError> {
        query::to_u64(op, what, r.try_get::<_, i64>(i).map_err(be(op))?)
    };
    let state: String = r.try_get(4).map_err(be(op))?;
    Ok(Hunt {
        id: r.try_get(0).map_err(be(op))?,
        name: r.try_get(1).map_err(be(op))?,
        created_by: r.try_get(2).map_err(be(op))?,
        created_ms: r.try_get(3).map_err(be(op))?,
        state: HuntState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("{op}: unknown hunt state {state:?}")))?,
        started_ms: r.try_get(5).map_err(be(op))?,
        finished_ms: r.try_get(6).map_err(be(op))?,
        files_total: n(7, "files_total")?,
        files_done: n(8, "files_done")?,
        bytes_total: n(9, "bytes_total")?,
        bytes_done: n(10, "bytes_done")?,
        records_done: n(11, "records_done")?,
        matches: n(12, "matches")?,
        error: r.try_get(13).map_err(be(op))?,
    })
}

fn file_row(op: &str, r: &Row) -> Result<HuntFile, StoreError> {
    let n = |i: usize, what: &str| -> Result<u64, StoreError> {
        query::to_u64(op, what, r.try_get::<_, i64>(i).map_err(be(op))?)
    };
    let index: i64 = r.try_get(0).map_err(be(op))?;
    let state: String = r.try_get(4).map_err(be(op))?;
    Ok(HuntFile {
        index: u32::try_from(index)
            .map_err(|_| StoreError::Backend(format!("{op}: file index {index} out of range")))?,
        name: r.try_get(1).map_err(be(op))?,
        size: n(2, "size")?,
        sha256: r.try_get(3).map_err(be(op))?,
        state: HuntFileState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("{op}: unknown file state {state:?}")))?,
        records: n(5, "records")?,
        matches: n(6, "matches")?,
        error: r.try_get(7).map_err(be(op))?,
    })
}

async fn detail(
    c: &deadpool_postgres::Transaction<'_>,
    op: &str,
    id: i64,
) -> Result<Option<HuntDetail>, StoreError> {
    let Some(row) = c
        .query_opt(
            &format!("SELECT {HUNT_COLUMNS} FROM hunts WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(be(op))?
    else {
        return Ok(None);
    };
    let hunt = hunt_row(op, &row)?;
    let files = c
        .query(
            "SELECT idx, name, size, sha256, state, records, matches, error FROM hunt_files \
             WHERE hunt_id = $1 ORDER BY idx",
            &[&id],
        )
        .await
        .map_err(be(op))?
        .iter()
        .map(|r| file_row(op, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(HuntDetail { hunt, files }))
}

#[async_trait]
impl HuntStore for PgStore {
    async fn create_hunt(&self, hunt: &NewHunt) -> Result<HuntDetail, StoreError> {
        const OP: &str = "create_hunt";
        let bytes = query::to_i64(OP, "bytes_total", hunt.files.iter().map(|f| f.size).sum())?;
        let files = hunt.files.len() as i64;
        let mut c = self.client(OP).await?;
        let tx = c.transaction().await.map_err(be(OP))?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO hunts (name, created_by, created_ms, state, files_total, files_done, \
                 bytes_total, bytes_done, records_done, matches) \
                 VALUES ($1, $2, $3, 'queued', $4, 0, $5, 0, 0, 0) RETURNING id",
                &[
                    &hunt.name,
                    &hunt.created_by,
                    &hunt.created_ms,
                    &files,
                    &bytes,
                ],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(be(OP))?;
        for (i, f) in hunt.files.iter().enumerate() {
            let size = query::to_i64(OP, "size", f.size)?;
            tx.execute(
                "INSERT INTO hunt_files (hunt_id, idx, name, size, sha256, state, records, \
                 matches) VALUES ($1, $2, $3, $4, $5, 'queued', 0, 0)",
                &[&id, &(i as i64), &f.name, &size, &f.sha256],
            )
            .await
            .map_err(be(OP))?;
        }
        let d = detail(&tx, OP, id).await?;
        tx.commit().await.map_err(be(OP))?;
        d.ok_or_else(|| StoreError::Backend(format!("{OP}: job {id} vanished")))
    }

    async fn hunts(&self) -> Result<Vec<Hunt>, StoreError> {
        const OP: &str = "hunts";
        let c = self.client(OP).await?;
        c.query(
            &format!("SELECT {HUNT_COLUMNS} FROM hunts ORDER BY id DESC"),
            &[],
        )
        .await
        .map_err(be(OP))?
        .iter()
        .map(|r| hunt_row(OP, r))
        .collect()
    }

    async fn hunt(&self, id: i64) -> Result<Option<HuntDetail>, StoreError> {
        const OP: &str = "hunt";
        let mut c = self.client(OP).await?;
        // One snapshot for the job and its files.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(be(OP))?;
        let d = detail(&tx, OP, id).await?;
        tx.commit().await.map_err(be(OP))?;
        Ok(d)
    }

    async fn update_hunt(&self, h: &Hunt) -> Result<(), StoreError> {
        const OP: &str = "update_hunt";
        let n = [
            query::to_i64(OP, "files_done", h.files_done)?,
            query::to_i64(OP, "bytes_done", h.bytes_done)?,
            query::to_i64(OP, "records_done", h.records_done)?,
            query::to_i64(OP, "matches", h.matches)?,
        ];
        let c = self.client(OP).await?;
        let changed = c
            .execute(
                "UPDATE hunts SET state = $2, started_ms = $3, finished_ms = $4, \
                 files_done = $5, bytes_done = $6, records_done = $7, matches = $8, \
                 error = $9 WHERE id = $1",
                &[
                    &h.id,
                    &h.state.as_str(),
                    &h.started_ms,
                    &h.finished_ms,
                    &n[0],
                    &n[1],
                    &n[2],
                    &n[3],
                    &h.error,
                ],
            )
            .await
            .map_err(be(OP))?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                what: "hunt",
                id: h.id.to_string(),
            });
        }
        Ok(())
    }

    async fn update_hunt_file(&self, hunt_id: i64, f: &HuntFile) -> Result<(), StoreError> {
        const OP: &str = "update_hunt_file";
        let records = query::to_i64(OP, "records", f.records)?;
        let matches = query::to_i64(OP, "matches", f.matches)?;
        let c = self.client(OP).await?;
        let changed = c
            .execute(
                "UPDATE hunt_files SET state = $3, records = $4, matches = $5, error = $6 \
                 WHERE hunt_id = $1 AND idx = $2",
                &[
                    &hunt_id,
                    &i64::from(f.index),
                    &f.state.as_str(),
                    &records,
                    &matches,
                    &f.error,
                ],
            )
            .await
            .map_err(be(OP))?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                what: "hunt file",
                id: format!("{hunt_id}/{}", f.index),
            });
        }
        Ok(())
    }

    async fn insert_hunt_alerts(
        &self,
        hunt_id: i64,
        alerts: &[NewAlert],
    ) -> Result<InsertReport, StoreError> {
        self.insert_alert_rows("insert_hunt_alerts", alerts, Some(hunt_id))
            .await
    }

    async fn hunt_alerts(
        &self,
        hunt_id: i64,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Alert>, StoreError> {
        const OP: &str = "hunt_alerts";
        let offset = query::to_i64(OP, "offset", offset)?;
        let mut c = self.client(OP).await?;
        let tx = c.transaction().await.map_err(be(OP))?;
        let built = query::Built {
            sql: format!(
                "SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.hunt_id = $1::int8 \
                 ORDER BY a.timestamp_ms, a.row LIMIT $2::int8 OFFSET $3::int8"
            ),
            params: vec![
                Param::Int(hunt_id),
                Param::Int(i64::from(limit)),
                Param::Int(offset),
            ],
        };
        let alerts = Self::query_alerts(&tx, OP, built).await?;
        tx.commit().await.map_err(be(OP))?;
        Ok(alerts.into_iter().map(|(_, a)| a).collect())
    }

    async fn delete_hunt(&self, id: i64) -> Result<bool, StoreError> {
        const OP: &str = "delete_hunt";
        let mut c = self.client(OP).await?;
        let tx = c.transaction().await.map_err(be(OP))?;
        let victims = tx
            .query(
                "SELECT row, id, timestamp_ms, techniques, level, status, source FROM alerts \
                 WHERE hunt_id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(be(OP))?;
        // Not in the rollup: the change it returns is not applied.
        delete_victims(&tx, OP, &victims).await?;
        tx.execute("DELETE FROM hunt_files WHERE hunt_id = $1", &[&id])
            .await
            .map_err(be(OP))?;
        let n = tx
            .execute("DELETE FROM hunts WHERE id = $1", &[&id])
            .await
            .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        Ok(n > 0)
    }
}
