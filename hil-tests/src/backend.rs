//! A real `picket-backend` process for system tests: its config, its CLI
//! (admins, enrollment tokens), and plain HTTP/1.1 requests to its REST
//! API, on the host's loopback or inside a [`crate::netns::NetNs`].

use crate::{free_port, set, wait_for, Options, Picketd};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `picket-backend` binary: `$PICKET_BACKEND`, or this workspace's
/// build output.
pub fn backend_bin() -> PathBuf {
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

/// Sets picketd's `[uplink]` for a device enrolled into `dir` (the files
/// `picketd enroll` writes there) dialing `broker`, with alerts batched for
/// 50 ms and a heartbeat every second.
pub fn enrolled_uplink(c: &mut toml::Table, dir: &Path, broker: &str) {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    set(c, "uplink.enabled", true);
    set(c, "uplink.broker", broker);
    set(c, "uplink.ca_file", p("fleet-ca.pem"));
    set(c, "uplink.cert_file", p("device.pem"));
    set(c, "uplink.key_file", p("device.key"));
    set(c, "uplink.identity_file", p("device.key25519"));
    set(c, "uplink.spool_dir", p("spool"));
    set(c, "uplink.batch_delay_ms", 50);
    set(c, "uplink.heartbeat_interval_secs", 1);
}

/// Runs `picketd enroll --url URL --token TOKEN [--hostname H]` with the
/// config `edit` makes; panics with its log when enrollment fails.
pub fn enroll(
    edit: impl FnOnce(&mut toml::Table, &Path) + 'static,
    url: &str,
    token: &str,
    hostname: Option<&str>,
) {
    let mut args: Vec<String> = ["enroll", "--url", url, "--token", token]
        .map(str::to_owned)
        .to_vec();
    if let Some(h) = hostname {
        args.extend(["--hostname".to_owned(), h.to_owned()]);
    }
    let mut d = Picketd::start(Options {
        edit: Box::new(edit),
        expect_modules: 0,
        args,
        ..Options::default()
    });
    assert!(d.wait_exit().success(), "{}", d.log_text());
}

/// The device id a running, enrolled picketd logged at start.
pub fn device_id(d: &Picketd) -> String {
    let text = d.log_text();
    text.split("as device ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_hexdigit()).next())
        .unwrap_or_else(|| panic!("no device id in the log:\n{text}"))
        .to_owned()
}

/// Where and how a backend listens.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Address of both the HTTP API and the MQTT (mTLS) front.
    pub ip: IpAddr,
    /// HTTP port (0: a free port on the host's loopback).
    pub http: u16,
    /// MQTT port (0: a free port on the host's loopback).
    pub mqtt: u16,
    /// Names devices dial, for the broker's server certificate.
    pub hostnames: Vec<String>,
    /// Run inside this network namespace (by name).
    pub netns: Option<String>,
    /// `[ingest] offline_after_secs`.
    pub offline_after_secs: u64,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http: 0,
            mqtt: 0,
            hostnames: vec!["127.0.0.1".into()],
            netns: None,
            offline_after_secs: 30,
        }
    }
}

/// A running backend, killed on drop.
#[derive(Debug)]
pub struct Backend {
    child: Child,
    config: PathBuf,
    /// Listen address.
    pub ip: IpAddr,
    /// HTTP API port.
    pub http: u16,
    /// MQTT (mTLS) port.
    pub mqtt: u16,
    log: PathBuf,
    netns: Option<String>,
}

