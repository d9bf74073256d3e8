//! Conformance test 2: SigmaHQ `regression_data`. Each case names a rule and
//! an EVTX file with a JSON twin; the rule must match at least
//! `match_count` of the twin's events, routed as Windows events.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use picket_rules::{windows, EngineConfig, RuleSet};
use yaml_rust2::{Yaml, YamlLoader};

fn info_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            info_files(&path, out);
        } else if path.file_name().is_some_and(|n| n == "info.yml") {
            out.push(path);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    JsonTwin,
    Evtx,
}

fn records(root: &Path, evtx: &str, source: Source) -> Vec<serde_json::Value> {
    match source {
        Source::JsonTwin => {
            let json_path = root.join(evtx.replace(".evtx", ".json"));
            common::json_stream(&std::fs::read_to_string(&json_path).expect("JSON twin"))
        }
        Source::Evtx => {
            let mut parser = evtx::EvtxParser::from_path(root.join(evtx)).expect("EVTX file opens");
            parser
                .records_json_value()
                .map(|r| r.expect("EVTX record parses").data)
                .collect()
        }
    }
}

#[test]
fn regression_data_json_twins() {
    run(Source::JsonTwin);
}

#[test]
fn regression_data_evtx() {
    run(Source::Evtx);
}

fn run(source: Source) {
    let Some(root) = common::sigmahq() else {
        return;
    };
    let config = EngineConfig::new();
    let mut texts = Vec::new();
    for dir in ["rules", "rules-threat-hunting", "rules-emerging-threats"] {
        for path in common::yaml_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&path).expect("rule file");
            texts.push((path, text));
        }
    }
    let set = RuleSet::from_sources(texts, &config).rules;
    let ids: HashSet<&str> = set.rules().filter_map(|r| r.id.as_deref()).collect();

    let mut infos = Vec::new();
    info_files(&root.join("regression_data"), &mut infos);
    infos.sort();
    let (mut pass, mut fail) = (0, 0);
    let mut failures = Vec::new();
    for info_path in infos {
        let text = std::fs::read_to_string(&info_path).expect("info.yml");
        let doc = &YamlLoader::load_from_str(&text).expect("info.yml is YAML")[0];
        let rule_id = doc["rule_metadata"][0]["id"]
            .as_str()
            .expect("rule id")
            .to_owned();
        let Yaml::Array(cases) = &doc["regression_tests_info"] else {
            continue;
        };
        for case in cases {
            let evtx = case["path"].as_str().expect("case path");
            let want = usize::try_from(case["match_count"].as_i64().unwrap_or(1)).expect("count");
            let events = records(&root, evtx, source);
            let mut got = 0;
            let mut out = Vec::new();
            for record in &events {
                let flat = windows::normalize_evtx(record).expect("an EVTX record");
                out.clear();
                windows::evaluate(&set, &flat, &mut out);
                got += out
                    .iter()
                    .filter(|m| m.rule.id.as_deref() == Some(rule_id.as_str()))
                    .count();
            }
            if ids.contains(rule_id.as_str()) && got >= want {
                pass += 1;
            } else {
                fail += 1;
                failures.push(format!("{rule_id} {evtx}: {got} < {want}"));
            }
        }
    }
    println!("regression_data ({source:?}): {pass} passed, {fail} failed");
    for f in &failures {
        println!("FAIL {f}");
    }
    assert_eq!(fail, 0);
    assert!(pass >= 202, "expected the 202 SigmaHQ cases, ran {pass}");
}
