//! Devices, tokens, revocation, audit, ops endpoints, OpenAPI, the UI hook.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::IntoResponse;
use picket_store::model::Role;
use serde_json::json;

use crate::common::{hex_id, now_ms, App};

#[tokio::test]
async fn devices_with_online_state() {
    let app = App::new();
    let t = app.login_as("v", Role::Viewer).await;
    app.device(&hex_id(1), Some(now_ms())).await;
    app.device(&hex_id(2), Some(now_ms() - 3_600_000)).await;
    app.device(&hex_id(3), None).await;
    let list = app.get("/api/v1/devices", &t).await.json();
    let online: Vec<bool> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["online"].as_bool().unwrap())
        .collect();
    assert_eq!(online, [true, false, false]);
    let one = app
        .get(&format!("/api/v1/devices/{}", hex_id(1)), &t)
        .await
        .json();
    assert_eq!(one["hostname"], "host-0000");
    assert_eq!(one["online"], true);
    assert_eq!(one["platform"], "linux", "an appliance: {one}");
}

#[tokio::test]
async fn revoke_goes_through_the_fleet() {
    let app = App::new();
    let op = app.login_as("oscar", Role::Operator).await;
    let id = hex_id(1);
    app.device(&id, Some(now_ms())).await;
    let resp = app
        .call(
            "POST",
            &format!("/api/v1/devices/{id}/revoke"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let body = resp.json();
    assert!(body["revoked_ms"].is_i64());
    assert_eq!(body["online"], false);
    assert_eq!(
        app.fleet.revoked.lock().unwrap().as_slice(),
        [(id.clone(), "oscar".to_owned())]
    );
    let audit = app.audit("device.revoke").await;
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].target.as_str()),
        ("oscar", id.as_str())
    );
}

#[tokio::test]
async fn enrollment_tokens_are_shown_once() {
    let app = App::new();
    let op = app.login_as("oscar", Role::Operator).await;
    let created = app
        .call(
            "POST",
            "/api/v1/enrollment-tokens",
            Some(&op),
            Some(json!({"label": "site 12 gateway", "ttl_secs": 3600})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created = created.json();
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64);
    assert_eq!(created["label"], "site 12 gateway");
    assert_eq!(created["created_by"], "oscar");
    assert!(created.get("token_hash").is_none());
    let listed = app.get("/api/v1/enrollment-tokens", &op).await;
    let text = String::from_utf8(listed.bytes.clone()).unwrap();
    assert!(!text.contains(&token));
    assert!(!text.contains(&picket_store::token_hash(&token)));
    assert_eq!(listed.json()[0]["label"], "site 12 gateway");
    // The stored hash is the one the backend will check.
    let used = app
        .store
        .use_token(&picket_store::token_hash(&token), &hex_id(5), now_ms())
        .await
        .unwrap();
    assert!(used.is_ok());
    assert_eq!(app.audit("token.create").await[0].actor, "oscar");
}

#[tokio::test]
async fn audit_log_filters_and_pages() {
    let app = App::new();
    let admin = app.login_as("root", Role::Admin).await;
    for i in 0..5 {
        app.call(
            "POST",
            "/api/v1/users",
            Some(&admin),
            Some(json!({"name": format!("u{i}"), "password": "long enough", "role": "viewer"})),
        )
        .await;
    }
    app.call(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"name": "u1", "password": "bad password"})),
    )
    .await;
    let page = app
        .get("/api/v1/audit?action=user.&limit=3", &admin)
        .await
        .json();
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["target"], "u4", "newest first");
    let next = page["next"].as_i64().unwrap();
    let rest = app
        .get(
            &format!("/api/v1/audit?action=user.&limit=3&before={next}"),
            &admin,
        )
        .await
        .json();
    assert_eq!(rest["entries"].as_array().unwrap().len(), 2);
    assert!(rest["next"].is_null());
    let failed = app
        .get("/api/v1/audit?actor=anonymous", &admin)
        .await
        .json();
    assert_eq!(failed["entries"][0]["action"], "auth.login_failed");
}

