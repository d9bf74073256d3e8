//! `picketctl hunt` end to end over the shared EVTX samples on 2 threads,
//! beside the `evtx` crate's parse-only rate on the same files in the same
//! run. Prints figures; no harness.
//!
//! `CARGO_TARGET_DIR=/work/target-cli cargo bench -p picket-cli --bench hunt [-- ROUNDS]`

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use picket_cli::hunt::{self, Format, HuntConfig};
use picket_rules::EngineConfig;
use rayon::prelude::*;

/// Records parsed to `serde_json::Value` by the evtx crate's own iterator.
fn parse_only(files: &[PathBuf]) -> u64 {
    files
        .par_iter()
        .map(|f| {
            evtx::EvtxParser::from_path(f).map_or(0, |mut p| {
                p.records_json_value().filter(Result::is_ok).count() as u64
            })
        })
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let evtx_dir = shared.join("evtx");
    let rule_dirs: Vec<PathBuf> = ["rules", "rules-threat-hunting", "rules-emerging-threats"]
        .iter()
        .map(|d| shared.join("sigmahq").join(d))
        .collect();
    let files = picket_rules::files_with_extensions(&evtx_dir, &["evtx"])?;
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();

    let t = Instant::now();
    let loaded = hunt::load_rules(&rule_dirs, &EngineConfig::new())?;
    let load_secs = t.elapsed().as_secs_f64();
    println!(
        "rules: {} loaded ({} rejected) in {load_secs:.2}s; input: {} EVTX files, {:.1} MiB",
        loaded.rules.len(),
        loaded.errors.len(),
        files.len(),
        bytes as f64 / (1024.0 * 1024.0)
    );

    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let mut parse_rates = Vec::new();
        let mut hunt_rates = Vec::new();
        let mut records = 0;
        let mut matches = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            records = pool.install(|| parse_only(&files));
            parse_rates.push(records as f64 / t.elapsed().as_secs_f64());

            let config = HuntConfig {
                paths: vec![evtx_dir.clone()],
                format: Format::Csv,
                threads: NonZeroUsize::new(threads),
                ..HuntConfig::default()
            };
            let t = Instant::now();
            let report = hunt::hunt(
                &config,
                &loaded.rules,
                &mut std::io::sink(),
                &mut std::io::sink(),
            )?;
            hunt_rates.push(report.records as f64 / t.elapsed().as_secs_f64());
            matches = report.hits.len();
            assert_eq!(
                report.records, records,
                "hunt and parse-only saw the same records"
            );
        }
        println!(
            "{threads} thread(s), {rounds} rounds, {records} records: evtx parse-only (records_json_value) \
             median {:.0} events/s (best {:.0}); picketctl hunt end to end (parse + normalize + route + \
             evaluate + sort + CSV to a sink, rules preloaded) median {:.0} events/s (best {:.0}), {matches} matches; \
             hunt/parse = {:.2}",
            median(parse_rates.clone()),
            parse_rates.iter().copied().fold(0.0, f64::max),
            median(hunt_rates.clone()),
            hunt_rates.iter().copied().fold(0.0, f64::max),
            median(hunt_rates) / median(parse_rates),
        );
    }
    Ok(())
}
