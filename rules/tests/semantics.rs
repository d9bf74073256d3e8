//! Hand-checked semantics of every detection form, condition form and
//! modifier. Each test states its expectation explicitly (no blessing).

mod common;

use common::b64;
use picket_rules::{EngineConfig, ErrorKind, LogSource, Place, RuleSet};
use serde_json::{json, Value};

fn rule(detection: &str) -> String {
    let body: String = detection.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "title: t\nid: test-rule\nlevel: high\nlogsource:\n    product: test\ndetection:\n{body}"
    )
}

fn load_with(detection: &str, config: &EngineConfig) -> RuleSet {
    let loaded = RuleSet::from_sources([("t.yml", rule(detection))], config);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.rules
}

fn hits_with(detection: &str, config: &EngineConfig, event: &Value) -> bool {
    let set = load_with(detection, config);
    let mut out = Vec::new();
    set.evaluate(&LogSource::new(Some("test"), None, None), event, &mut out) == 1
}

fn hits(detection: &str, event: Value) -> bool {
    hits_with(detection, &EngineConfig::new(), &event)
}

fn load_error(detection: &str) -> picket_rules::RuleError {
    let loaded = RuleSet::from_sources([("bad.yml", rule(detection))], &EngineConfig::new());
    assert_eq!(loaded.rules.len(), 0);
    assert_eq!(loaded.errors.len(), 1);
    loaded.errors.into_iter().next().expect("one error")
}

// ---- detection forms -------------------------------------------------------

#[test]
fn map_is_and_list_is_or() {
    let d = "sel:\n    A: x\n    B: [y, z]\ncondition: sel";
    assert!(hits(d, json!({"A": "x", "B": "z"})));
    assert!(!hits(d, json!({"A": "x", "B": "w"})));
    assert!(!hits(d, json!({"B": "y"})));
}

#[test]
fn list_of_maps_is_or() {
    let d = "sel:\n    - A: x\n    - B: y\ncondition: sel";
    assert!(hits(d, json!({"A": "x"})));
    assert!(hits(d, json!({"B": "y"})));
    assert!(!hits(d, json!({"A": "y", "B": "x"})));
}

#[test]
fn plain_values_are_case_insensitive_and_exact() {
    let d = "sel:\n    A: 'Hello World'\ncondition: sel";
    assert!(hits(d, json!({"A": "HELLO world"})));
    assert!(!hits(d, json!({"A": "Hello World!"})));
    // Unicode folding, not just ASCII.
    assert!(hits(
        "sel:\n    A: 'ÄÖÜ'\ncondition: sel",
        json!({"A": "äöü"})
    ));
}

#[test]
fn keywords_search_every_value() {
    let d = "keywords:\n    - 'evil.exe'\n    - 'mimi*katz'\ncondition: keywords";
    assert!(hits(d, json!({"A": "run C:\\EVIL.EXE now"})));
    assert!(hits(d, json!({"nested": {"B": "mimi--katz"}})));
    assert!(!hits(d, json!({"A": "good.exe"})));
    let all = "keywords:\n    '|all':\n        - 'alpha'\n        - 'beta'\ncondition: keywords";
    assert!(hits(all, json!({"A": "alpha", "B": "beta"})));
    assert!(!hits(all, json!({"A": "alpha"})));
}

fn sel(value: &str) -> String {
    format!("sel:\n    A: {value}\ncondition: sel")
}

#[test]
fn wildcards_and_escapes() {
    assert!(hits(&sel("'a*c'"), json!({"A": "abbc"})));
    assert!(hits(&sel("'a?c'"), json!({"A": "abc"})));
    assert!(!hits(&sel("'a?c'"), json!({"A": "abbc"})));
    assert!(hits(&sel(r"'a\*c'"), json!({"A": "a*c"})));
    assert!(!hits(&sel(r"'a\*c'"), json!({"A": "abc"})));
    assert!(hits(&sel(r"'a\?'"), json!({"A": "a?"})));
    assert!(!hits(&sel(r"'a\?'"), json!({"A": "ab"})));
    // `\\*`: a backslash, then a wildcard.
    assert!(hits(&sel(r"'c:\\*'"), json!({"A": r"c:\temp"})));
    // `\\\*`: a backslash, then a literal star.
    assert!(hits(&sel(r"'c:\\\*'"), json!({"A": r"c:\*"})));
    assert!(!hits(&sel(r"'c:\\\*'"), json!({"A": r"c:\x"})));
    // `\\\\` is two backslashes.
    assert!(hits(&sel(r"'\\\\srv'"), json!({"A": r"\\srv"})));
    // A lone backslash before a normal character is a backslash.
    assert!(hits(&sel(r"'c:\windows'"), json!({"A": r"C:\Windows"})));
    assert!(hits(&sel(r"'c:\\windows'"), json!({"A": r"C:\Windows"})));
}

