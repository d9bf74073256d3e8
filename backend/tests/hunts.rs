//! Hunting jobs end to end against an in-process backend over real HTTP:
//! shared EVTX samples and two corrupt files uploaded as one job with the
//! SigmaHQ Windows rules as the agent rule set; the job's matches equal
//! what `picketctl hunt`'s engine path finds in the same files, the corrupt
//! files fail with their reason and the others complete, progress reaches
//! the totals, the job's alerts are listed with `?hunt=` and not by
//! default; size cap, cancel, delete, audit and restart re-queueing.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

mod ingest_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use ingest_support::Backend;
use picket_api::LiveEvent;
use picket_rules::RuleSet;
use picket_store::hunt::{HuntFileState, HuntState};
use picket_store::model::{AuditFilter, Role, Session};
use serde_json::Value;

const MAX_UPLOAD: u64 = 4 << 20;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

fn rules_dir() -> PathBuf {
    shared().join("sigmahq/rules/windows")
}

/// Samples with matches: one of 17 chunks, two of one chunk.
fn samples() -> Vec<PathBuf> {
    let base = shared().join("evtx/hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES");
    [
        "AutomatedTestingTools/PanacheSysmon_vs_AtomicRedTeam01.evtx",
        "Defense Evasion/de_unmanagedpowershell_psinject_sysmon_7_8_10.evtx",
        "Lateral Movement/LM_sysmon_psexec_smb_meterpreter.evtx",
    ]
    .iter()
    .map(|p| base.join(p))
    .collect()
}

/// The rule set the backend loads, loaded the same way once.
fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| picket_backend::agents::load_rules(&[rules_dir()]))
}

async fn backend() -> Backend {
    Backend::start(|c| {
        c.agents.rules_dirs = vec![rules_dir()];
        c.hunts.max_upload_bytes = MAX_UPLOAD;
    })
    .await
}

async fn token(b: &Backend, role: Role) -> String {
    let store = &b.started.store;
    let user = store
        .create_user(role.as_str(), "$argon2id$unused", role, 0)
        .await
        .unwrap();
    let token = format!("{:064x}", user.id);
    store
        .create_session(&Session {
            token_hash: picket_store::token_hash(&token),
            user_id: user.id,
            created_ms: 0,
            expires_ms: i64::MAX,
        })
        .await
        .unwrap();
    token
}

struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP request (ureq, on the blocking pool).
async fn call(
    b: &Backend,
    method: &str,
    path: &str,
    token: &str,
    body: Option<(String, Vec<u8>)>,
) -> Reply {
    let url = format!("http://{}{path}", b.started.http);
    let method = method.to_owned();
    let auth = format!("Bearer {token}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let resp = match (method.as_str(), body) {
            ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
            ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
            ("POST", Some((ctype, bytes))) => agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", &ctype)
                .send(&bytes[..]),
            ("POST", None) => agent.post(&url).header("authorization", &auth).send_empty(),
            (m, _) => panic!("method {m}"),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap();
        Reply { status, body }
    })
    .await
    .unwrap()
}

const BOUNDARY: &str = "picket-test-boundary-7d2f";

