//! Benchmarks for issue 4, printing figures (not a criterion harness):
//!
//! 1. spool append and ack throughput with the documented flush policy;
//! 2. replay rate after an outage to a local Mosquitto over TLS;
//! 3. bytes on the wire per typical process alert, batched and compressed;
//! 4. RSS with 1,000,000 alerts spooled (in a child process of its own).
//!
//! `cargo bench -p picket-uplink --bench uplink` (needs `mosquitto` on the PATH).
//! `PICKET_BENCH_ALERTS` scales the replay and append runs (default 200,000);
//! `PICKET_BENCH_ONLY=spool,wire,replay,rss` picks phases.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark harness: it prints figures and fails loudly"
)]

#[path = "../tests/it/common.rs"]
#[allow(dead_code, reason = "shared with the integration tests")]
mod common;

use std::time::{Duration, Instant};

use picket_proto::ed25519_dalek::SigningKey;
use picket_proto::identity::DeviceIdentity;
use picket_uplink::uplink::codec::{encode_alert_batch, Compression};
use picket_uplink::uplink::own_rss_bytes;
use picket_uplink::{sample, FlushPolicy, Record, Spool, SpoolConfig};

use common::{device_identity, uplink_config, Broker, Pki, ServerCert, Subscriber};

fn main() {
    if std::env::var_os("PICKET_BENCH_RSS_CHILD").is_some() {
        rss_child();
        return;
    }
    let n: u64 = std::env::var("PICKET_BENCH_ALERTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    // PICKET_BENCH_ONLY=spool,wire,replay,rss picks phases (default all).
    let only = std::env::var("PICKET_BENCH_ONLY").unwrap_or_default();
    let run = |phase: &str| only.is_empty() || only.split(',').any(|p| p == phase);
    println!("picket-uplink benchmarks ({n} alerts where not stated)\n");
    if run("spool") {
        spool_throughput(n);
    }
    if run("wire") {
        wire_bytes();
    }
    if run("replay") {
        replay(n);
    }
    if run("rss") {
        rss();
    }
}

/// Pre-encoded payloads, so the figures are the spool's, not the generator's.
fn payloads(n: u64) -> Vec<(picket_uplink::sample::Sample, Vec<u8>)> {
    (0..n.min(4096))
        .map(|i| {
            let s = sample::process_alert(i, sample::id_for(9, i));
            let p = s.payload().unwrap();
            (s, p)
        })
        .collect()
}

fn push_all(spool: &Spool, n: u64, samples: &[(picket_uplink::sample::Sample, Vec<u8>)]) {
    for i in 0..n {
        let (s, p) = &samples[(i as usize) % samples.len()];
        let mut a = s.new_alert(p);
        a.id = sample::id_for(9, i);
        spool.push(a).unwrap();
    }
}

fn spool_throughput(n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let samples = payloads(n);
    let spool = Spool::open_with(SpoolConfig::new(dir.path().join("s"), 1 << 34)).unwrap();
    let t = Instant::now();
    push_all(&spool, n, &samples);
    let push = t.elapsed();
    let t = Instant::now();
    spool.flush().unwrap();
    let flush = t.elapsed();
    println!(
        "spool push, flush every 100 ms (default): {:>9.0} alerts/s  ({n} in {push:.2?}, final flush {flush:.2?})",
        n as f64 / push.as_secs_f64()
    );
    let t = Instant::now();
    let mut acked = 0u64;
    loop {
        let b = spool.take(256, usize::MAX).unwrap();
        if b.is_empty() {
            break;
        }
        acked += b.len() as u64;
        spool.ack(&b).unwrap();
    }
    spool.flush().unwrap();
    let ack = t.elapsed();
    assert_eq!(acked, n);
    println!(
        "spool take(256) + ack, then flush:        {:>9.0} alerts/s  ({acked} in {ack:.2?})",
        acked as f64 / ack.as_secs_f64()
    );
    drop(spool);

    let m = 2_000u64.min(n);
    let spool = Spool::open_with(
        SpoolConfig::new(dir.path().join("e"), 1 << 34).flush(FlushPolicy::EveryPush),
    )
    .unwrap();
    let t = Instant::now();
    push_all(&spool, m, &samples);
    let every = t.elapsed();
    println!(
        "spool push, FlushPolicy::EveryPush:       {:>9.0} alerts/s  ({m} in {every:.2?}; one fsync each)",
        m as f64 / every.as_secs_f64()
    );
    println!();
}

fn wire_bytes() {
    let id = DeviceIdentity::from_signing_key(SigningKey::from_bytes(&[5; 32]));
    let records: Vec<Record> = (0..256u64)
        .map(|i| {
            let s = sample::process_alert(i, sample::random_id());
            Record {
                seq: 1_000_000 + i,
                id: s.id,
                level: s.level,
                timestamp_ms: s.timestamp_ms,
                payload: s.payload().unwrap(),
            }
        })
        .collect();
    let topic_len =
        picket_proto::topic::topic(id.device_id(), picket_proto::topic::Channel::Alerts).len();
    // PUBLISH: fixed header (1 + up to 3 length bytes), topic (2 + len), packet id (2).
    let mqtt = 4 + 2 + topic_len + 2;
    // TLS 1.3 record: 5-byte header, 1-byte content type, 16-byte AEAD tag.
    let tls = 22;
    let raw: usize = records
        .iter()
        .map(|r| r.wire_len_bound() - 20)
        .sum::<usize>()
        / records.len();
    println!("bytes per typical process alert (random ids; uncompressed alert ~{raw} B):");
    for n in [1usize, 16, 64, 256] {
        let plain = encode_alert_batch(&records[..n], &id, Compression::None)
            .unwrap()
            .len();
        let packed = encode_alert_batch(&records[..n], &id, Compression::default())
            .unwrap()
            .len();
        let per = |frame: usize| {
            let tls_records = frame.div_ceil(16_384);
            (frame + mqtt + tls * tls_records) as f64 / n as f64
        };
        println!(
            "  batch of {n:>3}: frame {:>6.1} B/alert deflated ({:>6.1} plain); on the wire incl. MQTT+TLS {:>6.1} B/alert",
            packed as f64 / n as f64,
            plain as f64 / n as f64,
            per(packed)
        );
    }
    println!();
}

fn replay(n: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(&dir.path().join("pki"));
        let identity = device_identity(dir.path());
        let broker = Broker::start(&pki, &dir.path().join("broker"), ServerCert::Fleet);
        let sub = Subscriber::start(broker.plain_port, "backend", &identity).await;
        // The outage: n alerts spooled while no uplink runs.
        let spool = Spool::open_with(SpoolConfig::new(dir.path().join("spool"), 1 << 34)).unwrap();
        push_all(&spool, n, &payloads(n));
        spool.flush().unwrap();
        let config = uplink_config(&pki, broker.tls_port, identity);
        let uplink = picket_uplink::Uplink::new(config, spool.clone()).unwrap();
        let stats = uplink.stats_handle();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let t = Instant::now();
        let task = tokio::spawn(uplink.run(async {
            let _ = stop_rx.await;
        }));
        common::wait_until_async("replay", Duration::from_secs(600), || {
            stats.snapshot().spool.depth == 0
        })
        .await;
        let acked = t.elapsed();
        common::wait_until_async("subscriber", Duration::from_secs(600), || {
            sub.distinct() as u64 == n
        })
        .await;
        let received = t.elapsed();
        let snap = stats.snapshot();
        let _ = stop_tx.send(());
        task.await.unwrap().unwrap();
        println!(
            "replay after an outage, TLS to local mosquitto: {:>8.0} alerts/s acked by the broker ({n} in {acked:.2?}, incl. connect)",
            n as f64 / acked.as_secs_f64()
        );
        println!(
            "  ... and verified by a subscriber:             {:>8.0} alerts/s ({received:.2?})",
            n as f64 / received.as_secs_f64()
        );
        println!(
            "  frames {}, {:.1} frame bytes/alert (sample stream, deterministic ids)",
            snap.uplink.batches_sent_total,
            snap.uplink.frame_bytes_sent_total as f64 / n as f64
        );
        println!();
    });
}

