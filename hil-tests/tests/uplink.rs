//! picketd's alerts reach a real MQTT broker over mutual TLS: detection →
//! spool → uplink → Mosquitto → a subscriber that verifies each batch's
//! signature against the device's identity key.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

// The broker, PKI and verifying subscriber of picket-uplink's own tests.
#[allow(dead_code, reason = "only part of the shared harness is used here")]
#[path = "../../appliance/uplink/tests/it/common.rs"]
mod common;

use picket_hil_tests::{set, Options, Picketd};
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_alerts_reach_the_broker_signed_by_the_device() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let pki = common::Pki::generate(&dir.path().join("pki"));
    let broker = common::Broker::start(&pki, &dir.path().join("broker"), common::ServerCert::Fleet);
    // the identity picketd will find (and keep) at start
    std::fs::create_dir_all(dir.path().join("id")).unwrap();
    let identity = common::device_identity(&dir.path().join("id"));
    let subscriber =
        common::Subscriber::start(broker.plain_port, "hil-subscriber", &identity).await;

    let (port, pki_dir, id_dir, spool) = (
        broker.tls_port,
        pki.dir.clone(),
        dir.path().join("id"),
        dir.path().join("spool"),
    );
    let d = tokio::task::spawn_blocking(move || {
        Picketd::start(Options {
            edit: Box::new(move |c, _| {
                set(c, "uplink.enabled", true);
                set(c, "uplink.broker", format!("127.0.0.1:{port}"));
                set(
                    c,
                    "uplink.ca_file",
                    pki_dir.join("ca.pem").to_str().unwrap(),
                );
                set(
                    c,
                    "uplink.cert_file",
                    pki_dir.join("device.pem").to_str().unwrap(),
                );
                set(
                    c,
                    "uplink.key_file",
                    pki_dir.join("device.key").to_str().unwrap(),
                );
                set(
                    c,
                    "uplink.identity_file",
                    id_dir.join("device.key25519").to_str().unwrap(),
                );
                set(c, "uplink.spool_dir", spool.to_str().unwrap());
                set(c, "uplink.batch_delay_ms", 50);
            }),
            ..Options::default()
        })
    })
    .await
    .unwrap();
    assert!(
        d.log_text()
            .contains(&format!("as device {}", identity.device_id())),
        "{}",
        d.log_text()
    );

    // three alerts from harmless actions
    let closed = picket_hil_tests::free_port();
    for _ in 0..3 {
        Command::new("/bin/bash")
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{closed} || true"),
            ])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let local: std::collections::HashSet<String> = d
            .alerts()
            .iter()
            .filter_map(|a| a["alert_id"].as_str().map(str::to_owned))
            .collect();
        let remote: std::collections::HashSet<String> = subscriber
            .received
            .lock()
            .unwrap()
            .ids
            .iter()
            .map(|id| id.0.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        if local.len() >= 3 && local.is_subset(&remote) {
            let r = subscriber.received.lock().unwrap();
            assert_eq!(r.refused, 0, "every frame verified against the device key");
            assert!(r.frames >= 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alerts did not arrive: local {local:?}, remote {remote:?}\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = d.metrics();
    assert!(m.contains("picket_spool_depth"), "{m}");
    drop(d);
    drop(broker);
}
