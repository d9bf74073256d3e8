//! Test 3: the disk budget is exceeded: eviction exactly as documented in
//! `picket_uplink::spool` (lowest level first, oldest first within a level; a
//! new alert never evicts a higher level, it is dropped itself instead),
//! counted per level, persistent, and reported in heartbeats.

use std::time::Duration;

use picket_proto::Level;
use picket_uplink::sample;
use picket_uplink::{NewAlert, Spool, SpoolConfig};

use crate::common::{
    device_identity, uplink_config, wait_until_async, Broker, Pki, ServerCert, Subscriber,
};

fn level(n: u8) -> Level {
    [
        Level::Informational,
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Critical,
    ][usize::from(n)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_follows_the_documented_order_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let payload = sample::process_alert(0, sample::id_for(5, 0))
        .payload()
        .unwrap();
    // Every record costs the same: key + value (docs: 9 + 45 + payload).
    let cost = 9 + 45 + payload.len() as u64;
    let spool = Spool::open_with(SpoolConfig::new(&path, 10 * cost)).unwrap();
    let push = |i: u64, l: u8| {
        spool
            .push(NewAlert {
                id: sample::id_for(5, i),
                level: level(l),
                timestamp_ms: 1_000 + i,
                payload: &payload,
            })
            .unwrap()
    };
    // Fill the budget exactly: seqs 1..=10.
    for (i, l) in [2u8, 0, 3, 1, 4, 0, 2, 1, 3, 4].into_iter().enumerate() {
        let p = push(i as u64, l);
        assert_eq!((p.seq, p.stored, p.evicted), (i as u64 + 1, true, 0));
    }
    // (level of the new alert, expected evicted count, stored?)
    let steps: [(u8, u64, bool); 6] = [
        (2, 1, true),  // seq 11 evicts the oldest level 0: seq 2
        (0, 1, true),  // seq 12 evicts the older level 0: seq 6
        (0, 1, true),  // seq 13 evicts seq 12 (oldest first within a level)
        (4, 1, true),  // seq 14 evicts seq 13, the last level 0
        (1, 1, true),  // seq 15 evicts the oldest level 1: seq 4
        (0, 0, false), // seq 16: only higher levels left, so it is dropped itself
    ];
    for (n, (l, evicted, stored)) in steps.into_iter().enumerate() {
        let p = push(10 + n as u64, l);
        assert_eq!(
            (p.seq, p.evicted, p.stored),
            (11 + n as u64, evicted, stored),
            "step {n}"
        );
    }
    let stats = spool.stats();
    assert_eq!(stats.evictions_by_level, [5, 1, 0, 0, 0]);
    assert_eq!(stats.evictions_total(), 6);
    assert_eq!(stats.depth, 10);
    assert!(stats.bytes <= 10 * cost);
    let survivors: Vec<u64> = vec![1, 3, 5, 7, 8, 9, 10, 11, 14, 15];

    // Counters survive a restart.
    drop(spool);
    let spool = Spool::open_with(SpoolConfig::new(&path, 10 * cost)).unwrap();
    assert_eq!(spool.stats().evictions_by_level, [5, 1, 0, 0, 0]);
    assert_eq!(spool.stats().next_seq, 17);

    // The survivors reach the backend with gaps where evictions happened, and
    // the heartbeat carries the eviction total.
    let pki = Pki::generate(&dir.path().join("pki"));
    let identity = device_identity(dir.path());
    let broker = Broker::start(&pki, &dir.path().join("broker"), ServerCert::Fleet);
    let sub = Subscriber::start(broker.plain_port, "backend", &identity).await;
    let mut config = uplink_config(&pki, broker.tls_port, identity);
    config.heartbeat_interval = Duration::from_millis(100);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(picket_uplink::run(config, spool.clone(), async {
        let _ = stop_rx.await;
    }));
    wait_until_async("survivors delivered", Duration::from_secs(30), || {
        sub.distinct() == survivors.len()
    })
    .await;
    wait_until_async(
        "a heartbeat after delivery",
        Duration::from_secs(30),
        || {
            sub.received
                .lock()
                .unwrap()
                .heartbeats
                .iter()
                .any(|&(_, depth, evictions)| depth == 0 && evictions == 6)
        },
    )
    .await;
    {
        let r = sub.received.lock().unwrap();
        let (first, _) = r.dedup();
        assert_eq!(first.iter().map(|(s, _)| *s).collect::<Vec<_>>(), survivors);
        assert!(r.heartbeats.iter().all(|&(_, _, evictions)| evictions == 6));
    }
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}