fn rss() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("PICKET_BENCH_RSS_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_child() {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let samples = payloads(N);
    let base = own_rss_bytes();
    let path = dir.path().join("spool");
    let cache: u64 = std::env::var("PICKET_BENCH_CACHE_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8 << 20);
    let spool = Spool::open_with(SpoolConfig::new(&path, 1 << 34).cache_bytes(cache)).unwrap();
    let t = Instant::now();
    push_all(&spool, N, &samples);
    spool.flush().unwrap();
    let pushed = t.elapsed();
    let stats = spool.stats();
    println!(
        "RSS with {N} alerts spooled: {} MiB (process baseline {} MiB, peak {} MiB); pushed in {pushed:.2?}",
        own_rss_bytes() >> 20,
        base >> 20,
        status_kib("VmHWM:") >> 10
    );
    println!(
        "  logical spool bytes {} MiB, sled files {} MiB on disk",
        stats.bytes >> 20,
        spool.disk_bytes().unwrap() >> 20
    );
    drop(spool);
    let t = Instant::now();
    let spool = Spool::open_with(SpoolConfig::new(&path, 1 << 34).cache_bytes(cache)).unwrap();
    let opened = t.elapsed();
    assert_eq!(spool.stats().depth, N);
    println!(
        "  reopen (checks every record): {opened:.2?}; RSS after reopen {} MiB",
        own_rss_bytes() >> 20
    );
}
