//! Live delivery latency: an appliance publishes one-alert batches over
//! mTLS; a WebSocket client subscribed to `/api/v1/stream` measures the time
//! from publish to the alert's arrival (ingest, verify, commit, broadcast,
//! JSON, WebSocket). Reports p50/p99/max.
//!
//! `cargo bench -p picket-backend --bench ws_latency`
//! Env: PICKET_BENCH_WS_SAMPLES (500), PICKET_BENCH_WS_INTERVAL_MS (10).
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stdout)]

#[path = "../tests/ingest_support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use picket_proto::topic::Channel;
use picket_store::model::{Role, Session};
use rumqttc::QoS;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn bench() {
    let samples = env("PICKET_BENCH_WS_SAMPLES", 500);
    let interval = Duration::from_millis(env("PICKET_BENCH_WS_INTERVAL_MS", 10));
    let b = support::Backend::start(|_| {}).await;
    let store = b.started.store.clone();
    let user = picket_api::create_user(store.as_ref(), "bench", "bench-password-123", Role::Viewer)
        .await
        .unwrap();
    let token = "bench-session-token-0123456789abcdef";
    let now = picket_backend::ingest::now_ms();
    store
        .create_session(&Session {
            token_hash: picket_store::token_hash(token),
            user_id: user.id,
            created_ms: now,
            expires_ms: now + 3_600_000,
        })
        .await
        .unwrap();
    let url = format!("ws://{}/api/v1/stream?token={token}", b.started.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    let dev = b.enroll(9).await;
    let p = dev.connect(b.started.mqtt.unwrap()).await;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let frames: Vec<(u64, Vec<u8>)> = (1..=samples).map(|s| (s, dev.batch(s, 1))).collect();
    let topic = dev.topic(Channel::Alerts);
    let sent2 = sent.clone();
    let id = dev.id;
    let publisher = tokio::spawn(async move {
        for (seq, f) in frames {
            let alert = support::alert_id(id, seq).to_string();
            sent2.lock().unwrap().insert(alert, Instant::now());
            p.publish(&topic, QoS::AtLeastOnce, f).await;
            tokio::time::sleep(interval).await;
        }
        p
    });
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while (lat.len() as u64) < samples && Instant::now() < deadline {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await
        else {
            break;
        };
        let now = Instant::now();
        let Ok(text) = msg.into_text() else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v["type"] != "alert" {
            continue;
        }
        let Some(alert_id) = v["id"].as_str().or_else(|| v["alert"]["id"].as_str()) else {
            continue;
        };
        if let Some(t) = sent.lock().unwrap().get(alert_id) {
            lat.push(now.duration_since(*t));
        }
    }
    let _ = publisher.await;
    lat.sort();
    assert!(!lat.is_empty(), "no alert arrived on the WebSocket");
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "websocket delivery (publish -> /api/v1/stream), {} alerts, one per {:?}: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (commit_interval_ms = 20)",
        lat.len(),
        interval,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3,
    );
}
