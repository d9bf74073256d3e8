//! Harness for Picket's system tests: real `picketd` processes on the real
//! kernel.
//!
//! [`Picketd::start`] writes a config (the embedded default, adjusted by the
//! test), starts the `picketd` binary as a child with JSON logs, waits until
//! every enabled module has reported its start, and then lets tests read the
//! events and alerts it writes as JSON lines. Tests filter events to the
//! processes and paths they created themselves, so several tests can share
//! one daemon. The daemon is started from a thread that never exits and with
//! `PR_SET_PDEATHSIG`, so it dies with the test process even when the
//! harness skips destructors.
//!
//! These tests need root and a BPF-capable kernel; `.ci/test` runs them.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::missing_panics_doc,
    reason = "a test harness: failing loudly with the cause is its job"
)]

pub mod backend;
pub mod netns;
pub mod picketctl;
pub mod techniques;

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `picketd` binary: `$PICKETD`, or the build output of this workspace.
pub fn picketd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PICKETD") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let bin = target.join("debug/picketd");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p picket-appliance --bin picketd` first",
        bin.display()
    );
    bin
}

/// Fails unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "kernel tests need root");
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running picketd.
#[derive(Debug)]
pub struct Picketd {
    /// Scratch directory (config, outputs, data dir).
    pub dir: tempfile::TempDir,
    /// Events file (JSON lines).
    pub events: PathBuf,
    /// Alerts file (JSON lines).
    pub alerts: PathBuf,
    /// picketd's log (JSON lines on stderr).
    pub log: PathBuf,
    /// Metrics port.
    pub metrics_port: u16,
    pid: u32,
    waiter: Option<std::sync::Mutex<mpsc::Receiver<std::process::ExitStatus>>>,
}

/// A change to the test config (the table, and the scratch directory).
pub type ConfigEdit = Box<dyn FnOnce(&mut toml::Table, &Path)>;

/// Options for [`Picketd::start`].
pub struct Options {
    /// Edits the config (a TOML table parsed from the default).
    pub edit: ConfigEdit,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Modules expected to report a start or a failure before tests run.
    pub expect_modules: usize,
    /// Subcommand and arguments (default `run`).
    pub args: Vec<String>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            edit: Box::new(|_, _| {}),
            env: Vec::new(),
            expect_modules: 6,
            args: vec!["run".into()],
        }
    }
}

/// Sets a dotted key in a TOML table.
pub fn set(t: &mut toml::Table, key: &str, v: impl Into<toml::Value>) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap();
    let mut cur = t;
    for p in parts {
        cur = cur
            .get_mut(p)
            .and_then(toml::Value::as_table_mut)
            .unwrap_or_else(|| panic!("no table {p}"));
    }
    cur.insert(last.to_owned(), v.into());
}

impl Picketd {
    /// Starts picketd and waits for its modules.
    pub fn start(opts: Options) -> Picketd {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("picket-hil-")
            .tempdir_in("/tmp")
            .unwrap();
        let events = dir.path().join("events.jsonl");
        let alerts = dir.path().join("alerts.jsonl");
        let log = dir.path().join("picketd.log");
        let metrics_port = free_port();
        let mut cfg: toml::Table = picket_appliance::config::DEFAULT_CONFIG.parse().unwrap();
        set(
            &mut cfg,
            "daemon.data_dir",
            dir.path().join("data").to_str().unwrap(),
        );
        set(&mut cfg, "daemon.log_format", "json");
        set(&mut cfg, "daemon.log_level", "info");
        set(
            &mut cfg,
            "metrics.listen",
            format!("127.0.0.1:{metrics_port}"),
        );
        set(&mut cfg, "output.events", events.to_str().unwrap());
        set(&mut cfg, "output.alerts", alerts.to_str().unwrap());
        set(&mut cfg, "detection.rules_dirs", toml::Value::Array(vec![]));
        set(
            &mut cfg,
            "modules.auth.log_files",
            toml::Value::Array(vec![]),
        );
        set(&mut cfg, "modules.fim.paths", toml::Value::Array(vec![]));
        set(&mut cfg, "bus.capacity", 65536);
        (opts.edit)(&mut cfg, dir.path());
        let config = dir.path().join("picketd.toml");
        std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();

        let bin = picketd_bin();
        let log_file = std::fs::File::create(&log).unwrap();
        let (pid_tx, pid_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel();
        let args = opts.args.clone();
        let env = opts.env.clone();
        // The spawning thread lives as long as the child: PDEATHSIG fires
        // when the thread that forked exits.
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new(bin);
            cmd.arg("--config")
                .arg(&config)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(log_file);
            for (k, v) in env {
                cmd.env(k, v);
            }
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let mut child: Child = cmd.spawn().expect("spawn picketd");
            pid_tx.send(child.id()).unwrap();
            let status = child.wait().unwrap();
            let _ = exit_tx.send(status);
            loop {
                std::thread::park();
            }
        });
        let pid = pid_rx.recv().unwrap();
        let me = Picketd {
            dir,
            events,
            alerts,
            log,
            metrics_port,
            pid,
            waiter: Some(std::sync::Mutex::new(exit_rx)),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lines = me.log_lines();
            let done = lines
                .iter()
                .filter(|l| {
                    let m = l["fields"]["message"].as_str().unwrap_or("");
                    m.starts_with("started:") || m.starts_with("failed to start") || m == "disabled"
                })
                .count();
            if done >= opts.expect_modules {
                break;
            }
            if let Some(w) = &me.waiter {
                if let Ok(st) = w.lock().unwrap().try_recv() {
                    panic!("picketd exited early ({st}):\n{}", me.log_text());
                }
            }
            assert!(
                Instant::now() < deadline,
                "picketd did not start in time:\n{}",
                me.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log as text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log, parsed.
    pub fn log_lines(&self) -> Vec<Value> {
        read_jsonl(&self.log)
    }

    /// Events written so far.
    pub fn events(&self) -> Vec<Value> {
        read_jsonl(&self.events)
    }

    /// Alerts written so far.
    pub fn alerts(&self) -> Vec<Value> {
        read_jsonl(&self.alerts)
    }

    /// Waits for an event; panics with the nearest candidates on timeout.
    pub fn wait_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, Duration::from_secs(15), || {
            self.events().into_iter().find(|e| pred(e))
        })
    }

