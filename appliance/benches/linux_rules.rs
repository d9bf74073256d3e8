//! Throughput and memory of the Linux rule set on sensor events, one core:
//! the figures issue 3 asks for (≥ 1M events/s per core, ≤ 8 MiB peak RSS).
//!
//! Rules: the built-in rules picketd ships plus the SigmaHQ Linux rules,
//! compiled as a bundle is (`bundles::compile`), evaluated by the same
//! [`Detector`] the detection thread runs, in batches of `bus::MAX_BATCH`.
//!
//! Events: a pool built from real sensor output, replayed round-robin:
//! - the demo recording (`appliance/demo/attacks.jsonl`: the process, file
//!   and network events of an attack script) with sshd/sudo auth lines
//!   (one after every three kernel events, as in `rule_swap`);
//! - benign events of a gateway's everyday work with the same shape as the
//!   recorded ones (same `Process` fields, parents, cwd, users): systemd
//!   services, cron jobs, shells, package and monitoring tools, log writes,
//!   DNS/HTTPS connections, process forks and exits, TCP state changes.
//!   Their command lines share words with the rules' literals (`bash -c`,
//!   `/tmp/`, `curl`, `systemctl`, `crontab`, `chmod`...), so the prefilter
//!   has work to do on them; the bench prints which fraction of the pool
//!   matches.
//!
//! Timed, in alternating blocks so that load on a shared machine hits both
//! alike (rule loading is not timed):
//! - **detector**: `Detector::evaluate_batch`, the whole detection path
//!   (logsource, field adapter, prefilter, rules, alerts);
//! - **engine**: `RuleSet::evaluate_route` on the same events with each
//!   event's route looked up before timing: the rule engine alone.
//!
//! Peak RSS: the bench re-executes itself (`--rss-child`), and the child
//! builds the event pool, reads `VmRSS`, loads only the Linux set, evaluates
//! 200,000 events through a `Detector` and prints `VmHWM` (whole process).
//!
//! Run: `cargo bench -p picket-appliance --bench linux_rules [-- EVENTS [SIGMA_LINUX_DIR]]`
//! (default 2,000,000 events per path, `../shared/data/sigmahq/rules/linux`
//! beside the workspace).
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    reason = "a benchmark binary"
)]

mod common;

use picket_appliance::bus::MAX_BATCH;
use picket_appliance::detect::{logsource, Alert, Detector, RuleSlot, SigmaEvent};
use picket_appliance::event::{Endpoints, Event, Kind, Process};
use picket_appliance::telemetry::Registry;
use picket_rules::{Match, Route, RuleSet};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Blocks per path: each path runs `events / BLOCKS` events per block.
const BLOCKS: usize = 10;
/// Benign events in the pool (the recording adds 217).
const BENIGN: usize = 4_000;
/// Events the RSS child evaluates.
const RSS_EVENTS: usize = 200_000;

/// A small deterministic generator (xorshift), so every run replays the
/// same pool.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 >> 33).unwrap()
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.next() % v.len()]
    }
}