impl Backend {
    /// A backend on the host's loopback with free ports, files under `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, BackendOptions::default())
    }

    /// A backend as `opts` says; waits for `/readyz`.
    pub fn start_with(dir: &Path, opts: BackendOptions) -> Self {
        let pick = |p: u16| if p == 0 { free_port() } else { p };
        let (http, mqtt) = (pick(opts.http), pick(opts.mqtt));
        let ip = opts.ip;
        let config = dir.join("backend.toml");
        let hostnames: Vec<String> = opts.hostnames.iter().map(|h| format!("\"{h}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[http]\nlisten = \"{}\"\n\
                 [mqtt]\nmode = \"embedded\"\nlisten = \"{}\"\n\
                 hostnames = [{}]\n[ingest]\noffline_after_secs = {}\n",
                dir.join("data").display(),
                SocketAddr::new(ip, http),
                SocketAddr::new(ip, mqtt),
                hostnames.join(", "),
                opts.offline_after_secs,
            ),
        )
        .unwrap();
        let log = dir.join("backend.log");
        let spawn = || {
            Command::new(backend_bin())
                .arg("--config")
                .arg(&config)
                .arg("run")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap()
        };
        let child = match &opts.netns {
            Some(ns) => crate::netns::in_netns(ns, spawn),
            None => spawn(),
        };
        let b = Self {
            child,
            config,
            ip,
            http,
            mqtt,
            log,
            netns: opts.netns,
        };
        wait_for("backend ready", Duration::from_secs(60), || {
            (b.request("GET", "/readyz", None, None).0 == 200).then_some(())
        });
        b
    }

    /// The HTTP base URL.
    pub fn url(&self) -> String {
        format!("http://{}", SocketAddr::new(self.ip, self.http))
    }

    /// The broker address devices dial.
    pub fn broker(&self) -> String {
        SocketAddr::new(self.ip, self.mqtt).to_string()
    }

    /// Runs `picket-backend --config ... ARGS` (on the host: the CLI works
    /// on the data directory) and returns its stdout.
    pub fn cli(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> String {
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

    /// Creates an admin with the CLI and logs in: the session's bearer token.
    pub fn admin_session(&self, name: &str, password: &str) -> String {
        self.cli(
            &["create-admin", "--name", name],
            &[("PICKET_ADMIN_PASSWORD", password)],
            "",
        );
        self.login(name, password)
    }

    /// `POST /api/v1/auth/login`: the bearer token.
    pub fn login(&self, name: &str, password: &str) -> String {
        let (st, body) = self.request(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&serde_json::json!({"name": name, "password": password})),
        );
        assert_eq!(st, 200, "{body}");
        let session: Value = serde_json::from_str(&body).unwrap();
        session["token"].as_str().unwrap().to_owned()
    }

    /// A one-time enrollment token (CLI `create-token`).
    pub fn enrollment_token(&self, label: &str) -> String {
        let out = self.cli(
            &["create-token", "--label", label, "--ttl-secs", "600"],
            &[],
            "",
        );
        out.lines().last().unwrap().trim().to_owned()
    }

    /// Every alert matching `query` (e.g. `device=...`), following the
    /// cursor through all pages of at most `page` alerts.
    pub fn all_alerts(&self, bearer: &str, query: &str, page: u32) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/alerts?limit={page}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.push_str(c);
            }
            let (st, body) = self.request("GET", &path, Some(bearer), None);
            assert_eq!(st, 200, "{path}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            out.extend(v["alerts"].as_array().unwrap().iter().cloned());
            match v["next"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => return out,
            }
        }
    }

    /// `GET /api/v1/alerts/{id}`: the alert (with its notes) once stored.
    pub fn alert(&self, bearer: &str, id: &str) -> Option<Value> {
        let (st, body) = self.request("GET", &format!("/api/v1/alerts/{id}"), Some(bearer), None);
        match st {
            200 => Some(serde_json::from_str(&body).unwrap()),
            404 => None,
            _ => panic!("GET /api/v1/alerts/{id}: {st} {body}"),
        }
    }

    /// `GET /api/v1/devices/{id}/bundles`: the assignment and the states
    /// the device reported.
    pub fn device_bundles(&self, bearer: &str, device: &str) -> Value {
        let path = format!("/api/v1/devices/{device}/bundles");
        let (st, body) = self.request("GET", &path, Some(bearer), None);
        assert_eq!(st, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `GET /api/v1/devices`.
    pub fn devices(&self, bearer: &str) -> Vec<Value> {
        let (st, body) = self.request("GET", "/api/v1/devices", Some(bearer), None);
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v.as_array()
            .or_else(|| v["devices"].as_array())
            .cloned()
            .unwrap_or_default()
    }

    /// One request to the API: (status, body); status 0 when it could not
    /// connect.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        json: Option<&Value>,
    ) -> (u16, String) {
        let addr = SocketAddr::new(self.ip, self.http);
        let connect = || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5));
        let stream = match &self.netns {
            Some(ns) => crate::netns::in_netns(ns, connect),
            None => connect(),
        };
        match stream {
            Ok(s) => request_on(s, method, path, bearer, json),
            Err(_) => (0, String::new()),
        }
    }

    /// The backend's log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`: (status, body).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&Value>,
) -> (u16, String) {
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => request_on(s, method, path, bearer, json),
        Err(_) => (0, String::new()),
    }
}

/// One HTTP/1.1 request on a connected stream: (status, body).
pub fn request_on(
    mut s: std::net::TcpStream,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&Value>,
) -> (u16, String) {
    let body = json.map(Value::to_string).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: picket\r\nConnection: close\r\n");
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
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    if s.write_all(head.as_bytes()).is_err() || s.write_all(body.as_bytes()).is_err() {
        return (0, String::new());
    }
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
            if n == 0 || after.len() < n + 2 {
                out.push_str(&after[..n.min(after.len())]);
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
