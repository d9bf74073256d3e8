//! Swapping the rule set while events flow (SIGHUP re-reads the rule
//! directories; rule bundles use the same slot): every event is evaluated by
//! the old set or the new one, never by neither and never by both.
//!
//! The stream is failed SSH logins appended to an auth log at a steady
//! rate (`PICKET_SWAP_RATE` lines/s, 60,000 by default; 0 writes as fast as
//! the disk takes them, to find picketd's own limit), one line in 100 for
//! an account named `mark<line number>`. Rule set *g* (generation *g*: the
//! start set is 0, each SIGHUP adds one) raises an alert for marked lines
//! only, under a rule id of its own; the other lines are evaluated and
//! match nothing. picketd counts the events each generation evaluated
//! (`picket_rules_evaluated_total{generation}`).
//!
//! Detection evaluates the stream in order and takes a new set only
//! between batches, so generation *g* evaluated exactly the lines
//! `[P_g, P_g + E_g)`, where `E_g` is its count and `P_g` the sum of the
//! counts before it. The test checks that the counts add up to the lines
//! written, and that every marked line raised exactly one alert, from the
//! set whose range holds it: an event evaluated twice or not at all would
//! break the sum, and a marked one would also break the ranges.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use picket_hil_tests::{append_failed_logins, auth_log_only, set, wait_for, Options, Picketd};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LINES: u64 = 600_000;
const MARK_EVERY: u64 = 100;
/// Swaps during the stream, evenly spread over it.
const SWAPS: u64 = 5;
const DEFAULT_RATE: u64 = 60_000;

fn marked_rule_id(generation: u64) -> String {
    format!("9a3e0d4c-2f61-4c0a-8d55-{generation:012x}")
}

/// Rule set `g`: the marked-login rule under its own id, and two rules that
/// every line is evaluated against and none matches.
fn write_rule_set(dir: &Path, g: u64) {
    let rule = |title: &str, id: String, detection: &str| {
        format!(
            "title: {title} (set {g})\nid: {id}\nstatus: test\nauthor: Picket HIL tests\n\
             logsource: {{product: linux, service: sshd}}\n\
             detection:\n{detection}\nlevel: low\n"
        )
    };
    let files = [
        (
            "marked.yml",
            rule(
                "HIL marked login",
                marked_rule_id(g),
                "  sel:\n    Outcome: failure\n    AuthUser|startswith: mark\n  condition: sel",
            ),
        ),
        (
            "root_from_lan.yml",
            rule(
                "HIL root login from the LAN",
                format!("5b1f7a2e-0c4d-4e8a-9f31-{g:012x}"),
                "  sel:\n    AuthUser: root\n    SourceIp|cidr: 10.0.0.0/8\n  condition: sel",
            ),
        ),
        (
            "break_in.yml",
            rule(
                "HIL break-in attempt",
                format!("c2d4e6f8-1a3b-4c5d-8e7f-{g:012x}"),
                "  keywords:\n    - 'POSSIBLE BREAK-IN ATTEMPT'\n  condition: keywords",
            ),
        ),
    ];
    // written under other names and renamed, so a reload never reads half a set
    for (name, text) in &files {
        std::fs::write(dir.join(format!("{name}.tmp")), text).unwrap();
    }
    for (name, _) in &files {
        std::fs::rename(dir.join(format!("{name}.tmp")), dir.join(name)).unwrap();
    }
}

fn user(line: u64) -> String {
    if line.is_multiple_of(MARK_EVERY) {
        format!("mark{line}")
    } else {
        format!("u{line}")
    }
}

/// Events each generation evaluated, from picketd's metrics.
fn evaluated(d: &Picketd) -> BTreeMap<u64, u64> {
    d.metrics()
        .lines()
        .filter_map(|l| l.strip_prefix("picket_rules_evaluated_total{generation=\""))
        .map(|l| {
            let (g, rest) = l.split_once("\"} ").unwrap();
            (g.parse().unwrap(), rest.trim().parse().unwrap())
        })
        .collect()
}

