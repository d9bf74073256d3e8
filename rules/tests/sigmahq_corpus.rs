//! Conformance test 1: every SigmaHQ rule loads, or is rejected only for an
//! `expand` placeholder without configured values.

mod common;

use picket_rules::{EngineConfig, RuleSet};

#[test]
fn every_sigmahq_rule_loads() {
    let Some(root) = common::sigmahq() else {
        return;
    };
    let config = EngineConfig::new();
    let mut total_ok = 0;
    let mut total_placeholder = 0;
    let mut unexpected = Vec::new();
    for dir in ["rules", "rules-threat-hunting", "rules-emerging-threats"] {
        let loaded =
            RuleSet::from_dir(root.join(dir), &config).expect("rule directory is readable");
        let placeholder = loaded
            .errors
            .iter()
            .filter(|e| e.is_unconfigured_placeholder())
            .count();
        println!(
            "{dir}: {} loaded, {placeholder} rejected for unconfigured placeholders",
            loaded.rules.len()
        );
        total_ok += loaded.rules.len();
        total_placeholder += placeholder;
        unexpected.extend(
            loaded
                .errors
                .into_iter()
                .filter(|e| !e.is_unconfigured_placeholder()),
        );
    }
    println!(
        "total: {} files, {total_ok} loaded, {total_placeholder} placeholder rejections, {} other errors",
        total_ok + total_placeholder + unexpected.len(),
        unexpected.len()
    );
    for e in &unexpected {
        println!("ERROR {e}");
    }
    assert!(
        unexpected.is_empty(),
        "{} rules failed to load",
        unexpected.len()
    );
    assert!(total_ok > 3_500, "suspiciously few rules: {total_ok}");
}

#[test]
fn placeholder_rules_load_when_configured() {
    let Some(root) = common::sigmahq() else {
        return;
    };
    let dir = root.join("rules-placeholder");
    if !dir.is_dir() {
        return;
    }
    // A rule reports its first unconfigured placeholder only: configure
    // what was reported and load again until nothing new turns up.
    let mut names: Vec<String> = Vec::new();
    let mut config = EngineConfig::new();
    let mut rounds = 0;
    let loaded = loop {
        let loaded = RuleSet::from_dir(&dir, &config).expect("readable");
        let mut new: Vec<String> = loaded
            .errors
            .iter()
            .filter_map(|e| match &e.kind {
                picket_rules::ErrorKind::UnconfiguredPlaceholder(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        new.sort();
        new.dedup();
        rounds += 1;
        if new.is_empty() || rounds > 10 {
            break loaded;
        }
        for n in new {
            config = config.with_placeholder(&n, ["placeholder-value"]);
            names.push(n);
        }
    };
    println!(
        "rules-placeholder: placeholders {names:?}; with values configured {} load, {} errors",
        loaded.rules.len(),
        loaded.errors.len()
    );
    for e in &loaded.errors {
        println!("ERROR {e}");
    }
    assert!(loaded
        .errors
        .iter()
        .all(|e| !e.is_unconfigured_placeholder()));
}

#[test]
fn deprecated_and_unsupported_are_parsed_and_reported() {
    let Some(root) = common::sigmahq() else {
        return;
    };
    for dir in ["deprecated", "unsupported"] {
        let path = root.join(dir);
        if !path.is_dir() {
            continue;
        }
        let loaded = RuleSet::from_dir(&path, &EngineConfig::new()).expect("readable");
        println!(
            "{dir}: {} loaded, {} rejected",
            loaded.rules.len(),
            loaded.errors.len()
        );
        for e in &loaded.errors {
            println!("  {e}");
        }
    }
}
