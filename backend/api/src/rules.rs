//! Rule bundles and rollouts: push a signed bundle, roll it out in stages,
//! watch every device's state, pause, promote or abort; device groups (the
//! targets bundles name).
//!
//! Checking and announcing bundles is the backend's rollout controller
//! ([`crate::Fleet`]); this module validates requests, reads the store and
//! writes the audit log.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use picket_store::rollout::{
    Assignment, DeviceBundleState, Rollout, RolloutAction, RolloutProgress, RolloutSpec,
    StoredBundle,
};
use serde::{Deserialize, Serialize};

use crate::auth::{write_audit, Auth, Operator, Viewer};
use crate::error::{ApiError, Json, Path};
use crate::params::hex_id;
use crate::state::AppState;

/// Largest bundle `POST /api/v1/bundles` accepts (what devices download).
pub const BUNDLE_BODY_LIMIT: usize = 16 * 1024 * 1024;
const MAX_GROUPS: usize = 32;
const MAX_GROUP_LEN: usize = 64;

/// A bundle with how many devices are in each state for it.
#[derive(Debug, Serialize)]
pub(crate) struct BundleView {
    #[serde(flatten)]
    bundle: StoredBundle,
    devices: BTreeMap<&'static str, u64>,
}

fn parse_version(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad(format!(
            "invalid bundle version {s:?}: expected a positive integer"
        ))
    })
}

fn parse_rollout_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad(format!(
            "invalid rollout id {s:?}: expected a positive integer"
        ))
    })
}

/// `POST /api/v1/bundles`: a signed bundle file (`picketctl bundle build`
/// + `bundle sign`) as `application/octet-stream`.
pub(crate) async fn push(
    State(state): State<AppState>,
    Auth(p, _): Auth<Operator>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<StoredBundle>), ApiError> {
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        if ct.as_bytes() != b"application/octet-stream" {
            return Err(ApiError::UnsupportedMediaType(
                "bundles must be sent as `application/octet-stream`".into(),
            ));
        }
    }
    let body = body?;
    if body.is_empty() {
        return Err(ApiError::bad("empty body: expected a signed bundle file"));
    }
    let stored = state.ctx.fleet.push_bundle(&body, &p.user.name).await?;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        "bundle.push",
        &stored.version.to_string(),
        serde_json::json!({
            "sha256": stored.sha256,
            "size": stored.size,
            "rules": stored.rules.len(),
            "signers": stored.signers,
        }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// `GET /api/v1/bundles`
pub(crate) async fn list(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
) -> Result<Json<Vec<BundleView>>, ApiError> {
    let bundles = state.ctx.store.bundles().await?;
    let states = state.ctx.store.bundle_states(None, None).await?;
    let mut counts: BTreeMap<u64, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for s in &states {
        *counts
            .entry(s.version)
            .or_default()
            .entry(s.state.as_str())
            .or_default() += 1;
    }
    Ok(Json(
        bundles
            .into_iter()
            .map(|b| BundleView {
                devices: counts.remove(&b.version).unwrap_or_default(),
                bundle: b,
            })
            .collect(),
    ))
}

/// One bundle with every device's state for it.
#[derive(Debug, Serialize)]
pub(crate) struct BundleDetail {
    #[serde(flatten)]
    bundle: StoredBundle,
    states: Vec<DeviceBundleState>,
}

/// `GET /api/v1/bundles/{version}`
pub(crate) async fn get(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
    Path(version): Path<String>,
) -> Result<Json<BundleDetail>, ApiError> {
    let version = parse_version(&version)?;
    let bundle = state
        .ctx
        .store
        .bundles()
        .await?
        .into_iter()
        .find(|b| b.version == version)
        .ok_or_else(|| ApiError::NotFound(format!("bundle {version} not found")))?;
    let states = state.ctx.store.bundle_states(Some(version), None).await?;
    Ok(Json(BundleDetail { bundle, states }))
}

/// `GET /api/v1/bundles/{version}/file`: the signed bytes, as pushed.
pub(crate) async fn file(
    State(state): State<AppState>,
    _auth: Auth<Operator>,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let version = parse_version(&version)?;
    let bytes = state
        .ctx
        .store
        .bundle_bytes(version)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("bundle {version} not found")))?;
    Ok(([(CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `POST /api/v1/rollouts` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRollout {
    version: u64,
    #[serde(default)]
    spec: Option<RolloutSpec>,
}

/// `POST /api/v1/rollouts`
pub(crate) async fn create_rollout(
    State(state): State<AppState>,
    Auth(p, _): Auth<Operator>,
    Json(body): Json<NewRollout>,
) -> Result<(StatusCode, Json<Rollout>), ApiError> {
    let spec = body.spec.unwrap_or_default();
    let rollout = state
        .ctx
        .fleet
        .start_rollout(body.version, spec, &p.user.name)
        .await?;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        "rollout.create",
        &rollout.id.to_string(),
        serde_json::json!({ "version": rollout.version, "spec": rollout.spec }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(rollout)))
}

/// `GET /api/v1/rollouts`
pub(crate) async fn list_rollouts(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
) -> Result<Json<Vec<Rollout>>, ApiError> {
    Ok(Json(state.ctx.store.rollouts().await?))
}

/// `GET /api/v1/rollouts/{id}`
pub(crate) async fn get_rollout(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<RolloutProgress>, ApiError> {
    let id = parse_rollout_id(&id)?;
    Ok(Json(state.ctx.fleet.rollout_progress(id).await?))
}

/// `POST /api/v1/rollouts/{id}/{action}`
pub(crate) async fn act(
    State(state): State<AppState>,
    Auth(p, _): Auth<Operator>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Rollout>, ApiError> {
    let id = parse_rollout_id(&id)?;
    let action = RolloutAction::parse(&action).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no rollout action {action:?}: pause, resume, promote or abort"
        ))
    })?;
    let rollout = state
        .ctx
        .fleet
        .rollout_action(id, action, &p.user.name)
        .await?;
    write_audit(
        &*state.ctx.store,
        &p.user.name,
        &format!("rollout.{}", action.as_str()),
        &id.to_string(),
        serde_json::json!({
            "version": rollout.version,
            "state": rollout.state,
            "stage": rollout.status.stage,
        }),
    )
    .await;
    Ok(Json(rollout))
}

/// A device's bundles: what it is told to run, what it said, its groups.
#[derive(Debug, Serialize)]
pub(crate) struct DeviceBundles {
    assignment: Option<Assignment>,
    states: Vec<DeviceBundleState>,
    groups: Vec<String>,
}

/// `GET /api/v1/devices/{id}/bundles`
pub(crate) async fn device_bundles(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<DeviceBundles>, ApiError> {
    hex_id("device", &id)?;
    let store = &state.ctx.store;
    if store.device(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("device {id} not found")));
    }
    let assignment = store
        .assignments()
        .await?
        .into_iter()
        .find(|a| a.device_id == id);
    let states = store.bundle_states(None, Some(&id)).await?;
    let groups = store.device_groups().await?.remove(&id).unwrap_or_default();
    Ok(Json(DeviceBundles {
        assignment,
        states,
        groups,
    }))
}

