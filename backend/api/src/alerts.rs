//! Alerts: listing with filters and cursor pagination, detail with notes,
//! triage updates, notes, and counts over time.

use axum::extract::State;
use axum::http::StatusCode;
use picket_store::model::{
    Alert, AlertFilter, AlertSource, AlertStatus, AlertUpdate, CountBucket, Cursor, Note,
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::{write_audit, Analyst, Auth, Viewer};
use crate::error::{ApiError, Json, Path, Query};
use crate::now_ms;
use crate::params::{bounded, duration_ms, enum_value, hex_id, level, time_ms};
use crate::state::AppState;

/// Default page size of `GET /alerts`.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size of `GET /alerts`.
pub const MAX_LIMIT: u32 = 500;
const MAX_NOTE_LEN: usize = 4096;
const MIN_BUCKET_MS: i64 = 1_000;
const MAX_BUCKET_MS: i64 = 31 * 86_400_000;
const DEFAULT_BUCKET_MS: i64 = 3_600_000;

/// An alert as the API shows it: the stored alert (with its whole `event`)
/// plus the matched rule's author lifted out of the event, so every view
/// can credit it (SigmaHQ rules are DRL 1.1, which requires attribution).
#[derive(Debug, Serialize)]
pub(crate) struct AlertView {
    #[serde(flatten)]
    alert: Alert,
    rule_author: Option<String>,
}

impl From<Alert> for AlertView {
    fn from(alert: Alert) -> Self {
        let rule_author = alert
            .alert
            .event
            .get("rule_author")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        Self { alert, rule_author }
    }
}

/// Query parameters of `GET /alerts` and `GET /alerts/counts`; all strings
/// so that each bad value gets an error naming its parameter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertQuery {
    device: Option<String>,
    level: Option<String>,
    rule: Option<String>,
    technique: Option<String>,
    status: Option<String>,
    source: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
    bucket: Option<String>,
    hunt: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl AlertQuery {
    fn filter(&self) -> Result<AlertFilter, ApiError> {
        let device_id = non_empty(self.device.clone());
        if let Some(d) = &device_id {
            hex_id("device", d)?;
        }
        let since_ms = self
            .since
            .as_deref()
            .map(|s| time_ms("since", s))
            .transpose()?;
        let until_ms = self
            .until
            .as_deref()
            .map(|s| time_ms("until", s))
            .transpose()?;
        if let (Some(s), Some(u)) = (since_ms, until_ms) {
            if s > u {
                return Err(ApiError::bad("`since` is after `until`"));
            }
        }
        Ok(AlertFilter {
            device_id,
            min_level: self
                .level
                .as_deref()
                .map(|s| level("level", s))
                .transpose()?,
            rule_id: non_empty(self.rule.clone()),
            technique: non_empty(self.technique.clone()),
            status: self
                .status
                .as_deref()
                .map(|s| enum_value::<AlertStatus>("status", s, "new, acknowledged, resolved"))
                .transpose()?,
            source: self
                .source
                .as_deref()
                .map(|s| {
                    enum_value::<AlertSource>("source", s, "appliance, windows, macos, upload")
                })
                .transpose()?,
            since_ms,
            until_ms,
            text: non_empty(self.q.clone()),
            hunt_id: non_empty(self.hunt.clone())
                .map(|h| {
                    h.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                        ApiError::bad(format!("invalid `hunt` {h:?}: expected a job id"))
                    })
                })
                .transpose()?,
        })
    }
}

/// One page of `GET /alerts`.
#[derive(Debug, Serialize)]
pub(crate) struct AlertList {
    alerts: Vec<AlertView>,
    next: Option<String>,
}

/// `GET /api/v1/alerts`
pub(crate) async fn list(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
    Query(query): Query<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    if query.bucket.is_some() {
        return Err(ApiError::bad(
            "`bucket` belongs to /api/v1/alerts/counts, not /api/v1/alerts",
        ));
    }
    let filter = query.filter()?;
    let cursor = non_empty(query.cursor.clone())
        .map(|c| Cursor::decode(&c).map_err(|e| ApiError::bad(format!("`cursor`: {e}"))))
        .transpose()?;
    let limit = query
        .limit
        .as_deref()
        .map(|s| bounded("limit", s, 1, MAX_LIMIT))
        .transpose()?
        .unwrap_or(DEFAULT_LIMIT);
    let page = state.ctx.store.alerts(&filter, cursor, limit).await?;
    Ok(Json(AlertList {
        alerts: page.alerts.into_iter().map(AlertView::from).collect(),
        next: page.next.map(|c| c.encode()),
    }))
}

/// `GET /alerts/counts` answer.
#[derive(Debug, Serialize)]
pub(crate) struct Counts {
    bucket_ms: i64,
    buckets: Vec<CountBucket>,
}

