//! Mapping + evaluation throughput per agent format, against the whole
//! SigmaHQ Windows rule set (evtx, Winlogbeat) and the macOS set (eslogger,
//! ECS), with baselines from the same run: JSON parsing alone, and the
//! evaluation of events mapped beforehand.
//!
//! `cargo bench -p picket-agents --bench throughput` (needs `../shared`).
//! `PICKET_BENCH_MAX_RECORDS` caps the EVTX records read (default 20000).

#![allow(clippy::print_stdout, reason = "a bench prints its figures")]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use picket_agents::{map_line, parse_line, Mapped};
use picket_rules::RuleSet;
use serde_json::{json, Value};

/// Events per second of `f` (one pass over `lines` events): the best of
/// five trials of at least `min` each. The machine is shared with builds;
/// the best trial is the one least disturbed by them.
fn rate(lines: usize, min: Duration, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let (mut best, mut sink) = (0f64, 0usize);
    for _ in 0..5 {
        let start = Instant::now();
        let mut rounds = 0usize;
        while rounds == 0 || start.elapsed() < min {
            sink = sink.wrapping_add(f());
            rounds += 1;
        }
        best = best.max((lines * rounds) as f64 / start.elapsed().as_secs_f64());
    }
    (best, sink)
}

fn row(name: &str, lines: &[String], rules: &RuleSet) {
    let min = Duration::from_millis(500);
    let bytes: usize = lines.iter().map(String::len).sum();
    let mapped: Vec<Mapped> = lines
        .iter()
        .map(|l| map_line(l.as_bytes()).expect("bench lines map"))
        .collect();
    let mut out = Vec::new();
    let alerts: usize = mapped
        .iter()
        .map(|m| {
            out.clear();
            m.evaluate(rules, &mut out)
        })
        .sum();
    let (parse, _) = rate(lines.len(), min, || {
        lines
            .iter()
            .map(|l| usize::from(parse_line(l.as_bytes()).is_ok()))
            .sum()
    });
    let (map, _) = rate(lines.len(), min, || {
        lines
            .iter()
            .map(|l| black_box(map_line(l.as_bytes())).map_or(0, |m| m.fields.len()))
            .sum()
    });
    let (eval, _) = rate(lines.len(), min, || {
        mapped
            .iter()
            .map(|m| {
                out.clear();
                m.evaluate(rules, &mut out)
            })
            .sum()
    });
    let (full, _) = rate(lines.len(), min, || {
        lines
            .iter()
            .map(|l| {
                out.clear();
                map_line(l.as_bytes()).map_or(0, |m| m.evaluate(rules, &mut out))
            })
            .sum()
    });
    println!(
        "| {name} | {} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
        lines.len(),
        bytes as f64 / lines.len() as f64,
        alerts,
        parse,
        map,
        eval,
        full,
        full * bytes as f64 / lines.len() as f64 / 1e6,
    );
}

/// An eslogger exec or create for each ECS process start or file event of
/// the dataset (same paths and arguments, eslogger's shape).
fn eslogger_of(ecs: &Value) -> Option<Value> {
    let process = |path: &Value, pid: &Value| {
        json!({"audit_token": {"pid": pid, "euid": 501, "ruid": 501}, "ppid": 1,
               "executable": {"path": path, "path_truncated": false},
               "signing_id": "com.apple.x", "team_id": null, "is_platform_binary": true})
    };
    let p = &ecs["process"];
    let actor = process(&p["parent"]["executable"], &p["parent"]["pid"]);
    let env = json!({"schema_version": 1, "version": 7, "time": ecs["@timestamp"],
                     "action_type": 1, "thread": {"thread_id": 1}});
    let mut msg = env.as_object()?.clone();
    let cat = ecs["event"]["category"].to_string();
    if cat.contains("process")
        && p["executable"].is_string()
        && p["parent"]["executable"].is_string()
    {
        msg.insert("event_type".into(), json!(9));
        msg.insert("process".into(), actor);
        msg.insert(
            "event".into(),
            json!({"exec": {"target": process(&p["executable"], &p["pid"]),
            "args": p["args"], "cwd": {"path": "/"}, "env": ["HOME=/Users/alice"]}}),
        );
    } else if cat.contains("file") && ecs["file"]["path"].is_string() && p["executable"].is_string()
    {
        msg.insert("event_type".into(), json!(13));
        msg.insert("process".into(), process(&p["executable"], &p["pid"]));
        msg.insert(
            "event".into(),
            json!({"create": {"destination_type": 0,
            "destination": {"existing_file": {"path": ecs["file"]["path"]}}}}),
        );
    } else {
        return None;
    }
    Some(Value::Object(msg))
}

fn main() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let max: usize = std::env::var("PICKET_BENCH_MAX_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let t = Instant::now();
    let windows = common::sigmahq_rules(&shared, "windows");
    let macos = common::sigmahq_rules(&shared, "macos");
    println!(
        "rules: {} SigmaHQ windows, {} macos (loaded in {:.2} s)",
        windows.len(),
        macos.len(),
        t.elapsed().as_secs_f64()
    );

    // EVTX samples, rendered by the evtx crate as evtx-format lines, and
    // the Winlogbeat documents of the same records.
    let mut files = Vec::new();
    let mut stack = vec![shared.join("data/evtx")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "evtx") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut evtx_lines = Vec::new();
    'files: for f in &files {
        let Ok(mut parser) = evtx::EvtxParser::from_path(f) else {
            continue;
        };
        for rec in parser.records_json_value().flatten() {
            if map_line(rec.data.to_string().as_bytes()).is_ok() {
                evtx_lines.push(rec.data.to_string());
            }
            if evtx_lines.len() >= max {
                break 'files;
            }
        }
    }
    let beat_lines: Vec<String> = evtx_lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            common::winlogbeat_of(&v).to_string()
        })
        .collect();

    // The macOS dataset's readable documents, and eslogger lines built from
    // them.
    let mut ecs_lines = Vec::new();
    let mut es_lines = Vec::new();
    let dir = shared.join("data/macos-attack-dataset");
    for d in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(f.path()) else {
                continue;
            };
            let Ok(docs) = serde_json::Deserializer::from_str(&text)
                .into_iter::<Value>()
                .collect::<Result<Vec<_>, _>>()
            else {
                continue;
            };
            for doc in docs {
                let hits = doc
                    .get("hits")
                    .and_then(|h| h.get("hits").or_else(|| h.get("events")));
                let docs = match hits {
                    Some(Value::Array(h)) => h.clone(),
                    _ => vec![doc],
                };
                for d in docs {
                    let src = d.get("_source").cloned().unwrap_or(d);
                    if let Some(es) = eslogger_of(&src) {
                        es_lines.push(es.to_string());
                    }
                    ecs_lines.push(src.to_string());
                }
            }
        }
    }

    println!();
    println!("| format | events | bytes/event | alerts | parse only (ev/s) | parse+map (ev/s) | evaluate pre-mapped (ev/s) | map+evaluate (ev/s) | map+evaluate (MB/s) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    row("evtx (SigmaHQ windows)", &evtx_lines, &windows);
    row("winlogbeat (SigmaHQ windows)", &beat_lines, &windows);
    row("ecs-macos (SigmaHQ macos)", &ecs_lines, &macos);
    row("eslogger (SigmaHQ macos)", &es_lines, &macos);
}