#[test]
fn null_empty_missing_exists() {
    let null = "sel:\n    A: null\ncondition: sel";
    assert!(hits(null, json!({})));
    assert!(hits(null, json!({"A": null})));
    assert!(!hits(null, json!({"A": ""})));
    let empty = "sel:\n    A: ''\ncondition: sel";
    assert!(hits(empty, json!({"A": ""})));
    assert!(!hits(empty, json!({})));
    assert!(!hits(empty, json!({"A": null})));
    let exists = "sel:\n    A|exists: true\ncondition: sel";
    assert!(hits(exists, json!({"A": ""})));
    assert!(hits(exists, json!({"A": null})));
    assert!(!hits(exists, json!({})));
    let absent = "sel:\n    A|exists: false\ncondition: sel";
    assert!(hits(absent, json!({})));
    assert!(!hits(absent, json!({"A": 1})));
}

#[test]
fn numbers_and_strings() {
    let d = "sel:\n    EventID: 4688\ncondition: sel";
    assert!(hits(d, json!({"EventID": 4688})));
    assert!(hits(d, json!({"EventID": "4688"})));
    assert!(!hits(d, json!({"EventID": 46880})));
    let s = "sel:\n    Port: '443'\ncondition: sel";
    assert!(hits(s, json!({"Port": 443})));
    assert!(hits(
        "sel:\n    Port|startswith: 44\ncondition: sel",
        json!({"Port": 443})
    ));
    assert!(hits(
        "sel:\n    B: true\ncondition: sel",
        json!({"B": true})
    ));
    assert!(hits(
        "sel:\n    B: true\ncondition: sel",
        json!({"B": "True"})
    ));
    assert!(!hits(
        "sel:\n    B: true\ncondition: sel",
        json!({"B": false})
    ));
}

#[test]
fn list_fields_match_any_element() {
    let d = "sel:\n    process.args|contains: '-enc'\ncondition: sel";
    assert!(hits(
        d,
        json!({"process": {"args": ["powershell", "-EncodedCommand"]}})
    ));
    assert!(!hits(d, json!({"process": {"args": ["powershell", "-c"]}})));
}

// ---- conditions ------------------------------------------------------------

fn cond(c: &str, event: Value) -> bool {
    let d = format!(
        "sel_a:\n    A: 1\nsel_b:\n    B: 1\nfilter_c:\n    C: 1\n_hidden:\n    H: 1\ncondition: {c}"
    );
    hits(&d, event)
}

#[test]
fn boolean_operators_and_precedence() {
    assert!(cond("sel_a and sel_b", json!({"A": 1, "B": 1})));
    assert!(!cond("sel_a and sel_b", json!({"A": 1})));
    assert!(cond("sel_a or sel_b", json!({"B": 1})));
    assert!(cond("not sel_a", json!({})));
    // and binds tighter than or: A or (B and C)
    assert!(cond("sel_a or sel_b and filter_c", json!({"A": 1})));
    assert!(!cond("(sel_a or sel_b) and filter_c", json!({"A": 1})));
    // not binds tighter than and: (not A) and B
    assert!(cond("not sel_a and sel_b", json!({"B": 1})));
    assert!(!cond("not (sel_a and sel_b)", json!({"A": 1, "B": 1})));
    assert!(cond("not not sel_a", json!({"A": 1})));
}

