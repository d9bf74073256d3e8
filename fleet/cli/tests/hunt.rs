//! `picketctl hunt` on real data: the SigmaHQ Windows rules over the shared
//! EVTX samples (same matches as the engine run directly, same output on 1
//! and 2 threads), corrupt EVTX files, malformed JSON lines, CSV escaping,
//! and the binary's exit codes.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use picket_cli::hunt::{self, Format, HuntConfig, Input, InputKind, ScanOptions};
use picket_rules::{windows, EngineConfig, RuleSet};

/// `../../shared` from this crate, or `None` (after saying so) when it is
/// missing outside CI. In CI (`CI=true`) a missing folder fails the test.
fn shared_dir() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::canonicalize(&manifest).unwrap_or(manifest);
    let dir = manifest.join("../../../shared");
    if dir.is_dir() {
        return Some(std::fs::canonicalize(&dir).unwrap_or(dir));
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !in_ci,
        "shared data folder {} is missing (CI=true)",
        dir.display()
    );
    println!("SKIPPED: shared data folder {} is missing", dir.display());
    None
}

fn windows_rule_dirs(shared: &Path) -> Vec<PathBuf> {
    ["rules", "rules-threat-hunting", "rules-emerging-threats"]
        .iter()
        .map(|d| shared.join("data/sigmahq").join(d))
        .collect()
}

/// All SigmaHQ Windows rules, loaded once per test binary (loading takes
/// seconds in a debug build).
fn sigmahq_rules(shared: &Path) -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let loaded = hunt::load_rules(&windows_rule_dirs(shared), &EngineConfig::new())
            .expect("rule directories are readable");
        // Only the placeholder rules may be rejected (conformance test 1).
        assert!(
            loaded
                .errors
                .iter()
                .all(picket_rules::RuleError::is_unconfigured_placeholder),
            "{:?}",
            loaded.errors
        );
        loaded.rules
    })
}

fn evtx_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            evtx_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "evtx") {
            out.push(path);
        }
    }
}

type MatchKey = (PathBuf, u64, String, PathBuf);

/// The engine's matches over EVTX files, computed without the CLI: the
/// `evtx` crate's own record iterator, `normalize_evtx`, `Router`.
fn engine_matches(rules: &RuleSet, files: &[PathBuf]) -> BTreeMap<MatchKey, usize> {
    let router = windows::Router::new(rules);
    let mut expected = BTreeMap::new();
    let mut out = Vec::new();
    for file in files {
        let Ok(mut parser) = evtx::EvtxParser::from_path(file) else {
            continue;
        };
        for rec in parser.records_json_value().flatten() {
            let Some(flat) = windows::normalize_evtx(&rec.data) else {
                continue;
            };
            out.clear();
            router.evaluate(&flat, &mut out);
            let record_id = rec.data["Event"]["System"]["EventRecordID"]
                .as_u64()
                .expect("EventRecordID");
            for m in &out {
                let key = (
                    file.clone(),
                    record_id,
                    m.rule.id.clone().unwrap_or_default(),
                    m.rule.path.clone(),
                );
                *expected.entry(key).or_insert(0) += 1;
            }
        }
    }
    expected
}

fn hit_keys(hits: &[hunt::Hit]) -> BTreeMap<MatchKey, usize> {
    let mut got = BTreeMap::new();
    for h in hits {
        let key = (
            h.file.clone(),
            h.record_id,
            h.rule.id.clone().unwrap_or_default(),
            h.rule.path.clone(),
        );
        *got.entry(key).or_insert(0) += 1;
    }
    got
}

fn config(paths: Vec<PathBuf>, format: Format, threads: usize) -> HuntConfig {
    HuntConfig {
        paths,
        format,
        threads: NonZeroUsize::new(threads),
        ..HuntConfig::default()
    }
}

fn run_hunt(rules: &RuleSet, config: &HuntConfig) -> (hunt::ScanReport, Vec<u8>, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let report = hunt::hunt(config, rules, &mut out, &mut err).expect("hunt runs");
    (report, out, String::from_utf8(err).expect("UTF-8 stderr"))
}