/// (image, command line, parent image, parent command line, cwd, user).
const PROGRAMS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "/usr/bin/bash",
        "bash -c /usr/lib/sysstat/debian-sa1 1 1",
        "/usr/sbin/cron",
        "/usr/sbin/CRON -f -P",
        "/root",
        "root",
    ),
    (
        "/usr/lib/sysstat/sadc",
        "/usr/lib/sysstat/sadc -F -L -S DISK 1 1 /var/log/sysstat",
        "/usr/bin/bash",
        "bash -c /usr/lib/sysstat/debian-sa1 1 1",
        "/root",
        "root",
    ),
    (
        "/usr/bin/systemctl",
        "systemctl is-active --quiet nftables.service",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-health",
        "/",
        "root",
    ),
    (
        "/usr/bin/systemctl",
        "systemctl status picketd --no-pager",
        "/usr/bin/bash",
        "-bash",
        "/home/ops",
        "root",
    ),
    (
        "/usr/sbin/ip",
        "ip -j -s link show",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-health",
        "/",
        "root",
    ),
    (
        "/usr/sbin/ip",
        "ip route show table main",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-health",
        "/",
        "root",
    ),
    (
        "/usr/sbin/nft",
        "nft -j list ruleset",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-health",
        "/",
        "root",
    ),
    (
        "/usr/bin/ls",
        "ls -la /var/log",
        "/usr/bin/bash",
        "-bash",
        "/home/ops",
        "ops",
    ),
    (
        "/usr/bin/ls",
        "ls --color=auto",
        "/usr/bin/bash",
        "-bash",
        "/home/ops/src",
        "ops",
    ),
    (
        "/usr/bin/cat",
        "cat /proc/loadavg",
        "/usr/bin/bash",
        "/bin/sh /usr/lib/gw/collect-metrics",
        "/",
        "root",
    ),
    (
        "/usr/bin/cat",
        "cat /sys/class/thermal/thermal_zone0/temp",
        "/usr/bin/sh",
        "/bin/sh /usr/lib/gw/collect-metrics",
        "/",
        "root",
    ),
    (
        "/usr/bin/grep",
        "grep -c processor /proc/cpuinfo",
        "/usr/bin/sh",
        "/bin/sh /usr/lib/gw/collect-metrics",
        "/",
        "root",
    ),
    (
        "/usr/bin/awk",
        "awk {print $1} /proc/uptime",
        "/usr/bin/sh",
        "/bin/sh /usr/lib/gw/collect-metrics",
        "/",
        "root",
    ),
    (
        "/usr/bin/date",
        "date +%s",
        "/usr/bin/sh",
        "/bin/sh /usr/lib/gw/collect-metrics",
        "/",
        "root",
    ),
    (
        "/usr/bin/logger",
        "logger -t gw-health all links up",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-health",
        "/",
        "root",
    ),
    (
        "/usr/bin/curl",
        "curl -fsS --max-time 5 https://updates.example.net/gw/manifest.json -o /tmp/manifest.json",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-update-check",
        "/var/lib/gw",
        "root",
    ),
    (
        "/usr/bin/sha256sum",
        "sha256sum /tmp/manifest.json",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-update-check",
        "/var/lib/gw",
        "root",
    ),
    (
        "/usr/bin/chmod",
        "chmod 0644 /var/lib/gw/manifest.json",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-update-check",
        "/var/lib/gw",
        "root",
    ),
    (
        "/usr/bin/mv",
        "mv /tmp/manifest.json /var/lib/gw/manifest.json",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-update-check",
        "/var/lib/gw",
        "root",
    ),
    (
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/lib/gw/exporter.py --listen 127.0.0.1:9101",
        "/usr/lib/systemd/systemd",
        "/sbin/init",
        "/",
        "gw",
    ),
    (
        "/usr/bin/dpkg-query",
        "dpkg-query -W -f=${Package} ${Version}\\n",
        "/usr/bin/bash",
        "-bash",
        "/home/ops",
        "ops",
    ),
    (
        "/usr/bin/apt-get",
        "apt-get -qq update",
        "/usr/bin/sudo",
        "sudo apt-get -qq update",
        "/home/ops",
        "root",
    ),
    (
        "/usr/bin/sudo",
        "sudo journalctl -u picketd -n 50",
        "/usr/bin/bash",
        "-bash",
        "/home/ops",
        "root",
    ),
    (
        "/usr/bin/journalctl",
        "journalctl -u picketd -n 50",
        "/usr/bin/sudo",
        "sudo journalctl -u picketd -n 50",
        "/home/ops",
        "root",
    ),
    (
        "/usr/bin/git",
        "git -C /etc/gw status --porcelain",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/etc-commit",
        "/etc/gw",
        "root",
    ),
    (
        "/usr/bin/find",
        "find /var/log -name *.gz -mtime +14 -delete",
        "/usr/bin/bash",
        "/bin/sh -c find /var/log -name '*.gz' -mtime +14 -delete",
        "/",
        "root",
    ),
    (
        "/usr/sbin/logrotate",
        "/usr/sbin/logrotate /etc/logrotate.conf",
        "/usr/lib/systemd/systemd",
        "/sbin/init",
        "/",
        "root",
    ),
    (
        "/usr/bin/gzip",
        "gzip -9 /var/log/syslog.1",
        "/usr/sbin/logrotate",
        "/usr/sbin/logrotate /etc/logrotate.conf",
        "/",
        "root",
    ),
    (
        "/usr/bin/crontab",
        "crontab -l",
        "/usr/bin/bash",
        "-bash",
        "/home/ops",
        "ops",
    ),
    (
        "/usr/bin/ps",
        "ps -eo pid,comm,rss --sort=-rss",
        "/usr/bin/bash",
        "-bash",
        "/home/ops",
        "ops",
    ),
    (
        "/usr/bin/ss",
        "ss -tlnp",
        "/usr/bin/bash",
        "-bash",
        "/home/ops",
        "root",
    ),
    (
        "/usr/bin/id",
        "id -u",
        "/usr/bin/sh",
        "/bin/sh /etc/update-motd.d/50-landscape-sysinfo",
        "/",
        "root",
    ),
    (
        "/usr/bin/uname",
        "uname -r",
        "/usr/bin/sh",
        "/bin/sh /etc/update-motd.d/10-uname",
        "/",
        "root",
    ),
    (
        "/usr/sbin/sshd",
        "sshd: ops [priv]",
        "/usr/sbin/sshd",
        "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
        "/",
        "root",
    ),
    (
        "/usr/bin/bash",
        "-bash",
        "/usr/sbin/sshd",
        "sshd: ops@pts/0",
        "/home/ops",
        "ops",
    ),
    (
        "/usr/bin/vim.basic",
        "vim /etc/gw/wan.conf",
        "/usr/bin/sudo",
        "sudo vim /etc/gw/wan.conf",
        "/home/ops",
        "root",
    ),
    (
        "/usr/sbin/dnsmasq",
        "/usr/sbin/dnsmasq -k --conf-file=/etc/dnsmasq.conf",
        "/usr/lib/systemd/systemd",
        "/sbin/init",
        "/",
        "dnsmasq",
    ),
    (
        "/usr/bin/wget",
        "wget -q -O /var/lib/gw/blocklist.txt https://lists.example.org/blocklist.txt",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-blocklist",
        "/var/lib/gw",
        "root",
    ),
    (
        "/usr/bin/tar",
        "tar -czf /var/backups/gw-etc.tgz /etc/gw",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-backup",
        "/",
        "root",
    ),
    (
        "/usr/bin/openssl",
        "openssl x509 -noout -enddate -in /etc/gw/tls/device.pem",
        "/usr/bin/bash",
        "/bin/bash /usr/local/sbin/gw-health",
        "/",
        "root",
    ),
];

