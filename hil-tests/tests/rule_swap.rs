//! Swapping the rule set while events flow (SIGHUP re-reads the rule
//! directories; rule bundles use the same slot): every event is evaluated by
//! the old set or the new one, never by neither and never by both.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use picket_hil_tests::{append_failed_logins, auth_log_only, wait_for, Options, Picketd};
use std::time::Duration;

fn rule(title: &str, id: &str) -> String {
    format!(
        "title: {title}\nid: {id}\nstatus: test\nauthor: Picket HIL tests\n\
         logsource: {{product: linux, service: sshd}}\n\
         detection:\n  sel: {{Outcome: failure}}\n  condition: sel\nlevel: low\n"
    )
}

#[test]
fn a_swap_under_a_stream_loses_and_duplicates_no_event() {
    const LINES: u64 = 60_000;
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("r.yml"),
        rule("old set", "9a3e0d4c-2f61-4c0a-8d55-0b5c2e7f1a01"),
    )
    .unwrap();
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").unwrap();
    let (r, l) = (rules.clone(), log.clone());
    let mut d = Picketd::start(Options {
        edit: Box::new(move |c, _| {
            auth_log_only(c, &l, Some(&r));
        }),
        ..Options::default()
    });

    // the stream: 60,000 failed logins, written as fast as the disk takes them
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for chunk in 0..LINES / 1000 {
                append_failed_logins(
                    &log,
                    (chunk * 1000..chunk * 1000 + 1000).map(|i| format!("u{i}")),
                );
            }
        })
    };
    // swap in the middle of it: same detection, another title
    wait_for("the stream under way", Duration::from_secs(30), || {
        (d.metric("picket_alerts_emitted_total", "") >= 5_000.0).then_some(())
    });
    std::fs::write(
        rules.join("r.yml"),
        rule("new set", "9a3e0d4c-2f61-4c0a-8d55-0b5c2e7f1a02"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    writer.join().unwrap();
    wait_for("every line evaluated", Duration::from_secs(120), || {
        (d.metric("picket_alerts_emitted_total", "") >= LINES as f64).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.metric("picket_alerts_emitted_total", ""), LINES as f64);
    d.stop();

    let alerts = d.alerts();
    let mut seen = std::collections::HashSet::new();
    let (mut old, mut new) = (0, 0);
    for a in &alerts {
        let msg = a["event"]["kind"]["message"].as_str().unwrap();
        let user = msg
            .split("user ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert!(seen.insert(user.to_owned()), "{user} evaluated twice");
        match a["rule_title"].as_str().unwrap() {
            "old set" => old += 1,
            "new set" => new += 1,
            t => panic!("unexpected rule {t}"),
        }
    }
    assert_eq!(seen.len() as u64, LINES, "every event evaluated once");
    assert!(
        old > 0 && new > 0,
        "the swap happened mid-stream: {old} old, {new} new"
    );
    // the new set takes over for good: no old-set alert after the first new one
    let first_new = alerts
        .iter()
        .position(|a| a["rule_title"] == "new set")
        .unwrap();
    assert!(alerts[first_new..]
        .iter()
        .all(|a| a["rule_title"] == "new set"));
    assert!(d.log_text().contains("generation"), "{}", d.log_text());
    eprintln!("{old} alerts from the old set, {new} from the new");
}
