//! Windows and macOS agent streams, the backend half: the agent rule set
//! (`[agents] rules_dirs`, loaded at start) and [`AgentStreams::lines`],
//! which `Fleet::agent_lines` calls for each WebSocket message of
//! `GET /api/v1/agents/stream` (the API side is `picket_api`'s `agents`
//! module; the protocol is `docs/AGENT-STREAM.md`).
//!
//! Each line goes through [`picket_agents::map_line`] and
//! [`picket_agents::Mapped::evaluate`]; each match becomes a [`NewAlert`]
//! (source `windows` for evtx/Winlogbeat events, `macos` for eslogger/ECS;
//! the mapped Sigma fields as the event JSON, with `format` and
//! `rule_author`), stored in one [`Store::insert_alerts`] call per message
//! and then broadcast as [`LiveEvent::Alert`] like ingest does. The alert
//! time is the time the backend received the line: agent formats disagree
//! on where their event time is, and the stored event keeps it.
//!
//! Mapping and evaluating a message is CPU work (tens of microseconds a
//! line with the SigmaHQ Windows set): it runs on the blocking pool, at
//! most one message per core at a time ([`AgentStreams::new`] sizes the
//! pool from [`std::thread::available_parallelism`]). Messages of other
//! streams wait for a slot without holding a thread, so a hundred streams
//! cost a hundred queued messages, not a hundred threads each with its own
//! parse trees and allocator arena, and the async workers stay free for
//! the sockets and the store.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use picket_agents::Format;
use picket_api::{AgentAlert, AgentLineError, AgentReport, FleetError, LiveEvent};
use picket_rules::{EngineConfig, Match, RuleSet};
use picket_store::model::{AgentRecord, Alert, AlertSource, AlertStatus, Level, NewAlert};
use picket_store::Store;
use tokio::sync::{broadcast, Semaphore};

use crate::ingest::now_ms;

/// Loads the agent rule set from files and folders (recursively, `.yml`
/// and `.yaml`). Rules that do not compile and unreadable files are
/// logged and left out; the backend starts anyway.
#[must_use]
pub fn load_rules(paths: &[PathBuf]) -> RuleSet {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files);
    }
    files.sort();
    let sources: Vec<(PathBuf, String)> = files
        .into_iter()
        .filter_map(|f| match std::fs::read_to_string(&f) {
            Ok(text) => Some((f, text)),
            Err(e) => {
                tracing::warn!(path = %f.display(), error = %e, "agent rule unreadable");
                None
            }
        })
        .collect();
    let loaded = RuleSet::from_sources(sources, &EngineConfig::new());
    for e in &loaded.errors {
        tracing::debug!(error = %e, "agent rule left out");
    }
    tracing::info!(
        rules = loaded.rules.len(),
        left_out = loaded.errors.len(),
        "agent rules loaded"
    );
    loaded.rules
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        match std::fs::read_dir(path) {
            Ok(entries) => {
                for e in entries.flatten() {
                    collect(&e.path(), out);
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "agent rules folder unreadable");
            }
        }
    } else if path
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("yml") || x.eq_ignore_ascii_case("yaml"))
    {
        out.push(path.to_owned());
    }
}

/// Counters of the agent streams.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    lines: AtomicU64,
    line_errors: AtomicU64,
    alerts: AtomicU64,
}

/// The agent rule set and where matches go.
#[derive(Debug)]
pub struct AgentStreams {
    rules: Arc<RuleSet>,
    store: Arc<dyn Store>,
    live: broadcast::Sender<LiveEvent>,
    metrics: AgentMetrics,
    /// One permit per message being mapped and evaluated.
    workers: Arc<Semaphore>,
}

/// Random 32-hex alert ids, one `getrandom` call for all of them.
fn random_ids(n: usize) -> Vec<String> {
    let mut bytes = vec![0u8; 16 * n];
    let _ = getrandom::fill(&mut bytes);
    bytes.chunks_exact(16).map(crate::hex).collect()
}

pub(crate) fn level(l: Option<picket_rules::Level>) -> Level {
    match l {
        Some(picket_rules::Level::Critical) => Level::Critical,
        Some(picket_rules::Level::High) => Level::High,
        Some(picket_rules::Level::Medium) => Level::Medium,
        Some(picket_rules::Level::Low) => Level::Low,
        _ => Level::Informational,
    }
}

/// The message's agent sequence number: a first non-blank line that is
/// exactly `{"seq": <u64>}` (AGENT-STREAM.md §2), and its index.
fn message_seq(text: &str) -> Option<(usize, u64)> {
    let (i, line) = text
        .split('\n')
        .enumerate()
        .find(|(_, l)| !l.trim().is_empty())?;
    // Event lines are long; a seq line is short.
    if line.len() > 64 {
        return None;
    }
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line.trim()).ok()?;
    match (v.len(), v.get("seq").and_then(serde_json::Value::as_u64)) {
        (1, Some(seq)) => Some((i, seq)),
        _ => None,
    }
}

