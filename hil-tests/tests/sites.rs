//! Several sites, one headquarters, real network namespaces: a
//! `picket-backend` in an "hq" namespace and three `picketd` processes, each
//! in its own site namespace, joined by a bridge in hq (10.77.0.0/24,
//! nothing else reachable). Each site enrolls over the LAN and streams
//! alerts; one site's link is cut while all keep detecting; when it
//! returns, every alert of every site is in the backend exactly once.
//!
//! Each site's only source is its own auth log (kernel modules off), so the
//! alerts of a site are exactly the failed logins the test writes there,
//! whatever else runs on the host.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use picket_hil_tests::backend::{Backend, BackendOptions};
use picket_hil_tests::netns::{Lan, NetNs};
use picket_hil_tests::{
    append_failed_logins, auth_log_only, require_root, set, wait_for, Options, Picketd,
    FAILED_LOGIN_RULE,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Inside a fresh namespace every port is free: fixed ports are safe.
const HTTP: u16 = 8080;
const MQTT: u16 = 8883;

/// One site's files and its running daemon.
struct Site {
    name: String,
    auth_log: PathBuf,
    written: u64,
    device_id: String,
    daemon: Picketd,
}

impl Site {
    /// Enrolls a site in `ns` with the backend and starts its daemon.
    fn start(ns: &NetNs, name: &str, dir: &Path, backend: &Backend, token: &str) -> Site {
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("ssh_failed.yml"), FAILED_LOGIN_RULE).unwrap();
        let auth_log = dir.join("auth.log");
        std::fs::write(&auth_log, "").unwrap();
        let (d, log, broker) = (dir.to_owned(), auth_log.clone(), backend.broker());
        let edit = move |c: &mut toml::Table, _: &Path| {
            auth_log_only(c, &log, Some(&d.join("rules")));
            let p = |f: &str| d.join(f).to_str().unwrap().to_owned();
            set(c, "uplink.enabled", true);
            set(c, "uplink.broker", broker.clone());
            set(c, "uplink.ca_file", p("fleet-ca.pem"));
            set(c, "uplink.cert_file", p("device.pem"));
            set(c, "uplink.key_file", p("device.key"));
            set(c, "uplink.identity_file", p("device.key25519"));
            set(c, "uplink.spool_dir", p("spool"));
            set(c, "uplink.batch_delay_ms", 50);
            set(c, "uplink.heartbeat_interval_secs", 1);
        };
        let (url, token, host) = (backend.url(), token.to_owned(), name.to_owned());
        let e = edit.clone();
        let mut enroll = ns.run(move || {
            Picketd::start(Options {
                edit: Box::new(e),
                expect_modules: 0,
                args: [
                    "enroll",
                    "--url",
                    &url,
                    "--token",
                    &token,
                    "--hostname",
                    &host,
                ]
                .map(str::to_owned)
                .to_vec(),
                ..Options::default()
            })
        });
        assert!(enroll.wait_exit().success(), "{}", enroll.log_text());
        let daemon = ns.run(move || {
            Picketd::start(Options {
                edit: Box::new(edit),
                ..Options::default()
            })
        });
        let text = daemon.log_text();
        let device_id = text
            .split("as device ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_hexdigit()).next())
            .unwrap_or_else(|| panic!("no device id in the log:\n{text}"))
            .to_owned();
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

fn online(backend: &Backend, bearer: &str, device: &str) -> Option<bool> {
    backend
        .devices(bearer)
        .iter()
        .find(|d| d["id"] == device)
        .and_then(|d| d["online"].as_bool())
}

#[test]
fn three_sites_one_cut_off_every_alert_arrives_once() {
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
    let mut sites: Vec<Site> = ["site-a", "site-b", "site-c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let token = backend.enrollment_token(name);
            Site::start(&lan.sites[i], name, &d, &backend, &token)
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
    let offline_for = cut_at.elapsed();

    // 3. the link returns; more alerts everywhere; all arrive once
    lan.restore(CUT);
    let restored_at = Instant::now();
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
        "sites: offline {:.1} s, site-b spool depth {depth} while cut, caught up {:.1} s after restore; \
         delivered once: {}; {all} in total; test {:.1} s",
        offline_for.as_secs_f64(),
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
