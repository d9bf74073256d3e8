//! Role × endpoint matrix: every route, every role and anonymous.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use picket_api::Access;
use picket_store::model::{Level, Role};
use serde_json::{json, Value};

use crate::common::{alert, hex_id, App, PASSWORD};

enum B {
    None,
    Json(Value),
    Bytes(&'static [u8]),
}

struct Case {
    method: &'static str,
    template: &'static str,
    /// `None`: public.
    min: Option<Role>,
    uri: String,
    body: Box<dyn Fn(usize) -> B>,
    /// What an allowed caller gets.
    ok: u16,
}

fn case(
    method: &'static str,
    template: &'static str,
    min: Option<Role>,
    uri: impl Into<String>,
    ok: u16,
    body: impl Fn(usize) -> B + 'static,
) -> Case {
    Case {
        method,
        template,
        min,
        uri: uri.into(),
        body: Box::new(body),
        ok,
    }
}

const ROLES: [Role; 4] = [Role::Admin, Role::Operator, Role::Analyst, Role::Viewer];

#[tokio::test]
async fn every_route_checks_its_role() {
    let app = App::new();
    let mut ids = Vec::new();
    for role in ROLES {
        ids.push((role, app.user(&format!("{}-u", role.as_str()), role).await));
    }
    let target = app.user("target", Role::Viewer).await;
    let dev = hex_id(1);
    app.device(&dev, Some(crate::common::now_ms())).await;
    let a = alert(1, &dev, 1_000, Level::High);
    let alert_id = a.id.clone();
    app.store.insert_alerts(&[a]).await.unwrap();

    app.store
        .insert_bundle(
            &picket_store::rollout::StoredBundle {
                version: 1,
                sha256: "00".repeat(32),
                size: 4,
                created_unix: 0,
                expires_unix: 4_000_000_000,
                targets: json!(["all"]),
                rules: Vec::new(),
                signers: Vec::new(),
                uploaded_by: "op".into(),
                uploaded_ms: 0,
            },
            b"file",
        )
        .await
        .unwrap();

    use Role::{Admin, Analyst, Operator, Viewer};
    let none = |_| B::None;
    let cases = vec![
        case(
            "GET",
            "/api/v1/devices/{id}/bundles",
            Some(Viewer),
            format!("/api/v1/devices/{dev}/bundles"),
            200,
            none,
        ),
        case(
            "PUT",
            "/api/v1/devices/{id}/groups",
            Some(Operator),
            format!("/api/v1/devices/{dev}/groups"),
            200,
            |_| B::Json(json!({"groups": ["lab"]})),
        ),
        // the test fleet has no rollout controller: 503 for the allowed
        case(
            "POST",
            "/api/v1/bundles",
            Some(Operator),
            "/api/v1/bundles",
            503,
            |_| B::Bytes(b"bundle"),
        ),
        case(
            "GET",
            "/api/v1/bundles",
            Some(Viewer),
            "/api/v1/bundles",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/bundles/{version}",
            Some(Viewer),
            "/api/v1/bundles/1",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/bundles/{version}/file",
            Some(Operator),
            "/api/v1/bundles/1/file",
            200,
            none,
        ),
        case(
            "POST",
            "/api/v1/rollouts",
            Some(Operator),
            "/api/v1/rollouts",
            503,
            |_| B::Json(json!({"version": 1})),
        ),
        case(
            "GET",
            "/api/v1/rollouts",
            Some(Viewer),
            "/api/v1/rollouts",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/rollouts/{id}",
            Some(Viewer),
            "/api/v1/rollouts/1",
            503,
            none,
        ),
        case(
            "GET",
            "/api/v1/rules/{id}",
            Some(Viewer),
            // a built-in appliance rule (appliance/rules/reverse_shell.yml)
            format!("/api/v1/rules/{}", builtin_rule_id()),
            200,
            none,
        ),
        case(
            "POST",
            "/api/v1/rollouts/{id}/{action}",
            Some(Operator),
            "/api/v1/rollouts/1/pause",
            503,
            none,
        ),
        case("POST", "/api/v1/setup", None, "/api/v1/setup", 409, |_| {
            B::Json(json!({"name": "root", "password": PASSWORD}))
        }),
        case(
            "POST",
            "/api/v1/auth/login",
            None,
            "/api/v1/auth/login",
            200,
            |_| B::Json(json!({"name": "viewer-u", "password": PASSWORD})),
        ),
        case(
            "POST",
            "/api/v1/auth/logout",
            Some(Viewer),
            "/api/v1/auth/logout",
            204,
            none,
        ),
        case(
            "GET",
            "/api/v1/auth/me",
            Some(Viewer),
            "/api/v1/auth/me",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/devices",
            Some(Viewer),
            "/api/v1/devices",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/devices/{id}",
            Some(Viewer),
            format!("/api/v1/devices/{dev}"),
            200,
            none,
        ),
        case(
            "POST",
            "/api/v1/devices/{id}/revoke",
            Some(Operator),
            format!("/api/v1/devices/{dev}/revoke"),
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/alerts",
            Some(Viewer),
            "/api/v1/alerts?level=low",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/alerts/counts",
            Some(Viewer),
            "/api/v1/alerts/counts?bucket=1h",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/alerts/{id}",
            Some(Viewer),
            format!("/api/v1/alerts/{alert_id}"),
            200,
            none,
        ),
        case(
            "PATCH",
            "/api/v1/alerts/{id}",
            Some(Analyst),
            format!("/api/v1/alerts/{alert_id}"),
            200,
            |_| B::Json(json!({"status": "acknowledged"})),
        ),
        case(
            "POST",
            "/api/v1/alerts/{id}/notes",
            Some(Analyst),
            format!("/api/v1/alerts/{alert_id}/notes"),
            201,
            |_| B::Json(json!({"text": "looked at it"})),
        ),
        case(
            "POST",
            "/api/v1/enrollment-tokens",
            Some(Operator),
            "/api/v1/enrollment-tokens",
            201,
            |_| B::Json(json!({"label": "site 1", "ttl_secs": 3600})),
        ),
        case(
            "GET",
            "/api/v1/enrollment-tokens",
            Some(Operator),
            "/api/v1/enrollment-tokens",
            200,
            none,
        ),
        case(
            "POST",
            "/api/v1/enroll",
            None,
            "/api/v1/enroll",
            200,
            |_| B::Bytes(b"frame"),
        ),
        case(
            "GET",
            "/api/v1/fleet/ca.pem",
            None,
            "/api/v1/fleet/ca.pem",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/fleet/command-key",
            None,
            "/api/v1/fleet/command-key",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/users",
            Some(Admin),
            "/api/v1/users",
            200,
            none,
        ),
        case(
            "POST",
            "/api/v1/users",
            Some(Admin),
            "/api/v1/users",
            201,
            |n| B::Json(json!({"name": format!("new{n}"), "password": PASSWORD, "role": "viewer"})),
        ),
        case(
            "PATCH",
            "/api/v1/users/{id}",
            Some(Admin),
            format!("/api/v1/users/{target}"),
            200,
            |_| B::Json(json!({"disabled": false})),
        ),
        case(
            "GET",
            "/api/v1/audit",
            Some(Admin),
            "/api/v1/audit?limit=5",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/openapi.json",
            None,
            "/api/v1/openapi.json",
            200,
            none,
        ),
        // Without a real connection the upgrade cannot happen: an allowed
        // caller gets past auth to 426 (the real-socket test sees 101).
        case(
            "GET",
            "/api/v1/stream",
            Some(Viewer),
            "/api/v1/stream",
            426,
            none,
        ),
        // agent routes: no user session is an agent secret (401 for
        // everyone); the enroll body is refused before any token is spent
        case(
            "POST",
            "/api/v1/agents/enroll",
            None,
            "/api/v1/agents/enroll",
            400,
            |_| {
                B::Json(
                    json!({"token": "t", "hostname": "h", "platform": "linux", "agent_version": "1"}),
                )
            },
        ),
        case(
            "GET",
            "/api/v1/agents/stream",
            None,
            "/api/v1/agents/stream",
            401,
            none,
        ),
        // This test's Fleet has no hunting jobs: uploads, cancel and delete
        // answer 503 to allowed callers; reads come from the store.
        case(
            "POST",
            "/api/v1/hunts",
            Some(Operator),
            "/api/v1/hunts",
            503,
            none,
        ),
        case(
            "GET",
            "/api/v1/hunts",
            Some(Viewer),
            "/api/v1/hunts",
            200,
            none,
        ),
        case(
            "GET",
            "/api/v1/hunts/{id}",
            Some(Viewer),
            "/api/v1/hunts/1",
            404,
            none,
        ),
        case(
            "DELETE",
            "/api/v1/hunts/{id}",
            Some(Operator),
            "/api/v1/hunts/1",
            503,
            none,
        ),
        case(
            "GET",
            "/api/v1/hunts/{id}/timeline",
            Some(Viewer),
            "/api/v1/hunts/1/timeline",
            404,
            none,
        ),
        case(
            "POST",
            "/api/v1/hunts/{id}/cancel",
            Some(Operator),
            "/api/v1/hunts/1/cancel",
            503,
            none,
        ),
        case("GET", "/metrics", None, "/metrics", 200, none),
        case("GET", "/healthz", None, "/healthz", 200, none),
        case("GET", "/readyz", None, "/readyz", 200, none),
    ];

    // The table must cover exactly the router's routes...
    let table: BTreeSet<(String, String)> = cases
        .iter()
        .map(|c| (c.method.to_owned(), c.template.to_owned()))
        .collect();
    assert_eq!(table.len(), cases.len(), "duplicate matrix entries");
    let routed: BTreeSet<(String, String)> = picket_api::routes()
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(table, routed, "matrix table and router differ");
    // ...with the same minimum roles...
    for r in picket_api::routes() {
        let c = cases
            .iter()
            .find(|c| c.method == r.method && c.template == r.path)
            .unwrap();
        let expected = match r.access {
            Access::Public => None,
            Access::Role(role) => Some(role),
            Access::Agent => continue,
            _ => panic!("unknown access {:?}", r.access),
        };
        assert_eq!(c.min, expected, "{} {}", r.method, r.path);
    }
    // ...and the OpenAPI document must list them all.
    let doc = app
        .call("GET", "/api/v1/openapi.json", None, None)
        .await
        .json();
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            documented.insert((method.to_ascii_uppercase(), path.clone()));
            let min = op.get("x-picket-min-role").and_then(Value::as_str);
            let c = cases
                .iter()
                .find(|c| c.method.eq_ignore_ascii_case(method) && c.template == path)
                .unwrap();
            assert_eq!(min, c.min.map(Role::as_str), "{method} {path}");
        }
    }
    assert_eq!(documented, routed, "OpenAPI document and router differ");

    let mut n = 0;
    for c in &cases {
        for caller in [
            None,
            Some(Viewer),
            Some(Analyst),
            Some(Operator),
            Some(Admin),
        ] {
            n += 1;
            let mut req = Request::builder().method(c.method).uri(&c.uri);
            if let Some(role) = caller {
                let uid = ids.iter().find(|(r, _)| *r == role).unwrap().1;
                let token = app.session(uid).await;
                req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            if c.template == "/api/v1/stream" {
                req = req
                    .header(header::CONNECTION, "upgrade")
                    .header(header::UPGRADE, "websocket")
                    .header(header::SEC_WEBSOCKET_VERSION, "13")
                    .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==");
            }
            let req = match (c.body)(n) {
                B::None => req.body(Body::empty()),
                B::Json(v) => req
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(v.to_string())),
                B::Bytes(b) => req
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Body::from(b)),
            }
            .unwrap();
            let resp = app.send(req).await;
            let who = caller.map_or("anonymous", Role::as_str);
            let ctx = format!(
                "{} {} as {who}: {}",
                c.method,
                c.uri,
                String::from_utf8_lossy(&resp.bytes)
            );
            match (c.min, caller) {
                (None, _) => assert_eq!(resp.status.as_u16(), c.ok, "{ctx}"),
                (Some(_), None) => {
                    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{ctx}");
                    assert_eq!(resp.json()["code"], "unauthorized", "{ctx}");
                }
                (Some(min), Some(role)) if role.allows(min) => {
                    assert_eq!(resp.status.as_u16(), c.ok, "{ctx}");
                }
                (Some(_), Some(_)) => {
                    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{ctx}");
                    assert_eq!(resp.json()["code"], "forbidden", "{ctx}");
                }
            }
        }
    }
    assert_eq!(n, cases.len() * 5);
}

/// The id of a rule picketd has built in.
fn builtin_rule_id() -> String {
    let text = include_str!("../../../../appliance/rules/reverse_shell.yml");
    text.lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .to_owned()
}
