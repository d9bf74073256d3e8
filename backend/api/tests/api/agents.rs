//! Agent enrollment and the agent stream's authentication (the stream's
//! processing is the backend's: `backend/tests/agents.rs`).

use picket_store::model::Role;
use serde_json::json;

use crate::common::App;

async fn token(app: &App, value: &str) {
    let now = crate::common::now_ms();
    app.store
        .create_token(
            &picket_store::token_hash(value),
            "agents",
            "op",
            now,
            now + 60_000,
        )
        .await
        .unwrap();
}

fn body(token: &str, platform: &str) -> serde_json::Value {
    json!({"token": token, "hostname": "ws-17", "platform": platform, "agent_version": "1.2.3"})
}

#[tokio::test]
async fn enroll_answers_a_secret_once_and_records_the_platform() {
    let app = App::new();
    token(&app, "tok-1").await;
    let r = app
        .call(
            "POST",
            "/api/v1/agents/enroll",
            None,
            Some(body("tok-1", "windows")),
        )
        .await;
    assert_eq!(
        r.status.as_u16(),
        201,
        "{}",
        String::from_utf8_lossy(&r.bytes)
    );
    let v = r.json();
    let id = v["device_id"].as_str().unwrap().to_owned();
    let secret = v["secret"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(v["platform"], "windows");
    let rec = app
        .store
        .agent_by_secret(&picket_store::token_hash(secret))
        .await
        .unwrap()
        .expect("agent stored by its secret's hash");
    assert_eq!(
        (rec.device_id.as_str(), rec.platform.as_str()),
        (id.as_str(), "windows")
    );

    // The inventory shows it, with its platform and version.
    let viewer = app.login_as("v", Role::Viewer).await;
    let d = app
        .get(&format!("/api/v1/devices/{id}"), &viewer)
        .await
        .json();
    assert_eq!(d["hostname"], "ws-17", "{d}");
    assert_eq!(d["platform"], "windows", "{d}");
    assert_eq!(d["heartbeat"]["agent_version"], "1.2.3", "{d}");
    let module = &d["heartbeat"]["modules"][0];
    assert_eq!(
        (&module["name"], &module["state"]),
        (&json!("agent"), &json!("windows")),
        "{d}"
    );

    // One-time token; bad platforms are refused before it is spent.
    let again = app
        .call(
            "POST",
            "/api/v1/agents/enroll",
            None,
            Some(body("tok-1", "windows")),
        )
        .await;
    assert!(again.error(401, "unauthorized").contains("already used"));
    token(&app, "tok-2").await;
    let linux = app
        .call(
            "POST",
            "/api/v1/agents/enroll",
            None,
            Some(body("tok-2", "linux")),
        )
        .await;
    assert!(linux.error(400, "bad_request").contains("platform"));
    let mac = app
        .call(
            "POST",
            "/api/v1/agents/enroll",
            None,
            Some(body("tok-2", "macos")),
        )
        .await;
    assert_eq!(mac.status.as_u16(), 201);
    assert!(!app.audit("agent.enroll").await.is_empty());
}

#[tokio::test]
async fn stream_refuses_unknown_and_revoked_agents() {
    let app = App::new();
    token(&app, "tok").await;
    let v = app
        .call(
            "POST",
            "/api/v1/agents/enroll",
            None,
            Some(body("tok", "macos")),
        )
        .await
        .json();
    let secret = v["secret"].as_str().unwrap().to_owned();
    let id = v["device_id"].as_str().unwrap().to_owned();

    let none = app.call("GET", "/api/v1/agents/stream", None, None).await;
    none.error(401, "unauthorized");
    let wrong = app
        .call("GET", "/api/v1/agents/stream", Some("0123"), None)
        .await;
    wrong.error(401, "unauthorized");
    // A user's session is not an agent secret.
    let viewer = app.login_as("v", Role::Viewer).await;
    app.call("GET", "/api/v1/agents/stream", Some(&viewer), None)
        .await
        .error(401, "unauthorized");
    // The right secret without upgrade headers gets as far as the upgrade.
    let ok = app
        .call("GET", "/api/v1/agents/stream", Some(&secret), None)
        .await;
    assert!(ok.error(400, "bad_request").contains("WebSocket upgrade"));

    app.store.revoke_device(&id, 1).await.unwrap();
    app.call("GET", "/api/v1/agents/stream", Some(&secret), None)
        .await
        .error(403, "revoked");
}