#[test]
fn quantifiers_and_them() {
    assert!(cond("1 of sel_*", json!({"B": 1})));
    assert!(!cond("all of sel_*", json!({"B": 1})));
    assert!(cond("all of sel_*", json!({"A": 1, "B": 1})));
    assert!(cond("any of sel_*", json!({"A": 1})));
    // `them` skips `_hidden`.
    assert!(cond("all of them", json!({"A": 1, "B": 1, "C": 1})));
    assert!(!cond("1 of them", json!({"H": 1})));
    // An explicit pattern may still name an underscore identifier.
    assert!(cond("1 of _hid*", json!({"H": 1})));
    assert!(cond("2 of them", json!({"A": 1, "C": 1})));
    assert!(!cond("2 of them", json!({"A": 1})));
    assert!(cond("1 of sel_* and not 1 of filter_*", json!({"A": 1})));
    assert!(!cond(
        "1 of sel_* and not 1 of filter_*",
        json!({"A": 1, "C": 1})
    ));
}

#[test]
fn condition_list_is_or() {
    let d = "a:\n    A: 1\nb:\n    B: 1\ncondition:\n    - a\n    - b";
    assert!(hits(d, json!({"B": 1})));
    assert!(!hits(d, json!({"C": 1})));
}

// ---- modifiers -------------------------------------------------------------

#[test]
fn contains_startswith_endswith() {
    assert!(hits(
        "s:\n    A|contains: Mid\ncondition: s",
        json!({"A": "xxMIDxx"})
    ));
    assert!(hits(
        "s:\n    A|startswith: Beg\ncondition: s",
        json!({"A": "begin"})
    ));
    assert!(!hits(
        "s:\n    A|startswith: Beg\ncondition: s",
        json!({"A": "xbegin"})
    ));
    assert!(hits(
        "s:\n    A|endswith: '.EXE'\ncondition: s",
        json!({"A": "a.exe"})
    ));
    assert!(!hits(
        "s:\n    A|endswith: '.EXE'\ncondition: s",
        json!({"A": "a.exe "})
    ));
    // Wildcards inside a contains value still work.
    assert!(hits(
        "s:\n    A|contains: 'a*z'\ncondition: s",
        json!({"A": "--a-z--"})
    ));
    // Many needles use one automaton; the result must be the same.
    let many = "s:\n    A|contains: [one, two, three, four, five, six]\ncondition: s";
    assert!(hits(many, json!({"A": "xxSIXxx"})));
    assert!(!hits(many, json!({"A": "seven"})));
}

#[test]
fn all_modifier() {
    let d = "s:\n    A|contains|all: [foo, bar]\ncondition: s";
    assert!(hits(d, json!({"A": "bar foo"})));
    assert!(!hits(d, json!({"A": "foo"})));
}

#[test]
fn cased() {
    let d = "s:\n    A|cased: Foo\ncondition: s";
    assert!(hits(d, json!({"A": "Foo"})));
    assert!(!hits(d, json!({"A": "foo"})));
    assert!(hits(
        "s:\n    A|contains|cased: oO\ncondition: s",
        json!({"A": "foOo"})
    ));
    assert!(!hits(
        "s:\n    A|contains|cased: oO\ncondition: s",
        json!({"A": "fooo"})
    ));
}

#[test]
fn neq() {
    let d = "s:\n    A|neq: [x, y]\ncondition: s";
    assert!(hits(d, json!({"A": "z"})));
    assert!(!hits(d, json!({"A": "X"})));
    assert!(!hits(d, json!({"A": "y"})));
    // A missing field is not "different".
    assert!(!hits(d, json!({})));
    assert!(hits("s:\n    N|neq: 5\ncondition: s", json!({"N": 6})));
    assert!(!hits("s:\n    N|neq: 5\ncondition: s", json!({"N": 5})));
}

#[test]
fn windash() {
    let d = "s:\n    CommandLine|contains|windash: ' -exec '\ncondition: s";
    for dash in ["-", "/", "\u{2013}", "\u{2014}", "\u{2015}"] {
        assert!(
            hits(d, json!({"CommandLine": format!("x {dash}exec y")})),
            "{dash}"
        );
    }
    assert!(!hits(d, json!({"CommandLine": "x +exec y"})));
}

