//! Single-core throughput of all SigmaHQ rules on the shared EVTX samples,
//! normalized once and replayed (rule loading and parsing not timed).
//!
//! `cargo run --release -p picket-rules --example throughput_windows -- [SIGMA_ROOT] [EVTX_DIR] [EVENTS]`

use std::path::Path;
use std::time::Instant;

use picket_rules::{files_with_extensions, windows, EngineConfig, RuleSet};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data");
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| format!("{shared}/sigmahq"));
    let evtx_dir = args.next().unwrap_or_else(|| format!("{shared}/evtx"));
    let n: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);

    let mut rule_files = Vec::new();
    for d in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        rule_files.extend(files_with_extensions(&Path::new(&root).join(d), &["yml"])?);
    }
    let mut sources = Vec::new();
    for p in rule_files {
        let text = std::fs::read_to_string(&p)?;
        sources.push((p, text));
    }
    let t = Instant::now();
    let loaded = RuleSet::from_sources(sources, &EngineConfig::new());
    println!(
        "loaded {} rules ({} errors) in {:?}",
        loaded.rules.len(),
        loaded.errors.len(),
        t.elapsed()
    );
    let set = loaded.rules;

    let evtx_files = files_with_extensions(Path::new(&evtx_dir), &["evtx"])?;
    let mut events = Vec::new();
    for f in &evtx_files {
        let Ok(mut parser) = evtx::EvtxParser::from_path(f) else {
            continue;
        };
        for rec in parser.records_json_value().flatten() {
            if let Some(flat) = windows::normalize_evtx(&rec.data) {
                events.push((windows::route(&flat), flat));
            }
        }
    }
    println!("{} distinct records", events.len());
    let routes: Vec<_> = events.iter().map(|(r, _)| set.route(&r.sources)).collect();
    let mut out = Vec::new();
    let mut matches = 0;
    let t = Instant::now();
    for i in 0..n {
        let k = i % events.len();
        let (routing, flat) = &events[k];
        out.clear();
        let ev = windows::Aliased {
            event: flat,
            aliases: routing.aliases,
        };
        matches += set.evaluate_route(&routes[k], &ev, &mut out);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{n} events in {secs:.2}s: {:.0} events/s on one core, {matches} matches",
        n as f64 / secs
    );
    Ok(())
}
