//! The quick start's path, end to end with real processes: a `picket-backend`
//! (embedded broker behind its mTLS front, SQLite), an admin and a token made
//! with its CLI, `picketd enroll` against its HTTP API, then picketd's alerts
//! and heartbeats over MQTT into the backend, read back through the REST API.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use picket_hil_tests::{free_port, set, wait_for, Options, Picketd};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn backend_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PICKET_BACKEND") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let bin = target.join("debug/picket-backend");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p picket-backend` first",
        bin.display()
    );
    bin
}

struct Backend {
    child: Child,
    config: PathBuf,
    http: u16,
    mqtt: u16,
    log: PathBuf,
}

impl Backend {
    fn start(dir: &Path) -> Self {
        let (http, mqtt) = (free_port(), free_port());
        let config = dir.join("backend.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
                 [mqtt]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{mqtt}\"\n\
                 hostnames = [\"127.0.0.1\"]\n[ingest]\noffline_after_secs = 30\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = dir.join("backend.log");
        let child = Command::new(backend_bin())
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let b = Self {
            child,
            config,
            http,
            mqtt,
            log,
        };
        wait_for("backend ready", Duration::from_secs(60), || {
            (request(b.http, "GET", "/readyz", None, None).0 == 200).then_some(())
        });
        b
    }

    fn cli(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> String {
        let mut c = Command::new(backend_bin());
        c.arg("--config").arg(&self.config).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "picket-backend {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on loopback: (status, body).
fn request(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&Value>,
) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let body = json.map(Value::to_string).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = bearer {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if json.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return (0, raw);
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    (status, body)
}

#[test]
fn appliance_alerts_reach_the_backend_api_after_enrollment() {
    picket_hil_tests::require_root();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let backend = Backend::start(dir.path());
    backend.cli(
        &["create-admin", "--name", "admin"],
        &[("PICKET_ADMIN_PASSWORD", "correct horse battery")],
        "",
    );
    let token = backend.cli(
        &["create-token", "--label", "hil", "--ttl-secs", "600"],
        &[],
        "",
    );
    let token = token.lines().last().unwrap().trim().to_owned();

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
        raised.len() >= 5,
        "the demo raises alerts: {}",
        raised.len()
    );

    // the analyst's view
    let (st, body) = request(
        backend.http,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&serde_json::json!({"name": "admin", "password": "correct horse battery"})),
    );
    assert_eq!(st, 200, "{body}");
    let session: Value = serde_json::from_str(&body).unwrap();
    let bearer = session["token"].as_str().unwrap().to_owned();
    let alerts = wait_for("alerts in the backend", Duration::from_secs(20), || {
        let (st, body) = request(
            backend.http,
            "GET",
            "/api/v1/alerts?limit=500",
            Some(&bearer),
            None,
        );
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
            let (_, body) = request(backend.http, "GET", "/api/v1/devices", Some(&bearer), None);
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