#[test]
fn sigmahq_windows_over_shared_evtx_matches_the_engine_on_any_thread_count() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let rules = sigmahq_rules(&shared);
    let evtx_root = shared.join("data/evtx");
    let mut files = Vec::new();
    evtx_files(&evtx_root, &mut files);
    files.sort();

    let (one, csv_one, _) = run_hunt(rules, &config(vec![evtx_root.clone()], Format::Csv, 1));
    let (two, csv_two, summary) = run_hunt(rules, &config(vec![evtx_root.clone()], Format::Csv, 2));
    let (_, jsonl_one, _) = run_hunt(
        rules,
        &config(vec![evtx_root.clone()], Format::JsonLines, 1),
    );
    let (_, jsonl_two, _) = run_hunt(rules, &config(vec![evtx_root], Format::JsonLines, 2));
    println!("{summary}");
    assert!(one.problems.is_empty(), "{:?}", one.problems);
    assert_eq!(one.files, files.len());
    assert!(csv_one == csv_two, "CSV differs between 1 and 2 threads");
    assert!(
        jsonl_one == jsonl_two,
        "JSON lines differ between 1 and 2 threads"
    );
    assert_eq!(one.records, two.records);

    let expected = engine_matches(rules, &files);
    let got = hit_keys(&two.hits);
    let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(got, expected);
    // One CSV row per hit, plus the header (no field of these holds a newline
    // outside quotes... so count records via the JSON lines instead).
    assert_eq!(
        jsonl_two.iter().filter(|&&b| b == b'\n').count(),
        two.hits.len()
    );
    compare_with_committed_oracle(&shared, &two.hits);
    println!(
        "{} records, {} matches ({} of Windows rules)",
        two.records,
        two.hits.len(),
        two.hits
            .iter()
            .filter(|h| h.rule.logsource.product.as_deref() == Some("windows"))
            .count()
    );
}

/// The committed pySigma oracle output for the same files
/// (`rules/tests/oracle/`): the hunt's (rule id, `file#EventRecordID`) set of
/// Windows rules the oracle can convert equals the oracle's, except the
/// reviewed list of explained differences. This pins `record_id` to the
/// rendered `EventRecordID` and the scanned records to the oracle's.
fn compare_with_committed_oracle(shared: &Path, hits: &[hunt::Hit]) {
    let oracle_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/tests/oracle");
    let read = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(oracle_dir.join(name)).expect("committed oracle file");
        serde_json::from_str(&text).expect("JSON")
    };
    let oracle = read("evtx-oracle.json");
    let not_convertible: BTreeSet<String> = read("evtx-oracle.not-convertible.json")
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let explained: BTreeSet<(String, String)> = read("explained-differences.json")
        .as_array()
        .expect("list")
        .iter()
        .map(|d| {
            (
                d["rule"].as_str().expect("rule").to_owned(),
                d["event"].as_str().expect("event").to_owned(),
            )
        })
        .collect();
    let sigma_root = shared.join("data/sigmahq");
    let evtx_root = shared.join("data/evtx/hayabusa-sample-evtx");
    let ours: BTreeSet<(String, String)> = hits
        .iter()
        .filter(|h| h.rule.logsource.product.as_deref() == Some("windows"))
        .filter(|h| {
            let rel = h
                .rule
                .path
                .strip_prefix(&sigma_root)
                .expect("below sigma root");
            !not_convertible.contains(&rel.display().to_string())
        })
        .map(|h| {
            let rel = h.file.strip_prefix(&evtx_root).expect("below evtx root");
            (
                h.rule.id.clone().unwrap_or_default(),
                format!("{}#{}", rel.display(), h.record_id),
            )
        })
        .collect();
    let theirs: BTreeSet<(String, String)> = oracle
        .as_object()
        .expect("map")
        .iter()
        .flat_map(|(id, v)| {
            v["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(move |e| (id.clone(), e.as_str().expect("key").to_owned()))
        })
        .collect();
    let diff: BTreeSet<_> = ours.symmetric_difference(&theirs).cloned().collect();
    let unexplained: Vec<_> = diff.difference(&explained).collect();
    println!(
        "vs committed oracle: hunt {} matches, oracle {}, {} differences, {} unexplained",
        ours.len(),
        theirs.len(),
        diff.len(),
        unexplained.len()
    );
    assert!(unexplained.is_empty(), "unexplained: {unexplained:?}");
    assert_eq!(
        diff, explained,
        "explained differences that no longer occur"
    );
}

