//! Conformance test 3: the engine against the pySigma oracle on the shared
//! EVTX samples. The oracle's output is committed in `tests/oracle/`
//! (regenerate with the command in `rules/README.md`); every difference must
//! be listed, with its reason, in `tests/oracle/explained-differences.json`,
//! and every listed difference must still exist.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use picket_rules::{windows, EngineConfig, RuleSet};
use serde_json::Value;

fn evtx_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            evtx_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "evtx") {
            out.push(path);
        }
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("oracle file")).expect("JSON")
}

#[test]
fn matches_the_oracle_on_shared_evtx() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let root = shared.join("data/sigmahq");
    let evtx_root = shared.join("data/evtx/hayabusa-sample-evtx");
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle");
    let oracle = read_json(&here.join("evtx-oracle.json"));
    let not_convertible: HashSet<String> =
        read_json(&here.join("evtx-oracle.not-convertible.json"))
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
    let explained: BTreeSet<(String, String)> = read_json(&here.join("explained-differences.json"))
        .as_array()
        .expect("list")
        .iter()
        .map(|d| {
            (
                d["rule"].as_str().expect("rule").to_owned(),
                d["event"].as_str().expect("event").to_owned(),
            )
        })
        .collect();

    let mut texts = Vec::new();
    for dir in ["rules", "rules-threat-hunting", "rules-emerging-threats"] {
        for path in common::yaml_files(&root.join(dir)) {
            let rel = path
                .strip_prefix(&root)
                .expect("below root")
                .display()
                .to_string();
            if not_convertible.contains(&rel) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("rule file");
            texts.push((path, text));
        }
    }
    let set = RuleSet::from_sources(texts, &EngineConfig::new()).rules;

    let router = windows::Router::new(&set);
    let mut engine: BTreeSet<(String, String)> = BTreeSet::new();
    let mut files = Vec::new();
    evtx_files(&evtx_root, &mut files);
    files.sort();
    let mut out = Vec::new();
    let mut records = 0;
    for file in &files {
        let rel = file
            .strip_prefix(&evtx_root)
            .expect("below root")
            .display()
            .to_string();
        let Ok(mut parser) = evtx::EvtxParser::from_path(file) else {
            continue;
        };
        for rec in parser.records_json_value().flatten() {
            let Some(flat) = windows::normalize_evtx(&rec.data) else {
                continue;
            };
            records += 1;
            out.clear();
            router.evaluate(&flat, &mut out);
            let record_id = rec.data["Event"]["System"]["EventRecordID"].to_string();
            for m in out
                .iter()
                .filter(|m| m.rule.logsource.product.as_deref() == Some("windows"))
            {
                engine.insert((
                    m.rule.id.clone().unwrap_or_default(),
                    format!("{rel}#{record_id}"),
                ));
            }
        }
    }
    let oracle: BTreeSet<(String, String)> = oracle
        .as_object()
        .expect("map")
        .iter()
        .flat_map(|(id, v)| {
            v["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(move |e| (id.clone(), e.as_str().expect("key").to_owned()))
        })
        .collect();
    let diff: BTreeSet<(String, String)> = oracle.symmetric_difference(&engine).cloned().collect();
    let unexplained: Vec<_> = diff.difference(&explained).collect();
    let stale: Vec<_> = explained.difference(&diff).collect();
    println!(
        "oracle: {records} records, engine {} matches, oracle {} matches, {} differences ({} explained)",
        engine.len(),
        oracle.len(),
        diff.len(),
        diff.len() - unexplained.len()
    );
    for u in &unexplained {
        println!("UNEXPLAINED {} {}", u.0, u.1);
    }
    for s in &stale {
        println!("STALE {} {}", s.0, s.1);
    }
    assert!(
        unexplained.is_empty(),
        "{} unexplained differences from the oracle",
        unexplained.len()
    );
    assert!(
        stale.is_empty(),
        "{} explained differences no longer occur",
        stale.len()
    );
}
