//! Picket's engine (`picket-rules`) side by side with rsigma 0.23's engine
//! (`rsigma-eval` + `rsigma-parser` 0.23.0; the `rsigma` crate itself is
//! only the CLI binary) on one core: all SigmaHQ Windows rules, the shared
//! EVTX records normalized to flat Sysmon-shaped JSON events and replayed,
//! net of rule loading; same events, same rules, same run. Then the peak
//! RSS of each engine in a child process of its own.
//!
//! `CARGO_TARGET_DIR=/work/target-cli cargo bench -p picket-cli --bench engines [-- EVENTS]`
//!
//! Routing is the same for both: each event's logsources come from
//! `picket_rules::windows::route` (SigmaHQ `thor.yml`); Picket evaluates
//! through `windows::Router`, rsigma through
//! `Engine::evaluate_with_logsource` once per logsource (results deduplicated
//! by rule for the Sysmon registry events, which have two). Security 4688
//! needs `Image` → `NewProcessName`: Picket applies it as an alias, rsigma
//! gets a copy of the event with `Image`/`ParentImage` added (prepared
//! before timing).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use picket_rules::{files_with_extensions, windows, EngineConfig, LogSource, RuleSet};
use rsigma_eval::event::JsonEvent;
use serde_json::{Map, Value as Json};

type Flat = Map<String, Json>;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

fn rule_sources() -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut paths = Vec::new();
    for d in ["rules", "rules-threat-hunting", "rules-emerging-threats"] {
        paths.extend(files_with_extensions(
            &shared().join("sigmahq").join(d),
            &["yml"],
        )?);
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
            Ok((p, text))
        })
        .collect()
}

/// The shared EVTX records, normalized as the engine and the oracle do.
fn evtx_events() -> anyhow::Result<Vec<Flat>> {
    let paths = files_with_extensions(&shared().join("evtx"), &["evtx"])?;
    let mut events = Vec::new();
    for f in &paths {
        let Ok(mut parser) = evtx::EvtxParser::from_path(f) else {
            continue;
        };
        for rec in parser.records_json_value().flatten() {
            if let Some(flat) = windows::normalize_evtx(&rec.data) {
                events.push(flat);
            }
        }
    }
    Ok(events)
}

fn read_events(path: &Path) -> anyhow::Result<Vec<Flat>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    file.lines()
        .map(|l| Ok(serde_json::from_str(&l?)?))
        .collect()
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// rsigma's view of the events: logsources from the same router, 4688
/// renames applied as added fields.
struct RsigmaEvents {
    events: Vec<Json>,
    sources: Vec<Vec<rsigma_parser::LogSource>>,
}

fn rsigma_events(events: &[Flat]) -> RsigmaEvents {
    let mut out = RsigmaEvents {
        events: Vec::with_capacity(events.len()),
        sources: Vec::with_capacity(events.len()),
    };
    for ev in events {
        let routing = windows::route(ev);
        let mut copy = ev.clone();
        for (rule_field, event_field) in routing.aliases {
            if let Some(v) = ev.get(*event_field) {
                copy.insert((*rule_field).to_owned(), v.clone());
            }
        }
        out.events.push(Json::Object(copy));
        out.sources.push(
            routing
                .sources
                .iter()
                .map(|s: &LogSource| rsigma_parser::LogSource {
                    product: s.product.clone(),
                    category: s.category.clone(),
                    service: s.service.clone(),
                    ..rsigma_parser::LogSource::default()
                })
                .collect(),
        );
    }
    out
}

struct Rsigma {
    engine: rsigma_eval::Engine,
    parse_errors: usize,
    compile_errors: usize,
    filters: usize,
}

fn rsigma_load(sources: &[(PathBuf, String)]) -> Rsigma {
    let mut rules = Vec::new();
    let mut filters = 0;
    let mut parse_errors = 0;
    for (_, text) in sources {
        match rsigma_parser::parse_sigma_yaml(text) {
            Ok(c) => {
                parse_errors += c.errors.len();
                filters += c.filters.len();
                rules.extend(c.rules);
            }
            Err(_) => parse_errors += 1,
        }
    }
    let mut engine = rsigma_eval::Engine::new();
    let compile_errors = engine.add_rules(&rules).len();
    Rsigma {
        engine,
        parse_errors,
        compile_errors,
        filters,
    }
}

