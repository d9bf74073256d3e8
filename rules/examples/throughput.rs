//! Rough single-core throughput of the Linux SigmaHQ rules on synthetic
//! Sysmon-for-Linux process events (not the benchmark of issue 3, which
//! replays real events side by side with rsigma).
//!
//! `cargo run --release -p picket-rules --example throughput [SIGMA_RULES_DIR] [EVENTS]`

use std::time::Instant;

use picket_rules::{EngineConfig, LogSource, RuleSet};
use serde_json::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/sigmahq/rules/linux"
        )
        .to_owned()
    });
    let n: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let t = Instant::now();
    let loaded = RuleSet::from_dir(&dir, &EngineConfig::new()).expect("rule directory");
    println!(
        "loaded {} rules ({} errors) in {:?}",
        loaded.rules.len(),
        loaded.errors.len(),
        t.elapsed()
    );
    let rules = loaded.rules;
    let images = [
        "/usr/bin/bash",
        "/usr/bin/python3",
        "/usr/bin/curl",
        "/usr/sbin/sshd",
        "/usr/bin/ls",
    ];
    let events: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            json!({
                "Image": images[i % images.len()],
                "CommandLine": format!("{} --option value{} /home/user/file{}.txt", images[i % images.len()], i, i * 7),
                "ParentImage": "/usr/bin/bash",
                "ParentCommandLine": "-bash",
                "User": "user",
                "CurrentDirectory": "/home/user",
                "ProcessId": 1000 + i,
                "ParentProcessId": 999,
                "LogonId": 1000,
            })
        })
        .collect();
    let ls = LogSource::category("linux", "process_creation");
    println!("rules for {ls:?}: {}", rules.rules_for(&ls).count());
    let mut out = Vec::new();
    let t = Instant::now();
    let mut matches = 0;
    for i in 0..n {
        out.clear();
        matches += rules.evaluate(&ls, &events[i % events.len()], &mut out);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "evaluate: {n} events in {secs:.2}s: {:.0} events/s, {matches} matches",
        n as f64 / secs
    );
    // What the appliance does: hold the route of its fixed logsource.
    let route = rules.route(std::slice::from_ref(&ls));
    let t = Instant::now();
    let mut matches = 0;
    for i in 0..n {
        out.clear();
        matches += rules.evaluate_route(&route, &events[i % events.len()], &mut out);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "evaluate_route: {n} events in {secs:.2}s: {:.0} events/s, {matches} matches",
        n as f64 / secs
    );
}
