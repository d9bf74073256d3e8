//! Local detection: Sigma rules evaluated on every event, offline.
//!
//! The detector is a transform between the bus and the alert sink. It runs
//! on its own thread (rule evaluation is CPU work and must not starve the
//! async runtime) and subscribes to the bus with back-pressure, so every
//! event the sensor publishes is evaluated or the loss is counted in the
//! kernel. Rules come from the configured directories plus Picket's
//! built-in Linux rules (`appliance/rules/*.yml`, compiled into the binary),
//! which cover what SigmaHQ has no Linux rule for: fileless (memfd)
//! execution, ptrace attach, kernel module loads, changes of critical files.

use crate::event::{Event, FieldValue};
use crate::telemetry::{Counter, Registry};
use picket_rules::{EngineConfig, LogSource, Match, Route, RuleSet, Value};
use serde::Serialize;
use std::borrow::Cow;
use std::path::PathBuf;

/// Picket's own rules, compiled in.
pub const BUILTIN_RULES: &[(&str, &str)] = &[
    (
        "builtin/cron_persistence.yml",
        include_str!("../rules/cron_persistence.yml"),
    ),
    (
        "builtin/history_clearing.yml",
        include_str!("../rules/history_clearing.yml"),
    ),
    (
        "builtin/systemd_persistence.yml",
        include_str!("../rules/systemd_persistence.yml"),
    ),
    (
        "builtin/fileless_exec.yml",
        include_str!("../rules/fileless_exec.yml"),
    ),
    (
        "builtin/ptrace_attach.yml",
        include_str!("../rules/ptrace_attach.yml"),
    ),
    (
        "builtin/kernel_module_load.yml",
        include_str!("../rules/kernel_module_load.yml"),
    ),
    (
        "builtin/reverse_shell.yml",
        include_str!("../rules/reverse_shell.yml"),
    ),
    (
        "builtin/download_pipe_shell.yml",
        include_str!("../rules/download_pipe_shell.yml"),
    ),
    (
        "builtin/critical_file_change.yml",
        include_str!("../rules/critical_file_change.yml"),
    ),
    (
        "builtin/setuid_root.yml",
        include_str!("../rules/setuid_root.yml"),
    ),
    (
        "builtin/setuid_bit.yml",
        include_str!("../rules/setuid_bit.yml"),
    ),
];

/// Wraps an event for the engine.
#[derive(Debug)]
pub struct SigmaEvent<'a>(pub &'a Event);

fn conv(v: FieldValue<'_>) -> Value<'_> {
    match v {
        FieldValue::Str(s) => Value::Str(s),
        FieldValue::Int(i) => Value::Int(i),
        FieldValue::Bool(b) => Value::Str(Cow::Borrowed(if b { "true" } else { "false" })),
    }
}

impl picket_rules::Event for SigmaEvent<'_> {
    fn field(&self, name: &str) -> Option<Value<'_>> {
        self.0.field(name).map(conv)
    }

    /// Keyword searches look at the raw message of log events, and at the
    /// command line otherwise.
    fn for_each_value(&self, visit: &mut dyn FnMut(&Value<'_>) -> bool) {
        visit(&Value::Str(Cow::Borrowed(self.0.message())));
    }
}

/// The log source the engine routes an event by.
pub fn logsource(e: &Event) -> LogSource {
    let (category, service) = e.logsource();
    LogSource::new(Some("linux"), category, service)
}

/// An alert as picketd emits it (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// 128-bit random id, hex.
    pub alert_id: String,
    /// Wall-clock ns of the event.
    pub time_ns: u64,
    /// Rule id.
    pub rule_id: String,
    /// Rule title.
    pub rule_title: String,
    /// Level.
    pub level: String,
    /// Status.
    pub status: String,
    /// Author (the Detection Rule License requires it with every match).
    pub author: String,
    /// Tags as written.
    pub tags: Vec<String>,
    /// ATT&CK technique ids.
    pub techniques: Vec<String>,
    /// ATT&CK tactics as `TAxxxx Name`.
    pub tactics: Vec<String>,
    /// Fields that matched.
    pub matched: Vec<(String, String)>,
    /// The event.
    pub event: Event,
}

