//! Ingest end to end: an in-process backend (embedded rumqttd behind the
//! mTLS front, SQLite in a temp dir), devices enrolled through the real
//! Enroller, and rumqttc publishers speaking MQTT over mTLS.
#![allow(clippy::unwrap_used, clippy::panic)]

mod ingest_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use ingest_support::{alert_count, batch_for, wait_for, wait_for_async, Backend};
use picket_api::{Fleet as _, LiveEvent};
use picket_backend::ingest::Refusal;
use picket_proto::ed25519_dalek::SigningKey;
use picket_proto::topic::Channel;
use picket_store::model::AlertFilter;
use rumqttc::QoS;

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_batch_is_stored_converted_and_broadcast() {
    let b = Backend::start(|_| {}).await;
    let mut live = b.started.live.subscribe();
    let dev = b.enroll(1).await;
    let p = dev.connect(b.started.mqtt.unwrap()).await;
    p.publish(
        &dev.topic(Channel::Alerts),
        QoS::AtLeastOnce,
        dev.batch(1, 10),
    )
    .await;
    wait_for("10 alerts stored", T, || {
        b.metrics().alerts_stored.load(Ordering::Relaxed) == 10
    })
    .await;
    assert_eq!(alert_count(&b.started).await, 10);
    wait_for("puback after commit", T, || {
        p.acked.load(Ordering::Relaxed) == 1
    })
    .await;

    let page = b
        .started
        .store
        .alerts(
            &AlertFilter {
                device_id: Some(dev.id.to_string()),
                ..AlertFilter::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(page.alerts.len(), 10);
    let a = &page.alerts[0].alert;
    assert_eq!(a.rule_title, "Download piped to shell");
    assert_eq!(a.techniques, vec!["T1059.004".to_owned()]);
    assert_eq!(a.image.as_deref(), Some("/bin/sh"));
    assert!(a.command_line.as_deref().unwrap().contains("curl"));
    assert_eq!(a.event["rule_author"], "Picket tests");
    assert_eq!(a.event["extra"]["rule_author"], "Picket tests");
    assert_eq!(a.event["parent_image"], "/usr/sbin/sshd");

    let mut alerts = 0;
    let deadline = tokio::time::Instant::now() + T;
    while alerts < 10 {
        match tokio::time::timeout_at(deadline, live.recv()).await {
            Ok(Ok(LiveEvent::Alert(_))) => alerts += 1,
            Ok(Ok(_)) => {}
            other => panic!("live stream: {other:?}"),
        }
    }
    // The device came online with its first batch.
    assert!(b.started.fleet.registry().is_online(dev.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_is_refused() {
    let b = Backend::start(|_| {}).await;
    let a = b.enroll(2).await;
    let victim = b.enroll(3).await;
    let p = a.connect(b.started.mqtt.unwrap()).await;
    let m = b.metrics();

    // A's own frame on B's topic: the frame names A, the topic B.
    p.publish(
        &victim.topic(Channel::Alerts),
        QoS::AtLeastOnce,
        a.batch(1, 5),
    )
    .await;
    wait_for("device mismatch", T, || {
        m.refused(Refusal::DeviceMismatch) == 1
    })
    .await;

    // A frame claiming B, signed with A's key, on B's topic.
    let forged = batch_for(victim.id, &a.key, 1, 5);
    p.publish(&victim.topic(Channel::Alerts), QoS::AtLeastOnce, forged)
        .await;
    wait_for("bad signature", T, || m.refused(Refusal::BadSignature) == 1).await;

    // A's frame signed with some other key.
    let stray = SigningKey::from_bytes(&[99; 32]);
    p.publish(
        &a.topic(Channel::Alerts),
        QoS::AtLeastOnce,
        batch_for(a.id, &stray, 1, 5),
    )
    .await;
    wait_for("bad signature 2", T, || {
        m.refused(Refusal::BadSignature) == 2
    })
    .await;

    // A device nobody enrolled.
    let ghost = SigningKey::from_bytes(&[77; 32]);
    let ghost_id = picket_proto::DeviceId::from_public_key(&ghost.verifying_key());
    p.publish(
        &picket_proto::topic::topic(ghost_id, Channel::Alerts),
        QoS::AtLeastOnce,
        batch_for(ghost_id, &ghost, 1, 5),
    )
    .await;
    wait_for("unknown device", T, || {
        m.refused(Refusal::UnknownDevice) == 1
    })
    .await;

    // Every refused QoS 1 publish is still acknowledged (nothing stalls).
    wait_for("acks", T, || p.acked.load(Ordering::Relaxed) == 4).await;
    assert_eq!(alert_count(&b.started).await, 0);
    assert_eq!(m.alerts_stored.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_batch_is_deduplicated() {
    let b = Backend::start(|_| {}).await;
    let dev = b.enroll(4).await;
    let p = dev.connect(b.started.mqtt.unwrap()).await;
    let batch = dev.batch(100, 20);
    for _ in 0..3 {
        p.publish(&dev.topic(Channel::Alerts), QoS::AtLeastOnce, batch.clone())
            .await;
    }
    wait_for("3 acks", T, || p.acked.load(Ordering::Relaxed) == 3).await;
    let m = b.metrics();
    wait_for("duplicates counted", T, || {
        m.alerts_duplicate.load(Ordering::Relaxed) == 40
    })
    .await;
    // Duplicates are spotted before the commit; the commit may still run.
    wait_for("20 stored", T, || {
        m.alerts_stored.load(Ordering::Relaxed) == 20
    })
    .await;
    assert_eq!(alert_count(&b.started).await, 20);
    assert_eq!(m.alerts_duplicate.load(Ordering::Relaxed), 40);
    assert_eq!(m.refused_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_are_refused_while_good_ones_flow() {
    let b = Backend::start(|_| {}).await;
    let dev = b.enroll(5).await;
    let p = dev.connect(b.started.mqtt.unwrap()).await;
    let m = b.metrics();
    let topic = dev.topic(Channel::Alerts);

    p.publish(&topic, QoS::AtLeastOnce, b"hello, broker".to_vec())
        .await;
    let mut truncated = dev.batch(1, 5);
    truncated.truncate(truncated.len() - 10);
    p.publish(&topic, QoS::AtLeastOnce, truncated).await;
    p.publish(
        &topic,
        QoS::AtLeastOnce,
        vec![0u8; picket_proto::MAX_FRAME_LEN + 100],
    )
    .await;
    // A heartbeat on the alerts topic.
    p.publish(&topic, QoS::AtLeastOnce, dev.heartbeat(1)).await;
    // Not a topic ingest knows.
    p.publish(
        &format!("picket/v1/devices/{}/bogus", dev.id),
        QoS::AtLeastOnce,
        dev.batch(1, 1),
    )
    .await;
    p.publish(&topic, QoS::AtLeastOnce, dev.batch(10, 7)).await;

    wait_for("good batch stored", T, || {
        m.alerts_stored.load(Ordering::Relaxed) == 7
    })
    .await;
    wait_for("refusals counted", T, || {
        m.refused(Refusal::Malformed) == 2
            && m.refused(Refusal::Oversized) == 1
            && m.refused(Refusal::WrongKind) == 1
    })
    .await;
    assert_eq!(alert_count(&b.started).await, 7);
    let text = b.started.fleet.metrics();
    assert!(
        text.contains("picket_ingest_refused_total{reason=\"oversized\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("picket_ingest_alerts_stored_total 7"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_device_is_dropped_and_refused() {
    let b = Backend::start(|_| {}).await;
    let bad = b.enroll(6).await;
    let good = b.enroll(7).await;
    let addr = b.started.mqtt.unwrap();
    let pb = bad.connect(addr).await;
    let pg = good.connect(addr).await;
    pb.publish(
        &bad.topic(Channel::Alerts),
        QoS::AtLeastOnce,
        bad.batch(1, 3),
    )
    .await;
    wait_for("first batch", T, || {
        b.metrics().alerts_stored.load(Ordering::Relaxed) == 3
    })
    .await;

    let d = b
        .started
        .fleet
        .revoke(&bad.id.to_string(), "tester")
        .await
        .unwrap();
    assert!(d.revoked_ms.is_some());
    // Its live connection is dropped and it cannot come back.
    wait_for("revoked connection dropped", T, || {
        pb.errors.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert_eq!(pb.connected.load(Ordering::Relaxed), 1);
    assert!(std::fs::read_to_string(b.dir.path().join("crl.pem"))
        .unwrap()
        .contains("BEGIN X509 CRL"));

    // Its signed payloads are refused even when another connection carries them.
    pg.publish(
        &bad.topic(Channel::Alerts),
        QoS::AtLeastOnce,
        bad.batch(10, 3),
    )
    .await;
    wait_for("revoked refused", T, || {
        b.metrics().refused(Refusal::Revoked) == 1
    })
    .await;
    assert_eq!(alert_count(&b.started).await, 3);
    let audit = b
        .started
        .store
        .audit_log(&picket_store::model::AuditFilter::default(), 10)
        .await
        .unwrap();
    assert!(audit.iter().any(|e| e.action == "device.revoke"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_updates_inventory_then_device_goes_offline() {
    let b = Backend::start(|c| {
        c.ingest.offline_after = Duration::from_millis(800);
    })
    .await;
    let mut live = b.started.live.subscribe();
    let dev = b.enroll(8).await;
    let p = dev.connect(b.started.mqtt.unwrap()).await;
    p.publish(
        &dev.topic(Channel::Heartbeat),
        QoS::AtMostOnce,
        dev.heartbeat(5),
    )
    .await;
    let store = b.started.store.clone();
    let id = dev.id.to_string();
    wait_for_async("heartbeat stored", T, || {
        let store = store.clone();
        let id = id.clone();
        async move {
            store
                .device(&id)
                .await
                .unwrap()
                .and_then(|d| d.heartbeat)
                .is_some_and(|h| h.seq == 5 && h.spool_depth == 7)
        }
    })
    .await;
    let d = store.device(&id).await.unwrap().unwrap();
    assert!(d.last_seen_ms.is_some());

    let mut changes = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    while !changes.contains(&"offline") {
        match tokio::time::timeout_at(deadline, live.recv()).await {
            Ok(Ok(LiveEvent::Device { change, device, .. })) if device.id == id => {
                changes.push(change);
            }
            Ok(Ok(_)) => {}
            other => panic!("live stream ended: {other:?}, changes so far {changes:?}"),
        }
    }
    assert!(changes.contains(&"online"), "{changes:?}");
    assert!(!b.started.fleet.registry().is_online(dev.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_heartbeats_are_refused_and_change_nothing() {
    let b = Backend::start(|_| {}).await;
    let dev = b.enroll(9).await;
    let p = dev.connect(b.started.mqtt.unwrap()).await;
    let m = b.metrics();
    let topic = dev.topic(Channel::Heartbeat);
    let store = b.started.store.clone();
    let id = dev.id.to_string();
    let stored = |n: u64| move || m.heartbeats_stored.load(Ordering::Relaxed) == n;
    let replayed = |n: u64| move || m.refused(Refusal::Replayed) == n;

    let hb5 = dev.heartbeat(5);
    p.publish(&topic, QoS::AtMostOnce, hb5.clone()).await;
    wait_for("first heartbeat stored", T, stored(1)).await;
    let after_first = store.device(&id).await.unwrap().unwrap();
    assert_eq!(after_first.heartbeat.as_ref().map(|h| h.seq), Some(5));

    // The same frame again, then an older one of the same run: refused,
    // and the inventory (heartbeat, last seen) stays as it was.
    p.publish(&topic, QoS::AtMostOnce, hb5.clone()).await;
    wait_for("exact replay refused", T, replayed(1)).await;
    p.publish(&topic, QoS::AtMostOnce, dev.heartbeat(3)).await;
    wait_for("older heartbeat refused", T, replayed(2)).await;
    assert_eq!(store.device(&id).await.unwrap().unwrap(), after_first);

    // The next one of the run is stored.
    p.publish(&topic, QoS::AtMostOnce, dev.heartbeat(6)).await;
    wait_for("newer heartbeat stored", T, stored(2)).await;
    let hb = store.device(&id).await.unwrap().unwrap().heartbeat.unwrap();
    assert_eq!((hb.seq, hb.uptime_secs), (6, 66));

    // The agent restarts: seq and uptime start again, its clock is later.
    let restart = ingest_support::heartbeat_frame_at(dev.id, &dev.key, 1, 1_700_000_600_000, 2);
    p.publish(&topic, QoS::AtMostOnce, restart).await;
    wait_for("restarted agent's heartbeat stored", T, stored(3)).await;
    let after_restart = store.device(&id).await.unwrap().unwrap();
    assert_eq!(after_restart.heartbeat.as_ref().map(|h| h.seq), Some(1));

    // A heartbeat of the earlier run, replayed now: higher seq and uptime
    // than the new run's, but its uptime ran ahead of the backend's clock
    // and its device time is older. Refused.
    p.publish(&topic, QoS::AtMostOnce, hb5).await;
    wait_for("earlier run's heartbeat refused", T, replayed(3)).await;
    assert_eq!(store.device(&id).await.unwrap().unwrap(), after_restart);
    assert_eq!(m.heartbeats_stored.load(Ordering::Relaxed), 3);
    assert_eq!(m.refused_total(), 3);
    let text = b.started.fleet.metrics();
    assert!(
        text.contains("picket_ingest_refused_total{reason=\"replayed\"} 3"),
        "{text}"
    );
}

#[test]
fn generate_config_output_parses() {
    let c = picket_backend::config::Config::from_toml(
        picket_backend::config::DEFAULT_CONFIG,
        "default",
    )
    .unwrap();
    assert!(matches!(
        c.mqtt,
        picket_backend::config::MqttConfig::Embedded(_)
    ));
}
