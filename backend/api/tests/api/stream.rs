//! The WebSocket stream over a real socket.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use picket_api::LiveEvent;
use picket_store::model::{Alert, AlertStatus, Level, Role};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{alert, hex_id, wait_for, App};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Server {
    addr: std::net::SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(app: &App) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = app.router.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

async fn connect(
    server: &Server,
    bearer: Option<&str>,
    query: &str,
) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{}/api/v1/stream{query}", server.addr)
        .into_client_request()
        .unwrap();
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// The next text message as JSON (pings are skipped), with a deadline.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10 s")
            .expect("stream ended")
            .expect("websocket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

fn live_alert(n: u64, level: Level) -> LiveEvent {
    LiveEvent::Alert(Box::new(Alert {
        alert: alert(n, &hex_id(1), 1_000, level),
        status: AlertStatus::New,
        assignee: None,
        updated_ms: 1_000,
    }))
}

#[tokio::test]
async fn stream_pushes_live_events() {
    let app = App::new();
    let token = app.login_as("v", Role::Viewer).await;
    let server = Server::start(&app).await;
    let mut ws = connect(&server, Some(&token), "").await.unwrap();
    let live = app.live.clone();
    wait_for("the stream to subscribe", || live.receiver_count() == 1).await;

    app.live.send(live_alert(1, Level::High)).unwrap();
    let msg = next_json(&mut ws).await;
    assert_eq!(msg["type"], "alert");
    assert_eq!(msg["id"], hex_id(0xa001));
    assert_eq!(msg["level"], "high");
    assert_eq!(msg["rule_author"], "Florian Roth");

    // A device change carries the device as the inventory shows it, with
    // its platform (an appliance: linux).
    app.device(&hex_id(0xd1), Some(1_000)).await;
    let device = app.store.device(&hex_id(0xd1)).await.unwrap().unwrap();
    app.live
        .send(LiveEvent::Device {
            device: Box::new(device),
            online: false,
            change: "heartbeat",
        })
        .unwrap();
    let msg = next_json(&mut ws).await;
    assert_eq!(
        (&msg["type"], &msg["device"]["platform"]),
        (&json!("device"), &json!("linux")),
        "{msg}"
    );

    // Filters: only high+ alerts from now on.
    ws.send(Message::text(
        json!({"type": "filter", "min_level": "high"}).to_string(),
    ))
    .await
    .unwrap();
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["type"], "filter");
    assert_eq!(ack["filter"]["min_level"], "high");
    app.live.send(live_alert(2, Level::Low)).unwrap();
    app.live.send(live_alert(3, Level::Critical)).unwrap();
    assert_eq!(next_json(&mut ws).await["id"], hex_id(0xa003));
    ws.send(Message::text("{oops")).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "error");

    let metrics = app.call("GET", "/metrics", None, None).await;
    assert!(String::from_utf8(metrics.bytes)
        .unwrap()
        .contains("picket_api_ws_clients 1"));

    ws.close(None).await.unwrap();
    wait_for("the stream to unsubscribe", || live.receiver_count() == 0).await;
    server.stop().await;
}

#[tokio::test]
async fn lagging_clients_are_told_not_dropped() {
    let app = App::new();
    let token = app.login_as("v", Role::Viewer).await;
    let server = Server::start(&app).await;
    // `?token=` works for browsers that cannot set headers.
    let mut ws = connect(&server, None, &format!("?token={token}"))
        .await
        .unwrap();
    let live = app.live.clone();
    wait_for("the stream to subscribe", || live.receiver_count() == 1).await;

    // The broadcast holds 16; on this single-threaded runtime the stream
    // task cannot run while we send, so it misses the first 4 of 20.
    for n in 0..20 {
        app.live.send(live_alert(n, Level::Medium)).unwrap();
    }
    let first = next_json(&mut ws).await;
    assert_eq!(first, json!({"type": "lagged", "skipped": 4}));
    for n in 4..20 {
        assert_eq!(next_json(&mut ws).await["id"], hex_id(0xa000 + n));
    }
    // Still connected.
    app.live.send(live_alert(99, Level::Medium)).unwrap();
    assert_eq!(next_json(&mut ws).await["id"], hex_id(0xa000 + 99));
    server.stop().await;
}

#[tokio::test]
async fn unauthenticated_stream_is_refused() {
    let app = App::new();
    let server = Server::start(&app).await;
    for (bearer, query) in [(None, ""), (Some("bogus"), ""), (None, "?token=bogus")] {
        match connect(&server, bearer, query).await {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 401);
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
                assert_eq!(body["code"], "unauthorized");
            }
            other => panic!("expected a 401 refusal, got {:?}", other.map(|_| ())),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn stream_pings_its_clients() {
    let app = App::with_config(|c| c.ws_ping_interval = Duration::from_millis(50));
    let token = app.login_as("v", Role::Viewer).await;
    let server = Server::start(&app).await;
    let mut ws = connect(&server, Some(&token), "").await.unwrap();
    let got_ping = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            if matches!(msg, Ok(Message::Ping(_))) {
                return true;
            }
        }
        false
    })
    .await
    .expect("no ping within 10 s");
    assert!(got_ping);
    server.stop().await;
}
