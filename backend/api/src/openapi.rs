//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, generated from
//! the route table ([`crate::routes`]) plus the hand-written component
//! schemas below. Tests check that every routed endpoint is in it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::routes::{Access, Body, Resp, ROUTES};

/// `GET /api/v1/openapi.json`
pub(crate) async fn serve() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let text = DOC.get_or_init(|| document().to_string());
    ([(CONTENT_TYPE, "application/json")], text.clone()).into_response()
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema_ref("Error") } }
    })
}

fn operation(route: &crate::routes::Route) -> Value {
    let info = &route.info;
    let mut params: Vec<Value> = info
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let schema = if info.path.starts_with("/api/v1/users/") {
                json!({ "type": "integer", "format": "int64" })
            } else {
                json!({ "type": "string", "pattern": "^[0-9a-f]{32}$" })
            };
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect();
    params.extend(route.query.iter().map(|(name, description)| {
        json!({
            "name": name, "in": "query", "required": false,
            "description": description, "schema": { "type": "string" }
        })
    }));

    let (status, resp) = route.ok;
    let ok = match resp {
        Resp::Json(s) => json!({ "description": "Success",
            "content": { "application/json": { "schema": schema_ref(s) } } }),
        Resp::JsonArray(s) => json!({ "description": "Success",
            "content": { "application/json": { "schema": { "type": "array", "items": schema_ref(s) } } } }),
        Resp::Text(mime) => json!({ "description": "Success",
            "content": { mime: { "schema": { "type": "string" } } } }),
        Resp::Binary => json!({ "description": "An EnrollResponse frame (accepted or rejected)",
            "content": { "application/octet-stream": { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } } }),
        Resp::Empty => json!({ "description": "Success, no body" }),
        Resp::WebSocket => {
            json!({ "description": "Switching to the WebSocket protocol; messages are LiveMessage JSON texts",
            "content": { "application/json": { "schema": schema_ref("LiveMessage") } } })
        }
        Resp::AgentSocket => {
            json!({ "description": "Switching to the WebSocket protocol; the agent sends JSON lines as text messages, each answered by an AgentMessage JSON text",
            "content": { "application/json": { "schema": schema_ref("AgentMessage") } } })
        }
    };
    let mut responses = Map::new();
    responses.insert(status.to_string(), ok);
    responses.insert(
        "400".into(),
        error_response("Bad input; `error` names what was wrong"),
    );
    if info.access == Access::Agent {
        responses.insert("401".into(), error_response("No or unknown agent secret"));
        responses.insert(
            "403".into(),
            error_response("The agent's device is revoked"),
        );
    }
    if let Access::Role(_) = info.access {
        responses.insert(
            "401".into(),
            error_response("Not authenticated or session expired"),
        );
        responses.insert(
            "403".into(),
            error_response(
                "Role too small, or a cookie-authenticated change without `X-Picket-Csrf: 1`",
            ),
        );
    }
    if info.path.contains('{') {
        responses.insert("404".into(), error_response("No such id"));
    }
    if !matches!(route.body, Body::None) {
        responses.insert("413".into(), error_response("Body too large"));
    }
    if info.path == "/readyz" {
        responses.insert("503".into(), error_response("Not ready; `error` says why"));
    }
    responses.insert("500".into(), error_response("Internal error (logged)"));

    let mut op = json!({
        "operationId": operation_id(info.method, info.path),
        "summary": info.summary,
        "tags": [info.tag],
        "parameters": params,
        "responses": responses,
    });
    match info.access {
        Access::Public => {
            op["security"] = json!([]);
        }
        Access::Role(role) => {
            op["security"] = json!([{ "bearer": [] }, { "cookie": [] }]);
            op["x-picket-min-role"] = json!(role.as_str());
        }
        Access::Agent => {
            op["security"] = json!([{ "agent": [] }]);
        }
    }
    match route.body {
        Body::None => {}
        Body::Json(s) => {
            op["requestBody"] = json!({ "required": true,
                "content": { "application/json": { "schema": schema_ref(s) } } });
        }
        Body::HuntUpload => {
            op["requestBody"] = json!({ "required": true,
                "content": { "multipart/form-data": { "schema": schema_ref("HuntUpload") } } });
        }
        Body::Binary => {
            op["requestBody"] = json!({ "required": true,
                "content": { "application/octet-stream": { "schema": { "type": "string", "contentMediaType": "application/octet-stream", "maxLength": crate::fleet::ENROLL_BODY_LIMIT } } } });
        }
    }
    op
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for seg in path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "api" && *s != "v1")
    {
        id.push('_');
        id.extend(seg.chars().filter(|c| !matches!(c, '{' | '}')).map(|c| {
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        }));
    }
    id
}

