//! A fleet on one node: N appliances connected over mTLS through the front
//! to the embedded broker, each sending one heartbeat per period at a random
//! offset. Reports connect time, the backend's RSS and CPU, and heartbeat
//! processing lag (receive → stored).
//!
//! The simulated appliances run in a child process (this bench run again
//! with `PICKET_FLEET_CHILD` set), so the figures are the backend's alone
//! and each process has its own descriptor budget: the backend needs three
//! per device (the front's socket, its loopback connection to the broker
//! and the broker's side), the appliances one.
//!
//! `cargo bench -p picket-backend --bench fleet10k`
//! Env: `PICKET_BENCH_FLEET` (10000), `PICKET_BENCH_HB_SECS` (30),
//! `PICKET_BENCH_PERIODS` (heartbeat periods measured, 2).
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stdout)]

#[path = "../tests/ingest_support/mod.rs"]
mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use picket_proto::ed25519_dalek::SigningKey;
use picket_proto::topic::Channel;
use picket_proto::DeviceId;
use rumqttc::QoS;
use rustls::pki_types::CertificateDer;

/// Set in the child: the file listing the appliances (see [`write_fleet`]).
const CHILD_ENV: &str = "PICKET_FLEET_CHILD";
/// Set in the child: the broker address (the front's).
const ADDR_ENV: &str = "PICKET_FLEET_ADDR";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` of a process (`self` or a pid), MiB.
fn rss_mib(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// User + system CPU of a process (`self` or a pid), seconds.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn main() {
    let child = std::env::var(CHILD_ENV).ok();
    // `cargo bench` passes `--bench`; only run when asked to bench.
    if child.is_none() && !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match child {
        Some(fleet) => rt.block_on(appliances(&fleet)),
        None => rt.block_on(bench()),
    }
}

/// The appliances' file: the CA certificate, then one line per device
/// (key seed and certificate, hex).
fn write_fleet(path: &std::path::Path, devs: &[support::TestDevice]) {
    let mut out = String::new();
    if let Some(d) = devs.first() {
        out.push_str(&hex(d.ca.as_ref()));
        out.push('\n');
    }
    for d in devs {
        out.push_str(&format!(
            "{} {}\n",
            hex(d.key.as_bytes()),
            hex(d.cert.as_ref())
        ));
    }
    std::fs::write(path, out).unwrap();
}

fn read_fleet(path: &str) -> Vec<support::TestDevice> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let ca = CertificateDer::from(unhex(lines.next().unwrap_or_default()));
    lines
        .map(|l| {
            let (seed, cert) = l.split_once(' ').unwrap();
            let key = SigningKey::from_bytes(&unhex(seed).try_into().unwrap());
            support::TestDevice {
                id: DeviceId::from_public_key(&key.verifying_key()),
                key,
                cert: CertificateDer::from(unhex(cert)),
                ca: ca.clone(),
            }
        })
        .collect()
}

/// The child: connects every appliance (in waves of 200, as a real fleet
/// reconnects), says `connected <secs>`, then on each `go` line sends one
/// period of heartbeats (offsets spread evenly, the next `seq` each time)
/// and says `sent`. Ends at `quit` or when stdin closes.
async fn appliances(fleet: &str) {
    let addr: std::net::SocketAddr = std::env::var(ADDR_ENV).unwrap().parse().unwrap();
    let period = Duration::from_secs(env("PICKET_BENCH_HB_SECS", 30));
    let devs = read_fleet(fleet);
    let t = Instant::now();
    let mut pubs = Vec::with_capacity(devs.len());
    for (i, d) in devs.iter().enumerate() {
        pubs.push(support::Publisher::start(
            &format!("fleet-{i}"),
            addr,
            Some(d.tls()),
            8,
        ));
        if i % 200 == 199 {
            let done = i as u64 + 1;
            support::wait_for("connect wave", Duration::from_secs(120), || {
                pubs.iter()
                    .filter(|p| p.connected.load(Ordering::Relaxed) > 0)
                    .count() as u64
                    + 50
                    >= done
            })
            .await;
        }
    }
    support::wait_for("all connected", Duration::from_secs(300), || {
        pubs.iter().all(|p| p.connected.load(Ordering::Relaxed) > 0)
    })
    .await;
    println!("connected {:.3}", t.elapsed().as_secs_f64());

    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seq = 0;
    loop {
        let cmd = tokio::task::block_in_place(|| rx.recv()).unwrap_or_default();
        if cmd != "go" {
            break;
        }
        seq += 1;
        let frames: Vec<Vec<u8>> = devs.iter().map(|d| d.heartbeat(seq)).collect();
        let t = Instant::now();
        let step = period.as_secs_f64() / devs.len().max(1) as f64;
        for (i, ((p, d), f)) in pubs.iter().zip(&devs).zip(frames).enumerate() {
            let at = Duration::from_secs_f64(step * i as f64);
            if let Some(wait) = at.checked_sub(t.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            p.publish(&d.topic(Channel::Heartbeat), QoS::AtMostOnce, f)
                .await;
        }
        println!("sent {seq}");
    }
    drop(pubs);
}

/// The child process and its output lines.
struct Appliances {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Appliances {
    fn spawn(fleet: &std::path::Path, addr: std::net::SocketAddr) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, fleet)
            .env(ADDR_ENV, addr.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line starting with `prefix` (the rest of it).
    async fn expect(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.try_recv() {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(mpsc::TryRecvError::Empty) => {
                    assert!(Instant::now() < deadline, "appliances: no {prefix:?} line");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(mpsc::TryRecvError::Disconnected) => panic!("appliances process ended"),
            }
        }
    }
}

impl Drop for Appliances {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

async fn bench() {
    let n = env("PICKET_BENCH_FLEET", 10_000);
    let period = Duration::from_secs(env("PICKET_BENCH_HB_SECS", 30));
    let periods = env("PICKET_BENCH_PERIODS", 2).max(1);
    let b = support::Backend::start(|c| {
        c.ingest.offline_after = Duration::from_secs(3600);
    })
    .await;
    let addr = b.started.mqtt.unwrap();
    let rss0 = rss_mib("self");
    let t = Instant::now();
    let mut devs = Vec::new();
    for i in 0..n {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i + 1).to_le_bytes());
        seed[31] = 0x5a;
        devs.push(b.enroll_key(SigningKey::from_bytes(&seed)).await);
    }
    println!("enrolled {n} devices in {:.1} s", t.elapsed().as_secs_f64());
    let fleet = b.dir.path().join("fleet.txt");
    write_fleet(&fleet, &devs);
    drop(devs);

    let rss1 = rss_mib("self");
    let fds1 = open_fds();
    let mut app = Appliances::spawn(&fleet, addr);
    let connect_secs: f64 = app
        .expect("connected", Duration::from_secs(600))
        .await
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss2 = rss_mib("self");
    let fds2 = open_fds();
    println!(
        "connected {n} appliances (mTLS via the front, from a child process) in \
         {connect_secs:.1} s; backend RSS {rss1:.0} MiB -> {rss2:.0} MiB ({:.1} KiB per \
         connection), descriptors {fds1} -> {fds2} ({:.2} per connection); appliances' \
         process RSS {:.0} MiB",
        (rss2 - rss1) * 1024.0 / n as f64,
        (fds2 - fds1) as f64 / n as f64,
        rss_mib(&app.pid()),
    );

    let m = b.metrics();
    let stored0 = m.heartbeats_stored.load(Ordering::Relaxed);
    let cpu0 = cpu_secs("self");
    let child_cpu0 = cpu_secs(&app.pid());
    let t = Instant::now();
    for p in 1..=periods {
        app.say("go");
        app.expect("sent", period * 2 + Duration::from_secs(60))
            .await;
        let want = stored0 + n * p;
        let deadline = Instant::now() + Duration::from_secs(120);
        while m.heartbeats_stored.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs("self") - cpu0;
    let child_cpu = cpu_secs(&app.pid()) - child_cpu0;
    let stored = m.heartbeats_stored.load(Ordering::Relaxed) - stored0;
    println!(
        "heartbeats: {stored}/{} stored over {secs:.1} s ({periods} periods of {period:?}); \
         lag receive->stored last {:.2} ms, max {:.2} ms; backend CPU {:.2}% of one core \
         ({:.2}% of the node), RSS {:.0} MiB (before devices {rss0:.0} MiB); appliances' \
         process CPU {:.2}% of one core; refused {}",
        n * periods,
        m.heartbeat_lag_us.load(Ordering::Relaxed) as f64 / 1e3,
        m.heartbeat_lag_max_us.load(Ordering::Relaxed) as f64 / 1e3,
        cpu / secs * 100.0,
        cpu / secs / 2.0 * 100.0,
        rss_mib("self"),
        child_cpu / secs * 100.0,
        m.refused_total(),
    );
    drop(app);
}
