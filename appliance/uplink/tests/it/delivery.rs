//! Test 1: the broker is down while 100,000 alerts are produced; when it is
//! back, all arrive, in per-device order, none twice after de-duplication.

use std::time::Duration;

use picket_uplink::sample;
use picket_uplink::{Spool, SpoolConfig};

use crate::common::{
    device_identity, uplink_config, wait_until_async, Broker, Pki, ServerCert, Subscriber,
};

const ALERTS: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_then_back_delivers_everything_in_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"));
    let identity = device_identity(dir.path());

    // The backend's persistent session exists before the outage, as it would
    // in production; then the broker goes down.
    let mut broker = Broker::start(&pki, &dir.path().join("broker"), ServerCert::Fleet);
    drop(Subscriber::start(broker.plain_port, "backend", &identity).await);
    broker.stop();

    let spool = Spool::open_with(SpoolConfig::new(dir.path().join("spool"), 1 << 30)).unwrap();
    let config = uplink_config(&pki, broker.tls_port, identity.clone());
    let uplink = picket_uplink::Uplink::new(config, spool.clone()).unwrap();
    let stats = uplink.stats_handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(uplink.run(async {
        let _ = stop_rx.await;
    }));

    // Detection goes on: 100,000 alerts while the broker is unreachable.
    let t0 = std::time::Instant::now();
    let producer = spool.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..ALERTS {
            let s = sample::process_alert(i, sample::id_for(1, i));
            let p = s.payload().unwrap();
            let pushed = producer.push(s.new_alert(&p)).unwrap();
            assert_eq!(pushed.seq, i + 1);
        }
        producer.flush().unwrap();
    })
    .await
    .unwrap();
    eprintln!("pushed {ALERTS} in {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    let snap = stats.snapshot();
    assert!(!snap.uplink.connected);
    assert!(snap.uplink.connection_errors_total > 0, "{snap:?}");
    assert_eq!(snap.spool.depth, ALERTS);

    broker.restart();
    let sub = Subscriber::start(broker.plain_port, "backend", &identity).await;
    wait_until_async("all alerts delivered", Duration::from_secs(120), || {
        sub.distinct() as u64 == ALERTS
    })
    .await;
    eprintln!("delivered in {:?}", t0.elapsed());
    wait_until_async("spool drained", Duration::from_secs(30), || {
        stats.snapshot().spool.depth == 0
    })
    .await;

    {
        let r = sub.received.lock().unwrap();
        let (first, dups) = r.dedup();
        let seqs: Vec<u64> = first.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=ALERTS).collect::<Vec<_>>(), "per-device order");
        for (seq, id) in &first {
            assert_eq!(*id, sample::id_for(1, seq - 1));
        }
        assert_eq!(r.refused, 0);
        assert!(r.compressed_frames > 0);
        let snap = stats.snapshot();
        eprintln!(
            "delivered {ALERTS} alerts in {} frames ({} duplicates), {} frame bytes, {:.1} B/alert",
            r.frames,
            dups,
            snap.uplink.frame_bytes_sent_total,
            snap.uplink.frame_bytes_sent_total as f64 / ALERTS as f64
        );
    }
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}

/// An alert that cannot fit the configured maximum packet size is dropped
/// (and counted) instead of blocking the queue; the others flow around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_over_the_packet_size_never_blocks_the_queue() {
    use picket_proto::{Alert, BoundedStr, Event, Field, Level};

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"));
    let identity = device_identity(dir.path());
    let broker = Broker::start(&pki, &dir.path().join("broker"), ServerCert::Fleet);
    let sub = Subscriber::start(broker.plain_port, "backend", &identity).await;
    let spool = Spool::open_with(SpoolConfig::new(dir.path().join("spool"), 1 << 24)).unwrap();

    let normal = |i: u64| {
        let s = sample::process_alert(i, sample::id_for(8, i));
        spool.push(s.new_alert(&s.payload().unwrap())).unwrap()
    };
    normal(0);
    // 16 fields of 1 KiB: more than a 16 KiB packet can carry.
    let value = "x".repeat(1024);
    let mut fields = picket_proto::heapless::Vec::new();
    for _ in 0..16 {
        fields
            .push(Field {
                key: BoundedStr::new("k").unwrap(),
                value: BoundedStr::new(&value).unwrap(),
            })
            .unwrap();
    }
    let big = Alert {
        id: sample::id_for(8, 1),
        seq: 0,
        timestamp_ms: 1,
        level: Level::High,
        rule_id: BoundedStr::new("big").unwrap(),
        rule_title: BoundedStr::new("big").unwrap(),
        techniques: picket_proto::heapless::Vec::new(),
        event: Event::Fields(fields),
    };
    assert_eq!(spool.push_alert(&big).unwrap().seq, 2);
    normal(2);
    spool.flush().unwrap();

    let mut config = uplink_config(&pki, broker.tls_port, identity);
    config.max_packet_bytes = 16 * 1024;
    config.compression = picket_uplink::Compression::None;
    let uplink = picket_uplink::Uplink::new(config, spool.clone()).unwrap();
    let stats = uplink.stats_handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(uplink.run(async {
        let _ = stop_rx.await;
    }));
    wait_until_async("the others delivered", Duration::from_secs(30), || {
        sub.distinct() == 2 && stats.snapshot().spool.depth == 0
    })
    .await;
    {
        let r = sub.received.lock().unwrap();
        let (first, _) = r.dedup();
        assert_eq!(first.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 3]);
    }
    assert_eq!(stats.snapshot().uplink.oversized_alerts_dropped_total, 1);
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}
