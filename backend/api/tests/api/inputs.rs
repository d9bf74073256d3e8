//! Bad input gets a clear 4xx JSON error, never a panic or a 500.

use axum::body::Body;
use axum::http::{header, Request};
use picket_store::model::Role;
use serde_json::json;

use crate::common::{hex_id, App};

#[tokio::test]
async fn malformed_bodies() {
    let app = App::new();
    let admin = app.login_as("root", Role::Admin).await;
    let post = |body: &'static str, ct: Option<&'static str>| {
        let mut b =
            Request::post("/api/v1/users").header(header::AUTHORIZATION, format!("Bearer {admin}"));
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(Body::from(body)).unwrap()
    };
    let msg = app
        .send(post("{not json", Some("application/json")))
        .await
        .error(400, "bad_request");
    assert!(msg.contains("invalid JSON"), "{msg}");
    let msg = app
        .send(post("{}", None))
        .await
        .error(415, "unsupported_media_type");
    assert!(msg.contains("Content-Type"), "{msg}");
    let msg = app
        .send(post(
            r#"{"name":"x1","password":"long enough","role":"viewer","extra":1}"#,
            Some("application/json"),
        ))
        .await
        .error(400, "bad_request");
    assert!(msg.contains("extra"), "{msg}");
    let msg = app
        .send(post(
            r#"{"name":"x1","role":"viewer"}"#,
            Some("application/json"),
        ))
        .await
        .error(400, "bad_request");
    assert!(msg.contains("password"), "{msg}");
    let msg = app
        .call(
            "POST",
            "/api/v1/enrollment-tokens",
            Some(&admin),
            Some(json!({"label": "x", "ttl_secs": 5})),
        )
        .await
        .error(400, "bad_request");
    assert!(msg.contains("ttl_secs"), "{msg}");
}

#[tokio::test]
async fn oversized_bodies() {
    let app = App::new();
    let admin = app.login_as("root", Role::Admin).await;
    let huge = format!(
        r#"{{"name":"x","password":"{}","role":"viewer"}}"#,
        "p".repeat(100 * 1024)
    );
    let req = Request::post("/api/v1/users")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(huge))
        .unwrap();
    app.send(req).await.error(413, "payload_too_large");

    let enroll = |len: usize| {
        Request::post("/api/v1/enroll")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(vec![1u8; len]))
            .unwrap()
    };
    let ok = app.send(enroll(picket_api::ENROLL_BODY_LIMIT)).await;
    assert_eq!(ok.status.as_u16(), 200);
    assert!(ok.bytes.starts_with(b"ENROLLED:"));
    assert_eq!(ok.headers[header::CONTENT_TYPE], "application/octet-stream");
    app.send(enroll(picket_api::ENROLL_BODY_LIMIT + 1))
        .await
        .error(413, "payload_too_large");
    app.send(enroll(0)).await.error(400, "bad_request");
    let wrong_type = Request::post("/api/v1/enroll")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    app.send(wrong_type)
        .await
        .error(415, "unsupported_media_type");
}

#[tokio::test]
async fn bad_params_and_ids() {
    let app = App::new();
    let t = app.login_as("root", Role::Admin).await;
    for (q, needle) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("level=severe", "level"),
        ("since=yesterday", "since"),
        ("until=2024-13-01T00:00:00Z", "until"),
        ("since=2000&until=1000", "since"),
        ("cursor=zzz", "cursor"),
        ("status=open", "status"),
        ("source=linux", "source"),
        ("device=xyz", "device"),
        ("colour=red", "colour"),
        ("bucket=1h", "bucket"),
    ] {
        let msg = app
            .get(&format!("/api/v1/alerts?{q}"), &t)
            .await
            .error(400, "bad_request");
        assert!(msg.contains(needle), "{q}: {msg}");
    }
    let msg = app
        .get("/api/v1/alerts/not-hex", &t)
        .await
        .error(400, "bad_request");
    assert!(msg.contains("alert id"), "{msg}");
    let msg = app
        .get("/api/v1/devices/ABC", &t)
        .await
        .error(400, "bad_request");
    assert!(msg.contains("device id"), "{msg}");
    app.get(&format!("/api/v1/devices/{}", hex_id(9)), &t)
        .await
        .error(404, "not_found");
    app.call(
        "POST",
        &format!("/api/v1/devices/{}/revoke", hex_id(9)),
        Some(&t),
        None,
    )
    .await
    .error(404, "not_found");
    app.call(
        "PATCH",
        "/api/v1/users/abc",
        Some(&t),
        Some(json!({"disabled": true})),
    )
    .await
    .error(400, "bad_request");
    app.get("/api/v1/audit?limit=0", &t)
        .await
        .error(400, "bad_request");
    app.get("/api/v1/audit?before=x", &t)
        .await
        .error(400, "bad_request");
    let msg = app.get("/api/v1/nope", &t).await.error(404, "not_found");
    assert!(msg.contains("/api/v1/nope"), "{msg}");
    app.get("/api/v1/devices/a/b/c", &t)
        .await
        .error(404, "not_found");
    app.get("/elsewhere", &t).await.error(404, "not_found");
    let msg = app
        .call("DELETE", "/api/v1/devices", Some(&t), None)
        .await
        .error(405, "method_not_allowed");
    assert!(msg.contains("DELETE"), "{msg}");
}
