//! The Windows/macOS agent stream end to end against an in-process backend:
//! enrollment through the API, lines over a real WebSocket, alerts in the
//! store and on the live feed, bad lines answered, refusals.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

mod ingest_support;

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use ingest_support::Backend;
use picket_api::{Fleet as _, LiveEvent};
use picket_store::model::{AgentRecord, AlertFilter, AlertSource, NewDevice};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

const RULE: &str = "title: osascript -e\nid: 6b0c4a3e-0000-4000-8000-000000000001\n\
    author: test\nlevel: high\ntags: [attack.t1059.002]\n\
    logsource: {product: macos, category: process_creation}\n\
    detection:\n  s:\n    Image|endswith: /osascript\n    CommandLine|contains: ' -e '\n  condition: s\n";

const GOOD: &str = r#"{"schema_version":1,"event_type":9,"process":{"executable":{"path":"/bin/zsh"},"ppid":1,"audit_token":{"pid":500,"euid":501}},"event":{"exec":{"target":{"executable":{"path":"/usr/bin/osascript"},"ppid":500,"audit_token":{"pid":501,"euid":501}},"args":["osascript","-e","display dialog \"hi\""]}}}"#;

async fn backend() -> Backend {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("osascript.yml"), RULE).unwrap();
    let dir = rules.keep();
    Backend::start(move |c| c.agents.rules_dirs = vec![dir]).await
}

async fn agent(b: &Backend, secret: &str) -> String {
    let id = "a9".repeat(16);
    let store = &b.started.store;
    store
        .insert_device(NewDevice {
            id: id.clone(),
            hostname: "mac-1".into(),
            public_key: Vec::new(),
            cert_serial: String::new(),
            agent_version: "1".into(),
            enrolled_ms: 1,
        })
        .await
        .unwrap();
    store
        .insert_agent(&AgentRecord {
            device_id: id.clone(),
            platform: "macos".into(),
            secret_hash: picket_store::token_hash(secret),
            created_ms: 1,
        })
        .await
        .unwrap();
    id
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(b: &Backend, secret: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{}/api/v1/agents/stream", b.started.http)
        .into_client_request()
        .unwrap();
    if let Some(s) = secret {
        req.headers_mut()
            .insert("authorization", format!("Bearer {s}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn reply(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("reply in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

fn status(e: &tungstenite::Error) -> u16 {
    match e {
        tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_alert_bad_lines_are_answered_and_the_stream_goes_on() {
    let b = backend().await;
    let id = agent(&b, "s3cret").await;
    let mut live = b.started.live.subscribe();
    let mut ws = connect(&b, Some("s3cret")).await.unwrap();

    let msg = format!("{GOOD}\nnot json\n\n{{\"hello\": 1}}\n{GOOD}\n");
    ws.send(Message::Text(msg.into())).await.unwrap();
    let r = reply(&mut ws).await;
    assert_eq!(r["type"], "result", "{r}");
    let r = &r["result"];
    assert_eq!(r["lines"], 4, "{r}");
    let alerts = r["alerts"].as_array().unwrap();
    assert_eq!(
        alerts
            .iter()
            .map(|a| a["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 5]
    );
    assert_eq!(alerts[0]["rule_id"], "6b0c4a3e-0000-4000-8000-000000000001");
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{r}");
    assert_eq!(errors[0]["line"], 2);
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    assert_eq!(errors[1]["line"], 4);
    assert!(errors[1]["error"]
        .as_str()
        .unwrap()
        .contains("unknown format"));

    // Stored (before the reply) and broadcast.
    let page = b
        .started
        .store
        .alerts(&AlertFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(page.alerts.len(), 2);
    let a = &page.alerts[0].alert;
    assert_eq!(
        (a.device_id.as_str(), a.source),
        (id.as_str(), AlertSource::Macos)
    );
    assert_eq!(a.techniques, ["T1059.002"]);
    assert_eq!(a.image.as_deref(), Some("/usr/bin/osascript"));
    assert_eq!(a.event["ParentImage"], "/bin/zsh");
    assert_eq!(a.event["rule_author"], "test");
    let ev = tokio::time::timeout(Duration::from_secs(5), live.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, LiveEvent::Alert(_)));
    let dev = b.started.store.device(&id).await.unwrap().unwrap();
    assert!(dev.last_seen_ms.is_some());
    let metrics = b.started.fleet.metrics();
    assert!(
        metrics.contains("picket_agent_lines_refused_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("picket_agent_alerts_stored_total 2"),
        "{metrics}"
    );

    // The stream goes on after bad lines.
    ws.send(Message::Text(GOOD.into())).await.unwrap();
    let r = reply(&mut ws).await;
    assert_eq!(r["result"]["alerts"].as_array().unwrap().len(), 1, "{r}");

    // An oversized message ends the connection.
    let big = "x".repeat(picket_api::AGENT_MESSAGE_LIMIT + 1);
    let _ = ws.send(Message::Text(big.into())).await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_) | Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "oversized message did not end the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_revoked_agents_are_refused() {
    let b = backend().await;
    let id = agent(&b, "s3cret").await;
    assert_eq!(status(&connect(&b, None).await.unwrap_err()), 401);
    assert_eq!(status(&connect(&b, Some("wrong")).await.unwrap_err()), 401);
    let mut open = connect(&b, Some("s3cret")).await.unwrap();
    b.started.fleet.revoke(&id, "op").await.unwrap();
    // An open stream is closed at its next message.
    open.send(Message::Text(GOOD.into())).await.unwrap();
    let r = reply(&mut open).await;
    assert_eq!(r["type"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("revoked"), "{r}");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match open.next().await {
                None | Some(Err(_) | Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "revoked stream stays open");
    assert_eq!(b.started.store.stats().await.unwrap().alerts, 0);
    assert_eq!(status(&connect(&b, Some("s3cret")).await.unwrap_err()), 403);
}