/// The whole document.
#[must_use]
pub(crate) fn document() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for route in ROUTES {
        paths
            .entry(route.info.path)
            .or_default()
            .insert(route.info.method.to_ascii_lowercase(), operation(route));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Picket fleet backend API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST API of the Picket fleet backend. Authenticate with `POST /api/v1/auth/login`, then send `Authorization: Bearer <token>` or the `picket_session` cookie. Cookie-authenticated POST/PATCH requests must carry `X-Picket-Csrf: 1`. Errors are `{\"error\": \"...\", \"code\": \"...\"}`.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "agent": { "type": "http", "scheme": "bearer", "description": "An agent secret from POST /api/v1/agents/enroll" },
                "cookie": { "type": "apiKey", "in": "cookie", "name": crate::auth::SESSION_COOKIE }
            },
            "schemas": schemas()
        }
    })
}

fn schemas() -> Value {
    let level =
        json!({ "type": "string", "enum": ["informational", "low", "medium", "high", "critical"] });
    let role = json!({ "type": "string", "enum": ["admin", "operator", "analyst", "viewer"] });
    let status = json!({ "type": "string", "enum": ["new", "acknowledged", "resolved"] });
    let source = json!({ "type": "string", "enum": ["appliance", "windows", "macos", "upload"] });
    let ms = json!({ "type": "integer", "format": "int64", "description": "milliseconds since the Unix epoch" });
    let opt_ms = json!({ "type": ["integer", "null"], "format": "int64" });
    let hex = json!({ "type": "string", "pattern": "^[0-9a-f]{32}$" });
    let opt_str = json!({ "type": ["string", "null"] });
    let mut out = json!({
        "Error": { "type": "object", "required": ["error", "code"], "properties": {
            "error": { "type": "string", "description": "What was wrong, for people" },
            "code": { "type": "string", "description": "Machine code: bad_request, unauthorized, forbidden, csrf, account_disabled, not_found, method_not_allowed, conflict, payload_too_large, unsupported_media_type, upgrade_required, unavailable, internal" } } },
        "Status": { "type": "object", "properties": { "status": { "type": "string" } } },
        "OpenApi": { "type": "object", "description": "An OpenAPI 3.1 document" },
        "Level": level,
        "Role": role,
        "AlertStatus": status,
        "AlertSource": source,
        "Credentials": { "type": "object", "required": ["name", "password"], "additionalProperties": false, "properties": {
            "name": { "type": "string", "maxLength": 64 }, "password": { "type": "string", "minLength": 8, "maxLength": 1024 } } },
        "LoginResponse": { "type": "object", "required": ["token", "expires_ms", "user"], "properties": {
            "token": { "type": "string", "description": "Bearer token (64 hex digits)" },
            "expires_ms": ms, "user": schema_ref("User") } },
        "User": { "type": "object", "required": ["id", "name", "role", "disabled", "created_ms"], "properties": {
            "id": { "type": "integer", "format": "int64" }, "name": { "type": "string" },
            "role": schema_ref("Role"), "disabled": { "type": "boolean" }, "created_ms": ms } },
        "NewUser": { "type": "object", "required": ["name", "password", "role"], "additionalProperties": false, "properties": {
            "name": { "type": "string" }, "password": { "type": "string", "minLength": 8 }, "role": schema_ref("Role") } },
        "UserPatch": { "type": "object", "additionalProperties": false, "properties": {
            "role": schema_ref("Role"), "password": { "type": "string", "minLength": 8 }, "disabled": { "type": "boolean" } } },
        "ModuleStatus": { "type": "object", "properties": {
            "name": { "type": "string" }, "state": { "type": "string" }, "error": opt_str } },
        "Heartbeat": { "type": "object", "properties": {
            "seq": { "type": "integer" }, "sent_at_ms": ms, "received_ms": ms, "uptime_secs": { "type": "integer" },
            "agent_version": { "type": "string" }, "rule_bundle_version": { "type": ["integer", "null"] },
            "spool_depth": { "type": "integer" }, "spool_bytes": { "type": "integer" },
            "spool_evictions_total": { "type": "integer" }, "lost_kernel_records_total": { "type": "integer" },
            "modules": { "type": "array", "items": schema_ref("ModuleStatus") },
            "cpu_permille": { "type": "integer" }, "rss_bytes": { "type": "integer" } } },
        "Device": { "type": "object", "required": ["id", "hostname", "online", "platform"], "properties": {
            "id": hex, "hostname": { "type": "string" },
            "public_key": { "type": "array", "items": { "type": "integer" }, "description": "Ed25519 public key bytes" },
            "cert_serial": { "type": "string" }, "enrolled_ms": ms, "revoked_ms": opt_ms,
            "last_seen_ms": opt_ms, "last_alert_seq": { "type": "integer" },
            "heartbeat": { "oneOf": [schema_ref("Heartbeat"), { "type": "null" }] },
            "online": { "type": "boolean", "description": "Not revoked and seen within the offline window" },
            "platform": { "type": "string", "enum": ["linux", "windows", "macos"], "description": "linux for an appliance, windows or macos for an endpoint agent" } } },
        "Alert": { "type": "object", "required": ["id", "device_id", "level", "rule_id", "rule_title", "status"], "properties": {
            "id": hex, "device_id": hex, "seq": { "type": "integer" }, "timestamp_ms": ms, "received_ms": ms,
            "level": schema_ref("Level"), "source": schema_ref("AlertSource"),
            "rule_id": { "type": "string" }, "rule_title": { "type": "string" },
            "rule_author": { "type": ["string", "null"], "description": "The matched rule's author (credited under DRL 1.1 for SigmaHQ rules); also inside `event`" },
            "techniques": { "type": "array", "items": { "type": "string" } },
            "image": opt_str, "command_line": opt_str, "path": opt_str,
            "event": { "type": "object", "description": "The whole event as JSON" },
            "status": schema_ref("AlertStatus"), "assignee": opt_str, "updated_ms": ms } },
        "AlertDetail": { "allOf": [schema_ref("Alert"), { "type": "object", "properties": {
            "notes": { "type": "array", "items": schema_ref("Note") } } }] },
        "AlertList": { "type": "object", "required": ["alerts", "next"], "properties": {
            "alerts": { "type": "array", "items": schema_ref("Alert") },
            "next": { "type": ["string", "null"], "description": "Cursor of the next page; null at the end" } } },
        "AlertPatch": { "type": "object", "additionalProperties": false, "properties": {
            "status": schema_ref("AlertStatus"), "assignee": { "type": ["string", "null"], "description": "A user name; null unassigns" } } },
        "Note": { "type": "object", "properties": { "author": { "type": "string" }, "at_ms": ms, "text": { "type": "string" } } },
        "NewNote": { "type": "object", "required": ["text"], "additionalProperties": false, "properties": {
            "text": { "type": "string", "maxLength": 4096 } } },
        "AlertCounts": { "type": "object", "properties": {
            "bucket_ms": { "type": "integer" },
            "buckets": { "type": "array", "items": { "type": "object", "properties": {
                "start_ms": ms, "level": schema_ref("Level"), "count": { "type": "integer" } } } } } },
        "NewToken": { "type": "object", "required": ["label", "ttl_secs"], "additionalProperties": false, "properties": {
            "label": { "type": "string", "maxLength": 128 }, "ttl_secs": { "type": "integer", "minimum": 60, "maximum": 2_592_000 } } },
        "EnrollmentToken": { "type": "object", "properties": {
            "id": { "type": "integer" }, "label": { "type": "string" }, "created_by": { "type": "string" },
            "created_ms": ms, "expires_ms": ms, "used_ms": opt_ms, "used_by": opt_str } },
        "CreatedToken": { "allOf": [schema_ref("EnrollmentToken"), { "type": "object", "required": ["token"], "properties": {
            "token": { "type": "string", "description": "The token value; shown only here" } } }] },
        "AgentEnroll": { "type": "object", "required": ["token", "hostname", "platform", "agent_version"], "additionalProperties": false, "properties": {
            "token": { "type": "string" }, "hostname": { "type": "string", "maxLength": 253 },
            "platform": { "type": "string", "enum": ["windows", "macos"] }, "agent_version": { "type": "string", "maxLength": 64 } } },
        "AgentEnrolled": { "type": "object", "properties": {
            "device_id": { "type": "string" }, "platform": { "type": "string" },
            "secret": { "type": "string", "description": "The agent secret; shown only here" } } },
        "AgentMessage": { "type": "object", "required": ["type"], "description": "`result`: {result: {lines, alerts: [{line, rule_id, rule_title, level}], errors: [{line, error}]}}; `error`: {error}." },
        "AuditEntry": { "type": "object", "properties": {
            "id": { "type": "integer" }, "at_ms": ms, "actor": { "type": "string" }, "action": { "type": "string" },
            "target": { "type": "string" }, "detail": {} } },
        "AuditPage": { "type": "object", "properties": {
            "entries": { "type": "array", "items": schema_ref("AuditEntry") },
            "next": { "type": ["integer", "null"], "description": "`before` of the next page" } } },
        "LiveMessage": { "type": "object", "required": ["type"], "description": "A stream message. `alert`: an Alert; `device`: {device, online, change}; `hunt`: a Hunt (state and progress); `lagged`: {skipped}; `filter`: the acknowledged filter; `error`: {error}. Clients may send {\"type\":\"filter\",\"min_level\":...,\"device\":...}.",
            "properties": { "type": { "type": "string", "description": "alert, device, hunt, lagged, filter or error" } } }
    });
    if let (Some(all), Value::Object(more)) =
        (out.as_object_mut(), bundle_schemas(&ms, &hex, &opt_str))
    {
        all.extend(more);
    }
    if let (Some(all), Value::Object(more)) = (out.as_object_mut(), hunt_schemas(&ms, &opt_str)) {
        all.extend(more);
    }
    out
}

