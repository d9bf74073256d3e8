//! Login, logout, sessions, setup, CSRF, users.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use picket_api::ApiError;
use picket_store::model::Role;
use serde_json::json;

use crate::common::{now_ms, App, PASSWORD};

fn cookie_of(resp: &crate::common::Resp) -> String {
    let set = resp.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn login_me_logout() {
    let app = App::new();
    app.user("alice", Role::Analyst).await;
    let before = now_ms();
    let resp = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"name": "alice", "password": PASSWORD})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let body = resp.json();
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64);
    assert_eq!(body["user"]["name"], "alice");
    assert_eq!(body["user"]["role"], "analyst");
    assert!(body["user"].get("password_hash").is_none());
    let ttl = i64::try_from(app.ctx.config.session_ttl.as_millis()).unwrap();
    let expires = body["expires_ms"].as_i64().unwrap();
    assert!(expires >= before + ttl && expires <= now_ms() + ttl);

    let set_cookie = resp.headers[header::SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert_eq!(cookie_of(&resp), format!("picket_session={token}"));

    // The bearer token and the cookie both authenticate.
    let me = app.get("/api/v1/auth/me", &token).await;
    assert_eq!(me.json()["name"], "alice");
    let req = Request::get("/api/v1/auth/me")
        .header(
            header::COOKIE,
            format!("theme=dark; picket_session={token}"),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.json()["name"], "alice");

    let out = app
        .call("POST", "/api/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(out.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    app.get("/api/v1/auth/me", &token)
        .await
        .error(401, "unauthorized");

    let login = app.audit("auth.login").await;
    assert_eq!(login.len(), 1);
    assert_eq!(login[0].actor, "alice");
    let logout = app.audit("auth.logout").await;
    assert_eq!(logout[0].actor, "alice");
}

#[tokio::test]
async fn login_failures_do_not_reveal_users() {
    let app = App::new();
    app.user("bob", Role::Viewer).await;
    let wrong = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"name": "bob", "password": "wrong password"})),
        )
        .await
        .error(401, "unauthorized");
    let unknown = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"name": "nobody", "password": PASSWORD})),
        )
        .await
        .error(401, "unauthorized");
    assert_eq!(wrong, unknown);
    let failed = app.audit("auth.login_failed").await;
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().any(|e| e.target == "nobody"));
    let metrics = app.call("GET", "/metrics", None, None).await;
    let text = String::from_utf8(metrics.bytes).unwrap();
    assert!(
        text.contains("picket_api_auth_failures_total{reason=\"bad_credentials\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn disabled_users_are_refused_and_lose_sessions() {
    let app = App::new();
    let admin = app.login_as("root", Role::Admin).await;
    let carol = app.user("carol", Role::Operator).await;
    let carol_token = app.session(carol).await;
    assert_eq!(
        app.get("/api/v1/auth/me", &carol_token).await.status,
        StatusCode::OK
    );

    let resp = app
        .call(
            "PATCH",
            &format!("/api/v1/users/{carol}"),
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["disabled"], true);
    app.get("/api/v1/auth/me", &carol_token)
        .await
        .error(401, "unauthorized");
    app.call(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"name": "carol", "password": PASSWORD})),
    )
    .await
    .error(403, "account_disabled");
    let upd = app.audit("user.update").await;
    assert_eq!(upd[0].actor, "root");
    assert_eq!(upd[0].target, "carol");
    assert_eq!(upd[0].detail["disabled"], true);
}

#[tokio::test]
async fn expired_sessions_are_refused() {
    let app = App::new();
    let id = app.user("dave", Role::Viewer).await;
    let expired = app.session_expiring(id, now_ms() - 1).await;
    app.get("/api/v1/auth/me", &expired)
        .await
        .error(401, "unauthorized");
    app.get("/api/v1/auth/me", "0123")
        .await
        .error(401, "unauthorized");
    let r = app
        .send(
            Request::get("/api/v1/auth/me")
                .header(header::AUTHORIZATION, "Basic Zm9vOmJhcg==")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(r.error(401, "unauthorized").contains("Bearer"));
}

#[tokio::test]
async fn setup_works_once() {
    let app = App::new();
    let creds = json!({"name": "first", "password": PASSWORD});
    app.call(
        "POST",
        "/api/v1/setup",
        None,
        Some(json!({"name": "first", "password": "short"})),
    )
    .await
    .error(400, "bad_request");
    let resp = app
        .call("POST", "/api/v1/setup", None, Some(creds.clone()))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED);
    assert_eq!(resp.json()["role"], "admin");
    app.call(
        "POST",
        "/api/v1/setup",
        None,
        Some(json!({"name": "second", "password": PASSWORD})),
    )
    .await
    .error(409, "conflict");
    let login = app
        .call("POST", "/api/v1/auth/login", None, Some(creds))
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(app.audit("setup").await[0].actor, "first");
    assert_eq!(app.store.user_count().await.unwrap(), 1);
}

