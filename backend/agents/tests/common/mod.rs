//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::panic, reason = "test helpers fail tests by panicking")]

use std::path::PathBuf;

use picket_rules::{EngineConfig, RuleSet};
use serde_json::{json, Value};

/// `../../../shared` from this crate (`/work/shared` beside the checkout),
/// or `None` (after saying so) when it is missing outside CI. In CI
/// (`CI=true`) a missing folder fails the test.
pub fn shared_dir() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::canonicalize(&manifest).unwrap_or(manifest);
    let dir = manifest.join("../../../shared");
    if dir.is_dir() {
        return Some(std::fs::canonicalize(&dir).unwrap_or(dir));
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("shared data folder {} is missing (CI=true)", dir.display());
    }
    println!("SKIPPED: shared data folder {} is missing", dir.display());
    None
}

/// A SigmaHQ rule folder, loaded with no field mappings (the agents crate
/// puts Sigma names on the events); every rule must load.
pub fn sigmahq_rules(shared: &std::path::Path, sub: &str) -> RuleSet {
    let loaded = RuleSet::from_dir(
        shared.join("data/sigmahq/rules").join(sub),
        &EngineConfig::new(),
    )
    .expect("rule folder readable");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.rules
}

/// What Winlogbeat 8 ships for an evtx record: `winlog.*` with every
/// event_data value as a string, `event.code` and `winlog.event_id` as
/// strings, plus the ECS copies it adds (`process.*`, `host.*`).
pub fn winlogbeat_of(record: &Value) -> Value {
    let ev = &record["Event"];
    let sys = &ev["System"];
    let eid = match &sys["EventID"] {
        Value::Object(o) => o["#text"].clone(),
        other => other.clone(),
    };
    let text = |v: &Value| match v {
        Value::String(s) => Value::String(s.clone()),
        Value::Null => Value::String(String::new()),
        other => Value::String(other.to_string()),
    };
    let data: serde_json::Map<String, Value> = ev["EventData"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    // Winlogbeat flattens the one provider element of UserData.
    let user_data: serde_json::Map<String, Value> = ev["UserData"]
        .as_object()
        .into_iter()
        .flat_map(|ud| ud.values())
        .filter_map(Value::as_object)
        .flatten()
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    json!({
        "@timestamp": "2026-11-29T03:00:00.000Z",
        "agent": {"type": "winlogbeat", "version": "8.15.0"},
        "ecs": {"version": "8.0.0"},
        "event": {"code": text(&eid), "kind": "event", "provider": sys["Provider"]["#attributes"]["Name"],
                  "created": "2026-11-29T03:00:01.000Z"},
        "host": {"name": "ws01", "os": {"family": "windows"}},
        "log": {"level": "information"},
        "process": {"executable": data.get("Image").or(data.get("NewProcessName")).cloned()},
        "winlog": {
            "api": "wineventlog",
            "channel": sys["Channel"], "computer_name": sys["Computer"],
            "event_id": text(&eid), "provider_name": sys["Provider"]["#attributes"]["Name"],
            "record_id": "4711", "event_data": data, "user_data": user_data
        }
    })
}
