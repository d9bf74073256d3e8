//! Hunting jobs: EVTX files uploaded to the backend, which runs its agent
//! rule set over them in the background (the worker is the backend's,
//! behind [`crate::Fleet`]); the matches become alerts tied to the job.
//!
//! `POST /api/v1/hunts` takes `multipart/form-data`: one optional `name`
//! text part and one or more `file` parts (the file name of each part is
//! kept). Parts are streamed to disk as they arrive (never held in
//! memory), hashed (SHA-256) and counted; a request whose parts add up to
//! more than the backend's `[hunts] max_upload_bytes` is refused with 413
//! and nothing is kept. Whether a file is EVTX is the worker's business: a
//! file that is not (no `ElfFile\0` magic) or cannot be parsed is marked
//! `failed` with the reason, and the others are scanned.
//!
//! Reads (`GET /hunts`, `/hunts/{id}`, `/hunts/{id}/timeline`) come from
//! the store; the timeline is the job's alerts in event-time order, each
//! row with its file, record id, computer, channel, event id and the rule
//! (id, title, level, author: SigmaHQ rules are DRL 1.1, which requires
//! attribution). The job's alerts are also `GET /alerts?hunt=ID`.

use std::path::{Path as FsPath, PathBuf};

use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use picket_store::hunt::{Hunt, HuntDetail};
use picket_store::model::{Alert, Level};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

use crate::auth::{random_token, write_audit, Auth, Operator, Viewer};
use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;

/// Default page size of the timeline.
pub const DEFAULT_TIMELINE_LIMIT: u32 = 100;
/// Largest page size of the timeline.
pub const MAX_TIMELINE_LIMIT: u32 = 1000;
const MAX_NAME_LEN: usize = 200;
const MAX_FILES: usize = 1000;

/// Where uploads go and how big they may be (the backend's
/// [`crate::Fleet::hunt_uploads`]).
#[derive(Debug, Clone)]
pub struct HuntUploads {
    /// A directory on the same file system as the jobs' files: each upload
    /// is written to a fresh folder inside it, which
    /// [`crate::Fleet::create_hunt`] then takes over.
    pub staging_dir: PathBuf,
    /// The most bytes of files one upload may carry (413 beyond).
    pub max_upload_bytes: u64,
}

/// One uploaded file, on disk in the upload's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntUpload {
    /// The part's file name (its last path component), or `file-N`.
    pub name: String,
    /// Its file in the upload folder (named by its 0-based index).
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

fn parse_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad(format!(
            "invalid hunt id {s:?}: expected a positive integer"
        ))
    })
}

/// Removes an upload folder unless the job took it over.
struct Staged(Option<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove an upload folder");
            }
        }
    }
}

fn clean_name(raw: Option<&str>, index: usize) -> String {
    let base = raw
        .and_then(|n| n.rsplit(['/', '\\']).next())
        .map(|n| n.chars().filter(|c| !c.is_control()).collect::<String>())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..");
    let mut name = base.unwrap_or_else(|| format!("file-{}", index + 1));
    if name.len() > 255 {
        let mut cut = 255;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

fn multipart_error(e: &axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(e.body_text())
    } else {
        ApiError::bad(format!("bad multipart body: {}", e.body_text()))
    }
}

/// Streams one `file` part to `path`; returns its size and SHA-256.
async fn store_part(
    field: &mut Field<'_>,
    path: &FsPath,
    total: &mut u64,
    max: u64,
) -> Result<(u64, String), ApiError> {
    let mut out = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::Internal(format!("create {}: {e}", path.display())))?;
    let mut hash = sha2::Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e))? {
        size += chunk.len() as u64;
        *total += chunk.len() as u64;
        if *total > max {
            return Err(ApiError::PayloadTooLarge(format!(
                "the upload is larger than the limit of {max} bytes ([hunts] max_upload_bytes)"
            )));
        }
        hash.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(format!("write {}: {e}", path.display())))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::Internal(format!("write {}: {e}", path.display())))?;
    let digest = hash.finalize();
    let hex = digest.iter().fold(String::with_capacity(64), |mut s, b| {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        s
    });
    Ok((size, hex))
}

/// `POST /api/v1/hunts`: `multipart/form-data` with a `name` and one or
/// more `file` parts.
pub(crate) async fn create(
    State(state): State<AppState>,
    Auth(p, _): Auth<Operator>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<HuntDetail>), ApiError> {
    let Some(limits) = state.ctx.fleet.hunt_uploads() else {
        return Err(ApiError::Unavailable(
            "hunting jobs are not available in this backend".into(),
        ));
    };
    let mut multipart = multipart.map_err(|e| {
        ApiError::UnsupportedMediaType(format!(
            "expected multipart/form-data with `file` parts: {}",
            e.body_text()
        ))
    })?;
    let dir = limits
        .staging_dir
        .join(format!(".upload-{}", &random_token()[..16]));
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(format!("create {}: {e}", dir.display())))?;
    let mut staged = Staged(Some(dir.clone()));
    let mut name: Option<String> = None;
    let mut files: Vec<HuntUpload> = Vec::new();
    let mut total = 0u64;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(&e))?
    {
        match field.name() {
            Some("name") => {
                let text = field.text().await.map_err(|e| multipart_error(&e))?;
                if text.chars().count() > MAX_NAME_LEN {
                    return Err(ApiError::bad(format!(
                        "`name` is longer than {MAX_NAME_LEN} characters"
                    )));
                }
                name = Some(text.trim().to_owned()).filter(|n| !n.is_empty());
            }
            Some("file") => {
                if files.len() == MAX_FILES {
                    return Err(ApiError::bad(format!(
                        "more than {MAX_FILES} files in one upload"
                    )));
                }
                let index = files.len();
                let file_name = clean_name(field.file_name(), index);
                let path = dir.join(index.to_string());
                let (size, sha256) =
                    store_part(&mut field, &path, &mut total, limits.max_upload_bytes).await?;
                files.push(HuntUpload {
                    name: file_name,
                    path,
                    size,
                    sha256,
                });
            }
            other => {
                return Err(ApiError::bad(format!(
                    "unexpected part {:?}: expected `name` and `file` parts",
                    other.unwrap_or("")
                )))
            }
        }
    }
    if files.is_empty() {
        return Err(ApiError::bad(
            "no `file` part: upload at least one EVTX file",
        ));
    }
    let name = name.unwrap_or_else(|| files[0].name.clone());
    let detail = state
        .ctx
        .fleet
        .create_hunt(&name, &dir, files, &p.user.name)
        .await?;
    // The job owns the folder now.
    staged.0 = None;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        "hunt.create",
        &detail.hunt.id.to_string(),
        serde_json::json!({
            "name": detail.hunt.name,
            "files": detail.files.iter().map(|f| serde_json::json!({
                "name": f.name, "size": f.size, "sha256": f.sha256,
            })).collect::<Vec<_>>(),
        }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(detail)))
}

