//! Which rules cost the most per event (a profiling aid).
use std::time::Instant;

use picket_rules::{EngineConfig, LogSource, RuleSet};
use serde_json::json;

fn main() {
    let dir = std::env::args().nth(1).expect("rules dir");
    let mut files = Vec::new();
    fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else if p.extension().is_some_and(|x| x == "yml") {
                out.push(p)
            }
        }
    }
    walk(std::path::Path::new(&dir), &mut files);
    let ev = json!({"Image": "/usr/bin/python3", "CommandLine": "/usr/bin/python3 --option value1 /home/user/file7.txt", "ParentImage": "/usr/bin/bash", "ParentCommandLine": "-bash", "User": "user", "CurrentDirectory": "/home/user", "ProcessId": 1000, "ParentProcessId": 999, "LogonId": 1000});
    let ls = LogSource::category("linux", "process_creation");
    let mut costs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let set = RuleSet::from_sources([(f.clone(), text)], &EngineConfig::new()).rules;
        if set.rules_for(&ls).count() == 0 {
            continue;
        }
        let mut out = Vec::new();
        let t = Instant::now();
        for _ in 0..20000 {
            out.clear();
            set.evaluate(&ls, &ev, &mut out);
        }
        costs.push((
            t.elapsed().as_nanos() / 20000,
            f.display().to_string(),
            out.len(),
        ));
    }
    costs.sort();
    let total: u128 = costs.iter().map(|c| c.0).sum();
    println!("total {total} ns/event over {} rules", costs.len());
    for c in costs.iter().rev().take(15) {
        println!("{:6} ns  match={} {}", c.0, c.2, c.1);
    }
}
