//! Prints the engine's matches over a folder of EVTX files in the sigma
//! oracle's output format (`{rule_id: {"path", "n", "events": ["file#record"]}}`),
//! Windows rules only, for comparison with `shared/tools/sigma-oracle`.
//!
//! `cargo run --release -p picket-rules --example evtx_matches -- SIGMA_ROOT EVTX_DIR OUT.json`

use std::collections::BTreeMap;
use std::path::Path;

use picket_rules::{files_with_extensions, windows, EngineConfig, RuleSet};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, evtx_dir, out_path] = args.as_slice() else {
        return Err("usage: evtx_matches SIGMA_ROOT EVTX_DIR OUT.json".into());
    };
    let mut rule_files = Vec::new();
    for d in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        rule_files.extend(files_with_extensions(&Path::new(root).join(d), &["yml"])?);
    }
    rule_files.sort();
    let mut sources = Vec::new();
    for p in rule_files {
        let text = std::fs::read_to_string(&p)?;
        sources.push((p, text));
    }
    let loaded = RuleSet::from_sources(sources, &EngineConfig::new());
    eprintln!(
        "{} rules, {} errors",
        loaded.rules.len(),
        loaded.errors.len()
    );
    let set = loaded.rules;
    let router = windows::Router::new(&set);
    let evtx_files = files_with_extensions(Path::new(evtx_dir), &["evtx"])?;
    let mut fired: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let (mut records, mut failed) = (0usize, 0usize);
    let mut out = Vec::new();
    for file in &evtx_files {
        let rel = file
            .strip_prefix(evtx_dir)
            .unwrap_or(file)
            .display()
            .to_string();
        let Ok(mut parser) = evtx::EvtxParser::from_path(file) else {
            failed += 1;
            continue;
        };
        for rec in parser.records_json_value() {
            let Ok(rec) = rec else { continue };
            let Some(flat) = windows::normalize_evtx(&rec.data) else {
                continue;
            };
            records += 1;
            out.clear();
            router.evaluate(&flat, &mut out);
            let rid = rec.data["Event"]["System"]["EventRecordID"].to_string();
            for m in &out {
                if m.rule.logsource.product.as_deref() != Some("windows") {
                    continue;
                }
                let id = m.rule.id.clone().unwrap_or_default();
                let path = m
                    .rule
                    .path
                    .strip_prefix(root)
                    .unwrap_or(&m.rule.path)
                    .display()
                    .to_string();
                fired
                    .entry(id)
                    .or_insert_with(|| (path, Vec::new()))
                    .1
                    .push(format!("{rel}#{rid}"));
            }
        }
    }
    let mut json = serde_json::Map::new();
    let mut total = 0;
    for (id, (path, mut events)) in fired {
        events.sort();
        total += events.len();
        json.insert(
            id,
            serde_json::json!({"path": path, "n": events.len(), "events": events}),
        );
    }
    eprintln!(
        "{records} records ({failed} files unreadable), {} rules fired, {total} matches",
        json.len()
    );
    std::fs::write(
        out_path,
        serde_json::to_string_pretty(&serde_json::Value::Object(json))?,
    )?;
    Ok(())
}
