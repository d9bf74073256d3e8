//! Alert listing, filters, cursor pagination, detail, triage, notes, counts.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use picket_store::model::{Level, Role};
use serde_json::{json, Value};

use crate::common::{alert, hex_id, App};

const N: u64 = 60;

/// Two devices, `N` alerts: alert n at t = 10_000 + n*1000, on device
/// n%2, level n%5.
async fn seeded() -> (App, String) {
    let app = App::new();
    app.device(&hex_id(1), None).await;
    app.device(&hex_id(2), None).await;
    let alerts: Vec<_> = (0..N)
        .map(|n| {
            let level = Level::from_i16(i16::try_from(n % 5).unwrap()).unwrap();
            alert(
                n,
                &hex_id(1 + n % 2),
                10_000 + i64::try_from(n).unwrap() * 1000,
                level,
            )
        })
        .collect();
    app.store.insert_alerts(&alerts).await.unwrap();
    let token = app.login_as("ann", Role::Analyst).await;
    (app, token)
}

async fn ids(app: &App, token: &str, query: &str) -> Vec<String> {
    let resp = app.get(&format!("/api/v1/alerts?{query}"), token).await;
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "{query}: {}",
        String::from_utf8_lossy(&resp.bytes)
    );
    resp.json()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

fn expect(pred: impl Fn(u64) -> bool) -> Vec<String> {
    (0..N)
        .rev()
        .filter(|n| pred(*n))
        .map(|n| hex_id(0xa000 + n))
        .collect()
}

#[tokio::test]
async fn list_default_page_and_cursor_pagination() {
    let (app, token) = seeded().await;
    let first = app.get("/api/v1/alerts", &token).await.json();
    assert_eq!(first["alerts"].as_array().unwrap().len(), 50);
    assert!(first["next"].is_string());
    assert_eq!(
        first["alerts"][0]["id"],
        hex_id(0xa000 + N - 1),
        "newest first"
    );
    assert_eq!(first["alerts"][0]["rule_author"], "Florian Roth");
    assert_eq!(first["alerts"][0]["event"]["rule_author"], "Florian Roth");

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/v1/alerts?limit=7&cursor={c}"),
            None => "/api/v1/alerts?limit=7".into(),
        };
        let page = app.get(&q, &token).await.json();
        pages += 1;
        for a in page["alerts"].as_array().unwrap() {
            seen.push(a["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 20, "pagination does not end");
    }
    assert_eq!(seen, expect(|_| true));
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), seen.len());
}

#[tokio::test]
async fn filters() {
    let (app, token) = seeded().await;
    let all = "limit=500";
    assert_eq!(
        ids(&app, &token, &format!("{all}&device={}", hex_id(2))).await,
        expect(|n| n % 2 == 1)
    );
    assert_eq!(
        ids(&app, &token, &format!("{all}&level=high")).await,
        expect(|n| n % 5 >= 3)
    );
    assert_eq!(
        ids(&app, &token, &format!("{all}&level=4")).await,
        expect(|n| n % 5 == 4)
    );
    assert_eq!(
        ids(&app, &token, &format!("{all}&rule=rule-1")).await,
        expect(|n| n % 3 == 1)
    );
    assert_eq!(
        ids(&app, &token, &format!("{all}&technique=T1059")).await,
        expect(|n| n % 4 == 0)
    );
    assert_eq!(
        ids(&app, &token, &format!("{all}&source=upload")).await,
        expect(|n| n % 2 == 1)
    );
    assert_eq!(
        ids(&app, &token, &format!("{all}&since=20000&until=25000")).await,
        expect(|n| (10..15).contains(&n))
    );
    // 1970-01-01T00:00:20Z is 20_000 ms.
    assert_eq!(
        ids(
            &app,
            &token,
            &format!("{all}&since=1970-01-01T00:00:20Z&until=1970-01-01T00:00:25Z")
        )
        .await,
        expect(|n| (10..15).contains(&n))
    );
    assert_eq!(
        ids(&app, &token, &format!("{all}&q=X%2F42")).await,
        expect(|n| n == 42)
    );
    assert_eq!(
        ids(&app, &token, &format!("{all}&status=acknowledged")).await,
        Vec::<String>::new()
    );
    let id = hex_id(0xa000 + 3);
    app.call(
        "PATCH",
        &format!("/api/v1/alerts/{id}"),
        Some(&token),
        Some(json!({"status": "acknowledged"})),
    )
    .await;
    assert_eq!(
        ids(&app, &token, &format!("{all}&status=acknowledged")).await,
        vec![id]
    );
    assert_eq!(
        ids(
            &app,
            &token,
            &format!("{all}&device={}&level=critical&source=appliance", hex_id(1))
        )
        .await,
        expect(|n| n % 2 == 0 && n % 5 == 4)
    );
}

