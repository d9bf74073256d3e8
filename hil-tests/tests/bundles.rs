//! A signed rule bundle reaches a real picketd over MQTT (Mosquitto with
//! mTLS; the test plays the backend: it publishes the retained announcement
//! and the chunks, signed with the command key the device pinned). picketd
//! verifies it against its root, swaps it in, acknowledges each state, and
//! after a restart with the broker down runs the persisted bundle.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

#[allow(dead_code, reason = "only part of the shared harness is used here")]
#[path = "../../appliance/uplink/tests/it/common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use picket_bundle::ed25519_dalek::SigningKey;
use picket_bundle::{Bundle, RootMetadata, Settings, SignedRoot, Target};
use picket_hil_tests::{append_failed_logins, auth_log_only, set, wait_for, Options, Picketd};
use picket_proto::topic::{self, Channel};
use picket_proto::{BundleAnnounce, BundleChunk, BundleState, Frame, Message};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sha2::Digest as _;

const RULE: &str = "title: Bundle rule - failed SSH login\n\
id: 5d1e7c1a-3b0f-4e6a-9c2d-7f4b8a1e2c01\nstatus: test\nauthor: Picket HIL tests\n\
logsource: {product: linux, service: sshd}\n\
detection:\n  sel: {Outcome: failure}\n  condition: sel\nlevel: medium\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_pushed_over_mqtt_is_activated_acknowledged_and_survives_a_restart() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let pki = common::Pki::generate(&dir.path().join("pki"));
    let mut broker =
        common::Broker::start(&pki, &dir.path().join("broker"), common::ServerCert::Fleet);
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let identity = common::device_identity(&site);
    let device = identity.device_id();

    // the fleet's keys: root, bundle signer, backend command key (pinned)
    let root_key = SigningKey::from_bytes(&[21; 32]);
    let bundle_key = SigningKey::from_bytes(&[22; 32]);
    let command = SigningKey::from_bytes(&[23; 32]);
    let mut root = SignedRoot::new(&RootMetadata {
        version: 1,
        expires_unix: 4_000_000_000,
        root_keys: vec![root_key.verifying_key()],
        root_threshold: 1,
        bundle_keys: vec![bundle_key.verifying_key()],
        bundle_threshold: 1,
        revoked: BTreeSet::new(),
    })
    .unwrap();
    root.sign(&root_key);
    std::fs::write(site.join("root.pbroot"), root.encode()).unwrap();
    let hex: String = command
        .verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(site.join("fleet-command.pub"), hex).unwrap();
    let log = site.join("auth.log");
    std::fs::write(&log, "").unwrap();

    let (port, pki_dir, s) = (broker.tls_port, pki.dir.clone(), site.clone());
    let options = move || {
        let (pki_dir, s) = (pki_dir.clone(), s.clone());
        Options {
            edit: Box::new(move |c, _| {
                auth_log_only(c, &s.join("auth.log"), None);
                set(c, "daemon.data_dir", s.to_str().unwrap());
                set(
                    c,
                    "detection.bundle_root",
                    s.join("root.pbroot").to_str().unwrap(),
                );
                set(c, "uplink.enabled", true);
                set(c, "uplink.broker", format!("127.0.0.1:{port}"));
                let p = |f: &str| pki_dir.join(f).to_str().unwrap().to_owned();
                set(c, "uplink.ca_file", p("ca.pem"));
                set(c, "uplink.cert_file", p("device.pem"));
                set(c, "uplink.key_file", p("device.key"));
                set(
                    c,
                    "uplink.identity_file",
                    s.join("device.key25519").to_str().unwrap(),
                );
                set(c, "uplink.spool_dir", s.join("spool").to_str().unwrap());
                set(c, "uplink.batch_delay_ms", 50);
            }),
            ..Options::default()
        }
    };

    // the backend: acks subscriber, then the bundle
    let mut o = MqttOptions::new("backend", "127.0.0.1", broker.plain_port);
    o.set_max_packet_size(262_144, 262_144);
    let (backend, mut events) = AsyncClient::new(o, 64);
    let acks_topic = topic::topic(device, Channel::Acks).to_string();
    backend
        .subscribe(acks_topic.as_str(), QoS::AtLeastOnce)
        .await
        .unwrap();
    let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = acks.clone();
    let key = identity.verifying_key();
    let poller = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == acks_topic => {
                    let f = Frame::decode_exact(&p.payload).unwrap();
                    if let Message::BundleAck(ack) = f.open_for(device, &key).unwrap() {
                        a.lock().unwrap().push((ack.version, ack.state));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });

    let opts = options.clone();
    let d = tokio::task::spawn_blocking(move || Picketd::start(opts()))
        .await
        .unwrap();
    // no rule for failed logins yet
    append_failed_logins(&log, ["before"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(d.alerts().is_empty(), "{:?}", d.alerts());

    let files: BTreeMap<String, Vec<u8>> =
        [("ssh.yml".to_owned(), RULE.as_bytes().to_vec())].into();
    let mut signed = Bundle::new(
        3,
        1_700_000_000,
        4_000_000_000,
        vec![Target::Device(device.to_string())],
        files,
        Settings::default(),
    )
    .seal()
    .unwrap();
    signed.sign(&bundle_key);
    let bytes = signed.encode();
    let chunk = 512;
    let frame = |m: &Message<'_>| picket_proto::encode_frame_to_vec(m, device, &command).unwrap();
    backend
        .publish(
            topic::topic(device, Channel::BundleAnnounce).as_str(),
            QoS::AtLeastOnce,
            true,
            frame(&Message::BundleAnnounce(BundleAnnounce {
                version: 3,
                sha256: sha2::Sha256::digest(&bytes).into(),
                total_len: bytes.len() as u64,
                chunk_len: chunk as u32,
                chunk_count: bytes.len().div_ceil(chunk) as u32,
            })),
        )
        .await
        .unwrap();
    for (i, c) in bytes.chunks(chunk).enumerate() {
        backend
            .publish(
                topic::topic(device, Channel::BundleChunks).as_str(),
                QoS::AtLeastOnce,
                false,
                frame(&Message::BundleChunk(BundleChunk {
                    version: 3,
                    index: i as u32,
                    data: picket_proto::BoundedBytes::new(c).unwrap(),
                })),
            )
            .await
            .unwrap();
    }
    common::wait_until_async("the bundle active", Duration::from_secs(20), || {
        acks.lock().unwrap().contains(&(3, BundleState::Active))
    })
    .await;
    let states: Vec<_> = acks.lock().unwrap().iter().map(|a| a.1).collect();
    assert_eq!(
        &states[..3],
        &[
            BundleState::Downloading,
            BundleState::Verified,
            BundleState::Active
        ]
    );
    append_failed_logins(&log, ["after"]);
    let alert = d.wait_alert("the bundle's rule fires", |a| {
        a["rule_title"] == "Bundle rule - failed SSH login"
    });
    assert_eq!(alert["author"], "Picket HIL tests");
    drop(d);

    // offline restart: the persisted bundle runs
    broker.stop();
    let opts = options.clone();
    let d = tokio::task::spawn_blocking(move || Picketd::start(opts()))
        .await
        .unwrap();
    assert!(
        d.log_text().contains("running the persisted rule bundle"),
        "{}",
        d.log_text()
    );
    append_failed_logins(&log, ["offline"]);
    wait_for(
        "the bundle's rule fires offline",
        Duration::from_secs(15),
        || {
            d.alerts()
                .iter()
                .any(|a| {
                    a["rule_title"] == "Bundle rule - failed SSH login"
                        && a["event"]["kind"]["account"] == "offline"
                })
                .then_some(())
        },
    );
    poller.abort();
}