fn multipart(name: &str, files: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n")
            .as_bytes(),
    );
    for (file, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{file}\"\r\n\
                 content-type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

async fn wait_finished(b: &Backend, token: &str, id: i64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let r = call(b, "GET", &format!("/api/v1/hunts/{id}"), token, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let job = r.json();
        if !matches!(job["state"].as_str(), Some("queued" | "running")) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (file, record id, rule id) of every match, sorted, with repeats.
type Key = (String, u64, String);

fn expected(files: &[PathBuf]) -> Vec<Key> {
    let (inputs, problems) = picket_cli::hunt::collect_inputs(files);
    assert!(problems.is_empty(), "{problems:?}");
    let report = picket_cli::hunt::scan(
        rules(),
        &inputs,
        &picket_cli::hunt::ScanOptions::default(),
        None,
    );
    let mut keys: Vec<Key> = report
        .hits
        .iter()
        .map(|h| {
            (
                file_name(&h.file),
                h.record_id,
                h.rule.id.clone().unwrap_or_else(|| h.rule.title.clone()),
            )
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one job followed from upload to delete"
)]
async fn uploaded_evtx_files_become_a_job_with_the_cli_engines_matches() {
    let b = backend().await;
    let op = token(&b, Role::Operator).await;
    let viewer = token(&b, Role::Viewer).await;
    let mut live = b.started.live.subscribe();

    let mut files: Vec<(String, Vec<u8>)> = samples()
        .iter()
        .map(|p| (file_name(p), std::fs::read(p).unwrap()))
        .collect();
    // Not EVTX at all, and EVTX magic over garbage.
    files.push((
        "notes.evtx".into(),
        b"this is a text file, not a Windows event log\n".repeat(40),
    ));
    let mut garbage = b"ElfFile\0".to_vec();
    garbage.extend((0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    files.push(("cut.evtx".into(), garbage));
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();

    // A viewer may look but not upload.
    let r = call(
        &b,
        "POST",
        "/api/v1/hunts",
        &viewer,
        Some(multipart("x", &files)),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);

    let r = call(
        &b,
        "POST",
        "/api/v1/hunts",
        &op,
        Some(multipart("case 42", &files)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["name"], "case 42");
    assert_eq!(created["files_total"], 5);
    assert_eq!(created["bytes_total"].as_u64().unwrap(), total as u64);
    assert_eq!(created["files"][0]["name"], file_name(&samples()[0]));
    assert_eq!(
        created["files"][3]["sha256"].as_str().unwrap().len(),
        64,
        "{created}"
    );

    let done = wait_finished(&b, &viewer, id).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["files_done"], done["files_total"], "{done}");
    assert_eq!(done["bytes_done"], done["bytes_total"], "{done}");
    let files_out = done["files"].as_array().unwrap();
    for f in &files_out[..3] {
        assert_eq!(f["state"], "done", "{f}");
        assert!(f["records"].as_u64().unwrap() > 0, "{f}");
    }
    let notes = &files_out[3];
    assert_eq!(notes["state"], "failed", "{notes}");
    assert!(
        notes["error"]
            .as_str()
            .unwrap()
            .contains("not an EVTX file"),
        "{notes}"
    );
    let cut = &files_out[4];
    assert_eq!(cut["state"], "failed", "{cut}");
    assert!(
        !cut["error"].as_str().unwrap_or_default().is_empty(),
        "{cut}"
    );
    let records: u64 = files_out
        .iter()
        .map(|f| f["records"].as_u64().unwrap())
        .sum();
    assert_eq!(done["records_done"].as_u64().unwrap(), records);
    // The live feed followed the job: queued, running, done with the totals.
    let mut states = Vec::new();
    while let Ok(ev) = live.try_recv() {
        if let LiveEvent::Hunt(h) = ev {
            assert_eq!(h.id, id);
            states.push(h.state);
            if h.state == HuntState::Done {
                assert_eq!(h.bytes_done, h.bytes_total);
            }
        }
    }
    assert_eq!(states.first(), Some(&HuntState::Queued), "{states:?}");
    assert!(states.contains(&HuntState::Running), "{states:?}");
    assert_eq!(states.last(), Some(&HuntState::Done), "{states:?}");

    // The timeline holds exactly what the CLI's engine path finds.
    let mut rows = Vec::new();
    let mut offset = 0;
    loop {
        let r = call(
            &b,
            "GET",
            &format!("/api/v1/hunts/{id}/timeline?offset={offset}&limit=100"),
            &viewer,
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        let got = page["rows"].as_array().unwrap().clone();
        assert_eq!(page["total"], done["matches"]);
        if got.is_empty() {
            break;
        }
        offset += got.len();
        rows.extend(got);
    }
    let mut keys: Vec<Key> = rows
        .iter()
        .map(|r| {
            (
                r["file"].as_str().unwrap().to_owned(),
                r["record_id"].as_u64().unwrap(),
                r["rule_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    keys.sort();
    let want = expected(&samples());
    assert!(want.len() > 200, "the samples should match: {}", want.len());
    assert_eq!(keys, want);
    assert_eq!(done["matches"].as_u64().unwrap(), want.len() as u64);
    let times: Vec<i64> = rows
        .iter()
        .map(|r| r["timestamp_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "event-time order");
    assert!(rows
        .iter()
        .all(|r| r["rule_title"].as_str().is_some_and(|t| !t.is_empty())));
    assert!(rows
        .iter()
        .any(|r| r["rule_author"].as_str().is_some_and(|a| !a.is_empty())));
    assert!(rows
        .iter()
        .all(|r| r["computer"].as_str().is_some_and(|c| !c.is_empty())));
    // Per-file counts add up.
    let mut per_file: BTreeMap<String, u64> = BTreeMap::new();
    for (f, _, _) in &keys {
        *per_file.entry(f.clone()).or_default() += 1;
    }
    for f in &files_out[..3] {
        let name = f["name"].as_str().unwrap();
        assert_eq!(
            f["matches"].as_u64().unwrap(),
            per_file.get(name).copied().unwrap_or(0)
        );
    }

    // The job's alerts: with `?hunt=`, never in the default list.
    let mut alert_ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = call(
            &b,
            "GET",
            &format!("/api/v1/alerts?hunt={id}&limit=500&cursor={cursor}"),
            &viewer,
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        for a in page["alerts"].as_array().unwrap() {
            assert_eq!(a["source"], "upload");
            alert_ids.push(a["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => cursor = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(alert_ids.len(), want.len());
    let r = call(&b, "GET", "/api/v1/alerts?limit=500", &viewer, None).await;
    assert_eq!(
        r.json()["alerts"].as_array().unwrap().len(),
        0,
        "{}",
        r.body
    );
    let r = call(&b, "GET", "/api/v1/alerts?hunt=x", &viewer, None).await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Listed; finished jobs cannot be cancelled.
    let r = call(&b, "GET", "/api/v1/hunts", &viewer, None).await;
    assert_eq!(r.json()[0]["id"].as_i64(), Some(id));
    let r = call(&b, "POST", &format!("/api/v1/hunts/{id}/cancel"), &op, None).await;
    assert_eq!(r.status, 409, "{}", r.body);

    // Over the cap: 413, nothing kept.
    let big = vec![("big.evtx".to_owned(), vec![0u8; (MAX_UPLOAD + 1) as usize])];
    let r = call(
        &b,
        "POST",
        "/api/v1/hunts",
        &op,
        Some(multipart("big", &big)),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    let r = call(
        &b,
        "POST",
        "/api/v1/hunts",
        &op,
        Some(multipart("none", &[])),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let hunts_dir = b.dir.path().join("hunts");
    let left: Vec<String> = std::fs::read_dir(&hunts_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![id.to_string()], "upload folders are removed");

    // Delete: records, alerts and files go.
    let r = call(&b, "DELETE", &format!("/api/v1/hunts/{id}"), &op, None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = call(&b, "GET", &format!("/api/v1/hunts/{id}"), &viewer, None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(!hunts_dir.join(id.to_string()).exists());
    let r = call(
        &b,
        "GET",
        &format!("/api/v1/alerts?hunt={id}"),
        &viewer,
        None,
    )
    .await;
    assert_eq!(r.json()["alerts"].as_array().unwrap().len(), 0);

    let audit = b
        .started
        .store
        .audit_log(
            &AuditFilter {
                action_prefix: Some("hunt.".into()),
                ..AuditFilter::default()
            },
            10,
        )
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["hunt.delete", "hunt.create"]);
    assert!(audit
        .iter()
        .all(|e| e.actor == "operator" && e.target == id.to_string()));
    let _ = b.shutdown.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_at_start_is_requeued_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = picket_backend::config::Config::ephemeral(dir.path());
    config.agents.rules_dirs = vec![rules_dir()];
    let sample = samples().remove(2);
    // A job a previous run left `running`, its file where the backend keeps it.
    let id = {
        let store = picket_backend::open_store(&config).await.unwrap();
        let d = store
            .create_hunt(&picket_store::hunt::NewHunt {
                name: "before the crash".into(),
                created_by: "olga".into(),
                created_ms: 1,
                files: vec![picket_store::hunt::NewHuntFile {
                    name: file_name(&sample),
                    size: std::fs::metadata(&sample).unwrap().len(),
                    sha256: String::new(),
                }],
            })
            .await
            .unwrap();
        let mut h = d.hunt;
        h.state = HuntState::Running;
        h.records_done = 7;
        store.update_hunt(&h).await.unwrap();
        let job = dir.path().join("hunts").join(h.id.to_string());
        std::fs::create_dir_all(&job).unwrap();
        std::fs::copy(&sample, job.join("0")).unwrap();
        h.id
    };
    let b = Backend::start_with(dir, config).await;
    let viewer = token(&b, Role::Viewer).await;
    let done = wait_finished(&b, &viewer, id).await;
    assert_eq!(done["state"], "done", "{done}");
    assert!(
        done["error"]
            .as_str()
            .unwrap_or_default()
            .contains("re-queued"),
        "{done}"
    );
    assert_eq!(done["files"][0]["state"], HuntFileState::Done.as_str());
    assert_eq!(
        done["matches"].as_u64().unwrap(),
        expected(&[sample]).len() as u64
    );
    let _ = b.shutdown.send(true);
}

/// Cancel and delete while jobs run or wait: one job runs at a time
/// (`[hunts] concurrent_jobs = 1`, the default), so a second upload waits
/// queued behind a large first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_cancelled_and_deleted_while_they_run_or_wait() {
    let b = Backend::start(|c| {
        c.agents.rules_dirs = vec![rules_dir()];
        c.hunts.threads = 1;
    })
    .await;
    let op = token(&b, Role::Operator).await;
    // 40 copies of a 17-chunk sample: many batches, so the job is still
    // running when the cancel arrives.
    let sample = std::fs::read(&samples()[0]).unwrap();
    let big: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("copy-{i}.evtx"), sample.clone()))
        .collect();
    let small = vec![("small.evtx".to_owned(), sample[..69_632].to_vec())];
    let post = |name: &str, files: &[(String, Vec<u8>)]| {
        call(
            &b,
            "POST",
            "/api/v1/hunts",
            &op,
            Some(multipart(name, files)),
        )
    };

    let wait_running = |id: i64| {
        let b = &b;
        let op = &op;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let job = call(b, "GET", &format!("/api/v1/hunts/{id}"), op, None)
                    .await
                    .json();
                if job["state"] == "running" {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "never ran: {job}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let r = post("big", &big).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let a = r.json()["id"].as_i64().unwrap();
    wait_running(a).await;
    let r = post("waits", &small).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let queued = r.json()["id"].as_i64().unwrap();

    // The waiting job is cancelled at once; the worker never starts it.
    let r = call(
        &b,
        "POST",
        &format!("/api/v1/hunts/{queued}/cancel"),
        &op,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "cancelled");
    assert_eq!(r.json()["started_ms"], Value::Null);

    // The running one stops after its batch; what it found is kept.
    let r = call(&b, "POST", &format!("/api/v1/hunts/{a}/cancel"), &op, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cancelled = r.json();
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert!(cancelled["started_ms"].as_i64().is_some(), "{cancelled}");
    assert!(cancelled["finished_ms"].as_i64().is_some());
    let job = call(&b, "GET", &format!("/api/v1/hunts/{a}"), &op, None)
        .await
        .json();
    assert!(
        job["files_done"].as_u64().unwrap() < 40,
        "the job ran to its end before the cancel: {job}"
    );
    assert!(job["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["state"] == "queued"));
    let r = call(&b, "POST", &format!("/api/v1/hunts/{a}/cancel"), &op, None).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let after = call(&b, "GET", &format!("/api/v1/hunts/{queued}"), &op, None)
        .await
        .json();
    assert_eq!(after["state"], "cancelled", "{after}");

    // Deleting a running job stops it and removes everything.
    let r = post("deleted", &big).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let c = r.json()["id"].as_i64().unwrap();
    wait_running(c).await;
    let r = call(&b, "DELETE", &format!("/api/v1/hunts/{c}"), &op, None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = call(&b, "GET", &format!("/api/v1/hunts/{c}"), &op, None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(!b.dir.path().join("hunts").join(c.to_string()).exists());
    let r = call(&b, "GET", &format!("/api/v1/alerts?hunt={c}"), &op, None).await;
    assert_eq!(
        r.json()["alerts"].as_array().unwrap().len(),
        0,
        "{}",
        r.body
    );
    let _ = b.shutdown.send(true);
}
