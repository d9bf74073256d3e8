//! The literal prefilter must never change a result: every Windows rule of
//! SigmaHQ over every record of the shared EVTX samples and of the
//! regression data, with and without the prefilter, gives the same matches.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use picket_rules::{windows, EngineConfig, RuleSet};

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

#[test]
fn prefilter_changes_nothing() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let root = shared.join("data/sigmahq");
    let mut texts = Vec::new();
    for dir in ["rules", "rules-threat-hunting", "rules-emerging-threats"] {
        for path in common::yaml_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&path).expect("rule file");
            texts.push((path, text));
        }
    }
    let fast = RuleSet::from_sources(texts.clone(), &EngineConfig::new()).rules;
    let mut slow_cfg = EngineConfig::new();
    slow_cfg.no_prefilter = true;
    let slow = RuleSet::from_sources(texts, &slow_cfg).rules;

    let mut files = Vec::new();
    evtx_files(&shared.join("data/evtx"), &mut files);
    evtx_files(&root.join("regression_data"), &mut files);
    files.sort();
    let (mut records, mut fast_hits, mut slow_hits) = (0usize, BTreeSet::new(), BTreeSet::new());
    let mut out = Vec::new();
    for file in &files {
        let Ok(mut parser) = evtx::EvtxParser::from_path(file) else {
            continue;
        };
        for rec in parser.records_json_value().flatten() {
            let Some(flat) = windows::normalize_evtx(&rec.data) else {
                continue;
            };
            records += 1;
            for (set, hits) in [(&fast, &mut fast_hits), (&slow, &mut slow_hits)] {
                out.clear();
                windows::evaluate(set, &flat, &mut out);
                for m in &out {
                    hits.insert((records, m.rule.id.clone().unwrap_or_default()));
                }
            }
        }
    }
    println!(
        "{} files, {records} records, {} matches",
        files.len(),
        slow_hits.len()
    );
    let missed: Vec<_> = slow_hits.difference(&fast_hits).take(20).collect();
    let extra: Vec<_> = fast_hits.difference(&slow_hits).take(20).collect();
    assert!(
        missed.is_empty() && extra.is_empty(),
        "missed {missed:?}, extra {extra:?}"
    );
    assert!(records > 1000, "too few records: {records}");
}
