//! The Windows/macOS agent stream end to end against an in-process backend:
//! enrollment through the API, lines over a real WebSocket, alerts in the
//! store and on the live feed, bad lines answered, refusals, and the
//! hardening against bad and slow clients (idle, slow reader, oversized
//! frames, the stream cap, pushed revocation), each counted in `/metrics`,
//! with a good stream served alongside a bad one.

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
    backend_with(|_| {}).await
}

async fn backend_with(tweak: impl FnOnce(&mut picket_backend::config::Config)) -> Backend {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("osascript.yml"), RULE).unwrap();
    let dir = rules.keep();
    Backend::start(move |c| {
        c.agents.rules_dirs = vec![dir];
        tweak(c);
    })
    .await
}

/// `GET /metrics` over a plain TCP connection.
async fn metrics(b: &Backend) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(b.started.http)
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

/// Waits (bounded) until `/metrics` holds `line`.
async fn wait_metric(b: &Backend, line: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics(b).await;
        if m.lines().any(|l| l == line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line:?} never in /metrics:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until the Close frame (bounded); `None` when the connection ends
/// without one.
async fn close_frame(ws: &mut Ws) -> Option<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => {
                    return f.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the stream ends in time")
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
    assert_eq!(errors[0]["reason"], "malformed_json");
    assert_eq!(errors[1]["line"], 4);
    assert!(errors[1]["error"]
        .as_str()
        .unwrap()
        .contains("unknown format"));
    assert_eq!(errors[1]["reason"], "unknown_format");
    let m = metrics(&b).await;
    for line in [
        "picket_agent_line_errors_total{reason=\"malformed_json\"} 1",
        "picket_agent_line_errors_total{reason=\"unknown_format\"} 1",
        "picket_agent_streams 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in:\n{m}");
    }

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

    // The agent closes: counted as such, the slot is given back.
    ws.close(None).await.unwrap();
    wait_metric(&b, "picket_agent_streams_closed_total{reason=\"client\"} 1").await;
    wait_metric(&b, "picket_agent_streams 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_revoked_agents_are_refused() {
    let b = backend().await;
    let id = agent(&b, "s3cret").await;
    assert_eq!(status(&connect(&b, None).await.unwrap_err()), 401);
    assert_eq!(status(&connect(&b, Some("wrong")).await.unwrap_err()), 401);
    let mut open = connect(&b, Some("s3cret")).await.unwrap();
    // The stream is served, then left idle.
    open.send(Message::Text(GOOD.into())).await.unwrap();
    assert_eq!(reply(&mut open).await["type"], "result");
    b.started.fleet.revoke(&id, "op").await.unwrap();
    // Revocation is pushed: the idle stream gets an error and is closed
    // without sending anything more.
    let r = reply(&mut open).await;
    assert_eq!(r["type"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("revoked"), "{r}");
    assert_eq!(
        close_frame(&mut open).await,
        Some((1008, "device revoked".to_owned()))
    );
    wait_metric(
        &b,
        "picket_agent_streams_closed_total{reason=\"revoked\"} 1",
    )
    .await;
    let alerts_before = b.started.store.stats().await.unwrap().alerts;
    assert_eq!(alerts_before, 1);
    assert_eq!(status(&connect(&b, Some("s3cret")).await.unwrap_err()), 403);
}

/// A silent stream is closed with 1008 `idle timeout` while a good stream
/// on the same backend keeps getting answers, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_closed_and_a_good_one_goes_on() {
    let b = backend_with(|c| c.agents.idle_timeout = Duration::from_secs(1)).await;
    agent(&b, "s3cret").await;
    let mut silent = connect(&b, Some("s3cret")).await.unwrap();
    let mut good = connect(&b, Some("s3cret")).await.unwrap();
    let closing = tokio::spawn(async move { close_frame(&mut silent).await });
    // The good stream sends well within the idle timeout until the silent
    // one is closed, and every message is answered with its alert.
    let mut answered = 0;
    while !closing.is_finished() {
        good.send(Message::Text(GOOD.into())).await.unwrap();
        let r = reply(&mut good).await;
        assert_eq!(r["type"], "result", "{r}");
        assert_eq!(r["result"]["alerts"].as_array().unwrap().len(), 1, "{r}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        closing.await.unwrap(),
        Some((1008, "idle timeout".to_owned()))
    );
    assert!(answered > 0);
    good.send(Message::Text(GOOD.into())).await.unwrap();
    assert_eq!(reply(&mut good).await["type"], "result");
    wait_metric(
        &b,
        "picket_agent_streams_closed_total{reason=\"idle_timeout\"} 1",
    )
    .await;
    wait_metric(&b, "picket_agent_streams 1").await;
}

/// A frame over the message limit is refused as soon as its header is read:
/// Close 1009 with a reason, counted; the client is a raw socket so that the
/// frame can announce more bytes than it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_closed_with_1009() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let b = backend().await;
    agent(&b, "s3cret").await;
    let mut tcp = tokio::net::TcpStream::connect(b.started.http)
        .await
        .unwrap();
    tcp.write_all(
        b"GET /api/v1/agents/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\nAuthorization: Bearer s3cret\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // FIN + text, masked, 64-bit length: the limit plus one, then a few bytes.
    let len = picket_api::AGENT_MESSAGE_LIMIT as u64 + 1;
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[b'x'; 64]);
    tcp.write_all(&frame).await.unwrap();
    // The server's Close frame: 0x88, payload length, code, reason.
    let mut hdr = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(30), tcp.read_exact(&mut hdr))
        .await
        .expect("answer in time")
        .unwrap();
    assert_eq!(hdr[0], 0x88, "not a Close frame: {hdr:?}");
    let mut payload = vec![0u8; usize::from(hdr[1] & 0x7f)];
    tcp.read_exact(&mut payload).await.unwrap();
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
    assert!(reason.contains("too big"), "{reason}");
    wait_metric(
        &b,
        "picket_agent_streams_closed_total{reason=\"message_too_big\"} 1",
    )
    .await;
}