/// A good sample, a truncated copy, a copy with a garbled chunk, and a file
/// that is not EVTX at all, in a temp dir.
fn corrupt_corpus(shared: &Path) -> (tempfile::TempDir, PathBuf) {
    let good_src = shared.join(
        "data/evtx/hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES/Persistence/persistence_sysmon_11_13_1_shime_appfix.evtx",
    );
    let bytes = std::fs::read(&good_src).expect("sample EVTX");
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("a-good.evtx");
    std::fs::write(&good, &bytes).expect("write");
    // Ends in the middle of the second chunk; the header still counts all.
    std::fs::write(
        dir.path().join("b-truncated.evtx"),
        &bytes[..4096 + 65_536 + 30_000],
    )
    .expect("write");
    // The first chunk's header and records overwritten with noise.
    let mut garbled = bytes.clone();
    for (i, b) in garbled[4096..4096 + 40_000].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(dir.path().join("c-garbled.evtx"), &garbled).expect("write");
    std::fs::write(dir.path().join("d-not-evtx.evtx"), b"MZ this is not a log").expect("write");
    (dir, good)
}

#[test]
fn corrupt_evtx_files_are_reported_and_skipped() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let rules = sigmahq_rules(&shared);
    let (dir, good) = corrupt_corpus(&shared);
    let (report, _, stderr) = run_hunt(rules, &config(vec![dir.path().to_owned()], Format::Csv, 2));
    println!("{stderr}");
    for name in ["b-truncated.evtx", "c-garbled.evtx", "d-not-evtx.evtx"] {
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.path.file_name().is_some_and(|n| n == name)),
            "{name} not reported: {:?}",
            report.problems
        );
        assert!(stderr.contains(name), "{name} not on stderr");
    }
    assert!(report
        .problems
        .iter()
        .any(|p| p.path.ends_with("d-not-evtx.evtx") && p.is_file_skipped()));
    assert!(!report.problems.iter().any(|p| p.path == good));
    // The good file's matches are all there, exactly as when scanned alone.
    let good_hits: Vec<_> = report
        .hits
        .iter()
        .filter(|h| h.file == good)
        .cloned()
        .collect();
    let expected = engine_matches(rules, std::slice::from_ref(&good));
    assert!(!expected.is_empty());
    assert_eq!(hit_keys(&good_hits), expected);
    // What survives of the damaged copies is a subset of the good file's.
    let good_ids: BTreeSet<_> = good_hits
        .iter()
        .map(|h| (h.record_id, h.rule.path.clone()))
        .collect();
    for h in report.hits.iter().filter(|h| h.file != good) {
        assert!(good_ids.contains(&(h.record_id, h.rule.path.clone())));
    }
}

const TINY_RULES: &str = r#"
title: Whoami, "quoted", with commas
id: 00000000-0000-4000-8000-000000000001
level: high
author: "Ann O'Neil, Bob \"B\" Builder"
tags: [attack.discovery, attack.t1033]
logsource: {product: linux, category: process_creation}
detection:
    s:
        CommandLine|contains: whoami
    condition: s
---
title: Sysmon process
id: 00000000-0000-4000-8000-000000000002
level: low
author: tests
logsource: {product: windows, category: process_creation}
detection:
    s:
        Image|endswith: '\cmd.exe'
    condition: s
"#;

fn tiny_rules() -> RuleSet {
    let loaded = RuleSet::from_sources([("tiny.yml", TINY_RULES)], &EngineConfig::new());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.rules
}

