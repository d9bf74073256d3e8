//! Several sites, one headquarters, real network namespaces: a
//! `picket-backend` in an "hq" namespace and three `picketd` processes, each
//! in its own site namespace, joined by a bridge in hq (10.77.0.0/24,
//! nothing else reachable). Each site enrolls over the LAN and streams
//! alerts; one site's link is cut while all keep detecting; when it
//! returns, every alert of every site is in the backend exactly once.
//!
//! While the site is cut off, an operator pushes a signed rule bundle with
//! `picketctl` (in hq) and rolls it out to every site: the two connected
//! sites activate it at once, the cut one when its link returns (the cut
//! outlasts the MQTT keep-alive, so it reconnects and gets the retained
//! announcement, docs/BUNDLES.md §9), and then every site detects with the
//! bundle's rule.
//!
//! Each site's only source is its own auth log (kernel modules off), so the
//! alerts of a site are exactly the failed logins the test writes there,
//! whatever else runs on the host.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use picket_hil_tests::backend::{device_id, enroll, enrolled_uplink, Backend, BackendOptions};
use picket_hil_tests::netns::{Lan, NetNs};
use picket_hil_tests::picketctl::{failed_login_rule, Ops};
use picket_hil_tests::{
    append_failed_logins, auth_log_only, require_root, set, wait_for, Options, Picketd,
    FAILED_LOGIN_RULE,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Inside a fresh namespace every port is free: fixed ports are safe.
const HTTP: u16 = 8080;
const MQTT: u16 = 8883;
/// The sites' `uplink.keep_alive_secs` (the least picketd accepts): a site
/// notices a dead link within two of these, the broker drops a silent
/// device after one and a half.
const KEEP_ALIVE_SECS: u64 = 5;
/// The title of the rule the sites start with (`rules_dirs`).
const DIR_RULE: &str = "HIL failed SSH login";
/// The title of the bundle's rule.
const BUNDLE_RULE: &str = "HIL bundle rule, failed SSH login";

/// One site's files and its running daemon.
struct Site {
    name: String,
    auth_log: PathBuf,
    written: u64,
    device_id: String,
    daemon: Picketd,
}

impl Site {
    /// Enrolls a site in `ns` with the backend and starts its daemon, which
    /// trusts bundles signed under `root`.
    fn start(
        ns: &NetNs,
        name: &str,
        dir: &Path,
        backend: &Backend,
        token: &str,
        root: &Path,
    ) -> Site {
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("ssh_failed.yml"), FAILED_LOGIN_RULE).unwrap();
        std::fs::copy(root, dir.join("root.pbroot")).unwrap();
        let auth_log = dir.join("auth.log");
        std::fs::write(&auth_log, "").unwrap();
        let (d, log, broker) = (dir.to_owned(), auth_log.clone(), backend.broker());
        let edit = move |c: &mut toml::Table, _: &Path| {
            auth_log_only(c, &log, Some(&d.join("rules")));
            enrolled_uplink(c, &d, &broker);
            set(
                c,
                "uplink.keep_alive_secs",
                i64::try_from(KEEP_ALIVE_SECS).unwrap(),
            );
            set(
                c,
                "detection.bundle_root",
                d.join("root.pbroot").to_str().unwrap(),
            );
        };
        let (url, token, host) = (backend.url(), token.to_owned(), name.to_owned());
        let e = edit.clone();
        ns.run(move || enroll(e, &url, &token, Some(&host)));
        let daemon = ns.run(move || {
            Picketd::start(Options {
                edit: Box::new(edit),
                ..Options::default()
            })
        });
        let device_id = device_id(&daemon);
        Site {
            name: name.to_owned(),
            auth_log,
            written: 0,
            device_id,
            daemon,
        }
    }

    /// Appends `n` failed logins (users `{site}-u{k}`) to the site's log.
    fn failed_logins(&mut self, n: u64) {
        let name = &self.name;
        append_failed_logins(
            &self.auth_log,
            (self.written..self.written + n).map(|k| format!("{name}-u{k}")),
        );
        self.written += n;
    }

    /// A metric, read on the loopback of the site's namespace.
    fn metric(&self, ns: &NetNs, name: &str) -> f64 {
        ns.run(|| self.daemon.metric(name, ""))
    }

    /// How many lines of the daemon's log have this message.
    fn logged(&self, message: &str) -> usize {
        self.daemon
            .log_lines()
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .count()
    }

    /// The alert ids in the site's alerts file.
    fn local_ids(&self) -> BTreeSet<String> {
        self.daemon
            .alerts()
            .iter()
            .map(|a| a["alert_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// The backend's alerts of one device: all ids (duplicates kept), read in
/// pages of 97 so the cursor is exercised at odd boundaries.
fn remote_ids(backend: &Backend, bearer: &str, device: &str) -> Vec<String> {
    backend
        .all_alerts(bearer, &format!("device={device}"), 97)
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The backend's alerts of one device, counted by rule title.
fn titles(backend: &Backend, bearer: &str, device: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for a in backend.all_alerts(bearer, &format!("device={device}"), 500) {
        *out.entry(a["rule_title"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    out
}

/// The state `device` reported for bundle `version` (`"active"`, ...).
fn bundle_state(backend: &Backend, bearer: &str, device: &str, version: u64) -> Option<String> {
    let v: Value = backend.device_bundles(bearer, device);
    v["states"]
        .as_array()?
        .iter()
        .find(|s| s["version"] == version)
        .and_then(|s| s["state"].as_str())
        .map(str::to_owned)
}

fn online(backend: &Backend, bearer: &str, device: &str) -> Option<bool> {
    backend
        .devices(bearer)
        .iter()
        .find(|d| d["id"] == device)
        .and_then(|d| d["online"].as_bool())
}

#[test]
fn three_sites_one_cut_off_every_alert_arrives_once_and_the_bundle_on_return() {
    const FIRST: u64 = 40;
    const OFFLINE: u64 = 300;
    const LAST: u64 = 40;
    const CUT: usize = 1;
    require_root();
    let started = Instant::now();
    let lan = Lan::new(&["a", "b", "c"]);
    let dir = tempfile::Builder::new()
        .prefix("picket-sites-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::create_dir_all(dir.path().join("hq")).unwrap();
    let backend = Backend::start_with(
        &dir.path().join("hq"),
        BackendOptions {
            ip: Lan::HQ.into(),
            http: HTTP,
            mqtt: MQTT,
            hostnames: vec![Lan::HQ.to_string()],
            netns: Some(lan.hq.name().to_owned()),
            offline_after_secs: 5,
        },
    );
    // a site reaches hq and nothing beyond the LAN (no default route)
    assert!(lan.reaches_hq(0, HTTP));
    assert!(lan.sites[0].run(|| std::net::TcpStream::connect_timeout(
        &(std::net::Ipv4Addr::new(192, 0, 2, 1), 80).into(),
        Duration::from_millis(500)
    )
    .is_err()));
    let bearer = backend.admin_session("admin", "correct horse battery");
    // the operator works in hq: keys, the root (the backend's copy and
    // each site's), bundles
    let ops = Ops::new(
        &dir.path().join("ops"),
        &backend.url(),
        &bearer,
        Some(lan.hq.name()),
    );
    let root = ops.init_root();
    std::fs::copy(&root, dir.path().join("hq/data/bundle-root.pbroot")).unwrap();
    let mut sites: Vec<Site> = ["site-a", "site-b", "site-c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let token = backend.enrollment_token(name);
            Site::start(&lan.sites[i], name, &d, &backend, &token, &root)
        })
        .collect();
    let devices = backend.devices(&bearer);
    for s in &sites {
        let d = devices
            .iter()
            .find(|d| d["id"] == s.device_id.as_str())
            .unwrap_or_else(|| panic!("{} not in the inventory: {devices:?}", s.name));
        assert_eq!(d["hostname"], s.name.as_str(), "{d}");
    }
    let count = |s: &Site| remote_ids(&backend, &bearer, &s.device_id).len() as u64;

    // 1. all online
    for s in &mut sites {
        s.failed_logins(FIRST);
    }
    for s in &sites {
        wait_for(
            &format!("{}'s first alerts", s.name),
            Duration::from_secs(30),
            || (count(s) == FIRST).then_some(()),
        );
    }

    // 2. site-b cut off: it keeps detecting into its spool, the others
    //    keep delivering
    lan.cut(CUT);
    let cut_at = Instant::now();
    assert!(!lan.reaches_hq(CUT, HTTP));
    let connects_before_cut = sites[CUT].logged("connected to the broker");
    let losses_before_cut = sites[CUT].logged("broker connection lost or refused");
    for s in &mut sites {
        s.failed_logins(OFFLINE);
    }
    let b = &sites[CUT];
    let b_ns = &lan.sites[CUT];
    wait_for("site-b detects offline", Duration::from_secs(30), || {
        (b.metric(b_ns, "picket_alerts_emitted_total") == (FIRST + OFFLINE) as f64).then_some(())
    });
    let depth = wait_for("site-b's spool grows", Duration::from_secs(30), || {
        let d = b.metric(b_ns, "picket_spool_depth");
        (d >= OFFLINE as f64).then_some(d)
    });
    for (i, s) in sites.iter().enumerate().filter(|(i, _)| *i != CUT) {
        wait_for(
            &format!("{} delivers while site-b is cut", s.name),
            Duration::from_secs(30),
            || (count(s) == FIRST + OFFLINE).then_some(()),
        );
        assert!(lan.reaches_hq(i, HTTP));
    }
    wait_for(
        "site-b offline in the inventory",
        Duration::from_secs(30),
        || (online(&backend, &bearer, &b.device_id) == Some(false)).then_some(()),
    );
    for s in sites.iter().filter(|s| s.name != "site-b") {
        assert_eq!(
            online(&backend, &bearer, &s.device_id),
            Some(true),
            "{}",
            s.name
        );
    }
    assert_eq!(
        count(b),
        FIRST,
        "nothing of site-b's arrives while it is cut"
    );

    // ...and meanwhile a bundle is pushed and rolled out to all: the
    // connected sites activate it. (Pushed after their burst of alerts: a
    // rollout pauses when the devices running it alert far more than the
    // targeted devices that do not (BUNDLES.md §9, step 6), and here the
    // only such device is site-b, whose alerts cannot arrive.)
    let yaml = failed_login_rule(BUNDLE_RULE, "5e7b2c10-9d4a-4f7e-8a31-000000000001");
    let bundle = ops.bundle(1, &[("login.yml", &yaml)]);
    let pushed = ops.push(&bundle, &["--stages", "100", "--min-finished", "1"]);
    assert_eq!(pushed["rollout"]["state"], "running", "{pushed}");
    let status = wait_for(
        "the connected sites to activate the bundle",
        Duration::from_secs(60),
        || {
            let s = ops.status();
            (s["states"]["active"] == 2).then_some(s)
        },
    );
    assert_eq!(status["rollout"]["version"], 1, "{status}");
    assert_eq!(status["rollout"]["state"], "running", "{status}");
    assert_eq!(status["states"]["pending"], 1, "{status}");
    for (i, s) in sites.iter().enumerate() {
        let state = bundle_state(&backend, &bearer, &s.device_id, 1);
        if i == CUT {
            assert_eq!(state, None, "site-b cannot have heard of it");
        } else {
            assert_eq!(state.as_deref(), Some("active"), "{}", s.name);
        }
    }

    // the cut outlasts the keep-alive: site-b gives its connection up
    // (and the broker its side), so the link's return is a reconnection
    wait_for(
        "site-b to give up its broker connection",
        Duration::from_secs(4 * KEEP_ALIVE_SECS),
        || (b.logged("broker connection lost or refused") > losses_before_cut).then_some(()),
    );
    let outlast = Duration::from_secs(3 * KEEP_ALIVE_SECS);
    std::thread::sleep(outlast.saturating_sub(cut_at.elapsed()));
    assert_eq!(bundle_state(&backend, &bearer, &b.device_id, 1), None);
    let offline_for = cut_at.elapsed();

    // 3. the link returns: site-b reconnects and activates the bundle; more
    //    alerts everywhere, detected by the bundle's rule; all arrive once
    lan.restore(CUT);
    let restored_at = Instant::now();
    let b = &sites[CUT];
    let b_active = wait_for(
        "site-b to activate the bundle after its return",
        Duration::from_secs(120),
        || {
            (bundle_state(&backend, &bearer, &b.device_id, 1).as_deref() == Some("active"))
                .then(|| restored_at.elapsed())
        },
    );
    assert!(
        b.logged("connected to the broker") > connects_before_cut,
        "site-b came back on a new connection"
    );
    let status = wait_for("the rollout to complete", Duration::from_secs(30), || {
        let s = ops.status();
        (s["rollout"]["state"] == "completed").then_some(s)
    });
    assert_eq!(status["states"]["active"], 3, "{status}");
    for s in &mut sites {
        s.failed_logins(LAST);
    }
    let total = FIRST + OFFLINE + LAST;
    let b_caught_up = wait_for("site-b catches up", Duration::from_secs(180), || {
        (count(&sites[CUT]) == total).then(|| restored_at.elapsed())
    });
    let mut report = Vec::new();
    for (i, s) in sites.iter().enumerate() {
        let ns = &lan.sites[i];
        wait_for(
            &format!("{}: all alerts delivered", s.name),
            Duration::from_secs(60),
            || (count(s) == total).then_some(()),
        );
        wait_for(
            &format!("{}: spool drained", s.name),
            Duration::from_secs(30),
            || (s.metric(ns, "picket_spool_depth") == 0.0).then_some(()),
        );
        let emitted = s.metric(ns, "picket_alerts_emitted_total");
        assert_eq!(emitted, total as f64, "{}", s.name);
        let remote = remote_ids(&backend, &bearer, &s.device_id);
        let unique: BTreeSet<String> = remote.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            remote.len(),
            "{}: an alert stored twice",
            s.name
        );
        assert_eq!(unique, s.local_ids(), "{}: exactly its alerts", s.name);
        // the bundle's rule detects everything after site-b's return
        let want = BTreeMap::from([
            (DIR_RULE.to_owned(), FIRST + OFFLINE),
            (BUNDLE_RULE.to_owned(), LAST),
        ]);
        assert_eq!(
            titles(&backend, &bearer, &s.device_id),
            want,
            "{}: alerts by rule",
            s.name
        );
        report.push(format!("{} {}", s.name, remote.len()));
    }
    // nobody else's alerts in the backend
    let all = backend.all_alerts(&bearer, "", 500).len() as u64;
    assert_eq!(all, total * sites.len() as u64);
    assert!(
        !backend.log_text().contains("panicked"),
        "{}",
        backend.log_text()
    );
    eprintln!(
        "sites: offline {:.1} s (keep-alive {KEEP_ALIVE_SECS} s), site-b spool depth {depth} while cut, \
         bundle active {:.1} s and caught up {:.1} s after restore; \
         delivered once: {}; {all} in total; test {:.1} s",
        offline_for.as_secs_f64(),
        b_active.as_secs_f64(),
        b_caught_up.as_secs_f64(),
        report.join(", "),
        started.elapsed().as_secs_f64(),
    );
}

/// The guards leave nothing behind, also when the test body panics.
#[test]
fn namespaces_are_removed_even_after_a_panic() {
    require_root();
    let names = std::sync::Mutex::new(Vec::new());
    let r = std::panic::catch_unwind(|| {
        let lan = Lan::new(&["x", "y"]);
        let mut n = names.lock().unwrap();
        n.push(lan.hq.name().to_owned());
        n.extend(lan.sites.iter().map(|s| s.name().to_owned()));
        drop(n);
        panic!("on purpose");
    });
    assert!(r.is_err());
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    for n in names {
        assert!(!listed.contains(&n), "{n} left behind: {listed}");
    }
}
