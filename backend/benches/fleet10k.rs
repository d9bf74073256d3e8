//! A fleet on one node: N appliances connected over mTLS through the front
//! to the embedded broker, each sending one heartbeat per period at a random
//! offset. Reports connect time, process RSS and CPU, and heartbeat
//! processing lag (receive → stored). The simulated appliances run in the
//! same process, so RSS and CPU include them (an upper bound for the backend).
//!
//! `cargo bench -p picket-backend --bench fleet10k`
//! Env: PICKET_BENCH_FLEET (10000), PICKET_BENCH_HB_SECS (30).
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stdout)]

#[path = "../tests/ingest_support/mod.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use picket_proto::ed25519_dalek::SigningKey;
use picket_proto::topic::Channel;
use rumqttc::QoS;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
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
    let n = env("PICKET_BENCH_FLEET", 10_000);
    let period = Duration::from_secs(env("PICKET_BENCH_HB_SECS", 30));
    let b = support::Backend::start(|c| {
        c.ingest.offline_after = Duration::from_secs(3600);
    })
    .await;
    let addr = b.started.mqtt.unwrap();
    let rss0 = rss_mib();
    let t = Instant::now();
    let mut devs = Vec::new();
    for i in 0..n {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i + 1).to_le_bytes());
        seed[31] = 0x5a;
        devs.push(b.enroll_key(SigningKey::from_bytes(&seed)).await);
    }
    println!("enrolled {n} devices in {:.1} s", t.elapsed().as_secs_f64());

    let rss1 = rss_mib();
    let t = Instant::now();
    let mut pubs = Vec::with_capacity(devs.len());
    for (i, d) in devs.iter().enumerate() {
        pubs.push(support::Publisher::start(
            &format!("fleet-{i}"),
            addr,
            Some(d.tls()),
            8,
        ));
        if i % 200 == 199 {
            // Let handshakes complete in waves, as a real fleet reconnects.
            let done = i as u64 + 1;
            support::wait_for("connect wave", Duration::from_secs(120), || {
                pubs.iter()
                    .filter(|p| p.connected.load(Ordering::Relaxed) > 0)
                    .count() as u64
                    + 50
                    >= done
            })
            .await;
        }
    }
    support::wait_for("all connected", Duration::from_secs(300), || {
        pubs.iter().all(|p| p.connected.load(Ordering::Relaxed) > 0)
    })
    .await;
    let connect_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss2 = rss_mib();
    println!(
        "connected {n} appliances (mTLS via the front) in {connect_secs:.1} s; \
         RSS {rss1:.0} MiB -> {rss2:.0} MiB ({:.1} KiB per connection, clients included)",
        (rss2 - rss1) * 1024.0 / n as f64
    );

    // One heartbeat period, offsets spread evenly.
    let frames: Vec<Vec<u8>> = devs.iter().map(|d| d.heartbeat(1)).collect();
    let cpu0 = cpu_secs();
    let t = Instant::now();
    let step = period.as_secs_f64() / n as f64;
    for (i, ((p, d), f)) in pubs.iter().zip(&devs).zip(frames).enumerate() {
        let at = Duration::from_secs_f64(step * i as f64);
        if let Some(wait) = at.checked_sub(t.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        p.publish(&d.topic(Channel::Heartbeat), QoS::AtMostOnce, f)
            .await;
    }
    let m = b.metrics();
    let deadline = Instant::now() + Duration::from_secs(120);
    while m.heartbeats_stored.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let stored = m.heartbeats_stored.load(Ordering::Relaxed);
    println!(
        "heartbeats: {stored}/{n} stored over {secs:.1} s (period {:?}); \
         lag receive->stored last {:.2} ms, max {:.2} ms; CPU {:.1}% of one core \
         ({:.1}% of the node), RSS {:.0} MiB (base before devices {rss0:.0} MiB)",
        period,
        m.heartbeat_lag_us.load(Ordering::Relaxed) as f64 / 1e3,
        m.heartbeat_lag_max_us.load(Ordering::Relaxed) as f64 / 1e3,
        cpu / secs * 100.0,
        cpu / secs / 2.0 * 100.0,
        rss_mib(),
    );
    drop(pubs);
}