const FILES: &[&str] = &[
    "/var/log/syslog",
    "/var/log/auth.log",
    "/var/log/gw/health.log",
    "/var/lib/gw/manifest.json",
    "/tmp/manifest.json",
    "/tmp/tmp.Xz81kPq2",
    "/run/gw/metrics.prom",
    "/var/lib/sysstat/sa29",
    "/home/ops/.bash_history",
    "/var/lib/dnsmasq/dnsmasq.leases",
    "/var/cache/apt/pkgcache.bin",
];

const PEERS: &[(&str, u16)] = &[
    ("192.0.2.53", 53),
    ("198.51.100.20", 443),
    ("203.0.113.9", 443),
    ("127.0.0.1", 9101),
    ("192.0.2.1", 123),
];

/// Benign events shaped like the recorded ones: the same process fields,
/// a realistic mix of kinds (execs, forks and exits of short-lived tools,
/// log and state file writes, outbound connections).
fn benign_events(n: usize) -> Vec<Event> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(n);
    let mut pid = 20_000u32;
    while out.len() < n {
        let &(image, cmd, parent, parent_cmd, cwd, user) = rng.pick(PROGRAMS);
        pid += 1 + u32::try_from(rng.next() % 5).unwrap();
        let uid = if user == "root" { 0 } else { 1000 };
        let process = Process {
            pid,
            tid: pid,
            ppid: pid - 1,
            uid,
            gid: uid,
            euid: uid,
            egid: uid,
            auid: (uid != 0).then_some(uid),
            user: Some(user.to_owned()),
            comm: image.rsplit('/').next().unwrap().chars().take(15).collect(),
            image: image.to_owned(),
            command_line: cmd.to_owned(),
            cwd: cwd.to_owned(),
            parent_image: parent.to_owned(),
            parent_command_line: parent_cmd.to_owned(),
            parent_user: Some("root".to_owned()),
            cgroup_id: 1,
            container_id: None,
        };
        let time_ns = 1_795_904_411_835_026_692 + u64::from(pid) * 1_000_000;
        let event = |kind| Event {
            time_ns,
            module: match &kind {
                Kind::ProcessExec { .. } | Kind::ProcessFork { .. } | Kind::ProcessExit { .. } => {
                    "process"
                }
                Kind::NetConnect { .. } | Kind::TcpState { .. } => "network",
                _ => "file",
            }
            .to_owned(),
            process: process.clone(),
            kind,
        };
        // the parent forks, the child execs, touches files or the network, exits
        let mut parent_fork = event(Kind::ProcessFork { child_pid: pid });
        parent_fork.process.pid = pid - 1;
        parent_fork.process.image = parent.to_owned();
        parent_fork.process.command_line = parent_cmd.to_owned();
        out.push(parent_fork);
        out.push(event(Kind::ProcessExec {
            filename: image.to_owned(),
            argv: cmd.split(' ').map(str::to_owned).collect(),
            argv_truncated: false,
            fileless: false,
        }));
        match rng.next() % 4 {
            0 => {
                let path = (*rng.pick(FILES)).to_owned();
                out.push(event(if rng.next().is_multiple_of(3) {
                    Kind::FileCreate { path }
                } else {
                    Kind::FileWrite {
                        path,
                        truncate: false,
                    }
                }));
            }
            1 => {
                let &(ip, port) = rng.pick(PEERS);
                let net = Endpoints {
                    protocol: if port == 53 || port == 123 {
                        "udp"
                    } else {
                        "tcp"
                    }
                    .to_owned(),
                    family: "ipv4".to_owned(),
                    source_ip: "192.0.2.254".to_owned(),
                    source_port: 40_000 + u16::try_from(rng.next() % 20_000).unwrap(),
                    destination_ip: ip.to_owned(),
                    destination_port: port,
                };
                out.push(event(Kind::TcpState {
                    net: net.clone(),
                    old_state: "SYN_SENT".to_owned(),
                    new_state: "ESTABLISHED".to_owned(),
                }));
                out.push(event(Kind::NetConnect { net, success: true }));
            }
            2 => {
                let path = format!("/tmp/tmp.{pid:x}");
                out.push(event(Kind::FileCreate { path: path.clone() }));
                out.push(event(Kind::FileDelete {
                    path,
                    directory: false,
                }));
            }
            _ => {}
        }
        out.push(event(Kind::ProcessExit { code: 0, signal: 0 }));
    }
    out.truncate(n);
    out
}

