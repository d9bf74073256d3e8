//! Hunting jobs in SQLite (see `crate::hunt`).

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension as _, TransactionBehavior};

use super::{be, clamp_indexed_row, delete_victims, select_alerts, SqliteStore};
use crate::hunt::{Hunt, HuntDetail, HuntFile, HuntFileState, HuntState, HuntStore, NewHunt};
use crate::model::{Alert, NewAlert};
use crate::query::{self, Param, ALERT_COLUMNS};
use crate::{InsertReport, StoreError};

pub(super) const MIGRATION: &str = r"
CREATE TABLE hunts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    state        TEXT NOT NULL,
    started_ms   INTEGER,
    finished_ms  INTEGER,
    files_total  INTEGER NOT NULL,
    files_done   INTEGER NOT NULL,
    bytes_total  INTEGER NOT NULL,
    bytes_done   INTEGER NOT NULL,
    records_done INTEGER NOT NULL,
    matches      INTEGER NOT NULL,
    error        TEXT
);
CREATE TABLE hunt_files (
    hunt_id INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    name    TEXT NOT NULL,
    size    INTEGER NOT NULL,
    sha256  TEXT NOT NULL,
    state   TEXT NOT NULL,
    records INTEGER NOT NULL,
    matches INTEGER NOT NULL,
    error   TEXT,
    PRIMARY KEY (hunt_id, idx)
);
-- A job's alerts; the fleet's (hunt_id NULL) are not in this index, so
-- it costs ingest nothing and the fleet's lists never pick it.
ALTER TABLE alerts ADD COLUMN hunt_id INTEGER;
CREATE INDEX alerts_hunt ON alerts (hunt_id, timestamp_ms, row) WHERE hunt_id IS NOT NULL;
";

const HUNT_COLUMNS: &str = "id, name, created_by, created_ms, state, started_ms, finished_ms, \
    files_total, files_done, bytes_total, bytes_done, records_done, matches, error";

fn count(op: &str, what: &str, v: i64) -> Result<u64, StoreError> {
    query::to_u64(op, what, v)
}

fn int(op: &str, what: &str, v: u64) -> Result<i64, StoreError> {
    query::to_i64(op, what, v)
}

type RawHunt = (
    i64,
    String,
    String,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    [i64; 6],
    Option<String>,
);

fn raw_hunt(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawHunt> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        [
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
            r.get(11)?,
            r.get(12)?,
        ],
        r.get(13)?,
    ))
}

fn decode_hunt(op: &str, h: RawHunt) -> Result<Hunt, StoreError> {
    let (id, name, created_by, created_ms, state, started_ms, finished_ms, n, error) = h;
    Ok(Hunt {
        id,
        name,
        created_by,
        created_ms,
        state: HuntState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("{op}: unknown hunt state {state:?}")))?,
        started_ms,
        finished_ms,
        files_total: count(op, "files_total", n[0])?,
        files_done: count(op, "files_done", n[1])?,
        bytes_total: count(op, "bytes_total", n[2])?,
        bytes_done: count(op, "bytes_done", n[3])?,
        records_done: count(op, "records_done", n[4])?,
        matches: count(op, "matches", n[5])?,
        error,
    })
}

type RawFile = (i64, String, i64, String, String, i64, i64, Option<String>);

fn decode_file(op: &str, f: RawFile) -> Result<HuntFile, StoreError> {
    let (index, name, size, sha256, state, records, matches, error) = f;
    Ok(HuntFile {
        index: u32::try_from(index)
            .map_err(|_| StoreError::Backend(format!("{op}: file index {index} out of range")))?,
        name,
        size: count(op, "size", size)?,
        sha256,
        state: HuntFileState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("{op}: unknown file state {state:?}")))?,
        records: count(op, "records", records)?,
        matches: count(op, "matches", matches)?,
        error,
    })
}

