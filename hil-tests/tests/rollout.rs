//! Rule bundles end to end with real processes: `picketctl` makes the keys
//! and the root, builds, signs and pushes bundles to a real `picket-backend`
//! (embedded broker, SQLite), which rolls them out over MQTT to a real,
//! enrolled `picketd`. The device activates a good bundle, refuses a broken
//! one (the backend's rollout pauses and the old rules keep detecting), and
//! after being offline across three pushes downloads only the newest.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use picket_hil_tests::backend::{enroll, enrolled_uplink, Backend};
use picket_hil_tests::picketctl::{failed_login_rule as rule, Ops};
use picket_hil_tests::{append_failed_logins, auth_log_only, set, wait_for, Options, Picketd};
use serde_json::Value;

/// Builds and signs bundle `version` with one rule titled `title`.
fn bundle(fleet: &Ops, version: u64, title: &str) -> String {
    let yaml = rule(title, &format!("3b0c8e52-7a61-4c2e-9f00-{version:012}"));
    fleet.bundle(version, &[("login.yml", &yaml)])
}

#[test]
fn bundles_pushed_with_picketctl_reach_a_real_picketd_through_the_backend() {
    picket_hil_tests::require_root();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let backend = Backend::start(dir.path());
    let bearer = backend.admin_session("admin", "correct horse battery");
    let enroll_token = backend.enrollment_token("hil");
    let ops = dir.path().join("ops");
    let fleet = Ops::new(&ops, &backend.url(), &bearer, None);

    // keys and the root (the backend and the device each get a copy)
    let root = fleet.init_root();
    std::fs::copy(&root, dir.path().join("data/bundle-root.pbroot")).unwrap();

    // the appliance: enrolled, auth log only, the root pinned
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::copy(&root, site.join("root.pbroot")).unwrap();
    let log = site.join("auth.log");
    std::fs::write(&log, "").unwrap();
    let rules_dir = site.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(
        rules_dir.join("login.yml"),
        rule("dir rule", "3b0c8e52-7a61-4c2e-9f00-999999999999"),
    )
    .unwrap();
    let (broker, s, l, r) = (
        backend.broker(),
        site.clone(),
        log.clone(),
        rules_dir.clone(),
    );
    let edit = move |c: &mut toml::Table, _: &Path| {
        auth_log_only(c, &l, Some(&r));
        enrolled_uplink(c, &s, &broker);
        let p = |f: &str| s.join(f).to_str().unwrap().to_owned();
        set(c, "daemon.data_dir", p(""));
        set(c, "detection.bundle_root", p("root.pbroot"));
    };
    enroll(edit.clone(), &fleet.url, &enroll_token, None);
    let options = || Options {
        edit: Box::new(edit.clone()),
        ..Options::default()
    };
    let mut d = Picketd::start(options());
    let device = backend.devices(&bearer)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let alerts_titled = |title: &str| -> usize {
        let (_, body) = backend.request("GET", "/api/v1/alerts?limit=500", Some(&bearer), None);
        let v: Value = serde_json::from_str(&body).unwrap();
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rule_title"] == title)
            .count()
    };

    // 1. a good bundle: pushed, announced, downloaded, verified, active
    let b1 = bundle(&fleet, 1, "bundle one");
    let started = Instant::now();
    let pushed = fleet.push(&b1, &["--stages", "100", "--min-finished", "1"]);
    assert_eq!(pushed["bundle"]["version"], 1);
    assert_eq!(pushed["rollout"]["state"], "running");
    let status = wait_for("bundle 1 active", Duration::from_secs(60), || {
        let s = fleet.status();
        (s["states"]["active"] == 1).then_some(s)
    });
    let push_to_active = started.elapsed();
    assert_eq!(status["rollout"]["version"], 1);
    wait_for("rollout 1 completed", Duration::from_secs(30), || {
        (fleet.status()["rollout"]["state"] == "completed").then_some(())
    });
    append_failed_logins(&log, ["alice"]);
    wait_for(
        "an alert of bundle 1's rule",
        Duration::from_secs(30),
        || (alerts_titled("bundle one") == 1).then_some(()),
    );
    assert_eq!(
        alerts_titled("dir rule"),
        0,
        "the bundle replaced the rules_dirs rules"
    );

    // 2. `bundle build` refuses a broken rule; pushed anyway (sealed by
    //    hand, signed by the bundle key) the device refuses it
    let broken_dir = ops.join("broken");
    std::fs::create_dir_all(&broken_dir).unwrap();
    std::fs::write(
        broken_dir.join("bad.yml"),
        "title: broken\nlogsource: {product: linux}\ndetection:\n  sel: {a|nosuchmodifier: x}\n  condition: sel\n",
    )
    .unwrap();
    let (success, _, stderr) = fleet.run(&[
        "bundle",
        "build",
        "--rules",
        broken_dir.to_str().unwrap(),
        "--version",
        "2",
        "--expires-days",
        "30",
        "--out",
        &fleet.p("b2.pbundle"),
    ]);
    assert!(!success);
    assert!(stderr.contains("bad.yml"), "{stderr}");
    let key = picket_bundle::keys::read_secret_key(&ops.join("bundle.key")).unwrap();
    let now = picket_bundle_now();
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "bad.yml".to_owned(),
        std::fs::read(broken_dir.join("bad.yml")).unwrap(),
    );
    let mut sealed = picket_bundle::Bundle::new(
        2,
        now,
        now + 86_400,
        vec![picket_bundle::Target::All],
        files,
        picket_bundle::Settings::default(),
    )
    .seal()
    .unwrap();
    sealed.sign(&key);
    std::fs::write(ops.join("b2.pbundle"), sealed.encode()).unwrap();
    fleet.push(&fleet.p("b2.pbundle"), &["--min-finished", "1"]);
    let status = wait_for(
        "the rollout of bundle 2 to pause",
        Duration::from_secs(60),
        || {
            let s = fleet.status();
            (s["rollout"]["state"] == "paused").then_some(s)
        },
    );
    let error = status["failures"][0]["error"].as_str().unwrap();
    assert!(error.contains("bad.yml"), "{error}");
    assert!(status["rollout"]["status"]["reason"]
        .as_str()
        .unwrap()
        .contains("failed"));
    append_failed_logins(&log, ["bob"]);
    wait_for(
        "the old rules still detect",
        Duration::from_secs(30),
        || (alerts_titled("bundle one") == 2).then_some(()),
    );

    // 3. offline across three pushes: only the newest arrives
    d.stop();
    let stopped_at = Instant::now();
    for (v, title) in [(3, "bundle three"), (4, "bundle four"), (5, "bundle five")] {
        let b = bundle(&fleet, v, title);
        fleet.push(&b, &["--min-finished", "1"]);
    }
    let _d = Picketd::start(options());
    wait_for("bundle 5 active", Duration::from_secs(60), || {
        let s = fleet.status();
        (s["rollout"]["version"] == 5 && s["states"]["active"] == 1).then_some(())
    });
    let (_, body) = backend.request(
        "GET",
        &format!("/api/v1/devices/{device}/bundles"),
        Some(&bearer),
        None,
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let versions: BTreeSet<u64> = v["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        BTreeSet::from([1, 2, 5]),
        "the device never heard of 3 and 4: {v}"
    );
    assert_eq!(v["assignment"]["version"], 5);
    append_failed_logins(&log, ["carol"]);
    wait_for(
        "an alert of bundle 5's rule",
        Duration::from_secs(30),
        || (alerts_titled("bundle five") == 1).then_some(()),
    );
    // 4. roll back to bundle 1's rules: re-sealed as version 6
    let id = fleet.status()["rollout"]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let out = fleet.ok(&[
        "rollout",
        "rollback",
        &id,
        "--to",
        "1",
        "--key",
        &fleet.p("bundle.key"),
        "--url",
        &fleet.url,
        "--token-file",
        fleet.token.to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["bundle"]["version"], 6, "{v}");
    assert_eq!(v["content_of"], 1);
    wait_for("bundle 6 active", Duration::from_secs(60), || {
        let s = fleet.status();
        (s["rollout"]["version"] == 6 && s["states"]["active"] == 1).then_some(())
    });
    append_failed_logins(&log, ["dave"]);
    wait_for(
        "bundle one's rule detects again",
        Duration::from_secs(30),
        || (alerts_titled("bundle one") == 3).then_some(()),
    );
    println!(
        "push → active on one real picketd: {} ms; restart → bundle 5 active: {} ms",
        push_to_active.as_millis(),
        stopped_at.elapsed().as_millis()
    );
}

fn picket_bundle_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