#[test]
fn regex_and_flags() {
    assert!(hits(
        "s:\n    A|re: '^ab+c$'\ncondition: s",
        json!({"A": "abbbc"})
    ));
    // Case-sensitive by default.
    assert!(!hits(
        "s:\n    A|re: '^abc$'\ncondition: s",
        json!({"A": "ABC"})
    ));
    assert!(hits(
        "s:\n    A|re|i: '^abc$'\ncondition: s",
        json!({"A": "ABC"})
    ));
    // Unanchored search.
    assert!(hits(
        "s:\n    A|re: 'b.d'\ncondition: s",
        json!({"A": "abcde"})
    ));
    assert!(hits(
        "s:\n    A|re|m: '^two$'\ncondition: s",
        json!({"A": "one\ntwo\nthree"})
    ));
    assert!(!hits(
        "s:\n    A|re: '^two$'\ncondition: s",
        json!({"A": "one\ntwo\nthree"})
    ));
    assert!(hits(
        "s:\n    A|re|s: 'one.two'\ncondition: s",
        json!({"A": "one\ntwo"})
    ));
    assert!(!hits(
        "s:\n    A|re: 'one.two'\ncondition: s",
        json!({"A": "one\ntwo"})
    ));
}

#[test]
fn base64_family() {
    // "http://" base64 is aHR0cDovLw==
    assert!(hits(
        "s:\n    A|base64: 'http://'\ncondition: s",
        json!({"A": "aHR0cDovLw=="})
    ));
    // base64 values are case-insensitive like any other value in Sigma.
    let off = "s:\n    A|base64offset|contains: 'http://'\ncondition: s";
    for (prefix, _) in [("", 0), ("x", 1), ("xy", 2)] {
        let encoded = b64(format!("{prefix}http://evil").as_bytes());
        assert!(
            hits(off, json!({"A": format!("cmd {encoded}")})),
            "offset {}",
            prefix.len()
        );
    }
    assert!(!hits(off, json!({"A": b64(b"https://evil")})));
    // wide + base64offset: PowerShell -EncodedCommand.
    let wide = "s:\n    A|wide|base64offset|contains: 'IEX'\ncondition: s";
    let utf16: Vec<u8> = "foo; IEX (bar)"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert!(hits(wide, json!({"A": b64(&utf16)})));
    let be = "s:\n    A|utf16be|base64: 'ab'\ncondition: s";
    assert!(hits(be, json!({"A": b64(&[0, b'a', 0, b'b'])})));
    let bom = "s:\n    A|utf16|base64: 'ab'\ncondition: s";
    assert!(hits(
        bom,
        json!({"A": b64(&[0xFF, 0xFE, b'a', 0, b'b', 0])})
    ));
    let le = "s:\n    A|utf16le|base64: 'ab'\ncondition: s";
    assert!(hits(le, json!({"A": b64(&[b'a', 0, b'b', 0])})));
}

#[test]
fn numeric_comparisons() {
    let e = |v: Value| json!({"N": v});
    assert!(hits("s:\n    N|lt: 10\ncondition: s", e(json!(9))));
    assert!(!hits("s:\n    N|lt: 10\ncondition: s", e(json!(10))));
    assert!(hits("s:\n    N|lte: 10\ncondition: s", e(json!(10))));
    assert!(hits("s:\n    N|gt: 10\ncondition: s", e(json!("11"))));
    assert!(!hits("s:\n    N|gt: 10\ncondition: s", e(json!(10))));
    assert!(hits("s:\n    N|gte: 10.5\ncondition: s", e(json!(10.5))));
    assert!(!hits("s:\n    N|gte: 10\ncondition: s", e(json!("ten"))));
    assert!(!hits("s:\n    N|gte: 10\ncondition: s", json!({})));
}

#[test]
fn time_parts() {
    let ts = json!({"T": "2024-03-05T22:47:13.123Z"});
    assert!(hits("s:\n    T|minute: 47\ncondition: s", ts.clone()));
    assert!(hits("s:\n    T|hour: 22\ncondition: s", ts.clone()));
    assert!(hits("s:\n    T|day: 5\ncondition: s", ts.clone()));
    assert!(hits("s:\n    T|week: 10\ncondition: s", ts.clone()));
    assert!(hits("s:\n    T|month: 3\ncondition: s", ts.clone()));
    assert!(hits("s:\n    T|year: 2024\ncondition: s", ts.clone()));
    assert!(!hits("s:\n    T|year: 2023\ncondition: s", ts.clone()));
    // Chained with a comparison: outside office hours.
    assert!(hits("s:\n    T|hour|gte: 20\ncondition: s", ts.clone()));
    assert!(!hits("s:\n    T|hour|lt: 8\ncondition: s", ts));
}