fn detail(c: &rusqlite::Connection, op: &str, id: i64) -> Result<Option<HuntDetail>, StoreError> {
    let Some(raw) = c
        .query_row(
            &format!("SELECT {HUNT_COLUMNS} FROM hunts WHERE id = ?1"),
            params![id],
            raw_hunt,
        )
        .optional()
        .map_err(be(op))?
    else {
        return Ok(None);
    };
    let hunt = decode_hunt(op, raw)?;
    let mut s = c
        .prepare_cached(
            "SELECT idx, name, size, sha256, state, records, matches, error FROM hunt_files \
             WHERE hunt_id = ?1 ORDER BY idx",
        )
        .map_err(be(op))?;
    let files = s
        .query_map(params![id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .and_then(Iterator::collect::<Result<Vec<RawFile>, _>>)
        .map_err(be(op))?
        .into_iter()
        .map(|f| decode_file(op, f))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(HuntDetail { hunt, files }))
}

#[async_trait]
impl HuntStore for SqliteStore {
    async fn create_hunt(&self, hunt: &NewHunt) -> Result<HuntDetail, StoreError> {
        const OP: &str = "create_hunt";
        let hunt = hunt.clone();
        let bytes: u64 = hunt.files.iter().map(|f| f.size).sum();
        let bytes = int(OP, "bytes_total", bytes)?;
        self.write(OP, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be(OP))?;
            tx.execute(
                "INSERT INTO hunts (name, created_by, created_ms, state, files_total, files_done, \
                 bytes_total, bytes_done, records_done, matches) \
                 VALUES (?1, ?2, ?3, 'queued', ?4, 0, ?5, 0, 0, 0)",
                params![
                    hunt.name,
                    hunt.created_by,
                    hunt.created_ms,
                    hunt.files.len() as i64,
                    bytes
                ],
            )
            .map_err(be(OP))?;
            let id = tx.last_insert_rowid();
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT INTO hunt_files (hunt_id, idx, name, size, sha256, state, records, \
                         matches) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', 0, 0)",
                    )
                    .map_err(be(OP))?;
                for (i, f) in hunt.files.iter().enumerate() {
                    ins.execute(params![
                        id,
                        i as i64,
                        f.name,
                        int(OP, "size", f.size)?,
                        f.sha256
                    ])
                    .map_err(be(OP))?;
                }
            }
            let d = detail(&tx, OP, id)?;
            tx.commit().map_err(be(OP))?;
            d.ok_or_else(|| StoreError::Backend(format!("{OP}: job {id} vanished")))
        })
        .await
    }

    async fn hunts(&self) -> Result<Vec<Hunt>, StoreError> {
        const OP: &str = "hunts";
        self.read(OP, |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {HUNT_COLUMNS} FROM hunts ORDER BY id DESC"
                ))
                .map_err(be(OP))?;
            s.query_map([], raw_hunt)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(be(OP))?
                .into_iter()
                .map(|h| decode_hunt(OP, h))
                .collect()
        })
        .await
    }

    async fn hunt(&self, id: i64) -> Result<Option<HuntDetail>, StoreError> {
        const OP: &str = "hunt";
        self.read(OP, move |c| {
            let tx = c.transaction().map_err(be(OP))?;
            detail(&tx, OP, id)
        })
        .await
    }

    async fn update_hunt(&self, hunt: &Hunt) -> Result<(), StoreError> {
        const OP: &str = "update_hunt";
        let h = hunt.clone();
        let n = [
            int(OP, "files_done", h.files_done)?,
            int(OP, "bytes_done", h.bytes_done)?,
            int(OP, "records_done", h.records_done)?,
            int(OP, "matches", h.matches)?,
        ];
        self.write(OP, move |c| {
            let changed = c
                .execute(
                    "UPDATE hunts SET state = ?2, started_ms = ?3, finished_ms = ?4, \
                     files_done = ?5, bytes_done = ?6, records_done = ?7, matches = ?8, \
                     error = ?9 WHERE id = ?1",
                    params![
                        h.id,
                        h.state.as_str(),
                        h.started_ms,
                        h.finished_ms,
                        n[0],
                        n[1],
                        n[2],
                        n[3],
                        h.error
                    ],
                )
                .map_err(be(OP))?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: "hunt",
                    id: h.id.to_string(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn update_hunt_file(&self, hunt_id: i64, file: &HuntFile) -> Result<(), StoreError> {
        const OP: &str = "update_hunt_file";
        let f = file.clone();
        let (records, matches) = (
            int(OP, "records", f.records)?,
            int(OP, "matches", f.matches)?,
        );
        self.write(OP, move |c| {
            let changed = c
                .execute(
                    "UPDATE hunt_files SET state = ?3, records = ?4, matches = ?5, error = ?6 \
                     WHERE hunt_id = ?1 AND idx = ?2",
                    params![
                        hunt_id,
                        i64::from(f.index),
                        f.state.as_str(),
                        records,
                        matches,
                        f.error
                    ],
                )
                .map_err(be(OP))?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: "hunt file",
                    id: format!("{hunt_id}/{}", f.index),
                });
            }
            Ok(())
        })
        .await
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
        let offset = int(OP, "offset", offset)?;
        self.read(OP, move |c| {
            let built = query::Built {
                sql: format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.hunt_id = ?1 \
                     ORDER BY a.timestamp_ms, a.row LIMIT ?2 OFFSET ?3"
                ),
                params: vec![
                    Param::Int(hunt_id),
                    Param::Int(i64::from(limit)),
                    Param::Int(offset),
                ],
            };
            Ok(select_alerts(c, OP, built)?
                .into_iter()
                .map(|(_, a)| a)
                .collect())
        })
        .await
    }

    async fn delete_hunt(&self, id: i64) -> Result<bool, StoreError> {
        const OP: &str = "delete_hunt";
        self.write(OP, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be(OP))?;
            let indexed_row: i64 = tx
                .query_row("SELECT indexed_row FROM search_state", [], |r| r.get(0))
                .map_err(be(OP))?;
            let victims: Vec<(i64, String, i64, String)> = {
                let mut s = tx
                    .prepare_cached(
                        "SELECT row, id, timestamp_ms, techniques FROM alerts WHERE hunt_id = ?1",
                    )
                    .map_err(be(OP))?;
                s.query_map(params![id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .and_then(Iterator::collect)
                .map_err(be(OP))?
            };
            delete_victims(&tx, OP, &victims, indexed_row)?;
            clamp_indexed_row(&tx).map_err(be(OP))?;
            tx.execute("DELETE FROM hunt_files WHERE hunt_id = ?1", params![id])
                .map_err(be(OP))?;
            let n = tx
                .execute("DELETE FROM hunts WHERE id = ?1", params![id])
                .map_err(be(OP))?;
            tx.commit().map_err(be(OP))?;
            Ok(n > 0)
        })
        .await
    }
}