fn events() -> Vec<Event> {
    let mut pool = common::demo_events();
    pool.extend(benign_events(BENIGN));
    pool
}

/// The set a bundle of `dir` would install (plus the built-in rules).
fn compile(dir: &Path) -> RuleSet {
    common::compile(&common::rule_files(dir))
}

fn status_kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The child of the RSS measurement: only the Linux set and the events.
fn rss_child(sigma: &Path) {
    let events = events();
    let before = status_kib("VmRSS:");
    let rules = compile(sigma);
    let loaded = status_kib("VmRSS:");
    let mut d = Detector::new(RuleSlot::new(rules), Registry::default());
    let mut alerts: Vec<Alert> = Vec::new();
    let mut n = 0;
    for b in events.chunks(MAX_BATCH).cycle() {
        d.evaluate_batch(b, &mut alerts);
        alerts.clear();
        n += b.len();
        if n >= RSS_EVENTS {
            break;
        }
    }
    println!(
        "{before} {loaded} {} {} {n}",
        status_kib("VmRSS:"),
        status_kib("VmHWM:")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness=false benches
    }
    let mut positional = args.iter().filter(|a| !a.starts_with('-'));
    let total: usize = positional
        .next()
        .map_or(2_000_000, |n| n.parse().expect("EVENTS is a number"));
    let sigma = positional.next().map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/sigmahq/rules/linux"),
        PathBuf::from,
    );
    assert!(
        sigma.is_dir(),
        "no SigmaHQ Linux rules at {}",
        sigma.display()
    );
    if args.iter().any(|a| a == "--rss-child") {
        rss_child(&sigma);
        return;
    }

    let events = events();
    let t = Instant::now();
    let rules = compile(&sigma);
    let load = t.elapsed();
    let n_rules = rules.len();
    let slot = RuleSlot::new(rules);
    let (_, rules) = slot.current();
    let mut d = Detector::new(slot, Registry::default());

    // the engine path: each event's route looked up before timing
    let routes: Vec<Arc<Route>> = events
        .iter()
        .map(|e| rules.route(std::slice::from_ref(&logsource(e))))
        .collect();

    // what the pool matches
    let mut alerts: Vec<Alert> = Vec::new();
    let mut matching = 0;
    let mut per_rule: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        d.evaluate_batch(std::slice::from_ref(e), &mut alerts);
        matching += usize::from(!alerts.is_empty());
        for a in alerts.drain(..) {
            *per_rule.entry(a.rule_title).or_default() += 1;
        }
    }
    let benign_matching = {
        let demo = events.len() - BENIGN;
        let mut n = 0;
        for e in &events[demo..] {
            d.evaluate_batch(std::slice::from_ref(e), &mut alerts);
            n += usize::from(!alerts.is_empty());
            alerts.clear();
        }
        n
    };
    println!(
        "rules: {n_rules} (built-in + SigmaHQ Linux at {}), compiled in {:.1} ms",
        sigma.display(),
        load.as_secs_f64() * 1e3
    );
    println!(
        "pool: {} events ({} recorded + auth, {BENIGN} benign); {matching} match a rule ({:.2} %), \
         {benign_matching} of the benign; {} alerts per pass",
        events.len(),
        events.len() - BENIGN,
        matching as f64 * 100.0 / events.len() as f64,
        per_rule.values().sum::<usize>()
    );
    for (title, n) in &per_rule {
        println!("  {n:>4}  {title}");
    }

    let batches: Vec<&[Event]> = events.chunks(MAX_BATCH).collect();
    let per_block = total.div_ceil(BLOCKS);
    let mut out: Vec<Match> = Vec::new();
    let (mut detector, mut engine) = (Duration::ZERO, Duration::ZERO);
    let (mut det_n, mut eng_n, mut det_alerts, mut eng_matches) = (0, 0, 0, 0);
    let mut next = 0;
    for block in 0..=BLOCKS {
        // block 0 warms both paths and is not counted
        let t = Instant::now();
        let mut n = 0;
        let mut a = 0;
        let mut i = next;
        while n < per_block {
            let b = batches[i % batches.len()];
            d.evaluate_batch(b, &mut alerts);
            a += alerts.len();
            alerts.clear();
            n += b.len();
            i += 1;
        }
        let dt = t.elapsed();
        let t = Instant::now();
        let mut m = 0;
        let mut k = 0;
        for bi in next..i {
            let first = (bi % batches.len()) * MAX_BATCH;
            for (e, r) in batches[bi % batches.len()].iter().zip(&routes[first..]) {
                out.clear();
                m += rules.evaluate_route(r, &SigmaEvent(e), &mut out);
                k += 1;
            }
        }
        let et = t.elapsed();
        next = i;
        if block > 0 {
            (detector, engine) = (detector + dt, engine + et);
            (det_n, eng_n, det_alerts, eng_matches) =
                (det_n + n, eng_n + k, det_alerts + a, eng_matches + m);
        }
    }
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "\n{BLOCKS} alternating blocks of {per_block} events per path, one thread (load average {})",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
    );
    println!(
        "  detector (Detector::evaluate_batch)      {det_n} events in {:.3} s: {:>9.0} events/s, {det_alerts} alerts",
        detector.as_secs_f64(),
        rate(det_n, detector)
    );
    println!(
        "  engine (RuleSet::evaluate_route)         {eng_n} events in {:.3} s: {:>9.0} events/s, {eng_matches} matches",
        engine.as_secs_f64(),
        rate(eng_n, engine)
    );
    println!(
        "  detector / engine time                   {:.2}",
        detector.as_secs_f64() / engine.as_secs_f64()
    );

    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new(exe)
        .arg("--rss-child")
        .arg(total.to_string())
        .arg(&sigma)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "RSS child failed: {}",
        String::from_utf8_lossy(&child.stderr)
    );
    let v: Vec<u64> = String::from_utf8(child.stdout)
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    println!(
        "\npeak RSS (child process: the event pool, the Linux set only, {} events evaluated)",
        v[4]
    );
    println!("  before loading rules   {:>6.2} MiB", mib(v[0]));
    println!("  after loading rules    {:>6.2} MiB", mib(v[1]));
    println!("  after evaluating       {:>6.2} MiB", mib(v[2]));
    println!("  peak (VmHWM)           {:>6.2} MiB", mib(v[3]));
}