/// `GET /api/v1/alerts/counts`
pub(crate) async fn counts(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
    Query(query): Query<AlertQuery>,
) -> Result<Json<Counts>, ApiError> {
    if query.cursor.is_some() || query.limit.is_some() {
        return Err(ApiError::bad(
            "`cursor` and `limit` belong to /api/v1/alerts, not /api/v1/alerts/counts",
        ));
    }
    let filter = query.filter()?;
    let bucket_ms = match query.bucket.as_deref() {
        Some(b) => duration_ms("bucket", b)?,
        None => DEFAULT_BUCKET_MS,
    };
    if !(MIN_BUCKET_MS..=MAX_BUCKET_MS).contains(&bucket_ms) {
        return Err(ApiError::bad(format!(
            "`bucket` must be between 1s and 31d (got {bucket_ms} ms)"
        )));
    }
    let buckets = state.ctx.store.alert_counts(&filter, bucket_ms).await?;
    Ok(Json(Counts { bucket_ms, buckets }))
}

async fn load(state: &AppState, id: &str) -> Result<Alert, ApiError> {
    hex_id("alert", id)?;
    state
        .ctx
        .store
        .alert(&id.to_owned())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("alert {id} not found")))
}

/// `GET /alerts/{id}` answer.
#[derive(Debug, Serialize)]
pub(crate) struct AlertDetail {
    #[serde(flatten)]
    alert: AlertView,
    notes: Vec<Note>,
}

/// `GET /api/v1/alerts/{id}`
pub(crate) async fn get(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<AlertDetail>, ApiError> {
    let alert = load(&state, &id).await?;
    let notes = state.ctx.store.notes(&id).await?;
    Ok(Json(AlertDetail {
        alert: alert.into(),
        notes,
    }))
}

fn double_option<'de, D>(d: D) -> Result<Option<Option<String>>, D::Error>
where
    D: Deserializer<'de>,
{
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /alerts/{id}` body: absent fields stay; `"assignee": null`
/// unassigns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertPatch {
    status: Option<AlertStatus>,
    #[serde(default, deserialize_with = "double_option")]
    assignee: Option<Option<String>>,
}

/// `PATCH /api/v1/alerts/{id}`
pub(crate) async fn update(
    State(state): State<AppState>,
    Auth(p, _): Auth<Analyst>,
    Path(id): Path<String>,
    Json(patch): Json<AlertPatch>,
) -> Result<Json<AlertView>, ApiError> {
    if patch.status.is_none() && patch.assignee.is_none() {
        return Err(ApiError::bad(
            "nothing to change: give `status` and/or `assignee`",
        ));
    }
    load(&state, &id).await?;
    if let Some(Some(name)) = &patch.assignee {
        if state.ctx.store.user_by_name(name).await?.is_none() {
            return Err(ApiError::bad(format!("`assignee`: no user named {name:?}")));
        }
    }
    let update = AlertUpdate {
        status: patch.status,
        assignee: patch.assignee.clone(),
    };
    let alert = state.ctx.store.update_alert(&id, &update, now_ms()).await?;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        "alert.update",
        &id,
        audit_detail(&patch),
    )
    .await;
    Ok(Json(alert.into()))
}

/// The audit detail of a PATCH names only the fields it gave, so that an
/// absent `assignee` is not read back as "unassigned" (both are `null` once
/// serialized as they are).
fn audit_detail(patch: &AlertPatch) -> serde_json::Value {
    let mut detail = serde_json::Map::new();
    if let Some(status) = patch.status {
        detail.insert("status".into(), serde_json::json!(status));
    }
    if let Some(assignee) = &patch.assignee {
        detail.insert("assignee".into(), serde_json::json!(assignee));
    }
    detail.into()
}

/// `POST /alerts/{id}/notes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewNote {
    text: String,
}

/// `POST /api/v1/alerts/{id}/notes`
pub(crate) async fn add_note(
    State(state): State<AppState>,
    Auth(p, _): Auth<Analyst>,
    Path(id): Path<String>,
    Json(body): Json<NewNote>,
) -> Result<(StatusCode, Json<Note>), ApiError> {
    let text = body.text.trim();
    if text.is_empty() {
        return Err(ApiError::bad("`text` is empty"));
    }
    if text.chars().count() > MAX_NOTE_LEN {
        return Err(ApiError::bad(format!(
            "`text` is longer than {MAX_NOTE_LEN} characters"
        )));
    }
    load(&state, &id).await?;
    let note = Note {
        author: p.user.name.clone(),
        at_ms: now_ms(),
        text: text.to_owned(),
    };
    state.ctx.store.add_note(&id, &note).await?;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        "alert.note",
        &id,
        serde_json::json!({ "chars": note.text.chars().count() }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(note)))
}
