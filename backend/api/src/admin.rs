//! Administration: users and the audit log (admin only).

use axum::extract::State;
use axum::http::StatusCode;
use picket_store::model::{AuditEntry, AuditFilter, Role, User};
use serde::{Deserialize, Serialize};

use crate::auth::{create_user_as, hash_for, validate_password, write_audit, Admin, Auth};
use crate::error::{ApiError, Json, Path, Query};
use crate::params::{bounded, time_ms};
use crate::state::AppState;

const DEFAULT_AUDIT_LIMIT: u32 = 100;
const MAX_AUDIT_LIMIT: u32 = 1000;

/// `GET /api/v1/users`
pub(crate) async fn list_users(
    State(state): State<AppState>,
    _auth: Auth<Admin>,
) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(state.ctx.store.users().await?))
}

/// `POST /users` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    name: String,
    password: String,
    role: Role,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/users`
pub(crate) async fn create_user(
    State(state): State<AppState>,
    Auth(p, _): Auth<Admin>,
    Json(body): Json<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let user = create_user_as(
        &*state.ctx.store,
        Some(&state),
        &state.ctx.config.password,
        &body.name,
        &body.password,
        body.role,
        &p.user.name,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `PATCH /users/{id}` body; absent fields stay.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserPatch {
    role: Option<Role>,
    password: Option<String>,
    disabled: Option<bool>,
}

impl std::fmt::Debug for UserPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPatch")
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// `PATCH /api/v1/users/{id}`: disabling a user or changing its password
/// ends all its sessions; the last enabled admin cannot be demoted or
/// disabled (409).
pub(crate) async fn update_user(
    State(state): State<AppState>,
    Auth(p, _): Auth<Admin>,
    Path(id): Path<i64>,
    Json(patch): Json<UserPatch>,
) -> Result<Json<User>, ApiError> {
    if patch.role.is_none() && patch.password.is_none() && patch.disabled.is_none() {
        return Err(ApiError::bad(
            "nothing to change: give `role`, `password` and/or `disabled`",
        ));
    }
    let store = &*state.ctx.store;
    let target = store
        .user(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))?;
    let loses_admin = target.role == Role::Admin
        && !target.disabled
        && (patch.role.is_some_and(|r| r != Role::Admin) || patch.disabled == Some(true));
    if loses_admin {
        let enabled_admins = store
            .users()
            .await?
            .iter()
            .filter(|u| u.role == Role::Admin && !u.disabled)
            .count();
        if enabled_admins <= 1 {
            return Err(ApiError::Conflict(format!(
                "{} is the last enabled admin: create another admin first",
                target.name
            )));
        }
    }
    let hash = match &patch.password {
        Some(pw) => {
            validate_password(pw)?;
            Some(hash_for(&state, pw).await?)
        }
        None => None,
    };
    let user = store
        .update_user(id, patch.role, hash.as_deref(), patch.disabled)
        .await?;
    if patch.disabled == Some(true) || hash.is_some() {
        store.delete_user_sessions(id).await?;
    }
    write_audit(
        store,
        &p.user.name,
        "user.update",
        &user.name,
        serde_json::json!({
            "id": id,
            "role": patch.role,
            "disabled": patch.disabled,
            "password_changed": hash.is_some(),
        }),
    )
    .await;
    Ok(Json(user))
}

/// `GET /audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    before: Option<String>,
    since: Option<String>,
    limit: Option<String>,
}

/// `GET /audit` answer: newest first; `next` is the `before` of the next page.
#[derive(Debug, Serialize)]
pub(crate) struct AuditPage {
    entries: Vec<AuditEntry>,
    next: Option<i64>,
}

/// `GET /api/v1/audit`
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    _auth: Auth<Admin>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = q
        .limit
        .as_deref()
        .map(|s| bounded("limit", s, 1, MAX_AUDIT_LIMIT))
        .transpose()?
        .unwrap_or(DEFAULT_AUDIT_LIMIT);
    let filter = AuditFilter {
        actor: q.actor.filter(|s| !s.is_empty()),
        action_prefix: q.action.filter(|s| !s.is_empty()),
        before_id: q
            .before
            .as_deref()
            .map(|s| bounded("before", s, 1, i64::MAX))
            .transpose()?,
        since_ms: q
            .since
            .as_deref()
            .map(|s| time_ms("since", s))
            .transpose()?,
    };
    let entries = state.ctx.store.audit_log(&filter, limit).await?;
    let next = if entries.len() == usize::try_from(limit).unwrap_or(usize::MAX) {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage { entries, next }))
}