#[test]
fn cidr() {
    let d = "s:\n    Ip|cidr: ['10.0.0.0/8', 'fd00::/8']\ncondition: s";
    assert!(hits(d, json!({"Ip": "10.20.30.40"})));
    assert!(hits(d, json!({"Ip": "fd12::1"})));
    assert!(!hits(d, json!({"Ip": "11.0.0.1"})));
    assert!(!hits(d, json!({"Ip": "fe80::1"})));
    assert!(!hits(d, json!({"Ip": "hostname"})));
}

#[test]
fn expand_placeholders() {
    let d = "s:\n    User|expand: '%Admins%'\ncondition: s";
    let config = EngineConfig::new().with_placeholder("Admins", ["root", "adm*"]);
    assert!(hits_with(d, &config, &json!({"User": "ROOT"})));
    assert!(hits_with(d, &config, &json!({"User": "admin"})));
    assert!(!hits_with(d, &config, &json!({"User": "bob"})));
    let e = load_error(d);
    assert_eq!(e.kind, ErrorKind::UnconfiguredPlaceholder("Admins".into()));
    assert!(e.is_unconfigured_placeholder());
    assert_eq!(
        e.place,
        Place::Detection {
            identifier: "s".into(),
            item: Some("User|expand".into())
        }
    );
    // Without `expand`, percent signs are plain text.
    assert!(hits(
        "s:\n    A: '%Admins%'\ncondition: s",
        json!({"A": "%admins%"})
    ));
}

#[test]
fn fieldref() {
    let d = "s:\n    A|fieldref: B\ncondition: s";
    assert!(hits(d, json!({"A": "same", "B": "SAME"})));
    assert!(!hits(d, json!({"A": "one", "B": "two"})));
    assert!(!hits(d, json!({"A": "one"})));
    let neq = "s:\n    A|fieldref|neq: B\ncondition: s";
    assert!(hits(neq, json!({"A": "one", "B": "two"})));
    assert!(!hits(neq, json!({"A": "one", "B": "one"})));
    let contains = "s:\n    A|fieldref|contains: B\ncondition: s";
    assert!(hits(
        contains,
        json!({"A": "C:\\Users\\bob\\x", "B": "bob"})
    ));
    assert!(!hits(
        contains,
        json!({"A": "C:\\Users\\eve\\x", "B": "bob"})
    ));
}

// ---- load errors name the place ---------------------------------------------

#[test]
fn bad_rules_are_reported_with_their_place() {
    let e = load_error("s:\n    A|nosuch: x\ncondition: s");
    assert_eq!(e.kind, ErrorKind::UnknownModifier("nosuch".into()));
    assert_eq!(
        e.place,
        Place::Detection {
            identifier: "s".into(),
            item: Some("A|nosuch".into())
        }
    );
    assert_eq!(e.id.as_deref(), Some("test-rule"));

    let e = load_error("s:\n    A|re: '(unclosed'\ncondition: s");
    assert!(matches!(e.kind, ErrorKind::BadRegex { .. }), "{e}");

    let e = load_error("s:\n    A: x\ncondition: s and");
    assert!(matches!(e.kind, ErrorKind::BadCondition(_)), "{e}");
    assert_eq!(e.place, Place::Condition { index: 0 });

    let e = load_error("s:\n    A: x\ncondition: s or other");
    assert_eq!(e.kind, ErrorKind::UnknownIdentifier("other".into()));

    let e = load_error("s:\n    A: x\ncondition: 1 of filter_*");
    assert_eq!(e.kind, ErrorKind::EmptyPattern("filter_*".into()));

    let e = load_error("s:\n    A|base64: 'a*'\ncondition: s");
    assert!(matches!(e.kind, ErrorKind::BadModifier(_)), "{e}");

    let e = load_error("s:\n    A|exists: maybe\ncondition: s");
    assert!(matches!(e.kind, ErrorKind::BadModifier(_)), "{e}");

    let msg = load_error("s:\n    A|nosuch: x\ncondition: s").to_string();
    assert!(
        msg.contains("bad.yml") && msg.contains("test-rule") && msg.contains("A|nosuch"),
        "{msg}"
    );
}

