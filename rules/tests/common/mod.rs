//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::panic, reason = "test helpers fail tests by panicking")]

use std::path::PathBuf;

/// `../../shared` from this crate, or `None` (after saying so) when it is
/// missing outside CI. In CI (`CI=true`) a missing folder fails the test.
pub fn shared_dir() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Resolve symlinks so that a crate reached through a link still finds
    // the folder beside the real checkout.
    let manifest = std::fs::canonicalize(&manifest).unwrap_or(manifest);
    let dir = manifest.join("../../shared");
    if dir.is_dir() {
        return Some(std::fs::canonicalize(&dir).unwrap_or(dir));
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("shared data folder {} is missing (CI=true)", dir.display());
    }
    println!("SKIPPED: shared data folder {} is missing", dir.display());
    None
}

pub fn sigmahq() -> Option<PathBuf> {
    shared_dir().map(|d| d.join("data/sigmahq"))
}

/// Reads a file of one or more concatenated JSON values.
pub fn json_stream(text: &str) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .expect("valid JSON stream")
}

/// Every `.yml` file below `dir`, sorted.
pub fn yaml_files(dir: &std::path::Path) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Base64 (RFC 4648 alphabet, with padding), written independently of the
/// engine's encoder so the tests check it.
pub fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::new();
    for &b in data {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(char::from(A[((bits >> n) & 63) as usize]));
        }
    }
    if n > 0 {
        out.push(char::from(A[((bits << (6 - n)) & 63) as usize]));
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// A one-rule set with the given detection body (indented under
/// `detection:`), logsource `product: test`.
pub fn one_rule(detection: &str) -> picket_rules::RuleSet {
    let body: String = detection.lines().map(|l| format!("    {l}\n")).collect();
    let text = format!("title: t\nid: prop\nlogsource:\n    product: test\ndetection:\n{body}");
    let loaded =
        picket_rules::RuleSet::from_sources([("t.yml", text)], &picket_rules::EngineConfig::new());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.rules
}

/// Whether the set matches the event (logsource `product: test`).
pub fn fires(set: &picket_rules::RuleSet, event: &serde_json::Value) -> bool {
    let mut out = Vec::new();
    set.evaluate(
        &picket_rules::LogSource::new(Some("test"), None, None),
        event,
        &mut out,
    ) > 0
}

/// A YAML single-quoted scalar.
pub fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