#[test]
fn json_lines_route_by_convention_and_malformed_lines_are_skipped() {
    let rules = tiny_rules();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("events.jsonl");
    let lines = [
        r#"{"_product": "linux", "_category": "process_creation", "CommandLine": "whoami", "@timestamp": "2024-01-01T00:00:00Z", "hostname": "h1"}"#,
        r#"{"_product": "linux", "_category": "process_creation", "CommandLine": "whoa"#,
        "",
        "[1, 2]",
        r#"{"_category": "process_creation", "CommandLine": "id; whoami"}"#,
        r#"{"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Image": "C:\\Windows\\System32\\cmd.exe", "Computer": "pc"}"#,
        r##"{"Event": {"System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "pc2", "TimeCreated": {"#attributes": {"SystemTime": "2024-01-02T00:00:00Z"}}}, "EventData": {"Image": "C:\\x\\CMD.EXE"}}}"##,
        r#"{"CommandLine": "whoami"}"#,
        r#"{"_product": "linux", "_category": "file_event", "CommandLine": "whoami"}"#,
    ];
    std::fs::write(&file, lines.join("\n")).expect("write");
    let inputs = [Input {
        path: file.clone(),
        kind: InputKind::JsonLines,
    }];
    for product in [None, Some("linux")] {
        let options = ScanOptions {
            product: product.map(str::to_owned),
            jsonl_batch_lines: 2, // several batches
            ..ScanOptions::default()
        };
        let report = hunt::scan(&rules, &inputs, &options, None);
        let lines_hit: Vec<u64> = report.hits.iter().map(|h| h.record_id).collect();
        // Line 5 has no `_product`: only `--product linux` makes it linux.
        // Line 8 has no logsource at all: `--product linux` gives it
        // product-only rules, and the whoami rule needs a category.
        let want: &[u64] = if product.is_some() {
            &[1, 5, 6, 7]
        } else {
            &[1, 6, 7]
        };
        assert_eq!(lines_hit, want, "product {product:?}");
        let places: Vec<_> = report.problems.iter().map(|p| p.place.clone()).collect();
        assert_eq!(
            places,
            [Some("line 2".to_owned()), Some("line 4".to_owned())]
        );
        assert!(report.problems[0].reason.contains("malformed JSON"));
        assert_eq!(report.records, 6);
        assert_eq!(report.unrouted, if product.is_some() { 0 } else { 1 });
        assert_eq!(report.hits[0].timestamp, "2024-01-01T00:00:00Z");
        assert_eq!(report.hits[0].computer, "h1");
        let evtx_like = report
            .hits
            .iter()
            .find(|h| h.record_id == 7)
            .expect("line 7");
        assert_eq!(evtx_like.computer, "pc2");
        assert_eq!(evtx_like.timestamp, "2024-01-02T00:00:00Z");
        assert_eq!(evtx_like.event_id, "1");
    }
}

/// A strict RFC 4180 reader, written for this test (independent of the
/// writer): records of fields, quoted fields may hold `,`, `""`, newlines.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                other => field.push(other),
            }
            continue;
        }
        match c {
            '"' => {
                assert!(field.is_empty(), "quote inside an unquoted field");
                quoted = true;
            }
            ',' => record.push(std::mem::take(&mut field)),
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            other => field.push(other),
        }
    }
    assert!(!quoted, "unterminated quoted field");
    assert!(
        field.is_empty() && record.is_empty(),
        "last line without newline"
    );
    records
}

