//! Correlation state stays bounded, and what is dropped is counted.

use picket_rules::{CorrelationLimits, EngineConfig, LogSource, RuleSet};
use serde_json::json;

const RULES: &str = "title: Hit\nid: hit\nname: hit\nlogsource: {product: test}\ndetection:\n    s:\n        kind: hit\n    condition: s\n---\ntitle: Many hits\nid: many-hits\ncorrelation:\n    type: event_count\n    rules: [hit]\n    group-by: [key]\n    timespan: 1h\n    condition:\n        gte: 1000000\n";

fn set() -> RuleSet {
    let loaded = RuleSet::from_sources([("c.yml", RULES)], &EngineConfig::new());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.rules.correlation_rules().count(), 1);
    loaded.rules
}

#[test]
fn groups_are_capped_and_evictions_counted() {
    let set = set();
    let mut c = set.correlator(CorrelationLimits::new(100, 1000));
    let ls = LogSource::new(Some("test"), None, None);
    let (mut matches, mut fired) = (Vec::new(), Vec::new());
    for i in 0..1_000 {
        let ev = json!({"kind": "hit", "key": format!("k{i}")});
        matches.clear();
        set.evaluate(&ls, &ev, &mut matches);
        assert_eq!(matches.len(), 1);
        c.process(i, &ev, &mut matches, &mut fired);
        // `generate: false`: the base match is not shown.
        assert!(matches.is_empty());
        assert!(c.stats().groups <= 100, "{:?}", c.stats());
    }
    assert!(fired.is_empty());
    let stats = c.stats();
    assert!(stats.groups_evicted >= 900, "{stats:?}");
}

#[test]
fn events_per_group_are_capped() {
    let set = set();
    let mut c = set.correlator(CorrelationLimits::new(10, 50));
    let ls = LogSource::new(Some("test"), None, None);
    let (mut matches, mut fired) = (Vec::new(), Vec::new());
    let ev = json!({"kind": "hit", "key": "same"});
    for i in 0..500 {
        matches.clear();
        set.evaluate(&ls, &ev, &mut matches);
        c.process(i, &ev, &mut matches, &mut fired);
    }
    assert_eq!(c.stats().events_dropped, 450);
    assert_eq!(c.stats().groups, 1);
}

#[test]
fn expired_groups_are_swept() {
    let set = set();
    let mut c = set.correlator(CorrelationLimits::default());
    let ls = LogSource::new(Some("test"), None, None);
    let (mut matches, mut fired) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let ev = json!({"kind": "hit", "key": format!("k{i}")});
        matches.clear();
        set.evaluate(&ls, &ev, &mut matches);
        c.process(i * 1000, &ev, &mut matches, &mut fired);
    }
    assert_eq!(c.stats().groups, 10);
    c.advance(2 * 3_600_000, &mut fired);
    assert_eq!(c.stats().groups, 0);
    assert_eq!(c.stats().groups_evicted, 0, "expiry is not eviction");
}
