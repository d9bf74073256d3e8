//! The quick start's path, end to end with real processes: a `picket-backend`
//! (embedded broker behind its mTLS front, SQLite), an admin and a token made
//! with its CLI, `picketd enroll` against its HTTP API, then picketd's alerts
//! and heartbeats over MQTT into the backend, read back through the REST API.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use picket_hil_tests::backend::Backend;
use picket_hil_tests::{set, wait_for, Options, Picketd};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

#[test]
fn appliance_alerts_reach_the_backend_api_after_enrollment() {
    picket_hil_tests::require_root();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let backend = Backend::start(dir.path());
    let bearer = backend.admin_session("admin", "correct horse battery");
    let token = backend.enrollment_token("hil");

    // the appliance's files live where [uplink] says
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let mqtt = backend.mqtt;
    let s = site.clone();
    let edit = move |c: &mut toml::Table, _: &Path| {
        set(c, "uplink.enabled", true);
        set(c, "uplink.broker", format!("127.0.0.1:{mqtt}"));
        let p = |f: &str| s.join(f).to_str().unwrap().to_owned();
        set(c, "uplink.ca_file", p("fleet-ca.pem"));
        set(c, "uplink.cert_file", p("device.pem"));
        set(c, "uplink.key_file", p("device.key"));
        set(c, "uplink.identity_file", p("device.key25519"));
        set(c, "uplink.spool_dir", p("spool"));
        set(c, "uplink.batch_delay_ms", 50);
        set(c, "uplink.heartbeat_interval_secs", 1);
        set(
            c,
            "detection.rules_dirs",
            toml::Value::Array(vec![concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../appliance/rules"
            )
            .into()]),
        );
    };
    let url = format!("http://127.0.0.1:{}", backend.http);

    // enroll: a refused token first (nothing written), then the real one
    let mut enroll = Picketd::start(Options {
        edit: Box::new(edit.clone()),
        expect_modules: 0,
        args: vec![
            "enroll".into(),
            "--url".into(),
            url.clone(),
            "--token".into(),
            "not-a-token".into(),
        ],
        ..Options::default()
    });
    assert!(!enroll.wait_exit().success());
    assert!(
        enroll.log_text().contains("InvalidToken"),
        "{}",
        enroll.log_text()
    );
    assert!(!site.join("device.pem").exists());
    let mut enroll = Picketd::start(Options {
        edit: Box::new(edit.clone()),
        expect_modules: 0,
        args: vec![
            "enroll".into(),
            "--url".into(),
            url,
            "--token".into(),
            token,
        ],
        ..Options::default()
    });
    assert!(enroll.wait_exit().success(), "{}", enroll.log_text());
    let mode = |f: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(site.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("device.key"), 0o600);
    assert!(site.join("device.pem").exists() && site.join("fleet-ca.pem").exists());

    // the demo recording's alerts, forwarded
    let recording = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../appliance/demo/attacks.jsonl"
    );
    let mut replay = Picketd::start(Options {
        edit: Box::new(edit.clone()),
        expect_modules: 0,
        args: vec!["replay".into(), "--forward".into(), recording.into()],
        ..Options::default()
    });
    let status = replay.wait_exit();
    let raised: Vec<Value> = replay.alerts();
    assert!(status.success(), "{}", replay.log_text());
    assert!(
        raised.len() >= 4,
        "the demo raises alerts: {}",
        raised.len()
    );

    // the analyst's view
    let alerts = wait_for("alerts in the backend", Duration::from_secs(20), || {
        let (st, body) = backend.request("GET", "/api/v1/alerts?limit=500", Some(&bearer), None);
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let a = v["alerts"].as_array().unwrap().clone();
        (a.len() == raised.len()).then_some(a)
    });
    let ids = |v: &[Value], key: &str| -> std::collections::BTreeSet<String> {
        v.iter()
            .map(|a| a[key].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&alerts, "id"),
        ids(&raised, "alert_id"),
        "exactly the alerts picketd raised"
    );
    for a in &alerts {
        assert!(
            a.to_string().contains("RuleAuthor") || a.to_string().contains("rule_author"),
            "the rule's author travels with every match: {a}"
        );
    }

    // a live picketd on the same identity: heartbeats keep the inventory
    let live = Picketd::start(Options {
        edit: Box::new(edit),
        ..Options::default()
    });
    let device = wait_for(
        "a heartbeat with module states",
        Duration::from_secs(20),
        || {
            let (_, body) = backend.request("GET", "/api/v1/devices", Some(&bearer), None);
            let v: Value = serde_json::from_str(&body).ok()?;
            let d = v
                .as_array()
                .or_else(|| v["devices"].as_array())?
                .first()?
                .clone();
            let modules = d["heartbeat"]["modules"].as_array()?;
            (modules
                .iter()
                .any(|m| m["name"] == "process" && m["state"] == "running"))
            .then_some(d)
        },
    );
    assert_eq!(device["online"], true, "{device}");
    drop(live);
    assert!(
        !backend.log_text().contains("panicked"),
        "{}",
        backend.log_text()
    );
}