#[test]
fn a_swap_under_a_stream_loses_and_duplicates_no_event() {
    let rate: u64 = std::env::var("PICKET_SWAP_RATE")
        .ok()
        .map_or(DEFAULT_RATE, |v| v.parse().expect("PICKET_SWAP_RATE"));
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    write_rule_set(&rules, 0);
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").unwrap();
    let (r, l) = (rules.clone(), log.clone());
    let mut d = Picketd::start(Options {
        edit: Box::new(move |c, _| {
            auth_log_only(c, &l, Some(&r));
            // detection is what this test is about; a JSON copy of every
            // event would only compete with it for the two cores
            set(c, "output.events", "none");
        }),
        ..Options::default()
    });

    // the stream, paced in 10 ms steps
    let start = Instant::now();
    let written = std::sync::Arc::new(AtomicU64::new(0));
    let writer = {
        let log = log.clone();
        let written_out = written.clone();
        std::thread::spawn(move || {
            let mut written = 0;
            while written < LINES {
                let due = if rate == 0 {
                    LINES
                } else {
                    let secs = start.elapsed().as_secs_f64();
                    ((secs * rate as f64) as u64 + rate / 100).min(LINES)
                };
                // at most 10,000 lines per write, so a fast writer still streams
                let upto = due.min(written + 10_000);
                append_failed_logins(&log, (written..upto).map(user));
                written = upto;
                written_out.store(written, Ordering::Relaxed);
                if rate != 0 && written < LINES {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            start.elapsed()
        })
    };

    // the swaps, spread over the stream: each waits until its share of
    // lines has been evaluated, and the next until the new set has taken over
    let mut backlog_max = 0u64;
    let mut sample = || {
        let w = written.load(Ordering::Relaxed);
        let c = evaluated(&d);
        backlog_max = backlog_max.max(w.saturating_sub(c.values().sum()));
        c
    };
    for g in 1..=SWAPS {
        wait_for("the stream under way", Duration::from_secs(300), || {
            let e: u64 = sample().values().sum();
            (e >= g * LINES / (SWAPS + 1)).then_some(())
        });
        write_rule_set(&rules, g);
        d.signal(libc::SIGHUP);
        wait_for(
            &format!("generation {g} evaluating"),
            Duration::from_secs(60),
            || sample().contains_key(&g).then_some(()),
        );
    }
    let counts = wait_for("every line evaluated", Duration::from_secs(300), || {
        let c = sample();
        (c.values().sum::<u64>() >= LINES).then_some(c)
    });
    let caught_up = start.elapsed();
    let written_in = writer.join().unwrap();
    // nothing more arrives
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(evaluated(&d), counts, "events evaluated after the stream");
    assert_eq!(
        d.metric("picket_bus_delivered_total", "subscriber=\"detection\""),
        LINES as f64
    );
    d.stop();

    // every line evaluated once: the generations' counts add up
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..=SWAPS).collect::<Vec<_>>(),
        "one series per generation, each with events: {counts:?}"
    );
    assert_eq!(counts.values().sum::<u64>(), LINES, "{counts:?}");
    // generation g evaluated lines [first[g], first[g] + counts[g])
    let mut first = BTreeMap::new();
    let mut p = 0;
    for (&g, &n) in &counts {
        first.insert(g, p);
        p += n;
    }
    let generation_of: BTreeMap<String, u64> =
        (0..=SWAPS).map(|g| (marked_rule_id(g), g)).collect();
    let alerts = d.alerts();
    let mut seen = std::collections::HashSet::new();
    let mut per_generation: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last_generation = 0;
    for a in &alerts {
        let rule = a["rule_id"].as_str().unwrap();
        let g = *generation_of
            .get(rule)
            .unwrap_or_else(|| panic!("unexpected rule {rule}: {a}"));
        let msg = a["event"]["kind"]["message"].as_str().unwrap();
        let line: u64 = msg
            .split("user mark")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("an alert for an unmarked line: {msg}"))
            .parse()
            .unwrap();
        assert!(seen.insert(line), "line {line} evaluated twice");
        assert!(
            (first[&g]..first[&g] + counts[&g]).contains(&line),
            "line {line} alerted by generation {g}, which evaluated lines {}..{}",
            first[&g],
            first[&g] + counts[&g]
        );
        // a set, once replaced, never comes back
        assert!(
            g >= last_generation,
            "generation {g} after {last_generation}"
        );
        last_generation = g;
        *per_generation.entry(g).or_default() += 1;
    }
    assert_eq!(seen.len() as u64, LINES / MARK_EVERY, "every marked line");
    for (&g, &n) in &counts {
        let marked = (first[&g]..first[&g] + n)
            .filter(|l| l.is_multiple_of(MARK_EVERY))
            .count() as u64;
        assert_eq!(per_generation.get(&g).copied().unwrap_or(0), marked);
    }
    let log_text = d.log_text();
    for g in 1..=SWAPS {
        assert!(
            log_text.contains(&format!("\"generation\":{g}")),
            "{log_text}"
        );
    }

    let secs = |t: Duration| t.as_secs_f64();
    eprintln!(
        "{LINES} lines written in {:.2} s ({:.0}/s offered); all evaluated after {:.2} s: \
         {:.0} events/s through detection, backlog at most {backlog_max} lines; {} swaps; \
         events per generation {counts:?}, marked alerts {per_generation:?}",
        secs(written_in),
        LINES as f64 / secs(written_in),
        secs(caught_up),
        LINES as f64 / secs(caught_up),
        SWAPS,
    );
}