#[test]
fn csv_escapes_commas_quotes_and_newlines() {
    let rules = tiny_rules();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tricky, \"name\".jsonl");
    let command = "sh -c \"whoami, then\nid\"\r\nexit";
    let line = serde_json::json!({
        "_product": "linux", "_category": "process_creation",
        "CommandLine": command, "hostname": "host,with\"comma",
    });
    std::fs::write(&file, format!("{line}\n")).expect("write");
    let cfg = config(vec![file.clone()], Format::Csv, 2);
    let (report, out, _) = run_hunt(&rules, &cfg);
    assert_eq!(report.hits.len(), 1);
    let rows = parse_csv(&String::from_utf8(out).expect("UTF-8"));
    assert_eq!(rows.len(), 2);
    let header = &rows[0];
    assert_eq!(header.len(), rows[1].len());
    let row: BTreeMap<&str, &str> = header
        .iter()
        .map(String::as_str)
        .zip(rows[1].iter().map(String::as_str))
        .collect();
    assert_eq!(row["rule_title"], "Whoami, \"quoted\", with commas");
    assert_eq!(row["author"], "Ann O'Neil, Bob \"B\" Builder");
    assert_eq!(row["computer"], "host,with\"comma");
    assert_eq!(row["file"], file.display().to_string());
    assert_eq!(row["record_id"], "1");
    assert_eq!(row["level"], "high");
    assert_eq!(row["tags"], "attack.discovery;attack.t1033");
    assert_eq!(row["matched"], format!("CommandLine: {command}"));

    // The same hit as JSON lines carries the same values.
    let cfg = config(vec![file], Format::JsonLines, 1);
    let (_, out, _) = run_hunt(&rules, &cfg);
    let obj: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
    assert_eq!(obj["rule_title"], "Whoami, \"quoted\", with commas");
    assert_eq!(
        obj["tags"],
        serde_json::json!(["attack.discovery", "attack.t1033"])
    );
    assert_eq!(obj["techniques"], serde_json::json!(["T1033"]));
    assert_eq!(obj["record_id"], 1);
    assert_eq!(obj["matched"][0]["value"], command);
}

#[test]
fn binary_reports_bad_files_and_rules_and_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).expect("mkdir");
    std::fs::write(rules_dir.join("tiny.yml"), TINY_RULES).expect("write");
    std::fs::write(
        rules_dir.join("broken.yml"),
        "title: broken\nid: broken-1\nlogsource: {product: linux}\ndetection:\n    s:\n        A|nosuchmodifier: x\n    condition: s\n",
    )
    .expect("write");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("junk.evtx"), b"not an event log").expect("write");
    std::fs::write(
        data.join("events.jsonl"),
        "{\"_product\":\"linux\",\"_category\":\"process_creation\",\"CommandLine\":\"whoami\"}\n{oops\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_picketctl"))
        .args(["hunt", "--jsonl", "--threads", "2", "--rules"])
        .arg(&rules_dir)
        .arg(&data)
        .arg(dir.path().join("missing.evtx"))
        .output()
        .expect("picketctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stderr}");
    assert!(output.status.success(), "exit {:?}", output.status);
    assert!(stderr.contains("broken.yml") && stderr.contains("nosuchmodifier"));
    assert!(stderr.contains("junk.evtx: skipped"));
    assert!(stderr.contains("missing.evtx: skipped"));
    assert!(stderr.contains("events.jsonl: line 2: skipped: malformed JSON"));
    assert!(stderr.contains("by level:"));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(stdout.lines().count(), 1);
    let hit: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(hit["rule_id"], "00000000-0000-4000-8000-000000000001");
    assert_eq!(hit["author"], "Ann O'Neil, Bob \"B\" Builder");

    // Usage errors exit 2; a rules path that does not exist exits 1.
    let usage = Command::new(env!("CARGO_BIN_EXE_picketctl"))
        .args(["hunt", "x.evtx"])
        .output()
        .expect("picketctl runs");
    assert_eq!(usage.status.code(), Some(2));
    let no_rules = Command::new(env!("CARGO_BIN_EXE_picketctl"))
        .args(["hunt", "--rules"])
        .arg(dir.path().join("no-such-dir"))
        .arg(&data)
        .output()
        .expect("picketctl runs");
    assert_eq!(no_rules.status.code(), Some(1));
}

const CORRELATED_RULES: &str = r"
title: Failed SSH login
id: 5f0c0d5e-4c31-4d0b-9a57-1a6c3b1f0001
name: failed_ssh_login
logsource:
    product: linux
    category: process_creation