#[tokio::test]
async fn ops_endpoints() {
    let app = App::new();
    assert_eq!(
        app.call("GET", "/healthz", None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call("GET", "/readyz", None, None).await.json()["status"],
        "ready"
    );
    app.fleet.ready.store(false, Ordering::SeqCst);
    let msg = app
        .call("GET", "/readyz", None, None)
        .await
        .error(503, "unavailable");
    assert!(msg.contains("broker"), "{msg}");
    assert_eq!(
        app.call("GET", "/healthz", None, None).await.status,
        StatusCode::OK
    );

    let ca = app.call("GET", "/api/v1/fleet/ca.pem", None, None).await;
    assert!(String::from_utf8(ca.bytes)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    let key = app
        .call("GET", "/api/v1/fleet/command-key", None, None)
        .await;
    assert_eq!(String::from_utf8(key.bytes).unwrap(), "ab".repeat(32));

    app.get("/api/v1/devices", "bogus").await;
    let m = app.call("GET", "/metrics", None, None).await;
    assert!(m.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(m.bytes).unwrap();
    assert!(text.contains("picket_test_fleet_total 7"), "{text}");
    assert!(
        text.contains(r#"picket_api_requests_total{route="/readyz",method="GET",status="503"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"picket_api_requests_total{route="/api/v1/devices",method="GET",status="401"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"picket_api_auth_failures_total{reason="invalid"} 1"#),
        "{text}"
    );
    assert!(text.contains("picket_api_ws_clients 0"), "{text}");
}

#[tokio::test]
async fn openapi_document() {
    let app = App::new();
    let doc = app
        .call("GET", "/api/v1/openapi.json", None, None)
        .await
        .json();
    assert_eq!(doc["openapi"], "3.1.0");
    // Every schema reference resolves.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for part in text.split("#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    let alert = &doc["paths"]["/api/v1/alerts/{id}"]["patch"];
    assert_eq!(alert["x-picket-min-role"], "analyst");
    assert!(alert["responses"]["403"].is_object());
    assert!(schemas["Alert"]["properties"]["rule_author"].is_object());
    assert!(
        doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object()
    );
    let mut op_ids = std::collections::BTreeSet::new();
    for ops in doc["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            assert!(
                op_ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                "{op}"
            );
        }
    }
}

#[tokio::test]
async fn ui_hook_serves_everything_but_the_api() {
    let app = App::new();
    let ui = tower::service_fn(|req: Request<Body>| async move {
        Ok::<_, Infallible>(format!("UI {}", req.uri().path()).into_response())
    });
    let router = picket_api::router_with_ui(app.ctx.clone(), ui);
    let call = |uri: &'static str| {
        let router = router.clone();
        async move {
            use http_body_util::BodyExt as _;
            use tower::ServiceExt as _;
            let resp = router
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(
        call("/alerts/123").await,
        (StatusCode::OK, "UI /alerts/123".into())
    );
    assert_eq!(call("/").await, (StatusCode::OK, "UI /".into()));
    let (status, body) = call("/api/v1/unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("not_found"), "{body}");
    assert_eq!(call("/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn rule_text_comes_from_the_newest_bundle_or_the_built_in_rules() {
    let app = App::new();
    let t = app.login_as("v", Role::Viewer).await;
    let yaml = "title: Bundle rule <b>x</b>\nid: r-77\nlogsource: {product: linux}\n\
                detection:\n  sel: {a: b}\n  condition: sel\n";
    let mut files = std::collections::BTreeMap::new();
    files.insert("rules/r.yml".to_owned(), yaml.as_bytes().to_vec());
    let sealed = picket_bundle::Bundle::new(
        9,
        0,
        4_000_000_000,
        vec![picket_bundle::Target::All],
        files,
        picket_bundle::Settings::default(),
    )
    .seal()
    .unwrap();
    app.store
        .insert_bundle(
            &picket_store::rollout::StoredBundle {
                version: 9,
                sha256: "00".repeat(32),
                size: 1,
                created_unix: 0,
                expires_unix: 4_000_000_000,
                targets: json!(["all"]),
                rules: vec![picket_store::rollout::BundleRule {
                    id: "r-77".into(),
                    title: "Bundle rule".into(),
                    level: String::new(),
                    path: "rules/r.yml".into(),
                    techniques: Vec::new(),
                }],
                signers: Vec::new(),
                uploaded_by: "op".into(),
                uploaded_ms: 0,
            },
            &sealed.encode(),
        )
        .await
        .unwrap();
    let r = app.get("/api/v1/rules/r-77", &t).await.json();
    assert_eq!(r["source"], "bundle");
    assert_eq!(r["version"], 9);
    assert_eq!(r["text"], yaml);

    let builtin = include_str!("../../../../appliance/rules/setuid_bit.yml");
    let id = builtin
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim();
    let r = app.get(&format!("/api/v1/rules/{id}"), &t).await.json();
    assert_eq!(r["source"], "built-in");
    assert_eq!(r["path"], "builtin/setuid_bit.yml");
    assert_eq!(r["text"], builtin);

    let missing = app.get("/api/v1/rules/nope", &t).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("rules_dirs"));
}
