//! (c) on real records: every record of the shared EVTX samples, rendered
//! by the `evtx` crate, and its Winlogbeat document map to the same Sigma
//! fields and logsources and raise the same SigmaHQ Windows
//! process_creation rules.

mod common;

use picket_agents::{map_json, Mapped};
use picket_rules::{Event, RuleSet};

fn as_text(ev: &Mapped) -> Vec<(String, String)> {
    ev.fields
        .keys()
        .map(|k| {
            (
                k.clone(),
                ev.field(k).map(|v| v.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

fn titles(ev: &Mapped, rules: &RuleSet) -> Vec<String> {
    let mut out = Vec::new();
    ev.evaluate(rules, &mut out);
    let mut t: Vec<String> = out.iter().map(|m| m.rule.title.clone()).collect();
    t.sort();
    t
}

#[test]
fn winlogbeat_of_every_sample_record_maps_like_its_evtx_json() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let rules = common::sigmahq_rules(&shared, "windows/process_creation");
    let mut files = Vec::new();
    let mut stack = vec![shared.join("data/evtx")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("readable").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "evtx") {
                files.push(p);
            }
        }
    }
    files.sort();
    let (mut records, mut unmapped, mut process_creation, mut alerts) = (0, 0, 0, 0);
    for f in &files {
        let Ok(mut parser) = evtx::EvtxParser::from_path(f) else {
            continue;
        };
        for rec in parser.records_json_value().flatten() {
            let Ok(from_evtx) = map_json(&rec.data) else {
                unmapped += 1;
                continue;
            };
            records += 1;
            let from_beat = map_json(&common::winlogbeat_of(&rec.data)).expect("winlogbeat maps");
            assert_eq!(as_text(&from_evtx), as_text(&from_beat), "{}", f.display());
            assert_eq!(from_evtx.sources, from_beat.sources);
            let is_pc = from_evtx
                .sources
                .iter()
                .any(|s| s.category.as_deref() == Some("process_creation"));
            if is_pc {
                process_creation += 1;
                let want = titles(&from_evtx, &rules);
                alerts += want.len();
                assert_eq!(titles(&from_beat, &rules), want, "{}", f.display());
            }
        }
    }
    println!(
        "{records} records mapped ({unmapped} not), {process_creation} process_creation, {alerts} alerts"
    );
    // 8063 records, 1551 of them process starts raising 643 alerts, when
    // this was written; the samples only grow.
    assert!(records >= 8_000, "{records}");
    assert!(process_creation >= 1_500, "{process_creation}");
    assert!(alerts >= 600, "{alerts}");
}
