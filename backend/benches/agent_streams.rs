//! 100 Windows agents streaming EVTX records to one backend with the whole
//! SigmaHQ Windows rule set loaded (`docs/AGENT-STREAM.md`).
//!
//! The backend is the real `picket-backend` binary in a child process
//! (SQLite in a temp dir, `[agents] rules_dirs` = SigmaHQ `rules`,
//! `rules-threat-hunting`, `rules-emerging-threats`), so the RSS (VmHWM)
//! and CPU printed are its own. This process:
//!
//! 1. renders every record of the shared EVTX set (`../shared/data/evtx`)
//!    to a JSON line as `picketctl stream` does (`evtx` crate,
//!    `records_json_value`, one line per record), before any timing;
//! 2. creates an admin (`picket-backend create-admin`), logs in, creates
//!    one enrollment token per agent and enrolls the agents through the API;
//! 3. **baseline** (same run, alternating with the stream on these shared
//!    cores): the same lines mapped and evaluated by `picket_agents` and the
//!    same rule set on one thread of this process, no I/O;
//! 4. opens the streams; each agent sends messages of `--batch` lines,
//!    waiting for each answer before sending the next (the protocol's
//!    back-pressure), until the event count is reached;
//! 5. the baseline again.
//!
//! `cargo bench -p picket-backend --bench agent_streams -- [EVENTS] [--agents N] [--batch LINES]`
//! (defaults 1,000,000 events, 100 agents, 500 lines per message).
//!
//! The backend binary is the one cargo builds for this bench
//! (`CARGO_BIN_EXE_picket-backend`); `PICKET_BACKEND` names another. Note
//! that the bench build unifies the dev-dependencies' features (the `evtx`
//! crate turns on `serde_json/preserve_order`), so for the production
//! build's figure build it alone and point `PICKET_BACKEND` at a copy:
//! `cargo build --release -p picket-backend && cp $T/release/picket-backend /tmp/`.
//! Env `PICKET_AGENT_STREAMS_EVTX` names another EVTX folder.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "benchmark harness"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "bench-admin";
const PASSWORD: &str = "bench-admin-password-1";

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}

fn rule_dirs() -> Vec<PathBuf> {
    ["rules", "rules-threat-hunting", "rules-emerging-threats"]
        .iter()
        .map(|d| shared(&format!("sigmahq/{d}")))
        .collect()
}

fn evtx_dir() -> PathBuf {
    std::env::var_os("PICKET_AGENT_STREAMS_EVTX").map_or_else(|| shared("evtx"), PathBuf::from)
}

fn backend_bin() -> PathBuf {
    std::env::var_os("PICKET_BACKEND").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_picket-backend")),
        PathBuf::from,
    )
}

/// A `kB` line of `/proc/<pid>/status`, MiB.
fn status_mib(pid: u32, key: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// User + system CPU of a process, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The options after `--`: `[EVENTS] [--agents N] [--batch LINES]`.
struct Opts {
    events: u64,
    agents: usize,
    batch: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        events: 1_000_000,
        agents: 100,
        batch: 500,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--agents" => o.agents = args.next().and_then(|v| v.parse().ok()).unwrap(),
            "--batch" => o.batch = args.next().and_then(|v| v.parse().ok()).unwrap(),
            n if n.chars().all(|c| c.is_ascii_digit() || c == '_') => {
                o.events = n.replace('_', "").parse().unwrap();
            }
            _ => {}
        }
    }
    o.agents = o.agents.max(1);
    o.batch = o.batch.max(1);
    o
}

fn main() {
    // `cargo bench` passes `--bench`; only run when asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    bench(&opts());
}

/// Every record of the EVTX files as `picketctl stream` sends it.
fn render_lines(dir: &Path) -> Vec<String> {
    let (inputs, _) = picket_cli::hunt::collect_inputs(&[dir.to_owned()]);
    let mut lines = Vec::new();
    for input in inputs {
        let Ok(mut parser) = evtx::EvtxParser::from_path(&input.path) else {
            continue;
        };
        for r in parser.records_json_value().flatten() {
            lines.push(r.data.to_string());
        }
    }
    lines
}

/// Maps and evaluates `lines` on this thread until at least `min` events
/// and 1 s: events/s and matches per event.
fn baseline(rules: &picket_rules::RuleSet, lines: &[String], min: usize) -> (f64, f64) {
    let mut matches = Vec::new();
    let (mut n, mut hits) = (0usize, 0usize);
    let t = Instant::now();
    while n < min || t.elapsed() < Duration::from_secs(1) {
        for l in lines {
            if let Ok(m) = picket_agents::map_line(l.as_bytes()) {
                matches.clear();
                hits += m.evaluate(rules, &mut matches);
            }
        }
        n += lines.len();
    }
    (n as f64 / t.elapsed().as_secs_f64(), hits as f64 / n as f64)
}

