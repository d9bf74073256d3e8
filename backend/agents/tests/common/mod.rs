//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::panic, reason = "test helpers fail tests by panicking")]

use std::path::PathBuf;

use picket_rules::{EngineConfig, RuleSet};

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
