//! `picketctl agent enroll` + `picketctl stream` against an in-process
//! backend raise exactly the alerts `picketctl hunt` finds on the same EVTX
//! files with the same rules, compared as (file, record id, rule id)
//! multisets.
//!
//! Data: the shared EVTX set (`../shared/data/evtx`) and SigmaHQ rules
//! (`../shared/data/sigmahq/rules`); the test is skipped (passes with a
//! note) when they are missing. `PICKET_AGENT_STREAM_EVTX` may name another
//! folder or file.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

mod ingest_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use ingest_support::Backend;
use picket_cli::agent::{InputFormat, StreamConfig};
use picket_cli::hunt::{self, ScanOptions};
use picket_rules::EngineConfig;

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}

type Multiset = BTreeMap<(String, u64, String), usize>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_alerts_equal_hunt_hits() {
    let rules_dir = shared("sigmahq/rules");
    let evtx =
        std::env::var_os("PICKET_AGENT_STREAM_EVTX").map_or_else(|| shared("evtx"), PathBuf::from);
    if !rules_dir.is_dir() || !evtx.exists() {
        eprintln!(
            "skipped: {} or {} missing",
            rules_dir.display(),
            evtx.display()
        );
        return;
    }
    let rd = rules_dir.clone();
    let b = Backend::start(move |c| c.agents.rules_dirs = vec![rd]).await;
    let url = format!("http://{}", b.started.http);

    // Enrollment through the CLI.
    let now = picket_backend::ingest::now_ms();
    b.started
        .store
        .create_token(
            &picket_store::token_hash("enroll-me"),
            "t",
            "op",
            now,
            now + 60_000,
        )
        .await
        .unwrap();
    let secret = b.dir.path().join("agent.secret");
    let (u, s) = (url.clone(), secret.clone());
    let enrolled = tokio::task::spawn_blocking(move || {
        picket_cli::agent::enroll(&u, "enroll-me", "win-1", "windows", "1.0", &s)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(enrolled.platform, "windows");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Stream.
    let config = StreamConfig {
        url,
        secret_file: secret,
        format: InputFormat::Auto,
        paths: vec![evtx.clone()],
        batch_lines: 500,
        batch_bytes: 2 << 20,
    };
    let t = Instant::now();
    let report = tokio::task::spawn_blocking(move || picket_cli::agent::stream(&config))
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "streamed {} lines in {} messages: {} alerts, {} errors in {:?}",
        report.lines,
        report.messages,
        report.alerts.len(),
        report.errors.len(),
        t.elapsed()
    );
    let mut streamed = Multiset::new();
    for a in &report.alerts {
        *streamed
            .entry((a.file.clone(), a.record_id, a.rule_id.clone()))
            .or_default() += 1;
    }

    // Hunt, same files and rules.
    let loaded = hunt::load_rules(&[rules_dir], &EngineConfig::new()).unwrap();
    let (inputs, _) = hunt::collect_inputs(&[evtx]);
    let scan = hunt::scan(&loaded.rules, &inputs, &ScanOptions::default(), None);
    let mut hunted = Multiset::new();
    for h in &scan.hits {
        let id = h.rule.id.clone().unwrap_or_else(|| h.rule.title.clone());
        *hunted
            .entry((h.file.display().to_string(), h.record_id, id))
            .or_default() += 1;
    }
    assert!(!hunted.is_empty(), "the data set raises no alerts at all");
    // Exactly hunt's alerts: the same (file, record id, rule id) multiset.
    let only_hunt: Vec<_> = hunted
        .iter()
        .filter(|(k, v)| streamed.get(*k).is_none_or(|n| n < *v))
        .collect();
    let only_stream: Vec<_> = streamed
        .iter()
        .filter(|(k, v)| hunted.get(*k).is_none_or(|n| n < *v))
        .collect();
    assert!(
        only_hunt.is_empty() && only_stream.is_empty(),
        "hunt hits the stream missed: {only_hunt:#?}\nstream alerts hunt has not: {only_stream:#?}"
    );
    assert_eq!(streamed, hunted);
    eprintln!(
        "hunt {} hits = stream {} alerts",
        scan.hits.len(),
        report.alerts.len()
    );
    // Every alert is stored.
    let stats = b.started.store.stats().await.unwrap();
    assert_eq!(stats.alerts, report.alerts.len() as u64);
}