/// The id of an alert of a sequenced message: the same for a resend of the
/// same message (device, seq, line number, line, rule), so the store skips
/// it; a seq reused for other lines gives other ids.
fn stable_id(device: &str, seq: u64, line_no: u64, line: &str, rule_id: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for part in [
        device.as_bytes(),
        &seq.to_be_bytes(),
        &line_no.to_be_bytes(),
        line.as_bytes(),
        rule_id.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    crate::hex(&h.finalize()[..16])
}

/// Maps and evaluates the lines of one message: the report (without alert
/// ids) and the alerts to store. CPU only.
fn evaluate(
    rules: &RuleSet,
    device: &str,
    text: &str,
    received_ms: i64,
) -> (AgentReport, Vec<NewAlert>) {
    let mut report = AgentReport::default();
    let mut alerts = Vec::new();
    let mut matches: Vec<Match> = Vec::new();
    let seq = message_seq(text);
    report.seq = seq.map(|(_, s)| s);
    for (i, line) in text.split('\n').enumerate() {
        let no = i as u64 + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || seq.is_some_and(|(at, _)| at == i) {
            continue;
        }
        report.lines += 1;
        let mapped = match picket_agents::map_line(line.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                report.errors.push(AgentLineError {
                    line: no,
                    error: e.to_string(),
                    reason: e.reason(),
                });
                continue;
            }
        };
        matches.clear();
        mapped.evaluate(rules, &mut matches);
        let source = match mapped.format {
            Format::Evtx | Format::Winlogbeat => AlertSource::Windows,
            _ => AlertSource::Macos,
        };
        for m in &matches {
            let rule = &m.rule;
            let rule_id = rule.id.clone().unwrap_or_else(|| rule.title.clone());
            let mut event = mapped.fields.clone();
            event.insert("format".into(), mapped.format.name().into());
            if let Some(a) = &rule.author {
                event.insert("rule_author".into(), a.clone().into());
            }
            // Without a seq the ids are random, filled below for the whole
            // message at once.
            let id = match seq {
                Some((_, s)) => stable_id(device, s, no, line, &rule_id),
                None => String::new(),
            };
            let alert = NewAlert {
                id,
                device_id: device.to_owned(),
                seq: 0,
                timestamp_ms: received_ms,
                received_ms,
                level: level(rule.level),
                source,
                rule_id: rule_id.clone(),
                rule_title: rule.title.clone(),
                techniques: rule.techniques.clone(),
                image: mapped.text("Image").map(str::to_owned),
                command_line: mapped.text("CommandLine").map(str::to_owned),
                path: mapped.text("TargetFilename").map(str::to_owned),
                event: serde_json::Value::Object(event),
            };
            report.alerts.push(AgentAlert {
                line: no,
                id: alert.id.clone(),
                rule_id,
                rule_title: alert.rule_title.clone(),
                level: alert.level,
            });
            alerts.push(alert);
        }
    }
    if seq.is_none() {
        let ids = random_ids(alerts.len());
        for ((alert, answer), id) in alerts.iter_mut().zip(&mut report.alerts).zip(ids) {
            answer.id.clone_from(&id);
            alert.id = id;
        }
    }
    (report, alerts)
}

impl AgentStreams {
    /// Matches go to `store` and `live`; messages are evaluated on as many
    /// threads as there are cores.
    #[must_use]
    pub fn new(rules: RuleSet, store: Arc<dyn Store>, live: broadcast::Sender<LiveEvent>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            rules: Arc::new(rules),
            store,
            live,
            metrics: AgentMetrics::default(),
            workers: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Maps, evaluates and stores one message; returns once the alerts are
    /// stored (and broadcast) and the device's `last_seen_ms` is touched.
    ///
    /// # Errors
    /// [`FleetError::Internal`] when the store fails.
    pub async fn lines(&self, agent: &AgentRecord, text: &str) -> Result<AgentReport, FleetError> {
        let received = now_ms();
        // The permit moves into the task: a stream that goes away while its
        // message is evaluated does not free the slot before the work ends.
        let permit = Arc::clone(&self.workers)
            .acquire_owned()
            .await
            .map_err(|e| FleetError::Internal(format!("agent evaluation slots: {e}")))?;
        let rules = self.rules.clone();
        let device = agent.device_id.clone();
        let text = text.to_owned();
        let (mut report, alerts) = tokio::task::spawn_blocking(move || {
            let out = evaluate(&rules, &device, &text, received);
            drop(permit);
            out
        })
        .await
        .map_err(|e| FleetError::Internal(format!("agent batch task: {e}")))?;
        self.metrics
            .lines
            .fetch_add(report.lines, Ordering::Relaxed);
        self.metrics
            .line_errors
            .fetch_add(report.errors.len() as u64, Ordering::Relaxed);
        for e in &report.errors {
            tracing::debug!(device = %agent.device_id, line = e.line, error = %e.error, "agent line refused");
        }
        if !alerts.is_empty() {
            let stored = self
                .store
                .insert_alerts(&alerts)
                .await
                .map_err(|e| FleetError::Internal(format!("storing agent alerts: {e}")))?;
            self.metrics
                .alerts
                .fetch_add(stored.inserted, Ordering::Relaxed);
            report.duplicates = stored.duplicates;
            // A resend whose alerts were all stored before is not
            // broadcast again (a partly stored one is, whole).
            let alerts = if stored.inserted == 0 {
                Vec::new()
            } else {
                alerts
            };
            for a in alerts {
                let _ = self.live.send(LiveEvent::Alert(Box::new(Alert {
                    updated_ms: a.received_ms,
                    alert: a,
                    status: AlertStatus::New,
                    assignee: None,
                })));
            }
        }
        self.store
            .touch_device(&agent.device_id, received)
            .await
            .map_err(|e| FleetError::Internal(format!("touching device: {e}")))?;
        Ok(report)
    }

    /// The agent rule set (hunting jobs use it too).
    #[must_use]
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.clone()
    }

    /// Prometheus text of the counters.
    #[must_use]
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "picket_agent_lines_received_total",
                "Agent stream lines received.",
                &self.metrics.lines,
            ),
            (
                "picket_agent_lines_refused_total",
                "Agent stream lines that could not be mapped (answered with an error).",
                &self.metrics.line_errors,
            ),
            (
                "picket_agent_alerts_stored_total",
                "Alerts raised on agent streams and stored.",
                &self.metrics.alerts,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}