/// `GET /api/v1/hunts`
pub(crate) async fn list(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
) -> Result<Json<Vec<Hunt>>, ApiError> {
    Ok(Json(state.ctx.store.hunts().await?))
}

async fn detail(state: &AppState, id: i64) -> Result<HuntDetail, ApiError> {
    state
        .ctx
        .store
        .hunt(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("hunt {id} not found")))
}

/// `GET /api/v1/hunts/{id}`
pub(crate) async fn get(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<HuntDetail>, ApiError> {
    Ok(Json(detail(&state, parse_id(&id)?).await?))
}

/// `GET /hunts/{id}/timeline` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimelineQuery {
    offset: Option<String>,
    limit: Option<String>,
}

/// One match of a job, as the timeline shows it.
#[derive(Debug, Serialize)]
pub(crate) struct TimelineRow {
    alert_id: String,
    /// The event's time as the log wrote it.
    timestamp: String,
    timestamp_ms: i64,
    computer: String,
    channel: String,
    event_id: String,
    record_id: Option<u64>,
    file: String,
    rule_id: String,
    rule_title: String,
    level: Level,
    rule_author: Option<String>,
    techniques: Vec<String>,
}

impl From<Alert> for TimelineRow {
    fn from(a: Alert) -> Self {
        let a = a.alert;
        let s = |k: &str| {
            a.event
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        TimelineRow {
            timestamp: s("timestamp"),
            computer: s("computer"),
            channel: s("channel"),
            event_id: s("event_id"),
            file: s("file"),
            record_id: a.event.get("record_id").and_then(Value::as_u64),
            rule_author: a
                .event
                .get("rule_author")
                .and_then(Value::as_str)
                .map(str::to_owned),
            alert_id: a.id,
            timestamp_ms: a.timestamp_ms,
            rule_id: a.rule_id,
            rule_title: a.rule_title,
            level: a.level,
            techniques: a.techniques,
        }
    }
}

/// A page of the timeline.
#[derive(Debug, Serialize)]
pub(crate) struct Timeline {
    hunt_id: i64,
    offset: u64,
    limit: u32,
    /// The job's matches so far (all pages).
    total: u64,
    rows: Vec<TimelineRow>,
}

/// `GET /api/v1/hunts/{id}/timeline`
pub(crate) async fn timeline(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
    Path(id): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> Result<Json<Timeline>, ApiError> {
    let id = parse_id(&id)?;
    let offset = match q.offset.as_deref() {
        None | Some("") => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            ApiError::bad(format!("invalid `offset` {s:?}: expected a number >= 0"))
        })?,
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_TIMELINE_LIMIT,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_TIMELINE_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "invalid `limit` {s:?}: expected 1 to {MAX_TIMELINE_LIMIT}"
                ))
            })?,
    };
    let hunt = detail(&state, id).await?.hunt;
    let rows = state.ctx.store.hunt_alerts(id, offset, limit).await?;
    Ok(Json(Timeline {
        hunt_id: id,
        offset,
        limit,
        total: hunt.matches,
        rows: rows.into_iter().map(TimelineRow::from).collect(),
    }))
}

/// `POST /api/v1/hunts/{id}/cancel`
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Auth(p, _): Auth<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Hunt>, ApiError> {
    let id = parse_id(&id)?;
    let hunt = state.ctx.fleet.cancel_hunt(id).await?;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        "hunt.cancel",
        &id.to_string(),
        serde_json::json!({ "state": hunt.state }),
    )
    .await;
    Ok(Json(hunt))
}

/// `DELETE /api/v1/hunts/{id}`
pub(crate) async fn delete(
    State(state): State<AppState>,
    Auth(p, _): Auth<Operator>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let hunt = state.ctx.fleet.delete_hunt(id).await?;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        "hunt.delete",
        &id.to_string(),
        serde_json::json!({ "name": hunt.name, "matches": hunt.matches }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::clean_name;

    #[test]
    fn file_names_keep_only_their_last_component() {
        assert_eq!(
            clean_name(Some("C:\\logs\\Security.evtx"), 0),
            "Security.evtx"
        );
        assert_eq!(clean_name(Some("../../etc/passwd"), 0), "passwd");
        assert_eq!(clean_name(Some(".."), 2), "file-3");
        assert_eq!(clean_name(None, 0), "file-1");
        assert_eq!(clean_name(Some("a\u{0}b\n.evtx"), 0), "ab.evtx");
        assert_eq!(clean_name(Some(&"é".repeat(200)), 0).len(), 254);
    }
}