/// Rule bundles and rollouts (a second `json!`: one would exceed the macro
/// recursion limit).
fn bundle_schemas(ms: &Value, hex: &Value, opt_str: &Value) -> Value {
    json!({
        "BundleRule": { "type": "object", "properties": {
            "id": { "type": "string" }, "title": { "type": "string" }, "level": { "type": "string" },
            "path": { "type": "string" }, "techniques": { "type": "array", "items": { "type": "string" } } } },
        "Bundle": { "type": "object", "required": ["version", "sha256", "size"], "properties": {
            "version": { "type": "integer" }, "sha256": { "type": "string" }, "size": { "type": "integer" },
            "created_unix": { "type": "integer" }, "expires_unix": { "type": "integer" },
            "targets": { "description": "Manifest targets: \"all\", {\"group\": …}, {\"device\": …}" },
            "rules": { "type": "array", "items": schema_ref("BundleRule") },
            "signers": { "type": "array", "items": { "type": "string" } },
            "uploaded_by": { "type": "string" }, "uploaded_ms": ms } },
        "BundleView": { "allOf": [schema_ref("Bundle"), { "type": "object", "properties": {
            "devices": { "type": "object", "additionalProperties": { "type": "integer" }, "description": "Devices per state" } } }] },
        "BundleState": { "type": "string", "enum": ["pending", "downloading", "verified", "active", "failed"] },
        "DeviceBundleState": { "type": "object", "properties": {
            "device_id": hex, "version": { "type": "integer" }, "state": schema_ref("BundleState"),
            "chunks_received": { "type": "integer" }, "error": opt_str, "updated_ms": ms } },
        "BundleDetail": { "allOf": [schema_ref("Bundle"), { "type": "object", "properties": {
            "states": { "type": "array", "items": schema_ref("DeviceBundleState") } } }] },
        "RolloutSpec": { "type": "object", "additionalProperties": false, "required": ["stages"], "properties": {
            "stages": { "type": "array", "items": { "type": "integer", "minimum": 1, "maximum": 100 }, "description": "Cumulative percentages, ascending, ending at 100" },
            "auto_promote": { "type": "boolean", "default": true },
            "promote_at_percent": { "type": "integer", "default": 90 },
            "bake_secs": { "type": "integer", "default": 0 },
            "max_failure_percent": { "type": "number", "default": 10 },
            "min_finished": { "type": "integer", "default": 5 },
            "max_alert_rate_ratio": { "type": ["number", "null"], "default": 5 },
            "min_alerts": { "type": "integer", "default": 50 },
            "on_threshold": { "type": "string", "enum": ["pause", "abort"], "default": "pause" } } },
        "NewRollout": { "type": "object", "required": ["version"], "additionalProperties": false, "properties": {
            "version": { "type": "integer" }, "spec": schema_ref("RolloutSpec") } },
        "Rollout": { "type": "object", "properties": {
            "id": { "type": "integer" }, "version": { "type": "integer" },
            "state": { "type": "string", "enum": ["running", "paused", "completed", "aborted", "superseded"] },
            "spec": schema_ref("RolloutSpec"),
            "status": { "type": "object", "properties": {
                "stage": { "type": "integer" }, "stage_started_ms": ms, "reason": opt_str,
                "history": { "type": "array", "items": { "type": "object", "properties": {
                    "at_ms": ms, "actor": { "type": "string" }, "action": { "type": "string" }, "detail": { "type": "string" } } } } } },
            "created_by": { "type": "string" }, "created_ms": ms, "updated_ms": ms } },
        "RolloutProgress": { "type": "object", "properties": {
            "rollout": schema_ref("Rollout"), "targeted": { "type": "integer" },
            "stage_sizes": { "type": "array", "items": { "type": "integer" } },
            "assigned": { "type": "integer" },
            "states": { "type": "object", "additionalProperties": { "type": "integer" } },
            "failure_percent": { "type": ["number", "null"] },
            "alert_rate": { "type": ["object", "null"], "properties": {
                "activated_alerts": { "type": "integer" }, "activated_per_device_hour": { "type": "number" },
                "others_per_device_hour": { "type": "number" }, "ratio": { "type": ["number", "null"] } } },
            "failures": { "type": "array", "items": schema_ref("DeviceBundleState") } } },
        "Assignment": { "type": "object", "properties": {
            "device_id": hex, "version": { "type": "integer" }, "rollout_id": { "type": "integer" },
            "previous_version": { "type": ["integer", "null"] }, "assigned_ms": ms } },
        "RuleText": { "type": "object", "required": ["id", "source", "path", "text"], "properties": {
            "id": { "type": "string" }, "source": { "type": "string", "enum": ["bundle", "built-in"] },
            "version": { "type": ["integer", "null"] }, "path": { "type": "string" },
            "text": { "type": "string", "description": "The Sigma YAML" } } },
        "Groups": { "type": "object", "required": ["groups"], "additionalProperties": false, "properties": {
            "groups": { "type": "array", "maxItems": 32, "items": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" } } } },
        "DeviceBundles": { "type": "object", "properties": {
            "assignment": { "oneOf": [schema_ref("Assignment"), { "type": "null" }] },
            "states": { "type": "array", "items": schema_ref("DeviceBundleState") },
            "groups": { "type": "array", "items": { "type": "string" } } } }
    })
}

/// Hunting jobs (a third `json!`, for the macro recursion limit).
fn hunt_schemas(ms: &Value, opt_str: &Value) -> Value {
    let n = json!({ "type": "integer", "minimum": 0 });
    json!({
        "HuntUpload": { "type": "object", "required": ["file"], "properties": {
            "name": { "type": "string", "maxLength": 200, "description": "Defaults to the first file's name" },
            "file": { "type": "array", "items": { "type": "string", "contentMediaType": "application/octet-stream" },
                "description": "One part per EVTX file; the part's filename is kept" } } },
        "Hunt": { "type": "object", "properties": {
            "id": { "type": "integer" }, "name": { "type": "string" }, "created_by": { "type": "string" },
            "created_ms": ms, "state": { "type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"] },
            "started_ms": { "type": ["integer", "null"] }, "finished_ms": { "type": ["integer", "null"] },
            "files_total": n, "files_done": n, "bytes_total": n, "bytes_done": n,
            "records_done": n, "matches": n, "error": opt_str } },
        "HuntFile": { "type": "object", "properties": {
            "index": n, "name": { "type": "string" }, "size": n, "sha256": { "type": "string" },
            "state": { "type": "string", "enum": ["queued", "running", "done", "failed"] },
            "records": n, "matches": n,
            "error": { "type": ["string", "null"], "description": "Why the file failed (not EVTX, unreadable), or what was skipped inside it" } } },
        "HuntDetail": { "allOf": [schema_ref("Hunt"), { "type": "object", "properties": {
            "files": { "type": "array", "items": schema_ref("HuntFile") } } }] },
        "HuntTimelineRow": { "type": "object", "properties": {
            "alert_id": { "type": "string" }, "timestamp": { "type": "string", "description": "As the log wrote it" },
            "timestamp_ms": ms, "computer": { "type": "string" }, "channel": { "type": "string" },
            "event_id": { "type": "string" }, "record_id": { "type": ["integer", "null"] }, "file": { "type": "string" },
            "rule_id": { "type": "string" }, "rule_title": { "type": "string" }, "level": schema_ref("Level"),
            "rule_author": opt_str, "techniques": { "type": "array", "items": { "type": "string" } } } },
        "HuntTimeline": { "type": "object", "properties": {
            "hunt_id": { "type": "integer" }, "offset": n, "limit": n,
            "total": { "type": "integer", "description": "The job's matches so far" },
            "rows": { "type": "array", "items": schema_ref("HuntTimelineRow") } } }
    })
}
