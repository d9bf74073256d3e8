//! The pause of a rule-set swap: how long detection stops evaluating when
//! a new set replaces the running one (SIGHUP or a rule bundle), against
//! the time it takes to evaluate events with no swap, measured in the same
//! run with the same [`Detector`] the detection thread runs.
//!
//! For the built-in rules plus one rule, and for the built-in rules plus
//! the SigmaHQ Linux rules (compiled as a bundle is: `bundles::compile`):
//!
//! - **pause**: from the end of the old set's last batch to the new set
//!   having evaluated its first event (a `process_exec`, the busiest
//!   route), next to the same interval without a swap;
//! - **first batch**: the first 64-event batch after the swap, next to a
//!   batch without one;
//! - **warm-up**: one pass over the event mix (every logsource once) after
//!   the swap, next to a pass without one: what the new set's first events
//!   of each logsource cost in all;
//! - `RuleSlot::replace` (what the swapping thread holds the slot for), and
//!   the compile time (off the detection thread) for scale.
//!
//! Events: the demo recording (`appliance/demo/attacks.jsonl`, process,
//! file and network events) and sshd/sudo auth lines, in batches of
//! `bus::MAX_BATCH`.
//!
//! Run: `cargo bench -p picket-appliance --bench rule_swap [-- SIGMA_LINUX_DIR]`
//! (default `../shared/data/sigmahq/rules/linux` beside the workspace);
//! `PICKET_BENCH_ROUNDS` swaps per set (default 30).
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    reason = "a benchmark binary"
)]

mod common;

use picket_appliance::bus::MAX_BATCH;
use picket_appliance::detect::{Alert, Detector, RuleSlot};
use picket_appliance::event::Event;
use picket_appliance::telemetry::Registry;
use picket_rules::RuleSet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn events() -> Vec<Event> {
    let mut out = common::demo_events();
    // the pause is measured on a process_exec first
    let exec = out
        .iter()
        .position(|e| e.type_name() == "process_exec")
        .unwrap();
    out.rotate_left(exec);
    out
}

fn rule_files(dir: Option<&Path>) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let Some(dir) = dir else {
        files.insert(
            "failed_login.yml".to_owned(),
            b"title: failed login\nid: 6c0d3b56-1f4e-4f4b-9a57-3c2f6a0c5e01\n\
              logsource: {product: linux, service: sshd}\n\
              detection:\n  sel: {Outcome: failure}\n  condition: sel\nlevel: low\n"
                .to_vec(),
        );
        return files;
    };
    common::rule_files(dir)
}

fn compile(files: &BTreeMap<String, Vec<u8>>) -> RuleSet {
    common::compile(files)
}

struct Stats(Vec<Duration>);

impl Stats {
    fn q(&self, q: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        write!(
            f,
            "median {:>8.1} µs, p90 {:>8.1} µs, max {:>8.1} µs",
            us(self.q(0.5)),
            us(self.q(0.9)),
            us(self.q(1.0))
        )
    }
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn bench(name: &str, files: &BTreeMap<String, Vec<u8>>, events: &[Event], rounds: usize) {
    let mut compile_times = Vec::new();
    let mut sets: Vec<RuleSet> = Vec::new();
    for _ in 0..=rounds {
        let mut r = None;
        compile_times.push(time(|| r = Some(compile(files))));
        sets.push(r.unwrap());
    }
    let n_rules = sets[0].len();
    let slot = RuleSlot::new(sets.remove(0));
    let mut d = Detector::new(slot.clone(), Registry::default());
    let batches: Vec<&[Event]> = events.chunks(MAX_BATCH).collect();
    let mut alerts: Vec<Alert> = Vec::new();
    let mut run = |d: &mut Detector, b: &[Event]| {
        let t = time(|| d.evaluate_batch(b, &mut alerts));
        alerts.clear();
        t
    };
    let pass = |d: &mut Detector, run: &mut dyn FnMut(&mut Detector, &[Event]) -> Duration| {
        batches.iter().map(|b| run(d, b)).sum::<Duration>()
    };
    // warm: every route built, caches filled
    for _ in 0..3 {
        pass(&mut d, &mut run);
    }

    let (mut pause, mut pause_base) = (Vec::new(), Vec::new());
    let (mut batch, mut batch_base) = (Vec::new(), Vec::new());
    let (mut warm_up, mut warm_up_base) = (Vec::new(), Vec::new());
    let mut replace = Vec::new();
    for new in sets {
        // without a swap
        run(&mut d, batches[batches.len() - 1]);
        pause_base.push(run(&mut d, &batches[0][..1]));
        batch_base.push(run(&mut d, &batches[0][1..]) + pause_base[pause_base.len() - 1]);
        warm_up_base.push(pass(&mut d, &mut run));
        // with one: the old set's last batch, the swap, the new set's first event
        run(&mut d, batches[batches.len() - 1]);
        let g = d.generation();
        replace.push(time(|| {
            slot.replace(new);
        }));
        pause.push(run(&mut d, &batches[0][..1]));
        assert_eq!(d.generation(), g + 1);
        batch.push(run(&mut d, &batches[0][1..]) + pause[pause.len() - 1]);
        let rest: Duration = batches[1..].iter().map(|b| run(&mut d, b)).sum();
        warm_up.push(batch[batch.len() - 1] + rest);
    }
    let (pause, pause_base) = (Stats(pause), Stats(pause_base));
    println!(
        "\n{name}: {n_rules} rules, {} events in {} batches, {rounds} swaps",
        events.len(),
        batches.len()
    );
    println!("  compile (off detection)    {}", Stats(compile_times));
    println!("  RuleSlot::replace          {}", Stats(replace));
    println!("  pause: no swap             {pause_base}");
    println!("  pause: swap                {pause}");
    println!("  first batch: no swap       {}", Stats(batch_base));
    println!("  first batch: swap          {}", Stats(batch));
    println!("  pass over the mix: no swap {}", Stats(warm_up_base));
    println!("  pass over the mix: swap    {}", Stats(warm_up));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness=false benches
    }
    let sigma = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/sigmahq/rules/linux"),
            PathBuf::from,
        );
    let rounds = std::env::var("PICKET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let events = events();
    bench("built-in + 1 rule", &rule_files(None), &events, rounds);
    if sigma.is_dir() {
        bench(
            &format!("built-in + SigmaHQ Linux ({})", sigma.display()),
            &rule_files(Some(&sigma)),
            &events,
            rounds,
        );
    } else {
        println!(
            "\nno SigmaHQ rules at {}: that set is skipped",
            sigma.display()
        );
    }
}