#[tokio::test]
async fn cookie_auth_needs_the_csrf_header() {
    let app = App::new();
    app.user("erin", Role::Admin).await;
    let login = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"name": "erin", "password": PASSWORD})),
        )
        .await;
    let cookie = cookie_of(&login);
    let token = login.json()["token"].as_str().unwrap().to_owned();
    let body = json!({"label": "x", "ttl_secs": 600}).to_string();
    let with = |csrf: Option<&str>, origin: Option<&str>| {
        let mut b = Request::post("/api/v1/enrollment-tokens")
            .header(header::COOKIE, &cookie)
            .header(header::HOST, "picket.example")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(v) = csrf {
            b = b.header("X-Picket-Csrf", v);
        }
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(Body::from(body.clone())).unwrap()
    };
    let msg = app.send(with(None, None)).await.error(403, "csrf");
    assert!(msg.contains("X-Picket-Csrf"), "{msg}");
    app.send(with(Some("0"), None)).await.error(403, "csrf");
    assert_eq!(
        app.send(with(Some("1"), None)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.send(with(Some("1"), Some("https://picket.example")))
            .await
            .status,
        StatusCode::CREATED
    );
    app.send(with(Some("1"), Some("https://evil.example")))
        .await
        .error(403, "csrf");
    // Safe methods need no header; bearer tokens never do.
    let get = Request::get("/api/v1/enrollment-tokens")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(get).await.status, StatusCode::OK);
    let bearer = app
        .call(
            "POST",
            "/api/v1/enrollment-tokens",
            Some(&token),
            Some(json!({"label": "y", "ttl_secs": 600})),
        )
        .await;
    assert_eq!(bearer.status, StatusCode::CREATED);
}

#[tokio::test]
async fn create_user_for_the_cli() {
    let app = App::new();
    let user = picket_api::create_user(&*app.store, "admin", PASSWORD, Role::Admin)
        .await
        .unwrap();
    assert_eq!(user.role, Role::Admin);
    let stored = app.store.user_by_name("admin").await.unwrap().unwrap();
    assert!(stored
        .password_hash
        .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert!(picket_api::verify_password(PASSWORD, &stored.password_hash));
    assert!(!picket_api::verify_password(
        "nope nope",
        &stored.password_hash
    ));
    assert_eq!(app.audit("user.create").await[0].actor, "system");
    let dup = picket_api::create_user(&*app.store, "admin", PASSWORD, Role::Admin).await;
    assert!(matches!(dup, Err(ApiError::Conflict(_))), "{dup:?}");
    let weak = picket_api::create_user(&*app.store, "other", "short", Role::Viewer).await;
    assert!(matches!(weak, Err(ApiError::BadRequest(_))), "{weak:?}");
    let bad = picket_api::create_user(&*app.store, "bad name!", PASSWORD, Role::Viewer).await;
    assert!(matches!(bad, Err(ApiError::BadRequest(_))), "{bad:?}");
    // Setup is closed once a user exists.
    app.call(
        "POST",
        "/api/v1/setup",
        None,
        Some(json!({"name": "x", "password": PASSWORD})),
    )
    .await
    .error(409, "conflict");
}

#[tokio::test]
async fn users_admin_flow() {
    let app = App::new();
    let root_id = app.user("root", Role::Admin).await;
    let root = app.session(root_id).await;
    // The last enabled admin cannot demote or disable itself.
    app.call(
        "PATCH",
        &format!("/api/v1/users/{root_id}"),
        Some(&root),
        Some(json!({"role": "viewer"})),
    )
    .await
    .error(409, "conflict");
    let created = app
        .call(
            "POST",
            "/api/v1/users",
            Some(&root),
            Some(json!({"name": "frank", "password": PASSWORD, "role": "analyst"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let frank = created.json()["id"].as_i64().unwrap();
    app.call(
        "POST",
        "/api/v1/users",
        Some(&root),
        Some(json!({"name": "frank", "password": PASSWORD, "role": "analyst"})),
    )
    .await
    .error(409, "conflict");
    app.call(
        "POST",
        "/api/v1/users",
        Some(&root),
        Some(json!({"name": "gina", "password": PASSWORD, "role": "god"})),
    )
    .await
    .error(400, "bad_request");

    // A new password ends the user's sessions and is the one that works.
    let frank_token = app.session(frank).await;
    let changed = app
        .call(
            "PATCH",
            &format!("/api/v1/users/{frank}"),
            Some(&root),
            Some(json!({"password": "a brand new one", "role": "operator"})),
        )
        .await;
    assert_eq!(changed.json()["role"], "operator");
    app.get("/api/v1/auth/me", &frank_token)
        .await
        .error(401, "unauthorized");
    let login = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"name": "frank", "password": "a brand new one"})),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);

    let list = app.get("/api/v1/users", &root).await.json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"root") && names.contains(&"frank"));
    assert!(list[0].get("password_hash").is_none());
    app.call(
        "PATCH",
        "/api/v1/users/999999",
        Some(&root),
        Some(json!({"disabled": true})),
    )
    .await
    .error(404, "not_found");
    app.call(
        "PATCH",
        &format!("/api/v1/users/{frank}"),
        Some(&root),
        Some(json!({})),
    )
    .await
    .error(400, "bad_request");
    assert_eq!(app.audit("user.create").await.len(), 1);
    assert_eq!(app.audit("user.update").await.len(), 1);
}