/// Rule ids (or titles) rsigma matches on event `k`.
fn rsigma_eval_one(engine: &rsigma_eval::Engine, ev: &RsigmaEvents, k: usize) -> Vec<String> {
    let event = JsonEvent::borrow(&ev.events[k]);
    let mut ids: Vec<String> = Vec::new();
    for source in &ev.sources[k] {
        for r in engine.evaluate_with_logsource(&event, source) {
            let id = r
                .header
                .rule_id
                .clone()
                .unwrap_or(r.header.rule_title.clone());
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// Matches on event `k`, counted the same way as `rsigma_eval_one`.
fn rsigma_count_one(engine: &rsigma_eval::Engine, ev: &RsigmaEvents, k: usize) -> usize {
    let event = JsonEvent::borrow(&ev.events[k]);
    match ev.sources[k].as_slice() {
        [one] => engine.evaluate_with_logsource(&event, one).len(),
        _ => rsigma_eval_one(engine, ev, k).len(),
    }
}

fn picket_load(sources: Vec<(PathBuf, String)>) -> (RuleSet, usize) {
    let loaded = RuleSet::from_sources(sources, &EngineConfig::new());
    (loaded.rules, loaded.errors.len())
}

/// `rss ENGINE EVENTS.jsonl N`: one engine alone, printing its peak RSS,
/// the RSS just before its rules are loaded (events in the engine's input
/// form and the rule texts already in memory) and the RSS once they are
/// loaded, before the first event.
fn rss_child(engine: &str, events_path: &Path, n: usize) -> anyhow::Result<()> {
    let events = read_events(events_path)?;
    let mut matches = 0usize;
    let baseline;
    let loaded;
    match engine {
        "picket" => {
            let sources = rule_sources()?;
            baseline = status_kib("VmRSS:");
            let (rules, _) = picket_load(sources);
            let router = windows::Router::new(&rules);
            loaded = status_kib("VmRSS:");
            let mut out = Vec::new();
            for i in 0..n {
                out.clear();
                matches += router.evaluate(&events[i % events.len()], &mut out);
            }
        }
        "rsigma" => {
            let ev = rsigma_events(&events);
            let len = events.len();
            drop(events);
            let sources = rule_sources()?;
            baseline = status_kib("VmRSS:");
            let rs = rsigma_load(&sources);
            drop(sources);
            loaded = status_kib("VmRSS:");
            for i in 0..n {
                matches += rsigma_count_one(&rs.engine, &ev, i % len);
            }
        }
        other => anyhow::bail!("unknown engine {other}"),
    }
    println!(
        "{engine} baseline_kib={baseline} loaded_kib={loaded} peak_kib={} matches={matches}",
        status_kib("VmHWM:")
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [mode, engine, path, n] = args.as_slice() {
        if mode == "rss" {
            return rss_child(engine, Path::new(path), n.parse()?);
        }
    }
    let n: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);

    let events = evtx_events()?;
    let sources = rule_sources()?;
    println!(
        "{} rule files, {} distinct events (shared EVTX, normalized), replayed to {n}",
        sources.len(),
        events.len()
    );

    // rsigma first, so Picket gets no warm-cache advantage from order.
    let t = Instant::now();
    let rs = rsigma_load(&sources);
    let rs_load = t.elapsed().as_secs_f64();
    let rs_events = rsigma_events(&events);
    println!(
        "rsigma-eval 0.23.0: {} rules in {rs_load:.2}s ({} documents not parsed, {} rules not compiled, {} filters ignored)",
        rs.engine.rule_count(),
        rs.parse_errors,
        rs.compile_errors,
        rs.filters
    );
    let t = Instant::now();
    let (rules, picket_errors) = picket_load(sources.clone());
    let picket_load_secs = t.elapsed().as_secs_f64();
    println!(
        "picket-rules: {} rules in {picket_load_secs:.2}s ({picket_errors} rejected)",
        rules.len()
    );
    let router = windows::Router::new(&rules);

    // Same matches? One pass over the distinct events, (event, rule) sets.
    let mut ours: BTreeSet<(usize, String)> = BTreeSet::new();
    let mut theirs: BTreeSet<(usize, String)> = BTreeSet::new();
    let mut out = Vec::new();
    for (k, ev) in events.iter().enumerate() {
        out.clear();
        router.evaluate(ev, &mut out);
        for m in &out {
            ours.insert((k, m.rule.id.clone().unwrap_or(m.rule.title.clone())));
        }
        for id in rsigma_eval_one(&rs.engine, &rs_events, k) {
            theirs.insert((k, id));
        }
    }
    let only_ours: Vec<_> = ours.difference(&theirs).collect();
    let only_theirs: Vec<_> = theirs.difference(&ours).collect();
    println!(
        "match sets over the {} distinct events: picket {}, rsigma {}, identical: {} ({} only picket, {} only rsigma)",
        events.len(),
        ours.len(),
        theirs.len(),
        only_ours.is_empty() && only_theirs.is_empty(),
        only_ours.len(),
        only_theirs.len()
    );
    let titles: BTreeMap<String, String> = rules
        .rules()
        .map(|r| (r.id.clone().unwrap_or_default(), r.title.clone()))
        .collect();
    for (label, diff) in [("only picket", &only_ours), ("only rsigma", &only_theirs)] {
        let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, id) in diff {
            *by_rule.entry(id).or_default() += 1;
        }
        let mut by_rule: Vec<_> = by_rule.into_iter().collect();
        by_rule.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (id, count) in by_rule.iter().take(25) {
            println!(
                "  {label}: {count:>4} x {id} {}",
                titles.get(*id).map_or("", String::as_str)
            );
        }
        if by_rule.len() > 25 {
            println!("  {label}: ... {} more rules", by_rule.len() - 25);
        }
    }

    // Throughput, one core each, net of loading. The machine is shared, so
    // the two engines alternate in ten blocks of n/10 events and each
    // engine's time is summed: load changes hit both alike.
    let blocks = 10;
    let (mut rs_secs, mut picket_secs) = (0.0, 0.0);
    let (mut rs_matches, mut picket_matches) = (0usize, 0usize);
    for b in 0..blocks {
        let range = b * n / blocks..(b + 1) * n / blocks;
        let t = Instant::now();
        for i in range.clone() {
            rs_matches += rsigma_count_one(&rs.engine, &rs_events, i % events.len());
        }
        rs_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in range {
            out.clear();
            picket_matches += router.evaluate(&events[i % events.len()], &mut out);
        }
        picket_secs += t.elapsed().as_secs_f64();
    }
    let rs_rate = n as f64 / rs_secs;
    let picket_rate = n as f64 / picket_secs;
    println!(
        "one core, {n} events: picket {picket_rate:.0} events/s ({picket_matches} matches); \
         rsigma {rs_rate:.0} events/s ({rs_matches} matches); picket/rsigma = {:.2}x; match counts identical: {}",
        picket_rate / rs_rate,
        picket_matches == rs_matches
    );

    // Peak RSS, each engine alone in a child (events from a JSON-lines copy,
    // so neither child holds the EVTX parser).
    let events_path =
        std::env::temp_dir().join(format!("picket-bench-events-{}.jsonl", std::process::id()));
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&events_path)?);
        for ev in &events {
            serde_json::to_writer(&mut w, ev)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    let exe = std::env::current_exe()?;
    for engine in ["picket", "rsigma"] {
        let output = std::process::Command::new(&exe)
            .args(["rss", engine])
            .arg(&events_path)
            .arg(n.min(200_000).to_string())
            .output()?;
        let line = String::from_utf8_lossy(&output.stdout);
        let kib = |key: &str| -> f64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        println!(
            "peak RSS {engine}: {:.1} MiB (before loading rules, with the {} events and the rule texts in memory: {:.1} MiB; rules loaded, before the first event: {:.1} MiB; engine share {:.1} MiB){}",
            kib("peak_kib=") / 1024.0,
            events.len(),
            kib("baseline_kib=") / 1024.0,
            kib("loaded_kib=") / 1024.0,
            (kib("peak_kib=") - kib("baseline_kib=")) / 1024.0,
            if output.status.success() { String::new() } else { format!(" FAILED: {}", String::from_utf8_lossy(&output.stderr)) }
        );
    }
    let _ = std::fs::remove_file(&events_path);
    Ok(())
}