fn http_json(req: ureq::RequestBuilder<ureq::typestate::WithBody>, body: &Value) -> Value {
    req.send_json(body)
        .unwrap()
        .body_mut()
        .read_json::<Value>()
        .unwrap()
}

/// Logs in, creates one token per agent and enrolls them: the secrets.
fn enroll(base: &str, n: usize) -> Vec<String> {
    let session = http_json(
        ureq::post(format!("{base}/api/v1/auth/login")),
        &serde_json::json!({"name": ADMIN, "password": PASSWORD}),
    );
    let bearer = format!("Bearer {}", session["token"].as_str().unwrap());
    (0..n)
        .map(|i| {
            let token = http_json(
                ureq::post(format!("{base}/api/v1/enrollment-tokens"))
                    .header("authorization", &bearer),
                &serde_json::json!({"label": format!("bench-{i}"), "ttl_secs": 600}),
            );
            let enrolled = http_json(
                ureq::post(format!("{base}/api/v1/agents/enroll")),
                &serde_json::json!({
                    "token": token["token"], "hostname": format!("win-{i}"),
                    "platform": "windows", "agent_version": "bench",
                }),
            );
            enrolled["secret"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// `batch` consecutive lines from each multiple of `batch`, wrapping at the
/// end, so that every record is sent and every message is full.
fn messages(lines: &[String], batch: usize) -> Vec<String> {
    let n = lines.len();
    (0..n.div_ceil(batch))
        .map(|m| {
            let mut s = String::new();
            for k in 0..batch {
                s.push_str(&lines[(m * batch + k) % n]);
                s.push('\n');
            }
            s
        })
        .collect()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Default)]
struct AgentRun {
    lines: u64,
    alerts: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

async fn one_agent(mut ws: Ws, msgs: Arc<Vec<String>>, first: usize, count: u64) -> AgentRun {
    let mut run = AgentRun::default();
    for k in 0..count {
        let text = msgs[(first + k as usize) % msgs.len()].clone();
        let t = Instant::now();
        ws.send(Message::Text(text.into())).await.unwrap();
        let reply: Value = loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => break serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(f) => panic!("closed by the backend: {f:?}"),
                _ => {}
            }
        };
        run.latencies_us.push(t.elapsed().as_micros() as u64);
        assert_eq!(reply["type"], "result", "{reply}");
        let r = &reply["result"];
        run.lines += r["lines"].as_u64().unwrap();
        run.alerts += r["alerts"].as_array().map_or(0, Vec::len) as u64;
        run.errors += r["errors"].as_array().map_or(0, Vec::len) as u64;
    }
    let _ = ws.close(None).await;
    run
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e3
}

/// The backend child process; killed when dropped.
struct Backend {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_backend(bin: &Path) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let rules: Vec<String> = rule_dirs()
        .iter()
        .map(|d| format!("{:?}", d.display().to_string()))
        .collect();
    let config = dir.path().join("backend.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"{addr}\"\n\
             [mqtt]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{}\"\nhostnames = [\"127.0.0.1\"]\n\
             [agents]\nrules_dirs = [{}]\n",
            dir.path().join("data").display().to_string(),
            free_port(),
            rules.join(", "),
        ),
    )
    .unwrap();
    let mut admin = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .args(["create-admin", "--name", ADMIN])
        .env("PICKET_ADMIN_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(admin.wait().unwrap().success(), "create-admin failed");
    let log = std::fs::File::create(dir.path().join("backend.log")).unwrap();
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let b = Backend {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while ureq::get(format!("http://{addr}/healthz")).call().is_err() {
        assert!(Instant::now() < deadline, "backend not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    b
}

/// The streams' figures: events, alerts, refused lines, seconds, answer
/// latencies (sorted, ms).
struct Streamed {
    lines: u64,
    alerts: u64,
    errors: u64,
    secs: f64,
    latencies: Vec<u64>,
}

async fn stream(
    addr: std::net::SocketAddr,
    secrets: &[String],
    msgs: Arc<Vec<String>>,
    per_agent: u64,
) -> Streamed {
    let mut streams = Vec::new();
    for s in secrets {
        let mut req = format!("ws://{addr}/api/v1/agents/stream")
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {s}").parse().unwrap());
        streams.push(tokio_tungstenite::connect_async(req).await.unwrap().0);
    }
    let t = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(one_agent(ws, msgs.clone(), i, per_agent)))
        .collect();
    let mut runs = Vec::new();
    for t in tasks {
        runs.push(t.await.unwrap());
    }
    let secs = t.elapsed().as_secs_f64();
    let mut latencies: Vec<u64> = runs.iter().flat_map(|r| r.latencies_us.clone()).collect();
    latencies.sort_unstable();
    let sum = |f: fn(&AgentRun) -> u64| runs.iter().map(f).sum::<u64>();
    Streamed {
        lines: sum(|r| r.lines),
        alerts: sum(|r| r.alerts),
        errors: sum(|r| r.errors),
        secs,
        latencies,
    }
}

fn bench(o: &Opts) {
    let dirs = rule_dirs();
    if let Some(d) = dirs.iter().chain([&evtx_dir()]).find(|d| !d.exists()) {
        println!("skipped: {} missing", d.display());
        return;
    }
    let bin = backend_bin();
    println!(
        "agent_streams: {} events, {} agents, {} lines per message; backend {}; load average {}",
        o.events,
        o.agents,
        o.batch,
        bin.display(),
        load_average()
    );
    let t = Instant::now();
    let lines = render_lines(&evtx_dir());
    assert!(
        !lines.is_empty(),
        "no EVTX records in {}",
        evtx_dir().display()
    );
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    println!(
        "rendered {} EVTX records ({:.1} MiB of JSON lines) in {:.2} s",
        lines.len(),
        bytes as f64 / 1_048_576.0,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let b = start_backend(&bin);
    let pid = b.child.id();
    println!(
        "backend up with the rules in {:.2} s; RSS {:.0} MiB",
        t.elapsed().as_secs_f64(),
        status_mib(pid, "VmRSS:")
    );
    let base = format!("http://{}", b.addr);
    let secrets = enroll(&base, o.agents);
    println!("enrolled {} agents through the API", secrets.len());

    let rules = picket_backend::agents::load_rules(&rule_dirs());
    // Untimed pass: builds the per-logsource routes, as the backend's
    // first messages do.
    let _ = baseline(&rules, &lines, 0);
    let (before, per_event) = baseline(&rules, &lines, 4 * lines.len());

    let msgs = Arc::new(messages(&lines, o.batch));
    let per_agent = (o.events / o.agents as u64).div_ceil(o.batch as u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rss_idle = status_mib(pid, "VmRSS:");
    let (cpu0, self_cpu0) = (cpu_secs(pid), cpu_secs(std::process::id()));
    let rss_max = Arc::new(Mutex::new(rss_idle));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (rss_max, running) = (rss_max.clone(), running.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let r = status_mib(pid, "VmRSS:");
                let mut m = rss_max.lock().unwrap();
                *m = m.max(r);
                drop(m);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let t = Instant::now();
    let s = rt.block_on(stream(b.addr, &secrets, msgs, per_agent));
    let wall = t.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let cpu = cpu_secs(pid) - cpu0;
    let self_cpu = cpu_secs(std::process::id()) - self_cpu0;
    let hwm = status_mib(pid, "VmHWM:");
    let (after, _) = baseline(&rules, &lines, 4 * lines.len());

    let rate = s.lines as f64 / s.secs;
    println!(
        "streamed {} events in {} messages over {:.2} s: **{rate:.0} events/s**, {} alerts stored \
         ({:.0} alerts/s), {} refused lines",
        s.lines,
        s.latencies.len(),
        s.secs,
        s.alerts,
        s.alerts as f64 / s.secs,
        s.errors,
    );
    println!(
        "answer latency (send -> result): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&s.latencies, 0.5),
        percentile(&s.latencies, 0.99),
        percentile(&s.latencies, 1.0)
    );
    println!(
        "backend: CPU {:.0} % of one core ({:.0} % of the 2 cores), {:.1} us of CPU per event \
         (so 2 idle cores would take {:.0} events/s), RSS {rss_idle:.0} MiB connected and \
         idle -> {:.0} MiB peak sampled while streaming, VmHWM {hwm:.0} MiB; agents' (this) \
         process CPU {:.0} % of one core",
        cpu / wall * 100.0,
        cpu / wall * 50.0,
        cpu / s.lines as f64 * 1e6,
        2.0 * s.lines as f64 / cpu,
        *rss_max.lock().unwrap(),
        self_cpu / wall * 100.0,
    );
    println!(
        "baseline (map + evaluate, same lines and rules, one thread of this process): \
         before {before:.0} events/s, after {after:.0} events/s ({:.1} us per event); \
         {per_event:.3} matches per event; streamed / baseline mean = {:.2}; load average {}",
        2e6 / (before + after),
        rate / f64::midpoint(before, after),
        load_average()
    );
    drop(b);
}
