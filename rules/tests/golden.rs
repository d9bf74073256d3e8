//! Golden corpus: each folder of `tests/golden/` is one case with
//! - one or more rules (`*.yml`), loaded together;
//! - `events.jsonl`: one object per line, `{"event": {...}}` with an optional
//!   `"logsource": {"product": .., "category": .., "service": ..}` (default:
//!   the logsource of the case's first rule), or `{"windows": {...}}` for a
//!   Windows record (evtx JSON or already flat) routed by channel and id;
//! - optionally `config.json`: `{"placeholders": {"name": ["value", ...]}}`;
//!   A line may carry `"ts"` (milliseconds; default: line number × 1000) for
//!   correlation rules, or be `{"advance": ms}` to move correlation time;
//! - `expected.jsonl`: the load errors, then every match as
//!   `{"line", "rule", "level", "fields"}` and every fired correlation as
//!   `{"line", "correlation", "value", "group", "first", "last"}`.
//!
//! `expected.jsonl` is only ever written by the bless command:
//! `PICKET_BLESS=1 cargo test -p picket-rules --test golden`.
//! Review the diff of a blessed file before committing it.

use std::fmt::Write as _;
use std::path::Path;

use picket_rules::{
    windows, CorrelationLimits, CorrelationMatch, EngineConfig, LogSource, RuleSet,
};
use serde_json::Value;

fn logsource(v: &Value) -> LogSource {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    LogSource::new(s("product"), s("category"), s("service"))
}

fn run_case(dir: &Path) -> String {
    let mut config = EngineConfig::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("config.json")) {
        let cfg: Value = serde_json::from_str(&text).expect("config.json is JSON");
        if let Some(Value::Object(ph)) = cfg.get("placeholders") {
            for (name, values) in ph {
                let values: Vec<String> = values
                    .as_array()
                    .expect("placeholder values are a list")
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .expect("placeholder value is a string")
                            .to_owned()
                    })
                    .collect();
                config = config.with_placeholder(name, values);
            }
        }
    }
    let mut rule_files: Vec<_> = std::fs::read_dir(dir)
        .expect("case folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    rule_files.sort();
    let sources = rule_files.iter().map(|p| {
        let name = p
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        (name, std::fs::read_to_string(p).expect("rule file"))
    });
    let loaded = RuleSet::from_sources(sources, &config);
    let mut out = String::new();
    for e in &loaded.errors {
        writeln!(out, "{{\"error\":{}}}", Value::String(e.to_string())).expect("write to string");
    }
    let default_ls = loaded.rules.rules().next().map(|r| {
        LogSource::new(
            r.logsource.product.as_deref(),
            r.logsource.category.as_deref(),
            r.logsource.service.as_deref(),
        )
    });
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default();
    let mut matches = Vec::new();
    let mut correlator = loaded.rules.correlator(CorrelationLimits::default());
    let mut fired = Vec::new();
    let q = |v: &str| Value::String(v.to_owned()).to_string();
    let write_fired = |out: &mut String, line: usize, fired: &mut Vec<CorrelationMatch>| {
        for c in fired.drain(..) {
            let group: Vec<String> = c
                .group
                .iter()
                .map(|(k, v)| format!("{}:{}", q(k), q(v)))
                .collect();
            let rule = c.rule.id.clone().unwrap_or_else(|| c.rule.title.clone());
            writeln!(
                out,
                "{{\"line\":{line},\"correlation\":{},\"value\":{},\"group\":{{{}}},\"first\":{},\"last\":{}}}",
                q(&rule),
                c.value,
                group.join(","),
                c.first_ms,
                c.last_ms
            )
            .expect("write to string");
        }
    };
    for (n, line) in events.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: Value = serde_json::from_str(line).expect("events.jsonl line is JSON");
        if let Some(t) = rec.get("advance").and_then(Value::as_i64) {
            correlator.advance(t, &mut fired);
            write_fired(&mut out, n + 1, &mut fired);
            continue;
        }
        let ts = rec
            .get("ts")
            .and_then(Value::as_i64)
            .unwrap_or(i64::try_from(n).expect("line") * 1000);
        let ls = rec
            .get("logsource")
            .map(logsource)
            .or_else(|| default_ls.clone())
            .unwrap_or_default();
        matches.clear();
        if let Some(win) = rec.get("windows") {
            // A Windows record, raw (`{"Event": ...}`) or already flat:
            // routed by channel and event id.
            let flat = windows::normalize_evtx(win)
                .or_else(|| win.as_object().cloned())
                .expect("`windows` is an object");
            windows::evaluate(&loaded.rules, &flat, &mut matches);
        } else {
            let event = rec.get("event").expect("line has an `event` or `windows`");
            loaded.rules.evaluate(&ls, event, &mut matches);
            correlator.process(ts, event, &mut matches, &mut fired);
        }
        matches.sort_by(|a, b| a.rule.title.cmp(&b.rule.title));
        for m in &matches {
            // Written by hand so that the text does not depend on whether
            // serde_json keeps key order (a feature other crates may turn on).
            let mut fields: Vec<_> = m
                .fields
                .iter()
                .map(|f| format!("{}:{}", q(&f.name), q(&f.value)))
                .collect();
            fields.sort();
            let rule = m.rule.id.clone().unwrap_or_else(|| m.rule.title.clone());
            let level = m.rule.level.map_or("null".to_owned(), |l| q(l.as_str()));
            writeln!(
                out,
                "{{\"line\":{},\"rule\":{},\"level\":{level},\"fields\":{{{}}}}}",
                n + 1,
                q(&rule),
                fields.join(",")
            )
            .expect("write to string");
        }
        write_fired(&mut out, n + 1, &mut fired);
    }
    out
}

#[test]
fn golden_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var("PICKET_BLESS").is_ok_and(|v| v == "1");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/golden exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut failed = Vec::new();
    for case in &cases {
        let got = run_case(case);
        let path = case.join("expected.jsonl");
        if bless {
            std::fs::write(&path, &got).expect("write expected.jsonl");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            println!("--- {} expected\n{want}+++ got\n{got}", case.display());
            failed.push(
                case.file_name()
                    .expect("case name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    println!("golden: {} cases, {} failed", cases.len(), failed.len());
    assert!(cases.len() >= 10, "golden corpus is missing");
    assert!(
        failed.is_empty(),
        "golden cases differ: {failed:?} (bless with PICKET_BLESS=1 after review)"
    );
}