    /// Waits for an alert.
    pub fn wait_alert(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, Duration::from_secs(15), || {
            self.alerts().into_iter().find(|e| pred(e))
        })
    }

    /// The Prometheus text from /metrics.
    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics")
    }

    /// A metric's value (sum over its series matching `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(labels) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our child's pid.
        unsafe { libc::kill(i32::try_from(self.pid).unwrap(), sig) };
    }

    /// SIGTERM, then waits for exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let w = self.waiter.take().expect("already waited");
        w.into_inner()
            .unwrap()
            .recv_timeout(Duration::from_secs(30))
            .expect("picketd did not exit")
    }
}

impl Drop for Picketd {
    fn drop(&mut self) {
        if self.waiter.is_some() {
            self.signal(libc::SIGKILL);
        }
    }
}

/// Polls `f` until it yields or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a JSON-lines file (a partial last line is ignored).
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A plain HTTP GET on 127.0.0.1.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default()
}

/// The event's `kind.type`.
pub fn ty(e: &Value) -> &str {
    e["kind"]["type"].as_str().unwrap_or("")
}

/// The event's process pid.
pub fn pid_of(e: &Value) -> u64 {
    e["process"]["pid"].as_u64().unwrap_or(0)
}

/// Lists loaded BPF programs whose names start with `pk_` (picketd's).
pub fn picket_programs() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str())
                .filter(|n| n.starts_with("pk_"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A rule that raises one alert per failed SSH login line: with
/// [`auth_log_only`] and [`append_failed_logins`], a cheap, real stream of
/// alerts through the whole daemon.
pub const FAILED_LOGIN_RULE: &str = "title: HIL failed SSH login\n\
id: 6c0d3b56-1f4e-4f4b-9a57-3c2f6a0c5e01\n\
status: test\n\
author: Picket HIL tests\n\
tags: [attack.credential-access, attack.t1110]\n\
logsource: {product: linux, service: sshd}\n\
detection:\n  sel: {Outcome: failure}\n  condition: sel\n\
level: low\n";

/// Makes picketd a log-only sensor: kernel modules and FIM off, the auth
/// module following `log`, and (when given) rules from `rules` only.
pub fn auth_log_only(c: &mut toml::Table, log: &Path, rules: Option<&Path>) {
    for m in ["process", "file", "network", "syscalls", "fim"] {
        set(c, &format!("modules.{m}.enabled"), false);
    }
    set(
        c,
        "modules.auth.log_files",
        toml::Value::Array(vec![log.to_str().unwrap().into()]),
    );
    if let Some(r) = rules {
        set(
            c,
            "detection.rules_dirs",
            toml::Value::Array(vec![r.to_str().unwrap().into()]),
        );
    }
}

/// Appends one failed SSH login line per user to `log` (flushed at the end).
pub fn append_failed_logins<U: std::fmt::Display>(log: &Path, users: impl IntoIterator<Item = U>) {
    use std::io::Write;
    let f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    let mut f = std::io::BufWriter::new(f);
    for u in users {
        writeln!(
            f,
            "Nov 28 21:00:01 gw sshd[813]: Failed password for invalid user {u} from 198.51.100.2 port 4242 ssh2"
        )
        .unwrap();
    }
    f.flush().unwrap();
}
