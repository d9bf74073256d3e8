//! From attack to analyst: a real `picket-backend` and a real, enrolled
//! `picketd` with all its probes; the scripted Linux techniques
//! (src/techniques.rs) run on this machine several times each, and every
//! action's alert must reach the backend with its rule title and ATT&CK
//! technique. For each action the test measures the time from a wall-clock
//! timestamp taken just before it to the alert's `received_ms` at the
//! backend (the ingest's clock when the batch arrived, taken before the
//! store's commit; same host, same clock), and prints the table that
//! hil-tests/README.md records. Timings are reported, not asserted: this
//! machine is shared.
//!
//! The uplink batches for [`BATCH_DELAY_MS`] instead of the default 1 s (the
//! default would add that much to every isolated alert); everything else is
//! the daemon's default configuration, apart from the file integrity
//! monitor's paths (a passwd copy) and the module-syscall fallback this test
//! kernel may need.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use picket_hil_tests::backend::{device_id, enroll, enrolled_uplink, Backend};
use picket_hil_tests::techniques::{self, Stage};
use picket_hil_tests::{require_root, set, wait_for, Options, Picketd};
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Measured runs of each technique (after one warm-up run).
const REPS: usize = 15;
/// `uplink.batch_delay_ms` of the appliance under test, unless
/// `PICKET_LATENCY_BATCH_DELAY_MS` says otherwise (e.g. 1000, the default).
const BATCH_DELAY_MS: i64 = 10;

fn batch_delay_ms() -> i64 {
    std::env::var("PICKET_LATENCY_BATCH_DELAY_MS")
        .ok()
        .map_or(BATCH_DELAY_MS, |v| {
            v.parse()
                .expect("PICKET_LATENCY_BATCH_DELAY_MS: milliseconds")
        })
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[i64], q: f64) -> i64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank among a few hundred samples"
    )]
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One technique's samples: action → stored, and the part before the
/// event's own timestamp (kernel, or the FIM's settle and re-hash).
#[derive(Default)]
struct Samples {
    total: Vec<i64>,
    to_event: Vec<i64>,
}

#[test]
fn scripted_attacks_reach_the_backend_with_their_technique() {
    require_root();
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("picket-latency-")
        .tempdir_in("/tmp")
        .unwrap();
    let backend = Backend::start(dir.path());
    let bearer = backend.admin_session("admin", "correct horse battery");
    let token = backend.enrollment_token("latency");

    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let stage = Stage {
        scratch: std::fs::canonicalize(dir.path()).unwrap().join("scratch"),
        passwd: site.join("passwd"),
    };
    std::fs::create_dir_all(&stage.scratch).unwrap();
    std::fs::copy("/etc/passwd", &stage.passwd).unwrap();
    let batch_delay = batch_delay_ms();
    let (s, broker, passwd) = (site.clone(), backend.broker(), stage.passwd.clone());
    let edit = move |c: &mut toml::Table, _: &Path| {
        enrolled_uplink(c, &s, &broker);
        set(c, "uplink.batch_delay_ms", batch_delay);
        set(c, "uplink.heartbeat_interval_secs", 5);
        // the default: only alerts leave the daemon
        set(c, "output.events", "none");
        set(
            c,
            "modules.fim.paths",
            toml::Value::Array(vec![passwd.to_str().unwrap().into()]),
        );
        // this kernel may lack the module syscalls' tracepoints
        set(c, "modules.syscalls.raw_syscalls_fallback", true);
    };
    enroll(edit.clone(), &backend.url(), &token, Some("latency"));
    let d = Picketd::start(Options {
        edit: Box::new(edit),
        ..Options::default()
    });
    let device = device_id(&d);
    wait_for("the device online", Duration::from_secs(30), || {
        backend
            .devices(&bearer)
            .iter()
            .any(|x| x["id"] == device.as_str() && x["online"] == true)
            .then_some(())
    });

    let mut samples: Vec<Samples> = techniques::ALL.iter().map(|_| Samples::default()).collect();
    let mut warmup = Vec::new();
    let mut seen = HashSet::new();
    // Round-robin, so that anything periodic in the pipeline (flushes,
    // heartbeats) meets every technique alike; each action's alert is at
    // the backend before the next action starts.
    for round in 0..=REPS {
        for (i, t) in techniques::ALL.iter().enumerate() {
            let trace = t.run(&stage);
            let local = wait_for(
                &format!("{}: {:?} in picketd's alerts", t.name, t.rule_title),
                Duration::from_secs(15),
                || {
                    d.alerts().into_iter().find(|a| {
                        t.raised(&trace, a) && !seen.contains(a["alert_id"].as_str().unwrap_or(""))
                    })
                },
            );
            let id = local["alert_id"].as_str().unwrap();
            seen.insert(id.to_owned());
            let stored = wait_for(
                &format!("{}: alert {id} at the backend", t.name),
                Duration::from_secs(15),
                || backend.alert(&bearer, id),
            );
            assert_eq!(stored["rule_title"], t.rule_title, "{stored}");
            assert_eq!(stored["techniques"], json!(t.techniques), "{stored}");
            assert_eq!(stored["device_id"], device.as_str(), "{stored}");
            let at = i64::try_from(trace.at_ms).unwrap();
            let received = stored["received_ms"].as_i64().unwrap();
            let event = stored["timestamp_ms"].as_i64().unwrap();
            assert!(received >= at, "received before the action: {stored}");
            if round == 0 {
                warmup.push(received - at);
            } else {
                samples[i].total.push(received - at);
                samples[i].to_event.push(event - at);
            }
        }
    }

    let mut all = Vec::new();
    // the FIM's settle time is a delay of its own (README)
    let mut kernel = Vec::new();
    let mut table = vec![
        "| technique | alert (rule title) | ATT&CK | n | p50 ms | p99 ms | of which action → event p50 |"
            .to_owned(),
        "|---|---|---|---|---|---|---|".to_owned(),
    ];
    for (t, s) in techniques::ALL.iter().zip(&mut samples) {
        s.total.sort_unstable();
        s.to_event.sort_unstable();
        all.extend_from_slice(&s.total);
        if t.name != techniques::PASSWD_WRITE.name {
            kernel.extend_from_slice(&s.total);
        }
        table.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            t.name.replace('|', "\\|"),
            t.rule_title,
            t.techniques.join(", "),
            s.total.len(),
            pct(&s.total, 0.5),
            pct(&s.total, 0.99),
            pct(&s.to_event, 0.5),
        ));
    }
    all.sort_unstable();
    kernel.sort_unstable();
    table.push(format!(
        "| **all but the passwd change** | | | {} | {} | {} | |",
        kernel.len(),
        pct(&kernel, 0.5),
        pct(&kernel, 0.99)
    ));
    table.push(format!(
        "| **all** | | | {} | {} | {} | |",
        all.len(),
        pct(&all, 0.5),
        pct(&all, 0.99)
    ));
    eprintln!(
        "attack → backend (received_ms), batch_delay_ms = {batch_delay}, warm-up round {warmup:?} ms not counted:\n{}\ntest {:.1} s",
        table.join("\n"),
        started.elapsed().as_secs_f64()
    );
    assert!(
        !backend.log_text().contains("panicked"),
        "{}",
        backend.log_text()
    );
}
