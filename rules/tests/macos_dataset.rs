//! The macOS SigmaHQ rules on the Elastic ECS events of the shared macOS
//! dataset, through [`FieldMapping::macos_ecs`]. Malformed files in the
//! dataset are reported and skipped.

mod common;

use std::collections::BTreeMap;

use picket_rules::{EngineConfig, FieldMapping, LogSource, RuleSet};
use serde_json::Value;

/// ECS `event.category`/`event.type` to the Sigma category.
fn category(ev: &Value) -> Option<&'static str> {
    let has = |field: &str, want: &str| match &ev["event"][field] {
        Value::Array(v) => v.iter().any(|x| x == want),
        Value::String(s) => s == want,
        _ => false,
    };
    if has("category", "process") && has("type", "start") {
        Some("process_creation")
    } else if has("category", "file") {
        Some("file_event")
    } else if has("category", "network") {
        Some("network_connection")
    } else {
        None
    }
}

#[test]
fn macos_rules_fire_on_the_macos_dataset() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let config = EngineConfig::new().with_field_mapping(FieldMapping::macos_ecs());
    let loaded =
        RuleSet::from_dir(shared.join("data/sigmahq/rules/macos"), &config).expect("readable");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let set = loaded.rules;
    let dir = shared.join("data/macos-attack-dataset");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dataset")
        .flat_map(|d| {
            std::fs::read_dir(d.expect("entry").path())
                .into_iter()
                .flatten()
        })
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let (mut events, mut malformed) = (0, 0);
    let mut fired: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("file");
        let docs: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .collect();
        let Ok(docs) = docs else {
            malformed += 1;
            continue;
        };
        for doc in docs {
            let ev = doc.get("_source").cloned().unwrap_or(doc);
            let Some(cat) = category(&ev) else { continue };
            events += 1;
            out.clear();
            set.evaluate(&LogSource::category("macos", cat), &ev, &mut out);
            for m in &out {
                let name = f.file_name().expect("name").to_string_lossy().into_owned();
                fired.entry(m.rule.title.clone()).or_default().push(name);
            }
        }
    }
    println!(
        "macOS: {} files ({malformed} malformed, skipped), {events} events, {} rules fired",
        files.len(),
        fired.len()
    );
    for (rule, files) in &fired {
        println!("  {rule}: {files:?}");
    }
    assert!(events >= 50, "too few events: {events}");
    assert!(
        fired.len() >= 5,
        "too few macOS rules fired: {}",
        fired.len()
    );
}