/// `PUT /api/v1/devices/{id}/groups` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Groups {
    groups: Vec<String>,
}

/// `PUT /api/v1/devices/{id}/groups`
pub(crate) async fn set_groups(
    State(state): State<AppState>,
    Auth(p, _): Auth<Operator>,
    Path(id): Path<String>,
    Json(body): Json<Groups>,
) -> Result<Json<Groups>, ApiError> {
    hex_id("device", &id)?;
    if body.groups.len() > MAX_GROUPS {
        return Err(ApiError::bad(format!(
            "`groups`: at most {MAX_GROUPS} groups"
        )));
    }
    let mut groups = Vec::with_capacity(body.groups.len());
    for g in body.groups {
        let ok = !g.is_empty()
            && g.len() <= MAX_GROUP_LEN
            && g.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(ApiError::bad(format!(
                "`groups`: {g:?} is not a group name (1 to {MAX_GROUP_LEN} of A-Z a-z 0-9 - _ .)"
            )));
        }
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let store = &state.ctx.store;
    if store.device(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("device {id} not found")));
    }
    store.set_device_groups(&id, &groups).await?;
    write_audit(
        &**store,
        &p.user.name,
        "device.groups",
        &id,
        serde_json::json!({ "groups": groups }),
    )
    .await;
    Ok(Json(Groups { groups }))
}

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));
}

/// A rule's text, as the backend knows it.
#[derive(Debug, Serialize)]
pub(crate) struct RuleText {
    id: String,
    /// `bundle` (newest pushed bundle carrying it) or `built-in` (compiled
    /// into picketd).
    source: &'static str,
    /// The bundle version, for `bundle`.
    version: Option<u64>,
    /// The file inside the bundle, or `builtin/NAME.yml`.
    path: String,
    /// The Sigma YAML.
    text: String,
}

/// The `id:` of a Sigma YAML document (top-level key), without a full parse.
fn yaml_id(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().trim_matches(['\'', '"']))
}

/// `GET /api/v1/rules/{id}`: the text of a rule, from the newest pushed
/// bundle that carries it, else from picketd's built-in rules. Rules that
/// only live in a device's `rules_dirs` are not known here (404).
pub(crate) async fn rule_text(
    State(state): State<AppState>,
    _auth: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<RuleText>, ApiError> {
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(ApiError::bad(format!("invalid rule id {id:?}")));
    }
    let store = &state.ctx.store;
    for b in store.bundles().await? {
        let Some(rule) = b.rules.iter().find(|r| r.id == id) else {
            continue;
        };
        let Some(bytes) = store.bundle_bytes(b.version).await? else {
            continue;
        };
        let text = picket_bundle::SignedBundle::decode(&bytes)
            .ok()
            .and_then(|s| picket_bundle::decode_payload(&s.payload_bytes).ok())
            .and_then(|(_, files)| files.get(&rule.path).cloned())
            .map(|t| String::from_utf8_lossy(&t).into_owned());
        if let Some(text) = text {
            return Ok(Json(RuleText {
                id,
                source: "bundle",
                version: Some(b.version),
                path: rule.path.clone(),
                text,
            }));
        }
    }
    if let Some((path, text)) = builtin::BUILTIN_RULES
        .iter()
        .find(|(_, t)| yaml_id(t) == Some(id.as_str()))
    {
        return Ok(Json(RuleText {
            id,
            source: "built-in",
            version: None,
            path: (*path).to_owned(),
            text: (*text).to_owned(),
        }));
    }
    Err(ApiError::NotFound(format!(
        "rule {id} is neither in a pushed bundle nor built into picketd (rules from a \
         device's rules_dirs stay on the device)"
    )))
}