#[tokio::test]
async fn detail_triage_and_notes() {
    let (app, token) = seeded().await;
    let id = hex_id(0xa000 + 7);
    let url = format!("/api/v1/alerts/{id}");
    let detail = app.get(&url, &token).await.json();
    assert_eq!(detail["rule_author"], "Florian Roth");
    assert_eq!(detail["status"], "new");
    assert_eq!(detail["notes"], json!([]));

    let patched = app
        .call(
            "PATCH",
            &url,
            Some(&token),
            Some(json!({"status": "acknowledged", "assignee": "ann"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    let patched = patched.json();
    assert_eq!(patched["status"], "acknowledged");
    assert_eq!(patched["assignee"], "ann");
    assert_eq!(patched["rule_author"], "Florian Roth");
    app.call(
        "PATCH",
        &url,
        Some(&token),
        Some(json!({"assignee": "ghost"})),
    )
    .await
    .error(400, "bad_request");
    let unassigned = app
        .call("PATCH", &url, Some(&token), Some(json!({"assignee": null})))
        .await
        .json();
    assert_eq!(unassigned["assignee"], Value::Null);
    assert_eq!(unassigned["status"], "acknowledged");

    let note = app
        .call(
            "POST",
            &format!("{url}/notes"),
            Some(&token),
            Some(json!({"text": "  benign cron job  "})),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED);
    assert_eq!(note.json()["text"], "benign cron job");
    app.call(
        "POST",
        &format!("{url}/notes"),
        Some(&token),
        Some(json!({"text": "  "})),
    )
    .await
    .error(400, "bad_request");
    let detail = app.get(&url, &token).await.json();
    assert_eq!(detail["notes"][0]["author"], "ann");
    assert_eq!(detail["notes"][0]["text"], "benign cron job");

    let updates = app.audit("alert.update").await;
    assert_eq!(updates.len(), 2);
    assert!(updates.iter().all(|e| e.target == id && e.actor == "ann"));
    // The audit detail names only what the PATCH gave: unassigning is
    // `"assignee": null`, leaving the status alone is no `status` key.
    // (compared as JSON values: key order depends on serde_json's features)
    let details: Vec<_> = updates.iter().map(|e| e.detail.clone()).collect();
    let expected = [
        json!({"assignee": "ann", "status": "acknowledged"}),
        json!({"assignee": null}),
    ];
    assert_eq!(details.len(), expected.len());
    for e in &expected {
        assert!(details.contains(e), "{e} missing from {details:?}");
    }
    assert_eq!(app.audit("alert.note").await.len(), 1);

    let missing = hex_id(0xffff);
    app.get(&format!("/api/v1/alerts/{missing}"), &token)
        .await
        .error(404, "not_found");
    app.call(
        "PATCH",
        &format!("/api/v1/alerts/{missing}"),
        Some(&token),
        Some(json!({"status": "resolved"})),
    )
    .await
    .error(404, "not_found");
    app.call(
        "POST",
        &format!("/api/v1/alerts/{missing}/notes"),
        Some(&token),
        Some(json!({"text": "x"})),
    )
    .await
    .error(404, "not_found");
}

#[tokio::test]
async fn counts_over_time() {
    let (app, token) = seeded().await;
    // 10s buckets: alerts 0..=59 at 10s..69s → 6 buckets of 10 alerts.
    let counts = app
        .get("/api/v1/alerts/counts?bucket=10s", &token)
        .await
        .json();
    assert_eq!(counts["bucket_ms"], 10_000);
    let buckets = counts["buckets"].as_array().unwrap();
    let total: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(total, N);
    let starts: BTreeSet<i64> = buckets
        .iter()
        .map(|b| b["start_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(starts, (1..=6).map(|i| i * 10_000).collect());
    let high = app
        .get("/api/v1/alerts/counts?bucket=1h&level=critical", &token)
        .await
        .json();
    let total: u64 = high["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, N / 5);
    app.get("/api/v1/alerts/counts?bucket=10ms", &token)
        .await
        .error(400, "bad_request");
    app.get("/api/v1/alerts/counts?bucket=soon", &token)
        .await
        .error(400, "bad_request");
    app.get("/api/v1/alerts/counts?limit=5", &token)
        .await
        .error(400, "bad_request");
}