detection:
    s:
        CommandLine|contains: 'ssh-auth-failed'
    condition: s
level: low
---
title: SSH password guessing
id: 5f0c0d5e-4c31-4d0b-9a57-1a6c3b1f0002
correlation:
    type: event_count
    rules:
        - failed_ssh_login
    group-by:
        - User
    timespan: 5m
    condition:
        gte: 3
level: high
---
title: Whoami
id: 5f0c0d5e-4c31-4d0b-9a57-1a6c3b1f0003
logsource:
    product: linux
    category: process_creation
detection:
    s:
        CommandLine: whoami
    condition: s
level: medium
";

/// Correlation rules run over the whole scan in event-time order, across
/// files: three failures of one user within 5 minutes, spread over two
/// files (read in parallel), fire once; the base rule's own matches are
/// not shown (`generate` is off); an event without a time cannot be
/// counted and keeps its match.
#[test]
fn correlation_rules_fire_across_files_in_event_time_order() {
    let loaded = RuleSet::from_sources([("c.yml", CORRELATED_RULES)], &EngineConfig::new());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let rules = loaded.rules;
    let dir = tempfile::tempdir().expect("temp dir");
    let line = |user: &str, cmd: &str, time: Option<&str>| {
        let mut v = serde_json::json!({
            "_product": "linux", "_category": "process_creation",
            "User": user, "CommandLine": cmd, "hostname": "gw-1",
        });
        if let Some(t) = time {
            v["@timestamp"] = t.into();
        }
        v.to_string()
    };
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    std::fs::write(
        &a,
        [
            line("alice", "ssh-auth-failed", Some("2024-03-01T10:00:00Z")),
            line("alice", "ssh-auth-failed", Some("2024-03-01T10:02:00Z")),
            line("bob", "whoami", Some("2024-03-01T10:03:00Z")),
            line("carol", "ssh-auth-failed", None),
        ]
        .join("\n"),
    )
    .expect("write a");
    std::fs::write(
        &b,
        [
            line("alice", "ssh-auth-failed", Some("2024-03-01T10:01:00Z")),
            line("bob", "ssh-auth-failed", Some("2024-03-01T10:01:30Z")),
            line("bob", "ssh-auth-failed", Some("2024-03-01T10:02:30Z")),
            // Outside alice's 5-minute window.
            line("alice", "ssh-auth-failed", Some("2024-03-01T10:20:00Z")),
        ]
        .join("\n"),
    )
    .expect("write b");
    let inputs: Vec<Input> = [&a, &b]
        .iter()
        .map(|p| Input {
            path: (*p).clone(),
            kind: InputKind::JsonLines,
        })
        .collect();
    let report = hunt::scan(&rules, &inputs, &ScanOptions::default(), None);
    let rows: Vec<(String, u64, &str)> = report
        .hits
        .iter()
        .map(|h| {
            (
                h.file.file_name().unwrap().to_string_lossy().into_owned(),
                h.record_id,
                h.rule.title.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            // The third failure of alice (10:02, a.jsonl line 2) fires.
            ("a.jsonl".to_owned(), 2, "SSH password guessing"),
            ("a.jsonl".to_owned(), 3, "Whoami"),
            // carol's line has no time: counted nowhere, its match shown.
            ("a.jsonl".to_owned(), 4, "Failed SSH login"),
        ],
    );
    let fired = &report.hits[0];
    assert!(
        fired
            .fields
            .iter()
            .any(|f| f.name == "User" && f.value == "alice"),
        "{:?}",
        fired.fields
    );
    assert!(fired
        .fields
        .iter()
        .any(|f| f.name == "correlation_value" && f.value == "3"));
    assert_eq!(fired.timestamp, "2024-03-01T10:02:00Z");
    assert_eq!(report.correlation_hits, 1);
    assert_eq!(report.untimed, 1);
    assert_eq!(report.correlation.expect("correlating").groups_evicted, 0);
}