/// A random 128-bit id as hex.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    // SAFETY: b is a valid buffer of 16 bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 16 {
        // getrandom cannot fail for 16 bytes after boot; keep ids unique anyway
        let t = crate::decoder::unix_ns().to_ne_bytes();
        b[..8].copy_from_slice(&t);
    }
    hex::encode(b)
}

impl Alert {
    /// An alert from a rule match.
    pub fn from_match(m: &Match, event: &Event) -> Alert {
        let r = &m.rule;
        Alert {
            alert_id: random_id(),
            time_ns: event.time_ns,
            rule_id: r.id.clone().unwrap_or_default(),
            rule_title: r.title.clone(),
            level: r.level.map_or("informational", |l| l.as_str()).to_owned(),
            status: r.status.map_or("", |s| s.as_str()).to_owned(),
            author: r.author.clone().unwrap_or_default(),
            tags: r.tags.clone(),
            techniques: r.techniques.clone(),
            tactics: r
                .tactics
                .iter()
                .map(|t| format!("{} {}", t.id, t.name))
                .collect(),
            matched: m
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.value.clone()))
                .collect(),
            event: event.clone(),
        }
    }
}

/// The rule set detection runs, replaceable while events flow.
///
/// The detection thread takes the current set between two bus batches, so
/// every event is evaluated by exactly one set: the old or the new, never
/// neither and never both. Compiling happens before [`RuleSlot::replace`],
/// and so does building the set's routes ([`prepare_routes`]), on the
/// thread that swaps; the swap itself is a pointer exchange. Freeing the
/// old set happens after it, on a thread of its own: the detection thread
/// only lets go of its reference. Correlation windows belong to the set,
/// so a swap starts them afresh.
#[derive(Debug, Clone)]
pub struct RuleSlot {
    current: std::sync::Arc<std::sync::Mutex<std::sync::Arc<RuleSet>>>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RuleSlot {
    /// A slot holding `rules` (generation 0).
    #[must_use]
    pub fn new(rules: RuleSet) -> Self {
        prepare_routes(&rules);
        Self {
            current: std::sync::Arc::new(std::sync::Mutex::new(std::sync::Arc::new(rules))),
            generation: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Builds the routes of `rules` and installs it; returns the new
    /// generation.
    pub fn replace(&self, rules: RuleSet) -> u64 {
        prepare_routes(&rules);
        let (old, generation) = {
            let mut c = self
                .current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let old = std::mem::replace(&mut *c, std::sync::Arc::new(rules));
            // bumped under the lock: a reader that sees the new number gets the new set
            let g = self
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            (old, g + 1)
        };
        retire(old);
        generation
    }

    /// The generation installed last (cheap: one atomic load).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current set and its generation.
    #[must_use]
    pub fn current(&self) -> (u64, std::sync::Arc<RuleSet>) {
        let c = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.generation(), c.clone())
    }
}

/// Builds and caches the route (the rules and the prefilter automata) of
/// every logsource picketd's events can have, so that the detection thread
/// does not build each on its first event after a swap: with the SigmaHQ
/// Linux rules that took it longer than evaluating thousands of events
/// (`cargo bench -p picket-appliance --bench rule_swap`).
///
/// An event has product `linux` and either a category or a service
/// ([`logsource`]). Its route is one of: a category or service some rule
/// names, or the one route shared by all names the set does not know.
pub fn prepare_routes(rules: &RuleSet) {
    // names no rule can have: they stand for every name the set does not know
    const UNKNOWN: &str = "\0unknown";
    let mut categories = std::collections::BTreeSet::from([UNKNOWN]);
    let mut services = std::collections::BTreeSet::from([UNKNOWN]);
    for r in rules.rules() {
        categories.extend(r.logsource.category.as_deref());
        services.extend(r.logsource.service.as_deref());
    }
    for c in categories {
        rules.route(&[LogSource::new(Some("linux"), Some(c), None)]);
    }
    for s in services {
        rules.route(&[LogSource::new(Some("linux"), None, Some(s))]);
    }
}

/// The detection stage: evaluates bus batches with the set in a
/// [`RuleSlot`], taking a new set only between two batches, and counts the
/// events each rule-set generation evaluated
/// (`picket_rules_evaluated_total{generation}`), so that a swap can be
/// checked from outside: the generations' counts add up to the events
/// delivered, each event counted once.
#[derive(Debug)]
pub struct Detector {
    slot: RuleSlot,
    registry: Registry,
    generation: u64,
    rules: std::sync::Arc<RuleSet>,
    /// The route of each event category seen with `rules`: kernel events
    /// have a fixed category and no service, so the route is found without
    /// building a `LogSource` (two allocations) and hashing it per event.
    routes: Vec<(&'static str, std::sync::Arc<Route>)>,
    evaluated: Counter,
    scratch: Vec<Match>,
}

fn evaluated_counter(registry: &Registry, generation: u64) -> Counter {
    registry.counter(
        "picket_rules_evaluated_total",
        "events evaluated, by the generation of the rule set that evaluated them (0: the set loaded at start, +1 per swap)",
        &[("generation", &generation.to_string())],
    )
}

impl Detector {
    /// A detector running the set in `slot`, counting into `registry`.
    #[must_use]
    pub fn new(slot: RuleSlot, registry: Registry) -> Self {
        let (generation, rules) = slot.current();
        Detector {
            evaluated: evaluated_counter(&registry, generation),
            slot,
            registry,
            generation,
            rules,
            routes: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The generation of the set that evaluated the last batch.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Evaluates one bus batch, all of it with one set: the set installed
    /// last, taken before the first event. Pushes the alerts to `out`.
    pub fn evaluate_batch(&mut self, events: &[Event], out: &mut Vec<Alert>) {
        if self.slot.generation() != self.generation {
            // the old set is freed by the thread that replaced it, not here
            (self.generation, self.rules) = self.slot.current();
            self.routes.clear();
            self.evaluated = evaluated_counter(&self.registry, self.generation);
        }
        for ev in events {
            let (Some(category), None) = ev.logsource() else {
                // log events: a service named by the log line, any text
                evaluate(&self.rules, ev, &mut self.scratch, out);
                continue;
            };
            let route = match self.routes.iter().find(|(c, _)| *c == category) {
                Some((_, r)) => r,
                None => {
                    let r = self.rules.route(&[logsource(ev)]);
                    self.routes.push((category, r));
                    &self.routes[self.routes.len() - 1].1
                }
            };
            self.scratch.clear();
            self.rules
                .evaluate_route(route, &SigmaEvent(ev), &mut self.scratch);
            for m in &self.scratch {
                out.push(Alert::from_match(m, ev));
            }
        }
        self.evaluated
            .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Frees a replaced set once the detection thread has let go of it, on a
/// thread of its own at the lowest priority: freeing the SigmaHQ Linux set
/// (compiled patterns, prefilter automata) takes longer than evaluating a
/// batch, and nothing waits for it. The detection thread is not woken for
/// this; the thread looks at the reference count, more and more rarely
/// while detection has no events to take the new set with.
fn retire(old: std::sync::Arc<RuleSet>) {
    let spawned = std::thread::Builder::new()
        .name("picket-retire".into())
        .spawn(move || {
            // SAFETY: setpriority on this thread's own id.
            unsafe {
                let tid = libc::gettid();
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
            }
            let mut wait = std::time::Duration::from_millis(1);
            while std::sync::Arc::strong_count(&old) > 1 {
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
            }
            drop(old);
        });
    if let Err(e) = spawned {
        // the set is then freed by whoever holds it last
        tracing::warn!("no thread to free a replaced rule set: {e}");
    }
}

/// Rule loading outcome.
#[derive(Debug)]
pub struct LoadedRules {
    /// The compiled rules.
    pub rules: RuleSet,
    /// One line per rule left out (file, rule, place, reason).
    pub errors: Vec<String>,
}

/// Loads the built-in rules and every rule under `dirs`. Missing
/// directories and bad rules are reported, never fatal.
pub fn load_rules(
    dirs: &[PathBuf],
    placeholders: &std::collections::BTreeMap<String, Vec<String>>,
) -> LoadedRules {
    let mut sources: Vec<(PathBuf, String)> = BUILTIN_RULES
        .iter()
        .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
        .collect();
    let mut errors = Vec::new();
    for d in dirs {
        if !d.exists() {
            errors.push(format!("{}: rules directory does not exist", d.display()));
            continue;
        }
        collect_yaml(d, &mut sources, &mut errors);
    }
    let rules = compile_sources(sources, placeholders, &mut errors);
    LoadedRules { rules, errors }
}

/// Compiles the built-in rules (first in `sources`) and the rest, one rule
/// per id; every problem is pushed to `errors`.
pub fn compile_sources(
    mut sources: Vec<(PathBuf, String)>,
    placeholders: &std::collections::BTreeMap<String, Vec<String>>,
    errors: &mut Vec<String>,
) -> RuleSet {
    let mut cfg = EngineConfig::new();
    for (k, v) in placeholders {
        cfg = cfg.with_placeholder(k, v.iter().cloned());
    }
    dedup_rule_ids(&mut sources, BUILTIN_RULES.len(), errors);
    let loaded =
        RuleSet::from_sources(sources.iter().map(|(p, t)| (p.as_path(), t.as_str())), &cfg);
    errors.extend(loaded.errors.iter().map(ToString::to_string));
    loaded.rules
}

/// The top-level `id:` of every YAML document in `text`.
fn rule_ids(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().trim_matches(['"', '\'']))
        .filter(|v| !v.is_empty())
        .collect()
}

/// One rule per id: a rule file from a directory replaces a built-in rule
/// with the same id (how an operator overrides one), and a later file whose
/// id was already loaded is left out and reported. Without this the same
/// rule loaded twice raises every alert twice.
fn dedup_rule_ids(sources: &mut Vec<(PathBuf, String)>, builtin: usize, errors: &mut Vec<String>) {
    let mut from_dirs: std::collections::HashMap<String, PathBuf> =
        std::collections::HashMap::new();
    let mut keep = vec![true; sources.len()];
    for (i, (path, text)) in sources.iter().enumerate().skip(builtin) {
        for id in rule_ids(text) {
            if let Some(first) = from_dirs.get(id) {
                if first != path {
                    errors.push(format!(
                        "{}: rule id {id} is already loaded from {}; left out",
                        path.display(),
                        first.display()
                    ));
                    keep[i] = false;
                }
            } else {
                from_dirs.insert(id.to_owned(), path.clone());
            }
        }
    }
    for (i, (_, text)) in sources.iter().enumerate().take(builtin) {
        if rule_ids(text).iter().any(|id| from_dirs.contains_key(*id)) {
            keep[i] = false;
        }
    }
    let mut k = keep.into_iter();
    sources.retain(|_| k.next().unwrap_or(true));
}

fn collect_yaml(dir: &std::path::Path, out: &mut Vec<(PathBuf, String)>, errors: &mut Vec<String>) {
    match picket_rules::files_with_extensions(dir, &picket_rules::RULE_EXTENSIONS) {
        Ok(files) => {
            for p in files {
                match std::fs::read_to_string(&p) {
                    Ok(t) => out.push((p, t)),
                    Err(e) => errors.push(format!("{}: {e}", p.display())),
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
}

/// Evaluates one event; pushes its alerts.
pub fn evaluate(rules: &RuleSet, event: &Event, scratch: &mut Vec<Match>, out: &mut Vec<Alert>) {
    scratch.clear();
    rules.evaluate(&logsource(event), &SigmaEvent(event), scratch);
    for m in scratch.iter() {
        out.push(Alert::from_match(m, event));
    }
}

#[cfg(test)]
mod dedup_tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn a_directory_rule_replaces_the_builtin_with_its_id_and_duplicates_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (_, builtin) = BUILTIN_RULES[0];
        std::fs::write(dir.path().join("a.yml"), builtin).unwrap();
        std::fs::write(dir.path().join("b.yml"), builtin).unwrap();
        let loaded = load_rules(&[dir.path().to_owned()], &Default::default());
        assert_eq!(
            loaded.rules.len(),
            BUILTIN_RULES.len(),
            "{:?}",
            loaded.errors
        );
        assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
        assert!(
            loaded.errors[0].contains("already loaded"),
            "{:?}",
            loaded.errors
        );
    }
}

#[cfg(test)]
mod detector_tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn login_failure(user: &str) -> Event {
        crate::auth::parse_line(&format!(
            "Nov 28 21:00:01 gw sshd[813]: Failed password for invalid user {user} from 198.51.100.2 port 4242 ssh2"
        ))
        .unwrap()
        .to_event()
    }

    fn set_with_rule(id: &str) -> RuleSet {
        compiled(format!(
            "title: failed login\nid: {id}\nlogsource: {{product: linux, service: sshd}}\n\
             detection:\n  sel: {{Outcome: failure}}\n  condition: sel\n"
        ))
    }

    /// One rule, compiled as a bundle's rules are.
    fn compiled(rule: String) -> RuleSet {
        let mut errors = Vec::new();
        let rules = compile_sources(
            vec![(PathBuf::from("r.yml"), rule)],
            &Default::default(),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        rules
    }

    #[test]
    fn a_swap_takes_effect_at_the_next_batch_and_each_generation_counts_its_events() {
        let registry = Registry::default();
        let slot = RuleSlot::new(set_with_rule("00000000-0000-0000-0000-000000000000"));
        let mut d = Detector::new(slot.clone(), registry.clone());
        let batch: Vec<Event> = (0..3).map(|i| login_failure(&format!("u{i}"))).collect();
        let mut alerts = Vec::new();
        d.evaluate_batch(&batch, &mut alerts);
        assert_eq!(
            slot.replace(set_with_rule("00000000-0000-0000-0000-000000000001")),
            1
        );
        assert_eq!(d.generation(), 0, "a swap waits for the next batch");
        d.evaluate_batch(&batch[..2], &mut alerts);
        assert_eq!(d.generation(), 1);
        let ids: Vec<&str> = alerts.iter().map(|a| &a.rule_id[35..]).collect();
        assert_eq!(ids, ["0", "0", "0", "1", "1"]);
        let evaluated =
            |g: &str| registry.value("picket_rules_evaluated_total", &[("generation", g)]);
        assert_eq!((evaluated("0"), evaluated("1")), (Some(3), Some(2)));
    }

    #[test]
    fn kernel_events_are_evaluated_with_the_set_installed_last() {
        let set = |id: &str| {
            compiled(format!(
                "title: curl\nid: {id}\nlogsource: {{product: linux, category: process_creation}}\n\
                 detection:\n  sel: {{Image|endswith: /curl}}\n  condition: sel\n"
            ))
        };
        let exec: Event = serde_json::from_str(
            r#"{"time_ns":1,"module":"process","process":{"pid":2,"tid":2,"ppid":1,"uid":0,"gid":0,"euid":0,"egid":0,"image":"/usr/bin/curl","command_line":"curl x"},"kind":{"type":"process_exec","filename":"/usr/bin/curl","argv":["curl","x"]}}"#,
        )
        .unwrap();
        let exit = Event {
            kind: crate::event::Kind::ProcessExit { code: 0, signal: 0 },
            ..exec.clone()
        };
        let slot = RuleSlot::new(set("00000000-0000-0000-0000-000000000000"));
        let mut d = Detector::new(slot.clone(), Registry::default());
        let mut alerts = Vec::new();
        d.evaluate_batch(&[exec.clone(), exit.clone(), exec.clone()], &mut alerts);
        slot.replace(set("00000000-0000-0000-0000-000000000001"));
        d.evaluate_batch(&[exit, exec], &mut alerts);
        let ids: Vec<&str> = alerts.iter().map(|a| &a.rule_id[35..]).collect();
        assert_eq!(ids, ["0", "0", "1"]);
    }

    #[test]
    fn a_replaced_set_is_freed_once_detection_lets_go_of_it() {
        let slot = RuleSlot::new(set_with_rule("00000000-0000-0000-0000-000000000000"));
        // what the detection thread holds
        let (_, old) = slot.current();
        let weak = std::sync::Arc::downgrade(&old);
        slot.replace(set_with_rule("00000000-0000-0000-0000-000000000001"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(weak.strong_count(), 2, "freed while in use");
        drop(old);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while weak.strong_count() > 0 {
            assert!(std::time::Instant::now() < deadline, "never freed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