/// An agent that sends but never reads its answers is dropped once an
/// answer cannot be written within `write_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_dropped() {
    let b = backend_with(|c| c.agents.write_timeout = Duration::from_secs(1)).await;
    agent(&b, "s3cret").await;
    let ws = connect(&b, Some("s3cret")).await.unwrap();
    let (mut tx, _rx) = ws.split();
    // 5,000 malformed lines: a 10 KB message, an answer of about 800 KB.
    let bad = "x\n".repeat(5_000);
    for _ in 0..300 {
        match tokio::time::timeout(
            Duration::from_secs(5),
            tx.send(Message::Text(bad.clone().into())),
        )
        .await
        {
            Ok(Ok(())) => {}
            // The backend stopped reading (blocked writing, then gone).
            Ok(Err(_)) | Err(_) => break,
        }
    }
    wait_metric(
        &b,
        "picket_agent_streams_closed_total{reason=\"slow_reader\"} 1",
    )
    .await;
    wait_metric(&b, "picket_agent_streams 0").await;
}

/// `max_streams` open: one more is refused with 503 before the upgrade and
/// counted; a slot given back admits a new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_streams_are_refused_with_503() {
    let b = backend_with(|c| c.agents.max_streams = 2).await;
    agent(&b, "s3cret").await;
    let mut first = connect(&b, Some("s3cret")).await.unwrap();
    let _second = connect(&b, Some("s3cret")).await.unwrap();
    assert_eq!(status(&connect(&b, Some("s3cret")).await.unwrap_err()), 503);
    wait_metric(&b, "picket_agent_streams_refused_total 1").await;
    first.close(None).await.unwrap();
    wait_metric(&b, "picket_agent_streams 1").await;
    let mut third = connect(&b, Some("s3cret")).await.unwrap();
    third.send(Message::Text(GOOD.into())).await.unwrap();
    assert_eq!(reply(&mut third).await["type"], "result");
}

/// A message with a `{"seq": N}` first line gets alert ids derived from the
/// device, seq, line and rule: sent again (an answer was lost), its alerts
/// are answered with the same ids and not stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_sequenced_message_is_stored_once() {
    let b = backend().await;
    agent(&b, "s3cret").await;
    let mut ws = connect(&b, Some("s3cret")).await.unwrap();
    let ids = |r: &Value| -> Vec<(u64, String)> {
        r["result"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["line"].as_u64().unwrap(),
                    a["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let stored = || async { b.started.store.stats().await.unwrap().alerts };

    let msg = format!("{{\"seq\": 7}}\n{GOOD}\n{GOOD}\n");
    ws.send(Message::Text(msg.clone().into())).await.unwrap();
    let first = reply(&mut ws).await;
    assert_eq!(first["result"]["seq"], 7, "{first}");
    assert_eq!(first["result"]["lines"], 2, "{first}");
    assert_eq!(first["result"]["duplicates"], 0, "{first}");
    let first_ids = ids(&first);
    assert_eq!(
        first_ids.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_ne!(first_ids[0].1, first_ids[1].1);
    assert_eq!(stored().await, 2);

    // The resend: same ids, nothing stored again.
    ws.send(Message::Text(msg.into())).await.unwrap();
    let again = reply(&mut ws).await;
    assert_eq!(ids(&again), first_ids);
    assert_eq!(again["result"]["duplicates"], 2, "{again}");
    assert_eq!(stored().await, 2);

    // The same seq with another line 3: only line 2 is a duplicate.
    let other = GOOD.replace("display dialog", "display alert");
    ws.send(Message::Text(
        format!("{{\"seq\": 7}}\n{GOOD}\n{other}\n").into(),
    ))
    .await
    .unwrap();
    let changed = reply(&mut ws).await;
    assert_eq!(changed["result"]["duplicates"], 1, "{changed}");
    assert_eq!(ids(&changed)[0], first_ids[0]);
    assert_ne!(ids(&changed)[1], first_ids[1]);
    assert_eq!(stored().await, 3);

    // Without a seq, every send stores new alerts.
    ws.send(Message::Text(GOOD.into())).await.unwrap();
    ws.send(Message::Text(GOOD.into())).await.unwrap();
    assert_eq!(reply(&mut ws).await["result"]["duplicates"], 0);
    assert_eq!(reply(&mut ws).await["result"]["duplicates"], 0);
    assert_eq!(stored().await, 5);
}