#[test]
fn one_bad_rule_does_not_stop_the_others() {
    let good = rule("s:\n    A: x\ncondition: s");
    let loaded = RuleSet::from_sources(
        [
            ("good.yml", good.as_str()),
            ("bad.yml", "title: [unclosed"),
            ("good2.yml", good.as_str()),
        ],
        &EngineConfig::new(),
    );
    assert_eq!(loaded.rules.len(), 2);
    assert_eq!(loaded.errors.len(), 1);
    assert!(matches!(loaded.errors[0].kind, ErrorKind::Yaml(_)));
    assert_eq!(loaded.errors[0].path, std::path::Path::new("bad.yml"));
}

// ---- routing -----------------------------------------------------------------

#[test]
fn logsource_routing() {
    let mk = |ls: &str| {
        format!(
            "title: '{}'\nlogsource:\n{ls}\ndetection:\n    s:\n        A: x\n    condition: s\n",
            ls.trim()
        )
    };
    let rules = [
        mk("    product: linux\n    category: process_creation"),
        mk("    product: linux"),
        mk("    category: process_creation"),
        mk("    product: windows\n    category: process_creation"),
        mk("    product: linux\n    service: auditd"),
    ];
    let loaded = RuleSet::from_sources(
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{i}.yml"), r.as_str())),
        &EngineConfig::new(),
    );
    assert!(loaded.errors.is_empty());
    let set = loaded.rules;
    let ev = json!({"A": "x"});
    let mut out = Vec::new();
    set.evaluate(
        &LogSource::category("linux", "process_creation"),
        &ev,
        &mut out,
    );
    let mut titles: Vec<&str> = out.iter().map(|m| m.rule.title.as_str()).collect();
    titles.sort_unstable();
    assert_eq!(titles.len(), 3, "{titles:?}");
    out.clear();
    set.evaluate(
        &LogSource::new(Some("linux"), None, Some("auditd")),
        &ev,
        &mut out,
    );
    assert_eq!(out.len(), 2);
    out.clear();
    set.evaluate(&LogSource::category("macos", "file_event"), &ev, &mut out);
    assert_eq!(out.len(), 0);
}

#[test]
fn match_carries_rule_metadata_and_fields() {
    let text = "title: Meta\nid: 11111111-2222-3333-4444-555555555555\nstatus: stable\nlevel: critical\nauthor: Someone\ntags:\n    - attack.persistence\n    - attack.t1053.003\nlogsource:\n    product: linux\n    category: process_creation\ndetection:\n    sel:\n        Image|endswith: /crontab\n        CommandLine|contains: ' -e'\n    filter:\n        User: root\n    condition: sel and not filter\n";
    let set = RuleSet::from_sources([("m.yml", text)], &EngineConfig::new()).rules;
    let ev = json!({"Image": "/usr/bin/crontab", "CommandLine": "crontab -e", "User": "bob"});
    let mut out = Vec::new();
    set.evaluate(
        &LogSource::category("linux", "process_creation"),
        &ev,
        &mut out,
    );
    assert_eq!(out.len(), 1);
    let m = &out[0];
    assert_eq!(
        m.rule.id.as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(m.rule.level, Some(picket_rules::Level::Critical));
    assert_eq!(m.rule.status, Some(picket_rules::Status::Stable));
    assert_eq!(m.rule.author.as_deref(), Some("Someone"));
    assert_eq!(m.rule.techniques, ["T1053.003"]);
    assert_eq!(m.rule.tactics[0].name, "Persistence");
    let names: Vec<&str> = m.fields.iter().map(|f| f.name.as_str()).collect();
    assert!(names.contains(&"Image") && names.contains(&"CommandLine"));
    assert!(
        !names.contains(&"User"),
        "negated selections are not reported"
    );
}
