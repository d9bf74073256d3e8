//! picketd's cost on the watched system and its own limits, measured on the
//! real kernel (root needed):
//!
//! - overhead: a fork+exec storm and a file churn, picketd off vs on with
//!   every module, as a ratio of medians over interleaved rounds;
//! - the highest event rate that passes through with zero loss;
//! - RSS idle and peak under load;
//! - latency from the syscall to the event leaving the bus (p50, p99).
//!
//! Run: `cargo build --release -p picket-appliance && cargo bench -p picket-hil-tests --bench sensor`
//! Options (env): `PICKET_BENCH_EXECS` (20000), `PICKET_BENCH_FILES` (100000), `PICKET_BENCH_ROUNDS` (3).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark binary"
)]

use picket_hil_tests::{set, Options, Picketd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn env_n(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn fork_exec_storm(n: usize) -> Duration {
    let t = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..n / 2 {
                    let st = Command::new("/bin/true").status().unwrap();
                    assert!(st.success());
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    t.elapsed()
}

fn file_churn(n: usize) -> Duration {
    let dir = tempfile::Builder::new()
        .prefix("picket-churn-")
        .tempdir_in("/tmp")
        .unwrap();
    let root = dir.path().to_path_buf();
    let t = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|k| {
            let root = root.clone();
            std::thread::spawn(move || {
                for i in 0..n / 2 {
                    let p = root.join(format!("f{k}-{i}"));
                    std::fs::write(&p, b"picket").unwrap();
                    std::fs::remove_file(&p).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn sigma_linux() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/sigmahq/rules/linux");
    p.is_dir().then_some(p)
}

fn start() -> Picketd {
    Picketd::start(Options {
        edit: Box::new(|c, _| {
            set(c, "output.events", "none");
            set(c, "output.alerts", "none");
            if let Some(r) = sigma_linux() {
                set(
                    c,
                    "detection.rules_dirs",
                    toml::Value::Array(vec![r.to_str().unwrap().into()]),
                );
            }
        }),
        ..Options::default()
    })
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn losses(d: &Picketd) -> f64 {
    d.metric("picket_kernel_records_lost_total", "") + d.metric("picket_bus_dropped_total", "")
}

/// Creates files at `rate` per second for `secs`; returns the achieved rate.
#[allow(dead_code, reason = "kept for paced experiments")]
fn paced_creates(rate: u64, secs: u64) -> f64 {
    let dir = tempfile::Builder::new()
        .prefix("picket-rate-")
        .tempdir_in("/tmp")
        .unwrap();
    let root = dir.path().to_path_buf();
    let per_thread = rate / 2;
    let t0 = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|k| {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut done = 0u64;
                let start = Instant::now();
                let total = per_thread * secs;
                while done < total {
                    let due = (start.elapsed().as_secs_f64() * per_thread as f64) as u64;
                    while done < due.min(total) {
                        let p = root.join(format!("r{k}-{}", done % 1000));
                        std::fs::write(&p, b"x").unwrap();
                        done += 1;
                    }
                    if done < total {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                done
            })
        })
        .collect();
    let n: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Waits until the pipeline has taken in what the workload produced: the
/// detection queue is empty twice in a row (background activity on the
/// machine may keep the published count moving forever), at most 10 s.
fn wait_settled(d: &Picketd) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut empty = 0;
    while Instant::now() < deadline && empty < 2 {
        std::thread::sleep(Duration::from_millis(200));
        if d.metric("picket_bus_depth", "subscriber=\"detection\"") == 0.0 {
            empty += 1;
        } else {
            empty = 0;
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness=false benches
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the sensor benchmark needs root");
        std::process::exit(1);
    }
    if std::env::var_os("PICKETD").is_none() {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        );
        let rel = target.join("release/picketd");
        assert!(
            rel.exists(),
            "build it first: cargo build --release -p picket-appliance"
        );
        // SAFETY: single-threaded at this point.
        unsafe { std::env::set_var("PICKETD", &rel) };
    }
    let execs = env_n("PICKET_BENCH_EXECS", 20_000);
    let files = env_n("PICKET_BENCH_FILES", 100_000);
    let rounds = env_n("PICKET_BENCH_ROUNDS", 3);
    println!("picketd sensor benchmark: {execs} fork+execs, {files} file create/write/unlink, {rounds} rounds; rules: {}",
        sigma_linux().map_or("built-in only".into(), |p| format!("built-in + {}", p.display())));

    // warm caches once
    fork_exec_storm(500);
    file_churn(2_000);

    let (mut exec_off, mut exec_on, mut churn_off, mut churn_on) = (vec![], vec![], vec![], vec![]);
    let mut idle_rss = 0;
    let mut peak_rss = 0;
    let mut busy_rss = 0;
    let mut storm_latency = (0.0, 0.0);
    for r in 0..rounds {
        exec_off.push(fork_exec_storm(execs));
        churn_off.push(file_churn(files));
        let mut d = start();
        std::thread::sleep(Duration::from_secs(1));
        idle_rss = idle_rss.max(status_kb(d.pid(), "VmRSS:"));
        let lost_before = losses(&d);
        exec_on.push(fork_exec_storm(execs));
        churn_on.push(file_churn(files));
        busy_rss = busy_rss.max(status_kb(d.pid(), "VmRSS:"));
        std::thread::sleep(Duration::from_millis(500));
        peak_rss = peak_rss.max(status_kb(d.pid(), "VmHWM:"));
        let lost = losses(&d) - lost_before;
        if r == 0 {
            storm_latency = (
                d.metric("picket_pipeline_latency_seconds", "quantile=\"0.5\""),
                d.metric("picket_pipeline_latency_seconds", "quantile=\"0.99\""),
            );
        }
        println!(
            "round {r}: exec off {:.2}s on {:.2}s | churn off {:.2}s on {:.2}s | lost {lost}",
            exec_off[r].as_secs_f64(),
            exec_on[r].as_secs_f64(),
            churn_off[r].as_secs_f64(),
            churn_on[r].as_secs_f64()
        );
        d.stop();
    }
    let ratio = |on: &[Duration], off: &[Duration]| {
        median(on.to_vec()).as_secs_f64() / median(off.to_vec()).as_secs_f64()
    };
    let exec_ratio = ratio(&exec_on, &exec_off);
    let churn_ratio = ratio(&churn_on, &churn_off);

    // latency at a steady, moderate load: 1,000 execs spaced 2 ms apart
    let d = start();
    for _ in 0..1000 {
        Command::new("/bin/true").status().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(300));
    let steady = (
        d.metric("picket_pipeline_latency_seconds", "quantile=\"0.5\""),
        d.metric("picket_pipeline_latency_seconds", "quantile=\"0.99\""),
    );

    // the highest rate the generator reaches (both cores, file creates and
    // deletes as fast as possible), and whether anything was lost
    let before = losses(&d);
    let pub_before = d.metric("picket_events_published_total", "");
    let t = Instant::now();
    let gen_secs = file_churn(files).as_secs_f64();
    wait_settled(&d);
    let published = d.metric("picket_events_published_total", "") - pub_before;
    let lost_max = losses(&d) - before;
    let max_rate = published / gen_secs;
    let _ = t;
    let load_rss = status_kb(d.pid(), "VmRSS:");
    drop(d);

    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| fork+exec storm ({execs} × /bin/true), on/off | {exec_ratio:.3} (off {:.2} s, on {:.2} s, medians) |", median(exec_off).as_secs_f64(), median(exec_on).as_secs_f64());
    println!("| file churn ({files} × create+write+unlink in /tmp), on/off | {churn_ratio:.3} (off {:.2} s, on {:.2} s, medians) |", median(churn_off).as_secs_f64(), median(churn_on).as_secs_f64());
    println!("| highest generated rate (file churn, both cores) | {max_rate:.0} events/s through the bus, {lost_max} lost |");
    println!(
        "| RSS idle (1 s after start) | {:.1} MiB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| RSS under load (end of the churn) | {:.1} MiB (max over rounds {:.1} MiB) |",
        load_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0
    );
    println!(
        "| RSS peak since start (VmHWM, includes parsing kernel BTF at start) | {:.1} MiB |",
        peak_rss as f64 / 1024.0
    );
    println!(
        "| latency syscall → bus exit, steady load | p50 {:.0} µs, p99 {:.0} µs |",
        steady.0 * 1e6,
        steady.1 * 1e6
    );
    println!(
        "| latency syscall → bus exit, during the storms | p50 {:.0} µs, p99 {:.0} µs |",
        storm_latency.0 * 1e6,
        storm_latency.1 * 1e6
    );
}
