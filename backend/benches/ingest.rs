//! Durable ingest throughput: N simulated appliances publish signed,
//! compressed batches of 256 alerts over mTLS through the front into the
//! embedded broker; ingest verifies and stores them in SQLite. Reports
//! alerts/s stored (from first publish to last commit), with the store's
//! bare insert rate as a baseline in the same run.
//!
//! `cargo bench -p picket-backend --bench ingest`
//! Env: PICKET_BENCH_DEVICES (50), PICKET_BENCH_BATCHES (per device, 40).
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stdout)]

#[path = "../tests/ingest_support/mod.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use picket_proto::topic::Channel;
use picket_store::Store as _;
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
    let devices = env("PICKET_BENCH_DEVICES", 50);
    let batches = env("PICKET_BENCH_BATCHES", 40);
    let per = 256u64;
    let total = devices * batches * per;

    // Baseline: the store alone, same alerts, same transaction size.
    let baseline = {
        let dir = tempfile::tempdir().unwrap();
        let store = picket_store::sqlite::SqliteStore::open(dir.path().join("b.db")).unwrap();
        let key = picket_proto::ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let id = picket_proto::DeviceId::from_public_key(&key.verifying_key());
        let frame = support::batch_for(id, &key, 0, 256);
        let opened = picket_proto::open_frame_owned(&frame, id, &key.verifying_key()).unwrap();
        let picket_proto::Message::AlertBatch(b) = opened.message().unwrap() else {
            unreachable!()
        };
        let one: Vec<_> = b
            .iter()
            .map(|a| picket_backend::ingest::to_new_alert(&a, &id.to_string(), 0))
            .collect();
        let n = 200_000u64;
        let mut chunk = Vec::with_capacity(8192);
        let t = Instant::now();
        let mut seq = 0u64;
        while seq < n {
            chunk.clear();
            for _ in 0..32 {
                for a in &one {
                    let mut a = a.clone();
                    seq += 1;
                    a.id = format!("{seq:032x}");
                    a.seq = seq;
                    chunk.push(a);
                }
            }
            store.insert_alerts(&chunk).await.unwrap();
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    println!("baseline: SqliteStore::insert_alerts alone, 8192/txn: {baseline:.0} alerts/s");

    let b = support::Backend::start(|_| {}).await;
    let addr = b.started.mqtt.unwrap();
    let mut devs = Vec::new();
    for i in 0..devices {
        devs.push(b.enroll(u8::try_from(i % 250).unwrap() + 1).await);
    }
    devs.dedup_by_key(|d| d.id);
    // Pre-sign every frame: the appliances' signing is not the backend's cost.
    let mut work = Vec::new();
    for (n, d) in devs.iter().enumerate() {
        let frames: Vec<Vec<u8>> = (0..batches)
            .map(|i| d.batch(1 + i * per + (n as u64) * 1_000_000_000, per as usize))
            .collect();
        let p = support::Publisher::connect(&format!("bench-{n}"), addr, Some(d.tls())).await;
        work.push((d.topic(Channel::Alerts), frames, p));
    }
    let frame_bytes: usize = work.iter().flat_map(|w| w.1.iter().map(Vec::len)).sum();
    let total = total.min(devs.len() as u64 * batches * per);
    let cpu0 = cpu_secs();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (topic, frames, p) in work {
        tasks.push(tokio::spawn(async move {
            for f in frames {
                p.publish(&topic, QoS::AtLeastOnce, f).await;
            }
            p
        }));
    }
    let mut pubs = Vec::new();
    for t in tasks {
        pubs.push(t.await.unwrap());
    }
    let m = b.metrics();
    let deadline = Instant::now() + Duration::from_secs(600);
    while m.alerts_stored.load(Ordering::Relaxed) < total {
        assert!(
            Instant::now() < deadline,
            "ingest stalled at {}",
            m.alerts_stored.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    println!(
        "durable ingest: {} appliances x {} batches x {per} alerts = {total} alerts \
         ({:.1} MiB of compressed frames) in {secs:.2} s: {:.0} alerts/s stored \
         ({} commits, process CPU {:.2} s = {:.0}% of 2 cores, publishers included)",
        devs.len(),
        batches,
        frame_bytes as f64 / 1048576.0,
        total as f64 / secs,
        m.commits.load(Ordering::Relaxed),
        cpu,
        cpu / secs / 2.0 * 100.0,
    );
    assert_eq!(m.refused_total(), 0);
    drop(pubs);
}

/// User + system CPU of this process, seconds.
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
